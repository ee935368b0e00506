/*
 * deliver_session.c - the outbound SMTP client: one delivery job from route
 * resolution to one dlv_result (RFC 5321, RFC 2920 PIPELINING, RFC 3207
 * STARTTLS, RFC 1870 SIZE, RFC 6152 8BITMIME, RFC 3463 status codes).
 *
 * Runs on one delivery worker loop (deliver.c); never blocks except for
 * reading the queued body once, when a connection is ready for MAIL (see
 * deliver.c on the envelope store). Owns the job, the body copy and, while it talks, one connection
 * (struct dlv_conn, handed back to the worker's cache or closed at the end).
 * The body's long runs go into the connection's output by reference, not
 * copied; a count (struct dlv_bodyref) frees the body after the session
 * and the last output that holds a piece of it.
 * Every command goes into dlv_conn_output(): on a plain connection
 * deliver.c writes what one read or one new job produced with one writev,
 * and reads the replies itself (no ioctl, no write event armed per
 * command); over TLS libevent does both.
 *
 * Untrusted input: every byte the remote server sends. Replies go through
 * the pure parser (smtp_reply.c, 512-octet lines, 64 KiB replies, read
 * high-watermark); anything unparseable, unexpected, late (per-state
 * timeouts of RFC 5321 4.5.3.2) or cut short becomes DLV_TEMP with a reason,
 * never a crash.
 *
 * Flow: resolve (MX, MX of a host, or one host) -> for each address of each
 * exchanger in order: connect, greeting, EHLO (HELO fallback), STARTTLS per
 * policy and EHLO again -> MAIL, RCPT..., DATA (pipelined when offered: two
 * cursors, send_idx and recv_idx, as Postfix's smtp_loop) -> body,
 * dot-stuffed, with the final dot in the same write -> final reply for every
 * recipient accepted at RCPT. A route with route-auth credentials
 * authenticates after the last EHLO (client_auth.c; only over TLS the route
 * verified, else, and on any AUTH failure, the mail is deferred with 4.7.x,
 * never bounced). Until MAIL is sent, a failing server (refusal,
 * TLS required and missing, connection lost) moves the session to the next
 * address; after that, the replies decide per recipient.
 *
 * Loops (RFC 5321 5.1): an MX named like us, and any resolved address that
 * is one of our own listeners, is dropped before connecting; nothing left
 * means 5.4.6 "loops back to myself".
 *
 * LMTP routes (RFC 2033; lmtp.c has the pure parts) take the same path with
 * LHLO for EHLO, a unix socket instead of an address when the route names
 * one, and one final reply per accepted recipient (dlv_lmtp_body_reply).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ifaddrs.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "tern/deliver.h"
#include "tern/envelope.h"
#include "tern/log.h"
#include "tern/mime7.h"
#include "tern/metrics.h"
#include "tern/queue.h"
#include "tern/resolver.h"
#include "tern/route_auth.h"
#include "tern/smtp.h"
#include "tern/smtp_reply.h"
#include "tern/tls.h"
#include "tern/tlsrpt.h"
#include "tern/util.h"

#include "client_auth.h"
#include "dane.h"
#include "deliver_int.h"
#include "mta_sts.h"

enum dlv_state {
	DLV_S_RESOLVE,          /* waiting for DNS */
	DLV_S_CONNECT,          /* TCP connect in progress */
	DLV_S_GREETING,         /* waiting for 220 */
	DLV_S_EHLO,
	DLV_S_HELO,
	DLV_S_STARTTLS,         /* waiting for 220 to STARTTLS */
	DLV_S_HANDSHAKE,        /* TLS handshake */
	DLV_S_AUTH,             /* AUTH exchange (route-auth) */
	DLV_S_TX,               /* MAIL / RCPT / DATA replies (cursors) */
	DLV_S_BODY,             /* body sent, waiting for the final reply */
	DLV_S_RSET,             /* no transaction: RSET sent */
	DLV_S_DONE,
};

static const char *const dlv_state_names[] = {
	"RESOLVE", "CONNECT", "GREETING", "EHLO", "HELO", "STARTTLS",
	"HANDSHAKE", "AUTH", "TX", "BODY", "RSET", "DONE",
};

/* session flags */
#define DLV_F_NO_TLS     0x01u   /* this address, plaintext (TLS failed once) */
#define DLV_F_REUSED     0x02u   /* the connection came from the cache */
#define DLV_F_RETRIED    0x04u   /* already retried after a dead cached conn */
#define DLV_F_PIPELINING 0x08u
#define DLV_F_MAIL_OK    0x10u
#define DLV_F_BODY_SENT  0x20u
#define DLV_F_EHLO_DONE  0x40u   /* TLS or not: last EHLO before MAIL done */
#define DLV_F_7BIT       0x1000u /* the body was converted to 7 bits */

struct dlv_target {
	char host[RESOLVER_NAME_MAX + 1];
	struct sockaddr_storage ss;
};

/*
 * A body that output buffers hold by reference (evbuffer_add_reference: no
 * copy of it into the buffer). The session holds one count, each reference
 * another, released by the buffer's cleanup when the bytes are written or
 * the buffer is freed; the last release frees the body. So a session that
 * ends (or moves to a 7-bit copy) while its bytes still wait in a
 * connection's output never leaves that output pointing at freed memory.
 */
struct dlv_bodyref {
	char *p;                            /* owned: malloc'd body */
	unsigned refs;                      /* atomic */
};

/* Runs shorter than this are copied: a reference costs a chain of its own. */
#define DLV_BODY_REF_MIN 2048

struct dlv_session;
static void dlv_body_release(struct dlv_session *s);

struct dlv_session {
	TAILQ_ENTRY(dlv_session) entry;
	struct dlv_worker *w;               /* borrowed */
	struct dlv_job *job;                /* owned */
	struct conf *conf;                  /* pinned */
	struct dlv_timeouts to;
	char qid[QID_STRLEN + 1];
	uint64_t start_us;
	char *key;                          /* owned: destination key */
	uint16_t port;
	enum conf_tls_policy tlsp;
	char *body;                         /* owned (shared once bref is set) */
	size_t bodylen;
	struct dlv_bodyref *bref;           /* body's count, once on the wire */

	struct resolver_query *rq;          /* borrowed handle while resolving */
	uint64_t t_resolve;                 /* now_mono_us() at the lookup, for metrics */
	struct dlv_target *targets;         /* owned */
	size_t ntargets, ti;

	struct dlv_conn *conn;              /* owned while busy (in w->conns) */
	struct event *timer;                /* owned: the one wait timeout */
	enum dlv_state state;
	unsigned flags;
	const char *waiting;                /* what the timer waits for */

	/* transaction cursors (DLV_S_TX) */
	size_t *sendlist;                   /* owned: job rcpt positions sent */
	size_t nsend;
	size_t send_idx, recv_idx;          /* 0 MAIL, 1..nsend RCPT, nsend+1 DATA */
	size_t naccepted;
	int mail_code;
	char mail_enh[16];
	char mail_text[SMTP_REPLY_TEXT_MAX + 16];

	struct dlv_rcpt_result *res;        /* owned: one per job recipient */
	unsigned char *rstate;              /* owned: enum dlv_rstate each */

	enum dlv_peer peer;                 /* what the result reports */

	unsigned auth_offered;              /* CLIENT_AUTH_* of the last EHLO */
	struct client_auth auth;            /* the AUTH exchange (DLV_S_AUTH) */
	const struct route_auth_entry *cred;  /* borrowed from conf: AUTH's */

	struct dlv_dane dane;               /* DANE (dane.c): tls-policy dane */

	/* the last failure of an address, for when none is left */
	int have_err;
	int all_perm;
	char err_status[16];
	char err_text[512];

	/* MTA-STS (RFC 8461): see "MTA-STS" below and mta_sts.c */
	struct mta_sts_query *stsq;         /* borrowed handle while looking up */
	struct mta_sts_outcome *sts;        /* owned or NULL: the policy in force */
};

static void dlv_session_connect_next(struct dlv_session *s);
static void dlv_session_resolve(struct dlv_session *s);
static void dlv_session_targets_ready(struct dlv_session *s);
static int dlv_lmtp_body_reply(struct dlv_session *s,
    const struct smtp_reply *r);
static const char *dlv_tls_mode(const struct dlv_session *s);
static int dlv_session_dane(struct dlv_session *s);
static int dlv_session_dane_auth(const struct dlv_session *s);
static void dlv_session_dane_report(struct dlv_session *s,
    enum tlsrpt_result res, const char *detail);
static int dlv_requiretls_check(struct dlv_session *s);
static int dlv_session_tlsrpt_quiet(const struct dlv_session *s);
static int dlv_session_tls_auth(struct dlv_session *s);

/* ------------------------------------------------------------------ */
/* helpers */

static void
dlv_session_enter(struct dlv_session *s, enum dlv_state st)
{
	log_trace(TRACE_CLIENT, "dlv id=%s %s -> %s", s->qid,
	    dlv_state_names[s->state], dlv_state_names[st]);
	s->state = st;
}

static int
dlv_session_lmtp(const struct dlv_session *s)
{
	return s->job->route.transport != CONF_XPORT_SMTP;
}

/* "host[addr]:port" of target t, "lmtp:" first for LMTP. */
static void
dlv_session_target_name(const struct dlv_session *s,
    const struct dlv_target *t, char *buf, size_t len)
{
	dlv_relay_name(buf, len, dlv_session_lmtp(s), t->host, &t->ss,
	    s->port);
}

static const char *
dlv_session_relay(const struct dlv_session *s)
{
	return s->conn != NULL && s->conn->relay != NULL ? s->conn->relay : "-";
}

static void
dlv_session_arm(struct dlv_session *s, unsigned sec, const char *what)
{
	struct timeval tv = { (time_t)sec, 0 };

	s->waiting = what;
	evtimer_add(s->timer, &tv);     /* a pending one is rescheduled */
}

static void
dlv_session_send(struct dlv_session *s, const char *fmt, ...)
	TERN_PRINTF(2, 3);

static void
dlv_session_send(struct dlv_session *s, const char *fmt, ...)
{
	struct evbuffer *out = dlv_conn_output(s->conn);
	char line[1100];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line) - 2)
		panic("dlv_session_send: command too long");
	if (log_trace_mask() & TRACE_CLIENT) {
		char esc[1200];
		log_trace(TRACE_CLIENT, "dlv id=%s relay=%s > %s", s->qid,
		    dlv_session_relay(s), log_escape(esc, sizeof(esc), line,
		    (size_t)n));
	}
	memcpy(line + n, "\r\n", 2);
	evbuffer_add(out, line, (size_t)n + 2);
}

/* "550 5.1.1 text" of a reply, for results. */
static char *
dlv_reply_string(const struct smtp_reply *r)
{
	char buf[SMTP_REPLY_TEXT_MAX + 32];

	snprintf(buf, sizeof(buf), "%d%s%s%s%s", r->code,
	    r->enh[0] ? " " : "", r->enh, r->text[0] ? " " : "", r->text);
	return xstrdup(buf);
}

static enum dlv_class
dlv_reply_class(int code)
{
	if (code >= 200 && code < 300)
		return DLV_OK;
	if (code >= 500)
		return DLV_PERM;
	return DLV_TEMP;
}

/* Enhanced status of a reply, or the class default "4.0.0"/"5.0.0". */
static void
dlv_reply_status(const struct smtp_reply *r, char out[16])
{
	if (r->enh[0] != '\0')
		snprintf(out, 16, "%s", r->enh);
	else if (r->code >= 500)
		snprintf(out, 16, "5.0.0");
	else if (r->code >= 400 || r->code < 200)
		snprintf(out, 16, "4.0.0");
	else
		snprintf(out, 16, "2.0.0");
}

