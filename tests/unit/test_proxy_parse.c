/*
 * test_proxy_parse.c - the PROXY protocol header parser: v1 and v2 headers
 * that must parse (with the addresses they carry), every malformed form,
 * and every truncation of a good header, which must ask for more and never
 * fail or succeed early.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include "tern/proxy.h"

#define SIG "\r\n\r\n\0\r\nQUIT\n"
#define SIGLEN 12

/* ---- helpers ---- */

static void
check_addr(const struct sockaddr_storage *ss, const char *want, unsigned port)
{
	char buf[INET6_ADDRSTRLEN];
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)ss;
		inet_ntop(AF_INET, &s->sin_addr, buf, sizeof(buf));
		assert_int_equal(ntohs(s->sin_port), port);
	} else {
		assert_int_equal(ss->ss_family, AF_INET6);
		const struct sockaddr_in6 *s = (const void *)ss;
		inet_ntop(AF_INET6, &s->sin6_addr, buf, sizeof(buf));
		assert_int_equal(ntohs(s->sin6_port), port);
	}
	assert_string_equal(buf, want);
}

/* Every proper prefix of a good header asks for more. */
static void
check_prefixes(const uint8_t *p, size_t hlen)
{
	struct proxy_hdr h;
	for (size_t k = 0; k < hlen; k++)
		if (proxy_parse(p, k, &h) != PROXY_NEED_MORE)
			fail_msg("prefix of %zu bytes (of %zu): %s", k, hlen,
			    proxy_status_name(proxy_parse(p, k, &h)));
}

/* Build a v2 header: sig, ver/cmd, fam/proto, length, then body. */
static size_t
v2(uint8_t *out, uint8_t vercmd, uint8_t famproto, const void *body,
    size_t blen)
{
	memcpy(out, SIG, SIGLEN);
	out[12] = vercmd;
	out[13] = famproto;
	out[14] = (uint8_t)(blen >> 8);
	out[15] = (uint8_t)blen;
	memcpy(out + 16, body, blen);
	return 16 + blen;
}

/* ---- version 1 ---- */

static void
test_v1_ok(void **state)
{
	static const struct {
		const char *in;
		const char *src, *dst;
		unsigned sport, dport;
	} cases[] = {
		{ "PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n",
		  "192.0.2.7", "198.51.100.1", 56324, 25 },
		{ "PROXY TCP4 127.0.0.5 127.0.0.1 0 65535\r\n",
		  "127.0.0.5", "127.0.0.1", 0, 65535 },
		{ "PROXY TCP6 2001:db8::7 ::1 1 587\r\n",
		  "2001:db8::7", "::1", 1, 587 },
		{ "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
		  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n",
		  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		  "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535, 65535 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct proxy_hdr h;
		char buf[256];
		size_t len = strlen(cases[i].in);
		/* payload after the header stays out of it */
		snprintf(buf, sizeof(buf), "%sEHLO x\r\n", cases[i].in);
		assert_int_equal(proxy_parse((const uint8_t *)buf, strlen(buf),
		    &h), PROXY_OK);
		assert_int_equal(h.version, 1);
		assert_int_equal(h.local, 0);
		assert_int_equal(h.len, len);
		check_addr(&h.src, cases[i].src, cases[i].sport);
		check_addr(&h.dst, cases[i].dst, cases[i].dport);
		assert_true(len <= PROXY_V1_MAX);
		check_prefixes((const uint8_t *)buf, len);
	}
}

static void
test_v1_unknown(void **state)
{
	static const char *const cases[] = {
		"PROXY UNKNOWN\r\n",
		"PROXY UNKNOWN ffff:: ffff:: 1 2\r\n",
		"PROXY UNKNOWN anything at all\r\n",
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct proxy_hdr h;
		size_t len = strlen(cases[i]);
		assert_int_equal(proxy_parse((const uint8_t *)cases[i], len, &h),
		    PROXY_OK);
		assert_int_equal(h.local, 1);
		assert_int_equal(h.len, len);
		check_prefixes((const uint8_t *)cases[i], len);
	}
}

static void
test_v1_bad(void **state)
{
	static const struct {
		const char *in;
		enum proxy_status want;
	} cases[] = {
		{ "EHLO client.example\r\n", PROXY_ERR_SIGNATURE },
		{ "proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", PROXY_ERR_SIGNATURE },
		{ "PROXY\r\n", PROXY_ERR_SIGNATURE },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", PROXY_ERR_V1_SYNTAX },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", PROXY_ERR_V1_SYNTAX },
		{ "PROXY \r\n", PROXY_ERR_V1_SYNTAX },
		{ "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", PROXY_ERR_V1_SYNTAX },
		{ "PROXY UNKNOWNX\r\n", PROXY_ERR_V1_SYNTAX },
		{ "PROXY TCP4\r\n", PROXY_ERR_V1_SYNTAX },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", PROXY_ERR_V1_SYNTAX },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", PROXY_ERR_V1_SYNTAX },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", PROXY_ERR_V1_SYNTAX },
		{ "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", PROXY_ERR_V1_SYNTAX },
		{ "PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", PROXY_ERR_V1_SYNTAX },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", PROXY_ERR_V1_PORT },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", PROXY_ERR_V1_PORT },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", PROXY_ERR_V1_PORT },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", PROXY_ERR_V1_PORT },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 1x\r\n", PROXY_ERR_V1_PORT },
		{ "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", PROXY_ERR_V1_ADDRESS },
		{ "PROXY TCP4 ::1 5.6.7.8 1 2\r\n", PROXY_ERR_V1_ADDRESS },
		{ "PROXY TCP6 1.2.3.4 ::1 1 2\r\n", PROXY_ERR_V1_ADDRESS },
		{ "PROXY TCP6 ::1 host.example 1 2\r\n", PROXY_ERR_V1_ADDRESS },
		{ "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", PROXY_ERR_V1_ADDRESS },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct proxy_hdr h;
		enum proxy_status st = proxy_parse((const uint8_t *)cases[i].in,
		    strlen(cases[i].in), &h);
		if (st != cases[i].want)
			fail_msg("case %zu \"%s\": %s, want %s", i, cases[i].in,
			    proxy_status_name(st), proxy_status_name(cases[i].want));
	}
}

