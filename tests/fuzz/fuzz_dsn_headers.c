/*
 * fuzz_dsn_headers.c - libFuzzer target for the DSN builder's handling of
 * untrusted text: dsn_headers_extract() over the original message, and
 * dsn_build() with the input also used as the remote reply and host.
 *
 * Input: byte 0 = limit selector, the rest = the original message.
 * Checks, for every input:
 *  1. the extracted header is at most min(limit, outcap) bytes, made of
 *     CRLF-terminated lines of at most 998 octets with no bare CR or LF and
 *     no NUL, and no line is empty (the header ends before the blank line);
 *  2. extraction is a prefix-stable cut: a smaller limit gives a prefix of
 *     the result with a larger one;
 *  3. the whole DSN (the input also as reply, relay, ORCPT and ENVID, and
 *     returned whole when bit 1 of byte 0 asks RET=FULL) has
 *     CRLF-only line ends, lines of at most 998 octets, no NUL, and its
 *     closing boundary exactly once (no boundary injection).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tern/dsn.h"

static void
fz_check_lines(const char *p, size_t len, int allow_empty)
{
	size_t col = 0;

	if (len == 0)
		return;
	if (len < 2 || p[len - 2] != '\r' || p[len - 1] != '\n')
		abort();
	for (size_t i = 0; i < len; i++) {
		if (p[i] == '\r') {
			if (i + 1 >= len || p[i + 1] != '\n')
				abort();
			if (col > 998 || (!allow_empty && col == 0))
				abort();
			col = 0;
			i++;
			continue;
		}
		if (p[i] == '\n' || (!allow_empty && p[i] == '\0'))
			abort();
		col++;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char out[DSN_HEADERS_MAX], small[DSN_HEADERS_MAX];
	const char *p;
	size_t len, lim, n, n2;

	if (size < 1)
		return 0;
	lim = (size_t)data[0] * 37;
	p = (const char *)data + 1;
	len = size - 1;

	n = dsn_headers_extract(p, len, DSN_HEADERS_MAX, out, sizeof(out));
	if (n > sizeof(out))
		abort();
	fz_check_lines(out, n, 0);
	n2 = dsn_headers_extract(p, len, lim, small, sizeof(small));
	if (n2 > lim || n2 > n || memcmp(small, out, n2) != 0)
		abort();

	/* the same bytes as a hostile reply and relay name */
	char *diag = malloc(len + 1), *msg = NULL;
	size_t mlen = 0;
	unsigned fl = 0;
	memcpy(diag, p, len);
	diag[len] = '\0';           /* C strings: stop at the first NUL */
	struct dsn_rcpt r = { .addr = "rcpt@example.test", .orcpt = diag,
	    .action = (data[0] & 1) ? DSN_ACTION_FAILED : DSN_ACTION_DELAYED,
	    .status = "5.1.1", .remote_mta = diag, .diag = diag,
	    .diag_smtp = 1, .last_attempt = 1700000000,
	    .retry_until = 1700400000 };
	struct dsn_msg m = { .hostname = "mx.test", .qid = 0x1234,
	    .sender = "s@example.test", .envid = diag, .arrival = 1699990000,
	    .now = 1700000000, .rcpts = &r, .nrcpt = 1, .orig = p,
	    .origlen = len, .rnd = 0x42, .ret_full = (data[0] & 2) != 0 };
	char orc[256];
	if (dsn_orcpt_decode(diag, orc, sizeof(orc)) == 0 &&
	    strlen(orc) > strlen(diag) + 1)
		abort();                /* decoding never grows but by ' ' */
	if (dsn_build(&m, &msg, &mlen, &fl) != DSN_OK)
		abort();
	fz_check_lines(msg, mlen, 1);
	if (strlen(msg) != mlen)
		abort();
	/* the closing delimiter appears exactly once, at the end */
	{
		const char *b = strstr(msg, "boundary=\"");
		char bnd[96], close[110];
		size_t bl = 0, cnt = 0;
		if (b == NULL)
			abort();
		b += 10;
		while (bl < sizeof(bnd) - 1 && b[bl] != '"') {
			bnd[bl] = b[bl];
			bl++;
		}
		bnd[bl] = '\0';
		snprintf(close, sizeof(close), "--%s--", bnd);
		for (const char *q = msg; (q = strstr(q, close)) != NULL; q++)
			cnt++;
		if (cnt != 1)
			abort();
	}
	free(msg);
	free(diag);
	return 0;
}
