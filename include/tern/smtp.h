/*
 * smtp.h - pure parsers for the SMTP server side (RFC 5321, 1869, 6152,
 * 1870, 3030, 6531): command lines, mailbox paths and ESMTP parameters.
 *
 * Every function here is pure: it reads a byte range, fills a caller-owned
 * struct with pointers into that range (borrowed) or bounded copies, and
 * returns SMTP_PARSE_OK or the reason it refused. No allocation, no globals,
 * no logging, no I/O. The session maps each reason to one reply.
 */
#ifndef TERN_SMTP_H
#define TERN_SMTP_H

#include <stddef.h>
#include <stdint.h>

#define SMTP_CMD_MAX      512   /* command line incl. CRLF (RFC 5321 4.5.3.1.4) */
#define SMTP_TEXT_MAX     1000  /* text line incl. CRLF (4.5.3.1.6) */
#define SMTP_LOCAL_MAX    64    /* local part (4.5.3.1.1) */
#define SMTP_DOMAIN_MAX   255   /* domain (4.5.3.1.2) */
#define SMTP_PATH_MAX     256   /* path incl. <> (4.5.3.1.3) */

enum smtp_parse_status {
	SMTP_PARSE_OK = 0,
	SMTP_PARSE_TOO_LONG,      /* line or element over its limit */
	SMTP_PARSE_BAD_SYNTAX,    /* 501 5.5.2 / 5.5.4 */
	SMTP_PARSE_UNKNOWN,       /* unknown verb: 500 5.5.1 */
	SMTP_PARSE_BAD_CHAR,      /* NUL, control or 8-bit byte in a command */
	SMTP_PARSE_BAD_ADDRESS,   /* mailbox syntax: 501 5.1.3 (RCPT) / 5.1.7 (MAIL) */
	SMTP_PARSE_BAD_PARAM,     /* unknown or malformed ESMTP parameter: 555 5.5.4 */
	SMTP_PARSE_BAD_UTF8,      /* malformed UTF-8 in a mailbox: 501 5.6.7 */
};

enum smtp_verb {
	SMTP_V_NONE = 0,
	SMTP_V_HELO, SMTP_V_EHLO, SMTP_V_MAIL, SMTP_V_RCPT, SMTP_V_DATA,
	SMTP_V_BDAT, SMTP_V_RSET, SMTP_V_NOOP, SMTP_V_QUIT, SMTP_V_VRFY,
	SMTP_V_EXPN, SMTP_V_HELP, SMTP_V_STARTTLS, SMTP_V_AUTH,
};

struct smtp_cmd {
	enum smtp_verb verb;
	const char *arg;          /* borrowed: after the verb and its blank(s); */
	size_t arg_len;           /*   for MAIL/RCPT, the text after "FROM:"/"TO:" */
};

/*
 * Parse one command line, without its CRLF. Verbs are case-insensitive.
 * "MAIL FROM:" and "RCPT TO:" are recognised as verbs with the colon part
 * consumed (a blank before '<' is tolerated, as most MTAs do).
 */
enum smtp_parse_status smtp_parse_command(const char *line, size_t len,
    struct smtp_cmd *out);

/* Mailbox flags. */
#define SMTP_MB_NULL       0x01u  /* "<>" */
#define SMTP_MB_QUOTED     0x02u  /* local part was a quoted string */
#define SMTP_MB_LITERAL    0x04u  /* domain is an address literal [..] */
#define SMTP_MB_POSTMASTER 0x08u  /* bare "<postmaster>" (RCPT only) */
#define SMTP_MB_UTF8       0x10u  /* non-ASCII bytes (needs SMTPUTF8) */
#define SMTP_MB_ROUTE      0x20u  /* a source route was given (and dropped) */
#define SMTP_MB_BARE       0x40u  /* MAIL/RCPT path given without <> (lenient) */

