/*
 * test_query.c - the query index against a real queue directory under
 * TERN_TEST_TMPDIR: filters return exactly the right ids across commit,
 * update (a delivered recipient leaves the recipient and domain indexes),
 * hold, release and remove; paging; the counters after each operation,
 * after close and reopen, after a rebuild, after an upgrade from an index
 * without them, and read-only; and a randomized cross-check of
 * queue_query/queue_counts/queue_domains against a brute-force walk,
 * also across grouped removals; and the keys of new messages written
 * late (by a query, an update, housekeeping, a clean stop, recovery).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <fcntl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include <event2/event.h>

#include "tern/log.h"
#include "tern/queue.h"
#include "tern/tq.h"
#include "tern/util.h"
#include "queue_int.h"      /* store_flush: the child's index made durable */

struct waiter {
	struct event_base *base;
	struct tq *tq;
	size_t done, indexed;
	uint64_t *ids;          /* by request id */
	size_t cap;
};

static void
waiter_handler(struct tq_msg *m, void *arg)
{
	struct waiter *w = arg;

	if (m->type == TQ_COMMIT_DONE) {
		struct queue_commit_done *d = (struct queue_commit_done *)m;
		assert_int_equal(d->status, Q_OK);
		assert_true(d->hdr.reqid < w->cap);
		w->ids[d->hdr.reqid] = d->qid;
		w->done++;
	} else if (m->type == TQ_NEW_MESSAGE)
		w->indexed++;
	free(m);
}

static struct waiter *
waiter_new(size_t cap)
{
	struct waiter *w = calloc(1, sizeof(*w));

	w->base = event_base_new();
	w->tq = tq_new(w->base, waiter_handler, w);
	w->ids = calloc(cap, sizeof(*w->ids));
	w->cap = cap;
	return w;
}

static void
waiter_free(struct waiter *w)
{
	tq_free(w->tq);
	event_base_free(w->base);
	free(w->ids);
	free(w);
}

/* Run the loop until n messages are committed and indexed (20 s at most). */
static void
waiter_wait(struct waiter *w, size_t n)
{
	uint64_t end = now_mono_us() + 20000000u;
	struct timeval tv = { 0, 10000 };

	while ((w->done < n || w->indexed < n) && now_mono_us() < end) {
		event_base_loopexit(w->base, &tv);
		event_base_loop(w->base, 0);
	}
	assert_int_equal(w->done, n);
	assert_int_equal(w->indexed, n);
}

static char *
mktmp(const char *tag)
{
	const char *base = getenv("TERN_TEST_TMPDIR");
	char *p = malloc(4096);

	snprintf(p, 4096, "%s/qq-%s-XXXXXX", base ? base : "/tmp", tag);
	assert_non_null(mkdtemp(p));
	return p;
}

