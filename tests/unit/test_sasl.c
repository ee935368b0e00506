/*
 * test_sasl.c - table-driven tests of smtpd/sasl.c: strict base64 (RFC 4648
 * section 10 vectors and malformed inputs), the AUTH argument, the PLAIN
 * message (RFC 4616: authzid, lengths on both sides of 255, embedded NULs),
 * whole PLAIN/LOGIN exchanges, and the RFC 4954 reply mapping.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tern/auth.h"

/* A string literal and its length (literals may hold NUL bytes). */
#define S(x) x, sizeof(x) - 1

#define CHECK_ST(got, want, idx) do {                                     \
	if ((got) != (want))                                              \
		fail_msg("case %zu: got %s, want %s", (size_t)(idx),       \
		    sasl_status_name(got), sasl_status_name(want));         \
} while (0)

/* RFC 4648 section 10. */
static const struct {
	const char *plain, *b64;
} b64_vectors[] = {
	{ "", "" },
	{ "f", "Zg==" },
	{ "fo", "Zm8=" },
	{ "foo", "Zm9v" },
	{ "foob", "Zm9vYg==" },
	{ "fooba", "Zm9vYmE=" },
	{ "foobar", "Zm9vYmFy" },
};

static void
test_base64_vectors(void **state)
{
	unsigned char out[64];
	char enc[64];
	size_t i, n;

	for (i = 0; i < sizeof(b64_vectors) / sizeof(b64_vectors[0]); i++) {
		const char *p = b64_vectors[i].plain, *b = b64_vectors[i].b64;
		CHECK_ST(sasl_base64_decode(b, strlen(b), out, sizeof(out), &n),
		    SASL_OK, i);
		assert_int_equal(n, strlen(p));
		assert_memory_equal(out, p, n);
		n = sasl_base64_encode(p, strlen(p), enc, sizeof(enc));
		assert_int_equal(n, strlen(b));
		assert_string_equal(enc, b);
	}
}

static const struct {
	const char *in;
	size_t len;
	enum sasl_status want;
} b64_bad[] = {
	{ S("Zg="), SASL_BAD_BASE64 },          /* length not a multiple of 4 */
	{ S("Zg"), SASL_BAD_BASE64 },
	{ S("Z"), SASL_BAD_BASE64 },
	{ S("Z==="), SASL_BAD_BASE64 },         /* three pads */
	{ S("===="), SASL_BAD_BASE64 },
	{ S("=Zg="), SASL_BAD_BASE64 },         /* pad first */
	{ S("Zg==Zg=="), SASL_BAD_BASE64 },     /* pad in the middle */
	{ S("Z=g="), SASL_BAD_BASE64 },
	{ S("Zh=="), SASL_BAD_BASE64 },         /* non-zero unused bits */
	{ S("Zm9="), SASL_BAD_BASE64 },
	{ S("Zm 9v"), SASL_BAD_BASE64 },        /* whitespace */
	{ S("Zm9v\r\n"), SASL_BAD_BASE64 },
	{ S(" Zm9"), SASL_BAD_BASE64 },
	{ S("Zm9\t"), SASL_BAD_BASE64 },
	{ S("Zm9-"), SASL_BAD_BASE64 },         /* base64url alphabet */
	{ S("Zm9_"), SASL_BAD_BASE64 },
	{ S("Zm\0v"), SASL_BAD_BASE64 },        /* NUL */
	{ S("Zm\xc3v"), SASL_BAD_BASE64 },      /* 8-bit */
	{ S("*"), SASL_BAD_BASE64 },            /* cancel is not base64 */
};

static void
test_base64_bad(void **state)
{
	unsigned char out[64];
	size_t i, n;

	for (i = 0; i < sizeof(b64_bad) / sizeof(b64_bad[0]); i++) {
		n = 99;
		CHECK_ST(sasl_base64_decode(b64_bad[i].in, b64_bad[i].len, out,
		    sizeof(out), &n), b64_bad[i].want, i);
		assert_int_equal(n, 0);
	}
}

