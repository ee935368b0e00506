/* test_json.c - JSON writer escaping, parser accept/reject table, round trip. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tern/json.h"

/* Write one string value and return the text (caller frees). */
static char *
json_test_str(const char *s, size_t len)
{
	struct json_writer w;
	json_writer_init(&w);
	json_put_strn(&w, s, len);
	char *out = json_writer_finish(&w, NULL);
	assert_non_null(out);
	return out;
}

static void
test_writer_escape(void **state)
{
	static const struct {
		const char *in;
		size_t len;
		const char *out;
	} cases[] = {
		{ "plain", 5, "\"plain\"" },
		{ "", 0, "\"\"" },
		{ "a\"b\\c", 5, "\"a\\\"b\\\\c\"" },
		{ "\n\r\t\b\f", 5, "\"\\n\\r\\t\\b\\f\"" },
		{ "\x01\x1f\x7f", 3, "\"\\u0001\\u001f\\u007f\"" }, /* DEL too, as in log lines */
		{ "a\0b", 3, "\"a\\u0000b\"" },
		{ "/", 1, "\"/\"" },
		/* valid UTF-8 passes as is */
		{ "\xc3\xa9", 2, "\"\xc3\xa9\"" },
		{ "\xe2\x82\xac", 3, "\"\xe2\x82\xac\"" },
		{ "\xf0\x9f\x98\x80", 4, "\"\xf0\x9f\x98\x80\"" },
		/* invalid UTF-8: each bad byte as \u00XX */
		{ "\xff", 1, "\"\\u00ff\"" },
		{ "\xc3", 1, "\"\\u00c3\"" },                   /* truncated */
		{ "\xc3(", 2, "\"\\u00c3(\"" },                 /* bad continuation */
		{ "\xc0\xaf", 2, "\"\\u00c0\\u00af\"" },         /* overlong '/' */
		{ "\xed\xa0\x80", 3, "\"\\u00ed\\u00a0\\u0080\"" }, /* surrogate */
		{ "\xf4\x90\x80\x80", 4, "\"\\u00f4\\u0090\\u0080\\u0080\"" }, /* > U+10FFFF */
		{ "\x80x\xe2\x82", 4, "\"\\u0080x\\u00e2\\u0082\"" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out = json_test_str(cases[i].in, cases[i].len);
		if (strcmp(out, cases[i].out) != 0)
			fail_msg("case %zu: got %s want %s", i, out, cases[i].out);
		/* and what we write is always valid JSON */
		size_t used;
		assert_int_equal(json_parse(out, strlen(out), NULL, 0, 4, &used), JSON_OK);
		free(out);
	}
}

static void
test_writer_structure(void **state)
{
	struct json_writer w;
	size_t len;

	json_writer_init(&w);
	json_obj_open(&w);
	json_key(&w, "ok");
	json_put_bool(&w, 1);
	json_key(&w, "n");
	json_put_int(&w, INT64_MIN);
	json_key(&w, "u");
	json_put_uint(&w, UINT64_MAX);
	json_key(&w, "a");
	json_arr_open(&w);
	json_put_null(&w);
	json_put_str(&w, NULL);
	json_put_bool(&w, 0);
	json_arr_open(&w);
	json_arr_close(&w);
	json_obj_open(&w);
	json_obj_close(&w);
	json_arr_close(&w);
	json_key(&w, "b");
	json_put_base64(&w, "hello", 5);
	json_obj_close(&w);
	char *out = json_writer_finish(&w, &len);
	assert_non_null(out);
	assert_string_equal(out, "{\"ok\":true,\"n\":-9223372036854775808,"
	    "\"u\":18446744073709551615,\"a\":[null,null,false,[],{}],"
	    "\"b\":\"aGVsbG8=\"}");
	assert_int_equal(len, strlen(out));
	free(out);

	/* misuse: a value without a key in an object, unclosed, two roots */
	json_writer_init(&w);
	json_obj_open(&w);
	json_put_int(&w, 1);
	json_obj_close(&w);
	assert_null(json_writer_finish(&w, NULL));
	json_writer_init(&w);
	json_arr_open(&w);
	assert_null(json_writer_finish(&w, NULL));
	json_writer_init(&w);
	json_put_int(&w, 1);
	json_put_int(&w, 2);
	assert_null(json_writer_finish(&w, NULL));
	json_writer_init(&w);
	json_arr_open(&w);
	json_obj_close(&w);
	assert_null(json_writer_finish(&w, NULL));
	/* too deep */
	json_writer_init(&w);
	for (int i = 0; i < JSON_MAX_DEPTH + 1; i++)
		json_arr_open(&w);
	assert_true(w.failed != 0);
	assert_null(json_writer_finish(&w, NULL));
}

static void
test_base64(void **state)
{
	static const struct { const char *raw; const char *b64; } cases[] = {
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct json_writer w;
		char want[64];
		uint8_t dec[64];
		json_writer_init(&w);
		json_put_base64(&w, cases[i].raw, strlen(cases[i].raw));
		char *out = json_writer_finish(&w, NULL);
		snprintf(want, sizeof(want), "\"%s\"", cases[i].b64);
		assert_string_equal(out, want);
		free(out);
		long n = json_base64_decode(cases[i].b64, strlen(cases[i].b64), dec);
		assert_int_equal(n, (long)strlen(cases[i].raw));
		assert_memory_equal(dec, cases[i].raw, (size_t)n);
	}
	/* all byte values survive */
	uint8_t all[256], back[256];
	for (int i = 0; i < 256; i++)
		all[i] = (uint8_t)(255 - i);
	struct json_writer w;
	json_writer_init(&w);
	json_put_base64(&w, all, sizeof(all));
	size_t len;
	char *out = json_writer_finish(&w, &len);
	assert_int_equal(json_base64_decode(out + 1, len - 2, back), 256);
	assert_memory_equal(all, back, 256);
	free(out);

	static const char *bad[] = { "Zg=", "Zg=a", "Z===", "Zh==", "Zm9=", "Zm 9",
	    "Zg==Zg==", "====", "Zm9v\n" };
	uint8_t dec[16];
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (json_base64_decode(bad[i], strlen(bad[i]), dec) != -1)
			fail_msg("accepted bad base64 %s", bad[i]);
}

static void
test_parse_table(void **state)
{
	static const struct {
		const char *in;
		enum json_status want;
	} cases[] = {
		{ "{}", JSON_OK },
		{ "[]", JSON_OK },
		{ " \t\r\n{ \"a\" : [ 1 , -2 , true , false , null ] } \n", JSON_OK },
		{ "\"x\"", JSON_OK },
		{ "0", JSON_OK },
		{ "-0", JSON_OK },
		{ "9223372036854775807", JSON_OK },
		{ "-9223372036854775808", JSON_OK },
		{ "\"\\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u00e9 \\uD83D\\uDE00\"", JSON_OK },
		{ "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"", JSON_OK },
		{ "{\"a\":{\"b\":{\"c\":[[[]]]}}}", JSON_OK },
		{ "", JSON_E_SYNTAX },
		{ "   ", JSON_E_SYNTAX },
		{ "{", JSON_E_SYNTAX },
		{ "{\"a\"}", JSON_E_SYNTAX },
		{ "{\"a\":}", JSON_E_SYNTAX },
		{ "{\"a\":1,}", JSON_E_SYNTAX },
		{ "[1,]", JSON_E_SYNTAX },
		{ "[,1]", JSON_E_SYNTAX },
		{ "{a:1}", JSON_E_SYNTAX },
		{ "{1:1}", JSON_E_SYNTAX },
		{ "['a']", JSON_E_SYNTAX },
		{ "tru", JSON_E_SYNTAX },
		{ "True", JSON_E_SYNTAX },
		{ "nul", JSON_E_SYNTAX },
		{ "01", JSON_E_SYNTAX },
		{ "-", JSON_E_SYNTAX },
		{ "+1", JSON_E_SYNTAX },
		{ "\"abc", JSON_E_SYNTAX },
		{ "\"a\nb\"", JSON_E_SYNTAX },
		{ "\"\\x\"", JSON_E_SYNTAX },
		{ "\"\\u12\"", JSON_E_SYNTAX },
		{ "\"\\u12G4\"", JSON_E_SYNTAX },
		{ "\"\\", JSON_E_SYNTAX },
		{ "1.5", JSON_E_NUMBER },
		{ "1e3", JSON_E_NUMBER },
		{ "9223372036854775808", JSON_E_NUMBER },
		{ "-9223372036854775809", JSON_E_NUMBER },
		{ "99999999999999999999", JSON_E_NUMBER },
		{ "\"\\uD83D\"", JSON_E_UTF8 },            /* lone high surrogate */
		{ "\"\\uDE00\"", JSON_E_UTF8 },            /* lone low surrogate */
		{ "\"\\uDE00\\uD83D\"", JSON_E_UTF8 },     /* reversed */
		{ "\"\\uD83D\\u0041\"", JSON_E_UTF8 },
		{ "\"\xff\"", JSON_E_UTF8 },
		{ "\"\xc0\xaf\"", JSON_E_UTF8 },
		{ "\"\xed\xa0\x80\"", JSON_E_UTF8 },
		{ "\"\xe2\x82\"", JSON_E_UTF8 },
		{ "{} x", JSON_E_TRAILING },
		{ "{}{}", JSON_E_TRAILING },
		{ "1 2", JSON_E_TRAILING },
		{ "[[[[[[[[[[]]]]]]]]]]", JSON_E_DEPTH },  /* 10 > 8 */
		{ "[[[[[[[[]]]]]]]]", JSON_OK },            /* 8 */
	};
	struct json_tok toks[64];
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t used;
		enum json_status st = json_parse(cases[i].in, strlen(cases[i].in),
		    toks, 64, 8, &used);
		if (st != cases[i].want)
			fail_msg("case %zu %s: got %s want %s", i, cases[i].in,
			    json_strerror(st), json_strerror(cases[i].want));
		/* counting mode agrees */
		size_t counted;
		st = json_parse(cases[i].in, strlen(cases[i].in), NULL, 0, 8, &counted);
		assert_int_equal(st, cases[i].want);
		if (st == JSON_OK)
			assert_int_equal(counted, used);
	}
	/* a NUL byte inside the range is just a bad byte, not an end */
	assert_int_equal(json_parse("[1]\0", 4, toks, 64, 8, NULL), JSON_E_TRAILING);
	/* not enough tokens */
	assert_int_equal(json_parse("[1,2,3]", 7, toks, 3, 8, NULL), JSON_E_TOKENS);
	assert_int_equal(json_parse("[1,2,3]", 7, toks, 4, 8, NULL), JSON_OK);
}

static void
test_parse_tokens(void **state)
{
	const char *doc = "{\"v\":1,\"cmd\":\"show\",\"nested\":{\"x\":[1,2]},"
	    "\"id\":\"0123456789abcdef\",\"e\\u0073c\":\"a\\nb\\u00e9\\uD83D\\uDE00\","
	    "\"neg\":-42,\"t\":true}";
	struct json_tok toks[32];
	size_t used;
	char buf[64];

	assert_int_equal(json_parse(doc, strlen(doc), toks, 32, 8, &used), JSON_OK);
	assert_int_equal(toks[0].type, JSON_OBJECT);
	assert_int_equal(toks[0].size, 7);
	assert_int_equal(toks[0].next, used);
	long v = json_obj_find(doc, toks, 0, "v");
	assert_true(v > 0);
	assert_int_equal(toks[v].type, JSON_NUMBER);
	assert_int_equal(toks[v].num, 1);
	long c = json_obj_find(doc, toks, 0, "cmd");
	assert_true(json_str_eq(doc, &toks[c], "show"));
	assert_false(json_str_eq(doc, &toks[c], "sho"));
	assert_false(json_str_eq(doc, &toks[c], "shows"));
	/* the key after a nested object is still found (skips the subtree) */
	long id = json_obj_find(doc, toks, 0, "id");
	assert_true(id > 0);
	assert_int_equal(json_str_decode(doc, &toks[id], buf, sizeof(buf)), 16);
	assert_string_equal(buf, "0123456789abcdef");
	/* escaped key, escaped value */
	long e = json_obj_find(doc, toks, 0, "esc");
	assert_true(e > 0);
	assert_int_equal(json_str_decode(doc, &toks[e], buf, sizeof(buf)), 9);
	assert_string_equal(buf, "a\nb\xc3\xa9\xf0\x9f\x98\x80");
	assert_true(json_str_eq(doc, &toks[e], "a\nb\xc3\xa9\xf0\x9f\x98\x80"));
	/* too small an output buffer */
	assert_int_equal(json_str_decode(doc, &toks[e], buf, 9), -1);
	assert_int_equal(json_str_decode(doc, &toks[e], buf, 10), 9);
	long neg = json_obj_find(doc, toks, 0, "neg");
	assert_int_equal(toks[neg].num, -42);
	long t = json_obj_find(doc, toks, 0, "t");
	assert_int_equal(toks[t].type, JSON_TRUE);
	assert_int_equal(json_obj_find(doc, toks, 0, "missing"), -1);
	long n = json_obj_find(doc, toks, 0, "nested");
	assert_int_equal(json_obj_find(doc, toks, (size_t)n, "x"), n + 2);
	assert_int_equal(json_obj_find(doc, toks, (size_t)v, "x"), -1);  /* not an object */

	/* \u0000 decodes to a NUL byte inside the length */
	const char *z = "\"a\\u0000b\"";
	assert_int_equal(json_parse(z, strlen(z), toks, 32, 8, &used), JSON_OK);
	assert_int_equal(json_str_decode(z, &toks[0], buf, sizeof(buf)), 3);
	assert_memory_equal(buf, "a\0b", 3);
}

/* Valid UTF-8 text (every ASCII byte, control bytes included, and multi-byte
 * characters) written by the writer parses back to the same bytes. */
static void
test_round_trip(void **state)
{
	char in[300];
	size_t n = 0;
	for (int i = 0; i < 128; i++)
		in[n++] = (char)i;
	memcpy(in + n, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9);
	n += 9;

	struct json_writer w;
	json_writer_init(&w);
	json_obj_open(&w);
	json_key(&w, "k\"ey\n");
	json_put_strn(&w, in, n);
	json_key(&w, "num");
	json_put_int(&w, -1234567890123LL);
	json_obj_close(&w);
	size_t len;
	char *out = json_writer_finish(&w, &len);
	assert_non_null(out);

	struct json_tok toks[8];
	size_t used;
	char dec[400];
	assert_int_equal(json_parse(out, len, toks, 8, 4, &used), JSON_OK);
	assert_int_equal(used, 5);
	long k = json_obj_find(out, toks, 0, "k\"ey\n");
	assert_int_equal(k, 2);
	assert_int_equal(json_str_decode(out, &toks[k], dec, sizeof(dec)), (long)n);
	assert_memory_equal(dec, in, n);
	long num = json_obj_find(out, toks, 0, "num");
	assert_int_equal(toks[num].num, -1234567890123LL);
	free(out);

	/* an invalid byte reads back as its Latin-1 character */
	out = json_test_str("\xff", 1);
	assert_int_equal(json_parse(out, strlen(out), toks, 8, 4, &used), JSON_OK);
	assert_int_equal(json_str_decode(out, &toks[0], dec, sizeof(dec)), 2);
	assert_memory_equal(dec, "\xc3\xbf", 2);
	free(out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_writer_escape),
		cmocka_unit_test(test_writer_structure),
		cmocka_unit_test(test_base64),
		cmocka_unit_test(test_parse_table),
		cmocka_unit_test(test_parse_tokens),
		cmocka_unit_test(test_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
