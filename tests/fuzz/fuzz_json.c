/*
 * fuzz_json.c - the JSON parser on arbitrary bytes, with oracles:
 *  - counting mode and filling mode agree;
 *  - a document that parses is written back by the writer (strings decoded,
 *    re-encoded), parses again, and gives the same tree (types, sizes,
 *    numbers, decoded strings), and writing it a second time gives the same
 *    bytes (the writer is stable);
 *  - the writer, given the input as one string, always produces JSON that
 *    parses, and valid UTF-8 input decodes back to itself;
 *  - base64 of the input decodes back to the input.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_DEPTH 16

static void
fuzz_json_emit(struct json_writer *w, const char *p, const struct json_tok *t,
    size_t i)
{
	const struct json_tok *k = &t[i];
	char *s;
	long n;

	switch (k->type) {
	case JSON_NULL: json_put_null(w); break;
	case JSON_TRUE: json_put_bool(w, 1); break;
	case JSON_FALSE: json_put_bool(w, 0); break;
	case JSON_NUMBER: json_put_int(w, k->num); break;
	case JSON_STRING:
		s = malloc(k->end - k->start + 1);
		n = json_str_decode(p, k, s, k->end - k->start + 1);
		if (n < 0)
			abort();
		json_put_strn(w, s, (size_t)n);
		free(s);
		break;
	case JSON_ARRAY:
		json_arr_open(w);
		for (size_t j = i + 1, c = 0; c < k->size; j = t[j].next, c++)
			fuzz_json_emit(w, p, t, j);
		json_arr_close(w);
		break;
	case JSON_OBJECT:
		json_obj_open(w);
		for (size_t j = i + 1, c = 0; c < k->size; j = t[t[j].next].next, c++) {
			s = malloc(t[j].end - t[j].start + 1);
			n = json_str_decode(p, &t[j], s, t[j].end - t[j].start + 1);
			if (n < 0 || t[j].type != JSON_STRING)
				abort();
			/* keys with NUL cannot go through json_key(): skip the pair */
			if (memchr(s, '\0', (size_t)n) == NULL) {
				json_key(w, s);
				fuzz_json_emit(w, p, t, t[j].next);
			}
			free(s);
		}
		json_obj_close(w);
		break;
	}
}

static char *
fuzz_json_write(const char *p, const struct json_tok *t, size_t *len)
{
	struct json_writer w;
	json_writer_init(&w);
	fuzz_json_emit(&w, p, t, 0);
	char *out = json_writer_finish(&w, len);
	if (out == NULL)
		abort();
	return out;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	size_t need, used;
	enum json_status st = json_parse(p, size, NULL, 0, FUZZ_DEPTH, &need);

	if (st == JSON_OK) {
		struct json_tok *t = malloc(need * sizeof(*t));
		if (json_parse(p, size, t, need, FUZZ_DEPTH, &used) != JSON_OK ||
		    used != need || t[0].next != need)
			abort();
		if (need > 1 && json_parse(p, size, t, need - 1, FUZZ_DEPTH, &used) !=
		    JSON_E_TOKENS)
			abort();
		json_parse(p, size, t, need, FUZZ_DEPTH, &used);
		size_t l1, l2;
		char *o1 = fuzz_json_write(p, t, &l1);
		size_t n2;
		if (json_parse(o1, l1, NULL, 0, FUZZ_DEPTH, &n2) != JSON_OK)
			abort();
		struct json_tok *t2 = malloc(n2 * sizeof(*t2));
		if (json_parse(o1, l1, t2, n2, FUZZ_DEPTH, &used) != JSON_OK)
			abort();
		char *o2 = fuzz_json_write(o1, t2, &l2);
		if (l1 != l2 || memcmp(o1, o2, l1) != 0)
			abort();
		/* same tree, unless pairs with NUL keys were dropped */
		if (n2 == need) {
			for (size_t i = 0; i < need; i++) {
				if (t[i].type != t2[i].type || t[i].size != t2[i].size ||
				    t[i].next != t2[i].next)
					abort();
				if (t[i].type == JSON_NUMBER && t[i].num != t2[i].num)
					abort();
			}
		}
		free(o1);
		free(o2);
		free(t2);
		free(t);
	} else if (st != JSON_E_SYNTAX && st != JSON_E_DEPTH && st != JSON_E_NUMBER &&
	    st != JSON_E_UTF8 && st != JSON_E_TRAILING) {
		abort();
	}

	/* the writer on the raw bytes */
	struct json_writer w;
	size_t len;
	json_writer_init(&w);
	json_put_strn(&w, p, size);
	char *s = json_writer_finish(&w, &len);
	struct json_tok one;
	if (s == NULL || json_parse(s, len, &one, 1, 1, &used) != JSON_OK ||
	    one.type != JSON_STRING)
		abort();
	char *dec = malloc(len + 1);
	long dn = json_str_decode(s, &one, dec, len + 1);
	if (dn < 0)
		abort();
	/* valid UTF-8 input (as a JSON string body would need) comes back exact */
	struct json_tok probe;
	char *quoted = malloc(size + 2);
	quoted[0] = '"';
	memcpy(quoted + 1, p, size);
	quoted[size + 1] = '"';
	int plain = memchr(p, '"', size) == NULL && memchr(p, '\\', size) == NULL;
	for (size_t i = 0; i < size && plain; i++)
		if (data[i] < 0x20)
			plain = 0;
	if (plain && json_parse(quoted, size + 2, &probe, 1, 1, &used) == JSON_OK &&
	    ((size_t)dn != size || memcmp(dec, p, size) != 0))
		abort();
	free(quoted);
	free(dec);
	free(s);

	/* base64 both ways */
	json_writer_init(&w);
	json_put_base64(&w, data, size);
	s = json_writer_finish(&w, &len);
	uint8_t *back = malloc(size + 3);
	if (s == NULL || json_base64_decode(s + 1, len - 2, back) != (long)size ||
	    memcmp(back, data, size) != 0)
		abort();
	(void)json_base64_decode(p, size, back);   /* arbitrary text: no crash */
	free(back);
	free(s);
	return 0;
}
