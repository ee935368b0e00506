/*
 * resolver.h - asynchronous DNS for delivery: MX routing (RFC 5321 §5.1,
 * RFC 7505 null MX) and host addresses, c-ares driven by a libevent loop.
 *
 * Threads: a resolver belongs to one event_base (one per delivery worker
 * loop). Every function below must be called on that loop's thread, and every
 * callback runs on that thread, from the loop itself: never from inside
 * resolver_mx_lookup()/resolver_host_lookup(), even when the answer is cached
 * or the host is an IP literal. Nothing here blocks.
 *
 * Lifetimes:
 *   - resolver_new() returns an owned resolver; resolver_free() destroys it
 *     and silently drops every lookup still pending (their callbacks are
 *     never called and their handles become invalid). resolver_free() may be
 *     called from inside a lookup callback.
 *   - A lookup returns a handle (struct resolver_query *, borrowed). It stays
 *     valid until its callback starts, or until resolver_cancel(). After
 *     resolver_cancel() the callback is guaranteed never to run, so an owner
 *     that is being freed (a delivery session) cancels its lookup and can be
 *     freed at once: nothing the resolver does later touches it.
 *   - The callback receives an owned struct mx_result and must release it
 *     with mx_result_free() (now or later; it does not depend on the
 *     resolver and may outlive it).
 *   - Every callback is called exactly once per lookup that is not
 *     cancelled (and whose resolver is not freed first).
 *
 * Outcomes: RESOLVER_OK, RESOLVER_TEMPFAIL (retry later: SERVFAIL, REFUSED,
 * timeout, malformed answer, no address yet), RESOLVER_PERMFAIL (bounce),
 * each with an RFC 3463 enhanced status code and a short reason:
 *   NXDOMAIN for the recipient domain         5.1.2 "DNS NXDOMAIN for d MX"
 *   null MX (RFC 7505)                        5.1.10 "null MX for d"
 *   implicit MX, domain has no A and no AAAA  5.1.2 "no MX and no address for d"
 *   every MX host has permanently no address  5.4.4 "no MX host of d has an address"
 *   SERVFAIL / REFUSED / timeout / bad reply  4.4.3 "DNS SERVFAIL for d MX"
 *   some MX host failed temporarily, none ok  4.4.3 "no MX host of d has an address yet"
 *   host lookup: no A and no AAAA            5.4.4 "no address for h"
 * Names in reason strings come from DNS (or from a recipient address): log
 * them through log_escape().
 *
 * Every query asks with the AD bit; mx_result.dnssec_ad says whether the
 * MX answer came back validated (DANE, RFC 7672 2.2.1). TLSA lookups are in
 * tern/tlsa.h.
 */
#ifndef TERN_RESOLVER_H
#define TERN_RESOLVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct event_base;
struct ares_mx_reply;

#define RESOLVER_NAME_MAX   255   /* longest domain name, without NUL */
#define RESOLVER_REASON_MAX 192   /* reason strings, with NUL */
#define RESOLVER_MX_MAX     16    /* exchangers kept (lowest preferences) */
#define RESOLVER_ADDRS_MAX  16    /* addresses kept per exchanger */

enum resolver_status {
	RESOLVER_OK = 0,
	RESOLVER_TEMPFAIL,
	RESOLVER_PERMFAIL,
};

/* Address families to look up (resolver_opts.families). */
#define RESOLVER_INET4 0x1u
#define RESOLVER_INET6 0x2u

struct resolver_opts {
	int timeout_ms;           /* per try; 0 = 2000 */
	int tries;                /* per server; 0 = 2 */
	unsigned families;        /* RESOLVER_INET4|INET6; 0 = both */
	size_t cache_max;         /* cached answers; 0 = 4096; (size_t)-1 = no cache */
	uint32_t cache_max_ttl;   /* seconds; 0 = 3600 */
	uint32_t cache_neg_ttl;   /* NXDOMAIN / NODATA, seconds; 0 = 30 */
};

/* One exchanger (or the one host of a host lookup), in the order to try. */
struct mx_host {
	char name[RESOLVER_NAME_MAX + 1];
	uint16_t pref;                    /* MX preference; 0 for implicit/host */
	struct sockaddr_storage *addrs;   /* owned by the result; port is 0 */
	size_t naddrs;                    /* 0: skip this host (see status) */
	enum resolver_status status;      /* OK iff naddrs > 0 */
	char dsn[8];                      /* "2.0.0", "4.4.3", "5.4.4" */
	char reason[RESOLVER_REASON_MAX];
};

