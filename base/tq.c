/*
 * tq.c - typed message queues between threads (see tern/tq.h).
 *
 * Producers lock, append and, when the queue was empty, activate the
 * consumer's event; the consumer takes the whole list under the lock and
 * runs the handler on each message without it. Needs libevent's pthread
 * support (evthread_use_pthreads()) so event_active() is safe cross-thread.
 */
#include <pthread.h>
#include <stdlib.h>

#include <event2/event.h>

#include "tern/log.h"
#include "tern/tq.h"
#include "tern/util.h"

struct tq {
	pthread_mutex_t lock;
	STAILQ_HEAD(, tq_msg) msgs;     /* owned messages */
	struct event *ev;
	tq_handler *handler;
	void *arg;
};

static void
tq_run(evutil_socket_t fd, short what, void *arg)
{
	struct tq *q = arg;
	STAILQ_HEAD(, tq_msg) run = STAILQ_HEAD_INITIALIZER(run);
	struct tq_msg *m;

	pthread_mutex_lock(&q->lock);
	STAILQ_CONCAT(&run, &q->msgs);
	pthread_mutex_unlock(&q->lock);

	while ((m = STAILQ_FIRST(&run)) != NULL) {
		STAILQ_REMOVE_HEAD(&run, next);
		if (m->type == TQ_CALL) {
			struct tq_call *c = (struct tq_call *)m;
			c->fn(c->arg);
			free(c);
		} else {
			q->handler(m, q->arg);
		}
	}
}

struct tq *
tq_new(struct event_base *base, tq_handler *handler, void *arg)
{
	struct tq *q = xcalloc(1, sizeof(*q));
	pthread_mutex_init(&q->lock, NULL);
	STAILQ_INIT(&q->msgs);
	q->handler = handler;
	q->arg = arg;
	q->ev = event_new(base, -1, 0, tq_run, q);
	if (q->ev == NULL)
		panic("tq_new: event_new failed");
	return q;
}

void
tq_post(struct tq *q, struct tq_msg *msg)
{
	int wake;
	pthread_mutex_lock(&q->lock);
	wake = STAILQ_EMPTY(&q->msgs);
	STAILQ_INSERT_TAIL(&q->msgs, msg, next);
	pthread_mutex_unlock(&q->lock);
	if (wake)
		event_active(q->ev, EV_READ, 0);
}

void
tq_call(struct tq *q, void (*fn)(void *), void *arg)
{
	struct tq_call *c = xcalloc(1, sizeof(*c));
	c->hdr.type = TQ_CALL;
	c->fn = fn;
	c->arg = arg;
	tq_post(q, &c->hdr);
}

void
tq_free(struct tq *q)
{
	if (q == NULL)
		return;
	tq_run(-1, 0, q);
	event_free(q->ev);
	pthread_mutex_destroy(&q->lock);
	free(q);
}
