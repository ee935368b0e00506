/*
 * commit.c - group commit into the segment log, and housekeeping.
 *
 * Two threads live here:
 *  - the committer owns the current segment (cur_fd, cur_pos) and is the
 *    only writer of segment records. Loop: take every waiting request,
 *    assign ids, write the batch (pwritev), ONE fdatasync, reply to every
 *    request, then index the batch in BDB without a log sync. Whatever
 *    arrives during the sync is the next batch: no timers.
 *  - housekeeping: every 100 ms a BDB log flush, then recycling of the
 *    segments that the now-durable index no longer points into; keeps one
 *    prepared spare segment; checkpoints and removes BDB logs every 5 s;
 *    once a second, copy-forward: the live records of an old segment that
 *    is mostly dead are committed again (same id, same envelope) through
 *    the committer, so that a few deferred messages never pin a segment;
 *    and the query keys of the messages committed without them more than
 *    QUEUE_QKEYS_DELAY_US ago (qkeys.c).
 * Sessions only ever take q->lock for an append (queue_commit_submit).
 *
 * Why each step of queue_commit_batch() is crash-safe:
 *  1. records are written into a segment that was pre-zeroed, fsynced and
 *     whose directory entry was fsynced before its first use, and whose
 *     number was recorded durably (next_seg) before the file got it;
 *  2. fdatasync: a crash before it returns loses or tears the batch, and
 *     nobody got a reply; recovery stops at the first invalid record;
 *  3. Q_OK replies only after 2 returned success: the records are durable;
 *  4. BDB index txn, no sync: a crash loses at most index entries that the
 *     recovery scan rebuilds from the segment (step 1-2 made them durable);
 *  5. a failed write or sync: the batch gets Q_TEMPFAIL, the segment is
 *     abandoned and its cut offset committed to BDB *synchronously* before
 *     the next batch, so recovery never indexes the failed bytes; the sync
 *     is never retried. If even that commit fails, the queue refuses every
 *     further commit until restarted (q->broken).
 * A copied-forward record (reloc_seg != 0) takes the same steps, then in
 * step 4's transaction moves only the index entry's location, and only if
 * the entry still points at the record copied (else the copy is dead). The
 * old segment is recycled after the log flush that made the move durable;
 * until then the old record is what the index points to, and recovery
 * skips the copy (its id is indexed). A copy's record envelope carries
 * ENV_F_COPY, so that recovery never brings back, through a copy, a message
 * removed while the copy was in flight. A reader holding the old location
 * re-reads the index (queue_read_body).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "tern/log.h"
#include "tern/metrics.h"
#include "tern/util.h"
#include "queue_int.h"

#define COMMIT_CHUNK    (256u << 10)    /* spilled bodies are copied in these */

/* ---- replies ---- */

static void
queue_commit_reply(struct queue_req *r, enum q_status st, int err, uint64_t qid)
{
	struct queue_commit_done *d;

	if (r->reply == NULL)           /* copy-forward: nobody waits */
		return;
	d = xcalloc(1, sizeof(*d));
	d->hdr.type = TQ_COMMIT_DONE;
	d->hdr.reqid = r->reqid;
	d->status = st;
	d->err = err;
	d->qid = qid;
	tq_post(r->reply, &d->hdr);
}

static void
queue_req_free(struct queue_req *r)
{
	envelope_free(r->env);
	spool_free(r->body);
	free(r->head);
	free(r);
}

void
queue_commit_submit(struct queue *q, struct envelope *env, struct spool *body,
    struct tq *reply, uint64_t reqid)
{
	struct queue_req *r = xcalloc(1, sizeof(*r));
	int refuse;

	r->env = env;
	r->body = body;
	r->reply = reply;
	r->reqid = reqid;
	r->t_submit = now_mono_us();
	pthread_mutex_lock(&q->lock);
	refuse = q->readonly ? EROFS : q->stopping ? ESHUTDOWN : 0;
	if (!refuse) {
		STAILQ_INSERT_TAIL(&q->reqs, r, next);
		pthread_cond_signal(&q->cond);
	}
	pthread_mutex_unlock(&q->lock);
	if (refuse) {
		queue_commit_reply(r, Q_TEMPFAIL, refuse, 0);
		queue_req_free(r);
	}
}

void
queue_set_notify(struct queue *q, struct tq *notify)
{
	pthread_mutex_lock(&q->lock);
	q->notify = notify;
	pthread_mutex_unlock(&q->lock);
}

/* ---- segments ---- */

static uint64_t
queue_now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int
queue_spare_prepare(struct queue *q)
{
	char tmp[4096], fin[4096];
	int rc = 0;

	pthread_mutex_lock(&q->prep_lock);
	if (!q->have_spare) {
		snprintf(tmp, sizeof(tmp), "%s/spare.tmp", q->segdir);
		snprintf(fin, sizeof(fin), "%s/spare", q->segdir);
		rc = seg_prepare(q->segdir, tmp, fin, q->segment_size);
		if (rc == 0) {
			pthread_mutex_lock(&q->lock);
			q->have_spare = 1;
			pthread_mutex_unlock(&q->lock);
		}
	}
	pthread_mutex_unlock(&q->prep_lock);
	return rc;
}

