/*
 * query.c - queries on the index (tern/queue.h "queries"): filtered,
 * paged listings in id order, the counts of what the queue holds, and the
 * pending recipients per domain; and the query index that answers them
 * (doc/queue.md "Query index").
 *
 * The query index is kept by hand, in the transaction that puts or
 * deletes the envelope (queue_index_put/queue_index_del call
 * queue_qidx_change): keys in STORE_QUERY (values empty), counters in
 * STORE_COUNTS. The counters' deltas are summed on the transaction and
 * written last, just before its commit (queue_index_commit), in key order:
 * a counter row is the last lock a transaction takes, so it never waits
 * while holding one and two writers never deadlock on them.
 *
 * Any thread. A queue whose query index is not there (a read-only open
 * of an index made before it) is answered by walks of the envelopes, with
 * the same results. Matching is the pure queue_filter_match(): every
 * envelope an index yields is checked against the whole filter.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tern/log.h"
#include "tern/queue.h"
#include "tern/util.h"
#include "queue_int.h"

/* STORE_QUERY key kinds: kind byte, then ... */
#define QK_ARRIVAL  'a'     /* be64(arrival ^ sign bit), be64(id) */
#define QK_DOMAIN   'd'     /* pending rcpt's domain, NUL, be64(id) */
#define QK_HELD     'h'     /* be64(id) */
#define QK_NEXT     'n'     /* be64(next_attempt ^ sign bit), be64(id) */
#define QK_RCPT     'r'     /* pending rcpt address, NUL, be64(id) */
#define QK_SENDER   's'     /* sender address, NUL, be64(id) */
/* STORE_COUNTS keys */
#define QC_TOTAL    "C"     /* 6 x be64: struct qtot in order */
#define QC_DOMAIN   'D'     /* + domain: be64 messages, be64 recipients */
#define QC_READY    "V"     /* be32 version: the index is complete */
#define QIDX_VERSION 2u    /* 2: the next-attempt keys */

/* What queue_counts calls held: an operator hold or a corrupt message. */
#define QIDX_HELD   (ENV_F_HOLD | ENV_F_CORRUPT)

#define QKEY_MAX    1040    /* kind + text + NUL + 16 bytes */

void
queue_filter_init(struct queue_filter *f)
{
	memset(f, 0, sizeof(*f));
	f->held = -1;
	f->older_than = -1;
}

/* A whole address: something@something, no second '@'. */
static int
queue_is_address(const char *s)
{
	const char *at = strchr(s, '@');

	return at != NULL && at != s && at[1] != '\0' &&
	    strchr(at + 1, '@') == NULL;
}

static int
queue_text_match(const char *text, const char *addr)
{
	if (addr == NULL)
		return 0;
	if (queue_is_address(text))
		return strcasecmp(text, addr) == 0;
	return strcasestr(addr, text) != NULL;
}

int
queue_filter_match(const struct queue_filter *f, const struct envelope *env)
{
	int to_ok = f->rcpt == NULL, dom_ok = f->domain == NULL;

	if (f->held >= 0 && ((env->flags & ENV_F_HOLD) != 0) != f->held)
		return 0;
	/* arrival comes from a queue record (any int64): no now - arrival */
	if (f->older_than >= 0 && (env->arrival > f->now ||
	    (uint64_t)f->now - (uint64_t)env->arrival < (uint64_t)f->older_than))
		return 0;
	if (f->sender != NULL && !queue_text_match(f->sender, env->sender))
		return 0;
	for (size_t i = 0; i < env->nrcpt && !(to_ok && dom_ok); i++) {
		const struct env_rcpt *rc = &env->rcpts[i];
		if (rc->state != RCPT_PENDING || rc->addr == NULL)
			continue;
		if (!to_ok && queue_text_match(f->rcpt, rc->addr))
			to_ok = 1;
		if (!dom_ok && strcasecmp(addr_domain(rc->addr), f->domain) == 0)
			dom_ok = 1;
	}
	return to_ok && dom_ok;
}

/* ---- keys of one envelope (pure) ---- */

struct qkey {
	uint8_t *k;
	size_t len;
};

struct qkeys {
	struct qkey *v;
	size_t n, cap;
};

static size_t
qkey_text(uint8_t *out, char kind, const char *text)
{
	size_t n = strlen(text);

	if (n > QKEY_MAX - 18)
		n = QKEY_MAX - 18;      /* longer than any address: cut */
	out[0] = (uint8_t)kind;
	for (size_t i = 0; i < n; i++) {
		char c = text[i];
		out[1 + i] = (uint8_t)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
	}
	out[1 + n] = 0;
	return n + 2;
}

/* A signed time as a big-endian key part that sorts in time order. */
static uint64_t
qkey_arrival(int64_t t)
{
	return (uint64_t)t ^ (1ULL << 63);
}

static void
qkeys_push(struct qkeys *ks, const uint8_t *k, size_t len)
{
	if (ks->n == ks->cap) {
		ks->cap = ks->cap ? ks->cap * 2 : 8;
		ks->v = xreallocarray(ks->v, ks->cap, sizeof(*ks->v));
	}
	ks->v[ks->n].k = xmalloc(len);
	memcpy(ks->v[ks->n].k, k, len);
	ks->v[ks->n++].len = len;
}

