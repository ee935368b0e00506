/*
 * smtp_reply.h - parser of SMTP server replies, for the delivery client
 * (RFC 5321 4.2, RFC 3463 enhanced status codes, RFC 2034, EHLO keywords).
 *
 * Pure: functions over byte ranges, no allocation, no globals, no logging.
 * The input is untrusted (any server on the internet).
 */
#ifndef TERN_SMTP_REPLY_H
#define TERN_SMTP_REPLY_H

#include <stddef.h>
#include <stdint.h>

#define SMTP_REPLY_LINE_MAX  512      /* one line, CRLF included (RFC 5321 4.5.3.1.5) */
#define SMTP_REPLY_MAX       65536    /* a whole multi-line reply */
#define SMTP_REPLY_TEXT_MAX  512      /* text kept, NUL included */

enum smtp_reply_status {
	SMTP_REPLY_OK = 0,        /* one complete reply; out filled */
	SMTP_REPLY_MORE,          /* no complete reply yet: read more */
	SMTP_REPLY_BAD_SYNTAX,    /* a line is not "DDD[ -]text" */
	SMTP_REPLY_BAD_CODE,      /* a continuation line changed the code */
	SMTP_REPLY_TOO_LONG,      /* a line over LINE_MAX or reply over REPLY_MAX */
};

struct smtp_reply {
	int code;                       /* 200..599 */
	char enh[16];                   /* "5.1.1", or "" when absent/invalid */
	char text[SMTP_REPLY_TEXT_MAX]; /* the lines' text without code and
	                                   enhanced code, joined by " ", bytes
	                                   outside printable ASCII as '?';
	                                   truncated when longer */
	size_t nlines;
	size_t len;                     /* bytes of input the reply used */
};

/*
 * Parse the first complete reply in p[0..len). Lines end in CRLF (a bare LF
 * is accepted). A line is three digits (first 2-5, second 0-5), then '-'
 * (more lines follow), ' ' or the line end (last line), then text. The
 * enhanced code is taken from the first line when its class matches the
 * code's first digit (2, 4 or 5) and is removed from every line's text where
 * it appears. Returns SMTP_REPLY_MORE when p holds no complete reply yet
 * but could still become one (the caller must give up at SMTP_REPLY_MAX
 * anyway: this function says TOO_LONG as soon as it can tell).
 */
enum smtp_reply_status smtp_reply_parse(const char *p, size_t len,
    struct smtp_reply *out);

/* Extensions from an EHLO reply (RFC 5321 4.1.1.1). */
#define SMTP_EXT_PIPELINING    0x001u   /* RFC 2920 */
#define SMTP_EXT_SIZE          0x002u   /* RFC 1870 */
#define SMTP_EXT_8BITMIME      0x004u   /* RFC 6152 */
#define SMTP_EXT_STARTTLS      0x008u   /* RFC 3207 */
#define SMTP_EXT_ENHANCED      0x010u   /* RFC 2034 ENHANCEDSTATUSCODES */
#define SMTP_EXT_SMTPUTF8      0x020u   /* RFC 6531 */
#define SMTP_EXT_DSN           0x040u   /* RFC 3461 */
#define SMTP_EXT_CHUNKING      0x080u   /* RFC 3030 */
#define SMTP_EXT_REQUIRETLS    0x100u   /* RFC 8689 */

struct smtp_ehlo {
	unsigned ext;                   /* SMTP_EXT_* */
	uint64_t size;                  /* SIZE limit; 0 = none announced */
};

/*
 * Keywords of the complete reply p[0..len) (the bytes smtp_reply_parse()
 * consumed; its first line is the greeting and is skipped). Keywords are
 * matched without regard to case; unknown ones are ignored; a SIZE whose
 * value is missing or not a number means no limit.
 */
void smtp_ehlo_parse(const char *p, size_t len, struct smtp_ehlo *out);

/* Name of a status, for messages: "ok", "more", "bad syntax", ... */
const char *smtp_reply_strstatus(enum smtp_reply_status st);

#endif
