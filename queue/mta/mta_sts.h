/*
 * mta_sts.h - private to queue/mta/: MTA-STS (RFC 8461) for the delivery
 * client. Discovery (the "_mta-sts.<domain>" TXT record), the HTTPS policy
 * fetch, and the policy cache shared by every delivery worker and kept in
 * <queue>/mta-sts.cache across restarts. The parsers are base/sts_parse.c
 * (tern/sts.h); deliver_session.c applies the policy.
 */
#ifndef TERN_MTA_STS_H
#define TERN_MTA_STS_H

#include <sys/socket.h>

#include "tern/conf.h"
#include "tern/sts.h"
#include "tern/tlsrpt.h"

struct event_base;
struct resolver;
struct mta_sts_query;

/* The policy in force for a domain: mode testing or enforce. */
struct mta_sts_outcome {
	char domain[256];               /* the policy domain, lower case */
	char id[STS_ID_MAX + 1];
	struct sts_policy pol;
	char *text;                     /* owned: the policy file's lines
	                                   joined by '\n' (RFC 8460 4.4) */
};

/* o is owned by the callee: mta_sts_outcome_free(). NULL = no policy. */
typedef void mta_sts_cb(void *arg, struct mta_sts_outcome *o);

/*
 * Once, before the workers start (any thread): the cache file is
 * <queue_dir>/mta-sts.cache; what it holds is loaded now. Policies that
 * fail to load are dropped with a warning, never fatal.
 */
void mta_sts_init(const char *queue_dir);
/* After the workers stopped: forget every cached policy (memory only). */
void mta_sts_shutdown(void);

/*
 * The MTA-STS policy of domain (RFC 8461 3, 5.1), on loop base with its
 * resolver r: look up the TXT record; a cached, unexpired policy with the
 * same id is used as it is; else the policy is fetched (one fetch per
 * domain at a time, on this loop: other lookups of the domain, on any
 * loop, wait for it) and cached for max_age. A failed fetch, a missing or
 * unusable TXT record (DNS failure included) keep a cached unexpired
 * policy in force. cb runs later from the loop, never from inside this
 * call, exactly once unless mta_sts_cancel() comes first. mode none counts
 * as no policy. conf gives the fetch's port and CA file (copied).
 */
struct mta_sts_query *mta_sts_query(struct event_base *base,
    struct resolver *r, const struct conf *conf, const char *domain,
    mta_sts_cb *cb, void *arg);
/*
 * 1 when the cache holds an unexpired enforce policy for domain (no DNS,
 * any thread): a cached connection that was not verified under it must
 * not be reused.
 */
int mta_sts_cached_enforce(const char *domain);

/* Drop a query whose callback has not run yet; NULL is a no-op. */
void mta_sts_cancel(struct mta_sts_query *q);
void mta_sts_outcome_free(struct mta_sts_outcome *o);   /* NULL: no-op */

/*
 * A delivery worker stops: abort every fetch running on base (before its
 * resolver is freed). Lookups waiting for them get "no policy".
 */
void mta_sts_loop_stop(struct event_base *base);

/* The RFC 8460 result type for an OpenSSL certificate verify result. */
enum tlsrpt_result mta_sts_verify_result(long x509_verify_result);

/*
 * Report one connection's outcome under policy o to TLS-RPT (tlsrpt.h):
 * mx is the MX host name, sa its address (NULL when not connected).
 */
void mta_sts_report(const struct mta_sts_outcome *o, const char *mx,
    const struct sockaddr *sa, enum tlsrpt_result r, const char *detail);

#endif
