/*
 * smtp_reply.c - parser of SMTP server replies for the delivery client.
 *
 * Pure functions over byte ranges (see tern/smtp_reply.h): no allocation,
 * no globals, no logging; any thread. Input: whatever a remote server sends,
 * so every length is bounded (512-octet lines, 64 KiB replies) and every
 * byte is checked. RFC 5321 4.2 (reply syntax, multi-line replies), RFC 3463
 * and RFC 2034 (enhanced status codes), RFC 5321 4.1.1.1 (EHLO keywords).
 */
#include <string.h>

#include "tern/smtp_reply.h"

static int
smtp_reply_isdigit(char c)
{
	return c >= '0' && c <= '9';
}

/* Length of "C.SSS.DDD" at p[0..len) when it is an enhanced status code of
 * class cls followed by a blank or the end; 0 otherwise. */
static size_t
smtp_reply_enh_len(const char *p, size_t len, char cls)
{
	size_t i = 0, n;

	if (len < 5 || p[0] != cls || p[1] != '.')
		return 0;
	i = 2;
	for (n = 0; i < len && smtp_reply_isdigit(p[i]) && n < 4; i++, n++)
		;
	if (n == 0 || n > 3 || i >= len || p[i] != '.')
		return 0;
	i++;
	for (n = 0; i < len && smtp_reply_isdigit(p[i]) && n < 4; i++, n++)
		;
	if (n == 0 || n > 3)
		return 0;
	if (i < len && p[i] != ' ' && p[i] != '\t')
		return 0;
	return i;
}

