/*
 * mta_sts.c - MTA-STS (RFC 8461) for the delivery client: discovery, the
 * policy fetch over HTTPS, and the policy cache (see mta_sts.h).
 *
 * Threads: queries and fetches run on the delivery worker loop that made
 * them and never block it: DNS through the worker's c-ares resolver, the
 * fetch through libevent's HTTP client over a bufferevent_openssl. The
 * cache is one table for the process under sts_lock; a lookup that finds
 * its domain being fetched (by any worker) registers and is woken with
 * event_active() on its own loop when the fetch ends. The only blocking
 * step is the rewrite of the cache file after a successful fetch (a small
 * file, once per policy change: write, fsync, rename), on that worker's
 * thread but outside sts_lock: the table is copied into memory under the
 * lock, and written under sts_save_lock, an older copy never over a newer.
 *
 * Owns: the table (entries, their policy text), each fetch (connection,
 * TLS context, timer) and each query until its callback has run.
 *
 * Untrusted input: the TXT record (DNS), the HTTPS response of
 * mta-sts.<domain> (certificate checked against the system store or
 * mta-sts-ca-file with host name and SNI; status must be 200, media type
 * text/plain, body at most 64 KiB, no redirects, 60 s in all) and the
 * cache file (parsed again, entries that do not parse are dropped).
 *
 * RFC 8461: 3.1 (TXT), 3.2 (policy fetch), 3.3 (HTTPS), 5.1 (policy
 * refresh on a new id; a cached unexpired policy survives failed fetches).
 * RFC 8460: failures of the fetch are reported as sts-policy-fetch-error,
 * sts-policy-invalid and sts-webpki-invalid.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tern/log.h"
#include "tern/resolver.h"
#include "tern/tls.h"
#include "tern/util.h"

#include "mta_sts.h"

#define STS_FETCH_TIMEOUT_SEC  60      /* the whole fetch */
#define STS_CACHE_MAX          4096    /* domains kept */
#define STS_REFETCH_SEC        300     /* after a failed fetch of an id */
#define STS_FILE_MAGIC         "tern-mta-sts 1\n"

struct mta_sts_query {
	TAILQ_ENTRY(mta_sts_query) link;    /* entry->waiters, under sts_lock */
	struct event_base *base;            /* borrowed */
	struct resolver *r;                 /* borrowed */
	struct resolver_query *rq;          /* borrowed handle: the TXT lookup */
	struct event *wake;                 /* owned: the answer is ready */
	int waiting;                        /* on an entry's list */
	mta_sts_cb *cb;
	void *arg;
	char domain[RESOLVER_NAME_MAX + 1];
	uint16_t port;
	char *ca_file;                      /* owned or NULL */
};

TAILQ_HEAD(sts_waiters, mta_sts_query);

struct sts_entry {
	LIST_ENTRY(sts_entry) link;
	char domain[RESOLVER_NAME_MAX + 1];
	char id[STS_ID_MAX + 1];
	int64_t fetched, expires;           /* wall clock, seconds */
	char *text;                         /* owned or NULL: nothing cached */
	size_t len;
	int fetching;
	struct sts_waiters waiters;
	char failed_id[STS_ID_MAX + 1];     /* the last fetch of this id failed */
	int64_t failed_at;
};

struct sts_fetch {
	LIST_ENTRY(sts_fetch) link;         /* sts_fetches, under sts_lock */
	struct event_base *base;            /* borrowed */
	struct resolver *r;                 /* borrowed */
	struct resolver_query *rq;          /* borrowed handle: mta-sts.<d> */
	char domain[RESOLVER_NAME_MAX + 1];
	char host[RESOLVER_NAME_MAX + 16];  /* "mta-sts.<domain>" */
	char id[STS_ID_MAX + 1];
	uint16_t port;
	char *ca_file;                      /* owned or NULL */
	SSL_CTX *ctx;                       /* owned */
	SSL *ssl;                           /* borrowed: freed with the bev */
	struct evhttp_connection *evcon;    /* owned */
	struct event *timer;                /* owned: the total timeout */
	struct event *reap;                 /* owned: free outside callbacks */
	int finished;
	enum evhttp_request_error http_err;
	int have_http_err;
};