static void
test_base64_bounds(void **state)
{
	unsigned char out[8], bytes[256];
	char enc[400];
	size_t n, len, i;

	/* "foobar" needs 6 bytes: 5 is too small, 6 fits exactly. */
	CHECK_ST(sasl_base64_decode(S("Zm9vYmFy"), out, 5, &n), SASL_TOO_LONG,
	    0);
	assert_int_equal(n, 0);
	CHECK_ST(sasl_base64_decode(S("Zm9vYmFy"), out, 6, &n), SASL_OK, 1);
	CHECK_ST(sasl_base64_decode(S("Zm9vYg=="), out, 4, &n), SASL_OK, 2);
	CHECK_ST(sasl_base64_decode(S("Zm9vYg=="), out, 3, &n), SASL_TOO_LONG,
	    3);

	/* Encoding needs 4 * ceil(n / 3) + 1 bytes. */
	assert_int_equal(sasl_base64_encode("foo", 3, enc, 5), 4);
	assert_int_equal(sasl_base64_encode("foo", 3, enc, 4), 0);
	assert_string_equal(enc, "");
	assert_int_equal(sasl_base64_encode("f", 1, enc, 5), 4);
	assert_int_equal(sasl_base64_encode("f", 1, enc, 4), 0);

	/* Round trip of every byte value, at every length 0..256. */
	for (i = 0; i < sizeof(bytes); i++)
		bytes[i] = (unsigned char)(255 - i);
	for (len = 0; len <= sizeof(bytes); len++) {
		unsigned char back[256];
		size_t elen = sasl_base64_encode(bytes, len, enc, sizeof(enc));
		assert_int_equal(elen, (len + 2) / 3 * 4);
		CHECK_ST(sasl_base64_decode(enc, elen, back, sizeof(back), &n),
		    SASL_OK, len);
		assert_int_equal(n, len);
		assert_memory_equal(back, bytes, len);
	}
}

static const struct {
	const char *arg;
	size_t len;
	enum sasl_status want;
	enum sasl_mech mech;
	const char *ir;          /* NULL: no initial response */
} mech_cases[] = {
	{ S("PLAIN"), SASL_OK, SASL_MECH_PLAIN, NULL },
	{ S("plain"), SASL_OK, SASL_MECH_PLAIN, NULL },
	{ S("Login"), SASL_OK, SASL_MECH_LOGIN, NULL },
	{ S("PLAIN ="), SASL_OK, SASL_MECH_PLAIN, "=" },
	{ S("PLAIN AGFsaWNlAHNlY3JldA=="), SASL_OK, SASL_MECH_PLAIN,
	  "AGFsaWNlAHNlY3JldA==" },
	{ S("LOGIN YWxpY2U="), SASL_OK, SASL_MECH_LOGIN, "YWxpY2U=" },
	{ S("CRAM-MD5"), SASL_UNKNOWN_MECH, SASL_MECH_NONE, NULL },
	{ S("XOAUTH2 dXNlcj0="), SASL_UNKNOWN_MECH, SASL_MECH_NONE, NULL },
	{ S("SCRAM-SHA-256"), SASL_UNKNOWN_MECH, SASL_MECH_NONE, NULL },
	{ S("PLAINX"), SASL_UNKNOWN_MECH, SASL_MECH_NONE, NULL },
	{ S(""), SASL_BAD_SYNTAX, SASL_MECH_NONE, NULL },
	{ S(" PLAIN"), SASL_BAD_SYNTAX, SASL_MECH_NONE, NULL },
	{ S("PLAIN "), SASL_BAD_SYNTAX, SASL_MECH_NONE, NULL },
	{ S("PLAIN  AGFs"), SASL_BAD_SYNTAX, SASL_MECH_NONE, NULL },
	{ S("PLAIN AGFs AGFs"), SASL_BAD_SYNTAX, SASL_MECH_NONE, NULL },
	{ S("PLAIN AGFs\r"), SASL_BAD_SYNTAX, SASL_MECH_NONE, NULL },
	{ S("PL@IN"), SASL_BAD_SYNTAX, SASL_MECH_NONE, NULL },
	{ S("PLAIN\0"), SASL_BAD_SYNTAX, SASL_MECH_NONE, NULL },
	{ S("PLAIN\tAGFs"), SASL_BAD_SYNTAX, SASL_MECH_NONE, NULL },
	{ S("ABCDEFGHIJKLMNOPQRST"), SASL_UNKNOWN_MECH, SASL_MECH_NONE, NULL },
	{ S("ABCDEFGHIJKLMNOPQRSTU"), SASL_BAD_SYNTAX, SASL_MECH_NONE, NULL },
};

