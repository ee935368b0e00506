/*
 * test_sched.c - the scheduler core (queue/sched/sched.c) against a real queue in
 * TERN_TEST_TMPDIR: messages are committed through the real committer, the
 * scheduler runs on the test's own event_base with the test's clock, its
 * jobs are collected by the test (standing in for the workers' inbox), and
 * results are built by hand and applied with sched_apply_result(). States
 * are checked in the envelope store; DSNs are found with queue_walk and
 * their bodies read back. Also: the retry table with jitter bounds, and the
 * heap.
 */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "tern/conf.h"
#include "tern/deliver.h"
#include "tern/log.h"
#include "tern/queue.h"
#include "tern/smtp.h"
#include "tern/tq.h"
#include "tern/util.h"
#include "sched_int.h"

/* ---- retry delay ---- */

static void
test_retry_delay(void **state)
{
	static const unsigned steps[] = { 300, 600, 1800, 3600 };
	static const struct { unsigned attempt; double rnd; unsigned want; }
	    cases[] = {
		{ 0, 0.5, 300 },        /* 0 is treated as the first retry */
		{ 1, 0.5, 300 },
		{ 2, 0.5, 600 },
		{ 3, 0.5, 1800 },
		{ 4, 0.5, 3600 },
		{ 5, 0.5, 3600 },       /* the last step repeats */
		{ 1000000, 0.5, 3600 },
		{ 1, 0.0, 270 },        /* -10% */
		{ 1, 0.75, 315 },
		{ 4, 0.0, 3240 },
		{ 4, 0.25, 3420 },
	};
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		unsigned got = sched_retry_delay(steps, 4, cases[i].attempt,
		    cases[i].rnd);
		if (got != cases[i].want)
			fail_msg("case %zu: attempt %u rnd %f: got %u want %u",
			    i, cases[i].attempt, cases[i].rnd, got, cases[i].want);
	}
	/* jitter bounds over the whole [0, 1) range, and it does vary */
	unsigned lo = UINT32_MAX, hi = 0;
	for (int i = 0; i < 10000; i++) {
		double r = (double)i / 10000.0;
		unsigned d = sched_retry_delay(steps, 4, 2, r);
		assert_true(d >= 540 && d <= 660);
		lo = d < lo ? d : lo;
		hi = d > hi ? d : hi;
	}
	assert_true(lo <= 541 && hi >= 659);
	/* out-of-range randomness is not trusted */
	assert_int_equal(sched_retry_delay(steps, 4, 1, 7.0), 300);
	assert_int_equal(sched_retry_delay(steps, 4, 1, -1.0), 300);
	/* no schedule: a sane default */
	assert_int_equal(sched_retry_delay(NULL, 0, 3, 0.5), 300);
	/* tiny steps never round to zero */
	static const unsigned one[] = { 1 };
	assert_true(sched_retry_delay(one, 1, 1, 0.0) >= 1);
}

/* the rest of the policy (retry.c): next attempt, expiry, warning */
static double
retry_rnd_fixed(void *arg)
{
	return *(const double *)arg;
}

static void
test_retry_policy(void **state)
{
	static unsigned steps[] = { 300, 600 };
	struct conf c;
	struct envelope env;
	double half = 0.5, zero = 0.0;
	(void)state;

	memset(&c, 0, sizeof(c));
	memset(&env, 0, sizeof(env));
	c.retry = steps;
	c.nretry = 2;
	/* no down destination: now + the step */
	assert_int_equal(sched_retry_next(&c, 2, 0, 1000, retry_rnd_fixed,
	    &half), 1600);
	/* a down destination until 5000 decides: from 5000, spread over a
	 * tenth of the wait (400 s + 1) */
	assert_int_equal(sched_retry_next(&c, 1, 5000, 1000, retry_rnd_fixed,
	    &zero), 5000);
	assert_int_equal(sched_retry_next(&c, 1, 5000, 1000, retry_rnd_fixed,
	    &half), 5000 + 200);
	/* a down mark that ends before the step does not matter */
	assert_int_equal(sched_retry_next(&c, 1, 1100, 1000, retry_rnd_fixed,
	    &half), 1300);

	env.arrival = 1000;
	c.max_queue_lifetime = 3600;
	c.delay_warning = 600;
	assert_false(sched_retry_expired(&c, &env, 1, 1000 + 3599));
	assert_true(sched_retry_expired(&c, &env, 1, 1000 + 3600));
	assert_false(sched_retry_expired(&c, &env, 0, 1000 + 3600));
	assert_false(sched_retry_warn_due(&c, &env, 1, 1000 + 599));
	assert_true(sched_retry_warn_due(&c, &env, 1, 1000 + 600));
	assert_false(sched_retry_warn_due(&c, &env, 0, 1000 + 600));
	env.flags |= ENV_F_WARNED;      /* once only */
	assert_false(sched_retry_warn_due(&c, &env, 1, 1000 + 600));
	assert_int_equal(sched_retry_until(&c, &env), 1000 + 3600);
	c.max_queue_lifetime = 0;       /* no limit: never expires */
	assert_false(sched_retry_expired(&c, &env, 1, INT64_MAX / 2));
	assert_int_equal(sched_retry_until(&c, &env), 0);
	c.delay_warning = 0;
	env.flags = 0;
	assert_false(sched_retry_warn_due(&c, &env, 1, INT64_MAX / 2));
}

/* ---- heap ---- */

struct hitem {
	size_t pos;
	int64_t when;
	uint64_t qid;
	int removed;
};

static void
test_heap(void **state)
{
	enum { N = 2000 };
	struct sched_heap h = { 0 };
	struct hitem *it = calloc(N, sizeof(*it));
	struct sched_heap_ent e;
	int64_t pw = INT64_MIN;
	uint64_t pq = 0;
	size_t popped = 0;
	(void)state;

	srand(7);
	for (size_t i = 0; i < N; i++) {
		it[i].when = rand() % 100;      /* many ties: qid breaks them */
		it[i].qid = (uint64_t)rand() << 16 | i;
		sched_heap_push(&h, it[i].when, it[i].qid, &it[i], &it[i].pos);
	}
	for (size_t i = 0; i < h.n; i++)
		assert_int_equal(((struct hitem *)h.a[i].item)->pos, i);
	for (size_t i = 0; i < N; i += 3) {
		sched_heap_remove(&h, it[i].pos);
		assert_true(it[i].pos == SCHED_NOT_IN_HEAP);
		it[i].removed = 1;
	}
	while (sched_heap_pop(&h, &e)) {
		struct hitem *x = e.item;
		assert_false(x->removed);
		assert_true(e.when == x->when && e.qid == x->qid);
		assert_true(e.when > pw || (e.when == pw && e.qid > pq));
		pw = e.when;
		pq = e.qid;
		popped++;
	}
	assert_int_equal(popped, N - (N + 2) / 3);
	sched_heap_free(&h);
	free(it);
}

