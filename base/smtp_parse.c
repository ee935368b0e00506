/*
 * smtp_parse.c - pure parsers for the SMTP server side: the command line,
 * reverse/forward paths, bare mailboxes, ESMTP parameters of MAIL and RCPT,
 * the HELO/EHLO argument and the BDAT argument.
 *
 * Runs in:   any thread (the session loop calls it); reentrant.
 * Owns:      nothing. Outputs are pointers into the caller's input or bounded,
 *            always NUL-terminated copies in caller-owned structs.
 * Never:     allocates, logs, does I/O, keeps state, or reads past len. The
 *            input need not be NUL-terminated and may contain any byte.
 * Untrusted: everything here comes straight from the network peer.
 * Implements RFC 5321 4.1.1-4.1.4 and 4.5.3.1 (syntax and limits),
 *            RFC 1869 (ESMTP params), RFC 1870 (SIZE), RFC 6152 / 3030 (BODY,
 *            BDAT), RFC 3461 (RET, ENVID, NOTIFY, ORCPT, xtext),
 *            RFC 4954 (AUTH=), RFC 6531 (SMTPUTF8, UTF-8 mailboxes).
 *
 * Decisions worth knowing (the session relies on them):
 *  - The domain of a mailbox is always what follows the '@' that ends the
 *    local part: a quoted local part ("a@b"@ours), the percent hack
 *    (u%other@ours) and bang paths (a!b@ours) all yield "ours". A second
 *    unquoted '@' is a syntax error. A source route (<@x,@y:u@z>) is dropped
 *    and the domain is "z" (SMTP_MB_ROUTE); route domains must be ASCII LDH.
 *  - A MAIL/RCPT path given without angle brackets ("MAIL FROM:a@b") is
 *    accepted, flagged SMTP_MB_BARE; bare null paths, bare postmaster and
 *    bare source routes are refused. The session may refuse SMTP_MB_BARE.
 *  - Length limits (local 64, domain 255, path 256 incl. <>, command 510
 *    without CRLF) give SMTP_PARSE_TOO_LONG; a DNS label over 63 octets is
 *    SMTP_PARSE_BAD_ADDRESS (it is a syntax rule, not a transport limit).
 *  - <postmaster> (RCPT only): addr is "postmaster" as written, domain_off ==
 *    len (empty domain), flag SMTP_MB_POSTMASTER.
 *  - Non-ASCII bytes must be well-formed UTF-8 (else SMTP_PARSE_BAD_UTF8)
 *    and set SMTP_MB_UTF8; the
 *    parser does not require the SMTPUTF8 parameter, the session does.
 *  - xtext accepts upper- and lower-case hex after '+'. AUTH= is checked as
 *    xtext (or "<>"), not decoded: the session decides whether to trust it.
 *  - Parameter values with non-ASCII bytes are refused (none of ours take
 *    UTF-8). ORCPT longer than its buffer (266) is SMTP_PARSE_BAD_PARAM.
 *  - On any failure every output struct is left empty (zeroed, addr "").
 *  - smtp_mailbox_routing() only names the routing forms a parsed mailbox
 *    carries; whether to refuse them is the session's policy.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>

#include "tern/smtp.h"
#include "tern/util.h"

/* Bits for smtp_parse_domain_name(). */
#define SMTP_PARSE_DOM_UTF8    0x1u  /* U-labels allowed (mailboxes) */
#define SMTP_PARSE_DOM_LENIENT 0x2u  /* HELO: '_' allowed in labels */

struct smtp_parse_verb {
	const char *name;
	enum smtp_verb verb;
};

static const struct smtp_parse_verb smtp_parse_verbs[] = {
	{ "HELO", SMTP_V_HELO },
	{ "EHLO", SMTP_V_EHLO },
	{ "MAIL", SMTP_V_MAIL },
	{ "RCPT", SMTP_V_RCPT },
	{ "DATA", SMTP_V_DATA },
	{ "BDAT", SMTP_V_BDAT },
	{ "RSET", SMTP_V_RSET },
	{ "NOOP", SMTP_V_NOOP },
	{ "QUIT", SMTP_V_QUIT },
	{ "VRFY", SMTP_V_VRFY },
	{ "EXPN", SMTP_V_EXPN },
	{ "HELP", SMTP_V_HELP },
	{ "STARTTLS", SMTP_V_STARTTLS },
	{ "AUTH", SMTP_V_AUTH },
};

