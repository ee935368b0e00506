/*
 * deliver.c - the delivery worker pool (tern/deliver.h; doc/design.md,
 * "How a message travels", step 5).
 *
 * N worker threads, each with its own event_base, c-ares resolver and job
 * inbox (a tq). deliver_pool_submit() may be called from any thread; it
 * picks the worker by a hash of the job's destination key (route kind,
 * host or domain, port, TLS policy), so every job for one destination runs
 * on the same loop and finds that loop's idle cached connection: reuse
 * needs no cross-thread lookup. (The scheduler bounds parallel connections
 * per destination; one destination cannot spread over several workers.)
 *
 * Each worker owns its connections (w->conns) and sessions (w->sessions).
 * An idle connection stays cached DLV_CONN_IDLE_MAX_SEC seconds and serves
 * at most DLV_CONN_MSG_MAX transactions; anything the server sends while it
 * is idle (a 421, EOF) closes it. Expiry sends QUIT.
 *
 * Never blocks the loop except for queue_read_body() of one message (a
 * file read, once a connection is ready for it). Touches the envelope store
 * only through that call, when copy-forward moved the record (one index
 * read for the new location). Peer input is handled in deliver_session.c.
 *
 * A plain connection (no TLS) does its own I/O once it is established
 * (dlv_conn_own_io; base/sockio.c says why): libevent's socket bufferevent
 * would arm and disarm its write event (two epoll_ctl) around every command
 * group and the body, ask the base under its lock whether that event is
 * pending at every evbuffer_add, and precede each read with an
 * ioctl(FIONREAD). Instead the bufferevent's read event stays off and the
 * connection's own persistent read event (c->rev) reads the replies into
 * the same input buffer, one readv per wake-up, and calls the same
 * dispatchers, directly. Everything that reaches the worker's code from
 * outside (a read, a new job) runs as a batch: commands go into the output
 * (dlv_conn_output) with the write event off, and the batch's end writes
 * them with one writev; only what the socket does not take is left to
 * libevent's write event, whose callback then does what the end of the
 * batch would have done. Errors surface through the same event callback as
 * before. STARTTLS gives both directions back to libevent
 * (dlv_conn_lib_io) before the TLS filter goes on top.
 *
 * Locking: the bufferevents and their evbuffers are made without
 * BEV_OPT_THREADSAFE, and no evbuffer has locking enabled: a connection,
 * its buffers and its events are only ever touched by their worker's
 * thread (jobs arrive as tq messages, results leave as tq messages, the
 * connection cache is per worker). The mutexes left are the event_base's
 * own lock (every base has one once evthread_use_pthreads() ran, which
 * tq's cross-thread event_active() needs) and the tq's.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>

#include "tern/deliver.h"
#include "tern/log.h"
#include "tern/metrics.h"
#include "tern/resolver.h"
#include "tern/sockio.h"
#include "tern/tls.h"
#include "tern/util.h"

#include "deliver_int.h"
#include "mta_sts.h"

struct deliver_pool {
	struct queue *q;                    /* borrowed */
	pthread_mutex_t lock;               /* guards conf and closing */
	struct conf *conf;                  /* owned reference */
	int closing;                        /* stopped: submit drops jobs */
	SSL_CTX *ssl_ctx;                   /* owned; shared by the workers */
	struct dlv_worker *w;               /* owned array */
	unsigned n;
};

void
dlv_timeouts_init(struct dlv_timeouts *t, const struct conf *c)
{
	unsigned cap = c->command_timeout;

	t->connect = c->connect_timeout ? c->connect_timeout : 30;
	t->greeting = c->greeting_timeout ? c->greeting_timeout : 300;
	t->helo = 300;
	t->mail = 300;
	t->rcpt = 300;
	t->data_init = 120;
	t->data_block = 180;
	t->data_done = c->data_timeout ? c->data_timeout : 600;
	if (cap != 0) {
		unsigned *f[] = { &t->connect, &t->greeting, &t->helo,
		    &t->mail, &t->rcpt, &t->data_init, &t->data_block,
		    &t->data_done };
		for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++)
			if (*f[i] > cap)
				*f[i] = cap;
	}
}

