/*
 * test_data_filter.c - the DATA stream filter: end of data only at
 * <CRLF>.<CRLF>, dot-unstuffing, bare CR / LF (SMTP smuggling), line length,
 * 8-bit and NUL flags, split invariance, output runs, a 1 MiB body.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tern/data_filter.h"
#include "tern/smtp.h"

/* Collects output; counts calls to check that output comes in runs. */
struct sink {
	char *buf;
	size_t len, cap;
	size_t calls;
};

static void
sink_out(void *arg, const char *p, size_t len)
{
	struct sink *s = arg;

	assert_true(len > 0);
	if (s->len + len > s->cap) {
		s->cap = (s->len + len) * 2 + 64;
		s->buf = realloc(s->buf, s->cap);
		assert_non_null(s->buf);
	}
	memcpy(s->buf + s->len, p, len);
	s->len += len;
	s->calls++;
}

static void
sink_free(struct sink *s)
{
	free(s->buf);
	memset(s, 0, sizeof(*s));
}

struct run_result {
	enum data_status st;
	size_t end;              /* offset just past ".<CRLF>", or bytes fed */
	struct data_filter f;
	struct sink out;
};

/*
 * Feed in[0..len) in chunks of `chunk` bytes (0 = whole), stopping at
 * DATA_END. chunk == SIZE_MAX means pseudo-random chunk sizes from seed.
 */
static void
run_filter(struct run_result *r, const char *in, size_t len, unsigned flags,
    size_t chunk, unsigned seed)
{
	size_t off = 0;

	memset(r, 0, sizeof(*r));
	data_filter_init(&r->f, flags);
	r->st = DATA_MORE;
	do {
		size_t n = len - off, used = (size_t)-1;
		if (chunk == SIZE_MAX) {
			seed = seed * 1103515245u + 12345u;
			n = (seed >> 16) % 97;      /* includes 0-byte feeds */
		} else if (chunk != 0)
			n = chunk;
		if (n > len - off)
			n = len - off;
		r->st = data_filter_feed(&r->f, in + off, n, &used,
		    sink_out, &r->out);
		assert_true(used <= n);
		if (r->st == DATA_MORE)
			assert_true(used == n);
		off += used;
	} while (r->st == DATA_MORE && off < len);
	r->end = off;
	assert_true(r->f.size == r->out.len);
}

#define S(lit) lit, sizeof(lit) - 1

struct df_case {
	const char *name;
	const char *in;
	size_t inlen;
	unsigned flags;
	enum data_status st;
	size_t end;              /* 0 = whole input */
	const char *out;
	size_t outlen;
	unsigned seen;
};

#define NORM DATA_F_NORMALIZE
#define BLF  DATA_SEEN_BARE_LF
#define BCR  DATA_SEEN_BARE_CR