static void
dlv_rcpt_set(struct dlv_session *s, size_t i, enum dlv_class cls,
    const char *status, const char *reply)
{
	s->res[i].cls = cls;
	snprintf(s->res[i].status, sizeof(s->res[i].status), "%s", status);
	free(s->res[i].reply);
	s->res[i].reply = reply != NULL ? xstrdup(reply) : NULL;
	s->rstate[i] = DLV_R_DONE;
}

/* Every recipient not yet decided (open or accepted) gets this result. */
static void
dlv_rcpt_set_all(struct dlv_session *s, enum dlv_class cls,
    const char *status, const char *reply)
{
	for (size_t i = 0; i < s->job->nrcpt; i++)
		if (s->rstate[i] != DLV_R_DONE)
			dlv_rcpt_set(s, i, cls, status, reply);
}

static void
dlv_session_free(struct dlv_session *s)
{
	TAILQ_REMOVE(&s->w->sessions, s, entry);
	resolver_cancel(s->rq);
	dlv_dane_clear(&s->dane);
	mta_sts_cancel(s->stsq);
	mta_sts_outcome_free(s->sts);
	if (s->conn != NULL)
		dlv_conn_free(s->conn);
	event_free(s->timer);
	for (size_t i = 0; s->res != NULL && i < s->job->nrcpt; i++)
		free(s->res[i].reply);
	free(s->res);
	free(s->rstate);
	free(s->sendlist);
	free(s->targets);
	dlv_body_release(s);
	free(s->key);
	conf_unref(s->conf);
	dlv_job_free(s->job);
	free(s);
}

void
dlv_session_abandon(struct dlv_session *s)
{
	dlv_session_free(s);
}

/*
 * The end: post the result (ownership of res moves into it), hand the
 * connection back (reusable) or close it, free the session. Callers return
 * at once.
 */
static void
dlv_session_done(struct dlv_session *s, int reusable)
{
	struct dlv_result *r = xcalloc(1, sizeof(*r));
	struct dlv_conn *c = s->conn;

	dlv_session_enter(s, DLV_S_DONE);
	evtimer_del(s->timer);
	r->hdr.type = TQ_DELIVERY_RESULT;
	r->hdr.reqid = s->job->hdr.reqid;
	r->qid = s->job->env->id;
	r->n = s->job->nrcpt;
	r->r = s->res;
	s->res = NULL;
	for (size_t i = 0; i < r->n; i++) {
		r->r[i].rcpt = s->job->rcpts[i];
		if (s->rstate[i] != DLV_R_DONE) /* cannot happen; be safe */
			panic("dlv_session_done: recipient %zu undecided", i);
	}
	r->tls_mode = dlv_tls_mode(s);
	if (c != NULL) {
		r->relay = c->relay != NULL ? xstrdup(c->relay) : NULL;
		r->tls = c->tls != NULL ? xstrdup(c->tls) : NULL;
		r->tls_mode = dlv_tls_mode(s);
		r->peer_dsn = (c->ehlo.ext & SMTP_EXT_DSN) != 0;
	} else if (s->have_err && s->ntargets > 0) {
		/* no connection left: name the last address tried */
		const struct dlv_target *t = &s->targets[s->ntargets - 1 <
		    s->ti ? s->ntargets - 1 : s->ti];
		char buf[RESOLVER_NAME_MAX + 96];

		dlv_session_target_name(s, t, buf, sizeof(buf));
		r->relay = xstrdup(buf);
	}
	r->elapsed_us = now_mono_us() - s->start_us;
	r->peer = s->peer;
	r->env = s->job->env;           /* the snapshot goes back unchanged */
	s->job->env = NULL;
	tq_post(s->job->reply, &r->hdr);

	if (c != NULL) {
		s->conn = NULL;
		if (reusable && c->bev != NULL)
			dlv_conn_park(c);
		else
			dlv_conn_quit(c);
	}
	dlv_session_free(s);
}

/*
 * This address did not work before any transaction: remember why, close
 * (politely when talking), and try the next one.
 */
static void
dlv_session_next(struct dlv_session *s, enum dlv_class cls,
    const char *status, const char *fmt, ...) TERN_PRINTF(4, 5);

static void
dlv_session_next(struct dlv_session *s, enum dlv_class cls,
    const char *status, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(s->err_text, sizeof(s->err_text), fmt, ap);
	va_end(ap);
	snprintf(s->err_status, sizeof(s->err_status), "%s", status);
	s->have_err = 1;
	if (cls != DLV_PERM) {
		s->all_perm = 0;
		s->peer = DLV_PEER_FAIL;
	}
	log_info("id=%s next hop skipped: status=%s %s", s->qid,
	    s->err_status, s->err_text);
	evtimer_del(s->timer);
	if (s->conn != NULL) {
		struct dlv_conn *c = s->conn;
		s->conn = NULL;
		if (s->state >= DLV_S_EHLO && s->state != DLV_S_HANDSHAKE)
			dlv_conn_quit(c);
		else
			dlv_conn_free(c);
	}
	s->flags &= ~(DLV_F_NO_TLS | DLV_F_EHLO_DONE | DLV_F_PIPELINING);
	s->ti++;
	dlv_session_connect_next(s);
}

/* Reset what one attempt decided, for a retry on a fresh connection. */
static void
dlv_session_reset_tx(struct dlv_session *s)
{
	for (size_t i = 0; i < s->job->nrcpt; i++)
		if (s->rstate[i] == DLV_R_ACCEPTED)
			s->rstate[i] = DLV_R_OPEN;
	for (size_t k = 0; k < s->nsend; k++) {
		size_t i = s->sendlist[k];
		s->rstate[i] = DLV_R_OPEN;
		free(s->res[i].reply);
		s->res[i].reply = NULL;
	}
	s->send_idx = s->recv_idx = s->naccepted = 0;
	s->flags &= ~(DLV_F_MAIL_OK | DLV_F_BODY_SENT | DLV_F_PIPELINING |
	    DLV_F_EHLO_DONE | DLV_F_NO_TLS);
}

/*
 * The connection broke (EOF, error, timeout, 421) after the session started
 * a transaction. A cached connection that died before the body went out is
 * retried once on a fresh one; else, before the body went out, the next
 * address (the next MX) gets the whole transaction, as when connecting
 * fails (RFC 5321 5.1: a server that is going away is not the message's
 * fault); otherwise every open recipient is deferred.
 */
static void
dlv_session_lost(struct dlv_session *s, const char *status, const char *why)
{
	char buf[700];

	if ((s->flags & DLV_F_REUSED) && !(s->flags & DLV_F_RETRIED) &&
	    !(s->flags & DLV_F_BODY_SENT)) {
		log_trace(TRACE_CLIENT, "dlv id=%s cached connection to %s "
		    "failed (%s): retrying on a new one", s->qid,
		    dlv_session_relay(s), why);
		dlv_conn_free(s->conn);
		s->conn = NULL;
		s->flags |= DLV_F_RETRIED;
		s->flags &= ~DLV_F_REUSED;
		dlv_session_reset_tx(s);
		dlv_session_resolve(s);
		return;
	}
	snprintf(buf, sizeof(buf), "%s with %s while %s", why,
	    dlv_session_relay(s), s->waiting ? s->waiting : "talking");
	if (!(s->flags & DLV_F_BODY_SENT) && s->ti + 1 < s->ntargets) {
		/* nothing was sent here: redo it all at the next address */
		dlv_session_reset_tx(s);
		dlv_session_next(s, DLV_TEMP, status, "%s", buf);
		return;
	}
	dlv_rcpt_set_all(s, DLV_TEMP, status, buf);
	dlv_conn_free(s->conn);
	s->conn = NULL;
	s->peer = DLV_PEER_FAIL;
	dlv_session_done(s, 0);
}

/* ------------------------------------------------------------------ */
/* MTA-STS (RFC 8461): the policy of an MX-routed domain (mta_sts.c) */

/*
 * DANE first (RFC 8461 2): a domain under DANE uses it, and MTA-STS only
 * applies to domains without. Under DANE means tls-policy dane and an MX
 * answer the resolver validated (AD): TLSA then decide host by host
 * (dane.c), a host without TLSA getting opportunistic TLS.
 */
static int
dlv_session_uses_dane(const struct dlv_session *s)
{
	return s->dane.want && s->dane.mx_secure;
}

/* MX-resolved SMTP routes only: static routes and LMTP keep their policy. */
static int
dlv_sts_applies(const struct dlv_session *s)
{
	const struct dlv_job *j = s->job;

	return s->conf->mta_sts && j->route.kind == CONF_ROUTE_MX &&
	    j->route.transport == CONF_XPORT_SMTP && j->domain[0] != '[' &&
	    !dlv_session_uses_dane(s);
}

/* Report one outcome for the current target, and log a failure. */
static void
dlv_sts_note(struct dlv_session *s, const struct dlv_target *t,
    enum tlsrpt_result r, const char *detail)
{
	char host[RESOLVER_NAME_MAX * 4 + 1], esc[600];
	int testing = s->sts->pol.mode == STS_MODE_TESTING;

	mta_sts_report(s->sts, t->host, (const struct sockaddr *)&t->ss, r,
	    detail);
	if (r == TLSRPT_SUCCESS)
		return;
	log_escape(host, sizeof(host), t->host, strlen(t->host));
	log_escape(esc, sizeof(esc), detail ? detail : "", detail ?
	    strlen(detail) : 0);
	log_info("id=%s mta-sts %s: domain=%s mx=%s result=%s: %s%s", s->qid,
	    sts_mode_name(s->sts->pol.mode), s->sts->domain, host,
	    tlsrpt_result_name(r), esc, testing ? " (testing: going on)" : "");
}

/* A TLS outcome with the current target under a policy (else nothing). */
static void
dlv_sts_tls_outcome(struct dlv_session *s, enum tlsrpt_result r,
    const char *detail)
{
	if (s->sts != NULL && s->ti < s->ntargets &&
	    !dlv_session_tlsrpt_quiet(s))
		dlv_sts_note(s, &s->targets[s->ti], r, detail);
}

/* The RFC 8460 result of a failed handshake on c. */
static enum tlsrpt_result
dlv_sts_handshake_result(const struct dlv_conn *c)
{
	long v = c->ssl != NULL ? SSL_get_verify_result(c->ssl) : X509_V_OK;

	return v != X509_V_OK ? mta_sts_verify_result(v) :
	    TLSRPT_VALIDATION_FAILURE;
}

/*
 * The handshake is done: how the peer was authenticated. Under a testing
 * policy the certificate was checked without being enforced: a failure is
 * reported and delivery goes on.
 */
static void
dlv_tls_handshake_done(struct dlv_session *s)
{
	struct dlv_conn *c = s->conn;
	long v = SSL_get_verify_result(c->ssl);

	if (s->tlsp == CONF_TLSP_VERIFY)
		c->tls_auth = DLV_TLSAUTH_PKIX;
	if (s->sts == NULL)
		return;
	if (v != X509_V_OK) {
		dlv_sts_tls_outcome(s, mta_sts_verify_result(v),
		    X509_verify_cert_error_string(v));
		return;
	}
	if (s->sts->pol.mode == STS_MODE_ENFORCE)
		c->tls_auth = DLV_TLSAUTH_STS;
	dlv_sts_tls_outcome(s, TLSRPT_SUCCESS, NULL);
}

/* How the connection's TLS was checked, for the delivery log line. */
static const char *
dlv_tls_mode(const struct dlv_session *s)
{
	const struct dlv_conn *c = s->conn;

	if (c != NULL && c->tls_auth == DLV_TLSAUTH_STS)
		return "sts-verified";
	if (c != NULL && c->tls_auth == DLV_TLSAUTH_DANE)
		return "dane-verified";
	if (s->sts != NULL && s->sts->pol.mode == STS_MODE_TESTING)
		return "sts-testing";
	if (c == NULL || c->ssl == NULL)
		return "none";
	if (c->tls_auth == DLV_TLSAUTH_PKIX)
		return "verified";
	return s->tlsp == CONF_TLSP_ENCRYPT ? "encrypt" : "may";
}