static void
rmtree(const char *p)
{
	char cmd[8400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", p);
	assert_int_equal(system(cmd), 0);
}

static struct queue *
qopen(const char *dir, int readonly, int rebuild)
{
	struct queue_opts o = { .dir = dir, .segment_size = 1 << 20,
	    .spool_memory = 256 << 10, .spool_budget = 64 << 20,
	    .readonly = readonly, .rebuild_index = rebuild };
	struct queue *q = NULL;
	char err[256] = "";

	if (queue_open(&o, &q, err, sizeof(err)) < 0)
		fail_msg("queue_open %s: %s", dir, err);
	return q;
}

/* Submit one message: sender, recipients (NULL-terminated), body size. */
static void
submit(struct queue *q, struct waiter *w, uint64_t reqid, const char *sender,
    const char *const *rcpts, size_t size)
{
	struct envelope *e = envelope_new();
	struct spool *s = spool_new(q);
	char buf[64];

	e->sender = strdup(sender);
	for (size_t i = 0; rcpts[i] != NULL; i++)
		envelope_add_rcpt(e, rcpts[i], NULL, 0);
	memset(buf, 'x', sizeof(buf));
	for (size_t off = 0; off < size; off += sizeof(buf))
		assert_int_equal(spool_write(s, buf, size - off < sizeof(buf) ?
		    size - off : sizeof(buf)), 0);
	queue_commit_submit(q, e, s, w->tq, reqid);
}

/* ---- brute force: the answers a walk gives ---- */

struct ids {
	uint64_t v[8192];
	size_t n;
};

static int
ids_add(void *arg, const struct envelope *e)
{
	struct ids *ids = arg;
	assert_true(ids->n < 8192);
	ids->v[ids->n++] = e->id;
	return 0;
}

struct brute {
	const struct queue_filter *f;
	struct ids ids;
	struct queue_counts c;
};

static int
brute_one(void *arg, const struct envelope *e)
{
	struct brute *b = arg;

	if (queue_filter_match(b->f, e))
		ids_add(&b->ids, e);
	b->c.messages++;
	b->c.held += (e->flags & (ENV_F_HOLD | ENV_F_CORRUPT)) != 0;
	b->c.corrupt += (e->flags & ENV_F_CORRUPT) != 0;
	b->c.deferred += !(e->flags & (ENV_F_HOLD | ENV_F_CORRUPT)) &&
	    e->attempts > 0;
	b->c.recipients += envelope_pending(e);
	b->c.bytes += e->size;
	if (e->arrival > 0 && (b->c.oldest_arrival == 0 ||
	    e->arrival < b->c.oldest_arrival))
		b->c.oldest_arrival = e->arrival;
	return 0;
}

/* queue_query(f), paged by page (0: one call), equals the walk's answer. */
static void
check_query(struct queue *q, const struct queue_filter *f, size_t page)
{
	struct brute *b = calloc(1, sizeof(*b));
	struct ids *got = calloc(1, sizeof(*got));
	uint64_t after = 0, last = 0;
	long n;

	b->f = f;
	assert_int_equal(queue_walk(q, brute_one, b), 0);
	for (int guard = 0; guard < 10000; guard++) {
		size_t before = got->n;
		n = queue_query(q, f, after, page, &last, ids_add, got);
		assert_true(n >= 0);
		assert_int_equal((size_t)n, got->n - before);
		if (n > 0)
			assert_true(last == got->v[got->n - 1]);
		if (page == 0 || (size_t)n < page)
			break;
		assert_int_equal((size_t)n, page);
		after = last;
	}
	if (got->n != b->ids.n)
		fail_msg("filter rcpt=%s domain=%s sender=%s held=%d older=%lld: "
		    "%zu ids, walk says %zu", f->rcpt ? f->rcpt : "-",
		    f->domain ? f->domain : "-", f->sender ? f->sender : "-",
		    f->held, (long long)f->older_than, got->n, b->ids.n);
	for (size_t i = 0; i < got->n; i++)
		assert_true(got->v[i] == b->ids.v[i]);
	free(got);
	free(b);
}

/* queue_counts equals the walk's counts. */
static void
check_counts(struct queue *q)
{
	struct queue_filter f;
	struct brute *b = calloc(1, sizeof(*b));
	struct queue_counts c;

	queue_filter_init(&f);
	b->f = &f;
	assert_int_equal(queue_walk(q, brute_one, b), 0);
	assert_int_equal(queue_counts(q, &c), 0);
	assert_true(c.messages == b->c.messages);
	assert_true(c.held == b->c.held);
	assert_true(c.corrupt == b->c.corrupt);
	assert_true(c.deferred == b->c.deferred);
	assert_true(c.recipients == b->c.recipients);
	assert_true(c.bytes == b->c.bytes);
	assert_true(c.oldest_arrival == b->c.oldest_arrival);
	free(b);
}

/* Domains by walk: names lower case, message counted once per domain. */
struct dom {
	char name[128];
	uint64_t messages, recipients;
};

struct doms {
	struct dom d[256];
	size_t n;
};

static struct dom *
doms_find(struct doms *ds, const char *name)
{
	char low[128];
	size_t i;

	snprintf(low, sizeof(low), "%s", name);
	for (char *p = low; *p; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	for (i = 0; i < ds->n; i++)
		if (strcmp(ds->d[i].name, low) == 0)
			return &ds->d[i];
	assert_true(ds->n < 256);
	snprintf(ds->d[ds->n].name, sizeof(ds->d[0].name), "%s", low);
	return &ds->d[ds->n++];
}

static int
doms_walk(void *arg, const struct envelope *e)
{
	struct doms *ds = arg;
	struct doms seen = { .n = 0 };

	for (size_t i = 0; i < e->nrcpt; i++) {
		if (e->rcpts[i].state != RCPT_PENDING)
			continue;
		struct dom *d = doms_find(ds, addr_domain(e->rcpts[i].addr));
		struct dom *s = doms_find(&seen, addr_domain(e->rcpts[i].addr));
		d->recipients++;
		if (s->messages++ == 0)
			d->messages++;
	}
	return 0;
}

static int
doms_got(void *arg, const char *name, uint64_t messages, uint64_t recipients)
{
	struct doms *ds = arg;

	assert_true(ds->n < 256);
	snprintf(ds->d[ds->n].name, sizeof(ds->d[0].name), "%s", name);
	ds->d[ds->n].messages = messages;
	ds->d[ds->n++].recipients = recipients;
	return 0;
}

static void
check_domains(struct queue *q)
{
	struct doms *want = calloc(1, sizeof(*want));
	struct doms *got = calloc(1, sizeof(*got));
	struct doms *top = calloc(1, sizeof(*top));

	assert_int_equal(queue_walk(q, doms_walk, want), 0);
	assert_int_equal(queue_domains(q, 0, doms_got, got), 0);
	assert_int_equal(got->n, want->n);
	for (size_t i = 0; i < got->n; i++) {
		struct dom *w = doms_find(want, got->d[i].name);
		assert_true(w->messages == got->d[i].messages);
		assert_true(w->recipients == got->d[i].recipients);
		/* most pending recipients first */
		if (i > 0)
			assert_true(got->d[i - 1].recipients >= got->d[i].recipients);
	}
	assert_int_equal(want->n, got->n);      /* no name was added by find */
	assert_int_equal(queue_domains(q, 2, doms_got, top), 0);
	assert_int_equal(top->n, got->n < 2 ? got->n : 2);
	free(want);
	free(got);
	free(top);
}

static void
check_verify(struct queue *q)
{
	struct queue_verify v;

	assert_int_equal(queue_verify(q, &v, NULL, NULL), 0);
	assert_true(v.differences == 0);
}

/* ---- the operations, one by one ---- */

static size_t
query_ids(struct queue *q, const struct queue_filter *f, uint64_t *out,
    size_t max)
{
	struct ids *got = calloc(1, sizeof(*got));
	size_t n;

	assert_true(queue_query(q, f, 0, 0, NULL, ids_add, got) >= 0);
	n = got->n;
	assert_true(n <= max);
	memcpy(out, got->v, n * sizeof(*out));
	free(got);
	return n;
}

static void
expect_ids(struct queue *q, const struct queue_filter *f, size_t n, ...)
{
	uint64_t got[16];
	size_t k = query_ids(q, f, got, 16);
	va_list ap;

	assert_int_equal(k, n);
	va_start(ap, n);
	for (size_t i = 0; i < n; i++)
		assert_true(got[i] == va_arg(ap, uint64_t));
	va_end(ap);
	check_query(q, f, 0);
	check_query(q, f, 1);
}

static void
check_all(struct queue *q)
{
	check_counts(q);
	check_domains(q);
	check_verify(q);
}

static void
test_query_ops(void **state)
{
	char *dir = mktmp("ops");
	struct queue *q = qopen(dir, 0, 0);
	struct waiter *w = waiter_new(8);
	static const char *const r0[] = { "Ann@Example.COM", "bob@other.net", NULL };
	static const char *const r1[] = { "carl@example.com", NULL };
	static const char *const r2[] = { "dora@third.org", "ann@example.com", NULL };
	struct queue_filter f;
	struct queue_counts c;
	struct envelope *e = NULL;
	uint64_t a, b, d;

	queue_set_notify(q, w->tq);
	submit(q, w, 0, "Alice@Sender.org", r0, 100);
	waiter_wait(w, 1);
	submit(q, w, 1, "bulk@sender.org", r1, 200);
	waiter_wait(w, 2);
	submit(q, w, 2, "", r2, 300);
	waiter_wait(w, 3);
	a = w->ids[0];
	b = w->ids[1];
	d = w->ids[2];
	assert_true(a < b && b < d);
	check_all(q);
	assert_int_equal(queue_counts(q, &c), 0);
	assert_true(c.messages == 3 && c.recipients == 5 && c.bytes == 600);

	/* exact address (any case), domain, sender, fragments */
	queue_filter_init(&f);
	f.rcpt = "ANN@example.com";
	expect_ids(q, &f, 2, a, d);
	queue_filter_init(&f);
	f.domain = "EXAMPLE.com";
	expect_ids(q, &f, 3, a, b, d);
	queue_filter_init(&f);
	f.sender = "alice@sender.org";
	expect_ids(q, &f, 1, a);
	queue_filter_init(&f);
	f.sender = "sender.org";
	expect_ids(q, &f, 2, a, b);
	queue_filter_init(&f);
	f.rcpt = "ann@";
	expect_ids(q, &f, 2, a, d);
	queue_filter_init(&f);
	f.rcpt = "nobody@example.com";
	expect_ids(q, &f, 0);
	queue_filter_init(&f);
	f.domain = "example.com";
	f.sender = "bulk@sender.org";
	expect_ids(q, &f, 1, b);

	/* paging: after/limit */
	queue_filter_init(&f);
	f.domain = "example.com";
	{
		struct ids *got = calloc(1, sizeof(*got));
		uint64_t last = 0;
		assert_int_equal(queue_query(q, &f, a, 1, &last, ids_add, got), 1);
		assert_true(got->v[0] == b && last == b);
		assert_int_equal(queue_query(q, &f, d, 1, &last, ids_add, got), 0);
		assert_true(last == 0);
		free(got);
	}

	/* a delivered recipient leaves the recipient and domain indexes */
	assert_int_equal(queue_get(q, a, &e), 0);
	e->rcpts[0].state = RCPT_SENT;
	e->attempts = 1;
	assert_int_equal(queue_update(q, e), 0);
	envelope_free(e);
	queue_filter_init(&f);
	f.rcpt = "ann@example.com";
	expect_ids(q, &f, 1, d);
	queue_filter_init(&f);
	f.domain = "example.com";
	expect_ids(q, &f, 2, b, d);
	queue_filter_init(&f);
	f.domain = "other.net";
	expect_ids(q, &f, 1, a);
	check_all(q);
	assert_int_equal(queue_counts(q, &c), 0);
	assert_true(c.recipients == 4 && c.deferred == 1);

	/* hold and release */
	assert_int_equal(queue_get(q, b, &e), 0);
	e->flags |= ENV_F_HOLD;
	assert_int_equal(queue_update(q, e), 0);
	queue_filter_init(&f);
	f.held = 1;
	expect_ids(q, &f, 1, b);
	f.held = 0;
	expect_ids(q, &f, 2, a, d);
	check_all(q);
	e->flags &= ~ENV_F_HOLD;
	assert_int_equal(queue_update(q, e), 0);
	envelope_free(e);
	f.held = 1;
	expect_ids(q, &f, 0);
	check_all(q);

	/* older than: arrival moved back by an update */
	assert_int_equal(queue_get(q, d, &e), 0);
	e->arrival -= 7200;
	assert_int_equal(queue_update(q, e), 0);
	envelope_free(e);
	queue_filter_init(&f);
	f.now = time(NULL);
	f.older_than = 3600;
	expect_ids(q, &f, 1, d);
	check_all(q);

	/* remove */
	assert_int_equal(queue_remove(q, a), 0);
	queue_filter_init(&f);
	f.domain = "other.net";
	expect_ids(q, &f, 0);
	check_all(q);
	assert_int_equal(queue_counts(q, &c), 0);
	assert_true(c.messages == 2 && c.recipients == 3 && c.bytes == 500);

	/* close, reopen: the same answers */
	queue_close(q);
	q = qopen(dir, 0, 0);
	check_all(q);
	queue_filter_init(&f);
	f.rcpt = "ann@example.com";
	expect_ids(q, &f, 1, d);
	queue_close(q);

	/* read-only */
	q = qopen(dir, 1, 0);
	check_counts(q);
	check_domains(q);
	expect_ids(q, &f, 1, d);
	queue_close(q);

	/* rebuilt from the segments (which hold the envelopes as queued:
	 * states come back from the records, so compare with the walk) */
	q = qopen(dir, 0, 1);
	check_all(q);
	check_query(q, &f, 0);
	queue_close(q);

	/* an index made before the query index: built at the first open */
	{
		char p[4200];
		snprintf(p, sizeof(p), "%s/db/query.db", dir);
		assert_int_equal(unlink(p), 0);
		snprintf(p, sizeof(p), "%s/db/counts.db", dir);
		assert_int_equal(unlink(p), 0);
	}
	q = qopen(dir, 1, 0);           /* read-only: walks, same answers */
	check_counts(q);
	check_domains(q);
	check_query(q, &f, 0);
	queue_close(q);
	q = qopen(dir, 0, 0);
	check_all(q);
	check_query(q, &f, 1);
	queue_close(q);

	waiter_free(w);
	rmtree(dir);
	free(dir);
}

/* ---- randomized cross-check ---- */

#define RAND_N 2000

static const char *const rdomains[] = { "alpha.example", "Beta.example",
	"gamma.test", "delta.test", "eps.invalid", "zeta.example" };
static const char *const rlocals[] = { "ann", "Bob", "carl", "dora", "eve",
	"fay", "gus" };
static const char *const rsenders[] = { "news@list.example", "Bounce@x.test",
	"", "ops@alpha.example", "a@b.c" };

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint32_t
rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng % n);
}

