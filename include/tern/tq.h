/*
 * tq.h - typed message queues between threads.
 *
 * Threads never share a session or a buffer: they post messages. A message
 * embeds struct tq_msg as its first member and is owned by the queue from
 * tq_post() until the consumer's handler receives it; the handler then owns
 * it and frees it. A tq whose consumer is an event loop wakes that loop with
 * event_active(); handlers run on the loop thread, in posting order.
 */
#ifndef TERN_TQ_H
#define TERN_TQ_H

#include <stdint.h>
#include <sys/queue.h>

struct event_base;

enum tq_type {
	TQ_COMMIT_DONE = 1,   /* queue committer -> session loop */
	TQ_NEW_MESSAGE,       /* committer -> scheduler: a message was queued */
	TQ_DELIVERY_JOB,      /* scheduler -> delivery worker */
	TQ_DELIVERY_RESULT,   /* delivery worker -> scheduler */
	TQ_CTL,               /* answers to the control server (ctl_op) */
	TQ_STOP,              /* any -> loop: stop */
	TQ_CALL,              /* run a function on the loop: struct tq_call */
	TQ_AUTH_DONE,         /* auth pool -> session loop: struct auth_result */
};

struct tq_msg {
	STAILQ_ENTRY(tq_msg) next;  /* the queue's link while posted; the
	                              * consumer may reuse it for its own list */
	enum tq_type type;
	uint64_t reqid;       /* who the reply is for (e.g. a session id) */
};

/* Generic "run this on that loop". */
struct tq_call {
	struct tq_msg hdr;
	void (*fn)(void *arg);
	void *arg;
};

typedef void tq_handler(struct tq_msg *msg, void *arg);

struct tq;

/* New queue consumed on base by handler (called on base's thread). */
struct tq *tq_new(struct event_base *base, tq_handler *handler, void *arg);
/* Post from any thread; msg ownership moves to the queue. Never blocks long. */
void tq_post(struct tq *q, struct tq_msg *msg);
/* Post a struct tq_call that runs fn(arg) on the queue's loop. */
void tq_call(struct tq *q, void (*fn)(void *), void *arg);
/* Free the queue; messages still pending are handed to the handler first. */
void tq_free(struct tq *q);

#endif
