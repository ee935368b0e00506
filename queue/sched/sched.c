/*
 * sched.c - the delivery scheduler (tern/deliver.h; its place in the message
 * flow: doc/design.md, "How a message travels", steps 4 and 6).
 *
 * One thread with its own event loop (sched_start, sched_loop.c) runs the
 * core below; unit tests run the same core on their own loop (sched_int.h).
 * The core owns: the table of known messages, a binary min-heap of (next attempt,
 * qid), the per-destination queues and connection counts, and the jobs not
 * yet handed to a worker. It alone writes delivery results to the envelope
 * store and queues bounces and delay warnings (dsn.c).
 *
 * Never: schedules a held (ENV_F_HOLD) or corrupt (ENV_F_CORRUPT) message;
 * starts a message that has a round in flight; answers the null sender.
 * Untrusted input: the servers' replies inside results (escaped in logs,
 * cleaned by dsn.c in bounces).
 *
 * A message's life here is a sequence of rounds. A round starts when the
 * message is due: its pending recipients are grouped by destination (the
 * recipient domain for "mx" routes; kind, host, port and TLS policy for
 * static routes, so domains sharing a next hop share a job; the job's
 * domain is then its first recipient's) into jobs of at most
 * SCHED_JOB_MAX_RCPT recipients. A job waits in its destination's own queue
 * (sched_dest.c: a reference to the message, the envelope is read again
 * when the job is handed out) until its destination's concurrency window
 * and max-out-connections allow it; the destinations take turns
 * (round-robin), so one at its limit delays no other, and every due message
 * is started whatever its destination. A destination marked down defers
 * its jobs at once, without connecting and without a log line each: the
 * round ends as usual (counters, expiry, warnings) and the next attempt
 * waits for the end of the down time.
 * Each result is written at once (queue_update): sent recipients are done,
 * temporary failures keep status, reply and relay, permanent failures are
 * recorded and remembered. When the round's last job answers, the round
 * ends: attempts++, next attempt from the retry schedule (+-10% jitter),
 * expiry (max-queue-lifetime) and the one delay warning (delay-warning) are
 * decided by the retry policy (retry.c).
 *
 * Bounce order, chosen so that a crash never loses a bounce: (1) the round's
 * counters are written with the failed recipients still PENDING; (2) the
 * DSN is handed to the committer; (3) only when the committer reports it
 * durable are the recipients marked BOUNCED/EXPIRED (and ENV_F_WARNED set)
 * and the message removed if nothing is left. A crash between (2) and (3)
 * retries those recipients and may send a second DSN: a duplicate, never a
 * loss. A failed DSN commit leaves them pending for the next round.
 *
 * Expired recipients get Status 4.4.7 with Action: failed: RFC 3463 defines
 * X.4.7 "delivery time expired" in the persistent transient class (4.x.x);
 * "failed" says we gave up; the last error goes in Diagnostic-Code. DSN
 * recipients without NOTIFY get FAILURE,DELAY (RFC 3461 4.1 leaves the
 * default to the MTA); NOTIFY=NEVER finalizes without a DSN.
 *
 * Shutdown order (caller): deliver_pool_stop() first (no result can arrive
 * later), then sched_stop(), then queue_close(). sched_stop waits for DSN
 * commits in flight. libevent must be thread-enabled
 * (evthread_use_pthreads) since workers and the committer post to the inbox.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "tern/dsn.h"
#include "tern/log.h"
#include "tern/metrics.h"
#include "tern/smtp.h"
#include "tern/util.h"
#include "sched_int.h"

#define SCHED_JOB_MAX_RCPT  100
#define SCHED_RETRY_ERR     60          /* store read failed: try again */

/* ------------------------------------------------------------------ */
/* heap of (when, qid) */

static int
sched_heap_less(const struct sched_heap_ent *a, const struct sched_heap_ent *b)
{
	return a->when < b->when || (a->when == b->when && a->qid < b->qid);
}

static void
sched_heap_set(struct sched_heap *h, size_t i, struct sched_heap_ent e)
{
	h->a[i] = e;
	if (e.pos != NULL)
		*e.pos = i;
}

static void
sched_heap_up(struct sched_heap *h, size_t i)
{
	struct sched_heap_ent e = h->a[i];
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!sched_heap_less(&e, &h->a[p]))
			break;
		sched_heap_set(h, i, h->a[p]);
		i = p;
	}
	sched_heap_set(h, i, e);
}

static void
sched_heap_down(struct sched_heap *h, size_t i)
{
	struct sched_heap_ent e = h->a[i];
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && sched_heap_less(&h->a[c + 1], &h->a[c]))
			c++;
		if (!sched_heap_less(&h->a[c], &e))
			break;
		sched_heap_set(h, i, h->a[c]);
		i = c;
	}
	sched_heap_set(h, i, e);
}

void
sched_heap_push(struct sched_heap *h, int64_t when, uint64_t qid, void *item,
    size_t *pos)
{
	struct sched_heap_ent e = { when, qid, item, pos };

	if (h->n == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 64;
		h->a = xreallocarray(h->a, h->cap, sizeof(*h->a));
	}
	sched_heap_set(h, h->n++, e);
	sched_heap_up(h, h->n - 1);
}

void
sched_heap_remove(struct sched_heap *h, size_t i)
{
	if (i >= h->n)
		return;
	if (h->a[i].pos != NULL)
		*h->a[i].pos = SCHED_NOT_IN_HEAP;
	h->n--;
	if (i == h->n)
		return;
	sched_heap_set(h, i, h->a[h->n]);
	sched_heap_down(h, i);
	sched_heap_up(h, i);
}

int
sched_heap_pop(struct sched_heap *h, struct sched_heap_ent *out)
{
	if (h->n == 0)
		return 0;
	*out = h->a[0];
	sched_heap_remove(h, 0);
	return 1;
}

void
sched_heap_free(struct sched_heap *h)
{
	free(h->a);
	memset(h, 0, sizeof(*h));
}

/* ------------------------------------------------------------------ */
/* message table */

static size_t
sched_hash(const struct sched *s, uint64_t qid)
{
	qid ^= qid >> 31;
	qid *= 0x9e3779b97f4a7c15ull;
	return (size_t)(qid >> 17) & (s->tabsz - 1);
}

static struct sched_msg *
sched_msg_find(const struct sched *s, uint64_t qid)
{
	struct sched_msg *m = s->tab[sched_hash(s, qid)];
	while (m != NULL && m->qid != qid)
		m = m->hnext;
	return m;
}

