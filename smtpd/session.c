/*
 * session.c - the SMTP server session (RFC 5321, with RFC 1869 EHLO, 1870
 * SIZE, 2920 PIPELINING, 2034 ENHANCEDSTATUSCODES, 6152 8BITMIME, 3030
 * CHUNKING).
 *
 * Runs on one session loop thread; a session is never touched by another
 * thread. Owns: its bufferevent, its transaction (envelope + spool) until
 * the message is handed to the committer, the SASL state from AUTH to its
 * outcome only (an idle session stays small), a reference on the conf it
 * started with. Never blocks (spool writes go to memory or the page cache)
 * and never frees itself inside a handler: handlers set SMTPD_F_CLOSING and
 * only the top of a bufferevent callback calls smtpd_session_free().
 *
 * Untrusted input: every byte from the client. Command lines are cut at LF
 * (bounded by SMTP_CMD_MAX before the buffer may grow further) and parsed by
 * the pure smtp_parse_*(); DATA bytes go through the pure data_filter, the
 * only place that decides where a message ends (only <CRLF>.<CRLF>).
 * BDAT chunks are counted here (the size comes from the parsed command)
 * and go through the same filter in raw mode: no dot-stuffing, the same
 * bare CR/LF, line-length and size policy; a refused chunk is still read
 * and dropped, so its bytes never run as commands.
 * The header section is scanned (hdr_scan) on the way: a message that
 * arrives with max-hops trace fields or more is a mail loop and is refused
 * at the end of data (RFC 5321 6.3). Mail to be DKIM-signed is hashed on
 * the way too, and signed at the end of data (session_dkim.c).
 *
 * Pipelining: the read callback consumes every complete command in the
 * input buffer and appends the replies to the output buffer, written with
 * one writev when the callback returns, so a pipelined group costs one
 * write. While a message is being committed (or credentials checked, or
 * replies wait for a client that does not read them), commands are not
 * processed: input waits in the buffer, and reading from the socket stops
 * once it holds 256 KiB (the read high-watermark; on a plain socket the
 * session's own read event, smtpd_read_watch). (The bufferevent's EV_READ
 * is never toggled on a live TLS session: on a STARTTLS filter bufferevent,
 * libevent 2.1 can report a false EOF when reading is re-enabled.)
 *
 * Time limits: idle-timeout (any byte resets it), command-deadline per
 * request (a command line, or the DATA phase stretched by data-min-rate),
 * session-timeout for the whole session. On relay listeners greet-delay
 * holds the 220 back, and a client that talks before it is refused.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "tern/dkim.h"
#include "tern/hdr_scan.h"
#include "tern/idn.h"
#include "tern/log.h"
#include "tern/metrics.h"
#include "tern/util.h"
#include "smtpd_int.h"

#define SMTPD_F_EHLO     0x01u   /* EHLO (not HELO): extensions in use */
#define SMTPD_F_TLS      0x02u
#define SMTPD_F_AUTHED   0x04u
#define SMTPD_F_CLOSING  0x08u   /* close once the output has drained */
#define SMTPD_F_TRUSTED  0x10u   /* client in trusted-networks */
#define SMTPD_F_DISCARD  0x20u   /* discarding an overlong command line */
#define SMTPD_F_OUTFULL  0x40u   /* reading paused until replies drain */
#define SMTPD_F_TLS_PENDING 0x80u /* handshake not yet logged */
#define SMTPD_F_AUTHING  0x100u  /* SASL exchange: lines go to sasl_step() */
#define SMTPD_F_AUTHCHECK 0x200u /* credentials with the auth pool */
#define SMTPD_F_TLS_SHUT 0x400u  /* close_notify sent (or not to be sent) */
#define SMTPD_F_GREETING 0x800u  /* greet-delay: 220 not sent yet */
#define SMTPD_F_WCORK    0x1000u /* plain socket, EV_WRITE off, output empty */
#define SMTPD_F_BATCH    0x2000u /* replies wait for smtpd_batch_end() */
#define SMTPD_F_RSTOP    0x4000u /* own read event off: SMTPD_IN_MAX waits */
#define SMTPD_F_RFULL    0x8000u /* the last own read filled its block */
#define SMTPD_F_TBATCH   0x10000u /* TLS: the batch's replies go to tout */
#define SMTPD_F_UKICK    0x20000u /* STARTTLS: smtpd_uflush_cb is active */

/* Stop reading from the socket while this much input waits. */
#define SMTPD_IN_MAX     (256 * 1024)

/* Stop reading while this much reply text waits for a client that doesn't read. */
#define SMTPD_OUT_MAX    (64 * 1024)

#define CMD_NEED_HELO     0x1u
#define CMD_NO_ARG        0x2u
#define CMD_LAST_IN_GROUP 0x4u

struct smtpd_tx {
	struct envelope *env;         /* owned until submitted */
	struct spool *body;           /* owned until submitted */
	struct data_filter df;
	uint64_t declared_size;
	int write_errno;              /* first spool write error, 0 if none */
	char from[SMTP_PATH_MAX * 4 + 4]; /* escaped sender, for the log */
	size_t nrcpt;                 /* for the log, once env has moved */
	uint64_t size;
	int too_big;                  /* real size over max-message-size */
	/* submission fix-ups (RFC 6409 8): the header section is held back */
	int fixup;                    /* still in the header section */
	struct hdr_scan hs;           /* every message: fix-ups and hop count */
	char *hbuf;                   /* owned: header bytes held back */
	size_t hlen, hcap;
	char msgid_host[SMTP_DOMAIN_MAX + 1];
	/* BDAT (RFC 3030) */
	int chunking;                 /* the body comes in BDAT chunks */
	uint64_t bdat_left;           /* octets of the current chunk to read */
	uint64_t bdat_size;           /* the current chunk's size */
	int bdat_last;                /* the current chunk is the LAST */
	struct dkim_canon *dkim;      /* owned or NULL: may be DKIM-signed */
};

/* Headers larger than this go through unchanged (no fix-ups). */
#define SMTPD_FIXUP_MAX (64 * 1024)

struct smtpd_session {
	uint64_t id;
	struct smtpd_session *hnext;  /* loop hash chain */
	struct smtpd_loop *loop;      /* borrowed */
	struct smtpd_server *srv;     /* borrowed */
	struct conf *conf;            /* owned reference */
	const struct conf_listen *lc; /* borrowed: inside conf */
	struct bufferevent *bev;      /* owned */
	struct evbuffer *tout;        /* owned: a TLS batch's replies, or NULL */
	struct event *rev;            /* owned or NULL: own read, plain socket */
	struct event *uflush;         /* owned or NULL: STARTTLS: own socket writes */
	struct evbuffer_cb_entry *ucb; /* its watch on the socket's output, or NULL */
	struct event *lifetime;       /* owned: session-timeout timer */
	struct event *deadline;       /* owned or NULL: command-deadline timer */
	struct event *greet;          /* owned or NULL: greet-delay timer */
	uint64_t req_start_us;        /* monotonic: began waiting for a request */
	uint64_t req_bytes;           /* DATA bytes read since req_start_us */
	struct sockaddr_storage peer;
	char peer_str[64];
	enum smtpd_state state;
	unsigned flags;
	unsigned nerrors;
	char helo[SMTP_DOMAIN_MAX + 1];
	struct smtpd_tx *tx;          /* owned; NULL outside a transaction */
	char qid[QID_STRLEN + 1];     /* id of the transaction in progress */
	uint64_t nmessages;
	struct sasl *sasl;            /* owned or NULL: AUTH exchange in progress */
	char *auth_user;              /* owned or NULL: authenticated login */
	struct event *auth_delay;     /* owned or NULL: slowed 535 reply */
	struct event *closer;         /* owned or NULL: waits for TLS output to drain */
	unsigned close_waits;
	uint64_t bdat_discard;        /* octets of refused BDAT chunks to drop */
	uid_t local_uid;              /* local-socket: the peer's SO_PEERCRED uid */
	char local_user[48];          /* local-socket: its login name */
};

struct smtpd_cmd {
	enum smtp_verb verb;
	int (*fn)(struct smtpd_session *, const struct smtp_cmd *);
	unsigned flags;
};

static void smtpd_session_free(struct smtpd_session *s);
static void smtpd_session_process(struct smtpd_session *s);
static void smtpd_request_begin(struct smtpd_session *s);
static int smtpd_session_busy(const struct smtpd_session *s);
static void smtpd_early_talker(struct smtpd_session *s, size_t nbytes);

static const char *smtpd_state_names[] = {
	"CONNECTED", "READY", "MAIL", "RCPT", "DATA", "COMMIT", "QUIT",
};

const char *
smtpd_strstate(enum smtpd_state st)
{
	return st < sizeof(smtpd_state_names) / sizeof(smtpd_state_names[0]) ?
	    smtpd_state_names[st] : "?";
}

/*
 * The only writer of s->state. Allowed moves: any state may go to QUIT; a
 * transaction may be aborted back to READY (RSET, HELO, errors).
 */
static void
smtpd_enter(struct smtpd_session *s, enum smtpd_state to)
{
	static const unsigned allowed[] = {
		[SMTPD_S_CONNECTED] = 1u << SMTPD_S_READY,
		[SMTPD_S_READY] = 1u << SMTPD_S_READY | 1u << SMTPD_S_MAIL |
		    1u << SMTPD_S_CONNECTED /* STARTTLS */,
		[SMTPD_S_MAIL] = 1u << SMTPD_S_READY | 1u << SMTPD_S_RCPT,
		[SMTPD_S_RCPT] = 1u << SMTPD_S_READY | 1u << SMTPD_S_RCPT |
		    1u << SMTPD_S_DATA,
		[SMTPD_S_DATA] = 1u << SMTPD_S_READY | 1u << SMTPD_S_COMMIT |
		    1u << SMTPD_S_RCPT /* a BDAT chunk read, not LAST */,
		[SMTPD_S_COMMIT] = 1u << SMTPD_S_READY,
		[SMTPD_S_QUIT] = 0,
	};
	if (to != SMTPD_S_QUIT && !(allowed[s->state] & (1u << to)))
		panic("smtpd_enter: bad transition %s -> %s",
		    smtpd_strstate(s->state), smtpd_strstate(to));
	log_trace(TRACE_SMTP, "session=%016llx %s -> %s",
	    (unsigned long long)s->id, smtpd_strstate(s->state),
	    smtpd_strstate(to));
	s->state = to;
}

/*
 * The one function that writes a reply. Logs every 4xx/5xx once; a 421
 * closes the session once the output has drained.
 */
/*
 * Reply batches (plain sockets; session_io.c says why). Between
 * smtpd_batch_begin() and smtpd_batch_end() replies collect in the output
 * buffer with the bufferevent's EV_WRITE off (SMTPD_F_WCORK), so adding
 * them arms nothing; the end writes them with one writev and hands
 * libevent only what the socket did not take. EV_WRITE stays off while the
 * output is empty: a reply made outside a batch (a timer, an auth result)
 * turns it back on through smtpd_out() first, and libevent sends it.
 * On an established TLS session a batch's replies collect in s->tout
 * instead (SMTPD_F_TBATCH) and reach the TLS bufferevent in one add at the
 * end: one TLS record rather than one per reply.
 */
static void smtpd_uflush_kick(struct smtpd_session *s);

static void
smtpd_uncork(struct smtpd_session *s)
{
	struct bufferevent *b = bufferevent_get_underlying(s->bev);

	s->flags &= ~SMTPD_F_WCORK;
	if (b != NULL && s->uflush != NULL)
		smtpd_uflush_kick(s);   /* STARTTLS: the session writes the socket */
	else
		bufferevent_enable(b != NULL ? b : s->bev, EV_WRITE);  /* STARTTLS: the socket's */
}

/* The output buffer, for a reply. */
static struct evbuffer *
smtpd_out(struct smtpd_session *s)
{
	if ((s->flags & (SMTPD_F_WCORK | SMTPD_F_BATCH)) == SMTPD_F_WCORK)
		smtpd_uncork(s);
	if (s->flags & SMTPD_F_TBATCH)
		return s->tout;
	return bufferevent_get_output(s->bev);
}

/* What waits to be written: the output, and a TLS batch's replies. */
static size_t
smtpd_out_len(struct smtpd_session *s)
{
	size_t n = evbuffer_get_length(bufferevent_get_output(s->bev));
	return (s->flags & SMTPD_F_TBATCH) ? n + evbuffer_get_length(s->tout) : n;
}

/*
 * A TLS batch's replies go to the TLS bufferevent in one add: libevent's
 * filter seals what each add brings into a record of its own and hands it
 * to the socket, so three pipelined replies were three records.
 */
static void
smtpd_tbatch_flush(struct smtpd_session *s)
{
	if (!(s->flags & SMTPD_F_TBATCH))
		return;
	s->flags &= ~SMTPD_F_TBATCH;
	if (evbuffer_get_length(s->tout) > 0)
		evbuffer_add_buffer(bufferevent_get_output(s->bev), s->tout);
}

