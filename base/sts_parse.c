/*
 * sts_parse.c - MTA-STS (RFC 8461) parsers: the "_mta-sts" TXT record
 * (3.1), the policy file (3.2) and the MX pattern match (4.1). See
 * tern/sts.h.
 *
 * Pure: no allocation, no globals, no logging; any thread. The input is
 * untrusted (DNS, an HTTPS body): every read is bounded by len, every copy
 * by its destination, and a NUL byte anywhere is a syntax error.
 */
#include <string.h>

#include "tern/sts.h"

static int
sts_is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

static int
sts_is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9');
}

static char
sts_lower(char c)
{
	return c >= 'A' && c <= 'Z' ? (char)(c - 'A' + 'a') : c;
}

/* ---- the TXT record ---------------------------------------------------- */

/* One "name=value" field of a TXT record, f[0..n) (blanks trimmed). */
static enum sts_parse_status
sts_txt_field(const char *f, size_t n, struct sts_txt *out, int *have_id)
{
	const char *eq = memchr(f, '=', n);
	size_t nl, vl;

	if (eq == NULL || eq == f || (size_t)(eq - f) + 1 >= n)
		return STS_PARSE_BAD;
	nl = (size_t)(eq - f);
	vl = n - nl - 1;
	if (nl == 2 && memcmp(f, "id", 2) == 0) {
		if (*have_id)
			return STS_PARSE_BAD;
		if (vl > STS_ID_MAX)
			return STS_PARSE_TOO_LONG;
		for (size_t i = 0; i < vl; i++)
			if (!sts_is_alnum(eq[1 + i]))
				return STS_PARSE_BAD;
		memcpy(out->id, eq + 1, vl);
		out->id[vl] = '\0';
		*have_id = 1;
		return STS_PARSE_OK;
	}
	/* sts-extension: name 1*32, value printable without "=", ";", SP */
	if (nl > 32 || !sts_is_alnum(f[0]))
		return STS_PARSE_BAD;
	for (size_t i = 1; i < nl; i++)
		if (!sts_is_alnum(f[i]) && f[i] != '_' && f[i] != '-' &&
		    f[i] != '.')
			return STS_PARSE_BAD;
	for (size_t i = 0; i < vl; i++) {
		unsigned char c = (unsigned char)eq[1 + i];
		if (c < 0x21 || c > 0x7e || c == '=' || c == ';')
			return STS_PARSE_BAD;
	}
	return STS_PARSE_OK;
}

enum sts_parse_status
sts_txt_parse(const char *p, size_t len, struct sts_txt *out)
{
	static const char v[] = "v=STSv1";
	size_t i = sizeof(v) - 1;
	int have_id = 0;

	memset(out, 0, sizeof(*out));
	if (len < i || memcmp(p, v, i) != 0 ||
	    (len > i && p[i] != ';' && !sts_is_wsp(p[i])))
		return STS_PARSE_NONE;
	if (len > 4096)
		return STS_PARSE_TOO_LONG;
	while (i < len) {
		size_t start, end;
		enum sts_parse_status st;

		while (i < len && sts_is_wsp(p[i]))
			i++;
		if (i == len)
			break;
		if (p[i] != ';')
			return STS_PARSE_BAD;
		i++;
		while (i < len && sts_is_wsp(p[i]))
			i++;
		if (i == len)
			break;          /* a final ";" */
		start = i;
		while (i < len && p[i] != ';' && !sts_is_wsp(p[i]))
			i++;
		end = i;
		if ((st = sts_txt_field(p + start, end - start, out,
		    &have_id)) != STS_PARSE_OK)
			return st;
	}
	return have_id ? STS_PARSE_OK : STS_PARSE_BAD;
}

/* ---- the policy file --------------------------------------------------- */

/*
 * An mx pattern v[0..n): ["*."] domain, letters, digits and hyphens in
 * labels of 1..63 octets, an optional final dot. Copied lower case.
 */
