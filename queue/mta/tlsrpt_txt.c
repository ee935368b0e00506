/*
 * tlsrpt_txt.c - the "_smtp._tls.<domain>" TXT record of SMTP TLS Reporting
 * (RFC 8460 3): where a policy domain wants its reports (tern/tlsrpt.h).
 *
 * Pure: no I/O, no globals, no logging, no allocation. Runs on the
 * reporter's thread; fuzzed (tests/fuzz/fuzz_tlsrpt_txt.c). The DNS answer
 * itself is parsed by the resolver (resolver_txt_lookup: one string per
 * record, its character-strings joined); this file reads those strings.
 *
 * Untrusted input: the TXT records, i.e. whatever the domain (or anyone
 * spoofing an unsigned answer) publishes. Every field is bounded; an
 * address is only used when it parses as a plain local@domain mailbox.
 *
 * Grammar (RFC 8460 3):
 *   record    = "v=TLSRPTv1" 1*(delim field) [delim]
 *   delim     = *WSP ";" *WSP
 *   field     = "rua=" uri *(*WSP "," *WSP uri) / ext-name "=" ext-value
 *   ext-name  = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".")
 *   ext-value = 1*(%x21-3A / %x3C / %x3E-7E)
 * Only mailto: URIs are used; https: URIs (RFC 8460 5.4, HTTP POST) are
 * counted in nhttps and ignored: tern delivers reports by mail only.
 */
#include <string.h>

#include "tern/smtp.h"
#include "tern/tlsrpt.h"
#include "tern/util.h"

#define TLSRPT_TXT_VERSION  "v=TLSRPTv1"
#define TLSRPT_TXT_MAX      4096    /* longest record considered */

static int
tlsrpt_txt_wsp(char c)
{
	return c == ' ' || c == '\t';
}

static size_t
tlsrpt_txt_trim(const char *p, size_t len, size_t *start)
{
	size_t b = 0;

	while (b < len && tlsrpt_txt_wsp(p[b]))
		b++;
	while (len > b && tlsrpt_txt_wsp(p[len - 1]))
		len--;
	*start = b;
	return len - b;
}

/* 1 if p[0..len) begins with the version tag, then the end or a delimiter. */
static int
tlsrpt_txt_is_tlsrpt(const char *p, size_t len)
{
	size_t v = sizeof(TLSRPT_TXT_VERSION) - 1;

	if (len < v || memcmp(p, TLSRPT_TXT_VERSION, v) != 0)
		return 0;
	while (v < len && tlsrpt_txt_wsp(p[v]))
		v++;
	return v == len || p[v] == ';';
}

