/*
 * proxy.h - the PROXY protocol header (HAProxy's "PROXY protocol" text,
 * versions 1 and 2) that a load balancer sends before anything else on a
 * connection, naming the client it accepted.
 *
 * Pure: no allocation, no I/O, no logging. The input is untrusted network
 * bytes (from a peer in proxy-networks, but still bytes off the wire).
 */
#ifndef TERN_PROXY_H
#define TERN_PROXY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PROXY_V1_MAX    107          /* whole v1 line, CRLF included */
#define PROXY_V2_HDR    16           /* v2 fixed part: signature .. length */
#define PROXY_V2_MAX    (PROXY_V2_HDR + 65535)

enum proxy_status {
	PROXY_OK = 0,
	PROXY_NEED_MORE,         /* a valid prefix: read more and call again */
	PROXY_ERR_SIGNATURE,     /* neither "PROXY " nor the v2 signature */
	PROXY_ERR_V1_TOO_LONG,   /* no CRLF within PROXY_V1_MAX bytes */
	PROXY_ERR_V1_SYNTAX,     /* bad protocol word, field count, CRLF */
	PROXY_ERR_V1_ADDRESS,    /* address not of the protocol's family */
	PROXY_ERR_V1_PORT,       /* port not 0..65535 in plain decimal */
	PROXY_ERR_V2_VERSION,    /* version nibble not 2 */
	PROXY_ERR_V2_COMMAND,    /* command neither LOCAL nor PROXY */
	PROXY_ERR_V2_FAMILY,     /* unknown family or a non-stream transport */
	PROXY_ERR_V2_LENGTH,     /* length too short for the address family */
	PROXY_ERR_V2_TLV,        /* a TLV runs past the end of the header */
};

struct proxy_hdr {
	int version;             /* 1 or 2 */
	/*
	 * 1: the header names no client (v1 UNKNOWN, v2 LOCAL, v2 UNSPEC or
	 * UNIX family): use the connection's own addresses, src/dst unset.
	 */
	int local;
	struct sockaddr_storage src, dst;   /* client, and the address it reached */
	socklen_t srclen, dstlen;
	size_t len;              /* PROXY_OK: header bytes, the rest is payload */
	unsigned ntlv;           /* v2: TLVs seen (and skipped) */
};

/*
 * Parse the header at the start of p[0..len). PROXY_OK fills out (out->len
 * bytes are the header; any bytes after it belong to the protocol carried).
 * PROXY_NEED_MORE: every byte given is a valid start of a header and none
 * is past its end, so a reader may consume them all and wait for more.
 * Anything else is an error: close the connection.
 */
enum proxy_status proxy_parse(const uint8_t *p, size_t len,
    struct proxy_hdr *out);

/* Short name of a status for logs ("ok", "need-more", "bad-signature"...). */
const char *proxy_status_name(enum proxy_status st);

#endif
