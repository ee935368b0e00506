/*
 * queue.c - opening, recovering and closing the durable queue, and index
 * access (see tern/queue.h; on-disk format and crash argument:
 * doc/queue.md).
 *
 * queue_open()/queue_close() run on the main thread before/after every
 * other user. queue_get/update/remove/walk/read_body/stats are safe from
 * any thread: BDB is free-threaded and the segment table is under q->lock.
 * Owns the queue directory: <dir>/lock (flock: one writer, readers only
 * while no writer), <dir>/db (BDB), <dir>/segments, <dir>/tmp.
 * Recovery (read-write open only), before the committer starts:
 *   BDB recovery (DB_RECOVER) and the index checks of index.c (a failing
 *   index is set aside and rebuilt: queue_recover(rebuild=1))
 *   -> drop half-prepared files (.tmp, tmp/ files)
 *   -> scan each segment from the indexed position (or its start), index
 *   every valid record BDB lacks, hold damaged ones, stop at the first
 *   invalid header -> roll to a fresh current segment. The walk of every
 *   indexed envelope (checked against its record, held as ENV_F_CORRUPT
 *   when unreadable; live counts; then housekeeping recycles the empty
 *   segments) runs here only on a rebuild, with verify_index or without a
 *   next_id; else on recount.c's thread once the committer runs.
 * Never deletes an envelope on its own; never writes in readonly mode.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "tern/log.h"
#include "tern/util.h"
#include "queue_int.h"

#define QUEUE_DEF_SEGMENT   (64ull << 20)
#define QUEUE_MIN_SEGMENT   (64ull << 10)

/* ---- segment table (q->lock held) ---- */

struct queue_seg *
queue_seg_find(struct queue *q, uint32_t num)
{
	for (size_t i = 0; i < q->nsegs; i++)
		if (q->segs[i].num == num)
			return &q->segs[i];
	return NULL;
}

struct queue_seg *
queue_seg_add(struct queue *q, uint32_t num, uint64_t size)
{
	struct queue_seg *s;
	size_t i;

	if ((s = queue_seg_find(q, num)) != NULL)
		return s;
	q->segs = xreallocarray(q->segs, q->nsegs + 1, sizeof(*q->segs));
	for (i = q->nsegs; i > 0 && q->segs[i - 1].num > num; i--)
		q->segs[i] = q->segs[i - 1];
	s = &q->segs[i];
	memset(s, 0, sizeof(*s));
	s->num = num;
	s->size = size;
	q->nsegs++;
	return s;
}

void
queue_seg_rfd_put(struct seg_rfd *rf)
{
	if (rf != NULL && --rf->refs == 0) {
		close(rf->fd);
		free(rf);
	}
}

void
queue_seg_unref(struct queue *q, uint32_t num, uint64_t rec_len)
{
	struct queue_seg *s = queue_seg_find(q, num);

	if (s == NULL || s->live == 0)
		return;
	s->live--;
	s->live_bytes = s->live_bytes > rec_len ? s->live_bytes - rec_len : 0;
}

void
queue_seg_drop(struct queue *q, uint32_t num)
{
	for (size_t i = 0; i < q->nsegs; i++) {
		if (q->segs[i].num == num) {
			queue_seg_rfd_put(q->segs[i].rfd);
			if (q->segs[i].wfd_open && q->segs[i].wfd >= 0)
				close(q->segs[i].wfd);
			memmove(&q->segs[i], &q->segs[i + 1],
			    (q->nsegs - i - 1) * sizeof(*q->segs));
			q->nsegs--;
			return;
		}
	}
}

/* ---- index helpers ---- */

/*
 * Store e, whose stored copy is old (decoded; NULL: none), with its query
 * keys when keys (ENV_F_NOKEYS cleared), else without (set); counts: move
 * the counters too.
 */
static int
queue_index_write(struct queue *q, struct store_txn *t,
    const struct envelope *old, const struct envelope *e, int keys, int counts)
{
	struct envelope w = *e;         /* shallow: only the flags differ */
	uint8_t key[8], *enc = NULL;
	size_t enclen;
	int rc;

	w.flags = keys ? w.flags & ~ENV_F_NOKEYS : w.flags | ENV_F_NOKEYS;
	if (q->qidx && (rc = queue_qidx_change(q, t, old, &w, counts)) != 0)
		return rc;
	queue_be64(key, e->id);
	if (envelope_encode(&w, &enc, &enclen) < 0)
		return -1;
	rc = store_put(q->st, t, STORE_ENVELOPES, key, 8, enc, enclen);
	free(enc);
	return rc;
}

/* Store e, whose stored copy is old (decoded; NULL: none). */
static int
queue_index_replace(struct queue *q, struct store_txn *t,
    const struct envelope *old, const struct envelope *e)
{
	return queue_index_write(q, t, old, e, 1, 1);
}

int
queue_index_rekey(struct queue *q, struct store_txn *t,
    const struct envelope *cur)
{
	return queue_index_write(q, t, cur, cur, 1, 0);
}

int
queue_index_rekey_stored(struct queue *q, struct store_txn *t, const void *v,
    size_t vlen)
{
	struct envelope *cur = NULL;
	int rc = 0;

	if (envelope_decode(v, vlen, &cur) != ENV_DECODE_OK)
		return 0;       /* recovery holds it; nothing to key here */
	if (cur->flags & ENV_F_NOKEYS &&
	    (rc = queue_index_rekey(q, t, cur)) == 0)
		rc = 1;
	envelope_free(cur);
	return rc;
}

int
queue_index_put_new(struct queue *q, struct store_txn *t,
    const struct envelope *e, int lazy)
{
	if (!lazy)
		return queue_index_put(q, t, e);
	return queue_index_write(q, t, NULL, e, 0, 1);
}

/* Store e; the query index follows: its old copy (if any) is read in t. */
int
queue_index_put(struct queue *q, struct store_txn *t, const struct envelope *e)
{
	struct envelope *old = NULL;
	uint8_t key[8];
	void *v = NULL;
	size_t vlen;
	int rc;

	if (!q->qidx)
		return queue_index_replace(q, t, NULL, e);
	queue_be64(key, e->id);
	rc = store_get(q->st, t, STORE_ENVELOPES, key, 8, &v, &vlen);
	if (rc == STORE_NOTFOUND)
		return queue_index_replace(q, t, NULL, e);
	if (rc != 0)
		return rc;
	if (envelope_decode(v, vlen, &old) != ENV_DECODE_OK)
		old = queue_placeholder(e->id);
	free(v);
	rc = queue_index_replace(q, t, old, e);
	envelope_free(old);
	return rc;
}

/* The query keys and counters of a message leaving (old NULL: its stored
 * copy was undecodable). */
static int
queue_index_unkey(struct queue *q, struct store_txn *t, uint64_t id,
    const struct envelope *old)
{
	struct envelope *ph = NULL;
	int rc;

	if (!q->qidx)
		return 0;
	if (old == NULL)
		old = ph = queue_placeholder(id);
	rc = queue_qidx_change(q, t, old, NULL, 1);
	envelope_free(ph);
	return rc;
}

