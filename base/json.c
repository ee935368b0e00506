/*
 * json.c - a small JSON writer and parser (RFC 8259) for the control
 * protocol. See include/tern/json.h for the contract.
 *
 * Runs on whatever thread calls it; no globals, no I/O, no logging. The
 * parser sees untrusted bytes (any local user may write to the control
 * socket if permitted, and ternctl reads what the socket sends): it is
 * bounded in depth (recursion never goes deeper than max_depth, itself
 * capped), never allocates, and checks every index against len. The writer
 * owns one growable buffer and never aborts on allocation failure.
 *
 * Why our own and not Debian's libjansson (2.14; libjansson4 is 101 KiB
 * installed, this file about 9 KiB of object code in ~700 lines):
 * - Parsing: jansson builds a tree, one malloc per value, that the caller
 *   walks and frees; the control protocol reads a handful of fields from a
 *   request of at most CTL_LINE_MAX bytes, which this parser does into a
 *   caller's token array with no allocation at all - the property that
 *   makes it cheap to fuzz (tests/fuzz/fuzz_json.c) and impossible to make
 *   leak. The protocol's rules are enforced here, not after a parse:
 *   integers only (no doubles), strict UTF-8, bounded depth per call
 *   (jansson's depth is a compile-time 2048), and NUL in strings (jansson
 *   needs JSON_ALLOW_NUL and a length-aware API for it).
 * - Writing: `ternctl queue --json` over a large queue streams one object
 *   per message into one buffer; jansson would build each message as a
 *   tree of refcounted values first (or the whole array), with its own
 *   escaping rules, where ours is the same escaper the log lines use.
 * - Speed is not the argument: requests are small and rare either way.
 * Adopting jansson would save these ~700 lines but add a dependency, a
 * tree allocator on an untrusted input path and glue for every rule
 * above. Revisit if the protocol needs floats or a general JSON DOM.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tern/json.h"
#include "tern/util.h"

#define JSON_W_HAS_VALUE 0x01u      /* level already holds a value */
#define JSON_W_OBJECT    0x02u      /* level is an object (else array/top) */
#define JSON_PARSE_DEPTH_CAP 1024u  /* hard bound on recursion */


/* ---- writer ---- */

void
json_writer_init(struct json_writer *w)
{
	memset(w, 0, sizeof(*w));
}

void
json_writer_reset(struct json_writer *w)
{
	buf_free(&w->out);
	json_writer_init(w);
}

static void
json_writer_grow(struct json_writer *w, size_t more)
{
	if (!w->failed && buf_reserve(&w->out, more) < 0)
		w->failed = w->out.err;
}

static void
json_writer_add(struct json_writer *w, const void *p, size_t n)
{
	if (w->failed)
		return;
	buf_add(&w->out, p, n);
	if (w->out.err)
		w->failed = w->out.err;
}

/* Before any value or key: the comma, and the checks that keep it JSON. */
static int
json_writer_sep(struct json_writer *w, int is_key)
{
	uint8_t *lv = &w->level[w->depth];

	if (w->failed)
		return -1;
	if (is_key) {
		if (!(*lv & JSON_W_OBJECT) || w->after_key)
			goto misuse;
	} else if (*lv & JSON_W_OBJECT) {
		if (!w->after_key)
			goto misuse;
		w->after_key = 0;
		return 0;
	} else if (w->depth == 0 && (*lv & JSON_W_HAS_VALUE))
		goto misuse;               /* one top-level value only */
	if (*lv & JSON_W_HAS_VALUE)
		json_writer_add(w, ",", 1);
	*lv |= JSON_W_HAS_VALUE;
	return w->failed ? -1 : 0;
misuse:
	w->failed = EINVAL;
	return -1;
}

char *
json_writer_finish(struct json_writer *w, size_t *len)
{
	char *p = w->out.p;

	if (w->failed || w->depth != 0 || w->after_key || p == NULL) {
		json_writer_reset(w);
		return NULL;
	}
	if (len != NULL)
		*len = w->out.len;
	json_writer_init(w);
	return p;
}

static void
json_writer_open(struct json_writer *w, char c, uint8_t kind)
{
	if (json_writer_sep(w, 0) == -1)
		return;
	if (w->depth >= JSON_MAX_DEPTH) {
		w->failed = EINVAL;
		return;
	}
	json_writer_add(w, &c, 1);
	w->level[++w->depth] = kind;
}

