/*
 * queue_commit.c - the queue's group-commit throughput loop: closed-loop
 * submitters (1, then 64), each on its own event_base, commit 4 KiB
 * bodies with one recipient into a fresh queue under DIR for SECONDS
 * (default 3) each, and it prints commits/s and messages per fdatasync.
 *
 *     ./build/bench/bench-queue-commit /var/tmp/qbench [SECONDS]
 *
 * Not a test (figures depend on the machine; see bench/README.md and the
 * "Measured" section of doc/queue.md). Runs as any user; writes only below
 * DIR, and removes what it made.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "tern/log.h"
#include "tern/queue.h"
#include "tern/tq.h"
#include "tern/util.h"

struct bench_arg {
	struct queue *q;
	volatile int *stop;
	uint64_t done, replies;
};

static void
bench_handler(struct tq_msg *m, void *arg)
{
	struct bench_arg *b = arg;
	struct queue_commit_done *d = (struct queue_commit_done *)m;

	if (d->status == Q_OK)
		b->done++;
	b->replies++;
	free(m);
}

static void
bench_noop(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
}

static void *
bench_main(void *arg)
{
	struct bench_arg *b = arg;
	struct event_base *base = event_base_new();
	struct tq *tq = tq_new(base, bench_handler, b);
	struct event *keep = event_new(base, -1, EV_PERSIST, bench_noop, NULL);
	struct timeval tv = { 0, 50000 };
	char body[4096];

	memset(body, 'x', sizeof(body));
	event_add(keep, &tv);
	while (!*b->stop) {
		struct envelope *e = envelope_new();
		struct spool *s = spool_new(b->q);
		uint64_t want = b->replies + 1;

		e->sender = xstrdup("bench@example.org");
		envelope_add_rcpt(e, "rcpt@example.com", NULL, 0);
		spool_write(s, body, sizeof(body));
		queue_commit_submit(b->q, e, s, tq, 1);
		while (b->replies < want)   /* never leave a reply in flight */
			event_base_loop(base, EVLOOP_ONCE);
	}
	tq_free(tq);
	event_free(keep);
	event_base_free(base);
	return NULL;
}

/*
 * Housekeeping prepares a 64 MiB spare segment (DIR/segments/spare, see
 * doc/queue.md): measure from there, as a daemon that has run a while.
 */
static void
bench_wait_spare(const char *dir)
{
	char path[4300];
	uint64_t end = now_mono_us() + 60000000u;

	snprintf(path, sizeof(path), "%s/segments/spare", dir);
	while (access(path, F_OK) != 0 && now_mono_us() < end)
		usleep(10000);
}

static void
bench_run(const char *parent, int nthreads, unsigned secs)
{
	char dir[4200], cmd[4300], err[256] = "";
	struct bench_arg *args = xcalloc((size_t)nthreads, sizeof(*args));
	pthread_t *th = xcalloc((size_t)nthreads, sizeof(*th));
	volatile int stop = 0;
	struct queue *q = NULL;
	struct queue_stats st;
	uint64_t total = 0, t0, t1;

	snprintf(dir, sizeof(dir), "%s/bench-%d-XXXXXX", parent, nthreads);
	if (mkdtemp(dir) == NULL)
		fatal("mkdtemp %s", dir);
	struct queue_opts o = { .dir = dir, .segment_size = 64ull << 20,
	    .spool_memory = 256 << 10, .spool_budget = 64 << 20 };
	if (queue_open(&o, &q, err, sizeof(err)) < 0)
		fatalx("queue_open %s: %s", dir, err);
	bench_wait_spare(dir);
	t0 = now_mono_us();
	for (int i = 0; i < nthreads; i++) {
		args[i] = (struct bench_arg){ q, &stop, 0, 0 };
		if (pthread_create(&th[i], NULL, bench_main, &args[i]) != 0)
			fatalx("pthread_create failed");
	}
	sleep(secs);                    /* the measured period */
	stop = 1;
	for (int i = 0; i < nthreads; i++) {
		pthread_join(th[i], NULL);
		total += args[i].done;
	}
	t1 = now_mono_us();
	queue_stats(q, &st);
	printf("submitters=%d commits=%llu secs=%.2f commits/s=%.0f batches=%llu "
	    "avg_batch=%.1f\n", nthreads, (unsigned long long)total,
	    (double)(t1 - t0) / 1e6, (double)total * 1e6 / (double)(t1 - t0),
	    (unsigned long long)st.batches,
	    st.batches ? (double)st.commits / (double)st.batches : 0.0);
	fflush(stdout);
	queue_close(q);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		log_warnx("cannot remove %s", dir);
	free(args);
	free(th);
}

int
main(int argc, char **argv)
{
	unsigned secs = 3;

	if (argc < 2 || argc > 3 ||
	    (argc == 3 && (secs = (unsigned)atoi(argv[2])) == 0)) {
		fprintf(stderr, "usage: bench-queue-commit DIR [SECONDS]\n");
		return 2;
	}
	log_init("bench-queue-commit", 0, 0);
	evthread_use_pthreads();
	bench_run(argv[1], 1, secs);
	bench_run(argv[1], 64, secs);
	return 0;
}
