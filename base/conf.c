/*
 * conf.c - tern.conf: the directive table, the parser, defaults, lookups.
 *
 * Runs at start-up and on SIGHUP in the main thread (conf_parse, conf_load)
 * and on any thread afterwards (the lookups, which only read an immutable,
 * refcounted struct conf). Owns every byte of a struct conf; conf_unref() of
 * the last reference frees it.
 *
 * Input: the operator's file. It is trusted not to be hostile but expected to
 * be wrong: every problem is reported as "FILE:LINE: message" through the
 * caller's err callback, all of them, not just the first, and nothing here
 * exits, logs or aborts on bad input (the fuzz target holds us to that).
 *
 * conf_parse() is pure (no file or system access); conf_load() adds what
 * needs the system: reading the file, checking that certificate and key files
 * open, that user and control-group exist, and hostname from gethostname().
 *
 * The table conf_table[] is the single source of truth: name, parse fn,
 * default text, bounds and field. Defaults are applied after the file, by
 * running the default text through the same parse fn, for every directive
 * the file did not set (so a list default such as retry is replaced, not
 * appended to). etc/tern.conf documents each entry; test_conf checks it.
 */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tern/conf.h"
#include "tern/route_auth.h"
#include "tern/idn.h"
#include "tern/smtp.h"
#include "tern/util.h"

#define CONF_DIR_MAX    96            /* table entries, checked below */
#define CONF_FILE_MAX   (16u << 20)   /* a config larger than this is a mistake */
#define CONF_NAME_MAX   64            /* user and group names */

#define CONF_HP_BADADDR (-1)
#define CONF_HP_BADPORT (-2)

/* One parse in progress. */
struct conf_parser {
	struct conf *c;
	const char *fname;
	int line;                     /* current line; 0 while applying defaults */
	int in_default;
	int nerr;
	conf_err_fn *err;
	void *arg;
	int seen[CONF_DIR_MAX];       /* first line of each directive, 0: unset */

	/* tls-cert and tls-key as written; paired in order at the end */
	char **certs, **keys;
	int *cert_lines, *key_lines;
	size_t ncerts, nkeys;

	/* per listen / per route: was a TLS mode / tls-policy written? */
	unsigned char *listen_tls_set;
	unsigned char *route_tls_set;
};

static const char *const conf_words_mode[] = { "relay", "submission", NULL };
static const char *const conf_words_ltls[] = { "plain", "starttls", "tls", NULL };
static const char *const conf_words_tlsp[] = {
	"none", "may", "encrypt", "verify", "dane", NULL };
static const char *const conf_words_bare[] = { "reject", "normalize", NULL };
static const char *const conf_words_log[] = { "stderr", "syslog", NULL };
static const char *const conf_words_logfmt[] = { "text", "json", NULL };
static const char *const conf_words_noyes[] = { "no", "yes", NULL };
static const char *const conf_words_offon[] = { "off", "on", NULL };
static const char *const conf_words_8bit[] = { "bounce", "send", NULL };

_Static_assert(sizeof(enum conf_tls_policy) == sizeof(int), "keyword store");
_Static_assert(sizeof(enum conf_bare_newline) == sizeof(int), "keyword store");

/* ------------------------------------------------------------------ */
/* errors */

static void conf_error_at(struct conf_parser *p, int line, const char *fmt, ...)
    TERN_PRINTF(3, 4);
static void conf_error(struct conf_parser *p, const char *fmt, ...)
    TERN_PRINTF(2, 3);
static void conf_verror_at(struct conf_parser *p, int line, const char *fmt,
    va_list ap) TERN_PRINTF(3, 0);

static void
conf_verror_at(struct conf_parser *p, int line, const char *fmt, va_list ap)
{
	char msg[1024], full[1280];

	p->nerr++;
	if (p->err == NULL)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (p->in_default)
		snprintf(full, sizeof(full), "%s: built-in default: %s",
		    p->fname, msg);
	else if (line > 0)
		snprintf(full, sizeof(full), "%s:%d: %s", p->fname, line, msg);
	else
		snprintf(full, sizeof(full), "%s: %s", p->fname, msg);
	p->err(p->arg, full);
}

static void
conf_error_at(struct conf_parser *p, int line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	conf_verror_at(p, line, fmt, ap);
	va_end(ap);
}

static void
conf_error(struct conf_parser *p, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	conf_verror_at(p, p->line, fmt, ap);
	va_end(ap);
}

/* ------------------------------------------------------------------ */
/* small helpers */

/*
 * Make room for element n of an array that holds n: capacity is implicitly
 * the next power of two, so growth is amortised without a capacity field.
 */
static void *
conf_array_grow(void *arr, size_t n, size_t size)
{
	if (n == 0)
		return xreallocarray(arr, 1, size);
	if ((n & (n - 1)) == 0)
		return xreallocarray(arr, n * 2, size);
	return arr;
}

static int
conf_isdigit(int ch)
{
	return ch >= '0' && ch <= '9';
}

/* Decimal digits only (no sign, no blanks), no overflow. */
static int
conf_parse_u64(const char *s, size_t len, uint64_t *out)
{
	uint64_t v = 0;

	if (len == 0)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (!conf_isdigit((unsigned char)s[i]))
			return -1;
		if (v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return 0;
}

static int
conf_port_parse(const char *s, size_t len, uint16_t *out)
{
	uint64_t v;

	if (len > 5 || conf_parse_u64(s, len, &v) == -1 || v == 0 || v > 65535)
		return -1;
	*out = (uint16_t)v;
	return 0;
}

static char *
conf_strdup_lower(const char *s, size_t len)
{
	char *r = xstrndup(s, len);

	for (size_t i = 0; i < len; i++)
		if (r[i] >= 'A' && r[i] <= 'Z')
			r[i] = (char)(r[i] + 32);
	return r;
}

/*
 * A domain name (or host name) as written in the file: dot-separated labels
 * of letters, digits, '-' (not first or last) and '_', each 1..63 bytes,
 * 253 in all, no leading or trailing dot. 0 ok, -1 bad.
 */
static int
conf_domain_check(const char *s, size_t len)
{
	size_t label = 0;

	if (len == 0 || len > 253)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '.') {
			if (label == 0 || s[i - 1] == '-')
				return -1;
			label = 0;
			continue;
		}
		if (ch == '-' && label == 0)
			return -1;          /* no label starts or ends with '-' */
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    conf_isdigit(ch) || ch == '-' || ch == '_'))
			return -1;
		if (++label > 63)
			return -1;
	}
	return label == 0 || s[len - 1] == '-' ? -1 : 0;
}

/* A query's shape: non-empty, no empty label (so no trailing dot). */
static int
conf_domain_shape_ok(const char *s, size_t len)
{
	if (len == 0 || s[0] == '.' || s[len - 1] == '.')
		return 0;
	return memmem(s, len, "..", 2) == NULL;
}

static int
conf_keyword_find(const char *const *words, const char *w)
{
	for (int i = 0; words[i] != NULL; i++)
		if (strcmp(words[i], w) == 0)
			return i;
	return -1;
}

/* "a, b or c" */
static void
conf_keyword_list(const char *const *words, char *buf, size_t len)
{
	size_t n = 0, o = 0;

	while (words[n] != NULL)
		n++;
	buf[0] = '\0';
	for (size_t i = 0; i < n && o < len; i++) {
		int w = snprintf(buf + o, len - o, "%s%s",
		    i == 0 ? "" : (i + 1 == n ? " or " : ", "), words[i]);
		if (w < 0)
			break;
		o += (size_t)w;
	}
}

/* A bound as an operator would write it: 35M, 5m, 100. */
static void
conf_value_format(enum conf_value_type type, uint64_t v, char *buf, size_t len)
{
	static const struct { uint64_t mul; char suffix; } sizes[] = {
		{ 1ULL << 30, 'G' }, { 1ULL << 20, 'M' }, { 1ULL << 10, 'K' } };
	static const struct { uint64_t mul; char suffix; } durs[] = {
		{ 86400, 'd' }, { 3600, 'h' }, { 60, 'm' } };

	if (v != 0 && type == CONF_T_SIZE) {
		for (size_t i = 0; i < 3; i++)
			if (v % sizes[i].mul == 0) {
				snprintf(buf, len, "%llu%c", (unsigned long long)
				    (v / sizes[i].mul), sizes[i].suffix);
				return;
			}
	}
	if (v != 0 && type == CONF_T_DURATION) {
		for (size_t i = 0; i < 3; i++)
			if (v % durs[i].mul == 0) {
				snprintf(buf, len, "%llu%c", (unsigned long long)
				    (v / durs[i].mul), durs[i].suffix);
				return;
			}
		snprintf(buf, len, "%llus", (unsigned long long)v);
		return;
	}
	snprintf(buf, len, "%llu", (unsigned long long)v);
}

static int
conf_range_check(struct conf_parser *p, const struct conf_directive *d,
    enum conf_value_type type, const char *word, uint64_t v)
{
	char lo[32], hi[32];

	if (v >= d->min && v <= d->max)
		return 0;
	conf_value_format(type, d->min, lo, sizeof(lo));
	conf_value_format(type, d->max, hi, sizeof(hi));
	conf_error(p, "%s: %s is out of range (%s..%s)", d->name, word, lo, hi);
	return -1;
}

static void *
conf_field(struct conf_parser *p, const struct conf_directive *d)
{
	return (char *)p->c + d->off;
}

/* ------------------------------------------------------------------ */
/* public value parsers */

/* One unit suffix letter and what it multiplies by; a 0 letter ends a table. */
struct conf_unit {
	char c;
	uint64_t mul;
};