/*
 * Make next_seg (and, unless indexing is stuck, the indexed position at
 * the start of the new segment) durable before any file carries the new
 * number: no file can then ever hold records with an epoch that a later
 * segment reuses.
 */
/* The current segment's extent, in t and in the table (it is being left). */
static int
queue_seg_end_put(struct queue *q, struct store_txn *t)
{
	uint8_t key[8], v[8];
	struct queue_seg *sg;

	memcpy(key, META_END, 4);
	queue_be32(key + 4, q->cur_num);
	queue_be64(v, q->cur_pos);
	pthread_mutex_lock(&q->lock);
	if ((sg = queue_seg_find(q, q->cur_num)) != NULL)
		sg->extent = q->cur_pos;
	pthread_mutex_unlock(&q->lock);
	return store_put(q->st, t, STORE_META, key, 8, v, 8);
}

static int
queue_seg_claim(struct queue *q, uint32_t num)
{
	struct store_txn *t = NULL;
	uint8_t v[12];
	int rc = -1;

	for (int tries = 0; tries < 20; tries++) {
		if (store_begin(q->st, &t) < 0)
			return -1;
		queue_be32(v, num + 1);
		rc = store_put(q->st, t, STORE_META, META_NEXT_SEG,
		    strlen(META_NEXT_SEG), v, 4);
		if (rc == 0 && !q->index_stuck) {
			queue_be32(v, num);
			queue_be64(v + 4, 0);
			rc = store_put(q->st, t, STORE_META, META_INDEXED,
			    strlen(META_INDEXED), v, 12);
		}
		if (rc == 0 && q->cur_num != 0)
			rc = queue_seg_end_put(q, t);
		if (rc == 0)
			return store_commit(t, 1) == 0 ? 0 : -1;
		store_abort(t);
		if (rc != STORE_RETRY)
			break;
	}
	if (rc == STORE_RETRY)
		errno = EAGAIN;
	return -1;
}

int
queue_seg_roll(struct queue *q, uint64_t need)
{
	char path[4096], tmp[4200], spare[4096];
	uint64_t size = q->segment_size;
	uint32_t num = q->next_seg;
	int fd, spare_used = 0;

	if (need > size)
		size = (need + SEG_ALIGN - 1) / SEG_ALIGN * SEG_ALIGN;
	if (queue_seg_claim(q, num) < 0)
		return -1;
	q->next_seg = num + 1;
	seg_path(q->segdir, num, path, sizeof(path));
	if (size == q->segment_size) {
		if (queue_spare_prepare(q) < 0)
			return -1;
		pthread_mutex_lock(&q->prep_lock);
		snprintf(spare, sizeof(spare), "%s/spare", q->segdir);
		if (rename(spare, path) == 0 && fsync_dir(q->segdir) == 0)
			spare_used = 1;
		pthread_mutex_lock(&q->lock);
		q->have_spare = 0;
		pthread_mutex_unlock(&q->lock);
		pthread_mutex_unlock(&q->prep_lock);
		if (!spare_used)
			return -1;
	} else {
		/* oversized message: a segment of its own, prepared now */
		snprintf(tmp, sizeof(tmp), "%s.tmp", path);
		if (seg_prepare(q->segdir, tmp, path, size) < 0)
			return -1;
	}
	if ((fd = open(path, O_RDWR | O_CLOEXEC)) < 0)
		return -1;
	if (q->cur_fd >= 0)
		close(q->cur_fd);
	q->cur_fd = fd;
	q->cur_size = size;
	q->cur_pos = 0;
	pthread_mutex_lock(&q->lock);
	queue_seg_add(q, num, size);
	q->cur_num = num;
	pthread_mutex_unlock(&q->lock);
	log_trace(TRACE_QUEUE, "queue: segment=%08x size=%llu current", num,
	    (unsigned long long)size);
	return 0;
}

/*
 * Zero [start, end) of the current segment: the failed group's bytes, which
 * nobody was told are queued. The cut recorded by queue_seg_abandon() keeps
 * recovery away from them; the zeros also do when that record could not be
 * made, as long as they reach the file (the page cache, at least: the
 * failed bytes may be sitting there, readable by the next start). Best
 * effort: a disk that failed the group may fail this too. Says how far it
 * got, for the log line.
 */
