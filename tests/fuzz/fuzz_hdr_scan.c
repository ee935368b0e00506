/*
 * fuzz_hdr_scan.c - the header scanner over arbitrary bytes: fed whole and
 * in chunks chosen by the input, the result (header length, flags, trace
 * field count) is the same, and never more than the input; the count never
 * exceeds the number of line starts.
 */
#include <stdint.h>
#include <stdlib.h>

#include "tern/hdr_scan.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hdr_scan a, b;
	size_t na, nb = 0, off = 0, step;

	if (size < 1)
		return 0;
	step = (size_t)(data[0] % 7) + 1;
	data++;
	size--;
	hdr_scan_init(&a);
	na = hdr_scan_feed(&a, (const char *)data, size);
	hdr_scan_init(&b);
	while (off < size) {
		size_t k = size - off < step ? size - off : step;
		nb += hdr_scan_feed(&b, (const char *)data + off, k);
		off += k;
	}
	if (na != nb || a.flags != b.flags || na > size || a.ntrace != b.ntrace)
		abort();
	size_t lines = 1;
	for (size_t i = 0; i < na; i++)
		lines += data[i] == '\n';
	if (a.ntrace > lines)
		abort();
	if ((a.flags & HDR_END) && (na == 0 || data[na - 1] != '\n'))
		abort();
	return 0;
}
