/*
 * listener.c - listening sockets, session loops and connection limits.
 *
 * smtpd_listeners_bind() runs in main() before privileges are dropped: for
 * each configured listener it opens one SO_REUSEPORT socket per session
 * loop, so the kernel spreads new connections over the loops and no accept
 * lock is needed. Each loop thread then runs its own event_base with an
 * evconnlistener on its sockets and owns every session it accepts.
 *
 * The per-address connection table is shared by all loops (one mutex, held
 * for a hash lookup only).
 *
 * On a `proxy` listener the peer is a load balancer in proxy-networks and
 * the first bytes are a PROXY protocol header naming the client. The loop
 * reads it here, before any session exists and before TLS on an implicit
 * TLS listener: only header bytes are consumed (the parser says when all
 * bytes seen are header), so SMTP bytes and a ClientHello stay in the
 * socket for the session. Untrusted input: that header, and nothing else.
 * The per-address limit then counts the named client, not the balancer.
 * A missing (proxy-timeout), malformed or cut header closes the connection
 * with a log line and no reply: the peer is a proxy, not an SMTP client.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "tern/log.h"
#include "tern/log_loop.h"
#include "tern/metrics.h"
#include "tern/proxy.h"
#include "tern/util.h"
#include "smtpd_int.h"

#define CONNLIMIT_BUCKETS 1024

struct connlimit_entry {
	struct connlimit_entry *next;
	uint8_t addr[16];
	int family;
	unsigned count;
};

struct smtpd_connlimit {
	pthread_mutex_t lock;
	struct connlimit_entry *buckets[CONNLIMIT_BUCKETS];
};

static int
smtpd_connlimit_key(const struct sockaddr *sa, uint8_t key[16], int *family)
{
	memset(key, 0, 16);
	if (sa->sa_family == AF_INET) {
		memcpy(key, &((const struct sockaddr_in *)sa)->sin_addr, 4);
		*family = AF_INET;
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		memcpy(key, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
		*family = AF_INET6;
		return 0;
	}
	return -1;
}

static unsigned
smtpd_connlimit_hash(const uint8_t key[16])
{
	return fnv1a32(FNV1A32_INIT, key, 16) % CONNLIMIT_BUCKETS;
}

int
smtpd_connlimit_take(struct smtpd_server *srv, const struct sockaddr *sa,
    unsigned limit)
{
	uint8_t key[16];
	int family, r = 0;
	if (smtpd_connlimit_key(sa, key, &family) < 0)
		return 0;
	struct smtpd_connlimit *cl = srv->connlimit;
	pthread_mutex_lock(&cl->lock);
	struct connlimit_entry **pp = &cl->buckets[smtpd_connlimit_hash(key)];
	while (*pp != NULL && ((*pp)->family != family ||
	    memcmp((*pp)->addr, key, 16) != 0))
		pp = &(*pp)->next;
	if (*pp == NULL) {
		*pp = xcalloc(1, sizeof(**pp));
		memcpy((*pp)->addr, key, 16);
		(*pp)->family = family;
	}
	if (limit != 0 && (*pp)->count >= limit)
		r = -1;
	else
		(*pp)->count++;
	pthread_mutex_unlock(&cl->lock);
	return r;
}

void
smtpd_connlimit_put(struct smtpd_server *srv, const struct sockaddr *sa)
{
	uint8_t key[16];
	int family;
	if (smtpd_connlimit_key(sa, key, &family) < 0)
		return;
	struct smtpd_connlimit *cl = srv->connlimit;
	pthread_mutex_lock(&cl->lock);
	struct connlimit_entry **pp = &cl->buckets[smtpd_connlimit_hash(key)];
	while (*pp != NULL && ((*pp)->family != family ||
	    memcmp((*pp)->addr, key, 16) != 0))
		pp = &(*pp)->next;
	if (*pp != NULL && --(*pp)->count == 0) {
		struct connlimit_entry *e = *pp;
		*pp = e->next;
		free(e);
	}
	pthread_mutex_unlock(&cl->lock);
}

struct conf *
smtpd_conf_get(struct smtpd_server *srv)
{
	pthread_mutex_lock(&srv->conf_lock);
	struct conf *c = conf_ref(srv->conf);
	pthread_mutex_unlock(&srv->conf_lock);
	return c;
}

struct tls_server *
smtpd_tls_get(struct smtpd_server *srv)
{
	pthread_mutex_lock(&srv->conf_lock);
	struct tls_server *t = srv->tls ? tls_server_ref(srv->tls) : NULL;
	pthread_mutex_unlock(&srv->conf_lock);
	return t;
}

static int
smtpd_socket_bind(const struct conf_listen *l, char *err, size_t errlen)
{
	int one = 1;
	int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "listen %s: socket: %s", l->spec,
		    strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0) {
		snprintf(err, errlen, "listen %s: SO_REUSEPORT: %s", l->spec,
		    strerror(errno));
		goto fail;
	}
	if (l->addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) < 0) {
		snprintf(err, errlen, "listen %s: bind: %s", l->spec, strerror(errno));
		goto fail;
	}
	/* A large backlog: bursts of new sessions must not be dropped. */
	if (listen(fd, 4096) < 0) {
		snprintf(err, errlen, "listen %s: listen: %s", l->spec,
		    strerror(errno));
		goto fail;
	}
	return fd;