static void
qkeys_text(struct qkeys *ks, char kind, const char *text, uint64_t id)
{
	uint8_t k[QKEY_MAX];
	size_t n = qkey_text(k, kind, text);

	queue_be64(k + n, id);
	qkeys_push(ks, k, n + 8);
}

static int
qkey_cmp(const void *a, const void *b)
{
	const struct qkey *x = a, *y = b;
	int c = memcmp(x->k, y->k, x->len < y->len ? x->len : y->len);

	if (c != 0)
		return c;
	return x->len < y->len ? -1 : x->len > y->len;
}

static void
qkeys_free(struct qkeys *ks)
{
	for (size_t i = 0; i < ks->n; i++)
		free(ks->v[i].k);
	free(ks->v);
	memset(ks, 0, sizeof(*ks));
}

/* The keys of e, sorted, each once (dom_only: the 'd' keys alone, what
 * the counters need). e NULL: none. */
static void
qkeys_env_kinds(struct qkeys *ks, const struct envelope *e, int dom_only)
{
	uint8_t k[17];
	size_t j = 0;

	memset(ks, 0, sizeof(*ks));
	if (e == NULL)
		return;
	if (dom_only)
		goto domains;
	k[0] = QK_ARRIVAL;
	queue_be64(k + 1, qkey_arrival(e->arrival));
	queue_be64(k + 9, e->id);
	qkeys_push(ks, k, 17);
	if (e->flags & ENV_F_HOLD) {
		k[0] = QK_HELD;
		queue_be64(k + 1, e->id);
		qkeys_push(ks, k, 9);
	}
	if (!(e->flags & QIDX_HELD)) {      /* what the scheduler loads */
		k[0] = QK_NEXT;
		queue_be64(k + 1, qkey_arrival(e->next_attempt));
		queue_be64(k + 9, e->id);
		qkeys_push(ks, k, 17);
	}
	if (e->sender != NULL)
		qkeys_text(ks, QK_SENDER, e->sender, e->id);
domains:
	for (size_t i = 0; i < e->nrcpt; i++) {
		const struct env_rcpt *rc = &e->rcpts[i];
		if (rc->state != RCPT_PENDING || rc->addr == NULL)
			continue;
		if (!dom_only)
			qkeys_text(ks, QK_RCPT, rc->addr, e->id);
		qkeys_text(ks, QK_DOMAIN, addr_domain(rc->addr), e->id);
	}
	qsort(ks->v, ks->n, sizeof(*ks->v), qkey_cmp);
	for (size_t i = 0; i < ks->n; i++) {
		if (j > 0 && qkey_cmp(&ks->v[j - 1], &ks->v[i]) == 0) {
			free(ks->v[i].k);
			continue;
		}
		ks->v[j++] = ks->v[i];
	}
	ks->n = j;
}

static void
qkeys_env(struct qkeys *ks, const struct envelope *e)
{
	qkeys_env_kinds(ks, e, 0);
}

/* ---- counters: deltas summed on the transaction ---- */

struct qtot {
	int64_t messages, held, corrupt, deferred, recipients, bytes;
};
#define QTOT_N 6

struct qdom {
	char *name;             /* owned, lower case */
	int64_t messages, recipients;
};

struct qdelta {
	struct store_txn_data base;     /* first: store_txn_data() casts */
	struct qtot tot;
	struct qdom *d;
	size_t n, cap;
};

static void
qdelta_free(struct store_txn_data *b)
{
	struct qdelta *d = (struct qdelta *)b;

	for (size_t i = 0; i < d->n; i++)
		free(d->d[i].name);
	free(d->d);
	free(d);
}

static struct qdom *
qdelta_dom(struct qdelta *d, const char *name, size_t len)
{
	for (size_t i = 0; i < d->n; i++)
		if (strlen(d->d[i].name) == len &&
		    memcmp(d->d[i].name, name, len) == 0)
			return &d->d[i];
	if (d->n == d->cap) {
		d->cap = d->cap ? d->cap * 2 : 4;
		d->d = xreallocarray(d->d, d->cap, sizeof(*d->d));
	}
	memset(&d->d[d->n], 0, sizeof(d->d[d->n]));
	d->d[d->n].name = xmalloc(len + 1);
	memcpy(d->d[d->n].name, name, len);
	d->d[d->n].name[len] = '\0';
	return &d->d[d->n++];
}

/* Add sign x what e (with keys ks) counts for. */
static void
qdelta_env(struct qdelta *d, const struct envelope *e, const struct qkeys *ks,
    int sign)
{
	if (e == NULL)
		return;
	d->tot.messages += sign;
	d->tot.held += (e->flags & QIDX_HELD) ? sign : 0;
	d->tot.corrupt += (e->flags & ENV_F_CORRUPT) ? sign : 0;
	d->tot.deferred += (!(e->flags & QIDX_HELD) && e->attempts > 0) ?
	    sign : 0;
	d->tot.bytes += sign * (int64_t)e->size;
	for (size_t i = 0; i < e->nrcpt; i++) {
		const struct env_rcpt *rc = &e->rcpts[i];
		uint8_t k[QKEY_MAX];
		size_t n;
		if (rc->state != RCPT_PENDING || rc->addr == NULL)
			continue;
		d->tot.recipients += sign;
		n = qkey_text(k, QK_DOMAIN, addr_domain(rc->addr));
		qdelta_dom(d, (char *)k + 1, n - 2)->recipients += sign;
	}
	/* messages per domain: once per 'd' key */
	for (size_t i = 0; i < ks->n; i++)
		if (ks->v[i].k[0] == QK_DOMAIN)
			qdelta_dom(d, (char *)ks->v[i].k + 1,
			    ks->v[i].len - 10)->messages += sign;
}

