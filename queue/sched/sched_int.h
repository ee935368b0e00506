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
#include <sys/queue.h>

#include "tern/deliver.h"
#include "tern/queue.h"

struct event;
struct event_base;
struct json_writer;

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
/*
 * Rebuild the schedule from the envelope store, all at once (sched_load)
 * or max entries per call (sched_load_slice: 1 more to read, 0 loaded,
 * -1 the walk failed). Messages already known are left as they are.
 */
#define SCHED_LOAD_SLICE    2000
int sched_load(struct sched *s);
int sched_load_slice(struct sched *s, size_t max);
/* Learn of a (new or released) message; no-op if already known. */
void sched_add(struct sched *s, uint64_t qid);
/*
 * Start due messages (at most SCHED_POP_BATCH per call) into their
 * destinations' queues and submit what the limits allow, round-robin over
 * the destinations, while fewer than SCHED_WAIT_MAX jobs wait for a slot.
 * Returns the time of the next due message (<= now when the batch bound
 * stopped it: call again soon; now + 1 when the waiting bound did), or
 * INT64_MAX if none.
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
/*
 * Remove the finished messages gathered (thread mode: sched_finalize
 * gathers them, the timer that follows a run of results removes them in
 * one transaction and logs "removed"; without a timer they go at once).
 */
void sched_remove_flush(struct sched *s);
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

struct sched_dest;

/* Recipients of one message for one destination, not yet a job: built
 * into a dlv_job only when handed out, with the envelope read again, or
 * with env when the round has this one job (nothing else writes the
 * message meanwhile; hold, delete and bounce take the round back). */
struct sched_wait {
	TAILQ_ENTRY(sched_wait) link;   /* d->wait */
	TAILQ_ENTRY(sched_wait) mlink;  /* m->waits */
	struct sched_msg *m;            /* borrowed: its njobs counts us */
	struct sched_dest *d;           /* borrowed: whose queue we are in */
	size_t *idx, n;                 /* owned: recipient indexes */
	struct envelope *env;           /* owned or NULL (above) */
};
/* Free w (not linked anywhere any more). */
void sched_wait_free(struct sched_wait *w);
TAILQ_HEAD(sched_wait_list, sched_wait);
TAILQ_HEAD(sched_wait_mlist, sched_wait);

struct sched_msg {
	uint64_t qid;
	struct sched_msg *hnext;        /* hash chain */
	size_t hpos;                    /* heap index or SCHED_NOT_IN_HEAP */
	enum sched_mstate state;
	unsigned njobs;
	unsigned round_jobs;            /* round: the jobs it started with */
	size_t *perm, nperm;            /* round: permanent failures */
	size_t *expired, nexpired;      /* SCHED_M_DSN: expiring recipients */
	size_t *relayed, nrelayed;      /* round: sent with NOTIFY=SUCCESS to a
	                                   hop without DSN ("relayed" DSN) */
	int warn;                       /* SCHED_M_DSN: the delay warning */
	int64_t not_before;             /* round: a destination was down until
	                                   then; the next attempt waits */
	struct sched_wait_mlist waits;  /* round: jobs still in a queue */
	unsigned nwaits;
};

/*
 * Concurrency window of a destination (pure, sched_dest.c): slow start at
 * dest-initial-connections, +1 after `limit` successful sessions in a row
 * (up to the destination's maximum), -1 on a failed one (down to 1).
 * `nfail` counts failed sessions since the last success: reaching the
 * cohort (dest-failure-cohort) marks the destination down.
 */
struct sched_window {
	unsigned limit;                 /* sessions allowed at once */
	unsigned credit;                /* successes since the last raise */
	unsigned nfail;                 /* failed sessions in a row */
};

enum sched_fb { SCHED_FB_NONE, SCHED_FB_UP, SCHED_FB_DOWNSIZE,
	SCHED_FB_DEAD };

void sched_window_init(struct sched_window *w, unsigned initial,
    unsigned max);
/* Apply one session's outcome; SCHED_FB_DEAD when the cohort is reached. */
enum sched_fb sched_window_feedback(struct sched_window *w, enum dlv_peer p,
    unsigned max, unsigned cohort);
/* Down time after `ndown` failed periods in a row: base doubled each time,
 * at most 8 x base. */
unsigned sched_down_period(unsigned base, unsigned ndown);

enum sched_dstate {
	SCHED_D_UP,
	SCHED_D_DOWN,                   /* until down_until: no connection */
	SCHED_D_PROBE,                  /* one session decides */
};

struct sched_dest {
	char *key;                      /* owned: "mx:dom", "smtp:host:port:tls" */
	char *name;                     /* owned: the domain or the host */
	struct sched_dest *hnext;       /* hash chain */
	TAILQ_ENTRY(sched_dest) all;    /* s->dests */
	TAILQ_ENTRY(sched_dest) ready;  /* s->ready while in_ready */
	int in_ready;
	struct sched_wait_list wait;    /* owned */
	unsigned nwait;
	unsigned active;                /* jobs at a worker */
	unsigned max;                   /* dest-limit or max-dest-connections */
	struct sched_window win;
	enum sched_dstate state;
	int64_t down_until;
	unsigned ndown;                 /* down periods in a row */
	uint64_t nskipped;              /* deferrals without connecting */
	int64_t last_used;
	char last_status[16];
	char last_error[300];           /* the last failed session's reason */
};
TAILQ_HEAD(sched_dest_list, sched_dest);

