/*
 * tlsrpt_send.c - the TLS-RPT reporter (RFC 8460 3, 4, 5.3): when a report
 * period closes, for each policy domain with data, look up
 * "_smtp._tls.<domain>" TXT, build the JSON report, gzip it and queue it as
 * a mail to every rua=mailto: address through tern's own queue, as the
 * scheduler queues its DSNs (queue_commit_submit; the scheduler learns of it
 * from the committer's notify queue and delivers it like any message).
 *
 * Thread: its own, with its own event loop and resolver; started, given new
 * configurations and stopped from ternd's main thread (tern/tlsrpt.h). Every
 * TLSRPT_TICK_MAX seconds at most (half the interval when shorter) it takes
 * the closed periods out of the aggregate (tlsrpt.c) and saves the rest when
 * it changed (so a kill -9 loses at most one tick of counts; a graceful stop
 * saves everything). A report whose commit fails is put back and tried at
 * the next tick; a domain without a usable TLSRPT record, or whose lookup
 * fails, gets no report and its counts are dropped (logged).
 *
 * Loops: a report is queued with the null reverse-path (no bounce can come
 * back: RFC 5321 4.5.5) and the envelope flag ENV_F_TLSRPT, whose delivery
 * the delivery client does not record, so reports about the delivery of
 * reports never happen. It never carries REQUIRETLS (RFC 8460 5.1 only
 * asks that the report be sent over TLS when offered, which the route's
 * tls-policy decides).
 *
 * Untrusted input: the TXT answer (tlsrpt_txt.c, pure and fuzzed).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "tern/conf.h"
#include "tern/envelope.h"
#include "tern/log.h"
#include "tern/queue.h"
#include "tern/resolver.h"
#include "tern/tlsrpt.h"
#include "tern/util.h"

#define TLSRPT_TICK_MAX     60          /* seconds between looks at the clock */
#define TLSRPT_STATE_FILE   "tlsrpt.state"

/* One domain's report on its way: lookup, then commit. */
struct tlsrpt_job {
	LIST_ENTRY(tlsrpt_job) link;
	struct tlsrpt_reporter *t;          /* borrowed */
	struct tlsrpt_agg *list;            /* owned: the domain's entries */
	char *domain;                       /* owned */
	int64_t start, end;
	struct resolver_query *rq;          /* while looking up */
	uint64_t reqid;                     /* while committing */
	char report_id[160];
};

struct tlsrpt_reporter {
	pthread_t thr;
	int running;
	struct event_base *base;            /* owned */
	struct tq *inbox;                   /* owned: commit replies, calls */
	struct event *timer;                /* owned */
	struct queue *q;                    /* borrowed */
	struct conf *conf;                  /* pinned */
	struct resolver *resolver;          /* owned, made on the thread */
	char *path;                         /* owned: the state file */
	LIST_HEAD(, tlsrpt_job) jobs;
	uint64_t next_reqid;
	int stopping;
};

static void tlsrpt_send_tick(evutil_socket_t fd, short what, void *arg);

static uint64_t
tlsrpt_send_rand(void)
{
	return (uint64_t)arc4random() << 32 | arc4random();
}

static void
tlsrpt_job_free(struct tlsrpt_job *j)
{
	LIST_REMOVE(j, link);
	tlsrpt_agg_free_list(j->list);
	free(j->domain);
	free(j);
}

static unsigned
tlsrpt_send_tick_sec(const struct conf *c)
{
	unsigned iv = c->tlsrpt_interval > 0 ? c->tlsrpt_interval : 86400;

	if (iv >= 2 * TLSRPT_TICK_MAX)
		return TLSRPT_TICK_MAX;
	return iv / 2 > 0 ? iv / 2 : 1;
}

static void
tlsrpt_send_save(const struct tlsrpt_reporter *t)
{
	if (tlsrpt_dirty() && tlsrpt_save(t->path) < 0)
		log_warn("tlsrpt: cannot save %s", t->path);
}

