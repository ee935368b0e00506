/*
 * spool.c - a message body under construction (see tern/queue.h).
 *
 * Runs on the session loop thread that owns the spool; the committer reads
 * it after ownership moved with queue_commit_submit(). Holds up to
 * spool_memory bytes in memory, then spills everything to an unlinked file
 * in <queue>/tmp (O_TMPFILE, or mkstemp + unlink), which nothing ever
 * syncs: durability comes from the copy into the segment. A small prefix
 * (spool_prepend) is kept apart and written first by the committer. Writes to the
 * spill file are plain write()s on a local disk (page cache); never blocks
 * on the network. The bytes are the peer's, stored verbatim.
 *
 * Memory budget: the buffers of all spools of a queue together stay within
 * spool_budget bytes. A buffer reserves what it grows by (an atomic add on
 * q->spool_inuse, from any session thread); a growth the budget cannot take
 * spills that body to its file instead, so many sessions in DATA at once
 * cost disk writes, never unbounded memory. Spilling or freeing returns the
 * buffer's bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tern/metrics.h"
#include "tern/util.h"
#include "queue_int.h"

static void
spool_unreserve(struct spool *s)
{
	if (s->cap > 0) {
		__atomic_sub_fetch(&s->q->spool_inuse, (uint64_t)s->cap,
		    __ATOMIC_RELAXED);
		METRIC_ADD(spool_memory_bytes, -(int64_t)s->cap);
	}
}

struct spool *
spool_new(struct queue *q)
{
	struct spool *s = xcalloc(1, sizeof(*s));
	s->q = q;
	s->fd = -1;
	return s;
}

struct spool *
spool_adopt(struct queue *q, char *buf, size_t len)
{
	struct spool *s = spool_new(q);

	s->mem = buf;           /* cap stays 0: nothing reserved, nothing returned */
	s->len = len;
	s->size = len;
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
	spool_unreserve(s);
	free(s->mem);
	s->mem = NULL;
	s->len = s->cap = 0;
	s->fd = fd;
	METRIC_INC(spool_spills_total);
	return 0;
}

/*
 * Make room in memory for len more bytes: 0, or -1 when the body is to go
 * to its file instead (over spool_memory, over the budget, or no memory).
 */
static int
spool_grow(struct spool *s, size_t len)
{
	struct queue *q = s->q;
	size_t cap = s->cap ? s->cap : 4096;
	uint64_t delta;
	char *np;

	if (s->len + len > q->spool_memory)
		return -1;
	while (cap < s->len + len)
		cap *= 2;
	if (cap > q->spool_memory)
		cap = q->spool_memory;
	delta = cap - s->cap;
	if (__atomic_add_fetch(&q->spool_inuse, delta, __ATOMIC_RELAXED) >
	    q->spool_budget) {
		__atomic_sub_fetch(&q->spool_inuse, delta, __ATOMIC_RELAXED);
		return -1;
	}
	if ((np = realloc(s->mem, cap)) == NULL) {
		__atomic_sub_fetch(&q->spool_inuse, delta, __ATOMIC_RELAXED);
		return -1;
	}
	METRIC_ADD(spool_memory_bytes, (int64_t)delta);
	s->mem = np;
	s->cap = cap;
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
	if (s->fd < 0 && s->len + len > s->cap && spool_grow(s, len) < 0 &&
	    spool_spill(s) < 0)
		goto fail;
	if (s->fd >= 0) {
		if (write_all(s->fd, p, len) < 0)
			goto fail;
	} else {
		memcpy(s->mem + s->len, p, len);
		s->len += len;
	}
	s->size += len;
	return 0;
fail:
	s->err = errno;
	return -1;
}

int
spool_prepend(struct spool *s, const void *p, size_t len)
{
	char *np;

	if (len == 0)
		return 0;
	if ((np = malloc(len + s->prelen)) == NULL)
		return -1;
	memcpy(np, p, len);
	if (s->prelen > 0)
		memcpy(np + len, s->pre, s->prelen);
	free(s->pre);
	s->pre = np;
	s->prelen += len;
	s->size += len;
	return 0;
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
	spool_unreserve(s);
	free(s->mem);
	free(s->pre);
	free(s);
}