static struct sched_msg *
sched_msg_new(struct sched *s, uint64_t qid)
{
	struct sched_msg *m = xcalloc(1, sizeof(*m));
	size_t h;

	if (s->nmsg >= s->tabsz) {          /* grow: keep chains short */
		size_t old = s->tabsz;
		struct sched_msg **ot = s->tab;
		s->tabsz *= 2;
		s->tab = xcalloc(s->tabsz, sizeof(*s->tab));
		for (size_t i = 0; i < old; i++) {
			struct sched_msg *x, *nx;
			for (x = ot[i]; x != NULL; x = nx) {
				nx = x->hnext;
				h = sched_hash(s, x->qid);
				x->hnext = s->tab[h];
				s->tab[h] = x;
			}
		}
		free(ot);
	}
	m->qid = qid;
	m->hpos = SCHED_NOT_IN_HEAP;
	TAILQ_INIT(&m->waits);
	h = sched_hash(s, qid);
	m->hnext = s->tab[h];
	s->tab[h] = m;
	s->nmsg++;
	return m;
}

/* Forget a message (held, removed, gone). */
static void
sched_msg_forget(struct sched *s, struct sched_msg *m)
{
	struct sched_msg **pp = &s->tab[sched_hash(s, m->qid)];

	while (*pp != NULL && *pp != m)
		pp = &(*pp)->hnext;
	if (*pp == m)
		*pp = m->hnext;
	if (m->hpos != SCHED_NOT_IN_HEAP)
		sched_heap_remove(&s->heap, m->hpos);
	s->nmsg--;
	free(m->perm);
	free(m->expired);
	free(m->relayed);
	free(m);
}

/* Forget a round's outcome (failures, expiries, relayed, warning). */
static void
sched_msg_round_clear(struct sched_msg *m)
{
	m->nperm = m->nexpired = m->nrelayed = 0;
	m->warn = 0;
	m->not_before = 0;
}

/* Idle again, due at when; whatever the last round found is done with. */
static void
sched_msg_schedule(struct sched *s, struct sched_msg *m, int64_t when)
{
	sched_msg_round_clear(m);
	if (m->hpos != SCHED_NOT_IN_HEAP)
		sched_heap_remove(&s->heap, m->hpos);
	m->state = SCHED_M_IDLE;
	sched_heap_push(&s->heap, when, m->qid, m, &m->hpos);
}

static double
sched_rand(struct sched *s)
{
	/* xorshift64*: jitter only, not security */
	uint64_t x = s->rnd;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	s->rnd = x;
	return (double)((x * 0x2545f4914f6cdd1dull) >> 11) * 0x1.0p-53;
}

static double
sched_rand_cb(void *arg)
{
	return sched_rand(arg);
}

static uint64_t
sched_rand64(struct sched *s)
{
	sched_rand(s);
	return s->rnd * 0x2545f4914f6cdd1dull;
}

/* ------------------------------------------------------------------ */
/* logging */

/* One log line per recipient result; counts it (stats, metrics). */
static void
sched_log_rcpt(const struct envelope *e,
    const struct env_rcpt *rc, enum env_result res, unsigned attempts,
    int64_t now, const char *extra)
{
	static const enum metrics_delivery mres[] = { METRICS_DLV_SENT,
	    METRICS_DLV_DEFERRED, METRICS_DLV_BOUNCED, METRICS_DLV_EXPIRED };
	char qid[QID_STRLEN + 1], to[512], relay[300], reason[1100];
	const char *st = rc->status ? rc->status : "-";
	const char *err = rc->last_error ? rc->last_error : "";
	const char *what = env_result_name(res);

	qid_format(e->id, qid);
	METRIC_INC(deliveries_total[mres[res]]);
	log_escape(to, sizeof(to), rc->addr, strlen(rc->addr));
	if (rc->relay != NULL)
		log_escape(relay, sizeof(relay), rc->relay, strlen(rc->relay));
	else
		strcpy(relay, "none");
	log_escape(reason, sizeof(reason), err, strlen(err));
	log_info("id=%s to=<%s> relay=%s dsn=%s status=%s delay=%llds "
	    "attempts=%u reason=\"%s\"%s%s", qid, to, relay, st, what,
	    (long long)(now > e->arrival ? now - e->arrival : 0), attempts,
	    reason, extra ? " " : "", extra ? extra : "");
}

/* ------------------------------------------------------------------ */
/* handing jobs out */

static unsigned
sched_max_out(const struct sched *s)
{
	return s->conf->max_out_connections ? s->conf->max_out_connections : 1;
}

static void sched_round_finish(struct sched *s, struct sched_msg *m,
    int64_t now, struct envelope *env);
static void sched_result_apply(struct sched *s, uint64_t qid,
    struct dlv_result *r, int64_t now, int quiet);

/*
 * One job of m's round answered without a result (its message went away,
 * or its envelope could not be read): the round ends with the last one.
 */
static void
sched_msg_job_gone(struct sched *s, struct sched_msg *m, int64_t now)
{
	if (m->njobs > 0)
		m->njobs--;
	if (m->njobs == 0)
		sched_round_finish(s, m, now, NULL);
}

void
sched_wait_free(struct sched_wait *w)
{
	envelope_free(w->env);
	free(w->idx);
	free(w);
}

/*
 * A waiting entry of d becomes a job: the envelope is read now (unless
 * the entry kept its round's), the route of its first recipient's domain
 * is taken again, and the job goes to the workers. Takes w.
 */
