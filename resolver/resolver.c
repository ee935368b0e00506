/*
 * resolver.c - c-ares on libevent: one channel per event loop, MX, host and
 * TXT lookups, a small TTL-bounded answer cache.
 *
 * Thread: everything runs on the thread of the event_base the resolver was
 * created for. Never blocks: c-ares sockets are watched by libevent events
 * (registered from c-ares' socket-state callback) and c-ares' retransmits
 * and timeouts are driven by one evtimer re-armed from ares_timeout() after
 * every call into c-ares.
 *
 * Owns: the c-ares channel, the socket watchers, the timer, the cache and
 * every pending lookup (struct resolver_query) until its callback has run or
 * it was cancelled. User callbacks are never called from inside c-ares or
 * from inside a lookup call: a finished lookup activates its own event and
 * the callback runs from the loop, after the lookup has been unlinked and
 * freed, so a callback may cancel other lookups or free the resolver.
 *
 * A cancelled lookup keeps its memory until c-ares has answered (or timed
 * out) every query it issued, then frees itself: c-ares callbacks therefore
 * never see freed memory, and the owner's arg is never touched again.
 *
 * Queries are built here and sent with ares_send() so that they carry the
 * AD bit (RFC 6840 5.7): the reply's AD bit (is the answer validated by a
 * validating resolver?) is kept with each answer, cached ones included,
 * for DANE (MX answers, TLSA lookups: tern/tlsa.h).
 *
 * Untrusted input: DNS replies (parsed by c-ares, resolver/mx.c and
 * resolver/tlsa.c only), domain names from recipient addresses. RFCs:
 * 5321 §5.1, 7505, 2308 (negative caching, simplified to a fixed short
 * TTL), 7672 2.1 (the AD bit as the trust signal).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>

#include <ares.h>
#include <event2/event.h>

#include "tern/log.h"
#include "tern/resolver.h"
#include "tern/tlsa.h"
#include "tern/util.h"

#define RESOLVER_T_A     1
#define RESOLVER_T_MX    15
#define RESOLVER_T_TXT   16
#define RESOLVER_T_AAAA  28
#define RESOLVER_T_TLSA  52
#define RESOLVER_C_IN    1

enum resolver_kind { RESOLVER_Q_MX, RESOLVER_Q_HOST, RESOLVER_Q_TLSA,
	RESOLVER_Q_TXT };

struct resolver_watch {
	LIST_ENTRY(resolver_watch) next;
	ares_socket_t fd;
	struct event *ev;
};

struct resolver_cache_entry {
	struct resolver_cache_entry *hnext;      /* hash chain */
	TAILQ_ENTRY(resolver_cache_entry) lru;   /* head = most recent */
	uint64_t expires_us;                      /* monotonic */
	uint32_t hash;
	int type;
	int status;                               /* SUCCESS, ENOTFOUND, ENODATA */
	int ad;                                   /* the answer's AD bit */
	unsigned char *buf;                       /* owned; NULL if negative */
	size_t len;
	char name[];                              /* lower case, no final dot */
};

struct resolver_query {
	TAILQ_ENTRY(resolver_query) link;        /* r->queries */
	struct resolver *r;                       /* borrowed: owns us */
	enum resolver_kind kind;
	resolver_mx_cb *cb;
	void *arg;                                /* borrowed; never dereferenced */
	int cancelled;
	int done;                                 /* done_ev is active */
	unsigned pending;                         /* sub-queries + holds */
	struct event *done_ev;
	struct mx_result *res;                    /* owned until handed over */
	struct txt_result *txt;                   /* RESOLVER_Q_TXT: the same */
	resolver_txt_cb *txtcb;                   /* RESOLVER_Q_TXT: instead of cb */
	int *st4, *st6;                           /* per host; -1 = not asked */
	resolver_tlsa_cb *tcb;                    /* RESOLVER_Q_TLSA: cb unused */
	struct tlsa_result *tres;                 /* owned, RESOLVER_Q_TLSA */
};

struct resolver_sub {
	struct resolver_query *q;                 /* kept alive by q->pending */
	int type;
	size_t host;                              /* index for A/AAAA */
	char name[RESOLVER_NAME_MAX + 1];
};