struct smtp_mailbox {
	/* "local@domain" as written (source route dropped), NUL-terminated; "" for <> */
	char addr[SMTP_PATH_MAX + 1];
	size_t len;               /* strlen(addr) */
	size_t domain_off;        /* addr + domain_off is the domain (len - domain_off bytes) */
	unsigned flags;
};

enum smtp_body { SMTP_BODY_7BIT = 0, SMTP_BODY_8BITMIME, SMTP_BODY_BINARYMIME };

struct smtp_mail_params {
	uint64_t size;            /* SIZE=, 0 if absent */
	int has_size;
	enum smtp_body body;      /* BODY= */
	int smtputf8;             /* SMTPUTF8 */
	int requiretls;           /* REQUIRETLS (RFC 8689) */
	char ret;                 /* RET=FULL 'F' / HDRS 'H' / 0 */
	char envid[101];          /* ENVID= (xtext, kept encoded), "" if absent */
	char auth[SMTP_PATH_MAX + 1]; /* AUTH=<mailbox>|<>, kept as xtext, "" if absent */
};

struct smtp_rcpt_params {
	unsigned notify;          /* SMTP_NOTIFY_* bits, 0 = absent */
	char orcpt[SMTP_PATH_MAX + 11]; /* ORCPT= kept as given, "" if absent */
};
#define SMTP_NOTIFY_NEVER   0x1u
#define SMTP_NOTIFY_SUCCESS 0x2u
#define SMTP_NOTIFY_FAILURE 0x4u
#define SMTP_NOTIFY_DELAY   0x8u

/*
 * Parse the argument of MAIL FROM: ("<path> [params]", as returned in
 * smtp_cmd.arg) into mb and p. Unknown parameters are SMTP_PARSE_BAD_PARAM.
 */
enum smtp_parse_status smtp_parse_mail_from(const char *arg, size_t len,
    struct smtp_mailbox *mb, struct smtp_mail_params *p);

/*
 * Same for RCPT TO:. "<postmaster>" alone is accepted (SMTP_MB_POSTMASTER):
 * addr is "postmaster" as written and the domain is empty (domain_off == len).
 */
enum smtp_parse_status smtp_parse_rcpt_to(const char *arg, size_t len,
    struct smtp_mailbox *mb, struct smtp_rcpt_params *p);

/*
 * Parse a bare mailbox "local@domain" (no angle brackets), e.g. from config
 * or a header. Same rules and output as inside a path.
 */
enum smtp_parse_status smtp_parse_mailbox(const char *s, size_t len,
    struct smtp_mailbox *mb);

/*
 * Sender-specified routing in a parsed mailbox (RFC 5321 3.6.1, C, F.2):
 * forms a next hop may take as "relay this further", so an MX that accepts
 * them for its relay domains from anyone can become an open relay. Bits:
 */
#define SMTP_ROUTING_PERCENT 0x1u /* '%' in an unquoted local part (u%h@d) */
#define SMTP_ROUTING_BANG    0x2u /* '!' in an unquoted local part (h!u@d) */
#define SMTP_ROUTING_QUOTED  0x4u /* '@', '%' or '!' in a quoted local part */
#define SMTP_ROUTING_SOURCE  0x8u /* a source route (<@a,@b:u@d>) */

/*
 * Which routing forms mb (as filled by the parsers above) carries; 0 when
 * none. <postmaster> and <> carry none. Pure.
 */
unsigned smtp_mailbox_routing(const struct smtp_mailbox *mb);

/* EHLO/HELO argument: a domain or an address literal. */
enum smtp_parse_status smtp_parse_helo(const char *arg, size_t len);

/* BDAT argument: "<size> [LAST]". */
enum smtp_parse_status smtp_parse_bdat(const char *arg, size_t len,
    uint64_t *size, int *last);

/* Name of a verb for logs ("MAIL"). */
const char *smtp_verb_name(enum smtp_verb v);

#endif
