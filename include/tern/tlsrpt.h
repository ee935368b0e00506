/*
 * tlsrpt.h - what the delivery client learns about a next hop's TLS, in the
 * terms of SMTP TLS Reporting (RFC 8460 4.3): the policy that applied (an
 * MTA-STS policy, a DANE TLSA record set, or none) and the result of one
 * attempt to establish it.
 *
 * Delivery sessions call tlsrpt_record() once per connection whose policy
 * outcome is known (success after the handshake, or the failure that ended
 * the attempt). The call is cheap and thread-safe; it copies what it needs.
 * The aggregation per policy domain and day, and the daily report, live in
 * queue/mta/tlsrpt.c.
 */
#ifndef TERN_TLSRPT_H
#define TERN_TLSRPT_H

enum tlsrpt_policy {
	TLSRPT_POLICY_NONE = 0,     /* "no-policy-found" */
	TLSRPT_POLICY_STS,          /* "sts" */
	TLSRPT_POLICY_TLSA,         /* "tlsa" */
};

/* RFC 8460 4.3 result types; TLSRPT_SUCCESS counts a successful session. */
enum tlsrpt_result {
	TLSRPT_SUCCESS = 0,
	TLSRPT_STARTTLS_NOT_SUPPORTED,  /* "starttls-not-supported" */
	TLSRPT_CERT_HOST_MISMATCH,      /* "certificate-host-mismatch" */
	TLSRPT_CERT_EXPIRED,            /* "certificate-expired" */
	TLSRPT_CERT_NOT_TRUSTED,        /* "certificate-not-trusted" */
	TLSRPT_VALIDATION_FAILURE,      /* "validation-failure" */
	TLSRPT_TLSA_INVALID,            /* "tlsa-invalid" */
	TLSRPT_DNSSEC_INVALID,          /* "dnssec-invalid" */
	TLSRPT_DANE_REQUIRED,           /* "dane-required" */
	TLSRPT_STS_POLICY_FETCH_ERROR,  /* "sts-policy-fetch-error" */
	TLSRPT_STS_POLICY_INVALID,      /* "sts-policy-invalid" */
	TLSRPT_STS_WEBPKI_INVALID,      /* "sts-webpki-invalid" */
};

struct tlsrpt_event {
	const char *policy_domain;      /* the recipient domain (A-labels) */
	enum tlsrpt_policy policy;
	/*
	 * The policy as RFC 8460 4.4 "policy-string" wants it, lines joined by
	 * '\n': the MTA-STS policy file's lines, or each TLSA record in
	 * presentation form ("3 1 1 ab12..."); NULL for no-policy-found.
	 */
	const char *policy_string;
	const char *mx_host;            /* receiving-mx-hostname, or NULL */
	const char *receiving_ip;       /* "192.0.2.1" / "2001:db8::1", or NULL */
	enum tlsrpt_result result;
	const char *detail;             /* failure-reason-code text, or NULL */
};

/* "certificate-expired" ... ; "success" for TLSRPT_SUCCESS. */
const char *tlsrpt_result_name(enum tlsrpt_result r);
/* "sts", "tlsa", "no-policy-found". */
const char *tlsrpt_policy_name(enum tlsrpt_policy p);

/* Note one outcome (any thread). */
void tlsrpt_record(const struct tlsrpt_event *ev);

#endif