static int
smtp_parse_is_blank(unsigned char c)
{
	return c == ' ' || c == '\t';
}

static int
smtp_parse_is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static int
smtp_parse_is_alnum(unsigned char c)
{
	return smtp_parse_is_digit(c) || (c >= 'a' && c <= 'z') ||
	    (c >= 'A' && c <= 'Z');
}

static int
smtp_parse_is_hex(unsigned char c)
{
	return smtp_parse_is_digit(c) || (c >= 'a' && c <= 'f') ||
	    (c >= 'A' && c <= 'F');
}

/* RFC 5322 atext. */
static int
smtp_parse_is_atext(unsigned char c)
{
	if (smtp_parse_is_alnum(c))
		return 1;
	switch (c) {
	case '!': case '#': case '$': case '%': case '&': case '\'':
	case '*': case '+': case '-': case '/': case '=': case '?':
	case '^': case '_': case '`': case '{': case '|': case '}':
	case '~':
		return 1;
	default:
		return 0;
	}
}

/* s[0..n) equals the ASCII literal lit, ignoring case. */
static int
smtp_parse_ieq(const char *s, size_t n, const char *lit)
{
	return ascii_casecmp_n(s, n, lit, strlen(lit)) == 0;
}

/* s[0..n) starts with the ASCII literal lit, ignoring case. */
static int
smtp_parse_iprefix(const char *s, size_t n, const char *lit)
{
	size_t ll = strlen(lit);

	return n >= ll && smtp_parse_ieq(s, ll, lit);
}

/* 1..20 decimal digits that fit in 64 bits. 0 ok, -1 bad. */
static int
smtp_parse_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;

	if (n == 0 || n > 20)
		return -1;
	for (i = 0; i < n; i++) {
		unsigned d;

		if (!smtp_parse_is_digit((unsigned char)s[i]))
			return -1;
		d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

/* Well-formed UTF-8 (no overlongs, surrogates or > U+10FFFF). */
static int
smtp_parse_utf8_valid(const unsigned char *s, size_t n)
{
	size_t i = 0, k;

	while (i < n) {
		if ((k = utf8_seq_len(s + i, n - i)) == 0)
			return 0;
		i += k;
	}
	return 1;
}

/*
 * Dot-separated labels of letters, digits and inner hyphens, 1..63 octets
 * each. With SMTP_PARSE_DOM_UTF8, octets >= 0x80 count as letters and set
 * SMTP_MB_UTF8 in *flags. 0 ok, -1 bad.
 */
static int
smtp_parse_domain_name(const char *s, size_t n, unsigned opts, unsigned *flags)
{
	size_t i, label = 0;
	unsigned char prev = 0;

	if (n == 0)
		return -1;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.') {
			if (label == 0 || prev == '-')
				return -1;
			label = 0;
			prev = c;
			continue;
		}
		if (smtp_parse_is_alnum(c))
			;
		else if (c == '-') {
			if (label == 0)
				return -1;
		} else if (c >= 0x80 && (opts & SMTP_PARSE_DOM_UTF8))
			*flags |= SMTP_MB_UTF8;
		else if (c == '_' && (opts & SMTP_PARSE_DOM_LENIENT))
			;
		else
			return -1;
		if (++label > 63)
			return -1;
		prev = c;
	}
	if (label == 0 || prev == '-')
		return -1;
	return 0;
}

/*
 * Address literal "[1.2.3.4]" or "[IPv6:...]" (RFC 5321 4.1.3), checked with
 * inet_pton. General address literals ("[tag:...]") are refused. 0 ok, -1 bad.
 */
static int
smtp_parse_literal(const char *s, size_t n)
{
	char buf[INET6_ADDRSTRLEN + 1];
	unsigned char bin[sizeof(struct in6_addr)];
	int af = AF_INET;
	size_t i;

	if (n < 3 || s[0] != '[' || s[n - 1] != ']')
		return -1;
	s++;
	n -= 2;
	if (smtp_parse_iprefix(s, n, "IPv6:")) {
		af = AF_INET6;
		s += 5;
		n -= 5;
	}
	if (n == 0 || n >= sizeof(buf))
		return -1;
	/* Only the characters an address can have: no NUL reaches inet_pton. */
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (af == AF_INET ? !(smtp_parse_is_digit(c) || c == '.') :
		    !(smtp_parse_is_hex(c) || c == ':' || c == '.'))
			return -1;
	}
	memcpy(buf, s, n);
	buf[n] = '\0';
	return inet_pton(af, buf, bin) == 1 ? 0 : -1;
}