struct conf *
dlv_pool_conf(struct deliver_pool *p)
{
	struct conf *c;

	pthread_mutex_lock(&p->lock);
	c = conf_ref(p->conf);
	pthread_mutex_unlock(&p->lock);
	return c;
}

char *
dlv_route_key(const struct dlv_job *job)
{
	const char *where = job->route.kind == CONF_ROUTE_MX ? job->domain :
	    job->route.host;
	char buf[RESOLVER_NAME_MAX + 64];
	size_t i;

	snprintf(buf, sizeof(buf), "%d:%d:%u:%d:%s", (int)job->route.kind,
	    (int)job->route.transport, (unsigned)job->route.port,
	    (int)job->route.tls,
	    where != NULL ? where : "");
	/* a socket path is case-sensitive: kept as written */
	for (i = 0; buf[i] != '\0' &&
	    job->route.transport != CONF_XPORT_LMTP_UNIX; i++)
		if (buf[i] >= 'A' && buf[i] <= 'Z')
			buf[i] = (char)(buf[i] - 'A' + 'a');
	return xstrdup(buf);
}

/* ---- jobs and results (their types: tern/deliver.h) ---- */

void
dlv_job_free(struct dlv_job *j)
{
	if (j == NULL)
		return;
	envelope_free(j->env);
	free(j->rcpts);
	free(j->domain);
	free(j->route.domain);
	free(j->route.host);
	free(j);
}

void
dlv_result_free(struct dlv_result *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; r->r != NULL && i < r->n; i++)
		free(r->r[i].reply);
	free(r->r);
	free(r->relay);
	free(r->tls);
	envelope_free(r->env);
	free(r);
}

/* ------------------------------------------------------------------ */
/* connections */

static void dlv_worker_batch_begin(struct dlv_worker *w);
static void dlv_worker_batch_end(struct dlv_worker *w);

static void
dlv_conn_readcb(struct bufferevent *bev, void *arg)
{
	struct dlv_conn *c = arg;
	struct dlv_worker *w = c->w;

	switch (c->state) {
	case DLV_CONN_BUSY:
		/* what the replies make the session write goes out at the end
		 * (from libevent: a plain connection's first read, or TLS) */
		dlv_worker_batch_begin(w);
		dlv_session_on_read(c->s);
		dlv_worker_batch_end(w);    /* c may be gone */
		break;
	case DLV_CONN_IDLE:
		/* a server talking to an idle client is closing (421) */
		log_trace(TRACE_CLIENT, "dlv relay=%s idle connection got "
		    "data: closing", c->relay);
		dlv_conn_free(c);
		break;
	case DLV_CONN_QUIT:
		evbuffer_drain(bufferevent_get_input(bev),
		    evbuffer_get_length(bufferevent_get_input(bev)));
		break;
	}
}

static void
dlv_conn_writecb(struct bufferevent *bev, void *arg)
{
	struct dlv_conn *c = arg;

	if (c->state == DLV_CONN_BUSY)
		dlv_session_on_write(c->s);
	else if (c->state == DLV_CONN_QUIT)
		dlv_conn_free(c);
}

static void
dlv_conn_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct dlv_conn *c = arg;

	if (c->state == DLV_CONN_BUSY)
		dlv_session_on_event(c->s, what);
	else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
		dlv_conn_free(c);
}

static void
dlv_conn_timercb(evutil_socket_t fd, short what, void *arg)
{
	struct dlv_conn *c = arg;

	if (c->state == DLV_CONN_IDLE)
		dlv_conn_quit(c);
	else
		dlv_conn_free(c);
}

void
dlv_conn_setcb(struct dlv_conn *c)
{
	bufferevent_setcb(c->bev, dlv_conn_readcb, dlv_conn_writecb,
	    dlv_conn_eventcb, c);
}

/* ---- a plain connection's own I/O (see the top of this file) ---- */

static void
dlv_worker_batch_begin(struct dlv_worker *w)
{
	w->batch++;
}