static const struct df_case df_cases[] = {
	/* end of data and the first line */
	{ "empty message", S(".\r\n"), 0, DATA_END, 3, S(""), 0 },
	{ "one empty line", S("\r\n.\r\n"), 0, DATA_END, 5, S("\r\n"), 0 },
	{ "one line", S("a\r\n.\r\n"), 0, DATA_END, 6, S("a\r\n"), 0 },
	{ "pipelined after end", S("a\r\n.\r\nMAIL FROM:<x@y>\r\n"), 0,
	    DATA_END, 6, S("a\r\n"), 0 },
	{ "pipelined dot line", S("a\r\n.\r\n.\r\n"), 0, DATA_END, 6,
	    S("a\r\n"), 0 },
	{ "two lines", S("Subject: x\r\n\r\nbody\r\n.\r\n"), 0, DATA_END, 23,
	    S("Subject: x\r\n\r\nbody\r\n"), 0 },
	{ "no end yet", S("a\r\nb\r\n"), 0, DATA_MORE, 0, S("a\r\nb\r\n"), 0 },
	{ "no end: dot pending", S("a\r\n."), 0, DATA_MORE, 0, S("a\r\n"), 0 },
	{ "no end: dot cr pending", S("a\r\n.\r"), 0, DATA_MORE, 0,
	    S("a\r\n"), 0 },
	{ "no end: cr written", S("a\r"), 0, DATA_MORE, 0, S("a\r"), 0 },
	{ "dot in the middle", S("a.\r\n.\r\n"), 0, DATA_END, 7, S("a.\r\n"), 0 },
	{ "dot then space", S(". \r\n.\r\n"), 0, DATA_END, 7, S(" \r\n"), 0 },
	{ "dot cr dot", S("a\r\n.\r.\r\n.\r\n"), 0, DATA_END, 0,
	    S("a\r\n\r.\r\n"), BCR },

	/* dot-stuffing (RFC 5321 4.5.2) */
	{ "stuffed dot line", S("..\r\n.\r\n"), 0, DATA_END, 7, S(".\r\n"), 0 },
	{ "stuffed lines", S("..a\r\n.b\r\n...\r\n.\r\n"), 0, DATA_END, 0,
	    S(".a\r\nb\r\n..\r\n"), 0 },
	{ "stuffed after empty line", S("x\r\n\r\n..\r\n.\r\n"), 0, DATA_END, 0,
	    S("x\r\n\r\n.\r\n"), 0 },

	/* smuggling variants inside a message: content, never the end */
	{ "lf.lf", S("a\n.\nb\r\n.\r\n"), 0, DATA_END, 0,
	    S("a\n.\nb\r\n"), BLF },
	{ "lf.lf norm", S("a\n.\nb\r\n.\r\n"), NORM, DATA_END, 0,
	    S("a\r\n.\r\nb\r\n"), BLF },
	{ "lf.crlf", S("a\n.\r\nb\r\n.\r\n"), 0, DATA_END, 0,
	    S("a\n.\r\nb\r\n"), BLF },
	{ "lf.crlf norm", S("a\n.\r\nb\r\n.\r\n"), NORM, DATA_END, 0,
	    S("a\r\n.\r\nb\r\n"), BLF },
	{ "cr.cr", S("a\r.\rb\r\n.\r\n"), 0, DATA_END, 0,
	    S("a\r.\rb\r\n"), BCR },
	{ "cr.cr norm", S("a\r.\rb\r\n.\r\n"), NORM, DATA_END, 0,
	    S("a\r\n.\r\nb\r\n"), BCR },
	{ "crlf.cr", S("a\r\n.\rb\r\n.\r\n"), 0, DATA_END, 0,
	    S("a\r\n\rb\r\n"), BCR },
	{ "crlf.cr norm", S("a\r\n.\rb\r\n.\r\n"), NORM, DATA_END, 0,
	    S("a\r\n\r\nb\r\n"), BCR },
	{ "crlf.lf", S("a\r\n.\nb\r\n.\r\n"), 0, DATA_END, 0,
	    S("a\r\n\nb\r\n"), BLF },
	{ "crlf.lf norm", S("a\r\n.\nb\r\n.\r\n"), NORM, DATA_END, 0,
	    S("a\r\n\r\nb\r\n"), BLF },
	{ "crlf nul.crlf", S("a\r\n\0.\r\nb\r\n.\r\n"), 0, DATA_END, 0,
	    S("a\r\n\0.\r\nb\r\n"), DATA_SEEN_NUL },
	{ "crlf nul.crlf norm", S("a\r\n\0.\r\nb\r\n.\r\n"), NORM, DATA_END, 0,
	    S("a\r\n\0.\r\nb\r\n"), DATA_SEEN_NUL },
	{ "lf.cr", S("a\n.\rb\r\n.\r\n"), 0, DATA_END, 0,
	    S("a\n.\rb\r\n"), BLF | BCR },
	{ "lf.cr norm", S("a\n.\rb\r\n.\r\n"), NORM, DATA_END, 0,
	    S("a\r\n.\r\nb\r\n"), BLF | BCR },
	{ "cr.crlf", S("a\r.\r\nb\r\n.\r\n"), 0, DATA_END, 0,
	    S("a\r.\r\nb\r\n"), BCR },
	{ "cr.crlf norm", S("a\r.\r\nb\r\n.\r\n"), NORM, DATA_END, 0,
	    S("a\r\n.\r\nb\r\n"), BCR },
	{ "crlf.cr crlf", S("a\r\n.\r\r\nb\r\n.\r\n"), 0, DATA_END, 0,
	    S("a\r\n\r\r\nb\r\n"), BCR },
	{ "crlf.cr crlf norm", S("a\r\n.\r\r\nb\r\n.\r\n"), NORM, DATA_END, 0,
	    S("a\r\n\r\n\r\nb\r\n"), BCR },
	{ "crlf.lf crlf", S("a\r\n.\n\r\n.\r\n"), 0, DATA_END, 0,
	    S("a\r\n\n\r\n"), BLF },
	{ "crcrlf.crlf", S("a\r\r\n.\r\n"), 0, DATA_END, 0, S("a\r\r\n"), BCR },
	{ "lf crlf.crlf", S("a\n\r\n.\r\n"), NORM, DATA_END, 0,
	    S("a\r\n\r\n"), BLF },

	/* the same, with nothing after them: no end, everything written */
	{ "lf.lf open", S("a\n.\n"), 0, DATA_MORE, 0, S("a\n.\n"), BLF },
	{ "lf.crlf open", S("a\n.\r\n"), 0, DATA_MORE, 0, S("a\n.\r\n"), BLF },
	{ "lf.crlf open norm", S("a\n.\r\n"), NORM, DATA_MORE, 0,
	    S("a\r\n.\r\n"), BLF },
	{ "cr.cr open", S("a\r.\r"), 0, DATA_MORE, 0, S("a\r.\r"), BCR },
	{ "crlf.lf open", S("a\r\n.\n"), 0, DATA_MORE, 0, S("a\r\n\n"), BLF },
	{ "start lf.lf", S("\n.\n"), 0, DATA_MORE, 0, S("\n.\n"), BLF },
	{ "start lf.crlf", S("\n.\r\n"), 0, DATA_MORE, 0, S("\n.\r\n"), BLF },
	{ "start cr.cr", S("\r.\r"), 0, DATA_MORE, 0, S("\r.\r"), BCR },
	{ "start cr.crlf", S("\r.\r\n"), NORM, DATA_MORE, 0,
	    S("\r\n.\r\n"), BCR },
	{ "start .lf", S(".\n"), 0, DATA_MORE, 0, S("\n"), BLF },
	{ "start .cr x", S(".\rx"), NORM, DATA_MORE, 0, S("\r\nx"), BCR },
	{ "start nul.crlf", S("\0.\r\n"), 0, DATA_MORE, 0, S("\0.\r\n"),
	    DATA_SEEN_NUL },
	{ "lf lf crlf", S("\n\n.\r\n"), NORM, DATA_MORE, 0,
	    S("\r\n\r\n.\r\n"), BLF },

	/* flags */
	{ "8bit", S("caf\xc3\xa9\r\n.\r\n"), 0, DATA_END, 0,
	    S("caf\xc3\xa9\r\n"), DATA_SEEN_8BIT },
	{ "8bit and nul", S("\xff\0\xff\0\r\n.\r\n"), 0, DATA_END, 0,
	    S("\xff\0\xff\0\r\n"), DATA_SEEN_8BIT | DATA_SEEN_NUL },
	{ "8bit after end not seen", S(".\r\n\xff\0\n"), 0, DATA_END, 3, S(""), 0 },
};

