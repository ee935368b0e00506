/*
 * dkim_keyfile.c - reading a dkim-sign key file (see tern/dkim.h): the one
 * part of DKIM that touches the file system. Runs in ternd's main thread
 * as root at start, in the privileged helper (root) at reload, and in
 * ternctl. The file is the operator's: a regular file of at most
 * DKIM_KEY_FILE_MAX bytes that others may not read or write (a private
 * key); its bytes are not parsed here (dkim_key_parse does).
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tern/dkim.h"
#include "tern/util.h"

int
dkim_key_file_read(const char *path, char **buf, size_t *len, char *err,
    size_t errlen)
{
	struct stat st;
	char *b;
	size_t got = 0;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
		snprintf(err, errlen, "%s", strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
	    st.st_size > DKIM_KEY_FILE_MAX) {
		snprintf(err, errlen, "not a regular file of at most %d bytes",
		    DKIM_KEY_FILE_MAX);
		close(fd);
		return -1;
	}
	if (st.st_mode & S_IRWXO) {
		snprintf(err, errlen, "a private key others may read or write "
		    "(mode %03o: chmod o-rwx)", (unsigned)(st.st_mode & 0777));
		close(fd);
		return -1;
	}
	b = xmalloc((size_t)st.st_size + 1);
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, b + got, (size_t)st.st_size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			snprintf(err, errlen, "%s", r < 0 ? strerror(errno) :
			    "file shrank while read");
			explicit_bzero(b, got);
			free(b);
			close(fd);
			return -1;
		}
		got += (size_t)r;
	}
	close(fd);
	b[got] = '\0';
	*buf = b;
	*len = got;
	return 0;
}

void
dkim_key_buf_free(char *buf, size_t len)
{
	if (buf == NULL)
		return;
	explicit_bzero(buf, len);
	free(buf);
}