static void
json_writer_close(struct json_writer *w, char c, uint8_t kind)
{
	if (w->failed)
		return;
	if (w->depth == 0 || (w->level[w->depth] & JSON_W_OBJECT) != kind ||
	    w->after_key) {
		w->failed = EINVAL;
		return;
	}
	w->depth--;
	json_writer_add(w, &c, 1);
}

void json_obj_open(struct json_writer *w) { json_writer_open(w, '{', JSON_W_OBJECT); }
void json_obj_close(struct json_writer *w) { json_writer_close(w, '}', JSON_W_OBJECT); }
void json_arr_open(struct json_writer *w) { json_writer_open(w, '[', 0); }
void json_arr_close(struct json_writer *w) { json_writer_close(w, ']', 0); }

/* The quoted, escaped string (util's json_escape()); no separator. */
static void
json_writer_string(struct json_writer *w, const char *s, size_t n)
{
	size_t i = 0;

	json_writer_add(w, "\"", 1);
	while (i < n && !w->failed) {
		size_t used;
		/* room for the rest as it is, and for one escape more */
		json_writer_grow(w, n - i + 6);
		if (w->failed)
			break;
		struct buf *b = &w->out;
		b->len += json_escape(b->p + b->len, b->cap - b->len - 1,
		    s + i, n - i, &used);
		i += used;
	}
	json_writer_add(w, "\"", 1);
}

void
json_key(struct json_writer *w, const char *key)
{
	if (json_writer_sep(w, 1) == -1)
		return;
	json_writer_string(w, key, strlen(key));
	json_writer_add(w, ":", 1);
	w->after_key = 1;
}

void
json_put_strn(struct json_writer *w, const char *p, size_t len)
{
	if (json_writer_sep(w, 0) == -1)
		return;
	json_writer_string(w, p, len);
}

void
json_put_str(struct json_writer *w, const char *s)
{
	if (s == NULL)
		json_put_null(w);
	else
		json_put_strn(w, s, strlen(s));
}

void
json_put_int(struct json_writer *w, int64_t v)
{
	char b[24];
	int n = snprintf(b, sizeof(b), "%lld", (long long)v);
	if (json_writer_sep(w, 0) == -1)
		return;
	json_writer_add(w, b, (size_t)n);
}

void
json_put_uint(struct json_writer *w, uint64_t v)
{
	char b[24];
	int n = snprintf(b, sizeof(b), "%llu", (unsigned long long)v);
	if (json_writer_sep(w, 0) == -1)
		return;
	json_writer_add(w, b, (size_t)n);
}

void
json_put_bool(struct json_writer *w, int v)
{
	if (json_writer_sep(w, 0) == -1)
		return;
	if (v)
		json_writer_add(w, "true", 4);
	else
		json_writer_add(w, "false", 5);
}

void
json_put_null(struct json_writer *w)
{
	if (json_writer_sep(w, 0) == -1)
		return;
	json_writer_add(w, "null", 4);
}

void
json_put_base64(struct json_writer *w, const void *src, size_t len)
{
	if (json_writer_sep(w, 0) == -1)
		return;
	if (len > (SIZE_MAX / 4) * 3 - 3) {
		w->failed = ENOMEM;
		return;
	}
	size_t out = BASE64_LEN(len);
	json_writer_grow(w, out + 2);
	if (w->failed)
		return;
	w->out.p[w->out.len++] = '"';
	w->out.len += base64_encode(src, len, w->out.p + w->out.len, out + 1);
	w->out.p[w->out.len++] = '"';
	w->out.p[w->out.len] = '\0';
}

void
json_kv_str(struct json_writer *w, const char *key, const char *s)
{
	json_key(w, key);
	json_put_str(w, s);
}

void
json_kv_int(struct json_writer *w, const char *key, int64_t v)
{
	json_key(w, key);
	json_put_int(w, v);
}

void
json_kv_uint(struct json_writer *w, const char *key, uint64_t v)
{
	json_key(w, key);
	json_put_uint(w, v);
}

void
json_kv_bool(struct json_writer *w, const char *key, int v)
{
	json_key(w, key);
	json_put_bool(w, v);
}

void
json_kv_null(struct json_writer *w, const char *key)
{
	json_key(w, key);
	json_put_null(w);
}

/* ---- parser ---- */

struct json_parser {
	const unsigned char *p;
	size_t len, pos;
	struct json_tok *toks;      /* NULL: count only */
	size_t ntoks, n;
	unsigned max_depth;
};