int
queue_index_del(struct queue *q, struct store_txn *t, uint64_t id,
    const struct envelope *old)
{
	uint8_t key[8];
	int rc = queue_index_unkey(q, t, id, old);

	queue_be64(key, id);
	return rc != 0 ? rc : store_del(q->st, t, STORE_ENVELOPES, key, 8);
}

static int
queue_meta_get(struct queue *q, const char *key, size_t klen, uint8_t *out,
    size_t len)
{
	void *v = NULL;
	size_t vlen;
	int rc = store_get(q->st, NULL, STORE_META, key, klen, &v, &vlen);

	if (rc == 0 && vlen != len)
		rc = STORE_NOTFOUND;      /* not ours: ignore */
	if (rc == 0)
		memcpy(out, v, len);
	free(v);
	return rc;
}

int
queue_meta_put(struct queue *q, const char *key, size_t klen,
    const uint8_t *val, size_t vlen, int sync)
{
	struct store_txn *t = NULL;
	int rc = -1;

	for (int tries = 0; tries < 20; tries++) {
		if (store_begin(q->st, &t) < 0)
			return -1;
		rc = store_put(q->st, t, STORE_META, key, klen, val, vlen);
		if (rc == 0)
			return store_commit(t, sync) == 0 ? 0 : -1;
		store_abort(t);
		if (rc != STORE_RETRY)
			break;
	}
	return -1;
}

/* A stand-in for an index entry that does not decode: held, reported. */
struct envelope *
queue_placeholder(uint64_t id)
{
	struct envelope *e = envelope_new();
	e->id = id;
	e->flags = ENV_F_CORRUPT | ENV_F_HOLD;
	e->sender = xstrdup("");
	e->last_error = xstrdup("index record undecodable");
	return e;
}

/* ---- recovery ---- */

struct queue_recovery {
	struct queue *q;
	int *fds;               /* parallel to q->segs during recovery */
	uint64_t max_id;
	uint64_t scanned, indexed, damaged, corrupt, entries, buried;
	int have_index;         /* an indexed position was recorded */
	uint64_t keyed;         /* entries stored without query keys, keyed */
	int keys_lost;          /* some could not be found by the scan */
	int keys_failed;        /* ... and the walk for them failed */
	uint32_t iseg;          /* ... this one */
	uint64_t ioff;
	int rebuild;            /* the index is new: every record is scanned */
	/* ids of records marked removed, met in a full scan (open addressing,
	 * 0 = empty: ids are never 0) */
	uint64_t *gone;
	size_t gone_cap, gone_n;
};

static size_t
queue_gone_slot(const struct queue_recovery *rc, uint64_t id)
{
	size_t i = (size_t)((id * 0x9e3779b97f4a7c15ull) >> 17) &
	    (rc->gone_cap - 1);

	while (rc->gone[i] != 0 && rc->gone[i] != id)
		i = (i + 1) & (rc->gone_cap - 1);
	return i;
}

static int
queue_gone_has(const struct queue_recovery *rc, uint64_t id)
{
	return rc->gone_n > 0 && rc->gone[queue_gone_slot(rc, id)] == id;
}

static void
queue_gone_add(struct queue_recovery *rc, uint64_t id)
{
	if (2 * (rc->gone_n + 1) > rc->gone_cap) {
		uint64_t *old = rc->gone;
		size_t oldcap = rc->gone_cap;

		rc->gone_cap = oldcap ? oldcap * 2 : 1024;
		rc->gone = xcalloc(rc->gone_cap, sizeof(*rc->gone));
		for (size_t i = 0; i < oldcap; i++)
			if (old[i] != 0)
				rc->gone[queue_gone_slot(rc, old[i])] = old[i];
		free(old);
	}
	size_t i = queue_gone_slot(rc, id);
	if (rc->gone[i] == 0) {
		rc->gone[i] = id;
		rc->gone_n++;
	}
}

/*
 * A full scan met a record of a removed message (marked, or an id marked
 * earlier in the scan): it is not indexed, and an entry this scan made from
 * an earlier record of it (the original of a copy) goes. 0 or -1.
 */
static int
queue_rec_bury(struct queue_recovery *rc, struct store_txn *t,
    const struct envelope *e, const void *cur, size_t curlen)
{
	struct envelope *old = NULL;
	int r = 0;

	queue_gone_add(rc, e->id);
	rc->buried++;
	if (cur == NULL)
		return 0;
	if (envelope_decode(cur, curlen, &old) != ENV_DECODE_OK)
		old = NULL;
	r = queue_index_del(rc->q, t, e->id, old);
	envelope_free(old);
	if (r == 0 && rc->indexed > 0)
		rc->indexed--;
	return r == 0 ? 0 : -1;
}

static int
queue_rec_fd(struct queue_recovery *rc, uint32_t num, uint64_t *size)
{
	struct queue *q = rc->q;
	for (size_t i = 0; i < q->nsegs; i++) {
		if (q->segs[i].num != num)
			continue;
		*size = q->segs[i].size;
		if (rc->fds[i] < 0) {
			char path[4096];
			seg_path(q->segdir, num, path, sizeof(path));
			rc->fds[i] = open(path, O_RDONLY | O_CLOEXEC);
		}
		return rc->fds[i];
	}
	return -1;
}

static void
queue_rec_cleandir(const char *dir, const char *suffix)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[4096];

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name), sl = suffix ? strlen(suffix) : 0;
		if (de->d_name[0] == '.')
			continue;
		if (suffix != NULL && (n < sl || strcmp(de->d_name + n - sl, suffix) != 0))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (unlink(path) == 0)
			log_info("queue: removed never-completed file %s", path);
	}
	closedir(d);
}

/* Build the segment table from the directory; notes the spare. */
int
queue_rec_list(struct queue *q, uint32_t *max_num)
{
	DIR *d = opendir(q->segdir);
	struct dirent *de;
	struct stat sb;
	char path[4096];

	*max_num = 0;
	if (d == NULL)
		return -1;
	while ((de = readdir(d)) != NULL) {
		unsigned num;
		char tail[8];
		snprintf(path, sizeof(path), "%s/%s", q->segdir, de->d_name);
		if (strcmp(de->d_name, "spare") == 0) {
			if (stat(path, &sb) == 0 && (uint64_t)sb.st_size ==
			    q->segment_size)
				q->have_spare = 1;
			else if (!q->readonly)
				unlink(path);  /* other size: config changed */
			continue;
		}
		if (strlen(de->d_name) != 12 ||
		    sscanf(de->d_name, "%8x%5s", &num, tail) != 2 ||
		    strcmp(tail, ".seg") != 0 || num == 0)
			continue;
		if (stat(path, &sb) < 0)
			continue;
		queue_seg_add(q, num, (uint64_t)sb.st_size);
		if (num > *max_num)
			*max_num = num;
	}
	closedir(d);
	return 0;
}

static int
queue_rec_commit(struct queue *q, struct store_txn **t, int force)
{
	int rc = 0;
	if (*t != NULL && force) {
		rc = queue_index_commit(q, *t, 0);
		*t = NULL;
	}
	if (*t == NULL && !force)
		rc = store_begin(q->st, t);
	return rc;
}

/* Before the indexed position: indexed once (the scan starts earlier only
 * for keys written late, qkeys.c). */