/* ---- destinations: the concurrency window, the cohort, the down time ---- */

static void
test_window_slow_start(void **state)
{
	struct sched_window w;
	unsigned seen[12] = { 0 };
	(void)state;

	sched_window_init(&w, 2, 6);
	assert_int_equal(w.limit, 2);
	/* +1 after `limit` successes in a row: 2 -> 3 after 2, -> 4 after 3 */
	for (int i = 0; i < 40; i++) {
		enum sched_fb fb = sched_window_feedback(&w, DLV_PEER_OK, 6, 5);
		assert_true(fb == SCHED_FB_NONE || fb == SCHED_FB_UP);
		if (fb == SCHED_FB_UP && w.limit < 12)
			seen[w.limit] = (unsigned)i + 1;
	}
	assert_int_equal(seen[3], 2);
	assert_int_equal(seen[4], 5);
	assert_int_equal(seen[5], 9);
	assert_int_equal(seen[6], 14);
	assert_int_equal(w.limit, 6);               /* capped at the max */
	/* a failure costs one; NONE (DNS, 5xx refusal) changes nothing */
	assert_int_equal(sched_window_feedback(&w, DLV_PEER_FAIL, 6, 5),
	    SCHED_FB_DOWNSIZE);
	assert_int_equal(w.limit, 5);
	assert_int_equal(sched_window_feedback(&w, DLV_PEER_NONE, 6, 5),
	    SCHED_FB_NONE);
	assert_int_equal(w.limit, 5);
	assert_int_equal(w.nfail, 1);
	/* a success in between resets the cohort */
	sched_window_feedback(&w, DLV_PEER_OK, 6, 5);
	assert_int_equal(w.nfail, 0);
	/* the initial value never exceeds the max; a lower max (dest-limit,
	 * reload) shrinks the window at the next success */
	sched_window_init(&w, 5, 3);
	assert_int_equal(w.limit, 3);
	assert_int_equal(sched_window_feedback(&w, DLV_PEER_OK, 2, 5),
	    SCHED_FB_DOWNSIZE);
	assert_int_equal(w.limit, 2);
}

static void
test_window_cohort(void **state)
{
	struct sched_window w;
	(void)state;

	sched_window_init(&w, 3, 10);
	/* failures bring the window to 1, never 0; the cohort (4) kills */
	assert_int_equal(sched_window_feedback(&w, DLV_PEER_FAIL, 10, 4),
	    SCHED_FB_DOWNSIZE);
	assert_int_equal(sched_window_feedback(&w, DLV_PEER_FAIL, 10, 4),
	    SCHED_FB_DOWNSIZE);
	assert_int_equal(w.limit, 1);
	assert_int_equal(sched_window_feedback(&w, DLV_PEER_FAIL, 10, 4),
	    SCHED_FB_NONE);
	assert_int_equal(w.limit, 1);
	assert_int_equal(sched_window_feedback(&w, DLV_PEER_FAIL, 10, 4),
	    SCHED_FB_DEAD);
	/* failures with a success between never reach the cohort */
	sched_window_init(&w, 3, 10);
	for (int i = 0; i < 20; i++) {
		enum sched_fb fb = sched_window_feedback(&w,
		    i % 3 == 2 ? DLV_PEER_OK : DLV_PEER_FAIL, 10, 4);
		assert_true(fb != SCHED_FB_DEAD);
	}
	/* down time: doubled per failed probe, at most 8 x */
	assert_int_equal(sched_down_period(300, 1), 300);
	assert_int_equal(sched_down_period(300, 2), 600);
	assert_int_equal(sched_down_period(300, 3), 1200);
	assert_int_equal(sched_down_period(300, 4), 2400);
	assert_int_equal(sched_down_period(300, 50), 2400);
	assert_int_equal(sched_down_period(0, 1), 1);
}

/* ---- the core against a real queue ---- */

#define SCHED_TEST_RCPT 8

struct fx {
	char dir[512];
	struct queue *q;
	struct conf *conf;
	struct event_base *base;
	struct event *keep;
	struct tq *replies;             /* the test's own commits */
	struct sched *s;
	struct dlv_job *jobs[64];       /* what the scheduler handed out */
	size_t njobs;
	int ndone;
	uint64_t lastqid;
	enum q_status lastst;
	struct tq *notify;              /* committer -> here -> scheduler */
	uint64_t noted[64];             /* last qids the scheduler received */
	size_t nnoted;
	uint64_t want_qid;              /* fx_settle_qid() waits for it */
};

static int64_t fx_now;

static int64_t
fx_clock(void)
{
	return fx_now;
}

static void
fx_submit(void *arg, struct dlv_job *j)
{
	struct fx *f = arg;
	assert_int_equal(j->hdr.type, TQ_DELIVERY_JOB);
	assert_true(f->njobs < 64);
	f->jobs[f->njobs++] = j;
}

static void
fx_reply(struct tq_msg *m, void *arg)
{
	struct fx *f = arg;
	struct queue_commit_done *d = (struct queue_commit_done *)m;

	assert_int_equal(m->type, TQ_COMMIT_DONE);
	f->ndone++;
	f->lastqid = d->qid;
	f->lastst = d->status;
	free(m);
}

struct fx_note {
	struct fx *f;
	uint64_t qid;
};

/* Runs on the scheduler's inbox just after the message it notes. */
static void
fx_noted(void *arg)
{
	struct fx_note *n = arg;

	n->f->noted[n->f->nnoted++ % 64] = n->qid;
	free(n);
}

/*
 * The committer's notifications pass through here on their way to the
 * scheduler's own inbox, each followed by a note that it arrived (a tq
 * runs its messages in posting order): fx_settle() can then wait for it.
 */