static enum sts_parse_status
sts_mx_pattern(const char *v, size_t n, char out[STS_NAME_MAX + 1])
{
	size_t i = 0, label = 0;

	if (n > 0 && v[n - 1] == '.')
		n--;
	if (n == 0)
		return STS_PARSE_MX;
	if (n > STS_NAME_MAX)
		return STS_PARSE_TOO_LONG;
	if (n >= 2 && v[0] == '*' && v[1] == '.')
		i = 2;
	if (i == n)
		return STS_PARSE_MX;
	for (; i < n; i++) {
		char c = v[i];
		if (c == '.') {
			if (label == 0 || v[i - 1] == '-')
				return STS_PARSE_MX;
			label = 0;
			continue;
		}
		if (!sts_is_alnum(c) && c != '-')
			return STS_PARSE_MX;
		if ((label == 0 && c == '-') || ++label > 63)
			return STS_PARSE_MX;
	}
	if (label == 0 || v[n - 1] == '-')
		return STS_PARSE_MX;
	for (i = 0; i < n; i++)
		out[i] = sts_lower(v[i]);
	out[n] = '\0';
	return STS_PARSE_OK;
}

static int
sts_eq(const char *p, size_t n, const char *word)
{
	return strlen(word) == n && memcmp(p, word, n) == 0;
}

/* One "key: value" line, k[0..kn) and v[0..vn) (value trimmed). */
static enum sts_parse_status
sts_policy_field(const char *k, size_t kn, const char *v, size_t vn,
    struct sts_policy *out, unsigned *seen)
{
	if (sts_eq(k, kn, "version")) {
		if ((*seen & 1u) || !sts_eq(v, vn, "STSv1"))
			return STS_PARSE_VERSION;
		*seen |= 1u;
	} else if (sts_eq(k, kn, "mode")) {
		if (*seen & 2u)
			return STS_PARSE_MODE;
		if (sts_eq(v, vn, "enforce"))
			out->mode = STS_MODE_ENFORCE;
		else if (sts_eq(v, vn, "testing"))
			out->mode = STS_MODE_TESTING;
		else if (sts_eq(v, vn, "none"))
			out->mode = STS_MODE_NONE;
		else
			return STS_PARSE_MODE;
		*seen |= 2u;
	} else if (sts_eq(k, kn, "max_age")) {
		unsigned long long a = 0;

		if ((*seen & 4u) || vn == 0 || vn > 10)
			return STS_PARSE_MAX_AGE;
		for (size_t i = 0; i < vn; i++) {
			if (v[i] < '0' || v[i] > '9')
				return STS_PARSE_MAX_AGE;
			a = a * 10 + (unsigned)(v[i] - '0');
		}
		if (a > STS_MAX_AGE_MAX)
			return STS_PARSE_MAX_AGE;
		out->max_age = (unsigned)a;
		*seen |= 4u;
	} else if (sts_eq(k, kn, "mx")) {
		if (out->nmx == STS_MX_MAX)
			return STS_PARSE_MX;
		enum sts_parse_status st = sts_mx_pattern(v, vn,
		    out->mx[out->nmx]);
		if (st != STS_PARSE_OK)
			return st;
		out->nmx++;
	} else {
		/* sts-policy-ext-name: (ALPHA / DIGIT) *31(... "_" "-" ".") */
		if (kn == 0 || kn > 32 || !sts_is_alnum(k[0]))
			return STS_PARSE_BAD;
		for (size_t i = 1; i < kn; i++)
			if (!sts_is_alnum(k[i]) && k[i] != '_' && k[i] != '-' &&
			    k[i] != '.')
				return STS_PARSE_BAD;
	}
	return STS_PARSE_OK;
}