static void
rand_filter(struct queue_filter *f, char *buf, size_t len)
{
	queue_filter_init(f);
	switch (rnd(7)) {
	case 0:
		snprintf(buf, len, "%s@%s", rlocals[rnd(7)], rdomains[rnd(6)]);
		f->rcpt = buf;
		break;
	case 1:
		f->domain = rdomains[rnd(6)];
		break;
	case 2:
		f->sender = rsenders[rnd(5)];
		if (f->sender[0] == '\0')
			f->sender = "x.test";
		break;
	case 3:
		snprintf(buf, len, "%s@", rlocals[rnd(7)]);
		f->rcpt = buf;
		break;
	case 4:
		f->held = (int)rnd(2);
		break;
	case 5:
		f->now = time(NULL);
		f->older_than = (int64_t)rnd(5) * 3600;
		break;
	default:
		break;
	}
	if (rnd(3) == 0)
		f->held = (int)rnd(2);
	if (rnd(4) == 0)
		f->domain = rdomains[rnd(6)];
}

static void
rand_mutate(struct queue *q, uint64_t id)
{
	struct envelope *e = NULL;

	assert_int_equal(queue_get(q, id, &e), 0);
	switch (rnd(4)) {
	case 0:
		for (size_t i = 0; i < e->nrcpt; i++)
			if (rnd(2) == 0)
				e->rcpts[i].state = (uint8_t)(1 + rnd(3));
		break;
	case 1:
		e->flags ^= ENV_F_HOLD;
		break;
	case 2:
		e->attempts++;
		e->arrival -= (int64_t)rnd(5) * 3600;
		break;
	default:
		envelope_free(e);
		assert_int_equal(queue_remove(q, id), 0);
		return;
	}
	assert_int_equal(queue_update(q, e), 0);
	envelope_free(e);
}