static int
queue_rec_before(const struct queue_recovery *rc, uint32_t num, uint64_t off)
{
	return rc->have_index && queue_pos_lt(num, off, rc->iseg, rc->ioff);
}

/* Every envelope stored without its query keys gets them (the scan could
 * not reach them all). One transaction each: a rare path. 0 or -1. */
static int
queue_rec_keys_one(void *arg, const struct envelope *e)
{
	struct queue_recovery *rc = arg;
	struct store_txn *t = NULL;

	if (!(e->flags & ENV_F_NOKEYS))
		return 0;
	if (store_begin(rc->q->st, &t) < 0)
		goto fail;
	if (queue_index_rekey(rc->q, t, e) != 0) {
		store_abort(t);
		goto fail;
	}
	if (queue_index_commit(rc->q, t, 0) != 0)      /* ends t */
		goto fail;
	rc->keyed++;
	return 0;
fail:
	rc->keys_failed = 1;
	return 1;
}

static int
queue_rec_keys_walk(struct queue_recovery *rc)
{
	if (queue_walk(rc->q, queue_rec_keys_one, rc) < 0 || rc->keys_failed)
		return -1;
	return 0;
}

/* Scan segment i from off; index what the index lacks. */
static int
queue_rec_scan(struct queue_recovery *rc, size_t i, uint64_t off, uint64_t limit)
{
	struct queue *q = rc->q;
	struct store_txn *t = NULL;
	uint32_t num = q->segs[i].num;
	uint64_t prev = 0, size, n = 0;
	int fd = queue_rec_fd(rc, num, &size);
	char qid[QID_STRLEN + 1];

	if (fd < 0)
		return -1;
	if (limit > size)
		limit = size;
	for (;;) {
		struct envelope *e = NULL;
		const char *why;
		uint64_t rec_len;
		uint64_t seq = 0;
		enum seg_rec_status st = seg_record_read(fd, num, q->crc_salt, off,
		    limit, prev,
		    &e, &rec_len, &seq, &why);
		void *v = NULL;
		size_t vlen;
		uint8_t key[8];
		int r, flush = 0;

		if ((st == SEG_REC_END || st == SEG_REC_BAD) &&
		    queue_rec_before(rc, num, off)) {
			/* damage in records indexed once: the scan goes on
			 * from the indexed position; the keys are looked for
			 * in a walk of the envelopes (queue_recover) */
			if (num < rc->iseg && st == SEG_REC_END)
				break;
			log_warnx("queue: segment=%08x offset=%llu: %s in a record "
			    "indexed before: its query keys are looked for in "
			    "every envelope", num, (unsigned long long)off,
			    st == SEG_REC_BAD ? why : "end of the log");
			rc->keys_lost = 1;
			if (num < rc->iseg)
				break;
			off = rc->ioff;
			prev = 0;
			continue;
		}
		if (st == SEG_REC_END)
			break;
		if (st == SEG_REC_BAD) {
			log_warnx("queue: segment=%08x offset=%llu: %s: log cut here "
			    "(never acknowledged)", num, (unsigned long long)off, why);
			break;
		}
		prev = seq;
		if (seq > rc->max_id)
			rc->max_id = seq;
		if (!(e->id & SEG_PLACEHOLDER_ID) && e->id > rc->max_id)
			rc->max_id = e->id;
		qid_format(e->id, qid);
		queue_be64(key, e->id);
		/* inside our own txn: a read outside it would wait on its locks */
		if (queue_rec_commit(q, &t, 0) < 0) {
			envelope_free(e);
			return -1;
		}
		r = store_get(q->st, t, STORE_ENVELOPES, key, 8, &v, &vlen);
		if (r == 0 && rc->have_index) {
			/* stored without its query keys (qkeys.c): key it */
			int kr = queue_index_rekey_stored(q, t, v, vlen);
			if (kr < 0)
				r = -1;
			else if (kr == 1) {
				rc->keyed++;
				flush = ++n % 64 == 0;  /* after this record */
			}
		}
		if (r != 0 && r != STORE_NOTFOUND) {
			free(v);
			envelope_free(e);
			store_abort(t);
			return -1;
		}
		if (queue_rec_before(rc, num, off)) {
			/* indexed once, keys written late: absent is removed */
			free(v);
			goto next;
		}
		rc->scanned++;
		/* removed messages stay removed (SEG_F_REMOVED) */
		if (!rc->have_index && (st == SEG_REC_REMOVED ||
		    queue_gone_has(rc, e->id))) {
			r = queue_rec_bury(rc, t, e, r == 0 ? v : NULL, vlen);
			free(v);
			if (r < 0) {
				envelope_free(e);
				store_abort(t);
				return -1;
			}
			goto next;
		}
		free(v);
		if (st == SEG_REC_REMOVED)
			goto next;      /* an index that has it says otherwise */
		/*
		 * A copy-forward record whose id the index lacks is the copy
		 * of a message removed after the copy was made (its original
		 * was indexed durably before any copy): not brought back.
		 * Only a lost index (no position recorded) takes copies. A
		 * rebuild takes the latest copy of a message: copies come
		 * after their original in segment order and carry the state
		 * the message had when it was copied.
		 */
		if (r == 0 && (e->flags & ENV_F_COPY) && rc->rebuild &&
		    st == SEG_REC_OK)
			r = STORE_NOTFOUND;
		else if (r == STORE_NOTFOUND && (e->flags & ENV_F_COPY) &&
		    rc->have_index) {
			log_debug("queue: id=%s segment=%08x offset=%llu: copy of a "
			    "removed message, skipped", qid, num,
			    (unsigned long long)off);
			r = 0;
		}
		e->flags &= ~ENV_F_COPY;
		if (r == STORE_NOTFOUND) {
			if (st == SEG_REC_DAMAGED) {
				e->flags |= ENV_F_CORRUPT;
				rc->damaged++;
				log_warnx("queue: id=%s segment=%08x offset=%llu: %s: "
				    "held as corrupt", qid, num,
				    (unsigned long long)off, why);
			}
			if (queue_index_put(q, t, e) != 0) {
				envelope_free(e);
				store_abort(t);
				return -1;
			}
			rc->indexed++;
			flush |= ++n % 64 == 0;
		}
next:
		if (flush && queue_rec_commit(q, &t, 1) < 0) {
			envelope_free(e);
			return -1;
		}
		envelope_free(e);
		if (rec_len > limit - off)
			break;
		off += rec_len;
	}
	q->segs[i].extent = off;        /* where the log of this segment ends */
	if (t != NULL && queue_rec_commit(q, &t, 1) < 0)
		return -1;
	return 0;
}

/*
 * Segment extents (META_END): the scanned ones are recorded, the others
 * read back. Copy-forward weighs live bytes against the bytes written, so
 * a segment that holds nothing but copies is not copied again.
 */
static void
queue_rec_extents(struct queue *q, uint32_t iseg)
{
	struct store_txn *t = NULL;
	uint8_t key[8], v[8];

	memcpy(key, META_END, 4);
	if (store_begin(q->st, &t) < 0)
		return;
	for (size_t i = 0; i < q->nsegs; i++) {
		queue_be32(key + 4, q->segs[i].num);
		if (q->segs[i].num < iseg) {
			if (queue_meta_get(q, (char *)key, 8, v, 8) == 0)
				q->segs[i].extent = queue_get_be64(v);
			continue;
		}
		queue_be64(v, q->segs[i].extent);
		if (store_put(q->st, t, STORE_META, key, 8, v, 8) != 0) {
			store_abort(t);
			return;
		}
	}
	store_commit(t, 0);
}

