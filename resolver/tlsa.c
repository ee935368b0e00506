/*
 * tlsa.c - pure reading of DNS answers for DANE (see tern/tlsa.h): the
 * TLSA records of "_PORT._tcp.HOST" (RFC 6698 2.1), followed through a
 * CNAME chain in the answer section only (RFC 7671 7), the header bits that
 * say whether the resolver validated the answer (AD, RFC 4035 3.2.3), and
 * the usability rules of RFC 7672 3.1.3.
 *
 * Runs on any thread; no allocation, no globals, no I/O. Untrusted input:
 * every byte of the reply. Names are decoded with compression pointers
 * bounded in number and direction-free but length-checked; a reply that
 * does not parse is TLSA_FAIL, never a crash.
 */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include <ares.h>

#include "tern/tlsa.h"

#define DNS_HDR_LEN     12
#define DNS_T_CNAME     5
#define DNS_T_TLSA      52
#define DNS_C_IN        1
#define DNS_NAME_HOPS   32      /* compression pointers followed per name */

int
dns_reply_ad(const unsigned char *buf, size_t len)
{
	if (buf == NULL || len < DNS_HDR_LEN)
		return -1;
	return (buf[3] & 0x20) != 0;
}

int
dns_reply_status(int ares_status, const unsigned char *buf, size_t len)
{
	if (ares_status != ARES_SUCCESS)
		return ares_status;
	if (buf == NULL || len < DNS_HDR_LEN)
		return ARES_EBADRESP;
	switch (buf[3] & 0x0f) {
	case 0:
		return (buf[6] | buf[7]) == 0 ? ARES_ENODATA : ARES_SUCCESS;
	case 1:
		return ARES_EFORMERR;
	case 2:
		return ARES_ESERVFAIL;
	case 3:
		return ARES_ENOTFOUND;
	case 4:
		return ARES_ENOTIMP;
	case 5:
		return ARES_EREFUSED;
	default:
		return ARES_EBADRESP;
	}
}

static uint16_t
tlsa_u16(const unsigned char *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/*
 * Decode the name at buf[*off] into out (lower case, dotted, no final dot;
 * "" for the root); *off moves past it in the record. 0, or -1 malformed.
 */
static int
tlsa_name_read(const unsigned char *buf, size_t len, size_t *off, char *out,
    size_t outlen)
{
	size_t pos = *off, n = 0, end = 0;
	unsigned hops = 0;
	int jumped = 0;

	for (;;) {
		unsigned l;

		if (pos >= len)
			return -1;
		l = buf[pos];
		if ((l & 0xc0) == 0xc0) {
			if (pos + 1 >= len || ++hops > DNS_NAME_HOPS)
				return -1;
			if (!jumped)
				end = pos + 2;
			jumped = 1;
			pos = (size_t)((l & 0x3f) << 8 | buf[pos + 1]);
			continue;
		}
		if ((l & 0xc0) != 0)
			return -1;
		if (l == 0) {
			if (!jumped)
				end = pos + 1;
			break;
		}
		if (pos + 1 + l > len || n + l + 1 >= outlen || n + l + 1 > 255)
			return -1;
		if (n > 0)
			out[n++] = '.';
		for (unsigned i = 0; i < l; i++)
			out[n++] = (char)tolower(buf[pos + 1 + i]);
		pos += 1 + l;
	}
	if (n >= outlen)
		return -1;
	out[n] = '\0';
	*off = end;
	return 0;
}

/* qname lower-cased, without a final dot, into out: 0, or -1 too long. */
static int
tlsa_name_norm(const char *qname, char *out, size_t outlen)
{
	size_t n = strlen(qname);

	if (n > 0 && qname[n - 1] == '.')
		n--;
	if (n >= outlen)
		return -1;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)qname[i]);
	out[n] = '\0';
	return 0;
}

struct tlsa_rrhdr {
	char owner[256];
	uint16_t type, class;
	size_t rdoff, rdlen;
};

/* Offset of the first answer record, past the questions: 0 / -1. */
static int
tlsa_skip_questions(const unsigned char *buf, size_t len, size_t *off)
{
	unsigned qd = tlsa_u16(buf + 4);
	char name[256];

	*off = DNS_HDR_LEN;
	for (unsigned i = 0; i < qd; i++) {
		if (tlsa_name_read(buf, len, off, name, sizeof(name)) == -1 ||
		    *off + 4 > len)
			return -1;
		*off += 4;
	}
	return 0;
}

/* The answer record at *off; *off moves past it. 0 / -1 malformed. */
static int
tlsa_rr_read(const unsigned char *buf, size_t len, size_t *off,
    struct tlsa_rrhdr *h)
{
	if (tlsa_name_read(buf, len, off, h->owner, sizeof(h->owner)) == -1 ||
	    *off + 10 > len)
		return -1;
	h->type = tlsa_u16(buf + *off);
	h->class = tlsa_u16(buf + *off + 2);
	h->rdlen = tlsa_u16(buf + *off + 8);
	h->rdoff = *off + 10;
	if (h->rdoff + h->rdlen > len)
		return -1;
	*off = h->rdoff + h->rdlen;
	return 0;
}

/*
 * The end of the CNAME chain from cur (updated in place), within the
 * answer section. 0, or -1 malformed or too long a chain.
 */
