/*
 * smtpd.h - private to smtpd/: the server object, its session loops and the
 * SMTP server session. Never included from another module.
 *
 * Threads: main() owns the server and runs the main loop (signals, control
 * socket). Each session loop is one thread with its own event_base, its own
 * accept sockets (SO_REUSEPORT) and its own sessions; a session is only ever
 * touched by its loop's thread. Replies from other threads (commit done)
 * arrive through the loop's inbox tq and name the session by its 64-bit id.
 */
#ifndef TERN_SMTPD_H
#define TERN_SMTPD_H

#include <pthread.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "tern/auth.h"
#include "tern/conf.h"
#include "tern/data_filter.h"
#include "tern/envelope.h"
#include "tern/queue.h"
#include "tern/smtp.h"
#include "tern/tls.h"
#include "tern/tq.h"

struct event_base;
struct event;
struct bufferevent;
struct evconnlistener;
struct smtpd_server;
struct smtpd_accept_arg;
struct smtpd_proxy_wait;

#define SMTPD_SESSION_BUCKETS 4096

struct smtpd_loop {
	struct smtpd_server *srv;         /* borrowed: outlives the loop */
	struct event_base *base;          /* owned */
	pthread_t thread;
	struct tq *inbox;                 /* owned: commit results, calls */
	struct evconnlistener **lev;      /* owned: one per configured listener */
	struct smtpd_accept_arg *aargs;   /* owned: the listeners' callback args */
	struct evconnlistener *local_lev; /* owned or NULL: local-socket (loop 0) */
	size_t nlev;
	struct smtpd_session *buckets[SMTPD_SESSION_BUCKETS]; /* by id */
	unsigned nsessions;
	int stopping;                     /* graceful stop requested */
	/* owned: connections to proxy listeners still sending their header */
	LIST_HEAD(smtpd_proxy_wait_list, smtpd_proxy_wait) proxy_waits;
};

/* Shared table of inbound connections per client address. */
struct smtpd_connlimit;

struct smtpd_server {
	struct conf *conf;                /* owned ref; swap under conf_lock */
	struct tls_server *tls;           /* owned ref or NULL; swap under conf_lock */
	pthread_mutex_t conf_lock;
	struct queue *queue;              /* borrowed from main */
	struct smtpd_loop *loops;         /* owned array */
	unsigned nloops;
	int *fds;                         /* owned: [listener * nloops + loop] */
	size_t nfds;
	int local_fd;                     /* local-socket until armed, or -1 */
	struct smtpd_connlimit *connlimit;
	struct auth_db *auth_db;          /* owned or NULL: AUTH users */
	struct auth_pool *auth_pool;      /* owned or NULL: runs auth_check() */
	struct auth_throttle *auth_throttle; /* owned or NULL */
	_Atomic uint64_t next_session_id;
	_Atomic unsigned nconnections;
};

/* ---- listener.c ---- */

/* Bind every configured listener (nloops sockets each). Call as root. */
int smtpd_listeners_bind(struct smtpd_server *srv, char *err, size_t errlen);
/* Create the loops and start their threads (listeners armed). */
int smtpd_loops_start(struct smtpd_server *srv);
/* Stop accepting, finish sessions (421 to idle ones), join the threads. */
void smtpd_loops_stop(struct smtpd_server *srv, unsigned grace_seconds);
/* Free loops, listeners and the connection table (after stop). */
void smtpd_loops_free(struct smtpd_server *srv);
void smtpd_connlimit_init(struct smtpd_server *srv);
/* The conf new sessions should use (a new reference). */
struct conf *smtpd_conf_get(struct smtpd_server *srv);
/* The TLS contexts new handshakes should use (a new reference, or NULL). */
struct tls_server *smtpd_tls_get(struct smtpd_server *srv);

/* Per-address limit: 0 ok (counted), -1 over the limit (not counted). */
int smtpd_connlimit_take(struct smtpd_server *srv, const struct sockaddr *sa,
    unsigned limit);
void smtpd_connlimit_put(struct smtpd_server *srv, const struct sockaddr *sa);

/* ---- local.c ---- */

