/*
 * hdr_scan.h - incremental scanner of a message's header section (RFC 5322
 * 2.2, 3.6): where it ends, whether Date: and Message-ID: are present, and
 * how many trace fields (Received:, Delivered-To:) it holds, and whether a
 * "TLS-Required: No" field is present. Used for the submission fix-ups of
 * RFC 6409 8.1 and 8.3, for the hop count that stops mail loops (RFC 5321
 * 6.3) and for the TLS-Required header field (RFC 8689 5).
 *
 * Pure and incremental: no allocation, no I/O; any split of the input gives
 * the same result. Input is message text as the DATA filter outputs it
 * (lines end in CRLF; a bare LF is taken as a line end too).
 */
#ifndef TERN_HDR_SCAN_H
#define TERN_HDR_SCAN_H

#include <stddef.h>

#define HDR_HAVE_DATE   0x1u
#define HDR_HAVE_MSGID  0x2u
#define HDR_END         0x4u   /* the empty line that ends the header section was seen */
#define HDR_TLS_REQUIRED_NO 0x8u /* a TLS-Required: field whose value is "No"
                                   (any case, white space and folding aside) */

struct hdr_scan {
	int state;               /* private */
	unsigned flags;          /* HDR_* */
	unsigned ntrace;         /* Received: and Delivered-To: fields seen
	                            (saturates at UINT_MAX) */
	size_t name_len;         /* private */
	char name[16];           /* private: field name so far */
	int in_tlsreq;           /* private: inside a TLS-Required: value */
	size_t tv_len;           /* private: its non-blank octets so far */
	char tv[3];              /* private: the first of them */
};

void hdr_scan_init(struct hdr_scan *h);

/*
 * Feed p[0..len). Returns how many bytes belong to the header section,
 * counting the empty line that ends it (then HDR_END is set and later calls
 * return 0). A field name is recognised case-insensitively at the start of
 * a line (not on a folded continuation line).
 */
size_t hdr_scan_feed(struct hdr_scan *h, const char *p, size_t len);

#endif
