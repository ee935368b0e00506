/* test_mx.c - pure MX routing rules (resolver/mx.c) over hand-built replies. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <ares.h>

#include "tern/resolver.h"

/* --- DNS wire format, built by hand ------------------------------------- */

#include "dns_wire.h"

static void
w_reply(struct wire *w, unsigned rcode, const char *qname, unsigned qtype,
    unsigned ancount)
{
	w->n = 0;
	w_u16(w, 0x1234);
	w_u16(w, 0x8180 | rcode);
	w_u16(w, 1);
	w_u16(w, ancount);
	w_u16(w, 0);
	w_u16(w, 0);
	w_name(w, qname);
	w_u16(w, qtype);
	w_u16(w, 1);
}

static void
w_rr_head(struct wire *w, const char *owner, unsigned type, uint32_t ttl)
{
	w_name(w, owner);
	w_u16(w, type);
	w_u16(w, 1);
	w_u32(w, ttl);
}

static void
w_rr_mx(struct wire *w, const char *owner, uint32_t ttl, unsigned pref,
    const char *exch)
{
	size_t at;

	w_rr_head(w, owner, 15, ttl);
	at = w->n;
	w_u16(w, 0);
	w_u16(w, pref);
	w_name(w, exch);
	w->b[at] = (unsigned char)((w->n - at - 2) >> 8);
	w->b[at + 1] = (unsigned char)(w->n - at - 2);
}

static void
w_rr_cname(struct wire *w, const char *owner, uint32_t ttl, const char *target)
{
	size_t at;

	w_rr_head(w, owner, 5, ttl);
	at = w->n;
	w_u16(w, 0);
	w_name(w, target);
	w->b[at] = (unsigned char)((w->n - at - 2) >> 8);
	w->b[at + 1] = (unsigned char)(w->n - at - 2);
}

/* An A (AF_INET) or AAAA (AF_INET6) record of ip. */
static void
w_rr_ip(struct wire *w, const char *owner, uint32_t ttl, int af,
    const char *ip)
{
	unsigned char a[16];
	size_t n = af == AF_INET ? 4 : 16;

	assert_int_equal(inet_pton(af, ip, a), 1);
	w_rr_head(w, owner, af == AF_INET ? 1 : 28, ttl);
	w_u16(w, (unsigned)n);
	for (size_t i = 0; i < n; i++)
		w_u8(w, a[i]);
}

static void
w_rr_a(struct wire *w, const char *owner, uint32_t ttl, const char *ip)
{
	w_rr_ip(w, owner, ttl, AF_INET, ip);
}

static void
w_rr_aaaa(struct wire *w, const char *owner, uint32_t ttl, const char *ip)
{
	w_rr_ip(w, owner, ttl, AF_INET6, ip);
}

/* --- randomness for tests ----------------------------------------------- */

static uint32_t
rnd_xorshift(void *ctx, uint32_t n)
{
	uint64_t *s = ctx;

	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return (uint32_t)(*s % n);
}

static uint32_t
rnd_zero(void *ctx, uint32_t n)
{
	return 0;
}

static uint32_t
rnd_bad(void *ctx, uint32_t n)
{
	return n + 7;   /* out of range: must be clamped, not trusted */
}

/* --- MX plans, table-driven --------------------------------------------- */

enum reply_kind {
	R_NONE,         /* no reply bytes, just the status */
	R_TWO_PREFS,    /* 20 mx2, 10 mx1 */
	R_NULL_MX,      /* 0 . */
	R_NULL_MIXED,   /* 0 . and 10 mx1 */
	R_CNAME_ONLY,   /* CNAME to elsewhere, no MX */
	R_CNAME_MX,     /* CNAME + MX at target */
	R_GARBAGE,      /* truncated MX record */
	R_MANY,         /* 20 MX with prefs 40..21 */
};