/* At or after the indexed position: written since the last start's
 * index was flushed (the scan just read these records). */
static int
queue_rec_fresh(const struct queue_recovery *rc, const struct envelope *e)
{
	return !rc->have_index || e->seg > rc->iseg ||
	    (e->seg == rc->iseg && e->off >= rc->ioff);
}

/* Count one indexed envelope as live; verify it against its record when
 * asked (--verify-index, a rebuild) or when the scan just indexed it. */
static int
queue_rec_verify(void *arg, const void *key, size_t klen, const void *val,
    size_t vlen)
{
	struct queue_recovery *rc = arg;
	struct queue *q = rc->q;
	struct envelope *e = NULL, *r = NULL;
	struct queue_seg *sg;
	const char *why = "segment missing";
	uint64_t size, rec_len, id;
	char qid[QID_STRLEN + 1];
	int fd, bad = 0;

	if (klen != 8)
		return 0;
	rc->entries++;
	id = queue_get_be64(key);
	/* a placeholder's key (seq | SEG_PLACEHOLDER_ID) is no id to count
	 * from: every id given out after it would carry that bit too */
	if (!(id & SEG_PLACEHOLDER_ID) && id > rc->max_id)
		rc->max_id = id;
	qid_format(id, qid);
	if (envelope_decode(val, vlen, &e) != ENV_DECODE_OK) {
		log_warnx("queue: id=%s index record undecodable: held", qid);
		rc->corrupt++;
		return 0;
	}
	if ((sg = queue_seg_find(q, e->seg)) != NULL) {
		sg->live++;
		sg->live_bytes += e->rec_len;
	}
	if (e->flags & ENV_F_CORRUPT) {
		rc->corrupt++;
		envelope_free(e);
		return 0;
	}
	/* the body is checked when it is read (queue_read_body): here only
	 * on request, or for entries the scan just made */
	if (sg != NULL && !q->verify_index && !rc->rebuild &&
	    !queue_rec_fresh(rc, e)) {
		envelope_free(e);
		return 0;
	}
	if (sg != NULL && (fd = queue_rec_fd(rc, e->seg, &size)) >= 0) {
		enum seg_rec_status st = seg_record_read(fd, e->seg, q->crc_salt,
		    e->off, size,
		    0, &r, &rec_len, NULL, &why);
		if (st != SEG_REC_OK && st != SEG_REC_REMOVED)
			bad = 1;
		else if (r->id != e->id || r->rec_len != e->rec_len ||
		    r->body_off != e->body_off || r->crc != e->crc) {
			why = "record does not match the index";
			bad = 1;
		}
		envelope_free(r);
	} else
		bad = 1;
	if (bad) {
		struct store_txn *t = NULL;
		e->flags |= ENV_F_CORRUPT;
		rc->corrupt++;
		log_warnx("queue: id=%s segment=%08x offset=%llu: body %s: held "
		    "as corrupt", qid, e->seg, (unsigned long long)e->off, why);
		if (store_begin(q->st, &t) == 0) {
			if (queue_index_put(q, t, e) == 0)
				queue_index_commit(q, t, 0);
			else
				store_abort(t);
		}
	}
	envelope_free(e);
	return 0;
}

static char *queue_join(const char *a, const char *b);

/*
 * The CRC salt lives in <dir>/salt (8 hex digits), apart from the index so
 * that a rebuilt index still reads the records. Called once the segment
 * files are listed: a queue with no segment yet gets a new random salt,
 * made durable before any record; one with segments but no salt file
 * predates salts: 0.
 */
int
queue_salt_load(struct queue *q)
{
	char *path = queue_join(q->dir, "salt"), *tmp = NULL, buf[16];
	ssize_t n;
	int fd, ret = -1;

	q->crc_salt = 0;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		buf[n > 0 ? n : 0] = '\0';
		if (n != 8 || sscanf(buf, "%8x", &q->crc_salt) != 1) {
			errno = EINVAL;
			goto out;
		}
		ret = 0;
		goto out;
	}
	if (errno != ENOENT)
		goto out;
	ret = 0;
	if (q->readonly || q->nsegs > 0)
		goto out;       /* a queue older than salts */
	while (q->crc_salt == 0)
		if (getrandom(&q->crc_salt, sizeof(q->crc_salt), 0) !=
		    (ssize_t)sizeof(q->crc_salt)) {
			ret = -1;
			goto out;
		}
	ret = -1;
	tmp = queue_join(q->dir, "salt.tmp");
	snprintf(buf, sizeof(buf), "%08x", q->crc_salt);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) < 0)
		goto out;
	if (write_all(fd, buf, 8) < 0 || fsync(fd) < 0) {
		close(fd);
		goto out;
	}
	close(fd);
	if (rename(tmp, path) < 0 || fsync_dir(q->dir) < 0)
		goto out;
	ret = 0;
out:
	free(tmp);
	free(path);
	return ret;
}