static void
sched_wait_start(struct sched *s, struct sched_dest *d, struct sched_wait *w,
    int64_t now)
{
	struct sched_msg *m = w->m;
	struct envelope *env = NULL;
	struct dlv_job *j;
	const struct conf_route *r;
	const char *dom;
	int rc;

	if (w->env != NULL) {
		env = w->env;
		w->env = NULL;
		rc = 0;
	} else
		rc = queue_get(s->q, m->qid, &env);
	if (rc != 0 || w->idx[0] >= env->nrcpt) {
		if (rc < 0) {
			char qid[QID_STRLEN + 1];
			qid_format(m->qid, qid);
			log_warn("id=%s scheduler: cannot read the envelope", qid);
		}
		envelope_free(env);
		sched_wait_free(w);
		sched_msg_job_gone(s, m, now);
		return;
	}
	dom = addr_domain(env->rcpts[w->idx[0]].addr);
	r = conf_route_for(s->conf, dom, strlen(dom));
	j = xcalloc(1, sizeof(*j));
	j->hdr.type = TQ_DELIVERY_JOB;
	j->hdr.reqid = ++s->next_jobid;
	j->env = env;                       /* the snapshot moves to the job */
	j->rcpts = w->idx;                  /* moves */
	w->idx = NULL;
	j->nrcpt = w->n;
	/* a shared static route: the first recipient's domain */
	j->domain = xstrdup(dom);
	j->route = *r;
	j->route.domain = xstrdup(r->domain);
	j->route.host = r->host ? xstrdup(r->host) : NULL;
	j->reply = s->inbox;
	sched_wait_free(w);
	d->active++;
	s->active++;
	d->last_used = now;
	sched_flight_add(s, j->hdr.reqid, m->qid, d);
	s->submit(s->submit_arg, j);        /* ownership moves */
}

/* Take w out of its destination's queue and its message's list. */
static void
sched_wait_unlink(struct sched *s, struct sched_wait *w)
{
	TAILQ_REMOVE(&w->d->wait, w, link);
	w->d->nwait--;
	s->waiting--;
	TAILQ_REMOVE(&w->m->waits, w, mlink);
	w->m->nwaits--;
}

/*
 * Hand waiting jobs to the workers: one per destination per turn of the
 * ring (round-robin), while max-out-connections allows; a destination at
 * its window, or down, is not on the ring and delays nobody.
 */
static void
sched_pump(struct sched *s, int64_t now)
{
	struct sched_dest *d;

	while (s->active < sched_max_out(s) &&
	    (d = sched_dest_next(s)) != NULL) {
		struct sched_wait *w = TAILQ_FIRST(&d->wait);

		sched_wait_unlink(s, w);
		sched_wait_start(s, d, w, now);
		sched_dest_kick(s, d);
	}
}

/*
 * The recipients idx[0..n) of m, for a destination that is down: deferred
 * now without connecting, with the destination's last error, and no log
 * line of their own (the destination logged its mark once). Takes idx.
 */
static void
sched_defer_down(struct sched *s, struct sched_dest *d, struct sched_msg *m,
    size_t *idx, size_t n, int64_t now)
{
	struct dlv_result *r = xcalloc(1, sizeof(*r));
	char why[sizeof(d->last_error) + 64];

	snprintf(why, sizeof(why), "%s (destination down, not tried)",
	    d->last_error[0] ? d->last_error : "connection failed");
	r->hdr.type = TQ_DELIVERY_RESULT;
	r->qid = m->qid;
	r->n = n;
	r->r = xcalloc(n ? n : 1, sizeof(*r->r));
	for (size_t i = 0; i < n; i++) {
		r->r[i].rcpt = idx[i];
		r->r[i].cls = DLV_TEMP;
		snprintf(r->r[i].status, sizeof(r->r[i].status), "%s",
		    d->last_status[0] ? d->last_status : "4.4.1");
		r->r[i].reply = xstrdup(why);
	}
	free(idx);
	d->nskipped++;
	if (m->not_before < d->down_until)
		m->not_before = d->down_until;
	sched_result_apply(s, m->qid, r, now, 1);       /* takes r */
}

/* A destination just went down: its waiting jobs are deferred. */
static void
sched_dest_defer_all(struct sched *s, struct sched_dest *d, int64_t now)
{
	struct sched_wait *w;

	while ((w = TAILQ_FIRST(&d->wait)) != NULL) {
		sched_wait_unlink(s, w);
		sched_defer_down(s, d, w->m, w->idx, w->n, now);
		w->idx = NULL;
		sched_wait_free(w);
	}
}

/* ------------------------------------------------------------------ */
/* rounds */

/*
 * Start a round for a due message: its pending recipients, grouped by
 * destination, wait in their destinations' queues (or are deferred at once
 * when the destination is down).
 */
static void
sched_msg_start(struct sched *s, struct sched_msg *m, int64_t now)
{
	struct envelope *env = NULL;
	struct grp { struct sched_dest *d; size_t *idx; size_t n; } *g = NULL;
	size_t ng = 0;
	int rc;

	if ((rc = queue_get(s->q, m->qid, &env)) == 1) {
		sched_msg_forget(s, m);
		return;
	}
	if (rc != 0) {
		char qid[QID_STRLEN + 1];
		qid_format(m->qid, qid);
		log_warn("id=%s scheduler: cannot read the envelope", qid);
		sched_msg_schedule(s, m, now + SCHED_RETRY_ERR);
		return;
	}
	if (env->flags & (ENV_F_HOLD | ENV_F_CORRUPT)) {
		sched_msg_forget(s, m);
		goto done;
	}
	if (envelope_pending(env) == 0) {
		if (queue_remove(s->q, env->id) < 0 && errno != ENOENT)
			log_warn("scheduler: queue_remove");
		sched_msg_forget(s, m);
		goto done;
	}

	for (size_t i = 0; i < env->nrcpt; i++) {
		const char *dom, *name;
		struct sched_dest *d;
		char *key;
		size_t k;

		if (env->rcpts[i].state != RCPT_PENDING)
			continue;
		dom = addr_domain(env->rcpts[i].addr);
		key = sched_dest_key(conf_route_for(s->conf, dom, strlen(dom)),
		    dom, &name);
		d = sched_dest_get(s, key, name, now);
		free(key);
		for (k = 0; k < ng; k++)
			if (g[k].d == d && g[k].n < SCHED_JOB_MAX_RCPT)
				break;
		if (k == ng) {
			g = xreallocarray(g, ng + 1, sizeof(*g));
			g[ng].d = d;
			g[ng].idx = xcalloc(SCHED_JOB_MAX_RCPT, sizeof(size_t));
			g[ng].n = 0;
			ng++;
		}
		g[k].idx[g[k].n++] = i;
	}

	m->state = SCHED_M_RUNNING;
	m->njobs = m->round_jobs = (unsigned)ng;
	sched_msg_round_clear(m);
	/* queue first, defer after: a deferral may end the round */
	for (size_t k = 0; k < ng; k++) {
		struct sched_dest *d = g[k].d;
		struct sched_wait *w;

		if (sched_dest_down(s, d, now))
			continue;
		w = xcalloc(1, sizeof(*w));
		w->m = m;
		w->d = d;
		TAILQ_INSERT_TAIL(&m->waits, w, mlink);
		m->nwaits++;
		/* it may wait long: only the recipients it names */
		w->idx = xreallocarray(g[k].idx, g[k].n, sizeof(size_t));
		w->n = g[k].n;
		g[k].idx = NULL;
		if (ng == 1) {          /* the round's only job: no re-read */
			w->env = env;
			env = NULL;
		}
		TAILQ_INSERT_TAIL(&d->wait, w, link);
		d->nwait++;
		s->waiting++;
		sched_dest_kick(s, d);
	}
	for (size_t k = 0; k < ng; k++)
		if (g[k].idx != NULL)
			sched_defer_down(s, g[k].d, m, g[k].idx, g[k].n, now);
	free(g);
done:
	envelope_free(env);
}

