/*
 * privhelper.c - the privileged helper: certificates and keys for a reload
 * after the privilege drop (see privhelper.h).
 *
 * Why: certificates renewed by an ACME client are often 0600 root; ternd
 * reads them at start as root, but a SIGHUP reload runs as the `user` of
 * tern.conf. Like OpenSMTPD's privileged parent, a tiny process that stays
 * root reads them for it; nothing else runs as root.
 *
 * Processes: ternd (as root, before any thread and before the drop) makes a
 * socketpair and forks. The child is the helper: it closes every descriptor
 * but its end of the socketpair (0, 1 and 2 go to /dev/null: it never
 * logs), ignores SIGHUP, SIGINT and SIGPIPE, asks the kernel for SIGKILL
 * when its parent dies (PR_SET_PDEATHSIG) and exits when the socket closes.
 * It keeps the parent's credentials and capability bounding set (the parent
 * empties its own after the fork). The main process goes on, drops
 * privileges and is the one that reloads; only the main loop thread talks
 * to the helper, with blocking calls bounded by PRIVHELPER_TIMEOUT_S.
 *
 * File contract of the helper: on a request it re-reads the configuration
 * file fixed at start (never a path from the unprivileged side) with
 * conf_load(), as root, and refuses it unless it is owned by root and not
 * writable by group (other than root's) or others; it then reads each
 * tls-cert and tls-key file that configuration names (regular files, at
 * most TLS_PEM_MAX bytes each, each cert must hold a PEM certificate and
 * each key a PEM private key) and sends back, per pair, the two paths and
 * the two files' bytes. On the other request it reads the route-auth file
 * that configuration names, with the owner and mode checks of
 * route_auth_read (tern/route_auth.h), and sends back its path and bytes;
 * on the third, each dkim-sign key file (dkim_key_file_read: not readable
 * by others), as n pairs of path and bytes.
 * It sends nothing else: no configuration text, no file the configuration
 * does not name as tls-cert, tls-key, route-auth or dkim-sign key.
 *
 * Wire format (one request, one response, same host and binary, so host
 * byte order): request = u32 PRIVHELPER_MAGIC, u32 op (PRIVHELPER_OP_TLS
 * or PRIVHELPER_OP_ROUTE_AUTH: then an ok response has n = 1 pair of two
 * blobs, the file's path and bytes).
 * Response = u32 magic, u32 status (0 ok, 1 error), u32 n; on error, one
 * blob: the message; on ok, n pairs of four blobs: cert path, cert bytes,
 * key path, key bytes. A blob = u32 length + bytes. The daemon bounds every
 * length and count before allocating; the helper exits on anything but a
 * well-formed request.
 *
 * Untrusted input: on the helper side, the request bytes (from a daemon
 * that may be compromised); on the daemon side, nothing (the helper runs
 * our code as root), but it still bounds what it reads.
 */
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "tern/log.h"
#include "tern/dkim.h"
#include "tern/route_auth.h"
#include "tern/util.h"
#include "privhelper_int.h"

#define PRIVHELPER_MAGIC     0x74706831u   /* "tph1" */
#define PRIVHELPER_OP_TLS    1u
#define PRIVHELPER_OP_ROUTE_AUTH 2u
#define PRIVHELPER_OP_DKIM   3u
#define PRIVHELPER_MAX_DKIM  256           /* dkim-sign keys in one answer */
#define PRIVHELPER_FD        3             /* the helper's socket */
#define PRIVHELPER_TIMEOUT_S 10
#define PRIVHELPER_MAX_PAIRS 64            /* 16 contexts x 4 key types */
#define PRIVHELPER_ERR_MAX   1024

struct privhelper {
	int fd;          /* our end of the socketpair, -1 once let go */
	pid_t pid;
};

/* ------------------------------------------------------------------ */
/* framing, shared by both ends */

static int
privhelper_write(int fd, const void *p, size_t n)
{
	const char *c = p;

	while (n > 0) {
		ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		c += w;
		n -= (size_t)w;
	}
	return 0;
}