/*
 * Local part at s[0..n): a dot-string or a quoted string (RFC 5321 4.1.2,
 * with RFC 6531 UTF-8). Stores its length in *llen; the byte after it (if
 * any) is for the caller to check.
 */
static enum smtp_parse_status
smtp_parse_local(const char *s, size_t n, size_t *llen, unsigned *flags)
{
	size_t i;

	if (n == 0)
		return SMTP_PARSE_BAD_ADDRESS;
	if (s[0] == '"') {
		for (i = 1; i < n; i++) {
			unsigned char c = (unsigned char)s[i];

			if (c == '"') {
				*llen = i + 1;
				*flags |= SMTP_MB_QUOTED;
				return SMTP_PARSE_OK;
			}
			if (c == '\\') {
				/* quoted-pairSMTP: %d92 %d32-126 */
				if (i + 1 >= n || (unsigned char)s[i + 1] < 32 ||
				    (unsigned char)s[i + 1] > 126)
					return SMTP_PARSE_BAD_ADDRESS;
				i++;
			} else if (c >= 0x80)
				*flags |= SMTP_MB_UTF8;
			else if (c < 32 || c > 126)
				return SMTP_PARSE_BAD_ADDRESS;
			/* qtextSMTP: 32-33, 35-91, 93-126 (" and \ handled) */
		}
		return SMTP_PARSE_BAD_ADDRESS;          /* unterminated */
	}
	for (i = 0; i < n && s[i] != '@'; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.') {
			if (i == 0 || s[i - 1] == '.')
				return SMTP_PARSE_BAD_ADDRESS;
		} else if (c >= 0x80)
			*flags |= SMTP_MB_UTF8;
		else if (!smtp_parse_is_atext(c))
			return SMTP_PARSE_BAD_ADDRESS;
	}
	if (i == 0 || s[i - 1] == '.')
		return SMTP_PARSE_BAD_ADDRESS;
	*llen = i;
	return SMTP_PARSE_OK;
}

static void
smtp_parse_mailbox_reset(struct smtp_mailbox *mb)
{
	mb->addr[0] = '\0';
	mb->len = 0;
	mb->domain_off = 0;
	mb->flags = 0;
}

/* "local@domain" at s[0..n) into mb, or a reason; mb untouched on failure. */
static enum smtp_parse_status
smtp_parse_mailbox_core(const char *s, size_t n, struct smtp_mailbox *mb,
    unsigned flags)
{
	enum smtp_parse_status st;
	size_t llen = 0, dlen;
	const char *d;

	st = smtp_parse_local(s, n, &llen, &flags);
	if (st != SMTP_PARSE_OK)
		return st;
	if (llen > SMTP_LOCAL_MAX)
		return SMTP_PARSE_TOO_LONG;
	if (llen >= n || s[llen] != '@')
		return SMTP_PARSE_BAD_ADDRESS;
	d = s + llen + 1;
	dlen = n - llen - 1;
	if (dlen > SMTP_DOMAIN_MAX)
		return SMTP_PARSE_TOO_LONG;
	if (dlen > 0 && d[0] == '[') {
		if (smtp_parse_literal(d, dlen) != 0)
			return SMTP_PARSE_BAD_ADDRESS;
		flags |= SMTP_MB_LITERAL;
	} else if (smtp_parse_domain_name(d, dlen, SMTP_PARSE_DOM_UTF8,
	    &flags) != 0)
		return SMTP_PARSE_BAD_ADDRESS;
	if ((flags & SMTP_MB_UTF8) &&
	    !smtp_parse_utf8_valid((const unsigned char *)s, n))
		return SMTP_PARSE_BAD_UTF8;
	if (n > SMTP_PATH_MAX - 2)
		return SMTP_PARSE_TOO_LONG;
	memcpy(mb->addr, s, n);
	mb->addr[n] = '\0';
	mb->len = n;
	mb->domain_off = llen + 1;
	mb->flags = flags;
	return SMTP_PARSE_OK;
}