static int
tlsa_follow_cnames(const unsigned char *buf, size_t len, size_t first,
    unsigned an, char cur[256])
{
	for (unsigned links = 0;; links++) {
		struct tlsa_rrhdr h;
		size_t off = first;
		int moved = 0;

		for (unsigned i = 0; i < an && !moved; i++) {
			if (tlsa_rr_read(buf, len, &off, &h) == -1)
				return -1;
			if (h.type != DNS_T_CNAME || h.class != DNS_C_IN ||
			    strcmp(h.owner, cur) != 0)
				continue;
			size_t t = h.rdoff;
			if (tlsa_name_read(buf, len, &t, cur, 256) == -1 ||
			    t != h.rdoff + h.rdlen)
				return -1;
			moved = 1;
		}
		if (!moved)
			return 0;
		if (links >= TLSA_CNAME_MAX)
			return -1;
	}
}

static void
tlsa_add(struct tlsa_result *out, const unsigned char *rd, size_t rdlen)
{
	struct tlsa_rr *r;
	size_t dlen = rdlen - 3;

	if (out->n >= TLSA_RR_MAX || dlen > TLSA_DATA_MAX - out->used) {
		out->dropped++;
		return;
	}
	r = &out->rr[out->n++];
	r->usage = rd[0];
	r->selector = rd[1];
	r->mtype = rd[2];
	r->off = (uint16_t)out->used;
	r->len = (uint16_t)dlen;
	memcpy(out->data + out->used, rd + 3, dlen);
	out->used += dlen;
}

static enum tlsa_status
tlsa_fail(struct tlsa_result *out, const char *why)
{
	out->status = TLSA_FAIL;
	out->n = 0;
	out->used = 0;
	snprintf(out->reason, sizeof(out->reason), "%s", why);
	return TLSA_FAIL;
}

enum tlsa_status
tlsa_from_reply(int ares_status, const unsigned char *buf, size_t len,
    int ad, const char *qname, struct tlsa_result *out)
{
	char cur[256], why[128];
	size_t first, off;
	unsigned an;

	out->n = out->dropped = out->used = 0;
	out->reason[0] = '\0';
	if (ares_status == ARES_ENOTFOUND || ares_status == ARES_ENODATA)
		return out->status = ad ? TLSA_NONE : TLSA_INSECURE;
	if (ares_status != ARES_SUCCESS) {
		snprintf(why, sizeof(why), "TLSA lookup failed: %s",
		    ares_strerror(ares_status));
		return tlsa_fail(out, why);
	}
	if (buf == NULL || len < DNS_HDR_LEN || tlsa_name_norm(qname, cur,
	    sizeof(cur)) == -1 || tlsa_skip_questions(buf, len, &first) == -1)
		return tlsa_fail(out, "TLSA lookup failed: malformed answer");
	an = tlsa_u16(buf + 6);
	if (tlsa_follow_cnames(buf, len, first, an, cur) == -1)
		return tlsa_fail(out, "TLSA lookup failed: malformed answer "
		    "or CNAME chain too long");
	off = first;
	for (unsigned i = 0; i < an; i++) {
		struct tlsa_rrhdr h;

		if (tlsa_rr_read(buf, len, &off, &h) == -1)
			return tlsa_fail(out, "TLSA lookup failed: malformed "
			    "answer");
		if (h.type != DNS_T_TLSA || h.class != DNS_C_IN ||
		    strcmp(h.owner, cur) != 0)
			continue;
		if (h.rdlen < 4) {      /* no association data: never usable */
			out->dropped++;
			continue;
		}
		tlsa_add(out, buf + h.rdoff, h.rdlen);
	}
	if (out->n == 0 && out->dropped == 0)
		return out->status = ad ? TLSA_NONE : TLSA_INSECURE;
	return out->status = ad ? TLSA_SECURE : TLSA_INSECURE;
}

int
tlsa_rr_usable(const struct tlsa_rr *r)
{
	if (r->usage != 2 && r->usage != 3)
		return 0;
	if (r->selector > 1)
		return 0;
	switch (r->mtype) {
	case 0:
		return r->len > 0;
	case 1:
		return r->len == 32;
	case 2:
		return r->len == 64;
	default:
		return 0;
	}
}

size_t
tlsa_usable_count(const struct tlsa_result *res)
{
	size_t k = 0;

	for (size_t i = 0; i < res->n; i++)
		k += (size_t)tlsa_rr_usable(&res->rr[i]);
	return k;
}

char *
tlsa_policy_string(const struct tlsa_result *res, char *buf, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = 0;

	if (len == 0)
		return buf;
	buf[0] = '\0';
	for (size_t i = 0; i < res->n; i++) {
		const struct tlsa_rr *r = &res->rr[i];
		int w = snprintf(buf + n, len - n, "%s%u %u %u ", i ? "\n" : "",
		    r->usage, r->selector, r->mtype);

		if (w < 0 || (size_t)w >= len - n) {
			buf[n] = '\0';
			return buf;
		}
		n += (size_t)w;
		for (size_t j = 0; j < r->len && n + 2 < len; j++) {
			buf[n++] = hex[res->data[r->off + j] >> 4];
			buf[n++] = hex[res->data[r->off + j] & 15];
		}
		buf[n] = '\0';
	}
	return buf;
}

int
tlsa_qname(const char *host, unsigned port, char *buf, size_t len)
{
	size_t hl = strlen(host);
	int n;

	if (hl > 0 && host[hl - 1] == '.')
		hl--;
	n = snprintf(buf, len, "_%u._tcp.%.*s", port, (int)hl, host);
	return n < 0 || (size_t)n >= len || n > 255 ? -1 : 0;
}