/*
 * RFC 8461 4.1: MX hosts that match none of the policy's mx patterns are
 * reported (validation-failure); under enforce they are skipped, and none
 * left defers with 4.7.5. Returns 1 when the session is done.
 */
static int
dlv_sts_filter(struct dlv_session *s)
{
	const struct mta_sts_outcome *o = s->sts;
	int enforce = o->pol.mode == STS_MODE_ENFORCE;
	char last[RESOLVER_NAME_MAX + 1] = "", why[600];
	size_t k = 0;

	for (size_t i = 0; i < s->ntargets; i++) {
		struct dlv_target t = s->targets[i];

		if (sts_policy_mx_ok(&o->pol, t.host)) {
			s->targets[k++] = t;
			continue;
		}
		if (strcmp(last, t.host) != 0) {    /* once per host */
			snprintf(why, sizeof(why), "MX host %.255s matches no mx "
			    "pattern of the policy", t.host);
			dlv_sts_note(s, &t, TLSRPT_VALIDATION_FAILURE, why);
			snprintf(last, sizeof(last), "%s", t.host);
		}
		if (!enforce)
			s->targets[k++] = t;
	}
	s->ntargets = k;
	if (k > 0)
		return 0;
	snprintf(why, sizeof(why), "MTA-STS policy of %s (enforce): no MX "
	    "host matches its mx patterns", o->domain);
	log_warnx("id=%s status=deferred dsn=4.7.5 %s", s->qid, why);
	dlv_rcpt_set_all(s, DLV_TEMP, "4.7.5", why);
	dlv_session_done(s, 0);
	return 1;
}

/* The policy lookup is over: o is the policy in force, or NULL. */
static void
dlv_sts_ready(void *arg, struct mta_sts_outcome *o)
{
	struct dlv_session *s = arg;

	s->stsq = NULL;
	mta_sts_outcome_free(s->sts);
	s->sts = o;
	if (o != NULL) {
		log_debug("id=%s mta-sts: domain=%s id=%s mode=%s", s->qid,
		    o->domain, o->id, sts_mode_name(o->pol.mode));
		if (dlv_sts_filter(s))
			return;
		/* enforce: STARTTLS and a valid certificate for the MX name */
		if (o->pol.mode == STS_MODE_ENFORCE)
			s->tlsp = CONF_TLSP_VERIFY;
	}
	dlv_session_targets_ready(s);
}

/* ------------------------------------------------------------------ */
/* body */

static void
dlv_bodyref_cleanup(const void *data, size_t len, void *arg)
{
	struct dlv_bodyref *r = arg;

	(void)data;
	(void)len;
	if (__atomic_sub_fetch(&r->refs, 1, __ATOMIC_ACQ_REL) == 0) {
		free(r->p);
		free(r);
	}
}

/* The session lets go of its body (freed now, or by the last reference). */
static void
dlv_body_release(struct dlv_session *s)
{
	if (s->bref != NULL)
		dlv_bodyref_cleanup(NULL, 0, s->bref);
	else
		free(s->body);
	s->bref = NULL;
	s->body = NULL;
}

/* Append s->body's bytes p[0..n) to out: long runs by reference. */
static void
dlv_body_add(struct dlv_session *s, struct evbuffer *out, const char *p,
    size_t n)
{
	if (n < DLV_BODY_REF_MIN) {
		evbuffer_add(out, p, n);
		return;
	}
	if (s->bref == NULL) {
		s->bref = xcalloc(1, sizeof(*s->bref));
		s->bref->p = s->body;
		s->bref->refs = 1;              /* the session's */
	}
	__atomic_add_fetch(&s->bref->refs, 1, __ATOMIC_RELAXED);
	if (evbuffer_add_reference(out, p, n, dlv_bodyref_cleanup,
	    s->bref) != 0) {
		/* not added, so no cleanup will come: drop its count */
		__atomic_sub_fetch(&s->bref->refs, 1, __ATOMIC_RELAXED);
		evbuffer_add(out, p, n);
	}
}

/*
 * Append s's body to out for DATA: every line ends in CRLF (a bare LF
 * becomes CRLF; a last line without one gets one), a line starting with '.'
 * gets another '.', then the terminator ".\r\n" (RFC 5321 4.5.2). Lines
 * that need neither go in as runs: a body of CRLF lines without a leading
 * dot is one dlv_body_add.
 */
static void
dlv_body_stuff(struct dlv_session *s, struct evbuffer *out)
{
	const char *p = s->body;
	size_t len = s->bodylen;
	size_t run = 0, i = 0;          /* p[run..i) goes in as it is */

	while (i < len) {
		const char *lf = memchr(p + i, '\n', len - i);
		size_t end = lf != NULL ? (size_t)(lf - p) : len;

		if (p[i] == '.') {
			dlv_body_add(s, out, p + run, i - run);
			evbuffer_add(out, ".", 1);
			run = i;
		}
		if (lf == NULL || end == i || p[end - 1] != '\r') {
			/* a bare LF, or the end without one: CRLF instead */
			dlv_body_add(s, out, p + run, end - run);
			evbuffer_add(out, "\r\n", 2);
			run = lf != NULL ? end + 1 : len;
		}
		i = lf != NULL ? end + 1 : len;
	}
	if (run < len)
		dlv_body_add(s, out, p + run, len - run);
	evbuffer_add(out, ".\r\n", 3);
}

/* ------------------------------------------------------------------ */
/* the transaction */

static void
dlv_tx_arm(struct dlv_session *s)
{
	if (s->recv_idx >= s->send_idx)
		return;
	if (s->recv_idx == 0)
		dlv_session_arm(s, s->to.mail, "waiting for the MAIL reply");
	else if (s->recv_idx <= s->nsend)
		dlv_session_arm(s, s->to.rcpt, "waiting for a RCPT reply");
	else
		dlv_session_arm(s, s->to.data_init, "waiting for the DATA reply");
}

/*
 * RFC 3461 parameters for a next hop that offers DSN: what our client gave
 * is passed on as given (ENVID and ORCPT are kept in xtext form, and bounded
 * by the parser: 100 and 266 octets).
 */
static void
dlv_dsn_mail_params(const struct envelope *env, char *out, size_t len)
{
	snprintf(out, len, "%s%s%s",
	    (env->flags & ENV_F_RET_HDRS) ? " RET=HDRS" :
	    (env->flags & ENV_F_RET_FULL) ? " RET=FULL" : "",
	    env->envid != NULL ? " ENVID=" : "",
	    env->envid != NULL ? env->envid : "");
}

static void
dlv_dsn_rcpt_params(const struct env_rcpt *rc, char *out, size_t len)
{
	static const struct { unsigned bit; const char *name; } kw[] = {
		{ SMTP_NOTIFY_NEVER, "NEVER" }, { SMTP_NOTIFY_SUCCESS, "SUCCESS" },
		{ SMTP_NOTIFY_FAILURE, "FAILURE" }, { SMTP_NOTIFY_DELAY, "DELAY" },
	};
	size_t n = 0;

	out[0] = '\0';
	for (size_t i = 0; i < sizeof(kw) / sizeof(kw[0]) && n < len; i++)
		if (rc->notify & kw[i].bit)
			n += (size_t)snprintf(out + n, len - n, "%s%s",
			    n == 0 ? " NOTIFY=" : ",", kw[i].name);
	if (rc->orcpt != NULL && n < len)
		snprintf(out + n, len - n, " ORCPT=%s", rc->orcpt);
}

static void dlv_tx_rset(struct dlv_session *s);

/*
 * The body as one chunk, "BDAT <size> LAST" (RFC 3030), when the peer
 * offers CHUNKING: no dot-stuffing, one write. With no recipient accepted
 * the transaction is reset instead. The reply is the end-of-data reply.
 */
static void
dlv_bdat_send(struct dlv_session *s)
{
	struct evbuffer *out;

	if (!(s->flags & DLV_F_MAIL_OK) || s->naccepted == 0) {
		dlv_tx_rset(s);
		return;
	}
	out = dlv_conn_output(s->conn);
	evbuffer_add_printf(out, "BDAT %zu LAST\r\n", s->bodylen);
	dlv_body_add(s, out, s->body, s->bodylen);
	s->flags |= DLV_F_BODY_SENT;
	log_trace(TRACE_CLIENT, "dlv id=%s relay=%s > BDAT %zu LAST (body)",
	    s->qid, dlv_session_relay(s), s->bodylen);
	dlv_session_enter(s, DLV_S_BODY);
	dlv_session_arm(s, s->to.data_block, "sending the body");
}

/* Send what the cursors allow: everything with PIPELINING, else one. */
static void
dlv_tx_send(struct dlv_session *s)
{
	const struct envelope *env = s->job->env;
	const struct smtp_ehlo *e = &s->conn->ehlo;

	while (s->send_idx <= s->nsend + 1) {
		if (!(s->flags & DLV_F_PIPELINING) && s->send_idx != s->recv_idx)
			break;
		if (s->send_idx == 0) {
			char size[40] = "", dsn[128] = "";
			const char *body = "", *utf8 = "";

			if (e->ext & SMTP_EXT_SIZE)
				snprintf(size, sizeof(size), " SIZE=%zu",
				    s->bodylen);
			/* RFC 6152 3: see dlv_tx_7bit() */
			if ((env->flags & ENV_F_8BIT) &&
			    (e->ext & SMTP_EXT_8BITMIME) &&
			    !(s->flags & DLV_F_7BIT))
				body = " BODY=8BITMIME";
			if ((env->flags & ENV_F_SMTPUTF8) &&
			    (e->ext & SMTP_EXT_SMTPUTF8))
				utf8 = " SMTPUTF8";
			if (e->ext & SMTP_EXT_DSN)
				dlv_dsn_mail_params(env, dsn, sizeof(dsn));
			/* RFC 8689 4.2.1: passed on (dlv_requiretls_check) */
			dlv_session_send(s, "MAIL FROM:<%s>%s%s%s%s%s",
			    env->sender, size, body, utf8, dsn,
			    (env->flags & ENV_F_REQUIRETLS) &&
			    (e->ext & SMTP_EXT_REQUIRETLS) ? " REQUIRETLS" : "");
		} else if (s->send_idx <= s->nsend) {
			size_t i = s->sendlist[s->send_idx - 1];
			const struct env_rcpt *rc = &env->rcpts[s->job->rcpts[i]];
			char dsn[400] = "";

			if (e->ext & SMTP_EXT_DSN)
				dlv_dsn_rcpt_params(rc, dsn, sizeof(dsn));
			dlv_session_send(s, "RCPT TO:<%s>%s", rc->addr, dsn);
		} else if (e->ext & SMTP_EXT_CHUNKING) {
			/* RFC 3030: the body only once a recipient is in */
			if (s->recv_idx <= s->nsend)
				break;
			s->send_idx++;
			dlv_bdat_send(s);
			return;
		} else {
			dlv_session_send(s, "DATA");
		}
		s->send_idx++;
	}
	dlv_tx_arm(s);
}

/*
 * Does this message need SMTPUTF8 (RFC 6531 3.4)? Only one sent with the
 * parameter, and then when the sender, a recipient of this job or the
 * header section holds non-ASCII octets: ASCII-only mail goes anywhere.
 */
static int
dlv_needs_smtputf8(const struct dlv_session *s)
{
	const struct envelope *env = s->job->env;
	const char *hend;

	if (!(env->flags & ENV_F_SMTPUTF8))
		return 0;
	if (has_8bit(env->sender, strlen(env->sender)))
		return 1;
	for (size_t i = 0; i < s->job->nrcpt; i++) {
		const char *a = env->rcpts[s->job->rcpts[i]].addr;
		if (has_8bit(a, strlen(a)))
			return 1;
	}
	hend = memmem(s->body, s->bodylen, "\r\n\r\n", 4);
	return has_8bit(s->body, hend != NULL ?
	    (size_t)(hend - s->body) : s->bodylen);
}

