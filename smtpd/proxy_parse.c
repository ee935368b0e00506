/*
 * proxy_parse.c - the PROXY protocol header, versions 1 (text) and 2
 * (binary), as HAProxy's specification defines them ("The PROXY protocol",
 * versions 1 & 2). A load balancer in proxy-networks sends it first on each
 * connection to a `proxy` listener; it names the client the balancer
 * accepted.
 *
 * Pure over a byte range: no allocation, no I/O, no logging, no globals;
 * run by the listener on a session loop thread before the session exists.
 * Untrusted input: every byte. Bounds: a v1 line is at most 107 bytes, a v2
 * header at most 16 + 65535; every v2 length (address block, each TLV) is
 * checked against what is left before it is used. TLVs are skipped, never
 * interpreted.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

#include "tern/proxy.h"

static const uint8_t proxy_v2_sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
};
static const char proxy_v1_sig[] = "PROXY ";

#define PROXY_V2_CMD_LOCAL  0x0
#define PROXY_V2_CMD_PROXY  0x1
#define PROXY_V2_AF_UNSPEC  0x0
#define PROXY_V2_AF_INET    0x1
#define PROXY_V2_AF_INET6   0x2
#define PROXY_V2_AF_UNIX    0x3
#define PROXY_V2_STREAM     0x1

/* Does p[0..len) start like sig (as far as it goes)? */
static int
proxy_prefix_of(const uint8_t *p, size_t len, const void *sig, size_t siglen)
{
	return len == 0 || memcmp(p, sig, len < siglen ? len : siglen) == 0;
}

/* ---- version 1 ---- */

/* Next field of a v1 line: up to a space or the end; *pos moves past it. */
static int
proxy_v1_field(const char *line, size_t len, size_t *pos, char *out,
    size_t outsz)
{
	size_t start = *pos, n = 0;

	while (start + n < len && line[start + n] != ' ')
		n++;
	if (n == 0 || n >= outsz)
		return -1;
	memcpy(out, line + start, n);
	out[n] = '\0';
	*pos = start + n;
	if (*pos < len)
		(*pos)++;          /* the single space that ends it */
	return 0;
}

/* A port in plain decimal, 0..65535, no sign, no leading zero. */
static int
proxy_v1_port(const char *s, uint16_t *out)
{
	unsigned long v = 0;
	size_t n = strlen(s);

	if (n == 0 || n > 5 || (s[0] == '0' && n > 1))
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v > 65535)
		return -1;
	*out = (uint16_t)v;
	return 0;
}

/* Fill ss from a textual address of family af and a port; -1 if bad. */
static int
proxy_v1_addr(int af, const char *a, uint16_t port,
    struct sockaddr_storage *ss, socklen_t *sslen)
{
	memset(ss, 0, sizeof(*ss));
	if (af == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;
		if (inet_pton(AF_INET, a, &sin->sin_addr) != 1)
			return -1;
		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		*sslen = sizeof(*sin);
		return 0;
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET6, a, &sin6->sin6_addr) != 1)
		return -1;
	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	*sslen = sizeof(*sin6);
	return 0;
}