fail:
	close(fd);
	return -1;
}

int
smtpd_listeners_bind(struct smtpd_server *srv, char *err, size_t errlen)
{
	const struct conf *c = srv->conf;
	srv->nfds = c->nlisten * srv->nloops;
	srv->fds = xcalloc(srv->nfds ? srv->nfds : 1, sizeof(int));
	for (size_t i = 0; i < srv->nfds; i++)
		srv->fds[i] = -1;
	for (size_t l = 0; l < c->nlisten; l++)
		for (unsigned k = 0; k < srv->nloops; k++) {
			int fd = smtpd_socket_bind(&c->listen[l], err, errlen);
			if (fd < 0)
				return -1;
			srv->fds[l * srv->nloops + k] = fd;
		}
	return 0;
}

/* Index of the listener a given evconnlistener serves: stored as its arg. */
struct smtpd_accept_arg {
	struct smtpd_loop *loop;
	char spec[128];            /* listener spec as bound */
};

/*
 * Answer a connection we do not take, count it under why, log the reason
 * (if any), close it. On an implicit-TLS listener (lc; NULL when unknown)
 * the client's first bytes are a TLS handshake and a plaintext reply would
 * only be garbage to it: it gets the close alone.
 */
static void
smtpd_accept_refuse(evutil_socket_t fd, const struct conf_listen *lc,
    enum metrics_conn_refusal why, const char *reply, const char *reason,
    const struct sockaddr *sa)
{
	char line[128], addr[64];

	METRIC_INC(connections_refused_total[why]);
	if (lc == NULL || lc->tls != CONF_TLS_IMPLICIT) {
		int n = snprintf(line, sizeof(line), "%s\r\n", reply);
		ssize_t w = write(fd, line, (size_t)n);
		(void)w;        /* best effort: the peer may be gone */
	}
	if (reason != NULL)
		log_info("connect client=%s refused reason=%s",
		    sockaddr_ntop(sa, addr, sizeof(addr)), reason);
	close(fd);
}

/* ---- PROXY protocol header, before the session ---- */

#define SMTPD_PROXY_BUF0 256        /* a v1 line, a v2 header with small TLVs */

struct smtpd_proxy_wait {
	LIST_ENTRY(smtpd_proxy_wait) entry;   /* in loop->proxy_waits */
	struct smtpd_loop *loop;          /* borrowed */
	struct conf *conf;                /* owned reference: pins lc */
	const struct conf_listen *lc;     /* borrowed: inside conf */
	int fd;                           /* owned until a session takes it */
	struct sockaddr_storage peer;     /* the balancer */
	struct event *ev;                 /* owned: readable, or the deadline */
	uint64_t deadline_us;             /* monotonic */
	uint8_t *buf;                     /* owned: header bytes consumed */
	size_t have, cap;
};