static pthread_mutex_t sts_lock = PTHREAD_MUTEX_INITIALIZER;
static LIST_HEAD(sts_entry_list, sts_entry) sts_entries = LIST_HEAD_INITIALIZER(sts_entries);
static LIST_HEAD(sts_fetch_list, sts_fetch) sts_fetches = LIST_HEAD_INITIALIZER(sts_fetches);
static size_t sts_nentries;
static char *sts_path;                  /* owned: the cache file */
static uint64_t sts_gen;                /* copies made, under sts_lock */
static pthread_mutex_t sts_save_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t sts_saved_gen;          /* written, under sts_save_lock */

/*
 * The system CA store every policy fetch verifies against, made once at
 * start (mta_sts_init) and shared (X509_STORE is reference-counted and
 * locks its own lookups): a fetch neither lists the CA directory nor
 * reads a certificate a previous fetch already read.
 */
static pthread_once_t sts_trust_once = PTHREAD_ONCE_INIT;
static SSL_CTX *sts_trust;              /* holds the store; never freed */

static void
mta_sts_trust_init(void)
{
	if ((sts_trust = SSL_CTX_new(TLS_client_method())) != NULL)
		tls_client_trust(sts_trust);
}

static void mta_sts_fetch_start(struct sts_fetch *f);
static void mta_sts_fetch_end(struct sts_fetch *f, const char *body,
    size_t len, enum tlsrpt_result err, const char *why);

/* The table's key for domain: lower case, no final dot, bounded. */
static void
mta_sts_domain_key(const char *domain, char out[RESOLVER_NAME_MAX + 1])
{
	size_t i;

	for (i = 0; i < RESOLVER_NAME_MAX && domain[i] != '\0'; i++)
		out[i] = (char)(domain[i] >= 'A' && domain[i] <= 'Z' ?
		    domain[i] - 'A' + 'a' : domain[i]);
	if (i > 0 && out[i - 1] == '.')
		i--;
	out[i] = '\0';
}

/* ---- the table (callers hold sts_lock) --------------------------------- */

static struct sts_entry *
mta_sts_find(const char *domain)
{
	struct sts_entry *e;

	LIST_FOREACH(e, &sts_entries, link)
		if (strcmp(e->domain, domain) == 0)
			return e;
	return NULL;
}

static void
mta_sts_entry_free(struct sts_entry *e)
{
	LIST_REMOVE(e, link);
	sts_nentries--;
	free(e->text);
	free(e);
}

/* Make room for one more: drop an idle entry, expired first, else oldest. */
static void
mta_sts_evict(int64_t now)
{
	struct sts_entry *e, *victim = NULL;

	if (sts_nentries < STS_CACHE_MAX)
		return;
	LIST_FOREACH(e, &sts_entries, link) {
		if (e->fetching || !TAILQ_EMPTY(&e->waiters))
			continue;
		if (victim == NULL || (e->expires < now &&
		    victim->expires >= now) || e->fetched < victim->fetched)
			victim = e;
	}
	if (victim != NULL)
		mta_sts_entry_free(victim);
}

static struct sts_entry *
mta_sts_entry_get(const char *domain, int64_t now)
{
	struct sts_entry *e = mta_sts_find(domain);

	if (e != NULL)
		return e;
	mta_sts_evict(now);
	e = xcalloc(1, sizeof(*e));
	snprintf(e->domain, sizeof(e->domain), "%s", domain);
	TAILQ_INIT(&e->waiters);
	LIST_INSERT_HEAD(&sts_entries, e, link);
	sts_nentries++;
	return e;
}

/*
 * RFC 8460 4.4 "policy-string": the policy file's lines joined by '\n',
 * without CRs and without a final empty line. Owned by the caller.
 */
static char *
mta_sts_policy_string(const char *p, size_t len)
{
	char *out = xmalloc(len + 1);
	size_t n = 0;

	for (size_t i = 0; i < len; i++)
		if (p[i] != '\r')
			out[n++] = p[i];
	while (n > 0 && out[n - 1] == '\n')
		n--;
	out[n] = '\0';
	return out;
}

/* The policy e holds, if unexpired and not mode none; else NULL. */
static struct mta_sts_outcome *
mta_sts_entry_outcome(const struct sts_entry *e, int64_t now)
{
	struct mta_sts_outcome *o;

	if (e == NULL || e->text == NULL || e->expires < now)
		return NULL;
	o = xcalloc(1, sizeof(*o));
	if (sts_policy_parse(e->text, e->len, &o->pol) != STS_PARSE_OK ||
	    o->pol.mode == STS_MODE_NONE) {
		free(o);
		return NULL;
	}
	snprintf(o->domain, sizeof(o->domain), "%s", e->domain);
	snprintf(o->id, sizeof(o->id), "%s", e->id);
	o->text = mta_sts_policy_string(e->text, e->len);
	return o;
}