static void
rand_check(struct queue *q)
{
	char buf[128];
	struct queue_filter f;

	for (int i = 0; i < 40; i++) {
		rand_filter(&f, buf, sizeof(buf));
		check_query(q, &f, i % 3 == 0 ? 0 : 1 + rnd(300));
	}
	check_counts(q);
	check_domains(q);
}

static void
test_query_random(void **state)
{
	char *dir = mktmp("rand");
	struct queue *q = qopen(dir, 0, 0);
	struct waiter *w = waiter_new(RAND_N);

	queue_set_notify(q, w->tq);
	for (size_t i = 0; i < RAND_N; i++) {
		const char *rc[5] = { NULL };
		char addrs[4][96];
		size_t n = 1 + rnd(4);
		for (size_t k = 0; k < n; k++) {
			snprintf(addrs[k], sizeof(addrs[k]), "%s@%s",
			    rlocals[rnd(7)], rdomains[rnd(6)]);
			rc[k] = addrs[k];
		}
		submit(q, w, i, rsenders[rnd(5)], rc, 1 + rnd(500));
		if (i % 400 == 399)
			waiter_wait(w, i + 1);
	}
	waiter_wait(w, RAND_N);
	rand_check(q);
	for (size_t i = 0; i < RAND_N; i++)
		if (rnd(3) == 0)
			rand_mutate(q, w->ids[i]);
	rand_check(q);
	check_verify(q);
	queue_close(q);
	q = qopen(dir, 0, 0);
	rand_check(q);
	queue_close(q);
	q = qopen(dir, 0, 1);
	rand_check(q);
	queue_close(q);
	waiter_free(w);
	rmtree(dir);
	free(dir);
}