struct resolver {
	struct event_base *base;                  /* borrowed */
	ares_channel channel;
	struct event *timer;
	LIST_HEAD(, resolver_watch) watches;
	TAILQ_HEAD(resolver_query_list, resolver_query) queries;
	int destroying;
	unsigned families;
	/* cache */
	struct resolver_cache_entry **buckets;
	size_t nbuckets;                          /* power of two; 0 = no cache */
	size_t ncache, cache_max;
	uint32_t max_ttl, neg_ttl;
	TAILQ_HEAD(resolver_cache_lru, resolver_cache_entry) lru;
};

static void resolver_timer_arm(struct resolver *r);
static void resolver_sub_start(struct resolver_query *q, int type,
    size_t host, const char *name);

/* --- randomness --------------------------------------------------------- */

static uint32_t
resolver_rand(void *ctx, uint32_t n)
{
	(void)ctx;
	return arc4random_uniform(n);
}

/* --- c-ares <-> libevent ------------------------------------------------ */

static void
resolver_sock_cb(evutil_socket_t fd, short what, void *arg)
{
	struct resolver *r = arg;

	ares_process_fd(r->channel,
	    (what & EV_READ) ? (ares_socket_t)fd : ARES_SOCKET_BAD,
	    (what & EV_WRITE) ? (ares_socket_t)fd : ARES_SOCKET_BAD);
	resolver_timer_arm(r);
}

static void
resolver_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct resolver *r = arg;

	ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	resolver_timer_arm(r);
}

static void
resolver_timer_arm(struct resolver *r)
{
	struct timeval tv, *tvp;

	if (r->destroying)
		return;
	tvp = ares_timeout(r->channel, NULL, &tv);
	if (tvp == NULL)
		evtimer_del(r->timer);
	else
		evtimer_add(r->timer, tvp);
}

/* c-ares tells us which of its sockets want reading/writing (0/0: closing). */
static void
resolver_sock_state_cb(void *data, ares_socket_t fd, int readable,
    int writable)
{
	struct resolver *r = data;
	struct resolver_watch *w;
	short what;

	LIST_FOREACH(w, &r->watches, next)
		if (w->fd == fd)
			break;
	if (w != NULL) {
		/* Freeing an event inside its own callback is safe in libevent. */
		event_free(w->ev);
		w->ev = NULL;
	}
	if (!readable && !writable) {
		if (w != NULL) {
			LIST_REMOVE(w, next);
			free(w);
		}
		return;
	}
	if (w == NULL) {
		w = xcalloc(1, sizeof(*w));
		w->fd = fd;
		LIST_INSERT_HEAD(&r->watches, w, next);
	}
	what = EV_PERSIST | (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);
	w->ev = event_new(r->base, fd, what, resolver_sock_cb, r);
	if (w->ev == NULL || event_add(w->ev, NULL) == -1)
		panic("resolver_sock_state_cb: cannot watch DNS socket %d",
		    (int)fd);
}

/* --- cache -------------------------------------------------------------- */

static uint32_t
resolver_cache_hash(int type, const char *name, size_t len)
{
	uint32_t h = 2166136261u ^ (uint32_t)type;
	size_t i;

	for (i = 0; i < len; i++) {
		h ^= (unsigned char)tolower((unsigned char)name[i]);
		h *= 16777619u;
	}
	return h;
}

/* Length of name without a final dot. */
static size_t
resolver_name_len(const char *name)
{
	size_t len = strlen(name);

	if (len > 1 && name[len - 1] == '.')
		len--;
	return len;
}

static struct resolver_cache_entry **
resolver_cache_find(struct resolver *r, int type, const char *name)
{
	struct resolver_cache_entry **ep, *e;
	size_t len = resolver_name_len(name);
	uint32_t h = resolver_cache_hash(type, name, len);

	for (ep = &r->buckets[h & (r->nbuckets - 1)]; (e = *ep) != NULL;
	    ep = &e->hnext)
		if (e->hash == h && e->type == type &&
		    strlen(e->name) == len &&
		    strncasecmp(e->name, name, len) == 0)
			return ep;
	return ep;
}