static void
check_case(const struct df_case *c, const struct run_result *r,
    const char *how)
{
	size_t end = c->end ? c->end : c->inlen;

	if (r->st != c->st || r->end != end || r->out.len != c->outlen ||
	    memcmp(r->out.buf ? r->out.buf : "", c->out, c->outlen) != 0 ||
	    r->f.seen != c->seen) {
		fprintf(stderr, "case \"%s\" (%s): st %d/%d end %zu/%zu "
		    "outlen %zu/%zu seen %#x/%#x\n", c->name, how, r->st,
		    c->st, r->end, end, r->out.len, c->outlen, r->f.seen,
		    c->seen);
		fail();
	}
}

static void
test_table(void **state)
{
	for (size_t i = 0; i < sizeof(df_cases) / sizeof(df_cases[0]); i++) {
		const struct df_case *c = &df_cases[i];
		struct run_result whole, bytes, rnd;

		run_filter(&whole, c->in, c->inlen, c->flags, 0, 0);
		check_case(c, &whole, "whole");
		/* an input fed whole is written in few runs */
		assert_true(whole.out.calls <= c->outlen);

		run_filter(&bytes, c->in, c->inlen, c->flags, 1, 0);
		check_case(c, &bytes, "byte at a time");
		assert_int_equal(bytes.f.state, whole.f.state);
		assert_int_equal(bytes.f.line_len, whole.f.line_len);

		for (unsigned seed = 1; seed < 20; seed++) {
			run_filter(&rnd, c->in, c->inlen, c->flags, SIZE_MAX,
			    seed);
			check_case(c, &rnd, "random chunks");
			sink_free(&rnd.out);
		}
		sink_free(&whole.out);
		sink_free(&bytes.out);
	}
}