int64_t
sched_run(struct sched *s, int64_t now)
{
	struct sched_heap_ent e;
	unsigned n = 0;

	sched_dest_sweep(s, now);
	while (s->heap.n > 0 && s->heap.a[0].when <= now &&
	    n++ < SCHED_POP_BATCH && s->waiting < SCHED_WAIT_MAX) {
		sched_heap_pop(&s->heap, &e);
		sched_msg_start(s, e.item, now);
	}
	sched_pump(s, now);
	/* enough jobs wait for a slot: the next results make room (and kick) */
	if (s->waiting >= SCHED_WAIT_MAX && s->heap.n > 0 &&
	    s->heap.a[0].when <= now)
		return now + 1;
	return s->heap.n > 0 ? s->heap.a[0].when : INT64_MAX;
}

static void
sched_set_str(char **dst, const char *src)
{
	free(*dst);
	*dst = (src != NULL && src[0] != '\0') ? xstrdup(src) : NULL;
}

void
sched_apply_result(struct sched *s, struct dlv_result *r, int64_t now)
{
	struct sched_flight f;
	struct sched_msg *m;

	if (!sched_flight_take(s, r->hdr.reqid, &f)) {
		log_debug("scheduler: result for unknown job %llu dropped",
		    (unsigned long long)r->hdr.reqid);
		dlv_result_free(r);
		return;
	}
	f.dest->active--;
	s->active--;
	if (sched_dest_feedback(s, f.dest, r, now) == SCHED_FB_DEAD)
		sched_dest_defer_all(s, f.dest, now);
	if (f.dest->state == SCHED_D_DOWN &&
	    (m = sched_msg_find(s, f.qid)) != NULL &&
	    m->not_before < f.dest->down_until)
		m->not_before = f.dest->down_until;     /* not before the probe */
	sched_dest_kick(s, f.dest);
	sched_result_apply(s, f.qid, r, now, 0);
	sched_pump(s, now);
}

/*
 * The envelope a result applies to. The job's snapshot, when the worker
 * handed it back and the round has no other job: nothing else writes a
 * message while its attempt is in flight (operator commands refuse it), so
 * the snapshot is what the index holds, but for the body's location, which
 * copy-forward may move and queue_update/queue_remove take from the index.
 * Otherwise (another job of the round may have written since) it is read
 * again. 0, 1 gone, -1 error, as queue_get.
 */
static int
sched_result_env(struct sched *s, const struct sched_msg *m,
    struct dlv_result *r, struct envelope **env)
{
	if (m->round_jobs == 1 && r->env != NULL && r->env->id == m->qid) {
		*env = r->env;
		r->env = NULL;
		return 0;
	}
	return queue_get(s->q, m->qid, env);
}

/*
 * Write one job's result into its message (r is taken). quiet: deferred
 * without an attempt (destination down): no log line, no history entry,
 * not counted as a delivery attempt.
 */
static void
sched_result_apply(struct sched *s, uint64_t qid64, struct dlv_result *r,
    int64_t now, int quiet)
{
	struct sched_msg *m;
	struct envelope *env = NULL;
	char qid[QID_STRLEN + 1];
	int rc, last = 0;

	qid_format(qid64, qid);
	m = sched_msg_find(s, qid64);
	if (m == NULL || m->state != SCHED_M_RUNNING) {
		log_debug("id=%s scheduler: result for a message not running",
		    qid);
		goto out;
	}
	if ((rc = sched_result_env(s, m, r, &env)) == 0) {
		for (size_t i = 0; i < r->n; i++) {
			const struct dlv_rcpt_result *rr = &r->r[i];
			struct env_rcpt *rcp;

			if (rr->rcpt >= env->nrcpt)
				continue;
			rcp = &env->rcpts[rr->rcpt];
			if (rcp->state != RCPT_PENDING)
				continue;       /* e.g. deleted meanwhile */
			sched_set_str(&rcp->status, rr->status);
			sched_set_str(&rcp->last_error, rr->reply);
			if (!quiet)
				sched_set_str(&rcp->relay, r->relay);
			rcp->updated = now;
			/* a 5xx enters the history when it is bounced
			 * (sched_finalize), once its DSN is queued */
			if (rr->cls != DLV_PERM && !quiet)
				envelope_add_attempt(env, now, rr->rcpt,
				    rr->cls == DLV_OK ? ENV_RES_SENT :
				    ENV_RES_DEFERRED, r->relay, rr->status,
				    rr->reply, r->tls);
			switch (rr->cls) {
			case DLV_OK:
				rcp->state = RCPT_SENT;
				/* RFC 3461 4.2: a hop without DSN cannot report
				 * success; we say that we relayed it */
				if (!r->peer_dsn &&
				    (rcp->notify & SMTP_NOTIFY_SUCCESS)) {
					m->relayed = xreallocarray(m->relayed,
					    m->nrelayed + 1, sizeof(*m->relayed));
					m->relayed[m->nrelayed++] = rr->rcpt;
				}
				break;
			case DLV_TEMP:
				break;
			case DLV_PERM:
				m->perm = xreallocarray(m->perm, m->nperm + 1,
				    sizeof(*m->perm));
				m->perm[m->nperm++] = rr->rcpt;
				break;
			default:
				panic("sched_apply_result: class %d",
				    (int)rr->cls);
			}
		}
		/*
		 * Durable before anything else is done with it. The last job of
		 * a round hands the envelope to sched_round_finish(), which
		 * writes it once together with the round's counters (or just
		 * removes the message when nothing is left): one index write
		 * per delivered message instead of three.
		 */
		last = m->njobs <= 1;
		if (!last && queue_update(s->q, env) < 0)
			log_warn("id=%s scheduler: queue_update", qid);
		char tls[240], tlsesc[200];
		/* tls=MODE: how the peer was authenticated (deliver.h) */
		if (r->tls != NULL) {
			log_escape(tlsesc, sizeof(tlsesc), r->tls, strlen(r->tls));
			snprintf(tls, sizeof(tls), "tls=%s cipher=\"%s\"",
			    r->tls_mode != NULL ? r->tls_mode : "may", tlsesc);
		} else
			snprintf(tls, sizeof(tls), "tls=none");
		for (size_t i = 0; i < r->n && !quiet; i++) {
			const struct dlv_rcpt_result *rr = &r->r[i];
			if (rr->rcpt >= env->nrcpt || rr->cls == DLV_PERM)
				continue;
			sched_log_rcpt(env, &env->rcpts[rr->rcpt],
			    rr->cls == DLV_OK ? ENV_RES_SENT : ENV_RES_DEFERRED,
			    env->attempts + 1, now, tls);
		}
		if (!last) {
			envelope_free(env);
			env = NULL;
		}
	} else if (rc < 0) {
		log_warn("id=%s scheduler: cannot read the envelope", qid);
	}
	if (m->njobs > 0)
		m->njobs--;
	if (m->njobs == 0) {
		sched_round_finish(s, m, now, env);   /* takes env */
		env = NULL;
	}
	envelope_free(env);
out:
	dlv_result_free(r);
}