static void
fx_notify(struct tq_msg *m, void *arg)
{
	struct fx *f = arg;
	struct fx_note *n = calloc(1, sizeof(*n));

	assert_non_null(n);
	assert_int_equal(m->type, TQ_NEW_MESSAGE);
	n->f = f;
	n->qid = m->reqid;
	tq_post(sched_inbox(f->s), m);
	tq_call(sched_inbox(f->s), fx_noted, n);
}

static void
fx_noop(evutil_socket_t fd, short what, void *arg)
{
}

static void
fx_conf_err(void *arg, const char *msg)
{
	fail_msg("conf: %s", msg);
}

static const char fx_conf_text[] =
    "hostname mx.test\n"
    "listen 127.0.0.1:25999 relay\n"
    "route static.example smtp:[127.0.0.1]:2525\n"
    "route other.example smtp:[127.0.0.1]:2525\n"
    "route * mx\n"
    "retry 5m 10m 1h\n"
    "max-queue-lifetime 2d\n"
    "delay-warning 4h\n"
    "max-dest-connections 2\n"
    "max-out-connections 3\n"
    "dest-failure-cohort 2\n"
    "dest-down-time 5m\n";

static int
fx_setup(void **state)
{
	static int n;
	const char *tmp = getenv("TERN_TEST_TMPDIR");
	struct fx *f = calloc(1, sizeof(*f));
	struct queue_opts o = { 0 };
	struct timeval tv = { 0, 20000 };
	char err[256];

	snprintf(f->dir, sizeof(f->dir), "%s/sched-%d-%d",
	    tmp ? tmp : "/tmp", (int)getpid(), n++);
	o.dir = f->dir;
	o.segment_size = 1u << 20;
	if (queue_open(&o, &f->q, err, sizeof(err)) != 0)
		fail_msg("queue_open: %s", err);
	assert_int_equal(conf_parse(fx_conf_text, sizeof(fx_conf_text) - 1,
	    "t.conf", &f->conf, fx_conf_err, NULL), 0);
	f->base = event_base_new();
	f->keep = event_new(f->base, -1, EV_PERSIST, fx_noop, NULL);
	event_add(f->keep, &tv);
	f->replies = tq_new(f->base, fx_reply, f);
	f->s = sched_new(f->q, f->conf, f->base, fx_submit, f);
	sched_set_clock(f->s, fx_clock);
	f->notify = tq_new(f->base, fx_notify, f);
	queue_set_notify(f->q, f->notify);
	fx_now = now_unix();
	*state = f;
	return 0;
}

static int
fx_teardown(void **state)
{
	struct fx *f = *state;
	char cmd[600];

	queue_set_notify(f->q, NULL);
	for (size_t i = 0; i < f->njobs; i++)
		dlv_job_free(f->jobs[i]);
	queue_close(f->q);
	tq_free(f->notify);
	sched_free(f->s);
	tq_free(f->replies);
	event_free(f->keep);
	event_base_free(f->base);
	conf_unref(f->conf);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", f->dir);
	free(f);
	return 0;
}

/* Run the loop until cond() or 10 s. */
static void
fx_loop_until(struct fx *f, int (*cond)(struct fx *))
{
	uint64_t end = now_mono_us() + 10000000u;
	while (!cond(f) && now_mono_us() < end)
		event_base_loop(f->base, EVLOOP_ONCE);
	assert_true(cond(f));
}

static int fx_dsn_settled(struct fx *f) { return sched_dsn_pending(f->s) == 0; }

static const char fx_body[] =
    "From: Alice <alice@example.org>\r\n"
    "To: several\r\n"
    "Subject: scheduler test\r\n"
    "\r\n"
    "the body, never bounced back\r\n";

/* Commit a message; returns its id. rcpts is NULL-terminated. */
static uint64_t
fx_commit(struct fx *f, const char *sender, uint32_t flags,
    const char *const *rcpts)
{
	struct envelope *e = envelope_new();
	struct spool *sp = spool_new(f->q);
	int want = f->ndone + 1;
	uint64_t end = now_mono_us() + 10000000u;

	e->sender = strdup(sender);
	e->flags = flags;
	for (size_t i = 0; rcpts[i] != NULL; i++)
		envelope_add_rcpt(e, rcpts[i], NULL, 0);
	assert_int_equal(spool_write(sp, fx_body, sizeof(fx_body) - 1), 0);
	queue_commit_submit(f->q, e, sp, f->replies, 1);
	while (f->ndone < want && now_mono_us() < end)
		event_base_loop(f->base, EVLOOP_ONCE);
	assert_int_equal(f->ndone, want);
	assert_int_equal(f->lastst, Q_OK);
	/* the reply comes after the sync, the index entry just after it */
	for (int i = 0; i < 500; i++) {
		struct envelope *g = NULL;
		int rc = queue_get(f->q, f->lastqid, &g);
		envelope_free(g);
		if (rc == 0)
			break;
		usleep(10000);
	}
	return f->lastqid;
}

static int
fx_want_noted(struct fx *f)
{
	for (size_t i = 0; i < 64 && i < f->nnoted; i++)
		if (f->noted[i] == f->want_qid)
			return 1;
	return 0;
}

/* Wait until the committer's notification of qid reached the scheduler. */
static void
fx_settle_qid(struct fx *f, uint64_t qid)
{
	f->want_qid = qid;
	fx_loop_until(f, fx_want_noted);
}

/*
 * The same for the test's last commit, and so for every earlier one (one
 * committer posts in order).
 */
static void
fx_settle(struct fx *f)
{
	fx_settle_qid(f, f->lastqid);
}

/* Take (and forget) the job for qid whose first recipient has domain dom. */
static struct dlv_job *
fx_take(struct fx *f, uint64_t qid, const char *dom)
{
	for (size_t i = 0; i < f->njobs; i++) {
		struct dlv_job *j = f->jobs[i];
		if (j->env->id == qid && (dom == NULL ||
		    strcmp(j->domain, dom) == 0)) {
			f->jobs[i] = f->jobs[--f->njobs];
			return j;
		}
	}
	fail_msg("no job for %llx %s", (unsigned long long)qid, dom ? dom : "");
	return NULL;
}