/* Queue the mail of job j; on failure its entries go back. */
static void
tlsrpt_send_queue(struct tlsrpt_reporter *t, struct tlsrpt_job *j,
    const struct tlsrpt_txt *txt)
{
	const struct conf *c = t->conf;
	struct tlsrpt_report_info ri;
	char from[TLSRPT_ADDR_MAX], *json = NULL, *mail = NULL;
	size_t jsonlen, maillen;
	struct envelope *env;
	struct spool *sp;

	memset(&ri, 0, sizeof(ri));
	ri.hostname = c->hostname != NULL ? c->hostname : "localhost";
	if (c->tlsrpt_from != NULL)
		snprintf(from, sizeof(from), "%s", c->tlsrpt_from);
	else if (c->postmaster != NULL)
		snprintf(from, sizeof(from), "%s", c->postmaster);
	else
		snprintf(from, sizeof(from), "noreply@%s", ri.hostname);
	ri.org = c->tlsrpt_org != NULL ? c->tlsrpt_org : ri.hostname;
	ri.from = ri.contact = from;
	ri.rnd = tlsrpt_send_rand();
	snprintf(j->report_id, sizeof(j->report_id), "%lld.%016llx@%s",
	    (long long)j->start, (unsigned long long)ri.rnd, ri.hostname);
	ri.report_id = j->report_id;
	ri.domain = j->domain;
	ri.start = j->start;
	ri.end = j->end;
	ri.now = now_unix();
	if (tlsrpt_json_build(&ri, j->list, &json, &jsonlen) != 0 ||
	    tlsrpt_mail_build(&ri, txt->rua, txt->nrua, json, jsonlen, &mail,
	    &maillen) != 0) {
		log_warnx("tlsrpt: domain=%s cannot build the report",
		    j->domain);
		goto fail;
	}
	sp = spool_new(t->q);
	if (spool_write(sp, mail, maillen) < 0) {
		log_warn("tlsrpt: domain=%s cannot spool the report",
		    j->domain);
		spool_free(sp);
		goto fail;
	}
	env = envelope_new();
	env->sender = xstrdup("");
	env->flags = ENV_F_TLSRPT;
	for (size_t i = 0; i < txt->nrua; i++)
		envelope_add_rcpt(env, txt->rua[i], NULL, 0);
	j->reqid = ++t->next_reqid;
	queue_commit_submit(t->q, env, sp, t->inbox, j->reqid);  /* both move */
	free(json);
	free(mail);
	return;
fail:
	free(json);
	free(mail);
	tlsrpt_put_back(j->list);
	j->list = NULL;
	tlsrpt_job_free(j);
}

static void
tlsrpt_send_txt_cb(void *arg, struct txt_result *res)
{
	struct tlsrpt_job *j = arg;
	struct tlsrpt_txt txt;
	enum tlsrpt_txt_status ts;

	j->rq = NULL;
	if (res->status == RESOLVER_TEMPFAIL) {
		log_warnx("tlsrpt: domain=%s no report: TXT lookup failed (%s)",
		    j->domain, res->reason);
		txt_result_free(res);
		tlsrpt_job_free(j);
		return;
	}
	ts = res->status == RESOLVER_OK ? tlsrpt_txt_from_records(res->txt,
	    res->txt_len, res->n, &txt) : TLSRPT_TXT_NOT_TLSRPT;
	txt_result_free(res);
	if (ts == TLSRPT_TXT_OK && txt.nhttps > 0)
		log_info("tlsrpt: domain=%s %zu https: report URI(s) ignored "
		    "(reports go by mail only)", j->domain, txt.nhttps);
	if (ts != TLSRPT_TXT_OK || txt.nrua == 0) {
		log_info("tlsrpt: domain=%s no report: %s", j->domain,
		    ts == TLSRPT_TXT_NOT_TLSRPT ? "no TLSRPT record" :
		    ts == TLSRPT_TXT_SYNTAX ? "malformed TLSRPT record" :
		    "no usable mailto: rua");
		tlsrpt_job_free(j);
		return;
	}
	tlsrpt_send_queue(j->t, j, &txt);
}