int
queue_recover(struct queue *q, int rebuild, char *err, size_t errlen)
{
	struct queue_recovery rc = { .q = q, .rebuild = rebuild };
	uint8_t v[12];
	uint32_t iseg = 0, max_num = 0, next_seg = 1, kseg;
	uint64_t ioff = 0, next_id = 0, koff;
	int ret = -1, saved;

	queue_rec_cleandir(q->segdir, ".tmp");
	queue_rec_cleandir(q->tmpdir, NULL);
	if (queue_meta_get(q, META_INDEXED, strlen(META_INDEXED), v, 12) == 0) {
		rc.have_index = 1;
		iseg = rc.iseg = queue_get_be32(v);
		ioff = rc.ioff = queue_get_be64(v + 4);
	}
	/* messages stored without their query keys are from here on */
	kseg = iseg;
	koff = ioff;
	if (rc.have_index &&
	    queue_meta_get(q, META_QKEYS, strlen(META_QKEYS), v, 12) == 0 &&
	    queue_pos_lt(queue_get_be32(v), queue_get_be64(v + 4), iseg, ioff)) {
		kseg = queue_get_be32(v);
		koff = queue_get_be64(v + 4);
	}
	if (queue_meta_get(q, META_NEXT_ID, strlen(META_NEXT_ID), v, 8) == 0)
		next_id = queue_get_be64(v);
	if (queue_meta_get(q, META_NEXT_SEG, strlen(META_NEXT_SEG), v, 4) == 0)
		next_seg = queue_get_be32(v);
	/* the table was listed (and the salt loaded) by queue_index_open() */
	max_num = q->nsegs > 0 ? q->segs[q->nsegs - 1].num : 0;
	rc.fds = xcalloc(q->nsegs ? q->nsegs : 1, sizeof(int));
	for (size_t i = 0; i < q->nsegs; i++)
		rc.fds[i] = -1;

	/* 1. scan from the indexed position: acknowledged records BDB lacks */
	for (size_t i = 0; i < q->nsegs; i++) {
		uint32_t num = q->segs[i].num;
		uint64_t limit = q->segs[i].size;
		char key[8];

		if (num < kseg)
			continue;
		memcpy(key, META_CUT, 4);
		queue_be32((uint8_t *)key + 4, num);
		if (queue_meta_get(q, key, 8, v, 8) == 0)
			limit = queue_get_be64(v);   /* abandoned: failed batch */
		if (queue_rec_scan(&rc, i, num == kseg ? koff : 0, limit) < 0) {
			snprintf(err, errlen, "segment %08x: recovery scan failed: %s",
			    num, strerror(errno));
			goto fail;
		}
	}
	if (rc.keys_lost && queue_rec_keys_walk(&rc) < 0) {
		snprintf(err, errlen, "index walk failed: %s", strerror(errno));
		goto fail;
	}
	queue_rec_extents(q, iseg);
	/* 2. every indexed envelope (against its record when asked); live
	 * counts. With an id counter to go on, a plain start leaves the
	 * counts to recount.c's thread: listeners need not wait for a walk. */
	for (size_t i = 0; i < q->nsegs; i++)
		q->segs[i].live = q->segs[i].live_bytes = 0;
	q->recount_needed = !rebuild && !q->verify_index && next_id > 0;
	if (!q->recount_needed &&
	    store_walk(q->st, STORE_ENVELOPES, queue_rec_verify, &rc) < 0) {
		snprintf(err, errlen, "index walk failed: %s", strerror(errno));
		goto fail;
	}
	if (store_flush(q->st) < 0) {
		snprintf(err, errlen, "bdb log flush: %s", strerror(errno));
		goto fail;
	}
	q->rec_scanned = rc.scanned;
	q->rec_indexed = rc.indexed;
	q->rec_damaged = rc.damaged;
	q->rec_entries = rc.entries;
	q->last_id = rc.max_id;
	if (next_id > 0 && next_id - 1 > q->last_id)
		q->last_id = next_id - 1;
	qid_seen(q->last_id);   /* ids handed out from now on are above all of these */
	q->next_seg = next_seg > max_num + 1 ? next_seg : max_num + 1;
	if (q->next_seg == 0)
		q->next_seg = 1;

	/* 3. empty segments go (the index state that emptied them is flushed);
	 * counted in the background: housekeeping recycles them after */
	for (size_t i = 0; !q->recount_needed && i < q->nsegs; ) {
		if (q->segs[i].live == 0) {
			if (rc.fds[i] >= 0)
				close(rc.fds[i]);
			memmove(&rc.fds[i], &rc.fds[i + 1],
			    (q->nsegs - i - 1) * sizeof(int));
			queue_seg_recycle(q, q->segs[i].num, q->segs[i].size);
			queue_seg_drop(q, q->segs[i].num);
		} else
			i++;
	}
	log_info("queue: recovered segments=%zu scanned=%llu reindexed=%llu "
	    "damaged=%llu corrupt=%llu removed=%llu keyed=%llu%s", q->nsegs,
	    (unsigned long long)rc.scanned, (unsigned long long)rc.indexed,
	    (unsigned long long)rc.damaged, (unsigned long long)rc.corrupt,
	    (unsigned long long)rc.buried, (unsigned long long)rc.keyed,
	    q->recount_needed ? " (live counts: in the background)" : "");
	ret = 0;
fail:
	saved = errno;
	for (size_t i = 0; i < q->nsegs; i++)
		if (rc.fds[i] >= 0)
			close(rc.fds[i]);
	free(rc.fds);
	free(rc.gone);
	errno = saved;
	return ret;
}

/* ---- open / close ---- */

static int
queue_mkdir(const char *path)
{
	if (mkdir(path, 0700) == 0 || errno == EEXIST)
		return 0;
	return -1;
}

static char *
queue_join(const char *a, const char *b)
{
	size_t n = strlen(a) + strlen(b) + 2;
	char *p = xmalloc(n);
	snprintf(p, n, "%s/%s", a, b);
	return p;
}

/*
 * No segment to start with because the disk is full: start anyway, so that
 * the queue can be listed and delivered (which frees the space). The
 * committer rolls before its first write and refuses mail (452 4.3.1)
 * while it cannot. 0, or -1 for any other failure (errno kept).
 */
static int
queue_open_noroll(struct queue *q)
{
	int err = errno;

	if (err != ENOSPC && err != EDQUOT) {
		errno = err;
		return -1;
	}
	log_warnx("queue: no room for a new segment (%s): starting without one; "
	    "new mail is refused until space returns", strerror(err));
	return 0;
}

