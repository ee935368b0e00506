/*
 * fuzz_data_filter.c - libFuzzer target for the DATA stream filter.
 *
 * Input: byte 0 = control (bit 0: DATA_F_NORMALIZE), the rest = DATA bytes.
 * Checks, for every input:
 *  1. split invariance: fed whole, one byte at a time, and in chunks whose
 *     sizes come from the input bytes, the status, end offset, output, size,
 *     flags and internal state are identical;
 *  2. a plain reference model (cut at real CRLFs, the line "." ends, else
 *     drop one leading dot; bare CR / LF are bytes inside a line) gives the
 *     same status, end offset, output and flags;
 *  3. size == output length; with NORMALIZE the output has no bare CR or LF
 *     (a CR last in the output is allowed while data is still open);
 *  4. round trip: when data ended, re-stuffing the output (a dot before each
 *     real line that starts with ".") and adding ".<CRLF>" gives input that
 *     the filter ends exactly at its end, with the same output and flags.
 *     This is the real anti-smuggling invariant: the output never contains
 *     "\r\n.\r\n" in a form that the delivery side could send as an end.
 *     (The output itself may contain "\r\n.\r\n": "..<CRLF>" unstuffs to a
 *     line that is a single dot.)
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/data_filter.h"
#include "tern/smtp.h"

struct fz_buf {
	unsigned char *p;
	size_t len, cap;
};

static void
fz_put(struct fz_buf *b, const void *p, size_t len)
{
	if (len == 0)
		return;
	if (b->len + len > b->cap) {
		b->cap = (b->len + len) * 2 + 64;
		b->p = realloc(b->p, b->cap);
		if (b->p == NULL)
			abort();
	}
	memcpy(b->p + b->len, p, len);
	b->len += len;
}

static void
fz_out(void *arg, const char *p, size_t len)
{
	if (len == 0)
		abort();        /* runs are never empty */
	fz_put(arg, p, len);
}

struct fz_result {
	enum data_status st;
	size_t end;
	struct data_filter f;
	struct fz_buf out;
};

/* mode 0: whole; 1: byte at a time; 2: chunk sizes from the input bytes. */
static void
fz_run(struct fz_result *r, const unsigned char *in, size_t len,
    unsigned flags, int mode)
{
	size_t off = 0, k = 0;

	memset(r, 0, sizeof(*r));
	data_filter_init(&r->f, flags);
	r->st = DATA_MORE;
	do {
		size_t n = len - off, used;
		if (mode == 1)
			n = 1;
		else if (mode == 2 && len > 0) {
			unsigned v = in[(k++ * 7) % len];
			if (v % 5 == 0) {
				/* an empty feed changes nothing */
				if (data_filter_feed(&r->f, "", 0, &used, fz_out,
				    &r->out) != DATA_MORE || used != 0)
					abort();
			}
			n = 1 + v % 23;
		}
		if (n > len - off)
			n = len - off;
		r->st = data_filter_feed(&r->f, (const char *)in + off, n, &used,
		    fz_out, &r->out);
		if (used > n || (r->st == DATA_MORE && used != n))
			abort();
		off += used;
	} while (r->st == DATA_MORE && off < len);
	r->end = off;
	if (r->f.size != r->out.len)
		abort();
}

static void
fz_same(const struct fz_result *a, const struct fz_result *b)
{
	if (a->st != b->st || a->end != b->end || a->out.len != b->out.len ||
	    (a->out.len && memcmp(a->out.p, b->out.p, a->out.len) != 0) ||
	    a->f.seen != b->f.seen || a->f.size != b->f.size ||
	    a->f.state != b->f.state || a->f.line_len != b->f.line_len)
		abort();
}

/*
 * Reference: one "segment" of a line (bytes between bare CR / LF): update
 * LONG and write it. `open` = the segment is the unfinished tail.
 */
static void
ref_segment(const unsigned char *p, size_t n, unsigned *seen)
{
	for (size_t i = 0; i < n; i++) {
		if (p[i] == 0)
			*seen |= DATA_SEEN_NUL;
		if (p[i] >= 0x80)
			*seen |= DATA_SEEN_8BIT;
	}
	if (n + 2 > SMTP_TEXT_MAX)
		*seen |= DATA_SEEN_LONG;
}

/* Write line body l[0..n) (no real CRLF inside, leading dot removed). If
 * tail, a last CR is not yet known to be bare. */
