/*
 * sched_loop.c - the scheduler's thread (tern/deliver.h): one event loop
 * that runs the core of sched.c, a timer for the next due message, and the
 * glue to the delivery workers (deliver_pool_submit). Kept apart from the
 * core so that the core and its unit test link without the workers.
 *
 * Runs: sched_start/sched_set_conf/sched_stop/sched_ctl_submit on the
 * caller's thread; the rest on the scheduler thread. Never blocks the caller
 * beyond the join at stop. The schedule is loaded from the envelope store
 * on the scheduler thread, soonest next attempt first (sched.c),
 * SCHED_LOAD_SLICE entries per turn of its loop (sched_load_cb), while new
 * mail, results and operator requests are served; stats show the progress
 * ("loading"). The timer that follows a run of the inbox also writes the
 * run's log lines (one batch) and removes the messages it finished.
 *
 * Operator requests (struct ctl_op, tern/ctl.h) arrive as tq calls on the
 * inbox and run here, on the thread that owns the schedule: each reads the
 * envelope, refuses a message whose attempt is in flight (sched_ctl_busy),
 * writes the change (queue_update/queue_remove) and then fixes the schedule,
 * and answers through the op's own reply (posted back to the control loop).
 *
 * This file also owns what the operator sees of delivery as it happens
 * (struct sched_ops, the submit argument of a threaded core): pause parks
 * the jobs the core hands out (all, or those
 * with a recipient in a paused domain) instead of giving them to a worker,
 * and while all delivery is paused no due message is started. Parked jobs
 * are in flight for the core (they hold their destination's slots) until
 * resume submits them.
 *
 * Shutdown order (caller): deliver_pool_stop() first (no result arrives
 * later; jobs handed out meanwhile are dropped), then sched_stop() (waits
 * for DSN commits in flight), then deliver_pool_free() and queue_close(). libevent must be thread-enabled (evthread_use_pthreads):
 * workers and the committer post to the inbox from their threads.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "tern/ctl.h"
#include "tern/json.h"
#include "tern/metrics.h"
#include "tern/log.h"
#include "tern/util.h"
#include "sched_int.h"

/* The operator's side of a threaded scheduler: its core's submit_arg. */
struct sched_ops {
	struct sched *s;                /* borrowed: owns nothing of us */
	struct deliver_pool *pool;      /* borrowed */
	int paused_all;
	char **pdom;                    /* owned: paused domains, lower case */
	size_t npdom;
	STAILQ_HEAD(, tq_msg) parked;  /* owned jobs, by hdr.next */
	int64_t started;
};

static int
sched_ops_dom_paused(const struct sched_ops *o, const char *dom)
{
	for (size_t i = 0; i < o->npdom; i++)
		if (strcasecmp(o->pdom[i], dom) == 0)
			return 1;
	return 0;
}

/* 1 if the job must wait: all paused, or one of its recipients' domains. */
static int
sched_ops_job_paused(const struct sched_ops *o, const struct dlv_job *j)
{
	if (o->paused_all)
		return 1;
	if (o->npdom == 0)
		return 0;
	if (j->domain != NULL && sched_ops_dom_paused(o, j->domain))
		return 1;
	for (size_t k = 0; k < j->nrcpt; k++) {
		size_t i = j->rcpts[k];
		if (i < j->env->nrcpt && j->env->rcpts[i].addr != NULL &&
		    sched_ops_dom_paused(o,
		    addr_domain(j->env->rcpts[i].addr)))
			return 1;
	}
	return 0;
}

/* The core hands a job out (scheduler thread). */
static void
sched_submit_pool(void *arg, struct dlv_job *j)
{
	struct sched_ops *o = arg;

	if (sched_ops_job_paused(o, j)) {
		STAILQ_INSERT_TAIL(&o->parked, &j->hdr, next);
		return;
	}
	deliver_pool_submit(o->pool, j);
}

/* Give the workers the parked jobs no pause holds any more. */
static void
sched_ops_unpark(struct sched_ops *o)
{
	STAILQ_HEAD(, tq_msg) keep = STAILQ_HEAD_INITIALIZER(keep);
	struct tq_msg *m;

	while ((m = STAILQ_FIRST(&o->parked)) != NULL) {
		struct dlv_job *j = (struct dlv_job *)m;
		STAILQ_REMOVE_HEAD(&o->parked, next);
		if (sched_ops_job_paused(o, j))
			STAILQ_INSERT_TAIL(&keep, m, next);
		else
			deliver_pool_submit(o->pool, j);
	}
	STAILQ_CONCAT(&o->parked, &keep);
}