static void
resolver_cache_unlink(struct resolver *r, struct resolver_cache_entry **ep)
{
	struct resolver_cache_entry *e = *ep;

	*ep = e->hnext;
	TAILQ_REMOVE(&r->lru, e, lru);
	r->ncache--;
	free(e->buf);
	free(e);
}

/*
 * A cached answer: 1 and *st, *buf, *len (buf borrowed: valid until the next
 * resolver_cache_put), or 0.
 */
static int
resolver_cache_get(struct resolver *r, int type, const char *name, int *st,
    const unsigned char **buf, size_t *len, int *ad)
{
	struct resolver_cache_entry **ep, *e;

	if (r->nbuckets == 0)
		return 0;
	ep = resolver_cache_find(r, type, name);
	if ((e = *ep) == NULL)
		return 0;
	if (e->expires_us <= now_mono_us()) {
		resolver_cache_unlink(r, ep);
		return 0;
	}
	TAILQ_REMOVE(&r->lru, e, lru);
	TAILQ_INSERT_HEAD(&r->lru, e, lru);
	*st = e->status;
	*ad = e->ad;
	*buf = e->buf;
	*len = e->len;
	return 1;
}

static void
resolver_cache_put(struct resolver *r, int type, const char *name, int st,
    const unsigned char *buf, size_t len, int ad)
{
	struct resolver_cache_entry **ep, *e;
	size_t nlen = resolver_name_len(name), i;
	uint32_t ttl;

	if (r->nbuckets == 0)
		return;
	if (st == ARES_SUCCESS) {
		if (buf == NULL || mx_reply_min_ttl(buf, len, &ttl) == -1)
			return;
		if (ttl > r->max_ttl)
			ttl = r->max_ttl;
	} else if (st == ARES_ENOTFOUND || st == ARES_ENODATA) {
		ttl = r->neg_ttl;
		buf = NULL;
		len = 0;
	} else
		return;         /* SERVFAIL, timeouts, ...: never cached */
	if (ttl == 0)
		return;
	ep = resolver_cache_find(r, type, name);
	if (*ep != NULL)
		resolver_cache_unlink(r, ep);
	if (r->ncache >= r->cache_max) {
		struct resolver_cache_entry *old = TAILQ_LAST(&r->lru,
		    resolver_cache_lru);

		for (ep = &r->buckets[old->hash & (r->nbuckets - 1)];
		    *ep != old; ep = &(*ep)->hnext)
			;
		resolver_cache_unlink(r, ep);
	}
	e = xcalloc(1, sizeof(*e) + nlen + 1);
	for (i = 0; i < nlen; i++)
		e->name[i] = (char)tolower((unsigned char)name[i]);
	e->hash = resolver_cache_hash(type, name, nlen);
	e->type = type;
	e->status = st;
	e->ad = ad;
	if (buf != NULL) {
		e->buf = xmalloc(len);
		memcpy(e->buf, buf, len);
		e->len = len;
	}
	e->expires_us = now_mono_us() + (uint64_t)ttl * 1000000u;
	ep = &r->buckets[e->hash & (r->nbuckets - 1)];
	e->hnext = *ep;
	*ep = e;
	TAILQ_INSERT_HEAD(&r->lru, e, lru);
	r->ncache++;
}

/* --- lookups ------------------------------------------------------------ */

void
mx_result_free(struct mx_result *res)
{
	size_t i;

	if (res == NULL)
		return;
	for (i = 0; i < res->nhosts; i++)
		free(res->hosts[i].addrs);
	free(res->hosts);
	free(res);
}

static void
resolver_query_free(struct resolver_query *q)
{
	TAILQ_REMOVE(&q->r->queries, q, link);
	if (q->done_ev != NULL)
		event_free(q->done_ev);
	mx_result_free(q->res);
	free(q->tres);
	txt_result_free(q->txt);
	free(q->st4);
	free(q->st6);
	free(q);
}

