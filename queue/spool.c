/*
 * spool.c - a message body under construction (see tern/queue.h).
 *
 * Runs on the session loop thread that owns the spool; the committer reads
 * it after ownership moved with queue_commit_submit(). Holds up to
 * spool_memory bytes in memory, then spills everything to an unlinked file
 * in <queue>/tmp (O_TMPFILE, or mkstemp + unlink), which nothing ever
 * syncs: durability comes from the copy into the segment. Writes to the
 * spill file are plain write()s on a local disk (page cache); never blocks
 * on the network. The bytes are the peer's, stored verbatim.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tern/util.h"
#include "queue_int.h"

struct spool *
spool_new(struct queue *q)
{
	struct spool *s = xcalloc(1, sizeof(*s));
	s->q = q;
	s->fd = -1;
	return s;
}

static int
spool_spill(struct spool *s)
{
	char path[4096];
	int fd;

	fd = open(s->q->tmpdir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL)) {
		snprintf(path, sizeof(path), "%s/spool.XXXXXX", s->q->tmpdir);
		if ((fd = mkostemp(path, O_CLOEXEC)) >= 0)
			unlink(path);
	}
	if (fd < 0)
		return -1;
	if (s->len > 0 && write_all(fd, s->mem, s->len) < 0) {
		int saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	free(s->mem);
	s->mem = NULL;
	s->len = s->cap = 0;
	s->fd = fd;
	return 0;
}

int
spool_write(struct spool *s, const void *p, size_t len)
{
	if (s->err) {
		errno = s->err;
		return -1;
	}
	if (len == 0)
		return 0;
	if (s->fd < 0 && s->len + len > s->q->spool_memory) {
		if (spool_spill(s) < 0)
			goto fail;
	}
	if (s->fd >= 0) {
		if (write_all(s->fd, p, len) < 0)
			goto fail;
	} else {
		if (s->len + len > s->cap) {
			size_t cap = s->cap ? s->cap : 4096;
			char *np;
			while (cap < s->len + len)
				cap *= 2;
			if (cap > s->q->spool_memory)
				cap = s->q->spool_memory;
			if ((np = realloc(s->mem, cap)) == NULL) {
				errno = ENOMEM;
				goto fail;
			}
			s->mem = np;
			s->cap = cap;
		}
		memcpy(s->mem + s->len, p, len);
		s->len += len;
	}
	s->size += len;
	return 0;
fail:
	s->err = errno;
	return -1;
}

uint64_t
spool_size(const struct spool *s)
{
	return s->size;
}

void
spool_free(struct spool *s)
{
	if (s == NULL)
		return;
	if (s->fd >= 0)
		close(s->fd);
	free(s->mem);
	free(s);
}
