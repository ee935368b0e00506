/*
 * test_sts_parse.c - MTA-STS parsers (base/sts_parse.c): the "_mta-sts"
 * TXT record, the policy file and the mx pattern match, table-driven.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "tern/sts.h"

static const struct txt_case {
	const char *in;
	enum sts_parse_status st;
	const char *id;
} txt_cases[] = {
	{ "v=STSv1; id=20160831085700Z;", STS_PARSE_OK, "20160831085700Z" },
	{ "v=STSv1;id=abc", STS_PARSE_OK, "abc" },
	{ "v=STSv1 ; id=abc ; ", STS_PARSE_OK, "abc" },
	{ "v=STSv1; ext_1=x.y; id=A1", STS_PARSE_OK, "A1" },
	{ "v=STSv1; id=12345678901234567890123456789012", STS_PARSE_OK,
	  "12345678901234567890123456789012" },
	{ "v=STSv1; id=123456789012345678901234567890123", STS_PARSE_TOO_LONG,
	  NULL },
	{ "v=STSv1;", STS_PARSE_BAD, NULL },
	{ "v=STSv1", STS_PARSE_BAD, NULL },
	{ "v=STSv1; id=", STS_PARSE_BAD, NULL },
	{ "v=STSv1; id=a-b", STS_PARSE_BAD, NULL },
	{ "v=STSv1; id=a; id=b", STS_PARSE_BAD, NULL },
	{ "v=STSv1; id=a x", STS_PARSE_BAD, NULL },
	{ "v=STSv1; =x; id=a", STS_PARSE_BAD, NULL },
	{ "v=spf1 -all", STS_PARSE_NONE, NULL },
	{ "v=STSv10; id=a", STS_PARSE_NONE, NULL },
	{ "id=a; v=STSv1", STS_PARSE_NONE, NULL },
	{ "", STS_PARSE_NONE, NULL },
};

static void
test_txt(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(txt_cases) / sizeof(txt_cases[0]); i++) {
		const struct txt_case *c = &txt_cases[i];
		struct sts_txt t;
		enum sts_parse_status st = sts_txt_parse(c->in, strlen(c->in), &t);

		if (st != c->st)
			fail_msg("case %zu \"%s\": %s, want %s", i, c->in,
			    sts_parse_strstatus(st), sts_parse_strstatus(c->st));
		if (c->id != NULL)
			assert_string_equal(t.id, c->id);
	}
}

static const struct policy_case {
	const char *in;
	enum sts_parse_status st;
	enum sts_mode mode;
	unsigned max_age;
	size_t nmx;
	const char *mx0;
} policy_cases[] = {
	{ "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\n"
	  "mx: *.example.net\r\nmax_age: 1296000\r\n",
	  STS_PARSE_OK, STS_MODE_ENFORCE, 1296000, 2, "mail.example.com" },
	{ "version: STSv1\nmode: testing\nmx: MX.Example.ORG.\nmax_age: 0",
	  STS_PARSE_OK, STS_MODE_TESTING, 0, 1, "mx.example.org" },
	{ "version:STSv1\nmode:none\nmax_age:86400\n\n",
	  STS_PARSE_OK, STS_MODE_NONE, 86400, 0, NULL },
	{ "version: STSv1  \nmode: enforce\t\nmx: a.b\nmax_age: 31557600\n"
	  "x-ext: anything at all\n",
	  STS_PARSE_OK, STS_MODE_ENFORCE, 31557600, 1, "a.b" },
	{ "mode: enforce\nmx: a.b\nmax_age: 1\n", STS_PARSE_VERSION, 0, 0, 0,
	  NULL },
	{ "version: STSv2\nmode: enforce\nmx: a.b\nmax_age: 1\n",
	  STS_PARSE_VERSION, 0, 0, 0, NULL },
	{ "version: STSv1\nmode: Enforce\nmx: a.b\nmax_age: 1\n",
	  STS_PARSE_MODE, 0, 0, 0, NULL },
	{ "version: STSv1\nmode: enforce\nmx: a.b\n", STS_PARSE_MAX_AGE, 0, 0,
	  0, NULL },
	{ "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: 31557601\n",
	  STS_PARSE_MAX_AGE, 0, 0, 0, NULL },
	{ "version: STSv1\nmode: enforce\nmx: a.b\nmax_age: -1\n",
	  STS_PARSE_MAX_AGE, 0, 0, 0, NULL },
	{ "version: STSv1\nmode: enforce\nmax_age: 1\n", STS_PARSE_MX, 0, 0, 0,
	  NULL },
	{ "version: STSv1\nmode: enforce\nmx: a..b\nmax_age: 1\n",
	  STS_PARSE_MX, 0, 0, 0, NULL },
	{ "version: STSv1\nmode: enforce\nmx: *.\nmax_age: 1\n",
	  STS_PARSE_MX, 0, 0, 0, NULL },
	{ "version: STSv1\nmode: enforce\nmx: a.*.b\nmax_age: 1\n",
	  STS_PARSE_MX, 0, 0, 0, NULL },
	{ "version: STSv1\nmode: enforce\nmx: -a.b\nmax_age: 1\n",
	  STS_PARSE_MX, 0, 0, 0, NULL },
	{ "version: STSv1\nmode: enforce\nmode: none\nmx: a.b\nmax_age: 1\n",
	  STS_PARSE_MODE, 0, 0, 0, NULL },
	{ "version: STSv1\nmode enforce\nmx: a.b\nmax_age: 1\n",
	  STS_PARSE_BAD, 0, 0, 0, NULL },
	{ "<html>moved</html>", STS_PARSE_BAD, 0, 0, 0, NULL },
	{ "", STS_PARSE_VERSION, 0, 0, 0, NULL },
};

static void
test_policy(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(policy_cases) / sizeof(policy_cases[0]);
	    i++) {
		const struct policy_case *c = &policy_cases[i];
		struct sts_policy p;
		enum sts_parse_status st = sts_policy_parse(c->in,
		    strlen(c->in), &p);

		if (st != c->st)
			fail_msg("case %zu: %s, want %s", i,
			    sts_parse_strstatus(st), sts_parse_strstatus(c->st));
		if (st != STS_PARSE_OK)
			continue;
		assert_int_equal(p.mode, c->mode);
		assert_int_equal(p.max_age, c->max_age);
		assert_int_equal(p.nmx, c->nmx);
		if (c->mx0 != NULL)
			assert_string_equal(p.mx[0], c->mx0);
	}
}

static void
test_policy_limits(void **state)
{
	static char buf[STS_POLICY_MAX + 64];
	struct sts_policy p;
	size_t n = 0;

	(void)state;
	n += (size_t)snprintf(buf + n, sizeof(buf) - n,
	    "version: STSv1\nmode: enforce\nmax_age: 1\n");
	for (int i = 0; i < STS_MX_MAX; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n,
		    "mx: m%d.example\n", i);
	assert_int_equal(sts_policy_parse(buf, n, &p), STS_PARSE_OK);
	assert_int_equal(p.nmx, STS_MX_MAX);
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, "mx: one.more\n");
	assert_int_equal(sts_policy_parse(buf, n, &p), STS_PARSE_MX);
	/* a NUL byte is a syntax error, not the end */
	assert_int_equal(sts_policy_parse("version: STSv1\n\0mode: none\n",
	    27, &p), STS_PARSE_BAD);
	memset(buf, 'a', sizeof(buf));
	assert_int_equal(sts_policy_parse(buf, STS_POLICY_MAX + 1, &p),
	    STS_PARSE_TOO_LONG);
}

static void
test_mx_match(void **state)
{
	static const struct { const char *pat, *host; int want; } c[] = {
		{ "mail.example.com", "mail.example.com", 1 },
		{ "mail.example.com", "MAIL.Example.com.", 1 },
		{ "mail.example.com.", "mail.example.com", 1 },
		{ "mail.example.com", "mail.example.co", 0 },
		{ "mail.example.com", "xmail.example.com", 0 },
		{ "*.example.com", "mx1.example.com", 1 },
		{ "*.example.com", "MX1.EXAMPLE.COM.", 1 },
		{ "*.example.com", "example.com", 0 },
		{ "*.example.com", "a.b.example.com", 0 },
		{ "*.example.com", ".example.com", 0 },
		{ "*.example.com", "mx1.example.net", 0 },
		{ "*.example.com", "mx1example.com", 0 },
		{ "", "a", 0 },
		{ "a", "", 0 },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++)
		if (sts_mx_match(c[i].pat, c[i].host) != c[i].want)
			fail_msg("case %zu: %s ~ %s", i, c[i].pat, c[i].host);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_txt),
		cmocka_unit_test(test_policy),
		cmocka_unit_test(test_policy_limits),
		cmocka_unit_test(test_mx_match),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