/* Digits, then at most one suffix from units; the product must be <= max. */
static int
conf_parse_scaled(const char *s, size_t len, const struct conf_unit *units,
    uint64_t max, uint64_t *out)
{
	size_t n = 0;
	uint64_t v, mul = 1;

	while (n < len && conf_isdigit((unsigned char)s[n]))
		n++;
	if (conf_parse_u64(s, n, &v) == -1)
		return -1;
	if (len - n == 1) {
		for (mul = 0; units->c != '\0'; units++)
			if (units->c == s[n])
				mul = units->mul;
		if (mul == 0)
			return -1;
	} else if (len != n)
		return -1;
	if (v > max / mul)
		return -1;
	*out = v * mul;
	return 0;
}

int
conf_parse_size(const char *s, size_t len, uint64_t *out)
{
	static const struct conf_unit units[] = {
		{ 'K', 1ULL << 10 }, { 'k', 1ULL << 10 }, { 'M', 1ULL << 20 },
		{ 'm', 1ULL << 20 }, { 'G', 1ULL << 30 }, { 'g', 1ULL << 30 },
		{ '\0', 0 },
	};

	return conf_parse_scaled(s, len, units, UINT64_MAX, out);
}

int
conf_parse_duration(const char *s, size_t len, unsigned *out)
{
	static const struct conf_unit units[] = {
		{ 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 }, { '\0', 0 },
	};
	uint64_t v;

	if (conf_parse_scaled(s, len, units, UINT_MAX, &v) == -1)
		return -1;
	*out = (unsigned)v;
	return 0;
}

/* As conf_parse_hostport, with the reason: CONF_HP_BADADDR or _BADPORT. */
static int
conf_hostport_split(const char *s, size_t len, uint16_t default_port,
    struct sockaddr_storage *ss, socklen_t *sslen)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *h, *port = NULL, *colon;
	size_t hlen, plen = 0;
	int family, has_port = 0;
	uint16_t pnum;

	if (len > 0 && s[0] == '[') {
		const char *rb = memchr(s, ']', len);
		if (rb == NULL)
			return CONF_HP_BADADDR;
		h = s + 1;
		hlen = (size_t)(rb - h);
		family = AF_INET6;
		if ((size_t)(rb + 1 - s) < len) {
			if (rb[1] != ':')
				return CONF_HP_BADADDR;
			port = rb + 2;
			plen = len - (size_t)(port - s);
			has_port = 1;
		}
	} else if ((colon = memrchr(s, ':', len)) != NULL &&
	    memchr(s, ':', (size_t)(colon - s)) != NULL) {
		h = s;                      /* bare IPv6: no port */
		hlen = len;
		family = AF_INET6;
	} else if (colon != NULL) {
		h = s;
		hlen = (size_t)(colon - s);
		port = colon + 1;
		plen = len - hlen - 1;
		has_port = 1;
		family = AF_INET;
	} else {
		h = s;
		hlen = len;
		family = AF_INET;
	}
	if (hlen == 0 || hlen >= sizeof(host) || memchr(h, '\0', hlen) != NULL)
		return CONF_HP_BADADDR;
	memcpy(host, h, hlen);
	host[hlen] = '\0';

	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
			return CONF_HP_BADADDR;
		sin->sin_family = AF_INET;
		*sslen = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
		if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return CONF_HP_BADADDR;
		sin6->sin6_family = AF_INET6;
		*sslen = sizeof(*sin6);
	}
	if (has_port) {
		if (conf_port_parse(port, plen, &pnum) == -1)
			return CONF_HP_BADPORT;
	} else if (default_port == 0)
		return CONF_HP_BADPORT;
	else
		pnum = default_port;
	if (family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(pnum);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons(pnum);
	return 0;
}

int
conf_parse_hostport(const char *s, size_t len, uint16_t default_port,
    struct sockaddr_storage *ss, socklen_t *sslen)
{
	return conf_hostport_split(s, len, default_port, ss, sslen) == 0 ? 0 : -1;
}

static void
conf_cidr_mask(uint8_t *a, size_t nbytes, unsigned prefix)
{
	for (size_t i = 0; i < nbytes; i++) {
		unsigned bit = (unsigned)i * 8;
		if (bit >= prefix)
			a[i] = 0;
		else if (prefix - bit < 8)
			a[i] &= (uint8_t)(0xffu << (8 - (prefix - bit)));
	}
}

int
conf_parse_cidr(const char *s, size_t len, struct conf_cidr *out)
{
	char host[INET6_ADDRSTRLEN + 1];
	const char *slash = memchr(s, '/', len);
	size_t alen = slash != NULL ? (size_t)(slash - s) : len;
	unsigned maxp;
	uint64_t prefix;

	if (alen == 0 || alen >= sizeof(host) || memchr(s, '\0', alen) != NULL)
		return -1;
	memcpy(host, s, alen);
	host[alen] = '\0';
	memset(out, 0, sizeof(*out));
	if (memchr(host, ':', alen) != NULL) {
		out->family = AF_INET6;
		maxp = 128;
	} else {
		out->family = AF_INET;
		maxp = 32;
	}
	if (inet_pton(out->family, host, out->addr) != 1)
		return -1;
	if (slash != NULL) {
		size_t plen = len - alen - 1;
		if (plen > 3 || conf_parse_u64(slash + 1, plen, &prefix) == -1 ||
		    prefix > maxp)
			return -1;
	} else
		prefix = maxp;
	out->prefix = (unsigned)prefix;
	conf_cidr_mask(out->addr, maxp / 8, out->prefix);
	return 0;
}

/* ------------------------------------------------------------------ */
/* directive parse fns: each reports its own errors, returns 0 or -1 */

static int
conf_store_string(struct conf_parser *p, const struct conf_directive *d,
    const char *v)
{
	char **f = conf_field(p, d);

	free(*f);
	*f = xstrdup(v);
	return 0;
}

static int
conf_set_hostname(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	if (conf_domain_check(argv[0], strlen(argv[0])) == -1) {
		conf_error(p, "%s: bad host name \"%s\"", d->name, argv[0]);
		return -1;
	}
	return conf_store_string(p, d, argv[0]);
}

/* postmaster ADDRESS: a plain mailbox, local@domain */
static int
conf_set_postmaster(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	struct smtp_mailbox mb;

	if (smtp_parse_mailbox(argv[0], strlen(argv[0]), &mb) !=
	    SMTP_PARSE_OK || (mb.flags & (SMTP_MB_UTF8 | SMTP_MB_LITERAL))) {
		conf_error(p, "%s: bad address \"%s\" (use local@domain)",
		    d->name, argv[0]);
		return -1;
	}
	return conf_store_string(p, d, argv[0]);
}

/* user and group names */
static int
conf_set_name(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	size_t len = strlen(argv[0]);

	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)argv[0][i];
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    conf_isdigit(ch) || ch == '_' || ch == '.' ||
		    (ch == '-' && i > 0) || (ch == '$' && i + 1 == len)))
			len = 0;
	}
	if (len == 0 || len > CONF_NAME_MAX) {
		conf_error(p, "%s: bad name \"%s\"", d->name, argv[0]);
		return -1;
	}
	return conf_store_string(p, d, argv[0]);
}

static int
conf_set_path(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	if (argv[0][0] != '/') {
		conf_error(p, "%s: \"%s\" is not an absolute path", d->name,
		    argv[0]);
		return -1;
	}
	if (strlen(argv[0]) >= PATH_MAX) {
		conf_error(p, "%s: path too long", d->name);
		return -1;
	}
	return conf_store_string(p, d, argv[0]);
}

static int
conf_set_hostport(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	int r = conf_hostport_split(argv[0], strlen(argv[0]), 0, &ss, &sslen);

	if (r == CONF_HP_BADADDR) {
		conf_error(p, "%s: bad address \"%s\" (use 127.0.0.1:9100 or "
		    "[::1]:9100)", d->name, argv[0]);
		return -1;
	}
	if (r == CONF_HP_BADPORT) {
		conf_error(p, "%s: bad port in \"%s\"", d->name, argv[0]);
		return -1;
	}
	return conf_store_string(p, d, argv[0]);
}

/* A plain number within the directive's bounds, stored as unsigned or u16. */
static int
conf_set_number(struct conf_parser *p, const struct conf_directive *d,
    const char *arg, const char *what, int is_port)
{
	uint64_t v;

	if (conf_parse_u64(arg, strlen(arg), &v) == -1) {
		conf_error(p, "%s: bad %s \"%s\"", d->name, what, arg);
		return -1;
	}
	if (conf_range_check(p, d, d->type, arg, v) == -1)
		return -1;
	if (is_port)
		*(uint16_t *)conf_field(p, d) = (uint16_t)v;
	else
		*(unsigned *)conf_field(p, d) = (unsigned)v;
	return 0;
}

static int
conf_set_uint(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	return conf_set_number(p, d, argv[0], "number", 0);
}

static int
conf_set_port(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	return conf_set_number(p, d, argv[0], "port", 1);
}

static int
conf_set_size(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	uint64_t v;

	if (conf_parse_size(argv[0], strlen(argv[0]), &v) == -1) {
		conf_error(p, "%s: bad size \"%s\" (use e.g. 512K, 35M, 1G)",
		    d->name, argv[0]);
		return -1;
	}
	if (conf_range_check(p, d, d->type, argv[0], v) == -1)
		return -1;
	*(uint64_t *)conf_field(p, d) = v;
	return 0;
}