/* ---- keeping the index ---- */

int
queue_qidx_change(struct queue *q, struct store_txn *t,
    const struct envelope *old, const struct envelope *e, int counts)
{
	struct qkeys ko, kn;
	struct qdelta *d = (struct qdelta *)store_txn_data(t);
	/* which side's keys are (to be) stored */
	int wo = old != NULL && !(old->flags & ENV_F_NOKEYS);
	int wn = e != NULL && !(e->flags & ENV_F_NOKEYS);
	size_t i = 0, j = 0;
	int rc = 0;

	if (!q->qidx)
		return 0;
	if (d == NULL && counts) {
		d = xcalloc(1, sizeof(*d));
		d->base.free = qdelta_free;
		store_txn_set_data(t, &d->base);
	}
	/* no key written either side: the counters' domain keys alone */
	qkeys_env_kinds(&ko, old, !wo && !wn);
	qkeys_env_kinds(&kn, e, !wo && !wn);
	/* merge the two sorted lists: delete what went, put what came */
	while (rc == 0 && (i < ko.n || j < kn.n)) {
		int c = i == ko.n ? 1 : j == kn.n ? -1 :
		    qkey_cmp(&ko.v[i], &kn.v[j]);
		int del = c < 0 ? wo : c == 0 && wo && !wn;
		int put = c > 0 ? wn : c == 0 && wn && !wo;
		if (del) {
			rc = store_del(q->st, t, STORE_QUERY, ko.v[i].k,
			    ko.v[i].len);
			if (rc == STORE_NOTFOUND)
				rc = 0;
		} else if (put) {
			rc = store_put(q->st, t, STORE_QUERY, kn.v[j].k,
			    kn.v[j].len, "", 0);
		}
		i += c <= 0;
		j += c >= 0;
	}
	if (rc == 0 && counts) {
		qdelta_env(d, old, &ko, -1);
		qdelta_env(d, e, &kn, 1);
	}
	qkeys_free(&ko);
	qkeys_free(&kn);
	return rc;
}

static void
qtot_decode(const uint8_t *v, size_t len, struct qtot *t)
{
	int64_t *f[QTOT_N] = { &t->messages, &t->held, &t->corrupt,
	    &t->deferred, &t->recipients, &t->bytes };

	memset(t, 0, sizeof(*t));
	for (size_t i = 0; i < QTOT_N && (i + 1) * 8 <= len; i++)
		*f[i] = (int64_t)queue_get_be64(v + i * 8);
}

/* Add n (values) to the counters at key: 0, STORE_RETRY or -1. */
static int
qcount_add(struct queue *q, struct store_txn *t, const void *key, size_t klen,
    const int64_t *add, size_t n)
{
	uint8_t out[QTOT_N * 8];
	void *v = NULL;
	size_t vlen = 0;
	int rc, zero = 1;

	rc = store_get(q->st, t, STORE_COUNTS, key, klen, &v, &vlen);
	if (rc != 0 && rc != STORE_NOTFOUND)
		return rc;
	for (size_t i = 0; i < n; i++) {
		int64_t cur = (i + 1) * 8 <= vlen ?
		    (int64_t)queue_get_be64((uint8_t *)v + i * 8) : 0;
		cur += add[i];
		if (cur < 0)
			cur = 0;        /* never below zero (verify reports it) */
		zero &= cur == 0;
		queue_be64(out + i * 8, (uint64_t)cur);
	}
	free(v);
	if (zero && n == 2)     /* a domain with nothing pending: no row */
		return rc == STORE_NOTFOUND ? 0 :
		    store_del(q->st, t, STORE_COUNTS, key, klen);
	return store_put(q->st, t, STORE_COUNTS, key, klen, out, n * 8);
}

static int
qdom_name_cmp(const void *a, const void *b)
{
	return strcmp(((const struct qdom *)a)->name,
	    ((const struct qdom *)b)->name);
}

static int
qdelta_write(struct queue *q, struct store_txn *t, struct qdelta *d)
{
	int64_t tot[QTOT_N] = { d->tot.messages, d->tot.held, d->tot.corrupt,
	    d->tot.deferred, d->tot.recipients, d->tot.bytes };
	int rc = 0, any = 0;

	for (size_t i = 0; i < QTOT_N; i++)
		any |= tot[i] != 0;
	if (any)
		rc = qcount_add(q, t, QC_TOTAL, 1, tot, QTOT_N);
	if (d->n > 1)
		qsort(d->d, d->n, sizeof(*d->d), qdom_name_cmp);
	for (size_t i = 0; rc == 0 && i < d->n; i++) {
		uint8_t k[QKEY_MAX];
		int64_t add[2] = { d->d[i].messages, d->d[i].recipients };
		size_t len = strlen(d->d[i].name);
		if (add[0] == 0 && add[1] == 0)
			continue;
		k[0] = QC_DOMAIN;
		memcpy(k + 1, d->d[i].name, len);
		rc = qcount_add(q, t, k, len + 1, add, 2);
	}
	return rc;
}

