/*
 * mx.c - pure MX routing rules: from a DNS answer to the ordered list of
 * exchangers, and from per-exchanger address answers to one verdict.
 *
 * Runs on any thread; no I/O, no globals, no logging. Allocates only inside
 * c-ares' parsers (ares_parse_*_reply), whose results are freed here.
 * Untrusted input: raw DNS replies (any bytes a server or an attacker on the
 * path sends) and domain names taken from recipient addresses.
 *
 * Implements RFC 5321 §5.1 (preference order, random among equal
 * preferences, implicit MX when there are no MX records), RFC 7505 (null MX:
 * "0 ." means the domain accepts no mail: permanent 5.1.10) and the status
 * mapping documented in include/tern/resolver.h.
 */
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ares.h>

#include "tern/log.h"
#include "tern/resolver.h"
#include "tern/util.h"

static void mx_reason(char *dst, size_t len, const char *fmt, ...)
    TERN_PRINTF(3, 4);

static void
mx_reason(char *dst, size_t len, const char *fmt, ...)
{
	va_list ap;

	if (len == 0)
		return;
	va_start(ap, fmt);
	if (vsnprintf(dst, len, fmt, ap) < 0)
		dst[0] = '\0';
	va_end(ap);
}

static void
mx_set_dsn(char dsn[8], const char *code)
{
	size_t n = strlen(code);

	if (n > 7)
		n = 7;
	memcpy(dsn, code, n);
	dsn[n] = '\0';
}

const char *
mx_ares_strstatus(int st)
{
	switch (st) {
	case ARES_SUCCESS:      return "NOERROR";
	case ARES_ENODATA:      return "NODATA";
	case ARES_ENOTFOUND:    return "NXDOMAIN";
	case ARES_ESERVFAIL:    return "SERVFAIL";
	case ARES_EREFUSED:     return "REFUSED";
	case ARES_EFORMERR:     return "FORMERR";
	case ARES_ENOTIMP:      return "NOTIMP";
	case ARES_ETIMEOUT:     return "timeout";
	case ARES_ECONNREFUSED:
		return "no usable server (SERVFAIL, REFUSED or unreachable)";
	case ARES_EBADRESP:     return "malformed reply";
	case ARES_EBADNAME:     return "bad name";
	case ARES_ENOMEM:       return "out of memory";
	case ARES_ECANCELLED:
	case ARES_EDESTRUCTION: return "cancelled";
	default:                return "error";
	}
}

const char *
resolver_strstatus(enum resolver_status s)
{
	switch (s) {
	case RESOLVER_OK:       return "ok";
	case RESOLVER_TEMPFAIL: return "tempfail";
	case RESOLVER_PERMFAIL: return "permfail";
	}
	return "unknown";
}

enum resolver_status
mx_classify(int st, const char *name, const char *what, char dsn[8],
    char *reason, size_t reasonlen)
{
	enum resolver_status s;

	switch (st) {
	case ARES_ENOTFOUND:    /* NXDOMAIN: the name does not exist */
	case ARES_ENODATA:      /* exists, but has no such record */
	case ARES_EBADNAME:     /* not a valid domain name at all */
		s = RESOLVER_PERMFAIL;
		mx_set_dsn(dsn, "5.1.2");
		break;
	case ARES_ENOMEM:
		s = RESOLVER_TEMPFAIL;
		mx_set_dsn(dsn, "4.3.0");
		break;
	default:                /* SERVFAIL, REFUSED, timeout, bad reply, ... */
		s = RESOLVER_TEMPFAIL;
		mx_set_dsn(dsn, "4.4.3");
		break;
	}
	mx_reason(reason, reasonlen, "DNS %s for %s %s", mx_ares_strstatus(st),
	    name, what);
	return s;
}

/* A null MX target is the root: c-ares expands it to "" (or "."). */
static int
mx_is_root(const char *host)
{
	return host == NULL || host[0] == '\0' ||
	    (host[0] == '.' && host[1] == '\0');
}