static int
sched_notify_ok(unsigned notify, unsigned bit)
{
	if (notify & SMTP_NOTIFY_NEVER)
		return 0;
	/* absent: FAILURE,DELAY */
	return notify == 0 ? (bit & (SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY))
	    != 0 : (notify & bit) != 0;
}

static int
sched_idx_in(const size_t *a, size_t n, size_t v)
{
	for (size_t i = 0; i < n; i++)
		if (a[i] == v)
			return 1;
	return 0;
}

void
sched_remove_flush(struct sched *s)
{
	int gone[QUEUE_REMOVE_BATCH];
	char qid[QID_STRLEN + 1];
	int rc;

	if (s->nrm == 0)
		return;
	rc = queue_remove_many(s->q, s->rm, s->nrm, gone);
	for (size_t i = 0; i < s->nrm; i++) {
		qid_format(s->rm[i], qid);
		if (rc < 0)             /* still finished: removed at the next
		                           start (or when next seen) */
			log_warn("id=%s scheduler: queue_remove", qid);
		else
			log_info("id=%s removed", qid);
	}
	s->nrm = 0;
}

/*
 * A finished message: removed with the others of this turn of the loop, in
 * one transaction, by the timer (kicked here for the first one). A crash
 * before is a crash before a removal's commit reached the log, which is
 * flushed every 100 ms anyway: the last results were not written either
 * (sched_finalize), so those recipients are tried again (at-least-once).
 */
static void
sched_remove_later(struct sched *s, uint64_t qid)
{
	if (s->timer == NULL) {         /* no loop turn to wait for */
		s->rm[s->nrm++] = qid;
		sched_remove_flush(s);
		return;
	}
	if (s->nrm == QUEUE_REMOVE_BATCH)
		sched_remove_flush(s);
	if (s->nrm++ == 0 && !s->freeing)
		event_active(s->timer, EV_TIMEOUT, 0);
	s->rm[s->nrm - 1] = qid;
}

/*
 * Mark the round's failures done, set WARNED, write, log, and remove the
 * message or put it back in the heap. dsn: the DSN's queue id, or 0 with
 * why saying why none was sent.
 */
static void
sched_finalize(struct sched *s, struct sched_msg *m, struct envelope *env,
    int64_t now, uint64_t dsn, const char *why)
{
	char qid[QID_STRLEN + 1], extra[96];

	qid_format(env->id, qid);
	for (size_t i = 0; i < m->nperm; i++) {
		struct env_rcpt *rc = &env->rcpts[m->perm[i]];
		if (rc->state != RCPT_PENDING)
			continue;
		rc->state = RCPT_BOUNCED;
		rc->updated = now;
		envelope_add_attempt(env, now, m->perm[i], ENV_RES_BOUNCED,
		    rc->relay, rc->status, rc->last_error, NULL);
	}
	for (size_t i = 0; i < m->nexpired; i++) {
		struct env_rcpt *rc = &env->rcpts[m->expired[i]];
		if (rc->state != RCPT_PENDING)
			continue;
		rc->state = RCPT_EXPIRED;
		rc->updated = now;
		sched_set_str(&rc->status, "4.4.7");
		if (rc->last_error == NULL)
			rc->last_error = xstrdup("delivery time expired");
		envelope_add_attempt(env, now, m->expired[i], ENV_RES_EXPIRED,
		    NULL, "4.4.7", "delivery time expired", NULL);
	}
	if (m->warn)
		env->flags |= ENV_F_WARNED;
	/* a message with nothing pending is removed below: no write before */
	if (envelope_pending(env) > 0 && queue_update(s->q, env) < 0)
		log_warn("id=%s scheduler: queue_update", qid);

	if (dsn != 0) {
		char dq[QID_STRLEN + 1];
		qid_format(dsn, dq);
		snprintf(extra, sizeof(extra), "dsn_id=%s", dq);
	} else {
		snprintf(extra, sizeof(extra), "dsn not sent: %s", why);
	}
	for (size_t i = 0; i < m->nperm; i++)
		if (env->rcpts[m->perm[i]].state == RCPT_BOUNCED)
			sched_log_rcpt(env, &env->rcpts[m->perm[i]],
			    ENV_RES_BOUNCED,
			    env->attempts, now, extra);
	for (size_t i = 0; i < m->nexpired; i++)
		if (env->rcpts[m->expired[i]].state == RCPT_EXPIRED)
			sched_log_rcpt(env, &env->rcpts[m->expired[i]],
			    ENV_RES_EXPIRED, env->attempts, now, extra);
	if (m->warn && dsn != 0)
		log_info("id=%s delay warning sent dsn_id=%s", qid, extra + 7);
	if (m->nrelayed > 0 && dsn != 0)
		log_info("id=%s relayed notice sent nrcpt=%zu dsn_id=%s", qid,
		    m->nrelayed, extra + 7);

	if (envelope_pending(env) == 0) {
		sched_remove_later(s, env->id);
		sched_msg_forget(s, m);
	} else if (env->flags & (ENV_F_HOLD | ENV_F_CORRUPT)) {
		sched_msg_forget(s, m);
	} else {
		sched_msg_schedule(s, m, env->next_attempt);
	}
}

