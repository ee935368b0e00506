/*
 * test_idn.c - domains to their A-label form (base/idn.c, libidn2).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tern/idn.h"

static void
test_to_ascii(void **state)
{
	const struct {
		const char *in, *out;       /* out NULL: refused */
	} cases[] = {
		{ "example.com", "example.com" },
		{ "Example.COM", "example.com" },
		{ "exämple.de", "xn--exmple-cua.de" },
		{ "EXÄMPLE.de", "xn--exmple-cua.de" },      /* mapped to lower */
		{ "bücher.example", "xn--bcher-kva.example" },
		{ "xn--exmple-cua.de", "xn--exmple-cua.de" },
		{ "\xe2\x81\x84.example", NULL },           /* FRACTION SLASH */
		{ "a\xe2\x80\x8d" "b.example", NULL },       /* ZWJ out of context */
	};
	char out[256];
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = idn_to_ascii(cases[i].in, strlen(cases[i].in), out,
		    sizeof(out));
		if (cases[i].out == NULL) {
			assert_int_equal(rc, -1);
			continue;
		}
		assert_int_equal(rc, 0);
		assert_string_equal(out, cases[i].out);
	}
	assert_int_equal(idn_to_ascii("exämple.de", 11, out, 10), -1);
	assert_int_equal(idn_to_ascii("abc", 3, out, 3), -1);   /* no room */
	assert_int_equal(idn_to_ascii("ex\0mple.de", 10, out, 64), -1);
}

static void
test_addr(void **state)
{
	char *a;
	(void)state;

	a = idn_addr_to_ascii("josé@exämple.de");
	assert_string_equal(a, "josé@xn--exmple-cua.de");
	free(a);
	a = idn_addr_to_ascii("Bob@Example.COM");          /* ASCII: as written */
	assert_string_equal(a, "Bob@Example.COM");
	free(a);
	a = idn_addr_to_ascii("a@b@exämple.de");           /* the last '@' */
	assert_string_equal(a, "a@b@xn--exmple-cua.de");
	free(a);
	assert_null(idn_addr_to_ascii("x@\xe2\x81\x84.example"));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_to_ascii),
		cmocka_unit_test(test_addr),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