/*
 * This next hop lacks what the message needs (SMTPUTF8, or 8BITMIME for a
 * message that cannot be converted): a permanent reason, but another MX
 * may offer it (RFC 6531 3.4 forbids only sending it here). A connection
 * from the cache has no address list: it goes back to the cache and the
 * destination is resolved, so that every MX gets its turn; the recipients
 * bounce with status only when no next hop offers it.
 */
static void
dlv_tx_refuse_hop(struct dlv_session *s, const char *status,
    const char *why)
{
	if (s->flags & DLV_F_REUSED) {
		struct dlv_conn *c = s->conn;

		log_info("id=%s %s: trying the destination's other next hops",
		    s->qid, why);
		s->conn = NULL;
		s->flags &= ~(DLV_F_REUSED | DLV_F_EHLO_DONE |
		    DLV_F_PIPELINING);
		dlv_conn_park(c);
		dlv_session_resolve(s);
		return;
	}
	dlv_session_next(s, DLV_PERM, status, "%s", why);
}

/* Send body[0..len) (owned) instead of the queued body from now on. */
static void
dlv_tx_use_7bit(struct dlv_session *s, char *body, size_t len)
{
	dlv_body_release(s);
	s->body = body;
	s->bodylen = len;
	s->flags |= DLV_F_7BIT;
}

/*
 * RFC 6152 3: an 8-bit message (BODY=8BITMIME) for a next hop that does
 * not offer 8BITMIME is converted to 7 bits (mime7.h) once: the converted
 * body is kept beside the queue (queue_body7_write) and serves every later
 * address, job and attempt until the message leaves the queue. What cannot
 * be converted bounces with 5.6.3, or goes as it is when the operator said
 * "8bit-unconvertible send". 0 to go on, -1 when the recipients are decided.
 */
static int
dlv_tx_7bit(struct dlv_session *s)
{
	char *out = NULL, why[200];
	size_t outlen;
	enum mime7_status st;

	if (!(s->job->env->flags & ENV_F_8BIT) || (s->flags & DLV_F_7BIT) ||
	    (s->conn->ehlo.ext & SMTP_EXT_8BITMIME))
		return 0;
	if (queue_body7_read(s->w->q, s->job->env->id, &out, &outlen) == 0) {
		log_info("id=%s 7-bit copy reused for %s (no 8BITMIME): "
		    "%zu bytes", s->qid, dlv_session_relay(s), outlen);
		dlv_tx_use_7bit(s, out, outlen);
		return 0;
	}
	st = mime7_convert(s->body, s->bodylen, &out, &outlen);
	if (st == MIME7_OK) {
		log_info("id=%s converted to 7 bits for %s (no 8BITMIME): "
		    "%zu -> %zu bytes", s->qid, dlv_session_relay(s),
		    s->bodylen, outlen);
		if (queue_body7_write(s->w->q, s->job->env->id, out,
		    outlen) < 0)
			log_warn("id=%s cannot keep the 7-bit copy", s->qid);
		dlv_tx_use_7bit(s, out, outlen);
		return 0;
	}
	if (st == MIME7_SEVEN)
		return 0;
	if (st != MIME7_NOMEM && s->conf->eightbit_send) {
		log_info("id=%s sent as it is to %s without 8BITMIME: %s "
		    "(8bit-unconvertible send)", s->qid, dlv_session_relay(s),
		    mime7_status_text(st));
		return 0;
	}
	snprintf(why, sizeof(why), "%s does not offer 8BITMIME and the "
	    "message cannot be converted to 7 bits: %s",
	    dlv_session_relay(s), mime7_status_text(st));
	if (st == MIME7_NOMEM) {
		dlv_rcpt_set_all(s, DLV_TEMP, "4.3.0", why);
		dlv_session_done(s, 1);
	} else {
		dlv_tx_refuse_hop(s, "5.6.3", why);
	}
	return -1;
}

/*
 * A connection is ready for MAIL. The body is read only now: an attempt
 * that finds no next hop (DNS, connect) costs no disk read.
 */
static void
dlv_tx_start(struct dlv_session *s)
{
	const struct smtp_ehlo *e = &s->conn->ehlo;

	if (s->body == NULL && queue_read_body(s->w->q, s->job->env, &s->body,
	    &s->bodylen) == -1) {
		char why[200];
		snprintf(why, sizeof(why), "cannot read the queued message: %s",
		    strerror(errno));
		s->body = NULL;
		dlv_rcpt_set_all(s, DLV_TEMP, "4.3.0", why);
		dlv_session_done(s, 1);     /* nothing was sent: reusable */
		return;
	}
	if (dlv_requiretls_check(s) < 0)
		return;
	if (!(e->ext & SMTP_EXT_SMTPUTF8) && dlv_needs_smtputf8(s)) {
		char why[300];
		snprintf(why, sizeof(why), "%s does not offer SMTPUTF8, which "
		    "this message needs (internationalized address or header)",
		    dlv_session_relay(s));
		dlv_tx_refuse_hop(s, "5.6.7", why);
		return;
	}
	if (dlv_tx_7bit(s) < 0)
		return;
	if ((e->ext & SMTP_EXT_SIZE) && e->size > 0 && s->bodylen > e->size) {
		char buf[300];
		snprintf(buf, sizeof(buf), "message size %zu exceeds size "
		    "limit %llu of %s", s->bodylen,
		    (unsigned long long)e->size, dlv_session_relay(s));
		dlv_rcpt_set_all(s, DLV_PERM, "5.3.4", buf);
		dlv_session_done(s, 1);
		return;
	}
	/* RFC 2033 5: an LMTP server supports PIPELINING */
	if ((e->ext & SMTP_EXT_PIPELINING) || dlv_session_lmtp(s))
		s->flags |= DLV_F_PIPELINING;
	s->peer = DLV_PEER_OK;
	s->send_idx = s->recv_idx = s->naccepted = 0;
	s->flags &= ~DLV_F_MAIL_OK;
	dlv_session_enter(s, DLV_S_TX);
	dlv_tx_send(s);
}

static void
dlv_tx_rset(struct dlv_session *s)
{
	dlv_session_enter(s, DLV_S_RSET);
	dlv_session_send(s, "RSET");
	dlv_session_arm(s, s->to.helo, "waiting for the RSET reply");
}

/* Returns 1 when the session is still in DLV_S_TX (more replies due). */
static int
dlv_tx_reply(struct dlv_session *s, const struct smtp_reply *r)
{
	size_t idx = s->recv_idx++;
	char status[16], *text;
	enum dlv_class cls = dlv_reply_class(r->code);

	dlv_reply_status(r, status);
	if (idx == 0) {                                 /* MAIL */
		if (cls == DLV_OK) {
			s->flags |= DLV_F_MAIL_OK;
		} else {
			char *t = dlv_reply_string(r);
			s->mail_code = r->code;
			snprintf(s->mail_enh, sizeof(s->mail_enh), "%s", status);
			snprintf(s->mail_text, sizeof(s->mail_text), "%s", t);
			free(t);
			/* every recipient shares the sender's fate */
			dlv_rcpt_set_all(s, r->code >= 300 && r->code < 400 ?
			    DLV_TEMP : cls, s->mail_enh, s->mail_text);
			if (!(s->flags & DLV_F_PIPELINING)) {
				dlv_tx_rset(s);
				return 0;
			}
		}
	} else if (idx <= s->nsend) {                   /* RCPT */
		size_t i = s->sendlist[idx - 1];

		if (s->flags & DLV_F_MAIL_OK) {
			text = dlv_reply_string(r);
			if (cls == DLV_OK) {
				s->rstate[i] = DLV_R_ACCEPTED;
				free(s->res[i].reply);
				s->res[i].reply = text;
				s->naccepted++;
			} else {
				dlv_rcpt_set(s, i, cls == DLV_PERM ? DLV_PERM :
				    DLV_TEMP, status, text);
				free(text);
			}
		}
		if (!(s->flags & DLV_F_PIPELINING) && idx == s->nsend &&
		    s->naccepted == 0) {
			dlv_tx_rset(s);
			return 0;
		}
	} else {                                        /* DATA */
		int go = (s->flags & DLV_F_MAIL_OK) && s->naccepted > 0;

		if (r->code == 354) {
			struct evbuffer *out = dlv_conn_output(s->conn);

			if (!go) {
				/* RFC 2920 3.1: accepted DATA with no
				 * recipient: end it empty, then close */
				evbuffer_add(out, ".\r\n", 3);
				dlv_session_done(s, 0);
				return 0;
			}
			dlv_body_stuff(s, out);
			s->flags |= DLV_F_BODY_SENT;
			log_trace(TRACE_CLIENT, "dlv id=%s relay=%s > (body "
			    "%zu bytes and .)", s->qid, dlv_session_relay(s),
			    s->bodylen);
			dlv_session_enter(s, DLV_S_BODY);
			dlv_session_arm(s, s->to.data_block, "sending the body");
			return 0;
		}
		if (go) {
			text = dlv_reply_string(r);
			for (size_t i = 0; i < s->job->nrcpt; i++)
				if (s->rstate[i] == DLV_R_ACCEPTED)
					dlv_rcpt_set(s, i, cls == DLV_PERM ?
					    DLV_PERM : DLV_TEMP, status, text);
			free(text);
		}
		dlv_tx_rset(s);
		return 0;
	}
	if (!(s->flags & DLV_F_PIPELINING) ||
	    (s->conn->ehlo.ext & SMTP_EXT_CHUNKING))
		dlv_tx_send(s);
	else
		dlv_tx_arm(s);
	return s->state == DLV_S_TX;
}

static void
dlv_body_reply(struct dlv_session *s, const struct smtp_reply *r)
{
	enum dlv_class cls = dlv_reply_class(r->code);
	char status[16], *text = dlv_reply_string(r);

	dlv_reply_status(r, status);
	if (r->code >= 300 && r->code < 400)
		cls = DLV_TEMP;
	for (size_t i = 0; i < s->job->nrcpt; i++)
		if (s->rstate[i] == DLV_R_ACCEPTED)
			dlv_rcpt_set(s, i, cls, status, text);
	free(text);
	s->conn->nmsg++;
	if (r->code == 421)
		s->peer = DLV_PEER_FAIL;
	dlv_session_done(s, r->code != 421);
}

/*
 * LMTP (RFC 2033 4.2): after the final dot, one reply per recipient
 * accepted at RCPT, in RCPT order. Each decides its own recipient: 2xx
 * delivered, 4xx deferred, 5xx bounced, while the others go their way. A
 * 421 defers its recipient and every one still waiting (the server is
 * closing). Returns 1 while replies are still due.
 */
static int
dlv_lmtp_body_reply(struct dlv_session *s, const struct smtp_reply *r)
{
	size_t k = dlv_lmtp_next_rcpt(s->rstate, s->sendlist, s->nsend);
	enum dlv_class cls = dlv_reply_class(r->code);
	char status[16], *text;

	if (k == s->nsend) {
		dlv_session_lost(s, "4.5.0", "protocol error (unexpected "
		    "reply after the end of data)");
		return 0;
	}
	text = dlv_reply_string(r);
	dlv_reply_status(r, status);
	if (r->code >= 300 && r->code < 400)
		cls = DLV_TEMP;
	dlv_rcpt_set(s, s->sendlist[k], cls, status, text);
	if (r->code == 421) {
		char why[600];
		snprintf(why, sizeof(why), "server closing: %s", text);
		free(text);
		dlv_session_lost(s, "4.4.2", why);
		return 0;
	}
	free(text);
	if (dlv_lmtp_next_rcpt(s->rstate, s->sendlist, s->nsend) < s->nsend) {
		dlv_session_arm(s, s->to.data_done,
		    "waiting for the next recipient's reply to the end of data");
		return 1;
	}
	s->conn->nmsg++;
	dlv_session_done(s, 1);
	return 0;
}