static const char *
queue_seg_scrub(struct queue *q, uint64_t start, uint64_t end)
{
	static const char zero[64u << 10];
	int ok = 1;

	if (end > q->cur_size)
		end = q->cur_size;
	for (uint64_t off = start; off < end && ok; ) {
		size_t n = end - off > sizeof(zero) ? sizeof(zero) :
		    (size_t)(end - off);
		ssize_t k = pwrite(q->cur_fd, zero, n, (off_t)off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			ok = 0;
		else
			off += (uint64_t)k;
	}
	if (!ok)
		return "no";
	return fdatasync(q->cur_fd) == 0 ? "yes" : "unsynced";
}

/* Give up on the current segment after a failed batch that started at off. */
static void
queue_seg_abandon(struct queue *q, uint64_t off)
{
	char key[16];
	uint8_t v[8];
	uint32_t num = q->cur_num;

	memcpy(key, META_CUT, 4);
	queue_be32((uint8_t *)key + 4, num);
	queue_be64(v, off);
	if (queue_meta_put(q, key, 8, v, 8, 1) < 0) {
		pthread_mutex_lock(&q->lock);
		q->broken = errno ? errno : EIO;
		pthread_mutex_unlock(&q->lock);
		log_warnx("queue: cannot record the abandoned segment: refusing "
		    "all commits until restart");
	}
	close(q->cur_fd);
	q->cur_fd = -1;
	q->cur_pos = q->cur_size = 0;
	pthread_mutex_lock(&q->lock);
	q->cur_num = 0;
	pthread_mutex_unlock(&q->lock);
}

void
queue_seg_recycle(struct queue *q, uint32_t num, uint64_t size)
{
	char path[4096], spare[4096], key[8];
	struct store_txn *t = NULL;
	int reused = 0;

	seg_path(q->segdir, num, path, sizeof(path));
	pthread_mutex_lock(&q->prep_lock);
	if (!q->have_spare && size == q->segment_size && !q->readonly) {
		snprintf(spare, sizeof(spare), "%s/spare", q->segdir);
		/* stale records keep their old epoch: they never look valid */
		if (rename(path, spare) == 0) {
			reused = 1;
			pthread_mutex_lock(&q->lock);
			q->have_spare = 1;
			pthread_mutex_unlock(&q->lock);
		}
	}
	if (!reused)
		unlink(path);
	fsync_dir(q->segdir);
	pthread_mutex_unlock(&q->prep_lock);
	memcpy(key, META_CUT, 4);
	queue_be32((uint8_t *)key + 4, num);
	if (store_begin(q->st, &t) == 0) {
		int r = store_del(q->st, t, STORE_META, key, 8);
		memcpy(key, META_END, 4);
		if (r >= 0)
			r = store_del(q->st, t, STORE_META, key, 8);
		if (r < 0)
			store_abort(t);
		else
			store_commit(t, 0);
	}
	log_trace(TRACE_QUEUE, "queue: segment=%08x %s", num,
	    reused ? "recycled as spare" : "deleted");
}

/* ---- one group: requests that all go into the current segment ---- */

struct queue_iovw {
	int fd;
	struct iovec iov[64];
	int n;
	uint64_t start, next;   /* file offsets of iov[0] and of the end */
};

static int
queue_iovw_flush(struct queue_iovw *w)
{
	struct iovec *iov = w->iov;
	int n = w->n;
	uint64_t off = w->start;

	while (n > 0) {
		ssize_t k = pwritev(w->fd, iov, n, (off_t)off);
		if (k < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (k == 0) {
			errno = EIO;
			return -1;
		}
		off += (uint64_t)k;
		while (n > 0 && (size_t)k >= iov->iov_len) {
			k -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + k;
			iov->iov_len -= (size_t)k;
		}
	}
	w->n = 0;
	w->start = w->next;
	return 0;
}

static int
queue_iovw_add(struct queue_iovw *w, const void *p, size_t len, uint64_t off)
{
	if (len == 0)
		return 0;
	if (w->n > 0 && (off != w->next || w->n == (int)(sizeof(w->iov) /
	    sizeof(w->iov[0])))) {
		if (queue_iovw_flush(w) < 0)
			return -1;
	}
	if (w->n == 0)
		w->start = off;
	w->iov[w->n].iov_base = (void *)(uintptr_t)p;
	w->iov[w->n].iov_len = len;
	w->n++;
	w->next = off + len;
	return 0;
}

/* Copy a spilled body into the segment at off, adding it to *crc. */
static int
queue_copy_spilled(struct queue *q, struct spool *s, uint64_t off, uint32_t *crc)
{
	char *buf = malloc(COMMIT_CHUNK);
	uint64_t pos = 0;

	if (buf == NULL)
		return -1;
	uint64_t fsize = s->size - s->prelen;   /* the prefix is not in the file */

	while (pos < fsize) {
		size_t want = fsize - pos > COMMIT_CHUNK ? COMMIT_CHUNK :
		    (size_t)(fsize - pos);
		ssize_t n = pread(s->fd, buf, want, (off_t)pos);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			goto fail;
		}
		*crc = crc32c(*crc, buf, (size_t)n);
		for (size_t done = 0; done < (size_t)n; ) {
			ssize_t k = pwrite(q->cur_fd, buf + done, (size_t)n - done,
			    (off_t)(off + pos + done));
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0) {
				if (k == 0)
					errno = EIO;
				goto fail;
			}
			done += (size_t)k;
		}
		pos += (uint64_t)n;
	}
	free(buf);
	return 0;
fail:
	free(buf);
	return -1;
}

/*
 * A copied-forward record: in t, point the index entry at it if the entry
 * still points at the record copied (r->reloc_moved = 1); else leave it.
 */
static int
queue_commit_index_reloc(struct queue *q, struct store_txn *t,
    struct queue_req *r)
{
	struct envelope *cur = NULL;
	const struct envelope *e = r->env;
	uint8_t key[8];
	void *v = NULL;
	size_t vlen;
	int rc;