/* One line l[0..n) without its terminator. */
static enum sts_parse_status
sts_policy_line(const char *l, size_t n, struct sts_policy *out,
    unsigned *seen)
{
	const char *colon;
	size_t kn, vs, ve;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)l[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return STS_PARSE_BAD;
	}
	if ((colon = memchr(l, ':', n)) == NULL)
		return STS_PARSE_BAD;
	kn = (size_t)(colon - l);
	vs = kn + 1;
	while (vs < n && sts_is_wsp(l[vs]))
		vs++;
	ve = n;
	while (ve > vs && sts_is_wsp(l[ve - 1]))
		ve--;
	return sts_policy_field(l, kn, l + vs, ve - vs, out, seen);
}

enum sts_parse_status
sts_policy_parse(const char *p, size_t len, struct sts_policy *out)
{
	unsigned seen = 0;
	size_t i = 0;

	memset(out, 0, sizeof(*out));
	if (len > STS_POLICY_MAX)
		return STS_PARSE_TOO_LONG;
	while (i < len) {
		const char *lf = memchr(p + i, '\n', len - i);
		size_t end = lf != NULL ? (size_t)(lf - p) : len, n;
		enum sts_parse_status st;

		n = end - i;
		if (n > 0 && p[i + n - 1] == '\r')
			n--;
		/* blank lines (a trailing one above all) are tolerated */
		for (size_t k = 0; k < n && sts_is_wsp(p[i + k]); )
			if (++k == n)
				n = 0;
		if (n > 0 && (st = sts_policy_line(p + i, n, out, &seen)) !=
		    STS_PARSE_OK)
			return st;
		i = end + 1;
	}
	if (!(seen & 1u))
		return STS_PARSE_VERSION;
	if (!(seen & 2u))
		return STS_PARSE_MODE;
	if (!(seen & 4u))
		return STS_PARSE_MAX_AGE;
	if (out->mode != STS_MODE_NONE && out->nmx == 0)
		return STS_PARSE_MX;
	return STS_PARSE_OK;
}

/* ---- matching ---------------------------------------------------------- */

/* ASCII case-insensitive a[0..n) == b[0..n). */
static int
sts_caseeq(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (sts_lower(a[i]) != sts_lower(b[i]))
			return 0;
	return 1;
}

int
sts_mx_match(const char *pattern, const char *host)
{
	size_t pn = strlen(pattern), hn = strlen(host);
	const char *dot;

	if (pn > 0 && pattern[pn - 1] == '.')
		pn--;
	if (hn > 0 && host[hn - 1] == '.')
		hn--;
	if (pn == 0 || hn == 0)
		return 0;
	if (pn >= 2 && pattern[0] == '*' && pattern[1] == '.') {
		/* exactly one label, then ".rest" */
		if ((dot = memchr(host, '.', hn)) == NULL || dot == host)
			return 0;
		return hn - (size_t)(dot - host) == pn - 1 &&
		    sts_caseeq(dot, pattern + 1, pn - 1);
	}
	return pn == hn && sts_caseeq(pattern, host, hn);
}

int
sts_policy_mx_ok(const struct sts_policy *pol, const char *host)
{
	for (size_t i = 0; i < pol->nmx; i++)
		if (sts_mx_match(pol->mx[i], host))
			return 1;
	return 0;
}

const char *
sts_mode_name(enum sts_mode m)
{
	switch (m) {
	case STS_MODE_ENFORCE:
		return "enforce";
	case STS_MODE_TESTING:
		return "testing";
	default:
		return "none";
	}
}

const char *
sts_parse_strstatus(enum sts_parse_status s)
{
	switch (s) {
	case STS_PARSE_OK:
		return "ok";
	case STS_PARSE_NONE:
		return "not an STSv1 record";
	case STS_PARSE_BAD:
		return "syntax error";
	case STS_PARSE_TOO_LONG:
		return "too long";
	case STS_PARSE_VERSION:
		return "no version STSv1";
	case STS_PARSE_MODE:
		return "no valid mode";
	case STS_PARSE_MAX_AGE:
		return "no valid max_age";
	case STS_PARSE_MX:
		return "bad or missing mx";
	}
	return "?";
}