struct mx_result {
	enum resolver_status status;      /* OK iff some host has an address */
	char dsn[8];
	char reason[RESOLVER_REASON_MAX]; /* "" when OK */
	char query[RESOLVER_NAME_MAX + 1];/* the domain or host asked for */
	int implicit_mx;                  /* no MX records: the domain itself */
	struct mx_host *hosts;            /* owned; sorted by pref, equal prefs shuffled */
	size_t nhosts;                    /* may be 0 when status != OK */
	int dnssec_ad;                    /* MX lookups: the MX answer (or its
	                                     NODATA) came with the AD bit of a
	                                     validating resolver (DANE) */
};

/* Addresses within a host: IPv4 first, then IPv6, each in answer order. */

struct resolver;
struct resolver_query;

/* res is owned by the callee: release it with mx_result_free(). */
typedef void resolver_mx_cb(void *arg, struct mx_result *res);

/*
 * Create the resolver of one loop. servers[0..nservers) are the name servers
 * to ask, in order (port 0 means 53); nservers == 0 reads /etc/resolv.conf.
 * Search domains and the hosts file are never used: names are absolute.
 * With several servers, SERVFAIL/REFUSED from one makes c-ares try the next
 * (the reason then reads "no usable server ..."); with exactly one server
 * its rcode is reported as is ("DNS SERVFAIL for d MX").
 * opts may be NULL (defaults). Returns NULL (and logs) on failure.
 */
struct resolver *resolver_new(struct event_base *base,
    const struct sockaddr_storage *servers, size_t nservers,
    const struct resolver_opts *opts);
void resolver_free(struct resolver *r);   /* NULL is a no-op */

/*
 * Route mail for domain: MX records (ordered as RFC 5321 §5.1 says, random
 * among equal preferences), then A and AAAA of every exchanger in parallel.
 * No MX records (NODATA, or a CNAME chain without MX) means the implicit MX:
 * the domain itself, preference 0, implicit_mx = 1. A null MX among other MX
 * records is ignored; alone, it is a permanent failure (5.1.10).
 * domain is copied. Returns a handle, or NULL only if domain is longer than
 * RESOLVER_NAME_MAX (nothing is called back then). An address-literal
 * domain (user@[192.0.2.1]) is not a DNS name: use resolver_host_lookup().
 * Answers (MX, A, AAAA, NXDOMAIN/NODATA) are cached per resolver for their
 * TTL (capped), SERVFAIL and timeouts never; MX sets are reshuffled on
 * every lookup, cached or not. Hosts within the result are not checked
 * against the local host: dropping MX hosts at or after ourselves
 * (RFC 5321 §5.1) is the caller's job.
 */
struct resolver_query *resolver_mx_lookup(struct resolver *r,
    const char *domain, resolver_mx_cb *cb, void *arg);

/*
 * Addresses of one host (for "smtp:[host]" routes): A and AAAA, no MX.
 * An IP literal ("192.0.2.1", "2001:db8::1", "[192.0.2.1]",
 * "[IPv6:2001:db8::1]") is returned as is, without DNS. The result has one
 * host, named host. Handle and NULL as for resolver_mx_lookup().
 */
struct resolver_query *resolver_host_lookup(struct resolver *r,
    const char *host, resolver_mx_cb *cb, void *arg);

/* Drop a pending lookup: its callback will never run. q must be a handle
 * whose callback has not started yet. NULL is a no-op. */
void resolver_cancel(struct resolver_query *q);

void mx_result_free(struct mx_result *res);   /* NULL is a no-op */

/*
 * TXT records of one name (RFC 1035 3.3.14), for policy discovery
 * (MTA-STS "_mta-sts.<domain>", TLS-RPT "_smtp._tls.<domain>"). Each
 * record's character-strings are joined into one string, as RFC 8461 3.1
 * and RFC 7208 3.3 read them.
 * status: OK with n >= 1 records; PERMFAIL when the name has none
 * (NXDOMAIN or NODATA, dsn "5.1.2"); TEMPFAIL for SERVFAIL, timeouts and
 * malformed answers. At most RESOLVER_TXT_MAX records are kept, each cut
 * at RESOLVER_TXT_LEN bytes (txt_len[i] says how long; a record may hold
 * NUL bytes). Lifetimes, threads and cancel as for resolver_mx_lookup();
 * the answer is cached for its TTL like the others.
 */
#define RESOLVER_TXT_MAX 16
#define RESOLVER_TXT_LEN 4096

