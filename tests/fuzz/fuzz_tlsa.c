/*
 * fuzz_tlsa.c - raw DNS reply bytes through the TLSA answer reader of
 * resolver/tlsa.c (names with compression, CNAME chains, record bounds),
 * checking its invariants. Corpus: tests/fuzz/corpus/tlsa/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>

#include "tern/tlsa.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct tlsa_result r;
	static char ps[TLSA_DATA_MAX * 2 + TLSA_RR_MAX * 16];
	int ad = size > 3 && (data[3] & 0x20);
	enum tlsa_status st;
	size_t used = 0;

	st = tlsa_from_reply(dns_reply_status(ARES_SUCCESS, data, size), data,
	    size, ad, "_25._tcp.mx.example.test", &r);
	if (st != r.status || st > TLSA_FAIL)
		abort();
	if (r.n > TLSA_RR_MAX || r.used > TLSA_DATA_MAX)
		abort();
	if (st == TLSA_FAIL && (r.n != 0 || r.reason[0] == '\0'))
		abort();
	if ((st == TLSA_SECURE) && !ad)
		abort();
	for (size_t i = 0; i < r.n; i++) {
		if (r.rr[i].off != used || r.rr[i].len == 0)
			abort();
		used += r.rr[i].len;
	}
	if (used != r.used || tlsa_usable_count(&r) > r.n)
		abort();
	tlsa_policy_string(&r, ps, sizeof(ps));
	if (memchr(ps, '\0', sizeof(ps)) == NULL)
		abort();
	tlsa_policy_string(&r, ps, 7);
	if (strlen(ps) >= 7)
		abort();
	return 0;
}