/*
 * Write c's output now. What the socket does not take (or a failed write)
 * goes to libevent's write event, which reports as before; when all of it
 * went out, what its write callback would do is done here.
 */
static void
dlv_conn_flush(struct dlv_conn *c)
{
	if (c->rev == NULL ||
	    evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		return;
	if (!sockio_flush(c->bev)) {
		bufferevent_enable(c->bev, EV_WRITE);
		return;
	}
	dlv_conn_writecb(c->bev, c);        /* may free c */
}

static void
dlv_worker_batch_end(struct dlv_worker *w)
{
	struct dlv_conn *c = w->wpending;

	if (--w->batch > 0 || c == NULL)
		return;
	w->wpending = NULL;
	dlv_conn_flush(c);
}

struct evbuffer *
dlv_conn_output(struct dlv_conn *c)
{
	struct dlv_worker *w = c->w;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	int wr = (bufferevent_get_enabled(c->bev) & EV_WRITE) != 0;

	if (c->rev == NULL)
		return out;                     /* TLS: libevent writes */
	if (w->batch == 0) {
		/* not in a batch (nothing does that now): libevent writes */
		if (!wr)
			bufferevent_enable(c->bev, EV_WRITE);
		return out;
	}
	if (w->wpending != c) {
		if (w->wpending != NULL)
			dlv_conn_flush(w->wpending);
		w->wpending = c;
	}
	/* the write event is not pending with nothing to write: no syscall */
	if (wr && evbuffer_get_length(out) == 0)
		bufferevent_disable(c->bev, EV_WRITE);
	return out;
}

/*
 * c->rev fired: read what is there (up to the high-watermark, as
 * libevent's read would) and dispatch it as libevent's callbacks would.
 * With the input already at the watermark nothing is read: the session
 * parses what it holds and fails on an overlong reply.
 */
static void
dlv_conn_own_readcb(evutil_socket_t fd, short what, void *arg)
{
	struct dlv_conn *c = arg;
	struct dlv_worker *w = c->w;
	size_t have = evbuffer_get_length(bufferevent_get_input(c->bev));
	ssize_t r = 1;

	(void)fd;
	(void)what;
	if (have < DLV_READ_HIGH) {
		size_t want = DLV_READ_HIGH - have;

		r = sockio_read(c->bev, want < DLV_READ_BLOCK ? want :
		    DLV_READ_BLOCK);
		if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
	}
	dlv_worker_batch_begin(w);
	if (r > 0) {
		dlv_conn_readcb(c->bev, c);
	} else {
		event_del(c->rev);
		dlv_conn_eventcb(c->bev, BEV_EVENT_READING |
		    (r == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR), c);
	}
	dlv_worker_batch_end(w);            /* c may be gone */
}

void
dlv_conn_own_io(struct dlv_conn *c)
{
	evutil_socket_t fd = bufferevent_getfd(c->bev);

	if (c->rev != NULL || c->ssl != NULL || fd < 0)
		return;
	c->rev = event_new(c->w->base, fd, EV_READ | EV_PERSIST,
	    dlv_conn_own_readcb, c);
	if (c->rev == NULL)
		return;                         /* libevent's I/O, then */
	bufferevent_disable(c->bev, EV_READ);
	event_add(c->rev, NULL);
}

void
dlv_conn_lib_io(struct dlv_conn *c)
{
	if (c->rev == NULL)
		return;
	event_free(c->rev);
	c->rev = NULL;
	if (c->w->wpending == c)
		c->w->wpending = NULL;
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

struct dlv_conn *
dlv_conn_new(struct dlv_worker *w, const char *key)
{
	struct dlv_conn *c = xcalloc(1, sizeof(*c));

	c->w = w;
	c->state = DLV_CONN_BUSY;
	c->key = xstrdup(key);
	c->timer = evtimer_new(w->base, dlv_conn_timercb, c);
	if (c->timer == NULL)
		panic("dlv_conn_new: evtimer_new failed");
	METRIC_INC(out_connections_total);
	METRIC_INC(out_connections_open);
	TAILQ_INSERT_TAIL(&w->conns, c, entry);
	return c;
}

void
dlv_conn_free(struct dlv_conn *c)
{
	if (c == NULL)
		return;
	TAILQ_REMOVE(&c->w->conns, c, entry);
	METRIC_DEC(out_connections_open);
	if (c->w->wpending == c)
		c->w->wpending = NULL;
	if (c->rev != NULL)
		event_free(c->rev);             /* before the socket closes */
	if (c->bev != NULL)
		bufferevent_free(c->bev);      /* frees the SSL and the socket */
	event_free(c->timer);
	free(c->key);
	free(c->relay);
	free(c->tls);
	free(c);
}

struct dlv_conn *
dlv_conn_take(struct dlv_worker *w, const char *key)
{
	struct dlv_conn *c, *next;

	for (c = TAILQ_FIRST(&w->conns); c != NULL; c = next) {
		next = TAILQ_NEXT(c, entry);
		if (c->state != DLV_CONN_IDLE || strcmp(c->key, key) != 0)
			continue;
		if (c->nmsg >= DLV_CONN_MSG_MAX ||
		    evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
			dlv_conn_quit(c);
			continue;
		}
		evtimer_del(c->timer);
		c->state = DLV_CONN_BUSY;
		METRIC_INC(out_connections_reused_total);
		return c;
	}
	return NULL;
}

void
dlv_conn_park(struct dlv_conn *c)
{
	struct timeval tv = { DLV_CONN_IDLE_MAX_SEC, 0 };

	if (c->nmsg >= DLV_CONN_MSG_MAX) {
		dlv_conn_quit(c);
		return;
	}
	c->s = NULL;
	c->state = DLV_CONN_IDLE;
	bufferevent_set_timeouts(c->bev, NULL, NULL);
	if (c->rev == NULL)                 /* else c->rev reads on */
		bufferevent_enable(c->bev, EV_READ);
	evtimer_add(c->timer, &tv);
}

void
dlv_conn_quit(struct dlv_conn *c)
{
	struct timeval tv = { DLV_QUIT_WAIT_SEC, 0 };

	c->s = NULL;
	if (c->bev == NULL || c->state == DLV_CONN_QUIT) {
		if (c->bev == NULL)
			dlv_conn_free(c);
		return;
	}
	c->state = DLV_CONN_QUIT;
	log_trace(TRACE_CLIENT, "dlv relay=%s > QUIT", c->relay ? c->relay : "-");
	bufferevent_write(c->bev, "QUIT\r\n", 6);
	/* libevent writes it (once per connection); c->rev, if any, reads */
	bufferevent_enable(c->bev, c->rev != NULL ? EV_WRITE :
	    EV_READ | EV_WRITE);
	evtimer_del(c->timer);
	evtimer_add(c->timer, &tv);
}

/* ------------------------------------------------------------------ */
/* workers */

static void
dlv_worker_handler(struct tq_msg *msg, void *arg)
{
	struct dlv_worker *w = arg;

	switch (msg->type) {
	case TQ_DELIVERY_JOB:
		if (w->stopping) {
			dlv_job_free((struct dlv_job *)msg);
			break;
		}
		/* a cached connection's MAIL... goes out at the batch's end */
		dlv_worker_batch_begin(w);
		dlv_session_start(w, (struct dlv_job *)msg);
		dlv_worker_batch_end(w);
		break;
	default:
		panic("dlv_worker_handler: unexpected message type %d",
		    (int)msg->type);
	}
}

static void
dlv_worker_stop_cb(void *arg)
{
	struct dlv_worker *w = arg;

	w->stopping = 1;
	event_base_loopbreak(w->base);
}

static void *
dlv_worker_main(void *arg)
{
	struct dlv_worker *w = arg;
	struct conf *c = dlv_pool_conf(w->pool);
	struct dlv_session *s;
	struct dlv_conn *cn;

	w->resolver = resolver_new(w->base, c->resolvers, c->nresolvers, NULL);
	if (w->resolver == NULL)
		log_warnx("delivery worker %u: no resolver; deliveries that "
		    "need DNS will be deferred", w->idx);
	conf_unref(c);

	while (!w->stopping)
		event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);

	/* stop: abandon sessions (their recipients stay pending) */
	while ((s = TAILQ_FIRST(&w->sessions)) != NULL)
		dlv_session_abandon(s);
	while ((cn = TAILQ_FIRST(&w->conns)) != NULL)
		dlv_conn_free(cn);
	/* let libevent finish the bufferevents freed just now */
	event_base_loop(w->base, EVLOOP_NONBLOCK);
	mta_sts_loop_stop(w->base);     /* MTA-STS fetches of this loop */
	resolver_free(w->resolver);
	w->resolver = NULL;
	tq_free(w->inbox);              /* jobs still posted are freed */
	w->inbox = NULL;
	event_base_free(w->base);
	w->base = NULL;
	return NULL;
}

struct deliver_pool *
deliver_pool_start(struct queue *q, struct conf *conf, unsigned n)
{
	struct deliver_pool *p = xcalloc(1, sizeof(*p));
	char err[256] = "";

	if (n == 0)
		n = 1;
	p->q = q;
	p->n = n;
	pthread_mutex_init(&p->lock, NULL);
	p->conf = conf_ref(conf);
	mta_sts_init(conf->queue_dir);  /* the MTA-STS policy cache */
	p->ssl_ctx = tls_client_ctx_new(err, sizeof(err));
	if (p->ssl_ctx == NULL)
		fatalx("delivery: TLS client context: %s", err);
	p->w = xcalloc(n, sizeof(*p->w));
	for (unsigned i = 0; i < n; i++) {
		struct dlv_worker *w = &p->w[i];

		w->pool = p;
		w->idx = i;
		w->q = q;
		w->ssl_ctx = p->ssl_ctx;
		TAILQ_INIT(&w->conns);
		TAILQ_INIT(&w->sessions);
		w->base = util_event_base_new();
		if (w->base == NULL)
			fatalx("delivery: event_base_new failed");
		w->inbox = tq_new(w->base, dlv_worker_handler, w);
		if (pthread_create(&w->thread, NULL, dlv_worker_main, w) != 0)
			fatalx("delivery: pthread_create failed");
	}
	return p;
}

/* FNV-1a of the destination key. */
static uint32_t
dlv_key_hash(const char *k)
{
	return fnv1a32(FNV1A32_INIT, k, strlen(k));
}

void
deliver_pool_submit(struct deliver_pool *p, struct dlv_job *j)
{
	char *key = dlv_route_key(j);
	unsigned i = dlv_key_hash(key) % p->n;

	free(key);
	j->hdr.type = TQ_DELIVERY_JOB;
	/*
	 * The scheduler may still hand out a job while ternd shuts down: once
	 * the pool is closing the job is dropped (its recipients stay pending
	 * in the queue and are tried after the restart).
	 */
	pthread_mutex_lock(&p->lock);
	if (!p->closing) {
		tq_post(p->w[i].inbox, &j->hdr);
		j = NULL;
	}
	pthread_mutex_unlock(&p->lock);
	dlv_job_free(j);
}

void
deliver_pool_set_conf(struct deliver_pool *p, struct conf *conf)
{
	struct conf *old;

	conf_ref(conf);
	pthread_mutex_lock(&p->lock);
	old = p->conf;
	p->conf = conf;
	pthread_mutex_unlock(&p->lock);
	conf_unref(old);
}

void
deliver_pool_stop(struct deliver_pool *p)
{
	if (p == NULL)
		return;
	pthread_mutex_lock(&p->lock);
	p->closing = 1;
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->n; i++)
		tq_call(p->w[i].inbox, dlv_worker_stop_cb, &p->w[i]);
	for (unsigned i = 0; i < p->n; i++)
		pthread_join(p->w[i].thread, NULL);
}

void
deliver_pool_free(struct deliver_pool *p)
{
	if (p == NULL)
		return;
	free(p->w);
	mta_sts_shutdown();
	SSL_CTX_free(p->ssl_ctx);
	conf_unref(p->conf);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