static void
test_v1_nul_and_length(void **state)
{
	struct proxy_hdr h;
	static const char nul[] = "PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n";
	assert_int_equal(proxy_parse((const uint8_t *)nul, sizeof(nul) - 1, &h),
	    PROXY_ERR_V1_SYNTAX);

	/* 106 bytes without LF: still a prefix; 107: too long */
	uint8_t buf[200];
	memcpy(buf, "PROXY UNKNOWN ", 14);
	memset(buf + 14, 'x', sizeof(buf) - 14);
	assert_int_equal(proxy_parse(buf, PROXY_V1_MAX - 1, &h), PROXY_NEED_MORE);
	assert_int_equal(proxy_parse(buf, PROXY_V1_MAX, &h), PROXY_ERR_V1_TOO_LONG);
	assert_int_equal(proxy_parse(buf, sizeof(buf), &h), PROXY_ERR_V1_TOO_LONG);
	/* a CRLF at bytes 106-107 is the longest line allowed */
	buf[PROXY_V1_MAX - 2] = '\r';
	buf[PROXY_V1_MAX - 1] = '\n';
	assert_int_equal(proxy_parse(buf, sizeof(buf), &h), PROXY_OK);
	assert_int_equal(h.len, PROXY_V1_MAX);
	/* one byte later is one too many */
	buf[PROXY_V1_MAX - 2] = 'x';
	buf[PROXY_V1_MAX - 1] = '\r';
	buf[PROXY_V1_MAX] = '\n';
	assert_int_equal(proxy_parse(buf, sizeof(buf), &h), PROXY_ERR_V1_TOO_LONG);
	assert_int_equal(proxy_parse(NULL, 0, &h), PROXY_NEED_MORE);
}

/* ---- version 2 ---- */

