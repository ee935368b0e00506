/*
 * test_client_auth.c - the delivery client's AUTH: PLAIN encoding (RFC
 * 4616 examples), the mechanisms read from an EHLO reply, and the
 * PLAIN/LOGIN exchanges written to an evbuffer.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <event2/buffer.h>

#include "tern/route_auth.h"
#include "client_auth.h"

static void
test_plain_encoding(void **state)
{
	char out[CLIENT_AUTH_B64_MAX];

	(void)state;
	/* RFC 4616 section 4, without the authorization identity */
	assert_int_equal(client_auth_plain("tim", "tanstaaftanstaaf", out,
	    sizeof(out)), 28);
	assert_string_equal(out, "AHRpbQB0YW5zdGFhZnRhbnN0YWFm");
	/* blanks and UTF-8 pass through as bytes */
	assert_true(client_auth_plain("u@x.example", "a b#c", out,
	    sizeof(out)) > 0);
	assert_string_equal(out, "AHVAeC5leGFtcGxlAGEgYiNj");
	assert_true(client_auth_plain("", "", out, sizeof(out)) == 4);
	assert_string_equal(out, "AAA=");
	/* too small a buffer, too long a field */
	assert_int_equal(client_auth_plain("tim", "tanstaaftanstaaf", out, 28),
	    -1);
	{
		char longf[ROUTE_AUTH_FIELD_MAX + 2];
		memset(longf, 'x', sizeof(longf) - 1);
		longf[sizeof(longf) - 1] = '\0';
		assert_int_equal(client_auth_plain(longf, "p", out, sizeof(out)),
		    -1);
		longf[ROUTE_AUTH_FIELD_MAX] = '\0';
		assert_true(client_auth_plain(longf, longf, out, sizeof(out)) > 0);
	}
}

static const struct offered_case {
	const char *ehlo;
	unsigned want;
} offered_cases[] = {
	{ "250-mx.example\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n",
	  CLIENT_AUTH_PLAIN | CLIENT_AUTH_LOGIN },
	{ "250-mx.example\r\n250 AUTH LOGIN CRAM-MD5\r\n", CLIENT_AUTH_LOGIN },
	{ "250-mx.example\r\n250-auth=plain\r\n250 SIZE 10\r\n",
	  CLIENT_AUTH_PLAIN },
	{ "250-mx.example\r\n250 AUTH XOAUTH2 PLAINX LOGINS\r\n", 0 },
	{ "250-mx.example\r\n250 AUTHPLAIN\r\n", 0 },
	{ "250-mx.example\r\n250 AUTH\r\n", 0 },
	{ "250-mx.example PLAIN\r\n250 SIZE\r\n", 0 },
	{ "250 mx.example\r\n", 0 },
	{ "", 0 },
	{ "250-AUTH  PLAIN\n250 x\n", CLIENT_AUTH_PLAIN },
};

static void
test_offered_and_choice(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(offered_cases) / sizeof(offered_cases[0]);
	    i++) {
		const char *e = offered_cases[i].ehlo;
		unsigned got = client_auth_offered(e, strlen(e));
		if (got != offered_cases[i].want)
			fail_msg("case %zu: %#x want %#x", i, got,
			    offered_cases[i].want);
	}
	assert_int_equal(client_auth_choose(CLIENT_AUTH_PLAIN | CLIENT_AUTH_LOGIN),
	    CLIENT_AUTH_PLAIN);
	assert_int_equal(client_auth_choose(CLIENT_AUTH_LOGIN), CLIENT_AUTH_LOGIN);
	assert_int_equal(client_auth_choose(0), CLIENT_AUTH_NONE);
}

/* Take what was written to out as a string (and empty out). */
static char *
drain(struct evbuffer *out)
{
	size_t n = evbuffer_get_length(out);
	char *s = calloc(1, n + 1);

	evbuffer_remove(out, s, n);
	return s;
}

static void
test_exchanges(void **state)
{
	struct evbuffer *out = evbuffer_new();
	struct client_auth a;
	char *s;

	(void)state;
	/* PLAIN: one line with the initial response; 235 ends it */
	client_auth_start(&a, CLIENT_AUTH_PLAIN, "tim", "tanstaaftanstaaf", out);
	s = drain(out);
	assert_string_equal(s, "AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n");
	free(s);
	assert_int_equal(client_auth_reply(&a, 235, out), CLIENT_AUTH_DONE);
	/* 535: failed; a server that wants the response after a 334 gets it
	 * once, then a second 334 is a failure */
	client_auth_start(&a, CLIENT_AUTH_PLAIN, "tim", "tanstaaftanstaaf", out);
	free(drain(out));
	assert_int_equal(client_auth_reply(&a, 535, out), CLIENT_AUTH_FAILED);
	client_auth_start(&a, CLIENT_AUTH_PLAIN, "tim", "tanstaaftanstaaf", out);
	free(drain(out));
	assert_int_equal(client_auth_reply(&a, 334, out), CLIENT_AUTH_MORE);
	s = drain(out);
	assert_string_equal(s, "AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n");
	free(s);
	assert_int_equal(client_auth_reply(&a, 334, out), CLIENT_AUTH_FAILED);
	assert_int_equal(evbuffer_get_length(out), 0);

	/* LOGIN: user and password each answer a 334 */
	client_auth_start(&a, CLIENT_AUTH_LOGIN, "tim", "pass word", out);
	s = drain(out);
	assert_string_equal(s, "AUTH LOGIN\r\n");
	free(s);
	assert_int_equal(client_auth_reply(&a, 334, out), CLIENT_AUTH_MORE);
	s = drain(out);
	assert_string_equal(s, "dGlt\r\n");
	free(s);
	assert_int_equal(client_auth_reply(&a, 334, out), CLIENT_AUTH_MORE);
	s = drain(out);
	assert_string_equal(s, "cGFzcyB3b3Jk\r\n");
	free(s);
	assert_int_equal(client_auth_reply(&a, 334, out), CLIENT_AUTH_FAILED);
	client_auth_start(&a, CLIENT_AUTH_LOGIN, "tim", "pass word", out);
	free(drain(out));
	assert_int_equal(client_auth_reply(&a, 504, out), CLIENT_AUTH_FAILED);
	assert_int_equal(evbuffer_get_length(out), 0);
	evbuffer_free(out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_plain_encoding),
		cmocka_unit_test(test_offered_and_choice),
		cmocka_unit_test(test_exchanges),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
