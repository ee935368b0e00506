/*
 * queue_query.c - the queue's queries at scale: fill a queue under DIR with
 * N messages (2 recipients each: u<i>@d<i % (N/1000)>.example, so each
 * d*.example domain has about 1,000 messages, and postmaster@hot<i % 4>.test;
 * sender s<i % 100>@senders.example; 200-byte bodies) straight through
 * queue_commit_submit, then time queue_query (1 match by address, ~1,000
 * by domain, a fragment, one page of 100 of everything), queue_counts,
 * queue_domains(top 20), the index's size, and a drain-like pass (2
 * threads: get, mark the first recipient sent, update, remove); or, with
 * rmdrain, the scheduler's removal path alone: up to 50,000 messages in id
 * order, read (queue_get) and removed in groups of QUEUE_REMOVE_BATCH
 * (queue_remove_many; BQ_GROUP=N: of N), on one thread, timed in that
 * thread's CPU.
 *
 *     ./build/bench/bench-queue-query DIR N [drain|rmdrain]
 *
 * DIR is kept (a second run on it skips the fill: open time is printed).
 * Not a test: figures depend on the machine (doc/queue.md "Measured").
 * Writes only below DIR.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "tern/log.h"
#include "tern/queue.h"
#include "tern/tq.h"
#include "tern/util.h"

#define BQ_INFLIGHT 256

struct bq_fill {
	struct queue *q;
	uint64_t first, n, ndom;
	uint64_t replies, ok;
	uint64_t *ids;          /* shared, by message number */
};

static void
bq_handler(struct tq_msg *m, void *arg)
{
	struct bq_fill *b = arg;
	struct queue_commit_done *d = (struct queue_commit_done *)m;

	if (d->status == Q_OK) {
		b->ok++;
		b->ids[d->hdr.reqid] = d->qid;
	}
	b->replies++;
	free(m);
}

