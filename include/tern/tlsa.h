/*
 * tlsa.h - DANE TLSA records for SMTP (RFC 6698, RFC 7671, RFC 7672): the
 * pure parser of a raw DNS answer to "_PORT._tcp.HOST TLSA" (resolver/
 * tlsa.c) and the asynchronous lookup (resolver/resolver.c).
 *
 * Trust: the answer is trusted only when the configured resolver set the
 * AD bit (RFC 7672 2.1: a local validating resolver is the trust anchor,
 * as Postfix does). The lookup asks with the AD bit set (RFC 6840 5.7) so a
 * validating resolver reports it.
 */
#ifndef TERN_TLSA_H
#define TERN_TLSA_H

#include <stddef.h>
#include <stdint.h>

#define TLSA_RR_MAX     16      /* records kept from one answer */
#define TLSA_DATA_MAX   8192    /* certificate association bytes, all records */
#define TLSA_CNAME_MAX  8       /* CNAME links followed in one answer */

/* What an answer says (RFC 7672 2.2). */
enum tlsa_status {
	TLSA_SECURE = 0,    /* AD set, at least one TLSA record (usable or not) */
	TLSA_NONE,          /* AD set, NXDOMAIN or NODATA: no TLSA, securely */
	TLSA_INSECURE,      /* AD not set: no DANE, whatever the answer held */
	TLSA_FAIL,          /* SERVFAIL, timeout, malformed answer: defer */
};

struct tlsa_rr {
	uint8_t usage;      /* 0 PKIX-TA, 1 PKIX-EE, 2 DANE-TA, 3 DANE-EE */
	uint8_t selector;   /* 0 full certificate, 1 SubjectPublicKeyInfo */
	uint8_t mtype;      /* 0 full, 1 SHA2-256, 2 SHA2-512 */
	uint16_t off, len;  /* data: tlsa_result.data[off .. off+len) */
};

struct tlsa_result {
	enum tlsa_status status;
	char reason[192];               /* "" unless TLSA_FAIL */
	size_t n;                       /* records in rr[] */
	size_t dropped;                 /* records beyond TLSA_RR_MAX/DATA_MAX */
	struct tlsa_rr rr[TLSA_RR_MAX];
	unsigned char data[TLSA_DATA_MAX];
	size_t used;                    /* bytes of data[] in use */
};

/*
 * Read the answer to "qname TLSA". ares_status is the lookup's c-ares status
 * (already mapped from the rcode: ARES_ENOTFOUND, ARES_ENODATA, ...); buf
 * is the raw reply (may be NULL/0 unless ARES_SUCCESS); ad is its AD bit.
 * TLSA records are taken at qname or, through a CNAME chain in the answer
 * section that starts at qname (RFC 7671 7, at most TLSA_CNAME_MAX links),
 * at the chain's end; other records are ignored. Names compare without
 * regard to ASCII case. Pure: no allocation, no I/O. Returns out->status.
 */
enum tlsa_status tlsa_from_reply(int ares_status, const unsigned char *buf,
    size_t len, int ad, const char *qname, struct tlsa_result *out);

/*
 * 1 when r can authenticate a peer under RFC 7672 3.1.3: DANE-TA(2) or
 * DANE-EE(3), selector 0 or 1, matching type 0 (any length), 1 (32 bytes)
 * or 2 (64 bytes). PKIX-TA(0) and PKIX-EE(1) are unusable for SMTP.
 */
int tlsa_rr_usable(const struct tlsa_rr *r);

/* How many of res's records are usable. */
size_t tlsa_usable_count(const struct tlsa_result *res);

/*
 * The records in presentation form, "3 1 1 ab12...", one per line joined by
 * '\n' (RFC 8460 4.4 policy-string), cut to fit buf. Returns buf.
 */
char *tlsa_policy_string(const struct tlsa_result *res, char *buf,
    size_t len);

/* "_25._tcp.mx.example" for host and port into buf: 0, or -1 too long. */
int tlsa_qname(const char *host, unsigned port, char *buf, size_t len);

/* Header bits of a raw DNS reply: the AD bit (0/1), and -1 if too short. */
int dns_reply_ad(const unsigned char *buf, size_t len);

/*
 * The c-ares status that ares_query() would report for a raw reply that
 * ares_send() returned with ARES_SUCCESS: NOERROR with answers
 * ARES_SUCCESS, without ARES_ENODATA; NXDOMAIN ARES_ENOTFOUND; SERVFAIL
 * ARES_ESERVFAIL; REFUSED ARES_EREFUSED; FORMERR ARES_EFORMERR; NOTIMP
 * ARES_ENOTIMP; too short ARES_EBADRESP. Other statuses pass through.
 */
int dns_reply_status(int ares_status, const unsigned char *buf, size_t len);

/* ---- lookup (resolver/resolver.c; the threading rules of resolver.h) ---- */

struct resolver;
struct resolver_query;

/* res is borrowed: valid only during the call. */
typedef void resolver_tlsa_cb(void *arg, const struct tlsa_result *res);

/*
 * Look up TLSA at _port._tcp.host with the AD bit asked for. Answers
 * (records and NXDOMAIN/NODATA) are cached for their TTL like every other
 * (so a warm cache costs no query); SERVFAIL and timeouts never. Returns a
 * handle (cancel with resolver_cancel()), or NULL when the name is too
 * long (nothing is called back then).
 */
struct resolver_query *resolver_tlsa_lookup(struct resolver *r,
    const char *host, unsigned port, resolver_tlsa_cb *cb, void *arg);

#endif