static void
test_mech_parse(void **state)
{
	size_t i, irlen;
	enum sasl_mech mech;
	const char *ir;
	int has_ir;

	for (i = 0; i < sizeof(mech_cases) / sizeof(mech_cases[0]); i++) {
		CHECK_ST(sasl_mech_parse(mech_cases[i].arg, mech_cases[i].len,
		    &mech, &ir, &irlen, &has_ir), mech_cases[i].want, i);
		assert_int_equal(mech, mech_cases[i].mech);
		if (mech_cases[i].ir == NULL) {
			assert_int_equal(has_ir, 0);
			assert_null(ir);
			assert_int_equal(irlen, 0);
		} else {
			assert_int_equal(has_ir, 1);
			/* borrowed from the argument */
			assert_true(ir > mech_cases[i].arg &&
			    ir + irlen == mech_cases[i].arg + mech_cases[i].len);
			assert_int_equal(irlen, strlen(mech_cases[i].ir));
			assert_memory_equal(ir, mech_cases[i].ir, irlen);
		}
	}
}

static const struct {
	const char *msg;
	size_t len;
	enum sasl_status want;
	const char *authzid, *user, *pass;
} plain_cases[] = {
	{ S("\0alice\0secret"), SASL_OK, "", "alice", "secret" },
	{ S("alice\0alice\0secret"), SASL_OK, "alice", "alice", "secret" },
	{ S("Alice@Example.COM\0ALICE@example.com\0s"), SASL_OK,
	  "alice@example.com", "alice@example.com", "s" },
	/* the password is kept exactly: case, spaces, 8-bit */
	{ S("\0u\0PaSs W\xff\x01"), SASL_OK, "", "u", "PaSs W\xff\x01" },
	{ S("bob\0alice\0secret"), SASL_AUTHZ_DENIED, "", "", "" },
	{ S("alice\0secret"), SASL_BAD_CREDS, "", "", "" },
	{ S("alicesecret"), SASL_BAD_CREDS, "", "", "" },
	{ S(""), SASL_BAD_CREDS, "", "", "" },
	{ S("\0"), SASL_BAD_CREDS, "", "", "" },
	{ S("\0\0"), SASL_BAD_CREDS, "", "", "" },
	{ S("\0\0secret"), SASL_BAD_CREDS, "", "", "" },
	{ S("\0alice\0"), SASL_BAD_CREDS, "", "", "" },
	{ S("\0alice\0sec\0ret"), SASL_BAD_CREDS, "", "", "" },
	{ S("\0alice\0secret\0"), SASL_BAD_CREDS, "", "", "" },
};

static void
check_creds_empty(const struct sasl_creds *c)
{
	static const struct sasl_creds zero;
	assert_memory_equal(c, &zero, sizeof(zero));
}

static void
test_plain_parse(void **state)
{
	struct sasl_creds c;
	size_t i;

	for (i = 0; i < sizeof(plain_cases) / sizeof(plain_cases[0]); i++) {
		memset(&c, 'x', sizeof(c));
		CHECK_ST(sasl_plain_parse((const unsigned char *)
		    plain_cases[i].msg, plain_cases[i].len, &c),
		    plain_cases[i].want, i);
		if (plain_cases[i].want != SASL_OK) {
			check_creds_empty(&c);
			continue;
		}
		assert_string_equal(c.authzid, plain_cases[i].authzid);
		assert_string_equal(c.user, plain_cases[i].user);
		assert_string_equal(c.pass, plain_cases[i].pass);
	}
}

/* Build "[z] NUL u NUL p" with fields of the given lengths. */
static size_t
plain_build(unsigned char *buf, size_t zlen, size_t ulen, size_t plen)
{
	size_t n = 0;
	memset(buf + n, 'u', zlen);    /* authzid == authcid when both 'u's */
	n += zlen;
	buf[n++] = '\0';
	memset(buf + n, 'u', ulen);
	n += ulen;
	buf[n++] = '\0';
	memset(buf + n, 'p', plen);
	n += plen;
	return n;
}

static void
test_plain_lengths(void **state)
{
	static const struct {
		size_t z, u, p;
		enum sasl_status want;
	} cases[] = {
		{ 0, 255, 255, SASL_OK },
		{ 255, 255, 255, SASL_OK },
		{ 0, 256, 1, SASL_TOO_LONG },
		{ 0, 1, 256, SASL_TOO_LONG },
		{ 256, 1, 1, SASL_TOO_LONG },
		{ 1, 1, 1, SASL_OK },
		{ 2, 1, 1, SASL_AUTHZ_DENIED },   /* "uu" != "u" */
	};
	unsigned char buf[1024];
	struct sasl_creds c;
	size_t i, n;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		n = plain_build(buf, cases[i].z, cases[i].u, cases[i].p);
		CHECK_ST(sasl_plain_parse(buf, n, &c), cases[i].want, i);
		if (cases[i].want == SASL_OK) {
			assert_int_equal(strlen(c.user), cases[i].u);
			assert_int_equal(strlen(c.pass), cases[i].p);
		} else {
			check_creds_empty(&c);
		}
	}
}

