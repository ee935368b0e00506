/*
 * test_dkim.c - the DKIM canonicaliser (RFC 6376 3.4.5's example, whole
 * and byte by byte), the signed field list, the From: domain, keys, the
 * TXT record split. The signatures themselves are checked by an
 * independent verifier in tests/integration/test_dkim.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/evp.h>

#include "tern/dkim.h"
#include "tern/util.h"

/* the body hash of text, base64 */
static void
b64_sha256(const char *text, size_t len, char *out)
{
	unsigned char h[32];
	unsigned int n;

	EVP_Digest(text, len, h, &n, EVP_sha256(), NULL);
	base64_encode(h, n, out, 64);
}

static void
canon_run(const char *msg, size_t len, size_t step, struct dkim_canon *c)
{
	assert_int_equal(dkim_canon_init(c), 0);
	for (size_t i = 0; i < len; i += step)
		dkim_canon_feed(c, msg + i, len - i < step ? len - i : step);
	dkim_canon_finish(c);
}

static void
test_header_canon(void **state)
{
	/* RFC 6376 3.4.5: "B : Y <HTAB><CRLF><HTAB> Z <SP><SP><CRLF>" */
	static const char b[] = "B : Y\t\r\n\tZ  \r\n";
	char out[64];
	size_t n = dkim_canon_header(b, strlen(b), out);

	assert_int_equal(n, 7);
	assert_memory_equal(out, "b:Y Z\r\n", 7);
	n = dkim_canon_header("A: X\r\n", 6, out);
	assert_memory_equal(out, "a:X\r\n", n);
	n = dkim_canon_header("SUBJECT:\t\r\n", 11, out);   /* empty value */
	assert_memory_equal(out, "subject:\r\n", n);
	/* a colon inside the value keeps the WSP after it */
	n = dkim_canon_header("Subject: a:\r\n\tb : c\r\n", 21, out);
	assert_int_equal(n, 18);
	assert_memory_equal(out, "subject:a: b : c\r\n", n);
}

/* RFC 6376 3.4.5, with field names we sign instead of A: and B: */
static const char rfc_msg[] =
    "To: X\r\n"
    "Subject : Y\t\r\n"
    "\tZ  \r\n"
    "\r\n"
    " C \r\n"
    "D \t E\r\n"
    "\r\n"
    "\r\n";

static void
test_rfc_example_any_split(void **state)
{
	char want[64], got[64];

	b64_sha256(" C\r\nD E\r\n", 9, want);
	for (size_t step = 1; step <= sizeof(rfc_msg); step++) {
		struct dkim_canon c;
		canon_run(rfc_msg, sizeof(rfc_msg) - 1, step, &c);
		base64_encode(c.bh, 32, got, sizeof(got));
		assert_string_equal(got, want);
		assert_int_equal(c.nfields, 2);
		assert_int_equal(c.overflow, 0);
		assert_memory_equal(c.hbuf, "to:X\r\nsubject:Y Z\r\n", c.hlen);
		dkim_canon_free(&c);
	}
}