static int
conf_duration_word(struct conf_parser *p, const struct conf_directive *d,
    const char *w, unsigned *out)
{
	if (conf_parse_duration(w, strlen(w), out) == -1) {
		conf_error(p, "%s: bad duration \"%s\" (use e.g. 30s, 5m, 1h, "
		    "2d)", d->name, w);
		return -1;
	}
	return conf_range_check(p, d, CONF_T_DURATION, w, *out);
}

static int
conf_set_duration(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	unsigned v;

	if (conf_duration_word(p, d, argv[0], &v) == -1)
		return -1;
	*(unsigned *)conf_field(p, d) = v;
	return 0;
}

static int
conf_set_retry(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	unsigned *steps = xcalloc((size_t)argc, sizeof(*steps));
	int bad = 0;

	for (int i = 0; i < argc; i++)
		if (conf_duration_word(p, d, argv[i], &steps[i]) == -1)
			bad = 1;
	if (bad) {
		free(steps);
		return -1;
	}
	free(p->c->retry);
	p->c->retry = steps;
	p->c->nretry = (size_t)argc;
	return 0;
}

static int
conf_set_keyword(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	int v = conf_keyword_find(d->words, argv[0]);

	if (v == -1) {
		char list[128];
		conf_keyword_list(d->words, list, sizeof(list));
		conf_error(p, "%s: unknown value \"%s\" (expected %s)", d->name,
		    argv[0], list);
		return -1;
	}
	*(int *)conf_field(p, d) = v;
	return 0;
}

static int
conf_set_tls_file(struct conf_parser *p, const char *file, char ***arr,
    int **lines, size_t *n)
{
	*arr = conf_array_grow(*arr, *n, sizeof(**arr));
	*lines = conf_array_grow(*lines, *n, sizeof(**lines));
	(*arr)[*n] = xstrdup(file);
	(*lines)[*n] = p->line;
	(*n)++;
	return 0;
}

static int
conf_set_tls_cert(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	return conf_set_tls_file(p, argv[0], &p->certs, &p->cert_lines,
	    &p->ncerts);
}

static int
conf_set_tls_key(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	return conf_set_tls_file(p, argv[0], &p->keys, &p->key_lines,
	    &p->nkeys);
}

static int
conf_sockaddr_equal(const struct sockaddr_storage *a,
    const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return 0;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port &&
		    x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
	return x->sin6_port == y->sin6_port &&
	    memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

/*
 * The words after "listen ADDR:PORT MODE", in any order: at most one TLS
 * mode (plain, starttls, tls) and "proxy". *tls_set says whether a TLS
 * mode was written (the default depends on tls-cert, settled at the end).
 */
static int
conf_listen_options(struct conf_parser *p, int argc, char **argv,
    struct conf_listen *l, int *tls, int *tls_set)
{
	int bad = 0;

	for (int i = 0; i < argc; i++) {
		int k;
		if (strcmp(argv[i], "proxy") == 0 && !l->proxy) {
			l->proxy = 1;
			continue;
		}
		if ((k = conf_keyword_find(conf_words_ltls, argv[i])) != -1 &&
		    !*tls_set) {
			*tls = k;
			*tls_set = 1;
			continue;
		}
		conf_error(p, "listen: %s \"%s\" (expected one of starttls, "
		    "tls or plain, and proxy)", k != -1 || strcmp(argv[i],
		    "proxy") == 0 ? "repeated option" : "unknown option",
		    argv[i]);
		bad = 1;
	}
	return bad ? -1 : 0;
}

static int
conf_set_listen(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	struct conf *c = p->c;
	struct conf_listen l;
	int r, mode, tls = CONF_TLS_NONE, tls_set = 0, bad = 0;

	memset(&l, 0, sizeof(l));
	r = conf_hostport_split(argv[0], strlen(argv[0]), 0, &l.addr,
	    &l.addrlen);
	if (r == CONF_HP_BADADDR) {
		conf_error(p, "listen: bad address \"%s\" (use 0.0.0.0:25 or "
		    "[::]:25)", argv[0]);
		bad = 1;
	} else if (r == CONF_HP_BADPORT) {
		conf_error(p, "listen: bad port in \"%s\"", argv[0]);
		bad = 1;
	}
	if ((mode = conf_keyword_find(conf_words_mode, argv[1])) == -1) {
		conf_error(p, "listen: unknown mode \"%s\" (expected relay or "
		    "submission)", argv[1]);
		bad = 1;
	}
	if (conf_listen_options(p, argc - 2, argv + 2, &l, &tls, &tls_set) < 0)
		bad = 1;
	if (r == 0) {
		for (size_t i = 0; i < c->nlisten; i++)
			if (conf_sockaddr_equal(&c->listen[i].addr, &l.addr)) {
				conf_error(p, "listen: %s already listed at "
				    "line %d", argv[0], c->listen[i].line);
				bad = 1;
				break;
			}
	}
	if (bad)
		return -1;
	l.spec = xstrdup(argv[0]);
	l.mode = (enum conf_listen_mode)mode;
	l.tls = (enum conf_listen_tls)tls;
	l.line = p->line;
	c->listen = conf_array_grow(c->listen, c->nlisten, sizeof(*c->listen));
	p->listen_tls_set = conf_array_grow(p->listen_tls_set, c->nlisten, 1);
	p->listen_tls_set[c->nlisten] = (unsigned char)tls_set;
	c->listen[c->nlisten++] = l;
	return 0;
}

/*
 * "example.com" or ".example.com" (subdomains only), lowercased; a domain
 * written with U-labels ("exämple.de") is kept in its A-label form, as the
 * sessions keep the addresses (idn.h).
 */
static char *
conf_domain_word(struct conf_parser *p, const struct conf_directive *d,
    const char *w)
{
	size_t len = strlen(w);
	const char *dom = w[0] == '.' ? w + 1 : w;
	char a[260];

	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)w[i] < 0x80)
			continue;
		a[0] = '.';
		if (idn_to_ascii(dom, len - (size_t)(dom - w), a + 1,
		    sizeof(a) - 1) < 0) {
			conf_error(p, "%s: \"%s\" is not a valid "
			    "internationalized domain name", d->name, w);
			return NULL;
		}
		w = dom == w ? a + 1 : a;
		len = strlen(w);
		dom = w[0] == '.' ? w + 1 : w;
		break;
	}

	if (len >= 2 && w[0] == '*' && w[1] == '.') {
		conf_error(p, "%s: \"%s\": write \"%s\" for subdomains", d->name,
		    w, w + 1);
		return NULL;
	}
	if (conf_domain_check(dom, len - (size_t)(dom - w)) == -1) {
		conf_error(p, "%s: bad domain \"%s\"", d->name, w);
		return NULL;
	}
	return conf_strdup_lower(w, len);
}

static int
conf_set_relay_domains(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	struct conf *c = p->c;
	int bad = 0;

	for (int i = 0; i < argc; i++) {
		char *dom;
		if (strcmp(argv[i], "*") == 0) {
			conf_error(p, "relay-domains: \"*\" is not allowed (it "
			    "would make an open relay)");
			bad = 1;
			continue;
		}
		if ((dom = conf_domain_word(p, d, argv[i])) == NULL) {
			bad = 1;
			continue;
		}
		c->relay_domains = conf_array_grow(c->relay_domains,
		    c->nrelay_domains, sizeof(*c->relay_domains));
		c->relay_domains[c->nrelay_domains++] = dom;
	}
	return bad ? -1 : 0;
}

/*
 * USER ADDRESS|@DOMAIN|* ...: one entry of sender-login or local-senders
 * (d->name), appended to *list.
 */
static int
conf_sender_list_add(struct conf_parser *p, const struct conf_directive *d,
    struct conf_sender_login **list, size_t *nlist, int argc, char **argv)
{
	struct conf_sender_login sl = { 0 };
	int bad = 0;

	for (const char *u = argv[0]; *u; u++)
		if ((unsigned char)*u <= 0x20 || (unsigned char)*u >= 0x7f)
			bad = 1;
	if (bad || strlen(argv[0]) > 255) {
		conf_error(p, "%s: bad user name \"%s\"", d->name, argv[0]);
		return -1;
	}
	for (size_t i = 0; i < *nlist; i++)
		if (strcasecmp((*list)[i].user, argv[0]) == 0) {
			conf_error(p, "%s: user \"%s\" already listed "
			    "on line %d", d->name, argv[0], (*list)[i].line);
			return -1;
		}
	sl.user = conf_strdup_lower(argv[0], strlen(argv[0]));
	sl.line = p->line;
	for (int i = 1; i < argc; i++) {
		const char *w = argv[i];
		size_t len = strlen(w);
		const char *at = strrchr(w, '@');
		int ok = strcmp(w, "*") == 0 ||
		    (at != NULL && at[1] != '\0' &&
		     conf_domain_check(at + 1, len - (size_t)(at + 1 - w)) == 0);
		if (!ok) {
			conf_error(p, "%s: \"%s\" is not an address, "
			    "@domain or *", d->name, w);
			bad = 1;
			continue;
		}
		sl.allow = conf_array_grow(sl.allow, sl.nallow, sizeof(*sl.allow));
		sl.allow[sl.nallow++] = conf_strdup_lower(w, len);
	}
	if (bad) {
		for (size_t i = 0; i < sl.nallow; i++)
			free(sl.allow[i]);
		free(sl.allow);
		free(sl.user);
		return -1;
	}
	*list = conf_array_grow(*list, *nlist, sizeof(**list));
	(*list)[(*nlist)++] = sl;
	return 0;
}

static int
conf_set_sender_login(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	return conf_sender_list_add(p, d, &p->c->sender_login,
	    &p->c->nsender_login, argc, argv);
}

static int
conf_set_local_senders(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	return conf_sender_list_add(p, d, &p->c->local_senders,
	    &p->c->nlocal_senders, argc, argv);
}