static void
sched_ops_kick(struct sched_ops *o)
{
	if (o->s->timer != NULL && !o->s->freeing)
		event_active(o->s->timer, EV_TIMEOUT, 0);
}

static void
sched_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sched *s = arg;
	int64_t now = s->clock(), next;
	struct timeval tv = { 0, 0 };

	if (s->stopping) {
		sched_remove_flush(s);
		log_batch_end();
		return;
	}
	if (((struct sched_ops *)s->submit_arg)->paused_all)
		next = INT64_MAX;       /* nothing starts; resume kicks us */
	else
		next = sched_run(s, now);
	if (next == INT64_MAX || next - now > SCHED_TIMER_MAX)
		tv.tv_sec = SCHED_TIMER_MAX;
	else if (next > now)
		tv.tv_sec = (time_t)(next - now);
	else
		tv.tv_usec = 1000;      /* more due: the next batch, soon */
	/* destinations to sweep (probes, /metrics) */
	if (s->ndest > 0 && tv.tv_sec > SCHED_SWEEP_SEC) {
		tv.tv_sec = SCHED_SWEEP_SEC;
		tv.tv_usec = 0;
	}
	evtimer_add(s->timer, &tv);
	sched_remove_flush(s);          /* what the inbox gathered (sched.c) */
	log_batch_end();
}

/* One slice of the load per turn of the loop, until it is done. */
static void
sched_load_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sched *s = arg;
	struct timeval tv = { 0, 0 };
	int rc;

	(void)fd;
	(void)what;
	if (s->stopping)
		return;
	if ((rc = sched_load_slice(s, SCHED_LOAD_SLICE)) < 0 &&
	    (s->load.done = 1))
		log_warnx("scheduler: the envelope walk failed; messages not "
		    "seen will be picked up at the next start");
	if (rc > 0)
		evtimer_add(s->load_ev, &tv);   /* after the loop polls again */
	event_active(s->timer, EV_TIMEOUT, 0);  /* what this slice made due */
}

static void *
sched_thread(void *arg)
{
	struct sched *s = arg;
	event_base_loop(s->base, EVLOOP_NO_EXIT_ON_EMPTY);
	sched_remove_flush(s);
	log_batch_end();
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
	struct sched_ops *o = xcalloc(1, sizeof(*o));
	STAILQ_INIT(&o->parked);
	o->pool = pool;
	o->started = now_unix();
	s = sched_new(q, conf, base, sched_submit_pool, o);
	o->s = s;
	s->own_base = 1;
	if ((s->timer = evtimer_new(base, sched_timer_cb, s)) == NULL ||
	    (s->load_ev = evtimer_new(base, sched_load_cb, s)) == NULL)
		fatalx("sched_start: evtimer_new failed");
	/* notify first, then walk: nothing committed in between is missed
	 * (sched_add and the load ignore ids already known) */
	queue_set_notify(q, s->inbox);
	s->load.total = queue_open_entries(q);
	log_info("scheduler: loading the schedule in the background");
	event_active(s->load_ev, EV_TIMEOUT, 0);
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
	struct sched_ops *o;
	struct tq_msg *m;

	if (s == NULL)
		return;
	o = s->submit_arg;
	queue_set_notify(s->q, NULL);
	if (s->running) {
		tq_call(s->inbox, sched_stop_call, s);
		pthread_join(s->thr, NULL);
	}
	if (s->timer != NULL)
		event_free(s->timer);
	s->timer = NULL;
	if (s->load_ev != NULL)
		event_free(s->load_ev);
	s->load_ev = NULL;
	/* the workers have stopped: no result comes any more */
	while ((m = STAILQ_FIRST(&o->parked)) != NULL) {
		STAILQ_REMOVE_HEAD(&o->parked, next);
		dlv_job_free((struct dlv_job *)m);
	}
	base = s->own_base ? s->base : NULL;
	sched_free(s);      /* operator requests still queued are answered */
	for (size_t i = 0; i < o->npdom; i++)
		free(o->pdom[i]);
	free(o->pdom);
	free(o);
	if (base != NULL)
		event_base_free(base);
}

/* ------------------------------------------------------------------ */
/* operator requests (scheduler thread) */

/*
 * An operator's request. One naming many messages (delete/hold/... all
 * matching a filter: possibly the whole queue) is done SCHED_OPS_SLICE
 * messages per turn of the loop, each a write of the index, so deliveries'
 * results, the dispatch timer and other requests are served in between:
 * the rest is posted to the inbox again (which sched_free drains, failing
 * it, when the scheduler stops meanwhile).
 */
#define SCHED_OPS_SLICE 256