static void
build_reply(struct wire *w, enum reply_kind k, const char *d)
{
	char name[64];

	w->n = 0;
	switch (k) {
	case R_NONE:
		break;
	case R_TWO_PREFS:
		w_reply(w, 0, d, 15, 2);
		w_rr_mx(w, d, 300, 20, "mx2.example.org");
		w_rr_mx(w, d, 300, 10, "mx1.example.org");
		break;
	case R_NULL_MX:
		w_reply(w, 0, d, 15, 1);
		w_rr_mx(w, d, 300, 0, ".");
		break;
	case R_NULL_MIXED:
		w_reply(w, 0, d, 15, 2);
		w_rr_mx(w, d, 300, 0, ".");
		w_rr_mx(w, d, 300, 10, "mx1.example.org");
		break;
	case R_CNAME_ONLY:
		w_reply(w, 0, d, 15, 1);
		w_rr_cname(w, d, 300, "elsewhere.example.net");
		break;
	case R_CNAME_MX:
		w_reply(w, 0, d, 15, 2);
		w_rr_cname(w, d, 300, "elsewhere.example.net");
		w_rr_mx(w, "elsewhere.example.net", 300, 5, "mx.example.net");
		break;
	case R_GARBAGE:
		w_reply(w, 0, d, 15, 1);
		w_rr_mx(w, d, 300, 10, "mx1.example.org");
		w->n -= 6;
		break;
	case R_MANY:
		w_reply(w, 0, d, 15, 20);
		for (int i = 0; i < 20; i++) {
			snprintf(name, sizeof(name), "mx%d.example.org", i);
			w_rr_mx(w, d, 300, (unsigned)(40 - i), name);
		}
		break;
	}
}

static const struct plan_case {
	const char *what;
	int ares_status;
	enum reply_kind reply;
	enum resolver_status want;
	const char *dsn;
	const char *reason;         /* substring, or NULL */
	int implicit;
	size_t n;
	const char *first;          /* ex[0].name, or NULL */
	unsigned first_pref;
} plan_cases[] = {
	{ "two preferences", ARES_SUCCESS, R_TWO_PREFS, RESOLVER_OK, "2.0.0",
	  NULL, 0, 2, "mx1.example.org", 10 },
	{ "NODATA: implicit MX", ARES_ENODATA, R_NONE, RESOLVER_OK, "2.0.0",
	  NULL, 1, 1, "example.org", 0 },
	{ "CNAME without MX: implicit", ARES_SUCCESS, R_CNAME_ONLY,
	  RESOLVER_OK, "2.0.0", NULL, 1, 1, "example.org", 0 },
	{ "CNAME then MX", ARES_SUCCESS, R_CNAME_MX, RESOLVER_OK, "2.0.0",
	  NULL, 0, 1, "mx.example.net", 5 },
	{ "null MX", ARES_SUCCESS, R_NULL_MX, RESOLVER_PERMFAIL, "5.1.10",
	  "null MX for example.org", 0, 0, NULL, 0 },
	{ "null MX mixed with real", ARES_SUCCESS, R_NULL_MIXED, RESOLVER_OK,
	  "2.0.0", NULL, 0, 1, "mx1.example.org", 10 },
	{ "NXDOMAIN", ARES_ENOTFOUND, R_NONE, RESOLVER_PERMFAIL, "5.1.2",
	  "DNS NXDOMAIN for example.org MX", 0, 0, NULL, 0 },
	{ "bad name", ARES_EBADNAME, R_NONE, RESOLVER_PERMFAIL, "5.1.2",
	  "bad name", 0, 0, NULL, 0 },
	{ "SERVFAIL", ARES_ESERVFAIL, R_NONE, RESOLVER_TEMPFAIL, "4.4.3",
	  "DNS SERVFAIL for example.org MX", 0, 0, NULL, 0 },
	{ "REFUSED", ARES_EREFUSED, R_NONE, RESOLVER_TEMPFAIL, "4.4.3",
	  "REFUSED", 0, 0, NULL, 0 },
	{ "timeout", ARES_ETIMEOUT, R_NONE, RESOLVER_TEMPFAIL, "4.4.3",
	  "timeout", 0, 0, NULL, 0 },
	{ "connection refused", ARES_ECONNREFUSED, R_NONE, RESOLVER_TEMPFAIL,
	  "4.4.3", NULL, 0, 0, NULL, 0 },
	{ "out of memory", ARES_ENOMEM, R_NONE, RESOLVER_TEMPFAIL, "4.3.0",
	  NULL, 0, 0, NULL, 0 },
	{ "malformed reply", ARES_SUCCESS, R_GARBAGE, RESOLVER_TEMPFAIL,
	  "4.4.3", "malformed reply", 0, 0, NULL, 0 },
	{ "success without bytes", ARES_SUCCESS, R_NONE, RESOLVER_TEMPFAIL,
	  "4.4.3", NULL, 0, 0, NULL, 0 },
	{ "20 MX: lowest 16 kept", ARES_SUCCESS, R_MANY, RESOLVER_OK, "2.0.0",
	  NULL, 0, RESOLVER_MX_MAX, "mx19.example.org", 21 },
};