int
queue_index_commit(struct queue *q, struct store_txn *t, int sync)
{
	struct qdelta *d = (struct qdelta *)store_txn_data(t);
	int rc = 0;

	if (d != NULL)
		rc = qdelta_write(q, t, d);
	if (rc != 0) {
		store_abort(t);
		return rc == STORE_RETRY ? STORE_RETRY : -1;
	}
	rc = store_commit(t, sync);
	return rc == STORE_RETRY ? STORE_RETRY : rc != 0 ? -1 : 0;
}

/* ---- building it (read-write open) ---- */

struct qbuild {
	struct queue *q;
	struct store_txn *t;
	uint64_t n;
	int rc;
};

static int
qbuild_one(void *arg, const void *key, size_t klen, const void *val,
    size_t vlen)
{
	struct qbuild *b = arg;
	struct envelope *e = NULL;

	if (klen != 8)
		return 0;
	if (envelope_decode(val, vlen, &e) != ENV_DECODE_OK)
		e = queue_placeholder(queue_get_be64(key));
	if (b->t == NULL && (b->rc = store_begin(b->q->st, &b->t)) != 0) {
		envelope_free(e);
		return 1;
	}
	b->rc = queue_qidx_change(b->q, b->t, NULL, e, 1);
	envelope_free(e);
	if (b->rc != 0)
		return 1;
	if (++b->n % 512 == 0) {
		b->rc = queue_index_commit(b->q, b->t, 0);
		b->t = NULL;
	}
	return b->rc != 0;
}

static int
qidx_ready(struct queue *q)
{
	void *v = NULL;
	size_t vlen = 0;
	int rc;

	if (!store_has(q->st, STORE_COUNTS) || !store_has(q->st, STORE_QUERY))
		return 0;
	rc = store_get(q->st, NULL, STORE_COUNTS, QC_READY, 1, &v, &vlen);
	/* an older version lacks keys: rebuilt like a missing index */
	rc = rc == 0 && vlen == 4 && queue_get_be32(v) == QIDX_VERSION;
	free(v);
	return rc;
}

static int
qidx_build(struct queue *q)
{
	struct qbuild b = { .q = q };
	uint8_t ver[4];
	int rc;

	if ((rc = store_begin(q->st, &b.t)) != 0)
		return -1;
	if ((rc = store_truncate(q->st, b.t, STORE_QUERY)) != 0 ||
	    (rc = store_truncate(q->st, b.t, STORE_COUNTS)) != 0) {
		store_abort(b.t);
		return -1;
	}
	if (store_commit(b.t, 0) != 0)
		return -1;
	b.t = NULL;
	q->qidx = 1;
	if (store_walk(q->st, STORE_ENVELOPES, qbuild_one, &b) < 0 || b.rc != 0) {
		store_abort(b.t);
		return -1;
	}
	if (b.t == NULL && store_begin(q->st, &b.t) != 0)
		return -1;
	queue_be32(ver, QIDX_VERSION);
	if (store_put(q->st, b.t, STORE_COUNTS, QC_READY, 1, ver, 4) != 0) {
		store_abort(b.t);
		return -1;
	}
	return queue_index_commit(q, b.t, 1) == 0 ? 0 : -1;
}

int
queue_qidx_ensure(struct queue *q)
{
	uint64_t t0 = now_mono_us();
	struct queue_counts c;

	q->qidx = 0;
	if (qidx_ready(q)) {
		q->qidx = 1;
		return 0;
	}
	if (qidx_build(q) < 0) {
		q->qidx = 0;
		log_warnx("queue: building the query index failed: listings "
		    "and counts walk the envelopes until the next start");
		return -1;
	}
	if (queue_counts(q, &c) < 0 || c.messages == 0)
		return 0;               /* a new queue: nothing to say */
	log_info("queue: query index built: messages=%llu recipients=%llu "
	    "ms=%llu", (unsigned long long)c.messages,
	    (unsigned long long)c.recipients,
	    (unsigned long long)((now_mono_us() - t0) / 1000));
	return 0;
}

/* The index is there to read (read-write: kept; read-only: complete). */
static int
qidx_usable(struct queue *q)
{
	return q->qidx || (q->readonly && qidx_ready(q));
}

/* ---- answers by walks (no query index; and verify's reference) ---- */

struct queue_query_ctx {
	struct queue *q;
	const struct queue_filter *f;
	uint64_t after;
	size_t limit;
	long n;
	uint64_t last;
	queue_walk_fn *fn;
	void *arg;
	/* an index range: keys starting with pfx (len plen), then be64(id) */
	const uint8_t *pfx;
	size_t plen;
	int err;
};

/* One envelope the index or a walk found: filter it, pass it on. */
static int
queue_query_one(void *arg, const struct envelope *env)
{
	struct queue_query_ctx *c = arg;
	int r;

	if (env->id <= c->after || !queue_filter_match(c->f, env))
		return 0;
	r = c->fn(c->arg, env);
	c->n++;
	c->last = env->id;
	if (r != 0)
		return r;
	return c->limit != 0 && (size_t)c->n >= c->limit;
}

