/*
 * test_smtp_reply.c - the SMTP reply parser and EHLO keyword extraction,
 * table-driven, whole and byte by byte.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tern/smtp_reply.h"

static const struct reply_case {
	const char *in;
	enum smtp_reply_status st;
	int code;
	const char *enh;
	const char *text;
	size_t nlines;
	size_t len;             /* consumed; 0 = strlen(in) */
} reply_cases[] = {
	{ "220 mx.example ESMTP\r\n", SMTP_REPLY_OK, 220, "", "mx.example ESMTP", 1, 0 },
	{ "250 2.1.0 Ok\r\n", SMTP_REPLY_OK, 250, "2.1.0", "Ok", 1, 0 },
	{ "550 5.1.1 <a@b>: no such user\r\n", SMTP_REPLY_OK, 550, "5.1.1",
	  "<a@b>: no such user", 1, 0 },
	/* class must match the code */
	{ "550 4.1.1 odd\r\n", SMTP_REPLY_OK, 550, "", "4.1.1 odd", 1, 0 },
	/* subject and detail are 1-3 digits */
	{ "451 4.3.1000 x\r\n", SMTP_REPLY_OK, 451, "", "4.3.1000 x", 1, 0 },
	{ "451 4.3 x\r\n", SMTP_REPLY_OK, 451, "", "4.3 x", 1, 0 },
	{ "451 4.30.100\r\n", SMTP_REPLY_OK, 451, "4.30.100", "", 1, 0 },
	/* 3xx carries no enhanced code */
	{ "354 2.0.0 go ahead\r\n", SMTP_REPLY_OK, 354, "", "2.0.0 go ahead", 1, 0 },
	{ "250\r\n", SMTP_REPLY_OK, 250, "", "", 1, 0 },
	{ "250 \r\n", SMTP_REPLY_OK, 250, "", "", 1, 0 },
	{ "250 ok\n", SMTP_REPLY_OK, 250, "", "ok", 1, 0 },
	{ "250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000\r\n",
	  SMTP_REPLY_OK, 250, "", "mx.example PIPELINING SIZE 1000", 3, 0 },
	{ "550-5.7.1 first\r\n550-5.7.1 second\r\n550 5.7.1 third\r\n",
	  SMTP_REPLY_OK, 550, "5.7.1", "first second third", 3, 0 },
	/* two replies: only the first is consumed */
	{ "250 a\r\n251 b\r\n", SMTP_REPLY_OK, 250, "", "a", 1, 7 },
	/* control bytes in text are masked */
	{ "250 a\tb\x01\r\n", SMTP_REPLY_OK, 250, "", "a?b?", 1, 0 },
	{ "", SMTP_REPLY_MORE, 0, "", "", 0, 0 },
	{ "250", SMTP_REPLY_MORE, 0, "", "", 0, 0 },
	{ "250-a\r\n", SMTP_REPLY_MORE, 0, "", "", 0, 0 },
	{ "250-a\r\n250", SMTP_REPLY_MORE, 0, "", "", 0, 0 },
	{ "25\r\n", SMTP_REPLY_BAD_SYNTAX, 0, "", "", 0, 0 },
	{ "abc\r\n", SMTP_REPLY_BAD_SYNTAX, 0, "", "", 0, 0 },
	{ "150 x\r\n", SMTP_REPLY_BAD_SYNTAX, 0, "", "", 0, 0 },
	{ "670 x\r\n", SMTP_REPLY_BAD_SYNTAX, 0, "", "", 0, 0 },
	{ "260 x\r\n", SMTP_REPLY_BAD_SYNTAX, 0, "", "", 0, 0 },
	{ "250x\r\n", SMTP_REPLY_BAD_SYNTAX, 0, "", "", 0, 0 },
	{ "HTTP/1.1 400 Bad\r\n", SMTP_REPLY_BAD_SYNTAX, 0, "", "", 0, 0 },
	{ "250-a\r\n251 b\r\n", SMTP_REPLY_BAD_CODE, 0, "", "", 0, 0 },
	{ "250-a\r\n550 b\r\n", SMTP_REPLY_BAD_CODE, 0, "", "", 0, 0 },
};

static void
test_reply_table(void **state)
{
	for (size_t i = 0; i < sizeof(reply_cases) / sizeof(reply_cases[0]); i++) {
		const struct reply_case *c = &reply_cases[i];
		struct smtp_reply r;
		enum smtp_reply_status st;

		st = smtp_reply_parse(c->in, strlen(c->in), &r);
		if (st != c->st)
			fail_msg("case %zu \"%s\": status %s, want %s", i, c->in,
			    smtp_reply_strstatus(st), smtp_reply_strstatus(c->st));
		if (st != SMTP_REPLY_OK)
			continue;
		assert_int_equal(r.code, c->code);
		assert_string_equal(r.enh, c->enh);
		assert_string_equal(r.text, c->text);
		assert_int_equal(r.nlines, c->nlines);
		assert_int_equal(r.len, c->len ? c->len : strlen(c->in));
	}
}

