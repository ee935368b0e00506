/*
 * sendmail.c - tern-sendmail: the sendmail(8) command local programs call
 * (cron, PHP mail(), git send-email...). Installed by the package also as
 * /usr/sbin/sendmail, /usr/bin/mailq and /usr/bin/newaliases; the name it
 * is called by picks the mode (mailq = -bp, newaliases = -bi).
 *
 *   tern-sendmail [-C conf] [-t] [-i] [-f sender] [-F name] [-v] [addr ...]
 *   tern-sendmail -bs | -bp | -bi | -q
 *
 * It reads the message on stdin and hands it to ternd over the
 * local-submission socket (local-socket in tern.conf; see local.c) in SMTP:
 * ternd learns who we are from the kernel (SO_PEERCRED), forces the sender
 * of a non-root caller unless local-senders allows it, adds Received:,
 * Date: and Message-ID:, and answers 250 only once the message is
 * committed. So exit 0 means durable, as with SMTP.
 *
 * The message: lines end in LF or CRLF (sent as CRLF, dot-stuffed); without
 * -i / -oi a line with a single "." ends it. Bcc: fields are removed (with
 * -t their addresses are recipients, as are To: and Cc:, besides the
 * command-line ones). A message without From: gets one (-F names it).
 * Ignored, as elsewhere: -oX options (-oem, -odi, -odb...), -B, -N, -R, -V,
 * -X, -O, -h, -L, -U, -G, -bm.
 *
 * Exit codes (sysexits.h, as sendmail): 0 queued; 64 usage; 65 message
 * refused; 67 recipient refused; 75 temporary: ternd unreachable or a 4xx;
 * 78 configuration (no local-socket).
 *
 * Reads the configuration with the pure conf_parse() like ternctl: the
 * caller may be any local user. Single-threaded, blocking I/O.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sysexits.h>
#include <unistd.h>

#include "tern/conf.h"
#include "tern/mailhdr.h"
#include "tern/util.h"

#define SM_CONF        "/etc/tern/tern.conf"
#define SM_TIMEOUT     300          /* seconds for any reply of ternd */
#define SM_ADDR_MAX    1024

enum sm_mode { SM_SEND, SM_SMTP, SM_QUEUE, SM_RUNQ, SM_ALIASES };

struct sm_opts {
	enum sm_mode mode;
	const char *conf_path;
	const char *from;            /* -f / -r, or NULL */
	const char *fullname;        /* -F, or NULL */
	int t, dot_ends, verbose;
	char **rcpts;                /* command-line recipients */
	int nrcpts;
};

struct sm_conn {
	FILE *in, *out;
	int verbose;
};

static void sm_die(int ex, const char *fmt, ...) TERN_PRINTF(2, 3);

static void
sm_die(int ex, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "tern-sendmail: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(ex);
}

static void
sm_usage(void)
{
	fprintf(stderr, "usage: tern-sendmail [-C conf] [-t] [-i] [-f sender] "
	    "[-F name] [-v] [address ...]\n"
	    "       tern-sendmail -bs | -bp | -bi | -q\n");
	exit(EX_USAGE);
}

/* The argument of -X: glued (-fx) or the next word. */
static const char *
sm_optarg(char **argv, int *i, const char *rest)
{
	if (*rest != '\0')
		return rest;
	if (argv[*i + 1] == NULL)
		sm_usage();
	return argv[++*i];
}

