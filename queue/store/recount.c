/*
 * recount.c - the live counts of the segments found at open, computed by a
 * walk of the index on a thread of its own while mail flows (doc/queue.md
 * "Recovery", step 5).
 *
 * Started by queue_open() (read-write, an index that passed the checks of
 * index.c and whose recovery scan succeeded) once the committer runs;
 * joined by queue_close(). Until the walk has read every entry, the
 * segments it counts (numbers below q->count_below: those of the open) are
 * neither recycled nor copied forward (housekeeping asks
 * queue_seg_counting()); segments made since are counted by the committer
 * as before. A walk that fails leaves them so until the next start: no
 * segment is recycled on counts that were not finished.
 *
 * A message removed while the walk runs (queue_remove -> queue_seg_gone)
 * is taken off the count only if the walk counted it: ids counted are kept
 * in walk (id) order, ids removed before the walk reached them are kept
 * aside and skipped when the walk meets them (it may have read the entry
 * before the removal). Both under q->lock; the walk reads the index in
 * chunks outside it (store_walk).
 * The same walk checks each counted entry against its record (header, id,
 * length, CRC: seg_record_read) and holds a damaged one as corrupt
 * (queue_mark_corrupt: a flag set in a transaction of its own, so a
 * delivery's update in between is not undone). Never writes a segment.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tern/log.h"
#include "tern/util.h"
#include "queue_int.h"

/* Is id in the sorted array a[0..n)? */
static int
queue_recount_has(const uint64_t *a, size_t n, uint64_t id)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (a[mid] == id)
			return 1;
		if (a[mid] < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

/* Append id to a growing array (ids are appended in increasing order). */
static void
queue_recount_push(uint64_t **a, size_t *n, size_t *cap, uint64_t id)
{
	if (*n == *cap) {
		*cap = *cap ? *cap * 2 : 1024;
		*a = xreallocarray(*a, *cap, sizeof(**a));
	}
	(*a)[(*n)++] = id;
}

/* Insert id into the sorted array a (small: removals during the walk). */
static void
queue_recount_insert(uint64_t **a, size_t *n, size_t *cap, uint64_t id)
{
	size_t i = *n;

	queue_recount_push(a, n, cap, id);
	while (i > 0 && (*a)[i - 1] > id) {
		(*a)[i] = (*a)[i - 1];
		i--;
	}
	(*a)[i] = id;
}

int
queue_seg_counting(const struct queue *q, uint32_t num)
{
	return q->counting && num < q->count_below;
}

void
queue_seg_gone(struct queue *q, uint64_t id, uint32_t num, uint64_t rec_len)
{
	struct queue_recount *rc = q->recount;

	if (!queue_seg_counting(q, num) || rc == NULL) {
		queue_seg_unref(q, num, rec_len);
		return;
	}
	if (queue_recount_has(rc->counted, rc->ncounted, id))
		queue_seg_unref(q, num, rec_len);
	else
		queue_recount_insert(&rc->removed, &rc->nremoved,
		    &rc->capremoved, id);
}

/* Is e's record there and its own? Else hold it (why logged). */
static void
queue_recount_check(struct queue *q, struct queue_recount *rc,
    const struct envelope *e)
{
	struct envelope *r = NULL;
	const char *why = "segment missing";
	uint64_t rec_len;
	struct stat sb;
	int bad = 1;

	if (rc->fd < 0 || rc->fd_seg != e->seg) {
		char path[4096];
		if (rc->fd >= 0)
			close(rc->fd);
		seg_path(q->segdir, e->seg, path, sizeof(path));
		rc->fd = open(path, O_RDONLY | O_CLOEXEC);
		rc->fd_seg = e->seg;
		rc->fd_size = rc->fd >= 0 && fstat(rc->fd, &sb) == 0 ?
		    (uint64_t)sb.st_size : 0;
	}
	if (rc->fd >= 0) {
		enum seg_rec_status st = seg_record_read(rc->fd, e->seg,
		    q->crc_salt, e->off, rc->fd_size, 0, &r, &rec_len, NULL,
		    &why);
		/* REMOVED: removed while the walk ran (the mark follows the
		 * index) */
		if (st == SEG_REC_REMOVED)
			st = SEG_REC_OK;
		if (st == SEG_REC_OK && (r->id != e->id ||
		    r->rec_len != e->rec_len || r->body_off != e->body_off ||
		    r->crc != e->crc))
			why = "record does not match the index";
		else if (st == SEG_REC_OK)
			bad = 0;
		envelope_free(r);
	}
	if (bad) {
		rc->corrupt++;
		(void)queue_mark_corrupt(q, e->id, why);
	}
}

static int
queue_recount_one(void *arg, const void *key, size_t klen, const void *val,
    size_t vlen)
{
	struct queue *q = arg;
	struct queue_recount *rc = q->recount;
	struct envelope *e = NULL;
	struct queue_seg *sg;
	uint64_t id;

	if (klen != 8)
		return 0;
	if (__atomic_load_n(&rc->stop, __ATOMIC_RELAXED))
		return 1;
	id = queue_get_be64(key);
	if (envelope_decode(val, vlen, &e) != ENV_DECODE_OK)
		return 0;       /* held as a placeholder wherever it is read */
	int counted = 0, lost = 0, old;
	pthread_mutex_lock(&q->lock);
	old = e->seg < q->count_below &&
	    !queue_recount_has(rc->removed, rc->nremoved, id);
	sg = old ? queue_seg_find(q, e->seg) : NULL;
	if (old && sg == NULL)
		lost = 1;               /* its segment is not there */
	else if (old) {
		sg->live++;
		sg->live_bytes += e->rec_len;
		queue_recount_push(&rc->counted, &rc->ncounted, &rc->capcounted,
		    id);
		counted = 1;
	}
	pthread_mutex_unlock(&q->lock);
	/* its segment stays while we count: the record can be read */
	if ((counted || lost) && !(e->flags & ENV_F_CORRUPT))
		queue_recount_check(q, rc, e);
	rc->entries++;
	envelope_free(e);
	return 0;
}

/* Ask the next start for DB->verify: <dir>/verify-index (queue_open). */
static void
queue_recount_mark(struct queue *q)
{
	char path[4200];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", q->dir, QUEUE_VERIFY_MARK);
	if ((fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600)) >= 0) {
		(void)fsync(fd);
		close(fd);
		(void)fsync_dir(q->dir);
	}
}