void
mx_plan_order(struct mx_plan *plan, mx_rand_fn *rnd, void *rctx)
{
	size_t i, j, k;

	/* Stable insertion sort by preference (n <= RESOLVER_MX_MAX). */
	for (i = 1; i < plan->n; i++) {
		for (j = i; j > 0 && plan->ex[j - 1].pref > plan->ex[j].pref;
		    j--) {
			__typeof__(plan->ex[0]) t = plan->ex[j];
			plan->ex[j] = plan->ex[j - 1];
			plan->ex[j - 1] = t;
		}
	}
	if (rnd == NULL)
		return;
	/* Fisher-Yates within each run of equal preferences. */
	for (i = 0; i < plan->n; i = j) {
		for (j = i + 1; j < plan->n && plan->ex[j].pref == plan->ex[i].pref;
		    j++)
			;
		for (k = j - i; k > 1; k--) {
			uint32_t r = rnd(rctx, (uint32_t)k);
			__typeof__(plan->ex[0]) t;

			if (r >= k)     /* a bad generator must not break bounds */
				r = (uint32_t)(k - 1);
			t = plan->ex[i + k - 1];
			plan->ex[i + k - 1] = plan->ex[i + r];
			plan->ex[i + r] = t;
		}
	}
}

static void
mx_plan_ok(struct mx_plan *out)
{
	out->status = RESOLVER_OK;
	mx_set_dsn(out->dsn, "2.0.0");
	out->reason[0] = '\0';
}

static void
mx_plan_implicit(struct mx_plan *out, const char *domain)
{
	size_t len = strlen(domain);

	/* RFC 5321 §5.1: no MX: the domain itself, as if "0 domain". */
	if (len > RESOLVER_NAME_MAX)
		len = RESOLVER_NAME_MAX;
	out->implicit_mx = 1;
	out->n = 1;
	out->ex[0].pref = 0;
	memcpy(out->ex[0].name, domain, len);
	out->ex[0].name[len] = '\0';
	mx_plan_ok(out);
}

enum resolver_status
mx_plan_from_list(const struct ares_mx_reply *list, const char *domain,
    mx_rand_fn *rnd, void *rctx, struct mx_plan *out)
{
	const struct ares_mx_reply *m;
	size_t nnull = 0, nreal = 0, i, worst;

	memset(out, 0, sizeof(*out));
	for (m = list; m != NULL; m = m->next) {
		size_t len;

		if (mx_is_root(m->host)) {
			nnull++;
			continue;
		}
		len = strlen(m->host);
		if (len > RESOLVER_NAME_MAX)
			continue;
		nreal++;
		if (out->n < RESOLVER_MX_MAX) {
			i = out->n++;
		} else {
			/* Full: replace the highest preference if this is lower. */
			for (worst = 0, i = 1; i < out->n; i++)
				if (out->ex[i].pref > out->ex[worst].pref)
					worst = i;
			if (m->priority >= out->ex[worst].pref)
				continue;
			i = worst;
		}
		out->ex[i].pref = m->priority;
		memcpy(out->ex[i].name, m->host, len + 1);
	}
	if (nreal == 0 && nnull > 0) {
		/* RFC 7505 §3: the domain does not accept mail. */
		out->n = 0;
		out->status = RESOLVER_PERMFAIL;
		mx_set_dsn(out->dsn, "5.1.10");
		mx_reason(out->reason, sizeof(out->reason), "null MX for %s",
		    domain);
		return out->status;
	}
	if (nreal == 0) {
		mx_plan_implicit(out, domain);
		return out->status;
	}
	/* A null MX mixed with real ones violates RFC 7505; use the real ones. */
	mx_plan_order(out, rnd, rctx);
	mx_plan_ok(out);
	return out->status;
}