/* Forget a wait; close its socket unless a session took it (fd -1). */
static void
smtpd_proxy_wait_free(struct smtpd_proxy_wait *w)
{
	LIST_REMOVE(w, entry);
	if (w->ev != NULL)
		event_free(w->ev);
	if (w->fd >= 0) {
		close(w->fd);
		w->loop->srv->nconnections--;
		conf_unref(w->conf);
	}
	free(w->buf);
	free(w);
}

static void
smtpd_proxy_fail(struct smtpd_proxy_wait *w, const char *reason,
    const char *error)
{
	char addr[64];

	log_info("connect client=%s listener=%s refused reason=%s%s%s",
	    sockaddr_ntop((struct sockaddr *)&w->peer, addr, sizeof(addr)),
	    w->lc->spec, reason, error ? " error=" : "", error ? error : "");
	METRIC_INC(connections_refused_total[strcmp(reason, "shutting-down") == 0 ?
	    METRICS_CREF_STOPPING : METRICS_CREF_PROXY]);
	smtpd_proxy_wait_free(w);
}

/*
 * The header is in: the client it names (or the balancer itself, for a
 * LOCAL health check or UNKNOWN) takes a per-address slot, then a session
 * starts on the socket with the bytes after the header still unread.
 */
static void
smtpd_proxy_done(struct smtpd_proxy_wait *w, const struct proxy_hdr *h)
{
	struct smtpd_server *srv = w->loop->srv;
	const struct sockaddr *client = h->local ?
	    (const struct sockaddr *)&w->peer : (const struct sockaddr *)&h->src;
	socklen_t clen = h->local ? sizeof(w->peer) : h->srclen;
	char a[64], b[64];

	if (w->loop->stopping) {
		smtpd_proxy_fail(w, "shutting-down", NULL);
		return;
	}
	unsigned perip = conf_is_trusted(w->conf, client) ?
	    w->conf->max_connections_per_ip_trusted :
	    w->conf->max_connections_per_ip;
	if (smtpd_connlimit_take(srv, client, perip) < 0) {
		log_info("connect client=%s via=%s refused "
		    "reason=max-connections-per-ip",
		    sockaddr_ntop(client, a, sizeof(a)),
		    sockaddr_ntop((struct sockaddr *)&w->peer, b, sizeof(b)));
		smtpd_accept_refuse(w->fd, w->lc, METRICS_CREF_PER_IP,
		    "421 4.7.0 Too many connections from your address", NULL,
		    client);
		w->fd = -1;
		srv->nconnections--;
		conf_unref(w->conf);
		smtpd_proxy_wait_free(w);
		return;
	}
	int fd = w->fd;
	w->fd = -1;                       /* the session owns fd and conf now */
	smtpd_session_accept(w->loop, fd, client, clen, w->lc, w->conf,
	    (const struct sockaddr *)&w->peer);
	smtpd_proxy_wait_free(w);
}

static void
smtpd_proxy_arm(struct smtpd_proxy_wait *w)
{
	uint64_t now = now_mono_us();
	uint64_t d = w->deadline_us > now ? w->deadline_us - now : 0;
	struct timeval tv = { (time_t)(d / 1000000u), (suseconds_t)(d % 1000000u) };
	event_add(w->ev, &tv);
}

/* A v2 header longer than the buffer: make room for all of it. */
static void
smtpd_proxy_grow(struct smtpd_proxy_wait *w)
{
	size_t total = PROXY_V2_HDR + ((size_t)w->buf[14] << 8 | w->buf[15]);
	if (w->have < w->cap || w->have < PROXY_V2_HDR || total <= w->cap)
		return;
	w->buf = xreallocarray(w->buf, total, 1);
	w->cap = total;
}

/*
 * Peek at what has arrived, parse it after what was consumed before, then
 * consume exactly the header bytes: all of them while the parser wants
 * more (they are all header), up to the header's end once it is whole.
 */
