/*
 * sched_loop.c - the scheduler's thread (tern/deliver.h): one event loop
 * that runs the core of sched.c, a timer for the next due message, and the
 * glue to the delivery workers (deliver_pool_submit). Kept apart from the
 * core so that the core and its unit test link without the workers.
 *
 * Runs: sched_start/sched_set_conf/sched_stop on the caller's thread; the
 * rest on the scheduler thread. Never blocks the caller beyond the start-up
 * walk of the envelope store and the join at stop.
 *
 * Shutdown order (caller): deliver_pool_stop() first (no result arrives
 * later), then sched_stop() (waits for DSN commits in flight), then
 * queue_close(). libevent must be thread-enabled (evthread_use_pthreads):
 * workers and the committer post to the inbox from their threads.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include <event2/event.h>

#include "tern/log.h"
#include "tern/util.h"
#include "sched_int.h"

static void
sched_submit_pool(void *arg, struct dlv_job *j)
{
	deliver_pool_submit(arg, j);
}

static void
sched_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sched *s = arg;
	int64_t now = s->clock(), next;
	struct timeval tv = { 0, 0 };

	if (s->stopping)
		return;
	next = sched_run(s, now);
	if (next == INT64_MAX || next - now > SCHED_TIMER_MAX)
		tv.tv_sec = SCHED_TIMER_MAX;
	else
		tv.tv_sec = next > now ? (time_t)(next - now) : 1;
	evtimer_add(s->timer, &tv);
}

static void *
sched_thread(void *arg)
{
	struct sched *s = arg;
	event_base_loop(s->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

struct sched *
sched_start(struct queue *q, struct conf *conf, struct deliver_pool *pool)
{
	struct event_base *base = event_base_new();
	struct sched *s;
	int err;

	if (base == NULL)
		fatalx("sched_start: event_base_new failed");
	s = sched_new(q, conf, base, sched_submit_pool, pool);
	s->own_base = 1;
	if ((s->timer = evtimer_new(base, sched_timer_cb, s)) == NULL)
		fatalx("sched_start: evtimer_new failed");
	/* notify first, then walk: nothing committed in between is missed
	 * (sched_add ignores ids it already knows) */
	queue_set_notify(q, s->inbox);
	if (sched_load(s) < 0)
		log_warnx("scheduler: the envelope walk failed; messages not "
		    "seen will be picked up at the next start");
	event_active(s->timer, EV_TIMEOUT, 0);
	if ((err = pthread_create(&s->thr, NULL, sched_thread, s)) != 0) {
		errno = err;
		fatal("sched_start: pthread_create");
	}
	s->running = 1;
	return s;
}

struct sched_conf_call {
	struct sched *s;
	struct conf *conf;          /* a reference */
};

static void
sched_conf_call(void *arg)
{
	struct sched_conf_call *c = arg;
	sched_conf_swap(c->s, c->conf);
	conf_unref(c->conf);
	free(c);
}

void
sched_set_conf(struct sched *s, struct conf *conf)
{
	struct sched_conf_call *c = xcalloc(1, sizeof(*c));
	c->s = s;
	c->conf = conf_ref(conf);
	tq_call(s->inbox, sched_conf_call, c);
}

static void
sched_stop_call(void *arg)
{
	struct sched *s = arg;
	s->stopping = 1;
	if (s->dsn_pending == 0)
		event_base_loopbreak(s->base);
	/* else: the last TQ_COMMIT_DONE breaks the loop */
}

void
sched_stop(struct sched *s)
{
	struct event_base *base;

	if (s == NULL)
		return;
	queue_set_notify(s->q, NULL);
	if (s->running) {
		tq_call(s->inbox, sched_stop_call, s);
		pthread_join(s->thr, NULL);
	}
	if (s->timer != NULL)
		event_free(s->timer);
	s->timer = NULL;
	base = s->own_base ? s->base : NULL;
	sched_free(s);
	if (base != NULL)
		event_base_free(base);
}