static void
smtpd_batch_begin(struct smtpd_session *s)
{
	s->flags |= SMTPD_F_BATCH;
	if (!(s->flags & SMTPD_F_WCORK) && smtpd_io_plain(s->bev) &&
	    evbuffer_get_length(bufferevent_get_output(s->bev)) == 0) {
		/* the write event is not pending: no system call */
		bufferevent_disable(s->bev, EV_WRITE);
		s->flags |= SMTPD_F_WCORK;
	} else if ((s->flags & (SMTPD_F_TLS | SMTPD_F_TLS_PENDING)) ==
	    SMTPD_F_TLS && !smtpd_io_plain(s->bev) &&
	    (s->tout != NULL || (s->tout = evbuffer_new()) != NULL)) {
		s->flags |= SMTPD_F_TBATCH;
	}
}

static void
smtpd_batch_end(struct smtpd_session *s)
{
	s->flags &= ~SMTPD_F_BATCH;
	smtpd_tbatch_flush(s);
	if (!(s->flags & SMTPD_F_WCORK))
		return;
	if (!smtpd_io_plain(s->bev) || !smtpd_io_flush(s->bev))
		smtpd_uncork(s);   /* STARTTLS began, or the socket is full */
}

/*
 * A batch's replies are over SMTPD_OUT_MAX: write them now. 1 if the
 * socket took them all (go on); 0 if not, with the write event on, so the
 * write callback resumes the session once they are out. (Waiting for
 * that callback when nothing is left to write would wait forever.)
 */
static int
smtpd_batch_drain(struct smtpd_session *s)
{
	smtpd_tbatch_flush(s);  /* TLS: out they go; the write callback resumes */
	if ((s->flags & (SMTPD_F_WCORK | SMTPD_F_BATCH)) !=
	    (SMTPD_F_WCORK | SMTPD_F_BATCH) || !smtpd_io_plain(s->bev))
		return 0;
	if (smtpd_io_flush(s->bev))
		return 1;
	smtpd_uncork(s);
	return 0;
}

static void smtpd_reply(struct smtpd_session *s, int code, const char *enh,
    const char *fmt, ...) TERN_PRINTF(4, 5);

static void
smtpd_reply(struct smtpd_session *s, int code, const char *enh,
    const char *fmt, ...)
{
	char text[512];
	va_list ap;

	char line[sizeof(text) + 32];   /* code, enhanced code (<= 11), CRLF */
	int n;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	/* formatted once, added once (over TLS an add is a record) */
	if (enh != NULL)
		n = snprintf(line, sizeof(line), "%d %s %s\r\n", code, enh, text);
	else
		n = snprintf(line, sizeof(line), "%d %s\r\n", code, text);
	if (n > 0)              /* always fits: text is at most 511 octets */
		evbuffer_add(smtpd_out(s), line, (size_t)n);
	if (code >= 400)
		log_info("session=%016llx client=%s reply=\"%d %s %s\"",
		    (unsigned long long)s->id, s->peer_str, code,
		    enh ? enh : "", text);
	if (code == 421) {
		s->flags |= SMTPD_F_CLOSING;
		smtpd_enter(s, SMTPD_S_QUIT);
	}
}

/* Count a client error; past max-errors the session ends with 421. */
static void
smtpd_error(struct smtpd_session *s)
{
	if (++s->nerrors >= s->conf->max_errors && !(s->flags & SMTPD_F_CLOSING))
		smtpd_reply(s, 421, "4.7.0", "%s Too many errors, closing connection",
		    s->conf->hostname);
}

/* ---- transactions ---- */

static void
smtpd_tx_free(struct smtpd_session *s)
{
	if (s->tx == NULL)
		return;
	envelope_free(s->tx->env);
	spool_free(s->tx->body);
	free(s->tx->hbuf);
	smtpd_dkim_free(s->tx->dkim);
	free(s->tx);
	s->tx = NULL;
	s->qid[0] = '\0';
}

/* Abort any transaction and return to READY (RSET, HELO/EHLO). */
static void
smtpd_tx_reset(struct smtpd_session *s)
{
	smtpd_tx_free(s);
	if (s->state != SMTPD_S_CONNECTED && s->state != SMTPD_S_READY)
		smtpd_enter(s, SMTPD_S_READY);
}

/* ---- commands ---- */

static int
smtpd_starttls_offered(const struct smtpd_session *s)
{
	return s->lc->tls == CONF_TLS_STARTTLS && !(s->flags & SMTPD_F_TLS);
}

/* AUTH only on submission listeners, and never before TLS (RFC 4954 4). */
static int
smtpd_auth_offered(const struct smtpd_session *s)
{
	return s->lc->mode == CONF_LISTEN_SUBMISSION &&
	    (s->flags & SMTPD_F_TLS) && !(s->flags & SMTPD_F_AUTHED);
}

static int
smtpd_cmd_helo(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
	if (cmd->arg_len == 0 || smtp_parse_helo(cmd->arg, cmd->arg_len) !=
	    SMTP_PARSE_OK) {
		smtpd_reply(s, 501, "5.5.4", "Syntax: %s hostname",
		    cmd->verb == SMTP_V_EHLO ? "EHLO" : "HELO");
		return -1;
	}
	smtpd_tx_reset(s);
	size_t n = cmd->arg_len < sizeof(s->helo) - 1 ? cmd->arg_len :
	    sizeof(s->helo) - 1;
	memcpy(s->helo, cmd->arg, n);
	s->helo[n] = '\0';
	if (s->state == SMTPD_S_CONNECTED)
		smtpd_enter(s, SMTPD_S_READY);

	if (cmd->verb == SMTP_V_HELO) {
		s->flags &= ~SMTPD_F_EHLO;
		smtpd_reply(s, 250, NULL, "%s", s->conf->hostname);
		return 0;
	}
	s->flags |= SMTPD_F_EHLO;
	/*
	 * One add for the whole reply: over TLS every add to the output is
	 * a TLS record of its own (libevent's filter writes as it is added).
	 */
	char r[1024];           /* a host name is at most 255 octets */
	int k = snprintf(r, sizeof(r), "250-%s\r\n250-PIPELINING\r\n"
	    "250-SIZE %llu\r\n250-8BITMIME\r\n250-ENHANCEDSTATUSCODES\r\n"
	    "250-DSN\r\n250-CHUNKING\r\n250-SMTPUTF8\r\n%s%s%s250 HELP\r\n",
	    s->conf->hostname, (unsigned long long)s->conf->max_message_size,
	    (s->flags & SMTPD_F_TLS) ?      /* RFC 8689 2: only over TLS */
	    "250-REQUIRETLS\r\n" : "",
	    smtpd_starttls_offered(s) ? "250-STARTTLS\r\n" : "",
	    smtpd_auth_offered(s) ? "250-AUTH PLAIN LOGIN\r\n" : "");
	if (k > 0)
		evbuffer_add(smtpd_out(s), r, (size_t)k);
	return 0;
}

/*
 * SMTPUTF8 (RFC 6531): a mailbox with non-ASCII octets needs the SMTPUTF8
 * parameter of this transaction (553 5.6.7 without it); its domain is
 * kept in A-label form from here on (idn.h), so relay-domains, routes,
 * DNS and the scheduler see one name whichever form the client wrote.
 * 0, or -1 after a reply.
 */
static int
smtpd_mailbox_utf8(struct smtpd_session *s, struct smtp_mailbox *mb,
    int smtputf8, const char *what)
{
	char *a;
	size_t n;

	if (!(mb->flags & SMTP_MB_UTF8))
		return 0;
	if (!smtputf8) {
		smtpd_reply(s, 553, "5.6.7", "Non-ASCII %s address needs the "
		    "SMTPUTF8 parameter", what);
		return -1;
	}
	if ((a = idn_addr_to_ascii(mb->addr)) == NULL ||
	    (n = strlen(a)) > SMTP_PATH_MAX) {
		free(a);
		smtpd_reply(s, 553, what[0] == 's' ? "5.1.7" : "5.1.3", "Bad %s "
		    "address: the domain is not a valid internationalized "
		    "domain name", what);
		return -1;
	}
	memcpy(mb->addr, a, n + 1);
	mb->len = n;
	mb->domain_off = (size_t)(strrchr(mb->addr, '@') + 1 - mb->addr);
	free(a);
	return 0;
}

/* Submission listeners need an authenticated client (RFC 6409 4.3). */
static int
smtpd_may_submit(const struct smtpd_session *s)
{
	if (s->lc->mode != CONF_LISTEN_SUBMISSION)
		return 1;
	return (s->flags & SMTPD_F_AUTHED) != 0;
}

/*
 * Local submission (local.c): root may name any sender; another user gets
 * user@hostname unless local-senders allows the one given (the uid comes
 * from the kernel, never from the client).
 */
static void
smtpd_local_sender(const struct smtpd_session *s, struct smtp_mailbox *mb)
{
	char esc[SMTP_PATH_MAX * 4 + 4];

	if (s->local_uid == 0 ||
	    conf_local_sender_allowed(s->conf, s->local_user, mb->addr))
		return;
	log_escape(esc, sizeof(esc), mb->addr, mb->len);
	snprintf(mb->addr, sizeof(mb->addr), "%s@%s", s->local_user,
	    s->conf->hostname);
	mb->len = strlen(mb->addr);
	log_info("session=%016llx client=%s from=<%s> rewritten=<%s> "
	    "reason=local-sender", (unsigned long long)s->id, s->peer_str, esc,
	    mb->addr);
}

static int
smtpd_cmd_mail(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
	struct smtp_mailbox mb;
	struct smtp_mail_params p;
	enum smtp_parse_status st;

	if (s->state != SMTPD_S_READY) {
		smtpd_reply(s, 503, "5.5.1", "Error: nested MAIL command");
		return -1;
	}
	if (!smtpd_may_submit(s)) {
		METRIC_INC(messages_refused_total[METRICS_REF_AUTH]);
		smtpd_reply(s, 530, "5.7.0", "Authentication required");
		return -1;
	}
	/* a disk the queue cannot write to: say so now, not after the DATA */
	if (queue_space_refuse(s->srv->queue) != 0) {
		METRIC_INC(messages_refused_total[METRICS_REF_QUEUE]);
		log_info("session=%016llx client=%s status=refused "
		    "reason=queue-disk-full", (unsigned long long)s->id,
		    s->peer_str);
		smtpd_reply(s, 452, "4.3.1", "Insufficient system storage");
		return -1;
	}
	st = smtp_parse_mail_from(cmd->arg, cmd->arg_len, &mb, &p);
	switch (st) {
	case SMTP_PARSE_OK:
		break;
	case SMTP_PARSE_BAD_PARAM:
		smtpd_reply(s, 555, "5.5.4", "Unsupported or malformed MAIL parameter");
		return -1;
	case SMTP_PARSE_TOO_LONG:
		smtpd_reply(s, 501, "5.1.7", "Sender address too long");
		return -1;
	case SMTP_PARSE_BAD_UTF8:
		smtpd_reply(s, 501, "5.6.7", "Malformed UTF-8 in the sender "
		    "address");
		return -1;
	default:
		smtpd_reply(s, 501, "5.1.7", "Bad sender address syntax");
		return -1;
	}
	if (!(s->flags & SMTPD_F_EHLO) && (p.has_size || p.body != SMTP_BODY_7BIT
	    || p.ret || p.envid[0] || p.auth[0] || p.smtputf8 ||
	    p.requiretls)) {
		smtpd_reply(s, 555, "5.5.4", "MAIL parameters need EHLO");
		return -1;
	}
	if (p.body == SMTP_BODY_BINARYMIME) {
		smtpd_reply(s, 555, "5.5.4", "Unsupported MAIL parameter");
		return -1;
	}
	if (p.requiretls && !(s->flags & SMTPD_F_TLS)) {
		/* RFC 8689 4.1: REQUIRETLS is offered only over TLS */
		smtpd_reply(s, 530, "5.7.10", "REQUIRETLS needs a TLS session");
		return -1;
	}
	if (smtpd_mailbox_utf8(s, &mb, p.smtputf8, "sender") < 0)
		return -1;
	if (s->lc->mode == CONF_LISTEN_SUBMISSION &&
	    !conf_sender_allowed(s->conf, s->auth_user, mb.addr)) {
		char esc[SMTP_PATH_MAX * 4 + 4];
		log_escape(esc, sizeof(esc), mb.addr, mb.len);
		METRIC_INC(messages_refused_total[METRICS_REF_SENDER]);
		log_info("session=%016llx client=%s user=%s from=<%s> "
		    "status=refused reason=sender-not-owned",
		    (unsigned long long)s->id, s->peer_str, s->auth_user, esc);
		smtpd_reply(s, 553, "5.7.1", "<%s>: Sender address not owned by "
		    "user %s", esc, s->auth_user);
		return -1;
	}
	if (s->lc->mode == CONF_LISTEN_LOCAL)
		smtpd_local_sender(s, &mb);
	if (p.has_size && p.size > s->conf->max_message_size) {
		METRIC_INC(messages_refused_total[METRICS_REF_SIZE]);
		smtpd_reply(s, 552, "5.3.4", "Message size exceeds fixed limit of "
		    "%llu bytes", (unsigned long long)s->conf->max_message_size);
		return -1;
	}

	/* bounded bookkeeping (SMTP limits): the x* allocators (util.h) */
	struct smtpd_tx *tx = xcalloc(1, sizeof(*tx));
	struct envelope *env = envelope_new();
	env->id = qid_new();
	env->sender = xstrdup(mb.addr);
	env->client_addr = xstrdup(s->peer_str);
	env->client_helo = xstrdup(s->helo);
	env->listener = xstrdup(s->lc->spec);
	if (s->auth_user != NULL)
		env->auth_user = xstrdup(s->auth_user);
	if (p.envid[0])
		env->envid = xstrdup(p.envid);
	if (p.body == SMTP_BODY_8BITMIME)
		env->flags |= ENV_F_8BIT;
	if (p.smtputf8)
		env->flags |= ENV_F_SMTPUTF8;
	if (p.requiretls)
		env->flags |= ENV_F_REQUIRETLS;
	if (p.ret == 'H')
		env->flags |= ENV_F_RET_HDRS;
	else if (p.ret == 'F')
		env->flags |= ENV_F_RET_FULL;
	tx->env = env;
	tx->declared_size = p.size;
	s->tx = tx;
	qid_format(env->id, s->qid);
	smtpd_enter(s, SMTPD_S_MAIL);
	smtpd_reply(s, 250, "2.1.0", "Ok");
	return 0;
}