void
mta_sts_outcome_free(struct mta_sts_outcome *o)
{
	if (o == NULL)
		return;
	free(o->text);
	free(o);
}

/* ---- the cache file ---------------------------------------------------- */

/*
 * "tern-mta-sts 1\n", then per domain "DOMAIN ID FETCHED EXPIRES LEN\n"
 * followed by LEN bytes of policy and "\n": the whole table, into *out
 * (owned by the caller), with its generation. Under sts_lock.
 */
static uint64_t
mta_sts_snapshot(struct buf *out)
{
	struct sts_entry *e;
	char line[RESOLVER_NAME_MAX + STS_ID_MAX + 80];

	memset(out, 0, sizeof(*out));
	buf_add(out, STS_FILE_MAGIC, strlen(STS_FILE_MAGIC));
	LIST_FOREACH(e, &sts_entries, link) {
		if (e->text == NULL)
			continue;
		int n = snprintf(line, sizeof(line), "%s %s %lld %lld %zu\n",
		    e->domain, e->id, (long long)e->fetched,
		    (long long)e->expires, e->len);
		buf_add(out, line, (size_t)n < sizeof(line) ? (size_t)n :
		    sizeof(line) - 1);
		buf_add(out, e->text, e->len);
		buf_add(out, "\n", 1);
	}
	return ++sts_gen;
}

/* Write a snapshot (taken): temporary file, fsync, rename. Not under sts_lock. */
static void
mta_sts_save(struct buf *snap, uint64_t gen)
{
	char tmp[4096];
	int fd, ok;

	pthread_mutex_lock(&sts_save_lock);
	if (sts_path == NULL || gen <= sts_saved_gen)
		goto out;               /* a newer copy is on disk already */
	snprintf(tmp, sizeof(tmp), "%s.tmp", sts_path);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0600)) == -1) {
		log_warn("mta-sts: cannot write %s", tmp);
		goto out;
	}
	ok = write_all(fd, snap->p, snap->len) == 0 && fsync(fd) == 0;
	ok = close(fd) == 0 && ok;
	if (!ok || rename(tmp, sts_path) == -1) {
		log_warn("mta-sts: cannot save the policy cache %s", sts_path);
		unlink(tmp);
	} else
		sts_saved_gen = gen;
out:
	pthread_mutex_unlock(&sts_save_lock);
	buf_free(snap);
}

/* One entry of the file at p[0..len): its size, or 0 when broken. */
static size_t
mta_sts_load_entry(const char *p, size_t len, int64_t now)
{
	const char *nl = memchr(p, '\n', len < 512 ? len : 512);
	char line[512], domain[RESOLVER_NAME_MAX + 1], id[STS_ID_MAX + 1];
	long long fetched, expires;
	size_t plen, hlen;
	struct sts_txt txt;
	struct sts_policy pol;
	struct sts_entry *e;
	char txtbuf[64];

	if (nl == NULL)
		return 0;
	hlen = (size_t)(nl - p) + 1;
	memcpy(line, p, hlen - 1);
	line[hlen - 1] = '\0';
	if (sscanf(line, "%255s %32s %lld %lld %zu", domain, id, &fetched,
	    &expires, &plen) != 5 || plen > STS_POLICY_MAX ||
	    hlen + plen + 1 > len || p[hlen + plen] != '\n')
		return 0;
	snprintf(txtbuf, sizeof(txtbuf), "v=STSv1; id=%s", id);
	if (sts_txt_parse(txtbuf, strlen(txtbuf), &txt) != STS_PARSE_OK ||
	    sts_policy_parse(p + hlen, plen, &pol) != STS_PARSE_OK)
		return 0;
	if (expires >= now && mta_sts_find(domain) == NULL &&
	    sts_nentries < STS_CACHE_MAX) {
		e = mta_sts_entry_get(domain, now);
		snprintf(e->id, sizeof(e->id), "%s", id);
		e->fetched = fetched;
		e->expires = expires;
		e->text = xmalloc(plen + 1);
		memcpy(e->text, p + hlen, plen);
		e->text[plen] = '\0';
		e->len = plen;
	}
	return hlen + plen + 1;
}