/* Every proper prefix of a complete reply is MORE, never an error. */
static void
test_reply_prefixes(void **state)
{
	for (size_t i = 0; i < sizeof(reply_cases) / sizeof(reply_cases[0]); i++) {
		const struct reply_case *c = &reply_cases[i];
		size_t full = c->len ? c->len : strlen(c->in);
		struct smtp_reply r;

		if (c->st != SMTP_REPLY_OK)
			continue;
		for (size_t n = 0; n < full; n++) {
			enum smtp_reply_status st = smtp_reply_parse(c->in, n, &r);
			if (st != SMTP_REPLY_MORE)
				fail_msg("case %zu prefix %zu: %s", i, n,
				    smtp_reply_strstatus(st));
		}
	}
}

static void
test_reply_limits(void **state)
{
	static char b[SMTP_REPLY_MAX + 4096];
	size_t big = sizeof(b);
	struct smtp_reply r;
	size_t n;

	/* a line of exactly 512 octets with CRLF is fine, 513 is not */
	memset(b, 'x', 600);
	memcpy(b, "250 ", 4);
	memcpy(b + 510, "\r\n", 2);
	assert_int_equal(smtp_reply_parse(b, 512, &r), SMTP_REPLY_OK);
	assert_int_equal(r.len, 512);
	assert_true(strlen(r.text) < SMTP_REPLY_TEXT_MAX);
	memset(b, 'x', 600);
	memcpy(b, "250 ", 4);
	memcpy(b + 511, "\r\n", 2);
	assert_int_equal(smtp_reply_parse(b, 513, &r), SMTP_REPLY_TOO_LONG);
	/* no newline in 512 octets: too long at once, not MORE */
	memset(b, 'x', 600);
	memcpy(b, "250 ", 4);
	assert_int_equal(smtp_reply_parse(b, 511, &r), SMTP_REPLY_MORE);
	assert_int_equal(smtp_reply_parse(b, 512, &r), SMTP_REPLY_TOO_LONG);

	/* endless continuation lines: too long past 64 KiB */
	for (n = 0; n + 10 <= big; n += 10)
		memcpy(b + n, "250-xxxx\r\n", 10);
	assert_int_equal(smtp_reply_parse(b, n, &r), SMTP_REPLY_TOO_LONG);
	assert_int_equal(smtp_reply_parse(b, SMTP_REPLY_MAX - 6, &r),
	    SMTP_REPLY_MORE);
}

static const struct ehlo_case {
	const char *in;
	unsigned ext;
	uint64_t size;
} ehlo_cases[] = {
	{ "250 mx.example\r\n", 0, 0 },
	/* the first line is the greeting, never a keyword */
	{ "250 PIPELINING\r\n", 0, 0 },
	{ "250-mx.example\r\n250-PIPELINING\r\n250-SIZE 35882577\r\n"
	  "250-8BITMIME\r\n250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n"
	  "250-SMTPUTF8\r\n250-DSN\r\n250 CHUNKING\r\n",
	  SMTP_EXT_PIPELINING | SMTP_EXT_SIZE | SMTP_EXT_8BITMIME |
	  SMTP_EXT_STARTTLS | SMTP_EXT_ENHANCED | SMTP_EXT_SMTPUTF8 |
	  SMTP_EXT_DSN | SMTP_EXT_CHUNKING, 35882577 },
	{ "250-x\r\n250-pipelining\r\n250 size\r\n",
	  SMTP_EXT_PIPELINING | SMTP_EXT_SIZE, 0 },
	{ "250-x\r\n250-SIZE abc\r\n250 STARTTLSX\r\n", SMTP_EXT_SIZE, 0 },
	{ "250-x\r\n250-SIZE 99999999999999999999999\r\n250 AUTH PLAIN\r\n",
	  SMTP_EXT_SIZE, 0 },
	{ "250-x\n250-8BITMIME\n250 SIZE 10\n", SMTP_EXT_8BITMIME |
	  SMTP_EXT_SIZE, 10 },
	{ "250-x\r\n250-STARTTLS\r\n250 requiretls\r\n", SMTP_EXT_STARTTLS |
	  SMTP_EXT_REQUIRETLS, 0 },
};

static void
test_ehlo_table(void **state)
{
	for (size_t i = 0; i < sizeof(ehlo_cases) / sizeof(ehlo_cases[0]); i++) {
		struct smtp_ehlo e;
		struct smtp_reply r;
		const char *in = ehlo_cases[i].in;

		assert_int_equal(smtp_reply_parse(in, strlen(in), &r),
		    SMTP_REPLY_OK);
		smtp_ehlo_parse(in, r.len, &e);
		if (e.ext != ehlo_cases[i].ext)
			fail_msg("case %zu: ext %#x want %#x", i, e.ext,
			    ehlo_cases[i].ext);
		assert_true(e.size == ehlo_cases[i].size);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reply_table),
		cmocka_unit_test(test_reply_prefixes),
		cmocka_unit_test(test_reply_limits),
		cmocka_unit_test(test_ehlo_table),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
