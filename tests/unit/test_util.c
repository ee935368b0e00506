/* test_util.c - log_escape, qid, crc32c, tq. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "tern/log.h"
#include "tern/tq.h"
#include "tern/util.h"

static void
test_log_escape(void **state)
{
	char buf[64];
	assert_string_equal(log_escape(buf, sizeof(buf), "ab\r\nc\\", 6),
	    "ab\\x0d\\x0ac\\x5c");
	assert_string_equal(log_escape(buf, 8, "abcdefghijkl", 12), "abcd...");
	assert_string_equal(log_escape(buf, sizeof(buf), "\xff", 1), "\\xff");
	assert_string_equal(log_escape(buf, sizeof(buf), "", 0), "");
}

static void
test_qid(void **state)
{
	char s[QID_STRLEN + 1];
	uint64_t v;
	qid_format(0x0123456789abcdefULL, s);
	assert_string_equal(s, "0123456789abcdef");
	assert_int_equal(qid_parse(s, &v), 0);
	assert_true(v == 0x0123456789abcdefULL);
	assert_int_equal(qid_parse("0123456789ABCDEF", &v), 0);
	assert_int_equal(qid_parse("0123456789abcde", &v), -1);
	assert_int_equal(qid_parse("0123456789abcdef0", &v), -1);
	assert_int_equal(qid_parse("0123456789abcdeg", &v), -1);
	qid_format(0, s);
	assert_string_equal(s, "0000000000000000");
	qid_format(UINT64_MAX, s);
	assert_string_equal(s, "ffffffffffffffff");
	for (uint64_t x = 1, i = 0; i < 200;
	    i++, x = x * 7 + 0x9e3779b97f4a7c15ULL) {
		char want[QID_STRLEN + 1];
		snprintf(want, sizeof(want), "%016llx", (unsigned long long)x);
		qid_format(x, s);
		assert_string_equal(s, want);
	}
}

static void
test_crc32c(void **state)
{
	/* RFC 3720 B.4 test vectors */
	uint8_t zeros[32] = { 0 }, ones[32], inc[32];
	memset(ones, 0xff, sizeof(ones));
	for (int i = 0; i < 32; i++)
		inc[i] = (uint8_t)i;
	assert_true(crc32c(0, zeros, 32) == 0x8a9136aaU);
	assert_true(crc32c(0, ones, 32) == 0x62a8ab43U);
	assert_true(crc32c(0, inc, 32) == 0x46dd794eU);
	assert_true(crc32c(0, "123456789", 9) == 0xe3069283U);
	/* incremental == whole */
	assert_true(crc32c(crc32c(0, "1234", 4), "56789", 5) == 0xe3069283U);
}

/* Bit by bit, as the definition: the reference for the fast paths. */
static uint32_t
crc32c_bitwise(uint32_t crc, const unsigned char *p, size_t len)
{
	crc = ~crc;
	while (len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc & 1) ? (crc >> 1) ^ 0x82F63B78u : crc >> 1;
	}
	return ~crc;
}

/*
 * Long buffers go through three interleaved streams joined by a shift
 * table (8 KiB blocks, then 256 bytes): every length around those block
 * sizes, at every alignment, and split at odd places, equals the bitwise
 * definition.
 */
static void
test_crc32c_long(void **state)
{
	static const size_t lens[] = { 0, 1, 7, 8, 9, 255, 256, 767, 768, 769,
	    775, 1024, 3 * 256 * 2 + 13, 8191, 8192, 24575, 24576, 24577,
	    24576 + 768, 24576 + 767, 3 * 24576 + 100, 102400 + 333 };
	size_t max = 3 * 24576 + 100 + 8;
	unsigned char *buf = malloc(max + 102400 + 400);
	uint32_t x = 12345;

	(void)state;
	assert_non_null(buf);
	for (size_t i = 0; i < max + 102400 + 400; i++) {
		x = x * 1103515245u + 12345u;
		buf[i] = (unsigned char)(x >> 16);
	}
	for (size_t l = 0; l < sizeof(lens) / sizeof(lens[0]); l++)
		for (size_t a = 0; a < 8; a++) {
			uint32_t want = crc32c_bitwise(0x5a5a5a5a, buf + a,
			    lens[l]);
			uint32_t got = crc32c(0x5a5a5a5a, buf + a, lens[l]);
			if (got != want)
				fail_msg("len %zu align %zu: %08x, want %08x",
				    lens[l], a, got, want);
			if (lens[l] > 1001) {
				size_t cut = lens[l] / 3 + 1;
				got = crc32c(crc32c(0x5a5a5a5a, buf + a, cut),
				    buf + a + cut, lens[l] - cut);
				assert_true(got == want);
			}
		}
	free(buf);
}