/* Relay policy (RFC 5321 3.6, 7.1): decided on the real domain only. */
static int
smtpd_may_relay_to(const struct smtpd_session *s, const struct smtp_mailbox *mb)
{
	if (s->flags & (SMTPD_F_TRUSTED | SMTPD_F_AUTHED))
		return 1;
	if (s->lc->mode == CONF_LISTEN_SUBMISSION)
		return 0;
	if (mb->flags & (SMTP_MB_LITERAL | SMTP_MB_POSTMASTER))
		return 0;
	return conf_is_relay_domain(s->conf, mb->addr + mb->domain_off,
	    mb->len - mb->domain_off);
}

/*
 * Sender-specified routing (%, !, quoted @, source routes) towards a relay
 * domain, from a client neither trusted nor authenticated: the next hop
 * might relay it further (RFC 5321 3.6.1, 7.1), so it is refused unless
 * allow-untrusted-routing says otherwise.
 */
static int
smtpd_routing_refused(const struct smtpd_session *s,
    const struct smtp_mailbox *mb)
{
	if (s->flags & (SMTPD_F_TRUSTED | SMTPD_F_AUTHED))
		return 0;
	if (s->conf->allow_untrusted_routing)
		return 0;
	return smtp_mailbox_routing(mb) != 0;
}

/*
 * RCPT TO:<postmaster> (no domain, any case) is accepted from anyone (RFC
 * 5321 4.5.1). tern has no local mailboxes: the recipient becomes the
 * postmaster address (postmaster directive, default postmaster@hostname),
 * and the original is kept as ORCPT for DSNs (RFC 3461 4.2).
 */
static void
smtpd_rcpt_postmaster(const struct smtpd_session *s, struct smtp_mailbox *mb,
    struct smtp_rcpt_params *p)
{
	const char *pm = s->conf->postmaster;

	if (pm != NULL)
		snprintf(mb->addr, sizeof(mb->addr), "%s", pm);
	else
		snprintf(mb->addr, sizeof(mb->addr), "postmaster@%s",
		    s->conf->hostname);
	mb->len = strlen(mb->addr);
	const char *at = strrchr(mb->addr, '@');
	mb->domain_off = at != NULL ? (size_t)(at - mb->addr) + 1 : mb->len;
	if (p->orcpt[0] == '\0')
		snprintf(p->orcpt, sizeof(p->orcpt), "rfc822;postmaster");
	log_info("id=%s client=%s to=<postmaster> rewritten=<%s>", s->qid,
	    s->peer_str, mb->addr);
}

static int
smtpd_cmd_rcpt(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
	struct smtp_mailbox mb;
	struct smtp_rcpt_params p;
	enum smtp_parse_status st;
	char esc[SMTP_PATH_MAX * 4 + 4];

	if (s->state != SMTPD_S_MAIL && s->state != SMTPD_S_RCPT) {
		smtpd_reply(s, 503, "5.5.1", "Error: need MAIL command");
		return -1;
	}
	if (s->tx->chunking) {
		smtpd_reply(s, 503, "5.5.1", "Error: RCPT after BDAT");
		return -1;
	}
	st = smtp_parse_rcpt_to(cmd->arg, cmd->arg_len, &mb, &p);
	switch (st) {
	case SMTP_PARSE_OK:
		break;
	case SMTP_PARSE_BAD_PARAM:
		smtpd_reply(s, 555, "5.5.4", "Unsupported or malformed RCPT parameter");
		return -1;
	case SMTP_PARSE_TOO_LONG:
		smtpd_reply(s, 501, "5.1.3", "Recipient address too long");
		return -1;
	case SMTP_PARSE_BAD_UTF8:
		smtpd_reply(s, 501, "5.6.7", "Malformed UTF-8 in the recipient "
		    "address");
		return -1;
	default:
		smtpd_reply(s, 501, "5.1.3", "Bad recipient address syntax");
		return -1;
	}
	if (smtpd_mailbox_utf8(s, &mb, (s->tx->env->flags & ENV_F_SMTPUTF8) != 0,
	    "recipient") < 0)
		return -1;
	if (!(s->flags & SMTPD_F_EHLO) && (p.notify || p.orcpt[0])) {
		smtpd_reply(s, 555, "5.5.4", "RCPT parameters need EHLO");
		return -1;
	}
	if (mb.flags & SMTP_MB_POSTMASTER)
		smtpd_rcpt_postmaster(s, &mb, &p);
	else if (!smtpd_may_relay_to(s, &mb)) {
		log_escape(esc, sizeof(esc), mb.addr, mb.len);
		METRIC_INC(messages_refused_total[METRICS_REF_RELAY]);
		log_info("id=%s client=%s to=<%s> status=refused reason=relay-denied",
		    s->qid, s->peer_str, esc);
		smtpd_reply(s, 554, "5.7.1", "<%s>: Relay access denied", esc);
		return -1;
	} else if (smtpd_routing_refused(s, &mb)) {
		log_escape(esc, sizeof(esc), mb.addr, mb.len);
		METRIC_INC(messages_refused_total[METRICS_REF_RELAY]);
		log_info("id=%s client=%s to=<%s> status=refused "
		    "reason=sender-routing", s->qid, s->peer_str, esc);
		smtpd_reply(s, 554, "5.7.1", "<%s>: Relay access denied: "
		    "sender-specified routing", esc);
		return -1;
	}
	struct envelope *env = s->tx->env;
	for (size_t i = 0; i < env->nrcpt; i++) {
		if (strcmp(env->rcpts[i].addr, mb.addr) == 0) {
			/* duplicate: accept, deliver once */
			smtpd_reply(s, 250, "2.1.5", "Ok");
			return 0;
		}
	}
	if (env->nrcpt >= s->conf->max_recipients) {
		METRIC_INC(messages_refused_total[METRICS_REF_LIMIT]);
		smtpd_reply(s, 452, "4.5.3", "Error: too many recipients");
		return 0;   /* not a client error: RFC 5321 4.5.3.1.10 */
	}
	envelope_add_rcpt(env, mb.addr, p.orcpt[0] ? p.orcpt : NULL, p.notify);
	if (s->state == SMTPD_S_MAIL)
		smtpd_enter(s, SMTPD_S_RCPT);
	smtpd_reply(s, 250, "2.1.5", "Ok");
	return 0;
}

/* "with" protocol of the Received header (RFC 3848). */
static const char *
smtpd_proto(const struct smtpd_session *s)
{
	static const char *names[] = { "ESMTP", "ESMTPA", "ESMTPS", "ESMTPSA" };
	if (!(s->flags & SMTPD_F_EHLO))
		return "SMTP";
	return names[((s->flags & SMTPD_F_TLS) ? 2 : 0) +
	    ((s->flags & SMTPD_F_AUTHED) ? 1 : 0)];
}

/* RFC 5322 date, e.g. "Sat, 21 Nov 2026 16:40:48 +0000". */
static void
smtpd_rfc5322_date(char *buf, size_t len)
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(buf, len, "%a, %d %b %Y %H:%M:%S +0000", &tm);
}

static void
smtpd_tx_write(struct smtpd_tx *tx, const char *p, size_t len)
{
	if (tx->too_big || tx->write_errno || len == 0)
		return;
	if (spool_size(tx->body) + len > tx->declared_size) {
		/* declared_size holds the limit while streaming, see cmd_data */
		tx->too_big = 1;
		return;
	}
	if (spool_write(tx->body, p, len) < 0)
		tx->write_errno = errno ? errno : EIO;
	else if (tx->dkim != NULL)     /* DKIM: hashed as it streams */
		dkim_canon_feed(tx->dkim, p, len);
}

/*
 * Write the held-back header section, adding Date: and Message-ID: where
 * the client left them out (RFC 6409 8.1, 8.3). sep: the empty line that
 * ended the section is the last sep bytes of hbuf (0 when the message has
 * no body), so the new fields go before it.
 */
static void
smtpd_fixup_flush(struct smtpd_tx *tx, size_t sep)
{
	char add[512], date[64];
	size_t n = 0;

	tx->fixup = 0;
	if (!(tx->hs.flags & HDR_HAVE_DATE)) {
		smtpd_rfc5322_date(date, sizeof(date));
		n += (size_t)snprintf(add + n, sizeof(add) - n, "Date: %s\r\n", date);
	}
	if (!(tx->hs.flags & HDR_HAVE_MSGID)) {
		char qid[QID_STRLEN + 1];
		qid_format(tx->env->id, qid);
		n += (size_t)snprintf(add + n, sizeof(add) - n,
		    "Message-ID: <%s.%08x@%s>\r\n", qid, (unsigned)random(),
		    tx->msgid_host);
	}
	if (n >= sizeof(add))
		n = 0;
	smtpd_tx_write(tx, tx->hbuf, tx->hlen - sep);
	smtpd_tx_write(tx, add, n);
	smtpd_tx_write(tx, tx->hbuf + tx->hlen - sep, sep);
	free(tx->hbuf);
	tx->hbuf = NULL;
	tx->hlen = tx->hcap = 0;
}

static void
smtpd_data_out(void *arg, const char *p, size_t len)
{
	struct smtpd_tx *tx = arg;

	if (tx->fixup) {
		size_t n = hdr_scan_feed(&tx->hs, p, len);
		if (tx->hlen + n > SMTPD_FIXUP_MAX) {
			/* unusually large header: pass it through untouched */
			tx->fixup = 0;
			smtpd_tx_write(tx, tx->hbuf, tx->hlen);
			free(tx->hbuf);
			tx->hbuf = NULL;
			tx->hlen = tx->hcap = 0;
			smtpd_tx_write(tx, p, len);
			return;
		}
		if (tx->hlen + n > tx->hcap) {
			size_t cap = tx->hcap ? tx->hcap : 4096;
			while (cap < tx->hlen + n)
				cap *= 2;
			char *nb = realloc(tx->hbuf, cap);
			if (nb == NULL) {
				tx->write_errno = ENOMEM;
				return;
			}
			tx->hbuf = nb;
			tx->hcap = cap;
		}
		memcpy(tx->hbuf + tx->hlen, p, n);
		tx->hlen += n;
		if (!(tx->hs.flags & HDR_END))
			return;
		/* the empty line ending the header section: CRLF or LF */
		smtpd_fixup_flush(tx, tx->hlen >= 2 &&
		    tx->hbuf[tx->hlen - 2] == '\r' ? 2 : 1);
		p += n;
		len -= n;
	} else if (!(tx->hs.flags & HDR_END))
		(void)hdr_scan_feed(&tx->hs, p, len);   /* trace fields: hops */
	smtpd_tx_write(tx, p, len);
}

/*
 * The body begins (DATA, or the first BDAT chunk): the spool, our
 * Received: field, the size budget, the stream filter (raw: BDAT), the
 * header scan and the submission fix-ups.
 */
