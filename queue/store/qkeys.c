/*
 * qkeys.c - query keys written late (doc/queue.md "Query keys written
 * late").
 *
 * The committer stores a new message's envelope with ENV_F_NOKEYS and
 * none of its query keys: most messages are delivered and removed within
 * a second, and a message that never had keys costs no key deletes either.
 * Its counters are written at once (they are summed per transaction). The
 * committer then appends the message to the pending list (id, record
 * position, arrival, when), in log order. Every other write of an envelope
 * (an update, a copy-forward, the recovery scan) writes all its keys and
 * clears the flag: query.c's queue_qidx_change() writes the keys of a side
 * only when that side carries them.
 *
 * queue_qkeys_run() (housekeeping, every tick; queries and verify first,
 * with no age) takes the entries older than the delay, in order, and in
 * one transaction per batch writes the keys of those still unkeyed, and
 * META_QKEYS: the position of the first entry left (or, none left, the
 * committer's last position). A crash loses nothing: recovery scans from
 * META_QKEYS and keys what still carries the flag (queue_recover).
 *
 * Locks: qk_lock guards the list (the committer appends, removals mark,
 * the run takes from the head); qk_run makes runs one at a time, so the
 * position a run writes is never ahead of another run's batch. Neither is
 * held while the other threads' transactions run, except qk_run by the run
 * itself (and verify, which holds it across its walks).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tern/log.h"
#include "tern/util.h"
#include "queue_int.h"

#define QKEYS_BATCH     256

static int
qkeys_pos_cmp(uint32_t seg, uint64_t off, const struct qkeys_pend *p)
{
	if (queue_pos_lt(seg, off, p->seg, p->off))
		return -1;
	return queue_pos_lt(p->seg, p->off, seg, off);
}

static struct qkeys_pend *
qkeys_at(struct queue *q, size_t i)
{
	return &q->qk[(q->qk_head + i) % q->qk_cap];
}

void
queue_qkeys_append(struct queue *q, const struct envelope *e, uint64_t now)
{
	struct qkeys_pend *p;

	pthread_mutex_lock(&q->qk_lock);
	if (q->qk_n == q->qk_cap) {
		size_t cap = q->qk_cap ? q->qk_cap * 2 : 1024;
		struct qkeys_pend *v = xcalloc(cap, sizeof(*v));
		for (size_t i = 0; i < q->qk_n; i++)
			v[i] = *qkeys_at(q, i);
		free(q->qk);
		q->qk = v;
		q->qk_cap = cap;
		q->qk_head = 0;
	}
	p = &q->qk[(q->qk_head + q->qk_n++) % q->qk_cap];
	p->id = e->id;
	p->seg = e->seg;
	p->off = e->off;
	p->arrival = e->arrival;
	p->t_us = now;
	pthread_mutex_unlock(&q->qk_lock);
}

void
queue_qkeys_end(struct queue *q, uint32_t seg, uint64_t off)
{
	pthread_mutex_lock(&q->qk_lock);
	q->qk_end_seg = seg;
	q->qk_end_off = off;
	pthread_mutex_unlock(&q->qk_lock);
}

void
queue_qkeys_gone(struct queue *q, uint32_t seg, uint64_t off)
{
	size_t lo = 0, hi;

	pthread_mutex_lock(&q->qk_lock);
	hi = q->qk_n;
	while (lo < hi) {           /* the list is in log order */
		size_t mid = lo + (hi - lo) / 2;
		int c = qkeys_pos_cmp(seg, off, qkeys_at(q, mid));
		if (c == 0) {
			qkeys_at(q, mid)->id = 0;
			break;
		}
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	pthread_mutex_unlock(&q->qk_lock);
}

int64_t
queue_qkeys_oldest(struct queue *q)
{
	int64_t first = 0;

	pthread_mutex_lock(&q->qk_lock);
	for (size_t i = 0; i < q->qk_n; i++) {
		const struct qkeys_pend *p = qkeys_at(q, i);
		if (p->id != 0 && p->arrival > 0 &&
		    (first == 0 || p->arrival < first))
			first = p->arrival;
	}
	pthread_mutex_unlock(&q->qk_lock);
	return first;
}

/* Key id if it is still in the index without its keys (*keyed += 1). */
static int
qkeys_one(struct queue *q, struct store_txn *t, uint64_t id, uint64_t *keyed)
{
	uint8_t key[8];
	void *v = NULL;
	size_t vlen;
	int rc;

	queue_be64(key, id);
	rc = store_get(q->st, t, STORE_ENVELOPES, key, 8, &v, &vlen);
	if (rc == STORE_NOTFOUND)
		return 0;       /* removed meanwhile */
	if (rc != 0)
		return rc;
	rc = queue_index_rekey_stored(q, t, v, vlen);
	free(v);
	if (rc == 1)
		(*keyed)++;
	return rc < 0 ? rc : 0;
}