/*
 * Grouped removals (queue_remove_many: a batch's envelopes, their query
 * keys and counters in one transaction): batches of neighbouring ids, of
 * ids far apart, with ids already gone, never queued or given twice, and
 * messages with long addresses leave exactly the keys and counts of what
 * stays, and a rebuild of the index agrees.
 */
static void
test_query_remove_many(void **state)
{
	enum { N = 600 };
	char *dir = mktmp("rmmany");
	struct queue *q = qopen(dir, 0, 0);
	struct waiter *w = waiter_new(N);
	uint64_t ids[QUEUE_REMOVE_BATCH];
	int gone[QUEUE_REMOVE_BATCH], live[N];
	size_t left = N;
	(void)state;

	queue_set_notify(q, w->tq);
	for (size_t i = 0; i < N; i++) {
		const char *rc[4] = { NULL };
		char addrs[3][300];
		size_t n = 1 + rnd(3);
		for (size_t k = 0; k < n; k++) {
			if (rnd(5) == 0)        /* a long local part */
				snprintf(addrs[k], sizeof(addrs[k]),
				    "%s-%0*u@%s", rlocals[rnd(7)],
				    (int)(20 + rnd(200)), (unsigned)i,
				    rdomains[rnd(6)]);
			else
				snprintf(addrs[k], sizeof(addrs[k]), "%s%zu@%s",
				    rlocals[rnd(7)], i % 50, rdomains[rnd(6)]);
			rc[k] = addrs[k];
		}
		submit(q, w, i, rsenders[rnd(5)], rc, 1 + rnd(300));
		live[i] = 1;
		if (i % 200 == 199)
			waiter_wait(w, i + 1);
	}
	waiter_wait(w, N);
	for (int round = 0; round < 12; round++) {
		size_t n = 1 + rnd(QUEUE_REMOVE_BATCH);
		size_t start = rnd(N);
		for (size_t k = 0; k < n; k++) {
			/* neighbours, far ones, an unknown id, a repeat */
			size_t j = round % 2 == 0 ? (start + k) % N : rnd(N);
			ids[k] = w->ids[j];
			if (rnd(16) == 0)
				ids[k] = w->ids[N - 1] + 1000 + rnd(100);
			else if (k > 0 && rnd(16) == 0)
				ids[k] = ids[rnd((uint32_t)k)];
		}
		assert_int_equal(queue_remove_many(q, ids, n, gone), 0);
		for (size_t k = 0; k < n; k++) {
			int was = 0, first = 1;
			for (size_t j = 0; j < N; j++)
				if (w->ids[j] == ids[k])
					was = live[j];
			for (size_t e = 0; e < k; e++)
				if (ids[e] == ids[k])
					first = 0;
			/* gone: unknown, removed before, or named before */
			assert_int_equal(gone[k], !(was && first));
		}
		for (size_t k = 0; k < n; k++)
			for (size_t j = 0; j < N; j++)
				if (w->ids[j] == ids[k] && live[j]) {
					live[j] = 0;
					left--;
				}
		rand_check(q);
		check_verify(q);
	}
	assert_true(left < N);
	for (size_t j = 0; j < N; j++) {
		struct envelope *e = NULL;
		assert_int_equal(queue_get(q, w->ids[j], &e), live[j] ? 0 : 1);
		envelope_free(e);
	}
	queue_close(q);
	q = qopen(dir, 0, 1);           /* a rebuild agrees with what is left */
	rand_check(q);
	check_verify(q);
	queue_close(q);
	waiter_free(w);
	rmtree(dir);
	free(dir);
}