static void
test_body_edges(void **state)
{
	static const struct { const char *msg, *body; } cases[] = {
		{ "To: a\r\n\r\n", "" },               /* empty body */
		{ "To: a\r\n", "" },                   /* no body at all */
		{ "To: a\r\n\r\n\r\n\r\n", "" },       /* only empty lines */
		{ "To: a\r\n\r\nx", "x\r\n" },         /* no final CRLF */
		{ "To: a\r\n\r\nx \t", "x\r\n" },      /* nor before WSP */
		{ "To: a\r\n\r\n\r\n \r\nx\r\n", "\r\n\r\nx\r\n" },
		{ "To: a\r\n\r\na\rb\r\n", "a\rb\r\n" },   /* bare CR: content */
		{ "To: a\r\n\r\n\xc3\xa9t\xc3\xa9\r\n", "\xc3\xa9t\xc3\xa9\r\n" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char want[64], got[64];
		b64_sha256(cases[i].body, strlen(cases[i].body), want);
		for (size_t step = 1; step < 4; step++) {
			struct dkim_canon c;
			canon_run(cases[i].msg, strlen(cases[i].msg), step, &c);
			base64_encode(c.bh, 32, got, sizeof(got));
			if (strcmp(got, want) != 0)
				fail_msg("case %zu step %zu", i, step);
			dkim_canon_free(&c);
		}
	}
}

static void
test_from_domain(void **state)
{
	static const struct { const char *hdr; int rc; const char *dom; } cases[] = {
		{ "From: Alice <alice@Example.COM>\r\n\r\n", 0, "example.com" },
		{ "from:a@x.test, b@X.test\r\n\r\n", 0, "x.test" },
		{ "From: a@x.test, b@y.test\r\n\r\n", -1, NULL },
		{ "From: a@x.test\r\nFrom: b@x.test\r\n\r\n", -1, NULL },
		{ "Subject: no from\r\n\r\n", -1, NULL },
		{ "From: undisclosed\r\n\r\n", -1, NULL },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct dkim_canon c;
		char dom[256];
		canon_run(cases[i].hdr, strlen(cases[i].hdr), 5, &c);
		assert_int_equal(dkim_from_domain(&c, dom, sizeof(dom)),
		    cases[i].rc);
		if (cases[i].rc == 0)
			assert_string_equal(dom, cases[i].dom);
		dkim_canon_free(&c);
	}
}

static void
test_sign_field(void **state)
{
	static const char msg[] = "From: a@x.test\r\nTo: b@y.test\r\n"
	    "X-Other: not signed\r\nTo: c@y.test\r\nSubject: s\r\n\r\nbody\r\n";
	char err[128], *pem = NULL, out[DKIM_SIG_MAX];
	struct dkim_key *k = dkim_keygen("ed25519", 0, &pem, err, sizeof(err));
	struct dkim_canon c;
	size_t n;

	assert_non_null(k);
	canon_run(msg, sizeof(msg) - 1, 7, &c);
	n = dkim_sign(&c, k, "x.test", "sel", 1700000000, out, sizeof(out));
	assert_true(n > 0);
	out[n] = '\0';
	assert_non_null(strstr(out, "a=ed25519-sha256;"));
	assert_non_null(strstr(out, "d=x.test;"));
	assert_non_null(strstr(out, "t=1700000000;"));
	/* both To: fields, From: once more than present, X-Other not */
	assert_non_null(strstr(out, "h=from:from:to:to:subject;"));
	assert_null(strstr(out, "x-other"));
	assert_memory_equal(out + n - 2, "\r\n", 2);
	/* folded: no line over 78 octets */
	for (char *l = out, *e; (e = strstr(l, "\r\n")) != NULL; l = e + 2)
		assert_true(e - l <= 78);
	dkim_canon_free(&c);
	dkim_key_free(k);
	free(pem);
}

static void
test_keys(void **state)
{
	char err[128], *pem = NULL, *txt;
	struct dkim_key *k;

	k = dkim_keygen("rsa", 1024, &pem, err, sizeof(err));
	assert_non_null(k);
	dkim_key_free(k);
	k = dkim_key_parse(pem, strlen(pem), err, sizeof(err));
	assert_non_null(k);
	assert_int_equal(dkim_key_alg(k), DKIM_ALG_RSA_SHA256);
	txt = dkim_key_txt(k);
	assert_non_null(txt);
	assert_true(strncmp(txt, "v=DKIM1; k=rsa; p=MIGf", 22) == 0);
	free(txt);
	dkim_key_free(k);
	free(pem);

	k = dkim_keygen("ed25519", 0, &pem, err, sizeof(err));
	txt = dkim_key_txt(k);
	/* the raw 32-byte key: 44 base64 characters */
	assert_int_equal(strlen(txt), strlen("v=DKIM1; k=ed25519; p=") + 44);
	free(txt);
	dkim_key_free(k);
	free(pem);

	assert_null(dkim_keygen("rsa", 512, &pem, err, sizeof(err)));
	assert_null(dkim_key_parse("junk", 4, err, sizeof(err)));
	assert_null(dkim_keygen("dsa", 2048, &pem, err, sizeof(err)));
}

static void
test_txt_strings(void **state)
{
	char txt[600], out[700];
	size_t n;

	memset(txt, 'a', 300);
	txt[300] = '\0';
	n = dkim_txt_strings(txt, out, sizeof(out));
	assert_int_equal(n, 255 + 45 + 5);
	assert_int_equal(out[0], '"');
	assert_memory_equal(out + 256, "\" \"", 3);
	assert_int_equal(dkim_txt_strings(txt, out, 100), 0);
}

static void
test_overflow(void **state)
{
	size_t len = DKIM_HDR_MAX + 100;
	char *msg = malloc(len + 16);
	struct dkim_canon c;

	memcpy(msg, "Subject: ", 9);
	memset(msg + 9, 'x', len - 9);
	memcpy(msg + len, "\r\n\r\nbody\r\n", 10);
	canon_run(msg, len + 10, 4096, &c);
	assert_int_equal(c.overflow, 1);
	char out[DKIM_SIG_MAX], err[64], *pem;
	struct dkim_key *k = dkim_keygen("ed25519", 0, &pem, err, sizeof(err));
	assert_int_equal(dkim_sign(&c, k, "x.test", "s", 1, out, sizeof(out)), 0);
	dkim_key_free(k);
	free(pem);
	dkim_canon_free(&c);
	free(msg);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_header_canon),
		cmocka_unit_test(test_rfc_example_any_split),
		cmocka_unit_test(test_body_edges),
		cmocka_unit_test(test_from_domain),
		cmocka_unit_test(test_sign_field),
		cmocka_unit_test(test_keys),
		cmocka_unit_test(test_txt_strings),
		cmocka_unit_test(test_overflow),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