static void
smtpd_tx_body_begin(struct smtpd_session *s, int raw)
{
	char hdr[2048], date[64], helo[SMTP_DOMAIN_MAX * 4 + 4];
	int n;
	struct smtpd_tx *tx = s->tx;

	tx->body = spool_new(s->srv->queue);

	/*
	 * Received: header (RFC 5321 4.4). The HELO name is printable ASCII by
	 * the parser's rules; escape anyway so a header can never be split.
	 */
	log_escape(helo, sizeof(helo), s->helo, strlen(s->helo));
	smtpd_rfc5322_date(date, sizeof(date));
	char authed[AUTH_USER_MAX * 4 + 40] = "";
	if (s->auth_user != NULL) {
		char u[AUTH_USER_MAX * 4 + 4];
		log_escape(u, sizeof(u), s->auth_user, strlen(s->auth_user));
		snprintf(authed, sizeof(authed), "\t(Authenticated sender: %s)\r\n", u);
	}
	if (s->lc->mode == CONF_LISTEN_LOCAL)
		n = snprintf(hdr, sizeof(hdr),
		    "Received: from local (uid %u, %s)\r\n"
		    "\tby %s (tern) with local id %s;\r\n"
		    "\t%s\r\n",
		    (unsigned)s->local_uid, s->local_user, s->conf->hostname,
		    s->qid, date);
	else if (tx->env->nrcpt == 1)   /* "for" names one path, or is left out */
		n = snprintf(hdr, sizeof(hdr),
		    "Received: from %s ([%s])\r\n%s"
		    "\tby %s (tern) with %s id %s\r\n"
		    "\tfor <%s>; %s\r\n",
		    helo, s->peer_str, authed, s->conf->hostname, smtpd_proto(s),
		    s->qid, tx->env->rcpts[0].addr, date);
	else
		n = snprintf(hdr, sizeof(hdr),
		    "Received: from %s ([%s])\r\n%s"
		    "\tby %s (tern) with %s id %s;\r\n"
		    "\t%s\r\n",
		    helo, s->peer_str, authed, s->conf->hostname, smtpd_proto(s),
		    s->qid, date);
	if (n < 0 || (size_t)n >= sizeof(hdr))
		n = snprintf(hdr, sizeof(hdr), "Received: by %s (tern) id %s; %s\r\n",
		    s->conf->hostname, s->qid, date);
	if (spool_write(tx->body, hdr, (size_t)n) < 0)
		tx->write_errno = errno ? errno : EIO;

	/* From here on declared_size is the byte budget for the stream. */
	tx->declared_size = s->conf->max_message_size + (uint64_t)n;
	data_filter_init(&tx->df, (s->conf->bare_newline == CONF_BARE_NORMALIZE ?
	    DATA_F_NORMALIZE : 0) | (raw ? DATA_F_RAW : 0));
	hdr_scan_init(&tx->hs);
	tx->dkim = smtpd_dkim_begin(s->conf, (s->flags & SMTPD_F_AUTHED) != 0,
	    s->lc->mode == CONF_LISTEN_LOCAL, (s->flags & SMTPD_F_TRUSTED) != 0);
	if (s->lc->mode != CONF_LISTEN_RELAY) {
		tx->fixup = 1;
		snprintf(tx->msgid_host, sizeof(tx->msgid_host), "%s",
		    s->conf->hostname);
	}
}

static int
smtpd_cmd_data(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
	if (s->state != SMTPD_S_RCPT) {
		smtpd_reply(s, 503, "5.5.1", s->state == SMTPD_S_MAIL ?
		    "Error: need RCPT command" : "Error: need MAIL command");
		return -1;
	}
	if (s->tx->chunking) {          /* RFC 3030 2: never both */
		smtpd_reply(s, 503, "5.5.1", "Error: DATA after BDAT");
		return -1;
	}
	smtpd_tx_body_begin(s, 0);
	smtpd_enter(s, SMTPD_S_DATA);
	smtpd_reply(s, 354, NULL, "End data with <CR><LF>.<CR><LF>");
	return 0;
}

/*
 * BDAT <size> [LAST] (RFC 3030): the next size octets are message bytes,
 * taken as they are (no dot-stuffing), whatever this command's answer: a
 * refused chunk is read and dropped (s->bdat_discard). Each chunk but the
 * LAST is answered once read; the LAST one after the commit, like DATA.
 */
static int
smtpd_cmd_bdat(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
	uint64_t size;
	int last;

	if (smtp_parse_bdat(cmd->arg, cmd->arg_len, &size, &last) !=
	    SMTP_PARSE_OK) {
		/* the chunk's length is unknown: the stream cannot be followed */
		smtpd_reply(s, 421, "4.5.4", "%s Error: BDAT needs <size> "
		    "[LAST]; closing connection", s->conf->hostname);
		return -1;
	}
	if (s->state != SMTPD_S_RCPT) {
		s->bdat_discard += size;
		smtpd_reply(s, 503, "5.5.1", s->state == SMTPD_S_MAIL ?
		    "Error: need RCPT command" : s->state == SMTPD_S_CONNECTED ?
		    "Error: send HELO/EHLO first" : "Error: need MAIL command");
		return -1;
	}
	if (!s->tx->chunking) {
		smtpd_tx_body_begin(s, 1);
		s->tx->chunking = 1;
	}
	if (size > s->tx->declared_size || spool_size(s->tx->body) +
	    s->tx->hlen > s->tx->declared_size - size) {
		/* over max-message-size already: refused before it is read */
		s->bdat_discard += size;
		METRIC_INC(messages_refused_total[METRICS_REF_SIZE]);
		log_info("id=%s client=%s status=refused reason=too-big",
		    s->qid, s->peer_str);
		smtpd_reply(s, 552, "5.3.4", "Message size exceeds fixed limit "
		    "of %llu bytes", (unsigned long long)s->conf->max_message_size);
		smtpd_tx_reset(s);
		return -1;
	}
	s->tx->bdat_left = s->tx->bdat_size = size;
	s->tx->bdat_last = last;
	smtpd_enter(s, SMTPD_S_DATA);
	return 0;
}

static int
smtpd_cmd_rset(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
	smtpd_tx_reset(s);
	smtpd_reply(s, 250, "2.0.0", "Ok");
	return 0;
}

static int
smtpd_cmd_noop(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
	smtpd_reply(s, 250, "2.0.0", "Ok");
	return 0;
}

static int
smtpd_cmd_quit(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
	smtpd_reply(s, 221, "2.0.0", "Bye");
	s->flags |= SMTPD_F_CLOSING;
	smtpd_enter(s, SMTPD_S_QUIT);
	return 0;
}

static int
smtpd_cmd_vrfy(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
	/* RFC 5321 3.5.3: never confirm or enumerate addresses. */
	smtpd_reply(s, 252, "2.5.0", "Cannot VRFY user, but will accept message "
	    "and attempt delivery");
	return 0;
}

static int
smtpd_cmd_expn(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
	smtpd_reply(s, 502, "5.5.1", "EXPN not available");
	return 0;
}

static int
smtpd_cmd_help(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
	smtpd_reply(s, 214, "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA RSET "
	    "NOOP QUIT VRFY HELP; see RFC 5321");
	return 0;
}

static void smtpd_session_readcb(struct bufferevent *bev, void *arg);
static void smtpd_session_writecb(struct bufferevent *bev, void *arg);
static void smtpd_session_eventcb(struct bufferevent *bev, short what, void *arg);
static void smtpd_session_tls_up(struct smtpd_session *s);

/*
 * Reading a plain socket (session_io.c says why): the session's own
 * persistent read event (s->rev), whose timeout is the idle timeout,
 * stands in for the bufferevent's reading, which stays disabled: one
 * readv per wake-up, no ioctl(FIONREAD), and no epoll_ctl while the
 * session lives. It reads what libevent would (4 KiB, or a 64 KiB block
 * while a message streams in), stops while SMTPD_IN_MAX bytes wait (the
 * bufferevent's read high-watermark) and resumes once they are taken
 * (smtpd_read_watch); it reports EOF, errors and the idle timeout to the
 * bufferevent's event callback as libevent would. STARTTLS gives the
 * socket back to libevent (smtpd_read_release) before the TLS filter
 * takes it.
 */
static void
smtpd_session_rcb(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_session *s = arg;
	size_t have = evbuffer_get_length(bufferevent_get_input(s->bev));
	size_t want = s->state == SMTPD_S_DATA || s->bdat_discard > 0 ?
	    SMTPD_IO_READ : SMTPD_IO_EV_READ;
	ssize_t r;

	if (what & EV_TIMEOUT) {
		smtpd_session_eventcb(s->bev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT, s);
		return;
	}
	if (have < SMTPD_IN_MAX && want > SMTPD_IN_MAX - have)
		want = SMTPD_IN_MAX - have;
	r = smtpd_io_read(s->bev, want);
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (r <= 0) {
		smtpd_session_eventcb(s->bev, BEV_EVENT_READING |
		    (r == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR), s);
		return;
	}
	if ((size_t)r == want)
		s->flags |= SMTPD_F_RFULL;      /* the socket may hold more */
	else
		s->flags &= ~SMTPD_F_RFULL;
	smtpd_session_readcb(s->bev, s);
}

/* The read timeout now: none while greet-delay holds the 220 back. */
static void
smtpd_read_arm(struct smtpd_session *s)
{
	struct timeval idle = { s->conf->idle_timeout, 0 };

	event_add(s->rev, (s->flags & SMTPD_F_GREETING) ? NULL : &idle);
}

/* Stop the own read event while SMTPD_IN_MAX waits; resume once taken. */
static void
smtpd_read_watch(struct smtpd_session *s)
{
	if (s->rev == NULL)
		return;
	size_t have = evbuffer_get_length(bufferevent_get_input(s->bev));
	if (!(s->flags & SMTPD_F_RSTOP) && have >= SMTPD_IN_MAX) {
		event_del(s->rev);
		s->flags |= SMTPD_F_RSTOP;
	} else if ((s->flags & SMTPD_F_RSTOP) && have < SMTPD_IN_MAX) {
		s->flags &= ~SMTPD_F_RSTOP;
		smtpd_read_arm(s);
	}
}

/* No more reading by the session itself (STARTTLS, an idle timeout). */
static void
smtpd_read_release(struct smtpd_session *s)
{
	if (s->rev == NULL)
		return;
	event_free(s->rev);
	s->rev = NULL;
	s->flags &= ~(SMTPD_F_RSTOP | SMTPD_F_RFULL);
}

/* Read and write timeouts: the bufferevent's, and the own read event's. */
static void
smtpd_set_timeouts(struct smtpd_session *s, const struct timeval *rd,
    const struct timeval *wr)
{
	bufferevent_set_timeouts(s->bev, rd, wr);
	if (s->rev == NULL || (s->flags & SMTPD_F_RSTOP))
		return;
	if (rd == NULL)
		event_del(s->rev);      /* event_add would keep the old timeout */
	event_add(s->rev, rd);
}

/* Callbacks, timeouts and limits of a (new) bufferevent of the session. */
static void
smtpd_session_setup_bev(struct smtpd_session *s)
{
	struct timeval idle = { s->conf->idle_timeout, 0 };
	bufferevent_set_timeouts(s->bev, &idle, &idle);
	/* Bound what a client can make us buffer: a command line, or a chunk of DATA. */
	bufferevent_setwatermark(s->bev, EV_READ, 0, SMTPD_IN_MAX);
	bufferevent_setcb(s->bev, smtpd_session_readcb, smtpd_session_writecb,
	    smtpd_session_eventcb, s);
	if (s->rev != NULL) {
		bufferevent_enable(s->bev, EV_WRITE);
		smtpd_read_arm(s);
	} else
		bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

/*
 * Writing the socket under STARTTLS (session_io.c says why for a plain
 * one). The TLS filter hands its records down to the socket bufferevent at
 * once; libevent would arm that bufferevent's write event (epoll_ctl),
 * write a loop pass later and disarm it (epoll_ctl): two system calls and
 * a pass for every flight of the handshake and every reply. Instead its
 * EV_WRITE stays off, a watch on its output (smtpd_uout_cb) makes
 * smtpd_uflush_cb active whenever records arrive, and that callback, run
 * later in the same pass, writes them with one writev. Only what the
 * socket does not take is left to libevent's write event (its errors and
 * timeouts then surface as before), which goes off again once the output
 * is empty. A closing session is reaped as soon as its output is out.
 */
static void smtpd_session_reap(struct smtpd_session *s);

static void
smtpd_uflush_kick(struct smtpd_session *s)
{
	if (!(s->flags & SMTPD_F_UKICK)) {
		s->flags |= SMTPD_F_UKICK;
		event_active(s->uflush, EV_WRITE, 1);
	}
}

static void
smtpd_uflush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_session *s = arg;
	struct bufferevent *u = bufferevent_get_underlying(s->bev);

	(void)fd;
	(void)what;
	s->flags &= ~SMTPD_F_UKICK;
	if (u == NULL)
		return;
	size_t left = evbuffer_get_length(bufferevent_get_output(u));
	if (bufferevent_get_enabled(u) & EV_WRITE) {
		if (left > 0)
			return;         /* libevent's write event is on it */
		bufferevent_disable(u, EV_WRITE);       /* not pending: no system call */
	} else if (left > 0 && !smtpd_io_flush(u)) {
		bufferevent_enable(u, EV_WRITE);        /* the socket is full, or an error */
		return;
	}
	if (s->flags & SMTPD_F_CLOSING)
		smtpd_session_reap(s);
}

/* Records added (the filter's), or the output emptied by libevent's write. */
static void
smtpd_uout_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info,
    void *arg)
{
	struct smtpd_session *s = arg;
	struct bufferevent *u = bufferevent_get_underlying(s->bev);

	if (info->n_added > 0 || (u != NULL && evbuffer_get_length(buf) == 0 &&
	    (bufferevent_get_enabled(u) & EV_WRITE)))
		smtpd_uflush_kick(s);
}