static void *
queue_recount_main(void *arg)
{
	struct queue *q = arg;
	struct queue_recount *rc = q->recount;
	uint64_t t0 = now_mono_us();
	int r = store_walk(q->st, STORE_ENVELOPES, queue_recount_one, q);

	pthread_mutex_lock(&q->lock);
	int stopped = __atomic_load_n(&rc->stop, __ATOMIC_RELAXED);
	if (r == 0 && !stopped)
		q->counting = 0;        /* housekeeping may recycle now */
	free(rc->counted);
	free(rc->removed);
	rc->counted = rc->removed = NULL;
	rc->ncounted = rc->nremoved = 0;
	pthread_mutex_unlock(&q->lock);
	if (rc->fd >= 0)
		close(rc->fd);
	rc->fd = -1;
	if (r < 0) {
		queue_recount_mark(q);
		log_warn("queue: the index walk that counts live messages "
		    "failed: segments of before this start are kept; restart "
		    "ternd: the next start verifies the index (and rebuilds it "
		    "from the segments if it is damaged)");
	}
	else if (!stopped)
		log_info("queue: live messages counted: entries=%llu "
		    "corrupt=%llu ms=%llu", (unsigned long long)rc->entries,
		    (unsigned long long)rc->corrupt,
		    (unsigned long long)((now_mono_us() - t0) / 1000));
	return NULL;
}

int
queue_recount_start(struct queue *q)
{
	struct queue_recount *rc = xcalloc(1, sizeof(*rc));
	int err;

	rc->fd = -1;
	pthread_mutex_lock(&q->lock);
	q->recount = rc;
	q->counting = 1;
	q->count_below = q->next_seg;
	pthread_mutex_unlock(&q->lock);
	if ((err = pthread_create(&rc->thr, NULL, queue_recount_main, q)) != 0) {
		errno = err;
		return -1;      /* counting stays on: nothing old is recycled */
	}
	rc->running = 1;
	return 0;
}

void
queue_recount_stop(struct queue *q)
{
	struct queue_recount *rc = q->recount;

	if (rc == NULL)
		return;
	__atomic_store_n(&rc->stop, 1, __ATOMIC_RELAXED);
	if (rc->running)
		pthread_join(rc->thr, NULL);
	pthread_mutex_lock(&q->lock);
	q->recount = NULL;
	pthread_mutex_unlock(&q->lock);
	free(rc->counted);
	free(rc->removed);
	free(rc);
}