static void
test_plan_table(void **state)
{
	for (size_t i = 0; i < sizeof(plan_cases) / sizeof(plan_cases[0]); i++) {
		const struct plan_case *c = &plan_cases[i];
		struct wire w;
		struct mx_plan p;
		uint64_t seed = 42;
		enum resolver_status s;

		build_reply(&w, c->reply, "example.org");
		s = mx_plan_from_reply(c->ares_status, w.n ? w.b : NULL, w.n,
		    "example.org", rnd_xorshift, &seed, &p);
		printf("# %s: %s %s \"%s\" n=%zu\n", c->what,
		    resolver_strstatus(s), p.dsn, p.reason, p.n);
		assert_int_equal(s, c->want);
		assert_int_equal(p.status, c->want);
		assert_string_equal(p.dsn, c->dsn);
		if (c->reason != NULL)
			assert_non_null(strstr(p.reason, c->reason));
		if (c->want == RESOLVER_OK)
			assert_string_equal(p.reason, "");
		assert_int_equal(p.implicit_mx, c->implicit);
		assert_int_equal(p.n, c->n);
		if (c->first != NULL) {
			assert_string_equal(p.ex[0].name, c->first);
			assert_int_equal(p.ex[0].pref, c->first_pref);
		}
		for (size_t j = 1; j < p.n; j++)
			assert_true(p.ex[j - 1].pref <= p.ex[j].pref);
	}
}

static void
test_plan_many_keeps_lowest(void **state)
{
	struct wire w;
	struct mx_plan p;

	build_reply(&w, R_MANY, "example.org");
	mx_plan_from_reply(ARES_SUCCESS, w.b, w.n, "example.org", NULL, NULL,
	    &p);
	assert_int_equal(p.n, RESOLVER_MX_MAX);
	/* prefs 21..36 kept, 37..40 dropped */
	for (size_t j = 0; j < p.n; j++)
		assert_int_equal(p.ex[j].pref, 21 + j);
}

static void
test_plan_from_list_direct(void **state)
{
	struct ares_mx_reply c = { NULL, (char *)"c.example", 30 };
	struct ares_mx_reply b = { &c, (char *)"", 0 };        /* null MX */
	struct ares_mx_reply a = { &b, (char *)"a.example", 10 };
	struct mx_plan p;

	assert_int_equal(mx_plan_from_list(&a, "d.example", rnd_zero, NULL, &p),
	    RESOLVER_OK);
	assert_int_equal(p.n, 2);
	assert_string_equal(p.ex[0].name, "a.example");
	assert_string_equal(p.ex[1].name, "c.example");
	assert_int_equal(mx_plan_from_list(&b, "d.example", NULL, NULL, &p),
	    RESOLVER_OK);
	assert_int_equal(p.n, 1);
	b.next = NULL;
	assert_int_equal(mx_plan_from_list(&b, "d.example", NULL, NULL, &p),
	    RESOLVER_PERMFAIL);
	assert_string_equal(p.dsn, "5.1.10");
	assert_int_equal(mx_plan_from_list(NULL, "d.example", NULL, NULL, &p),
	    RESOLVER_OK);
	assert_int_equal(p.implicit_mx, 1);
	assert_string_equal(p.ex[0].name, "d.example");
}