static void
sm_parse_args(int argc, char **argv, struct sm_opts *o)
{
	const char *base = strrchr(argv[0], '/');
	int i;

	base = base != NULL ? base + 1 : argv[0];
	o->conf_path = SM_CONF;
	o->dot_ends = 1;
	if (strcmp(base, "mailq") == 0)
		o->mode = SM_QUEUE;
	else if (strcmp(base, "newaliases") == 0)
		o->mode = SM_ALIASES;
	for (i = 1; i < argc && argv[i][0] == '-' && argv[i][1] != '\0'; i++) {
		const char *a = argv[i] + 1;
		if (strcmp(a, "-") == 0) {
			i++;
			break;
		}
		switch (a[0]) {
		case 't': o->t = 1; break;
		case 'i': o->dot_ends = 0; break;
		case 'v': o->verbose = 1; break;
		case 'f': case 'r': o->from = sm_optarg(argv, &i, a + 1); break;
		case 'F': o->fullname = sm_optarg(argv, &i, a + 1); break;
		case 'C': o->conf_path = sm_optarg(argv, &i, a + 1); break;
		case 'q':
			o->mode = SM_RUNQ;
			break;
		case 'o':
			if (strcmp(a, "oi") == 0)
				o->dot_ends = 0;
			/* -oem, -odi, -odb, -oQ...: nothing to do */
			break;
		case 'b':
			if (strcmp(a, "bs") == 0)
				o->mode = SM_SMTP;
			else if (strcmp(a, "bp") == 0)
				o->mode = SM_QUEUE;
			else if (strcmp(a, "bi") == 0)
				o->mode = SM_ALIASES;
			else if (strcmp(a, "bm") != 0)
				sm_die(EX_USAGE, "mode -%s is not supported", a);
			break;
		case 'B': case 'N': case 'R': case 'V': case 'X': case 'O':
		case 'h': case 'L':
			(void)sm_optarg(argv, &i, a + 1);   /* ignored */
			break;
		case 'U': case 'G': case 'm': case 'n': case 'e':
			break;
		default:
			sm_die(EX_USAGE, "unknown option -%s", a);
		}
	}
	o->rcpts = argv + i;
	o->nrcpts = argc - i;
}

static void
sm_conf_err(void *arg, const char *msg)
{
	fprintf(stderr, "tern-sendmail: %s\n", msg);
}

static struct conf *
sm_conf(const char *path)
{
	struct conf *c = NULL;
	FILE *f = fopen(path, "r");
	size_t cap = 4096, len = 0, n;
	char *text;

	if (f == NULL)
		sm_die(EX_CONFIG, "%s: %s", path, strerror(errno));
	text = xmalloc(cap);
	while ((n = fread(text + len, 1, cap - len, f)) > 0) {
		len += n;
		if (len == cap)
			text = xreallocarray(text, cap *= 2, 1);
	}
	fclose(f);
	if (conf_parse(text, len, path, &c, sm_conf_err, NULL) != 0)
		sm_die(EX_CONFIG, "%s: configuration has errors (ternd -n -c %s)",
		    path, path);
	free(text);
	if (c->hostname == NULL) {
		char h[256] = "localhost";
		gethostname(h, sizeof(h) - 1);
		c->hostname = xstrdup(h);
	}
	return c;
}

/* ternctl next to this program (the real file, not the sendmail link). */
static void
sm_exec_ternctl(const char *conf_path, char *const *args)
{
	char self[PATH_MAX], path[PATH_MAX + 16];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	char *argv[8];
	int k = 0;

	if (n <= 0)
		sm_die(EX_OSERR, "readlink /proc/self/exe: %s", strerror(errno));
	self[n] = '\0';
	*strrchr(self, '/') = '\0';
	snprintf(path, sizeof(path), "%s/ternctl", self);
	argv[k++] = path;
	argv[k++] = (char *)"-c";
	argv[k++] = (char *)conf_path;
	while (*args != NULL && k < 7)
		argv[k++] = *args++;
	argv[k] = NULL;
	execv(path, argv);
	sm_die(EX_OSERR, "%s: %s", path, strerror(errno));
}

