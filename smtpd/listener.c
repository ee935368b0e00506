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
 * for a hash lookup only). Nothing here reads from a client.
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

/* Answer a connection we do not take, log why (if reason), close it. */
static void
smtpd_accept_refuse(evutil_socket_t fd, const char *reply, const char *reason,
    const struct sockaddr *sa)
{
	char line[128], addr[64];
	int n = snprintf(line, sizeof(line), "%s\r\n", reply);
	ssize_t w = write(fd, line, (size_t)n);

	(void)w;                /* best effort: the peer may be gone */
	if (reason != NULL)
		log_info("connect client=%s refused reason=%s",
		    sockaddr_ntop(sa, addr, sizeof(addr)), reason);
	close(fd);
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
		smtpd_accept_refuse(fd, "421 4.3.2 Service shutting down", NULL, sa);
		goto out;
	}
	if (lc == NULL) {
		/* removed by a reload: keep the mode it was started with */
		smtpd_accept_refuse(fd, "421 4.3.2 Listener disabled", NULL, sa);
		goto out;
	}
	if (srv->nconnections >= conf->max_connections) {
		smtpd_accept_refuse(fd, "421 4.7.0 Too many connections, try "
		    "again later", "max-connections", sa);
		goto out;
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
		smtpd_accept_refuse(fd, "421 4.7.0 Too many connections from "
		    "your address", "max-connections-per-ip", sa);
		goto out;
	}
	srv->nconnections++;
	smtpd_session_accept(loop, fd, sa, (socklen_t)salen, lc, conf);
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
	event_base_dispatch(loop->base);
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