	r->reloc_moved = r->reloc_gone = 0;
	queue_be64(key, e->id);
	rc = store_get(q->st, t, STORE_ENVELOPES, key, 8, &v, &vlen);
	if (rc == STORE_NOTFOUND) {
		r->reloc_gone = 1;              /* removed meanwhile: the copy is dead */
		return 0;
	}
	if (rc != 0)
		return rc;
	if (envelope_decode(v, vlen, &cur) == ENV_DECODE_OK &&
	    cur->seg == r->reloc_seg && cur->off == r->reloc_off &&
	    !(cur->flags & ENV_F_CORRUPT)) {
		queue_env_locate(cur, e);
		rc = queue_index_put(q, t, cur);
		r->reloc_moved = rc == 0;
	}
	envelope_free(cur);
	free(v);
	return rc;
}

/* Index the group in BDB: one transaction, no log sync. */
static void
queue_commit_index(struct queue *q, struct queue_req **g, size_t n, uint64_t end)
{
	struct store_txn *t = NULL;
	uint8_t v[12];
	int rc = -1, lazy = queue_qkeys_lazy_now(q);

	for (int tries = 0; tries < 20; tries++) {
		if (store_begin(q->st, &t) < 0)
			break;
		rc = 0;
		for (size_t i = 0; i < n && rc == 0; i++)
			rc = g[i]->reloc_seg != 0 ?
			    queue_commit_index_reloc(q, t, g[i]) :
			    queue_index_put_new(q, t, g[i]->env, lazy);
		if (rc == 0 && !q->index_stuck) {
			queue_be32(v, q->cur_num);
			queue_be64(v + 4, end);
			rc = store_put(q->st, t, STORE_META, META_INDEXED,
			    strlen(META_INDEXED), v, 12);
		}
		if (rc == 0) {
			queue_be64(v, q->last_id + 1);
			rc = store_put(q->st, t, STORE_META, META_NEXT_ID,
			    strlen(META_NEXT_ID), v, 8);
		}
		if (rc == 0) {
			/* it ended t, committed or not */
			if ((rc = queue_index_commit(q, t, 0)) == 0)
				break;
		} else
			store_abort(t);
		if (rc != STORE_RETRY)
			break;
	}
	if (rc != 0) {
		q->index_stuck = 1;
		log_warnx("queue: indexing %zu committed messages failed; the "
		    "recovery scan at the next start will index them", n);
		/* no copy took over: each is dead space in the current segment */
		pthread_mutex_lock(&q->lock);
		for (size_t i = 0; i < n; i++)
			if (g[i]->reloc_seg != 0)
				queue_seg_unref(q, g[i]->env->seg, g[i]->rec_len);
		pthread_mutex_unlock(&q->lock);
		return;
	}
	if (lazy) {             /* their keys come later (qkeys.c) */
		uint64_t now = now_mono_us();
		for (size_t i = 0; i < n; i++)
			if (g[i]->reloc_seg == 0)
				queue_qkeys_append(q, g[i]->env, now);
	}
	if (q->qk_lazy)
		queue_qkeys_end(q, q->cur_num, end);
	pthread_mutex_lock(&q->lock);
	struct tq *notify = q->notify;
	/* a copy that took over: the old record is dead; else the copy is */
	for (size_t i = 0; i < n; i++) {
		struct queue_req *r = g[i];
		if (r->reloc_seg == 0)
			continue;
		if (r->reloc_moved) {
			queue_seg_unref(q, r->reloc_seg, r->reloc_len);
			METRIC_INC(queue_copied_forward_total);
		} else {
			/* a copy of a removed message must not come back
			 * in a rebuild either */
			if (r->reloc_gone)
				queue_mark_removed(q, r->env->seg, r->env->off);
			queue_seg_unref(q, r->env->seg, r->rec_len);
		}
	}
	pthread_mutex_unlock(&q->lock);
	for (size_t i = 0; notify != NULL && i < n; i++) {
		if (g[i]->reloc_seg != 0)
			continue;
		struct queue_new_message *m = xcalloc(1, sizeof(*m));
		m->hdr.type = TQ_NEW_MESSAGE;
		m->hdr.reqid = g[i]->env->id;
		m->qid = g[i]->env->id;
		tq_post(notify, &m->hdr);
	}
}

/*
 * Write g[0..n) at cur_pos of the current segment, sync, reply, index.
 * The step-by-step crash argument is at the top of this file.
 */