/* From STARTTLS on, the session writes the socket (the 220 is waiting). */
static void
smtpd_uflush_start(struct smtpd_session *s)
{
	struct bufferevent *u = bufferevent_get_underlying(s->bev);

	if (u == NULL ||
	    (s->uflush = event_new(s->loop->base, -1, 0, smtpd_uflush_cb, s)) == NULL)
		return;         /* libevent keeps writing it */
	if ((s->ucb = evbuffer_add_cb(bufferevent_get_output(u), smtpd_uout_cb,
	    s)) == NULL) {
		event_free(s->uflush);
		s->uflush = NULL;
		return;
	}
	bufferevent_disable(u, EV_WRITE);
	smtpd_uflush_kick(s);
}

/* Before the bufferevents go: no watch may call a freed session. */
static void
smtpd_uflush_stop(struct smtpd_session *s)
{
	struct bufferevent *u = bufferevent_get_underlying(s->bev);

	if (s->ucb != NULL && u != NULL)
		evbuffer_remove_cb_entry(bufferevent_get_output(u), s->ucb);
	s->ucb = NULL;
	if (s->uflush != NULL)
		event_free(s->uflush);
	s->uflush = NULL;
}

/*
 * STARTTLS (RFC 3207). The 220 goes out in clear; everything the client
 * pipelined after the command is discarded, unread (CVE-2011-0411 class);
 * the session then restarts as if new: EHLO is required again.
 */
static int
smtpd_cmd_starttls(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
	if (s->flags & SMTPD_F_TLS) {
		smtpd_reply(s, 503, "5.5.1", "Error: TLS already active");
		return -1;
	}
	if (s->lc->tls != CONF_TLS_STARTTLS) {
		smtpd_reply(s, 502, "5.5.1", "Error: STARTTLS not offered here");
		return -1;
	}
	if (s->state != SMTPD_S_READY) {
		smtpd_reply(s, 503, "5.5.1", "Error: STARTTLS not allowed now");
		return -1;
	}
	struct tls_server *t = smtpd_tls_get(s->srv);
	SSL *ssl = t ? tls_server_ssl_new(t) : NULL;
	tls_server_unref(t);   /* the SSL holds its own reference */
	if (ssl == NULL) {
		smtpd_reply(s, 454, "4.7.0", "TLS not available due to temporary reason");
		return 0;
	}
	smtpd_reply(s, 220, "2.0.0", "Ready to start TLS");
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t junk = evbuffer_get_length(in);
	if (junk > 0) {
		log_info("session=%016llx client=%s discarded %zu bytes pipelined "
		    "after STARTTLS", (unsigned long long)s->id, s->peer_str, junk);
		evbuffer_drain(in, junk);
	}
	smtpd_read_release(s);  /* the filter enables the socket's own reading */
	struct bufferevent *tbev = bufferevent_openssl_filter_new(s->loop->base,
	    s->bev, ssl, BUFFEREVENT_SSL_ACCEPTING,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (tbev == NULL) {
		SSL_free(ssl);
		bufferevent_enable(s->bev, EV_READ);
		smtpd_reply(s, 421, "4.7.0", "%s TLS setup failed", s->conf->hostname);
		return 0;
	}
	s->bev = tbev;
	s->flags |= SMTPD_F_TLS | SMTPD_F_TLS_PENDING;
	s->helo[0] = '\0';
	s->flags &= ~SMTPD_F_EHLO;
	smtpd_tx_free(s);
	smtpd_enter(s, SMTPD_S_CONNECTED);
	smtpd_session_setup_bev(s);
	smtpd_uflush_start(s);
	return 0;
}

/* ---- AUTH (RFC 4954) ---- */

static void smtpd_session_process(struct smtpd_session *s);

static void
smtpd_auth_fail_reply(struct smtpd_session *s)
{
	const struct sasl_reply *r = auth_status_reply(AUTH_FAIL);
	smtpd_reply(s, r->code, r->enhanced, "%s", r->text);
}

static void
smtpd_auth_delay_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_session *s = arg;
	smtpd_auth_fail_reply(s);
	smtpd_request_begin(s);
	smtpd_session_process(s);
	smtpd_read_watch(s);
}

/*
 * The SASL state lives only from AUTH to its outcome: most sessions never
 * authenticate, and an idle one should cost little (it is half the session).
 */
static struct sasl *
smtpd_sasl_begin(struct smtpd_session *s)
{
	if (s->sasl == NULL)
		s->sasl = calloc(1, sizeof(*s->sasl));
	return s->sasl;
}

/* Wipe the exchange (credentials included) and forget it. */
static void
smtpd_sasl_end(struct smtpd_session *s)
{
	if (s->sasl == NULL)
		return;
	sasl_wipe(s->sasl);
	free(s->sasl);
	s->sasl = NULL;
}

static int smtpd_auth_reply(struct smtpd_session *s,
    const struct auth_result *res);

/*
 * Credentials the cache knows as correct are answered here, on the loop,
 * with no trip to the auth pool (auth_check_cached() says why that is
 * safe); 1 if so. Anything else goes to the pool, as always.
 */
static int
smtpd_auth_cached(struct smtpd_session *s)
{
	struct auth_result res;

	memset(&res, 0, sizeof(res));
	if (auth_check_cached(s->srv->auth_db, s->sasl->creds.user,
	    s->sasl->creds.pass, res.user) != 0)
		return 0;
	smtpd_sasl_end(s);
	res.status = AUTH_OK;
	(void)smtpd_auth_reply(s, &res);        /* 235: no delay to wait for */
	return 1;
}

/* Act on a SASL step's outcome. */
static void
smtpd_auth_progress(struct smtpd_session *s, enum sasl_status st)
{
	const struct sasl_reply *r;

	switch (st) {
	case SASL_CONTINUE:
		s->flags |= SMTPD_F_AUTHING;
		smtpd_reply(s, 334, NULL, "%s", sasl_prompt(s->sasl));
		return;
	case SASL_OK:
		s->flags &= ~SMTPD_F_AUTHING;
		if (s->srv->auth_db != NULL && smtpd_auth_cached(s))
			return;
		if (s->srv->auth_pool == NULL || auth_pool_check(s->srv->auth_pool,
		    s->srv->auth_db, s->sasl->creds.user, s->sasl->creds.pass,
		    s->loop->inbox, s->id) < 0) {
			smtpd_sasl_end(s);
			r = auth_status_reply(AUTH_TEMPFAIL);
			smtpd_reply(s, r->code, r->enhanced, "%s", r->text);
			return;
		}
		smtpd_sasl_end(s);
		s->flags |= SMTPD_F_AUTHCHECK;
		return;
	default:
		s->flags &= ~SMTPD_F_AUTHING;
		smtpd_sasl_end(s);
		r = sasl_status_reply(st);
		if (st == SASL_BAD_CREDS || st == SASL_AUTHZ_DENIED) {
			auth_throttle_fail(s->srv->auth_throttle,
			    (struct sockaddr *)&s->peer, now_unix());
			METRIC_INC(auth_total[0]);
			log_info("session=%016llx client=%s auth=failed reason=%s",
			    (unsigned long long)s->id, s->peer_str,
			    sasl_status_name(st));
		}
		smtpd_reply(s, r->code, r->enhanced, "%s", r->text);
		return;
	}
}

static int
smtpd_cmd_auth(struct smtpd_session *s, const struct smtp_cmd *cmd)
{
	unsigned delay_ms = 0;

	if (s->lc->mode != CONF_LISTEN_SUBMISSION) {
		smtpd_reply(s, 503, "5.5.1", "Error: authentication not enabled");
		return -1;
	}
	if (!(s->flags & SMTPD_F_TLS)) {
		smtpd_reply(s, 538, "5.7.11", "Encryption required for requested "
		    "authentication mechanism");
		return -1;
	}
	if (s->flags & SMTPD_F_AUTHED) {
		smtpd_reply(s, 503, "5.5.1", "Error: already authenticated");
		return -1;
	}
	if (s->state != SMTPD_S_READY) {
		smtpd_reply(s, 503, "5.5.1", "Error: AUTH not allowed during a mail "
		    "transaction");
		return -1;
	}
	if (auth_throttle_check(s->srv->auth_throttle, (struct sockaddr *)&s->peer,
	    now_unix(), &delay_ms) == AUTH_THROTTLE_REFUSE) {
		log_info("session=%016llx client=%s auth=refused "
		    "reason=too-many-failures", (unsigned long long)s->id,
		    s->peer_str);
		smtpd_reply(s, 454, "4.7.0", "Too many failed authentication "
		    "attempts; try again later");
		return 0;
	}
	if (smtpd_sasl_begin(s) == NULL) {
		const struct sasl_reply *r = auth_status_reply(AUTH_TEMPFAIL);
		log_warnx("session=%016llx client=%s auth: out of memory",
		    (unsigned long long)s->id, s->peer_str);
		smtpd_reply(s, r->code, r->enhanced, "%s", r->text);
		return 0;
	}
	smtpd_auth_progress(s, sasl_start(s->sasl, cmd->arg, cmd->arg_len));
	return 0;
}

/*
 * The reply to a checked AUTH; 1 if it waits for the failure delay (then
 * smtpd_auth_delay_cb answers).
 */
static int
smtpd_auth_reply(struct smtpd_session *s, const struct auth_result *res)
{
	unsigned delay_ms = 0;
	const struct sasl_reply *r;
	char user[AUTH_USER_MAX * 4 + 4];

	s->flags &= ~SMTPD_F_AUTHCHECK;
	log_escape(user, sizeof(user), res->user, strlen(res->user));
	switch (res->status) {
	case AUTH_OK:
		free(s->auth_user);
		s->auth_user = strdup(res->user);
		if (s->auth_user == NULL) {
			r = auth_status_reply(AUTH_TEMPFAIL);
			smtpd_reply(s, r->code, r->enhanced, "%s", r->text);
			break;
		}
		s->flags |= SMTPD_F_AUTHED;
		auth_throttle_success(s->srv->auth_throttle,
		    (struct sockaddr *)&s->peer, now_unix());
		METRIC_INC(auth_total[1]);
		log_info("session=%016llx client=%s auth=ok user=%s",
		    (unsigned long long)s->id, s->peer_str, user);
		r = auth_status_reply(AUTH_OK);
		smtpd_reply(s, r->code, r->enhanced, "%s", r->text);
		break;
	case AUTH_FAIL: {
		/*
		 * The failure that reaches auth-max-failures is answered as
		 * slowly as the one before it (the check then says REFUSE,
		 * with no delay): a guesser learns nothing sooner.
		 */
		unsigned before_ms = 0;
		enum auth_throttle_verdict v;
		(void)auth_throttle_check(s->srv->auth_throttle,
		    (struct sockaddr *)&s->peer, now_unix(), &before_ms);
		auth_throttle_fail(s->srv->auth_throttle,
		    (struct sockaddr *)&s->peer, now_unix());
		METRIC_INC(auth_total[0]);
		log_info("session=%016llx client=%s auth=failed user=%s",
		    (unsigned long long)s->id, s->peer_str, user);
		v = auth_throttle_check(s->srv->auth_throttle,
		    (struct sockaddr *)&s->peer, now_unix(), &delay_ms);
		if (v == AUTH_THROTTLE_REFUSE)
			delay_ms = before_ms;
		if (v != AUTH_THROTTLE_ALLOW && delay_ms > 0) {
			/* slow down guessing: answer later, read nothing meanwhile */
			if (s->auth_delay == NULL)
				s->auth_delay = evtimer_new(s->loop->base,
				    smtpd_auth_delay_cb, s);
			struct timeval tv = { delay_ms / 1000,
			    (delay_ms % 1000) * 1000 };
			if (s->auth_delay != NULL && evtimer_add(s->auth_delay,
			    &tv) == 0)
				return 1;
		}
		smtpd_auth_fail_reply(s);
		break;
	}
	default:
		log_warnx("session=%016llx client=%s auth=tempfail user=%s",
		    (unsigned long long)s->id, s->peer_str, user);
		r = auth_status_reply(AUTH_TEMPFAIL);
		smtpd_reply(s, r->code, r->enhanced, "%s", r->text);
		break;
	}
	return 0;
}

/* The auth pool answered (TQ_AUTH_DONE): the reply, then the commands that
 * waited. */
static void
smtpd_auth_done(struct smtpd_session *s, const struct auth_result *res)
{
	if (smtpd_auth_reply(s, res))
		return;
	smtpd_request_begin(s);
	smtpd_session_process(s);
	smtpd_read_watch(s);
}

static const struct smtpd_cmd smtpd_cmds[] = {
	{ SMTP_V_HELO, smtpd_cmd_helo, 0 },
	{ SMTP_V_EHLO, smtpd_cmd_helo, 0 },
	{ SMTP_V_MAIL, smtpd_cmd_mail, CMD_NEED_HELO },
	{ SMTP_V_RCPT, smtpd_cmd_rcpt, CMD_NEED_HELO },
	{ SMTP_V_DATA, smtpd_cmd_data, CMD_NEED_HELO | CMD_NO_ARG | CMD_LAST_IN_GROUP },
	{ SMTP_V_RSET, smtpd_cmd_rset, CMD_NO_ARG },
	{ SMTP_V_NOOP, smtpd_cmd_noop, 0 },
	{ SMTP_V_QUIT, smtpd_cmd_quit, CMD_NO_ARG | CMD_LAST_IN_GROUP },
	{ SMTP_V_VRFY, smtpd_cmd_vrfy, 0 },
	{ SMTP_V_EXPN, smtpd_cmd_expn, 0 },
	{ SMTP_V_HELP, smtpd_cmd_help, 0 },
	{ SMTP_V_BDAT, smtpd_cmd_bdat, 0 },
	{ SMTP_V_STARTTLS, smtpd_cmd_starttls, CMD_NO_ARG | CMD_LAST_IN_GROUP },
	{ SMTP_V_AUTH, smtpd_cmd_auth, CMD_NEED_HELO | CMD_LAST_IN_GROUP },
};

