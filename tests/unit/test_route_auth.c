/*
 * test_route_auth.c - the route-auth credentials file: the pure parser
 * (table-driven), the route key and lookup, and the owner/mode checks of
 * the read.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "tern/route_auth.h"

struct errs {
	int n;
	char last[512];
};

static void
collect(void *arg, const char *msg)
{
	struct errs *e = arg;

	e->n++;
	snprintf(e->last, sizeof(e->last), "%s", msg);
}

static const struct parse_case {
	const char *in;
	int nerr;
	size_t n;                      /* entries when nerr == 0 */
	const char *host, *user, *pass;  /* of the first entry */
	const char *err;               /* substring of the last error */
	size_t len;                    /* of in; 0 = strlen(in) */
} parse_cases[] = {
	{ "", 0, 0, NULL, NULL, NULL, NULL, 0 },
	{ "# only a comment\n\n   \n\t# indented\n", 0, 0, NULL, NULL, NULL, NULL, 0 },
	{ "[127.0.0.1]:587 alice secret\n", 0, 1, "[127.0.0.1]:587", "alice",
	  "secret", NULL, 0 },
	/* no final newline, CRLF, case of the host folded, user kept */
	{ "Smtp.Provider.Example Alice s", 0, 1, "smtp.provider.example",
	  "Alice", "s", NULL, 0 },
	{ "[h.example]:587 u p\r\n", 0, 1, "[h.example]:587", "u", "p", NULL, 0 },
	/* the password is the rest of the line: blanks and '#' inside kept,
	 * blanks at its end dropped */
	{ "h u  my pass # word \t \n", 0, 1, "h", "u", "my pass # word", NULL, 0 },
	{ "h\tu\tp\tq\n", 0, 1, "h", "u", "p\tq", NULL, 0 },
	{ "a u p\nb v q\n", 0, 2, "a", "u", "p", NULL, 0 },
	{ "h u\n", 1, 0, NULL, NULL, NULL, "f:1: expected HOST USER PASSWORD", 0 },
	{ "h\n", 1, 0, NULL, NULL, NULL, "expected HOST USER PASSWORD", 0 },
	{ "h u   \n", 1, 0, NULL, NULL, NULL, "expected HOST USER PASSWORD", 0 },
	{ "# c\nh u p\nH u2 p2\n", 1, 0, NULL, NULL, NULL,
	  "f:3: h already has credentials at line 2", 0 },
	{ "h u p\x01q\n", 1, 0, NULL, NULL, NULL, "f:1: control character", 0 },
	{ "h u p\0q\n", 1, 0, NULL, NULL, NULL, "control character", 8 },
	{ "h u p\x7f\n", 1, 0, NULL, NULL, NULL, "control character", 0 },
	/* every bad line is reported */
	{ "x\ny\nok u p\n", 2, 0, NULL, NULL, NULL, "f:2:", 0 },
};

static void
test_parse_table(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
		const struct parse_case *c = &parse_cases[i];
		struct route_auth *ra = NULL;
		struct errs e = { 0, "" };
		size_t len = c->len ? c->len : strlen(c->in);
		int r;

		r = route_auth_parse(c->in, len, "f", &ra, collect, &e);
		if (r != c->nerr || e.n != c->nerr)
			fail_msg("case %zu: %d errors (%d reported), want %d: %s",
			    i, r, e.n, c->nerr, e.last);
		if (c->nerr != 0) {
			assert_null(ra);
			if (strstr(e.last, c->err) == NULL)
				fail_msg("case %zu: error \"%s\" lacks \"%s\"", i,
				    e.last, c->err);
			continue;
		}
		assert_non_null(ra);
		assert_int_equal(ra->n, c->n);
		if (c->n > 0) {
			assert_string_equal(ra->v[0].host, c->host);
			assert_string_equal(ra->v[0].user, c->user);
			assert_string_equal(ra->v[0].pass, c->pass);
		}
		route_auth_free(ra);
	}
}

/* No error message quotes the password, whatever is wrong. */
static void
test_errors_never_show_the_password(void **state)
{
	static const char *const bad[] = {
		"h u Sekr1t\x01\n", "h u Sekr1t\nh u Sekr1t\n",
	};
	char longl[ROUTE_AUTH_LINE_MAX + 40], longp[ROUTE_AUTH_FIELD_MAX + 40];

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct route_auth *ra = NULL;
		struct errs e = { 0, "" };

		assert_int_equal(route_auth_parse(bad[i], strlen(bad[i]), "f",
		    &ra, collect, &e), 1);
		assert_null(strstr(e.last, "Sekr1t"));
	}
	/* a password too long, a line too long */
	memset(longp, 'S', sizeof(longp));
	snprintf(longl, sizeof(longl), "h u %.*s\n", ROUTE_AUTH_FIELD_MAX + 1,
	    longp);
	{
		struct route_auth *ra = NULL;
		struct errs e = { 0, "" };
		assert_int_equal(route_auth_parse(longl, strlen(longl), "f", &ra,
		    collect, &e), 1);
		assert_non_null(strstr(e.last, "longer than 255"));
		assert_null(strstr(e.last, "SSSS"));
	}
	memset(longl, 'x', sizeof(longl));
	longl[sizeof(longl) - 1] = '\n';
	{
		struct route_auth *ra = NULL;
		struct errs e = { 0, "" };
		assert_int_equal(route_auth_parse(longl, sizeof(longl), "f", &ra,
		    collect, &e), 1);
		assert_non_null(strstr(e.last, "f:1: line longer than"));
	}
	/* exactly the limits: accepted */
	snprintf(longl, sizeof(longl), "h u %.*s", ROUTE_AUTH_FIELD_MAX, longp);
	{
		struct route_auth *ra = NULL;
		assert_int_equal(route_auth_parse(longl, strlen(longl), "f", &ra,
		    NULL, NULL), 0);
		assert_int_equal(strlen(ra->v[0].pass), ROUTE_AUTH_FIELD_MAX);
		route_auth_free(ra);
	}
}