static void
mta_sts_load(void)
{
	FILE *fp = fopen(sts_path, "re");
	size_t cap = 1 << 16, len = 0, off, n;
	char *buf;
	int64_t now = time(NULL);

	if (fp == NULL) {
		if (errno != ENOENT)
			log_warn("mta-sts: cannot read %s", sts_path);
		return;
	}
	buf = xmalloc(cap);
	while ((n = fread(buf + len, 1, cap - len, fp)) > 0) {
		len += n;
		if (len == cap) {
			if (cap >= (size_t)STS_CACHE_MAX * (STS_POLICY_MAX + 512))
				break;
			cap *= 2;
			buf = xreallocarray(buf, cap, 1);
		}
	}
	fclose(fp);
	off = strlen(STS_FILE_MAGIC);
	if (len < off || memcmp(buf, STS_FILE_MAGIC, off) != 0) {
		log_warnx("mta-sts: %s is not a policy cache: ignored", sts_path);
		free(buf);
		return;
	}
	while (off < len && (n = mta_sts_load_entry(buf + off, len - off,
	    now)) > 0)
		off += n;
	if (off < len)
		log_warnx("mta-sts: %s: broken entry at byte %zu: the rest is "
		    "ignored", sts_path, off);
	free(buf);
	log_info("mta-sts: %zu cached policies loaded from %s", sts_nentries,
	    sts_path);
}

void
mta_sts_init(const char *queue_dir)
{
	char path[4096];

	pthread_once(&sts_trust_once, mta_sts_trust_init);   /* not on a worker loop */
	pthread_mutex_lock(&sts_lock);
	free(sts_path);
	sts_path = NULL;
	if (queue_dir != NULL) {
		snprintf(path, sizeof(path), "%s/mta-sts.cache", queue_dir);
		sts_path = xstrdup(path);
		mta_sts_load();
	}
	pthread_mutex_unlock(&sts_lock);
}

void
mta_sts_shutdown(void)
{
	struct sts_entry *e;

	pthread_mutex_lock(&sts_lock);
	while ((e = LIST_FIRST(&sts_entries)) != NULL)
		mta_sts_entry_free(e);
	free(sts_path);
	sts_path = NULL;
	pthread_mutex_unlock(&sts_lock);
}

int
mta_sts_cached_enforce(const char *domain)
{
	struct mta_sts_outcome *o;
	char d[RESOLVER_NAME_MAX + 1];
	int enforce;

	mta_sts_domain_key(domain, d);
	pthread_mutex_lock(&sts_lock);
	o = mta_sts_entry_outcome(mta_sts_find(d), time(NULL));
	pthread_mutex_unlock(&sts_lock);
	enforce = o != NULL && o->pol.mode == STS_MODE_ENFORCE;
	mta_sts_outcome_free(o);
	return enforce;
}

/* ---- queries ----------------------------------------------------------- */

static void
mta_sts_query_free(struct mta_sts_query *q)
{
	event_free(q->wake);
	free(q->ca_file);
	free(q);
}

/* The answer is ready (woken by a fetch, or a decision without one). */
static void
mta_sts_wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct mta_sts_query *q = arg;
	struct mta_sts_outcome *o;

	(void)fd;
	(void)what;
	pthread_mutex_lock(&sts_lock);
	o = mta_sts_entry_outcome(mta_sts_find(q->domain), time(NULL));
	pthread_mutex_unlock(&sts_lock);
	q->cb(q->arg, o);
	mta_sts_query_free(q);
}

/* Exactly one STSv1 record, valid: 1 and its id; else 0 (RFC 8461 3.1). */
static int
mta_sts_txt_id(const struct txt_result *res, char id[STS_ID_MAX + 1])
{
	struct sts_txt t, one;
	size_t n = 0;
	int bad = 0;

	if (res->status != RESOLVER_OK)
		return 0;
	for (size_t i = 0; i < res->n; i++) {
		enum sts_parse_status st = sts_txt_parse(res->txt[i],
		    res->txt_len[i], &t);
		if (st == STS_PARSE_NONE)
			continue;
		n++;
		if (st != STS_PARSE_OK)
			bad = 1;
		else
			one = t;
	}
	if (n != 1 || bad)
		return 0;
	memcpy(id, one.id, sizeof(one.id));
	return 1;
}