static void
resolver_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct resolver_query *q = arg;
	resolver_mx_cb *cb = q->cb;
	resolver_tlsa_cb *tcb = q->tcb;
	void *cbarg = q->arg;
	resolver_txt_cb *txtcb = q->txtcb;
	struct mx_result *res = q->res;
	struct tlsa_result *tres = q->tres;
	struct txt_result *txt = q->txt;

	/* Forget the lookup before calling out: the callback may do anything. */
	q->res = NULL;
	q->tres = NULL;
	q->txt = NULL;
	resolver_query_free(q);
	if (tcb != NULL) {
		mx_result_free(res);
		tcb(cbarg, tres);
		free(tres);
		return;
	}
	if (txtcb != NULL) {
		mx_result_free(res);
		txtcb(cbarg, txt);      /* the callback owns txt */
		return;
	}
	cb(cbarg, res);
}

/* IPv4 addresses first, then IPv6, keeping answer order within each. */
static void
resolver_host_sort(struct mx_host *h)
{
	struct sockaddr_storage t;
	size_t i, j;

	for (i = 1; i < h->naddrs; i++)
		for (j = i; j > 0 && h->addrs[j - 1].ss_family == AF_INET6 &&
		    h->addrs[j].ss_family == AF_INET; j--) {
			t = h->addrs[j];
			h->addrs[j] = h->addrs[j - 1];
			h->addrs[j - 1] = t;
		}
}

static void
resolver_query_finish(struct resolver_query *q)
{
	struct mx_result *res = q->res;
	size_t i;

	if (q->kind == RESOLVER_Q_TXT) {
		q->done = 1;
		event_active(q->done_ev, EV_TIMEOUT, 1);
		return;
	}
	for (i = 0; i < res->nhosts && q->st4 != NULL; i++) {
		resolver_host_sort(&res->hosts[i]);
		mx_host_classify(&res->hosts[i], q->st4[i], q->st6[i]);
	}
	if (q->kind == RESOLVER_Q_TLSA) {
		log_trace(TRACE_DNS, "dns tlsa status=%d records=%zu",
		    (int)q->tres->status, q->tres->n);
		q->done = 1;
		event_active(q->done_ev, EV_TIMEOUT, 1);
		return;
	}
	if (q->kind == RESOLVER_Q_MX) {
		mx_result_classify(res);
	} else if (q->st4 != NULL) {
		struct mx_host *h = &res->hosts[0];

		res->status = h->status;
		memcpy(res->dsn, h->dsn, sizeof(res->dsn));
		memcpy(res->reason, h->reason, sizeof(res->reason));
	}
	if (log_trace_mask() & TRACE_DNS) {
		char name[RESOLVER_NAME_MAX * 4 + 1];

		log_escape(name, sizeof(name), res->query, strlen(res->query));
		log_trace(TRACE_DNS, "dns %s=%s status=%s dsn=%s hosts=%zu",
		    q->kind == RESOLVER_Q_MX ? "mx" : "host", name,
		    resolver_strstatus(res->status), res->dsn, res->nhosts);
	}
	q->done = 1;
	event_active(q->done_ev, EV_TIMEOUT, 1);
}

/* Drop one hold on q; the last one finishes (or frees a cancelled) lookup. */
static void
resolver_query_release(struct resolver_query *q)
{
	if (--q->pending > 0 || q->r->destroying)
		return;
	if (q->cancelled)
		resolver_query_free(q);
	else
		resolver_query_finish(q);
}

static void
resolver_hosts_alloc(struct resolver_query *q, size_t n)
{
	size_t i;

	q->res->hosts = xcalloc(n, sizeof(*q->res->hosts));
	q->res->nhosts = n;
	q->st4 = xreallocarray(NULL, n, sizeof(int));
	q->st6 = xreallocarray(NULL, n, sizeof(int));
	for (i = 0; i < n; i++) {
		q->res->hosts[i].addrs = xcalloc(RESOLVER_ADDRS_MAX,
		    sizeof(struct sockaddr_storage));
		q->st4[i] = q->st6[i] = -1;
	}
}

static void
resolver_hosts_query(struct resolver_query *q)
{
	size_t i;

	for (i = 0; i < q->res->nhosts; i++) {
		if (q->r->families & RESOLVER_INET4)
			resolver_sub_start(q, RESOLVER_T_A, i,
			    q->res->hosts[i].name);
		if (q->r->families & RESOLVER_INET6)
			resolver_sub_start(q, RESOLVER_T_AAAA, i,
			    q->res->hosts[i].name);
	}
}

