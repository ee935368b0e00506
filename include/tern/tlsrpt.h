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

#include <stddef.h>
#include <stdint.h>

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
	const char *sending_ip;         /* sending-mta-ip: our end, or NULL */
};

/* "certificate-expired" ... ; "success" for TLSRPT_SUCCESS. */
const char *tlsrpt_result_name(enum tlsrpt_result r);
/* "sts", "tlsa", "no-policy-found". */
const char *tlsrpt_policy_name(enum tlsrpt_policy p);

/* Note one outcome (any thread). */
void tlsrpt_record(const struct tlsrpt_event *ev);

/* ---- the aggregate (queue/mta/tlsrpt.c; any thread, one mutex) ---- */

/*
 * Kept per (period, policy domain, policy type, policy string). The period
 * is [start, end): the interval that held the session, aligned to the Unix
 * epoch (so to UTC days when the interval is 86400). Bounded: at most
 * TLSRPT_POLICIES_MAX of them in memory (outcomes for more are dropped and
 * counted in one warning), at most TLSRPT_DETAILS_MAX failure details and
 * TLSRPT_MX_MAX mx-host names each (the totals stay exact).
 */
#define TLSRPT_POLICIES_MAX 20000
#define TLSRPT_DETAILS_MAX  64
#define TLSRPT_MX_MAX       16

struct tlsrpt_detail {
	enum tlsrpt_result result;
	char *mx;                       /* owned or NULL */
	char *ip;                       /* owned or NULL */
	char *sip;                      /* owned or NULL: sending-mta-ip */
	uint64_t count;
};

struct tlsrpt_agg {
	struct tlsrpt_agg *next;        /* hash chain / list of a take */
	int64_t start, end;             /* the period, Unix seconds */
	enum tlsrpt_policy policy;
	char *domain;                   /* owned, lower case */
	char *policy_string;            /* owned or NULL, lines joined by '\n' */
	uint64_t ok, failed;
	char *mx[TLSRPT_MX_MAX];        /* owned: receiving MX names seen */
	size_t nmx;
	struct tlsrpt_detail *details;  /* owned array */
	size_t ndetails;
};

/*
 * Switch recording on or off and set the period length (seconds, >= 1).
 * While off, tlsrpt_record() only logs at debug level and keeps nothing.
 */
void tlsrpt_configure(int on, unsigned interval);
/* Add one outcome to an aggregate list (pure; used by tlsrpt_record()). */
void tlsrpt_agg_add(struct tlsrpt_agg *a, const struct tlsrpt_event *ev);
/*
 * Remove and return every entry whose period ended at or before now (a
 * list by ->next, caller frees with tlsrpt_agg_free_list).
 */
struct tlsrpt_agg *tlsrpt_take_due(int64_t now);
/* Put entries back (a report that could not be queued). Takes ownership. */
void tlsrpt_put_back(struct tlsrpt_agg *list);
void tlsrpt_agg_free_list(struct tlsrpt_agg *list);
/* 1 if something was recorded since the last tlsrpt_save(). */
int tlsrpt_dirty(void);
/*
 * Persist the whole aggregate to path atomically (path.tmp, fsync, rename,
 * fsync of the directory) / read it back at start (merged into what is in
 * memory; a missing file is not an error). 0, or -1 with errno (a damaged
 * file is logged and set aside as path.bad).
 */
int tlsrpt_save(const char *path);
int tlsrpt_load(const char *path);
/* Drop everything in memory (tests, shutdown). */
void tlsrpt_reset(void);

/* ---- the reporter (queue/mta/tlsrpt_send.c): a thread of its own ---- */

struct queue;
struct conf;
struct tlsrpt_reporter;

/*
 * Start the reporter: read the saved aggregate (<queue>/tlsrpt.state),
 * switch recording on when conf says "tlsrpt on", and send the reports of
 * closed periods from a thread of its own, through q. Never NULL (fatal
 * when a thread cannot be made).
 */
struct tlsrpt_reporter *tlsrpt_reporter_start(struct queue *q,
    struct conf *conf);
