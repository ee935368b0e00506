/*
 * fuzz_dkim.c - the DKIM canonicaliser over arbitrary bytes: fed whole and
 * in chunks whose sizes the input chooses, it gives the same body hash, the
 * same kept header fields (bytes and names) and the same overflow verdict;
 * every kept field is "name:value" with a CRLF, within the bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/dkim.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dkim_canon a, b;
	const uint8_t *steps;
	size_t nsteps, off = 0, k = 0;

	if (size < 4)
		return 0;
	nsteps = (size_t)(data[0] % 8) + 1;
	if (size < 1 + nsteps)
		return 0;
	steps = data + 1;
	data += 1 + nsteps;
	size -= 1 + nsteps;
	if (dkim_canon_init(&a) != 0 || dkim_canon_init(&b) != 0)
		abort();
	dkim_canon_feed(&a, (const char *)data, size);
	dkim_canon_finish(&a);
	while (off < size) {
		size_t n = (size_t)steps[k++ % nsteps] + 1;
		if (n > size - off)
			n = size - off;
		dkim_canon_feed(&b, (const char *)data + off, n);
		off += n;
	}
	dkim_canon_finish(&b);
	if (memcmp(a.bh, b.bh, sizeof(a.bh)) != 0 || a.nfields != b.nfields ||
	    a.hlen != b.hlen || a.overflow != b.overflow ||
	    (a.hlen > 0 && memcmp(a.hbuf, b.hbuf, a.hlen) != 0))
		abort();
	if (a.hlen > DKIM_HDR_MAX || a.nfields > DKIM_FIELDS_MAX)
		abort();
	for (size_t i = 0; i < a.nfields; i++) {
		const struct dkim_field *f = &a.fields[i];
		if (f->name != b.fields[i].name || f->off + f->len > a.hlen ||
		    f->len < 3 || a.hbuf[f->off + f->len - 1] != '\n' ||
		    memchr(a.hbuf + f->off, ':', f->len) == NULL)
			abort();
	}
	dkim_canon_free(&a);
	dkim_canon_free(&b);
	return 0;
}