static void
resolver_on_mx(struct resolver_query *q, int st, const unsigned char *buf,
    size_t len, int ad)
{
	struct mx_result *res = q->res;
	struct mx_plan plan;
	size_t i;

	mx_plan_from_reply(st, buf, len, res->query, resolver_rand, NULL, &plan);
	/* DANE (RFC 7672 2.2.1): a validated MX set, or validated NODATA */
	res->dnssec_ad = ad && (st == ARES_SUCCESS || st == ARES_ENODATA);
	res->implicit_mx = plan.implicit_mx;
	res->status = plan.status;
	memcpy(res->dsn, plan.dsn, sizeof(res->dsn));
	memcpy(res->reason, plan.reason, sizeof(res->reason));
	if (plan.status != RESOLVER_OK || plan.n == 0)
		return;
	resolver_hosts_alloc(q, plan.n);
	for (i = 0; i < plan.n; i++) {
		res->hosts[i].pref = plan.ex[i].pref;
		memcpy(res->hosts[i].name, plan.ex[i].name,
		    sizeof(res->hosts[i].name));
	}
	/* Our caller holds q->pending, so q cannot finish under us. */
	resolver_hosts_query(q);
}

static void
resolver_on_addr(struct resolver_query *q, int type, size_t idx, int st,
    const unsigned char *buf, size_t len)
{
	struct mx_host *h = &q->res->hosts[idx];
	int pst;

	pst = mx_addrs_from_reply(st, buf, len,
	    type == RESOLVER_T_A ? AF_INET : AF_INET6, h->addrs, &h->naddrs,
	    RESOLVER_ADDRS_MAX);
	if (type == RESOLVER_T_A)
		q->st4[idx] = pst;
	else
		q->st6[idx] = pst;
}

static void
resolver_sub_done(struct resolver_sub *sub, int st, const unsigned char *buf,
    size_t len, int ad)
{
	struct resolver_query *q = sub->q;

	if (!q->cancelled) {
		if (sub->type == RESOLVER_T_TLSA)
			tlsa_from_reply(st, buf, len, ad, sub->name, q->tres);
		else if (sub->type == RESOLVER_T_TXT)
			txt_from_reply(st, buf, len, q->txt->query, q->txt);
		else if (sub->type == RESOLVER_T_MX)
			resolver_on_mx(q, st, buf, len, ad);
		else
			resolver_on_addr(q, sub->type, sub->host, st, buf, len);
	}
	free(sub);
	resolver_query_release(q);
}

static void
resolver_ares_cb(void *arg, int st, int timeouts, unsigned char *abuf,
    int alen)
{
	struct resolver_sub *sub = arg;
	struct resolver *r = sub->q->r;
	size_t len = alen > 0 ? (size_t)alen : 0;
	int ad;

	if (r->destroying) {
		/* resolver_free() frees the lookups after ares_destroy(). */
		sub->q->pending--;
		free(sub);
		return;
	}
	/* ares_send() hands back the raw reply: map its rcode as
	 * ares_query() would */
	st = dns_reply_status(st, abuf, len);
	ad = dns_reply_ad(abuf, len) == 1;
	if (log_trace_mask() & TRACE_DNS) {
		char name[RESOLVER_NAME_MAX * 4 + 1];

		log_escape(name, sizeof(name), sub->name, strlen(sub->name));
		log_trace(TRACE_DNS, "dns query=%s type=%d status=%s ad=%d "
		    "timeouts=%d", name, sub->type, mx_ares_strstatus(st), ad,
		    timeouts);
	}
	resolver_cache_put(r, sub->type, sub->name, st, abuf, len, ad);
	resolver_sub_done(sub, st, abuf, len, ad);
}