static void
test_v2_inet(void **state)
{
	uint8_t body[12 + 3 + 5 + 3] = {
		192, 0, 2, 7, 127, 0, 0, 1, 0xdc, 0x04, 0, 25,
		0x04, 0, 5, 'h', 'e', 'l', 'l', 'o',   /* PP2_TYPE_NOOP */
		0x05, 0, 0,                            /* empty UNIQUE_ID */
	};
	uint8_t buf[128];
	size_t n = v2(buf, 0x21, 0x11, body, sizeof(body));
	memcpy(buf + n, "EHLO", 4);
	struct proxy_hdr h;

	assert_int_equal(proxy_parse(buf, n + 4, &h), PROXY_OK);
	assert_int_equal(h.version, 2);
	assert_int_equal(h.local, 0);
	assert_int_equal(h.len, n);
	assert_int_equal(h.ntlv, 2);
	check_addr(&h.src, "192.0.2.7", 56324);
	check_addr(&h.dst, "127.0.0.1", 25);
	check_prefixes(buf, n);

	/* without TLVs */
	n = v2(buf, 0x21, 0x11, body, 12);
	assert_int_equal(proxy_parse(buf, n, &h), PROXY_OK);
	assert_int_equal(h.ntlv, 0);
	check_addr(&h.src, "192.0.2.7", 56324);
}

static void
test_v2_inet6(void **state)
{
	uint8_t body[36] = { 0x20, 0x01, 0x0d, 0xb8 };
	body[15] = 7;
	body[31] = 1;                   /* dst ::1 */
	body[32] = 0x12; body[33] = 0x34;
	body[34] = 0x02; body[35] = 0x4b;
	uint8_t buf[64];
	size_t n = v2(buf, 0x21, 0x21, body, sizeof(body));
	struct proxy_hdr h;

	assert_int_equal(proxy_parse(buf, n, &h), PROXY_OK);
	check_addr(&h.src, "2001:db8::7", 0x1234);
	check_addr(&h.dst, "::1", 587);
	check_prefixes(buf, n);
}

static void
test_v2_local_unspec_unix(void **state)
{
	uint8_t body[216 + 4] = { 1, 2, 3 };
	uint8_t buf[300];
	struct proxy_hdr h;
	size_t n;

	/* LOCAL: the balancer's health check; body ignored, whatever it is */
	n = v2(buf, 0x20, 0x00, body, 0);
	assert_int_equal(proxy_parse(buf, n, &h), PROXY_OK);
	assert_int_equal(h.local, 1);
	assert_int_equal(h.len, 16);
	n = v2(buf, 0x20, 0x11, body, 7);   /* even a short INET block */
	assert_int_equal(proxy_parse(buf, n, &h), PROXY_OK);
	assert_int_equal(h.local, 1);
	assert_int_equal(h.len, 23);
	check_prefixes(buf, n);
	/* PROXY with family UNSPEC: nothing to take */
	n = v2(buf, 0x21, 0x00, body, 5);
	assert_int_equal(proxy_parse(buf, n, &h), PROXY_OK);
	assert_int_equal(h.local, 1);
	/* UNIX: addresses skipped, TLVs still checked */
	body[216] = 0x04;
	body[217] = 0;
	body[218] = 1;
	n = v2(buf, 0x21, 0x31, body, 216 + 4);
	assert_int_equal(proxy_parse(buf, n, &h), PROXY_OK);
	assert_int_equal(h.local, 1);
	assert_int_equal(h.ntlv, 1);
	body[218] = 2;
	n = v2(buf, 0x21, 0x31, body, 216 + 4);
	assert_int_equal(proxy_parse(buf, n, &h), PROXY_ERR_V2_TLV);
}