/* ---- query keys written late (queue/store/qkeys.c) ---- */

static int
nokeys_one(void *arg, const struct envelope *e)
{
	*(size_t *)arg += (e->flags & ENV_F_NOKEYS) != 0;
	return 0;
}

/* Envelopes stored still without their query keys. */
static size_t
count_nokeys(struct queue *q)
{
	size_t n = 0;

	assert_int_equal(queue_walk(q, nokeys_one, &n), 0);
	return n;
}

static int
due_one(void *arg, uint64_t id, int64_t when)
{
	(void)id;
	(void)when;
	(*(size_t *)arg)++;
	return 0;
}

/* What a scheduler loading from the index finds (next-attempt keys). */
static size_t
count_due(struct queue *q)
{
	struct queue_due_pos pos;
	size_t n = 0;

	memset(&pos, 0, sizeof(pos));
	assert_int_equal(queue_walk_due(q, &pos, due_one, &n), 0);
	return n;
}

/*
 * In a child: commit n messages, remove the first nrm of them, let the
 * housekeeping flush the index log (but not reach the keys' delay), then
 * end like kill -9. The ids go to the parent through a pipe.
 */
static void
late_child(const char *dir, size_t n, size_t nrm, uint64_t *ids)
{
	int fds[2], status;
	pid_t pid;

	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct queue *q = qopen(dir, 0, 0);
		struct waiter *w = waiter_new(n);
		static const char *const rr[] = { "late@keys.example", NULL };
		int gone[QUEUE_REMOVE_BATCH];
		close(fds[0]);
		queue_set_notify(q, w->tq);
		for (size_t i = 0; i < n; i++)
			submit(q, w, i, "s@late.example", rr, 100 + i);
		waiter_wait(w, n);
		if (count_nokeys(q) != n)       /* stored without keys */
			_exit(3);
		if (nrm > 0 && queue_remove_many(q, w->ids, nrm, gone) != 0)
			_exit(4);
		usleep(300 * 1000);     /* a log flush (100 ms), no keying (1 s) */
		/* and one for sure: a loaded machine (ASan) can miss the
		 * periodic one, and then the damaged first record ends the
		 * recovery scan before the last, unflushed entry */
		if (store_flush(q->st) != 0)
			_exit(7);
		if (count_nokeys(q) != n - nrm)
			_exit(5);
		if (write(fds[1], w->ids, n * sizeof(uint64_t)) !=
		    (ssize_t)(n * sizeof(uint64_t)))
			_exit(6);
		_exit(0);       /* like kill -9: no close, no keys, no flush */
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], ids, n * sizeof(uint64_t)),
	    (ssize_t)(n * sizeof(uint64_t)));
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/*
 * A new message is stored without its query keys; queries, counts and
 * verify still see it (they write the keys first); an update or the
 * housekeeping after the delay writes them; a clean stop leaves none
 * unwritten; after a crash, recovery writes them (also when a record
 * before the indexed position is damaged), and removed messages stay
 * removed.
 */
