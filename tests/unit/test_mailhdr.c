/* test_mailhdr.c - header fields and address lists for tern-sendmail -t. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "tern/mailhdr.h"

/* The addresses of value v, joined with spaces. */
static const char *
addrs(const char *v, char *out, size_t outlen)
{
	char a[64];
	size_t off = 0, n = 0;

	out[0] = '\0';
	while (mailhdr_addr_next(v, strlen(v), &off, a, sizeof(a)) && n < outlen)
		n += (size_t)snprintf(out + n, outlen - n, "%s%s", n ? " " : "", a);
	return out;
}

static void
test_address_lists(void **state)
{
	static const struct { const char *in, *want; } t[] = {
		{ " a@b.example\r\n", "a@b.example" },
		{ " a@b, c@d\n", "a@b c@d" },
		{ " Joe <joe@x.example>, \"Smith, A\" <a@x.example>\n",
		  "joe@x.example a@x.example" },
		{ " a@x (comment, with comma), b@y\n", "a@x b@y" },
		{ " (only a comment)\n", "" },
		{ " team: c@x, d@y;, e@z\n", "c@x d@y e@z" },
		{ " undisclosed-recipients:;\n", "" },
		{ " ,, a@b ,,\n", "a@b" },
		{ " <a@b>\n  , <c@d>\n", "a@b c@d" },
		{ " \"quoted@local\"@x.example\n", "\"quoted@local\"@x.example" },
		{ " Name <\"q,x\"@y>\n", "\"q,x\"@y" },
		{ " <>\n", "" },
		{ "", "" },
		/* an address too long for the buffer is skipped, not cut */
		{ " xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx@y, "
		  "ok@z\n", "ok@z" },
		/* unbalanced: ends at the end of the value */
		{ " (open comment a@b\n", "" },
		{ " <a@b\n", "a@b" },
	};
	char out[512];

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		assert_string_equal(addrs(t[i].in, out, sizeof(out)), t[i].want);
}

static void
test_fields(void **state)
{
	const char *m = "To: a@b,\r\n c@d\r\nBcc: e@f\nX-Y:z\r\n\r\nbody: no\r\n";
	struct mailhdr_field f;
	size_t off = 0, len = strlen(m);

	assert_int_equal(mailhdr_next(m, len, &f), 1);
	assert_true(mailhdr_is(&f, "to"));
	assert_false(mailhdr_is(&f, "t"));
	assert_int_equal(f.len, 16);
	assert_int_equal(f.value_len, 13);
	off += f.len;
	assert_int_equal(mailhdr_next(m + off, len - off, &f), 1);
	assert_true(mailhdr_is(&f, "BCC"));
	off += f.len;
	assert_int_equal(mailhdr_next(m + off, len - off, &f), 1);
	assert_true(mailhdr_is(&f, "X-Y"));
	off += f.len;
	/* the empty line ends the section; the body is not looked at */
	assert_int_equal(mailhdr_next(m + off, len - off, &f), 0);
	assert_int_equal(off, strlen("To: a@b,\r\n c@d\r\nBcc: e@f\nX-Y:z\r\n"));
	/* a line that is no field ends it too */
	assert_int_equal(mailhdr_next("no colon here\n", 14, &f), 0);
	assert_int_equal(mailhdr_next(": empty name\n", 13, &f), 0);
	assert_int_equal(mailhdr_next("A b: c\n", 7, &f), 0);
	assert_int_equal(mailhdr_next("Subject", 7, &f), 0);
	assert_int_equal(mailhdr_next("", 0, &f), 0);
	assert_int_equal(mailhdr_next("\n", 1, &f), 0);
	/* the last field without a line end */
	assert_int_equal(mailhdr_next("S: x", 4, &f), 1);
	assert_int_equal(f.len, 4);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_address_lists),
		cmocka_unit_test(test_fields),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