/*
 * Where a path starting at s[i] ends: the '>' (bracketed) or the first blank
 * (bare), skipping quoted strings. SIZE_MAX if there is no end. This only
 * finds a candidate; the mailbox parser validates every byte inside.
 */
static size_t
smtp_parse_path_end(const char *s, size_t n, size_t i, int bare)
{
	int inq = 0;

	for (; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (inq) {
			if (c == '\\' && i + 1 < n)
				i++;
			else if (c == '"')
				inq = 0;
			continue;
		}
		if (c == '"')
			inq = 1;
		else if (bare ? smtp_parse_is_blank(c) : c == '>')
			return i;
	}
	return (bare && !inq) ? n : SIZE_MAX;
}

/*
 * Source route "@a,@b:" at s[0..n) (RFC 5321 A-d-l). Stores the length of the
 * route including its ':' in *rlen.
 */
static enum smtp_parse_status
smtp_parse_route(const char *s, size_t n, size_t *rlen, unsigned *flags)
{
	size_t i = 0;

	for (;;) {
		size_t start;

		if (i >= n || s[i] != '@')
			return SMTP_PARSE_BAD_ADDRESS;
		start = ++i;
		while (i < n && s[i] != ',' && s[i] != ':')
			i++;
		if (i >= n)
			return SMTP_PARSE_BAD_ADDRESS;
		/* ASCII only: the route is dropped, never worth SMTPUTF8 */
		if (smtp_parse_domain_name(s + start, i - start, 0, flags) != 0)
			return SMTP_PARSE_BAD_ADDRESS;
		if (s[i++] == ':')
			break;
	}
	*rlen = i;
	return SMTP_PARSE_OK;
}

/*
 * A reverse-path (is_rcpt 0) or forward-path (is_rcpt 1) at the start of
 * s[0..n). Stores in *used how many bytes the path took.
 */
static enum smtp_parse_status
smtp_parse_path(const char *s, size_t n, int is_rcpt, struct smtp_mailbox *mb,
    size_t *used)
{
	enum smtp_parse_status st;
	unsigned flags = 0;
	size_t end, rlen = 0;
	const char *in;
	size_t inlen;

	if (n == 0)
		return SMTP_PARSE_BAD_SYNTAX;
	if (s[0] != '<') {
		end = smtp_parse_path_end(s, n, 0, 1);
		if (end == SIZE_MAX)
			return SMTP_PARSE_BAD_ADDRESS;
		if (end + 2 > SMTP_PATH_MAX)
			return SMTP_PARSE_TOO_LONG;
		st = smtp_parse_mailbox_core(s, end, mb, SMTP_MB_BARE);
		if (st != SMTP_PARSE_OK)
			return st;
		*used = end;
		return SMTP_PARSE_OK;
	}
	end = smtp_parse_path_end(s, n, 1, 0);
	if (end == SIZE_MAX)
		return SMTP_PARSE_BAD_ADDRESS;
	if (end + 1 > SMTP_PATH_MAX)
		return SMTP_PARSE_TOO_LONG;
	*used = end + 1;
	in = s + 1;
	inlen = end - 1;
	if (inlen == 0) {
		if (is_rcpt)
			return SMTP_PARSE_BAD_ADDRESS;
		smtp_parse_mailbox_reset(mb);
		mb->flags = SMTP_MB_NULL;
		return SMTP_PARSE_OK;
	}
	if (smtp_parse_ieq(in, inlen, "postmaster")) {
		if (!is_rcpt)
			return SMTP_PARSE_BAD_ADDRESS;
		memcpy(mb->addr, in, inlen);
		mb->addr[inlen] = '\0';
		mb->len = inlen;
		mb->domain_off = inlen;
		mb->flags = SMTP_MB_POSTMASTER;
		return SMTP_PARSE_OK;
	}
	if (in[0] == '@') {
		st = smtp_parse_route(in, inlen, &rlen, &flags);
		if (st != SMTP_PARSE_OK)
			return st;
		flags |= SMTP_MB_ROUTE;
	}
	return smtp_parse_mailbox_core(in + rlen, inlen - rlen, mb, flags);
}