static void
smtpd_proxy_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_proxy_wait *w = arg;
	struct proxy_hdr h;

	if (what & EV_TIMEOUT) {
		smtpd_proxy_fail(w, "proxy-timeout", NULL);
		return;
	}
	ssize_t n = recv(fd, w->buf + w->have, w->cap - w->have, MSG_PEEK);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
		smtpd_proxy_arm(w);
		return;
	}
	if (n <= 0) {
		smtpd_proxy_fail(w, "proxy-header", n == 0 ? "eof" : strerror(errno));
		return;
	}
	enum proxy_status st = proxy_parse(w->buf, w->have + (size_t)n, &h);
	if (st != PROXY_OK && st != PROXY_NEED_MORE) {
		smtpd_proxy_fail(w, "proxy-header", proxy_status_name(st));
		return;
	}
	size_t take = st == PROXY_OK ? h.len - w->have : (size_t)n;
	if (recv(fd, w->buf + w->have, take, 0) != (ssize_t)take) {
		smtpd_proxy_fail(w, "proxy-header", "short read");
		return;
	}
	w->have += take;
	if (st == PROXY_OK) {
		smtpd_proxy_done(w, &h);
		return;
	}
	smtpd_proxy_grow(w);
	smtpd_proxy_arm(w);
}

/* A connection to a proxy listener: wait for its header (takes fd, conf). */
static void
smtpd_proxy_accept(struct smtpd_loop *loop, evutil_socket_t fd,
    const struct sockaddr *sa, int salen, const struct conf_listen *lc,
    struct conf *conf)
{
	char addr[64];

	if (!conf_is_proxy_peer(conf, sa)) {
		log_info("connect client=%s listener=%s refused "
		    "reason=not-in-proxy-networks",
		    sockaddr_ntop(sa, addr, sizeof(addr)), lc->spec);
		METRIC_INC(connections_refused_total[METRICS_CREF_PROXY]);
		close(fd);
		conf_unref(conf);
		return;
	}
	struct smtpd_proxy_wait *w = xcalloc(1, sizeof(*w));
	w->loop = loop;
	w->conf = conf;
	w->lc = lc;
	w->fd = fd;
	memcpy(&w->peer, sa, (size_t)salen < sizeof(w->peer) ?
	    (size_t)salen : sizeof(w->peer));
	w->cap = SMTPD_PROXY_BUF0;
	w->buf = xmalloc(w->cap);
	w->deadline_us = now_mono_us() + (uint64_t)conf->proxy_timeout * 1000000u;
	loop->srv->nconnections++;
	LIST_INSERT_HEAD(&loop->proxy_waits, w, entry);
	evutil_make_socket_nonblocking(fd);
	w->ev = event_new(loop->base, fd, EV_READ, smtpd_proxy_read_cb, w);
	if (w->ev == NULL) {
		smtpd_proxy_fail(w, "proxy-header", "out of memory");
		return;
	}
	smtpd_proxy_arm(w);
}

/* Stopping: connections still sending a header are closed. */
static void
smtpd_proxy_waits_drop(struct smtpd_loop *loop)
{
	while (!LIST_EMPTY(&loop->proxy_waits))
		smtpd_proxy_wait_free(LIST_FIRST(&loop->proxy_waits));
}