/* A whole exchange: AUTH argument, then client lines, with each status. */
#define MAXSTEPS 4
static const struct {
	const char *arg;
	enum sasl_status first;
	const char *prompt;                  /* after the start */
	const char *lines[MAXSTEPS];
	enum sasl_status want[MAXSTEPS];
	const char *user, *pass;             /* when the last is SASL_OK */
} ex_cases[] = {
	{ "PLAIN", SASL_CONTINUE, "", { "AGFsaWNlAHNlY3JldA==" },
	  { SASL_OK }, "alice", "secret" },
	{ "PLAIN AGFsaWNlAHNlY3JldA==", SASL_OK, "", { NULL }, { 0 },
	  "alice", "secret" },
	{ "plain YWxpY2UAYWxpY2UAc2VjcmV0", SASL_OK, "", { NULL }, { 0 },
	  "alice", "secret" },
	{ "PLAIN Ym9iAGFsaWNlAHNlY3JldA==", SASL_AUTHZ_DENIED, "", { NULL },
	  { 0 }, NULL, NULL },
	{ "PLAIN =", SASL_BAD_CREDS, "", { NULL }, { 0 }, NULL, NULL },
	{ "PLAIN !!!!", SASL_BAD_BASE64, "", { NULL }, { 0 }, NULL, NULL },
	{ "PLAIN", SASL_CONTINUE, "", { "*" }, { SASL_CANCELLED }, NULL, NULL },
	{ "PLAIN", SASL_CONTINUE, "", { "AGFsaWNl AHNlY3JldA==" },
	  { SASL_BAD_BASE64 }, NULL, NULL },
	{ "PLAIN", SASL_CONTINUE, "", { "" }, { SASL_BAD_CREDS }, NULL, NULL },
	{ "LOGIN", SASL_CONTINUE, "VXNlcm5hbWU6", { "YWxpY2U=", "c2VjcmV0" },
	  { SASL_CONTINUE, SASL_OK }, "alice", "secret" },
	{ "LOGIN QWxJY0U=", SASL_CONTINUE, "UGFzc3dvcmQ6", { "c2VjcmV0" },
	  { SASL_OK }, "alice", "secret" },
	{ "LOGIN", SASL_CONTINUE, "VXNlcm5hbWU6", { "*" },
	  { SASL_CANCELLED }, NULL, NULL },
	{ "LOGIN", SASL_CONTINUE, "VXNlcm5hbWU6", { "YWxpY2U=", "*" },
	  { SASL_CONTINUE, SASL_CANCELLED }, NULL, NULL },
	{ "LOGIN", SASL_CONTINUE, "VXNlcm5hbWU6", { "" },
	  { SASL_BAD_CREDS }, NULL, NULL },
	{ "LOGIN", SASL_CONTINUE, "VXNlcm5hbWU6", { "YWxpY2U=", "" },
	  { SASL_CONTINUE, SASL_BAD_CREDS }, NULL, NULL },
	{ "LOGIN", SASL_CONTINUE, "VXNlcm5hbWU6", { "YQBi" },  /* "a\0b" */
	  { SASL_BAD_CREDS }, NULL, NULL },
	{ "LOGIN", SASL_CONTINUE, "VXNlcm5hbWU6", { "YWxpY2U=", "c2Vj=" },
	  { SASL_CONTINUE, SASL_BAD_BASE64 }, NULL, NULL },
	{ "LOGIN =", SASL_BAD_CREDS, "", { NULL }, { 0 }, NULL, NULL },
	{ "DIGEST-MD5", SASL_UNKNOWN_MECH, "", { NULL }, { 0 }, NULL, NULL },
	/* after the end, more lines are a protocol error */
	{ "PLAIN", SASL_CONTINUE, "", { "AGFsaWNlAHNlY3JldA==", "AGE=" },
	  { SASL_OK, SASL_BAD_SYNTAX }, NULL, NULL },
};

