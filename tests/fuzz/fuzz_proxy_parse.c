/*
 * fuzz_proxy_parse.c - the PROXY protocol header parser over arbitrary
 * bytes: a header that parses is within the input and parses the same when
 * the input is cut right after it; every shorter cut asks for more (so a
 * reader that consumes "need more" bytes never eats payload); an address
 * taken from a header is IPv4 or IPv6.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proxy_hdr h, h2;
	enum proxy_status st = proxy_parse(data, size, &h);

	if (st == PROXY_NEED_MORE) {
		/* a prefix of a prefix is a prefix */
		if (size > 0 && proxy_parse(data, size - 1, &h2) != PROXY_NEED_MORE)
			abort();
		return 0;
	}
	if (st != PROXY_OK)
		return 0;
	if (h.len == 0 || h.len > size || (h.version != 1 && h.version != 2))
		abort();
	if (h.version == 1 && h.len > PROXY_V1_MAX)
		abort();
	if (!h.local && ((h.src.ss_family != 2 && h.src.ss_family != 10) ||
	    h.src.ss_family != h.dst.ss_family))
		abort();
	if (proxy_parse(data, h.len, &h2) != PROXY_OK || h2.len != h.len ||
	    h2.local != h.local || h2.ntlv != h.ntlv ||
	    memcmp(&h2.src, &h.src, sizeof(h.src)) != 0)
		abort();
	for (size_t k = 0; k < h.len; k++)
		if (proxy_parse(data, k, &h2) != PROXY_NEED_MORE)
			abort();
	return 0;
}
