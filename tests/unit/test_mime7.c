/*
 * test_mime7.c - the 8-bit to 7-bit converter (queue/mta/mime7.c): every
 * converted message is checked for 7-bit octets only, CRLF line ends and
 * encoded lines of at most 76 octets, and every re-encoded part is decoded
 * here back to the original bytes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tern/mime7.h"
#include "tern/util.h"

/* 7-bit only, CRLF only. */
static void
check_7bit(const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		assert_true((unsigned char)p[i] < 0x80);
		if (p[i] == '\n')
			assert_true(i > 0 && p[i - 1] == '\r');
	}
}

static char *
convert(const char *in, size_t *n)
{
	char *out = NULL;

	assert_int_equal(mime7_convert(in, strlen(in), &out, n), MIME7_OK);
	check_7bit(out, *n);
	return out;
}

/* Quoted-printable decoding of p[0..n), lines of at most 76 octets. */
static char *
qp_decode(const char *p, size_t n, size_t *outlen)
{
	char *o = malloc(n + 1);
	size_t k = 0, col = 0;

	for (size_t i = 0; i < n; i++) {
		if (p[i] == '\r') {
			assert_true(col <= 76);
			col = 0;
			o[k++] = '\r';
			continue;
		}
		if (p[i] == '\n') {
			o[k++] = '\n';
			continue;
		}
		col++;
		if (p[i] == '=') {
			if (p[i + 1] == '\r' && p[i + 2] == '\n') {
				assert_true(col <= 76);
				col = 0;
				i += 2;
				continue;
			}
			unsigned v;
			assert_int_equal(sscanf(p + i + 1, "%2X", &v), 1);
			o[k++] = (char)v;
			i += 2;
			col += 2;
			continue;
		}
		o[k++] = p[i];
	}
	*outlen = k;
	return o;
}

static char *
b64_decode(const char *p, size_t n, size_t *outlen)
{
	char *flat = malloc(n + 1), *o = malloc(n + 1);
	size_t k = 0, len = 0;

	for (size_t i = 0; i < n; i++)
		if (p[i] != '\r' && p[i] != '\n')
			flat[k++] = p[i];
	assert_int_equal(base64_decode(flat, k, (unsigned char *)o, n + 1, &len), 0);
	*outlen = len;
	free(flat);
	return o;
}

static void
test_seven_bit_is_left_alone(void **state)
{
	const char *m = "Subject: x\r\n\r\nplain ascii\r\n";
	char *out = (char *)1;
	size_t n = 9;
	(void)state;

	assert_int_equal(mime7_convert(m, strlen(m), &out, &n), MIME7_SEVEN);
	assert_null(out);
	assert_int_equal(n, 0);
}

static void
test_plain_message(void **state)
{
	const char *m = "Subject: caf\xc3\xa9?\r\nFrom: a@b\r\n\r\n"
	    "J'ai mang\xc3\xa9 = bien  \r\n"
	    "une ligne tr\xc3\xa8s longue xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
	    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\r\n"
	    ".dot\r\n";
	const char *body = strstr(m, "\r\n\r\n") + 4;
	char *out, *dec;
	size_t n, dn;
	(void)state;

	/* an 8-bit header field cannot be converted */
	assert_int_equal(mime7_convert(m, strlen(m), &out, &n), MIME7_HEADER8);
	assert_null(out);
	m += strlen("Subject: caf\xc3\xa9?\r\n");
	out = convert(m, &n);
	assert_non_null(strstr(out, "MIME-Version: 1.0\r\n"));
	assert_non_null(strstr(out, "Content-Transfer-Encoding: quoted-printable\r\n"));
	assert_non_null(strstr(out, "mang=C3=A9 =3D bien =20\r\n"));
	const char *ob = strstr(out, "\r\n\r\n") + 4;
	dec = qp_decode(ob, n - (size_t)(ob - out), &dn);
	assert_int_equal(dn, strlen(body));
	assert_memory_equal(dec, body, dn);
	free(dec);
	free(out);
}

static const char multi[] =
    "From: a@b\r\n"
    "MIME-Version: 1.0\r\n"
    "Content-Type: multipart/mixed;\r\n boundary=\"=_b 1\"\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "preamble \xe9\r\n"
    "--=_b 1\r\n"
    "Content-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n"
    "\r\n"
    "h\xc3\xa9llo\r\n"
    "--=_b 1\r\n"
    "Content-Type: text/plain\r\n"
    "\r\n"
    "seven bit part\r\n"
    "--=_b 1\r\n"
    "Content-Type: application/octet-stream\r\n"
    "\r\n"
    "\x01\x80\xff\xfe binary\r\n"
    "--=_b 1--\r\n"
    "epilogue \xff\r\n";

/* The body of the part whose header contains marker, in msg. */
static const char *
part_body(const char *msg, const char *marker, size_t *len)
{
	const char *h = strstr(msg, marker), *b, *e;

	assert_non_null(h);
	b = strstr(h, "\r\n\r\n") + 4;
	e = strstr(b, "\r\n--=_b 1");
	assert_non_null(e);
	*len = (size_t)(e - b);
	return b;
}

