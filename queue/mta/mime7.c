/*
 * mime7.c - 8-bit to 7-bit conversion of a message for a next hop without
 * 8BITMIME (tern/mime7.h says what is converted and what is refused).
 *
 * Pure: one pass over the message in memory, output into a new buffer.
 * Untrusted input: the whole message, as a client sent it. Every scan is
 * bounded by the entity's length; nesting is bounded by MIME7_DEPTH; header
 * values are read into fixed buffers (longer ones are cut, which can only
 * make a boundary not match: the part is then converted as one leaf or
 * refused, never overrun). Fuzzed: tests/fuzz/fuzz_mime7.c.
 *
 * Choices: 8-bit octets in a multipart preamble or epilogue (which no reader
 * shows) become '?'; a multipart whose closing delimiter is missing ends at
 * the end of its entity; a part without Content-Type is text/plain, or
 * message/rfc822 inside multipart/digest (RFC 2046 5.1.5).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tern/mime7.h"
#include "tern/util.h"

struct m7_ctype {
	char type[32];          /* lower case, "" when absent */
	char sub[64];           /* lower case */
	char bnd[80];           /* boundary as given (RFC 2046: <= 70) */
};

/* Offset just past the line that starts at i (its LF), or n. */
static size_t
m7_eol(const char *p, size_t n, size_t i)
{
	const char *e = memchr(p + i, '\n', n - i);

	return e == NULL ? n : (size_t)(e - p) + 1;
}

/*
 * Header and body of an entity: the header is p[0..*hlen) (whole lines),
 * the body starts at *boff, after the empty line. No empty line: all header.
 */
static void
m7_split(const char *p, size_t n, size_t *hlen, size_t *boff)
{
	for (size_t i = 0; i < n; i = m7_eol(p, n, i)) {
		if (p[i] == '\n' || (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n')) {
			*hlen = i;
			*boff = i + (p[i] == '\r' ? 2 : 1);
			return;
		}
	}
	*hlen = n;
	*boff = n;
}

/* Is the line at i the start of field name ("Name:")? */
static int
m7_is_field(const char *h, size_t hn, size_t i, const char *name)
{
	size_t nl = strlen(name);

	return hn - i > nl && strncasecmp(h + i, name, nl) == 0 &&
	    h[i + nl] == ':';
}

/* Offset past field line i and its continuation lines. */
static size_t
m7_field_end(const char *h, size_t hn, size_t i)
{
	size_t e = m7_eol(h, hn, i);

	while (e < hn && (h[e] == ' ' || h[e] == '\t'))
		e = m7_eol(h, hn, e);
	return e;
}

/* The unfolded value of the first field name, cut to vcap - 1; 1 if found. */
static int
m7_field(const char *h, size_t hn, const char *name, char *v, size_t vcap)
{
	for (size_t i = 0; i < hn; i = m7_field_end(h, hn, i)) {
		size_t o = 0, e;
		if (!m7_is_field(h, hn, i, name))
			continue;
		e = m7_field_end(h, hn, i);
		for (size_t k = i + strlen(name) + 1; k < e; k++)
			if (h[k] != '\r' && h[k] != '\n' && o + 1 < vcap)
				v[o++] = h[k];
		v[o] = '\0';
		return 1;
	}
	return 0;
}

/* Copy a token (up to a tspecial or blank), lower case, cut to cap - 1. */
static const char *
m7_token(const char *s, char *out, size_t cap, int lower)
{
	size_t o = 0;

	while (*s == ' ' || *s == '\t')
		s++;
	for (; *s != '\0' && strchr(" \t;/=\"()<>@,:\\[]?", *s) == NULL; s++)
		if (o + 1 < cap)
			out[o++] = lower && *s >= 'A' && *s <= 'Z' ?
			    (char)(*s - 'A' + 'a') : *s;
	out[o] = '\0';
	return s;
}

/* type/subtype and the boundary parameter of a Content-Type value. */
static void
m7_ctype_parse(const char *v, struct m7_ctype *ct)
{
	const char *s = m7_token(v, ct->type, sizeof(ct->type), 1);

	ct->sub[0] = ct->bnd[0] = '\0';
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s == '/')
		s = m7_token(s + 1, ct->sub, sizeof(ct->sub), 1);
	while ((s = strchr(s, ';')) != NULL) {
		char name[32];
		size_t o = 0;
		s = m7_token(s + 1, name, sizeof(name), 1);
		while (*s == ' ' || *s == '\t')
			s++;
		if (*s != '=')
			continue;
		s++;
		while (*s == ' ' || *s == '\t')
			s++;
		if (strcmp(name, "boundary") != 0)
			continue;
		if (*s == '"') {
			for (s++; *s != '\0' && *s != '"'; s++) {
				if (*s == '\\' && s[1] != '\0')
					s++;
				if (o + 1 < sizeof(ct->bnd))
					ct->bnd[o++] = *s;
			}
			ct->bnd[o] = '\0';
		} else
			m7_token(s, ct->bnd, sizeof(ct->bnd), 0);
		break;
	}
}

