/*
 * deliver_int.h - private to queue/mta/deliver.c and queue/mta/deliver_session.c:
 * the delivery worker, its connection cache and the outbound SMTP session.
 */
#ifndef TERN_DELIVER_INT_H
#define TERN_DELIVER_INT_H

#include <pthread.h>
#include <stdint.h>
#include <sys/queue.h>

#include "tern/conf.h"
#include "tern/deliver.h"
#include "tern/smtp_reply.h"

struct bufferevent;
struct event;
struct evbuffer;
struct event_base;
struct resolver;
struct ssl_ctx_st;
struct ssl_st;

#define DLV_CONN_IDLE_MAX_SEC   30    /* an idle cached connection lives this long */
#define DLV_CONN_MSG_MAX        100   /* messages per connection */
#define DLV_QUIT_WAIT_SEC       5     /* wait for QUIT to drain before closing */
/* Replies: read high-watermark of a connection (the parser takes 64 KiB). */
#define DLV_READ_HIGH           (SMTP_REPLY_MAX + 1024)
/* Bytes read per wake-up on a connection with its own reads (replies are short). */
#define DLV_READ_BLOCK          4096

/*
 * RFC 5321 4.5.3.2 client timeouts, seconds. conf->command_timeout (when
 * non-zero) caps each; connect-timeout, greeting-timeout and data-timeout
 * (the reply to the final dot) set theirs.
 */
struct dlv_timeouts {
	unsigned connect;       /* conf connect-timeout, default 30 s */
	unsigned greeting;      /* conf greeting-timeout, default 5 min */
	unsigned helo;          /* EHLO/HELO/STARTTLS/handshake/RSET: 5 min */
	unsigned mail;          /* 5 min */
	unsigned rcpt;          /* 5 min */
	unsigned data_init;     /* 2 min */
	unsigned data_block;    /* 3 min: body still being written */
	unsigned data_done;     /* conf data-timeout, default 10 min: after the
	                           final dot */
};

void dlv_timeouts_init(struct dlv_timeouts *t, const struct conf *c);

enum dlv_conn_state {
	DLV_CONN_BUSY,          /* in use by a session (c->s) */
	DLV_CONN_IDLE,          /* cached, after a completed transaction */
	DLV_CONN_QUIT,          /* QUIT written, closing */
};

/* How a connection's TLS peer was authenticated (REQUIRETLS needs DANE or STS). */
enum dlv_tls_auth {
	DLV_TLSAUTH_NONE = 0,   /* plaintext, or TLS without verification */
	DLV_TLSAUTH_PKIX,       /* tls-policy verify: chain and name */
	DLV_TLSAUTH_DANE,       /* a usable TLSA record matched (RFC 7672) */
	DLV_TLSAUTH_STS,        /* MTA-STS enforce: PKIX, name and policy mx matched */
};

/* One outbound connection; owned by the worker (w->conns). */
struct dlv_conn {
	TAILQ_ENTRY(dlv_conn) entry;
	struct dlv_worker *w;               /* borrowed */
	struct dlv_session *s;              /* borrowed: the session using it */
	enum dlv_conn_state state;
	struct bufferevent *bev;            /* owned (TLS: the filter on top) */
	struct event *rev;                  /* owned or NULL: the read event of a
	                                       plain connection that does its own
	                                       I/O (dlv_conn_own_io) */
	struct ssl_st *ssl;                 /* borrowed: freed with bev */
	struct event *timer;                /* owned: idle expiry / QUIT guard */
	char *key;                          /* owned: destination key */
	char *relay;                        /* owned: "host[addr]:port" */
	char *tls;                          /* owned or NULL: protocol + cipher */
	struct smtp_ehlo ehlo;              /* what the server offered */
	unsigned nmsg;                      /* transactions done on it */
	uint32_t authed;                    /* AUTH succeeded (route-auth): the
	                                       credentials' tag (dlv_auth_tag),
	                                       else 0 */
	enum dlv_tls_auth tls_auth;
};

TAILQ_HEAD(dlv_conn_list, dlv_conn);
TAILQ_HEAD(dlv_session_list, dlv_session);

