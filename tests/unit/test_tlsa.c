/* test_tlsa.c - the pure TLSA answer reader (resolver/tlsa.c) over hand-built replies. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <ares.h>

#include "tern/tlsa.h"

#include "dns_wire.h"

#define QN "_25._tcp.mx.example.test"

static void
w_reply(struct wire *w, unsigned flags, unsigned rcode, const char *qname,
    unsigned ancount)
{
	w->n = 0;
	w_u16(w, 0x1234);
	w_u16(w, 0x8180 | flags | rcode);
	w_u16(w, 1);
	w_u16(w, ancount);
	w_u16(w, 0);
	w_u16(w, 0);
	w_name(w, qname);
	w_u16(w, 52);
	w_u16(w, 1);
}

#define AD 0x20u

static void
w_rr_tlsa(struct wire *w, const char *owner, unsigned u, unsigned s,
    unsigned m, const unsigned char *d, size_t dlen)
{
	w_name(w, owner);
	w_u16(w, 52);
	w_u16(w, 1);
	w_u32(w, 300);
	w_u16(w, (unsigned)(3 + dlen));
	w_u8(w, u);
	w_u8(w, s);
	w_u8(w, m);
	for (size_t i = 0; i < dlen; i++)
		w_u8(w, d[i]);
}

static void
w_rr_cname(struct wire *w, const char *owner, const char *target)
{
	size_t at;

	w_name(w, owner);
	w_u16(w, 5);
	w_u16(w, 1);
	w_u32(w, 300);
	at = w->n;
	w_u16(w, 0);
	w_name(w, target);
	w->b[at] = (unsigned char)((w->n - at - 2) >> 8);
	w->b[at + 1] = (unsigned char)(w->n - at - 2);
}

static unsigned char sha256[32], sha512[64];

static void
test_secure_records(void **state)
{
	struct wire w;
	struct tlsa_result *r = calloc(1, sizeof(*r));
	char ps[512];

	(void)state;
	memset(sha256, 0xab, sizeof(sha256));
	w_reply(&w, AD, 0, QN, 3);
	w_rr_tlsa(&w, QN, 3, 1, 1, sha256, 32);
	w_rr_tlsa(&w, "_25._TCP.MX.example.test.", 2, 0, 1, sha256, 32);
	w_rr_tlsa(&w, QN, 1, 1, 1, sha256, 32);      /* PKIX-EE: unusable */
	assert_int_equal(tlsa_from_reply(ARES_SUCCESS, w.b, w.n, 1, QN, r),
	    TLSA_SECURE);
	assert_int_equal(r->n, 3);
	assert_int_equal(r->rr[0].usage, 3);
	assert_int_equal(r->rr[0].len, 32);
	assert_memory_equal(r->data + r->rr[0].off, sha256, 32);
	assert_true(tlsa_rr_usable(&r->rr[0]));
	assert_true(tlsa_rr_usable(&r->rr[1]));
	assert_false(tlsa_rr_usable(&r->rr[2]));
	assert_int_equal(tlsa_usable_count(r), 2);
	tlsa_policy_string(r, ps, sizeof(ps));
	assert_int_equal(strncmp(ps, "3 1 1 abababab", 14), 0);
	assert_non_null(strstr(ps, "\n2 0 1 abab"));
	assert_non_null(strstr(ps, "\n1 1 1 abab"));
	/* a cut policy string stays terminated */
	tlsa_policy_string(r, ps, 20);
	assert_true(strlen(ps) < 20);
	/* the same without AD: insecure, records kept for the log */
	assert_int_equal(tlsa_from_reply(ARES_SUCCESS, w.b, w.n, 0, QN, r),
	    TLSA_INSECURE);
	free(r);
}

static void
test_usable_rules(void **state)
{
	struct tlsa_rr r = { 3, 1, 1, 0, 32 };

	(void)state;
	assert_true(tlsa_rr_usable(&r));
	r.len = 31;
	assert_false(tlsa_rr_usable(&r));       /* SHA2-256 of 31 bytes */
	r.mtype = 2;
	r.len = 64;
	assert_true(tlsa_rr_usable(&r));
	r.mtype = 0;
	r.len = 300;
	assert_true(tlsa_rr_usable(&r));        /* full SPKI */
	r.mtype = 3;
	assert_false(tlsa_rr_usable(&r));
	r.mtype = 1;
	r.len = 32;
	r.selector = 2;
	assert_false(tlsa_rr_usable(&r));
	r.selector = 0;
	r.usage = 0;
	assert_false(tlsa_rr_usable(&r));       /* PKIX-TA */
	r.usage = 4;
	assert_false(tlsa_rr_usable(&r));
	r.usage = 2;
	assert_true(tlsa_rr_usable(&r));
}

static void
test_negative(void **state)
{
	struct wire w;
	struct tlsa_result *r = calloc(1, sizeof(*r));

	(void)state;
	/* secure NXDOMAIN / NODATA: no TLSA */
	assert_int_equal(tlsa_from_reply(ARES_ENOTFOUND, NULL, 0, 1, QN, r),
	    TLSA_NONE);
	assert_int_equal(tlsa_from_reply(ARES_ENODATA, NULL, 0, 1, QN, r),
	    TLSA_NONE);
	assert_int_equal(tlsa_from_reply(ARES_ENODATA, NULL, 0, 0, QN, r),
	    TLSA_INSECURE);
	/* failures: never a "no TLSA" */
	assert_int_equal(tlsa_from_reply(ARES_ESERVFAIL, NULL, 0, 1, QN, r),
	    TLSA_FAIL);
	assert_non_null(strstr(r->reason, "TLSA lookup failed"));
	assert_int_equal(tlsa_from_reply(ARES_ETIMEOUT, NULL, 0, 1, QN, r),
	    TLSA_FAIL);
	/* an answer with only other names' records is NODATA for ours */
	w_reply(&w, AD, 0, QN, 1);
	w_rr_tlsa(&w, "_25._tcp.other.test", 3, 1, 1, sha256, 32);
	assert_int_equal(tlsa_from_reply(ARES_SUCCESS, w.b, w.n, 1, QN, r),
	    TLSA_NONE);
	free(r);
}

