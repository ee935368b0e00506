/*
 * hdr_scan.c - incremental scanner of the header section (see
 * tern/hdr_scan.h). Pure; runs on a session loop over DATA output.
 *
 * States: at a line start, in a field name, in the rest of a line, or after
 * a CR at a line start (an empty line being ended).
 */
#include <limits.h>
#include <string.h>

#include "tern/hdr_scan.h"
#include "tern/util.h"

enum { HS_LINE_START, HS_NAME, HS_REST, HS_CR, HS_DONE };

void
hdr_scan_init(struct hdr_scan *h)
{
	memset(h, 0, sizeof(*h));
	h->state = HS_LINE_START;
}

static void
hdr_scan_name_done(struct hdr_scan *h)
{
	if (ascii_casecmp_n(h->name, h->name_len, "date", 4) == 0)
		h->flags |= HDR_HAVE_DATE;
	else if (ascii_casecmp_n(h->name, h->name_len, "message-id", 10) == 0)
		h->flags |= HDR_HAVE_MSGID;
	else if (ascii_casecmp_n(h->name, h->name_len, "tls-required", 12) == 0) {
		h->in_tlsreq = 1;
		h->tv_len = 0;
	} else if ((ascii_casecmp_n(h->name, h->name_len, "received", 8) == 0 ||
	    ascii_casecmp_n(h->name, h->name_len, "delivered-to", 12) == 0) &&
	    h->ntrace < UINT_MAX)
		h->ntrace++;
}

/* A TLS-Required: field ended: is its value "No"? (RFC 8689 5) */
static void
hdr_scan_value_done(struct hdr_scan *h)
{
	if (h->in_tlsreq && h->tv_len == 2 &&
	    ascii_casecmp_n(h->tv, 2, "no", 2) == 0)
		h->flags |= HDR_TLS_REQUIRED_NO;
	h->in_tlsreq = 0;
}

size_t
hdr_scan_feed(struct hdr_scan *h, const char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)p[i];
		switch (h->state) {
		case HS_DONE:
			return i;
		case HS_LINE_START:
			if (c != ' ' && c != '\t')
				hdr_scan_value_done(h);
			if (c == '\r')
				h->state = HS_CR;
			else if (c == '\n') {
				h->state = HS_DONE;
				h->flags |= HDR_END;
				return i + 1;
			} else if (c == ' ' || c == '\t')
				h->state = HS_REST;      /* folded continuation */
			else {
				h->name[0] = (char)c;
				h->name_len = 1;
				h->state = HS_NAME;
			}
			break;
		case HS_CR:
			if (c == '\n') {
				h->state = HS_DONE;
				h->flags |= HDR_END;
				return i + 1;
			}
			/* a lone CR at a line start: not an empty line */
			h->state = c == '\r' ? HS_CR : HS_REST;
			break;
		case HS_NAME:
			if (c == ':') {
				hdr_scan_name_done(h);
				h->state = HS_REST;
			} else if (c == '\n')
				h->state = HS_LINE_START;
			else if (c < 33 || c > 126 || h->name_len >= sizeof(h->name))
				h->state = HS_REST;      /* not a field we look for */
			else
				h->name[h->name_len++] = (char)c;
			break;
		case HS_REST:
			if (c == '\n')
				h->state = HS_LINE_START;
			else if (h->in_tlsreq && c != ' ' && c != '\t' &&
			    c != '\r') {
				if (h->tv_len < sizeof(h->tv))
					h->tv[h->tv_len] = (char)c;
				h->tv_len++;
			}
			break;
		}
	}
	return len;
}