struct dlv_worker {
	struct deliver_pool *pool;          /* borrowed */
	unsigned idx;
	pthread_t thread;
	struct event_base *base;            /* owned */
	struct tq *inbox;                   /* owned: TQ_DELIVERY_JOB */
	struct resolver *resolver;          /* owned, made on the thread */
	struct queue *q;                    /* borrowed */
	struct ssl_ctx_st *ssl_ctx;         /* borrowed from the pool */
	struct dlv_conn_list conns;         /* every connection of this loop */
	struct dlv_session_list sessions;   /* every session in progress */
	int stopping;
	unsigned batch;                     /* > 0 inside a batch (deliver.c) */
	struct dlv_conn *wpending;          /* borrowed or NULL: the connection
	                                       whose output the batch's end
	                                       writes */
};

/* deliver.c: the pool's current conf, pinned (conf_unref when done). */
struct conf *dlv_pool_conf(struct deliver_pool *p);

/* deliver.c: connections. */
struct dlv_conn *dlv_conn_new(struct dlv_worker *w, const char *key);
void dlv_conn_free(struct dlv_conn *c);            /* NULL is a no-op */
/* An idle connection for key (now BUSY), or NULL. */
struct dlv_conn *dlv_conn_take(struct dlv_worker *w, const char *key);
/* Keep c idle in the cache (after a completed transaction). */
void dlv_conn_park(struct dlv_conn *c);
/* Send QUIT and close once written (or after DLV_QUIT_WAIT_SEC). */
void dlv_conn_quit(struct dlv_conn *c);
/* Set c->bev's callbacks to the conn dispatchers (after a bev change). */
void dlv_conn_setcb(struct dlv_conn *c);
/*
 * Plain connections do their own I/O (deliver.c says how): from when the
 * connection is established, c reads with its own event and writes at the
 * end of each batch. dlv_conn_lib_io() gives both back to libevent before
 * STARTTLS puts a TLS filter on top.
 */
void dlv_conn_own_io(struct dlv_conn *c);
void dlv_conn_lib_io(struct dlv_conn *c);
/*
 * The buffer every command for c goes into (never bufferevent_get_output
 * directly: a plain connection keeps libevent's write event off, and only
 * this call sees to it that the bytes are written).
 */
struct evbuffer *dlv_conn_output(struct dlv_conn *c);

/* deliver_session.c: the session. */
/* Start delivering job on worker w (ownership of job moves). */
void dlv_session_start(struct dlv_worker *w, struct dlv_job *job);
/* Stop: free s without reporting (its recipients stay pending). */
void dlv_session_abandon(struct dlv_session *s);
/* Events from the session's busy connection. */
void dlv_session_on_read(struct dlv_session *s);
void dlv_session_on_write(struct dlv_session *s);
void dlv_session_on_event(struct dlv_session *s, short what);

/* Destination key of a job's route: equal keys may share a connection. */
char *dlv_route_key(const struct dlv_job *job);

/* Per-recipient progress within a session. */
enum dlv_rstate { DLV_R_OPEN = 0, DLV_R_ACCEPTED, DLV_R_DONE };

/* ---- lmtp.c: the pure parts of LMTP delivery (RFC 2033) ---- */

struct sockaddr_storage;

/*
 * The recipient that the next reply after the end of data belongs to (RFC
 * 2033 4.2: one reply per recipient accepted at RCPT, in RCPT order): the
 * first position k of sendlist[0..nsend) whose recipient is still
 * DLV_R_ACCEPTED, or nsend when every one has had its reply.
 */
size_t dlv_lmtp_next_rcpt(const unsigned char *rstate, const size_t *sendlist,
    size_t nsend);

/*
 * A unix socket address for path into ss; *len gets its length. 0 ok, -1
 * when path is empty or too long for sun_path.
 */
int dlv_lmtp_unix_addr(const char *path, struct sockaddr_storage *ss,
    unsigned *len);

/*
 * The relay name of a target for logs and results: "lmtp:unix:/path" for a
 * unix socket, else "[lmtp:]host[addr]:port" (the prefix for LMTP).
 */
void dlv_relay_name(char *buf, size_t len, int lmtp, const char *host,
    const struct sockaddr_storage *ss, unsigned port);

#endif