static void
resolver_sub_start(struct resolver_query *q, int type, size_t host,
    const char *name)
{
	struct resolver *r = q->r;
	struct resolver_sub *sub;
	const unsigned char *buf;
	unsigned char *qbuf;
	size_t len;
	int st, ad, qlen;

	sub = xcalloc(1, sizeof(*sub));
	sub->q = q;
	sub->type = type;
	sub->host = host;
	strncpy(sub->name, name, RESOLVER_NAME_MAX);
	q->pending++;
	if (resolver_cache_get(r, type, name, &st, &buf, &len, &ad)) {
		resolver_sub_done(sub, st, buf, len, ad);
		return;
	}
	/*
	 * Built here rather than by ares_query() to set the AD bit (RFC 6840
	 * 5.7): a validating resolver then says whether it validated the
	 * answer, which DANE needs (RFC 7672 2.1). Harmless for the others.
	 */
	st = ares_create_query(sub->name, RESOLVER_C_IN, type, 0, 1, &qbuf,
	    &qlen, 0);
	if (st != ARES_SUCCESS) {
		resolver_sub_done(sub, st, NULL, 0, 0);
		return;
	}
	if (qlen > 3)
		qbuf[3] |= 0x20;
	/* May call resolver_ares_cb() at once (no memory). */
	ares_send(r->channel, qbuf, qlen, resolver_ares_cb, sub);
	ares_free_string(qbuf);
	resolver_timer_arm(r);
}

static struct resolver_query *
resolver_query_new(struct resolver *r, enum resolver_kind kind,
    const char *name, resolver_mx_cb *cb, void *arg)
{
	struct resolver_query *q;
	size_t len = strlen(name);

	if (len > RESOLVER_NAME_MAX)
		return NULL;
	q = xcalloc(1, sizeof(*q));
	q->r = r;
	q->kind = kind;
	q->cb = cb;
	q->arg = arg;
	q->res = xcalloc(1, sizeof(*q->res));
	memcpy(q->res->query, name, len + 1);
	q->done_ev = event_new(r->base, -1, 0, resolver_done_cb, q);
	if (q->done_ev == NULL)
		panic("resolver_query_new: event_new failed");
	TAILQ_INSERT_TAIL(&r->queries, q, link);
	return q;
}

struct resolver_query *
resolver_mx_lookup(struct resolver *r, const char *domain, resolver_mx_cb *cb,
    void *arg)
{
	struct resolver_query *q;

	if ((q = resolver_query_new(r, RESOLVER_Q_MX, domain, cb, arg)) == NULL)
		return NULL;
	q->pending = 1;         /* hold until every sub-query is issued */
	resolver_sub_start(q, RESOLVER_T_MX, 0, domain);
	resolver_query_release(q);
	return q;
}

/* "1.2.3.4", "::1", "[1.2.3.4]", "[IPv6:::1]": 1 and *ss, 0 not a literal,
 * -1 bracketed but not an address. */
static int
resolver_parse_literal(const char *host, struct sockaddr_storage *ss)
{
	char buf[INET6_ADDRSTRLEN + 8];
	size_t len = strlen(host);
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	int bracket = 0;

	memset(ss, 0, sizeof(*ss));
	if (len > 0 && host[0] == '[') {
		if (len < 2 || host[len - 1] != ']' ||
		    len - 2 >= sizeof(buf))
			return -1;
		memcpy(buf, host + 1, len - 2);
		buf[len - 2] = '\0';
		bracket = 1;
	} else if (len < sizeof(buf)) {
		memcpy(buf, host, len + 1);
	} else
		return 0;
	if (inet_pton(AF_INET, buf, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		return 1;
	}
	if (bracket && strncasecmp(buf, "IPv6:", 5) == 0) {
		if (inet_pton(AF_INET6, buf + 5, &sin6->sin6_addr) == 1) {
			sin6->sin6_family = AF_INET6;
			return 1;
		}
		return -1;
	}
	if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		return 1;
	}
	return bracket ? -1 : 0;
}

