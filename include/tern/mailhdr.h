/*
 * mailhdr.h - the message header parsing tern-sendmail needs for -t
 * (RFC 5322 3.6.3): cut the header section into fields (folded lines
 * joined), and take the addresses out of an address-list value (To:, Cc:,
 * Bcc:), with display names, comments, quoted strings and groups.
 *
 * Pure: no allocation, no I/O. Input is the message as a local program
 * wrote it (lines end in LF or CRLF). Bounded by the input length.
 */
#ifndef TERN_MAILHDR_H
#define TERN_MAILHDR_H

#include <stddef.h>

struct mailhdr_field {
	const char *name;        /* field name, not NUL-terminated */
	size_t name_len;
	const char *value;       /* after the colon, through the last line end */
	size_t value_len;
	size_t len;              /* whole field, continuation lines included */
};

/*
 * Next header field at p[0..len): 1 and *f filled (f->len bytes consumed);
 * 0 at the end of the header section (an empty line, the end of input, or
 * a line that is no field: the body starts there).
 */
int mailhdr_next(const char *p, size_t len, struct mailhdr_field *f);

/* Case-insensitive compare of a field's name with name. */
int mailhdr_is(const struct mailhdr_field *f, const char *name);

/*
 * Next address of an address-list value v[*off..len): 1 with the address
 * (the angle-addr, or the bare addr-spec) copied to out NUL-terminated and
 * *off advanced; 0 when the list is exhausted. Addresses longer than
 * outlen-1 are skipped. Group names and empty members produce nothing.
 */
int mailhdr_addr_next(const char *v, size_t len, size_t *off, char *out,
    size_t outlen);

#endif