static void
test_query_keys_late(void **state)
{
	enum { N = 12, NRM = 4 };
	char *dir = mktmp("late");
	struct queue *q = qopen(dir, 0, 0);
	struct waiter *w = waiter_new(N);
	static const char *const rr[] = { "late@keys.example", NULL };
	struct queue_filter f;
	struct envelope *e = NULL;
	uint64_t ids[N];
	char path[4200];
	(void)state;

	queue_set_notify(q, w->tq);
	for (size_t i = 0; i < 3; i++)
		submit(q, w, i, "s@late.example", rr, 100);
	waiter_wait(w, 3);
	assert_int_equal(count_nokeys(q), 3);
	/* an update writes the keys of that one */
	assert_int_equal(queue_get(q, w->ids[1], &e), 0);
	e->next_attempt = e->arrival + 60;
	assert_int_equal(queue_update(q, e), 0);
	envelope_free(e);
	assert_int_equal(count_nokeys(q), 2);
	/* counts and domains need no keys; a listing by key writes them */
	check_counts(q);
	check_domains(q);
	assert_int_equal(count_nokeys(q), 2);
	queue_filter_init(&f);
	f.rcpt = "late@keys.example";
	expect_ids(q, &f, 3, w->ids[0], w->ids[1], w->ids[2]);
	assert_int_equal(count_nokeys(q), 0);
	check_verify(q);

	/* housekeeping writes them once they are a second old */
	submit(q, w, 3, "s@late.example", rr, 100);
	waiter_wait(w, 4);
	assert_int_equal(count_nokeys(q), 1);
	for (int i = 0; i < 300 && count_nokeys(q) > 0; i++)
		usleep(10 * 1000);
	assert_int_equal(count_nokeys(q), 0);
	check_verify(q);

	/* a clean stop writes the rest */
	submit(q, w, 4, "s@late.example", rr, 100);
	waiter_wait(w, 5);
	assert_int_equal(count_nokeys(q), 1);
	queue_close(q);
	q = qopen(dir, 1, 0);
	assert_int_equal(count_nokeys(q), 0);
	queue_close(q);

	/* most still queued when their keys were due (nothing delivers):
	 * the next ones get their keys at commit */
	q = qopen(dir, 0, 0);
	{
		struct waiter *w2 = waiter_new(101);
		queue_set_notify(q, w2->tq);
		for (size_t i = 0; i < 100; i++)
			submit(q, w2, i, "s@late.example", rr, 100);
		waiter_wait(w2, 100);
		assert_true(count_nokeys(q) > 0);
		for (int i = 0; i < 300 && count_nokeys(q) > 0; i++)
			usleep(10 * 1000);
		assert_int_equal(count_nokeys(q), 0);
		usleep(200 * 1000);     /* the run that keyed the last ones ends */
		submit(q, w2, 100, "s@late.example", rr, 100);
		waiter_wait(w2, 101);
		assert_int_equal(count_nokeys(q), 0);
		check_verify(q);
		waiter_free(w2);
	}
	queue_close(q);
	waiter_free(w);
	rmtree(dir);

	/* kill -9 before the delay: recovery writes them */
	late_child(dir, N, NRM, ids);
	q = qopen(dir, 0, 0);
	assert_int_equal(count_nokeys(q), 0);   /* before any query */
	for (size_t i = 0; i < N; i++) {
		assert_int_equal(queue_get(q, ids[i], &e), i < NRM ? 1 : 0);
		envelope_free(e);
		e = NULL;
	}
	assert_int_equal(count_due(q), N - NRM);
	check_all(q);
	queue_close(q);
	rmtree(dir);

	/* the same with the first record (before the indexed position)
	 * damaged: the keys are found by a walk of the envelopes */
	late_child(dir, N, 0, ids);
	/* a new queue: its first segment, records from offset 0 */
	snprintf(path, sizeof(path), "%s/segments/%08x.seg", dir, 1u);
	{
		int fd = open(path, O_RDWR);
		uint8_t bad = 0x5a;
		assert_true(fd >= 0);
		assert_int_equal(pwrite(fd, &bad, 1, 0), 1);    /* its magic */
		close(fd);
	}
	q = qopen(dir, 0, 0);
	assert_int_equal(count_nokeys(q), 0);
	assert_int_equal(count_due(q), N);
	queue_close(q);
	rmtree(dir);
	free(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_query_ops),
		cmocka_unit_test(test_query_random),
		cmocka_unit_test(test_query_remove_many),
		cmocka_unit_test(test_query_keys_late),
	};

	log_init("test_query", 0, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