/*
 * Five exchangers: 5 first, then three at 10 in some order, then 20 last.
 * Every one of the 3! orders of the middle group must show up, and nothing
 * may ever leave its preference group.
 */
static void
test_shuffle_within_groups(void **state)
{
	static const char *names[] = { "p10a", "p20", "p10b", "p5", "p10c" };
	static const uint16_t prefs[] = { 10, 20, 10, 5, 10 };
	int seen[6] = { 0 };
	uint64_t seed = 0x9e3779b97f4a7c15ULL;

	for (int round = 0; round < 600; round++) {
		struct mx_plan p;
		int code = 0;

		memset(&p, 0, sizeof(p));
		p.n = 5;
		for (size_t i = 0; i < 5; i++) {
			p.ex[i].pref = prefs[i];
			strcpy(p.ex[i].name, names[i]);
		}
		mx_plan_order(&p, rnd_xorshift, &seed);
		assert_string_equal(p.ex[0].name, "p5");
		assert_string_equal(p.ex[4].name, "p20");
		for (size_t i = 1; i < 4; i++) {
			assert_int_equal(p.ex[i].pref, 10);
			assert_memory_equal(p.ex[i].name, "p10", 3);
		}
		/* Encode the order of a, b, c as a permutation index. */
		assert_true(strcmp(p.ex[1].name, p.ex[2].name) != 0);
		assert_true(strcmp(p.ex[2].name, p.ex[3].name) != 0);
		assert_true(strcmp(p.ex[1].name, p.ex[3].name) != 0);
		code = (p.ex[1].name[3] - 'a') * 2 +
		    (p.ex[2].name[3] > p.ex[3].name[3]);
		assert_true(code >= 0 && code < 6);
		seen[code]++;
	}
	for (int i = 0; i < 6; i++) {
		printf("# permutation %d seen %d times\n", i, seen[i]);
		assert_true(seen[i] > 50);      /* ~100 expected each */
	}
}

static void
test_shuffle_bad_rng_is_clamped(void **state)
{
	struct mx_plan p;

	memset(&p, 0, sizeof(p));
	p.n = 3;
	for (size_t i = 0; i < 3; i++) {
		p.ex[i].pref = 10;
		p.ex[i].name[0] = (char)('a' + i);
	}
	mx_plan_order(&p, rnd_bad, NULL);
	assert_int_equal(p.n, 3);
	/* still a permutation of a, b, c */
	assert_int_equal(p.ex[0].name[0] + p.ex[1].name[0] + p.ex[2].name[0],
	    'a' + 'b' + 'c');
	assert_true(p.ex[0].name[0] != p.ex[1].name[0]);
}

/* --- addresses ---------------------------------------------------------- */