static void
mta_sts_txt_cb(void *arg, struct txt_result *res)
{
	struct mta_sts_query *q = arg;
	char id[STS_ID_MAX + 1];
	struct sts_fetch *f = NULL;
	struct sts_entry *e;
	int64_t now = time(NULL);

	q->rq = NULL;
	if (!mta_sts_txt_id(res, id)) {
		/* no usable record: a cached policy stays in force */
		txt_result_free(res);
		event_active(q->wake, EV_TIMEOUT, 1);
		return;
	}
	txt_result_free(res);
	pthread_mutex_lock(&sts_lock);
	e = mta_sts_find(q->domain);
	if ((e != NULL && e->text != NULL && strcmp(e->id, id) == 0 &&
	    e->expires >= now) || (e != NULL && !e->fetching &&
	    strcmp(e->failed_id, id) == 0 &&
	    now - e->failed_at < STS_REFETCH_SEC)) {
		/* cached, or failed a moment ago: no fetch per message */
		pthread_mutex_unlock(&sts_lock);
		event_active(q->wake, EV_TIMEOUT, 1);
		return;
	}
	e = mta_sts_entry_get(q->domain, now);
	TAILQ_INSERT_TAIL(&e->waiters, q, link);
	q->waiting = 1;
	if (!e->fetching) {
		e->fetching = 1;
		f = xcalloc(1, sizeof(*f));
		f->base = q->base;
		f->r = q->r;
		memcpy(f->domain, q->domain, sizeof(f->domain));
		snprintf(f->host, sizeof(f->host), "mta-sts.%s", q->domain);
		memcpy(f->id, id, sizeof(f->id));
		f->port = q->port;
		f->ca_file = q->ca_file != NULL ? xstrdup(q->ca_file) : NULL;
		LIST_INSERT_HEAD(&sts_fetches, f, link);
	}
	pthread_mutex_unlock(&sts_lock);
	if (f != NULL)
		mta_sts_fetch_start(f);
}

struct mta_sts_query *
mta_sts_query(struct event_base *base, struct resolver *r,
    const struct conf *conf, const char *domain, mta_sts_cb *cb, void *arg)
{
	struct mta_sts_query *q = xcalloc(1, sizeof(*q));
	char name[RESOLVER_NAME_MAX + 16];

	q->base = base;
	q->r = r;
	q->cb = cb;
	q->arg = arg;
	q->port = conf->mta_sts_port ? conf->mta_sts_port : 443;
	q->ca_file = conf->mta_sts_ca_file != NULL ?
	    xstrdup(conf->mta_sts_ca_file) : NULL;
	mta_sts_domain_key(domain, q->domain);
	q->wake = event_new(base, -1, 0, mta_sts_wake_cb, q);
	if (q->wake == NULL)
		panic("mta_sts_query: event_new failed");
	snprintf(name, sizeof(name), "_mta-sts.%s", q->domain);
	if (r == NULL || (q->rq = resolver_txt_lookup(r, name, mta_sts_txt_cb,
	    q)) == NULL)
		event_active(q->wake, EV_TIMEOUT, 1);
	return q;
}

void
mta_sts_cancel(struct mta_sts_query *q)
{
	if (q == NULL)
		return;
	resolver_cancel(q->rq);
	pthread_mutex_lock(&sts_lock);
	if (q->waiting) {
		struct sts_entry *e = mta_sts_find(q->domain);
		if (e == NULL)
			panic("mta_sts_cancel: waiting on no entry");
		TAILQ_REMOVE(&e->waiters, q, link);
	}
	pthread_mutex_unlock(&sts_lock);
	mta_sts_query_free(q);          /* event_free drops a pending wake */
}

/* ---- the fetch --------------------------------------------------------- */

static void
mta_sts_fetch_free(struct sts_fetch *f)
{
	pthread_mutex_lock(&sts_lock);
	LIST_REMOVE(f, link);
	pthread_mutex_unlock(&sts_lock);
	resolver_cancel(f->rq);
	if (f->evcon != NULL)
		evhttp_connection_free(f->evcon);   /* frees the bev and SSL */
	if (f->timer != NULL)
		event_free(f->timer);
	if (f->reap != NULL)
		event_free(f->reap);
	SSL_CTX_free(f->ctx);
	free(f->ca_file);
	free(f);
}

static void
mta_sts_reap_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	mta_sts_fetch_free(arg);
}