struct sched_ctl_call {
	struct sched *s;
	struct ctl_op *op;              /* owned */
	struct json_writer w;           /* the answer so far */
	size_t next;                    /* op->ids[next]: the next message */
	uint64_t *skid;                 /* skipped ids and their (static) */
	const char **skr;               /* reasons, written after "ids" */
	size_t nsk;
};

static const char *
sched_ops_state_text(const char *reason)
{
	if (strcmp(reason, "in flight") == 0)
		return "message is being delivered (attempt in flight, or "
		    "delivery paused): try again when it returns";
	if (strcmp(reason, "held") == 0)
		return "message is held: release it first";
	if (strcmp(reason, "corrupt") == 0)
		return "message is corrupt: it cannot be delivered";
	if (strcmp(reason, "nothing pending") == 0)
		return "message has no pending recipient";
	return reason;
}

static void
sched_ops_log(const char *qid, const char *what)
{
	log_info("id=%s status=%s by=operator", qid, what);
}

/* A retried message's destinations are no longer down (operator's word). */
static void
sched_ops_lift_env(struct sched *s, const struct envelope *env, int64_t now)
{
	for (size_t i = 0; i < env->nrcpt; i++)
		if (env->rcpts[i].state == RCPT_PENDING)
			sched_dest_lift(s, addr_domain(env->rcpts[i].addr), now);
}

/*
 * Apply op type t to one message. 0 done; else a CTL_E_* code with
 * *reason ("gone", "in flight", ...).
 */
static int
sched_ops_one(struct sched_ops *o, enum ctl_op_type t, uint64_t id,
    int64_t now, const char **reason)
{
	struct sched *s = o->s;
	struct envelope *env = NULL;
	char qid[QID_STRLEN + 1];
	size_t npend = 0;
	int rc, code = 0;

	qid_format(id, qid);
	if ((rc = queue_get(s->q, id, &env)) == 1) {
		*reason = "gone";
		return CTL_E_NOT_FOUND;
	}
	if (rc != 0) {
		*reason = "cannot read the queue";
		return CTL_E_INTERNAL;
	}
	int busy = sched_ctl_busy(s, id);
	*reason = NULL;
	switch (t) {
	case CTL_OP_HOLD:
		if (busy) {
			*reason = "in flight";
			break;
		}
		if (!(env->flags & ENV_F_HOLD)) {
			env->flags |= ENV_F_HOLD;
			if (queue_update(s->q, env) < 0)
				goto io;
			sched_ops_log(qid, "held");
		}
		sched_ctl_unschedule(s, id);
		break;
	case CTL_OP_RELEASE:
		if (env->flags & ENV_F_HOLD) {
			env->flags &= ~ENV_F_HOLD;
			env->next_attempt = now;
			if (queue_update(s->q, env) < 0)
				goto io;
			sched_ops_log(qid, "released");
		}
		if (!(env->flags & ENV_F_CORRUPT))
			sched_ctl_schedule(s, id, now);
		break;
	case CTL_OP_DELETE:
		if (busy) {
			*reason = "in flight";
			break;
		}
		for (size_t i = 0; i < env->nrcpt; i++) {
			if (env->rcpts[i].state != RCPT_PENDING)
				continue;
			env->rcpts[i].state = RCPT_DELETED;
			env->rcpts[i].updated = now;
		}
		/* durable as deleted first: a crash before the remove leaves
		 * a message with nothing pending, removed at the next start */
		if (queue_update(s->q, env) < 0 ||
		    (queue_remove(s->q, id) < 0 && errno != ENOENT))
			goto io;
		sched_ctl_unschedule(s, id);
		sched_ops_log(qid, "deleted");
		break;
	case CTL_OP_RETRY:
		sched_ops_lift_env(s, env, now);
		if (env->flags & ENV_F_HOLD)
			*reason = "held";
		else if (env->flags & ENV_F_CORRUPT)
			*reason = "corrupt";
		else if (busy)
			*reason = "in flight";
		if (*reason != NULL)
			break;
		env->next_attempt = now;
		if (queue_update(s->q, env) < 0)
			goto io;
		sched_ctl_schedule(s, id, now);
		log_info("id=%s retry now by=operator", qid);
		break;
	case CTL_OP_BOUNCE:
		npend = envelope_pending(env);
		if (busy) {
			*reason = "in flight";
			break;
		}
		if (npend == 0) {
			*reason = "nothing pending";
			break;
		}
		for (size_t i = 0; i < env->nrcpt; i++) {
			struct env_rcpt *rc2 = &env->rcpts[i];
			if (rc2->state != RCPT_PENDING)
				continue;
			free(rc2->status);
			free(rc2->last_error);
			free(rc2->relay);
			rc2->status = xstrdup("5.0.0");
			rc2->last_error = xstrdup("bounced by the operator");
			rc2->relay = NULL;
			rc2->updated = now;
		}
		if (queue_update(s->q, env) < 0)
			goto io;
		log_info("id=%s status=bounce nrcpt=%zu by=operator", qid, npend);
		if (sched_ctl_bounce(s, id, now) != 0)
			goto io;
		break;
	default:
		panic("sched_ops_one: op %d", (int)t);
	}
	if (*reason != NULL)
		code = CTL_E_STATE;
	envelope_free(env);
	return code;
io:
	log_warn("id=%s operator request", qid);
	envelope_free(env);
	*reason = "cannot update the queue";
	return CTL_E_INTERNAL;
}