/* ------------------------------------------------------------------ */
/* the dialog before the transaction */

static void
dlv_session_ehlo(struct dlv_session *s)
{
	dlv_session_enter(s, DLV_S_EHLO);
	dlv_session_send(s, "%s %s", dlv_session_lmtp(s) ? "LHLO" : "EHLO",
	    s->conf->hostname != NULL ? s->conf->hostname : "localhost");
	dlv_session_arm(s, s->to.helo, "waiting for the EHLO reply");
}

static void
dlv_session_tls_start(struct dlv_session *s)
{
	struct dlv_conn *c = s->conn;
	const struct dlv_target *t = &s->targets[s->ti];
	int verify = s->tlsp == CONF_TLSP_VERIFY;
	/* MTA-STS testing: the name and chain are checked, not enforced */
	int sts_check = s->sts != NULL && !verify;
	struct bufferevent *tb;
	SSL *ssl;

	ssl = tls_client_ssl_new(s->w->ssl_ctx, t->host, verify || sts_check);
	if (ssl != NULL && sts_check)
		SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
	/* DANE: only the usable TLSA authenticate the peer (dane.c) */
	if (ssl != NULL && dlv_session_dane_auth(s) &&
	    dlv_dane_ssl_setup(ssl, t->host, s->dane.tlsa) == -1) {
		SSL_free(ssl);
		ssl = NULL;
	}
	if (ssl == NULL) {
		dlv_session_next(s, DLV_TEMP, "4.7.5", "cannot set up TLS "
		    "for %s", c->relay);
		return;
	}
	dlv_conn_lib_io(c);     /* the filter reads and writes through libevent */
	tb = bufferevent_openssl_filter_new(s->w->base, c->bev, ssl,
	    BUFFEREVENT_SSL_CONNECTING,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (tb == NULL) {
		SSL_free(ssl);
		dlv_session_next(s, DLV_TEMP, "4.7.5", "cannot set up TLS "
		    "for %s", c->relay);
		return;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(tb, 1);
	c->bev = tb;
	c->ssl = ssl;
	dlv_conn_setcb(c);
	bufferevent_setwatermark(tb, EV_READ, 0, DLV_READ_HIGH);
	bufferevent_enable(tb, EV_READ | EV_WRITE);
	dlv_session_enter(s, DLV_S_HANDSHAKE);
	dlv_session_arm(s, s->to.helo, "in the TLS handshake");
}

/* ------------------------------------------------------------------ */
/* TLS-RPT hooks (tern/tlsrpt.h) */

/* The delivery of a TLS-RPT report is never recorded (no reports about
 * reports), whichever policy applies. */
static int
dlv_session_tlsrpt_quiet(const struct dlv_session *s)
{
	return s->job->env == NULL || (s->job->env->flags & ENV_F_TLSRPT);
}

/* An MTA-STS policy, or DANE with TLSA for this host, records the outcome. */
static int
dlv_session_policy_governs(const struct dlv_session *s)
{
	return s->sts != NULL || (s->dane.want && s->dane.mx_secure &&
	    s->dane.tlsa != NULL && s->dane.verdict != DLV_DANE_MAY);
}

/*
 * Record this connection's TLS outcome with the policy no-policy-found:
 * MX routes only (a static route's next hop says nothing about the
 * recipient domain), not under tls-policy none, never for the delivery of
 * a TLS-RPT report itself (ENV_F_TLSRPT: no reports about reports). A
 * connection that a DANE or MTA-STS policy governs is recorded by that
 * policy's code instead.
 */
static void
dlv_session_tlsrpt(struct dlv_session *s, enum tlsrpt_result r,
    const char *detail)
{
	struct tlsrpt_event ev = { .policy = TLSRPT_POLICY_NONE, .result = r,
	    .detail = detail };
	const struct dlv_target *t;
	char rip[INET6_ADDRSTRLEN + 1], sip[INET6_ADDRSTRLEN + 1];
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	evutil_socket_t fd;

	if (s->job->route.kind != CONF_ROUTE_MX ||
	    s->tlsp == CONF_TLSP_NONE || dlv_session_tlsrpt_quiet(s) ||
	    s->ti >= s->ntargets || dlv_session_policy_governs(s))
		return;
	t = &s->targets[s->ti];
	ev.policy_domain = s->job->domain;
	ev.mx_host = t->host;
	ev.receiving_ip = sockaddr_ntop((const struct sockaddr *)&t->ss, rip,
	    sizeof(rip));
	if (s->conn != NULL && s->conn->bev != NULL &&
	    (fd = bufferevent_getfd(s->conn->bev)) >= 0 &&
	    getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		ev.sending_ip = sockaddr_ntop((const struct sockaddr *)&ss,
		    sip, sizeof(sip));
	tlsrpt_record(&ev);
}

/* A failed handshake in RFC 8460 4.3 terms: what verification said. */
static enum tlsrpt_result
dlv_session_tlsrpt_why(const struct dlv_session *s)
{
	long v;

	if (s->conn == NULL || s->conn->ssl == NULL ||
	    s->tlsp != CONF_TLSP_VERIFY)
		return TLSRPT_VALIDATION_FAILURE;
	v = SSL_get_verify_result(s->conn->ssl);
	switch (v) {
	case X509_V_OK:
		return TLSRPT_VALIDATION_FAILURE;
	case X509_V_ERR_CERT_HAS_EXPIRED:
		return TLSRPT_CERT_EXPIRED;
	case X509_V_ERR_HOSTNAME_MISMATCH:
		return TLSRPT_CERT_HOST_MISMATCH;
	default:
		return TLSRPT_CERT_NOT_TRUSTED;
	}
}

/* ------------------------------------------------------------------ */
/* AUTH to a smarthost (route-auth) */

/* The credentials of the session's route, or NULL. */
static const struct route_auth_entry *
dlv_auth_entry(const struct dlv_session *s)
{
	char key[ROUTE_AUTH_KEY_MAX];

	if (s->conf->route_auth == NULL ||
	    route_auth_route_key(&s->job->route, key, sizeof(key)) != 0)
		return NULL;
	return route_auth_find(s->conf->route_auth, key);
}

/*
 * Which credentials a connection authenticated with (never 0): a reload
 * that changes the user or the password of a route makes its cached
 * connections unusable (dlv_session_start).
 */
static uint32_t
dlv_auth_tag(const struct route_auth_entry *e)
{
	uint32_t h = fnv1a32(2166136261u, e->user, strlen(e->user) + 1);

	h = fnv1a32(h, e->pass, strlen(e->pass));
	return h | 1u;
}

/*
 * No authenticated session on this connection: one line for the operator
 * (host and user, never the password), every recipient deferred with a
 * 4.7.x status (never a bounce: the message is not at fault), and the
 * connection closed. The destination counts as failing, so a wrong
 * password does not hammer the smarthost with every queued message.
 */
static void
dlv_auth_defer(struct dlv_session *s, const char *status, const char *why)
{
	log_warnx("id=%s relay=%s user=%s dsn=%s smarthost authentication: "
	    "%s: mail deferred", s->qid, dlv_session_relay(s), s->cred->user,
	    status, why);
	dlv_rcpt_set_all(s, DLV_TEMP, status, why);
	s->peer = DLV_PEER_FAIL;
	dlv_session_done(s, 0);
}

/*
 * After the last EHLO, for a route with credentials: AUTH, but only over
 * TLS whose certificate the route verified. Returns 0 when the route has
 * none (go on to MAIL), 1 when AUTH is under way or the session ended.
 */
static int
dlv_auth_start(struct dlv_session *s)
{
	struct dlv_conn *c = s->conn;
	enum client_auth_mech m;
	char why[600];

	if ((s->cred = dlv_auth_entry(s)) == NULL)
		return 0;
	if (c->ssl == NULL || s->tlsp != CONF_TLSP_VERIFY ||
	    SSL_get_verify_result(c->ssl) != X509_V_OK) {
		snprintf(why, sizeof(why), "credentials for %s not sent: %s "
		    "(route-auth needs tls-policy=verify)", s->cred->host,
		    c->ssl == NULL ? "no TLS" : "TLS certificate not verified");
		dlv_auth_defer(s, "4.7.10", why);
		return 1;
	}
	if ((m = client_auth_choose(s->auth_offered)) == CLIENT_AUTH_NONE) {
		snprintf(why, sizeof(why), "%s offers neither AUTH PLAIN nor "
		    "AUTH LOGIN", s->cred->host);
		dlv_auth_defer(s, "4.7.4", why);
		return 1;
	}
	log_trace(TRACE_CLIENT, "dlv id=%s relay=%s > AUTH %s (credentials "
	    "of %s hidden)", s->qid, c->relay, client_auth_mech_name(m),
	    s->cred->user);
	dlv_session_enter(s, DLV_S_AUTH);
	client_auth_start(&s->auth, m, s->cred->user, s->cred->pass,
	    dlv_conn_output(c));
	dlv_session_arm(s, s->to.helo, "waiting for the AUTH reply");
	return 1;
}

static void
dlv_auth_reply(struct dlv_session *s, const struct smtp_reply *r)
{
	char *t, esc[600], why[800];

	switch (client_auth_reply(&s->auth, r->code,
	    dlv_conn_output(s->conn))) {
	case CLIENT_AUTH_MORE:
		log_trace(TRACE_CLIENT, "dlv id=%s relay=%s > (AUTH %s "
		    "response hidden)", s->qid, s->conn->relay,
		    client_auth_mech_name(s->auth.mech));
		dlv_session_arm(s, s->to.helo, "waiting for the AUTH reply");
		return;
	case CLIENT_AUTH_DONE:
		log_debug("id=%s relay=%s authenticated as %s (AUTH %s)",
		    s->qid, s->conn->relay, s->cred->user,
		    client_auth_mech_name(s->auth.mech));
		s->conn->authed = dlv_auth_tag(s->cred);
		dlv_tx_start(s);
		return;
	case CLIENT_AUTH_FAILED:
		t = dlv_reply_string(r);
		log_escape(esc, sizeof(esc), t, strlen(t));
		free(t);
		snprintf(why, sizeof(why), "%s refused AUTH %s as %s: %s",
		    s->cred->host, client_auth_mech_name(s->auth.mech),
		    s->cred->user, esc);
		dlv_auth_defer(s, r->code == 535 ? "4.7.8" : "4.7.0", why);
		return;
	}
}

/* The last EHLO is done: AUTH when the route has credentials, then MAIL. */
static void
dlv_session_ready(struct dlv_session *s)
{
	s->flags |= DLV_F_EHLO_DONE;
	if (dlv_auth_start(s))
		return;
	dlv_tx_start(s);
}

/* After the last EHLO: STARTTLS, or the transaction. */
static void
dlv_session_ehlo_done(struct dlv_session *s)
{
	const struct smtp_ehlo *e = &s->conn->ehlo;
	int offered = (e->ext & SMTP_EXT_STARTTLS) != 0;

	if (s->conn->ssl == NULL && !offered && !(s->flags & DLV_F_NO_TLS))
		dlv_sts_tls_outcome(s, TLSRPT_STARTTLS_NOT_SUPPORTED,
		    "STARTTLS not offered");
	if (s->conn->ssl == NULL && s->tlsp != CONF_TLSP_NONE) {
		if (!offered)
			dlv_session_tlsrpt(s, TLSRPT_STARTTLS_NOT_SUPPORTED,
			    NULL);
		if (s->tlsp == CONF_TLSP_MAY) {
			if (offered && !(s->flags & DLV_F_NO_TLS)) {
				dlv_session_enter(s, DLV_S_STARTTLS);
				dlv_session_send(s, "STARTTLS");
				dlv_session_arm(s, s->to.helo,
				    "waiting for the STARTTLS reply");
				return;
			}
		} else if (!offered) {
			dlv_session_dane_report(s, TLSRPT_STARTTLS_NOT_SUPPORTED,
			    NULL);
			dlv_session_next(s, DLV_TEMP, "4.7.5", "TLS required "
			    "but not offered by %s", s->conn->relay);
			return;
		} else {
			dlv_session_enter(s, DLV_S_STARTTLS);
			dlv_session_send(s, "STARTTLS");
			dlv_session_arm(s, s->to.helo,
			    "waiting for the STARTTLS reply");
			return;
		}
	}
	dlv_session_ready(s);
}

/* A reply to a command before the transaction. */
static void
dlv_session_pre_reply(struct dlv_session *s, const struct smtp_reply *r,
    const char *raw, size_t rawlen)
{
	enum dlv_class cls = dlv_reply_class(r->code);
	char status[16], *text = dlv_reply_string(r);
	char buf[700];

	dlv_reply_status(r, status);
	snprintf(buf, sizeof(buf), "%s", text);
	free(text);
	switch (s->state) {
	case DLV_S_GREETING:
		if (r->code != 220) {
			dlv_session_next(s, cls == DLV_PERM ? DLV_PERM :
			    DLV_TEMP, status, "%s refused to talk to me: %s",
			    s->conn->relay, buf);
			return;
		}
		dlv_session_ehlo(s);
		return;
	case DLV_S_EHLO:
		if (r->code == 250) {
			smtp_ehlo_parse(raw, rawlen, &s->conn->ehlo);
			s->auth_offered = client_auth_offered(raw, rawlen);
			dlv_session_ehlo_done(s);
			return;
		}
		if (r->code >= 500 && r->code != 421 && !dlv_session_lmtp(s)) {
			dlv_session_enter(s, DLV_S_HELO);
			dlv_session_send(s, "HELO %s", s->conf->hostname !=
			    NULL ? s->conf->hostname : "localhost");
			dlv_session_arm(s, s->to.helo,
			    "waiting for the HELO reply");
			return;
		}
		dlv_session_next(s, DLV_TEMP, status, "%s said to EHLO: %s",
		    s->conn->relay, buf);
		return;
	case DLV_S_HELO:
		if (r->code == 250) {
			memset(&s->conn->ehlo, 0, sizeof(s->conn->ehlo));
			s->auth_offered = 0;
			dlv_session_ehlo_done(s);
			return;
		}
		dlv_session_next(s, cls == DLV_PERM ? DLV_PERM : DLV_TEMP,
		    status, "%s said to HELO: %s", s->conn->relay, buf);
		return;
	case DLV_S_STARTTLS:
		if (r->code == 220) {
			dlv_session_tls_start(s);
			return;
		}
		dlv_sts_tls_outcome(s, TLSRPT_STARTTLS_NOT_SUPPORTED, buf);
		dlv_session_tlsrpt(s, TLSRPT_STARTTLS_NOT_SUPPORTED, NULL);
		if (s->tlsp == CONF_TLSP_MAY) {
			/* offered but refused: go on in plaintext */
			dlv_session_ready(s);
			return;
		}
		dlv_session_dane_report(s, TLSRPT_STARTTLS_NOT_SUPPORTED, buf);
		dlv_session_next(s, DLV_TEMP, "4.7.5", "%s said to STARTTLS: "
		    "%s", s->conn->relay, buf);
		return;
	default:
		panic("dlv_session_pre_reply: state %s",
		    dlv_state_names[s->state]);
	}
}

/* Returns 1 when s still exists and waits for more pipelined replies. */
static int
dlv_session_reply(struct dlv_session *s, const struct smtp_reply *r,
    const char *raw, size_t rawlen)
{
	if (log_trace_mask() & TRACE_CLIENT) {
		char esc[700];
		log_trace(TRACE_CLIENT, "dlv id=%s relay=%s < %d %s %s",
		    s->qid, dlv_session_relay(s), r->code, r->enh,
		    log_escape(esc, sizeof(esc), r->text, strlen(r->text)));
	}
	evtimer_del(s->timer);
	switch (s->state) {
	case DLV_S_GREETING:
	case DLV_S_EHLO:
	case DLV_S_HELO:
	case DLV_S_STARTTLS:
		dlv_session_pre_reply(s, r, raw, rawlen);
		return 0;
	case DLV_S_TX:
		if (r->code == 421) {
			char *t = dlv_reply_string(r);
			char why[600];
			snprintf(why, sizeof(why), "server closing: %s", t);
			free(t);
			dlv_session_lost(s, "4.4.2", why);
			return 0;
		}
		return dlv_tx_reply(s, r);
	case DLV_S_AUTH:
		dlv_auth_reply(s, r);
		return 0;
	case DLV_S_BODY:
		if (dlv_session_lmtp(s))
			return dlv_lmtp_body_reply(s, r);
		dlv_body_reply(s, r);
		return 0;
	case DLV_S_RSET:
		dlv_session_done(s, r->code == 250);
		return 0;
	default:
		/* a reply nobody asked for */
		if (s->conn != NULL && s->conn->relay != NULL)
			dlv_session_next(s, DLV_TEMP, "4.5.0", "%s: protocol "
			    "error (unexpected reply)", s->conn->relay);
		else
			dlv_session_lost(s, "4.5.0", "protocol error "
			    "(unexpected reply)");
		return 0;
	}
}

/* ------------------------------------------------------------------ */
/* connection events (from deliver.c's dispatchers) */

void
dlv_session_on_read(struct dlv_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->conn->bev);

	for (;;) {
		size_t len = evbuffer_get_length(in), take;
		struct smtp_reply r;
		enum smtp_reply_status st;
		const char *p;
		char why[200];
		enum dlv_state before = s->state;

		if (len == 0)
			return;
		take = len < SMTP_REPLY_MAX ? len : SMTP_REPLY_MAX;
		p = (const char *)evbuffer_pullup(in, (ssize_t)take);
		st = smtp_reply_parse(p, take, &r);
		if (st == SMTP_REPLY_MORE)
			return;
		if (st != SMTP_REPLY_OK) {
			snprintf(why, sizeof(why), "protocol error (reply %s)",
			    smtp_reply_strstatus(st));
			if (s->state < DLV_S_TX)
				dlv_session_next(s, DLV_TEMP, "4.5.0",
				    "%s: %s", s->conn->relay, why);
			else
				dlv_session_lost(s, "4.5.0", why);
			return;
		}
		/*
		 * A reply that ends the session frees s and the connection:
		 * handle it with a private copy of the raw bytes drained.
		 */
		{
			char *raw = xmalloc(r.len);
			int more;

			memcpy(raw, p, r.len);
			evbuffer_drain(in, r.len);
			/* RFC 3207 4.2: nothing may follow the 220 to
			 * STARTTLS in plaintext; drop it */
			if (before == DLV_S_STARTTLS && r.code == 220)
				evbuffer_drain(in, evbuffer_get_length(in));
			more = dlv_session_reply(s, &r, raw, r.len);
			free(raw);
			/* s may be gone now: only a session still in its
			 * pipelined transaction reads on */
			if (!more)
				return;
		}
	}
}

void
dlv_session_on_write(struct dlv_session *s)
{
	/* the whole body and the dot are out: now the final reply */
	if (s->state == DLV_S_BODY && s->waiting != NULL &&
	    strcmp(s->waiting, "sending the body") == 0)
		dlv_session_arm(s, s->to.data_done,
		    "waiting for the reply to the end of data");
}

/* TLS failed under policy "may": the same address again, in plaintext. */
static void
dlv_session_retry_plain(struct dlv_session *s, const char *why)
{
	log_info("id=%s relay=%s TLS handshake failed (%s): retrying in "
	    "plaintext", s->qid, dlv_session_relay(s), why);
	evtimer_del(s->timer);
	dlv_conn_free(s->conn);
	s->conn = NULL;
	s->flags |= DLV_F_NO_TLS;
	s->flags &= ~(DLV_F_EHLO_DONE | DLV_F_PIPELINING);
	dlv_session_connect_next(s);
}

static void
dlv_ssl_error(struct bufferevent *bev, char *buf, size_t len)
{
	unsigned long e = bufferevent_get_openssl_error(bev);

	if (e != 0)
		ERR_error_string_n(e, buf, len);
	else if (EVUTIL_SOCKET_ERROR() != 0)
		snprintf(buf, len, "%s",
		    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
	else
		snprintf(buf, len, "connection closed");
	while (bufferevent_get_openssl_error(bev) != 0)
		;
}

void
dlv_session_on_event(struct dlv_session *s, short what)
{
	struct dlv_conn *c = s->conn;
	char why[256];

	if (what & BEV_EVENT_CONNECTED) {
		if (s->state == DLV_S_CONNECT) {
			int one = 1;
			evutil_socket_t fd = bufferevent_getfd(c->bev);

			if (fd >= 0)
				(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY,
				    &one, sizeof(one));
			dlv_conn_own_io(c);     /* plain: deliver.c's I/O */
			dlv_session_enter(s, DLV_S_GREETING);
			dlv_session_arm(s, s->to.greeting,
			    "waiting for the greeting");
		} else if (s->state == DLV_S_HANDSHAKE) {
			char d[128];

			tls_describe(c->ssl, d, sizeof(d));
			free(c->tls);
			c->tls = xstrdup(d);
			log_trace(TRACE_CLIENT, "dlv id=%s relay=%s TLS %s",
			    s->qid, c->relay, d);
			if (dlv_session_tls_auth(s) < 0)
				return;
			dlv_tls_handshake_done(s);
			dlv_session_tlsrpt(s, TLSRPT_SUCCESS, NULL);
			dlv_session_ehlo(s);
		}
		return;
	}
	if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)))
		return;

	switch (s->state) {
	case DLV_S_CONNECT:
		snprintf(why, sizeof(why), "%s", EVUTIL_SOCKET_ERROR() != 0 ?
		    evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()) :
		    "connection closed");
		dlv_conn_free(c);
		s->conn = NULL;
		s->state = DLV_S_CONNECT;
		{
			char relay[RESOLVER_NAME_MAX + 96];

			dlv_session_target_name(s, &s->targets[s->ti], relay,
			    sizeof(relay));
			dlv_session_next(s, DLV_TEMP, "4.4.1", "connect to %s "
			    "failed: %s", relay, why);
		}
		return;
	case DLV_S_HANDSHAKE:
		dlv_ssl_error(c->bev, why, sizeof(why));
		if (dlv_session_dane_auth(s)) {
			/* DANE: say which check failed, and report it */
			long vr = SSL_get_verify_result(c->ssl);
			if (vr != X509_V_OK)
				snprintf(why, sizeof(why), "DANE authentication "
				    "failed: %s", X509_verify_cert_error_string(vr));
			dlv_session_dane_report(s, dlv_dane_failure_type(c->ssl),
			    why);
		}
		dlv_sts_tls_outcome(s, dlv_sts_handshake_result(c), why);
		dlv_session_tlsrpt(s, dlv_session_tlsrpt_why(s), why);
		if (s->tlsp == CONF_TLSP_MAY) {
			dlv_session_retry_plain(s, why);
			return;
		}
		{
			char relay[RESOLVER_NAME_MAX + 96];
			snprintf(relay, sizeof(relay), "%s", c->relay);
			dlv_conn_free(c);
			s->conn = NULL;
			dlv_session_next(s, DLV_TEMP, "4.7.5", "TLS handshake "
			    "with %s failed: %s", relay, why);
		}
		return;
	case DLV_S_GREETING:
	case DLV_S_EHLO:
	case DLV_S_HELO:
	case DLV_S_STARTTLS:
	case DLV_S_AUTH:
		{
			char relay[RESOLVER_NAME_MAX + 96];
			const char *w = s->waiting;

			snprintf(relay, sizeof(relay), "%s", c->relay);
			dlv_conn_free(c);
			s->conn = NULL;
			dlv_session_next(s, DLV_TEMP, "4.4.2", "lost connection "
			    "with %s while %s", relay, w ? w : "talking");
		}
		return;
	default:
		dlv_session_lost(s, "4.4.2", (what & BEV_EVENT_EOF) ?
		    "lost connection" : "connection error");
		return;
	}
}

