/*
 * fuzz_smtp_reply.c - the SMTP reply parser on arbitrary server output:
 * consume replies one after the other; check bounds and that a reply
 * parses the same from exactly its own bytes; extract EHLO keywords.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/smtp_reply.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	size_t off = 0;

	while (off < size) {
		struct smtp_reply r, r2;
		struct smtp_ehlo e;
		enum smtp_reply_status st;

		st = smtp_reply_parse(p + off, size - off, &r);
		if (st != SMTP_REPLY_OK)
			break;
		if (r.len == 0 || r.len > size - off || r.len > SMTP_REPLY_MAX)
			abort();
		if (r.code < 200 || r.code > 559 || r.nlines == 0)
			abort();
		if (strlen(r.text) >= sizeof(r.text) ||
		    strlen(r.enh) >= sizeof(r.enh))
			abort();
		if (r.enh[0] != '\0' && r.enh[0] != p[off])
			abort();
		/* the same reply from exactly its bytes */
		if (smtp_reply_parse(p + off, r.len, &r2) != SMTP_REPLY_OK ||
		    r2.len != r.len || r2.code != r.code ||
		    strcmp(r2.text, r.text) != 0 || strcmp(r2.enh, r.enh) != 0)
			abort();
		/* and a proper prefix is never a complete reply */
		if (smtp_reply_parse(p + off, r.len - 1, &r2) == SMTP_REPLY_OK)
			abort();
		smtp_ehlo_parse(p + off, r.len, &e);
		if (!(e.ext & SMTP_EXT_SIZE) && e.size != 0)
			abort();
		off += r.len;
	}
	(void)smtp_reply_strstatus(SMTP_REPLY_MORE);
	return 0;
}
