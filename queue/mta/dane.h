/*
 * dane.h - private to queue/mta: DANE for SMTP (RFC 7672) in the delivery
 * client. deliver_session.c keeps one struct dlv_dane per session and
 * calls these at its hooks (marked "DANE" there); the policy itself lives
 * in dane.c.
 */
#ifndef TERN_DANE_H
#define TERN_DANE_H

#include <stddef.h>
#include <sys/socket.h>

#include "tern/resolver.h"
#include "tern/tlsa.h"
#include "tern/tlsrpt.h"

struct ssl_st;

/* What the TLSA of one MX host make of its connections (RFC 7672 2.2). */
enum dlv_dane_verdict {
	DLV_DANE_MAY = 0,   /* no DANE here: insecure MX or TLSA, or secure
	                       "no TLSA": opportunistic TLS */
	DLV_DANE_AUTH,      /* usable TLSA: STARTTLS and DANE authentication
	                       mandatory, no PKIX fallback */
	DLV_DANE_ENCRYPT,   /* TLSA present, none usable: TLS mandatory,
	                       unauthenticated (RFC 7672 2.2) */
	DLV_DANE_DEFER,     /* the TLSA lookup failed: skip the host, 4.7.5 */
};

struct dlv_dane {
	int want;                       /* tls-policy dane on an MX route */
	int mx_secure;                  /* the MX answer had the AD bit */
	struct resolver_query *rq;      /* borrowed handle while looking up */
	char host[RESOLVER_NAME_MAX + 1];  /* whose TLSA tlsa holds */
	struct tlsa_result *tlsa;       /* owned, or NULL */
	enum dlv_dane_verdict verdict;  /* for host */
	int reported;                   /* tlsa-invalid / lookup failure told
	                                   to tlsrpt for host */
};

/* Cancel the lookup, free the answer. */
void dlv_dane_clear(struct dlv_dane *d);

/* What an answer makes of its host's connections. */
enum dlv_dane_verdict dlv_dane_verdict(const struct tlsa_result *t);

/*
 * Make ssl authenticate its peer by the usable records of t only (OpenSSL
 * DANE: DANE-EE without name checks, DANE-TA with host as the reference
 * identifier, RFC 7672 3.2.2 and 3.2.3). 0, or -1 when OpenSSL refuses.
 */
int dlv_dane_ssl_setup(struct ssl_st *ssl, const char *host,
    const struct tlsa_result *t);

/*
 * After a handshake: 1 when DANE authenticated the peer, with what matched
 * in buf ("3 1 1 depth=0"), else 0 with the reason in buf.
 */
int dlv_dane_verified(struct ssl_st *ssl, char *buf, size_t len);

/* The RFC 8460 result of a failed DANE handshake (verify result of ssl). */
enum tlsrpt_result dlv_dane_failure_type(struct ssl_st *ssl);

/*
 * One tlsrpt_record() with policy "tlsa": for domain, the MX host and
 * address ss, the TLSA of d as the policy string.
 */
void dlv_dane_report(const struct dlv_dane *d, const char *domain,
    const struct sockaddr_storage *ss, enum tlsrpt_result res,
    const char *detail);

#endif