/* local-socket PATH|none */
static int
conf_set_local_socket(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	if (strcmp(argv[0], "none") == 0)
		return 0;
	return conf_set_path(p, d, argc, argv);
}

/* sa as IPv4 when it is an IPv4-mapped IPv6 address, else a copy. */
static void
conf_unmap_v4(const struct sockaddr *sa, struct sockaddr_storage *out)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

	memset(out, 0, sizeof(*out));
	if (sa->sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)out;
		s4->sin_family = AF_INET;
		s4->sin_port = s6->sin6_port;
		memcpy(&s4->sin_addr, &s6->sin6_addr.s6_addr[12], 4);
	} else if (sa->sa_family == AF_INET)
		memcpy(out, sa, sizeof(struct sockaddr_in));
	else if (sa->sa_family == AF_INET6)
		memcpy(out, sa, sizeof(struct sockaddr_in6));
}

const struct conf_listen *
conf_listener_for(const struct conf *c, const struct sockaddr *sa, int local)
{
	struct sockaddr_storage t;

	conf_unmap_v4(sa, &t);
	for (size_t i = 0; i < c->nlisten; i++) {
		const struct conf_listen *l = &c->listen[i];
		if (l->addr.ss_family != t.ss_family)
			continue;
		if (t.ss_family == AF_INET) {
			const struct sockaddr_in *a = (const void *)&l->addr;
			const struct sockaddr_in *b = (const void *)&t;
			if (a->sin_port == b->sin_port &&
			    (a->sin_addr.s_addr == b->sin_addr.s_addr ||
			    (local && a->sin_addr.s_addr == htonl(INADDR_ANY))))
				return l;
		} else if (t.ss_family == AF_INET6) {
			const struct sockaddr_in6 *a = (const void *)&l->addr;
			const struct sockaddr_in6 *b = (const void *)&t;
			if (a->sin6_port == b->sin6_port &&
			    (IN6_ARE_ADDR_EQUAL(&a->sin6_addr, &b->sin6_addr) ||
			    (local && IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr))))
				return l;
		}
	}
	return NULL;
}

/* dest-limit DOMAIN N: the bounds are max-dest-connections' */
static int
conf_set_dest_limit(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	struct conf *c = p->c;
	struct conf_dest_limit dl = { 0 };
	uint64_t v;

	if (conf_domain_check(argv[0], strlen(argv[0])) != 0) {
		conf_error(p, "dest-limit: \"%s\" is not a domain", argv[0]);
		return -1;
	}
	if (conf_parse_u64(argv[1], strlen(argv[1]), &v) == -1 ||
	    v < d->min || v > d->max) {
		conf_error(p, "dest-limit: bad number \"%s\" (%llu to %llu)",
		    argv[1], (unsigned long long)d->min,
		    (unsigned long long)d->max);
		return -1;
	}
	for (size_t i = 0; i < c->ndest_limits; i++)
		if (strcasecmp(c->dest_limits[i].domain, argv[0]) == 0) {
			conf_error(p, "dest-limit: %s already limited at line "
			    "%d", argv[0], c->dest_limits[i].line);
			return -1;
		}
	dl.domain = conf_strdup_lower(argv[0], strlen(argv[0]));
	dl.n = (unsigned)v;
	dl.line = p->line;
	c->dest_limits = conf_array_grow(c->dest_limits, c->ndest_limits,
	    sizeof(*c->dest_limits));
	c->dest_limits[c->ndest_limits++] = dl;
	return 0;
}

/* A DKIM selector: dot-separated labels of letters, digits, - and _. */
static int
conf_selector_check(const char *s)
{
	size_t len = strlen(s), label = 0;

	if (len == 0 || len > 63 || s[0] == '.' || s[len - 1] == '.')
		return -1;
	for (size_t i = 0; i < len; i++) {
		char ch = s[i];
		if (ch == '.') {
			if (label == 0)
				return -1;
			label = 0;
		} else if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		    conf_isdigit(ch) || ch == '-' || ch == '_')
			label++;
		else
			return -1;
	}
	return 0;
}

static int
conf_set_dkim_sign(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	struct conf *c = p->c;
	struct conf_dkim_sign ds = { 0 };
	size_t dlen = strlen(argv[0]);

	if (dlen > 0 && argv[0][dlen - 1] == '.')
		dlen--;
	if (conf_domain_check(argv[0], dlen) != 0) {
		conf_error(p, "dkim-sign: \"%s\" is not a domain", argv[0]);
		return -1;
	}
	if (conf_selector_check(argv[1]) != 0) {
		conf_error(p, "dkim-sign: bad selector \"%s\" (letters, "
		    "digits, - and _, in dot-separated labels)", argv[1]);
		return -1;
	}
	if (argv[2][0] != '/' || strlen(argv[2]) >= PATH_MAX) {
		conf_error(p, "dkim-sign: \"%s\" is not an absolute path",
		    argv[2]);
		return -1;
	}
	for (size_t i = 0; i < c->ndkim_sign; i++)
		if (strncasecmp(c->dkim_sign[i].domain, argv[0], dlen) == 0 &&
		    c->dkim_sign[i].domain[dlen] == '\0' &&
		    strcmp(c->dkim_sign[i].selector, argv[1]) == 0) {
			conf_error(p, "dkim-sign: %s %s already at line %d",
			    argv[0], argv[1], c->dkim_sign[i].line);
			return -1;
		}
	ds.domain = conf_strdup_lower(argv[0], dlen);
	ds.selector = xstrdup(argv[1]);
	ds.keyfile = xstrdup(argv[2]);
	ds.line = p->line;
	c->dkim_sign = conf_array_grow(c->dkim_sign, c->ndkim_sign,
	    sizeof(*c->dkim_sign));
	c->dkim_sign[c->ndkim_sign++] = ds;
	return 0;
}

unsigned
conf_dest_limit_for(const struct conf *c, const char *name)
{
	for (size_t i = 0; i < c->ndest_limits; i++)
		if (strcasecmp(c->dest_limits[i].domain, name) == 0)
			return c->dest_limits[i].n;
	return c->max_dest_connections;
}

static int conf_sender_list_allows(const struct conf_sender_login *list,
    size_t n, const char *user, const char *addr);

int
conf_sender_allowed(const struct conf *c, const char *user, const char *addr)
{
	size_t alen = strlen(addr);

	if (alen == 0)
		return user != NULL;
	if (strcasecmp(user, addr) == 0)
		return 1;
	return conf_sender_list_allows(c->sender_login, c->nsender_login, user,
	    addr);
}

int
conf_local_sender_allowed(const struct conf *c, const char *user,
    const char *addr)
{
	size_t ulen = strlen(user);

	if (strncasecmp(addr, user, ulen) == 0 && addr[ulen] == '@' &&
	    c->hostname != NULL && strcasecmp(addr + ulen + 1, c->hostname) == 0)
		return 1;
	return conf_sender_list_allows(c->local_senders, c->nlocal_senders,
	    user, addr);
}

/* Does list give user (any case) the sender addr (exact, @domain, *)? */
static int
conf_sender_list_allows(const struct conf_sender_login *list, size_t n,
    const char *user, const char *addr)
{
	const char *at = strrchr(addr, '@');

	for (size_t i = 0; i < n; i++) {
		const struct conf_sender_login *sl = &list[i];
		if (strcasecmp(sl->user, user) != 0)
			continue;
		for (size_t k = 0; k < sl->nallow; k++) {
			const char *w = sl->allow[k];
			if (strcmp(w, "*") == 0 || strcasecmp(w, addr) == 0)
				return 1;
			if (w[0] == '@' && at != NULL && strcasecmp(w + 1, at + 1) == 0)
				return 1;
		}
	}
	return 0;
}

/* A list of networks (trusted-networks, proxy-networks): append to *list. */
static int
conf_set_cidr_list(struct conf_parser *p, const char *name, int argc,
    char **argv, struct conf_cidr **list, size_t *n)
{
	struct conf_cidr cidr;
	int bad = 0;

	for (int i = 0; i < argc; i++) {
		if (conf_parse_cidr(argv[i], strlen(argv[i]), &cidr) == -1) {
			conf_error(p, "%s: bad network \"%s\" "
			    "(use 10.0.0.0/8, 2001:db8::/32 or an address)",
			    name, argv[i]);
			bad = 1;
			continue;
		}
		*list = conf_array_grow(*list, *n, sizeof(**list));
		(*list)[(*n)++] = cidr;
	}
	return bad ? -1 : 0;
}

static int
conf_set_trusted(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	return conf_set_cidr_list(p, d->name, argc, argv, &p->c->trusted,
	    &p->c->ntrusted);
}

static int
conf_set_proxy_nets(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	return conf_set_cidr_list(p, d->name, argc, argv, &p->c->proxy_nets,
	    &p->c->nproxy_nets);
}

static int
conf_set_resolver(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	struct conf *c = p->c;
	struct sockaddr_storage ss;
	socklen_t sslen;
	int bad = 0;

	for (int i = 0; i < argc; i++) {
		int r = conf_hostport_split(argv[i], strlen(argv[i]), 53, &ss,
		    &sslen);
		if (r == CONF_HP_BADADDR) {
			conf_error(p, "resolver: bad address \"%s\" (numeric "
			    "IP, optional :port)", argv[i]);
			bad = 1;
			continue;
		}
		if (r == CONF_HP_BADPORT) {
			conf_error(p, "resolver: bad port in \"%s\"", argv[i]);
			bad = 1;
			continue;
		}
		c->resolvers = conf_array_grow(c->resolvers, c->nresolvers,
		    sizeof(*c->resolvers));
		c->resolvers[c->nresolvers++] = ss;
	}
	return bad ? -1 : 0;
}