static void
test_addrs(void **state)
{
	struct sockaddr_storage ss[RESOLVER_ADDRS_MAX];
	struct wire w;
	size_t n = 0;
	char buf[INET6_ADDRSTRLEN];

	w_reply(&w, 0, "mx.example.org", 1, 2);
	w_rr_a(&w, "mx.example.org", 300, "192.0.2.1");
	w_rr_a(&w, "mx.example.org", 300, "192.0.2.2");
	assert_int_equal(mx_addrs_from_reply(ARES_SUCCESS, w.b, w.n, AF_INET,
	    ss, &n, RESOLVER_ADDRS_MAX), ARES_SUCCESS);
	assert_int_equal(n, 2);
	assert_int_equal(ss[0].ss_family, AF_INET);
	inet_ntop(AF_INET, &((struct sockaddr_in *)&ss[1])->sin_addr, buf,
	    sizeof(buf));
	assert_string_equal(buf, "192.0.2.2");
	assert_int_equal(((struct sockaddr_in *)&ss[0])->sin_port, 0);

	w_reply(&w, 0, "mx.example.org", 28, 1);
	w_rr_aaaa(&w, "mx.example.org", 300, "2001:db8::25");
	assert_int_equal(mx_addrs_from_reply(ARES_SUCCESS, w.b, w.n, AF_INET6,
	    ss, &n, RESOLVER_ADDRS_MAX), ARES_SUCCESS);
	assert_int_equal(n, 3);
	assert_int_equal(ss[2].ss_family, AF_INET6);
	inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss[2])->sin6_addr, buf,
	    sizeof(buf));
	assert_string_equal(buf, "2001:db8::25");

	/* bounded by max */
	n = 0;
	w_reply(&w, 0, "mx.example.org", 1, 2);
	w_rr_a(&w, "mx.example.org", 300, "192.0.2.1");
	w_rr_a(&w, "mx.example.org", 300, "192.0.2.2");
	assert_int_equal(mx_addrs_from_reply(ARES_SUCCESS, w.b, w.n, AF_INET,
	    ss, &n, 1), ARES_SUCCESS);
	assert_int_equal(n, 1);

	/* CNAME only: no address */
	n = 0;
	w_reply(&w, 0, "mx.example.org", 1, 1);
	w_rr_cname(&w, "mx.example.org", 300, "x.example.net");
	assert_int_equal(mx_addrs_from_reply(ARES_SUCCESS, w.b, w.n, AF_INET,
	    ss, &n, RESOLVER_ADDRS_MAX), ARES_ENODATA);
	assert_int_equal(n, 0);

	/* CNAME chain followed */
	w_reply(&w, 0, "mx.example.org", 1, 2);
	w_rr_cname(&w, "mx.example.org", 300, "x.example.net");
	w_rr_a(&w, "x.example.net", 300, "192.0.2.9");
	assert_int_equal(mx_addrs_from_reply(ARES_SUCCESS, w.b, w.n, AF_INET,
	    ss, &n, RESOLVER_ADDRS_MAX), ARES_SUCCESS);
	assert_int_equal(n, 1);

	/* failures pass through; garbage is a bad reply */
	n = 0;
	assert_int_equal(mx_addrs_from_reply(ARES_ESERVFAIL, NULL, 0, AF_INET,
	    ss, &n, RESOLVER_ADDRS_MAX), ARES_ESERVFAIL);
	assert_int_equal(mx_addrs_from_reply(ARES_SUCCESS, (const unsigned char
	    *)"\x12\x34", 2, AF_INET, ss, &n, RESOLVER_ADDRS_MAX) ==
	    ARES_SUCCESS, 0);
	assert_int_equal(n, 0);
}

/* --- TTL ---------------------------------------------------------------- */

static void
test_min_ttl(void **state)
{
	struct wire w;
	uint32_t ttl;

	w_reply(&w, 0, "example.org", 15, 2);
	w_rr_mx(&w, "example.org", 300, 10, "a.example.org");
	w_rr_mx(&w, "example.org", 60, 20, "b.example.org");
	assert_int_equal(mx_reply_min_ttl(w.b, w.n, &ttl), 0);
	assert_int_equal(ttl, 60);

	/* compressed owner name (pointer to the question) */
	w_reply(&w, 0, "example.org", 1, 1);
	w_u16(&w, 0xc00c);
	w_u16(&w, 1);
	w_u16(&w, 1);
	w_u32(&w, 77);
	w_u16(&w, 4);
	w_u32(&w, 0x7f000001);
	assert_int_equal(mx_reply_min_ttl(w.b, w.n, &ttl), 0);
	assert_int_equal(ttl, 77);

	/* RFC 2181: a TTL with the top bit set counts as 0 */
	w_reply(&w, 0, "example.org", 1, 1);
	w_rr_a(&w, "example.org", 0x80000000u, "192.0.2.1");
	assert_int_equal(mx_reply_min_ttl(w.b, w.n, &ttl), 0);
	assert_int_equal(ttl, 0);

	w_reply(&w, 0, "example.org", 15, 0);
	assert_int_equal(mx_reply_min_ttl(w.b, w.n, &ttl), 0);
	assert_int_equal(ttl, 0);

	/* truncated anywhere: malformed */
	w_reply(&w, 0, "example.org", 15, 1);
	w_rr_mx(&w, "example.org", 300, 10, "a.example.org");
	for (size_t cut = 0; cut < w.n; cut++)
		assert_int_equal(mx_reply_min_ttl(w.b, cut, &ttl), -1);
	assert_int_equal(mx_reply_min_ttl(NULL, 0, &ttl), -1);
}