/* A result for job j: class/status/reply per recipient, in job order. */
static struct dlv_result *
fx_result(const struct dlv_job *j, const enum dlv_class *cls,
    const char *const *status, const char *const *reply)
{
	struct dlv_result *r = calloc(1, sizeof(*r));
	r->hdr.type = TQ_DELIVERY_RESULT;
	r->hdr.reqid = j->hdr.reqid;
	r->qid = j->env->id;
	r->n = j->nrcpt;
	r->r = calloc(j->nrcpt, sizeof(*r->r));
	for (size_t i = 0; i < j->nrcpt; i++) {
		r->r[i].rcpt = j->rcpts[i];
		r->r[i].cls = cls[i];
		snprintf(r->r[i].status, sizeof(r->r[i].status), "%s", status[i]);
		r->r[i].reply = reply[i] ? strdup(reply[i]) : NULL;
	}
	r->relay = strdup("mx.dest.example[127.0.0.1]:2525");
	return r;
}

static struct envelope *
fx_get(struct fx *f, uint64_t qid)
{
	struct envelope *e = NULL;
	assert_int_equal(queue_get(f->q, qid, &e), 0);
	return e;
}

struct fx_dsns {
	uint64_t ids[16];
	char *to[16];
	size_t n;
};

static int
fx_walk_dsn(void *arg, const struct envelope *e)
{
	struct fx_dsns *d = arg;
	if (e->sender[0] == '\0' && d->n < 16) {
		assert_true(e->flags & ENV_F_DSN);
		assert_int_equal(e->nrcpt, 1);
		d->to[d->n] = strdup(e->rcpts[0].addr);
		d->ids[d->n++] = e->id;
	}
	return 0;
}

/* The DSNs in the store (waits a little for the index to catch up). */
static void
fx_dsns(struct fx *f, struct fx_dsns *d, size_t want)
{
	for (int tries = 0; tries < 200; tries++) {
		for (size_t i = 0; i < d->n; i++)
			free(d->to[i]);
		d->n = 0;
		assert_int_equal(queue_walk(f->q, fx_walk_dsn, d), 0);
		if (d->n >= want)
			break;
		usleep(10000);
	}
	assert_int_equal(d->n, want);
}

static void
fx_dsns_free(struct fx_dsns *d)
{
	for (size_t i = 0; i < d->n; i++)
		free(d->to[i]);
	d->n = 0;
}

static char *
fx_body_of(struct fx *f, uint64_t qid)
{
	struct envelope *e = fx_get(f, qid);
	char *b = NULL, *s;
	size_t len;
	assert_int_equal(queue_read_body(f->q, e, &b, &len), 0);
	s = malloc(len + 1);
	memcpy(s, b, len);
	s[len] = '\0';
	free(b);
	envelope_free(e);
	return s;
}

static void
test_group_limits_and_ok(void **state)
{
	struct fx *f = *state;
	static const char *const ra[] = { "a1@static.example",
	    "b1@mx1.example", "a2@other.example", "b2@MX1.Example",
	    "c@mx2.example", NULL };
	static const char *const rb[] = { "x@mx1.example", NULL };
	static const enum dlv_class ok2[] = { DLV_OK, DLV_OK };
	static const char *const st2[] = { "2.0.0", "2.0.0" };
	static const char *const rp2[] = { "250 2.0.0 ok", "250 2.0.0 ok" };
	struct dlv_job *js, *j1, *j2, *jb;
	uint64_t a, b, c, d;
	struct envelope *e;
	(void)state;

	a = fx_commit(f, "alice@example.org", 0, ra);
	fx_settle(f);
	assert_true(sched_run(f->s, fx_now) == INT64_MAX);
	/* three destinations: the shared static route, mx1 (case folded), mx2 */
	assert_int_equal(f->njobs, 3);
	assert_int_equal(sched_active(f->s), 3);
	js = fx_take(f, a, "static.example");   /* first recipient's domain */
	assert_int_equal(js->nrcpt, 2);
	assert_int_equal(js->rcpts[0], 0);
	assert_int_equal(js->rcpts[1], 2);
	assert_int_equal(js->route.kind, CONF_ROUTE_HOST);
	assert_string_equal(js->route.host, "127.0.0.1");
	assert_int_equal(js->route.port, 2525);
	j1 = fx_take(f, a, "mx1.example");
	assert_int_equal(j1->nrcpt, 2);
	assert_int_equal(j1->route.kind, CONF_ROUTE_MX);
	j2 = fx_take(f, a, "mx2.example");
	assert_int_equal(j2->nrcpt, 1);
	assert_true(j2->reply == sched_inbox(f->s));

	/* in flight: not scheduled twice */
	sched_add(f->s, a);
	sched_run(f->s, fx_now + 10000);
	assert_int_equal(f->njobs, 0);

	/* three more messages for mx1: the global limit (3) holds them */
	b = fx_commit(f, "alice@example.org", 0, rb);
	c = fx_commit(f, "alice@example.org", 0, rb);
	d = fx_commit(f, "alice@example.org", 0, rb);
	fx_settle(f);
	sched_run(f->s, fx_now);
	assert_int_equal(f->njobs, 0);
	assert_int_equal(sched_waiting(f->s), 3);

	/* two results free two global slots; mx1's limit (2) admits one */
	sched_apply_result(f->s, fx_result(js, ok2, st2, rp2), fx_now + 1);
	sched_apply_result(f->s, fx_result(j2, ok2, st2, rp2), fx_now + 1);
	assert_int_equal(f->njobs, 1);
	assert_int_equal(sched_active(f->s), 2);
	assert_int_equal(sched_waiting(f->s), 2);
	jb = f->jobs[0];
	assert_string_equal(jb->domain, "mx1.example");

	/* the static-route and mx2 recipients are sent, durably */
	e = fx_get(f, a);
	assert_int_equal(e->rcpts[0].state, RCPT_SENT);
	assert_int_equal(e->rcpts[2].state, RCPT_SENT);
	assert_int_equal(e->rcpts[4].state, RCPT_SENT);
	assert_int_equal(e->rcpts[1].state, RCPT_PENDING);
	assert_string_equal(e->rcpts[0].relay, "mx.dest.example[127.0.0.1]:2525");
	assert_string_equal(e->rcpts[0].status, "2.0.0");
	envelope_free(e);

	/* the last job of a: everything sent, the message goes */
	sched_apply_result(f->s, fx_result(j1, ok2, st2, rp2), fx_now + 2);
	e = NULL;
	assert_int_equal(queue_get(f->q, a, &e), 1);
	assert_int_equal(f->njobs, 2);          /* mx1 slot refilled */
	assert_int_equal(sched_waiting(f->s), 1);
	(void)b; (void)c; (void)d;
	dlv_job_free(js);
	dlv_job_free(j1);
	dlv_job_free(j2);
}

