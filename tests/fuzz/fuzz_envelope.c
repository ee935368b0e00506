/*
 * fuzz_envelope.c - envelope_decode() on arbitrary bytes. Whatever decodes
 * must re-encode to exactly the same bytes (the format is canonical), and
 * decode again; nothing may crash, leak or read out of bounds.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct envelope *e = NULL, *d;
	uint8_t *out = NULL;
	size_t outlen;

	if (envelope_decode(data, size, &e) != ENV_DECODE_OK) {
		if (e != NULL)
			abort();
		return 0;
	}
	if (envelope_encode(e, &out, &outlen) != 0)
		abort();
	if (outlen != size || memcmp(out, data, size) != 0)
		abort();
	d = envelope_dup(e);
	(void)envelope_pending(d);
	for (size_t i = 0; i < d->nrcpt; i++)
		(void)rcpt_state_name((enum rcpt_state)d->rcpts[i].state);
	envelope_free(d);
	envelope_free(e);
	free(out);
	return 0;
}
