/*
 * mime7.h - convert an 8-bit message to 7 bits for a next hop that does not
 * offer 8BITMIME (RFC 6152 3): each MIME leaf part whose body carries 8-bit
 * octets is re-encoded, quoted-printable for text parts (and for a message with
 * no MIME structure), base64 for anything else; message/rfc822 parts are
 * converted inside; the MIME structure, the boundaries and every 7-bit part
 * stay byte for byte. Pure: no I/O, no globals.
 *
 * What cannot be converted is refused, never sent half-converted: 8-bit
 * octets in a header field (they would need RFC 2047 or SMTPUTF8), 8-bit
 * content under multipart/signed or multipart/encrypted (re-encoding would
 * break the signature), a body already declared base64 or
 * quoted-printable that holds 8-bit octets, other message/ types with
 * 8-bit content, and nesting deeper than MIME7_DEPTH.
 */
#ifndef TERN_MIME7_H
#define TERN_MIME7_H

#include <stddef.h>

#define MIME7_DEPTH     32      /* nested entities at most */
#define MIME7_LINE      76      /* encoded lines: at most this many octets */

enum mime7_status {
	MIME7_OK = 0,           /* converted: *out holds the 7-bit message */
	MIME7_SEVEN,            /* no 8-bit octet anywhere: send it as it is */
	MIME7_HEADER8,          /* 8-bit octets in a header field */
	MIME7_SIGNED,           /* 8-bit content under multipart/signed|encrypted */
	MIME7_BROKEN,           /* encoded body with 8-bit, other message/, depth */
	MIME7_NOMEM,
};

/*
 * Convert the message p[0..len) (CRLF line ends expected; a bare CR or LF
 * in a re-encoded body is encoded as data). On MIME7_OK *out (caller frees)
 * holds *outlen bytes; on any other status *out is NULL.
 */
enum mime7_status mime7_convert(const char *p, size_t len, char **out,
    size_t *outlen);

/* A short text for a status, for logs and DSNs ("8-bit header field"). */
const char *mime7_status_text(enum mime7_status st);

#endif
