/*
 * sts.h - MTA-STS (RFC 8461): the pure parsers of the "_mta-sts" TXT record
 * and of the policy file, and the MX pattern match (base/sts_parse.c).
 *
 * Everything here is a pure function over byte ranges: no allocation, no
 * globals, no logging, any thread. Inputs come from DNS and from an HTTPS
 * server on the Internet: every length is checked, every output is bounded.
 * The fetch, the cache and the enforcement live in queue/mta/mta_sts.c.
 */
#ifndef TERN_STS_H
#define TERN_STS_H

#include <stddef.h>

#define STS_ID_MAX       32        /* RFC 8461 3.1: 1*32(ALPHA / DIGIT) */
#define STS_MX_MAX       32        /* mx patterns kept; more is invalid */
#define STS_NAME_MAX     253       /* an mx pattern, without a final dot */
#define STS_MAX_AGE_MAX  31557600u /* RFC 8461 3.2: at most one year */
#define STS_POLICY_MAX   65536     /* bytes of a policy file we accept */

enum sts_parse_status {
	STS_PARSE_OK = 0,
	STS_PARSE_NONE,         /* TXT: not an STSv1 record (ignore it) */
	STS_PARSE_BAD,          /* syntax error */
	STS_PARSE_TOO_LONG,     /* a field or the whole input is too long */
	STS_PARSE_VERSION,      /* policy: no or wrong "version: STSv1" */
	STS_PARSE_MODE,         /* policy: no or unknown mode */
	STS_PARSE_MAX_AGE,      /* policy: no max_age, or out of range */
	STS_PARSE_MX,           /* policy: bad mx, too many, or none while
	                           the mode needs some */
};

enum sts_mode {
	STS_MODE_NONE = 0,      /* "none": as if there were no policy */
	STS_MODE_TESTING,       /* "testing": report, deliver anyway */
	STS_MODE_ENFORCE,       /* "enforce": only matching MX, verified TLS */
};

/* The TXT record "v=STSv1; id=...;" (RFC 8461 3.1). */
struct sts_txt {
	char id[STS_ID_MAX + 1];
};

struct sts_policy {
	enum sts_mode mode;
	unsigned max_age;                       /* seconds */
	size_t nmx;
	char mx[STS_MX_MAX][STS_NAME_MAX + 1];  /* lower case, "*." kept */
};

/*
 * One TXT record's text (its strings joined), p[0..len). STS_PARSE_NONE
 * when it does not start with "v=STSv1" (other TXT records at the name are
 * ignored), STS_PARSE_OK with out->id set, or a reason. Unknown fields
 * ("ext=...") are allowed; id is required.
 */
enum sts_parse_status sts_txt_parse(const char *p, size_t len,
    struct sts_txt *out);

/*
 * The policy file p[0..len) (RFC 8461 3.2): "key: value" lines ending in
 * CRLF or LF; version STSv1, mode, max_age (0..STS_MAX_AGE_MAX) and, unless
 * the mode is none, at least one mx. Unknown keys are ignored; a repeated
 * version, mode or max_age is invalid. STS_PARSE_OK fills *out.
 */
enum sts_parse_status sts_policy_parse(const char *p, size_t len,
    struct sts_policy *out);

/*
 * Does MX host name host (a trailing dot and ASCII case ignored) match
 * pattern (RFC 8461 4.1): equal, or "*.rest" with host exactly one label
 * followed by ".rest". 1 yes, 0 no.
 */
int sts_mx_match(const char *pattern, const char *host);

/* 1 when host matches one of pol's mx patterns. */
int sts_policy_mx_ok(const struct sts_policy *pol, const char *host);

const char *sts_mode_name(enum sts_mode m);          /* "enforce", ... */
const char *sts_parse_strstatus(enum sts_parse_status s);

#endif