static void
json_parse_ws(struct json_parser *ps)
{
	while (ps->pos < ps->len) {
		unsigned char c = ps->p[ps->pos];
		if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
			break;
		ps->pos++;
	}
}

/* New token at the current position; its index, or -1 (out of tokens). */
static long
json_parse_tok(struct json_parser *ps, enum json_type type)
{
	if (ps->toks != NULL) {
		if (ps->n >= ps->ntoks)
			return -1;
		struct json_tok *t = &ps->toks[ps->n];
		memset(t, 0, sizeof(*t));
		t->type = type;
		t->start = ps->pos;
	}
	return (long)ps->n++;
}

static void
json_parse_tok_end(struct json_parser *ps, long idx, size_t end, size_t size)
{
	if (ps->toks == NULL)
		return;
	ps->toks[idx].end = end;
	ps->toks[idx].size = size;
	ps->toks[idx].next = ps->n;
}

static int
json_hex4(const unsigned char *p, unsigned *out)
{
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		unsigned c = p[i], d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return -1;
		v = v << 4 | d;
	}
	*out = v;
	return 0;
}

static enum json_status
json_parse_string(struct json_parser *ps)
{
	long idx = json_parse_tok(ps, JSON_STRING);
	int escaped = 0;

	if (idx < 0)
		return JSON_E_TOKENS;
	ps->pos++;                                  /* opening quote */
	size_t start = ps->pos;
	for (;;) {
		if (ps->pos >= ps->len)
			return JSON_E_SYNTAX;
		unsigned char c = ps->p[ps->pos];
		if (c == '"')
			break;
		if (c < 0x20)
			return JSON_E_SYNTAX;
		if (c >= 0x80) {
			size_t l = utf8_seq_len(ps->p + ps->pos, ps->len - ps->pos);
			if (l == 0)
				return JSON_E_UTF8;
			ps->pos += l;
			continue;
		}
		if (c != '\\') {
			ps->pos++;
			continue;
		}
		escaped = 1;
		if (ps->pos + 1 >= ps->len)
			return JSON_E_SYNTAX;
		c = ps->p[ps->pos + 1];
		if (strchr("\"\\/bfnrt", c) != NULL && c != '\0') {
			ps->pos += 2;
			continue;
		}
		if (c != 'u')
			return JSON_E_SYNTAX;
		unsigned cp, lo;
		if (ps->len - ps->pos < 6 || json_hex4(ps->p + ps->pos + 2, &cp) == -1)
			return JSON_E_SYNTAX;
		ps->pos += 6;
		if (cp >= 0xdc00 && cp <= 0xdfff)
			return JSON_E_UTF8;                 /* lone low surrogate */
		if (cp >= 0xd800 && cp <= 0xdbff) {
			if (ps->len - ps->pos < 6 || ps->p[ps->pos] != '\\' ||
			    ps->p[ps->pos + 1] != 'u' ||
			    json_hex4(ps->p + ps->pos + 2, &lo) == -1 ||
			    lo < 0xdc00 || lo > 0xdfff)
				return JSON_E_UTF8;         /* high without low */
			ps->pos += 6;
		}
	}
	if (ps->toks != NULL) {
		ps->toks[idx].start = start;
		ps->toks[idx].escaped = escaped;
	}
	json_parse_tok_end(ps, idx, ps->pos, 0);
	ps->pos++;                                  /* closing quote */
	return JSON_OK;
}

static enum json_status
json_parse_number(struct json_parser *ps)
{
	long idx = json_parse_tok(ps, JSON_NUMBER);
	int neg = 0;
	uint64_t acc = 0, limit = INT64_MAX;

	if (idx < 0)
		return JSON_E_TOKENS;
	if (ps->p[ps->pos] == '-') {
		neg = 1;
		limit = (uint64_t)INT64_MAX + 1;
		ps->pos++;
	}
	size_t digits = ps->pos;
	while (ps->pos < ps->len && ps->p[ps->pos] >= '0' && ps->p[ps->pos] <= '9') {
		unsigned d = ps->p[ps->pos] - '0';
		if (acc > (limit - d) / 10)
			return JSON_E_NUMBER;
		acc = acc * 10 + d;
		ps->pos++;
	}
	size_t nd = ps->pos - digits;
	if (nd == 0 || (nd > 1 && ps->p[digits] == '0'))
		return JSON_E_SYNTAX;
	if (ps->pos < ps->len && (ps->p[ps->pos] == '.' || ps->p[ps->pos] == 'e' ||
	    ps->p[ps->pos] == 'E'))
		return JSON_E_NUMBER;
	if (ps->toks != NULL) {
		if (neg)
			ps->toks[idx].num = acc == (uint64_t)INT64_MAX + 1 ?
			    INT64_MIN : -(int64_t)acc;
		else
			ps->toks[idx].num = (int64_t)acc;
	}
	json_parse_tok_end(ps, idx, ps->pos, 0);
	return JSON_OK;
}