static void
dlv_session_timercb(evutil_socket_t fd, short what, void *arg)
{
	struct dlv_session *s = arg;
	char relay[RESOLVER_NAME_MAX + 96];
	const char *w = s->waiting ? s->waiting : "talking";

	snprintf(relay, sizeof(relay), "%s", dlv_session_relay(s));
	switch (s->state) {
	case DLV_S_CONNECT:
		dlv_conn_free(s->conn);
		s->conn = NULL;
		dlv_session_next(s, DLV_TEMP, "4.4.1", "connect to %s failed: "
		    "timeout", relay);
		return;
	case DLV_S_HANDSHAKE:
		dlv_sts_tls_outcome(s, TLSRPT_VALIDATION_FAILURE,
		    "TLS handshake timeout");
		dlv_session_tlsrpt(s, TLSRPT_VALIDATION_FAILURE, "timeout");
		if (s->tlsp == CONF_TLSP_MAY) {
			dlv_session_retry_plain(s, "timeout");
			return;
		}
		/* FALLTHROUGH */
	case DLV_S_GREETING:
	case DLV_S_EHLO:
	case DLV_S_HELO:
	case DLV_S_STARTTLS:
	case DLV_S_AUTH:
		dlv_conn_free(s->conn);
		s->conn = NULL;
		dlv_session_next(s, DLV_TEMP, "4.4.2", "timeout with %s while "
		    "%s", relay, w);
		return;
	default:
		dlv_session_lost(s, "4.4.2", "timeout");
		return;
	}
}