static void
sched_ops_paused_write(const struct sched_ops *o, struct json_writer *w)
{
	json_key(w, "paused_all");
	json_put_bool(w, o->paused_all);
	json_key(w, "paused_domains");
	json_arr_open(w);
	for (size_t i = 0; i < o->npdom; i++)
		json_put_str(w, o->pdom[i]);
	json_arr_close(w);
}

static void
sched_ops_pause(struct sched_ops *o, const struct ctl_op *op)
{
	const char *d = op->domain;

	if (op->type == CTL_OP_PAUSE) {
		if (d[0] == '\0')
			o->paused_all = 1;
		else if (!sched_ops_dom_paused(o, d)) {
			o->pdom = xreallocarray(o->pdom, o->npdom + 1,
			    sizeof(*o->pdom));
			o->pdom[o->npdom++] = xstrdup(d);
		}
		log_info("delivery paused for=%s by=operator", d[0] ? d : "all");
		return;
	}
	if (d[0] == '\0') {
		o->paused_all = 0;
		for (size_t i = 0; i < o->npdom; i++)
			free(o->pdom[i]);
		o->npdom = 0;
	} else {
		for (size_t i = 0; i < o->npdom; i++) {
			if (strcasecmp(o->pdom[i], d) == 0) {
				free(o->pdom[i]);
				o->pdom[i] = o->pdom[--o->npdom];
				break;
			}
		}
	}
	log_info("delivery resumed for=%s by=operator", d[0] ? d : "all");
	sched_ops_unpark(o);
}

static uint64_t
sched_ops_count(enum metrics_delivery d)
{
	return __atomic_load_n(&tern_metrics.deliveries_total[d],
	    __ATOMIC_RELAXED);
}

static void
sched_ops_stats(struct sched_ops *o, struct json_writer *w)
{
	json_key(w, "running");
	json_put_bool(w, 1);
	json_key(w, "uptime");
	json_put_int(w, now_unix() - o->started);
	json_key(w, "counters");
	json_obj_open(w);
	json_key(w, "accepted");
	json_put_uint(w, __atomic_load_n(&tern_metrics.messages_accepted_total,
	    __ATOMIC_RELAXED));
	/* the scheduler counts them in tern_metrics (sched_log_rcpt) */
	json_key(w, "delivered");
	json_put_uint(w, sched_ops_count(METRICS_DLV_SENT));
	json_key(w, "deferred");
	json_put_uint(w, sched_ops_count(METRICS_DLV_DEFERRED));
	json_key(w, "bounced");
	json_put_uint(w, sched_ops_count(METRICS_DLV_BOUNCED));
	json_key(w, "expired");
	json_put_uint(w, sched_ops_count(METRICS_DLV_EXPIRED));
	json_key(w, "dsn");
	json_put_uint(w, __atomic_load_n(&tern_metrics.dsn_total,
	    __ATOMIC_RELAXED));
	json_obj_close(w);
	sched_ops_paused_write(o, w);
	json_key(w, "loading");
	json_obj_open(w);
	json_key(w, "done");
	json_put_bool(w, o->s->load.done);
	json_key(w, "read");
	json_put_uint(w, o->s->load.seen);
	json_key(w, "total");
	json_put_uint(w, o->s->load.total);     /* 0: not known */
	json_obj_close(w);
	sched_dest_stats(o->s, w, o->s->clock());
	json_key(w, "queue");
}

/* Done with c: its answer so far (if any) is dropped. */
static void
sched_ctl_call_free(struct sched_ctl_call *c)
{
	json_writer_reset(&c->w);
	free(c->skid);
	free(c->skr);
	free(c);
}

/*
 * The next slice of a bulk request (hold, release, delete, retry, bounce);
 * the answer once every id is done. A single named message that cannot be
 * acted on fails the request instead.
 */