/* Every smuggling variant of SEC Consult's paper, with and without NORMALIZE,
 * placed where a real end would be, followed by a smuggled command. */
static void
test_smuggling_never_ends(void **state)
{
	static const struct { const char *s; size_t len; } v[] = {
		{ S("\n.\n") }, { S("\n.\r\n") }, { S("\r.\r") },
		{ S("\r\n.\r") }, { S("\r\n.\n") }, { S("\r\n\0.\r\n") },
		{ S("\n.\r") }, { S("\r.\n") }, { S("\r.\r\n") },
		{ S("\r\n.\r\r\n") }, { S("\r\n.\n\r\n") }, { S("\r\n \r\n.\n") },
	};
	static const char smuggled[] = "MAIL FROM:<a@evil>\r\nRCPT TO:<b@x>\r\n"
	    "DATA\r\nFrom: ceo@bank\r\n";

	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		for (unsigned flags = 0; flags <= DATA_F_NORMALIZE; flags++) {
			char in[256];
			size_t n = 0;
			struct run_result r, b;

			memcpy(in + n, "Subject: hi\r\n\r\nbody", 19);
			n += 19;
			memcpy(in + n, v[i].s, v[i].len);
			n += v[i].len;
			memcpy(in + n, smuggled, sizeof(smuggled) - 1);
			n += sizeof(smuggled) - 1;

			/* without a real end, everything is content */
			run_filter(&r, in, n, flags, 0, 0);
			assert_int_equal(r.st, DATA_MORE);
			assert_int_equal(r.end, n);
			assert_true(r.f.seen & (BLF | BCR | DATA_SEEN_NUL));
			/* the smuggled commands are in the message */
			assert_non_null(memmem(r.out.buf, r.out.len,
			    "MAIL FROM:<a@evil>\r\n", 20));
			run_filter(&b, in, n, flags, 1, 0);
			assert_int_equal(b.st, DATA_MORE);
			assert_int_equal(b.out.len, r.out.len);
			assert_memory_equal(b.out.buf, r.out.buf, r.out.len);
			assert_int_equal(b.f.seen, r.f.seen);
			sink_free(&r.out);
			sink_free(&b.out);

			/* and the real end is found after them */
			memcpy(in + n, ".\r\nQUIT\r\n", 9);
			run_filter(&r, in, n + 9, flags, 0, 0);
			assert_int_equal(r.st, DATA_END);
			assert_int_equal(r.end, n + 3);
			sink_free(&r.out);
		}
	}
}

