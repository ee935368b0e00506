/*
 * json.h - a small JSON writer and a small JSON parser (RFC 8259), for the
 * control socket protocol (ctl.h) and ternctl.
 *
 * Writer: appends to a growable buffer that it owns (a struct buf). It never aborts: an
 * allocation failure or a nesting deeper than JSON_MAX_DEPTH marks the
 * writer failed, later calls do nothing, and json_writer_finish() returns
 * NULL. Output is always valid JSON and valid UTF-8: strings escape '"',
 * '\\' and every control byte and DEL (\n, \r, \t, \b, \f or \u00XX), and each byte
 * that is not part of a well-formed UTF-8 sequence is written as \u00XX
 * (its Latin-1 reading: text survives, raw bytes do not - use
 * json_put_base64() for bytes that must come back exact). No whitespace is
 * emitted, so the same values always give the same bytes.
 *
 * Parser: pure (no allocation, no globals, no I/O). It fills a caller's array
 * of tokens in document order (pre-order; an object's children alternate
 * key, value) that point into the input. It accepts exactly one JSON value
 * with optional surrounding whitespace and rejects everything else:
 * trailing bytes, invalid UTF-8 (overlong forms and encoded surrogates
 * included), bad escapes, lone or reversed \uXXXX surrogates, nesting deeper
 * than max_depth, and numbers that are not integers in the int64 range
 * (fractions and exponents are refused: the protocol only needs integers).
 */
#ifndef TERN_JSON_H
#define TERN_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "tern/util.h"

#define JSON_MAX_DEPTH 32

/* ---- writer ---- */

struct json_writer {
	struct buf out;             /* owned; NUL-terminated while not failed */
	int failed;                 /* ENOMEM, or too deep / misuse */
	unsigned depth;
	uint8_t level[JSON_MAX_DEPTH + 1];  /* per open container: JSON_W_* bits */
	int after_key;              /* a key was written; its value comes next */
};

void json_writer_init(struct json_writer *w);        /* empty, not failed */
void json_writer_reset(struct json_writer *w);       /* frees the buffer, re-inits */
/*
 * Take the text (NUL-terminated, *len without the NUL): ownership moves to
 * the caller and w is re-initialised. NULL (and w reset) if the writer
 * failed or a container is still open.
 */
char *json_writer_finish(struct json_writer *w, size_t *len);

void json_obj_open(struct json_writer *w);
void json_obj_close(struct json_writer *w);
void json_arr_open(struct json_writer *w);
void json_arr_close(struct json_writer *w);
void json_key(struct json_writer *w, const char *key);          /* inside an object */
void json_put_str(struct json_writer *w, const char *s);        /* NULL writes null */
void json_put_strn(struct json_writer *w, const char *p, size_t len);
void json_put_int(struct json_writer *w, int64_t v);
void json_put_uint(struct json_writer *w, uint64_t v);
void json_put_bool(struct json_writer *w, int v);
void json_put_null(struct json_writer *w);
/*
 * "key":value in one call, for objects written field by field (the same
 * as json_key() followed by the json_put_*() of the same name).
 */
void json_kv_str(struct json_writer *w, const char *key, const char *s);
void json_kv_int(struct json_writer *w, const char *key, int64_t v);
void json_kv_uint(struct json_writer *w, const char *key, uint64_t v);
void json_kv_bool(struct json_writer *w, const char *key, int v);
void json_kv_null(struct json_writer *w, const char *key);
/* A string holding the standard base64 (RFC 4648 section 4, padded) of p. */
void json_put_base64(struct json_writer *w, const void *p, size_t len);

/* ---- parser ---- */

enum json_type {
	JSON_NULL = 0,
	JSON_FALSE,
	JSON_TRUE,
	JSON_NUMBER,
	JSON_STRING,
	JSON_ARRAY,
	JSON_OBJECT,
};

struct json_tok {
	enum json_type type;
	size_t start, end;          /* value bytes in the input; a string's are
	                               between the quotes, still escaped */
	size_t size;                /* array: elements; object: key/value pairs */
	size_t next;                /* index of the first token after this subtree */
	int64_t num;                /* JSON_NUMBER */
	int escaped;                /* JSON_STRING: contains a backslash */
};

enum json_status {
	JSON_OK = 0,
	JSON_E_SYNTAX,              /* not JSON */
	JSON_E_DEPTH,               /* nested deeper than max_depth */
	JSON_E_NUMBER,              /* not an int64 integer */
	JSON_E_UTF8,                /* invalid UTF-8 or bad \u escape */
	JSON_E_TRAILING,            /* bytes after the value */
	JSON_E_TOKENS,              /* more tokens than ntoks */
};

/*
 * Parse p[0..len) into toks[0..ntoks). On JSON_OK *used is the number of
 * tokens (toks[0] is the root). With toks NULL nothing is stored and *used
 * is the number of tokens the document needs (ntoks is ignored). On an
 * error, *used is the byte offset where it was found. Pure.
 */
enum json_status json_parse(const char *p, size_t len, struct json_tok *toks,
    size_t ntoks, unsigned max_depth, size_t *used);
const char *json_strerror(enum json_status st);

/*
 * Decode a JSON_STRING token of input p into out (size outlen, always
 * NUL-terminated when outlen > 0). Returns the decoded length (UTF-8 bytes;
 * may contain NUL from \u0000), or -1 if it does not fit. The decoded length
 * is never more than t->end - t->start.
 */
long json_str_decode(const char *p, const struct json_tok *t, char *out, size_t outlen);
/* 1 if the string token t equals the NUL-terminated s after decoding. */
int json_str_eq(const char *p, const struct json_tok *t, const char *s);
/*
 * In the object at toks[obj], the value token index for key, or -1 (not an
 * object, or no such key; with duplicate keys the first wins).
 */
long json_obj_find(const char *p, const struct json_tok *toks, size_t obj,
    const char *key);

/*
 * Decode standard base64 (padding required, no whitespace) src[0..len) into
 * out (at least len / 4 * 3 bytes). Returns the decoded length, or -1 if the
 * text is not canonical base64. Pure.
 */
long json_base64_decode(const char *src, size_t len, uint8_t *out);

#endif