/* A new configuration (reload); any thread. */
void tlsrpt_reporter_set_conf(struct tlsrpt_reporter *t, struct conf *conf);
/*
 * Stop: switch recording off, wait for a report commit in flight, save the
 * aggregate and free everything. Call after the delivery workers have
 * stopped and before queue_close(). NULL is a no-op.
 */
void tlsrpt_reporter_stop(struct tlsrpt_reporter *t);

/* ---- the pure parts of the report (queue/mta/tlsrpt_txt.c, tlsrpt_report.c) ---- */

#define TLSRPT_RUA_MAX   8
#define TLSRPT_ADDR_MAX  256

/* What a "_smtp._tls.<domain>" TXT record says (RFC 8460 3). */
struct tlsrpt_txt {
	char rua[TLSRPT_RUA_MAX][TLSRPT_ADDR_MAX];  /* mailto: addresses */
	size_t nrua;
	size_t nhttps;          /* https: URIs seen (not supported: ignored) */
	size_t nother;          /* other URIs, or mailto: addresses not usable */
};

enum tlsrpt_txt_status {
	TLSRPT_TXT_OK = 0,
	TLSRPT_TXT_NOT_TLSRPT,  /* does not start with "v=TLSRPTv1" */
	TLSRPT_TXT_SYNTAX,      /* a TLSRPT record, but malformed */
	TLSRPT_TXT_NO_RUA,      /* well-formed, but no rua= field */
};

/*
 * Parse one TXT record (its character-strings already concatenated):
 * "v=TLSRPTv1; rua=mailto:a@b.example,mailto:c@d.example". Pure: no
 * allocation, no I/O. mailto: URIs with %XX escapes are decoded; a URI with
 * a query ("?subject=") keeps its address only. Addresses that are not a
 * plain local@domain, and beyond TLSRPT_RUA_MAX, are counted in nother.
 */
enum tlsrpt_txt_status tlsrpt_txt_parse(const char *p, size_t len,
    struct tlsrpt_txt *out);

/*
 * From the n TXT records of "_smtp._tls.<domain>" (txt[i] of len[i] bytes,
 * each record's character-strings joined, as resolver_txt_lookup gives
 * them): the one TLSRPT record (RFC 8460 3: records not starting with
 * "v=TLSRPTv1" are discarded, and anything but exactly one left means no
 * reporting). Returns TLSRPT_TXT_OK with out filled, or the reason there is
 * nothing to report to (no record or several: NOT_TLSRPT; a record of 4096
 * bytes or more, which the resolver may have cut: SYNTAX). Pure.
 */
enum tlsrpt_txt_status tlsrpt_txt_from_records(char *const *txt,
    const size_t *len, size_t n, struct tlsrpt_txt *out);

/* What one report says, besides the aggregate entries of its domain. */
struct tlsrpt_report_info {
	const char *org;                /* organization-name, Submitter */
	const char *contact;            /* contact-info (the From address) */
	const char *report_id;          /* report-id */
	const char *hostname;           /* for the Message-ID */
	const char *from;               /* From: */
	const char *domain;             /* the policy domain */
	int64_t start, end;             /* the date-range */
	int64_t now;                    /* Date: */
	uint64_t rnd;                   /* boundary */
};

/*
 * The RFC 8460 4.4 JSON report for the entries of list (all of one domain
 * and period). *out is owned by the caller, NUL-terminated. 0, or -1 on
 * allocation failure. Pure.
 */
int tlsrpt_json_build(const struct tlsrpt_report_info *ri,
    const struct tlsrpt_agg *list, char **out, size_t *outlen);

/*
 * The whole report mail (RFC 8460 5.3): header, a text/plain part and the
 * gzip-compressed JSON as application/tlsrpt+gzip, base64, named
 * "<org>!<domain>!<start>!<end>.json.gz". rua/nrua go in To:. CRLF line
 * ends. *out is owned by the caller. 0, or -1 (allocation, zlib).
 */
int tlsrpt_mail_build(const struct tlsrpt_report_info *ri,
    const char (*rua)[TLSRPT_ADDR_MAX], size_t nrua, const char *json,
    size_t jsonlen, char **out, size_t *outlen);

/* gzip (RFC 1952) of in[0..len) into *out (caller frees). 0 or -1. */
int tlsrpt_gzip(const char *in, size_t len, unsigned char **out,
    size_t *outlen);

#endif