enum resolver_status
mx_plan_from_reply(int st, const unsigned char *buf, size_t len,
    const char *domain, mx_rand_fn *rnd, void *rctx, struct mx_plan *out)
{
	struct ares_mx_reply *list = NULL;
	enum resolver_status s;
	int pst;

	memset(out, 0, sizeof(*out));
	if (st == ARES_ENODATA) {
		mx_plan_implicit(out, domain);
		return out->status;
	}
	if (st != ARES_SUCCESS) {
		out->status = mx_classify(st, domain, "MX", out->dsn, out->reason,
		    sizeof(out->reason));
		return out->status;
	}
	if (buf == NULL || len > INT_MAX)
		pst = ARES_EBADRESP;
	else
		pst = ares_parse_mx_reply(buf, (int)len, &list);
	if (pst == ARES_ENODATA) {
		/* Answers, but no MX among them (a CNAME chain, say). */
		mx_plan_implicit(out, domain);
		return out->status;
	}
	if (pst != ARES_SUCCESS) {
		if (list != NULL)
			ares_free_data(list);
		if (pst == ARES_ENOTFOUND || pst == ARES_EBADNAME)
			pst = ARES_EBADRESP;   /* NOERROR reply: never permanent */
		out->status = mx_classify(pst, domain, "MX", out->dsn,
		    out->reason, sizeof(out->reason));
		return out->status;
	}
	s = mx_plan_from_list(list, domain, rnd, rctx, out);
	if (list != NULL)
		ares_free_data(list);
	return s;
}

int
mx_addrs_from_reply(int st, const unsigned char *buf, size_t len, int family,
    struct sockaddr_storage *out, size_t *n, size_t max)
{
	int i, nt = RESOLVER_ADDRS_MAX, pst;

	if (st != ARES_SUCCESS)
		return st;
	if (buf == NULL || len > INT_MAX)
		return ARES_EBADRESP;
	if (family == AF_INET) {
		struct ares_addrttl t[RESOLVER_ADDRS_MAX];

		pst = ares_parse_a_reply(buf, (int)len, NULL, t, &nt);
		if (pst != ARES_SUCCESS)
			return pst;
		if (nt <= 0)
			return ARES_ENODATA;
		for (i = 0; i < nt && *n < max; i++) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&out[*n];

			memset(&out[*n], 0, sizeof(out[*n]));
			sin->sin_family = AF_INET;
			sin->sin_addr = t[i].ipaddr;
			(*n)++;
		}
	} else if (family == AF_INET6) {
		struct ares_addr6ttl t[RESOLVER_ADDRS_MAX];

		pst = ares_parse_aaaa_reply(buf, (int)len, NULL, t, &nt);
		if (pst != ARES_SUCCESS)
			return pst;
		if (nt <= 0)
			return ARES_ENODATA;
		for (i = 0; i < nt && *n < max; i++) {
			struct sockaddr_in6 *sin6 =
			    (struct sockaddr_in6 *)&out[*n];

			memset(&out[*n], 0, sizeof(out[*n]));
			sin6->sin6_family = AF_INET6;
			memcpy(&sin6->sin6_addr, &t[i].ip6addr, 16);
			(*n)++;
		}
	} else
		return ARES_EBADFAMILY;
	return ARES_SUCCESS;
}

/* Skip a (possibly compressed) name at off; new offset or 0 on error. */
static size_t
mx_skip_name(const unsigned char *buf, size_t len, size_t off)
{
	while (off < len) {
		unsigned c = buf[off];

		if (c == 0)
			return off + 1;
		if ((c & 0xc0) == 0xc0)
			return off + 2 <= len ? off + 2 : 0;
		if ((c & 0xc0) != 0)
			return 0;       /* reserved label types */
		off += 1 + c;
	}
	return 0;
}

int
mx_reply_min_ttl(const unsigned char *buf, size_t len, uint32_t *ttl)
{
	size_t off = 12, qd, an, i;
	uint32_t min = UINT32_MAX;

	*ttl = 0;
	if (buf == NULL || len < 12)
		return -1;
	qd = (size_t)buf[4] << 8 | buf[5];
	an = (size_t)buf[6] << 8 | buf[7];
	for (i = 0; i < qd; i++) {
		if ((off = mx_skip_name(buf, len, off)) == 0 || off + 4 > len)
			return -1;
		off += 4;
	}
	for (i = 0; i < an; i++) {
		uint32_t t;
		size_t rdlen;

		if ((off = mx_skip_name(buf, len, off)) == 0 || off + 10 > len)
			return -1;
		t = (uint32_t)buf[off + 4] << 24 | (uint32_t)buf[off + 5] << 16 |
		    (uint32_t)buf[off + 6] << 8 | buf[off + 7];
		if (t > INT32_MAX)      /* RFC 2181 §8: treat as zero */
			t = 0;
		rdlen = (size_t)buf[off + 8] << 8 | buf[off + 9];
		off += 10;
		if (rdlen > len - off)
			return -1;
		off += rdlen;
		if (t < min)
			min = t;
	}
	*ttl = an == 0 ? 0 : min;
	return 0;
}