/* --- verdicts ----------------------------------------------------------- */

static const struct host_case {
	int st4, st6;
	size_t naddrs;
	enum resolver_status want;
	const char *dsn;
} host_cases[] = {
	{ ARES_SUCCESS, ARES_ENODATA, 1, RESOLVER_OK, "2.0.0" },
	{ ARES_ESERVFAIL, ARES_SUCCESS, 1, RESOLVER_OK, "2.0.0" },
	{ ARES_ENOTFOUND, ARES_ENOTFOUND, 0, RESOLVER_PERMFAIL, "5.4.4" },
	{ ARES_ENODATA, ARES_ENODATA, 0, RESOLVER_PERMFAIL, "5.4.4" },
	{ ARES_ENODATA, -1, 0, RESOLVER_PERMFAIL, "5.4.4" },
	{ ARES_ESERVFAIL, ARES_ENODATA, 0, RESOLVER_TEMPFAIL, "4.4.3" },
	{ ARES_ENODATA, ARES_ETIMEOUT, 0, RESOLVER_TEMPFAIL, "4.4.3" },
	{ ARES_EBADRESP, -1, 0, RESOLVER_TEMPFAIL, "4.4.3" },
	{ ARES_ENOMEM, ARES_ENODATA, 0, RESOLVER_TEMPFAIL, "4.3.0" },
};

static void
test_host_classify(void **state)
{
	for (size_t i = 0; i < sizeof(host_cases) / sizeof(host_cases[0]); i++) {
		const struct host_case *c = &host_cases[i];
		struct mx_host h;

		memset(&h, 0, sizeof(h));
		strcpy(h.name, "mx.example.org");
		h.naddrs = c->naddrs;
		mx_host_classify(&h, c->st4, c->st6);
		assert_int_equal(h.status, c->want);
		assert_string_equal(h.dsn, c->dsn);
		if (c->want != RESOLVER_OK)
			assert_non_null(strstr(h.reason,
			    "no address for mx.example.org"));
	}
}

static const struct result_case {
	int implicit;
	enum resolver_status hosts[3];
	size_t nhosts;
	enum resolver_status want;
	const char *dsn;
} result_cases[] = {
	{ 0, { RESOLVER_TEMPFAIL, RESOLVER_OK }, 2, RESOLVER_OK, "2.0.0" },
	{ 0, { RESOLVER_PERMFAIL, RESOLVER_PERMFAIL }, 2, RESOLVER_PERMFAIL,
	  "5.4.4" },
	{ 1, { RESOLVER_PERMFAIL }, 1, RESOLVER_PERMFAIL, "5.1.2" },
	{ 0, { RESOLVER_PERMFAIL, RESOLVER_TEMPFAIL, RESOLVER_PERMFAIL }, 3,
	  RESOLVER_TEMPFAIL, "4.4.3" },
	{ 1, { RESOLVER_TEMPFAIL }, 1, RESOLVER_TEMPFAIL, "4.4.3" },
};