unsigned
smtp_mailbox_routing(const struct smtp_mailbox *mb)
{
	unsigned r = 0;
	size_t llen;

	if (mb->flags & (SMTP_MB_NULL | SMTP_MB_POSTMASTER))
		return 0;
	if (mb->flags & SMTP_MB_ROUTE)
		r |= SMTP_ROUTING_SOURCE;
	/* the local part is addr[0 .. domain_off - 1), before its '@' */
	llen = mb->domain_off > 0 && mb->domain_off <= mb->len ?
	    mb->domain_off - 1 : 0;
	for (size_t i = 0; i < llen; i++) {
		char c = mb->addr[i];

		if (mb->flags & SMTP_MB_QUOTED) {
			if (c == '@' || c == '%' || c == '!')
				r |= SMTP_ROUTING_QUOTED;
		} else if (c == '%')
			r |= SMTP_ROUTING_PERCENT;
		else if (c == '!')
			r |= SMTP_ROUTING_BANG;
	}
	return r;
}

/* RFC 3461 xtext: xchar (33-126 but '+' '=') or "+HH". 0 ok, -1 bad. */
static int
smtp_parse_xtext(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '+') {
			if (n - i < 3 || !smtp_parse_is_hex((unsigned char)s[i + 1]) ||
			    !smtp_parse_is_hex((unsigned char)s[i + 2]))
				return -1;
			i += 2;
		} else if (c < 33 || c > 126 || c == '=')
			return -1;
	}
	return 0;
}