/* Parse one command line (no LF; a trailing CR is stripped) and run it. */
static void
smtpd_dispatch(struct smtpd_session *s, char *line, size_t len)
{
	struct smtp_cmd cmd;
	enum smtp_parse_status st;
	char esc[128];

	if (len > 0 && line[len - 1] == '\r')
		len--;
	if (s->flags & SMTPD_F_AUTHING) {
		/* a SASL response, not a command (RFC 4954 4) */
		enum sasl_status sst = sasl_step(s->sasl, line, len);
		explicit_bzero(line, len);
		smtpd_auth_progress(s, sst);
		return;
	}
	if (len > SMTP_CMD_MAX - 2 && len >= 5 &&
	    ascii_casecmp_n(line, 5, "AUTH ", 5) == 0) {
		/* AUTH lines may be longer than commands (RFC 4954 4) */
		cmd.verb = SMTP_V_AUTH;
		cmd.arg = line + 5;
		cmd.arg_len = len - 5;
		st = SMTP_PARSE_OK;
	} else
		st = smtp_parse_command(line, len, &cmd);
	if (st != SMTP_PARSE_OK) {
		log_escape(esc, sizeof(esc), line, len);
		log_debug("session=%016llx bad command \"%s\"",
		    (unsigned long long)s->id, esc);
		switch (st) {
		case SMTP_PARSE_UNKNOWN:
			smtpd_reply(s, 500, "5.5.1", "Error: command not recognized");
			break;
		case SMTP_PARSE_TOO_LONG:
			smtpd_reply(s, 500, "5.5.2", "Error: line too long");
			break;
		case SMTP_PARSE_BAD_CHAR:
			smtpd_reply(s, 500, "5.5.2", "Error: bad character in command");
			break;
		default:
			smtpd_reply(s, 501, "5.5.2", "Error: syntax error");
			break;
		}
		smtpd_error(s);
		return;
	}
	const struct smtpd_cmd *c = NULL;
	for (size_t i = 0; i < sizeof(smtpd_cmds) / sizeof(smtpd_cmds[0]); i++)
		if (smtpd_cmds[i].verb == cmd.verb) {
			c = &smtpd_cmds[i];
			break;
		}
	if (c == NULL) {
		smtpd_reply(s, 500, "5.5.1", "Error: command not recognized");
		smtpd_error(s);
		return;
	}
	if ((c->flags & CMD_NEED_HELO) && s->state == SMTPD_S_CONNECTED) {
		smtpd_reply(s, 503, "5.5.1", "Error: send HELO/EHLO first");
		smtpd_error(s);
		return;
	}
	if ((c->flags & CMD_NO_ARG) && cmd.arg_len != 0) {
		smtpd_reply(s, 501, "5.5.4", "Syntax: %s takes no argument",
		    smtp_verb_name(cmd.verb));
		smtpd_error(s);
		return;
	}
	if (c->fn(s, &cmd) < 0)
		smtpd_error(s);
	if (cmd.verb == SMTP_V_AUTH)
		explicit_bzero(line, len);   /* may hold a password */
}

/* ---- end of data and commit ---- */

static void
smtpd_data_end(struct smtpd_session *s)
{
	struct smtpd_tx *tx = s->tx;
	unsigned seen = tx->df.seen;

	if (tx->fixup)          /* headers only, no body: add at the end */
		smtpd_fixup_flush(tx, 0);

	if ((seen & (DATA_SEEN_BARE_LF | DATA_SEEN_BARE_CR)) &&
	    !(tx->df.flags & DATA_F_NORMALIZE)) {
		METRIC_INC(messages_refused_total[METRICS_REF_CONTENT]);
		log_info("id=%s client=%s status=refused reason=bare-newline",
		    s->qid, s->peer_str);
		smtpd_reply(s, 550, "5.6.0", "Message contains bare CR or LF "
		    "characters; lines must end with CRLF");
		goto refused;
	}
	if (seen & DATA_SEEN_LONG) {
		METRIC_INC(messages_refused_total[METRICS_REF_CONTENT]);
		log_info("id=%s client=%s status=refused reason=line-too-long",
		    s->qid, s->peer_str);
		smtpd_reply(s, 550, "5.6.0", "Message contains a line longer than "
		    "%d octets", SMTP_TEXT_MAX);
		goto refused;
	}
	if (tx->hs.ntrace >= s->conf->max_hops) {
		/*
		 * A mail loop (RFC 5321 6.3): refused here, never queued, so
		 * never relayed again. A bounce (sender <>) ends the same way,
		 * and a refused bounce is not bounced by the server sending it.
		 */
		METRIC_INC(messages_refused_total[METRICS_REF_CONTENT]);
		log_escape(tx->from, sizeof(tx->from), tx->env->sender,
		    strlen(tx->env->sender));
		log_info("id=%s client=%s from=<%s> status=refused "
		    "reason=too-many-hops hops=%u max-hops=%u", s->qid,
		    s->peer_str, tx->from, tx->hs.ntrace, s->conf->max_hops);
		smtpd_reply(s, 554, "5.4.6", "Too many hops (%u trace header "
		    "fields, limit %u): mail loop?", tx->hs.ntrace,
		    s->conf->max_hops);
		goto refused;
	}
	if (tx->too_big) {
		METRIC_INC(messages_refused_total[METRICS_REF_SIZE]);
		log_info("id=%s client=%s status=refused reason=too-big",
		    s->qid, s->peer_str);
		smtpd_reply(s, 552, "5.3.4", "Message size exceeds fixed limit of "
		    "%llu bytes", (unsigned long long)s->conf->max_message_size);
		goto refused;
	}
	if (tx->write_errno) {
		int code;
		const char *enh, *text;
		queue_status_reply(Q_TEMPFAIL, tx->write_errno, &code, &enh, &text);
		errno = tx->write_errno;
		METRIC_INC(messages_refused_total[METRICS_REF_QUEUE]);
		log_warn("id=%s client=%s status=refused reason=spool-write",
		    s->qid, s->peer_str);
		smtpd_reply(s, code, enh, "%s", text);
		goto refused;
	}
	if (tx->dkim != NULL &&
	    smtpd_dkim_finish(tx->dkim, s->conf, tx->body, s->qid) != 0) {
		METRIC_INC(messages_refused_total[METRICS_REF_QUEUE]);
		log_info("id=%s client=%s status=refused reason=dkim-sign",
		    s->qid, s->peer_str);
		smtpd_reply(s, 451, "4.3.0", "Error: the message could not be "
		    "signed; try again later");
		goto refused;
	}

	struct envelope *env = tx->env;
	env->size = spool_size(tx->body);
	if (seen & DATA_SEEN_8BIT)
		env->flags |= ENV_F_8BIT;
	if (tx->hs.flags & HDR_TLS_REQUIRED_NO)     /* RFC 8689 5 */
		env->flags |= ENV_F_TLS_OPTIONAL;
	env->arrival = now_unix();
	log_escape(tx->from, sizeof(tx->from), env->sender, strlen(env->sender));
	tx->nrcpt = env->nrcpt;
	tx->size = env->size;
	smtpd_enter(s, SMTPD_S_COMMIT);
	queue_commit_submit(s->srv->queue, env, tx->body, s->loop->inbox, s->id);
	tx->env = NULL;   /* now owned by the queue */
	tx->body = NULL;
	return;

refused:
	smtpd_tx_reset(s);
}

static void
smtpd_commit_done(struct smtpd_session *s, const struct queue_commit_done *d)
{
	char qid[QID_STRLEN + 1];

	if (s->state != SMTPD_S_COMMIT)
		panic("smtpd_commit_done: session in state %s",
		    smtpd_strstate(s->state));
	if (d->status == Q_OK) {
		qid_format(d->qid, qid);
		s->nmessages++;
		METRIC_INC(messages_accepted_total);
		METRIC_ADD(bytes_accepted_total, s->tx->size);
		log_info("id=%s from=<%s> size=%llu nrcpt=%zu client=%s proto=%s "
		    "listener=%s status=queued", qid, s->tx->from,
		    (unsigned long long)s->tx->size, s->tx->nrcpt, s->peer_str,
		    smtpd_proto(s), s->lc->spec);
		smtpd_reply(s, 250, "2.0.0", "Ok: queued as %s", qid);
	} else {
		int code;
		const char *enh, *text;
		queue_status_reply(d->status, d->err, &code, &enh, &text);
		METRIC_INC(messages_refused_total[METRICS_REF_QUEUE]);
		log_warnx("id=%s client=%s status=refused reason=commit-failed "
		    "error=\"%s\"", s->qid, s->peer_str, strerror(d->err));
		smtpd_reply(s, code, enh, "%s", text);
	}
	smtpd_tx_free(s);
	smtpd_enter(s, SMTPD_S_READY);
	if (s->loop->stopping && !(s->flags & SMTPD_F_CLOSING))
		smtpd_reply(s, 421, "4.3.2", "%s Service shutting down",
		    s->conf->hostname);
	/* Pipelined commands may be waiting in the input buffer already. */
	smtpd_request_begin(s);
	smtpd_session_process(s);
}

/* ---- input ---- */

/* Feed buffered DATA bytes through the filter. */
static void
smtpd_read_data(struct smtpd_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct evbuffer_iovec v[8];
	int n;

	/*
	 * Peek only at the bytes really there: an SSL bufferevent may keep
	 * empty chains at the end of its buffer.
	 */
	while (evbuffer_get_length(in) > 0 && (n = evbuffer_peek(in,
	    (ev_ssize_t)evbuffer_get_length(in), NULL, v, 8)) > 0) {
		size_t used = 0;
		enum data_status st = DATA_MORE;
		for (int i = 0; i < n && i < 8; i++) {
			size_t consumed;
			st = data_filter_feed(&s->tx->df, v[i].iov_base, v[i].iov_len,
			    &consumed, smtpd_data_out, s->tx);
			used += consumed;
			if (st == DATA_END)
				break;
		}
		evbuffer_drain(in, used);
		s->req_bytes += used;
		if (st == DATA_END) {
			smtpd_data_end(s);
			return;
		}
		if (used == 0)
			break;   /* cannot happen: the filter takes all it is given */
	}
}

/*
 * A BDAT chunk has been read. Not the LAST: answer it, or refuse the
 * transaction now when it is already over the size limit or the spool
 * failed (smtpd_data_end() says which and resets). The LAST: end the
 * message as DATA's end does.
 */
static void
smtpd_bdat_chunk_end(struct smtpd_session *s)
{
	struct smtpd_tx *tx = s->tx;

	if (tx->bdat_last) {
		data_filter_finish(&tx->df, smtpd_data_out, tx);
		smtpd_data_end(s);
		return;
	}
	if (tx->too_big || tx->write_errno) {
		smtpd_data_end(s);
		return;
	}
	smtpd_enter(s, SMTPD_S_RCPT);
	smtpd_reply(s, 250, "2.0.0", "%llu octets received",
	    (unsigned long long)tx->bdat_size);
}

/* Feed buffered bytes of the current BDAT chunk through the filter. */
static void
smtpd_read_bdat(struct smtpd_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct evbuffer_iovec v[8];
	struct smtpd_tx *tx = s->tx;
	int n;

	while (tx->bdat_left > 0 && evbuffer_get_length(in) > 0) {
		size_t want = evbuffer_get_length(in), used = 0, consumed;
		if (want > tx->bdat_left)
			want = (size_t)tx->bdat_left;
		n = evbuffer_peek(in, (ev_ssize_t)want, NULL, v, 8);
		for (int i = 0; i < n && i < 8 && used < want; i++) {
			size_t take = v[i].iov_len < want - used ?
			    v[i].iov_len : want - used;
			(void)data_filter_feed(&tx->df, v[i].iov_base, take,
			    &consumed, smtpd_data_out, tx);
			used += take;
		}
		if (used == 0)
			break;
		evbuffer_drain(in, used);
		s->req_bytes += used;
		tx->bdat_left -= used;
	}
	if (tx->bdat_left == 0)
		smtpd_bdat_chunk_end(s);
}

/* Drop what is buffered of refused BDAT chunks; 1 while more is due. */
static int
smtpd_bdat_drop(struct smtpd_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t have = evbuffer_get_length(in);
	size_t n = have < s->bdat_discard ? have : (size_t)s->bdat_discard;

	evbuffer_drain(in, n);
	s->req_bytes += n;
	s->bdat_discard -= n;
	return s->bdat_discard > 0;
}

