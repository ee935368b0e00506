/*
 * verify.c - does the index agree with the segments? (queue_verify(), for
 * `ternctl queue verify`; doc/queue.md "Checking the index").
 *
 * Runs on the caller's thread: the control loop (online, a live queue) or
 * ternctl (offline, a read-only open). Reads every segment record, CRC
 * checked, and every index entry; never writes. Memory: one small entry per
 * record. Online, the current segment grows while it is read: a record the
 * committer has not indexed yet is not counted as a difference there.
 * The bytes read are untrusted: seg_record_read() bounds every length.
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

struct queue_vrec {
	uint64_t id, off, rec_len;
	uint32_t seg, crc;
	int ok;                 /* CRC and envelope valid */
	int used;               /* an index entry points at it */
	int copy;               /* a copy-forward record */
	int removed;            /* marked SEG_F_REMOVED */
};

struct queue_vctx {
	struct queue *q;
	struct queue_vrec *v;
	size_t n, cap;
	struct queue_verify *out;
	queue_verify_diff_fn *fn;
	void *arg;
};

static int
queue_vrec_cmp(const void *a, const void *b)
{
	const struct queue_vrec *x = a, *y = b;

	if (x->id != y->id)
		return x->id < y->id ? -1 : 1;
	if (x->seg != y->seg)
		return x->seg < y->seg ? -1 : 1;
	return x->off < y->off ? -1 : x->off > y->off;
}

static void
queue_verify_diff(struct queue_vctx *c, uint64_t id, uint32_t seg,
    uint64_t off, const char *what)
{
	c->out->differences++;
	if (c->fn != NULL)
		c->fn(c->arg, id, seg, off, what);
}

/* Every record of segment num, up to limit. */
static void
queue_verify_scan(struct queue_vctx *c, uint32_t num, uint64_t limit)
{
	char path[4096];
	uint64_t off = 0, prev = 0;
	int fd;

	seg_path(c->q->segdir, num, path, sizeof(path));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
		if (errno != ENOENT)    /* recycled meanwhile: not a difference */
			queue_verify_diff(c, 0, num, 0, "segment unreadable");
		return;
	}
	c->out->segments++;
	for (;;) {
		struct envelope *e = NULL;
		uint64_t rec_len = 0, seq = 0;
		const char *why;
		enum seg_rec_status st = seg_record_read(fd, num, c->q->crc_salt,
		    off, limit, prev, &e, &rec_len, &seq, &why);

		if (st == SEG_REC_END)
			break;
		if (st == SEG_REC_BAD) {
			c->out->torn++;         /* the log ends here */
			break;
		}
		prev = seq;
		c->out->records++;
		if (st == SEG_REC_DAMAGED)
			c->out->damaged++;
		if (c->n == c->cap) {
			c->cap = c->cap ? c->cap * 2 : 1024;
			c->v = xreallocarray(c->v, c->cap, sizeof(*c->v));
		}
		c->v[c->n++] = (struct queue_vrec){ .id = e->id, .off = off,
		    .rec_len = rec_len, .seg = num, .crc = e->crc,
		    .ok = st == SEG_REC_OK || st == SEG_REC_REMOVED,
		    .removed = st == SEG_REC_REMOVED,
		    .copy = (e->flags & ENV_F_COPY) != 0 };
		envelope_free(e);
		if (rec_len > limit - off)
			break;
		off += rec_len;
	}
	close(fd);
}

static struct queue_vrec *
queue_verify_find(struct queue_vctx *c, uint64_t id, uint32_t seg, uint64_t off)
{
	struct queue_vrec key = { .id = id, .seg = seg, .off = off };

	return bsearch(&key, c->v, c->n, sizeof(*c->v), queue_vrec_cmp);
}

/*
 * An entry whose record the scan did not see: online, the committer wrote
 * it (or copy-forward moved it) after the scan passed. Read it where the
 * entry says: 1 a valid record of that id is there.
 */
static int
queue_verify_read_one(struct queue_vctx *c, const struct envelope *e)
{
	char path[4096];
	struct envelope *r = NULL;
	uint64_t rec_len = 0;
	const char *why;
	struct stat sb;
	int fd, ok;

	seg_path(c->q->segdir, e->seg, path, sizeof(path));
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	if (fstat(fd, &sb) < 0) {
		close(fd);
		return 0;
	}
	switch (seg_record_read(fd, e->seg, c->q->crc_salt, e->off,
	    (uint64_t)sb.st_size, 0, &r, &rec_len, NULL, &why)) {
	case SEG_REC_OK:
	case SEG_REC_REMOVED:
		ok = r->id == e->id && rec_len == e->rec_len;
		break;
	default:
		ok = 0;
	}
	envelope_free(r);
	close(fd);
	return ok;
}