static void
test_result_classify(void **state)
{
	for (size_t i = 0; i < sizeof(result_cases) / sizeof(result_cases[0]);
	    i++) {
		const struct result_case *c = &result_cases[i];
		struct mx_host hosts[3];
		struct mx_result res;

		memset(&res, 0, sizeof(res));
		memset(hosts, 0, sizeof(hosts));
		strcpy(res.query, "example.org");
		res.implicit_mx = c->implicit;
		res.hosts = hosts;
		res.nhosts = c->nhosts;
		for (size_t j = 0; j < c->nhosts; j++)
			hosts[j].status = c->hosts[j];
		mx_result_classify(&res);
		assert_int_equal(res.status, c->want);
		assert_string_equal(res.dsn, c->dsn);
		if (c->want != RESOLVER_OK)
			assert_non_null(strstr(res.reason, "example.org"));
	}
}

/* RFC 5321 5.1: ourselves and every MX not preferred to us are dropped. */
static void
test_drop_self(void **state)
{
	static const struct {
		const char *self;
		unsigned n;
		const char *names[4];
		unsigned prefs[4];
		size_t want_left;
		enum resolver_status want;
		const char *dsn;
	} cases[] = {
		{ "mx.test", 3, { "a.example", "mx.test", "b.example" },
		  { 10, 20, 20 }, 1, RESOLVER_OK, "2.0.0" },
		{ "MX.Test.", 3, { "mx.test", "a.example", "b.example" },
		  { 10, 20, 30 }, 0, RESOLVER_PERMFAIL, "5.4.6" },
		{ "mx.test", 2, { "a.example", "b.example" },
		  { 10, 20 }, 2, RESOLVER_OK, "2.0.0" },
		{ "mx.test", 3, { "a.example", "b.example", "mx.test." },
		  { 10, 10, 10 }, 0, RESOLVER_PERMFAIL, "5.4.6" },
		{ "mx.test", 2, { "a.example", "mx.testx" },
		  { 10, 20 }, 2, RESOLVER_OK, "2.0.0" },
		{ NULL, 1, { "mx.test" }, { 10 }, 1, RESOLVER_OK, "2.0.0" },
	};
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct mx_result res;
		struct mx_host hosts[4];

		memset(&res, 0, sizeof(res));
		memset(hosts, 0, sizeof(hosts));
		strcpy(res.query, "example.org");
		res.status = RESOLVER_OK;
		strcpy(res.dsn, "2.0.0");
		res.hosts = hosts;
		res.nhosts = cases[i].n;
		for (unsigned j = 0; j < cases[i].n; j++) {
			strcpy(hosts[j].name, cases[i].names[j]);
			hosts[j].pref = (uint16_t)cases[i].prefs[j];
			hosts[j].addrs = calloc(1, sizeof(*hosts[j].addrs));
			hosts[j].naddrs = 1;
			hosts[j].status = RESOLVER_OK;
		}
		size_t dropped = mx_result_drop_self(&res, cases[i].self);
		if (res.nhosts != cases[i].want_left)
			fail_msg("case %zu: %zu hosts left", i, res.nhosts);
		assert_int_equal(dropped, cases[i].n - cases[i].want_left);
		assert_int_equal(res.status, cases[i].want);
		assert_string_equal(res.dsn, cases[i].dsn);
		if (cases[i].want != RESOLVER_OK)
			assert_non_null(strstr(res.reason, "loops back"));
		for (size_t j = 0; j < res.nhosts; j++)
			free(hosts[j].addrs);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_drop_self),
		cmocka_unit_test(test_plan_table),
		cmocka_unit_test(test_plan_many_keeps_lowest),
		cmocka_unit_test(test_plan_from_list_direct),
		cmocka_unit_test(test_shuffle_within_groups),
		cmocka_unit_test(test_shuffle_bad_rng_is_clamped),
		cmocka_unit_test(test_addrs),
		cmocka_unit_test(test_min_ttl),
		cmocka_unit_test(test_host_classify),
		cmocka_unit_test(test_result_classify),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
