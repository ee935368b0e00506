/*
 * tlsrpt.c - the delivery client's TLS outcomes in RFC 8460 terms (see
 * tern/tlsrpt.h). For now each outcome is one log line at debug level; the
 * per-domain daily aggregate and its report build on tlsrpt_record().
 */
#include "tern/log.h"
#include "tern/tlsrpt.h"

static const char *const result_names[] = {
	[TLSRPT_SUCCESS] = "success",
	[TLSRPT_STARTTLS_NOT_SUPPORTED] = "starttls-not-supported",
	[TLSRPT_CERT_HOST_MISMATCH] = "certificate-host-mismatch",
	[TLSRPT_CERT_EXPIRED] = "certificate-expired",
	[TLSRPT_CERT_NOT_TRUSTED] = "certificate-not-trusted",
	[TLSRPT_VALIDATION_FAILURE] = "validation-failure",
	[TLSRPT_TLSA_INVALID] = "tlsa-invalid",
	[TLSRPT_DNSSEC_INVALID] = "dnssec-invalid",
	[TLSRPT_DANE_REQUIRED] = "dane-required",
	[TLSRPT_STS_POLICY_FETCH_ERROR] = "sts-policy-fetch-error",
	[TLSRPT_STS_POLICY_INVALID] = "sts-policy-invalid",
	[TLSRPT_STS_WEBPKI_INVALID] = "sts-webpki-invalid",
};

const char *
tlsrpt_result_name(enum tlsrpt_result r)
{
	if ((unsigned)r >= sizeof(result_names) / sizeof(result_names[0]))
		return "validation-failure";
	return result_names[r];
}

const char *
tlsrpt_policy_name(enum tlsrpt_policy p)
{
	switch (p) {
	case TLSRPT_POLICY_STS:
		return "sts";
	case TLSRPT_POLICY_TLSA:
		return "tlsa";
	default:
		return "no-policy-found";
	}
}

void
tlsrpt_record(const struct tlsrpt_event *ev)
{
	log_debug("tlsrpt: domain=%s policy=%s mx=%s ip=%s result=%s%s%s",
	    ev->policy_domain != NULL ? ev->policy_domain : "-",
	    tlsrpt_policy_name(ev->policy),
	    ev->mx_host != NULL ? ev->mx_host : "-",
	    ev->receiving_ip != NULL ? ev->receiving_ip : "-",
	    tlsrpt_result_name(ev->result),
	    ev->detail != NULL ? " detail=" : "",
	    ev->detail != NULL ? ev->detail : "");
}
