/*
 * sched_int.h - the scheduler's core (sched.c) without its thread:
 * sched_loop.c runs it on its own event loop (sched_start); unit tests
 * drive it directly with their own loop, clock and job sink. The thread
 * glue is a separate file so that the core links without the delivery
 * workers. Never included outside queue/ (unit tests excepted).
 */
#ifndef TERN_SCHED_INT_H
#define TERN_SCHED_INT_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/deliver.h"

struct event;
struct event_base;

#define SCHED_NOT_IN_HEAP   SIZE_MAX
#define SCHED_TIMER_MAX     60          /* seconds between timer checks */

/* Where jobs go (deliver_pool_submit in the daemon). Ownership moves. */
typedef void sched_submit_fn(void *arg, struct dlv_job *j);

/*
 * A scheduler core on base (its inbox and commit replies are consumed
 * there): takes a reference on conf. Does not read the store yet.
 */
struct sched *sched_new(struct queue *q, struct conf *conf,
    struct event_base *base, sched_submit_fn *submit, void *arg);
/* Rebuild the schedule from the envelope store (queue_walk). 0 or -1. */
int sched_load(struct sched *s);
/* Learn of a (new or released) message; no-op if already known. */
void sched_add(struct sched *s, uint64_t qid);
/*
 * Start every due message (up to the backlog bound) and submit what the
 * limits allow. Returns the time of the next due message (maybe <= now
 * when the backlog bound stopped it), or INT64_MAX if none.
 */
int64_t sched_run(struct sched *s, int64_t now);
/* Apply one delivery result (ownership moves; it is freed). */
void sched_apply_result(struct sched *s, struct dlv_result *r, int64_t now);
/* Replace the conf (takes a reference, drops the old one). */
void sched_conf_swap(struct sched *s, struct conf *conf);
/* Jobs submitted and not yet answered; jobs waiting for a slot. */
unsigned sched_active(const struct sched *s);
unsigned sched_waiting(const struct sched *s);
/* Messages waiting for their DSN commit to be acknowledged. */
unsigned sched_dsn_pending(const struct sched *s);
/* Testing: the clock used for results that arrive through the inbox. */
void sched_set_clock(struct sched *s, int64_t (*clock)(void));
/* Free a core (after its loop stopped). Waiting jobs are freed. */
void sched_free(struct sched *s);

/* The binary min-heap of (next attempt, qid), exposed for its unit test. */
struct sched_heap_ent {
	int64_t when;
	uint64_t qid;
	void *item;             /* borrowed */
	size_t *pos;            /* borrowed: kept equal to the entry's index */
};
struct sched_heap {
	struct sched_heap_ent *a;
	size_t n, cap;
};

/* ---- the core's state (sched.c; the thread glue in sched_loop.c) ---- */

enum sched_mstate {
	SCHED_M_IDLE,           /* in the heap */
	SCHED_M_RUNNING,        /* a round is out: njobs unanswered */
	SCHED_M_DSN,            /* waiting for the DSN commit */
};

struct sched_msg {
	uint64_t qid;
	struct sched_msg *hnext;        /* hash chain */
	size_t hpos;                    /* heap index or SCHED_NOT_IN_HEAP */
	enum sched_mstate state;
	unsigned njobs;
	size_t *perm, nperm;            /* round: permanent failures */
	size_t *expired, nexpired;      /* SCHED_M_DSN: expiring recipients */
	size_t *relayed, nrelayed;      /* round: sent with NOTIFY=SUCCESS to a
	                                   hop without DSN ("relayed" DSN) */
	int warn;                       /* SCHED_M_DSN: the delay warning */
};

struct sched_dest {
	struct sched_dest *next;
	char *key;                      /* owned */
	unsigned active;                /* jobs at a worker */
	struct tq_msg *head, **tailp;   /* waiting jobs (owned), by hdr.next */
	unsigned nwait;
};

struct sched_flight {
	uint64_t jobid;
	uint64_t qid;
	struct sched_dest *dest;        /* borrowed */
};

/* The inbox handler kicks timer (when set) after each message; the last
 * DSN commit reply breaks the loop once stopping is set. */
struct sched {
	struct queue *q;                /* borrowed */
	struct conf *conf;              /* a reference */
	struct event_base *base;        /* borrowed, or owned (own_base) */
	sched_submit_fn *submit;
	void *submit_arg;
	struct tq *inbox;               /* owned */

	struct sched_msg **tab;         /* hash of known messages */
	size_t tabsz, nmsg;
	struct sched_heap heap;
	struct sched_dest *dests;
	struct sched_flight *fl;
	size_t nfl, flcap;
	unsigned active, waiting, dsn_pending;
	uint64_t next_jobid;
	uint64_t rnd;
	int64_t (*clock)(void);
	int freeing;

	/* thread mode (sched_start) */
	int own_base, stopping, running;
	struct event *timer;
	pthread_t thr;
};

/* ---- operator actions (the block at the end of sched.c) ---- */

/* 1 if qid has a round or a DSN commit out (its state may not be changed). */
int sched_ctl_busy(const struct sched *s, uint64_t qid);
/* Forget qid if it is known and idle (held, deleted). */
void sched_ctl_unschedule(struct sched *s, uint64_t qid);
/* Put qid in the heap at when (learning it if unknown); no-op if busy. */
void sched_ctl_schedule(struct sched *s, uint64_t qid, int64_t when);
/*
 * Fail every pending recipient of the idle message qid now: a round whose
 * failures are all of them, so the usual bounce path runs (DSN, then
 * BOUNCED, then removal); the caller has written their status and reply.
 * 0, 1 no such message, -1 busy or store error.
 */
int sched_ctl_bounce(struct sched *s, uint64_t qid, int64_t now);

void sched_heap_push(struct sched_heap *h, int64_t when, uint64_t qid,
    void *item, size_t *pos);
/* Remove the smallest; 0 if empty. */
int sched_heap_pop(struct sched_heap *h, struct sched_heap_ent *out);
void sched_heap_remove(struct sched_heap *h, size_t i);
void sched_heap_free(struct sched_heap *h);

#endif