/*
 * The DSN of a round could not be queued: failures stay pending and are
 * tried again; a message with nothing pending (only a relayed notice was
 * due) is finished now rather than kept in the queue until its next turn.
 */
static void
sched_round_keep(struct sched *s, struct sched_msg *m, struct envelope *env,
    int64_t now)
{
	if (envelope_pending(env) == 0)
		sched_finalize(s, m, env, now, 0, "DSN not queued");
	else
		sched_msg_schedule(s, m, env->next_attempt);
}

/* End of a round: counters, expiry, warning, DSN. */
static void
sched_round_finish(struct sched *s, struct sched_msg *m, int64_t now,
    struct envelope *env)
{
	const struct conf *c = s->conf;
	struct envelope *de = NULL;
	struct dsn_rcpt *dr = NULL;
	struct dsn_msg dm;
	struct spool *sp = NULL;
	char qid[QID_STRLEN + 1], *body = NULL, *dsn = NULL;
	size_t nd = 0, bodylen = 0, dsnlen = 0, npend = 0;
	unsigned dflags = 0;
	int expired, warn, rc;

	qid_format(m->qid, qid);
	/* env: the envelope with the last job's results applied, or NULL */
	if (env == NULL && (rc = queue_get(s->q, m->qid, &env)) != 0) {
		if (rc == 1) {
			sched_msg_forget(s, m);
			return;
		}
		log_warn("id=%s scheduler: cannot read the envelope", qid);
		sched_msg_schedule(s, m, now + SCHED_RETRY_ERR);
		return;
	}
	env->attempts++;
	env->next_attempt = sched_retry_next(c, env->attempts, m->not_before,
	    now, sched_rand_cb, s);

	/* still-pending recipients other than this round's failures */
	for (size_t i = 0; i < env->nrcpt; i++)
		if (env->rcpts[i].state == RCPT_PENDING &&
		    !sched_idx_in(m->perm, m->nperm, i))
			npend++;
	expired = sched_retry_expired(c, env, npend, now);
	warn = !expired && sched_retry_warn_due(c, env, npend, now);
	free(m->expired);
	m->expired = NULL;
	m->nexpired = 0;
	if (expired) {
		m->expired = xcalloc(npend, sizeof(size_t));
		for (size_t i = 0; i < env->nrcpt; i++)
			if (env->rcpts[i].state == RCPT_PENDING &&
			    !sched_idx_in(m->perm, m->nperm, i))
				m->expired[m->nexpired++] = i;
	}
	m->warn = warn;

	/*
	 * (1) the round's counters, failures still pending. A message with
	 * nothing left to do is removed by sched_finalize() instead.
	 */
	if ((npend > 0 || m->nperm > 0 || m->nexpired > 0 || m->nrelayed > 0 ||
	    warn) && queue_update(s->q, env) < 0)
		log_warn("id=%s scheduler: queue_update", qid);
	if (m->nperm == 0 && m->nexpired == 0 && m->nrelayed == 0 && !warn) {
		sched_finalize(s, m, env, now, 0, "none needed");
		goto out;
	}
	if (env->sender[0] == '\0' || (env->flags & ENV_F_DSN)) {
		sched_finalize(s, m, env, now, 0, "null sender");
		goto out;
	}

	/* who is reported */
	dr = xcalloc(env->nrcpt, sizeof(*dr));
	for (size_t i = 0; i < env->nrcpt; i++) {
		const struct env_rcpt *rc2 = &env->rcpts[i];
		int perm = sched_idx_in(m->perm, m->nperm, i);
		int exp = sched_idx_in(m->expired, m->nexpired, i);
		int del = warn && rc2->state == RCPT_PENDING && !perm;
		int rel = sched_idx_in(m->relayed, m->nrelayed, i);
		struct dsn_rcpt *d = &dr[nd];

		if (!perm && !exp && !del && !rel)
			continue;
		if (!sched_notify_ok(rc2->notify, rel ? SMTP_NOTIFY_SUCCESS :
		    del ? SMTP_NOTIFY_DELAY : SMTP_NOTIFY_FAILURE))
			continue;
		d->addr = rc2->addr;
		d->orcpt = rc2->orcpt;
		d->action = rel ? DSN_ACTION_RELAYED : del ? DSN_ACTION_DELAYED :
		    DSN_ACTION_FAILED;
		d->status = exp ? "4.4.7" : rel && (rc2->status == NULL ||
		    rc2->status[0] != '2') ? "2.0.0" : rc2->status;
		d->remote_mta = rc2->relay;
		d->diag = exp && rc2->last_error == NULL ?
		    "delivery time expired" : rc2->last_error;
		d->diag_smtp = rc2->relay != NULL;     /* typed by dsn.c */
		d->last_attempt = rc2->updated;
		if (del)
			d->retry_until = sched_retry_until(c, env);
		nd++;
	}
	if (nd == 0) {
		sched_finalize(s, m, env, now, 0, "notify=never");
		goto out;
	}

	/* (2) the DSN to the committer */
	if (queue_read_body(s->q, env, &body, &bodylen) < 0) {
		log_warn("id=%s scheduler: original body unreadable; the DSN "
		    "carries no header", qid);
		body = NULL;
		bodylen = 0;
	}
	memset(&dm, 0, sizeof(dm));
	dm.hostname = c->hostname ? c->hostname : "localhost";
	dm.qid = env->id;
	dm.sender = env->sender;
	dm.envid = env->envid;
	dm.arrival = env->arrival;
	dm.now = now;
	dm.rcpts = dr;
	dm.nrcpt = nd;
	dm.orig = body;
	dm.origlen = bodylen;
	/* RFC 8689 5: the bounce of a REQUIRETLS message carries its header
	 * at most (never the body), and goes without REQUIRETLS */
	dm.ret_full = (env->flags & ENV_F_RET_FULL) != 0 &&
	    !(env->flags & ENV_F_REQUIRETLS);
	dm.utf8 = (env->flags & ENV_F_SMTPUTF8) != 0;
	dm.rnd = sched_rand64(s);
	if (dsn_build(&dm, &dsn, &dsnlen, &dflags) != DSN_OK) {
		log_warnx("id=%s scheduler: cannot build the DSN; failures "
		    "stay pending", qid);
		goto keep;
	}
	sp = spool_new(s->q);
	if (spool_write(sp, dsn, dsnlen) < 0) {
		log_warn("id=%s scheduler: cannot spool the DSN; failures "
		    "stay pending", qid);
		spool_free(sp);
		goto keep;
	}
	de = envelope_new();
	de->sender = xstrdup("");
	de->flags = ENV_F_DSN;
	if (dflags & DSN_F_8BIT)
		de->flags |= ENV_F_8BIT | (env->flags & ENV_F_SMTPUTF8);
	envelope_add_rcpt(de, env->sender, NULL, 0);
	m->state = SCHED_M_DSN;
	s->dsn_pending++;
	METRIC_INC(dsn_total);
	queue_commit_submit(s->q, de, sp, s->inbox, m->qid);  /* both move */
	goto out;

keep:
	sched_round_keep(s, m, env, now);
out:
	free(dsn);
	free(body);
	free(dr);
	envelope_free(env);
}