static void
test_multipart(void **state)
{
	char *out, *dec;
	const char *b;
	size_t n, bl, dn;
	(void)state;

	out = convert(multi, &n);
	/* structure and 7-bit parts are kept byte for byte */
	assert_non_null(strstr(out, "Content-Type: multipart/mixed;\r\n boundary=\"=_b 1\"\r\n\r\n"));
	assert_null(strstr(out, "Content-Transfer-Encoding: 8bit"));
	assert_non_null(strstr(out, "--=_b 1\r\nContent-Type: text/plain\r\n\r\n"
	    "seven bit part\r\n--=_b 1\r\n"));
	assert_non_null(strstr(out, "--=_b 1--\r\nepilogue ?\r\n"));
	assert_non_null(strstr(out, "preamble ?\r\n--=_b 1\r\n"));
	/* the 8-bit text part is quoted-printable, and decodes back */
	b = part_body(out, "charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable", &bl);
	dec = qp_decode(b, bl, &dn);
	assert_int_equal(dn, 6);
	assert_memory_equal(dec, "h\xc3\xa9llo", 6);
	free(dec);
	/* the binary part is base64, and decodes back */
	b = part_body(out, "octet-stream\r\nContent-Transfer-Encoding: base64", &bl);
	dec = b64_decode(b, bl, &dn);
	assert_int_equal(dn, 11);
	assert_memory_equal(dec, "\x01\x80\xff\xfe binary", 11);
	free(dec);
	free(out);
}

static void
test_refusals(void **state)
{
	const struct {
		const char *msg;
		enum mime7_status st;
	} cases[] = {
		{ "Content-Type: multipart/signed; boundary=x\r\n\r\n--x\r\n\r\n"
		  "\xe9\r\n--x--\r\n", MIME7_SIGNED },
		{ "Content-Type: multipart/encrypted; boundary=x\r\n\r\n\xe9\r\n",
		  MIME7_SIGNED },
		{ "Content-Type: text/plain\r\nContent-Transfer-Encoding: "
		  "base64\r\n\r\n\xe9\r\n", MIME7_BROKEN },
		{ "Content-Type: text/plain\r\nContent-Transfer-Encoding: "
		  "Quoted-Printable\r\n\r\n\xe9\r\n", MIME7_BROKEN },
		{ "Content-Type: message/partial\r\n\r\n\xe9\r\n", MIME7_BROKEN },
		{ "Content-Type: multipart/mixed\r\n\r\n\xe9\r\n", MIME7_BROKEN },
		{ "Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"
		  "X: \xe9\r\n\r\nbody\r\n--x--\r\n", MIME7_HEADER8 },
	};
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out = (char *)1;
		size_t n;
		assert_int_equal(mime7_convert(cases[i].msg,
		    strlen(cases[i].msg), &out, &n), cases[i].st);
		assert_null(out);
	}
}

static void
test_message_rfc822_and_digest(void **state)
{
	const char *m =
	    "Content-Type: multipart/digest; boundary=d\r\n\r\n"
	    "--d\r\n"
	    "\r\n"
	    "Subject: inner\r\n"
	    "Content-Transfer-Encoding: 8bit\r\n"
	    "\r\n"
	    "inner \xe9\r\n"
	    "--d--\r\n";
	const char *r =
	    "Content-Type: message/rfc822\r\n"
	    "Content-Transfer-Encoding: 8bit\r\n\r\n"
	    "Subject: inner\r\n\r\nbody \xe9\r\n";
	char *out;
	size_t n;
	(void)state;

	/* a digest part without Content-Type is a message: converted inside */
	out = convert(m, &n);
	assert_non_null(strstr(out, "--d\r\n\r\nSubject: inner\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\ninner =E9"));
	free(out);
	out = convert(r, &n);
	assert_string_equal(out, "Content-Type: message/rfc822\r\n\r\n"
	    "Subject: inner\r\nMIME-Version: 1.0\r\n"
	    "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
	    "body =E9\r\n");
	free(out);
}

static void
test_depth(void **state)
{
	struct buf b = { 0 };
	char *out = NULL;
	size_t n;
	(void)state;

	for (int i = 0; i < MIME7_DEPTH + 5; i++)
		buf_printf(&b, "Content-Type: multipart/mixed; boundary=b%d\r\n"
		    "\r\n--b%d\r\n", i, i);
	buf_addstr(&b, "\r\n\xe9\r\n");
	assert_int_equal(mime7_convert(b.p, b.len, &out, &n), MIME7_BROKEN);
	assert_null(out);
	buf_free(&b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_seven_bit_is_left_alone),
		cmocka_unit_test(test_plain_message),
		cmocka_unit_test(test_multipart),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_message_rfc822_and_digest),
		cmocka_unit_test(test_depth),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