/* Connect to the local socket; exit 75 with a clear message if we cannot. */
static int
sm_connect(const struct conf *c)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct timeval tv = { SM_TIMEOUT, 0 };
	int fd;

	if (c->local_socket == NULL)
		sm_die(EX_CONFIG, "%s: no local-socket: ternd takes no local "
		    "submissions", c->path != NULL ? c->path : "configuration");
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", c->local_socket);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0)
		sm_die(EX_TEMPFAIL, "cannot reach ternd at %s: %s (is ternd "
		    "running?); message not sent", c->local_socket,
		    strerror(errno));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

/* One whole reply (multi-line too); returns its code, 0 if none. */
static int
sm_reply(struct sm_conn *k, char *last, size_t lastlen)
{
	char line[1024];

	while (fgets(line, sizeof(line), k->in) != NULL) {
		if (k->verbose)
			fprintf(stderr, "<<< %s", line);
		if (strlen(line) < 4)
			return 0;
		if (line[3] != '-') {
			line[strcspn(line, "\r\n")] = '\0';
			snprintf(last, lastlen, "%s", line);
			return atoi(line);
		}
	}
	snprintf(last, lastlen, "connection lost: %s",
	    ferror(k->in) ? strerror(errno) : "ternd closed it");
	return 0;
}

static int sm_cmd(struct sm_conn *k, char *last, size_t lastlen,
    const char *fmt, ...) TERN_PRINTF(4, 5);

/* Send one command line and read its reply code. */
static int
sm_cmd(struct sm_conn *k, char *last, size_t lastlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	if (k->verbose) {
		va_list aq;
		va_copy(aq, ap);
		fprintf(stderr, ">>> ");
		vfprintf(stderr, fmt, aq);
		fprintf(stderr, "\n");
		va_end(aq);
	}
	vfprintf(k->out, fmt, ap);
	va_end(ap);
	fputs("\r\n", k->out);
	fflush(k->out);
	return sm_reply(k, last, lastlen);
}

/* Exit for a refusal: 4xx or no answer -> 75; 5xx -> ex5. */
static void
sm_refused(int code, const char *what, const char *last, int ex5)
{
	sm_die(code >= 500 && code < 600 ? ex5 : EX_TEMPFAIL,
	    "%s refused by ternd: %s", what, last);
}

/* -bs: SMTP on stdin/stdout, bridged to the local socket, until ternd closes. */
static int
sm_bridge(int fd)
{
	struct pollfd p[2] = { { .fd = 0, .events = POLLIN },
	    { .fd = fd, .events = POLLIN } };
	char buf[16384];

	for (;;) {
		if (poll(p, 2, SM_TIMEOUT * 1000) <= 0)
			return EX_TEMPFAIL;
		for (int i = 0; i < 2; i++) {
			if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			ssize_t n = read(p[i].fd, buf, sizeof(buf));
			if (n <= 0) {
				if (i == 1)
					return EX_OK;   /* ternd closed: after QUIT */
				/*
				 * Input ends: no half-close, ternd would drop a
				 * reply still due (a commit); its replies keep
				 * coming until it closes after QUIT (or its
				 * idle-timeout).
				 */
				p[0].fd = -1;
				continue;
			}
			int to = i == 0 ? fd : 1;
			for (ssize_t o = 0; o < n; ) {
				ssize_t w = write(to, buf + o, (size_t)(n - o));
				if (w <= 0)
					return EX_IOERR;
				o += w;
			}
		}
	}
}

struct sm_msg {
	char *buf;                    /* the message as read (LF or CRLF) */
	size_t len;
	size_t hdr_len;               /* header section (fields only) */
	int have_from;
	char **rcpts;                 /* owned */
	size_t nrcpts;
};

static void
sm_rcpt_add(struct sm_msg *m, const char *addr)
{
	m->rcpts = xreallocarray(m->rcpts, m->nrcpts + 1, sizeof(char *));
	m->rcpts[m->nrcpts++] = xstrdup(addr);
}