/* A result for job j with every recipient cls, and the peer's verdict. */
static struct dlv_result *
fx_result_all(const struct dlv_job *j, enum dlv_class cls, const char *st,
    const char *reply, enum dlv_peer peer)
{
	enum dlv_class c[SCHED_TEST_RCPT];
	const char *sv[SCHED_TEST_RCPT], *rv[SCHED_TEST_RCPT];
	struct dlv_result *r;

	assert_true(j->nrcpt <= SCHED_TEST_RCPT);
	for (size_t i = 0; i < j->nrcpt; i++) {
		c[i] = cls;
		sv[i] = st;
		rv[i] = reply;
	}
	r = fx_result(j, c, sv, rv);
	r->peer = peer;
	return r;
}

/*
 * A destination at its limit delays nobody (round-robin over the ring), and
 * one whose sessions fail goes down after the cohort: its waiting messages
 * are deferred without a job, the next round waits for the down time, and
 * then one job probes it.
 */
static void
test_round_robin_and_dead_destination(void **state)
{
	struct fx *f = *state;
	static const char *const rd[] = { "x@dead.example", NULL };
	static const char *const rl[] = { "y@live.example", NULL };
	uint64_t dead[6], live;
	int nlate = 0;
	struct dlv_job *j;
	struct envelope *e;
	int64_t next;

	for (int i = 0; i < 6; i++)
		dead[i] = fx_commit(f, "alice@example.org", 0, rd);
	live = fx_commit(f, "alice@example.org", 0, rl);
	fx_settle(f);
	sched_run(f->s, fx_now);
	/* dead.example at its limit (2); live.example still gets a slot */
	assert_int_equal(f->njobs, 3);
	assert_int_equal(sched_waiting(f->s), 4);
	j = fx_take(f, live, "live.example");
	sched_apply_result(f->s, fx_result_all(j, DLV_OK, "2.0.0", "250 ok",
	    DLV_PEER_OK), fx_now);
	dlv_job_free(j);
	assert_int_equal(f->njobs, 2);          /* dead.example: still 2 */

	/* two failed sessions in a row (the cohort): down */
	for (int k = 0; k < 2; k++) {
		j = f->jobs[0];
		f->jobs[0] = f->jobs[--f->njobs];
		sched_apply_result(f->s, fx_result_all(j, DLV_TEMP, "4.4.2",
		    "421 4.4.2 go away", DLV_PEER_FAIL), fx_now + 1);
		dlv_job_free(j);
	}
	/* the 4 waiting were deferred without a job, with the last error */
	assert_int_equal(f->njobs, 0);
	assert_int_equal(sched_waiting(f->s), 0);
	assert_int_equal(sched_active(f->s), 0);
	for (int i = 0; i < 6; i++) {
		e = fx_get(f, dead[i]);
		assert_int_equal(e->attempts, 1);
		assert_non_null(strstr(e->rcpts[0].last_error, "421 4.4.2"));
		/* the next round waits for the down time (5m, spread 10%),
		 * the session that brought it down too; the first failure
		 * was a plain retry (5m +-10%) */
		assert_true(e->next_attempt >= fx_now + 1 + 270);
		assert_true(e->next_attempt <= fx_now + 1 + 330);
		nlate += e->next_attempt >= fx_now + 1 + 300;
		if (i >= 2)
			assert_non_null(strstr(e->rcpts[0].last_error,
			    "destination down"));
		envelope_free(e);
	}
	assert_true(nlate >= 5);
	/* due again after the down time: one job probes, the rest wait */
	next = sched_run(f->s, fx_now + 100);
	assert_int_equal(f->njobs, 0);
	assert_true(next >= fx_now + 1 + 270);
	sched_run(f->s, fx_now + 400);
	assert_int_equal(f->njobs, 1);
	assert_int_equal(sched_waiting(f->s), 5);
	j = f->jobs[0];
	f->njobs = 0;
	sched_apply_result(f->s, fx_result_all(j, DLV_OK, "2.0.0", "250 ok",
	    DLV_PEER_OK), fx_now + 401);
	dlv_job_free(j);
	/* up again: the window starts over (2 here, the max) */
	assert_int_equal(f->njobs, 2);
	assert_int_equal(sched_waiting(f->s), 3);
}

/* A message that only waits in its destination's queue is not busy: the
 * operator's hold or delete takes it out of the queue. */
static void
test_waiting_message_can_be_taken_back(void **state)
{
	struct fx *f = *state;
	static const char *const rr[] = { "z@q.example", NULL };
	uint64_t id[3];
	struct dlv_job *j;

	for (int i = 0; i < 3; i++)
		id[i] = fx_commit(f, "alice@example.org", 0, rr);
	fx_settle(f);
	sched_run(f->s, fx_now);
	assert_int_equal(f->njobs, 2);          /* q.example's limit */
	assert_int_equal(sched_waiting(f->s), 1);
	assert_true(sched_ctl_busy(f->s, id[0]));
	assert_true(sched_ctl_busy(f->s, id[1]));
	assert_false(sched_ctl_busy(f->s, id[2]));
	sched_ctl_unschedule(f->s, id[2]);
	assert_int_equal(sched_waiting(f->s), 0);
	j = fx_take(f, id[0], NULL);
	sched_apply_result(f->s, fx_result_all(j, DLV_OK, "2.0.0", "250 ok",
	    DLV_PEER_OK), fx_now);
	dlv_job_free(j);
	assert_int_equal(f->njobs, 1);          /* nothing more handed out */
	/* known again only when scheduled again */
	sched_ctl_schedule(f->s, id[2], fx_now);
	sched_run(f->s, fx_now);
	assert_int_equal(f->njobs, 2);
	assert_true(f->jobs[1]->env->id == id[2]);
}