static void
test_route_key_and_find(void **state)
{
	struct conf_route r = { .domain = (char *)"*" };
	struct route_auth *ra = NULL;
	const char *f = "[127.0.0.1]:587 a p1\n[::1]:2525 b p2\n"
	    "smtp.provider.example c p3\nrelay.example:26 d p4\n";
	char key[ROUTE_AUTH_KEY_MAX];

	(void)state;
	assert_int_equal(route_auth_parse(f, strlen(f), "f", &ra, NULL, NULL), 0);

	r.kind = CONF_ROUTE_HOST;
	r.host = (char *)"127.0.0.1";
	r.port = 587;
	assert_int_equal(route_auth_route_key(&r, key, sizeof(key)), 0);
	assert_string_equal(key, "[127.0.0.1]:587");
	assert_string_equal(route_auth_find(ra, key)->user, "a");
	r.port = 0;                     /* [127.0.0.1] is not [127.0.0.1]:587 */
	assert_int_equal(route_auth_route_key(&r, key, sizeof(key)), 0);
	assert_string_equal(key, "[127.0.0.1]");
	assert_null(route_auth_find(ra, key));

	r.host = (char *)"::1";
	r.port = 2525;
	assert_int_equal(route_auth_route_key(&r, key, sizeof(key)), 0);
	assert_string_equal(key, "[::1]:2525");
	assert_string_equal(route_auth_find(ra, key)->user, "b");

	r.kind = CONF_ROUTE_HOST_MX;    /* smtp:host: no brackets */
	r.host = (char *)"smtp.provider.example";
	r.port = 0;
	assert_int_equal(route_auth_route_key(&r, key, sizeof(key)), 0);
	assert_string_equal(route_auth_find(ra, key)->user, "c");
	assert_string_equal(route_auth_find(ra, "SMTP.Provider.Example")->user,
	    "c");
	assert_null(route_auth_find(ra, "[smtp.provider.example]"));
	r.host = (char *)"relay.example";
	r.port = 26;
	assert_int_equal(route_auth_route_key(&r, key, sizeof(key)), 0);
	assert_string_equal(route_auth_find(ra, key)->user, "d");

	r.kind = CONF_ROUTE_MX;         /* mx routes have no host */
	r.host = NULL;
	assert_int_equal(route_auth_route_key(&r, key, sizeof(key)), -1);
	r.kind = CONF_ROUTE_HOST;
	r.host = (char *)"h.example";
	assert_int_equal(route_auth_route_key(&r, key, 5), -1);
	assert_null(route_auth_find(NULL, "x"));
	route_auth_free(ra);
	route_auth_free(NULL);
}

static void
test_read_checks_owner_and_mode(void **state)
{
	const char *dir = getenv("TERN_TEST_TMPDIR");
	char path[4096], err[256], *buf;
	size_t len;
	struct route_auth *ra = NULL;
	struct errs e = { 0, "" };
	FILE *f;

	(void)state;
	snprintf(path, sizeof(path), "%s/route-auth-test.%ld",
	    dir != NULL ? dir : "/tmp", (long)getpid());
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("h u p w\n", f);
	fclose(f);

	assert_int_equal(chmod(path, 0644), 0);
	assert_int_equal(route_auth_read(path, geteuid(), &buf, &len, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "mode 0644 is too open"));
	assert_int_equal(chmod(path, 0640), 0);
	assert_int_equal(route_auth_read(path, geteuid(), &buf, &len, err,
	    sizeof(err)), -1);

	assert_int_equal(chmod(path, 0600), 0);
	assert_int_equal(route_auth_read(path, geteuid(), &buf, &len, err,
	    sizeof(err)), 0);
	assert_int_equal(len, 8);
	assert_memory_equal(buf, "h u p w\n", 8);
	route_auth_buf_free(buf, len);
	assert_int_equal(route_auth_load(path, geteuid(), &ra, collect, &e), 0);
	assert_string_equal(ra->v[0].pass, "p w");
	route_auth_free(ra);
	if (geteuid() != 0) {
		/* owned by us, but we are not the run-time user named */
		assert_int_equal(route_auth_read(path, geteuid() + 1, &buf, &len,
		    err, sizeof(err)), -1);
		assert_non_null(strstr(err, "owned by uid"));
	} else {
		assert_int_equal(chown(path, 65534, 65534), 0);
		assert_int_equal(route_auth_read(path, 999, &buf, &len, err,
		    sizeof(err)), -1);
		assert_non_null(strstr(err, "owned by uid 65534"));
		assert_int_equal(route_auth_read(path, 65534, &buf, &len, err,
		    sizeof(err)), 0);
		route_auth_buf_free(buf, len);
	}
	unlink(path);
	assert_int_equal(route_auth_load(path, geteuid(), &ra, collect, &e), 1);
	assert_non_null(strstr(e.last, ": route-auth: No such file"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_table),
		cmocka_unit_test(test_errors_never_show_the_password),
		cmocka_unit_test(test_route_key_and_find),
		cmocka_unit_test(test_read_checks_owner_and_mode),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
