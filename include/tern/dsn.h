/*
 * dsn.h - delivery status notifications (RFC 3464, RFC 3461, RFC 3834):
 * the bounce and delay-warning messages the scheduler queues to a message's
 * envelope sender. Pure: no I/O, no globals, no logging; the clock and the
 * randomness come in as arguments.
 */
#ifndef TERN_DSN_H
#define TERN_DSN_H

#include <stddef.h>
#include <stdint.h>

/* At most this many bytes of the original header are returned. */
#define DSN_HEADERS_MAX     (64u * 1024u)
/* Diagnostic text longer than this is cut (with "...") before folding. */
#define DSN_DIAG_MAX        1024u
/*
 * RET=FULL returns a failed message whole when it is at most this big (and
 * is plain RFC 5322 text: CRLF lines of at most 998 octets, no NUL); a
 * bigger or binary one gets its header only, with a note saying so.
 */
#define DSN_FULL_MAX        (1024u * 1024u)

enum dsn_action {
	DSN_ACTION_FAILED,      /* Action: failed (bounce, expiry) */
	DSN_ACTION_DELAYED,     /* Action: delayed (delay warning) */
	DSN_ACTION_RELAYED,     /* Action: relayed (NOTIFY=SUCCESS, next hop
	                           without DSN: RFC 3461 4.2) */
};

struct dsn_rcpt {
	const char *addr;       /* Final-Recipient, "local@domain" */
	const char *orcpt;      /* ORCPT as given ("rfc822;a@b") or NULL */
	enum dsn_action action;
	const char *status;     /* enhanced status, "5.1.1"; NULL: 5.0.0/4.0.0 */
	const char *remote_mta; /* host of the last attempt or NULL */
	const char *diag;       /* the server's reply or our reason, or NULL */
	int diag_smtp;          /* 1: diag came from a remote hop; it is typed
	                           "smtp;" when it is a reply ("450 4.2.0 ..."),
	                           our own words stay "X-tern;" */
	int64_t last_attempt;   /* Last-Attempt-Date; 0 = none */
	int64_t retry_until;    /* Will-Retry-Until (delayed only); 0 = none */
};

struct dsn_msg {
	const char *hostname;   /* Reporting-MTA and the From domain */
	uint64_t qid;           /* the original message's queue id */
	const char *sender;     /* original envelope sender: the DSN's To */
	const char *envid;      /* ENVID as given (xtext) or NULL */
	int64_t arrival;        /* Arrival-Date */
	int64_t now;            /* Date */
	const struct dsn_rcpt *rcpts;
	size_t nrcpt;
	const char *orig;       /* the original message (or at least its header) */
	size_t origlen;
	int ret_full;           /* RET=FULL: return a failed message whole */
	int utf8;               /* the message came with SMTPUTF8: RFC 6533 */
	uint64_t rnd;           /* randomness for the boundary and Message-ID */
};

enum dsn_status {
	DSN_OK = 0,
	DSN_NULL_SENDER,        /* never answer <> (RFC 5321 4.5.5, RFC 3464) */
	DSN_NO_RCPT,
	DSN_NOMEM,
};

/* dsn_build() output flags */
#define DSN_F_8BIT  0x1u        /* the report carries 8-bit octets (in the
                                   returned header or an address) */

/*
 * Build a complete RFC 5322 message: multipart/report with a text/plain
 * explanation, a message/delivery-status part and the original header as
 * text/rfc822-headers; with ret_full and a failed recipient, the whole
 * original as message/rfc822 instead (up to DSN_FULL_MAX, see there). CRLF line ends, no line
 * over 998 octets, every peer text stripped of control characters and
 * folded. Subject "Undelivered Mail Returned to Sender" when any recipient
 * failed, else "Delayed Mail (still being retried)" when any is delayed,
 * else "Relayed Mail (no delivery report to follow)". On DSN_OK *out (caller
 * frees) holds *outlen bytes and *flags the DSN_F_* bits.
 */
enum dsn_status dsn_build(const struct dsn_msg *m, char **out, size_t *outlen,
    unsigned *flags);

/* 1 if text is an SMTP reply: three digits 2xx-5xx, then a space or the end. */
int dsn_diag_is_smtp(const char *text);

/*
 * Decode the xtext of an ORCPT value (RFC 3461 4.2: "+XX" is the octet of
 * hex XX) into out (outcap bytes, NUL-terminated). "rfc822;a+2Bb@x" becomes
 * "rfc822; a+b@x" (a space after the type, as RFC 3464 writes it). Returns
 * 0, or -1 when the value is not valid xtext (bad or lower-case hex, a '+'
 * cut short, an octet out of range) or does not fit.
 */
int dsn_orcpt_decode(const char *orcpt, char *out, size_t outcap);

/*
 * Copy the header of a message p[0..len) (everything before the first empty
 * line, or all of it) into out (outcap bytes) as whole CRLF-terminated
 * lines: bare CR and bare LF become CRLF, NUL becomes a space, lines over
 * 998 octets are broken (the rest continues on a folded line starting with
 * a space), and no line is cut in half: output stops at the last whole line
 * that fits in min(outcap, max). Returns the bytes written. Pure; fuzzed.
 */
size_t dsn_headers_extract(const char *p, size_t len, size_t max, char *out,
    size_t outcap);

#endif
