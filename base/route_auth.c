/*
 * route_auth.c - smarthost credentials (see tern/route_auth.h for the file
 * format and the matching rule).
 *
 * route_auth_parse is pure (fuzzed: tests/fuzz/fuzz_route_auth.c); the
 * read checks owner and mode before it reads a byte. Runs on ternd's main
 * thread (start and reload) and in the privileged helper; never logs.
 *
 * Untrusted input: none from the network; the file is the operator's, but
 * it is bounded (line, field and file sizes) and a mistake in it is an
 * error with a line number, never a crash. No message quotes a password.
 */
#include <sys/stat.h>

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "tern/route_auth.h"
#include "tern/util.h"

struct route_auth_parser {
	const char *fname;
	conf_err_fn *err;
	void *arg;
	int nerr;
};

static void route_auth_error(struct route_auth_parser *p, int line,
    const char *fmt, ...) TERN_PRINTF(3, 4);

static void
route_auth_error(struct route_auth_parser *p, int line, const char *fmt, ...)
{
	char msg[512], full[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (line > 0)
		snprintf(full, sizeof(full), "%s:%d: %s", p->fname, line, msg);
	else
		snprintf(full, sizeof(full), "%s: %s", p->fname, msg);
	p->nerr++;
	if (p->err != NULL)
		p->err(p->arg, full);
}

static int
route_auth_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Bytes a field may hold: printable ASCII, blanks (inside a password
 * only, the caller splits), and UTF-8 (any byte >= 0x80). */
static int
route_auth_bad_byte(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if ((c < 0x20 && c != '\t') || c == 0x7f)
			return 1;
	}
	return 0;
}

static char *
route_auth_dup(const char *p, size_t n, int lower)
{
	char *s = xmalloc(n + 1);

	for (size_t i = 0; i < n; i++)
		s[i] = lower ? (char)tolower((unsigned char)p[i]) : p[i];
	s[n] = '\0';
	return s;
}