/* 10,000 destinations and 20,000 jobs in flight: found by hash, distinct. */
static void
test_dest_and_flight_tables(void **state)
{
	struct fx *f = *state;
	enum { ND = 10000, NJ = 20000 };
	struct sched_dest **d = calloc(ND, sizeof(*d));
	struct sched_flight fl;
	char key[80], name[64];

	for (int i = 0; i < ND; i++) {
		snprintf(name, sizeof(name), "d%d.example", i);
		snprintf(key, sizeof(key), "mx:%s", name);
		d[i] = sched_dest_get(f->s, key, name, fx_now);
		assert_string_equal(d[i]->name, name);
	}
	assert_int_equal(f->s->ndest, ND);
	for (int i = 0; i < ND; i++) {
		snprintf(key, sizeof(key), "mx:d%d.example", i);
		assert_ptr_equal(sched_dest_get(f->s, key, "x", fx_now), d[i]);
	}
	assert_int_equal(f->s->ndest, ND);
	for (uint64_t j = 1; j <= NJ; j++)
		sched_flight_add(f->s, j * 7919, j, d[j % ND]);
	assert_false(sched_flight_take(f->s, 3, &fl));
	for (uint64_t j = NJ; j >= 1; j--) {
		assert_true(sched_flight_take(f->s, j * 7919, &fl));
		assert_true(fl.qid == j && fl.dest == d[j % ND]);
		assert_false(sched_flight_take(f->s, j * 7919, &fl));
	}
	/* idle, no failures: the sweep forgets them */
	sched_dest_sweep(f->s, fx_now + 3600);
	assert_int_equal(f->s->ndest, 0);
	free(d);
}

static void
test_mixed_results_and_bounce(void **state)
{
	struct fx *f = *state;
	static const char *const rr[] = { "ok@d.example", "temp@d.example",
	    "perm@d.example", NULL };
	static const enum dlv_class cls[] = { DLV_OK, DLV_TEMP, DLV_PERM };
	static const char *const st[] = { "2.0.0", "4.2.0", "5.1.1" };
	static const char *const rp[] = { "250 2.0.0 ok",
	    "451 4.2.0 try later", "550 5.1.1 <perm@d.example>: no such user" };
	struct fx_dsns ds = { 0 };
	struct dlv_job *j;
	struct envelope *e;
	uint64_t a;
	char *body;
	(void)state;

	a = fx_commit(f, "alice@example.org", 0, rr);
	fx_settle(f);
	sched_run(f->s, fx_now);
	assert_int_equal(f->njobs, 1);
	j = fx_take(f, a, "d.example");
	assert_int_equal(j->nrcpt, 3);
	sched_apply_result(f->s, fx_result(j, cls, st, rp), fx_now + 5);
	dlv_job_free(j);
	/* the DSN goes to the committer first; the bounce is marked after */
	e = fx_get(f, a);
	assert_int_equal(e->rcpts[2].state, RCPT_PENDING);
	assert_int_equal(e->attempts, 1);
	envelope_free(e);
	assert_int_equal(sched_dsn_pending(f->s), 1);
	fx_loop_until(f, fx_dsn_settled);

	e = fx_get(f, a);
	assert_int_equal(e->rcpts[0].state, RCPT_SENT);
	assert_int_equal(e->rcpts[1].state, RCPT_PENDING);
	assert_string_equal(e->rcpts[1].status, "4.2.0");
	assert_string_equal(e->rcpts[1].last_error, "451 4.2.0 try later");
	assert_string_equal(e->rcpts[1].relay, "mx.dest.example[127.0.0.1]:2525");
	assert_int_equal(e->rcpts[2].state, RCPT_BOUNCED);
	assert_string_equal(e->rcpts[2].status, "5.1.1");
	assert_int_equal(e->attempts, 1);
	/* retry 5m +-10% */
	assert_true(e->next_attempt >= fx_now + 5 + 270 &&
	    e->next_attempt <= fx_now + 5 + 330);
	assert_false(e->flags & ENV_F_WARNED);
	envelope_free(e);

	fx_dsns(f, &ds, 1);
	assert_string_equal(ds.to[0], "alice@example.org");
	body = fx_body_of(f, ds.ids[0]);
	assert_non_null(strstr(body, "To: <alice@example.org>\r\n"));
	assert_non_null(strstr(body, "Subject: Undelivered Mail Returned to Sender\r\n"));
	assert_non_null(strstr(body, "Final-Recipient: rfc822; perm@d.example\r\n"
	    "Action: failed\r\nStatus: 5.1.1\r\n"));
	assert_non_null(strstr(body, "Diagnostic-Code: smtp; 550 5.1.1"));
	assert_null(strstr(body, "temp@d.example"));     /* not reported */
	assert_null(strstr(body, "ok@d.example"));
	assert_non_null(strstr(body, "Subject: scheduler test\r\n"));
	assert_null(strstr(body, "never bounced back"));
	free(body);

	/* the DSN itself was announced to the scheduler and goes out */
	fx_settle_qid(f, ds.ids[0]);
	sched_run(f->s, fx_now + 5);
	j = fx_take(f, ds.ids[0], "example.org");
	dlv_job_free(j);

	/* not due before next_attempt; due after it */
	sched_run(f->s, fx_now + 200);
	assert_int_equal(f->njobs, 0);
	sched_run(f->s, fx_now + 400);
	j = fx_take(f, a, "d.example");
	assert_int_equal(j->nrcpt, 1);
	assert_int_equal(j->rcpts[0], 1);
	dlv_job_free(j);
	fx_dsns_free(&ds);
}

