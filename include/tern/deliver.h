/*
 * deliver.h - the scheduler (queue/sched/) and the delivery workers
 * (queue/mta/); doc/design.md has the threads and the message flow.
 *
 * The scheduler is one thread with its own event loop. It owns the
 * in-memory schedule (a heap of message ids by next attempt, rebuilt from
 * the envelope store at start), groups each due message's pending
 * recipients by destination into per-destination queues, hands jobs to the
 * delivery workers round-robin over the destinations within each one's
 * concurrency window (slow start, feedback from dlv_result.peer) and the
 * global connection limit, and marks destinations whose sessions keep
 * failing down for a while (their messages deferred without connecting). It alone
 * writes delivery results to the envelope store (queue_update/remove) and
 * generates bounces (DSN, RFC 3464) and delay warnings.
 *
 * A delivery worker is one thread with its own event loop and its own
 * resolver (c-ares). It runs many outbound SMTP (or LMTP) sessions at
 * once, resolves each job's route, tries every address of every exchanger
 * in order, reuses idle connections to the same next hop, and reports one
 * result per recipient. Workers never write the envelope store: they only
 * read a message's body (queue_read_body) once a connection is ready for it.
 *
 * Jobs and results are tq messages (tern/tq.h); ownership moves with them.
 */
#ifndef TERN_DELIVER_H
#define TERN_DELIVER_H

#include <stddef.h>
#include <stdint.h>

#include "tern/conf.h"
#include "tern/queue.h"
#include "tern/tq.h"

struct sched;
struct deliver_pool;

/* Outcome class of one recipient's attempt. */
enum dlv_class {
	DLV_OK = 0,         /* 2xx after DATA: delivered */
	DLV_TEMP,           /* 4xx, network, DNS temporary: retry later */
	DLV_PERM,           /* 5xx, null MX, NXDOMAIN: bounce now */
};

/*
 * What a job's attempt says about its destination, for the scheduler's
 * concurrency feedback and dead-destination detection. 0 (NONE) when no
 * server was reached or the failure was not the server's (DNS, a bad
 * address, a 5xx refusal of the connection).
 */
enum dlv_peer {
	DLV_PEER_NONE = 0,
	DLV_PEER_OK,        /* a server took the transaction (any replies) */
	DLV_PEER_FAIL,      /* connect failed or timed out, no greeting, 4xx or
	                       421 before MAIL, connection lost or timed out */
};

struct dlv_rcpt_result {
	size_t rcpt;            /* index into the envelope's rcpts */
	enum dlv_class cls;
	char status[16];        /* enhanced status "5.1.1" */
	char *reply;            /* owned or NULL: the server's reply text or our reason */
};

/*
 * A job: deliver some recipients of one message to one destination. The
 * worker reads the body itself (queue_read_body is thread-safe).
 */
struct dlv_job {
	struct tq_msg hdr;              /* TQ_DELIVERY_JOB; reqid = job id */
	struct envelope *env;           /* owned: a snapshot of the envelope */
	size_t *rcpts;                  /* owned: indexes of the recipients to try */
	size_t nrcpt;
	char *domain;                   /* owned: recipient domain (the destination) */
	struct conf_route route;        /* copy; route.domain/host owned by the job */
	struct tq *reply;               /* borrowed: where the result goes */
};

struct dlv_result {
	struct tq_msg hdr;              /* TQ_DELIVERY_RESULT; reqid = job id */
	uint64_t qid;
	struct dlv_rcpt_result *r;      /* owned array, one per job recipient */
	size_t n;
	char *relay;                    /* owned or NULL: "mx.example[192.0.2.1]:25" */
	char *tls;                      /* owned or NULL: "TLSv1.3 TLS_AES_256_GCM_SHA384" */
	const char *tls_mode;           /* static or NULL (= "none"): how the
	                                   next hop's TLS was checked: "may",
	                                   "encrypt", "verified",
	                                   "dane-verified", "sts-verified",
	                                   "sts-testing" */
	int peer_dsn;                   /* the next hop offered DSN (RFC 3461): it
	                                   took over NOTIFY for accepted recipients */
	uint64_t elapsed_us;
	enum dlv_peer peer;
	struct envelope *env;           /* owned or NULL: the job's snapshot, handed
	                                   back so that the scheduler need not read
	                                   the envelope again (sched.c says when it
	                                   may use it) */
};

void dlv_job_free(struct dlv_job *j);
void dlv_result_free(struct dlv_result *r);

/* ---- workers (queue/mta/deliver.c) ---- */

/* Start n worker threads; results of jobs go to each job's reply tq. */
struct deliver_pool *deliver_pool_start(struct queue *q, struct conf *conf,
    unsigned n);
/* Hand a job to a worker (any thread); ownership moves. */
void deliver_pool_submit(struct deliver_pool *p, struct dlv_job *j);
/* Replace the conf used for new jobs (reload). */
void deliver_pool_set_conf(struct deliver_pool *p, struct conf *conf);
/*
 * Stop: abandon in-flight attempts (their recipients stay pending), join
 * the workers. Jobs submitted afterwards are dropped. The pool stays
 * allocated until deliver_pool_free(), to be called once the scheduler
 * that submits to it has stopped.
 */
void deliver_pool_stop(struct deliver_pool *p);
void deliver_pool_free(struct deliver_pool *p);

/* ---- scheduler (queue/sched/sched.c) ---- */

struct sched *sched_start(struct queue *q, struct conf *conf,
    struct deliver_pool *pool);
/* Its inbox: the committer posts TQ_NEW_MESSAGE here (queue_set_notify). */
struct tq *sched_inbox(struct sched *s);
void sched_set_conf(struct sched *s, struct conf *conf);
void sched_stop(struct sched *s);

struct ctl_op;
/*
 * Hand an operator request (tern/ctl.h: hold, release, delete, retry,
 * bounce, pause, resume, stats) to the scheduler thread, from any thread;
 * ownership moves. It is applied and answered (op->reply) there, so the
 * schedule, the in-flight set and the envelope store never race.
 */
void sched_ctl_submit(struct sched *s, struct ctl_op *op);

/*
 * Delay before attempt number `attempt` (1 = the first retry) from the
 * retry schedule, the last step repeating, with up to +-10% jitter from
 * rnd (a value in [0, 1)). Pure. The rest of the retry policy (next
 * attempt, expiry, delay warning) is beside it in queue/sched/retry.c.
 */
unsigned sched_retry_delay(const unsigned *steps, size_t nsteps,
    unsigned attempt, double rnd);

#endif