/* (3) the committer's answer for a DSN. */
static void
sched_dsn_done(struct sched *s, const struct queue_commit_done *d,
    int64_t now)
{
	struct sched_msg *m = sched_msg_find(s, d->hdr.reqid);
	struct envelope *env = NULL;
	char qid[QID_STRLEN + 1];
	int rc;

	qid_format(d->hdr.reqid, qid);
	if (m == NULL || m->state != SCHED_M_DSN) {
		log_warnx("id=%s scheduler: unexpected DSN commit reply", qid);
		return;
	}
	s->dsn_pending--;
	if ((rc = queue_get(s->q, m->qid, &env)) != 0) {
		if (rc < 0)
			log_warn("id=%s scheduler: cannot read the envelope",
			    qid);
		if (rc == 1) {
			sched_msg_forget(s, m);
			return;
		}
		sched_msg_schedule(s, m, now + SCHED_RETRY_ERR);
		return;
	}
	if (d->status != Q_OK) {
		errno = d->err;
		log_warn("id=%s scheduler: DSN not queued", qid);
		sched_round_keep(s, m, env, now);
	} else {
		sched_finalize(s, m, env, now, d->qid, NULL);
	}
	envelope_free(env);
}

/* ------------------------------------------------------------------ */
/* the core's life */

void
sched_add(struct sched *s, uint64_t qid)
{
	struct sched_msg *m;

	if (sched_msg_find(s, qid) != NULL)
		return;             /* known: in the heap or in flight */
	m = sched_msg_new(s, qid);
	sched_msg_schedule(s, m, 0);
}

/*
 * The load: the query index's next-attempt keys walked in (next attempt,
 * id) order (queue_walk_due), a slice at a time (s->load.due: the last
 * key seen), on the scheduler's loop, so new mail, results and operator
 * requests are served between slices and the messages due first are
 * loaded, and started, first. Only ids and times are read: a message that
 * turns out finished is removed when it is started. Without a query index
 * (queue_walk_due says 1) the envelopes are walked in id order instead
 * (s->load.after: the last id seen). A message met twice (committed during
 * the load, so seen by the walk and announced by the committer; or
 * scheduled by an operator's release or retry first) is known by its id in
 * the table: the second sighting changes nothing. A key that moves during
 * the load belongs to a message the scheduler knows already (only it, and
 * the operator's commands that schedule what they change, write one); one
 * moved ahead of the walk (deferred meanwhile) is read again, and counted
 * in "entries read" again.
 */
struct sched_load_ctx {
	struct sched *s;
	size_t left;                /* entries this slice may still take */
	uint64_t *gone;
	size_t ngone;
};

static int
sched_load_one(void *arg, const struct envelope *e)
{
	struct sched_load_ctx *c = arg;
	struct sched_msg *m;

	c->s->load.after = e->id;
	c->s->load.seen++;
	/* known: announced, retried or released already; its state is ours */
	if (sched_msg_find(c->s, e->id) != NULL ||
	    (e->flags & (ENV_F_HOLD | ENV_F_CORRUPT)))
		goto next;
	if (envelope_pending(e) == 0) {     /* finished, not yet removed */
		c->gone = xreallocarray(c->gone, c->ngone + 1, sizeof(uint64_t));
		c->gone[c->ngone++] = e->id;
		goto next;
	}
	m = sched_msg_new(c->s, e->id);
	sched_msg_schedule(c->s, m, e->next_attempt);
next:
	return --c->left == 0;
}

static int
sched_load_due(void *arg, uint64_t id, int64_t when)
{
	struct sched_load_ctx *c = arg;

	c->s->load.seen++;
	if (sched_msg_find(c->s, id) == NULL)
		sched_msg_schedule(c->s, sched_msg_new(c->s, id), when);
	return --c->left == 0;
}

int
sched_load_slice(struct sched *s, size_t max)
{
	struct sched_load_ctx c = { s, max, NULL, 0 };
	int rc = 1;

	if (s->load.done)
		return 0;
	/* a finished message is still in the index until its removal: the
	 * walk below must not find it and schedule it again */
	sched_remove_flush(s);
	if (s->load.t0 == 0)
		s->load.t0 = now_mono_us();
	if (!s->load.by_id &&
	    (rc = queue_walk_due(s->q, &s->load.due, sched_load_due, &c)) == 1)
		s->load.by_id = 1;
	if (s->load.by_id)
		rc = queue_walk_after(s->q, s->load.after, sched_load_one, &c);
	for (size_t i = 0; i < c.ngone; i++)
		if (queue_remove(s->q, c.gone[i]) < 0 && errno != ENOENT)
			log_warn("scheduler: queue_remove");
	free(c.gone);
	if (rc < 0)
		return -1;
	if (c.left > 0) {           /* the walk ended before the slice did */
		s->load.done = 1;
		log_info("scheduler: schedule loaded: %llu entries read, %zu "
		    "messages scheduled in %llu ms",
		    (unsigned long long)s->load.seen, s->nmsg,
		    (unsigned long long)((now_mono_us() - s->load.t0) / 1000));
		return 0;
	}
	return 1;
}

int
sched_load(struct sched *s)
{
	int rc;

	while ((rc = sched_load_slice(s, SCHED_LOAD_SLICE)) > 0)
		;
	return rc;
}

static int64_t
sched_clock_default(void)
{
	return now_unix();
}