static void
test_expiry(void **state)
{
	struct fx *f = *state;
	static const char *const rr[] = { "t1@slow.example", "t2@slow.example",
	    NULL };
	static const enum dlv_class cls[] = { DLV_TEMP, DLV_TEMP };
	static const char *const st[] = { "4.4.1", "4.4.1" };
	static const char *const rp[] = { "421 4.4.1 busy", NULL };
	struct fx_dsns ds = { 0 };
	struct dlv_job *j;
	struct envelope *e;
	int64_t late;
	uint64_t a;
	char *body;
	(void)state;

	a = fx_commit(f, "bob@example.net", 0, rr);
	e = fx_get(f, a);
	late = e->arrival + 2 * 86400;           /* max-queue-lifetime 2d */
	fx_now = late;                          /* the clock of the DSN reply */
	envelope_free(e);
	fx_settle(f);
	sched_run(f->s, late);
	j = fx_take(f, a, "slow.example");
	sched_apply_result(f->s, fx_result(j, cls, st, rp), late);
	dlv_job_free(j);
	fx_loop_until(f, fx_dsn_settled);

	e = NULL;
	assert_int_equal(queue_get(f->q, a, &e), 1);     /* nothing left: removed */
	fx_dsns(f, &ds, 1);
	assert_string_equal(ds.to[0], "bob@example.net");
	body = fx_body_of(f, ds.ids[0]);
	assert_non_null(strstr(body, "Subject: Undelivered Mail Returned to Sender"));
	assert_non_null(strstr(body, "Final-Recipient: rfc822; t1@slow.example\r\n"
	    "Action: failed\r\nStatus: 4.4.7\r\n"));
	assert_non_null(strstr(body, "Final-Recipient: rfc822; t2@slow.example\r\n"
	    "Action: failed\r\nStatus: 4.4.7\r\n"));
	assert_non_null(strstr(body, "421 4.4.1 busy"));  /* the last error */
	assert_non_null(strstr(body, "delivery time expired"));  /* t2: none */
	free(body);
	fx_dsns_free(&ds);
}

static void
test_delay_warning_once(void **state)
{
	struct fx *f = *state;
	static const char *const rr[] = { "w@slow.example", NULL };
	static const enum dlv_class cls[] = { DLV_TEMP };
	static const char *const st[] = { "4.4.2" };
	static const char *const rp[] = { "421 4.4.2 timeout" };
	struct fx_dsns ds = { 0 };
	struct dlv_job *j;
	struct envelope *e;
	int64_t t;
	uint64_t warning;
	uint64_t a;
	char *body;
	(void)state;

	a = fx_commit(f, "carol@example.com", 0, rr);
	e = fx_get(f, a);
	t = e->arrival + 4 * 3600 - 10;          /* just before the warning */
	envelope_free(e);
	fx_settle(f);

	sched_run(f->s, t);
	j = fx_take(f, a, NULL);
	sched_apply_result(f->s, fx_result(j, cls, st, rp), t);
	dlv_job_free(j);
	assert_int_equal(sched_dsn_pending(f->s), 0);     /* too early */
	e = fx_get(f, a);
	assert_false(e->flags & ENV_F_WARNED);
	t = e->next_attempt;
	envelope_free(e);

	sched_run(f->s, t);
	j = fx_take(f, a, NULL);
	sched_apply_result(f->s, fx_result(j, cls, st, rp), t);
	dlv_job_free(j);
	fx_loop_until(f, fx_dsn_settled);
	e = fx_get(f, a);
	assert_true(e->flags & ENV_F_WARNED);
	assert_int_equal(e->rcpts[0].state, RCPT_PENDING);
	assert_int_equal(e->attempts, 2);
	t = e->next_attempt;
	envelope_free(e);
	fx_dsns(f, &ds, 1);
	body = fx_body_of(f, ds.ids[0]);
	assert_non_null(strstr(body, "Subject: Delayed Mail (still being retried)"));
	assert_non_null(strstr(body, "Action: delayed\r\nStatus: 4.4.2\r\n"));
	assert_non_null(strstr(body, "Will-Retry-Until: "));
	free(body);
	warning = ds.ids[0];
	fx_dsns_free(&ds);

	/* the next round: still deferred, no second warning */
	fx_settle_qid(f, warning);
	sched_run(f->s, t);
	j = fx_take(f, a, NULL);
	sched_apply_result(f->s, fx_result(j, cls, st, rp), t);
	dlv_job_free(j);
	assert_int_equal(sched_dsn_pending(f->s), 0);
	while (f->njobs > 0)            /* the warning's own delivery job */
		dlv_job_free(f->jobs[--f->njobs]);
	fx_dsns(f, &ds, 1);
	fx_dsns_free(&ds);
}

static void
test_null_sender_never_answered(void **state)
{
	struct fx *f = *state;
	static const char *const rr[] = { "gone@d.example", NULL };
	static const enum dlv_class cls[] = { DLV_PERM };
	static const char *const st[] = { "5.1.1" };
	static const char *const rp[] = { "550 5.1.1 no" };
	struct fx_dsns ds = { 0 };
	struct dlv_job *j;
	struct envelope *e = NULL;
	uint64_t a;
	(void)state;

	a = fx_commit(f, "", ENV_F_DSN, rr);
	fx_settle(f);
	sched_run(f->s, fx_now);
	j = fx_take(f, a, "d.example");
	sched_apply_result(f->s, fx_result(j, cls, st, rp), fx_now);
	dlv_job_free(j);
	assert_int_equal(sched_dsn_pending(f->s), 0);
	assert_int_equal(queue_get(f->q, a, &e), 1);     /* bounced, removed */
	/* the only null-sender message was the one that failed */
	assert_int_equal(queue_walk(f->q, fx_walk_dsn, &ds), 0);
	assert_int_equal(ds.n, 0);
}

static void
test_notify_never(void **state)
{
	struct fx *f = *state;
	struct envelope *e = envelope_new(), *g = NULL;
	struct spool *sp = spool_new(f->q);
	static const enum dlv_class cls[] = { DLV_PERM };
	static const char *const st[] = { "5.1.1" };
	static const char *const rp[] = { "550 5.1.1 no" };
	struct fx_dsns ds = { 0 };
	struct dlv_job *j;
	uint64_t a;
	int want = f->ndone + 1;
	(void)state;

	e->sender = strdup("dave@example.org");
	envelope_add_rcpt(e, "x@d.example", NULL, SMTP_NOTIFY_NEVER);
	spool_write(sp, fx_body, sizeof(fx_body) - 1);
	queue_commit_submit(f->q, e, sp, f->replies, 1);
	while (f->ndone < want)
		event_base_loop(f->base, EVLOOP_ONCE);
	a = f->lastqid;
	for (int i = 0; i < 500 && queue_get(f->q, a, &g) == 1; i++)
		usleep(10000);
	envelope_free(g);
	g = NULL;
	fx_settle(f);
	sched_run(f->s, fx_now);
	j = fx_take(f, a, NULL);
	sched_apply_result(f->s, fx_result(j, cls, st, rp), fx_now);
	dlv_job_free(j);
	assert_int_equal(queue_get(f->q, a, &g), 1);
	assert_int_equal(queue_walk(f->q, fx_walk_dsn, &ds), 0);
	assert_int_equal(ds.n, 0);
}