struct txt_result {
	enum resolver_status status;
	char dsn[8];
	char reason[RESOLVER_REASON_MAX];
	char query[RESOLVER_NAME_MAX + 1];
	size_t n;
	char *txt[RESOLVER_TXT_MAX];      /* owned, NUL-terminated */
	size_t txt_len[RESOLVER_TXT_MAX];
};

typedef void resolver_txt_cb(void *arg, struct txt_result *res);

struct resolver_query *resolver_txt_lookup(struct resolver *r,
    const char *name, resolver_txt_cb *cb, void *arg);
void txt_result_free(struct txt_result *res);  /* NULL is a no-op */

/*
 * Pure (resolver/txt.c): fill out->n/txt/txt_len and the status from the
 * answer to a TXT query (ares_status and the raw reply, as for
 * mx_plan_from_reply). name goes into the reason. Returns out->status.
 */
enum resolver_status txt_from_reply(int ares_status, const unsigned char *buf,
    size_t len, const char *name, struct txt_result *out);

const char *resolver_strstatus(enum resolver_status s);  /* "ok", ... */

/*
 * Pure helpers (resolver/mx.c): no I/O, no globals, no allocation except by
 * c-ares' own parsers (which they free). Exposed for tests and fuzzing.
 * ares_status arguments are c-ares status codes as passed to an ares_query()
 * callback (ARES_SUCCESS, ARES_ENODATA, ARES_ENOTFOUND, ...).
 */

/* Uniform random in [0, n), n >= 1. */
typedef uint32_t mx_rand_fn(void *ctx, uint32_t n);

struct mx_plan {
	enum resolver_status status;
	char dsn[8];
	char reason[RESOLVER_REASON_MAX];
	int implicit_mx;
	size_t n;
	struct {
		uint16_t pref;
		char name[RESOLVER_NAME_MAX + 1];
	} ex[RESOLVER_MX_MAX];
};

/*
 * Turn the answer to "domain MX" into the ordered exchanger list. buf/len is
 * the raw reply (may be NULL/0 unless ares_status is ARES_SUCCESS).
 * Returns out->status.
 */
enum resolver_status mx_plan_from_reply(int ares_status,
    const unsigned char *buf, size_t len, const char *domain,
    mx_rand_fn *rnd, void *rctx, struct mx_plan *out);

/* The same from an already parsed c-ares list (NULL = no MX records). */
enum resolver_status mx_plan_from_list(const struct ares_mx_reply *list,
    const char *domain, mx_rand_fn *rnd, void *rctx, struct mx_plan *out);

/*
 * Sort the n entries of plan->ex by preference and shuffle each group of
 * equal preferences with rnd (uniform permutation, Fisher-Yates).
 */
void mx_plan_order(struct mx_plan *plan, mx_rand_fn *rnd, void *rctx);

/*
 * Addresses from an A (family AF_INET) or AAAA (AF_INET6) reply, appended to
 * out[*n..max). Returns the c-ares status after parsing: ARES_SUCCESS with at
 * least one address, ARES_ENODATA (e.g. only a CNAME), ARES_EBADRESP, or
 * ares_status itself when it was not ARES_SUCCESS.
 */
int mx_addrs_from_reply(int ares_status, const unsigned char *buf,
    size_t len, int family, struct sockaddr_storage *out, size_t *n,
    size_t max);

/* Smallest TTL of the answer section (0 answers: *ttl = 0). 0 ok, -1 malformed. */
int mx_reply_min_ttl(const unsigned char *buf, size_t len, uint32_t *ttl);

/* Classify a failed c-ares status: TEMPFAIL or PERMFAIL, dsn set ("4.4.3",
 * "5.1.2"); name/what go into the reason, e.g. "DNS SERVFAIL for d MX". */
enum resolver_status mx_classify(int ares_status, const char *name,
    const char *what, char dsn[8], char *reason, size_t reasonlen);

/* Short name of a c-ares status for reasons: "SERVFAIL", "NXDOMAIN", ... */
const char *mx_ares_strstatus(int ares_status);

/*
 * Per-host and overall verdicts once the address lookups are done.
 * st4/st6: status from mx_addrs_from_reply() per family (-1 = not asked).
 */
void mx_host_classify(struct mx_host *h, int st4, int st6);
void mx_result_classify(struct mx_result *res);

/*
 * RFC 5321 5.1: when self (our own host name; ASCII case and a trailing dot
 * ignored) is among res's hosts, drop it and every host with a preference
 * not better than its own, then classify again. Returns how many hosts were
 * dropped; all of them (nhosts 0) means the mail would loop back to us.
 */
size_t mx_result_drop_self(struct mx_result *res, const char *self);

#endif