/* Read stdin (until EOF, or a "." line unless -i); max bytes. */
static void
sm_read(struct sm_msg *m, int dot_ends, uint64_t max)
{
	size_t cap = 65536;
	char line[4096];
	int bol = 1;

	m->buf = xmalloc(cap);
	while (fgets(line, sizeof(line), stdin) != NULL) {
		size_t n = strlen(line);
		if (bol && dot_ends && (strcmp(line, ".\n") == 0 ||
		    strcmp(line, ".\r\n") == 0 || strcmp(line, ".") == 0))
			break;
		bol = line[n - 1] == '\n';
		if (m->len + n > max)
			sm_die(EX_DATAERR, "message larger than max-message-size "
			    "(%llu bytes): not sent", (unsigned long long)max);
		while (m->len + n > cap)
			m->buf = xreallocarray(m->buf, cap *= 2, 1);
		memcpy(m->buf + m->len, line, n);
		m->len += n;
	}
}

/* Header fields: From: seen? With -t, To/Cc/Bcc addresses are recipients. */
static void
sm_scan(struct sm_msg *m, int t)
{
	struct mailhdr_field f;
	char addr[SM_ADDR_MAX];

	while (mailhdr_next(m->buf + m->hdr_len, m->len - m->hdr_len, &f)) {
		m->hdr_len += f.len;
		if (mailhdr_is(&f, "From"))
			m->have_from = 1;
		if (!t || !(mailhdr_is(&f, "To") || mailhdr_is(&f, "Cc") ||
		    mailhdr_is(&f, "Bcc")))
			continue;
		size_t off = 0;
		while (mailhdr_addr_next(f.value, f.value_len, &off, addr,
		    sizeof(addr)))
			sm_rcpt_add(m, addr);
	}
}

/* Write p[0..len) as CRLF lines, dot-stuffed. */
static void
sm_put_text(FILE *out, const char *p, size_t len)
{
	size_t i = 0;

	while (i < len) {
		const char *nl = memchr(p + i, '\n', len - i);
		size_t e = nl != NULL ? (size_t)(nl - p) : len, n = e - i;
		if (n > 0 && p[i + n - 1] == '\r')
			n--;
		if (p[i] == '.')
			fputc('.', out);
		fwrite(p + i, 1, n, out);
		fputs("\r\n", out);
		i = e + 1;
	}
}

/* The header section without Bcc:, plus From: if missing, then the body. */
static void
sm_put_message(FILE *out, const struct sm_msg *m, const char *from,
    const char *fullname)
{
	struct mailhdr_field f;
	size_t off = 0;

	if (!m->have_from) {
		if (fullname != NULL && fullname[0] != '\0')
			fprintf(out, "From: \"%s\" <%s>\r\n", fullname, from);
		else
			fprintf(out, "From: %s\r\n", from);
	}
	while (off < m->hdr_len && mailhdr_next(m->buf + off, m->hdr_len - off,
	    &f)) {
		if (!mailhdr_is(&f, "Bcc"))
			sm_put_text(out, m->buf + off, f.len);
		off += f.len;
	}
	/* a body with no empty line before it ("echo text | sendmail a@b") */
	const char *body = m->buf + m->hdr_len;
	size_t blen = m->len - m->hdr_len;
	if (blen > 0 && body[0] != '\n' && !(blen > 1 && body[0] == '\r' &&
	    body[1] == '\n'))
		fputs("\r\n", out);
	sm_put_text(out, body, blen);
	fputs(".\r\n", out);
}

/* -F's name without what would break the quoted display name. */
static char *
sm_fullname(const char *given, const struct passwd *pw)
{
	const char *src = given;
	char *name;
	size_t n = 0;

	if (src == NULL && pw != NULL && pw->pw_gecos != NULL)
		src = pw->pw_gecos;
	if (src == NULL)
		return NULL;
	name = xmalloc(strlen(src) + 1);
	for (; *src != '\0' && (given != NULL || *src != ','); src++)
		if (*src != '"' && *src != '\\' && (unsigned char)*src >= 32)
			name[n++] = *src;
	name[n] = '\0';
	return name;
}