static void
queue_commit_group(struct queue *q, struct queue_req **g, size_t n)
{
	struct queue_iovw w = { .fd = q->cur_fd, .n = 0 };
	uint64_t start = q->cur_pos, off = start, end = start;
	const char *op = "write";
	enum q_status st;
	int err;

	for (size_t i = 0; i < n; i++)
		end += g[i]->rec_len;

	/* 1. write: spilled bodies streamed first, then one pwritev */
	for (size_t i = 0; i < n; i++) {
		struct queue_req *r = g[i];
		struct spool *b = r->body;
		struct seg_hdr h;
		uint32_t crc;

		r->env->seg = q->cur_num;
		r->env->off = off;
		h.magic = SEG_MAGIC;
		h.version = SEG_VERSION;
		h.flags = 0;
		h.epoch = q->cur_num;
		h.seq = r->seq;
		h.payload_len = (uint32_t)(r->rec_len - SEG_HDR_LEN);
		h.crc = 0;
		seg_hdr_encode(&h, r->head);
		/* crc field still 0 */
		crc = crc32c(q->crc_salt, r->head, r->headlen);
		crc = crc32c(crc, b->pre, b->prelen);   /* spool_prepend's */
		if (b->fd >= 0) {
			if (queue_copy_spilled(q, b, off + r->headlen + b->prelen,
			    &crc) < 0)
				goto fail;
		} else
			crc = crc32c(crc, b->mem, b->len);
		h.crc = crc;
		seg_hdr_encode(&h, r->head);
		r->env->crc = crc;
		if (queue_iovw_add(&w, r->head, r->headlen, off) < 0)
			goto fail;
		if (queue_iovw_add(&w, b->pre, b->prelen, off + r->headlen) < 0)
			goto fail;
		if (b->fd < 0 && queue_iovw_add(&w, b->mem, b->len,
		    off + r->headlen + b->prelen) < 0)
			goto fail;
		off += r->rec_len;
	}
	if (w.n > 0 && queue_iovw_flush(&w) < 0)
		goto fail;

	/* 2. one fdatasync for the group: never retried */
	op = "fdatasync";
	if (fdatasync(q->cur_fd) < 0)
		goto fail;
	q->cur_pos = off;
	size_t nnew = 0;
	for (size_t i = 0; i < n; i++)
		nnew += g[i]->reloc_seg == 0;
	pthread_mutex_lock(&q->lock);
	q->commits += nnew;
	q->batches++;
	struct queue_seg *sg = queue_seg_find(q, q->cur_num);
	if (sg != NULL) {
		sg->live += n;
		sg->live_bytes += off - start;
	}
	pthread_mutex_unlock(&q->lock);

	/* 3. the records are durable: answer every session */
	uint64_t now = now_mono_us();
	if (nnew > 0)
		metrics_observe(&tern_metrics.commit_batch_size,
		    (uint64_t)nnew * 1000000u);
	for (size_t i = 0; i < n; i++) {
		if (g[i]->reloc_seg == 0)
			metrics_observe(&tern_metrics.commit_seconds,
			    now - g[i]->t_submit);
		queue_commit_reply(g[i], Q_OK, 0, g[i]->env->id);
	}
	log_trace(TRACE_QUEUE, "queue: batch=%zu segment=%08x end=%llu", n,
	    q->cur_num, (unsigned long long)off);

	/* 4. index, off the accept path */
	queue_commit_index(q, g, n, off);
	return;
fail:
	/* 5. nothing of this group may become live: abandon the segment */
	err = errno ? errno : EIO;
	st = Q_TEMPFAIL;
	for (size_t i = 0; i < n; i++)
		queue_commit_reply(g[i], st, err != ENOSPC && err != EDQUOT ?
		    EIO : err, 0);
	/* one line per failed group, never one per message */
	log_warnx("queue: %s failed segment=%08x offset=%llu length=%llu "
	    "messages=%zu: %s: refused, zeroed=%s, segment abandoned", op,
	    q->cur_num, (unsigned long long)start,
	    (unsigned long long)(end - start), n, strerror(err),
	    queue_seg_scrub(q, start, end));
	queue_seg_abandon(q, start);
}

/* Assign an id and build the record head (header placeholder + envelope). */
static int
queue_commit_prepare(struct queue *q, struct queue_req *r)
{
	struct envelope *e = r->env;
	uint8_t *enc = NULL;
	size_t enclen;
	uint64_t now = queue_now_us();

	/*
	 * The session normally gave the message its id at MAIL (it is in the
	 * Received header); the record's seq orders the log and keeps the
	 * counter persisted as META_NEXT_ID above every id committed.
	 */
	if (e->id == 0)
		e->id = qid_new();
	q->last_id = now > q->last_id ? now : q->last_id + 1;
	if (e->id > q->last_id)
		q->last_id = e->id;
	r->seq = q->last_id;
	if (e->arrival == 0)
		e->arrival = now_unix();
	if (r->reloc_seg != 0)
		e->flags |= ENV_F_COPY;         /* in the record only */
	e->size = r->body->size;
	e->seg = 0;
	e->off = 0;
	e->rec_len = 0;
	e->body_off = 0;
	e->crc = 0;
	if (r->body->err) {
		queue_commit_reply(r, Q_TEMPFAIL, r->body->err, 0);
		return -1;
	}
	if (envelope_encode(e, &enc, &enclen) < 0) {
		if (errno == ENOMEM)
			queue_commit_reply(r, Q_TEMPFAIL, ENOMEM, 0);
		else
			queue_commit_reply(r, Q_PERMFAIL, EINVAL, 0);
		return -1;
	}
	/* what the reader (seg_record_read) would refuse is never written */
	if (enclen > SEG_ENV_MAX ||
	    (uint64_t)enclen + 4 + e->size > UINT32_MAX - SEG_HDR_LEN - SEG_ALIGN) {
		free(enc);
		queue_commit_reply(r, Q_PERMFAIL, EFBIG, 0);
		return -1;
	}
	r->headlen = SEG_HDR_LEN + 4 + enclen;
	if ((r->head = calloc(1, r->headlen)) == NULL) {
		free(enc);
		queue_commit_reply(r, Q_TEMPFAIL, ENOMEM, 0);
		return -1;
	}
	/* the header itself is filled in by queue_commit_group() */
	queue_be32(r->head + SEG_HDR_LEN, (uint32_t)enclen);
	memcpy(r->head + SEG_HDR_LEN + 4, enc, enclen);
	free(enc);
	r->rec_len = r->headlen + e->size;
	e->rec_len = (uint32_t)r->rec_len;
	e->body_off = (uint32_t)(4 + enclen);
	return 0;
}