/* ------------------------------------------------------------------ */
/* routing and connecting */

static void
dlv_session_connect_next(struct dlv_session *s)
{
	while (s->ti < s->ntargets) {
		/* DANE: this host's TLSA set its TLS policy (dane.c) */
		if (s->dane.want) {
			int d = dlv_session_dane(s);
			if (d < 0)
				return;         /* looking up */
			if (d > 0)
				continue;       /* host skipped */
		}
		const struct dlv_target *t = &s->targets[s->ti];
		struct sockaddr_storage ss = t->ss;
		socklen_t sslen;
		char relay[RESOLVER_NAME_MAX + 96];
		struct dlv_conn *c;

		if (ss.ss_family == AF_INET) {
			((struct sockaddr_in *)&ss)->sin_port = htons(s->port);
			sslen = sizeof(struct sockaddr_in);
		} else if (ss.ss_family == AF_INET6) {
			((struct sockaddr_in6 *)&ss)->sin6_port = htons(s->port);
			sslen = sizeof(struct sockaddr_in6);
		} else {
			sslen = sizeof(struct sockaddr_un);
		}
		dlv_session_target_name(s, t, relay, sizeof(relay));

		c = dlv_conn_new(s->w, s->key);
		c->s = s;
		c->relay = xstrdup(relay);
		c->bev = bufferevent_socket_new(s->w->base, -1,
		    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
		if (c->bev == NULL)
			panic("dlv_session_connect_next: bufferevent_socket_new");
		dlv_conn_setcb(c);
		bufferevent_setwatermark(c->bev, EV_READ, 0, DLV_READ_HIGH);
		bufferevent_enable(c->bev, EV_READ | EV_WRITE);
		s->conn = c;
		dlv_session_enter(s, DLV_S_CONNECT);
		dlv_session_arm(s, s->to.connect, "connecting");
		log_trace(TRACE_CLIENT, "dlv id=%s connecting to %s", s->qid,
		    relay);
		if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&ss,
		    (int)sslen) == 0)
			return;
		snprintf(s->err_text, sizeof(s->err_text), "connect to %s "
		    "failed: %s", relay, strerror(errno));
		snprintf(s->err_status, sizeof(s->err_status), "4.4.1");
		s->have_err = 1;
		s->all_perm = 0;
		s->peer = DLV_PEER_FAIL;
		evtimer_del(s->timer);
		dlv_conn_free(c);
		s->conn = NULL;
		s->flags &= ~DLV_F_NO_TLS;
		s->ti++;
	}

	/* every address failed */
	if (!s->have_err) {
		snprintf(s->err_status, sizeof(s->err_status), "4.4.3");
		snprintf(s->err_text, sizeof(s->err_text), "no address to "
		    "deliver to");
		s->all_perm = 0;
	}
	dlv_rcpt_set_all(s, s->all_perm && s->have_err ? DLV_PERM : DLV_TEMP,
	    s->err_status, s->err_text);
	dlv_session_done(s, 0);
}

/* Is sa's address one of this host's (loopback, or on an interface)? */
static int
dlv_addr_is_local(const struct sockaddr *sa)
{
	struct ifaddrs *ifa, *i;
	int local = 0;

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
		if ((ntohl(a->sin_addr.s_addr) >> 24) == 127 ||
		    a->sin_addr.s_addr == htonl(INADDR_ANY))
			return 1;
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
		if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr) ||
		    IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr))
			return 1;
	}
	if (getifaddrs(&ifa) == -1)
		return 0;
	for (i = ifa; i != NULL && !local; i = i->ifa_next) {
		if (i->ifa_addr == NULL || i->ifa_addr->sa_family != sa->sa_family)
			continue;
		if (sa->sa_family == AF_INET)
			local = ((const struct sockaddr_in *)sa)->sin_addr.s_addr ==
			    ((const struct sockaddr_in *)i->ifa_addr)->sin_addr.s_addr;
		else
			local = IN6_ARE_ADDR_EQUAL(
			    &((const struct sockaddr_in6 *)sa)->sin6_addr,
			    &((const struct sockaddr_in6 *)i->ifa_addr)->sin6_addr);
	}
	freeifaddrs(ifa);
	return local;
}