static int
queue_counts_one(void *arg, const struct envelope *e)
{
	struct queue_counts *c = arg;
	size_t pending = envelope_pending(e);

	c->messages++;
	if (e->flags & QIDX_HELD)
		c->held++;
	if (e->flags & ENV_F_CORRUPT)
		c->corrupt++;
	if (!(e->flags & QIDX_HELD) && e->attempts > 0)
		c->deferred++;
	c->recipients += pending;
	c->bytes += e->size;
	if (e->arrival > 0 && (c->oldest_arrival == 0 ||
	    e->arrival < c->oldest_arrival))
		c->oldest_arrival = e->arrival;
	return 0;
}

static int
queue_counts_walk(struct queue *q, struct queue_counts *out)
{
	memset(out, 0, sizeof(*out));
	return queue_walk(q, queue_counts_one, out) == -1 ? -1 : 0;
}

/* Domains' counts, while walking or read from the counters. */
struct queue_doms {
	struct qdelta d;        /* messages/recipients per domain */
};

static int
queue_domains_one(void *arg, const struct envelope *e)
{
	struct queue_doms *ds = arg;
	struct qkeys ks;

	qkeys_env(&ks, e);
	qdelta_env(&ds->d, e, &ks, 1);
	qkeys_free(&ks);
	return 0;
}

static int
queue_dom_cmp(const void *a, const void *b)
{
	const struct qdom *x = a, *y = b;

	if (x->recipients != y->recipients)
		return x->recipients > y->recipients ? -1 : 1;
	return strcmp(x->name, y->name);
}

static int
queue_domrow_one(void *arg, const void *key, size_t klen, const void *val,
    size_t vlen)
{
	struct queue_doms *ds = arg;
	const uint8_t *k = key;
	struct qdom *d;

	if (klen < 1 || k[0] != QC_DOMAIN)
		return 1;
	d = qdelta_dom(&ds->d, (const char *)k + 1, klen - 1);
	if (vlen >= 16) {
		d->messages = (int64_t)queue_get_be64(val);
		d->recipients = (int64_t)queue_get_be64((const uint8_t *)val + 8);
	}
	return 0;
}

/* Per-domain counts: from the counters (or a walk). 0 or -1. */
static int
queue_doms_load(struct queue *q, int walk, struct queue_doms *ds)
{
	uint8_t from = QC_DOMAIN;

	memset(ds, 0, sizeof(*ds));
	if (walk)
		return queue_walk(q, queue_domains_one, ds) == -1 ? -1 : 0;
	return store_walk_from(q->st, STORE_COUNTS, &from, 1, queue_domrow_one,
	    ds) < 0 ? -1 : 0;
}

static void
queue_doms_free(struct queue_doms *ds)
{
	for (size_t i = 0; i < ds->d.n; i++)
		free(ds->d.d[i].name);
	free(ds->d.d);
}

/* ---- counts ---- */

static int
queue_first_arrival(void *arg, const void *key, size_t klen, const void *val,
    size_t vlen)
{
	int64_t *out = arg;
	const uint8_t *k = key;

	(void)val;
	(void)vlen;
	if (klen != 17 || k[0] != QK_ARRIVAL)
		return 1;
	*out = (int64_t)(queue_get_be64(k + 1) ^ (1ULL << 63));
	return *out > 0;        /* a placeholder's 0 is no arrival */
}

int
queue_counts(struct queue *q, struct queue_counts *out)
{
	struct qtot t;
	void *v = NULL;
	size_t vlen = 0;
	uint8_t from = QK_ARRIVAL;
	int64_t first = 0;
	int rc;

	if (!qidx_usable(q))
		return queue_counts_walk(q, out);
	memset(out, 0, sizeof(*out));
	for (int tries = 0; ; tries++) {
		rc = store_get(q->st, NULL, STORE_COUNTS, QC_TOTAL, 1, &v, &vlen);
		if (rc != STORE_RETRY || tries == 20)
			break;
	}
	if (rc != 0 && rc != STORE_NOTFOUND)
		return -1;
	qtot_decode(v, rc == 0 ? vlen : 0, &t);
	free(v);
	out->messages = (uint64_t)t.messages;
	out->held = (uint64_t)t.held;
	out->corrupt = (uint64_t)t.corrupt;
	out->deferred = (uint64_t)t.deferred;
	out->recipients = (uint64_t)t.recipients;
	out->bytes = (uint64_t)t.bytes;
	if (out->messages > 0 && store_walk_from(q->st, STORE_QUERY, &from, 1,
	    queue_first_arrival, &first) < 0)
		return -1;
	if (out->messages > 0 && q->qk_lazy) {  /* the newest have no keys */
		int64_t late = queue_qkeys_oldest(q);
		if (late > 0 && (first <= 0 || late < first))
			first = late;
	}
	out->oldest_arrival = first > 0 ? first : 0;
	return 0;
}

int
queue_domains(struct queue *q, size_t top, queue_domain_fn *fn, void *arg)
{
	struct queue_doms ds;
	int rc = queue_doms_load(q, !qidx_usable(q), &ds);

	if (rc == 0) {
		if (ds.d.n > 1)
			qsort(ds.d.d, ds.d.n, sizeof(*ds.d.d), queue_dom_cmp);
		for (size_t i = 0; i < ds.d.n && (top == 0 || i < top); i++)
			if (fn(arg, ds.d.d[i].name, (uint64_t)ds.d.d[i].messages,
			    (uint64_t)ds.d.d[i].recipients) != 0)
				break;
	}
	queue_doms_free(&ds);
	return rc;
}

/* ---- listings ---- */