/* Copy a header without its Content-Transfer-Encoding fields. */
static void
m7_header_copy(struct buf *o, const char *h, size_t hn)
{
	for (size_t i = 0, e; i < hn; i = e) {
		e = m7_field_end(h, hn, i);
		if (!m7_is_field(h, hn, i, "Content-Transfer-Encoding"))
			buf_add(o, h + i, e - i);
	}
}

/* The end of a line at i (before CRLF/LF) or the end of the data. */
static int
m7_at_eol(const char *p, size_t n, size_t i)
{
	return i >= n || p[i] == '\n' ||
	    (p[i] == '\r' && i + 1 < n && p[i + 1] == '\n');
}

static void
m7_qp(struct buf *o, const char *p, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t col = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		int lit;
		if (c == '\r' && i + 1 < n && p[i + 1] == '\n') {
			buf_add(o, "\r\n", 2);
			col = 0;
			i++;
			continue;
		}
		lit = (c >= 33 && c <= 126 && c != '=') ||
		    ((c == ' ' || c == '\t') && !m7_at_eol(p, n, i + 1));
		if (col + (lit ? 1u : 3u) > MIME7_LINE - 1) {
			buf_add(o, "=\r\n", 3);
			col = 0;
		}
		if (lit) {
			buf_add(o, &p[i], 1);
			col++;
		} else {
			char e[3] = { '=', hex[c >> 4], hex[c & 15] };
			buf_add(o, e, 3);
			col += 3;
		}
	}
	if (col > 0)
		buf_add(o, "=\r\n", 3);         /* no line end of its own */
}

static void
m7_base64(struct buf *o, const char *p, size_t n)
{
	char line[MIME7_LINE + 4];

	for (size_t i = 0; i < n; i += MIME7_LINE / 4 * 3) {
		size_t take = n - i < MIME7_LINE / 4 * 3 ? n - i : MIME7_LINE / 4 * 3;
		size_t k = base64_encode(p + i, take, line, sizeof(line));
		buf_add(o, line, k);
		buf_add(o, "\r\n", 2);
	}
}

/* Preamble and epilogue: shown by no reader; 8-bit octets become '?'. */
static void
m7_add_masked(struct buf *o, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = (unsigned char)p[i] >= 0x80 ? '?' : p[i];
		buf_add(o, &c, 1);
	}
}

static enum mime7_status m7_entity(struct buf *o, const char *p, size_t n,
    int depth, int top, int digest);

/*
 * Where a delimiter line "--bnd[--] LWSP" starts at i: its end (past its
 * line end) in *end and 2 if closing, 1 if not; 0 if no delimiter here.
 */
static int
m7_delim(const char *b, size_t n, size_t i, const char *bnd, size_t bl,
    size_t *end)
{
	int close = 0;
	size_t k;

	if (n - i < bl + 2 || b[i] != '-' || b[i + 1] != '-' ||
	    memcmp(b + i + 2, bnd, bl) != 0)
		return 0;
	k = i + 2 + bl;
	if (n - k >= 2 && b[k] == '-' && b[k + 1] == '-') {
		close = 1;
		k += 2;
	}
	while (k < n && (b[k] == ' ' || b[k] == '\t'))
		k++;
	if (!m7_at_eol(b, n, k))
		return 0;
	*end = m7_eol(b, n, k);
	return close ? 2 : 1;
}

/* The body of a multipart: parts converted, delimiters kept. */
static enum mime7_status
m7_multipart(struct buf *o, const char *b, size_t n, const char *bnd,
    int depth, int digest)
{
	size_t bl = strlen(bnd), seg = 0;
	int in_part = 0;

	for (size_t i = 0; i < n; i = m7_eol(b, n, i)) {
		size_t end, cend = i;
		int d = m7_delim(b, n, i, bnd, bl, &end);
		enum mime7_status st;
		if (d == 0)
			continue;
		/* the line end before a delimiter belongs to it */
		if (cend > seg && b[cend - 1] == '\n')
			cend--;
		if (cend > seg && b[cend - 1] == '\r')
			cend--;
		if (!in_part)
			m7_add_masked(o, b + seg, cend - seg);
		else if ((st = m7_entity(o, b + seg, cend - seg, depth + 1, 0,
		    digest)) != MIME7_OK)
			return st;
		buf_add(o, b + cend, end - cend);
		seg = end;
		in_part = 1;
		if (d == 2) {
			m7_add_masked(o, b + seg, n - seg);
			return MIME7_OK;
		}
	}
	if (!in_part) {
		m7_add_masked(o, b + seg, n - seg);
		return MIME7_OK;
	}
	return m7_entity(o, b + seg, n - seg, depth + 1, 0, digest);
}