/* 0, 1 on end of file before the first byte, -1 on error or timeout. */
static int
privhelper_read(int fd, void *p, size_t n)
{
	char *c = p;
	size_t got = 0;

	while (got < n) {
		ssize_t r = read(fd, c + got, n - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0 && got == 0)
			return 1;
		if (r <= 0)
			return -1;
		got += (size_t)r;
	}
	return 0;
}

static int
privhelper_put_u32(int fd, uint32_t v)
{
	return privhelper_write(fd, &v, sizeof(v));
}

static int
privhelper_put_blob(int fd, const void *p, size_t n)
{
	if (n > UINT32_MAX || privhelper_put_u32(fd, (uint32_t)n) != 0)
		return -1;
	return privhelper_write(fd, p, n);
}

static int
privhelper_get_u32(int fd, uint32_t *v)
{
	return privhelper_read(fd, v, sizeof(*v)) == 0 ? 0 : -1;
}

/* A blob of at most max bytes, NUL-terminated for convenience. */
static int
privhelper_get_blob(int fd, size_t max, char **out, size_t *outlen)
{
	uint32_t n;
	char *buf;

	if (privhelper_get_u32(fd, &n) != 0 || n > max)
		return -1;
	buf = xmalloc((size_t)n + 1);
	if (n > 0 && privhelper_read(fd, buf, n) != 0) {
		free(buf);
		return -1;
	}
	buf[n] = '\0';
	*out = buf;
	*outlen = n;
	return 0;
}

/* ------------------------------------------------------------------ */
/* the helper (child, root) */

struct privhelper_errbuf {
	char msg[PRIVHELPER_ERR_MAX - 64];
	unsigned n;
};

static void
privhelper_conf_err(void *arg, const char *msg)
{
	struct privhelper_errbuf *e = arg;

	if (e->n++ == 0)
		snprintf(e->msg, sizeof(e->msg), "%s", msg);
}