static const char *
mx_family_status(int st)
{
	return st < 0 ? "not asked" : mx_ares_strstatus(st);
}

/* NXDOMAIN / NODATA / bad name, or not asked: no address, permanently. */
static int
mx_addr_status_permanent(int st)
{
	return st < 0 || st == ARES_ENOTFOUND || st == ARES_ENODATA ||
	    st == ARES_EBADNAME;
}

void
mx_host_classify(struct mx_host *h, int st4, int st6)
{
	if (h->naddrs > 0) {
		h->status = RESOLVER_OK;
		mx_set_dsn(h->dsn, "2.0.0");
		h->reason[0] = '\0';
		return;
	}
	if (mx_addr_status_permanent(st4) && mx_addr_status_permanent(st6)) {
		h->status = RESOLVER_PERMFAIL;
		mx_set_dsn(h->dsn, "5.4.4");
	} else {
		h->status = RESOLVER_TEMPFAIL;
		mx_set_dsn(h->dsn, st4 == ARES_ENOMEM || st6 == ARES_ENOMEM ?
		    "4.3.0" : "4.4.3");
	}
	mx_reason(h->reason, sizeof(h->reason), "no address for %s (A: %s, "
	    "AAAA: %s)", h->name, mx_family_status(st4), mx_family_status(st6));
}

/* a and b name the same host: ASCII case and one trailing dot ignored */
static int
mx_same_host(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la > 0 && a[la - 1] == '.')
		la--;
	if (lb > 0 && b[lb - 1] == '.')
		lb--;
	return la > 0 && ascii_casecmp_n(a, la, b, lb) == 0;
}

size_t
mx_result_drop_self(struct mx_result *res, const char *self)
{
	size_t i, cut, dropped;

	if (self == NULL)
		return 0;
	for (i = 0; i < res->nhosts; i++)
		if (mx_same_host(res->hosts[i].name, self))
			break;
	if (i == res->nhosts)
		return 0;
	/* hosts are sorted by preference: the rest from the first equal one */
	for (cut = 0; cut < res->nhosts &&
	    res->hosts[cut].pref < res->hosts[i].pref; cut++)
		;
	for (size_t k = cut; k < res->nhosts; k++)
		free(res->hosts[k].addrs);
	dropped = res->nhosts - cut;
	res->nhosts = cut;
	if (cut == 0) {
		res->status = RESOLVER_PERMFAIL;
		mx_set_dsn(res->dsn, "5.4.6");
		mx_reason(res->reason, sizeof(res->reason),
		    "mail for %s loops back to myself", res->query);
	} else
		mx_result_classify(res);
	return dropped;
}

void
mx_result_classify(struct mx_result *res)
{
	size_t i, nperm = 0;

	if (res->nhosts == 0)
		return;         /* the MX step failed: verdict already set */
	for (i = 0; i < res->nhosts; i++) {
		if (res->hosts[i].status == RESOLVER_OK) {
			res->status = RESOLVER_OK;
			mx_set_dsn(res->dsn, "2.0.0");
			res->reason[0] = '\0';
			return;
		}
		if (res->hosts[i].status == RESOLVER_PERMFAIL)
			nperm++;
	}
	if (nperm == res->nhosts) {
		res->status = RESOLVER_PERMFAIL;
		if (res->implicit_mx) {
			mx_set_dsn(res->dsn, "5.1.2");
			mx_reason(res->reason, sizeof(res->reason),
			    "no MX and no address for %s", res->query);
		} else {
			mx_set_dsn(res->dsn, "5.4.4");
			mx_reason(res->reason, sizeof(res->reason),
			    "no MX host of %s has an address", res->query);
		}
	} else {
		res->status = RESOLVER_TEMPFAIL;
		mx_set_dsn(res->dsn, "4.4.3");
		mx_reason(res->reason, sizeof(res->reason),
		    "no MX host of %s has an address yet", res->query);
	}
}