static void
mta_sts_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	mta_sts_fetch_end(arg, NULL, 0, TLSRPT_STS_POLICY_FETCH_ERROR,
	    "timeout");
}

/* Media type of a Content-Type value is text/plain (parameters ignored). */
static int
mta_sts_text_plain(const char *ct)
{
	size_t n;

	if (ct == NULL)
		return 0;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	n = strcspn(ct, "; \t");
	return n == 10 && strncasecmp(ct, "text/plain", 10) == 0;
}

static const char *
mta_sts_http_err_name(enum evhttp_request_error e)
{
	switch (e) {
	case EVREQ_HTTP_TIMEOUT:
		return "timeout";
	case EVREQ_HTTP_EOF:
		return "connection closed";
	case EVREQ_HTTP_INVALID_HEADER:
		return "bad response header";
	case EVREQ_HTTP_BUFFER_ERROR:
		return "connection error";
	case EVREQ_HTTP_DATA_TOO_LONG:
		return "response larger than 64 KiB";
	default:
		return "request failed";
	}
}

static void
mta_sts_http_error_cb(enum evhttp_request_error e, void *arg)
{
	struct sts_fetch *f = arg;

	f->http_err = e;
	f->have_http_err = 1;
}

/* The response, or NULL when the request failed. */
static void
mta_sts_http_done_cb(struct evhttp_request *req, void *arg)
{
	struct sts_fetch *f = arg;
	char why[512];
	int code = req != NULL ? evhttp_request_get_response_code(req) : 0;
	struct evbuffer *in;
	size_t len;

	if (f->finished)
		return;
	if (code == 0) {
		long v = f->ssl != NULL ? SSL_get_verify_result(f->ssl) : X509_V_OK;

		if (v != X509_V_OK) {
			snprintf(why, sizeof(why), "certificate of %s: %s",
			    f->host, X509_verify_cert_error_string(v));
			mta_sts_fetch_end(f, NULL, 0, TLSRPT_STS_WEBPKI_INVALID,
			    why);
			return;
		}
		snprintf(why, sizeof(why), "%s", f->have_http_err ?
		    mta_sts_http_err_name(f->http_err) : "connection failed");
		mta_sts_fetch_end(f, NULL, 0, TLSRPT_STS_POLICY_FETCH_ERROR, why);
		return;
	}
	if (code != 200) {
		/* RFC 8461 3.3: redirects are not followed */
		snprintf(why, sizeof(why), "HTTP status %d%s", code,
		    code >= 300 && code < 400 ? " (redirects are not followed)" :
		    "");
		mta_sts_fetch_end(f, NULL, 0, TLSRPT_STS_POLICY_FETCH_ERROR, why);
		return;
	}
	if (!mta_sts_text_plain(evhttp_find_header(
	    evhttp_request_get_input_headers(req), "Content-Type"))) {
		mta_sts_fetch_end(f, NULL, 0, TLSRPT_STS_POLICY_FETCH_ERROR,
		    "media type is not text/plain");
		return;
	}
	in = evhttp_request_get_input_buffer(req);
	len = evbuffer_get_length(in);
	if (len > STS_POLICY_MAX) {
		mta_sts_fetch_end(f, NULL, 0, TLSRPT_STS_POLICY_FETCH_ERROR,
		    "response larger than 64 KiB");
		return;
	}
	mta_sts_fetch_end(f, (const char *)evbuffer_pullup(in, -1), len,
	    TLSRPT_SUCCESS, NULL);
}

static SSL_CTX *
mta_sts_ssl_ctx(const struct sts_fetch *f)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (ctx == NULL)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
	    SSL_OP_NO_RENEGOTIATION);
	if (f->ca_file == NULL) {
		pthread_once(&sts_trust_once, mta_sts_trust_init);
		if (sts_trust != NULL)
			SSL_CTX_set1_cert_store(ctx, SSL_CTX_get_cert_store(sts_trust));
		else
			tls_client_trust(ctx);  /* a store of its own, then */
	} else if (SSL_CTX_load_verify_locations(ctx, f->ca_file, NULL) != 1) {
		log_warnx("mta-sts: cannot load the CA store %s", f->ca_file);
		ERR_clear_error();
	}
	return ctx;
}