struct sched_flight {
	uint64_t jobid;
	uint64_t qid;
	struct sched_dest *dest;        /* borrowed */
	struct sched_flight *hnext;
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
	struct sched_dest **dtab;       /* hash of destinations by key */
	size_t dtabsz, ndest;
	struct sched_dest_list dests;   /* every destination */
	struct sched_dest_list ready;   /* those that may start a job now */
	struct sched_flight **ftab;     /* hash of jobs in flight by job id */
	size_t ftabsz, nfl;
	int64_t swept, published;
	unsigned active, waiting, dsn_pending;
	uint64_t next_jobid;
	uint64_t rnd;
	int64_t (*clock)(void);
	int freeing;
	struct {                        /* the load (sched_load_slice) */
		struct queue_due_pos due;       /* next-attempt order: the
		                                   last (when, id) read */
		int by_id;              /* no query index: the envelopes */
		uint64_t after;         /* by_id: the last id read */
		uint64_t seen;          /* entries read */
		uint64_t total;         /* entries at open (an estimate) */
		uint64_t t0;            /* monotonic us at the first slice */
		int done;
	} load;

	uint64_t rm[QUEUE_REMOVE_BATCH];        /* finished, to remove in
	                                           one transaction */
	size_t nrm;

	/* thread mode (sched_start) */
	int own_base, stopping, running;
	struct event *timer;
	struct event *load_ev;          /* the next slice of the load */
	pthread_t thr;
};

/* ---- destinations (sched_dest.c) ---- */

#define SCHED_POP_BATCH     1000        /* due messages started per run */
#define SCHED_WAIT_MAX      10000       /* jobs waiting for a slot: no more
                                           due messages start beyond it */
#define SCHED_SWEEP_SEC     5           /* idle destinations, due probes */
#define SCHED_STATS_MAX     200         /* destinations listed by stats */

void sched_dest_init(struct sched *s);
void sched_dest_free_all(struct sched *s);
/* The destination for key (created with its name when new). */
struct sched_dest *sched_dest_get(struct sched *s, const char *key,
    const char *name, int64_t now);
/* 1 if d is down at now (deferred without connecting); a down destination
 * whose period ended becomes a probe (one session) here. */
int sched_dest_down(struct sched *s, struct sched_dest *d, int64_t now);
/* Put d on the round-robin ring if it may start a job now. */
void sched_dest_kick(struct sched *s, struct sched_dest *d);
/* The next destination that may start a job, taken off the ring; NULL. */
struct sched_dest *sched_dest_next(struct sched *s);
/* Apply a session's outcome to d; returns SCHED_FB_DEAD when d just went
 * down (the caller defers its waiting jobs). */
enum sched_fb sched_dest_feedback(struct sched *s, struct sched_dest *d,
    const struct dlv_result *r, int64_t now);
/* Lift down marks: the destination for domain, or all (domain NULL). */
void sched_dest_lift(struct sched *s, const char *domain, int64_t now);
/* Conf swap: limits again. */
void sched_dest_conf(struct sched *s);
/* Periodic: due probes kicked, idle destinations forgotten, /metrics. */
void sched_dest_sweep(struct sched *s, int64_t now);
/* "destinations" of stats: the busiest and the down ones first. */
void sched_dest_stats(const struct sched *s, struct json_writer *w,
    int64_t now);
/* "mx:domain", or the static next hop "smtp:host:port:tls" (lowercase);
 * *name: the domain or the host (borrowed from the result or from r). */
char *sched_dest_key(const struct conf_route *r, const char *domain,
    const char **name);

/* In-flight jobs by id (sched_dest.c). */
void sched_flight_add(struct sched *s, uint64_t jobid, uint64_t qid,
    struct sched_dest *d);
int sched_flight_take(struct sched *s, uint64_t jobid,
    struct sched_flight *out);

/* ---- operator actions (the block at the end of sched.c) ---- */

/*
 * 1 if qid has a job at a worker or a DSN commit out (its state may not be
 * changed). A round whose jobs all still wait in destination queues, with
 * nothing decided yet, is not busy: hold, delete and bounce take it back.
 */
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

/* ---- the retry policy (retry.c; sched_retry_delay: tern/deliver.h) ---- */

/*
 * The next attempt of a message whose round ended at now, its attempts
 * already counted; not_before: a down destination's end, or 0. rnd gives
 * values in [0, 1) (called once, twice when not_before decides).
 */
int64_t sched_retry_next(const struct conf *c, unsigned attempts,
    int64_t not_before, int64_t now, double (*rnd)(void *arg), void *arg);
/* 1 if env, with npend recipients still pending, has expired at now. */
int sched_retry_expired(const struct conf *c, const struct envelope *env,
    size_t npend, int64_t now);
/* 1 if env's delay warning is due at now (at most once per message). */
int sched_retry_warn_due(const struct conf *c, const struct envelope *env,
    size_t npend, int64_t now);
/* The "Will-Retry-Until" of a delay warning: expiry time, or 0 for none. */
int64_t sched_retry_until(const struct conf *c, const struct envelope *env);

void sched_heap_push(struct sched_heap *h, int64_t when, uint64_t qid,
    void *item, size_t *pos);
/* Remove the smallest; 0 if empty. */
int sched_heap_pop(struct sched_heap *h, struct sched_heap_ent *out);
void sched_heap_remove(struct sched_heap *h, size_t i);
void sched_heap_free(struct sched_heap *h);

#endif