/* Start the report of one domain and period: the TXT lookup. */
static void
tlsrpt_send_job(struct tlsrpt_reporter *t, struct tlsrpt_agg *list)
{
	struct tlsrpt_job *j = xcalloc(1, sizeof(*j));
	char name[RESOLVER_NAME_MAX + 16];

	j->t = t;
	j->list = list;
	j->domain = xstrdup(list->domain);
	j->start = list->start;
	j->end = list->end;
	LIST_INSERT_HEAD(&t->jobs, j, link);
	snprintf(name, sizeof(name), "_smtp._tls.%s", j->domain);
	if (t->resolver == NULL || (j->rq = resolver_txt_lookup(t->resolver,
	    name, tlsrpt_send_txt_cb, j)) == NULL) {
		log_warnx("tlsrpt: domain=%s no report: cannot look up %s",
		    j->domain, name);
		tlsrpt_job_free(j);
	}
}

/* Split the closed entries by (domain, period) and start a job each. */
static void
tlsrpt_send_due(struct tlsrpt_reporter *t, int64_t now)
{
	struct tlsrpt_agg *due = tlsrpt_take_due(now);

	while (due != NULL) {
		struct tlsrpt_agg *grp = due, **tail = &grp->next, **pp;

		due = due->next;
		grp->next = NULL;
		for (pp = &due; *pp != NULL; ) {
			struct tlsrpt_agg *a = *pp;

			if (a->start == grp->start && a->end == grp->end &&
			    strcmp(a->domain, grp->domain) == 0) {
				*pp = a->next;
				a->next = NULL;
				*tail = a;
				tail = &a->next;
			} else {
				pp = &a->next;
			}
		}
		tlsrpt_send_job(t, grp);
	}
}

static void
tlsrpt_send_arm(struct tlsrpt_reporter *t)
{
	struct timeval tv = { (time_t)tlsrpt_send_tick_sec(t->conf), 0 };

	evtimer_add(t->timer, &tv);
}

static void
tlsrpt_send_tick(evutil_socket_t fd, short what, void *arg)
{
	struct tlsrpt_reporter *t = arg;
	int64_t now = now_unix();

	(void)fd;
	(void)what;
	if (t->stopping)
		return;
	if (t->conf->tlsrpt)
		tlsrpt_send_due(t, now);
	tlsrpt_send_save(t);
	tlsrpt_send_arm(t);
}

static struct tlsrpt_job *
tlsrpt_send_find(struct tlsrpt_reporter *t, uint64_t reqid)
{
	struct tlsrpt_job *j;

	LIST_FOREACH(j, &t->jobs, link)
		if (j->rq == NULL && j->reqid == reqid)
			return j;
	return NULL;
}

static void
tlsrpt_send_done(struct tlsrpt_reporter *t, const struct queue_commit_done *d)
{
	struct tlsrpt_job *j = tlsrpt_send_find(t, d->hdr.reqid);
	char qid[QID_STRLEN + 1];

	if (j == NULL) {
		log_warnx("tlsrpt: unexpected commit reply %llu",
		    (unsigned long long)d->hdr.reqid);
		return;
	}
	if (d->status != Q_OK) {
		errno = d->err;
		log_warn("tlsrpt: domain=%s report not queued (kept for the "
		    "next try)", j->domain);
		tlsrpt_put_back(j->list);
		j->list = NULL;
	} else {
		size_t np = 0;

		for (const struct tlsrpt_agg *a = j->list; a != NULL;
		    a = a->next)
			np++;
		qid_format(d->qid, qid);
		log_info("id=%s tlsrpt report queued domain=%s report_id=%s "
		    "policies=%zu", qid, j->domain, j->report_id, np);
	}
	tlsrpt_job_free(j);
	/* a stop waits for the last commit in flight */
	if (t->stopping && LIST_EMPTY(&t->jobs))
		event_base_loopbreak(t->base);
}

static void
tlsrpt_send_inbox(struct tq_msg *msg, void *arg)
{
	struct tlsrpt_reporter *t = arg;

	switch (msg->type) {
	case TQ_COMMIT_DONE:
		tlsrpt_send_done(t, (struct queue_commit_done *)msg);
		free(msg);
		break;
	default:
		panic("tlsrpt_send_inbox: unexpected message type %d",
		    (int)msg->type);
	}
}