/* "TCP4 SRC DST SPORT DPORT" (the line after "PROXY ", without CRLF). */
static enum proxy_status
proxy_v1_fields(const char *line, size_t len, struct proxy_hdr *out)
{
	char proto[8], src[48], dst[48], sport[8], dport[8];
	uint16_t sp, dp;
	size_t pos = 0;
	int af;

	if (proxy_v1_field(line, len, &pos, proto, sizeof(proto)) < 0)
		return PROXY_ERR_V1_SYNTAX;
	if (strcmp(proto, "UNKNOWN") == 0) {
		out->local = 1;        /* whatever follows is to be ignored */
		return PROXY_OK;
	}
	if (strcmp(proto, "TCP4") == 0)
		af = AF_INET;
	else if (strcmp(proto, "TCP6") == 0)
		af = AF_INET6;
	else
		return PROXY_ERR_V1_SYNTAX;
	if (pos >= len || line[pos - 1] != ' ' ||
	    proxy_v1_field(line, len, &pos, src, sizeof(src)) < 0 ||
	    pos >= len || line[pos - 1] != ' ' ||
	    proxy_v1_field(line, len, &pos, dst, sizeof(dst)) < 0 ||
	    pos >= len || line[pos - 1] != ' ' ||
	    proxy_v1_field(line, len, &pos, sport, sizeof(sport)) < 0 ||
	    pos >= len || line[pos - 1] != ' ' ||
	    proxy_v1_field(line, len, &pos, dport, sizeof(dport)) < 0 ||
	    pos != len || line[len - 1] == ' ')
		return PROXY_ERR_V1_SYNTAX;
	if (proxy_v1_port(sport, &sp) < 0 || proxy_v1_port(dport, &dp) < 0)
		return PROXY_ERR_V1_PORT;
	if (proxy_v1_addr(af, src, sp, &out->src, &out->srclen) < 0 ||
	    proxy_v1_addr(af, dst, dp, &out->dst, &out->dstlen) < 0)
		return PROXY_ERR_V1_ADDRESS;
	return PROXY_OK;
}

static enum proxy_status
proxy_parse_v1(const uint8_t *p, size_t len, struct proxy_hdr *out)
{
	size_t scan = len < PROXY_V1_MAX ? len : PROXY_V1_MAX;
	const uint8_t *lf = memchr(p, '\n', scan);

	if (lf == NULL)
		return len >= PROXY_V1_MAX ? PROXY_ERR_V1_TOO_LONG :
		    PROXY_NEED_MORE;
	size_t end = (size_t)(lf - p);         /* index of the LF */
	if (end < sizeof(proxy_v1_sig) || p[end - 1] != '\r')
		return PROXY_ERR_V1_SYNTAX;
	const char *line = (const char *)p + sizeof(proxy_v1_sig) - 1;
	size_t linelen = end - 1 - (sizeof(proxy_v1_sig) - 1);
	if (memchr(line, '\r', linelen) != NULL ||
	    memchr(line, '\0', linelen) != NULL)
		return PROXY_ERR_V1_SYNTAX;
	out->version = 1;
	enum proxy_status st = proxy_v1_fields(line, linelen, out);
	if (st == PROXY_OK)
		out->len = end + 1;
	return st;
}

/* ---- version 2 ---- */

static uint16_t
proxy_be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* Skip the TLVs in p[0..len): each one must fit whole. */
static enum proxy_status
proxy_v2_tlvs(const uint8_t *p, size_t len, struct proxy_hdr *out)
{
	size_t pos = 0;

	while (pos < len) {
		if (len - pos < 3)
			return PROXY_ERR_V2_TLV;
		size_t vlen = proxy_be16(p + pos + 1);
		if (len - pos - 3 < vlen)
			return PROXY_ERR_V2_TLV;
		pos += 3 + vlen;
		out->ntlv++;
	}
	return PROXY_OK;
}