/*
 * A route host: an IPv6 literal (only inside brackets, so it has ':'), an
 * IPv4 literal (all digits and dots), or a host name. 0 ok, -1 bad.
 */
static int
conf_route_ip_check(const char *h, size_t hlen)
{
	char ip[INET6_ADDRSTRLEN + 1];
	uint8_t addr[16];
	int family;

	if (hlen > 0 && memchr(h, ':', hlen) != NULL)
		family = AF_INET6;
	else if (hlen > 0 && strspn(h, "0123456789.") >= hlen)
		family = AF_INET;
	else
		return conf_domain_check(h, hlen);
	if (hlen >= sizeof(ip))
		return -1;
	memcpy(ip, h, hlen);
	ip[hlen] = '\0';
	return inet_pton(family, ip, addr) == 1 ? 0 : -1;
}

/*
 * LMTP unix socket target, after "lmtp:unix:": an absolute path short
 * enough for sun_path, printable, without "..". 0 ok, -1 bad.
 */
static int
conf_route_lmtp_unix(const char *path, struct conf_route *r)
{
	size_t plen = strlen(path);

	if (path[0] != '/' || plen >= sizeof(((struct sockaddr_un *)0)->
	    sun_path) || strstr(path, "/../") != NULL ||
	    (plen >= 3 && strcmp(path + plen - 3, "/..") == 0))
		return -1;
	for (size_t i = 0; i < plen; i++)
		if ((unsigned char)path[i] <= 0x20 || path[i] == 0x7f)
			return -1;
	r->kind = CONF_ROUTE_HOST;
	r->transport = CONF_XPORT_LMTP_UNIX;
	r->host = xstrdup(path);
	r->port = 0;
	return 0;
}

/*
 * Route target: "mx", "smtp:host[:port]" (MX lookup of host),
 * "smtp:[host][:port]" (that host; IPv4, IPv6 or a name; port 0: mx-port),
 * "lmtp:[host][:port]" or "lmtp:host[:port]" (LMTP, RFC 2033, to that host:
 * never an MX lookup; port 24 by default, RFC 2033 names none) or
 * "lmtp:unix:/path". 0 ok, -1 bad, -2 an IP address without brackets.
 */
static int
conf_route_target(const char *t, struct conf_route *r)
{
	const char *h, *rest;
	size_t hlen, len = strlen(t);
	uint16_t port = 0;
	int lmtp = strncmp(t, "lmtp:", 5) == 0;

	if (strcmp(t, "mx") == 0) {
		r->kind = CONF_ROUTE_MX;
		return 0;
	}
	if (strncmp(t, "lmtp:unix:", 10) == 0)
		return conf_route_lmtp_unix(t + 10, r);
	if (lmtp) {
		r->transport = CONF_XPORT_LMTP;
		port = LMTP_DEFAULT_PORT;
	} else if (strncmp(t, "smtp:", 5) != 0)
		return -1;
	t += 5;
	len -= 5;
	if (len > 0 && t[0] == '[') {
		const char *rb = memchr(t, ']', len);
		if (rb == NULL)
			return -1;
		h = t + 1;
		hlen = (size_t)(rb - h);
		rest = rb + 1;
		r->kind = CONF_ROUTE_HOST;
		if (conf_route_ip_check(h, hlen) == -1)
			return -1;
	} else {
		const char *colon = memchr(t, ':', len);
		h = t;
		hlen = colon != NULL ? (size_t)(colon - t) : len;
		rest = t + hlen;
		r->kind = lmtp ? CONF_ROUTE_HOST : CONF_ROUTE_HOST_MX;
		if (!lmtp && hlen > 0 && strspn(h, "0123456789.") >= hlen)
			return -2;          /* an IP has no MX: use brackets */
		if (conf_route_ip_check(h, hlen) == -1)
			return -1;
	}
	if (*rest != '\0') {
		if (*rest != ':' ||
		    conf_port_parse(rest + 1, strlen(rest + 1), &port) == -1)
			return -1;
	}
	r->host = conf_strdup_lower(h, hlen);
	r->port = port;
	return 0;
}

/*
 * An LMTP route talks in plaintext unless its tls-policy says otherwise
 * (as Postfix's lmtp client); a unix socket never takes TLS. 0 ok, -1 bad.
 */
static int
conf_route_lmtp_tls(struct conf_parser *p, struct conf_route *r, int tls)
{
	if (tls == -1) {
		r->tls = CONF_TLSP_NONE;
		return 0;
	}
	if (r->transport == CONF_XPORT_LMTP_UNIX && tls != CONF_TLSP_NONE) {
		conf_error(p, "route: an LMTP unix socket takes no TLS "
		    "(tls-policy=%s)", conf_tls_policy_name(
		    (enum conf_tls_policy)tls));
		return -1;
	}
	return 0;
}

static int
conf_set_route(struct conf_parser *p, const struct conf_directive *d,
    int argc, char **argv)
{
	struct conf *c = p->c;
	struct conf_route r;
	int bad = 0, tls = -1, rt;

	memset(&r, 0, sizeof(r));
	if (strcmp(argv[0], "*") == 0)
		r.domain = xstrdup("*");
	else if ((r.domain = conf_domain_word(p, d, argv[0])) == NULL)
		bad = 1;
	if ((rt = conf_route_target(argv[1], &r)) == -2) {
		conf_error(p, "route: \"%s\": an IP address has no MX record; "
		    "write smtp:[IP] to deliver to it directly", argv[1]);
		bad = 1;
	} else if (rt == -1 && strncmp(argv[1], "lmtp:", 5) == 0) {
		conf_error(p, "route: bad LMTP target \"%s\" (expected "
		    "lmtp:[HOST][:PORT], lmtp:HOST[:PORT] or lmtp:unix:/PATH)",
		    argv[1]);
		bad = 1;
	} else if (rt == -1) {
		conf_error(p, "route: bad target \"%s\" (expected mx, "
		    "smtp:HOST[:PORT] or smtp:[HOST][:PORT])", argv[1]);
		bad = 1;
	}
	if (argc > 2) {
		if (strncmp(argv[2], "tls-policy=", 11) != 0) {
			conf_error(p, "route: unknown option \"%s\" (expected "
			    "tls-policy=none|may|encrypt|verify|dane)", argv[2]);
			bad = 1;
		} else if ((tls = conf_keyword_find(conf_words_tlsp,
		    argv[2] + 11)) == -1) {
			conf_error(p, "route: unknown tls-policy \"%s\" "
			    "(expected none, may, encrypt, verify or dane)",
			    argv[2] + 11);
			bad = 1;
		}
	}
	if (r.domain != NULL) {
		for (size_t i = 0; i < c->nroutes; i++)
			if (strcmp(c->routes[i].domain, r.domain) == 0) {
				conf_error(p, "route: %s already routed at "
				    "line %d", r.domain, c->routes[i].line);
				bad = 1;
				break;
			}
	}
	r.tls = tls == -1 ? CONF_TLSP_MAY : (enum conf_tls_policy)tls;
	if (!bad && r.transport != CONF_XPORT_SMTP &&
	    conf_route_lmtp_tls(p, &r, tls) == -1)
		bad = 1;
	if (bad) {
		free(r.domain);
		free(r.host);
		return -1;
	}
	r.line = p->line;
	c->routes = conf_array_grow(c->routes, c->nroutes, sizeof(*c->routes));
	p->route_tls_set = conf_array_grow(p->route_tls_set, c->nroutes, 1);
	/* LMTP keeps its own default (none): the global one is for SMTP */
	p->route_tls_set[c->nroutes] = tls != -1 || r.transport != CONF_XPORT_SMTP;
	c->routes[c->nroutes++] = r;
	return 0;
}

/* ------------------------------------------------------------------ */
/* the table */

#define OFF(f)  offsetof(struct conf, f)
#define KB      (1ULL << 10)
#define MB      (1ULL << 20)
#define GB      (1ULL << 30)
#define DAY     86400ULL

#define D_UINT(n, def, lo, hi, f) \
	{ n, conf_set_uint, CONF_T_UINT, def, lo, hi, OFF(f), NULL, 0, 1, 1, \
	  "NUMBER" }
#define D_SIZE(n, def, lo, hi, f) \
	{ n, conf_set_size, CONF_T_SIZE, def, lo, hi, OFF(f), NULL, 0, 1, 1, \
	  "SIZE" }
#define D_DUR(n, def, lo, hi, f) \
	{ n, conf_set_duration, CONF_T_DURATION, def, lo, hi, OFF(f), NULL, \
	  0, 1, 1, "DURATION" }
#define D_WORD(n, def, words, f, usage) \
	{ n, conf_set_keyword, CONF_T_KEYWORD, def, 0, 0, OFF(f), words, 0, \
	  1, 1, usage }
#define D_STR(n, fn, def, f, usage) \
	{ n, fn, CONF_T_STRING, def, 0, 0, OFF(f), NULL, 0, 1, 1, usage }
#define D_LIST(n, fn, def, lo, hi, f, mina, maxa, usage) \
	{ n, fn, CONF_T_OTHER, def, lo, hi, OFF(f), NULL, CONF_D_LIST, \
	  mina, maxa, usage }