static void
ref_body(struct fz_buf *o, const unsigned char *l, size_t n, int normalize,
    int tail, unsigned *seen)
{
	size_t seg = 0;

	for (size_t i = 0; i < n; i++) {
		if (l[i] != '\r' && l[i] != '\n')
			continue;
		ref_segment(l + seg, i - seg, seen);
		fz_put(o, l + seg, i - seg);
		seg = i + 1;
		if (tail && i == n - 1 && l[i] == '\r') {
			fz_put(o, "\r", 1);       /* pending: bare or CRLF */
			return;
		}
		*seen |= l[i] == '\r' ? DATA_SEEN_BARE_CR : DATA_SEEN_BARE_LF;
		if (normalize)
			fz_put(o, "\r\n", 2);
		else
			fz_put(o, l + i, 1);
	}
	ref_segment(l + seg, n - seg, seen);
	fz_put(o, l + seg, n - seg);
}

static void
ref_run(struct fz_result *r, const unsigned char *in, size_t len,
    unsigned flags)
{
	const int normalize = (flags & DATA_F_NORMALIZE) != 0;
	size_t pos = 0;
	unsigned seen = 0;

	memset(r, 0, sizeof(*r));
	r->st = DATA_MORE;
	for (;;) {
		const unsigned char *l = in + pos;
		size_t n, rest = len - pos;
		const unsigned char *crlf = NULL;

		for (size_t i = 0; i + 1 < rest; i++)
			if (l[i] == '\r' && l[i + 1] == '\n') {
				crlf = l + i;
				break;
			}
		if (crlf == NULL) {
			/* unfinished tail: ".", ".<CR>" are held back */
			if (rest > 0 && l[0] == '.') {
				l++;
				rest--;
				if (rest == 0 || (rest == 1 && l[0] == '\r'))
					break;
			}
			ref_body(&r->out, l, rest, normalize, 1, &seen);
			break;
		}
		n = (size_t)(crlf - l);
		pos += n + 2;
		if (n == 1 && l[0] == '.') {
			r->st = DATA_END;
			break;
		}
		if (n > 0 && l[0] == '.') {
			l++;
			n--;
		}
		ref_body(&r->out, l, n, normalize, 0, &seen);
		fz_put(&r->out, "\r\n", 2);
	}
	r->end = r->st == DATA_END ? pos : len;
	r->f.seen = seen;
}

static void
fz_check_normalized(const struct fz_result *r)
{
	const unsigned char *o = r->out.p;
	size_t n = r->out.len;

	for (size_t i = 0; i < n; i++) {
		if (o[i] == '\n' && (i == 0 || o[i - 1] != '\r'))
			abort();
		if (o[i] == '\r' && i + 1 < n && o[i + 1] != '\n')
			abort();
		if (o[i] == '\r' && i + 1 == n && r->st == DATA_END)
			abort();
	}
}

/* Re-stuff like the delivery side (per real CRLF line), end with .CRLF. */
static void
fz_roundtrip(const struct fz_result *r, unsigned flags)
{
	struct fz_buf w = { 0 };
	struct fz_result back;
	const unsigned char *o = r->out.p;
	size_t n = r->out.len, i = 0;

	while (i < n) {
		size_t j = i;
		while (j + 1 < n && !(o[j] == '\r' && o[j + 1] == '\n'))
			j++;
		if (j + 1 >= n)
			abort();        /* output after END ends with CRLF */
		if (o[i] == '.')
			fz_put(&w, ".", 1);
		fz_put(&w, o + i, j + 2 - i);
		i = j + 2;
	}
	fz_put(&w, ".\r\n", 3);
	fz_run(&back, w.p, w.len, 0, 0);
	if (back.st != DATA_END || back.end != w.len || back.out.len != n ||
	    (n && memcmp(back.out.p, o, n) != 0))
		abort();
	if (flags & DATA_F_NORMALIZE) {
		if (back.f.seen !=
		    (r->f.seen & ~(DATA_SEEN_BARE_CR | DATA_SEEN_BARE_LF)))
			abort();
	} else if (back.f.seen != r->f.seen)
		abort();
	free(back.out.p);
	free(w.p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_result whole, bytes, chunks, ref;
	unsigned flags;

	if (size < 1)
		return 0;
	flags = (data[0] & 1) ? DATA_F_NORMALIZE : 0;
	data++;
	size--;

	fz_run(&whole, data, size, flags, 0);
	fz_run(&bytes, data, size, flags, 1);
	fz_run(&chunks, data, size, flags, 2);
	fz_same(&whole, &bytes);
	fz_same(&whole, &chunks);

	ref_run(&ref, data, size, flags);
	if (ref.st != whole.st || ref.end != whole.end ||
	    ref.out.len != whole.out.len ||
	    (ref.out.len && memcmp(ref.out.p, whole.out.p, ref.out.len)) ||
	    ref.f.seen != whole.f.seen)
		abort();

	if (flags & DATA_F_NORMALIZE)
		fz_check_normalized(&whole);
	if (whole.st == DATA_END)
		fz_roundtrip(&whole, flags);

	free(whole.out.p);
	free(bytes.out.p);
	free(chunks.out.p);
	free(ref.out.p);
	return 0;
}