static int
tlsrpt_txt_hex(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* One mailto: URI's address (after "mailto:"), %XX decoded, into out. */
static void
tlsrpt_txt_mailto(const char *p, size_t len, struct tlsrpt_txt *out)
{
	char addr[TLSRPT_ADDR_MAX];
	struct smtp_mailbox mb;
	size_t o = 0;

	for (size_t i = 0; i < len && p[i] != '?'; i++) {
		int c = (unsigned char)p[i];

		if (c == '%') {
			int h, l;

			if (i + 2 >= len || (h = tlsrpt_txt_hex(p[i + 1])) < 0 ||
			    (l = tlsrpt_txt_hex(p[i + 2])) < 0) {
				out->nother++;
				return;
			}
			c = h << 4 | l;
			i += 2;
		}
		if (c == '\0' || o + 1 >= sizeof(addr)) {
			out->nother++;
			return;
		}
		addr[o++] = (char)c;
	}
	addr[o] = '\0';
	if (out->nrua >= TLSRPT_RUA_MAX ||
	    smtp_parse_mailbox(addr, o, &mb) != SMTP_PARSE_OK ||
	    (mb.flags & (SMTP_MB_UTF8 | SMTP_MB_LITERAL)) ||
	    mb.domain_off >= mb.len || mb.len >= TLSRPT_ADDR_MAX) {
		out->nother++;
		return;
	}
	memcpy(out->rua[out->nrua++], mb.addr, mb.len + 1);
}

/* rua= value: URIs separated by commas. 0, or -1 when malformed. */
static int
tlsrpt_txt_rua(const char *p, size_t len, struct tlsrpt_txt *out)
{
	size_t i = 0;

	while (i <= len) {
		size_t e = i, b, n;

		while (e < len && p[e] != ',')
			e++;
		n = tlsrpt_txt_trim(p + i, e - i, &b);
		if (n == 0)
			return -1;
		for (size_t k = 0; k < n; k++) {
			unsigned char c = (unsigned char)p[i + b + k];
			if (c <= 0x20 || c >= 0x7f)
				return -1;
		}
		if (n > 7 && ascii_casecmp_n(p + i + b, 7, "mailto:", 7) == 0)
			tlsrpt_txt_mailto(p + i + b + 7, n - 7, out);
		else if (n > 6 && ascii_casecmp_n(p + i + b, 6, "https:", 6) == 0)
			out->nhttps++;
		else
			out->nother++;
		i = e + 1;
	}
	return 0;
}

static int
tlsrpt_txt_ext(const char *p, size_t nlen, const char *v, size_t vlen)
{
	if (nlen == 0 || nlen > 32 || vlen == 0)
		return -1;
	for (size_t k = 0; k < nlen; k++) {
		char c = p[k];
		int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9');
		if (!alnum && (k == 0 || (c != '_' && c != '-' && c != '.')))
			return -1;
	}
	for (size_t k = 0; k < vlen; k++) {
		unsigned char c = (unsigned char)v[k];
		if (c < 0x21 || c > 0x7e || c == '=' || c == ';')
			return -1;
	}
	return 0;
}

enum tlsrpt_txt_status
tlsrpt_txt_parse(const char *p, size_t len, struct tlsrpt_txt *out)
{
	size_t i = sizeof(TLSRPT_TXT_VERSION) - 1, nfields = 0;
	int have_rua = 0;

	memset(out, 0, sizeof(*out));
	if (!tlsrpt_txt_is_tlsrpt(p, len))
		return TLSRPT_TXT_NOT_TLSRPT;
	while (i < len && tlsrpt_txt_wsp(p[i]))
		i++;
	while (i < len) {
		size_t e, b, n, eq;
		const char *f;

		/* p[i] is ';' here */
		i++;
		for (e = i; e < len && p[e] != ';'; e++)
			;
		n = tlsrpt_txt_trim(p + i, e - i, &b);
		f = p + i + b;
		if (n == 0) {
			if (e < len)
				return TLSRPT_TXT_SYNTAX;   /* ";;" */
			break;                          /* a final ';' */
		}
		for (eq = 0; eq < n && f[eq] != '='; eq++)
			;
		if (eq == n)
			return TLSRPT_TXT_SYNTAX;
		if (eq == 3 && memcmp(f, "rua", 3) == 0) {
			if (tlsrpt_txt_rua(f + 4, n - 4, out) != 0)
				return TLSRPT_TXT_SYNTAX;
			have_rua = 1;
		} else if (tlsrpt_txt_ext(f, eq, f + eq + 1, n - eq - 1) != 0) {
			return TLSRPT_TXT_SYNTAX;
		}
		nfields++;
		i = e;
	}
	if (nfields == 0)
		return TLSRPT_TXT_SYNTAX;
	return have_rua ? TLSRPT_TXT_OK : TLSRPT_TXT_NO_RUA;
}

enum tlsrpt_txt_status
tlsrpt_txt_from_records(char *const *txt, const size_t *len, size_t n,
    struct tlsrpt_txt *out)
{
	size_t nfound = 0, at = 0;

	memset(out, 0, sizeof(*out));
	for (size_t i = 0; i < n; i++)
		if (txt[i] != NULL && tlsrpt_txt_is_tlsrpt(txt[i],
		    len[i] < TLSRPT_TXT_MAX ? len[i] : TLSRPT_TXT_MAX)) {
			nfound++;
			at = i;
		}
	if (nfound != 1)
		return TLSRPT_TXT_NOT_TLSRPT;
	if (len[at] >= TLSRPT_TXT_MAX)
		return TLSRPT_TXT_SYNTAX;       /* longer than any we read (or cut) */
	return tlsrpt_txt_parse(txt[at], len[at], out);
}