/* Ordered range: keys pfx + be64(id), ids ascending. */
static int
queue_range_one(void *arg, const void *key, size_t klen, const void *val,
    size_t vlen)
{
	struct queue_query_ctx *c = arg;
	struct envelope *e = NULL;
	uint64_t id;
	int r;

	(void)val;
	(void)vlen;
	if (klen != c->plen + 8 || memcmp(key, c->pfx, c->plen) != 0)
		return 1;
	id = queue_get_be64((const uint8_t *)key + c->plen);
	if ((r = queue_get(c->q, id, &e)) < 0) {
		c->err = 1;
		return 1;
	}
	if (r == 1)
		return 0;               /* removed meanwhile */
	r = queue_query_one(c, e);
	envelope_free(e);
	return r;
}

static long
queue_query_range(struct queue_query_ctx *c)
{
	uint8_t from[QKEY_MAX + 8];

	if (c->after == UINT64_MAX)
		return 0;
	memcpy(from, c->pfx, c->plen);
	queue_be64(from + c->plen, c->after + 1);
	if (store_walk_from(c->q->st, STORE_QUERY, from, c->plen + 8,
	    queue_range_one, c) < 0 || c->err)
		return -1;
	return c->n;
}

/* Scan: keys in [lo, hi) whose text or arrival passes; ids gathered. */
struct queue_scan {
	uint8_t kind;
	const char *frag;       /* text keys: contains (case-insensitive) */
	const uint8_t *hi;
	size_t hilen;
	uint64_t after;
	uint64_t *ids;
	size_t n, cap;
};

static int
queue_scan_one(void *arg, const void *key, size_t klen, const void *val,
    size_t vlen)
{
	struct queue_scan *s = arg;
	const uint8_t *k = key;
	size_t m = klen < s->hilen ? klen : s->hilen;
	uint64_t id;

	(void)val;
	(void)vlen;
	if (klen < 9 || k[0] != s->kind)
		return 1;
	if (memcmp(k, s->hi, m) > 0 || (memcmp(k, s->hi, m) == 0 &&
	    klen >= s->hilen))
		return 1;
	id = queue_get_be64(k + klen - 8);
	if (id <= s->after)
		return 0;
	if (s->frag != NULL) {
		char text[QKEY_MAX];
		if (klen < 10 || k[klen - 9] != 0)
			return 0;
		memcpy(text, k + 1, klen - 9);  /* with its NUL */
		if (strcasestr(text, s->frag) == NULL)
			return 0;
	}
	if (s->n == s->cap) {
		s->cap = s->cap ? s->cap * 2 : 256;
		s->ids = xreallocarray(s->ids, s->cap, sizeof(*s->ids));
	}
	s->ids[s->n++] = id;
	return 0;
}

static int
queue_id_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static long
queue_query_scan(struct queue_query_ctx *c, struct queue_scan *s,
    const uint8_t *lo, size_t lolen)
{
	long ret = -1;

	s->after = c->after;
	if (store_walk_from(c->q->st, STORE_QUERY, lo, lolen, queue_scan_one,
	    s) < 0)
		goto out;
	if (s->n > 1)
		qsort(s->ids, s->n, sizeof(*s->ids), queue_id_cmp);
	for (size_t i = 0; i < s->n; i++) {
		struct envelope *e = NULL;
		int r;
		if (i > 0 && s->ids[i] == s->ids[i - 1])
			continue;
		if ((r = queue_get(c->q, s->ids[i], &e)) < 0)
			goto out;
		if (r == 1)
			continue;
		r = queue_query_one(c, e);
		envelope_free(e);
		if (r != 0)
			break;
	}
	ret = c->n;
out:
	free(s->ids);
	return ret;
}

/* Walk of the envelopes from after + 1 (no index narrows the filter). */
static int
queue_primary_one(void *arg, const void *key, size_t klen, const void *val,
    size_t vlen)
{
	struct envelope *e = NULL;
	int r;

	if (klen != 8)
		return 0;
	if (envelope_decode(val, vlen, &e) != ENV_DECODE_OK)
		e = queue_placeholder(queue_get_be64(key));
	r = queue_query_one(arg, e);
	envelope_free(e);
	return r;
}

static long
queue_query_primary(struct queue_query_ctx *c)
{
	uint8_t from[8];

	if (c->after == UINT64_MAX)
		return 0;
	queue_be64(from, c->after + 1);
	if (store_walk_from(c->q->st, STORE_ENVELOPES, from, 8,
	    queue_primary_one, c) < 0)
		return -1;
	return c->n;
}

/* The share of STORE_QUERY's keys in [lo, hi) (an estimate, O(log n)). */
static double
queue_est(struct queue *q, const uint8_t *lo, size_t lolen, const uint8_t *hi,
    size_t hilen)
{
	return store_key_before(q->st, STORE_QUERY, hi, hilen) -
	    store_key_before(q->st, STORE_QUERY, lo, lolen);
}

/* A plan: the index range that drives a query. */
struct queue_plan {
	int ordered;            /* keys pfx + id (else a scan) */
	uint8_t lo[QKEY_MAX], hi[QKEY_MAX + 8];
	size_t lolen, hilen;
	const char *frag;
	double cost;
};