/* Longest line accepted next: SASL exchanges and AUTH commands may be long. */
static size_t
smtpd_line_max(const struct smtpd_session *s, struct evbuffer *in)
{
	char head[5];
	if (s->flags & SMTPD_F_AUTHING)
		return SASL_LINE_MAX;
	if (evbuffer_copyout(in, head, 5) == 5 &&
	    ascii_casecmp_n(head, 5, "AUTH ", 5) == 0)
		return SASL_LINE_MAX;
	return SMTP_CMD_MAX;
}

/*
 * Answer a line over its limit (already drained, or being discarded up to
 * its LF). A line of an AUTH exchange (a SASL response, or the AUTH command
 * with its initial response) ends the exchange with RFC 4954's 500 5.5.6:
 * the line after it is a command again, never taken as a SASL response.
 */
static void
smtpd_line_too_long(struct smtpd_session *s, size_t maxline)
{
	if (maxline == SASL_LINE_MAX) {
		const struct sasl_reply *r = sasl_status_reply(SASL_TOO_LONG);
		int exchange = (s->flags & SMTPD_F_AUTHING) != 0;
		s->flags &= ~SMTPD_F_AUTHING;
		smtpd_sasl_end(s);
		log_info("session=%016llx client=%s auth=aborted reason=line-too-long "
		    "in=%s", (unsigned long long)s->id, s->peer_str,
		    exchange ? "response" : "command");
		smtpd_reply(s, r->code, r->enhanced, "%s", r->text);
	} else
		smtpd_reply(s, 500, "5.5.2", "Error: line too long");
	smtpd_error(s);
}

/*
 * Consume every complete command in the input buffer (pipelining). The
 * line limit is enforced before the buffer can grow past it: a line longer
 * than SMTP_CMD_MAX is discarded up to its LF and answered 500 5.5.2.
 */
/*
 * A message streaming in on a plain socket: read what the socket holds now
 * (session_io.c), rather than 4 KiB per loop pass. *more: the last read
 * may have left bytes behind (libevent's read was capped, or ours filled
 * its block); 0 once a read came back short. 1 if bytes were read.
 */
static int
smtpd_data_read_more(struct smtpd_session *s, int *more)
{
	ssize_t r;

	if (!*more)
		return 0;
	r = smtpd_io_read(s->bev, SMTPD_IO_READ);
	*more = r >= SMTPD_IO_READ;
	return r > 0;
}

static void
smtpd_session_process(struct smtpd_session *s)
{
	char line[SASL_LINE_MAX + 1];
	int more = (s->flags & SMTPD_F_BATCH) && s->rev != NULL &&
	    (s->flags & SMTPD_F_RFULL);

	while (!(s->flags & SMTPD_F_CLOSING)) {
		/* re-read each time: STARTTLS replaces the bufferevent */
		struct evbuffer *in = bufferevent_get_input(s->bev);
		if (smtpd_out_len(s) > SMTPD_OUT_MAX) {
			if (smtpd_batch_drain(s))
				continue;
			s->flags |= SMTPD_F_OUTFULL;
			return;
		}
		if (s->bdat_discard > 0) {
			if (smtpd_bdat_drop(s))
				return;        /* need more bytes */
			continue;
		}
		if (s->state == SMTPD_S_DATA) {
			if (s->tx->chunking)
				smtpd_read_bdat(s);
			else
				smtpd_read_data(s);
			if (s->state == SMTPD_S_DATA) {
				if (smtpd_data_read_more(s, &more))
					continue;
				return;        /* need more bytes */
			}
			smtpd_request_begin(s);
			continue;
		}
		if (s->flags & SMTPD_F_GREETING) {
			if (evbuffer_get_length(in) > 0)
				smtpd_early_talker(s, evbuffer_get_length(in));
			return;            /* the greet-delay timer sends the 220 */
		}
		if (smtpd_session_busy(s))
			return;            /* resumed by a commit or auth result */
		size_t maxline = smtpd_line_max(s, in);

		struct evbuffer_ptr lf = evbuffer_search(in, "\n", 1, NULL);
		if (lf.pos < 0) {
			size_t have = evbuffer_get_length(in);
			if (have > maxline) {
				evbuffer_drain(in, have);
				if (!(s->flags & SMTPD_F_DISCARD)) {
					s->flags |= SMTPD_F_DISCARD;
					smtpd_line_too_long(s, maxline);
				}
			}
			return;
		}
		size_t len = (size_t)lf.pos;    /* without the LF */
		if (s->flags & SMTPD_F_DISCARD) {
			/* tail of an overlong line: drop it, already answered */
			evbuffer_drain(in, len + 1);
			s->flags &= ~SMTPD_F_DISCARD;
			continue;
		}
		if (len + 1 > maxline) {
			evbuffer_drain(in, len + 1);
			smtpd_line_too_long(s, maxline);
			smtpd_request_begin(s);
			continue;
		}
		evbuffer_remove(in, line, len + 1);
		line[len] = '\0';
		smtpd_dispatch(s, line, len);
		smtpd_request_begin(s);
	}
}

static void smtpd_session_reap(struct smtpd_session *s);

static void
smtpd_session_closer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_session *s = arg;

	s->close_waits++;
	smtpd_session_reap(s);
}

/*
 * Once the last reply has gone through TLS, send close_notify (RFC 8446
 * 6.1; without it OpenSSL 3 clients report "unexpected eof"). With
 * STARTTLS the alert lands in the underlying socket bufferevent and is
 * flushed like any reply; with implicit TLS OpenSSL writes it to the
 * socket itself. Best effort: a peer that is gone is not waited for.
 */
static void
smtpd_session_tls_shutdown(struct smtpd_session *s)
{
	if ((s->flags & (SMTPD_F_TLS | SMTPD_F_TLS_PENDING | SMTPD_F_TLS_SHUT)) !=
	    SMTPD_F_TLS)
		return;
	s->flags |= SMTPD_F_TLS_SHUT;
	SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
	if (ssl != NULL && SSL_shutdown(ssl) < 0)
		ERR_clear_error();
}

/*
 * A closing session goes once its replies have left: the session's own
 * output buffer and, with STARTTLS, the underlying socket bufferevent's
 * (the TLS filter hands bytes down at once, so its own buffer empties
 * before anything is on the wire). Waits at most ~5 s (500 closer ticks)
 * for a peer that does not read, and not at all while the TLS handshake
 * has not completed (unless the handshake failed and its alert is on the
 * way: TLS_SHUT): nothing can be sent before it, and a client that never
 * sends its ClientHello would otherwise hold the session (and a SIGTERM)
 * until the idle timeout.
 */
static void
smtpd_session_reap(struct smtpd_session *s)
{
	if (!(s->flags & SMTPD_F_CLOSING))
		return;
	size_t pending = evbuffer_get_length(bufferevent_get_output(s->bev));
	struct bufferevent *u = bufferevent_get_underlying(s->bev);
	if (pending == 0 && s->close_waits < 500)
		smtpd_session_tls_shutdown(s);
	if (u != NULL)
		pending += evbuffer_get_length(bufferevent_get_output(u));
	if (pending == 0 || s->close_waits >= 500 ||
	    (s->flags & (SMTPD_F_TLS_PENDING | SMTPD_F_TLS_SHUT)) ==
	    SMTPD_F_TLS_PENDING) {
		smtpd_session_free(s);
		return;
	}
	/* the write callback calls again once drained; the timer bounds it */
	if (s->closer == NULL &&
	    (s->closer = evtimer_new(s->loop->base, smtpd_session_closer_cb, s)) == NULL) {
		smtpd_session_free(s);
		return;
	}
	struct timeval tv = { 0, 10000 };
	evtimer_add(s->closer, &tv);
}

static void
smtpd_session_readcb(struct bufferevent *bev, void *arg)
{
	struct smtpd_session *s = arg;

	smtpd_batch_begin(s);
	smtpd_session_process(s);
	smtpd_batch_end(s);
	smtpd_read_watch(s);
	smtpd_session_reap(s);
}

static void
smtpd_session_writecb(struct bufferevent *bev, void *arg)
{
	struct smtpd_session *s = arg;
	if (s->flags & SMTPD_F_CLOSING) {
		smtpd_session_reap(s);
		return;
	}
	if (s->flags & SMTPD_F_OUTFULL) {
		s->flags &= ~SMTPD_F_OUTFULL;
		smtpd_session_readcb(bev, s);
	}
}

static void
smtpd_session_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct smtpd_session *s = arg;

	if (what & BEV_EVENT_CONNECTED) {
		smtpd_session_tls_up(s);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		if (s->flags & SMTPD_F_CLOSING) {
			smtpd_session_free(s);
			return;
		}
		if (s->state == SMTPD_S_COMMIT) {
			/* a slow disk, not an idle client: the commit answers;
			 * libevent disabled reading on the timeout, restore it
			 * (the own read event stays pending) */
			if (s->rev == NULL)
				bufferevent_enable(bev, EV_READ);
			return;
		}
		log_info("session=%016llx client=%s idle timeout in state %s",
		    (unsigned long long)s->id, s->peer_str,
		    smtpd_strstate(s->state));
		bufferevent_disable(bev, EV_READ);
		smtpd_read_release(s);
		bufferevent_enable(bev, EV_WRITE);
		smtpd_reply(s, 421, "4.4.2", "%s Error: timeout exceeded",
		    s->conf->hostname);
		return;
	}
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		unsigned long e;
		while ((s->flags & SMTPD_F_TLS) &&
		    (e = bufferevent_get_openssl_error(bev)) != 0) {
			char eb[256];
			ERR_error_string_n(e, eb, sizeof(eb));
			log_info("session=%016llx client=%s TLS error: %s",
			    (unsigned long long)s->id, s->peer_str, eb);
		}
		if (what & BEV_EVENT_ERROR)
			log_debug("session=%016llx client=%s connection error: %s",
			    (unsigned long long)s->id, s->peer_str,
			    strerror(EVUTIL_SOCKET_ERROR()));
		if (s->state != SMTPD_S_QUIT && s->state != SMTPD_S_READY &&
		    s->state != SMTPD_S_CONNECTED)
			log_info("session=%016llx client=%s lost connection in state %s",
			    (unsigned long long)s->id, s->peer_str,
			    smtpd_strstate(s->state));
		/*
		 * A handshake refused over STARTTLS has left OpenSSL's alert
		 * in the underlying socket bufferevent: let it reach the
		 * client (it tells a TLS 1.1 client "protocol version"), then
		 * close. No transaction can be in progress (EHLO comes after
		 * the handshake); no close_notify after a fatal alert.
		 */
		struct bufferevent *u = bufferevent_get_underlying(bev);
		if ((what & BEV_EVENT_ERROR) && u != NULL &&
		    (s->flags & SMTPD_F_TLS_PENDING) &&
		    s->state == SMTPD_S_CONNECTED &&
		    !(s->flags & SMTPD_F_CLOSING) &&
		    evbuffer_get_length(bufferevent_get_output(u)) > 0) {
			s->flags |= SMTPD_F_CLOSING | SMTPD_F_TLS_SHUT;
			bufferevent_disable(bev, EV_READ | EV_WRITE);
			evbuffer_drain(bufferevent_get_output(bev),
			    evbuffer_get_length(bufferevent_get_output(bev)));
			smtpd_enter(s, SMTPD_S_QUIT);
			smtpd_session_reap(s);
			return;
		}
		smtpd_session_free(s);
	}
}

/* The TLS handshake finished (BEV_EVENT_CONNECTED on an SSL bufferevent). */
static void
smtpd_session_tls_up(struct smtpd_session *s)
{
	char desc[128];
	SSL *ssl = bufferevent_openssl_get_ssl(s->bev);
	if (ssl == NULL || !(s->flags & SMTPD_F_TLS_PENDING))
		return;
	s->flags &= ~SMTPD_F_TLS_PENDING;
	tls_describe(ssl, desc, sizeof(desc));
	METRIC_INC(tls_handshakes_total);
	log_info("session=%016llx client=%s tls=\"%s\"%s",
	    (unsigned long long)s->id, s->peer_str, desc,
	    SSL_session_reused(ssl) ? " resumed=yes" : "");
}

static void
smtpd_session_lifetime_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_session *s = arg;
	if (s->flags & SMTPD_F_CLOSING)
		return;
	if (s->state == SMTPD_S_COMMIT) {
		/* the commit answers first; the limit applies right after */
		struct timeval tv = { 1, 0 };
		evtimer_add(s->lifetime, &tv);
		return;
	}
	log_info("session=%016llx client=%s session timeout",
	    (unsigned long long)s->id, s->peer_str);
	smtpd_reply(s, 421, "4.4.2", "%s Error: session time limit exceeded",
	    s->conf->hostname);
	smtpd_session_reap(s);
}

/* ---- per-request deadline ---- */

/*
 * Each request (a command line, or the whole DATA phase) must arrive within
 * command-deadline of the moment the session began waiting for it; in DATA
 * every data-min-rate bytes received add one second (Postfix's
 * smtpd_per_request_deadline and smtpd_min_data_rate). A client that drips
 * one byte at a time, each within idle-timeout, is closed with 421 4.4.2
 * instead of holding a connection slot for session-timeout. The timer is
 * lazy: starting a request only records the time; the timer fires at the
 * earliest deadline possible, recomputes it, and sleeps again if the
 * request is not late. Time tern spends working (commit, password check,
 * the slowed answer to a failed AUTH, greet-delay) does not count.
 */