/* The address block of a PROXY command: a[0..alen), addresses then TLVs. */
static enum proxy_status
proxy_v2_addresses(unsigned fam, unsigned proto, const uint8_t *a,
    size_t alen, struct proxy_hdr *out)
{
	size_t need;

	switch (fam) {
	case PROXY_V2_AF_UNSPEC:
		out->local = 1;        /* unknown protocol: ignore the block */
		return PROXY_OK;
	case PROXY_V2_AF_INET:
		need = 12;
		break;
	case PROXY_V2_AF_INET6:
		need = 36;
		break;
	case PROXY_V2_AF_UNIX:
		need = 216;
		break;
	default:
		return PROXY_ERR_V2_FAMILY;
	}
	if (alen < need)
		return PROXY_ERR_V2_LENGTH;
	if (fam == PROXY_V2_AF_UNIX) {
		out->local = 1;        /* no IP address to take */
		return proxy_v2_tlvs(a + need, alen - need, out);
	}
	if (proto != PROXY_V2_STREAM)
		return PROXY_ERR_V2_FAMILY;
	memset(&out->src, 0, sizeof(out->src));
	memset(&out->dst, 0, sizeof(out->dst));
	if (fam == PROXY_V2_AF_INET) {
		struct sockaddr_in *s = (struct sockaddr_in *)&out->src;
		struct sockaddr_in *d = (struct sockaddr_in *)&out->dst;
		s->sin_family = d->sin_family = AF_INET;
		memcpy(&s->sin_addr, a, 4);
		memcpy(&d->sin_addr, a + 4, 4);
		memcpy(&s->sin_port, a + 8, 2);
		memcpy(&d->sin_port, a + 10, 2);
		out->srclen = out->dstlen = sizeof(*s);
	} else {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&out->src;
		struct sockaddr_in6 *d = (struct sockaddr_in6 *)&out->dst;
		s->sin6_family = d->sin6_family = AF_INET6;
		memcpy(&s->sin6_addr, a, 16);
		memcpy(&d->sin6_addr, a + 16, 16);
		memcpy(&s->sin6_port, a + 32, 2);
		memcpy(&d->sin6_port, a + 34, 2);
		out->srclen = out->dstlen = sizeof(*s);
	}
	return proxy_v2_tlvs(a + need, alen - need, out);
}

static enum proxy_status
proxy_parse_v2(const uint8_t *p, size_t len, struct proxy_hdr *out)
{
	if (len < PROXY_V2_HDR)
		return PROXY_NEED_MORE;
	unsigned ver = p[12] >> 4, cmd = p[12] & 0xfu;
	unsigned fam = p[13] >> 4, proto = p[13] & 0xfu;
	size_t alen = proxy_be16(p + 14);

	if (ver != 2)
		return PROXY_ERR_V2_VERSION;
	if (cmd != PROXY_V2_CMD_LOCAL && cmd != PROXY_V2_CMD_PROXY)
		return PROXY_ERR_V2_COMMAND;
	if (len - PROXY_V2_HDR < alen)
		return PROXY_NEED_MORE;
	out->version = 2;
	enum proxy_status st = PROXY_OK;
	if (cmd == PROXY_V2_CMD_LOCAL)
		out->local = 1;        /* the balancer's own probe: skip it all */
	else
		st = proxy_v2_addresses(fam, proto, p + PROXY_V2_HDR, alen, out);
	if (st == PROXY_OK)
		out->len = PROXY_V2_HDR + alen;
	return st;
}

enum proxy_status
proxy_parse(const uint8_t *p, size_t len, struct proxy_hdr *out)
{
	memset(out, 0, sizeof(*out));
	if (len == 0)
		return PROXY_NEED_MORE;
	if (proxy_prefix_of(p, len, proxy_v2_sig, sizeof(proxy_v2_sig)))
		return len < sizeof(proxy_v2_sig) ? PROXY_NEED_MORE :
		    proxy_parse_v2(p, len, out);
	if (proxy_prefix_of(p, len, proxy_v1_sig, sizeof(proxy_v1_sig) - 1))
		return len < sizeof(proxy_v1_sig) - 1 ? PROXY_NEED_MORE :
		    proxy_parse_v1(p, len, out);
	return PROXY_ERR_SIGNATURE;
}

const char *
proxy_status_name(enum proxy_status st)
{
	static const char *const names[] = {
		"ok", "need-more", "bad-signature", "v1-too-long", "v1-syntax",
		"v1-address", "v1-port", "v2-version", "v2-command",
		"v2-family", "v2-length", "v2-tlv",
	};
	if ((size_t)st < sizeof(names) / sizeof(names[0]))
		return names[st];
	return "unknown";
}