static void
smtpd_accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct smtpd_accept_arg *aa = arg;
	struct smtpd_loop *loop = aa->loop;
	struct smtpd_server *srv = loop->srv;
	struct conf *conf = smtpd_conf_get(srv);
	int one = 1;

	/* Replies are written whole; don't let Nagle hold them back. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));

	/*
	 * Sockets stay as bound at start; a reloaded conf supplies the
	 * listener's settings, matched by its spec ("127.0.0.1:25").
	 */
	const struct conf_listen *lc = NULL;
	for (size_t i = 0; i < conf->nlisten; i++)
		if (strcmp(conf->listen[i].spec, aa->spec) == 0) {
			lc = &conf->listen[i];
			break;
		}
	if (loop->stopping) {
		smtpd_accept_refuse(fd, lc, METRICS_CREF_STOPPING,
		    "421 4.3.2 Service shutting down", NULL, sa);
		goto out;
	}
	if (lc == NULL) {
		/* removed by a reload: keep the mode it was started with */
		smtpd_accept_refuse(fd, NULL, METRICS_CREF_STOPPING,
		    "421 4.3.2 Listener disabled", NULL, sa);
		goto out;
	}
	if (srv->nconnections >= conf->max_connections) {
		smtpd_accept_refuse(fd, lc, METRICS_CREF_MAX, "421 4.7.0 Too "
		    "many connections, try again later", "max-connections", sa);
		goto out;
	}
	if (lc->proxy) {
		/* the balancer is not a client: the header names one */
		smtpd_proxy_accept(loop, fd, sa, salen, lc, conf);
		return;
	}
	/*
	 * Clients in trusted-networks (application servers, the local host)
	 * have their own per-address cap, none by default; max-connections
	 * above still bounds them. They are counted all the same, so a
	 * reload that changes trusted-networks releases slots correctly.
	 */
	unsigned perip = conf_is_trusted(conf, sa) ?
	    conf->max_connections_per_ip_trusted : conf->max_connections_per_ip;
	if (smtpd_connlimit_take(srv, sa, perip) < 0) {
		smtpd_accept_refuse(fd, lc, METRICS_CREF_PER_IP, "421 4.7.0 Too "
		    "many connections from your address",
		    "max-connections-per-ip", sa);
		goto out;
	}
	srv->nconnections++;
	smtpd_session_accept(loop, fd, sa, (socklen_t)salen, lc, conf, NULL);
	return;
out:
	conf_unref(conf);
}

static void
smtpd_accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct evconnlistener *lev = arg;
	evconnlistener_enable(lev);
}

static void
smtpd_accept_error_cb(struct evconnlistener *lev, void *arg)
{
	int e = EVUTIL_SOCKET_ERROR();
	/* EMFILE and friends: back off briefly instead of spinning. */
	log_warnx("accept: %s", evutil_socket_error_to_string(e));
	evconnlistener_disable(lev);
	struct timeval tv = { 0, 200000 };
	event_base_once(evconnlistener_get_base(lev), -1, EV_TIMEOUT,
	    smtpd_accept_resume_cb, lev, &tv);
}

static void *
smtpd_loop_main(void *arg)
{
	struct smtpd_loop *loop = arg;
	/* a turn's log lines ("queued" after a group commit) in one write */
	if (log_loop_attach(loop->base) < 0)
		log_warnx("session loop: log lines will be written one by one");
	event_base_dispatch(loop->base);
	log_loop_detach();
	return NULL;
}

int
smtpd_loops_start(struct smtpd_server *srv)
{
	const struct conf *c = srv->conf;
	srv->loops = xcalloc(srv->nloops, sizeof(struct smtpd_loop));
	for (unsigned k = 0; k < srv->nloops; k++) {
		struct smtpd_loop *loop = &srv->loops[k];
		loop->srv = srv;
		LIST_INIT(&loop->proxy_waits);
		loop->base = util_event_base_new();
		if (loop->base == NULL)
			fatalx("event_base_new failed");
		loop->inbox = tq_new(loop->base, smtpd_loop_inbox, loop);
		loop->nlev = c->nlisten;
		loop->lev = xcalloc(c->nlisten ? c->nlisten : 1, sizeof(*loop->lev));
		loop->aargs = xcalloc(c->nlisten ? c->nlisten : 1,
		    sizeof(struct smtpd_accept_arg));
		for (size_t l = 0; l < c->nlisten; l++) {
			struct smtpd_accept_arg *aa = &loop->aargs[l];
			aa->loop = loop;
			snprintf(aa->spec, sizeof(aa->spec), "%s", c->listen[l].spec);
			loop->lev[l] = evconnlistener_new(loop->base, smtpd_accept_cb,
			    aa, LEV_OPT_CLOSE_ON_FREE, -1, srv->fds[l * srv->nloops + k]);
			if (loop->lev[l] == NULL)
				fatalx("evconnlistener_new failed for %s",
				    c->listen[l].spec);
			srv->fds[l * srv->nloops + k] = -1;   /* owned by lev now */
			evconnlistener_set_error_cb(loop->lev[l], smtpd_accept_error_cb);
		}
		if (k == 0)
			smtpd_local_arm(loop);
	}
	for (unsigned k = 0; k < srv->nloops; k++) {
		if (pthread_create(&srv->loops[k].thread, NULL, smtpd_loop_main,
		    &srv->loops[k]) != 0)
			fatalx("pthread_create failed");
	}
	return 0;
}