/* The listener of ours that a connection to t (at port) would reach. */
static const struct conf_listen *
dlv_target_listener(const struct conf *c, const struct dlv_target *t,
    uint16_t port)
{
	struct sockaddr_storage ss = t->ss;
	const struct conf_listen *l;

	if (ss.ss_family == AF_UNIX)    /* a socket path: never a listener */
		return NULL;
	if (ss.ss_family == AF_INET)
		((struct sockaddr_in *)&ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
	if ((l = conf_listener_for(c, (struct sockaddr *)&ss, 0)) != NULL)
		return l;
	/* a wildcard listener on that port: is the address one of ours? */
	if (conf_listener_for(c, (struct sockaddr *)&ss, 1) != NULL &&
	    dlv_addr_is_local((struct sockaddr *)&ss))
		return conf_listener_for(c, (struct sockaddr *)&ss, 1);
	return NULL;
}

/*
 * Never hand mail to one of our own listeners (RFC 5321 5.1 applied to
 * addresses: a route or an MX that names this server under another name).
 * Such targets are dropped; when none is left the recipients bounce with
 * 5.4.6, as for an MX that names us. Returns 1 when the session is done.
 */
static int
dlv_session_drop_self(struct dlv_session *s)
{
	const char *where = s->job->route.kind == CONF_ROUTE_MX ?
	    s->job->domain : s->job->route.host;
	const struct conf_listen *first = NULL;
	char a[64] = "", why[512];
	size_t k = 0;

	for (size_t i = 0; i < s->ntargets; i++) {
		const struct conf_listen *l = dlv_target_listener(s->conf,
		    &s->targets[i], s->port);
		if (l == NULL) {
			s->targets[k++] = s->targets[i];
			continue;
		}
		if (first == NULL) {
			first = l;
			sockaddr_ntop((const struct sockaddr *)&s->targets[i].ss,
			    a, sizeof(a));
		}
	}
	s->ntargets = k;
	if (first == NULL)
		return 0;
	snprintf(why, sizeof(why), "mail for %s loops back to myself: %s "
	    "port %u is this server's listener %s", where ? where : "?", a,
	    (unsigned)s->port, first->spec);
	if (k > 0) {
		log_info("id=%s %s; skipped, %zu other address(es) left",
		    s->qid, why, k);
		return 0;
	}
	log_warnx("id=%s status=loop dsn=5.4.6 %s", s->qid, why);
	dlv_rcpt_set_all(s, DLV_PERM, "5.4.6", why);
	dlv_session_done(s, 0);
	return 1;
}

static void
dlv_session_resolved(void *arg, struct mx_result *res)
{
	struct dlv_session *s = arg;
	size_t n = 0;

	s->rq = NULL;
	s->dane.mx_secure = res->status == RESOLVER_OK && res->dnssec_ad;
	metrics_observe(&tern_metrics.dns_seconds, now_mono_us() - s->t_resolve);
	/* MX routing never hands mail back to ourselves (RFC 5321 5.1) */
	if (res->status == RESOLVER_OK && s->job->route.kind != CONF_ROUTE_HOST)
		mx_result_drop_self(res, s->conf->hostname);
	if (res->status != RESOLVER_OK) {
		dlv_rcpt_set_all(s, res->status == RESOLVER_PERMFAIL ?
		    DLV_PERM : DLV_TEMP, res->dsn[0] ? res->dsn : "4.4.3",
		    res->reason[0] ? res->reason : "DNS lookup failed");
		mx_result_free(res);
		dlv_session_done(s, 0);
		return;
	}
	for (size_t h = 0; h < res->nhosts; h++)
		n += res->hosts[h].naddrs;
	free(s->targets);
	s->targets = xcalloc(n ? n : 1, sizeof(*s->targets));
	s->ntargets = 0;
	for (size_t h = 0; h < res->nhosts; h++) {
		for (size_t i = 0; i < res->hosts[h].naddrs; i++) {
			struct dlv_target *t = &s->targets[s->ntargets++];
			snprintf(t->host, sizeof(t->host), "%s",
			    res->hosts[h].name);
			t->ss = res->hosts[h].addrs[i];
		}
	}
	mx_result_free(res);
	if (dlv_session_drop_self(s))
		return;
	if (dlv_sts_applies(s)) {
		/* MTA-STS: the policy decides which targets, and how */
		s->stsq = mta_sts_query(s->w->base, s->w->resolver, s->conf,
		    s->job->domain, dlv_sts_ready, s);
		return;
	}
	dlv_session_targets_ready(s);
}

/* s->targets is set: try them in order from the first. */
static void
dlv_session_targets_ready(struct dlv_session *s)
{
	s->ti = 0;
	s->have_err = 0;
	s->all_perm = 1;
	dlv_session_connect_next(s);
}

/* An LMTP unix socket route: its one target is the path, no DNS. */
static void
dlv_lmtp_unix_target(struct dlv_session *s)
{
	const char *path = s->job->route.host;
	unsigned len;

	free(s->targets);
	s->targets = xcalloc(1, sizeof(*s->targets));
	if (path == NULL || strlen(path) >= sizeof(s->targets[0].host) ||
	    dlv_lmtp_unix_addr(path, &s->targets[0].ss, &len) == -1) {
		dlv_rcpt_set_all(s, DLV_PERM, "5.3.5", "bad LMTP socket path");
		dlv_session_done(s, 0);
		return;
	}
	snprintf(s->targets[0].host, sizeof(s->targets[0].host), "%s", path);
	s->ntargets = 1;
	dlv_session_targets_ready(s);
}

static void
dlv_session_resolve(struct dlv_session *s)
{
	const struct dlv_job *j = s->job;
	struct resolver *r = s->w->resolver;

	if (j->route.transport == CONF_XPORT_LMTP_UNIX) {
		dlv_lmtp_unix_target(s);    /* a socket path needs no DNS */
		return;
	}
	if (r == NULL) {
		dlv_rcpt_set_all(s, DLV_TEMP, "4.4.3", "no DNS resolver");
		dlv_session_done(s, 0);
		return;
	}
	dlv_session_enter(s, DLV_S_RESOLVE);
	s->t_resolve = now_mono_us();
	switch (j->route.kind) {
	case CONF_ROUTE_MX:
		/* an address literal (user@[192.0.2.1]) names its host */
		s->rq = j->domain[0] == '[' ?
		    resolver_host_lookup(r, j->domain, dlv_session_resolved, s) :
		    resolver_mx_lookup(r, j->domain, dlv_session_resolved, s);
		break;
	case CONF_ROUTE_HOST_MX:
		s->rq = j->route.host == NULL ? NULL : resolver_mx_lookup(r,
		    j->route.host, dlv_session_resolved, s);
		break;
	case CONF_ROUTE_HOST:
		s->rq = j->route.host == NULL ? NULL : resolver_host_lookup(r,
		    j->route.host, dlv_session_resolved, s);
		break;
	}
	if (s->rq == NULL) {
		dlv_rcpt_set_all(s, DLV_PERM, "5.1.2", "bad destination name");
		dlv_session_done(s, 0);
	}
}

/* 1 if addr can go into a MAIL/RCPT command. */
static int
dlv_addr_ok(const char *a)
{
	size_t n = 0;

	if (a == NULL)
		return 0;
	for (; a[n] != '\0'; n++)
		if ((unsigned char)a[n] < 0x20 || a[n] == 0x7f)
			return 0;
	return n <= 1000;
}

void
dlv_session_start(struct dlv_worker *w, struct dlv_job *job)
{
	struct dlv_session *s = xcalloc(1, sizeof(*s));
	const struct envelope *env = job->env;
	struct dlv_conn *c;

	s->w = w;
	s->job = job;
	TAILQ_INSERT_TAIL(&w->sessions, s, entry);
	s->conf = dlv_pool_conf(w->pool);
	dlv_timeouts_init(&s->to, s->conf);
	qid_format(env->id, s->qid);
	s->start_us = now_mono_us();
	s->key = dlv_route_key(job);
	s->port = job->route.port ? job->route.port : s->conf->mx_port;
	s->tlsp = job->route.tls;
	if (s->tlsp == CONF_TLSP_DANE) {
		/* DANE for MX-resolved SMTP routes, unless the message said
		 * "TLS-Required: No" (RFC 8689 5); else opportunistic */
		s->dane.want = job->route.kind != CONF_ROUTE_HOST &&
		    job->route.transport == CONF_XPORT_SMTP &&
		    job->domain[0] != '[' &&
		    !((env->flags & ENV_F_TLS_OPTIONAL) &&
		    !(env->flags & ENV_F_REQUIRETLS));
		s->tlsp = CONF_TLSP_MAY;
	}
	s->timer = evtimer_new(w->base, dlv_session_timercb, s);
	if (s->timer == NULL)
		panic("dlv_session_start: evtimer_new failed");
	s->res = xcalloc(job->nrcpt ? job->nrcpt : 1, sizeof(*s->res));
	s->rstate = xcalloc(job->nrcpt ? job->nrcpt : 1, 1);
	s->sendlist = xcalloc(job->nrcpt ? job->nrcpt : 1, sizeof(size_t));
	s->all_perm = 1;

	if (!dlv_addr_ok(env->sender)) {
		dlv_rcpt_set_all(s, DLV_PERM, "5.1.7", "bad sender address");
		dlv_session_done(s, 0);
		return;
	}
	for (size_t i = 0; i < job->nrcpt; i++) {
		if (job->rcpts[i] >= env->nrcpt ||
		    !dlv_addr_ok(env->rcpts[job->rcpts[i]].addr))
			dlv_rcpt_set(s, i, DLV_PERM, "5.1.3",
			    "bad recipient address");
		else
			s->sendlist[s->nsend++] = i;
	}
	if (s->nsend == 0) {
		dlv_session_done(s, 0);
		return;
	}
	c = dlv_conn_take(w, s->key);
	if (c != NULL) {
		const struct route_auth_entry *cred = dlv_auth_entry(s);
		/* cached under other credentials, or none (a reload) */
		if (c->authed != (cred != NULL ? dlv_auth_tag(cred) : 0)) {
			log_debug("id=%s relay=%s cached connection closed: the "
			    "route's credentials changed", s->qid, c->relay);
			dlv_conn_quit(c);
			c = NULL;
		}
	}
	if (c != NULL && dlv_sts_applies(s) && c->tls_auth !=
	    DLV_TLSAUTH_STS && mta_sts_cached_enforce(job->domain)) {
		/* opened before the domain's enforce policy was known */
		dlv_conn_quit(c);
		c = NULL;
	}
	if (c != NULL) {
		log_trace(TRACE_CLIENT, "dlv id=%s reusing connection to %s",
		    s->qid, c->relay);
		c->s = s;
		s->conn = c;
		s->flags |= DLV_F_REUSED | DLV_F_EHLO_DONE;
		dlv_tx_start(s);
		return;
	}
	dlv_session_resolve(s);
}

/* ------------------------------------------------------------------ */
/* DANE (RFC 7672; the policy is in dane.c) and REQUIRETLS (RFC 8689) */

/* The current target is to be authenticated by its usable TLSA. */
static int
dlv_session_dane_auth(const struct dlv_session *s)
{
	return s->dane.want && s->dane.mx_secure &&
	    s->dane.verdict == DLV_DANE_AUTH;
}

/* A TLS-RPT event of the "tlsa" policy, when DANE applies to the target. */
static void
dlv_session_dane_report(struct dlv_session *s, enum tlsrpt_result res,
    const char *detail)
{
	if (!s->dane.want || !s->dane.mx_secure || s->dane.tlsa == NULL ||
	    s->dane.verdict == DLV_DANE_MAY || s->ti >= s->ntargets ||
	    dlv_session_tlsrpt_quiet(s))
		return;
	dlv_dane_report(&s->dane, s->job->domain, &s->targets[s->ti].ss, res,
	    detail);
}

static void
dlv_session_tlsa_done(void *arg, const struct tlsa_result *res)
{
	struct dlv_session *s = arg;

	s->dane.rq = NULL;
	s->dane.tlsa = xmalloc(sizeof(*s->dane.tlsa));
	memcpy(s->dane.tlsa, res, sizeof(*res));
	dlv_session_connect_next(s);
}

/* The TLSA lookup of the current target's host failed: skip the host. */
static void
dlv_session_dane_skip(struct dlv_session *s)
{
	struct dlv_dane *d = &s->dane;
	char host[300];

	if (!d->reported)
		dlv_session_dane_report(s, TLSRPT_DNSSEC_INVALID,
		    d->tlsa->reason);
	d->reported = 1;
	log_escape(host, sizeof(host), d->host, strlen(d->host));
	snprintf(s->err_status, sizeof(s->err_status), "4.7.5");
	snprintf(s->err_text, sizeof(s->err_text), "%.190s for %.300s (DANE)",
	    d->tlsa->reason, host);
	s->have_err = 1;
	s->all_perm = 0;
	log_info("id=%s next hop skipped: status=%s %s", s->qid,
	    s->err_status, s->err_text);
	while (s->ti < s->ntargets &&
	    strcasecmp(s->targets[s->ti].host, d->host) == 0)
		s->ti++;
}

/*
 * DANE (RFC 7672 2.2), before connecting to s->targets[s->ti]: with a
 * secure MX answer, the TLSA of its host decide s->tlsp. -1 while the
 * lookup runs (dlv_session_tlsa_done() goes on from here), 1 when the host
 * was skipped (its TLSA lookup failed), 0 to connect.
 */
static int
dlv_session_dane(struct dlv_session *s)
{
	struct dlv_dane *d = &s->dane;
	const struct dlv_target *t = &s->targets[s->ti];

	d->verdict = DLV_DANE_MAY;
	s->tlsp = CONF_TLSP_MAY;
	if (!d->mx_secure || t->ss.ss_family == AF_UNIX)
		return 0;       /* insecure MX: no DANE (STS may apply) */
	if (d->tlsa == NULL || strcasecmp(d->host, t->host) != 0) {
		dlv_dane_clear(d);
		snprintf(d->host, sizeof(d->host), "%s", t->host);
		d->rq = resolver_tlsa_lookup(s->w->resolver, t->host, s->port,
		    dlv_session_tlsa_done, s);
		if (d->rq != NULL) {
			dlv_session_enter(s, DLV_S_RESOLVE);
			return -1;
		}
		d->tlsa = xcalloc(1, sizeof(*d->tlsa));
		d->tlsa->status = TLSA_FAIL;
		snprintf(d->tlsa->reason, sizeof(d->tlsa->reason),
		    "TLSA lookup failed: name too long");
	}
	d->verdict = dlv_dane_verdict(d->tlsa);
	switch (d->verdict) {
	case DLV_DANE_DEFER:
		dlv_session_dane_skip(s);
		return 1;
	case DLV_DANE_ENCRYPT:
		if (!d->reported) {
			log_info("id=%s dane: %s has TLSA records, none usable: "
			    "TLS without authentication", s->qid, t->host);
			dlv_session_dane_report(s, TLSRPT_TLSA_INVALID,
			    "no usable TLSA record");
			d->reported = 1;
		}
		/* FALLTHROUGH */
	case DLV_DANE_AUTH:
		s->tlsp = CONF_TLSP_ENCRYPT;
		return 0;
	default:
		return 0;
	}
}

/*
 * After the handshake: how the peer was authenticated (c->tls_auth), and
 * for DANE, the check of the match and its TLS-RPT success. -1 when the
 * session moved on to the next address.
 */
static int
dlv_session_tls_auth(struct dlv_session *s)
{
	struct dlv_conn *c = s->conn;
	char what[200];

	c->tls_auth = DLV_TLSAUTH_NONE;
	if (dlv_session_dane_auth(s)) {
		if (!dlv_dane_verified(c->ssl, what, sizeof(what))) {
			dlv_session_dane_report(s, TLSRPT_VALIDATION_FAILURE,
			    what);
			dlv_session_next(s, DLV_TEMP, "4.7.5", "DANE "
			    "authentication of %s failed: %s", c->relay, what);
			return -1;
		}
		c->tls_auth = DLV_TLSAUTH_DANE;
		log_info("id=%s relay=%s dane-verified: TLSA %s", s->qid,
		    c->relay, what);
		dlv_session_dane_report(s, TLSRPT_SUCCESS, NULL);
	} else if (s->tlsp == CONF_TLSP_VERIFY) {
		c->tls_auth = DLV_TLSAUTH_PKIX;
	}
	return 0;
}

/*
 * RFC 8689 4.2.1: a message sent with REQUIRETLS goes only over TLS whose
 * peer DANE or MTA-STS authenticated, to a next hop that offers REQUIRETLS
 * (and the parameter is passed on). Otherwise this next hop is skipped
 * with 5.7.30; when none is left the recipients bounce. LMTP over a unix
 * socket is local final delivery, never on a network: it takes the mail
 * (without the parameter). 0 to go on, -1 when the session moved on.
 */
static int
dlv_requiretls_check(struct dlv_session *s)
{
	const struct dlv_conn *c = s->conn;
	const char *why;

	if (!(s->job->env->flags & ENV_F_REQUIRETLS) ||
	    s->job->route.transport == CONF_XPORT_LMTP_UNIX)
		return 0;
	if (c->ssl == NULL)
		why = "no TLS";
	else if (c->tls_auth != DLV_TLSAUTH_DANE &&
	    c->tls_auth != DLV_TLSAUTH_STS)
		why = "TLS not authenticated by DANE or MTA-STS";
	else if (!(c->ehlo.ext & SMTP_EXT_REQUIRETLS))
		why = "REQUIRETLS not offered";
	else
		return 0;
	{
		char text[400];
		snprintf(text, sizeof(text), "REQUIRETLS support required: "
		    "%s: %s", c->relay, why);
		dlv_tx_refuse_hop(s, "5.7.30", text);
	}
	return -1;
}