/* Append text t[0..n) to out->text, sanitized, after a blank if needed. */
static void
smtp_reply_text_add(struct smtp_reply *out, const char *t, size_t n)
{
	size_t have = strlen(out->text);

	if (n == 0)
		return;
	if (have > 0 && have + 1 < sizeof(out->text))
		out->text[have++] = ' ';
	for (size_t i = 0; i < n && have + 1 < sizeof(out->text); i++) {
		unsigned char c = (unsigned char)t[i];
		out->text[have++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	out->text[have] = '\0';
}

enum smtp_reply_status
smtp_reply_parse(const char *p, size_t len, struct smtp_reply *out)
{
	size_t pos = 0;

	memset(out, 0, sizeof(*out));
	for (;;) {
		size_t rem = len - pos, scan, linelen, clen, tlen;
		const char *line = p + pos, *lf, *t;
		int code, last;

		scan = rem < SMTP_REPLY_LINE_MAX ? rem : SMTP_REPLY_LINE_MAX;
		lf = memchr(line, '\n', scan);
		if (lf == NULL) {
			if (rem >= SMTP_REPLY_LINE_MAX || len >= SMTP_REPLY_MAX)
				return SMTP_REPLY_TOO_LONG;
			return SMTP_REPLY_MORE;
		}
		linelen = (size_t)(lf - line) + 1;
		if (pos + linelen > SMTP_REPLY_MAX)
			return SMTP_REPLY_TOO_LONG;
		clen = linelen - 1;
		if (clen > 0 && line[clen - 1] == '\r')
			clen--;

		if (clen < 3 || line[0] < '2' || line[0] > '5' ||
		    line[1] < '0' || line[1] > '5' || !smtp_reply_isdigit(line[2]))
			return SMTP_REPLY_BAD_SYNTAX;
		code = (line[0] - '0') * 100 + (line[1] - '0') * 10 +
		    (line[2] - '0');
		if (clen == 3)
			last = 1;
		else if (line[3] == ' ')
			last = 1;
		else if (line[3] == '-')
			last = 0;
		else
			return SMTP_REPLY_BAD_SYNTAX;
		if (out->nlines == 0)
			out->code = code;
		else if (code != out->code)
			return SMTP_REPLY_BAD_CODE;

		t = clen > 4 ? line + 4 : line + clen;
		tlen = clen > 4 ? clen - 4 : 0;
		if (line[0] != '3') {
			size_t el = smtp_reply_enh_len(t, tlen, line[0]);
			if (out->nlines == 0 && el > 0 && el < sizeof(out->enh)) {
				memcpy(out->enh, t, el);
				out->enh[el] = '\0';
			}
			/* strip the first line's code wherever it repeats */
			if (el > 0 && out->enh[0] != '\0' &&
			    el == strlen(out->enh) && memcmp(t, out->enh, el) == 0) {
				t += el;
				tlen -= el;
				while (tlen > 0 && (*t == ' ' || *t == '\t')) {
					t++;
					tlen--;
				}
			}
		}
		smtp_reply_text_add(out, t, tlen);
		out->nlines++;
		pos += linelen;
		if (last) {
			out->len = pos;
			return SMTP_REPLY_OK;
		}
	}
}

static int
smtp_reply_keyword_is(const char *k, size_t klen, const char *want)
{
	size_t n = strlen(want);

	if (klen != n)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = k[i];
		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		if (c != want[i])
			return 0;
	}
	return 1;
}

void
smtp_ehlo_parse(const char *p, size_t len, struct smtp_ehlo *out)
{
	static const struct {
		const char *name;
		unsigned bit;
	} kw[] = {
		{ "PIPELINING", SMTP_EXT_PIPELINING },
		{ "SIZE", SMTP_EXT_SIZE },
		{ "8BITMIME", SMTP_EXT_8BITMIME },
		{ "STARTTLS", SMTP_EXT_STARTTLS },
		{ "ENHANCEDSTATUSCODES", SMTP_EXT_ENHANCED },
		{ "SMTPUTF8", SMTP_EXT_SMTPUTF8 },
		{ "DSN", SMTP_EXT_DSN },
		{ "CHUNKING", SMTP_EXT_CHUNKING },
		{ "REQUIRETLS", SMTP_EXT_REQUIRETLS },
	};
	size_t pos = 0, lineno = 0;

	memset(out, 0, sizeof(*out));
	while (pos < len) {
		const char *line = p + pos, *lf, *t;
		size_t clen, tlen, klen;

		lf = memchr(line, '\n', len - pos);
		clen = lf != NULL ? (size_t)(lf - line) : len - pos;
		pos += lf != NULL ? clen + 1 : clen;
		if (clen > 0 && line[clen - 1] == '\r')
			clen--;
		if (lineno++ == 0 || clen <= 4)
			continue;
		t = line + 4;
		tlen = clen - 4;
		for (klen = 0; klen < tlen && t[klen] != ' ' && t[klen] != '\t';
		    klen++)
			;
		for (size_t i = 0; i < sizeof(kw) / sizeof(kw[0]); i++) {
			if (!smtp_reply_keyword_is(t, klen, kw[i].name))
				continue;
			out->ext |= kw[i].bit;
			if (kw[i].bit == SMTP_EXT_SIZE) {
				uint64_t v = 0;
				size_t j = klen;
				int ok = 0;

				while (j < tlen && (t[j] == ' ' || t[j] == '\t'))
					j++;
				for (; j < tlen && smtp_reply_isdigit(t[j]); j++) {
					if (v > (UINT64_MAX - 9) / 10) {
						ok = 0;
						break;
					}
					v = v * 10 + (uint64_t)(t[j] - '0');
					ok = 1;
				}
				out->size = ok ? v : 0;
			}
		}
	}
}

const char *
smtp_reply_strstatus(enum smtp_reply_status st)
{
	switch (st) {
	case SMTP_REPLY_OK: return "ok";
	case SMTP_REPLY_MORE: return "incomplete";
	case SMTP_REPLY_BAD_SYNTAX: return "bad syntax";
	case SMTP_REPLY_BAD_CODE: return "inconsistent code";
	case SMTP_REPLY_TOO_LONG: return "too long";
	}
	return "unknown";
}