struct passwd;
/*
 * Bind the local-submission socket at path (mode 0666; its directory is
 * made 0755 if missing; both given to pw when not NULL). Call as root.
 * Returns the listening fd or -1 with err.
 */
int smtpd_local_bind(const char *path, const struct passwd *pw, char *err,
    size_t errlen);
/* Arm srv->local_fd (if >= 0) on loop (loop thread not yet running). */
void smtpd_local_arm(struct smtpd_loop *loop);
/* The connected peer's uid (SO_PEERCRED) and login name ("uidN" if none). */
int smtpd_local_peer(int fd, uid_t *uid, char *name, size_t namelen);

/* ---- notify.c ---- */

/*
 * Tell the service manager (NOTIFY_SOCKET, sd_notify(3) protocol) about a
 * state change: "READY=1", "RELOADING=1", "STOPPING=1"... Silent no-op
 * without NOTIFY_SOCKET; errors are logged once, never fatal.
 */
void smtpd_notify(const char *state);

/* ---- session_dkim.c ---- */

struct dkim_canon;
/*
 * A canonicaliser for a transaction that may be signed (dkim-sign lines,
 * and a client authenticated, local, or trusted with dkim-sign-trusted on),
 * else NULL (also when out of memory: the message then goes unsigned).
 */
struct dkim_canon *smtpd_dkim_begin(const struct conf *c, int authed,
    int local, int trusted);
/*
 * End of data: sign with every key of the From: domain and prepend the
 * fields to body; logs the outcome. 0 (signed, or not to be signed), or
 * -1 when signing failed (the message must not be queued: 451).
 */
int smtpd_dkim_finish(struct dkim_canon *dk, const struct conf *c,
    struct spool *body, const char *qid);
void smtpd_dkim_free(struct dkim_canon *dk);    /* NULL is a no-op */

/* ---- session.c ---- */

enum smtpd_state {
	SMTPD_S_CONNECTED,   /* greeted, no HELO/EHLO yet */
	SMTPD_S_READY,       /* HELO/EHLO done, no transaction */
	SMTPD_S_MAIL,        /* MAIL accepted */
	SMTPD_S_RCPT,        /* at least one RCPT accepted */
	SMTPD_S_DATA,        /* message bytes streaming */
	SMTPD_S_COMMIT,      /* waiting for the committer */
	SMTPD_S_QUIT,        /* closing */
};

/*
 * Start a session on an accepted socket (loop thread). Takes the fd and the
 * conf reference. sa is the client; via is the balancer that named it in a
 * PROXY header (NULL for a direct connection), for the log.
 */
void smtpd_session_accept(struct smtpd_loop *loop, int fd,
    const struct sockaddr *sa, socklen_t salen, const struct conf_listen *lc,
    struct conf *conf, const struct sockaddr *via);
/* Inbox handler of a session loop. */
void smtpd_loop_inbox(struct tq_msg *m, void *arg);
/* Graceful stop: 421 4.3.2 to sessions not committing; close when drained. */
void smtpd_loop_shutdown_sessions(struct smtpd_loop *loop);

const char *smtpd_strstate(enum smtpd_state st);

/* ---- session_io.c ---- */

struct bufferevent;

/* A session's read outside a message: libevent 2.1's own (EVBUFFER_MAX_READ). */
#define SMTPD_IO_EV_READ   4096
/* The block size of smtpd_io_read() while a message streams in. */
#define SMTPD_IO_READ      (64 * 1024)

/* 1 if bev is a socket bufferevent without TLS: the shortcuts apply. */
int smtpd_io_plain(struct bufferevent *bev);
/*
 * Write bev's output to its socket now, as much as the socket takes.
 * 1 if the output is empty after; 0 if bytes are left (the socket is full,
 * or failed: libevent's write event takes over and reports the error).
 */
int smtpd_io_flush(struct bufferevent *bev);
/*
 * Read up to want bytes from bev's socket into its input buffer (one
 * readv). The bytes read; 0 at EOF, -1 with errno (EAGAIN: nothing there).
 * A caller that does not report EOF or an error leaves it to the session's
 * next read (its own read event, which fires again).
 */
ssize_t smtpd_io_read(struct bufferevent *bev, size_t want);

#endif