static void
test_v2_bad(void **state)
{
	uint8_t inet[12 + 8] = { 10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2 };
	uint8_t buf[64];
	struct proxy_hdr h;
	size_t n;

	n = v2(buf, 0x11, 0x11, inet, 12);
	assert_int_equal(proxy_parse(buf, n, &h), PROXY_ERR_V2_VERSION);
	/* the version is checked as soon as the fixed part is in */
	assert_int_equal(proxy_parse(buf, 16, &h), PROXY_ERR_V2_VERSION);
	n = v2(buf, 0x31, 0x11, inet, 12);
	assert_int_equal(proxy_parse(buf, n, &h), PROXY_ERR_V2_VERSION);
	n = v2(buf, 0x22, 0x11, inet, 12);
	assert_int_equal(proxy_parse(buf, n, &h), PROXY_ERR_V2_COMMAND);
	n = v2(buf, 0x2f, 0x11, inet, 12);
	assert_int_equal(proxy_parse(buf, 16, &h), PROXY_ERR_V2_COMMAND);
	n = v2(buf, 0x21, 0x41, inet, 12);
	assert_int_equal(proxy_parse(buf, n, &h), PROXY_ERR_V2_FAMILY);
	n = v2(buf, 0x21, 0x12, inet, 12);     /* DGRAM */
	assert_int_equal(proxy_parse(buf, n, &h), PROXY_ERR_V2_FAMILY);
	n = v2(buf, 0x21, 0x10, inet, 12);     /* UNSPEC transport */
	assert_int_equal(proxy_parse(buf, n, &h), PROXY_ERR_V2_FAMILY);
	n = v2(buf, 0x21, 0x11, inet, 11);
	assert_int_equal(proxy_parse(buf, n, &h), PROXY_ERR_V2_LENGTH);
	n = v2(buf, 0x21, 0x21, inet, 20);
	assert_int_equal(proxy_parse(buf, n, &h), PROXY_ERR_V2_LENGTH);
	n = v2(buf, 0x21, 0x31, inet, 20);
	assert_int_equal(proxy_parse(buf, n, &h), PROXY_ERR_V2_LENGTH);
	/* TLVs: 1 and 2 stray bytes, a value longer than what is left */
	for (size_t extra = 1; extra <= 2; extra++) {
		n = v2(buf, 0x21, 0x11, inet, 12 + extra);
		assert_int_equal(proxy_parse(buf, n, &h), PROXY_ERR_V2_TLV);
	}
	inet[12] = 0x01;
	inet[13] = 0x00;
	inet[14] = 0x06;     /* 6 bytes claimed, 5 there */
	n = v2(buf, 0x21, 0x11, inet, 20);
	assert_int_equal(proxy_parse(buf, n, &h), PROXY_ERR_V2_TLV);
	inet[13] = 0xff;     /* 0xff06: far past the end */
	n = v2(buf, 0x21, 0x11, inet, 20);
	assert_int_equal(proxy_parse(buf, n, &h), PROXY_ERR_V2_TLV);
	inet[13] = 0x00;
	inet[14] = 0x05;     /* exactly fits */
	n = v2(buf, 0x21, 0x11, inet, 20);
	assert_int_equal(proxy_parse(buf, n, &h), PROXY_OK);
	assert_int_equal(h.ntlv, 1);
	/* a damaged signature is not a header at all */
	n = v2(buf, 0x21, 0x11, inet, 12);
	buf[11] = 'X';
	assert_int_equal(proxy_parse(buf, n, &h), PROXY_ERR_SIGNATURE);
	assert_int_equal(proxy_parse(buf, 11, &h), PROXY_NEED_MORE);
}

/* The largest header (65535 bytes of TLVs) and one that claims more. */
static void
test_v2_max(void **state)
{
	static uint8_t buf[PROXY_V2_MAX + 16];
	struct proxy_hdr h;
	uint8_t *b = buf + 16;

	memcpy(buf, SIG, SIGLEN);
	buf[12] = 0x21;
	buf[13] = 0x11;
	buf[14] = buf[15] = 0xff;
	memset(b, 0, 12);
	/* 65523 bytes of TLVs: one of 65520 value bytes */
	b[12] = 0xe0;
	b[13] = (65520 >> 8) & 0xff;
	b[14] = 65520 & 0xff;
	assert_int_equal(proxy_parse(buf, PROXY_V2_MAX - 1, &h), PROXY_NEED_MORE);
	assert_int_equal(proxy_parse(buf, sizeof(buf), &h), PROXY_OK);
	assert_int_equal(h.len, PROXY_V2_MAX);
	assert_int_equal(h.ntlv, 1);
}

static void
test_status_names(void **state)
{
	for (int st = PROXY_OK; st <= PROXY_ERR_V2_TLV; st++)
		assert_string_not_equal(proxy_status_name(st), "unknown");
	assert_string_equal(proxy_status_name(PROXY_ERR_V2_TLV + 1), "unknown");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_v1_ok),
		cmocka_unit_test(test_v1_unknown),
		cmocka_unit_test(test_v1_bad),
		cmocka_unit_test(test_v1_nul_and_length),
		cmocka_unit_test(test_v2_inet),
		cmocka_unit_test(test_v2_inet6),
		cmocka_unit_test(test_v2_local_unspec_unix),
		cmocka_unit_test(test_v2_bad),
		cmocka_unit_test(test_v2_max),
		cmocka_unit_test(test_status_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