static void
queue_plan_consider(struct queue *q, struct queue_plan *best,
    const struct queue_plan *p)
{
	struct queue_plan c = *p;

	c.cost = queue_est(q, c.lo, c.lolen, c.hi, c.hilen);
	/* a scan reads every key of its range; an ordered range pages */
	if (!c.ordered)
		c.cost *= 4;
	if (best->lolen == 0 || c.cost < best->cost)
		*best = c;
}

/* Exact text range: pfx "k text NUL", hi "k text \1". */
static void
queue_plan_text(struct queue *q, struct queue_plan *best, char kind,
    const char *text)
{
	struct queue_plan p = { .ordered = 1 };

	p.lolen = qkey_text(p.lo, kind, text);
	memcpy(p.hi, p.lo, p.lolen);
	p.hi[p.lolen - 1] = 1;
	p.hilen = p.lolen;
	queue_plan_consider(q, best, &p);
}

static void
queue_plan_frag(struct queue *q, struct queue_plan *best, char kind,
    const char *frag)
{
	struct queue_plan p = { .ordered = 0, .frag = frag };

	p.lo[0] = (uint8_t)kind;
	p.lolen = 1;
	p.hi[0] = (uint8_t)(kind + 1);
	p.hilen = 1;
	queue_plan_consider(q, best, &p);
}

/* The cheapest index range for f; best->lolen 0: none fits. */
static void
queue_plan(struct queue *q, const struct queue_filter *f,
    struct queue_plan *best)
{
	memset(best, 0, sizeof(*best));
	if (f->rcpt != NULL) {
		if (queue_is_address(f->rcpt))
			queue_plan_text(q, best, QK_RCPT, f->rcpt);
		else
			queue_plan_frag(q, best, QK_RCPT, f->rcpt);
	}
	if (f->sender != NULL) {
		if (queue_is_address(f->sender))
			queue_plan_text(q, best, QK_SENDER, f->sender);
		else
			queue_plan_frag(q, best, QK_SENDER, f->sender);
	}
	if (f->domain != NULL)
		queue_plan_text(q, best, QK_DOMAIN, f->domain);
	if (f->held == 1) {
		struct queue_plan p = { .ordered = 1, .lolen = 1, .hilen = 1 };
		p.lo[0] = QK_HELD;
		p.hi[0] = QK_HELD + 1;
		queue_plan_consider(q, best, &p);
	}
	if (f->older_than >= 0 && f->now >= INT64_MIN + f->older_than) {
		struct queue_plan p = { .ordered = 0, .lolen = 1, .hilen = 9 };
		p.lo[0] = p.hi[0] = QK_ARRIVAL;
		/* arrival <= now - older_than */
		queue_be64(p.hi + 1, qkey_arrival(f->now - f->older_than) + 1);
		if (qkey_arrival(f->now - f->older_than) != UINT64_MAX)
			queue_plan_consider(q, best, &p);
	}
}

static long
queue_query_walk(struct queue_query_ctx *c)
{
	if (queue_walk(c->q, queue_query_one, c) == -1)
		return -1;
	return c->n;
}

long
queue_query(struct queue *q, const struct queue_filter *f, uint64_t after,
    size_t limit, uint64_t *last, queue_walk_fn *fn, void *arg)
{
	struct queue_query_ctx c = { .q = q, .f = f, .after = after,
	    .limit = limit, .fn = fn, .arg = arg };
	struct queue_plan p;
	long n;

	if (last != NULL)
		*last = 0;
	if (!qidx_usable(q))
		n = queue_query_walk(&c);
	else {
		queue_plan(q, f, &p);
		/* a scan of most of the index: the envelopes page better */
		if (p.lolen == 0 || (!p.ordered && p.frag == NULL &&
		    p.cost > 4 * 0.05))
			n = queue_query_primary(&c);
		else if (queue_qkeys_run(q, 0) < 0)    /* keys of the newest */
			n = queue_query_primary(&c);
		else if (p.ordered) {
			c.pfx = p.lo;
			c.plen = p.lolen;
			n = queue_query_range(&c);
		} else {
			struct queue_scan s = { .kind = p.lo[0], .frag = p.frag,
			    .hi = p.hi, .hilen = p.hilen };
			n = queue_query_scan(&c, &s, p.lo, p.lolen);
		}
	}
	if (n >= 0 && last != NULL)
		*last = c.last;
	return n;
}

/* ---- the schedule in next-attempt order ---- */

struct queue_due_ctx {
	struct queue_due_pos *pos;
	queue_due_fn *fn;
	void *arg;
};

static int
queue_due_one(void *arg, const void *key, size_t klen, const void *val,
    size_t vlen)
{
	struct queue_due_ctx *c = arg;
	const uint8_t *k = key;

	(void)val;
	(void)vlen;
	if (klen != 17 || k[0] != QK_NEXT)
		return 1;
	c->pos->when = (int64_t)(queue_get_be64(k + 1) ^ (1ULL << 63));
	c->pos->id = queue_get_be64(k + 9);
	c->pos->started = 1;
	return c->fn(c->arg, c->pos->id, c->pos->when);
}