/*
 * A failed roll refuses the batch: said once, and once more when segments
 * can be made again, with the count in between; never a line per batch
 * while a disk stays sick. err 0: the roll worked.
 */
static void
queue_roll_failed(struct queue *q, int err, size_t refused)
{
	if (err == 0) {
		if (q->roll_fails > 0)
			log_info("queue: new segments can be made again, after %llu "
			    "messages refused", (unsigned long long)q->roll_fails);
		q->roll_err = 0;
		q->roll_fails = 0;
		return;
	}
	if (err != q->roll_err)
		log_warnx("queue: cannot start a new segment: %s: new mail is "
		    "refused until one can be made", strerror(err));
	q->roll_err = err;
	q->roll_fails += refused;
}

static void
queue_commit_batch(struct queue *q, struct queue_req *list)
{
	struct queue_req **v = NULL, *r;
	size_t n = 0, cap = 0, i, j;
	int broken, low;

	pthread_mutex_lock(&q->lock);
	broken = q->broken;
	pthread_mutex_unlock(&q->lock);
	low = queue_space_refuse(q);
	for (r = list; r != NULL; r = STAILQ_NEXT(r, next)) {
		/*
		 * A disk nearly full takes no new mail (452), but takes a
		 * bounce: it replaces the message bounced, and frees space.
		 */
		int refuse = broken ? broken :
		    (r->env->flags & ENV_F_DSN) ? 0 : low;
		if (refuse) {
			queue_commit_reply(r, Q_TEMPFAIL, refuse, 0);
			continue;
		}
		if (queue_commit_prepare(q, r) < 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			v = xreallocarray(v, cap, sizeof(*v));
		}
		v[n++] = r;
	}
	for (i = 0; i < n; i = j) {
		uint64_t pos;

		/* the epoch goes into the header: set it per group below */
		if (q->cur_fd < 0 || q->cur_pos + v[i]->rec_len > q->cur_size) {
			if (queue_seg_roll(q, v[i]->rec_len) < 0) {
				int err = errno ? errno : EIO;
				queue_roll_failed(q, err, n - i);
				for (j = i; j < n; j++)
					queue_commit_reply(v[j], Q_TEMPFAIL, err, 0);
				break;
			}
			queue_roll_failed(q, 0, 0);
		}
		pos = q->cur_pos;
		for (j = i; j < n && pos + v[j]->rec_len <= q->cur_size; j++)
			pos += v[j]->rec_len;
		queue_commit_group(q, v + i, j - i);
	}
	free(v);
	for (r = list; r != NULL; ) {
		struct queue_req *next = STAILQ_NEXT(r, next);
		queue_req_free(r);
		r = next;
	}
}