static void *
tlsrpt_send_thread(void *arg)
{
	struct tlsrpt_reporter *t = arg;

	t->resolver = resolver_new(t->base, t->conf->resolvers,
	    t->conf->nresolvers, NULL);
	if (t->resolver == NULL)
		log_warnx("tlsrpt: no resolver; no report can be sent");
	event_base_loop(t->base, EVLOOP_NO_EXIT_ON_EMPTY);
	resolver_free(t->resolver);
	t->resolver = NULL;
	return NULL;
}

struct tlsrpt_reporter *
tlsrpt_reporter_start(struct queue *q, struct conf *conf)
{
	struct tlsrpt_reporter *t = xcalloc(1, sizeof(*t));
	size_t n = strlen(conf->queue_dir) + sizeof(TLSRPT_STATE_FILE) + 2;
	int err;

	t->q = q;
	t->conf = conf_ref(conf);
	t->path = xmalloc(n);
	snprintf(t->path, n, "%s/%s", conf->queue_dir, TLSRPT_STATE_FILE);
	LIST_INIT(&t->jobs);
	if (tlsrpt_load(t->path) < 0)
		log_warn("tlsrpt: cannot read %s; counts start afresh",
		    t->path);
	tlsrpt_configure(conf->tlsrpt, conf->tlsrpt_interval);
	if ((t->base = event_base_new()) == NULL ||
	    (t->timer = evtimer_new(t->base, tlsrpt_send_tick, t)) == NULL)
		fatalx("tlsrpt_reporter_start: libevent");
	t->inbox = tq_new(t->base, tlsrpt_send_inbox, t);
	tlsrpt_send_arm(t);
	if ((err = pthread_create(&t->thr, NULL, tlsrpt_send_thread, t)) != 0) {
		errno = err;
		fatal("tlsrpt_reporter_start: pthread_create");
	}
	t->running = 1;
	return t;
}

struct tlsrpt_conf_call {
	struct tlsrpt_reporter *t;
	struct conf *conf;                  /* a reference */
};

static void
tlsrpt_send_conf_call(void *arg)
{
	struct tlsrpt_conf_call *c = arg;
	struct conf *old = c->t->conf;

	c->t->conf = c->conf;
	conf_unref(old);
	tlsrpt_configure(c->conf->tlsrpt, c->conf->tlsrpt_interval);
	free(c);
}

void
tlsrpt_reporter_set_conf(struct tlsrpt_reporter *t, struct conf *conf)
{
	struct tlsrpt_conf_call *c = xcalloc(1, sizeof(*c));

	c->t = t;
	c->conf = conf_ref(conf);
	tq_call(t->inbox, tlsrpt_send_conf_call, c);
}

static void
tlsrpt_send_stop_call(void *arg)
{
	struct tlsrpt_reporter *t = arg;
	struct tlsrpt_job *j, *n;

	t->stopping = 1;
	evtimer_del(t->timer);
	/* lookups in flight: their counts go back, to be saved */
	for (j = LIST_FIRST(&t->jobs); j != NULL; j = n) {
		n = LIST_NEXT(j, link);
		if (j->rq == NULL)
			continue;           /* committing: wait for the reply */
		resolver_cancel(j->rq);
		tlsrpt_put_back(j->list);
		j->list = NULL;
		tlsrpt_job_free(j);
	}
	if (LIST_EMPTY(&t->jobs))
		event_base_loopbreak(t->base);
}

void
tlsrpt_reporter_stop(struct tlsrpt_reporter *t)
{
	if (t == NULL)
		return;
	tlsrpt_configure(0, 0);     /* the workers have stopped anyway */
	if (t->running) {
		tq_call(t->inbox, tlsrpt_send_stop_call, t);
		pthread_join(t->thr, NULL);
	}
	tlsrpt_send_save(t);
	tq_free(t->inbox);
	event_free(t->timer);
	event_base_free(t->base);
	tlsrpt_reset();
	conf_unref(t->conf);
	free(t->path);
	free(t);
}