static void
smtpd_request_begin(struct smtpd_session *s)
{
	s->req_start_us = now_mono_us();
	s->req_bytes = 0;
}

static uint64_t
smtpd_request_deadline_us(const struct smtpd_session *s)
{
	uint64_t us = (uint64_t)conf_command_deadline(s->conf) * 1000000u;
	if (s->state == SMTPD_S_DATA || s->bdat_discard > 0)  /* bytes <= 4G */
		us += s->req_bytes * 1000000u / s->conf->data_min_rate;
	return s->req_start_us + us;
}

static void
smtpd_deadline_arm(struct smtpd_session *s, uint64_t at_us)
{
	uint64_t now = now_mono_us(), d = at_us > now ? at_us - now : 0;
	struct timeval tv = { (time_t)(d / 1000000u),
	    (suseconds_t)(d % 1000000u) };
	evtimer_add(s->deadline, &tv);
}

/* Waiting for tern (commit, auth pool, slowed 535), not for the client. */
static int
smtpd_session_busy(const struct smtpd_session *s)
{
	return s->state == SMTPD_S_COMMIT || (s->flags & SMTPD_F_AUTHCHECK) ||
	    (s->auth_delay != NULL && evtimer_pending(s->auth_delay, NULL));
}

static void
smtpd_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_session *s = arg;

	if (s->flags & SMTPD_F_CLOSING)
		return;
	if (smtpd_session_busy(s) || (s->flags & SMTPD_F_GREETING))
		smtpd_request_begin(s);
	uint64_t at = smtpd_request_deadline_us(s);
	if (now_mono_us() < at) {
		smtpd_deadline_arm(s, at);
		return;
	}
	log_info("session=%016llx client=%s command deadline exceeded in state "
	    "%s bytes=%llu", (unsigned long long)s->id, s->peer_str,
	    smtpd_strstate(s->state), (unsigned long long)s->req_bytes);
	smtpd_reply(s, 421, "4.4.2", "%s Error: command deadline exceeded",
	    s->conf->hostname);
	smtpd_session_reap(s);
}

/* ---- greeting, early talkers ---- */

/*
 * Early talkers (postscreen's pregreet test): on a relay listener (not one
 * with implicit TLS, where the client speaks first) a client must not send
 * before the 220. With greet-delay the 220 waits that long and any byte
 * sent meanwhile is refused; with greet-delay 0 there is no pause, and only
 * bytes already on the socket when the 220 is written are. Submission
 * listeners are never delayed: their clients are known users.
 */
static int
smtpd_pregreet_applies(const struct smtpd_session *s)
{
	return s->lc->mode == CONF_LISTEN_RELAY && s->lc->tls != CONF_TLS_IMPLICIT;
}

/* Answer 554 instead of 220, count it, close. */
static void
smtpd_early_talker(struct smtpd_session *s, size_t nbytes)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);

	evbuffer_drain(in, evbuffer_get_length(in));
	s->flags &= ~SMTPD_F_GREETING;
	METRIC_INC(early_talkers_total);
	log_info("session=%016llx client=%s status=refused reason=early-talker "
	    "bytes=%zu", (unsigned long long)s->id, s->peer_str, nbytes);
	smtpd_reply(s, 554, "5.5.1", "%s Error: protocol error: client sent data "
	    "before the greeting", s->conf->hostname);
	s->flags |= SMTPD_F_CLOSING;
	smtpd_enter(s, SMTPD_S_QUIT);
}

/* Send the 220, unless the client has already talked. */
static void
smtpd_greet(struct smtpd_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	struct timeval idle = { s->conf->idle_timeout, 0 };
	char c;
	ssize_t n;

	s->flags &= ~SMTPD_F_GREETING;
	if (smtpd_pregreet_applies(s)) {
		if (evbuffer_get_length(in) > 0) {
			smtpd_early_talker(s, evbuffer_get_length(in));
			return;
		}
		n = recv(bufferevent_getfd(s->bev), &c, 1, MSG_PEEK | MSG_DONTWAIT);
		if (n > 0) {
			smtpd_early_talker(s, (size_t)n);
			return;
		}
	}
	smtpd_set_timeouts(s, &idle, &idle);  /* from now on */
	smtpd_request_begin(s);
	smtpd_reply(s, 220, NULL, "%s ESMTP tern", s->conf->hostname);
}

static void
smtpd_greet_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtpd_session *s = arg;

	if (s->flags & SMTPD_F_CLOSING)
		return;
	smtpd_greet(s);
	smtpd_session_reap(s);
}

/* Greet now, or after greet-delay (a timer; reading goes on meanwhile). */
static void
smtpd_greet_start(struct smtpd_session *s)
{
	struct timeval wait = { s->conf->greet_delay, 0 };
	struct timeval idle = { s->conf->idle_timeout, 0 };

	if (s->conf->greet_delay == 0 || !smtpd_pregreet_applies(s) ||
	    (s->greet = evtimer_new(s->loop->base, smtpd_greet_cb, s)) == NULL) {
		smtpd_greet(s);
		return;
	}
	s->flags |= SMTPD_F_GREETING;
	/* the pause is ours: no idle timeout until the 220 is out */
	smtpd_set_timeouts(s, NULL, &idle);
	evtimer_add(s->greet, &wait);
}

/* ---- life cycle ---- */

static struct smtpd_session **
smtpd_session_slot(struct smtpd_loop *loop, uint64_t id)
{
	struct smtpd_session **pp = &loop->buckets[id % SMTPD_SESSION_BUCKETS];
	while (*pp != NULL && (*pp)->id != id)
		pp = &(*pp)->hnext;
	return pp;
}

void
smtpd_session_accept(struct smtpd_loop *loop, int fd, const struct sockaddr *sa,
    socklen_t salen, const struct conf_listen *lc, struct conf *conf,
    const struct sockaddr *via)
{
	char via_str[80] = "";
	struct smtpd_server *srv = loop->srv;
	struct smtpd_session *s = calloc(1, sizeof(*s));

	if (s == NULL) {
		log_warnx("session: out of memory, dropping connection");
		close(fd);
		conf_unref(conf);
		smtpd_connlimit_put(srv, sa);
		srv->nconnections--;
		return;
	}
	s->id = ++srv->next_session_id;
	s->loop = loop;
	s->srv = srv;
	s->conf = conf;
	s->lc = lc;
	memcpy(&s->peer, sa, salen < sizeof(s->peer) ? salen : sizeof(s->peer));
	sockaddr_ntop(sa, s->peer_str, sizeof(s->peer_str));
	if (conf_is_trusted(conf, sa))
		s->flags |= SMTPD_F_TRUSTED;
	if (lc->mode == CONF_LISTEN_LOCAL) {
		/* a local user: who it is comes from the kernel */
		if (smtpd_local_peer(fd, &s->local_uid, s->local_user,
		    sizeof(s->local_user)) < 0) {
			log_warn("local-socket: SO_PEERCRED");
			close(fd);
			srv->nconnections--;
			conf_unref(conf);
			free(s);
			return;
		}
		snprintf(s->peer_str, sizeof(s->peer_str), "local:%s",
		    s->local_user);
		s->flags |= SMTPD_F_TRUSTED;
	}
	s->state = SMTPD_S_CONNECTED;

	evutil_make_socket_nonblocking(fd);
	if (lc->tls == CONF_TLS_IMPLICIT) {
		struct tls_server *t = smtpd_tls_get(srv);
		SSL *ssl = t ? tls_server_ssl_new(t) : NULL;
		tls_server_unref(t);
		if (ssl != NULL) {
			s->bev = bufferevent_openssl_socket_new(loop->base, fd, ssl,
			    BUFFEREVENT_SSL_ACCEPTING,
			    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
			if (s->bev == NULL)
				SSL_free(ssl);
			s->flags |= SMTPD_F_TLS | SMTPD_F_TLS_PENDING;
		}
	} else if ((s->rev = event_new(loop->base, fd, EV_READ | EV_PERSIST,
	    smtpd_session_rcb, s)) != NULL) {
		s->bev = bufferevent_socket_new(loop->base, fd,
		    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	}
	if (s->bev == NULL) {
		if (s->rev != NULL)
			event_free(s->rev);
		close(fd);
		smtpd_connlimit_put(srv, sa);
		srv->nconnections--;
		conf_unref(conf);
		free(s);
		return;
	}
	*smtpd_session_slot(loop, s->id) = s;
	loop->nsessions++;
	METRIC_INC(sessions_total[lc->mode == CONF_LISTEN_SUBMISSION]);
	METRIC_INC(sessions_open[lc->mode == CONF_LISTEN_SUBMISSION]);

	smtpd_session_setup_bev(s);

	s->lifetime = evtimer_new(loop->base, smtpd_session_lifetime_cb, s);
	struct timeval life = { conf->session_timeout, 0 };
	if (s->lifetime != NULL)
		evtimer_add(s->lifetime, &life);

	s->deadline = evtimer_new(loop->base, smtpd_deadline_cb, s);
	smtpd_request_begin(s);
	if (s->deadline != NULL)
		smtpd_deadline_arm(s, smtpd_request_deadline_us(s));

	if (via != NULL) {
		char a[64];
		snprintf(via_str, sizeof(via_str), " via=%s",
		    sockaddr_ntop(via, a, sizeof(a)));
	}
	log_info("session=%016llx connect client=%s%s listener=%s mode=%s",
	    (unsigned long long)s->id, s->peer_str, via_str, lc->spec,
	    conf_listen_mode_name(lc->mode));
	smtpd_greet_start(s);
}

static void
smtpd_session_free(struct smtpd_session *s)
{
	struct smtpd_session **pp = smtpd_session_slot(s->loop, s->id);
	if (*pp == s)
		*pp = s->hnext;
	s->loop->nsessions--;
	METRIC_DEC(sessions_open[s->lc->mode == CONF_LISTEN_SUBMISSION]);
	log_info("session=%016llx disconnect client=%s messages=%llu",
	    (unsigned long long)s->id, s->peer_str,
	    (unsigned long long)s->nmessages);
	smtpd_tx_free(s);
	smtpd_sasl_end(s);
	free(s->auth_user);
	if (s->auth_delay != NULL)
		event_free(s->auth_delay);
	if (s->closer != NULL)
		event_free(s->closer);
	if (s->lifetime != NULL)
		event_free(s->lifetime);
	if (s->deadline != NULL)
		event_free(s->deadline);
	if (s->greet != NULL)
		event_free(s->greet);
	smtpd_read_release(s);          /* before the socket closes */
	smtpd_uflush_stop(s);
	bufferevent_free(s->bev);
	if (s->tout != NULL)
		evbuffer_free(s->tout);
	smtpd_connlimit_put(s->srv, (struct sockaddr *)&s->peer);
	s->srv->nconnections--;
	conf_unref(s->conf);
	free(s);
}

void
smtpd_loop_inbox(struct tq_msg *m, void *arg)
{
	struct smtpd_loop *loop = arg;

	switch (m->type) {
	case TQ_COMMIT_DONE: {
		struct queue_commit_done *d = (struct queue_commit_done *)m;
		struct smtpd_session *s = *smtpd_session_slot(loop, m->reqid);
		if (s == NULL) {
			char qid[QID_STRLEN + 1];
			qid_format(d->qid, qid);
			log_debug("commit done for session=%016llx which has gone "
			    "(id=%s status=%d)", (unsigned long long)m->reqid, qid,
			    d->status);
		} else {
			smtpd_batch_begin(s);
			smtpd_commit_done(s, d);
			smtpd_batch_end(s);
			smtpd_read_watch(s);
			smtpd_session_reap(s);
		}
		free(d);
		break;
	}
	case TQ_AUTH_DONE: {
		struct auth_result *res = (struct auth_result *)m;
		struct smtpd_session *s = *smtpd_session_slot(loop, m->reqid);
		if (s == NULL)
			log_debug("auth result for session=%016llx which has gone",
			    (unsigned long long)m->reqid);
		else {
			smtpd_auth_done(s, res);
			smtpd_session_reap(s);
		}
		explicit_bzero(res, sizeof(*res));
		free(res);
		break;
	}
	default:
		panic("smtpd_loop_inbox: unexpected message type %d", m->type);
	}
}

void
smtpd_loop_shutdown_sessions(struct smtpd_loop *loop)
{
	loop->stopping = 1;
	for (size_t b = 0; b < SMTPD_SESSION_BUCKETS; b++) {
		struct smtpd_session *s = loop->buckets[b], *next;
		for (; s != NULL; s = next) {
			next = s->hnext;
			if (s->state == SMTPD_S_COMMIT || (s->flags & SMTPD_F_CLOSING))
				continue;   /* answered when its commit is done */
			smtpd_tx_reset(s);
			smtpd_reply(s, 421, "4.3.2", "%s Service shutting down",
			    s->conf->hostname);
			smtpd_session_reap(s);
		}
	}
}