/* Copy s[0..n) into dst[size] with a NUL; -1 if it does not fit. */
static int
smtp_parse_copy(char *dst, size_t size, const char *s, size_t n)
{
	if (n >= size)
		return -1;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

/* NOTIFY=NEVER | SUCCESS,FAILURE,DELAY (any order, each once). */
static int
smtp_parse_notify(const char *v, size_t n, unsigned *out)
{
	unsigned bits = 0, b;
	size_t i = 0;

	for (;;) {
		size_t start = i;

		while (i < n && v[i] != ',')
			i++;
		if (smtp_parse_ieq(v + start, i - start, "NEVER"))
			b = SMTP_NOTIFY_NEVER;
		else if (smtp_parse_ieq(v + start, i - start, "SUCCESS"))
			b = SMTP_NOTIFY_SUCCESS;
		else if (smtp_parse_ieq(v + start, i - start, "FAILURE"))
			b = SMTP_NOTIFY_FAILURE;
		else if (smtp_parse_ieq(v + start, i - start, "DELAY"))
			b = SMTP_NOTIFY_DELAY;
		else
			return -1;
		if (bits & b)
			return -1;
		bits |= b;
		if (i == n)
			break;
		i++;                    /* ',' */
	}
	if ((bits & SMTP_NOTIFY_NEVER) && bits != SMTP_NOTIFY_NEVER)
		return -1;
	*out = bits;
	return 0;
}

/* ORCPT=addr-type;xtext, addr-type being letters, digits and '-'. */
static int
smtp_parse_orcpt(const char *v, size_t n)
{
	size_t i;

	for (i = 0; i < n && v[i] != ';'; i++)
		if (!smtp_parse_is_alnum((unsigned char)v[i]) && v[i] != '-')
			return -1;
	if (i == 0 || i == n || i + 1 == n)
		return -1;
	return smtp_parse_xtext(v + i + 1, n - i - 1);
}

#define SMTP_PARSE_P_SIZE     0x01u
#define SMTP_PARSE_P_BODY     0x02u
#define SMTP_PARSE_P_UTF8     0x04u
#define SMTP_PARSE_P_RET      0x08u
#define SMTP_PARSE_P_ENVID    0x10u
#define SMTP_PARSE_P_AUTH     0x20u
#define SMTP_PARSE_P_NOTIFY   0x40u
#define SMTP_PARSE_P_ORCPT    0x80u
#define SMTP_PARSE_P_REQTLS   0x100u

/* One MAIL parameter; key k[0..kn), value v[0..vn) or v == NULL. 0 / -1. */
static int
smtp_parse_mail_param(const char *k, size_t kn, const char *v, size_t vn,
    struct smtp_mail_params *p, unsigned *seen)
{
	unsigned bit;

	if (smtp_parse_ieq(k, kn, "SIZE"))
		bit = SMTP_PARSE_P_SIZE;
	else if (smtp_parse_ieq(k, kn, "BODY"))
		bit = SMTP_PARSE_P_BODY;
	else if (smtp_parse_ieq(k, kn, "SMTPUTF8"))
		bit = SMTP_PARSE_P_UTF8;
	else if (smtp_parse_ieq(k, kn, "RET"))
		bit = SMTP_PARSE_P_RET;
	else if (smtp_parse_ieq(k, kn, "ENVID"))
		bit = SMTP_PARSE_P_ENVID;
	else if (smtp_parse_ieq(k, kn, "AUTH"))
		bit = SMTP_PARSE_P_AUTH;
	else if (smtp_parse_ieq(k, kn, "REQUIRETLS"))
		bit = SMTP_PARSE_P_REQTLS;
	else
		return -1;
	if (*seen & bit)
		return -1;
	*seen |= bit;
	if (bit == SMTP_PARSE_P_UTF8 || bit == SMTP_PARSE_P_REQTLS) {
		if (v != NULL)
			return -1;
		if (bit == SMTP_PARSE_P_UTF8)
			p->smtputf8 = 1;
		else
			p->requiretls = 1;
		return 0;
	}
	if (v == NULL)
		return -1;
	switch (bit) {
	case SMTP_PARSE_P_SIZE:
		if (smtp_parse_u64(v, vn, &p->size) != 0)
			return -1;
		p->has_size = 1;
		return 0;
	case SMTP_PARSE_P_BODY:
		if (smtp_parse_ieq(v, vn, "7BIT"))
			p->body = SMTP_BODY_7BIT;
		else if (smtp_parse_ieq(v, vn, "8BITMIME"))
			p->body = SMTP_BODY_8BITMIME;
		else if (smtp_parse_ieq(v, vn, "BINARYMIME"))
			p->body = SMTP_BODY_BINARYMIME;
		else
			return -1;
		return 0;
	case SMTP_PARSE_P_RET:
		if (smtp_parse_ieq(v, vn, "FULL"))
			p->ret = 'F';
		else if (smtp_parse_ieq(v, vn, "HDRS"))
			p->ret = 'H';
		else
			return -1;
		return 0;
	case SMTP_PARSE_P_ENVID:
		if (smtp_parse_xtext(v, vn) != 0)
			return -1;
		return smtp_parse_copy(p->envid, sizeof(p->envid), v, vn);
	default:                /* SMTP_PARSE_P_AUTH */
		if (!(vn == 2 && v[0] == '<' && v[1] == '>') &&
		    smtp_parse_xtext(v, vn) != 0)
			return -1;
		return smtp_parse_copy(p->auth, sizeof(p->auth), v, vn);
	}
}

/* One RCPT parameter, as above. */
static int
smtp_parse_rcpt_param(const char *k, size_t kn, const char *v, size_t vn,
    struct smtp_rcpt_params *p, unsigned *seen)
{
	if (v == NULL)
		return -1;
	if (smtp_parse_ieq(k, kn, "NOTIFY")) {
		if (*seen & SMTP_PARSE_P_NOTIFY)
			return -1;
		*seen |= SMTP_PARSE_P_NOTIFY;
		return smtp_parse_notify(v, vn, &p->notify);
	}
	if (smtp_parse_ieq(k, kn, "ORCPT")) {
		if (*seen & SMTP_PARSE_P_ORCPT)
			return -1;
		*seen |= SMTP_PARSE_P_ORCPT;
		if (smtp_parse_orcpt(v, vn) != 0)
			return -1;
		return smtp_parse_copy(p->orcpt, sizeof(p->orcpt), v, vn);
	}
	return -1;
}

/*
 * Blank-separated "KEY[=VALUE]" list at s[0..n) (RFC 5321 4.1.2
 * Mail-parameters); exactly one of mp/rp is set.
 */
static enum smtp_parse_status
smtp_parse_params(const char *s, size_t n, struct smtp_mail_params *mp,
    struct smtp_rcpt_params *rp)
{
	unsigned seen = 0;
	size_t i = 0;

	for (;;) {
		const char *k, *v = NULL;
		size_t kn, vn = 0;
		int r;

		while (i < n && smtp_parse_is_blank((unsigned char)s[i]))
			i++;
		if (i == n)
			return SMTP_PARSE_OK;
		/* esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-") */
		k = s + i;
		if (!smtp_parse_is_alnum((unsigned char)s[i]))
			return SMTP_PARSE_BAD_PARAM;
		while (i < n && (smtp_parse_is_alnum((unsigned char)s[i]) ||
		    s[i] == '-'))
			i++;
		kn = (size_t)(s + i - k);
		if (i < n && s[i] == '=') {
			/* esmtp-value = 1*(%d33-60 / %d62-126) */
			v = s + ++i;
			while (i < n && !smtp_parse_is_blank((unsigned char)s[i])) {
				unsigned char c = (unsigned char)s[i];

				if (c < 33 || c > 126 || c == '=')
					return SMTP_PARSE_BAD_PARAM;
				i++;
			}
			vn = (size_t)(s + i - v);
			if (vn == 0)
				return SMTP_PARSE_BAD_PARAM;
		} else if (i < n && !smtp_parse_is_blank((unsigned char)s[i]))
			return SMTP_PARSE_BAD_PARAM;
		if (mp != NULL)
			r = smtp_parse_mail_param(k, kn, v, vn, mp, &seen);
		else
			r = smtp_parse_rcpt_param(k, kn, v, vn, rp, &seen);
		if (r != 0)
			return SMTP_PARSE_BAD_PARAM;
	}
}

/* Shared by MAIL and RCPT: "<path>[ params]" with blanks trimmed. */
static enum smtp_parse_status
smtp_parse_path_params(const char *arg, size_t len, int is_rcpt,
    struct smtp_mailbox *mb, struct smtp_mail_params *mp,
    struct smtp_rcpt_params *rp)
{
	enum smtp_parse_status st;
	size_t used = 0;

	while (len > 0 && smtp_parse_is_blank((unsigned char)arg[0])) {
		arg++;
		len--;
	}
	while (len > 0 && smtp_parse_is_blank((unsigned char)arg[len - 1]))
		len--;
	if (len == 0)
		return SMTP_PARSE_BAD_SYNTAX;
	st = smtp_parse_path(arg, len, is_rcpt, mb, &used);
	if (st != SMTP_PARSE_OK)
		return st;
	if (used < len && !smtp_parse_is_blank((unsigned char)arg[used]))
		return SMTP_PARSE_BAD_ADDRESS;
	return smtp_parse_params(arg + used, len - used, mp, rp);
}

/* Clear what MAIL/RCPT parsing fills (mp or rp may be NULL). */
static void
smtp_parse_path_clear(struct smtp_mailbox *mb, struct smtp_mail_params *mp,
    struct smtp_rcpt_params *rp)
{
	smtp_parse_mailbox_reset(mb);
	if (mp != NULL)
		memset(mp, 0, sizeof(*mp));
	if (rp != NULL)
		memset(rp, 0, sizeof(*rp));
}

/*
 * MAIL FROM and RCPT TO, one parser: outputs cleared first and cleared
 * again on an error, so a caller never sees half a result. Exactly one of
 * mp/rp is set.
 */
static enum smtp_parse_status
smtp_parse_path_cmd(const char *arg, size_t len, int is_rcpt,
    struct smtp_mailbox *mb, struct smtp_mail_params *mp,
    struct smtp_rcpt_params *rp)
{
	enum smtp_parse_status st;

	smtp_parse_path_clear(mb, mp, rp);
	st = smtp_parse_path_params(arg, len, is_rcpt, mb, mp, rp);
	if (st != SMTP_PARSE_OK)
		smtp_parse_path_clear(mb, mp, rp);
	return st;
}

enum smtp_parse_status
smtp_parse_mail_from(const char *arg, size_t len, struct smtp_mailbox *mb,
    struct smtp_mail_params *p)
{
	return smtp_parse_path_cmd(arg, len, 0, mb, p, NULL);
}

enum smtp_parse_status
smtp_parse_rcpt_to(const char *arg, size_t len, struct smtp_mailbox *mb,
    struct smtp_rcpt_params *p)
{
	return smtp_parse_path_cmd(arg, len, 1, mb, NULL, p);
}

enum smtp_parse_status
smtp_parse_mailbox(const char *s, size_t len, struct smtp_mailbox *mb)
{
	smtp_parse_mailbox_reset(mb);
	if (len == 0)
		return SMTP_PARSE_BAD_ADDRESS;
	return smtp_parse_mailbox_core(s, len, mb, 0);
}

enum smtp_parse_status
smtp_parse_helo(const char *arg, size_t len)
{
	unsigned flags = 0;
	size_t i;

	if (len == 0)
		return SMTP_PARSE_BAD_SYNTAX;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)arg[i];

		if ((c < 32 && c != '\t') || c >= 127)
			return SMTP_PARSE_BAD_CHAR;
	}
	for (i = 0; i < len; i++)
		if (smtp_parse_is_blank((unsigned char)arg[i]))
			return SMTP_PARSE_BAD_SYNTAX;
	if (arg[0] == '[')
		return smtp_parse_literal(arg, len) == 0 ? SMTP_PARSE_OK :
		    SMTP_PARSE_BAD_SYNTAX;
	if (len > 1 && arg[len - 1] == '.')
		len--;          /* a trailing dot does not count to the limit */
	if (len > SMTP_DOMAIN_MAX)
		return SMTP_PARSE_TOO_LONG;
	return smtp_parse_domain_name(arg, len, SMTP_PARSE_DOM_LENIENT,
	    &flags) == 0 ? SMTP_PARSE_OK : SMTP_PARSE_BAD_SYNTAX;
}