static const struct conf_directive conf_table[] = {
	D_STR("hostname", conf_set_hostname, NULL, hostname, "NAME"),
	D_STR("user", conf_set_name, NULL, user, "USER"),
	D_STR("queue", conf_set_path, "/var/spool/tern", queue_dir, "DIR"),
	D_STR("control-socket", conf_set_path, NULL, control_socket, "PATH"),
	D_STR("control-group", conf_set_name, NULL, control_group, "GROUP"),
	D_STR("local-socket", conf_set_local_socket, "none", local_socket,
	    "PATH|none"),
	D_LIST("local-senders", conf_set_local_senders, NULL, 0, 0,
	    local_senders, 2, -1, "USER ADDRESS|@DOMAIN|* ..."),
	D_LIST("tls-cert", conf_set_tls_cert, NULL, 0, 0, tls, 1, 1, "FILE"),
	D_LIST("tls-key", conf_set_tls_key, NULL, 0, 0, tls, 1, 1, "FILE"),
	D_WORD("tls-session-tickets", "on", conf_words_offon,
	    tls_session_tickets, "on|off"),
	D_DUR("tls-ticket-lifetime", "1h", 2, 7 * DAY, tls_ticket_lifetime),
	D_LIST("listen", conf_set_listen, NULL, 0, 0, listen, 2, 4,
	    "ADDR:PORT relay|submission [starttls|tls|plain] [proxy]"),
	D_LIST("relay-domains", conf_set_relay_domains, NULL, 0, 0,
	    relay_domains, 1, -1, "DOMAIN ..."),
	D_LIST("trusted-networks", conf_set_trusted, NULL, 0, 0, trusted, 1,
	    -1, "CIDR ..."),
	D_LIST("proxy-networks", conf_set_proxy_nets, NULL, 0, 0, proxy_nets, 1,
	    -1, "CIDR ..."),
	D_DUR("proxy-timeout", "10s", 1, 300, proxy_timeout),
	D_LIST("route", conf_set_route, NULL, 0, 0, routes, 2, 3,
	    "DOMAIN mx|smtp:HOST[:PORT]|smtp:[HOST][:PORT]|lmtp:[HOST][:PORT]|"
	    "lmtp:unix:/PATH [tls-policy=none|may|encrypt|verify|dane]"),
	D_WORD("tls-policy", "may", conf_words_tlsp, tls_policy,
	    "none|may|encrypt|verify|dane"),
	D_STR("route-auth", conf_set_path, NULL, route_auth_file, "FILE"),
	D_WORD("8bit-unconvertible", "bounce", conf_words_8bit, eightbit_send,
	    "bounce|send"),
	D_LIST("dkim-sign", conf_set_dkim_sign, NULL, 0, 0, dkim_sign, 3, 3,
	    "DOMAIN SELECTOR KEYFILE"),
	D_WORD("dkim-sign-trusted", "off", conf_words_offon, dkim_sign_trusted,
	    "off|on"),
	D_LIST("resolver", conf_set_resolver, NULL, 0, 0, resolvers, 1, -1,
	    "IP[:PORT] ..."),
	{ "mx-port", conf_set_port, CONF_T_PORT, "25", 1, 65535, OFF(mx_port),
	  NULL, 0, 1, 1, "PORT" },
	D_WORD("mta-sts", "on", conf_words_offon, mta_sts, "on|off"),
	{ "mta-sts-port", conf_set_port, CONF_T_PORT, "443", 1, 65535,
	  OFF(mta_sts_port), NULL, 0, 1, 1, "PORT" },
	D_STR("mta-sts-ca-file", conf_set_path, NULL, mta_sts_ca_file, "FILE"),

	D_SIZE("max-message-size", "35M", 1 * KB, 4 * GB, max_message_size),
	D_UINT("max-recipients", "100", 1, 100000, max_recipients),
	D_UINT("max-connections", "1000", 1, 1000000, max_connections),
	D_UINT("max-connections-per-ip", "20", 1, 1000000,
	    max_connections_per_ip),
	D_UINT("max-connections-per-ip-trusted", "0", 0, 1000000,
	    max_connections_per_ip_trusted),
	D_UINT("max-errors", "10", 1, 1000, max_errors),
	D_DUR("idle-timeout", "5m", 1, DAY, idle_timeout),
	D_DUR("session-timeout", "1h", 1, 7 * DAY, session_timeout),
	D_DUR("command-deadline", "0", 0, DAY, command_deadline),
	D_SIZE("data-min-rate", "500", 1, 1 * GB, data_min_rate),
	D_DUR("greet-delay", "0", 0, 60, greet_delay),
	D_WORD("bare-newline", "reject", conf_words_bare, bare_newline,
	    "reject|normalize"),
	D_UINT("max-hops", "50", 1, 1000, max_hops),
	D_WORD("allow-untrusted-routing", "no", conf_words_noyes,
	    allow_untrusted_routing, "no|yes"),
	D_STR("postmaster", conf_set_postmaster, NULL, postmaster, "ADDRESS"),

	D_UINT("session-threads", "0", 0, 1024, session_threads),
	D_UINT("delivery-threads", "0", 0, 1024, delivery_threads),
	D_SIZE("segment-size", "64M", 1 * MB, 16 * GB, segment_size),
	D_SIZE("spool-memory", "256K", 0, 1 * GB, spool_memory),
	D_SIZE("spool-memory-total", "64M", 0, 64 * GB, spool_memory_total),
	D_SIZE("queue-reserve", "64M", 0, 64 * GB, queue_reserve),

	/* several values, but one line: not CONF_D_LIST */
	{ "retry", conf_set_retry, CONF_T_OTHER, "5m 10m 30m 1h 2h 4h", 1,
	  7 * DAY, OFF(retry), NULL, 0, 1, -1, "DURATION ..." },
	D_DUR("max-queue-lifetime", "5d", 1, 365 * DAY, max_queue_lifetime),
	D_DUR("delay-warning", "4h", 0, 365 * DAY, delay_warning),
	D_UINT("max-dest-connections", "20", 1, 10000, max_dest_connections),
	D_UINT("max-out-connections", "200", 1, 100000, max_out_connections),
	D_DUR("connect-timeout", "30s", 1, 3600, connect_timeout),
	D_DUR("greeting-timeout", "5m", 1, DAY, greeting_timeout),
	D_DUR("data-timeout", "10m", 1, DAY, data_timeout),
	D_DUR("command-timeout", "0", 0, DAY, command_timeout),
	D_UINT("dest-initial-connections", "5", 1, 10000,
	    dest_initial_connections),
	D_UINT("dest-failure-cohort", "5", 1, 1000, dest_failure_cohort),
	D_DUR("dest-down-time", "5m", 1, DAY, dest_down_time),
	D_LIST("dest-limit", conf_set_dest_limit, NULL, 1, 10000, dest_limits,
	    2, 2, "DOMAIN NUMBER"),

	D_STR("users-db", conf_set_path, NULL, users_db, "FILE"),
	D_LIST("sender-login", conf_set_sender_login, NULL, 0, 0, sender_login,
	    2, -1, "USER ADDRESS|@DOMAIN|* ..."),
	D_UINT("auth-max-failures", "10", 1, 100000, auth_max_failures),
	D_DUR("auth-failure-window", "15m", 1, DAY, auth_failure_window),

	D_WORD("log", "stderr", conf_words_log, log_syslog, "stderr|syslog"),
	D_WORD("log-format", "text", conf_words_logfmt, log_json, "text|json"),
	D_STR("metrics-listen", conf_set_hostport, NULL, metrics_listen,
	    "ADDR:PORT"),

	/* TLS reporting (RFC 8460): queue/mta/tlsrpt_send.c */
	D_WORD("tlsrpt", "off", conf_words_offon, tlsrpt, "on|off"),
	D_STR("tlsrpt-from", conf_set_postmaster, NULL, tlsrpt_from,
	    "ADDRESS"),
	D_STR("tlsrpt-org", conf_set_hostname, NULL, tlsrpt_org, "NAME"),
	D_DUR("tlsrpt-interval", "1d", 1, DAY, tlsrpt_interval),
};

#define CONF_NDIR (sizeof(conf_table) / sizeof(conf_table[0]))
_Static_assert(CONF_NDIR <= CONF_DIR_MAX, "raise CONF_DIR_MAX");


size_t
conf_directives(const struct conf_directive **out)
{
	*out = conf_table;
	return CONF_NDIR;
}

/* ------------------------------------------------------------------ */
/* the driver */

static const struct conf_directive *
conf_directive_find(const char *name, size_t *idx)
{
	for (size_t i = 0; i < CONF_NDIR; i++)
		if (strcmp(conf_table[i].name, name) == 0) {
			*idx = i;
			return &conf_table[i];
		}
	return NULL;
}

static int
conf_isblank(int ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r';
}

/* Split s (NUL-terminated, modified in place) into words. */
static int
conf_split(char *s, char ***argv, size_t *cap)
{
	int argc = 0;

	for (;;) {
		while (conf_isblank((unsigned char)*s))
			s++;
		if (*s == '\0')
			return argc;
		if ((size_t)argc + 1 >= *cap) {
			*cap = *cap ? *cap * 2 : 16;
			*argv = xreallocarray(*argv, *cap, sizeof(**argv));
		}
		(*argv)[argc++] = s;
		while (*s != '\0' && !conf_isblank((unsigned char)*s))
			s++;
		if (*s != '\0')
			*s++ = '\0';
	}
}

static void
conf_run_directive(struct conf_parser *p, size_t idx, int argc, char **argv)
{
	const struct conf_directive *d = &conf_table[idx];

	if (argc < d->minargs) {
		conf_error(p, "%s: missing argument (usage: %s %s)", d->name,
		    d->name, d->usage);
		return;
	}
	if (d->maxargs >= 0 && argc > d->maxargs) {
		conf_error(p, "%s: too many arguments (usage: %s %s)", d->name,
		    d->name, d->usage);
		return;
	}
	(void)d->parse(p, d, argc, argv);
}