static void
bq_noop(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

static void *
bq_fill_main(void *arg)
{
	struct bq_fill *b = arg;
	struct event_base *base = event_base_new();
	struct tq *tq = tq_new(base, bq_handler, b);
	/* something to wait for: the loop sleeps instead of spinning */
	struct event *keep = event_new(base, -1, EV_PERSIST, bq_noop, NULL);
	struct timeval tv = { 0, 50000 };
	char body[200], addr[128];
	uint64_t sent = 0;

	event_add(keep, &tv);
	memset(body, 'x', sizeof(body));
	body[198] = '\r';
	body[199] = '\n';
	for (uint64_t i = b->first; i < b->first + b->n; i++) {
		struct envelope *e = envelope_new();
		struct spool *s = spool_new(b->q);
		snprintf(addr, sizeof(addr), "s%llu@senders.example",
		    (unsigned long long)(i % 100));
		e->sender = xstrdup(addr);
		snprintf(addr, sizeof(addr), "u%llu@d%llu.example",
		    (unsigned long long)i, (unsigned long long)(i % b->ndom));
		envelope_add_rcpt(e, addr, NULL, 0);
		snprintf(addr, sizeof(addr), "postmaster@hot%llu.test",
		    (unsigned long long)(i % 4));
		envelope_add_rcpt(e, addr, NULL, 0);
		spool_write(s, body, sizeof(body));
		queue_commit_submit(b->q, e, s, tq, i);
		sent++;
		while (sent - b->replies >= BQ_INFLIGHT)
			event_base_loop(base, EVLOOP_ONCE);
	}
	while (b->replies < sent)
		event_base_loop(base, EVLOOP_ONCE);
	tq_free(tq);
	event_free(keep);
	event_base_free(base);
	return NULL;
}

static int
bq_count(void *arg, const struct envelope *e)
{
	(void)e;
	(*(uint64_t *)arg)++;
	return 0;
}

static int
bq_dom(void *arg, const char *domain, uint64_t messages, uint64_t recipients)
{
	(void)domain;
	(void)messages;
	(void)recipients;
	(*(uint64_t *)arg)++;
	return 0;
}

/* Best of 5: milliseconds; *n the result's size. */
static double
bq_time_query(struct queue *q, const struct queue_filter *f, size_t limit,
    uint64_t *n);

/* Time a query and print it (the count is read after the call). */
static void
bq_query(struct queue *q, const char *name, const struct queue_filter *f,
    size_t limit)
{
	uint64_t n = 0;
	double ms = bq_time_query(q, f, limit, &n);

	printf("query %s ms=%.2f matches=%llu\n", name, ms, (unsigned long long)n);
}

static double
bq_time_query(struct queue *q, const struct queue_filter *f, size_t limit,
    uint64_t *n)
{
	double best = 1e18;

	for (int r = 0; r < 5; r++) {
		uint64_t t0 = now_mono_us(), last;
		*n = 0;
		queue_query(q, f, 0, limit, &last, bq_count, n);
		double ms = (double)(now_mono_us() - t0) / 1000.0;
		if (ms < best)
			best = ms;
	}
	return best;
}

struct bq_drain {
	struct queue *q;
	const uint64_t *ids;
	uint64_t from, n;
};

static void *
bq_drain_main(void *arg)
{
	struct bq_drain *d = arg;

	for (uint64_t i = d->from; i < d->from + d->n; i++) {
		struct envelope *e = NULL;
		if (queue_get(d->q, d->ids[i], &e) != 0)
			continue;
		e->rcpts[0].state = RCPT_SENT;
		e->attempts++;
		if (queue_update(d->q, e) != 0)
			log_warnx("update failed");
		envelope_free(e);
		if (queue_remove(d->q, d->ids[i]) != 0)
			log_warnx("remove failed");
	}
	return NULL;
}

static uint64_t
bq_thread_cpu_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* The removal path as the scheduler runs it: a read, then grouped removals. */
static void
bq_rmdrain(struct queue *q, const uint64_t *ids, size_t n)
{
	uint64_t t0 = now_mono_us(), c0 = bq_thread_cpu_us(), crm = 0;
	const char *g = getenv("BQ_GROUP");
	size_t group = g != NULL ? strtoul(g, NULL, 10) : QUEUE_REMOVE_BATCH;
	int gone[QUEUE_REMOVE_BATCH];

	if (group < 1 || group > QUEUE_REMOVE_BATCH)
		group = QUEUE_REMOVE_BATCH;
	for (size_t i = 0; i < n; i += group) {
		size_t k = n - i < group ? n - i : group;
		uint64_t c1;
		for (size_t j = 0; j < k; j++) {
			struct envelope *e = NULL;
			if (queue_get(q, ids[i + j], &e) == 0)
				envelope_free(e);
		}
		c1 = bq_thread_cpu_us();
		if (queue_remove_many(q, ids + i, k, gone) != 0)
			log_warnx("remove failed");
		crm += bq_thread_cpu_us() - c1;
	}
	printf("rmdrain messages=%zu msg/s=%.0f cpu_us/msg=%.1f "
	    "remove_many_us/msg=%.1f\n", n,
	    (double)n * 1e6 / (double)(now_mono_us() - t0),
	    (double)(bq_thread_cpu_us() - c0) / (double)n, (double)crm / (double)n);
}

struct bq_collect {
	uint64_t *ids;
	size_t n, cap;
};

static int
bq_collect_one(void *arg, const struct envelope *e)
{
	struct bq_collect *c = arg;

	if (c->n < c->cap)
		c->ids[c->n++] = e->id;
	return c->n >= c->cap;
}

int
main(int argc, char **argv)
{
	struct queue *q = NULL;
	struct queue_counts c;
	struct queue_filter f;
	char err[256] = "", addr[128];
	uint64_t n, ndom, t0, found, segb, idxb;
	int drain = argc == 4 && strcmp(argv[3], "drain") == 0;
	int rmdrain = argc == 4 && strcmp(argv[3], "rmdrain") == 0;

	if (argc < 3 || (n = strtoull(argv[2], NULL, 10)) < 1000) {
		fprintf(stderr, "usage: bench-queue-query DIR N(>=1000) "
		    "[drain|rmdrain]\n");
		return 2;
	}
	log_init("bench-queue-query", 0, 0);
	evthread_use_pthreads();
	ndom = n / 1000;
	struct queue_opts o = { .dir = argv[1], .segment_size = 64ull << 20,
	    .spool_memory = 256 << 10, .spool_budget = 64 << 20 };
	t0 = now_mono_us();
	if (queue_open(&o, &q, err, sizeof(err)) < 0)
		fatalx("queue_open %s: %s", argv[1], err);
	printf("open ms=%.0f\n", (double)(now_mono_us() - t0) / 1000.0);
	if (queue_counts(q, &c) == 0 && c.messages == 0) {
		struct bq_fill b[4];
		pthread_t th[4];
		uint64_t *ids = xcalloc(n, sizeof(*ids));
		t0 = now_mono_us();
		for (int i = 0; i < 4; i++) {
			b[i] = (struct bq_fill){ q, n / 4 * (uint64_t)i,
			    i == 3 ? n - n / 4 * 3 : n / 4, ndom, 0, 0, ids };
			pthread_create(&th[i], NULL, bq_fill_main, &b[i]);
		}
		for (int i = 0; i < 4; i++)
			pthread_join(th[i], NULL);
		printf("fill messages=%llu secs=%.1f msg/s=%.0f\n",
		    (unsigned long long)n, (double)(now_mono_us() - t0) / 1e6,
		    (double)n * 1e6 / (double)(now_mono_us() - t0));
		free(ids);
	}
	queue_filter_init(&f);
	snprintf(addr, sizeof(addr), "u%llu@d%llu.example",
	    (unsigned long long)(n / 2), (unsigned long long)(n / 2 % ndom));
	f.rcpt = addr;
	bq_query(q, "rcpt-address", &f, 0);
	queue_filter_init(&f);
	f.domain = "d7.example";
	bq_query(q, "domain", &f, 0);
	queue_filter_init(&f);
	f.domain = "d7.example";
	bq_query(q, "domain-page100", &f, 100);
	queue_filter_init(&f);
	bq_query(q, "all-page100", &f, 100);
	queue_filter_init(&f);
	snprintf(addr, sizeof(addr), "u%llu@", (unsigned long long)(n / 3));
	f.rcpt = addr;
	bq_query(q, "rcpt-fragment", &f, 0);
	{
		double best = 1e18, bestd = 1e18;
		for (int r = 0; r < 5; r++) {
			t0 = now_mono_us();
			queue_counts(q, &c);
			double ms = (double)(now_mono_us() - t0) / 1000.0;
			best = ms < best ? ms : best;
			t0 = now_mono_us();
			found = 0;
			queue_domains(q, 20, bq_dom, &found);
			ms = (double)(now_mono_us() - t0) / 1000.0;
			bestd = ms < bestd ? ms : bestd;
		}
		printf("counts ms=%.2f messages=%llu recipients=%llu\n", best,
		    (unsigned long long)c.messages,
		    (unsigned long long)c.recipients);
		printf("domains-top20 ms=%.2f\n", bestd);
	}
	queue_disk_use(q, &segb, &idxb);
	printf("disk segments=%llu index=%llu\n", (unsigned long long)segb,
	    (unsigned long long)idxb);
	if (rmdrain) {
		struct bq_collect col = { xcalloc(50000, sizeof(uint64_t)), 0,
		    50000 };
		queue_filter_init(&f);
		queue_query(q, &f, 0, 50000, NULL, bq_collect_one, &col);
		bq_rmdrain(q, col.ids, col.n);
		free(col.ids);
	}
	if (drain) {
		struct bq_collect col = { xcalloc(20000, sizeof(uint64_t)), 0,
		    20000 };
		struct bq_drain d[2];
		int nt = getenv("BQ_THREADS") ? atoi(getenv("BQ_THREADS")) : 2;
		pthread_t th[2];
		queue_filter_init(&f);
		queue_query(q, &f, 0, 20000, NULL, bq_collect_one, &col);
		t0 = now_mono_us();
		nt = nt == 1 ? 1 : 2;
		for (int i = 0; i < nt; i++) {
			d[i] = (struct bq_drain){ q, col.ids, col.n / (uint64_t)nt *
			    (uint64_t)i, i == nt - 1 ? col.n - col.n / (uint64_t)nt *
			    (uint64_t)i : col.n / (uint64_t)nt };
			pthread_create(&th[i], NULL, bq_drain_main, &d[i]);
		}
		for (int i = 0; i < nt; i++)
			pthread_join(th[i], NULL);
		printf("drain messages=%zu (update+remove) msg/s=%.0f\n", col.n,
		    (double)col.n * 1e6 / (double)(now_mono_us() - t0));
		free(col.ids);
	}
	t0 = now_mono_us();
	queue_close(q);
	printf("close ms=%.0f\n", (double)(now_mono_us() - t0) / 1000.0);
	return 0;
}
