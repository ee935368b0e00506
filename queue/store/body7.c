/*
 * body7.c - the 7-bit form of a queued message's body (see tern/queue.h,
 * queue_body7_*): made once by the delivery client for a next hop without
 * 8BITMIME (RFC 6152 3), kept in <queue>/7bit/<qid> until the message leaves
 * the queue, so that a retry, or a job for another destination, sends the
 * same bytes without converting again.
 *
 * A copy is a cache, never the message: the queued body stays the original.
 * A file is "TERN7B1\n", the body, then the body's CRC-32C (4 octets, little
 * endian); one that is short, foreign or fails its CRC is removed and the
 * caller converts again. Files are written under a temporary name and
 * renamed, so a reader never sees half of one; durability is not needed
 * (a copy lost to a crash is made again).
 *
 * Removal: queue_remove() unlinks the copy while any exist (q->n7bit, a
 * count kept from the directory listing at open), so a queue without 8-bit
 * mail for such next hops pays nothing per removal. At open, temporary
 * files and copies of messages no longer in the index are removed. A copy
 * written while its message is deleted by an operator is left until the next
 * start.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tern/envelope.h"
#include "tern/log.h"
#include "tern/queue.h"
#include "tern/util.h"

#include "queue_int.h"

#define BODY7_MAGIC     "TERN7B1\n"
#define BODY7_MAGIC_LEN 8
#define BODY7_DIR       "7bit"

static void
body7_path(const struct queue *q, uint64_t id, int tmp, char *buf,
    size_t len)
{
	char qid[QID_STRLEN + 1];

	qid_format(id, qid);
	snprintf(buf, len, "%s/" BODY7_DIR "/%s%s%s", q->dir, tmp ? "." : "",
	    qid, tmp ? ".tmp" : "");
}

static int
body7_write_all(int fd, const void *p, size_t len)
{
	const char *c = p;

	while (len > 0) {
		ssize_t n = write(fd, c, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		c += n;
		len -= (size_t)n;
	}
	return 0;
}

int
queue_body7_write(struct queue *q, uint64_t id, const char *p, size_t len)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	uint8_t crc[4];
	uint32_t c = crc32c(0, p, len);
	int fd, rc = -1, saved;

	if (q->readonly) {
		errno = EROFS;
		return -1;
	}
	body7_path(q, id, 1, tmp, sizeof(tmp));
	body7_path(q, id, 0, path, sizeof(path));
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	crc[0] = (uint8_t)c;
	crc[1] = (uint8_t)(c >> 8);
	crc[2] = (uint8_t)(c >> 16);
	crc[3] = (uint8_t)(c >> 24);
	if (body7_write_all(fd, BODY7_MAGIC, BODY7_MAGIC_LEN) == 0 &&
	    body7_write_all(fd, p, len) == 0 &&
	    body7_write_all(fd, crc, sizeof(crc)) == 0)
		rc = 0;
	saved = errno;
	if (close(fd) < 0 && rc == 0) {
		rc = -1;
		saved = errno;
	}
	if (rc == 0 && rename(tmp, path) < 0) {
		rc = -1;
		saved = errno;
	}
	if (rc < 0) {
		(void)unlink(tmp);
		errno = saved;
		return -1;
	}
	__atomic_add_fetch(&q->n7bit, 1, __ATOMIC_RELAXED);
	return 0;
}

/* The whole file at path into a new buffer; -1 with errno. */
static int
body7_slurp(const char *path, char **out, size_t *outlen)
{
	struct stat st;
	char *buf;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0 || st.st_size < BODY7_MAGIC_LEN + 4) {
		close(fd);
		errno = EINVAL;
		return -1;
	}
	buf = xmalloc((size_t)st.st_size + 1);
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	close(fd);
	if (got != (size_t)st.st_size) {
		free(buf);
		errno = EIO;
		return -1;
	}
	*out = buf;
	*outlen = got;
	return 0;
}

int
queue_body7_read(struct queue *q, uint64_t id, char **out, size_t *outlen)
{
	char path[PATH_MAX], *buf;
	size_t len, blen;
	uint32_t want;
	const uint8_t *t;

	*out = NULL;
	*outlen = 0;
	if (__atomic_load_n(&q->n7bit, __ATOMIC_RELAXED) == 0)
		return 1;
	body7_path(q, id, 0, path, sizeof(path));
	if (body7_slurp(path, &buf, &len) < 0) {
		if (errno == ENOENT)
			return 1;
		log_warn("queue: %s", path);
		(void)unlink(path);
		return 1;
	}
	blen = len - BODY7_MAGIC_LEN - 4;
	t = (const uint8_t *)buf + len - 4;
	want = (uint32_t)t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16 |
	    (uint32_t)t[3] << 24;
	if (memcmp(buf, BODY7_MAGIC, BODY7_MAGIC_LEN) != 0 ||
	    crc32c(0, buf + BODY7_MAGIC_LEN, blen) != want) {
		log_warnx("queue: %s: damaged 7-bit copy removed", path);
		(void)unlink(path);
		free(buf);
		return 1;
	}
	memmove(buf, buf + BODY7_MAGIC_LEN, blen);
	buf[blen] = '\0';
	*out = buf;
	*outlen = blen;
	return 0;
}

void
queue_body7_drop(struct queue *q, uint64_t id)
{
	char path[PATH_MAX];

	if (__atomic_load_n(&q->n7bit, __ATOMIC_RELAXED) == 0)
		return;
	body7_path(q, id, 0, path, sizeof(path));
	if (unlink(path) == 0)
		__atomic_sub_fetch(&q->n7bit, 1, __ATOMIC_RELAXED);
}

/* One directory entry at open: keep a copy of a queued message. */
static void
body7_open_one(struct queue *q, const char *dir, const char *name)
{
	char path[PATH_MAX];
	struct envelope *e = NULL;
	uint64_t id;

	if (name[0] == '.' && (name[1] == '\0' ||
	    (name[1] == '.' && name[2] == '\0')))
		return;
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >=
	    sizeof(path))
		return;
	if (name[0] != '.' && qid_parse(name, &id) == 0 &&
	    queue_get(q, id, &e) == 0) {
		envelope_free(e);
		q->n7bit++;
		return;
	}
	if (unlink(path) < 0 && errno != ENOENT)
		log_warn("queue: %s", path);
}

int
queue_body7_open(struct queue *q)
{
	char dir[PATH_MAX];
	struct dirent *de;
	DIR *d;

	q->n7bit = 0;
	snprintf(dir, sizeof(dir), "%s/" BODY7_DIR, q->dir);
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -1;
	if ((d = opendir(dir)) == NULL)
		return -1;
	while ((de = readdir(d)) != NULL)
		body7_open_one(q, dir, de->d_name);
	closedir(d);
	return 0;
}