static void
test_utf8_seq_len(void **state)
{
	static const struct { const char *s; size_t n, want; } t[] = {
		{ "a", 1, 1 },
		{ "\xc3\xa9", 2, 2 },             /* U+00E9 */
		{ "\xc3", 1, 0 },                 /* truncated */
		{ "\xc0\xaf", 2, 0 },             /* overlong '/' */
		{ "\xe0\x80\xaf", 3, 0 },         /* overlong */
		{ "\xe2\x82\xac", 3, 3 },         /* U+20AC */
		{ "\xed\xa0\x80", 3, 0 },         /* surrogate U+D800 */
		{ "\xf0\x9f\x98\x80", 4, 4 },     /* U+1F600 */
		{ "\xf4\x90\x80\x80", 4, 0 },     /* above U+10FFFF */
		{ "\xff", 1, 0 },
		{ "\x80", 1, 0 },                 /* lone continuation */
		{ "\xe2\x28\xa1", 3, 0 },         /* bad continuation */
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		assert_int_equal(utf8_seq_len((const unsigned char *)t[i].s, t[i].n),
		    t[i].want);
	assert_int_equal(utf8_seq_len((const unsigned char *)"", 0), 0);
}

static int tq_seen[3];
static int tq_n;

static void
tq_test_handler(struct tq_msg *m, void *arg)
{
	tq_seen[tq_n++] = (int)m->reqid;
	if (tq_n == 3)
		event_base_loopbreak(arg);
	free(m);
}

static void
test_tq_order(void **state)
{
	struct event_base *base = event_base_new();
	struct tq *q = tq_new(base, tq_test_handler, base);
	for (int i = 0; i < 3; i++) {
		struct tq_msg *m = calloc(1, sizeof(*m));
		m->type = TQ_STOP;
		m->reqid = (uint64_t)(10 + i);
		tq_post(q, m);
	}
	event_base_dispatch(base);
	assert_int_equal(tq_n, 3);
	assert_int_equal(tq_seen[0], 10);
	assert_int_equal(tq_seen[2], 12);
	tq_free(q);
	event_base_free(base);
}

/* FNV-1a 32-bit reference vectors. */
static void
test_fnv1a32(void **state)
{
	(void)state;
	static const struct { const char *in; uint32_t h; } cases[] = {
		{ "", 0x811c9dc5u },
		{ "a", 0xe40c292cu },
		{ "foobar", 0xbf9cf968u },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		assert_int_equal(fnv1a32(FNV1A32_INIT, cases[i].in,
		    strlen(cases[i].in)), cases[i].h);
}

/* RFC 4648 section 10 vectors both ways, and what strict decoding refuses. */
static void
test_base64(void **state)
{
	(void)state;
	static const struct { const char *raw, *b64; } ok[] = {
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" },
		{ "foobar", "Zm9vYmFy" },
	};
	static const char *const bad[] = {
		"Zg=", "Zh==", "Zm9=", "Z===", "Zg==Zg==", "Zm 9v", "Zm9v\n",
		"=Zm9", "Zm=v",
	};
	char enc[16];
	unsigned char dec[16];
	size_t n;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		size_t rl = strlen(ok[i].raw), bl = strlen(ok[i].b64);
		assert_int_equal(base64_encode(ok[i].raw, rl, enc, sizeof(enc)), bl);
		assert_string_equal(enc, ok[i].b64);
		assert_int_equal(base64_decode(ok[i].b64, bl, dec, sizeof(dec), &n), 0);
		assert_int_equal(n, rl);
		assert_memory_equal(dec, ok[i].raw, rl);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(base64_decode(bad[i], strlen(bad[i]), dec,
		    sizeof(dec), &n), BASE64_E_SYNTAX);
	assert_int_equal(base64_decode("Zm9vYmFy", 8, dec, 5, &n), BASE64_E_SPACE);
	assert_int_equal(base64_encode("foo", 3, enc, 4), 0);   /* no room for NUL */
	assert_string_equal(enc, "");
}

/* json_escape() stops before a character that does not fit, never inside. */
static void
test_json_escape(void **state)
{
	(void)state;
	static const struct {
		const char *in; size_t len, room; const char *out; size_t used;
	} cases[] = {
		{ "ab\"c", 4, 64, "ab\\\"c", 4 },
		{ "ab\"c", 4, 3, "ab", 2 },             /* \" needs two */
		{ "\x01", 1, 5, "", 0 },                 /* \u0001 needs six */
		{ "\x01", 1, 6, "\\u0001", 1 },
		{ "x\xc3\xa9", 3, 2, "x", 1 },           /* not half of é */
		{ "x\xc3\xa9", 3, 3, "x\xc3\xa9", 3 },
		{ "\x7f\xff", 2, 64, "\\u007f\\u00ff", 2 },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char out[64];
		size_t used, n = json_escape(out, cases[i].room, cases[i].in,
		    cases[i].len, &used);
		out[n] = '\0';
		assert_string_equal(out, cases[i].out);
		assert_int_equal(used, cases[i].used);
	}
}

static void
test_has_8bit(void **state)
{
	(void)state;
	assert_false(has_8bit(NULL, 0));
	assert_false(has_8bit("plain ascii\r\n", 13));
	assert_true(has_8bit("caf\xc3\xa9", 5));
	assert_false(has_8bit("caf\xc3\xa9", 3));         /* only what is given */
	assert_true(has_8bit("\x80", 1));
	assert_false(has_8bit("\x7f\x00", 2));
}

int
main(void)
{
	evthread_use_pthreads();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_log_escape),
		cmocka_unit_test(test_qid),
		cmocka_unit_test(test_crc32c),
		cmocka_unit_test(test_crc32c_long),
		cmocka_unit_test(test_fnv1a32),
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_json_escape),
		cmocka_unit_test(test_utf8_seq_len),
		cmocka_unit_test(test_tq_order),
		cmocka_unit_test(test_has_8bit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