struct resolver_query *
resolver_host_lookup(struct resolver *r, const char *host, resolver_mx_cb *cb,
    void *arg)
{
	struct resolver_query *q;
	struct sockaddr_storage ss;
	int lit;

	if ((q = resolver_query_new(r, RESOLVER_Q_HOST, host, cb, arg)) == NULL)
		return NULL;
	lit = resolver_parse_literal(host, &ss);
	if (lit != 0) {
		struct mx_result *res = q->res;
		struct mx_host *h;

		res->hosts = xcalloc(1, sizeof(*res->hosts));
		res->nhosts = 1;
		h = &res->hosts[0];
		memcpy(h->name, res->query, sizeof(h->name));
		if (lit == 1) {
			h->addrs = xcalloc(1, sizeof(*h->addrs));
			h->addrs[0] = ss;
			h->naddrs = 1;
			h->status = res->status = RESOLVER_OK;
			strcpy(h->dsn, "2.0.0");
			strcpy(res->dsn, "2.0.0");
		} else {
			char name[RESOLVER_NAME_MAX * 4 + 1];

			log_escape(name, sizeof(name), host, strlen(host));
			h->status = res->status = RESOLVER_PERMFAIL;
			strcpy(h->dsn, "5.1.2");
			strcpy(res->dsn, "5.1.2");
			snprintf(res->reason, sizeof(res->reason),
			    "bad address literal %.150s", name);
			memcpy(h->reason, res->reason, sizeof(h->reason));
		}
		q->pending = 1;
		resolver_query_release(q);   /* finishes: st4 == NULL */
		return q;
	}
	resolver_hosts_alloc(q, 1);
	memcpy(q->res->hosts[0].name, q->res->query,
	    sizeof(q->res->hosts[0].name));
	q->pending = 1;
	resolver_hosts_query(q);
	resolver_query_release(q);
	return q;
}

struct resolver_query *
resolver_tlsa_lookup(struct resolver *r, const char *host, unsigned port,
    resolver_tlsa_cb *cb, void *arg)
{
	struct resolver_query *q;
	char name[RESOLVER_NAME_MAX + 1];

	if (tlsa_qname(host, port, name, sizeof(name)) == -1 ||
	    (q = resolver_query_new(r, RESOLVER_Q_TLSA, name, NULL, arg)) ==
	    NULL)
		return NULL;
	q->tcb = cb;
	q->tres = xcalloc(1, sizeof(*q->tres));
	q->tres->status = TLSA_FAIL;
	q->pending = 1;
	resolver_sub_start(q, RESOLVER_T_TLSA, 0, name);
	resolver_query_release(q);
	return q;
}

struct resolver_query *
resolver_txt_lookup(struct resolver *r, const char *name, resolver_txt_cb *cb,
    void *arg)
{
	struct resolver_query *q;

	if ((q = resolver_query_new(r, RESOLVER_Q_TXT, name, NULL, arg)) == NULL)
		return NULL;
	q->txtcb = cb;
	q->txt = xcalloc(1, sizeof(*q->txt));
	memcpy(q->txt->query, q->res->query, sizeof(q->txt->query));
	q->pending = 1;
	resolver_sub_start(q, RESOLVER_T_TXT, 0, name);
	resolver_query_release(q);
	return q;
}

void
resolver_cancel(struct resolver_query *q)
{
	if (q == NULL)
		return;
	if (q->done) {
		/* Finished, callback not yet run: drop it now. */
		resolver_query_free(q);
		return;
	}
	/* Sub-queries are in flight: free when the last one comes back. */
	q->cancelled = 1;
	q->cb = NULL;
	q->tcb = NULL;
	q->txtcb = NULL;
	q->arg = NULL;
}

/* --- life cycle --------------------------------------------------------- */

