/*
 * fuzz_mime7.c - libFuzzer target for the 8-bit to 7-bit converter
 * (queue/mta/mime7.c). Input: a whole message.
 * Checks, for every input:
 *  1. a 7-bit input is MIME7_SEVEN, and only then is nothing produced;
 *  2. a converted message holds no 8-bit octet;
 *  3. converting it again says MIME7_SEVEN (done once, never twice);
 *  4. the conversion is deterministic (same input, same bytes).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/mime7.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	char *out = NULL, *out2 = NULL, *again = NULL;
	size_t n = 0, n2 = 0, na = 0;
	int eight = 0;
	enum mime7_status st;

	for (size_t i = 0; i < size; i++)
		if (data[i] >= 0x80)
			eight = 1;
	st = mime7_convert(p, size, &out, &n);
	if ((st == MIME7_SEVEN) != !eight)
		abort();
	if ((st == MIME7_OK) != (out != NULL))
		abort();
	if (st != MIME7_OK)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)out[i] >= 0x80)
			abort();
	if (mime7_convert(out, n, &again, &na) != MIME7_SEVEN || again != NULL)
		abort();
	if (mime7_convert(p, size, &out2, &n2) != MIME7_OK || n2 != n ||
	    memcmp(out, out2, n) != 0)
		abort();
	free(out);
	free(out2);
	return 0;
}