static void
test_exchange(void **state)
{
	struct sasl x;
	enum sasl_status st;
	size_t i, k;

	for (i = 0; i < sizeof(ex_cases) / sizeof(ex_cases[0]); i++) {
		memset(&x, 0, sizeof(x));
		st = sasl_start(&x, ex_cases[i].arg, strlen(ex_cases[i].arg));
		CHECK_ST(st, ex_cases[i].first, i);
		if (st == SASL_CONTINUE)
			assert_string_equal(sasl_prompt(&x), ex_cases[i].prompt);
		for (k = 0; k < MAXSTEPS && ex_cases[i].lines[k] != NULL; k++) {
			const char *l = ex_cases[i].lines[k];
			st = sasl_step(&x, l, strlen(l));
			CHECK_ST(st, ex_cases[i].want[k], i * 10 + k);
			if (st == SASL_CONTINUE)
				assert_string_equal(sasl_prompt(&x),
				    "UGFzc3dvcmQ6");
		}
		if (ex_cases[i].user != NULL) {
			assert_int_equal(st, SASL_OK);
			assert_string_equal(x.creds.user, ex_cases[i].user);
			assert_string_equal(x.creds.pass, ex_cases[i].pass);
			sasl_wipe(&x);
			check_creds_empty(&x.creds);
		} else if (st != SASL_OK) {
			/* every failure leaves nothing behind */
			check_creds_empty(&x.creds);
		}
	}
}

static void
test_exchange_long(void **state)
{
	unsigned char raw[1024];
	char line[2048];
	struct sasl x;
	size_t n;

	/* LOGIN: a 255-octet user name fits, 256 is too long. */
	memset(raw, 'a', sizeof(raw));
	for (n = 255; n <= 256; n++) {
		size_t l = sasl_base64_encode(raw, n, line, sizeof(line));
		memset(&x, 0, sizeof(x));
		CHECK_ST(sasl_start(&x, S("LOGIN")), SASL_CONTINUE, n);
		CHECK_ST(sasl_step(&x, line, l),
		    n == 255 ? SASL_CONTINUE : SASL_TOO_LONG, n);
		CHECK_ST(sasl_step(&x, line, l),
		    n == 255 ? SASL_OK : SASL_BAD_SYNTAX, n);
		sasl_wipe(&x);
	}
	/* PLAIN: 767 decoded octets is the largest message (3 x 255 + 2). */
	n = plain_build(raw, 255, 255, 255);
	assert_int_equal(n, SASL_DECODED_MAX);
	{
		size_t l = sasl_base64_encode(raw, n, line, sizeof(line));
		memset(&x, 0, sizeof(x));
		CHECK_ST(sasl_start(&x, S("PLAIN")), SASL_CONTINUE, 0);
		CHECK_ST(sasl_step(&x, line, l), SASL_OK, 0);
		sasl_wipe(&x);
	}
	raw[n] = 'p';
	{
		size_t l = sasl_base64_encode(raw, n + 1, line, sizeof(line));
		memset(&x, 0, sizeof(x));
		CHECK_ST(sasl_start(&x, S("PLAIN")), SASL_CONTINUE, 1);
		CHECK_ST(sasl_step(&x, line, l), SASL_TOO_LONG, 1);
	}
	/* a huge line, too */
	memset(line, 'A', sizeof(line));
	memset(&x, 0, sizeof(x));
	CHECK_ST(sasl_start(&x, S("PLAIN")), SASL_CONTINUE, 2);
	CHECK_ST(sasl_step(&x, line, sizeof(line)), SASL_TOO_LONG, 2);
}

static void
test_replies(void **state)
{
	static const struct {
		enum sasl_status st;
		int code;
		const char *enh;
	} cases[] = {
		{ SASL_BAD_BASE64, 501, "5.5.2" },
		{ SASL_CANCELLED, 501, "5.0.0" },
		{ SASL_UNKNOWN_MECH, 504, "5.5.4" },
		{ SASL_BAD_SYNTAX, 501, "5.5.4" },
		{ SASL_TOO_LONG, 500, "5.5.6" },
		{ SASL_BAD_CREDS, 535, "5.7.8" },
		{ SASL_AUTHZ_DENIED, 535, "5.7.8" },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct sasl_reply *r = sasl_status_reply(cases[i].st);
		assert_int_equal(r->code, cases[i].code);
		assert_string_equal(r->enhanced, cases[i].enh);
		assert_true(strlen(r->text) > 0);
	}
	assert_int_equal(sasl_status_reply(SASL_CONTINUE)->code, 334);
	assert_int_equal(sasl_status_reply(SASL_OK)->code, 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base64_vectors),
		cmocka_unit_test(test_base64_bad),
		cmocka_unit_test(test_base64_bounds),
		cmocka_unit_test(test_mech_parse),
		cmocka_unit_test(test_plain_parse),
		cmocka_unit_test(test_plain_lengths),
		cmocka_unit_test(test_exchange),
		cmocka_unit_test(test_exchange_long),
		cmocka_unit_test(test_replies),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