/* Runs on a loop thread: stop accepting and wind sessions down. */
static void
smtpd_loop_stop_call(void *arg)
{
	struct smtpd_loop *loop = arg;
	for (size_t l = 0; l < loop->nlev; l++)
		evconnlistener_disable(loop->lev[l]);
	smtpd_proxy_waits_drop(loop);
	if (loop->local_lev != NULL)
		evconnlistener_disable(loop->local_lev);
	smtpd_loop_shutdown_sessions(loop);
}

static void
smtpd_loop_exit_call(void *arg)
{
	struct smtpd_loop *loop = arg;
	event_base_loopbreak(loop->base);
}

void
smtpd_loops_stop(struct smtpd_server *srv, unsigned grace_seconds)
{
	for (unsigned k = 0; k < srv->nloops; k++)
		tq_call(srv->loops[k].inbox, smtpd_loop_stop_call, &srv->loops[k]);
	/*
	 * Sessions waiting for a commit get their answer, then close; others
	 * got 421 already. Give them the grace period to drain.
	 */
	uint64_t deadline = now_mono_us() + (uint64_t)grace_seconds * 1000000u;
	for (;;) {
		unsigned open = 0;
		for (unsigned k = 0; k < srv->nloops; k++)
			open += __atomic_load_n(&srv->loops[k].nsessions,
			    __ATOMIC_RELAXED);
		if (open == 0 || now_mono_us() > deadline)
			break;
		usleep(20000);
	}
	for (unsigned k = 0; k < srv->nloops; k++)
		tq_call(srv->loops[k].inbox, smtpd_loop_exit_call, &srv->loops[k]);
	for (unsigned k = 0; k < srv->nloops; k++)
		pthread_join(srv->loops[k].thread, NULL);
}

void
smtpd_loops_free(struct smtpd_server *srv)
{
	for (unsigned k = 0; k < srv->nloops && srv->loops != NULL; k++) {
		struct smtpd_loop *loop = &srv->loops[k];
		for (size_t l = 0; l < loop->nlev; l++)
			if (loop->lev[l] != NULL)
				evconnlistener_free(loop->lev[l]);
		free(loop->lev);
		free(loop->aargs);
		if (loop->local_lev != NULL)
			evconnlistener_free(loop->local_lev);
		/* sessions still open past the grace period are abandoned */
		tq_free(loop->inbox);
		event_base_free(loop->base);
	}
	free(srv->loops);
	srv->loops = NULL;
	for (size_t i = 0; i < srv->nfds; i++)
		if (srv->fds[i] >= 0)
			close(srv->fds[i]);
	free(srv->fds);
	srv->fds = NULL;
	if (srv->local_fd >= 0)
		close(srv->local_fd);
	srv->local_fd = -1;
	if (srv->connlimit != NULL) {
		for (size_t b = 0; b < CONNLIMIT_BUCKETS; b++) {
			struct connlimit_entry *e = srv->connlimit->buckets[b], *n;
			for (; e != NULL; e = n) {
				n = e->next;
				free(e);
			}
		}
		pthread_mutex_destroy(&srv->connlimit->lock);
		free(srv->connlimit);
		srv->connlimit = NULL;
	}
}

void
smtpd_connlimit_init(struct smtpd_server *srv)
{
	srv->connlimit = xcalloc(1, sizeof(*srv->connlimit));
	pthread_mutex_init(&srv->connlimit->lock, NULL);
}