int
queue_open(const struct queue_opts *o, struct queue **out, char *err,
    size_t errlen)
{
	struct queue *q = xcalloc(1, sizeof(*q));
	char *lockpath = NULL;

	*out = NULL;
	q->readonly = o->readonly;
	q->verify_index = o->verify_index;
	q->segment_size = o->segment_size ? o->segment_size : QUEUE_DEF_SEGMENT;
	if (q->segment_size < QUEUE_MIN_SEGMENT)
		q->segment_size = QUEUE_MIN_SEGMENT;
	q->segment_size = (q->segment_size + SEG_ALIGN - 1) / SEG_ALIGN * SEG_ALIGN;
	q->spool_memory = o->spool_memory;
	q->spool_budget = o->spool_budget;
	q->reserve_size = o->reserve_size;
	q->dir = xstrdup(o->dir);
	q->segdir = queue_join(o->dir, "segments");
	q->tmpdir = queue_join(o->dir, "tmp");
	q->dbdir = queue_join(o->dir, "db");
	q->lockfd = -1;
	q->cur_fd = -1;
	STAILQ_INIT(&q->reqs);
	pthread_mutex_init(&q->lock, NULL);
	pthread_mutex_init(&q->prep_lock, NULL);
	pthread_mutex_init(&q->qk_lock, NULL);
	pthread_mutex_init(&q->qk_run, NULL);
	pthread_cond_init(&q->cond, NULL);
	pthread_cond_init(&q->hk_cond, NULL);

	if (!q->readonly && (queue_mkdir(q->dir) < 0 || queue_mkdir(q->segdir) < 0 ||
	    queue_mkdir(q->tmpdir) < 0 || queue_mkdir(q->dbdir) < 0)) {
		snprintf(err, errlen, "%s: %s", q->dir, strerror(errno));
		goto fail;
	}
	/* one writer; readers only while no writer runs */
	lockpath = queue_join(o->dir, "lock");
	q->lockfd = open(lockpath, q->readonly ? O_RDONLY | O_CLOEXEC :
	    O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (q->lockfd < 0 && !(q->readonly && errno == ENOENT)) {
		snprintf(err, errlen, "%s: %s", lockpath, strerror(errno));
		goto fail;
	}
	if (q->lockfd >= 0 && flock(q->lockfd,
	    (q->readonly ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
		snprintf(err, errlen, "%s: queue in use by another process (%s)",
		    q->dir, strerror(errno));
		goto fail;
	}
	queue_space_open(q);    /* room for recovery on a full disk */
	if (q->readonly && store_open(q->dbdir, STORE_OPEN_READONLY, &q->st, err, errlen) < 0)
		goto fail;
	if (q->readonly) {
		uint32_t max_num;
		if (queue_rec_list(q, &max_num) < 0) {
			snprintf(err, errlen, "%s: %s", q->segdir, strerror(errno));
			goto fail;
		}
		if (queue_salt_load(q) < 0) {
			snprintf(err, errlen, "%s/salt: %s", q->dir, strerror(errno));
			goto fail;
		}
	} else {
		char *mark = queue_join(q->dir, QUEUE_VERIFY_MARK);
		if (access(mark, F_OK) == 0) {
			log_warnx("queue: a walk of the index failed in the last "
			    "run: verifying it");
			q->verify_index = 1;
		}
		if (queue_index_open(q, o->rebuild_index, err, errlen) < 0) {
			free(mark);
			goto fail;
		}
		if (q->verify_index)
			(void)unlink(mark);
		free(mark);
		if (queue_body7_open(q) < 0)
			log_warn("queue: %s/7bit", q->dir);
		if (queue_seg_roll(q, 0) < 0 && queue_open_noroll(q) < 0) {
			snprintf(err, errlen, "cannot start a segment: %s",
			    strerror(errno));
			goto fail;
		}
		queue_space_check(q);
		(void)queue_qkeys_open(q);      /* it logs */
		if (queue_commit_start(q) < 0) {
			snprintf(err, errlen, "cannot start the committer");
			goto fail;
		}
		if (q->recount_needed && queue_recount_start(q) < 0)
			log_warn("queue: cannot start the live count: segments "
			    "of before this start are kept");
	}
	free(lockpath);
	*out = q;
	return 0;
fail:
	free(lockpath);
	queue_close(q);
	return -1;
}

void
queue_close(struct queue *q)
{
	if (q == NULL)
		return;
	queue_recount_stop(q);
	queue_commit_stop(q);
	if (q->qk_lazy) {       /* a clean stop leaves every key written */
		if (queue_qkeys_run(q, 0) == 0 && q->qk_keyed > 0)
			log_info("queue: query keys written late for %llu "
			    "messages", (unsigned long long)q->qk_keyed);
		q->qk_lazy = 0;
	}
	if (q->cur_fd >= 0)
		close(q->cur_fd);
	queue_space_close(q);   /* a full disk: room for the last checkpoint */
	store_close(q->st);     /* flush + checkpoint */
	if (q->lockfd >= 0)
		close(q->lockfd);
	pthread_mutex_destroy(&q->lock);
	pthread_mutex_destroy(&q->prep_lock);
	pthread_mutex_destroy(&q->qk_lock);
	pthread_mutex_destroy(&q->qk_run);
	free(q->qk);
	pthread_cond_destroy(&q->cond);
	pthread_cond_destroy(&q->hk_cond);
	for (size_t i = 0; i < q->nsegs; i++) {
		queue_seg_rfd_put(q->segs[i].rfd);
		if (q->segs[i].wfd_open && q->segs[i].wfd >= 0) {
			if (fdatasync(q->segs[i].wfd) < 0)
				log_warn("queue: segment=%08x: removal marks",
				    q->segs[i].num);
			close(q->segs[i].wfd);
		}
	}
	free(q->segs);
	free(q->dir);
	free(q->segdir);
	free(q->tmpdir);
	free(q->dbdir);
	free(q);
}

/* ---- index access (any thread) ---- */

int
queue_get(struct queue *q, uint64_t id, struct envelope **out)
{
	uint8_t key[8];
	void *v = NULL;
	size_t vlen;
	int rc;

	*out = NULL;
	queue_be64(key, id);
	for (int tries = 0; ; tries++) {
		rc = store_get(q->st, NULL, STORE_ENVELOPES, key, 8, &v, &vlen);
		if (rc != STORE_RETRY || tries == 20)
			break;
	}
	if (rc == STORE_NOTFOUND)
		return 1;
	if (rc != 0)
		return -1;
	if (envelope_decode(v, vlen, out) != ENV_DECODE_OK)
		*out = queue_placeholder(id);
	free(v);
	return 0;
}

/* Read-modify-write of one envelope: fn decides on the decoded copy. */
static int
queue_rmw(struct queue *q, uint64_t id, const struct envelope *repl,
    uint32_t *seg_removed, uint64_t *off_removed, uint64_t *len_removed)
{
	uint8_t key[8];
	int rc = -1;

	queue_be64(key, id);
	for (int tries = 0; tries < 20; tries++) {
		struct store_txn *t = NULL;
		struct envelope *cur = NULL;
		void *v = NULL;
		size_t vlen;

		if (store_begin(q->st, &t) < 0)
			return -1;
		rc = store_get(q->st, t, STORE_ENVELOPES, key, 8, &v, &vlen);
		if (rc == STORE_NOTFOUND) {
			store_abort(t);
			errno = ENOENT;
			return -1;
		}
		if (rc == 0 && envelope_decode(v, vlen, &cur) != ENV_DECODE_OK)
			cur = NULL;
		free(v);
		if (rc == 0 && repl != NULL) {
			struct envelope *e = envelope_dup(repl);
			if (cur != NULL) {   /* the body location is not the caller's */
				queue_env_locate(e, cur);
				e->size = cur->size;
			}
			if (cur != NULL)
				rc = queue_index_replace(q, t, cur, e);
			else
				rc = queue_index_put(q, t, e);
			envelope_free(e);
		} else if (rc == 0) {
			rc = queue_index_del(q, t, id, cur);
			if (rc == 0 && seg_removed != NULL) {
				*seg_removed = cur != NULL ? cur->seg : 0;
				*off_removed = cur != NULL ? cur->off : 0;
				*len_removed = cur != NULL ? cur->rec_len : 0;
			}
		}
		/* stored without keys: now keyed, or gone */
		int nokeys = cur != NULL && (cur->flags & ENV_F_NOKEYS);
		uint32_t nk_seg = cur != NULL ? cur->seg : 0;
		uint64_t nk_off = cur != NULL ? cur->off : 0;
		envelope_free(cur);
		if (rc == 0) {
			/* it ended t, committed or not */
			if ((rc = queue_index_commit(q, t, 0)) == 0) {
				if (nokeys)
					queue_qkeys_gone(q, nk_seg, nk_off);
				return 0;
			}
		} else
			store_abort(t);
		if (rc != STORE_RETRY)
			return -1;
	}
	errno = EAGAIN;
	return -1;
}

int
queue_update(struct queue *q, const struct envelope *env)
{
	if (q->readonly) {
		errno = EROFS;
		return -1;
	}
	return queue_rmw(q, env->id, env, NULL, NULL, NULL);
}

/*
 * Mark the record at off of segment seg removed (q->lock held, so the
 * segment cannot be dropped meanwhile). Not synced here: see doc/queue.md
 * "Removal marks" for what a crash can cost.
 */
void
queue_mark_removed(struct queue *q, uint32_t seg, uint64_t off)
{
	struct queue_seg *sg = queue_seg_find(q, seg);
	uint8_t fl[2] = { SEG_F_REMOVED >> 8, SEG_F_REMOVED & 0xff };

	if (sg == NULL || seg == 0)
		return;
	if (!sg->wfd_open) {
		char path[4096];
		seg_path(q->segdir, seg, path, sizeof(path));
		sg->wfd = open(path, O_WRONLY | O_CLOEXEC);
		sg->wfd_open = 1;
		if (sg->wfd < 0)
			log_warn("queue: %s: removal marks", path);
	}
	if (sg->wfd >= 0 && pwrite(sg->wfd, fl, 2,
	    (off_t)(off + SEG_FLAGS_OFF)) != 2)
		log_warn("queue: segment=%08x offset=%llu: removal mark", seg,
		    (unsigned long long)off);
}

int
queue_remove(struct queue *q, uint64_t id)
{
	uint32_t seg = 0;
	uint64_t off = 0, len = 0;

	if (q->readonly) {
		errno = EROFS;
		return -1;
	}
	if (queue_rmw(q, id, NULL, &seg, &off, &len) < 0)
		return -1;
	queue_body7_drop(q, id);
	/* the segment is recycled by housekeeping after the next log flush */
	pthread_mutex_lock(&q->lock);
	queue_mark_removed(q, seg, off);
	queue_seg_gone(q, id, seg, len);
	q->removals++;
	pthread_mutex_unlock(&q->lock);
	return 0;
}

/* One removal of a batch in t: 0, STORE_NOTFOUND, or a store error.
 * *nokeys: it was stored without its query keys. */
static int
queue_remove_in(struct queue *q, struct store_txn *t, uint64_t id,
    uint32_t *seg, uint64_t *off, uint64_t *len, int *nokeys)
{
	struct envelope *cur = NULL;
	uint8_t key[8];
	void *v = NULL;
	size_t vlen;
	int rc;

	queue_be64(key, id);
	/* read and delete with one search; the keys follow */
	rc = store_take(q->st, t, STORE_ENVELOPES, key, 8, &v, &vlen);
	if (rc != 0)
		return rc;
	if (envelope_decode(v, vlen, &cur) != ENV_DECODE_OK)
		cur = NULL;
	free(v);
	rc = queue_index_unkey(q, t, id, cur);
	*seg = cur != NULL ? cur->seg : 0;
	*off = cur != NULL ? cur->off : 0;
	*len = cur != NULL ? cur->rec_len : 0;
	*nokeys = cur != NULL && (cur->flags & ENV_F_NOKEYS);
	envelope_free(cur);
	return rc;
}

int
queue_remove_many(struct queue *q, const uint64_t *ids, size_t n, int *gone)
{
	uint32_t seg[QUEUE_REMOVE_BATCH];
	uint64_t off[QUEUE_REMOVE_BATCH], len[QUEUE_REMOVE_BATCH];
	int nokeys[QUEUE_REMOVE_BATCH];
	int rc = -1;

	if (q->readonly) {
		errno = EROFS;
		return -1;
	}
	if (n > QUEUE_REMOVE_BATCH) {
		errno = EINVAL;
		return -1;
	}
	for (int tries = 0; tries < 20; tries++) {
		struct store_txn *t = NULL;

		if (store_begin(q->st, &t) < 0)
			return -1;
		rc = 0;
		for (size_t i = 0; i < n && rc == 0; i++) {
			rc = queue_remove_in(q, t, ids[i], &seg[i], &off[i],
			    &len[i], &nokeys[i]);
			gone[i] = rc == STORE_NOTFOUND;
			if (gone[i])
				rc = 0;
		}
		if (rc == 0)
			rc = queue_index_commit(q, t, 0);       /* ends t */
		else
			store_abort(t);
		if (rc == 0)
			break;
		if (rc != STORE_RETRY)
			return -1;
	}
	if (rc != 0) {
		errno = EAGAIN;
		return -1;
	}
	/* the segments are recycled by housekeeping after the next flush */
	pthread_mutex_lock(&q->lock);
	for (size_t i = 0; i < n; i++) {
		if (gone[i])
			continue;
		queue_mark_removed(q, seg[i], off[i]);
		queue_seg_gone(q, ids[i], seg[i], len[i]);
		q->removals++;
	}
	pthread_mutex_unlock(&q->lock);
	for (size_t i = 0; i < n; i++) {
		if (gone[i])
			continue;
		if (nokeys[i])
			queue_qkeys_gone(q, seg[i], off[i]);
		queue_body7_drop(q, ids[i]);
	}
	return 0;
}

struct queue_walk_ctx {
	queue_walk_fn *fn;
	void *arg;
};

static int
queue_walk_one(void *arg, const void *key, size_t klen, const void *val,
    size_t vlen)
{
	struct queue_walk_ctx *c = arg;
	struct envelope *e = NULL;
	int r;

	if (klen != 8)
		return 0;
	if (envelope_decode(val, vlen, &e) != ENV_DECODE_OK) {
		char qid[QID_STRLEN + 1];
		qid_format(queue_get_be64(key), qid);
		log_warnx("queue: id=%s index record undecodable: held", qid);
		e = queue_placeholder(queue_get_be64(key));
	}
	r = c->fn(c->arg, e);
	envelope_free(e);
	return r;
}

int
queue_walk(struct queue *q, queue_walk_fn *fn, void *arg)
{
	struct queue_walk_ctx c = { fn, arg };
	return store_walk(q->st, STORE_ENVELOPES, queue_walk_one, &c);
}

int
queue_walk_after(struct queue *q, uint64_t after, queue_walk_fn *fn,
    void *arg)
{
	struct queue_walk_ctx c = { fn, arg };
	uint8_t key[8];

	queue_be64(key, after);
	return store_walk_after(q->st, STORE_ENVELOPES, key, 8, queue_walk_one,
	    &c);
}

uint64_t
queue_open_entries(const struct queue *q)
{
	return q->rec_entries;
}

static void
queue_read_body_release(struct queue *q, struct seg_rfd *rf, int fd)
{
	if (rf != NULL) {
		pthread_mutex_lock(&q->lock);
		queue_seg_rfd_put(rf);
		pthread_mutex_unlock(&q->lock);
	} else if (fd >= 0)
		close(fd);
}

static int
queue_read_body_at(struct queue *q, const struct envelope *env, char **out,
    size_t *len)
{
	char path[4096];
	uint8_t *buf = NULL, *head = NULL, hb[SEG_HDR_LEN], stackhead[4096];
	struct seg_hdr h;
	size_t got = 0, hlen;
	int fd = -1, saved;
	uint32_t crc;
	struct seg_rfd *rf = NULL;

	*out = NULL;
	*len = 0;
	if (env->rec_len < SEG_HDR_LEN + 4 ||
	    (uint64_t)env->body_off + env->size + SEG_HDR_LEN != env->rec_len) {
		errno = EBADMSG;
		return -1;
	}
	/*
	 * Readers share one fd per segment (open/close per message was two
	 * system calls of every delivery); a segment being recycled is read
	 * through a fd of its own, as is everything in read-only mode.
	 */
	seg_path(q->segdir, env->seg, path, sizeof(path));
	pthread_mutex_lock(&q->lock);
	struct queue_seg *sg = queue_seg_find(q, env->seg);
	if (sg != NULL && !sg->recycling) {
		if (sg->rfd == NULL && (fd = open(path, O_RDONLY | O_CLOEXEC)) >= 0) {
			sg->rfd = xcalloc(1, sizeof(*sg->rfd));
			sg->rfd->fd = fd;
			sg->rfd->refs = 1;
		}
		if (sg->rfd != NULL) {
			rf = sg->rfd;
			rf->refs++;
		}
	}
	pthread_mutex_unlock(&q->lock);
	fd = rf != NULL ? rf->fd : open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		errno = EIO;
		goto fail;
	}
	/*
	 * One preadv: the header and envelope into head, the body straight
	 * into the buffer handed out (no copy of the body to move it to the
	 * front: 100 KiB per message of W1-100k).
	 */
	hlen = SEG_HDR_LEN + env->body_off;
	head = hlen <= sizeof(stackhead) ? stackhead : malloc(hlen);
	if (head == NULL || (buf = malloc(env->size > 0 ? env->size : 1)) == NULL)
		goto fail;
	while (got < env->rec_len) {
		struct iovec iov[2];
		int niov = 0;
		if (got < hlen) {
			iov[niov].iov_base = head + got;
			iov[niov++].iov_len = hlen - got;
		}
		if (env->size > 0) {
			size_t b = got > hlen ? got - hlen : 0;
			iov[niov].iov_base = buf + b;
			iov[niov++].iov_len = env->size - b;
		}
		ssize_t n = preadv(fd, iov, niov, (off_t)(env->off + got));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			errno = n == 0 ? EBADMSG : EIO;
			goto fail;
		}
		got += (size_t)n;
	}
	seg_hdr_decode(head, &h);
	memcpy(hb, head, SEG_HDR_LEN);
	memset(hb + 24, 0, 4);
	memset(hb + SEG_FLAGS_OFF, 0, 2);       /* removal marks: not in the CRC */
	crc = crc32c(crc32c(crc32c(q->crc_salt, hb, SEG_HDR_LEN),
	    head + SEG_HDR_LEN, hlen - SEG_HDR_LEN), buf, env->size);
	if (h.magic != SEG_MAGIC || h.version != SEG_VERSION ||
	    h.epoch != env->seg ||
	    (uint64_t)h.payload_len + SEG_HDR_LEN != env->rec_len ||
	    crc != h.crc || (env->crc != 0 && crc != env->crc)) {
		errno = EBADMSG;
		goto fail;
	}
	if (head != stackhead)
		free(head);
	queue_read_body_release(q, rf, fd);
	*out = (char *)buf;
	*len = env->size;
	return 0;
fail:
	saved = errno;
	queue_read_body_release(q, rf, fd);
	if (head != stackhead)
		free(head);
	free(buf);
	errno = saved;
	return -1;
}

int
queue_mark_corrupt(struct queue *q, uint64_t id, const char *why)
{
	uint8_t key[8];
	char qid[QID_STRLEN + 1];

	queue_be64(key, id);
	qid_format(id, qid);
	for (int tries = 0; tries < 20; tries++) {
		struct store_txn *t = NULL;
		struct envelope *cur = NULL;
		void *v = NULL;
		size_t vlen;
		int rc;

		if (store_begin(q->st, &t) < 0)
			return -1;
		rc = store_get(q->st, t, STORE_ENVELOPES, key, 8, &v, &vlen);
		if (rc == 0 && envelope_decode(v, vlen, &cur) != ENV_DECODE_OK)
			rc = STORE_NOTFOUND;    /* read as a placeholder already */
		free(v);
		if (rc == 0 && !(cur->flags & ENV_F_CORRUPT)) {
			cur->flags |= ENV_F_CORRUPT;
			if ((rc = queue_index_put(q, t, cur)) != 0)
				store_abort(t);
			else            /* the query index's counters too */
				rc = queue_index_commit(q, t, 0);
			if (rc == 0)
				log_warnx("queue: id=%s segment=%08x offset=%llu: "
				    "body %s: held as corrupt", qid, cur->seg,
				    (unsigned long long)cur->off, why);
			envelope_free(cur);
			if (rc != STORE_RETRY)
				return rc == 0 ? 0 : -1;
			continue;
		}
		envelope_free(cur);
		store_abort(t);
		if (rc != STORE_RETRY)
			return rc < 0 ? -1 : 0;
	}
	return -1;
}

/*
 * A record found damaged where the index points: the entry is held as
 * corrupt (never delivered, reported by `ternctl queue`).
 */
static void
queue_read_body_damaged(struct queue *q, struct envelope *cur)
{
	if (!q->readonly && !(cur->flags & ENV_F_CORRUPT))
		(void)queue_mark_corrupt(q, cur->id, "damaged");
}

/*
 * env's location may be stale: copy-forward moves a record and recycles the
 * old segment. When the read fails, the index is asked once more and a new
 * location is tried.
 */
int
queue_read_body(struct queue *q, const struct envelope *env, char **out,
    size_t *len)
{
	struct envelope *cur = NULL;
	int rc, saved;

	if ((rc = queue_read_body_at(q, env, out, len)) == 0)
		return 0;
	saved = errno;
	if (queue_get(q, env->id, &cur) == 0 && (cur->seg != env->seg ||
	    cur->off != env->off) && !(cur->flags & ENV_F_CORRUPT)) {
		rc = queue_read_body_at(q, cur, out, len);
		saved = errno;
	}
	if (rc < 0 && saved == EBADMSG && cur != NULL)
		queue_read_body_damaged(q, cur);
	envelope_free(cur);
	errno = saved;
	return rc;
}

void
queue_stats(struct queue *q, struct queue_stats *out)
{
	struct queue_counts c;

	memset(out, 0, sizeof(*out));
	if (queue_counts(q, &c) == 0) {       /* counters: no walk */
		out->messages = c.messages;
		out->held = c.held;
		out->corrupt = c.corrupt;
	}
	pthread_mutex_lock(&q->lock);
	out->commits = q->commits;
	out->batches = q->batches;
	out->segments = q->nsegs;
	pthread_mutex_unlock(&q->lock);
}

/* Bytes of the regular files directly in dir (suffix: only those names). */
static uint64_t
queue_dir_bytes(const char *dir, const char *suffix)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	struct stat sb;
	char path[4096];
	uint64_t sum = 0;

	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL) {
		size_t n = strlen(de->d_name);
		if (suffix != NULL && strcmp(de->d_name, "spare") != 0 &&
		    (n < strlen(suffix) ||
		    strcmp(de->d_name + n - strlen(suffix), suffix) != 0))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (stat(path, &sb) == 0 && S_ISREG(sb.st_mode))
			sum += (uint64_t)sb.st_size;
	}
	closedir(d);
	return sum;
}

void
queue_disk_use(struct queue *q, uint64_t *segments, uint64_t *index)
{
	*segments = queue_dir_bytes(q->segdir, ".seg");
	*index = queue_dir_bytes(q->dbdir, NULL);
}

void
queue_status_reply(enum q_status st, int err, int *code, const char **enh,
    const char **text)
{
	switch (st) {
	case Q_OK:
		*code = 250;
		*enh = "2.0.0";
		*text = "Ok";
		return;
	case Q_PERMFAIL:
		*code = 554;
		*enh = "5.3.0";
		*text = "Message cannot be queued";
		return;
	case Q_TEMPFAIL:
		break;
	}
	if (err == ENOSPC || err == EDQUOT) {
		*code = 452;
		*enh = "4.3.1";
		*text = "Insufficient system storage";
	} else {
		*code = 451;
		*enh = "4.3.0";
		*text = "Local error in processing; try again later";
	}
}