static void
test_line_length(void **state)
{
	static const struct {
		const char *prefix;     /* line = prefix + n x 'x' + eol */
		size_t plen;
		const char *eol;
		size_t n;
		unsigned flags;
		int is_long;
	} t[] = {
		{ "", 0, "\r\n", SMTP_TEXT_MAX - 2, 0, 0 },   /* 1000 octets */
		{ "", 0, "\r\n", SMTP_TEXT_MAX - 1, 0, 1 },   /* 1001 octets */
		{ ".", 1, "\r\n", SMTP_TEXT_MAX - 2, 0, 0 },  /* stuffing dot free */
		{ ".", 1, "\r\n", SMTP_TEXT_MAX - 1, 0, 1 },
		{ "..", 2, "\r\n", SMTP_TEXT_MAX - 3, 0, 0 },
		{ "..", 2, "\r\n", SMTP_TEXT_MAX - 2, 0, 1 },
		{ "", 0, "\n", SMTP_TEXT_MAX - 2, 0, 0 },     /* bare LF counts 2 */
		{ "", 0, "\n", SMTP_TEXT_MAX - 1, 0, 1 },
		{ "", 0, "\n", SMTP_TEXT_MAX - 1, NORM, 1 },
		{ "", 0, "\r", SMTP_TEXT_MAX - 2, NORM, 0 },
		{ "", 0, "\r", SMTP_TEXT_MAX - 1, NORM, 1 },
		{ "\xc3\xa9", 2, "\r\n", SMTP_TEXT_MAX - 4, 0, 0 },
		{ "\xc3\xa9", 2, "\r\n", SMTP_TEXT_MAX - 3, 0, 1 },
		{ "\0", 1, "\r\n", SMTP_TEXT_MAX - 3, 0, 0 },
		{ "\0", 1, "\r\n", SMTP_TEXT_MAX - 2, 0, 1 },
	};
	static char in[4096];

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		size_t plen = t[i].plen;
		size_t n = 0;
		struct run_result r;

		/* a short line before and after: they reset the count */
		memcpy(in, "short\r\n", 7);
		n = 7;
		memcpy(in + n, t[i].prefix, plen);
		n += plen;
		memset(in + n, 'x', t[i].n);
		n += t[i].n;
		memcpy(in + n, t[i].eol, strlen(t[i].eol));
		n += strlen(t[i].eol);
		memcpy(in + n, "y\r\n.\r\n", 6);
		n += 6;
		for (size_t chunk = 0; chunk < 3; chunk++) {
			run_filter(&r, in, n, t[i].flags, chunk, 0);
			assert_int_equal(r.st, DATA_END);
			assert_int_equal(r.end, n);
			if (!!(r.f.seen & DATA_SEEN_LONG) != t[i].is_long) {
				fprintf(stderr, "line case %zu chunk %zu\n", i,
				    chunk);
				fail();
			}
			sink_free(&r.out);
		}
	}

	/* many 1000-octet lines in a row never add up */
	{
		size_t n = 0;
		struct run_result r;
		for (int k = 0; k < 4; k++) {
			memset(in + n, 'z', SMTP_TEXT_MAX - 2);
			n += SMTP_TEXT_MAX - 2;
			memcpy(in + n, "\r\n", 2);
			n += 2;
		}
		memcpy(in + n, ".\r\n", 3);
		run_filter(&r, in, n + 3, 0, 0, 0);
		assert_int_equal(r.st, DATA_END);
		assert_int_equal(r.f.seen, 0);
		assert_int_equal(r.out.len, n);
		sink_free(&r.out);
	}
}

static void
test_runs_and_end_state(void **state)
{
	static const char msg[] = "From: a@b\r\nSubject: x\r\n\r\nhello\r\n"
	    "world\r\n.\r\nQUIT\r\n";
	struct data_filter f;
	struct sink s = { 0 };
	size_t used;

	/* a message without stuffing comes out in one run */
	data_filter_init(&f, 0);
	assert_int_equal(data_filter_feed(&f, msg, sizeof(msg) - 1, &used,
	    sink_out, &s), DATA_END);
	assert_int_equal(used, sizeof(msg) - 1 - 6);
	assert_int_equal(s.calls, 1);
	assert_int_equal(s.len, sizeof(msg) - 1 - 9);

	/* after the end: nothing more is consumed or written */
	assert_int_equal(data_filter_feed(&f, "x\r\n", 3, &used, sink_out,
	    &s), DATA_END);
	assert_int_equal(used, 0);
	assert_int_equal(s.calls, 1);
	sink_free(&s);

	/* a stuffed line cuts the run once */
	data_filter_init(&f, 0);
	assert_int_equal(data_filter_feed(&f, S("abc\r\n..def\r\n.\r\n"), &used,
	    sink_out, &s), DATA_END);
	assert_int_equal(s.calls, 2);
	assert_int_equal(s.len, 11);
	assert_memory_equal(s.buf, "abc\r\n.def\r\n", 11);
	sink_free(&s);

	/* out == NULL discards, still counts */
	data_filter_init(&f, DATA_F_NORMALIZE);
	assert_int_equal(data_filter_feed(&f, S("a\nb\r\n.\r\n"), &used,
	    NULL, NULL), DATA_END);
	assert_int_equal(used, 8);
	assert_true(f.size == 6);
	assert_int_equal(f.seen, DATA_SEEN_BARE_LF);

	/* empty feeds change nothing */
	data_filter_init(&f, 0);
	assert_int_equal(data_filter_feed(&f, "", 0, &used, sink_out, &s),
	    DATA_MORE);
	assert_int_equal(used, 0);
	assert_int_equal(s.calls, 0);
}

/* Tiny deterministic PRNG so the test is reproducible. */
static uint32_t
rng_next(uint32_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 17;
	*x ^= *x << 5;
	return *x;
}

/* 1 MiB of random lines (some starting with dots, some 8-bit), stuffed as a
 * client would, must come back exactly, in any chunking. */