static enum mime7_status
m7_entity(struct buf *o, const char *p, size_t n, int depth, int top,
    int digest)
{
	struct m7_ctype ct;
	char v[1024], cte[64] = "";
	size_t hlen, boff;
	int text;

	if (depth > MIME7_DEPTH)
		return MIME7_BROKEN;
	m7_split(p, n, &hlen, &boff);
	if (has_8bit(p, hlen))
		return MIME7_HEADER8;
	if (!has_8bit(p + boff, n - boff)) {
		buf_add(o, p, n);
		return MIME7_OK;
	}
	if (m7_field(p, hlen, "Content-Type", v, sizeof(v)))
		m7_ctype_parse(v, &ct);
	else {
		snprintf(ct.type, sizeof(ct.type), digest ? "message" : "text");
		snprintf(ct.sub, sizeof(ct.sub), digest ? "rfc822" : "plain");
		ct.bnd[0] = '\0';
	}
	if (m7_field(p, hlen, "Content-Transfer-Encoding", v, sizeof(v)))
		m7_token(v, cte, sizeof(cte), 1);

	if (strcmp(ct.type, "multipart") == 0) {
		if (strcmp(ct.sub, "signed") == 0 ||
		    strcmp(ct.sub, "encrypted") == 0)
			return MIME7_SIGNED;
		if (ct.bnd[0] == '\0')
			return MIME7_BROKEN;
		m7_header_copy(o, p, hlen);     /* 7bit, the default, now */
		buf_add(o, p + hlen, boff - hlen);
		return m7_multipart(o, p + boff, n - boff, ct.bnd, depth,
		    strcmp(ct.sub, "digest") == 0);
	}
	if (strcmp(ct.type, "message") == 0) {
		if (strcmp(ct.sub, "rfc822") != 0)
			return MIME7_BROKEN;
		m7_header_copy(o, p, hlen);
		buf_add(o, p + hlen, boff - hlen);
		return m7_entity(o, p + boff, n - boff, depth + 1, 1, 0);
	}
	if (strcmp(cte, "base64") == 0 || strcmp(cte, "quoted-printable") == 0)
		return MIME7_BROKEN;
	text = strcmp(ct.type, "text") == 0;
	m7_header_copy(o, p, hlen);
	if (top && !m7_field(p, hlen, "MIME-Version", v, sizeof(v)))
		buf_addstr(o, "MIME-Version: 1.0\r\n");
	buf_addstr(o, text ? "Content-Transfer-Encoding: quoted-printable\r\n" :
	    "Content-Transfer-Encoding: base64\r\n");
	buf_add(o, "\r\n", 2);
	if (text)
		m7_qp(o, p + boff, n - boff);
	else
		m7_base64(o, p + boff, n - boff);
	return MIME7_OK;
}

enum mime7_status
mime7_convert(const char *p, size_t len, char **out, size_t *outlen)
{
	struct buf b = { 0 };
	enum mime7_status st;

	*out = NULL;
	*outlen = 0;
	if (!has_8bit(p, len))
		return MIME7_SEVEN;
	if ((st = m7_entity(&b, p, len, 0, 1, 0)) != MIME7_OK) {
		buf_free(&b);
		return st;
	}
	if (b.err) {
		buf_free(&b);
		return MIME7_NOMEM;
	}
	*out = b.p;
	*outlen = b.len;
	return MIME7_OK;
}

const char *
mime7_status_text(enum mime7_status st)
{
	switch (st) {
	case MIME7_OK:
		return "converted to 7 bits";
	case MIME7_SEVEN:
		return "7-bit already";
	case MIME7_HEADER8:
		return "8-bit octets in a header field";
	case MIME7_SIGNED:
		return "8-bit content in a signed or encrypted part";
	case MIME7_BROKEN:
		return "8-bit content in an encoded or unconvertible part";
	case MIME7_NOMEM:
		return "out of memory";
	}
	return "unknown";
}