static void
sched_ctl_slice(void *arg)
{
	struct sched_ctl_call *c = arg;
	struct sched *s = c->s;
	struct ctl_op *op = c->op;
	struct sched_ops *o = s->submit_arg;
	int64_t now = s->clock();
	char qid[QID_STRLEN + 1];
	size_t end = c->next + SCHED_OPS_SLICE;

	if (s->stopping || s->freeing) {
		char text[128];
		snprintf(text, sizeof(text), "ternd is stopping: %zu of %zu "
		    "messages were done", c->next - c->nsk, op->nids);
		op->fail(op, CTL_E_INTERNAL, text);
		sched_ctl_call_free(c);
		return;
	}
	sched_remove_flush(s);          /* see sched_ctl_call */
	for (; c->next < op->nids && c->next < end; c->next++) {
		const char *reason = NULL;
		uint64_t id = op->ids[c->next];
		int code = sched_ops_one(o, op->type, id, now, &reason);
		if (code != 0 && op->single) {
			op->fail(op, code, code == CTL_E_NOT_FOUND ?
			    "no such message" : sched_ops_state_text(reason));
			sched_ops_kick(o);
			sched_ctl_call_free(c);
			return;
		}
		if (code != 0) {
			c->skid[c->nsk] = id;
			c->skr[c->nsk++] = reason;
			continue;
		}
		qid_format(id, qid);
		json_put_str(&c->w, qid);
	}
	sched_ops_kick(o);
	if (c->next < op->nids) {
		tq_call(s->inbox, sched_ctl_slice, c);  /* after a turn of the loop */
		return;
	}
	json_arr_close(&c->w);
	json_key(&c->w, "skipped");
	json_arr_open(&c->w);
	for (size_t i = 0; i < c->nsk; i++) {
		qid_format(c->skid[i], qid);
		json_obj_open(&c->w);
		json_key(&c->w, "id");
		json_put_str(&c->w, qid);
		json_key(&c->w, "reason");
		json_put_str(&c->w, c->skr[i]);
		json_obj_close(&c->w);
	}
	json_arr_close(&c->w);
	json_obj_close(&c->w);
	op->reply(op, &c->w);
	sched_ctl_call_free(c);
}

static void
sched_ctl_call(void *arg)
{
	struct sched_ctl_call *c = arg;
	struct sched *s = c->s;
	struct ctl_op *op = c->op;
	struct sched_ops *o = s->submit_arg;
	struct json_writer *w = &c->w;
	int64_t now = s->clock();

	if (s->stopping || s->freeing) {
		op->fail(op, CTL_E_INTERNAL, "ternd is stopping");
		sched_ctl_call_free(c);
		return;
	}
	/*
	 * Finished messages leave the index at the end of the loop's turn
	 * (sched_remove_later): before an operator's request reads it, so
	 * that a retry cannot send a delivered message again.
	 */
	sched_remove_flush(s);
	json_writer_init(w);
	json_obj_open(w);
	json_key(w, "ok");
	json_put_bool(w, 1);
	switch (op->type) {
	case CTL_OP_PAUSE:
	case CTL_OP_RESUME:
		sched_ops_pause(o, op);
		sched_ops_paused_write(o, w);
		break;
	case CTL_OP_STATS:
		sched_ops_stats(o, w);
		if (op->stats_queue(w, s->q) < 0) {
			op->fail(op, CTL_E_INTERNAL, "cannot read the queue");
			sched_ctl_call_free(c);
			return;
		}
		break;
	case CTL_OP_HOLD:
	case CTL_OP_RELEASE:
	case CTL_OP_DELETE:
	case CTL_OP_RETRY:
	case CTL_OP_BOUNCE:
		c->skid = xcalloc(op->nids + 1, sizeof(*c->skid));
		c->skr = xcalloc(op->nids + 1, sizeof(*c->skr));
		/* retry all [--domain D]: down marks go first (all, or D's) */
		if (op->type == CTL_OP_RETRY && !op->single)
			sched_dest_lift(s, op->domain[0] ? op->domain : NULL, now);
		json_key(w, "ids");
		json_arr_open(w);
		sched_ctl_slice(c);
		return;
	default:
		panic("sched_ctl_call: op %d", (int)op->type);
	}
	json_obj_close(w);
	op->reply(op, w);
	sched_ops_kick(o);
	sched_ctl_call_free(c);
}

void
sched_ctl_submit(struct sched *s, struct ctl_op *op)
{
	struct sched_ctl_call *c = xcalloc(1, sizeof(*c));

	c->s = s;
	c->op = op;
	tq_call(s->inbox, sched_ctl_call, c);
}