static void
test_random_body(void **state)
{
	const size_t target = 1u << 20;
	char *plain = malloc(target + 2048), *wire = malloc(2 * target + 4096);
	size_t plen = 0, wlen = 0;
	uint32_t x = 0x9e3779b9u;
	int have_8bit = 0;

	assert_non_null(plain);
	assert_non_null(wire);
	while (plen < target) {
		size_t n = rng_next(&x) % 200, start = plen;
		int dot = rng_next(&x) % 8 == 0;

		if (dot)
			plain[plen++] = '.';
		for (size_t k = 0; k < n; k++) {
			unsigned char c = (unsigned char)(rng_next(&x) % 256);
			if (c == '\r' || c == '\n' || c == 0)
				c = ' ';
			if (c >= 0x80)
				have_8bit = 1;
			plain[plen++] = (char)c;
		}
		if (plen > start && plain[start] == '.')
			wire[wlen++] = '.';
		memcpy(wire + wlen, plain + start, plen - start);
		wlen += plen - start;
		memcpy(plain + plen, "\r\n", 2);
		plen += 2;
		memcpy(wire + wlen, "\r\n", 2);
		wlen += 2;
	}
	memcpy(wire + wlen, ".\r\nQUIT\r\n", 9);

	for (size_t mode = 0; mode < 4; mode++) {
		struct run_result r;
		size_t chunk = mode == 0 ? 0 : mode == 1 ? 4096 :
		    mode == 2 ? 1 : SIZE_MAX;
		run_filter(&r, wire, wlen + 9, mode == 3 ? NORM : 0, chunk, 7);
		assert_int_equal(r.st, DATA_END);
		assert_int_equal(r.end, wlen + 3);
		assert_int_equal(r.out.len, plen);
		assert_memory_equal(r.out.buf, plain, plen);
		assert_int_equal(r.f.seen, have_8bit ? DATA_SEEN_8BIT : 0);
		sink_free(&r.out);
	}
	free(plain);
	free(wire);
}

/* DATA_F_RAW (BDAT): dots are content, nothing ends the data, the same flags */
static void
test_raw_mode(void **state)
{
	static const struct {
		const char *in;
		size_t inlen;
		unsigned flags;
		const char *out;
		size_t outlen;
		unsigned seen;
	} cases[] = {
		{ S(".\r\n"), DATA_F_RAW, S(".\r\n"), 0 },
		{ S("a\r\n.\r\nb\r\n..c\r\n"), DATA_F_RAW,
		  S("a\r\n.\r\nb\r\n..c\r\n"), 0 },
		{ S("a\nb\r"), DATA_F_RAW, S("a\nb\r"), BLF | BCR },
		{ S("a\nb\r"), DATA_F_RAW | NORM, S("a\r\nb\r\n"), BLF | BCR },
		{ S("x\r"), DATA_F_RAW, S("x\r"), BCR },          /* CR at the end */
		{ S("\xe9\r\n"), DATA_F_RAW, S("\xe9\r\n"), DATA_SEEN_8BIT },
		{ S(""), DATA_F_RAW, S(""), 0 },
	};
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		/* whole, byte by byte, and in random splits: the same */
		for (size_t chunk = 0; chunk < 3; chunk++) {
			struct run_result r;
			run_filter(&r, cases[i].in, cases[i].inlen,
			    cases[i].flags, chunk == 2 ? SIZE_MAX : chunk,
			    (unsigned)i);
			assert_int_equal(r.st, DATA_MORE);
			assert_int_equal(r.end, cases[i].inlen);
			data_filter_finish(&r.f, sink_out, &r.out);
			assert_int_equal(r.out.len, cases[i].outlen);
			assert_memory_equal(r.out.buf, cases[i].out, r.out.len);
			assert_int_equal(r.f.seen & ~DATA_SEEN_LONG,
			    cases[i].seen);
			assert_int_equal(r.f.size, r.out.len);
			/* finished: nothing more is taken */
			size_t used = 9;
			assert_int_equal(data_filter_feed(&r.f, "a", 1, &used,
			    sink_out, &r.out), DATA_END);
			assert_int_equal(used, 0);
			sink_free(&r.out);
		}
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_smuggling_never_ends),
		cmocka_unit_test(test_line_length),
		cmocka_unit_test(test_runs_and_end_state),
		cmocka_unit_test(test_random_body),
		cmocka_unit_test(test_raw_mode),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
