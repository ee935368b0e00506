/*
 * queue_fill.c - fill a queue directory with COUNT messages, offline, for
 * start-up and drain measurements (and the start-up scale test):
 *
 *     ./build/bench/bench-queue-fill DIR COUNT [SPREAD [OVERDUE_EVERY]]
 *
 * Each message has two recipients (r1@fill.test, r2@fill.test), sender
 * fill@example.org, a small body with "X-Fill-Id: N" (N from 1 to COUNT),
 * and its next attempt at now + (N mod SPREAD) seconds (SPREAD 0, the
 * default: every message is due at once). With OVERDUE_EVERY (K > 0):
 * message N is overdue by N seconds when K divides N, and due at now +
 * SPREAD otherwise; one submitter then commits them in order, so the ids'
 * order is the reverse of the due messages' order (a start-up test of the
 * scheduler's nearest-first load). Otherwise 16 submitters commit through
 * the queue's own committer, each with 64 messages in flight; ternd must be
 * stopped (the queue lock refuses otherwise). Prints the count committed
 * and the rate. Writes only below DIR.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "tern/log.h"
#include "tern/queue.h"
#include "tern/tq.h"
#include "tern/util.h"

#define FILL_THREADS    16
#define FILL_WINDOW     64

struct fill_arg {
	struct queue *q;
	uint64_t first, count;          /* X-Fill-Id range of this thread */
	unsigned spread, overdue_every;
	int64_t now;
	uint64_t done, replies, failed;
};

static void
fill_handler(struct tq_msg *m, void *arg)
{
	struct fill_arg *a = arg;
	struct queue_commit_done *d = (struct queue_commit_done *)m;

	if (d->status == Q_OK)
		a->done++;
	else
		a->failed++;
	a->replies++;
	free(m);
}

static void
fill_one(struct fill_arg *a, struct tq *tq, uint64_t n)
{
	struct envelope *e = envelope_new();
	struct spool *s = spool_new(a->q);
	char body[256];
	int len;

	e->sender = xstrdup("fill@example.org");
	envelope_add_rcpt(e, "r1@fill.test", NULL, 0);
	envelope_add_rcpt(e, "r2@fill.test", NULL, 0);
	if (a->overdue_every > 0)
		e->next_attempt = n % a->overdue_every == 0 ?
		    a->now - (int64_t)n : a->now + a->spread;
	else
		e->next_attempt = a->spread ? a->now + (int64_t)(n % a->spread) :
		    0;
	len = snprintf(body, sizeof(body), "From: fill@example.org\r\n"
	    "To: r1@fill.test, r2@fill.test\r\nSubject: fill %" PRIu64 "\r\n"
	    "X-Fill-Id: %" PRIu64 "\r\n\r\nfill message %" PRIu64 "\r\n",
	    n, n, n);
	spool_write(s, body, (size_t)len);
	queue_commit_submit(a->q, e, s, tq, n);
}

static void *
fill_main(void *arg)
{
	struct fill_arg *a = arg;
	struct event_base *base = event_base_new();
	struct tq *tq = tq_new(base, fill_handler, a);
	uint64_t sent = 0;

	while (a->replies < a->count) {
		while (sent < a->count && sent - a->replies < FILL_WINDOW)
			fill_one(a, tq, a->first + sent++);
		event_base_loop(base, EVLOOP_ONCE);
	}
	tq_free(tq);
	event_base_free(base);
	return NULL;
}

int
main(int argc, char **argv)
{
	struct fill_arg args[FILL_THREADS];
	pthread_t th[FILL_THREADS];
	struct queue *q = NULL;
	char err[512] = "";
	uint64_t count, per, done = 0, failed = 0, t0;
	unsigned spread = 0, overdue_every = 0;
	int nthr = FILL_THREADS;

	if (argc < 3 || argc > 5 || (count = strtoull(argv[2], NULL, 10)) == 0) {
		fprintf(stderr, "usage: bench-queue-fill DIR COUNT [SPREAD "
		    "[OVERDUE_EVERY]]\n");
		return 2;
	}
	if (argc >= 4)
		spread = (unsigned)strtoul(argv[3], NULL, 10);
	if (argc == 5 && (overdue_every = (unsigned)strtoul(argv[4], NULL,
	    10)) > 0)
		nthr = 1;               /* ids in fill order */
	log_init("bench-queue-fill", 0, 0);
	evthread_use_pthreads();
	struct queue_opts o = { .dir = argv[1], .segment_size = 64ull << 20,
	    .spool_memory = 64 << 10, .spool_budget = 64 << 20 };
	if (queue_open(&o, &q, err, sizeof(err)) < 0)
		fatalx("queue_open %s: %s", argv[1], err);
	t0 = now_mono_us();
	per = (count + (uint64_t)nthr - 1) / (uint64_t)nthr;
	for (int i = 0; i < nthr; i++) {
		uint64_t first = (uint64_t)i * per;
		uint64_t n = first >= count ? 0 : count - first < per ?
		    count - first : per;
		args[i] = (struct fill_arg){ .q = q, .first = first + 1,
		    .count = n, .spread = spread,
		    .overdue_every = overdue_every, .now = now_unix() };
		if (pthread_create(&th[i], NULL, fill_main, &args[i]) != 0)
			fatalx("pthread_create failed");
	}
	for (int i = 0; i < nthr; i++) {
		pthread_join(th[i], NULL);
		done += args[i].done;
		failed += args[i].failed;
	}
	printf("committed=%" PRIu64 " failed=%" PRIu64 " secs=%.2f msg/s=%.0f\n",
	    done, failed, (double)(now_mono_us() - t0) / 1e6,
	    (double)done * 1e6 / (double)(now_mono_us() - t0 + 1));
	queue_close(q);
	return failed > 0 ? 1 : 0;
}
