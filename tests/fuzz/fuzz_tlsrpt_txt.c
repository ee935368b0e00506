/*
 * fuzz_tlsrpt_txt.c - the TLS-RPT TXT record parser (queue/mta/tlsrpt_txt.c)
 * on arbitrary bytes: as one record's text, and split at each LF into the
 * records of one name (at most 16, as the resolver keeps). Every
 * address kept must be a NUL-terminated local@domain within bounds, and
 * the counts must stay within their limits.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/tlsrpt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(enum tlsrpt_txt_status st, const struct tlsrpt_txt *t, size_t size)
{
	if (st != TLSRPT_TXT_OK && st != TLSRPT_TXT_NOT_TLSRPT &&
	    st != TLSRPT_TXT_SYNTAX && st != TLSRPT_TXT_NO_RUA)
		abort();
	if (t->nrua > TLSRPT_RUA_MAX || t->nhttps > size ||
	    t->nother > size)
		abort();
	for (size_t i = 0; i < t->nrua; i++) {
		const char *a = t->rua[i];
		size_t n = strnlen(a, TLSRPT_ADDR_MAX);

		if (n == 0 || n >= TLSRPT_ADDR_MAX || strchr(a, '@') == NULL)
			abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tlsrpt_txt t;

	check(tlsrpt_txt_parse((const char *)data, size, &t), &t, size);
	char *rec[16];
	size_t len[16], n = 0, start = 0;

	for (size_t i = 0; i <= size && n < 16; i++)
		if (i == size || data[i] == '\n') {
			len[n] = i - start;
			rec[n] = malloc(len[n] + 1);    /* exact size: ASan sees overreads */
			if (rec[n] == NULL)
				abort();
			memcpy(rec[n], data + start, len[n]);
			rec[n][len[n]] = '\0';
			n++;
			start = i + 1;
		}
	check(tlsrpt_txt_from_records(rec, len, n, &t), &t, size);
	for (size_t i = 0; i < n; i++)
		free(rec[i]);
	return 0;
}
