/*
 * dane.c - DANE for SMTP (RFC 7672) in the delivery client: what a TLSA
 * answer makes of a next hop's TLS, OpenSSL's DANE verification set up per
 * connection, and the TLS-RPT events of the "tlsa" policy (RFC 8460).
 *
 * Runs on the delivery worker threads (one session at a time per call);
 * never blocks, no globals. The answers come from the resolver, which
 * trusts a TLSA set only when the configured resolver set the AD bit
 * (resolver/tlsa.c); here the records are used as they are. Untrusted
 * input: the records (lengths checked by tlsa_rr_usable(), the bytes
 * handed to OpenSSL) and the peer's certificate chain (OpenSSL).
 *
 * RFC 7672: 2.2 (the outcomes of a TLSA lookup), 3.1.3 (only DANE-TA(2)
 * and DANE-EE(3) are usable), 3.2.2 and 3.2.3 (no name check for DANE-EE;
 * for DANE-TA the MX host name, which is also the TLSA base domain since
 * MX host names are not CNAME-expanded here).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tern/log.h"
#include "tern/util.h"

#include "dane.h"

void
dlv_dane_clear(struct dlv_dane *d)
{
	resolver_cancel(d->rq);
	d->rq = NULL;
	free(d->tlsa);
	d->tlsa = NULL;
	d->host[0] = '\0';
	d->reported = 0;
}

enum dlv_dane_verdict
dlv_dane_verdict(const struct tlsa_result *t)
{
	switch (t->status) {
	case TLSA_SECURE:
		return tlsa_usable_count(t) > 0 ? DLV_DANE_AUTH :
		    DLV_DANE_ENCRYPT;
	case TLSA_FAIL:
		return DLV_DANE_DEFER;
	case TLSA_NONE:
	case TLSA_INSECURE:
	default:
		return DLV_DANE_MAY;
	}
}

int
dlv_dane_ssl_setup(SSL *ssl, const char *host, const struct tlsa_result *t)
{
	size_t added = 0;

	if (SSL_dane_enable(ssl, host) <= 0)
		return -1;
	/* RFC 7672 3.2.3: a DANE-EE match needs no name check */
	SSL_dane_set_flags(ssl, DANE_FLAG_NO_DANE_EE_NAMECHECKS);
	SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	for (size_t i = 0; i < t->n; i++) {
		const struct tlsa_rr *r = &t->rr[i];

		if (!tlsa_rr_usable(r))
			continue;
		if (SSL_dane_tlsa_add(ssl, r->usage, r->selector, r->mtype,
		    t->data + r->off, r->len) > 0)
			added++;
	}
	if (added == 0)
		return -1;
	SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
	return 0;
}

int
dlv_dane_verified(SSL *ssl, char *buf, size_t len)
{
	uint8_t usage, selector, mtype;
	long vr = SSL_get_verify_result(ssl);
	int depth;

	if (vr != X509_V_OK) {
		snprintf(buf, len, "%s", X509_verify_cert_error_string(vr));
		return 0;
	}
	depth = SSL_get0_dane_tlsa(ssl, &usage, &selector, &mtype, NULL, NULL);
	if (depth < 0) {
		snprintf(buf, len, "no TLSA record matched");
		return 0;
	}
	snprintf(buf, len, "%u %u %u depth=%d", usage, selector, mtype, depth);
	return 1;
}

enum tlsrpt_result
dlv_dane_failure_type(SSL *ssl)
{
	switch (ssl != NULL ? SSL_get_verify_result(ssl) : X509_V_OK) {
	case X509_V_ERR_CERT_HAS_EXPIRED:
		return TLSRPT_CERT_EXPIRED;
	case X509_V_ERR_HOSTNAME_MISMATCH:
		return TLSRPT_CERT_HOST_MISMATCH;
	default:
		return TLSRPT_VALIDATION_FAILURE;
	}
}

void
dlv_dane_report(const struct dlv_dane *d, const char *domain,
    const struct sockaddr_storage *ss, enum tlsrpt_result res,
    const char *detail)
{
	struct tlsrpt_event ev;
	char ip[64] = "", *policy = NULL;

	memset(&ev, 0, sizeof(ev));
	if (d->tlsa != NULL && d->tlsa->n > 0) {
		size_t plen = d->tlsa->used * 2 + d->tlsa->n * 16 + 1;
		policy = xmalloc(plen);
		tlsa_policy_string(d->tlsa, policy, plen);
	}
	if (ss != NULL && ss->ss_family != AF_UNSPEC)
		sockaddr_ntop((const struct sockaddr *)ss, ip, sizeof(ip));
	ev.policy_domain = domain;
	ev.policy = TLSRPT_POLICY_TLSA;
	ev.policy_string = policy;
	ev.mx_host = d->host[0] ? d->host : NULL;
	ev.receiving_ip = ip[0] ? ip : NULL;
	ev.result = res;
	ev.detail = detail;
	tlsrpt_record(&ev);
	free(policy);
}