/* One index entry against the records. */
static int
queue_verify_entry(void *arg, const void *key, size_t klen, const void *val,
    size_t vlen)
{
	struct queue_vctx *c = arg;
	struct envelope *e = NULL;
	struct queue_vrec *r;
	uint64_t id;

	if (klen != 8)
		return 0;
	id = queue_get_be64(key);
	c->out->entries++;
	if (envelope_decode(val, vlen, &e) != ENV_DECODE_OK) {
		queue_verify_diff(c, id, 0, 0, "index entry undecodable");
		return 0;
	}
	if (e->flags & ENV_F_CORRUPT) {
		c->out->held_corrupt++;         /* known, shown by ternctl queue */
		if ((r = queue_verify_find(c, id, e->seg, e->off)) != NULL)
			r->used = 1;
	} else if ((r = queue_verify_find(c, id, e->seg, e->off)) == NULL) {
		if (!queue_verify_read_one(c, e))
			queue_verify_diff(c, id, e->seg, e->off,
			    "index entry points at no record");
	} else {
		r->used = 1;
		if (!r->ok)
			queue_verify_diff(c, id, e->seg, e->off,
			    "index entry points at a damaged record");
		else if (r->rec_len != e->rec_len || (e->crc != 0 && r->crc != e->crc))
			queue_verify_diff(c, id, e->seg, e->off,
			    "index entry does not match its record");
	}
	envelope_free(e);
	return 0;
}

/* Stamps: the index belongs to this queue and its two files together. */
static void
queue_verify_stamp(struct queue_vctx *c)
{
	void *m = NULL, *e = NULL;
	size_t ml = 0, el = 0;
	int rm = store_get(c->q->st, NULL, STORE_META, META_STAMP,
	    strlen(META_STAMP), &m, &ml);
	int re = store_get(c->q->st, NULL, STORE_ENVELOPES, META_STAMP,
	    strlen(META_STAMP), &e, &el);

	if (rm == 0 && ml == 12 && queue_get_be32(m) != c->q->crc_salt)
		queue_verify_diff(c, 0, 0, 0, "index of another queue (salt)");
	else if ((rm == 0) != (re == 0) || (rm == 0 &&
	    (ml != el || memcmp(m, e, ml) != 0)))
		queue_verify_diff(c, 0, 0, 0,
		    "envelopes.db and meta.db stamps differ");
	free(m);
	free(e);
}

int
queue_verify(struct queue *q, struct queue_verify *out,
    queue_verify_diff_fn *fn, void *arg)
{
	struct queue_vctx c = { .q = q, .out = out, .fn = fn, .arg = arg };
	uint32_t *nums, iseg = 0, cur;
	uint64_t *sizes, ioff = 0;
	size_t n;
	void *v = NULL;
	size_t vlen = 0;
	int ret = 0;

	memset(out, 0, sizeof(*out));
	pthread_mutex_lock(&q->lock);
	n = q->nsegs;
	cur = q->cur_num;
	nums = xcalloc(n ? n : 1, sizeof(*nums));
	sizes = xcalloc(n ? n : 1, sizeof(*sizes));
	for (size_t i = 0; i < n; i++) {
		nums[i] = q->segs[i].num;
		sizes[i] = q->segs[i].size;
	}
	pthread_mutex_unlock(&q->lock);
	if (store_get(q->st, NULL, STORE_META, META_INDEXED,
	    strlen(META_INDEXED), &v, &vlen) == 0 && vlen == 12) {
		iseg = queue_get_be32(v);
		ioff = queue_get_be64((uint8_t *)v + 4);
	}
	free(v);
	for (size_t i = 0; i < n; i++) {
		uint8_t key[8], cv[8];
		uint64_t limit = sizes[i];
		void *cp = NULL;
		size_t cl = 0;
		memcpy(key, META_CUT, 4);
		queue_be32(key + 4, nums[i]);
		if (store_get(q->st, NULL, STORE_META, key, 8, &cp, &cl) == 0 &&
		    cl == 8) {
			memcpy(cv, cp, 8);
			limit = queue_get_be64(cv);
		}
		free(cp);
		queue_verify_scan(&c, nums[i], limit);
	}
	if (c.n > 1)
		qsort(c.v, c.n, sizeof(*c.v), queue_vrec_cmp);
	queue_verify_stamp(&c);
	if (store_walk(q->st, STORE_ENVELOPES, queue_verify_entry, &c) < 0) {
		queue_verify_diff(&c, 0, 0, 0, "index unreadable");
		ret = -1;
	}
	if (ret == 0)
		out->differences += queue_qidx_verify(q, fn, arg);
	/* records no entry points at: removed (dead) or never indexed */
	for (size_t i = 0, end; ret == 0 && i < c.n; i = end) {
		int used = 0;
		for (end = i; end < c.n && c.v[end].id == c.v[i].id; end++)
			used |= c.v[end].used;
		if (used)
			continue;       /* the others are a copy or its original */
		for (size_t k = i; k < end; k++) {
			struct queue_vrec *r = &c.v[k];
			int after = r->seg > iseg || (r->seg == iseg && r->off >= ioff);
			if (!after || !r->ok || r->copy || r->removed) {
				out->dead++;    /* removed, awaiting recycling */
				continue;
			}
			if (!q->readonly && r->seg == cur)
				continue;       /* online: the committer indexes it next */
			out->unindexed++;
			queue_verify_diff(&c, r->id, r->seg, r->off,
			    "acknowledged record not in the index (a start of "
			    "ternd indexes it)");
		}
	}
	free(c.v);
	free(nums);
	free(sizes);
	return ret;
}