int
queue_walk_due(struct queue *q, struct queue_due_pos *pos, queue_due_fn *fn,
    void *arg)
{
	struct queue_due_ctx c = { pos, fn, arg };
	uint8_t k[17];
	int rc;

	if (!qidx_usable(q))
		return 1;
	k[0] = QK_NEXT;
	if (!pos->started) {
		/* the newest get their keys first; later ones are announced */
		if (queue_qkeys_run(q, 0) < 0)
			return 1;       /* walk the envelopes instead */
		rc = store_walk_from(q->st, STORE_QUERY, k, 1, queue_due_one,
		    &c);
	} else {
		queue_be64(k + 1, qkey_arrival(pos->when));
		queue_be64(k + 9, pos->id);
		rc = store_walk_after(q->st, STORE_QUERY, k, 17,
		    queue_due_one, &c);
	}
	return rc < 0 ? -1 : 0;
}

/* ---- verify: the counters against a walk ---- */

struct qverify {
	uint64_t keys;
};

static int
qverify_keys_one(void *arg, const struct envelope *e)
{
	struct qverify *v = arg;
	struct qkeys ks;

	if (e->flags & ENV_F_NOKEYS)
		return 0;       /* committed meanwhile: keys come later */
	qkeys_env(&ks, e);
	v->keys += ks.n;
	qkeys_free(&ks);
	return 0;
}

static int
qverify_count_one(void *arg, const void *key, size_t klen, const void *val,
    size_t vlen)
{
	(void)key;
	(void)klen;
	(void)val;
	(void)vlen;
	(*(uint64_t *)arg)++;
	return 0;
}

static int
qcounts_same(const struct queue_counts *a, const struct queue_counts *b)
{
	return a->messages == b->messages && a->held == b->held &&
	    a->corrupt == b->corrupt && a->deferred == b->deferred &&
	    a->recipients == b->recipients && a->bytes == b->bytes &&
	    a->oldest_arrival == b->oldest_arrival;
}

static void
qverify_diff(uint64_t *diff, queue_verify_diff_fn *fn, void *arg,
    const char *what)
{
	(*diff)++;
	if (fn != NULL)
		fn(arg, 0, 0, 0, what);
}

/* Per-domain rows against the walk's. 1 if they agree. */
static int
qverify_domains(struct queue *q)
{
	struct queue_doms wd, cd;
	int same = 0;

	if (queue_doms_load(q, 1, &wd) == 0 && queue_doms_load(q, 0, &cd) == 0) {
		if (wd.d.n > 1)
			qsort(wd.d.d, wd.d.n, sizeof(*wd.d.d), qdom_name_cmp);
		if (cd.d.n > 1)
			qsort(cd.d.d, cd.d.n, sizeof(*cd.d.d), qdom_name_cmp);
		same = wd.d.n == cd.d.n;
		for (size_t i = 0; same && i < wd.d.n; i++)
			same = strcmp(wd.d.d[i].name, cd.d.d[i].name) == 0 &&
			    wd.d.d[i].messages == cd.d.d[i].messages &&
			    wd.d.d[i].recipients == cd.d.d[i].recipients;
		queue_doms_free(&cd);
	}
	queue_doms_free(&wd);
	return same;
}

/*
 * The walks and the counters are compared only when the counters did not
 * move while the walks ran (online, mail flows): up to 3 tries, else
 * nothing is reported.
 */
static uint64_t queue_qidx_verify_locked(struct queue *q,
    queue_verify_diff_fn *fn, void *arg);

uint64_t
queue_qidx_verify(struct queue *q, queue_verify_diff_fn *fn, void *arg)
{
	uint64_t diff;

	if (!qidx_usable(q))
		return 0;
	/* every key written so far; none written during the walks */
	(void)queue_qkeys_run(q, 0);
	pthread_mutex_lock(&q->qk_run);
	diff = queue_qidx_verify_locked(q, fn, arg);
	pthread_mutex_unlock(&q->qk_run);
	return diff;
}

static uint64_t
queue_qidx_verify_locked(struct queue *q, queue_verify_diff_fn *fn, void *arg)
{
	struct queue_counts a, b, b2;
	struct qverify v;
	uint64_t keys, diff = 0;
	char what[300];
	int doms_same;

	for (int tries = 0; tries < 3; tries++) {
		memset(&v, 0, sizeof(v));
		keys = 0;
		if (queue_counts(q, &b) < 0 || queue_counts_walk(q, &a) < 0 ||
		    queue_walk(q, qverify_keys_one, &v) < 0 ||
		    store_walk(q->st, STORE_QUERY, qverify_count_one, &keys) < 0)
			return 0;
		doms_same = qverify_domains(q);
		if (queue_counts(q, &b2) < 0)
			return 0;
		if (qcounts_same(&b, &b2))
			break;
		if (tries == 2)
			return 0;
	}
#define QV(f) do { if (a.f != b.f) { snprintf(what, sizeof(what), \
	"query index: counter " #f " is %llu, the envelopes say %llu", \
	(unsigned long long)b.f, (unsigned long long)a.f); \
	qverify_diff(&diff, fn, arg, what); } } while (0)
	QV(messages);
	QV(held);
	QV(corrupt);
	QV(deferred);
	QV(recipients);
	QV(bytes);
	QV(oldest_arrival);
#undef QV
	if (keys != v.keys) {
		snprintf(what, sizeof(what), "query index: %llu keys, the "
		    "envelopes make %llu", (unsigned long long)keys,
		    (unsigned long long)v.keys);
		qverify_diff(&diff, fn, arg, what);
	}
	if (!doms_same)
		qverify_diff(&diff, fn, arg, "query index: per-domain counters "
		    "differ from the envelopes");
	return diff;
}
