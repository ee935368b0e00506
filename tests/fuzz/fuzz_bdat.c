/*
 * fuzz_bdat.c - libFuzzer target for the pure parts of BDAT (RFC 3030):
 * the argument parser smtp_parse_bdat() and the stream filter in raw mode
 * (DATA_F_RAW) fed chunk by chunk, as the session feeds it.
 *
 * Input: byte 0 = control (bit 0: DATA_F_NORMALIZE), then chunks: a length
 * byte and that many bytes (the last chunk takes what is left).
 * Checks, for every input:
 *  1. the concatenated chunks fed chunk by chunk, whole, and byte by byte
 *     give the same output, size and flags, and data_filter_finish() ends
 *     each the same way (later feeds take nothing);
 *  2. without NORMALIZE the output is the input, byte for byte (nothing is
 *     unstuffed, nothing ends the data early); with it, no bare CR or LF;
 *  3. "BDAT <n>" and "BDAT <n> LAST" written for each chunk parse back to
 *     n and the LAST bit; the raw input bytes as an argument never crash
 *     the parser and, when accepted, give a size that prints back as the
 *     digits given.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tern/data_filter.h"
#include "tern/smtp.h"

struct fz_out {
	unsigned char *p;
	size_t len, cap;
};

static void
fz_out(void *arg, const char *p, size_t len)
{
	struct fz_out *o = arg;

	if (o->len + len > o->cap) {
		o->cap = (o->len + len) * 2 + 16;
		o->p = realloc(o->p, o->cap);
		if (o->p == NULL)
			abort();
	}
	memcpy(o->p + o->len, p, len);
	o->len += len;
}

static int
fz_eq(const void *a, const void *b, size_t n)
{
	return n == 0 || memcmp(a, b, n) == 0;
}

/* Feed in[0..len) in pieces of step bytes (0: whole), then finish. */
static void
fz_feed(struct data_filter *f, struct fz_out *o, const uint8_t *in,
    size_t len, unsigned flags, size_t step)
{
	size_t off = 0, used;

	data_filter_init(f, flags | DATA_F_RAW);
	while (off < len) {
		size_t n = step == 0 || step > len - off ? len - off : step;
		if (data_filter_feed(f, (const char *)in + off, n, &used, fz_out,
		    o) != DATA_MORE || used != n)
			abort();
		off += n;
	}
	data_filter_finish(f, fz_out, o);
	if (data_filter_feed(f, "x", 1, &used, fz_out, o) != DATA_END ||
	    used != 0)
		abort();
}

static void
fz_bdat_args(const uint8_t *data, size_t size)
{
	char line[64];
	uint64_t n;
	int last;

	for (int l = 0; l < 2; l++) {
		uint64_t want = size * 977u + (uint64_t)l;
		int k = snprintf(line, sizeof(line), "%" PRIu64 "%s", want,
		    l ? " LAST" : "");
		if (smtp_parse_bdat(line, (size_t)k, &n, &last) !=
		    SMTP_PARSE_OK || n != want || last != l)
			abort();
	}
	if (smtp_parse_bdat((const char *)data, size, &n, &last) ==
	    SMTP_PARSE_OK) {
		size_t d = 0;
		while (d < size && data[d] >= '0' && data[d] <= '9')
			d++;
		int k = snprintf(line, sizeof(line), "%" PRIu64, n);
		/* leading zeros are allowed: compare without them */
		size_t z = 0;
		while (z + 1 < d && data[z] == '0')
			z++;
		if ((size_t)k != d - z || !fz_eq(line, data + z, d - z))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct data_filter fc, fw, fb;
	struct fz_out oc = { 0 }, ow = { 0 }, ob = { 0 };
	unsigned flags;
	uint8_t *all;
	size_t alen = 0, i;

	if (size < 1)
		return 0;
	fz_bdat_args(data + 1, size - 1);
	flags = (data[0] & 1) ? DATA_F_NORMALIZE : 0;
	all = malloc(size);
	if (all == NULL)
		abort();

	/* chunk by chunk, as BDAT commands deliver them */
	data_filter_init(&fc, flags | DATA_F_RAW);
	for (i = 1; i < size;) {
		size_t n = data[i++], used;
		if (n > size - i)
			n = size - i;
		memcpy(all + alen, data + i, n);
		alen += n;
		if (data_filter_feed(&fc, (const char *)data + i, n, &used,
		    fz_out, &oc) != DATA_MORE || used != n)
			abort();
		i += n;
	}
	data_filter_finish(&fc, fz_out, &oc);

	fz_feed(&fw, &ow, all, alen, flags, 0);
	fz_feed(&fb, &ob, all, alen, flags, 1);
	if (oc.len != ow.len || ob.len != ow.len ||
	    !fz_eq(oc.p, ow.p, ow.len) || !fz_eq(ob.p, ow.p, ow.len))
		abort();
	if (fc.seen != fw.seen || fb.seen != fw.seen || fc.size != fw.size ||
	    fw.size != ow.len)
		abort();
	if (!flags && (ow.len != alen || !fz_eq(ow.p, all, alen)))
		abort();
	if (flags) {
		for (size_t k = 0; k < ow.len; k++) {
			if (ow.p[k] == '\r' && (k + 1 >= ow.len ||
			    ow.p[k + 1] != '\n'))
				abort();
			if (ow.p[k] == '\n' && (k == 0 || ow.p[k - 1] != '\r'))
				abort();
		}
	}
	free(all);
	free(oc.p);
	free(ow.p);
	free(ob.p);
	return 0;
}