enum smtp_parse_status
smtp_parse_bdat(const char *arg, size_t len, uint64_t *size, int *last)
{
	size_t i = 0, j;

	*size = 0;
	*last = 0;
	while (len > 0 && smtp_parse_is_blank((unsigned char)arg[len - 1]))
		len--;
	while (i < len && smtp_parse_is_digit((unsigned char)arg[i]))
		i++;
	if (smtp_parse_u64(arg, i, size) != 0) {
		*size = 0;
		return SMTP_PARSE_BAD_SYNTAX;
	}
	if (i == len)
		return SMTP_PARSE_OK;
	for (j = i; j < len && smtp_parse_is_blank((unsigned char)arg[j]); j++)
		;
	if (j == i || !smtp_parse_ieq(arg + j, len - j, "LAST")) {
		*size = 0;
		return SMTP_PARSE_BAD_SYNTAX;
	}
	*last = 1;
	return SMTP_PARSE_OK;
}

enum smtp_parse_status
smtp_parse_command(const char *line, size_t len, struct smtp_cmd *out)
{
	const struct smtp_parse_verb *v = NULL;
	size_t i, vlen, a;

	out->verb = SMTP_V_NONE;
	out->arg = line;
	out->arg_len = 0;
	if (len > SMTP_CMD_MAX - 2)
		return SMTP_PARSE_TOO_LONG;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)line[i];

		if ((c < 32 && c != '\t') || c == 127)
			return SMTP_PARSE_BAD_CHAR;
	}
	for (vlen = 0; vlen < len && !smtp_parse_is_blank((unsigned char)line[vlen]);
	    vlen++)
		if ((unsigned char)line[vlen] >= 0x80)
			return SMTP_PARSE_BAD_CHAR;
	for (i = 0; i < sizeof(smtp_parse_verbs) / sizeof(smtp_parse_verbs[0]); i++)
		if (smtp_parse_ieq(line, vlen, smtp_parse_verbs[i].name)) {
			v = &smtp_parse_verbs[i];
			break;
		}
	if (v == NULL)
		return SMTP_PARSE_UNKNOWN;

	for (a = vlen; a < len && smtp_parse_is_blank((unsigned char)line[a]); a++)
		;
	if (v->verb == SMTP_V_MAIL || v->verb == SMTP_V_RCPT) {
		const char *kw = v->verb == SMTP_V_MAIL ? "FROM:" : "TO:";

		/* 8-bit bytes are refused before the colon by the match itself */
		if (!smtp_parse_iprefix(line + a, len - a, kw))
			return SMTP_PARSE_BAD_SYNTAX;
		for (a += strlen(kw); a < len &&
		    smtp_parse_is_blank((unsigned char)line[a]); a++)
			;
	} else {
		for (i = a; i < len; i++)
			if ((unsigned char)line[i] >= 0x80)
				return SMTP_PARSE_BAD_CHAR;
	}
	while (len > a && smtp_parse_is_blank((unsigned char)line[len - 1]))
		len--;
	out->verb = v->verb;
	out->arg = line + a;
	out->arg_len = len - a;
	return SMTP_PARSE_OK;
}

const char *
smtp_verb_name(enum smtp_verb v)
{
	size_t i;

	for (i = 0; i < sizeof(smtp_parse_verbs) / sizeof(smtp_parse_verbs[0]); i++)
		if (smtp_parse_verbs[i].verb == v)
			return smtp_parse_verbs[i].name;
	return "UNKNOWN";
}