static int
sm_send(const struct sm_opts *o, const struct conf *c)
{
	struct sm_msg m = { 0 };
	struct passwd *pw = getpwuid(getuid());
	char from[SM_ADDR_MAX], last[1024];
	struct sm_conn k = { .verbose = o->verbose };
	int code;

	if (o->from != NULL)
		snprintf(from, sizeof(from), "%s", o->from);
	else
		snprintf(from, sizeof(from), "%s@%s", pw != NULL ? pw->pw_name :
		    "nobody", c->hostname);
	from[strcspn(from, "\r\n<>")] = '\0';
	sm_read(&m, o->dot_ends, c->max_message_size);
	sm_scan(&m, o->t);
	for (int i = 0; i < o->nrcpts; i++)
		sm_rcpt_add(&m, o->rcpts[i]);
	if (m.nrcpts == 0)
		sm_die(EX_USAGE, "no recipients (name them, or use -t)");

	int fd = sm_connect(c);
	k.in = fdopen(fd, "r");
	k.out = fdopen(dup(fd), "w");
	if (k.in == NULL || k.out == NULL)
		sm_die(EX_OSERR, "fdopen: %s", strerror(errno));
	if ((code = sm_reply(&k, last, sizeof(last))) != 220)
		sm_refused(code, "connection", last, EX_UNAVAILABLE);
	if ((code = sm_cmd(&k, last, sizeof(last), "EHLO localhost")) != 250)
		sm_refused(code, "EHLO", last, EX_PROTOCOL);
	if ((code = sm_cmd(&k, last, sizeof(last), "MAIL FROM:<%s>",
	    from)) != 250)
		sm_refused(code, "sender", last, EX_DATAERR);
	for (size_t i = 0; i < m.nrcpts; i++) {
		char *r = m.rcpts[i];
		r[strcspn(r, "\r\n<>")] = '\0';
		if ((code = sm_cmd(&k, last, sizeof(last), "RCPT TO:<%s>",
		    r)) != 250)
			sm_refused(code, "recipient", last, EX_NOUSER);
	}
	if ((code = sm_cmd(&k, last, sizeof(last), "DATA")) != 354)
		sm_refused(code, "DATA", last, EX_DATAERR);
	char *name = sm_fullname(o->fullname, pw);
	sm_put_message(k.out, &m, from, name);
	free(name);
	if (o->verbose)
		fprintf(stderr, ">>> (message, %zu bytes)\n>>> .\n", m.len);
	fflush(k.out);
	if ((code = sm_reply(&k, last, sizeof(last))) != 250)
		sm_refused(code, "message", last, EX_DATAERR);
	(void)sm_cmd(&k, last, sizeof(last), "QUIT");
	fclose(k.in);
	fclose(k.out);
	for (size_t i = 0; i < m.nrcpts; i++)
		free(m.rcpts[i]);
	free(m.rcpts);
	free(m.buf);
	return EX_OK;
}

int
main(int argc, char **argv)
{
	struct sm_opts o = { 0 };
	struct conf *c;
	int ex;

	sm_parse_args(argc, argv, &o);
	if (o.mode == SM_ALIASES) {
		fprintf(stderr, "tern-sendmail: tern has no aliases database; "
		    "newaliases has nothing to do\n");
		return EX_OK;
	}
	if (o.mode == SM_QUEUE) {
		char *args[] = { (char *)"queue", NULL };
		sm_exec_ternctl(o.conf_path, args);
	}
	if (o.mode == SM_RUNQ) {
		char *args[] = { (char *)"retry", (char *)"all", NULL };
		sm_exec_ternctl(o.conf_path, args);
	}
	c = sm_conf(o.conf_path);
	if (o.mode == SM_SMTP)
		ex = sm_bridge(sm_connect(c));
	else
		ex = sm_send(&o, c);
	conf_unref(c);
	return ex;
}