static enum json_status
json_parse_literal(struct json_parser *ps, const char *word, enum json_type type)
{
	size_t n = strlen(word);
	if (ps->len - ps->pos < n || memcmp(ps->p + ps->pos, word, n) != 0)
		return JSON_E_SYNTAX;
	long idx = json_parse_tok(ps, type);
	if (idx < 0)
		return JSON_E_TOKENS;
	ps->pos += n;
	json_parse_tok_end(ps, idx, ps->pos, 0);
	return JSON_OK;
}

static enum json_status json_parse_value(struct json_parser *ps, unsigned depth);

static enum json_status
json_parse_container(struct json_parser *ps, unsigned depth, int is_obj)
{
	enum json_status st;
	size_t size = 0;
	char close = is_obj ? '}' : ']';

	if (depth + 1 > ps->max_depth)
		return JSON_E_DEPTH;
	long idx = json_parse_tok(ps, is_obj ? JSON_OBJECT : JSON_ARRAY);
	if (idx < 0)
		return JSON_E_TOKENS;
	ps->pos++;
	json_parse_ws(ps);
	if (ps->pos < ps->len && ps->p[ps->pos] == close) {
		ps->pos++;
		json_parse_tok_end(ps, idx, ps->pos, 0);
		return JSON_OK;
	}
	for (;;) {
		json_parse_ws(ps);
		if (is_obj) {
			if (ps->pos >= ps->len || ps->p[ps->pos] != '"')
				return JSON_E_SYNTAX;
			if ((st = json_parse_string(ps)) != JSON_OK)
				return st;
			json_parse_ws(ps);
			if (ps->pos >= ps->len || ps->p[ps->pos] != ':')
				return JSON_E_SYNTAX;
			ps->pos++;
		}
		if ((st = json_parse_value(ps, depth + 1)) != JSON_OK)
			return st;
		size++;
		json_parse_ws(ps);
		if (ps->pos >= ps->len)
			return JSON_E_SYNTAX;
		if (ps->p[ps->pos] == ',') {
			ps->pos++;
			continue;
		}
		if (ps->p[ps->pos] != close)
			return JSON_E_SYNTAX;
		ps->pos++;
		json_parse_tok_end(ps, idx, ps->pos, size);
		return JSON_OK;
	}
}

static enum json_status
json_parse_value(struct json_parser *ps, unsigned depth)
{
	json_parse_ws(ps);
	if (ps->pos >= ps->len)
		return JSON_E_SYNTAX;
	switch (ps->p[ps->pos]) {
	case '{': return json_parse_container(ps, depth, 1);
	case '[': return json_parse_container(ps, depth, 0);
	case '"': return json_parse_string(ps);
	case 't': return json_parse_literal(ps, "true", JSON_TRUE);
	case 'f': return json_parse_literal(ps, "false", JSON_FALSE);
	case 'n': return json_parse_literal(ps, "null", JSON_NULL);
	case '-': case '0': case '1': case '2': case '3': case '4':
	case '5': case '6': case '7': case '8': case '9':
		return json_parse_number(ps);
	default:
		return JSON_E_SYNTAX;
	}
}

enum json_status
json_parse(const char *p, size_t len, struct json_tok *toks, size_t ntoks,
    unsigned max_depth, size_t *used)
{
	struct json_parser ps = {
		.p = (const unsigned char *)p, .len = len, .toks = toks,
		.ntoks = ntoks,
		.max_depth = max_depth > JSON_PARSE_DEPTH_CAP ?
		    JSON_PARSE_DEPTH_CAP : max_depth,
	};
	enum json_status st = json_parse_value(&ps, 0);
	if (st == JSON_OK) {
		json_parse_ws(&ps);
		if (ps.pos != len)
			st = JSON_E_TRAILING;
	}
	if (used != NULL)
		*used = st == JSON_OK ? ps.n : ps.pos;
	return st;
}