static void
conf_parse_lines(struct conf_parser *p, const char *buf, size_t len)
{
	char *copy = xmalloc(len + 1), **argv = NULL;
	size_t cap = 0, pos = 0, idx;
	const struct conf_directive *d;

	memcpy(copy, buf, len);
	copy[len] = '\0';
	p->line = 0;
	while (pos < len) {
		char *line = copy + pos, *nl = memchr(line, '\n', len - pos);
		size_t llen = nl != NULL ? (size_t)(nl - line) : len - pos;
		char *hash = memchr(line, '#', llen);
		size_t eff = hash != NULL ? (size_t)(hash - line) : llen;
		int argc, bad = 0;

		pos += llen + 1;
		p->line++;
		for (size_t i = 0; i < eff; i++) {
			unsigned char ch = (unsigned char)line[i];
			if ((ch < 0x20 && ch != '\t' && ch != '\r') ||
			    ch == 0x7f) {
				conf_error(p, "invalid character 0x%02x", ch);
				bad = 1;
				break;
			}
		}
		if (bad)
			continue;
		line[eff] = '\0';
		if ((argc = conf_split(line, &argv, &cap)) == 0)
			continue;
		if ((d = conf_directive_find(argv[0], &idx)) == NULL) {
			conf_error(p, "unknown directive \"%.64s\"", argv[0]);
			continue;
		}
		if (p->seen[idx] != 0 && !(d->flags & CONF_D_LIST)) {
			conf_error(p, "%s: already set at line %d", d->name,
			    p->seen[idx]);
			continue;
		}
		if (p->seen[idx] == 0)
			p->seen[idx] = p->line;
		conf_run_directive(p, idx, argc - 1, argv + 1);
	}
	free(argv);
	free(copy);
}

static void
conf_apply_defaults(struct conf_parser *p)
{
	char buf[128], **argv = NULL;
	size_t cap = 0;
	int argc;

	p->in_default = 1;
	p->line = 0;
	for (size_t i = 0; i < CONF_NDIR; i++) {
		if (p->seen[i] != 0 || conf_table[i].def == NULL)
			continue;
		snprintf(buf, sizeof(buf), "%s", conf_table[i].def);
		argc = conf_split(buf, &argv, &cap);
		conf_run_directive(p, i, argc, argv);
	}
	free(argv);
	p->in_default = 0;
}

static int
conf_line_of(const struct conf_parser *p, const char *name)
{
	size_t idx;

	return conf_directive_find(name, &idx) != NULL ? p->seen[idx] : 0;
}

/* Cross-directive rules, once everything is read. */
static void
conf_finish(struct conf_parser *p)
{
	struct conf *c = p->c;
	size_t n = p->ncerts < p->nkeys ? p->ncerts : p->nkeys;
	size_t sunmax = sizeof(((struct sockaddr_un *)0)->sun_path);

	conf_apply_defaults(p);

	/* tls-cert / tls-key pairs, in order */
	c->tls = n ? xcalloc(n, sizeof(*c->tls)) : NULL;
	for (size_t i = 0; i < n; i++) {
		c->tls[i].cert = p->certs[i];
		c->tls[i].key = p->keys[i];
		c->tls[i].cert_line = p->cert_lines[i];
		c->tls[i].key_line = p->key_lines[i];
	}
	c->ntls = n;
	for (size_t i = n; i < p->ncerts; i++) {
		conf_error_at(p, p->cert_lines[i], "tls-cert %s has no matching "
		    "tls-key", p->certs[i]);
		free(p->certs[i]);
	}
	for (size_t i = n; i < p->nkeys; i++) {
		conf_error_at(p, p->key_lines[i], "tls-key %s has no matching "
		    "tls-cert", p->keys[i]);
		free(p->keys[i]);
	}
	p->ncerts = p->nkeys = 0;

	/* listen TLS: default starttls with a certificate, plain without */
	for (size_t i = 0; i < c->nlisten; i++) {
		struct conf_listen *l = &c->listen[i];
		if (!p->listen_tls_set[i])
			l->tls = c->ntls ? CONF_TLS_STARTTLS : CONF_TLS_NONE;
		else if (l->tls != CONF_TLS_NONE && c->ntls == 0)
			conf_error_at(p, l->line, "listen %s: %s needs tls-cert "
			    "and tls-key", l->spec, conf_listen_tls_name(l->tls));
	}
	for (size_t i = 0; i < c->nlisten; i++)
		if (c->listen[i].proxy && c->nproxy_nets == 0)
			conf_error_at(p, c->listen[i].line, "listen %s: proxy "
			    "needs proxy-networks (the balancers allowed to "
			    "name clients)", c->listen[i].spec);
	if (c->nlisten == 0)
		conf_error_at(p, 0, "no listen directive (at least one is "
		    "required)");

	/* routes without their own tls-policy take the global one */
	for (size_t i = 0; i < c->nroutes; i++)
		if (!p->route_tls_set[i])
			c->routes[i].tls = c->tls_policy;

	if (c->control_socket == NULL && c->queue_dir != NULL) {
		size_t qlen = strlen(c->queue_dir);
		c->control_socket = xmalloc(qlen + sizeof("/control.sock"));
		memcpy(c->control_socket, c->queue_dir, qlen);
		memcpy(c->control_socket + qlen, "/control.sock",
		    sizeof("/control.sock"));
		if (strlen(c->control_socket) >= sunmax)
			conf_error_at(p, conf_line_of(p, "queue"),
			    "queue: %s/control.sock is too long for a socket "
			    "(max %zu bytes): set control-socket", c->queue_dir,
			    sunmax - 1);
	}
	if (c->local_socket != NULL) {
		if (strlen(c->local_socket) >= sunmax)
			conf_error_at(p, conf_line_of(p, "local-socket"),
			    "local-socket: path too long for a socket (max %zu "
			    "bytes)", sunmax - 1);
		c->local_listen.spec = xstrdup("local");
		c->local_listen.mode = CONF_LISTEN_LOCAL;
		c->local_listen.tls = CONF_TLS_NONE;
		c->local_listen.line = conf_line_of(p, "local-socket");
	}
	if (c->users_db == NULL && c->queue_dir != NULL) {
		size_t qlen = strlen(c->queue_dir);
		c->users_db = xmalloc(qlen + sizeof("/users.db"));
		memcpy(c->users_db, c->queue_dir, qlen);
		memcpy(c->users_db + qlen, "/users.db", sizeof("/users.db"));
	}
	if (c->control_socket != NULL && strlen(c->control_socket) >= sunmax &&
	    conf_line_of(p, "control-socket") != 0)
		conf_error_at(p, conf_line_of(p, "control-socket"),
		    "control-socket: path too long for a socket (max %zu "
		    "bytes)", sunmax - 1);
}

/* sender-login or local-senders entries */
static void
conf_sender_list_free(struct conf_sender_login *list, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		for (size_t k = 0; k < list[i].nallow; k++)
			free(list[i].allow[k]);
		free(list[i].allow);
		free(list[i].user);
	}
	free(list);
}

static void
conf_free(struct conf *c)
{
	free(c->path);
	free(c->hostname);
	free(c->postmaster);
	free(c->user);
	free(c->queue_dir);
	free(c->control_socket);
	free(c->control_group);
	for (size_t i = 0; i < c->ntls; i++) {
		free(c->tls[i].cert);
		free(c->tls[i].key);
	}
	free(c->tls);
	for (size_t i = 0; i < c->nlisten; i++)
		free(c->listen[i].spec);
	free(c->listen);
	for (size_t i = 0; i < c->nrelay_domains; i++)
		free(c->relay_domains[i]);
	free(c->relay_domains);
	free(c->trusted);
	free(c->proxy_nets);
	for (size_t i = 0; i < c->nroutes; i++) {
		free(c->routes[i].domain);
		free(c->routes[i].host);
	}
	free(c->routes);
	free(c->route_auth_file);
	free(c->mta_sts_ca_file);
	route_auth_free(c->route_auth);
	for (size_t i = 0; i < c->ndkim_sign; i++) {
		free(c->dkim_sign[i].domain);
		free(c->dkim_sign[i].selector);
		free(c->dkim_sign[i].keyfile);
		if (c->dkim_sign[i].key != NULL && c->dkim_key_free != NULL)
			c->dkim_key_free(c->dkim_sign[i].key);
	}
	free(c->dkim_sign);
	free(c->resolvers);
	free(c->retry);
	free(c->metrics_listen);
	free(c->tlsrpt_from);
	free(c->tlsrpt_org);
	free(c->users_db);
	conf_sender_list_free(c->sender_login, c->nsender_login);
	conf_sender_list_free(c->local_senders, c->nlocal_senders);
	free(c->local_socket);
	free(c->local_listen.spec);
	for (size_t i = 0; i < c->ndest_limits; i++)
		free(c->dest_limits[i].domain);
	free(c->dest_limits);
	free(c);
}

static void
conf_parser_init(struct conf_parser *p, const char *fname, conf_err_fn *err,
    void *arg)
{
	memset(p, 0, sizeof(*p));
	p->fname = fname;
	p->err = err;
	p->arg = arg;
	p->c = xcalloc(1, sizeof(*p->c));
	p->c->refcnt = 1;
	p->c->path = xstrdup(fname);
}

/* Frees the parser's scratch; the conf stays with the caller. */
static void
conf_parser_done(struct conf_parser *p)
{
	for (size_t i = 0; i < p->ncerts; i++)
		free(p->certs[i]);
	for (size_t i = 0; i < p->nkeys; i++)
		free(p->keys[i]);
	free(p->certs);
	free(p->keys);
	free(p->cert_lines);
	free(p->key_lines);
	free(p->listen_tls_set);
	free(p->route_tls_set);
}

