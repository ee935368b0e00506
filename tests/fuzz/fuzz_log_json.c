/*
 * fuzz_log_json.c - log_json_line() over arbitrary message text: the line
 * must always be one valid JSON object (checked with tern's own parser),
 * end with a single LF, and stay inside its buffer whatever its size.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/json.h"
#include "tern/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char out[20000];
	char *msg;
	size_t dstlen;

	if (size < 2)
		return 0;
	/* first two bytes choose the buffer size: tiny to roomy */
	dstlen = ((size_t)data[0] << 8 | data[1]) % sizeof(out);
	msg = malloc(size - 1);
	memcpy(msg, data + 2, size - 2);
	msg[size - 2] = '\0';
	size_t n = log_json_line(out, dstlen, "2026-11-21T16:40:48.123Z", "info",
	    "ternd", 123, msg);
	if (dstlen > 0) {
		if (n >= dstlen)
			abort();
		if (n > 0) {
			if (out[n - 1] != '\n' || out[n] != '\0')
				abort();
			size_t used;
			if (json_parse(out, n - 1, NULL, 0, 8, &used) != JSON_OK)
				abort();
		}
	}
	free(msg);
	return 0;
}