static void
test_hold_and_load(void **state)
{
	struct fx *f = *state;
	static const char *const rr[] = { "h@d.example", NULL };
	struct envelope *e;
	struct sched *s2;
	struct fx tmp;
	uint64_t held, later, now;
	(void)state;

	held = fx_commit(f, "alice@example.org", ENV_F_HOLD, rr);
	later = fx_commit(f, "alice@example.org", 0, rr);
	now = fx_commit(f, "alice@example.org", 0, rr);
	fx_settle(f);
	/* the committer told the scheduler of all three; none is running:
	 * put `later` in the future in the store, then rebuild from it */
	e = fx_get(f, later);
	e->next_attempt = fx_now + 1000;
	assert_int_equal(queue_update(f->q, e), 0);
	envelope_free(e);

	/* a fresh scheduler rebuilt from the store */
	memset(&tmp, 0, sizeof(tmp));
	queue_set_notify(f->q, NULL);
	s2 = sched_new(f->q, f->conf, f->base, fx_submit, &tmp);
	assert_int_equal(sched_load(s2), 0);
	sched_run(s2, fx_now);
	assert_int_equal(tmp.njobs, 1);
	assert_true(tmp.jobs[0]->env->id == now);
	dlv_job_free(tmp.jobs[0]);
	tmp.njobs = 0;
	sched_add(s2, held);                    /* held: never scheduled */
	sched_run(s2, fx_now + 500);
	assert_int_equal(tmp.njobs, 0);
	sched_run(s2, fx_now + 1000);
	assert_int_equal(tmp.njobs, 1);
	assert_true(tmp.jobs[0]->env->id == later);
	dlv_job_free(tmp.jobs[0]);
	sched_free(s2);
}

/*
 * The load in slices: a message the scheduler already knows (announced
 * by the committer during the load) is not scheduled twice, a hold written
 * between two slices is obeyed, and the load ends with every entry read.
 */
static void
test_load_slices(void **state)
{
	struct fx *f = *state;
	static const char *const rr[] = { "s@d.example", NULL };
	uint64_t id[5];
	struct envelope *e;
	struct sched *s2;
	struct fx tmp;
	int rc, slices = 0;

	for (int i = 0; i < 5; i++)
		id[i] = fx_commit(f, "alice@example.org", 0, rr);
	fx_settle(f);
	memset(&tmp, 0, sizeof(tmp));
	queue_set_notify(f->q, NULL);
	s2 = sched_new(f->q, f->conf, f->base, fx_submit, &tmp);
	sched_add(s2, id[3]);                   /* announced before the walk */
	assert_int_equal(sched_load_slice(s2, 2), 1);
	slices++;
	assert_int_equal(s2->load.seen, 2);
	e = fx_get(f, id[4]);                   /* held by the operator now */
	e->flags |= ENV_F_HOLD;
	assert_int_equal(queue_update(f->q, e), 0);
	envelope_free(e);
	while ((rc = sched_load_slice(s2, 2)) == 1 && slices < 10)
		slices++;
	assert_int_equal(rc, 0);
	assert_true(s2->load.done);
	assert_true(s2->load.seen >= 4);        /* the hold took id[4]'s key */
	assert_int_equal(s2->nmsg, 4);          /* once each; not the held one */
	assert_int_equal(s2->heap.n, 4);
	assert_int_equal(sched_load_slice(s2, 2), 0);   /* done stays done */
	assert_int_equal(s2->nmsg, 4);
	sched_free(s2);
}

/*
 * The load reads the soonest next attempts first, whatever the ids: with
 * ids in the reverse of due order, a first slice of 2 holds the two
 * soonest, and the first job handed out is the most overdue message.
 */
static void
test_load_nearest_first(void **state)
{
	struct fx *f = *state;
	static const char *const rr[] = { "n@d.example", NULL };
	uint64_t id[5];
	struct envelope *e;
	struct sched *s2;
	struct fx tmp;

	for (int i = 0; i < 5; i++)
		id[i] = fx_commit(f, "alice@example.org", 0, rr);
	fx_settle(f);
	for (int i = 0; i < 5; i++) {           /* id[4] is due first */
		e = fx_get(f, id[i]);
		e->next_attempt = fx_now - 100 * i + (i < 3 ? 1000 : 0);
		assert_int_equal(queue_update(f->q, e), 0);
		envelope_free(e);
	}
	memset(&tmp, 0, sizeof(tmp));
	queue_set_notify(f->q, NULL);
	s2 = sched_new(f->q, f->conf, f->base, fx_submit, &tmp);
	assert_int_equal(sched_load_slice(s2, 2), 1);
	assert_int_equal(s2->nmsg, 2);
	sched_run(s2, fx_now);
	assert_int_equal(tmp.njobs, 2);
	assert_true(tmp.jobs[0]->env->id == id[4]);
	assert_true(tmp.jobs[1]->env->id == id[3]);
	for (size_t i = 0; i < tmp.njobs; i++)
		dlv_job_free(tmp.jobs[i]);
	tmp.njobs = 0;
	assert_int_equal(sched_load(s2), 0);
	assert_int_equal(s2->nmsg, 5);
	sched_run(s2, fx_now);
	assert_int_equal(tmp.njobs, 0);         /* the others are not due */
	sched_free(s2);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_retry_delay),
		cmocka_unit_test(test_retry_policy),
		cmocka_unit_test(test_heap),
		cmocka_unit_test(test_window_slow_start),
		cmocka_unit_test(test_window_cohort),
		cmocka_unit_test_setup_teardown(test_group_limits_and_ok,
		    fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(
		    test_round_robin_and_dead_destination, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(
		    test_waiting_message_can_be_taken_back, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_dest_and_flight_tables,
		    fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_mixed_results_and_bounce,
		    fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_expiry, fx_setup,
		    fx_teardown),
		cmocka_unit_test_setup_teardown(test_delay_warning_once,
		    fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_null_sender_never_answered,
		    fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_notify_never, fx_setup,
		    fx_teardown),
		cmocka_unit_test_setup_teardown(test_load_slices, fx_setup,
		    fx_teardown),
		cmocka_unit_test_setup_teardown(test_load_nearest_first,
		    fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_hold_and_load, fx_setup,
		    fx_teardown),
	};

	evthread_use_pthreads();
	log_init("test_sched", 0, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