int
queue_qkeys_lazy_now(struct queue *q)
{
	return q->qk_lazy && now_mono_us() >=
	    __atomic_load_n(&q->qk_eager_until, __ATOMIC_RELAXED);
}

/* One batch: 1 done, 0 nothing was due, -1 failed (left for later).
 * *taken and *keyed count the entries taken and those keyed. */
static int
qkeys_batch(struct queue *q, uint64_t due, uint64_t *taken, uint64_t *nkeyed)
{
	uint64_t ids[QKEYS_BATCH], keyed = 0;
	size_t n = 0, take = 0;
	uint32_t seg;
	uint64_t off;
	uint8_t v[12];
	int rc = -1;

	pthread_mutex_lock(&q->qk_lock);
	while (take < q->qk_n && take < QKEYS_BATCH &&
	    qkeys_at(q, take)->t_us <= due) {
		if (qkeys_at(q, take)->id != 0)
			ids[n++] = qkeys_at(q, take)->id;
		take++;
	}
	if (take < q->qk_n) {
		seg = qkeys_at(q, take)->seg;
		off = qkeys_at(q, take)->off;
	} else {
		seg = q->qk_end_seg;
		off = q->qk_end_off;
	}
	pthread_mutex_unlock(&q->qk_lock);
	/* nothing due: the position alone, when it moved (keys written at
	 * commit meanwhile), so that recovery never scans far back */
	if (take == 0 && seg == q->qk_wseg && off == q->qk_woff)
		return 0;
	queue_be32(v, seg);
	queue_be64(v + 4, off);
	for (int tries = 0; tries < 20; tries++) {
		struct store_txn *t = NULL;

		if (store_begin(q->st, &t) < 0)
			return -1;
		rc = 0;
		keyed = 0;
		for (size_t i = 0; i < n && rc == 0; i++)
			rc = qkeys_one(q, t, ids[i], &keyed);
		if (rc == 0)
			rc = store_put(q->st, t, STORE_META, META_QKEYS,
			    strlen(META_QKEYS), v, 12);
		if (rc == 0)
			rc = queue_index_commit(q, t, 0);       /* ends t */
		else
			store_abort(t);
		if (rc != STORE_RETRY)
			break;
	}
	if (rc != 0) {
		if (!q->qk_failed)
			log_warnx("queue: writing the query keys of %zu messages "
			    "failed: tried again later", n);
		q->qk_failed = 1;
		return -1;
	}
	q->qk_failed = 0;
	q->qk_wseg = seg;
	q->qk_woff = off;
	if (take > 0) {
		pthread_mutex_lock(&q->qk_lock);
		q->qk_head = (q->qk_head + take) % q->qk_cap;
		q->qk_n -= take;
		q->qk_keyed += keyed;
		pthread_mutex_unlock(&q->qk_lock);
	}
	*taken += take;
	*nkeyed += keyed;
	return 1;
}

int
queue_qkeys_run(struct queue *q, uint64_t min_age_us)
{
	uint64_t now = now_mono_us();
	uint64_t due = now > min_age_us ? now - min_age_us : 0;
	uint64_t taken = 0, keyed = 0;
	int rc;

	if (!q->qk_lazy)
		return 0;
	pthread_mutex_lock(&q->qk_run);
	while ((rc = qkeys_batch(q, due, &taken, &keyed)) > 0)
		;
	pthread_mutex_unlock(&q->qk_run);
	/* most of them still queued at that age: key at commit for a while */
	if (min_age_us > 0 && taken >= 64 && keyed * 2 > taken)
		__atomic_store_n(&q->qk_eager_until, now + QUEUE_QKEYS_EAGER_US,
		    __ATOMIC_RELAXED);
	return rc;
}

int
queue_qkeys_open(struct queue *q)
{
	uint8_t v[12];
	uint32_t seg = q->cur_num != 0 ? q->cur_num : q->next_seg;

	q->qk_lazy = 0;
	if (!q->qidx || q->readonly)
		return 0;
	/* nothing of this run is before (seg, 0); all before it is keyed */
	queue_be32(v, seg);
	queue_be64(v + 4, 0);
	if (queue_meta_put(q, META_QKEYS, strlen(META_QKEYS), v, 12, 0) < 0) {
		log_warnx("queue: cannot record the query keys' position: "
		    "new messages get their keys at once in this run");
		return -1;
	}
	q->qk_end_seg = q->qk_wseg = seg;
	q->qk_end_off = q->qk_woff = 0;
	q->qk_lazy = 1;
	return 0;
}