static void *
queue_committer_main(void *arg)
{
	struct queue *q = arg;
	struct queue_req *list;

	pthread_mutex_lock(&q->lock);
	for (;;) {
		while (STAILQ_EMPTY(&q->reqs) && !q->stopping)
			pthread_cond_wait(&q->cond, &q->lock);
		if (STAILQ_EMPTY(&q->reqs) && q->stopping)
			break;
		list = STAILQ_FIRST(&q->reqs);  /* the chain ends in NULL */
		STAILQ_INIT(&q->reqs);
		pthread_mutex_unlock(&q->lock);
		queue_commit_batch(q, list);
		pthread_mutex_lock(&q->lock);
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

/* ---- housekeeping ---- */

static void
queue_hk_recycle(struct queue *q)
{
	uint32_t nums[64];
	uint64_t sizes[64];
	size_t n = 0;

	pthread_mutex_lock(&q->lock);
	for (size_t i = 0; i < q->nsegs && n < 64; i++) {
		struct queue_seg *s = &q->segs[i];
		if (s->live == 0 && s->num != q->cur_num && !s->recycling &&
		    !queue_seg_counting(q, s->num)) {
			s->recycling = 1;
			queue_seg_rfd_put(s->rfd);   /* readers still on it keep theirs */
			s->rfd = NULL;
			nums[n] = s->num;
			sizes[n++] = s->size;
		}
	}
	pthread_mutex_unlock(&q->lock);
	if (n == 0)
		return;
	/* the removals that emptied them must be durable first */
	if (store_flush(q->st) < 0) {
		pthread_mutex_lock(&q->lock);
		for (size_t i = 0; i < n; i++) {
			struct queue_seg *s = queue_seg_find(q, nums[i]);
			if (s != NULL)
				s->recycling = 0;
		}
		pthread_mutex_unlock(&q->lock);
		return;
	}
	for (size_t i = 0; i < n; i++) {
		queue_seg_recycle(q, nums[i], sizes[i]);
		pthread_mutex_lock(&q->lock);
		queue_seg_drop(q, nums[i]);
		pthread_mutex_unlock(&q->lock);
	}
}

/*
 * Copy-forward. A segment other than the current one whose live records
 * fill at most a quarter of it is emptied by committing its live records
 * again; at most QUEUE_CF_BYTES per pass, one segment per pass, and a
 * segment is looked at again QUEUE_CF_AGAIN seconds later at the earliest
 * (the moves land in the index only after the committer's next batch).
 * A segment is moved only when it has held still: at its first look, and
 * while it loses at least 1/QUEUE_CF_DRAINING of its live records from one
 * look to the next (a second apart), it is emptying by itself (a queue
 * draining after an outage) and moving it would rewrite records about to
 * be removed, after a walk of the whole index.
 */
#define QUEUE_CF_LIVE_PCT   25
#define QUEUE_CF_BYTES      (32ull << 20)
#define QUEUE_CF_AGAIN      10
#define QUEUE_CF_IDLE       3600        /* after a pass that moved nothing */
#define QUEUE_CF_DRAINING   8

struct queue_cf_walk {
	uint32_t seg;
	struct envelope **v;
	size_t n, cap;
	uint64_t bytes;
};

static int
queue_cf_walk_cb(void *arg, const void *key, size_t klen, const void *val,
    size_t vlen)
{
	struct queue_cf_walk *w = arg;
	struct envelope *e = NULL;
	uint32_t flags, seg;

	/* most entries live elsewhere: look before decoding */
	if (klen != 8 || envelope_peek(val, vlen, &flags, &seg) < 0 ||
	    seg != w->seg || (flags & ENV_F_CORRUPT) ||
	    envelope_decode(val, vlen, &e) != ENV_DECODE_OK)
		return 0;
	if (w->n == w->cap) {
		w->cap = w->cap ? w->cap * 2 : 64;
		w->v = xreallocarray(w->v, w->cap, sizeof(*w->v));
	}
	w->v[w->n++] = e;
	w->bytes += e->rec_len;
	return w->bytes >= QUEUE_CF_BYTES;      /* enough for one pass */
}

/* Hand one live record to the committer to be written again: 0, -1 error,
 * 1 the queue is stopping (e is still the caller's in both). */
static int
queue_cf_submit(struct queue *q, struct envelope *e)
{
	struct queue_req *r;
	struct spool *sp;
	char *body = NULL;
	size_t len = 0;

	if (queue_read_body(q, e, &body, &len) < 0)
		return -1;
	sp = spool_adopt(q, body, len);
	r = xcalloc(1, sizeof(*r));
	r->env = e;
	r->body = sp;
	r->reloc_seg = e->seg;
	r->reloc_off = e->off;
	r->reloc_len = e->rec_len;
	r->t_submit = now_mono_us();
	pthread_mutex_lock(&q->lock);
	if (q->stopping || q->broken) {
		pthread_mutex_unlock(&q->lock);
		r->env = NULL;          /* the caller still owns e */
		queue_req_free(r);
		return 1;
	}
	STAILQ_INSERT_TAIL(&q->reqs, r, next);
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
	return 0;
}

/* 1 when sg is seen for the first time or still emptying fast (q->lock). */
static int
queue_cf_draining(struct queue_seg *sg)
{
	int draining = !sg->cf_looked || (sg->live < sg->cf_live &&
	    (sg->cf_live - sg->live) * QUEUE_CF_DRAINING >= sg->cf_live);

	sg->cf_looked = 1;
	sg->cf_live = sg->live;
	return draining;
}

static void
queue_hk_copy_forward(struct queue *q)
{
	struct queue_cf_walk w = { 0 };
	int64_t now = (int64_t)(now_mono_us() / 1000000u);
	size_t sent = 0;
	uint64_t bytes = 0;
	int stop = 0;

	pthread_mutex_lock(&q->lock);
	for (size_t i = 0; i < q->nsegs; i++) {
		struct queue_seg *sg = &q->segs[i];
		/* weighed against the bytes written: a segment of copies
		 * only (the current one at the last stop) stays put */
		uint64_t written = sg->extent ? sg->extent : sg->size;
		if (sg->num == q->cur_num || sg->recycling || sg->live == 0 ||
		    queue_seg_counting(q, sg->num) ||
		    sg->cf_next > now ||
		    sg->live_bytes * 100 > written * QUEUE_CF_LIVE_PCT)
			continue;
		if (queue_cf_draining(sg)) {
			sg->cf_next = now + 1;
			continue;
		}
		sg->cf_next = now + QUEUE_CF_AGAIN;
		w.seg = sg->num;
		break;
	}
	pthread_mutex_unlock(&q->lock);
	if (w.seg == 0)
		return;
	if (store_walk(q->st, STORE_ENVELOPES, queue_cf_walk_cb, &w) < 0)
		log_warn("queue: copy-forward: index walk");
	for (size_t i = 0; i < w.n; i++) {
		uint64_t len = w.v[i]->rec_len;
		int rc = stop ? 1 : queue_cf_submit(q, w.v[i]);
		if (rc != 0) {
			char qid[QID_STRLEN + 1];
			qid_format(w.v[i]->id, qid);
			if (rc < 0)
				log_warn("queue: id=%s copy-forward from "
				    "segment=%08x", qid, w.seg);
			stop = rc > 0;
			envelope_free(w.v[i]);
			continue;
		}
		sent++;
		bytes += len;
	}
	free(w.v);
	if (sent > 0) {
		log_info("queue: copy-forward segment=%08x records=%zu bytes=%llu",
		    w.seg, sent, (unsigned long long)bytes);
	} else if (!stop) {
		/* what pins it cannot be moved (held corrupt, unreadable):
		 * do not walk the index for it every few seconds */
		pthread_mutex_lock(&q->lock);
		struct queue_seg *sg = queue_seg_find(q, w.seg);
		if (sg != NULL)
			sg->cf_next = now + QUEUE_CF_IDLE;
		pthread_mutex_unlock(&q->lock);
	}
}

/*
 * Compaction: once removals happened and the queue has then been quiet
 * (no commit, no removal) for QUEUE_COMPACT_QUIET passes of one second,
 * the index is compacted and its free pages go back to the file system.
 */
#define QUEUE_COMPACT_QUIET 5

static void
queue_hk_compact(struct queue *q)
{
	uint64_t act, removals, pages = 0, before, after, segs;
	int rc;

	pthread_mutex_lock(&q->lock);
	removals = q->removals;
	act = q->commits + removals;
	pthread_mutex_unlock(&q->lock);
	if (act != q->hk_activity) {
		q->hk_activity = act;
		q->hk_quiet = 0;
		return;
	}
	if (++q->hk_quiet < QUEUE_COMPACT_QUIET ||
	    removals == q->hk_removals_compacted)
		return;
	queue_disk_use(q, &segs, &before);
	if ((rc = store_compact(q->st, &pages)) != 0) {
		if (rc != STORE_RETRY)
			log_warn("queue: index compaction");
		return;                 /* tried again at the next quiet pass */
	}
	q->hk_removals_compacted = removals;
	store_checkpoint(q->st);        /* drops the logs the moves wrote */
	queue_disk_use(q, &segs, &after);
	log_info("queue: index compacted: bytes=%llu->%llu pages-freed=%llu",
	    (unsigned long long)before, (unsigned long long)after,
	    (unsigned long long)pages);
}

static void *
queue_hk_main(void *arg)
{
	struct queue *q = arg;
	struct timespec ts;
	unsigned tick = 0, next_prep = 0;
	int stop;

	for (;;) {
		pthread_mutex_lock(&q->lock);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 100 * 1000 * 1000;
		if (ts.tv_nsec >= 1000000000) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000;
		}
		if (!q->hk_stop)
			pthread_cond_timedwait(&q->hk_cond, &q->lock, &ts);
		stop = q->hk_stop;
		int spare = q->have_spare;
		pthread_mutex_unlock(&q->lock);
		if (stop)
			break;
		tick++;
		if (store_flush(q->st) < 0)
			log_warn("queue: bdb log flush");
		queue_hk_recycle(q);
		/* a full disk: room for the index first, no new records */
		queue_space_check(q);
		int low = queue_space_refuse(q) != 0;
		if (tick % 10 == 0 && !low)
			queue_hk_copy_forward(q);
		if (tick % 10 == 5)
			queue_hk_compact(q);
		/* keep one spare ready; after a failure retry every 5 s */
		if (!spare && !low && tick >= next_prep &&
		    queue_spare_prepare(q) < 0) {
			log_warn("queue: cannot prepare a spare segment");
			next_prep = tick + 50;
		}
		if (tick % 50 == 0 && store_checkpoint(q->st) < 0)
			log_warn("queue: bdb checkpoint");
		(void)queue_qkeys_run(q, QUEUE_QKEYS_DELAY_US);
	}
	return NULL;
}

int
queue_commit_start(struct queue *q)
{
	if (pthread_create(&q->committer, NULL, queue_committer_main, q) != 0)
		return -1;
	if (pthread_create(&q->hk, NULL, queue_hk_main, q) != 0) {
		pthread_mutex_lock(&q->lock);
		q->stopping = 1;
		pthread_cond_signal(&q->cond);
		pthread_mutex_unlock(&q->lock);
		pthread_join(q->committer, NULL);
		return -1;
	}
	q->threads = 1;
	return 0;
}

void
queue_commit_stop(struct queue *q)
{
	if (!q->threads)
		return;
	pthread_mutex_lock(&q->lock);
	q->stopping = 1;
	pthread_cond_signal(&q->cond);
	pthread_mutex_unlock(&q->lock);
	pthread_join(q->committer, NULL);
	pthread_mutex_lock(&q->lock);
	q->hk_stop = 1;
	pthread_cond_signal(&q->hk_cond);
	pthread_mutex_unlock(&q->lock);
	pthread_join(q->hk, NULL);
	q->threads = 0;
}