int
conf_parse(const char *buf, size_t len, const char *fname, struct conf **out,
    conf_err_fn *err, void *arg)
{
	struct conf_parser p;
	int nerr;

	conf_parser_init(&p, fname, err, arg);
	conf_parse_lines(&p, buf, len);
	conf_finish(&p);
	conf_parser_done(&p);
	if ((nerr = p.nerr) != 0)
		conf_free(p.c);
	else
		*out = p.c;
	return nerr;
}

/* ------------------------------------------------------------------ */
/* conf_load: the parts that need the system */

static int
conf_file_read(const char *path, char **out, size_t *outlen, int *saved_errno)
{
	char *buf = NULL;
	size_t len = 0, cap = 0;
	ssize_t r;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		*saved_errno = errno;
		return -1;
	}
	for (;;) {
		if (len == cap) {
			if (cap >= CONF_FILE_MAX) {
				*saved_errno = EFBIG;
				goto fail;
			}
			cap = cap ? cap * 2 : 8192;
			buf = xreallocarray(buf, cap, 1);
		}
		r = read(fd, buf + len, cap - len);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			*saved_errno = errno;
			goto fail;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	*out = buf;
	*outlen = len;
	return 0;
fail:
	close(fd);
	free(buf);
	return -2;
}

static void
conf_check_readable(struct conf_parser *p, int line, const char *what,
    const char *file)
{
	int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);

	if (fd == -1)
		conf_error_at(p, line, "%s %s: %s", what, file, strerror(errno));
	else
		close(fd);
}

int
conf_load(const char *path, struct conf **out, conf_err_fn *err, void *arg)
{
	return conf_load_flags(path, 0, out, err, arg);
}

int
conf_load_flags(const char *path, unsigned flags, struct conf **out,
    conf_err_fn *err, void *arg)
{
	struct conf_parser p;
	struct conf *c;
	char *buf = NULL;
	size_t len = 0;
	int nerr, e = 0, r;

	conf_parser_init(&p, path, err, arg);
	c = p.c;
	if ((r = conf_file_read(path, &buf, &len, &e)) != 0) {
		conf_error_at(&p, 0, "cannot %s: %s", r == -1 ? "open" : "read",
		    strerror(e));
		conf_parser_done(&p);
		conf_free(c);
		return p.nerr;
	}
	conf_parse_lines(&p, buf, len);
	free(buf);
	conf_finish(&p);

	for (size_t i = 0; i < c->ntls && !(flags & CONF_LOAD_NO_TLS_FILES); i++) {
		conf_check_readable(&p, c->tls[i].cert_line, "tls-cert",
		    c->tls[i].cert);
		conf_check_readable(&p, c->tls[i].key_line, "tls-key",
		    c->tls[i].key);
	}
	if (c->user != NULL && getpwnam(c->user) == NULL)
		conf_error_at(&p, conf_line_of(&p, "user"), "user %s: no such "
		    "user", c->user);
	if (c->control_group != NULL && getgrnam(c->control_group) == NULL)
		conf_error_at(&p, conf_line_of(&p, "control-group"),
		    "control-group %s: no such group", c->control_group);
	if (c->hostname == NULL) {
		char host[256];
		if (gethostname(host, sizeof(host)) == -1)
			conf_error_at(&p, 0, "no hostname directive and "
			    "gethostname failed: %s", strerror(errno));
		else {
			host[sizeof(host) - 1] = '\0';
			c->hostname = xstrdup(host);
		}
	}
	if (c->postmaster == NULL && c->hostname != NULL) {
		size_t n = strlen("postmaster@") + strlen(c->hostname) + 1;
		c->postmaster = xmalloc(n);
		snprintf(c->postmaster, n, "postmaster@%s", c->hostname);
	}

	conf_parser_done(&p);
	if ((nerr = p.nerr) != 0)
		conf_free(c);
	else
		*out = c;
	return nerr;
}

/* ------------------------------------------------------------------ */
/* refcount */

struct conf *
conf_ref(struct conf *c)
{
	__atomic_add_fetch(&c->refcnt, 1, __ATOMIC_RELAXED);
	return c;
}

void
conf_unref(struct conf *c)
{
	if (c == NULL)
		return;
	if (__atomic_sub_fetch(&c->refcnt, 1, __ATOMIC_ACQ_REL) == 0)
		conf_free(c);
}

/* ------------------------------------------------------------------ */
/* lookups */

static int
conf_cidr_match(const struct conf_cidr *n, int family, const uint8_t *a)
{
	unsigned full = n->prefix / 8, rest = n->prefix % 8;

	if (n->family != family)
		return 0;
	if (memcmp(n->addr, a, full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	return (a[full] & (uint8_t)(0xffu << (8 - rest))) == n->addr[full];
}

unsigned
conf_command_deadline(const struct conf *c)
{
	if (c->command_deadline != 0)
		return c->command_deadline;
	return c->idle_timeout > UINT_MAX / 2 ? UINT_MAX : 2 * c->idle_timeout;
}

/* Is sa (an IPv4-mapped IPv6 address counts as IPv4) in list[0..n)? */
static int
conf_cidr_list_match(const struct conf_cidr *list, size_t n,
    const struct sockaddr *sa)
{
	const uint8_t *a4 = NULL, *a6 = NULL;

	if (sa->sa_family == AF_INET)
		a4 = (const uint8_t *)
		    &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	else if (sa->sa_family == AF_INET6) {
		const struct in6_addr *in6 =
		    &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
		a6 = in6->s6_addr;
		if (IN6_IS_ADDR_V4MAPPED(in6))
			a4 = in6->s6_addr + 12;
	} else
		return 0;
	for (size_t i = 0; i < n; i++) {
		if (a4 != NULL && conf_cidr_match(&list[i], AF_INET, a4))
			return 1;
		if (a6 != NULL && conf_cidr_match(&list[i], AF_INET6, a6))
			return 1;
	}
	return 0;
}

int
conf_is_trusted(const struct conf *c, const struct sockaddr *sa)
{
	return conf_cidr_list_match(c->trusted, c->ntrusted, sa);
}

int
conf_is_proxy_peer(const struct conf *c, const struct sockaddr *sa)
{
	return conf_cidr_list_match(c->proxy_nets, c->nproxy_nets, sa);
}

/* ".example.com" matches "a.example.com", not "example.com". */
static int
conf_suffix_match(const char *pat, size_t plen, const char *dom, size_t len)
{
	return len > plen &&
	    ascii_casecmp_n(dom + len - plen, plen, pat, plen) == 0;
}

int
conf_is_relay_domain(const struct conf *c, const char *domain, size_t len)
{
	if (!conf_domain_shape_ok(domain, len))
		return 0;
	for (size_t i = 0; i < c->nrelay_domains; i++) {
		const char *e = c->relay_domains[i];
		size_t elen = strlen(e);
		if (e[0] == '.' ? conf_suffix_match(e, elen, domain, len) :
		    ascii_casecmp_n(e, elen, domain, len) == 0)
			return 1;
	}
	return 0;
}

const struct conf_route *
conf_route_for(const struct conf *c, const char *domain, size_t len)
{
	/* the built-in "* mx", one per global tls-policy */
	static const struct conf_route fallback[] = {
		{ (char *)"*", CONF_ROUTE_MX, NULL, 0, CONF_TLSP_NONE, 0,
		    CONF_XPORT_SMTP },
		{ (char *)"*", CONF_ROUTE_MX, NULL, 0, CONF_TLSP_MAY, 0,
		    CONF_XPORT_SMTP },
		{ (char *)"*", CONF_ROUTE_MX, NULL, 0, CONF_TLSP_ENCRYPT, 0,
		    CONF_XPORT_SMTP },
		{ (char *)"*", CONF_ROUTE_MX, NULL, 0, CONF_TLSP_VERIFY, 0,
		    CONF_XPORT_SMTP },
		{ (char *)"*", CONF_ROUTE_MX, NULL, 0, CONF_TLSP_DANE, 0,
		    CONF_XPORT_SMTP },
	};
	const struct conf_route *best = NULL, *star = NULL;
	size_t bestlen = 0;
	int shape = conf_domain_shape_ok(domain, len);

	for (size_t i = 0; i < c->nroutes; i++) {
		const struct conf_route *r = &c->routes[i];
		size_t rlen = strlen(r->domain);
		if (strcmp(r->domain, "*") == 0)
			star = r;
		else if (r->domain[0] != '.') {
			if (ascii_casecmp_n(r->domain, rlen, domain, len) == 0)
				return r;
		} else if (shape && rlen > bestlen &&
		    conf_suffix_match(r->domain, rlen, domain, len)) {
			best = r;
			bestlen = rlen;
		}
	}
	if (best != NULL)
		return best;
	if (star != NULL)
		return star;
	if ((unsigned)c->tls_policy < sizeof(fallback) / sizeof(fallback[0]))
		return &fallback[c->tls_policy];
	return &fallback[CONF_TLSP_MAY];
}

/* ------------------------------------------------------------------ */
/* names */

const char *
conf_listen_mode_name(enum conf_listen_mode m)
{
	if (m == CONF_LISTEN_LOCAL)
		return "local";
	return (unsigned)m < 2 ? conf_words_mode[m] : "?";
}

const char *
conf_tls_policy_name(enum conf_tls_policy p)
{
	return (unsigned)p <= CONF_TLSP_DANE ? conf_words_tlsp[p] : "?";
}

const char *
conf_listen_tls_name(enum conf_listen_tls t)
{
	return (unsigned)t < 3 ? conf_words_ltls[t] : "?";
}
