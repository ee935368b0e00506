/*
 * fuzz_envelope.c - envelope_decode() on arbitrary bytes. Whatever decodes
 * in the current version must re-encode to exactly the same bytes (the
 * format is canonical); an older version re-encodes to a current record that
 * is itself canonical. Nothing may crash, leak or read out of bounds.
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
	if (data[0] == ENVELOPE_VERSION) {
		if (outlen != size || memcmp(out, data, size) != 0)
			abort();
	} else {
		struct envelope *e2 = NULL;
		uint8_t *out2 = NULL;
		size_t outlen2;
		if (out[0] != ENVELOPE_VERSION ||
		    envelope_decode(out, outlen, &e2) != ENV_DECODE_OK ||
		    envelope_encode(e2, &out2, &outlen2) != 0 ||
		    outlen2 != outlen || memcmp(out, out2, outlen) != 0)
			abort();
		envelope_free(e2);
		free(out2);
	}
	d = envelope_dup(e);
	(void)envelope_pending(d);
	for (size_t i = 0; i < d->nrcpt; i++)
		(void)rcpt_state_name((enum rcpt_state)d->rcpts[i].state);
	for (size_t i = 0; i < d->nhist; i++)
		(void)env_result_name((enum env_result)d->hist[i].result);
	envelope_add_attempt(d, 1, 0, ENV_RES_SENT, "relay", "2.0.0", "ok", NULL);
	envelope_free(d);
	envelope_free(e);
	free(out);
	return 0;
}