/* The address of mta-sts.<domain> is known: connect and ask. */
static void
mta_sts_fetch_resolved(void *arg, struct mx_result *res)
{
	struct sts_fetch *f = arg;
	struct bufferevent *bev;
	struct evhttp_request *req;
	struct evkeyvalq *h;
	struct timeval tv = { STS_FETCH_TIMEOUT_SEC, 0 };
	char addr[64], why[300];

	f->rq = NULL;
	if (res->status != RESOLVER_OK || res->nhosts == 0 ||
	    res->hosts[0].naddrs == 0) {
		snprintf(why, sizeof(why), "%s", res->reason[0] ? res->reason :
		    "no address");
		mx_result_free(res);
		mta_sts_fetch_end(f, NULL, 0, TLSRPT_STS_POLICY_FETCH_ERROR, why);
		return;
	}
	sockaddr_ntop((const struct sockaddr *)&res->hosts[0].addrs[0], addr,
	    sizeof(addr));
	mx_result_free(res);
	if ((f->ctx = mta_sts_ssl_ctx(f)) == NULL ||
	    (f->ssl = SSL_new(f->ctx)) == NULL) {
		mta_sts_fetch_end(f, NULL, 0, TLSRPT_STS_POLICY_FETCH_ERROR,
		    "cannot set up TLS");
		return;
	}
	SSL_set_tlsext_host_name(f->ssl, f->host);
	SSL_set_verify(f->ssl, SSL_VERIFY_PEER, NULL);
	X509_VERIFY_PARAM_set_hostflags(SSL_get0_param(f->ssl),
	    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	X509_VERIFY_PARAM_set1_host(SSL_get0_param(f->ssl), f->host, 0);
	bev = bufferevent_openssl_socket_new(f->base, -1, f->ssl,
	    BUFFEREVENT_SSL_CONNECTING,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (bev == NULL) {
		SSL_free(f->ssl);
		f->ssl = NULL;
		mta_sts_fetch_end(f, NULL, 0, TLSRPT_STS_POLICY_FETCH_ERROR,
		    "cannot set up TLS");
		return;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	f->evcon = evhttp_connection_base_bufferevent_new(f->base, NULL, bev,
	    addr, f->port);
	if (f->evcon == NULL) {
		bufferevent_free(bev);
		f->ssl = NULL;
		mta_sts_fetch_end(f, NULL, 0, TLSRPT_STS_POLICY_FETCH_ERROR,
		    "cannot set up HTTP");
		return;
	}
	evhttp_connection_set_max_body_size(f->evcon, STS_POLICY_MAX);
	evhttp_connection_set_max_headers_size(f->evcon, 16384);
	evhttp_connection_set_timeout(f->evcon, STS_FETCH_TIMEOUT_SEC);
	req = evhttp_request_new(mta_sts_http_done_cb, f);
	evhttp_request_set_error_cb(req, mta_sts_http_error_cb);
	h = evhttp_request_get_output_headers(req);
	evhttp_add_header(h, "Host", f->host);
	evhttp_add_header(h, "Connection", "close");
	evhttp_add_header(h, "User-Agent", "tern");
	evtimer_add(f->timer, &tv);
	log_debug("mta-sts: fetching https://%s:%u/.well-known/mta-sts.txt "
	    "(%s) for id %s", f->host, (unsigned)f->port, addr, f->id);
	if (evhttp_make_request(f->evcon, req, EVHTTP_REQ_GET,
	    "/.well-known/mta-sts.txt") != 0)
		mta_sts_fetch_end(f, NULL, 0, TLSRPT_STS_POLICY_FETCH_ERROR,
		    "cannot send the request");
}

static void
mta_sts_fetch_start(struct sts_fetch *f)
{
	f->timer = evtimer_new(f->base, mta_sts_timeout_cb, f);
	f->reap = event_new(f->base, -1, 0, mta_sts_reap_cb, f);
	if (f->timer == NULL || f->reap == NULL)
		panic("mta_sts_fetch_start: event_new failed");
	f->rq = f->r != NULL ? resolver_host_lookup(f->r, f->host,
	    mta_sts_fetch_resolved, f) : NULL;
	if (f->rq == NULL)
		mta_sts_fetch_end(f, NULL, 0, TLSRPT_STS_POLICY_FETCH_ERROR,
		    "no resolver");
}

/*
 * The fetch is over (body = the policy on success): update the table,
 * save it, wake every waiter, report a failure, and free f once out of
 * libevent's callbacks.
 */
static void
mta_sts_fetch_end(struct sts_fetch *f, const char *body, size_t len,
    enum tlsrpt_result err, const char *why)
{
	struct sts_policy pol;
	struct sts_entry *e;
	struct mta_sts_query *q;
	enum sts_parse_status st = STS_PARSE_OK;
	int64_t now = time(NULL);
	char esc[600];
	struct buf snap;
	uint64_t gen = 0;

	if (f->finished)
		return;
	f->finished = 1;
	if (err == TLSRPT_SUCCESS &&
	    (st = sts_policy_parse(body, len, &pol)) != STS_PARSE_OK) {
		err = TLSRPT_STS_POLICY_INVALID;
		why = sts_parse_strstatus(st);
	}
	pthread_mutex_lock(&sts_lock);
	e = mta_sts_entry_get(f->domain, now);
	if (err == TLSRPT_SUCCESS) {
		free(e->text);
		e->text = xmalloc(len + 1);
		memcpy(e->text, body, len);
		e->text[len] = '\0';
		e->len = len;
		memcpy(e->id, f->id, sizeof(e->id));
		e->fetched = now;
		e->expires = now + pol.max_age;
		e->failed_id[0] = '\0';
		gen = mta_sts_snapshot(&snap);
	} else {
		memcpy(e->failed_id, f->id, sizeof(e->failed_id));
		e->failed_at = now;
	}
	e->fetching = 0;
	while ((q = TAILQ_FIRST(&e->waiters)) != NULL) {
		TAILQ_REMOVE(&e->waiters, q, link);
		q->waiting = 0;
		event_active(q->wake, EV_TIMEOUT, 1);
	}
	pthread_mutex_unlock(&sts_lock);
	if (gen > 0)
		mta_sts_save(&snap, gen);
	if (err == TLSRPT_SUCCESS) {
		log_info("mta-sts: domain=%s id=%s mode=%s max_age=%u mx=%zu "
		    "policy fetched", f->domain, f->id, sts_mode_name(pol.mode),
		    pol.max_age, pol.nmx);
	} else {
		struct tlsrpt_event ev = {
			.policy_domain = f->domain,
			.policy = TLSRPT_POLICY_STS,
			.result = err,
			.detail = why,
		};
		log_escape(esc, sizeof(esc), why, strlen(why));
		log_warnx("mta-sts: domain=%s id=%s result=%s policy fetch "
		    "failed: %s", f->domain, f->id, tlsrpt_result_name(err),
		    esc);
		tlsrpt_record(&ev);
	}
	if (f->timer != NULL)
		evtimer_del(f->timer);
	event_active(f->reap, EV_TIMEOUT, 1);
}

void
mta_sts_loop_stop(struct event_base *base)
{
	struct sts_fetch *f, *next;

	for (;;) {
		pthread_mutex_lock(&sts_lock);
		for (f = LIST_FIRST(&sts_fetches); f != NULL; f = next) {
			next = LIST_NEXT(f, link);
			if (f->base == base)
				break;
		}
		pthread_mutex_unlock(&sts_lock);
		if (f == NULL)
			return;
		if (!f->finished)
			mta_sts_fetch_end(f, NULL, 0,
			    TLSRPT_STS_POLICY_FETCH_ERROR, "shutting down");
		mta_sts_fetch_free(f);
	}
}

/* ---- reporting --------------------------------------------------------- */

enum tlsrpt_result
mta_sts_verify_result(long v)
{
	switch (v) {
	case X509_V_OK:
		return TLSRPT_SUCCESS;
	case X509_V_ERR_HOSTNAME_MISMATCH:
		return TLSRPT_CERT_HOST_MISMATCH;
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return TLSRPT_CERT_EXPIRED;
	default:
		return TLSRPT_CERT_NOT_TRUSTED;
	}
}

void
mta_sts_report(const struct mta_sts_outcome *o, const char *mx,
    const struct sockaddr *sa, enum tlsrpt_result r, const char *detail)
{
	char ip[64];
	struct tlsrpt_event ev = {
		.policy_domain = o->domain,
		.policy = TLSRPT_POLICY_STS,
		.policy_string = o->text,
		.mx_host = mx,
		.receiving_ip = sa != NULL && (sa->sa_family == AF_INET ||
		    sa->sa_family == AF_INET6) ?
		    sockaddr_ntop(sa, ip, sizeof(ip)) : NULL,
		.result = r,
		.detail = detail,
	};

	tlsrpt_record(&ev);
}