static void
route_auth_zfree(char *s)
{
	if (s == NULL)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

/* One line (no LF, CR trimmed by the caller): 0, or -1 (reported). */
static int
route_auth_line(struct route_auth_parser *p, struct route_auth *ra,
    const char *s, size_t n, int line)
{
	size_t i = 0, h0, h1, u0, u1, p0, p1;
	struct route_auth_entry *e;

	while (i < n && route_auth_blank(s[i]))
		i++;
	if (i == n || s[i] == '#')
		return 0;
	if (route_auth_bad_byte(s, n) || memchr(s, '\0', n) != NULL) {
		route_auth_error(p, line, "control character in the line");
		return -1;
	}
	h0 = i;
	while (i < n && !route_auth_blank(s[i]))
		i++;
	h1 = i;
	while (i < n && route_auth_blank(s[i]))
		i++;
	u0 = i;
	while (i < n && !route_auth_blank(s[i]))
		i++;
	u1 = i;
	while (i < n && route_auth_blank(s[i]))
		i++;
	p0 = i;
	p1 = n;
	while (p1 > p0 && route_auth_blank(s[p1 - 1]))
		p1--;
	if (u0 == u1 || p0 == p1) {
		route_auth_error(p, line, "expected HOST USER PASSWORD");
		return -1;
	}
	if (h1 - h0 >= ROUTE_AUTH_KEY_MAX) {
		route_auth_error(p, line, "host too long");
		return -1;
	}
	if (u1 - u0 > ROUTE_AUTH_FIELD_MAX || p1 - p0 > ROUTE_AUTH_FIELD_MAX) {
		route_auth_error(p, line, "user or password longer than %d "
		    "bytes", ROUTE_AUTH_FIELD_MAX);
		return -1;
	}
	for (size_t k = 0; k < ra->n; k++)
		if (strlen(ra->v[k].host) == h1 - h0 &&
		    strncasecmp(ra->v[k].host, s + h0, h1 - h0) == 0) {
			route_auth_error(p, line, "%s already has credentials "
			    "at line %d", ra->v[k].host, ra->v[k].line);
			return -1;
		}
	ra->v = xreallocarray(ra->v, ra->n + 1, sizeof(*ra->v));
	e = &ra->v[ra->n++];
	e->host = route_auth_dup(s + h0, h1 - h0, 1);
	e->user = route_auth_dup(s + u0, u1 - u0, 0);
	e->pass = route_auth_dup(s + p0, p1 - p0, 0);
	e->line = line;
	return 0;
}

int
route_auth_parse(const char *buf, size_t len, const char *fname,
    struct route_auth **out, conf_err_fn *err, void *arg)
{
	struct route_auth_parser p = { fname, err, arg, 0 };
	struct route_auth *ra = xcalloc(1, sizeof(*ra));
	size_t i = 0;
	int line = 0;

	while (i < len) {
		const char *lf = memchr(buf + i, '\n', len - i);
		size_t end = lf != NULL ? (size_t)(lf - buf) : len, n = end - i;

		line++;
		if (n > 0 && buf[end - 1] == '\r')
			n--;
		if (n > ROUTE_AUTH_LINE_MAX)
			route_auth_error(&p, line, "line longer than %d bytes",
			    ROUTE_AUTH_LINE_MAX);
		else
			(void)route_auth_line(&p, ra, buf + i, n, line);
		i = end + 1;
	}
	if (p.nerr != 0) {
		route_auth_free(ra);
		return p.nerr;
	}
	*out = ra;
	return 0;
}

void
route_auth_free(struct route_auth *ra)
{
	if (ra == NULL)
		return;
	for (size_t i = 0; i < ra->n; i++) {
		free(ra->v[i].host);
		route_auth_zfree(ra->v[i].user);
		route_auth_zfree(ra->v[i].pass);
	}
	free(ra->v);
	free(ra);
}

const struct route_auth_entry *
route_auth_find(const struct route_auth *ra, const char *key)
{
	if (ra == NULL || key == NULL)
		return NULL;
	for (size_t i = 0; i < ra->n; i++)
		if (strcasecmp(ra->v[i].host, key) == 0)
			return &ra->v[i];
	return NULL;
}

int
route_auth_route_key(const struct conf_route *r, char *buf, size_t len)
{
	char port[8] = "";
	int n;

	/* only SMTP targets with a host: "mx" (and any other kind) has none */
	if ((r->kind != CONF_ROUTE_HOST && r->kind != CONF_ROUTE_HOST_MX) ||
	    r->host == NULL)
		return -1;
	if (r->port != 0)
		snprintf(port, sizeof(port), ":%u", (unsigned)r->port);
	if (r->kind == CONF_ROUTE_HOST)
		n = snprintf(buf, len, "[%s]%s", r->host, port);
	else
		n = snprintf(buf, len, "%s%s", r->host, port);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* ------------------------------------------------------------------ */
/* the file */

int
route_auth_read(const char *path, uid_t owner, char **buf, size_t *len,
    char *err, size_t errlen)
{
	struct stat st;
	char *b = NULL;
	size_t n = 0;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NOFOLLOW);
	if (fd == -1) {
		snprintf(err, errlen, "%s", strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		snprintf(err, errlen, "%s", strerror(errno));
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "not a regular file");
		goto fail;
	}
	if (st.st_uid != 0 && st.st_uid != owner) {
		snprintf(err, errlen, "owned by uid %u: it holds passwords, "
		    "so it must belong to root or to the user ternd runs as "
		    "(uid %u)", (unsigned)st.st_uid, (unsigned)owner);
		goto fail;
	}
	if ((st.st_mode & 077) != 0) {
		snprintf(err, errlen, "mode %04o is too open: it holds "
		    "passwords (chmod 600)", (unsigned)(st.st_mode & 07777));
		goto fail;
	}
	if (st.st_size > ROUTE_AUTH_FILE_MAX) {
		snprintf(err, errlen, "larger than %d bytes",
		    ROUTE_AUTH_FILE_MAX);
		goto fail;
	}
	b = xmalloc((size_t)st.st_size + 1);
	while (n < (size_t)st.st_size + 1) {
		ssize_t r = read(fd, b + n, (size_t)st.st_size + 1 - n);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			snprintf(err, errlen, "%s", strerror(errno));
			goto fail;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > (size_t)st.st_size) {
		snprintf(err, errlen, "changed while being read");
		goto fail;
	}
	close(fd);
	*buf = b;
	*len = n;
	return 0;
fail:
	route_auth_buf_free(b, n);
	close(fd);
	return -1;
}

void
route_auth_buf_free(char *buf, size_t len)
{
	if (buf == NULL)
		return;
	explicit_bzero(buf, len);
	free(buf);
}

int
route_auth_load(const char *path, uid_t owner, struct route_auth **out,
    conf_err_fn *err, void *arg)
{
	char *buf, msg[512];
	size_t len;
	int nerr;

	if (route_auth_read(path, owner, &buf, &len, msg, sizeof(msg)) != 0) {
		struct route_auth_parser p = { path, err, arg, 0 };
		route_auth_error(&p, 0, "route-auth: %s", msg);
		return 1;
	}
	nerr = route_auth_parse(buf, len, path, out, err, arg);
	route_auth_buf_free(buf, len);
	return nerr;
}