const char *
json_strerror(enum json_status st)
{
	switch (st) {
	case JSON_OK: return "ok";
	case JSON_E_SYNTAX: return "syntax error";
	case JSON_E_DEPTH: return "nested too deep";
	case JSON_E_NUMBER: return "number is not a 64-bit integer";
	case JSON_E_UTF8: return "invalid UTF-8 or \\u escape";
	case JSON_E_TRAILING: return "trailing data";
	case JSON_E_TOKENS: return "too many values";
	}
	return "unknown error";
}

/*
 * Decode the next character of a validated string body p[*i..end) into
 * out[0..4); returns its byte count (advancing *i).
 */
static size_t
json_str_next(const unsigned char *p, size_t *i, size_t end, unsigned char out[4])
{
	unsigned cp, lo;

	if (p[*i] != '\\') {
		size_t l = utf8_seq_len(p + *i, end - *i);
		if (l == 0)
			l = 1;                  /* cannot happen after json_parse */
		memcpy(out, p + *i, l);
		*i += l;
		return l;
	}
	unsigned char c = p[*i + 1];
	*i += 2;
	switch (c) {
	case 'b': out[0] = '\b'; return 1;
	case 'f': out[0] = '\f'; return 1;
	case 'n': out[0] = '\n'; return 1;
	case 'r': out[0] = '\r'; return 1;
	case 't': out[0] = '\t'; return 1;
	case 'u': break;
	default: out[0] = c; return 1;         /* " \ / */
	}
	if (json_hex4(p + *i, &cp) == -1)
		cp = 0xfffd;
	*i += 4;
	if (cp >= 0xd800 && cp <= 0xdbff && end - *i >= 6 &&
	    json_hex4(p + *i + 2, &lo) == 0 && lo >= 0xdc00 && lo <= 0xdfff) {
		cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
		*i += 6;
	}
	if (cp < 0x80) {
		out[0] = (unsigned char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (unsigned char)(0xc0 | cp >> 6);
		out[1] = (unsigned char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (unsigned char)(0xe0 | cp >> 12);
		out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (unsigned char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (unsigned char)(0xf0 | cp >> 18);
	out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (unsigned char)(0x80 | (cp & 0x3f));
	return 4;
}

long
json_str_decode(const char *p, const struct json_tok *t, char *out, size_t outlen)
{
	const unsigned char *u = (const unsigned char *)p;
	size_t i = t->start, n = 0;
	unsigned char ch[4];

	if (outlen == 0)
		return -1;
	if (!t->escaped) {
		size_t l = t->end - t->start;
		if (l >= outlen) {
			out[0] = '\0';
			return -1;
		}
		memcpy(out, p + t->start, l);
		out[l] = '\0';
		return (long)l;
	}
	while (i < t->end) {
		size_t l = json_str_next(u, &i, t->end, ch);
		if (n + l >= outlen) {
			out[n] = '\0';
			return -1;
		}
		memcpy(out + n, ch, l);
		n += l;
	}
	out[n] = '\0';
	return (long)n;
}

int
json_str_eq(const char *p, const struct json_tok *t, const char *s)
{
	const unsigned char *u = (const unsigned char *)p;
	size_t i = t->start, k = 0, slen = strlen(s);
	unsigned char ch[4];

	if (t->type != JSON_STRING)
		return 0;
	if (!t->escaped)
		return t->end - t->start == slen && memcmp(p + t->start, s, slen) == 0;
	while (i < t->end) {
		size_t l = json_str_next(u, &i, t->end, ch);
		if (slen - k < l || memcmp(s + k, ch, l) != 0)
			return 0;
		k += l;
	}
	return k == slen;
}

long
json_obj_find(const char *p, const struct json_tok *toks, size_t obj,
    const char *key)
{
	if (toks[obj].type != JSON_OBJECT)
		return -1;
	size_t i = obj + 1;
	for (size_t k = 0; k < toks[obj].size; k++) {
		if (json_str_eq(p, &toks[i], key))
			return (long)(i + 1);
		i = toks[i + 1].next;
	}
	return -1;
}

long
json_base64_decode(const char *src, size_t len, uint8_t *out)
{
	size_t n;

	if (base64_decode(src, len, out, len / 4 * 3, &n) != 0)
		return -1;
	return (long)n;
}