struct resolver *
resolver_new(struct event_base *base, const struct sockaddr_storage *servers,
    size_t nservers, const struct resolver_opts *opts)
{
	static const struct resolver_opts defaults;
	struct ares_addr_port_node *nodes = NULL;
	struct ares_options o;
	struct resolver *r;
	char lookups[] = "b";
	size_t i;
	int rc;

	if (opts == NULL)
		opts = &defaults;
	r = xcalloc(1, sizeof(*r));
	r->base = base;
	TAILQ_INIT(&r->queries);
	LIST_INIT(&r->watches);
	TAILQ_INIT(&r->lru);
	r->families = opts->families ? opts->families :
	    RESOLVER_INET4 | RESOLVER_INET6;
	r->cache_max = opts->cache_max ? opts->cache_max : 4096;
	r->max_ttl = opts->cache_max_ttl ? opts->cache_max_ttl : 3600;
	r->neg_ttl = opts->cache_neg_ttl ? opts->cache_neg_ttl : 30;
	if (r->cache_max != (size_t)-1) {
		for (r->nbuckets = 64; r->nbuckets < r->cache_max &&
		    r->nbuckets < 65536; r->nbuckets <<= 1)
			;
		r->buckets = xcalloc(r->nbuckets, sizeof(*r->buckets));
	}

	memset(&o, 0, sizeof(o));
	/* Absolute names only: no search list, no hosts file, no aliases. */
	o.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
	/*
	 * c-ares treats SERVFAIL/REFUSED/NOTIMP as "try the next server" and,
	 * when none is left, reports ARES_ECONNREFUSED. With a single server
	 * there is nothing to fail over to, so take its answer as is and keep
	 * the real rcode for the reason string.
	 */
	if (nservers == 1)
		o.flags |= ARES_FLAG_NOCHECKRESP;
	o.timeout = opts->timeout_ms > 0 ? opts->timeout_ms : 2000;
	o.tries = opts->tries > 0 ? opts->tries : 2;
	o.ndots = 1;
	o.domains = NULL;
	o.ndomains = 0;
	o.lookups = lookups;
	o.sock_state_cb = resolver_sock_state_cb;
	o.sock_state_cb_data = r;
	rc = ares_init_options(&r->channel, &o, ARES_OPT_FLAGS |
	    ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_NDOTS |
	    ARES_OPT_DOMAINS | ARES_OPT_LOOKUPS | ARES_OPT_SOCK_STATE_CB |
	    ARES_OPT_NOROTATE);
	if (rc != ARES_SUCCESS) {
		log_warnx("resolver: ares_init_options: %s", ares_strerror(rc));
		free(r->buckets);
		free(r);
		return NULL;
	}
	if (nservers > 0) {
		nodes = xcalloc(nservers, sizeof(*nodes));
		for (i = 0; i < nservers; i++) {
			const struct sockaddr_storage *ss = &servers[i];
			uint16_t port = sockaddr_port((const struct sockaddr *)ss);

			if (port == 0)
				port = 53;
			nodes[i].next = i + 1 < nservers ? &nodes[i + 1] : NULL;
			nodes[i].family = ss->ss_family;
			if (ss->ss_family == AF_INET)
				memcpy(&nodes[i].addr.addr4,
				    &((const struct sockaddr_in *)ss)->sin_addr,
				    sizeof(nodes[i].addr.addr4));
			else if (ss->ss_family == AF_INET6)
				memcpy(&nodes[i].addr.addr6,
				    &((const struct sockaddr_in6 *)ss)->sin6_addr,
				    sizeof(nodes[i].addr.addr6));
			else {
				log_warnx("resolver: server %zu: bad family", i);
				goto fail;
			}
			nodes[i].udp_port = nodes[i].tcp_port = port;
		}
		rc = ares_set_servers_ports(r->channel, nodes);
		if (rc != ARES_SUCCESS) {
			log_warnx("resolver: ares_set_servers_ports: %s",
			    ares_strerror(rc));
			goto fail;
		}
		free(nodes);
		nodes = NULL;
	}
	if ((r->timer = evtimer_new(base, resolver_timer_cb, r)) == NULL) {
		log_warnx("resolver: evtimer_new failed");
		goto fail;
	}
	return r;
fail:
	free(nodes);
	ares_destroy(r->channel);
	free(r->buckets);
	free(r);
	return NULL;
}

void
resolver_free(struct resolver *r)
{
	struct resolver_query *q;
	struct resolver_watch *w;
	size_t i;

	if (r == NULL)
		return;
	r->destroying = 1;
	/* Calls every pending c-ares callback with ARES_EDESTRUCTION. */
	ares_destroy(r->channel);
	while ((q = TAILQ_FIRST(&r->queries)) != NULL)
		resolver_query_free(q);
	while ((w = LIST_FIRST(&r->watches)) != NULL) {
		LIST_REMOVE(w, next);
		if (w->ev != NULL)
			event_free(w->ev);
		free(w);
	}
	if (r->timer != NULL)
		event_free(r->timer);
	for (i = 0; i < r->nbuckets; i++) {
		struct resolver_cache_entry *e, *next;

		for (e = r->buckets[i]; e != NULL; e = next) {
			next = e->hnext;
			free(e->buf);
			free(e);
		}
	}
	free(r->buckets);
	free(r);
}
