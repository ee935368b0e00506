/*
 * txt.c - TXT answers (RFC 1035 3.3.14) into joined record strings, for
 * policy discovery (see resolver_txt_lookup in tern/resolver.h).
 *
 * Pure: no I/O, no globals; allocates only the record copies it returns
 * (owned by the txt_result) and whatever c-ares' own parser allocates and
 * frees. Untrusted input: the DNS reply, parsed by c-ares; every record is
 * bounded by RESOLVER_TXT_LEN and their number by RESOLVER_TXT_MAX.
 */
#include <stdlib.h>
#include <string.h>

#include <ares.h>

#include "tern/resolver.h"
#include "tern/util.h"

void
txt_result_free(struct txt_result *res)
{
	if (res == NULL)
		return;
	for (size_t i = 0; i < res->n; i++)
		free(res->txt[i]);
	free(res);
}

/* Append chunk c to record i (cut at RESOLVER_TXT_LEN). */
static void
txt_append(struct txt_result *out, size_t i, const unsigned char *c,
    size_t n)
{
	size_t have = out->txt_len[i];

	if (have + n > RESOLVER_TXT_LEN)
		n = RESOLVER_TXT_LEN - have;
	memcpy(out->txt[i] + have, c, n);
	out->txt_len[i] = have + n;
	out->txt[i][have + n] = '\0';
}

enum resolver_status
txt_from_reply(int ares_status, const unsigned char *buf, size_t len,
    const char *name, struct txt_result *out)
{
	struct ares_txt_ext *list = NULL, *t;
	int st = ares_status, skip = 0;

	if (st == ARES_SUCCESS && (buf == NULL || len > 65535))
		st = ARES_EBADRESP;
	if (st == ARES_SUCCESS)
		st = ares_parse_txt_reply_ext(buf, (int)len, &list);
	if (st == ARES_SUCCESS && list == NULL)
		st = ARES_ENODATA;
	if (st != ARES_SUCCESS) {
		out->status = mx_classify(st, name, "TXT", out->dsn,
		    out->reason, sizeof(out->reason));
		return out->status;
	}
	for (t = list; t != NULL; t = t->next) {
		if (t->record_start) {
			skip = out->n == RESOLVER_TXT_MAX;
			if (!skip) {
				out->txt[out->n] = xmalloc(RESOLVER_TXT_LEN + 1);
				out->txt[out->n][0] = '\0';
				out->txt_len[out->n] = 0;
				out->n++;
			}
		}
		if (!skip && out->n > 0)
			txt_append(out, out->n - 1, t->txt, t->length);
	}
	ares_free_data(list);
	if (out->n == 0) {
		out->status = mx_classify(ARES_ENODATA, name, "TXT", out->dsn,
		    out->reason, sizeof(out->reason));
		return out->status;
	}
	out->status = RESOLVER_OK;
	strcpy(out->dsn, "2.0.0");
	return out->status;
}