static void
test_cname_chain(void **state)
{
	struct wire w;
	struct tlsa_result *r = calloc(1, sizeof(*r));

	(void)state;
	w_reply(&w, AD, 0, QN, 3);
	w_rr_cname(&w, QN, "a.tlsa.test");
	w_rr_cname(&w, "a.tlsa.test", "b.tlsa.test");
	w_rr_tlsa(&w, "b.tlsa.test", 3, 1, 1, sha256, 32);
	assert_int_equal(tlsa_from_reply(ARES_SUCCESS, w.b, w.n, 1, QN, r),
	    TLSA_SECURE);
	assert_int_equal(r->n, 1);
	/* records at the CNAME's owner (not the chain's end) are not taken */
	w_reply(&w, AD, 0, QN, 2);
	w_rr_cname(&w, QN, "a.tlsa.test");
	w_rr_tlsa(&w, QN, 3, 1, 1, sha256, 32);
	assert_int_equal(tlsa_from_reply(ARES_SUCCESS, w.b, w.n, 1, QN, r),
	    TLSA_NONE);
	/* a loop is bounded and fails */
	w_reply(&w, AD, 0, QN, 2);
	w_rr_cname(&w, QN, "a.tlsa.test");
	w_rr_cname(&w, "a.tlsa.test", QN);
	assert_int_equal(tlsa_from_reply(ARES_SUCCESS, w.b, w.n, 1, QN, r),
	    TLSA_FAIL);
	free(r);
}

static void
test_malformed(void **state)
{
	struct wire w;
	struct tlsa_result *r = calloc(1, sizeof(*r));

	(void)state;
	w_reply(&w, AD, 0, QN, 1);
	w_rr_tlsa(&w, QN, 3, 1, 1, sha512, 64);
	for (size_t cut = 0; cut < w.n; cut++)
		assert_int_equal(tlsa_from_reply(ARES_SUCCESS, w.b, cut, 1, QN,
		    r), TLSA_FAIL);
	assert_int_equal(tlsa_from_reply(ARES_SUCCESS, w.b, w.n, 1, QN, r),
	    TLSA_SECURE);
	/* a compression pointer to itself */
	w_reply(&w, AD, 0, QN, 1);
	w_u8(&w, 0xc0);
	w_u8(&w, (unsigned)w.n - 1);
	assert_int_equal(tlsa_from_reply(ARES_SUCCESS, w.b, w.n, 1, QN, r),
	    TLSA_FAIL);
	/* a record too short to hold data is dropped, not usable */
	w_reply(&w, AD, 0, QN, 1);
	w_rr_tlsa(&w, QN, 3, 1, 1, NULL, 0);
	assert_int_equal(tlsa_from_reply(ARES_SUCCESS, w.b, w.n, 1, QN, r),
	    TLSA_SECURE);
	assert_int_equal(r->n, 0);
	assert_int_equal(r->dropped, 1);
	assert_int_equal(tlsa_usable_count(r), 0);
	free(r);
}

static void
test_header_helpers(void **state)
{
	struct wire w;
	char q[300];

	(void)state;
	w_reply(&w, AD, 0, QN, 0);
	assert_int_equal(dns_reply_ad(w.b, w.n), 1);
	assert_int_equal(dns_reply_status(ARES_SUCCESS, w.b, w.n), ARES_ENODATA);
	w_reply(&w, 0, 3, QN, 0);
	assert_int_equal(dns_reply_ad(w.b, w.n), 0);
	assert_int_equal(dns_reply_status(ARES_SUCCESS, w.b, w.n),
	    ARES_ENOTFOUND);
	w_reply(&w, 0, 2, QN, 0);
	assert_int_equal(dns_reply_status(ARES_SUCCESS, w.b, w.n),
	    ARES_ESERVFAIL);
	w_reply(&w, 0, 0, QN, 1);
	assert_int_equal(dns_reply_status(ARES_SUCCESS, w.b, w.n), ARES_SUCCESS);
	assert_int_equal(dns_reply_status(ARES_ETIMEOUT, NULL, 0), ARES_ETIMEOUT);
	assert_int_equal(dns_reply_status(ARES_SUCCESS, w.b, 5), ARES_EBADRESP);
	assert_int_equal(dns_reply_ad(w.b, 5), -1);
	assert_int_equal(tlsa_qname("mx.example.test.", 25, q, sizeof(q)), 0);
	assert_string_equal(q, QN);
	memset(q, 'a', 250);
	q[250] = '\0';
	{
		char out[300];
		assert_int_equal(tlsa_qname(q, 25, out, sizeof(out)), -1);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_secure_records),
		cmocka_unit_test(test_usable_rules),
		cmocka_unit_test(test_negative),
		cmocka_unit_test(test_cname_chain),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_header_helpers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
