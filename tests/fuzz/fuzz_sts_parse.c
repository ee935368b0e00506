/*
 * fuzz_sts_parse.c - the MTA-STS parsers (base/sts_parse.c) over arbitrary
 * bytes: the first byte picks the TXT record or the policy file.
 *
 * Checks beyond "no crash": an accepted TXT id is 1..32 letters and digits;
 * an accepted policy has a known mode, max_age within the limit, at least
 * one mx unless the mode is none, and every mx pattern is a bounded,
 * lower-case name that matches itself.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/sts.h"

static void
fuzz_sts_txt(const char *p, size_t len)
{
	struct sts_txt t;
	size_t n;

	if (sts_txt_parse(p, len, &t) != STS_PARSE_OK)
		return;
	n = strlen(t.id);
	if (n == 0 || n > STS_ID_MAX)
		abort();
	for (size_t i = 0; i < n; i++)
		if (!((t.id[i] >= '0' && t.id[i] <= '9') ||
		    (t.id[i] >= 'a' && t.id[i] <= 'z') ||
		    (t.id[i] >= 'A' && t.id[i] <= 'Z')))
			abort();
}

static void
fuzz_sts_policy(const char *p, size_t len)
{
	static struct sts_policy pol;

	if (sts_policy_parse(p, len, &pol) != STS_PARSE_OK)
		return;
	if (pol.mode > STS_MODE_ENFORCE || pol.max_age > STS_MAX_AGE_MAX ||
	    pol.nmx > STS_MX_MAX || (pol.mode != STS_MODE_NONE && pol.nmx == 0))
		abort();
	for (size_t i = 0; i < pol.nmx; i++) {
		size_t n = strlen(pol.mx[i]);
		if (n == 0 || n > STS_NAME_MAX)
			abort();
		for (size_t k = 0; k < n; k++)
			if (pol.mx[i][k] >= 'A' && pol.mx[i][k] <= 'Z')
				abort();
		/* a plain name matches itself */
		if (pol.mx[i][0] != '*' && !sts_mx_match(pol.mx[i], pol.mx[i]))
			abort();
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	if (data[0] & 1)
		fuzz_sts_txt((const char *)data + 1, size - 1);
	else
		fuzz_sts_policy((const char *)data + 1, size - 1);
	return 0;
}