static void
sched_inbox_cb(struct tq_msg *msg, void *arg)
{
	struct sched *s = arg;

	/* the lines of a run of results go out together: the timer, kicked
	 * below and run after the inbox, ends the batch */
	if (s->timer != NULL && !s->freeing)
		log_batch_begin();
	switch (msg->type) {
	case TQ_NEW_MESSAGE:
		if (!s->freeing)
			sched_add(s, ((struct queue_new_message *)msg)->qid);
		free(msg);
		break;
	case TQ_DELIVERY_RESULT:
		if (s->freeing)
			dlv_result_free((struct dlv_result *)msg);
		else
			sched_apply_result(s, (struct dlv_result *)msg,
			    s->clock());
		break;
	case TQ_COMMIT_DONE:
		if (!s->freeing)
			sched_dsn_done(s, (struct queue_commit_done *)msg,
			    s->clock());
		free(msg);
		if (s->stopping && s->dsn_pending == 0)
			event_base_loopbreak(s->base);
		break;
	case TQ_DELIVERY_JOB:
		dlv_job_free((struct dlv_job *)msg);    /* never ours */
		break;
	default:
		panic("sched_inbox_cb: unexpected message type %d",
		    (int)msg->type);
	}
	if (s->timer != NULL && !s->freeing)
		event_active(s->timer, EV_TIMEOUT, 0);
}

struct sched *
sched_new(struct queue *q, struct conf *conf, struct event_base *base,
    sched_submit_fn *submit, void *arg)
{
	struct sched *s = xcalloc(1, sizeof(*s));

	s->q = q;
	s->conf = conf_ref(conf);
	s->base = base;
	s->submit = submit;
	s->submit_arg = arg;
	s->tabsz = 1024;
	s->tab = xcalloc(s->tabsz, sizeof(*s->tab));
	s->rnd = (now_mono_us() ^ ((uint64_t)getpid() << 32)) | 1;
	s->clock = sched_clock_default;
	s->inbox = tq_new(base, sched_inbox_cb, s);
	sched_dest_init(s);
	return s;
}

void
sched_conf_swap(struct sched *s, struct conf *conf)
{
	struct conf *old = s->conf;
	s->conf = conf_ref(conf);
	conf_unref(old);
	sched_dest_conf(s);
}

unsigned sched_active(const struct sched *s) { return s->active; }
unsigned sched_waiting(const struct sched *s) { return s->waiting; }
unsigned sched_dsn_pending(const struct sched *s) { return s->dsn_pending; }

void
sched_set_clock(struct sched *s, int64_t (*clock)(void))
{
	s->clock = clock ? clock : sched_clock_default;
}

struct tq *
sched_inbox(struct sched *s)
{
	return s->inbox;
}

void
sched_free(struct sched *s)
{
	if (s == NULL)
		return;
	s->freeing = 1;
	tq_free(s->inbox);          /* pending messages are freed by the cb */
	sched_dest_free_all(s);     /* and the waiting entries */
	for (size_t i = 0; i < s->tabsz; i++) {
		struct sched_msg *m, *mn;
		for (m = s->tab[i]; m != NULL; m = mn) {
			mn = m->hnext;
			free(m->perm);
			free(m->expired);
			free(m->relayed);
			free(m);
		}
	}
	free(s->tab);
	sched_heap_free(&s->heap);
	conf_unref(s->conf);
	free(s);
}


/* ================================================================== */
/*
 * Operator actions (ctl.h), called on the scheduler thread by
 * sched_loop.c. Kept in one block at the end: they only reuse the core's
 * helpers above and change nothing in its paths.
 */

/* A round with every job still queued and nothing decided yet. */
static int
sched_msg_only_waiting(const struct sched_msg *m)
{
	return m->state == SCHED_M_RUNNING && m->nwaits == m->njobs &&
	    m->nperm == 0 && m->nrelayed == 0;
}

int
sched_ctl_busy(const struct sched *s, uint64_t qid)
{
	const struct sched_msg *m = sched_msg_find(s, qid);

	return m != NULL && m->state != SCHED_M_IDLE &&
	    !sched_msg_only_waiting(m);
}

/* Take a round that only waits back: its entries leave their queues and
 * the message is idle (out of the heap) for the operator's change. */
static void
sched_ctl_unwait(struct sched *s, struct sched_msg *m)
{
	struct sched_wait *w;

	if (!sched_msg_only_waiting(m))
		return;
	while ((w = TAILQ_FIRST(&m->waits)) != NULL) {
		sched_wait_unlink(s, w);
		sched_wait_free(w);
	}
	m->njobs = 0;
	m->state = SCHED_M_IDLE;
	sched_msg_round_clear(m);
}

void
sched_ctl_unschedule(struct sched *s, uint64_t qid)
{
	struct sched_msg *m = sched_msg_find(s, qid);

	if (m != NULL)
		sched_ctl_unwait(s, m);
	if (m != NULL && m->state == SCHED_M_IDLE)
		sched_msg_forget(s, m);
}

void
sched_ctl_schedule(struct sched *s, uint64_t qid, int64_t when)
{
	struct sched_msg *m = sched_msg_find(s, qid);

	if (m == NULL)
		m = sched_msg_new(s, qid);
	else if (m->state != SCHED_M_IDLE)
		return;
	sched_msg_schedule(s, m, when);
}

int
sched_ctl_bounce(struct sched *s, uint64_t qid, int64_t now)
{
	struct envelope *env = NULL;
	struct sched_msg *m;
	int rc;

	if (sched_ctl_busy(s, qid))
		return -1;
	if ((rc = queue_get(s->q, qid, &env)) != 0)
		return rc;
	if ((m = sched_msg_find(s, qid)) == NULL)
		m = sched_msg_new(s, qid);
	sched_ctl_unwait(s, m);
	if (m->hpos != SCHED_NOT_IN_HEAP)
		sched_heap_remove(&s->heap, m->hpos);
	free(m->perm);
	m->perm = NULL;
	m->nperm = 0;
	for (size_t i = 0; i < env->nrcpt; i++) {
		if (env->rcpts[i].state != RCPT_PENDING)
			continue;
		m->perm = xreallocarray(m->perm, m->nperm + 1, sizeof(*m->perm));
		m->perm[m->nperm++] = i;
	}
	envelope_free(env);
	m->state = SCHED_M_RUNNING;
	m->njobs = 0;
	sched_round_finish(s, m, now, NULL);
	return 0;
}