/* The configuration a root process may trust: root's, writable by root only. */
static int
privhelper_conf_trusted(const char *path, char *err, size_t errlen)
{
	struct stat st;

	if (stat(path, &st) != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (st.st_uid != 0 || (st.st_mode & S_IWOTH) ||
	    ((st.st_mode & S_IWGRP) && st.st_gid != 0)) {
		snprintf(err, errlen, "%s: not owned by root, or writable by "
		    "others: the privileged helper does not read certificates "
		    "for it", path);
		return -1;
	}
	return 0;
}

/* Does a file read as a key or certificate hold what it should? */
static int
privhelper_looks_pem(const char *p, size_t n, const char *what)
{
	const char *b = memmem(p, n, "-----BEGIN ", 11);

	return b != NULL && memmem(b, n - (size_t)(b - p), what,
	    strlen(what)) != NULL;
}

/* The configuration file, if root may trust it; NULL with err if not. */
static struct conf *
privhelper_conf_load(const char *conf_path, char *err, size_t errlen)
{
	struct privhelper_errbuf e = { .n = 0 };
	struct conf *c = NULL;

	if (privhelper_conf_trusted(conf_path, err, errlen) != 0)
		return NULL;
	if (conf_load(conf_path, &c, privhelper_conf_err, &e) != 0) {
		snprintf(err, errlen, "%s (%u error%s)", e.msg, e.n,
		    e.n == 1 ? "" : "s");
		return NULL;
	}
	return c;
}

/* The error answer: status 1 and one blob, the message. */
static int
privhelper_put_error(int fd, const char *err)
{
	return privhelper_put_u32(fd, PRIVHELPER_MAGIC) |
	    privhelper_put_u32(fd, 1) | privhelper_put_u32(fd, 1) |
	    privhelper_put_blob(fd, err, strlen(err));
}

/* Answer one request: every pair of the configuration, or one error. */
static int
privhelper_serve_tls(int fd, const char *conf_path)
{
	struct conf *c = NULL;
	struct tls_pem *pems = NULL;
	char err[PRIVHELPER_ERR_MAX];
	int rc;

	if ((c = privhelper_conf_load(conf_path, err, sizeof(err))) == NULL)
		goto fail;
	if (c->ntls > PRIVHELPER_MAX_PAIRS) {
		snprintf(err, sizeof(err), "too many tls-cert/tls-key pairs");
		goto fail;
	}
	if (tls_pems_load(c, &pems, err, sizeof(err)) != 0)
		goto fail;
	for (size_t i = 0; i < c->ntls; i++) {
		if (!privhelper_looks_pem(pems[i].cert, pems[i].cert_len,
		    "CERTIFICATE-----")) {
			snprintf(err, sizeof(err), "tls-cert %s: no PEM "
			    "certificate in it", c->tls[i].cert);
			goto fail;
		}
		if (!privhelper_looks_pem(pems[i].key, pems[i].key_len,
		    "PRIVATE KEY-----")) {
			snprintf(err, sizeof(err), "tls-key %s: no PEM private "
			    "key in it", c->tls[i].key);
			goto fail;
		}
	}
	rc = privhelper_put_u32(fd, PRIVHELPER_MAGIC) |
	    privhelper_put_u32(fd, 0) | privhelper_put_u32(fd, (uint32_t)c->ntls);
	for (size_t i = 0; i < c->ntls && rc == 0; i++)
		rc = privhelper_put_blob(fd, c->tls[i].cert, strlen(c->tls[i].cert)) |
		    privhelper_put_blob(fd, pems[i].cert, pems[i].cert_len) |
		    privhelper_put_blob(fd, c->tls[i].key, strlen(c->tls[i].key)) |
		    privhelper_put_blob(fd, pems[i].key, pems[i].key_len);
	tls_pems_free(pems, c->ntls);
	conf_unref(c);
	return rc;
fail:
	if (c != NULL)
		tls_pems_free(pems, c->ntls);
	conf_unref(c);
	return privhelper_put_error(fd, err);
}

/*
 * Answer a route-auth request: the file the configuration names, checked
 * as ternd checks it (root's or the run-time user's, 0600 or stricter).
 */
static int
privhelper_serve_route_auth(int fd, const char *conf_path)
{
	struct conf *c = NULL;
	struct passwd *pw;
	char err[PRIVHELPER_ERR_MAX], *buf = NULL;
	size_t len = 0;
	int rc;

	if ((c = privhelper_conf_load(conf_path, err, sizeof(err))) == NULL)
		goto fail;
	if (c->route_auth_file == NULL) {
		snprintf(err, sizeof(err), "no route-auth in %s", conf_path);
		goto fail;
	}
	pw = c->user != NULL ? getpwnam(c->user) : NULL;
	if (route_auth_read(c->route_auth_file, pw != NULL ? pw->pw_uid : 0,
	    &buf, &len, err, sizeof(err)) != 0)
		goto fail;
	rc = privhelper_put_u32(fd, PRIVHELPER_MAGIC) |
	    privhelper_put_u32(fd, 0) | privhelper_put_u32(fd, 1) |
	    privhelper_put_blob(fd, c->route_auth_file,
	    strlen(c->route_auth_file)) | privhelper_put_blob(fd, buf, len);
	route_auth_buf_free(buf, len);
	conf_unref(c);
	return rc;
fail:
	conf_unref(c);
	return privhelper_put_error(fd, err);
}

/*
 * Answer a dkim-sign request: each key file the configuration names, in
 * order, checked as ternd checks it (dkim_key_file_read: regular, not
 * readable by others). All or nothing.
 */
static int
privhelper_serve_dkim(int fd, const char *conf_path)
{
	struct conf *c = NULL;
	char err[PRIVHELPER_ERR_MAX], msg[PRIVHELPER_ERR_MAX - 64];
	char **bufs = NULL;
	size_t *lens = NULL, n = 0;
	int rc;

	if ((c = privhelper_conf_load(conf_path, err, sizeof(err))) == NULL)
		goto fail;
	if (c->ndkim_sign > PRIVHELPER_MAX_DKIM) {
		snprintf(err, sizeof(err), "more than %d dkim-sign lines",
		    PRIVHELPER_MAX_DKIM);
		goto fail;
	}
	bufs = xcalloc(c->ndkim_sign + 1, sizeof(*bufs));
	lens = xcalloc(c->ndkim_sign + 1, sizeof(*lens));
	for (n = 0; n < c->ndkim_sign; n++)
		if (dkim_key_file_read(c->dkim_sign[n].keyfile, &bufs[n],
		    &lens[n], msg, sizeof(msg)) != 0) {
			snprintf(err, sizeof(err), "%s: %s",
			    c->dkim_sign[n].keyfile, msg);
			goto fail;
		}
	rc = privhelper_put_u32(fd, PRIVHELPER_MAGIC) |
	    privhelper_put_u32(fd, 0) | privhelper_put_u32(fd, (uint32_t)n);
	for (size_t i = 0; i < n; i++)
		rc |= privhelper_put_blob(fd, c->dkim_sign[i].keyfile,
		    strlen(c->dkim_sign[i].keyfile)) |
		    privhelper_put_blob(fd, bufs[i], lens[i]);
	for (size_t i = 0; i < n; i++)
		dkim_key_buf_free(bufs[i], lens[i]);
	free(bufs);
	free(lens);
	conf_unref(c);
	return rc;
fail:
	for (size_t i = 0; i < n; i++)
		dkim_key_buf_free(bufs[i], lens[i]);
	free(bufs);
	free(lens);
	conf_unref(c);
	return privhelper_put_error(fd, err);
}

/* Keep the socket as PRIVHELPER_FD, close everything else. */
static void
privhelper_close_fds(int sock)
{
	int nul;

	if (sock != PRIVHELPER_FD && dup2(sock, PRIVHELPER_FD) < 0)
		_exit(1);
	if (close_range(PRIVHELPER_FD + 1, ~0u, 0) != 0) {
		long max = sysconf(_SC_OPEN_MAX);
		for (long fd = PRIVHELPER_FD + 1; fd < (max > 0 ? max : 1024); fd++)
			(void)close((int)fd);
	}
	if ((nul = open("/dev/null", O_RDWR)) < 0)
		_exit(1);
	for (int fd = 0; fd < PRIVHELPER_FD; fd++)
		if (dup2(nul, fd) < 0)
			_exit(1);
	if (nul > PRIVHELPER_FD)
		close(nul);
}

static void __attribute__((noreturn))
privhelper_main(int sock, pid_t parent, const char *conf_path)
{
	uint32_t req[2];

	privhelper_close_fds(sock);
	signal(SIGHUP, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	/* die with the daemon; it may have died before this call */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
		_exit(0);
	for (;;) {
		int r = privhelper_read(PRIVHELPER_FD, req, sizeof(req));
		if (r != 0)
			_exit(0);          /* the daemon closed its end */
		if (req[0] != PRIVHELPER_MAGIC || (req[1] != PRIVHELPER_OP_TLS &&
		    req[1] != PRIVHELPER_OP_ROUTE_AUTH &&
		    req[1] != PRIVHELPER_OP_DKIM))
			_exit(1);          /* a confused peer: stop serving it */
		if ((req[1] == PRIVHELPER_OP_TLS ?
		    privhelper_serve_tls(PRIVHELPER_FD, conf_path) :
		    req[1] == PRIVHELPER_OP_DKIM ?
		    privhelper_serve_dkim(PRIVHELPER_FD, conf_path) :
		    privhelper_serve_route_auth(PRIVHELPER_FD, conf_path)) != 0)
			_exit(0);
	}
}

/* ------------------------------------------------------------------ */
/* the daemon's side */

struct privhelper *
privhelper_start(const char *conf_path, char *err, size_t errlen)
{
	struct timeval tv = { .tv_sec = PRIVHELPER_TIMEOUT_S };
	int sv[2];
	pid_t parent = getpid(), pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
		snprintf(err, errlen, "socketpair: %s", strerror(errno));
		return NULL;
	}
	fflush(NULL);        /* nothing buffered is written twice */
	pid = fork();
	if (pid < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return NULL;
	}
	if (pid == 0)
		privhelper_main(sv[1], parent, conf_path);
	close(sv[1]);
	if (setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
	    setsockopt(sv[0], SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0)
		log_warn("privileged helper: socket timeouts");
	struct privhelper *h = xcalloc(1, sizeof(*h));
	h->fd = sv[0];
	h->pid = pid;
	return h;
}

pid_t
privhelper_pid(const struct privhelper *h)
{
	return h->pid;
}

int
privhelper_alive(const struct privhelper *h)
{
	return h->fd >= 0;
}

/* After a protocol error or timeout the stream is out of step: let it go. */
static void
privhelper_let_go(struct privhelper *h)
{
	if (h->fd >= 0)
		close(h->fd);
	h->fd = -1;
}

/*
 * Read the response's n pairs into pems[0..n); 0 when they name c's files
 * in c's order, -1 with err otherwise (the stream stays in step unless the
 * answer was malformed, in which case the helper is let go).
 */
static int
privhelper_read_pairs(struct privhelper *h, const struct conf *c, uint32_t n,
    struct tls_pem *pems, char *err, size_t errlen)
{
	int same = n == c->ntls;

	for (uint32_t i = 0; i < n; i++) {
		char *cp = NULL, *kp = NULL;
		size_t cl, kl;
		int bad = privhelper_get_blob(h->fd, PATH_MAX, &cp, &cl) != 0 ||
		    privhelper_get_blob(h->fd, TLS_PEM_MAX, &pems[i].cert,
		    &pems[i].cert_len) != 0 ||
		    privhelper_get_blob(h->fd, PATH_MAX, &kp, &kl) != 0 ||
		    privhelper_get_blob(h->fd, TLS_PEM_MAX, &pems[i].key,
		    &pems[i].key_len) != 0;
		if (!bad && same)
			same = strcmp(cp, c->tls[i].cert) == 0 &&
			    strcmp(kp, c->tls[i].key) == 0;
		free(cp);
		free(kp);
		if (bad) {
			snprintf(err, errlen, "privileged helper: truncated or "
			    "malformed answer");
			privhelper_let_go(h);
			return -1;
		}
	}
	if (!same) {
		snprintf(err, errlen, "privileged helper: tls-cert/tls-key "
		    "changed in the configuration during the reload: try again");
		return -1;
	}
	return 0;
}

/*
 * Send request op and read the answer's head: 0 with *n (at most maxn) for
 * an ok answer; -1 with err for an error answer (the helper's message) or
 * a broken stream (then the helper is let go).
 */
static int
privhelper_ask(struct privhelper *h, uint32_t op, uint32_t maxn, uint32_t *n,
    char *err, size_t errlen)
{
	uint32_t req[2] = { PRIVHELPER_MAGIC, op };
	uint32_t magic, status;
	char *msg;
	size_t len;

	if (h->fd < 0) {
		snprintf(err, errlen, "privileged helper is gone");
		return -1;
	}
	if (privhelper_write(h->fd, req, sizeof(req)) != 0 ||
	    privhelper_get_u32(h->fd, &magic) != 0 ||
	    privhelper_get_u32(h->fd, &status) != 0 ||
	    privhelper_get_u32(h->fd, n) != 0 || magic != PRIVHELPER_MAGIC ||
	    status > 1 || (status == 1 && *n != 1) ||
	    (status == 0 && *n > maxn)) {
		snprintf(err, errlen, "privileged helper: no answer (%s)",
		    errno == EAGAIN ? "timeout" : "closed or malformed");
		privhelper_let_go(h);
		return -1;
	}
	if (status == 0)
		return 0;
	if (privhelper_get_blob(h->fd, PRIVHELPER_ERR_MAX, &msg, &len) != 0) {
		snprintf(err, errlen, "privileged helper: malformed answer");
		privhelper_let_go(h);
		return -1;
	}
	snprintf(err, errlen, "%s", msg);
	free(msg);
	return -1;
}

int
privhelper_tls_fetch(struct privhelper *h, const struct conf *c,
    struct tls_pem **out, char *err, size_t errlen)
{
	struct tls_pem *pems;
	uint32_t n;

	if (privhelper_ask(h, PRIVHELPER_OP_TLS, PRIVHELPER_MAX_PAIRS, &n, err,
	    errlen) != 0)
		return -1;
	pems = xcalloc(n ? n : 1, sizeof(*pems));
	if (privhelper_read_pairs(h, c, n, pems, err, errlen) != 0) {
		tls_pems_free(pems, n);
		return -1;
	}
	*out = pems;
	return 0;
}

int
privhelper_route_auth_fetch(struct privhelper *h, const struct conf *c,
    char **buf, size_t *len, char *err, size_t errlen)
{
	char *path = NULL;
	size_t plen;
	uint32_t n;

	if (privhelper_ask(h, PRIVHELPER_OP_ROUTE_AUTH, 1, &n, err,
	    errlen) != 0)
		return -1;
	if (n != 1 || privhelper_get_blob(h->fd, PATH_MAX, &path, &plen) != 0)
		goto malformed;
	if (privhelper_get_blob(h->fd, ROUTE_AUTH_FILE_MAX, buf, len) != 0) {
		free(path);
		goto malformed;
	}
	if (c->route_auth_file == NULL ||
	    strcmp(path, c->route_auth_file) != 0) {
		snprintf(err, errlen, "privileged helper: route-auth changed in "
		    "the configuration during the reload: try again");
		free(path);
		route_auth_buf_free(*buf, *len);
		return -1;
	}
	free(path);
	return 0;
malformed:
	snprintf(err, errlen, "privileged helper: malformed answer");
	privhelper_let_go(h);
	return -1;
}

int
privhelper_dkim_fetch(struct privhelper *h, const struct conf *c,
    char **bufs, size_t *lens, char *err, size_t errlen)
{
	uint32_t n;
	size_t stored = 0;
	int same, malformed = 0;

	if (privhelper_ask(h, PRIVHELPER_OP_DKIM, PRIVHELPER_MAX_DKIM, &n, err,
	    errlen) != 0)
		return -1;
	same = n == c->ndkim_sign;
	for (size_t i = 0; i < n; i++) {
		char *path = NULL, *buf = NULL;
		size_t plen, len;
		if (privhelper_get_blob(h->fd, PATH_MAX, &path, &plen) != 0 ||
		    privhelper_get_blob(h->fd, DKIM_KEY_FILE_MAX, &buf,
		    &len) != 0) {
			free(path);
			privhelper_let_go(h);
			malformed = 1;
			same = 0;
			break;
		}
		/* the whole answer is read, even to refuse it */
		if (same && strcmp(path, c->dkim_sign[i].keyfile) == 0) {
			bufs[stored] = buf;
			lens[stored++] = len;
		} else {
			dkim_key_buf_free(buf, len);
			same = 0;
		}
		free(path);
	}
	if (same)
		return 0;
	for (size_t k = 0; k < stored; k++) {
		dkim_key_buf_free(bufs[k], lens[k]);
		bufs[k] = NULL;
	}
	snprintf(err, errlen, "%s", malformed ? "privileged helper: malformed "
	    "answer" : "privileged helper: dkim-sign changed in the "
	    "configuration during the reload: try again");
	return -1;
}

void
privhelper_free(struct privhelper *h)
{
	if (h == NULL)
		return;
	privhelper_let_go(h);
	/* it exits on the closed socket; SIGKILL ends one stuck in a read */
	(void)kill(h->pid, SIGKILL);
	while (waitpid(h->pid, NULL, 0) < 0 && errno == EINTR)
		;
	free(h);
}
