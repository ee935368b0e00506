/*
 * test_resolver.c - the c-ares <-> libevent glue against a real DNS server:
 * a tiny UDP responder on 127.0.0.1:<ephemeral>, served by the same
 * event_base, answering hand-built wire-format replies from a fixed zone.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ares.h>
#include <event2/event.h>

#include "tern/resolver.h"
#include "tern/tlsa.h"
#include "tern/util.h"

/* --- the zone ----------------------------------------------------------- */

#define T_A     1
#define T_CNAME 5
#define T_MX    15
#define T_TXT   16
#define T_AAAA  28
#define T_TLSA  52
#define T_ANY   0       /* rcode entries: answer every type so */

#define RC_DROP (-1)    /* never answer */

static const struct zrec {
	const char *name;
	int type;
	int rcode;              /* for T_ANY entries */
	uint32_t ttl;
	unsigned pref;
	const char *data;
} zone[] = {
	{ "two.test", T_MX, 0, 300, 20, "mx2.two.test" },
	{ "two.test", T_MX, 0, 300, 10, "mx1.two.test" },
	{ "mx1.two.test", T_A, 0, 300, 0, "127.0.0.1" },
	{ "mx2.two.test", T_A, 0, 300, 0, "127.0.0.2" },
	{ "eq.test", T_MX, 0, 300, 10, "a.eq.test" },
	{ "eq.test", T_MX, 0, 300, 10, "b.eq.test" },
	{ "eq.test", T_MX, 0, 300, 10, "c.eq.test" },
	{ "a.eq.test", T_A, 0, 300, 0, "127.0.1.1" },
	{ "b.eq.test", T_A, 0, 300, 0, "127.0.1.2" },
	{ "c.eq.test", T_A, 0, 300, 0, "127.0.1.3" },
	{ "null.test", T_MX, 0, 300, 0, "." },
	{ "nx.test", T_ANY, 3, 0, 0, NULL },
	{ "fail.test", T_ANY, 2, 0, 0, NULL },
	{ "refused.test", T_ANY, 5, 0, 0, NULL },
	{ "slow.test", T_ANY, RC_DROP, 0, 0, NULL },
	{ "implicit.test", T_AAAA, 0, 300, 0, "::1" },
	{ "implicit.test", T_A, 0, 300, 0, "127.0.0.9" },
	{ "noaddr.test", T_MX, 0, 300, 10, "gone.noaddr.test" },
	{ "half.test", T_MX, 0, 300, 10, "dead.half.test" },
	{ "half.test", T_MX, 0, 300, 20, "ok.half.test" },
	{ "dead.half.test", T_ANY, 2, 0, 0, NULL },
	{ "ok.half.test", T_A, 0, 300, 0, "127.0.0.3" },
	{ "tempaddr.test", T_MX, 0, 300, 10, "sf.tempaddr.test" },
	{ "sf.tempaddr.test", T_ANY, 2, 0, 0, NULL },
	{ "ttl0.test", T_MX, 0, 0, 10, "mx1.two.test" },
	{ "alias.test", T_CNAME, 0, 300, 0, "two.test" },
	{ "onlyaaaa.test", T_AAAA, 0, 300, 0, "2001:db8::1" },
	/* over UDP: truncated (TC, no answers); over TCP: the answer */
	{ "tc.test", T_MX, 0, 300, 10, "mx1.two.test" },
	/* DNSSEC: names under sec.test come with the AD bit (dns_respond) */
	{ "dane.sec.test", T_MX, 0, 300, 10, "mx.sec.test" },
	{ "mx.sec.test", T_A, 0, 300, 0, "127.0.0.4" },
	{ "_25._tcp.mx.sec.test", T_TLSA, 0, 300, 3, "311" },
	{ "_26._tcp.mx.sec.test", T_ANY, 2, 0, 0, NULL },
	{ "_25._tcp.mx1.two.test", T_TLSA, 0, 300, 3, "311" },
	/* TXT: '|' separates the character-strings of one record */
	{ "_mta-sts.two.test", T_TXT, 0, 300, 0, "v=STSv1; id=|abc;" },
	{ "_mta-sts.two.test", T_TXT, 0, 300, 0, "v=spf1 -all" },
};
#define NZONE (sizeof(zone) / sizeof(zone[0]))

/* Queries seen, per (name, type). */
static struct seen {
	char name[256];
	int type;
	int count;
} seen[128];
static size_t nseen;

static int
seen_count(const char *name, int type)
{
	for (size_t i = 0; i < nseen; i++)
		if (seen[i].type == type && strcasecmp(seen[i].name, name) == 0)
			return seen[i].count;
	return 0;
}

static void
seen_add(const char *name, int type)
{
	for (size_t i = 0; i < nseen; i++)
		if (seen[i].type == type && strcasecmp(seen[i].name, name) == 0) {
			seen[i].count++;
			return;
		}
	if (nseen < sizeof(seen) / sizeof(seen[0])) {
		snprintf(seen[nseen].name, sizeof(seen[nseen].name), "%s", name);
		seen[nseen].type = type;
		seen[nseen++].count = 1;
	}
}

/* --- wire format -------------------------------------------------------- */

#include "dns_wire.h"

static void
w_rr(struct wire *w, const struct zrec *z)
{
	unsigned char a[16];
	size_t at;

	w_name(w, z->name);
	w_u16(w, (unsigned)z->type);
	w_u16(w, 1);
	w_u16(w, z->ttl >> 16);
	w_u16(w, z->ttl & 0xffff);
	at = w->n;
	w_u16(w, 0);
	switch (z->type) {
	case T_MX:
		w_u16(w, z->pref);
		w_name(w, z->data);
		break;
	case T_CNAME:
		w_name(w, z->data);
		break;
	case T_TXT:
		for (const char *p = z->data; ; ) {
			const char *bar = strchr(p, '|');
			size_t n = bar ? (size_t)(bar - p) : strlen(p);

			w_u8(w, (unsigned)n);
			for (size_t i = 0; i < n; i++)
				w_u8(w, (unsigned char)p[i]);
			if (bar == NULL)
				break;
			p = bar + 1;
		}
		break;
	case T_A:
		assert_int_equal(inet_pton(AF_INET, z->data, a), 1);
		for (int i = 0; i < 4; i++)
			w_u8(w, a[i]);
		break;
	case T_AAAA:
		assert_int_equal(inet_pton(AF_INET6, z->data, a), 1);
		for (int i = 0; i < 16; i++)
			w_u8(w, a[i]);
		break;
	case T_TLSA:            /* data "USM", then 32 bytes of 0xab */
		for (int i = 0; i < 3; i++)
			w_u8(w, (unsigned)(z->data[i] - '0'));
		for (int i = 0; i < 32; i++)
			w_u8(w, 0xab);
		break;
	}
	w->b[at] = (unsigned char)((w->n - at - 2) >> 8);
	w->b[at + 1] = (unsigned char)(w->n - at - 2);
}

static int
name_exists(const char *name)
{
	for (size_t i = 0; i < NZONE; i++)
		if (strcasecmp(zone[i].name, name) == 0)
			return 1;
	return 0;
}

/* Answer records for (name, type) into w; returns the count. */
static unsigned
zone_answers(struct wire *w, const char *name, int type, int depth)
{
	unsigned n = 0;

	for (size_t i = 0; i < NZONE; i++) {
		if (strcasecmp(zone[i].name, name) != 0)
			continue;
		if (zone[i].type == T_CNAME && type != T_CNAME && depth < 4) {
			w_rr(w, &zone[i]);
			return 1 + zone_answers(w, zone[i].data, type,
			    depth + 1);
		}
		if (zone[i].type == type) {
			w_rr(w, &zone[i]);
			n++;
		}
	}
	return n;
}

static int tcp_queries;

/* Parse the query, build the reply; 0 = send w, -1 = drop. */
static int
dns_respond(const unsigned char *q, size_t qlen, struct wire *w, int tcp)
{
	char name[256];
	size_t off = 12, nlen = 0, qend;
	int type, rcode = 0;
	unsigned an;

	if (qlen < 12)
		return -1;
	while (off < qlen && q[off] != 0) {
		size_t l = q[off];

		if (off + 1 + l > qlen || nlen + l + 1 >= sizeof(name))
			return -1;
		if (nlen > 0)
			name[nlen++] = '.';
		memcpy(name + nlen, q + off + 1, l);
		nlen += l;
		off += 1 + l;
	}
	name[nlen] = '\0';
	if (off + 5 > qlen)
		return -1;
	type = q[off + 1] << 8 | q[off + 2];
	qend = off + 5;
	seen_add(name, type);

	for (size_t i = 0; i < NZONE; i++)
		if (zone[i].type == T_ANY && strcasecmp(zone[i].name, name) == 0) {
			if (zone[i].rcode == RC_DROP)
				return -1;
			rcode = zone[i].rcode;
		}
	w->n = 0;
	w_u8(w, q[0]);          /* id */
	w_u8(w, q[1]);
	w_u16(w, 0);            /* flags, below */
	w_u16(w, 1);
	w_u16(w, 0);            /* ancount, below */
	w_u16(w, 0);
	w_u16(w, 0);
	for (size_t i = 12; i < qend; i++)
		w_u8(w, q[i]);
	an = 0;
	if (rcode == 0 && !tcp && strcasecmp(name, "tc.test") == 0) {
		w->b[2] = 0x83;         /* QR, TC, RD */
		w->b[3] = 0x80;
		return 0;
	}
	if (rcode == 0) {
		if (!name_exists(name))
			rcode = 3;
		else
			an = zone_answers(w, name, type, 0);
	}
	w->b[2] = 0x81;         /* QR, RD */
	w->b[3] = (unsigned char)(0x80 | rcode);  /* RA */
	/* "validated" (AD) for sec.test when asked with AD (RFC 6840 5.7) */
	if (rcode != 2 && (q[3] & 0x20) && strlen(name) >= 8 &&
	    strcasecmp(name + strlen(name) - 8, "sec.test") == 0)
		w->b[3] |= 0x20;
	w->b[6] = (unsigned char)(an >> 8);
	w->b[7] = (unsigned char)an;
	return 0;
}

static void
dns_read_cb(evutil_socket_t fd, short what, void *arg)
{
	unsigned char q[512];
	struct sockaddr_storage from;
	socklen_t fromlen = sizeof(from);
	struct wire w;
	ssize_t n;

	while ((n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *)&from,
	    &fromlen)) > 0) {
		if (dns_respond(q, (size_t)n, &w, 0) == 0)
			sendto(fd, w.b, w.n, 0, (struct sockaddr *)&from,
			    fromlen);
		fromlen = sizeof(from);
	}
}

/* DNS over TCP: one query per read (loopback delivers it whole). */
static struct event *tcp_conns[8];

static void
dns_tcp_close(struct event *ev)
{
	for (size_t i = 0; i < sizeof(tcp_conns) / sizeof(tcp_conns[0]); i++)
		if (tcp_conns[i] == ev)
			tcp_conns[i] = NULL;
	close(event_get_fd(ev));
	event_free(ev);
}

static void
dns_tcp_read_cb(evutil_socket_t fd, short what, void *arg)
{
	unsigned char q[514], out[2 + sizeof(((struct wire *)0)->b)];
	struct wire w;
	ssize_t n = recv(fd, q, sizeof(q), 0);

	if (n >= 2 && (size_t)n >= 2u + (size_t)(q[0] << 8 | q[1]) &&
	    dns_respond(q + 2, (size_t)(q[0] << 8 | q[1]), &w, 1) == 0) {
		tcp_queries++;
		out[0] = (unsigned char)(w.n >> 8);
		out[1] = (unsigned char)w.n;
		memcpy(out + 2, w.b, w.n);
		if (send(fd, out, w.n + 2, MSG_NOSIGNAL) < 0)
			n = 0;
	}
	if (n <= 0)
		dns_tcp_close(arg);
}

static void
dns_accept_cb(evutil_socket_t lfd, short what, void *arg)
{
	struct event_base *base = arg;
	struct event *ev;
	size_t i;
	int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK);

	if (fd < 0)
		return;
	for (i = 0; i < sizeof(tcp_conns) / sizeof(tcp_conns[0]); i++)
		if (tcp_conns[i] == NULL)
			break;
	if (i == sizeof(tcp_conns) / sizeof(tcp_conns[0])) {
		close(fd);
		return;
	}
	ev = event_new(base, fd, EV_READ | EV_PERSIST, dns_tcp_read_cb,
	    event_self_cbarg());
	tcp_conns[i] = ev;
	event_add(ev, NULL);
}

/* --- fixture ------------------------------------------------------------ */

struct fx {
	struct event_base *base;
	int dnsfd, tcpfd;
	struct event *dnsev, *tcpev;
	struct sockaddr_storage server;
	struct resolver *r;
};

static struct resolver *
fx_resolver(struct fx *f, int timeout_ms, int tries)
{
	struct resolver_opts o;

	memset(&o, 0, sizeof(o));
	o.timeout_ms = timeout_ms;
	o.tries = tries;
	return resolver_new(f->base, &f->server, 1, &o);
}

static int
fx_setup(void **state)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct sockaddr_in *sin = (struct sockaddr_in *)&f->server;
	socklen_t len = sizeof(*sin);

	assert_non_null(f);
	f->base = event_base_new();
	assert_non_null(f->base);
	f->dnsfd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	assert_true(f->dnsfd >= 0);
	sin->sin_family = AF_INET;
	sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(f->dnsfd, (struct sockaddr *)sin, sizeof(*sin)),
	    0);
	assert_int_equal(getsockname(f->dnsfd, (struct sockaddr *)sin, &len), 0);
	f->dnsev = event_new(f->base, f->dnsfd, EV_READ | EV_PERSIST,
	    dns_read_cb, NULL);
	event_add(f->dnsev, NULL);
	/* TCP on the same port (fine if taken: only test_tcp_fallback cares) */
	f->tcpfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	assert_true(f->tcpfd >= 0);
	if (bind(f->tcpfd, (struct sockaddr *)sin, sizeof(*sin)) == 0 &&
	    listen(f->tcpfd, 16) == 0) {
		f->tcpev = event_new(f->base, f->tcpfd, EV_READ | EV_PERSIST,
		    dns_accept_cb, f->base);
		event_add(f->tcpev, NULL);
	}
	tcp_queries = 0;
	f->r = fx_resolver(f, 300, 1);
	assert_non_null(f->r);
	nseen = 0;
	*state = f;
	return 0;
}

static int
fx_teardown(void **state)
{
	struct fx *f = *state;

	resolver_free(f->r);
	for (size_t i = 0; i < sizeof(tcp_conns) / sizeof(tcp_conns[0]); i++)
		if (tcp_conns[i] != NULL)
			dns_tcp_close(tcp_conns[i]);
	event_free(f->dnsev);
	close(f->dnsfd);
	if (f->tcpev != NULL)
		event_free(f->tcpev);
	close(f->tcpfd);
	event_base_free(f->base);
	free(f);
	return 0;
}

struct got {
	int calls;
	struct mx_result *res;
	struct resolver *free_me;       /* resolver_free() inside the callback */
};

static void
got_cb(void *arg, struct mx_result *res)
{
	struct got *g = arg;

	g->calls++;
	mx_result_free(g->res);
	g->res = res;
	if (g->free_me != NULL) {
		resolver_free(g->free_me);
		g->free_me = NULL;
	}
}

/* Run the loop until g has been called back (or 3 s pass). */
static void
run_until(struct fx *f, struct got *g)
{
	uint64_t deadline = now_mono_us() + 3000000;

	while (g->calls == 0 && now_mono_us() < deadline)
		event_base_loop(f->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_int_equal(g->calls, 1);
}

/* Run the loop for ms milliseconds. */
static void
run_for(struct fx *f, int ms)
{
	uint64_t deadline = now_mono_us() + (uint64_t)ms * 1000;

	while (now_mono_us() < deadline) {
		struct timeval tv = { 0, 10000 };

		event_base_loopexit(f->base, &tv);
		event_base_dispatch(f->base);
	}
}

static struct mx_result *
lookup_mx(struct fx *f, const char *domain, struct got *g)
{
	memset(g, 0, sizeof(*g));
	assert_non_null(resolver_mx_lookup(f->r, domain, got_cb, g));
	assert_int_equal(g->calls, 0);  /* never called back synchronously */
	run_until(f, g);
	return g->res;
}

static const char *
addr_str(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	return sockaddr_ntop((const struct sockaddr *)ss, buf, len);
}

/* --- tests -------------------------------------------------------------- */

static void
test_two_preferences(void **state)
{
	struct fx *f = *state;
	struct got g;
	struct mx_result *res = lookup_mx(f, "two.test", &g);
	char buf[64];

	assert_int_equal(res->status, RESOLVER_OK);
	assert_string_equal(res->dsn, "2.0.0");
	assert_string_equal(res->query, "two.test");
	assert_int_equal(res->implicit_mx, 0);
	assert_int_equal(res->nhosts, 2);
	assert_string_equal(res->hosts[0].name, "mx1.two.test");
	assert_int_equal(res->hosts[0].pref, 10);
	assert_int_equal(res->hosts[0].naddrs, 1);
	assert_string_equal(addr_str(&res->hosts[0].addrs[0], buf, sizeof(buf)),
	    "127.0.0.1");
	assert_int_equal(sockaddr_port((struct sockaddr *)
	    &res->hosts[0].addrs[0]), 0);
	assert_string_equal(res->hosts[1].name, "mx2.two.test");
	assert_string_equal(addr_str(&res->hosts[1].addrs[0], buf, sizeof(buf)),
	    "127.0.0.2");
	assert_int_equal(res->hosts[1].status, RESOLVER_OK);
	/* A and AAAA both asked, in parallel */
	assert_int_equal(seen_count("mx1.two.test", T_A), 1);
	assert_int_equal(seen_count("mx1.two.test", T_AAAA), 1);
	mx_result_free(res);
}

static void
test_cache(void **state)
{
	struct fx *f = *state;
	struct got g;

	mx_result_free(lookup_mx(f, "two.test", &g));
	mx_result_free(lookup_mx(f, "TWO.test.", &g));
	assert_int_equal(seen_count("two.test", T_MX), 1);
	assert_int_equal(seen_count("mx2.two.test", T_A), 1);
	/* negative answers are cached too (NXDOMAIN), SERVFAIL is not */
	mx_result_free(lookup_mx(f, "nx.test", &g));
	mx_result_free(lookup_mx(f, "nx.test", &g));
	assert_int_equal(seen_count("nx.test", T_MX), 1);
	mx_result_free(lookup_mx(f, "fail.test", &g));
	mx_result_free(lookup_mx(f, "fail.test", &g));
	assert_int_equal(seen_count("fail.test", T_MX), 2);
	/* TTL 0 is not cached */
	mx_result_free(lookup_mx(f, "ttl0.test", &g));
	mx_result_free(lookup_mx(f, "ttl0.test", &g));
	assert_int_equal(seen_count("ttl0.test", T_MX), 2);
}

static void
test_equal_preferences_shuffled(void **state)
{
	struct fx *f = *state;
	int orders[3] = { 0 };  /* which host came first */

	for (int i = 0; i < 60; i++) {
		struct got g;
		struct mx_result *res = lookup_mx(f, "eq.test", &g);

		assert_int_equal(res->status, RESOLVER_OK);
		assert_int_equal(res->nhosts, 3);
		for (size_t j = 0; j < 3; j++) {
			assert_int_equal(res->hosts[j].pref, 10);
			assert_int_equal(res->hosts[j].naddrs, 1);
		}
		orders[res->hosts[0].name[0] - 'a']++;
		mx_result_free(res);
	}
	/* Each of a, b, c came first at least once (P(fail) ~ 3 * (2/3)^60). */
	for (int i = 0; i < 3; i++)
		assert_true(orders[i] > 0);
}

static const struct fail_case {
	const char *domain;
	enum resolver_status want;
	const char *dsn;
	const char *reason;
	size_t nhosts;
} fail_cases[] = {
	{ "null.test", RESOLVER_PERMFAIL, "5.1.10", "null MX for null.test", 0 },
	{ "nx.test", RESOLVER_PERMFAIL, "5.1.2", "DNS NXDOMAIN for nx.test MX", 0 },
	{ "fail.test", RESOLVER_TEMPFAIL, "4.4.3", "DNS SERVFAIL for fail.test MX",
	  0 },
	{ "refused.test", RESOLVER_TEMPFAIL, "4.4.3",
	  "DNS REFUSED for refused.test MX", 0 },
	{ "noaddr.test", RESOLVER_PERMFAIL, "5.4.4",
	  "no MX host of noaddr.test has an address", 1 },
	{ "tempaddr.test", RESOLVER_TEMPFAIL, "4.4.3",
	  "no MX host of tempaddr.test has an address yet", 1 },
	{ "no-such-zone.test", RESOLVER_PERMFAIL, "5.1.2", "NXDOMAIN", 0 },
	{ "bad..name", RESOLVER_PERMFAIL, "5.1.2", "bad name", 0 },
};

static void
test_failures(void **state)
{
	struct fx *f = *state;

	for (size_t i = 0; i < sizeof(fail_cases) / sizeof(fail_cases[0]); i++) {
		const struct fail_case *c = &fail_cases[i];
		struct got g;
		struct mx_result *res = lookup_mx(f, c->domain, &g);

		printf("# %s: %s %s \"%s\"\n", c->domain,
		    resolver_strstatus(res->status), res->dsn, res->reason);
		assert_int_equal(res->status, c->want);
		assert_string_equal(res->dsn, c->dsn);
		assert_non_null(strstr(res->reason, c->reason));
		assert_int_equal(res->nhosts, c->nhosts);
		for (size_t j = 0; j < res->nhosts; j++) {
			assert_int_equal(res->hosts[j].naddrs, 0);
			assert_true(res->hosts[j].status != RESOLVER_OK);
			assert_non_null(strstr(res->hosts[j].reason,
			    "no address for"));
		}
		mx_result_free(res);
	}
}

static void
test_implicit_mx(void **state)
{
	struct fx *f = *state;
	struct got g;
	struct mx_result *res = lookup_mx(f, "implicit.test", &g);
	char buf[64];

	assert_int_equal(res->status, RESOLVER_OK);
	assert_int_equal(res->implicit_mx, 1);
	assert_int_equal(res->nhosts, 1);
	assert_string_equal(res->hosts[0].name, "implicit.test");
	assert_int_equal(res->hosts[0].pref, 0);
	assert_int_equal(res->hosts[0].naddrs, 2);
	/* IPv4 first, although the zone lists AAAA first */
	assert_string_equal(addr_str(&res->hosts[0].addrs[0], buf, sizeof(buf)),
	    "127.0.0.9");
	assert_string_equal(addr_str(&res->hosts[0].addrs[1], buf, sizeof(buf)),
	    "::1");
	mx_result_free(res);

	/* a CNAME to a domain with MX records is followed */
	res = lookup_mx(f, "alias.test", &g);
	assert_int_equal(res->status, RESOLVER_OK);
	assert_int_equal(res->implicit_mx, 0);
	assert_int_equal(res->nhosts, 2);
	assert_string_equal(res->hosts[0].name, "mx1.two.test");
	mx_result_free(res);
}

static void
test_half_dead(void **state)
{
	struct fx *f = *state;
	struct got g;
	struct mx_result *res = lookup_mx(f, "half.test", &g);

	assert_int_equal(res->status, RESOLVER_OK);
	assert_int_equal(res->nhosts, 2);
	assert_string_equal(res->hosts[0].name, "dead.half.test");
	assert_int_equal(res->hosts[0].naddrs, 0);
	assert_int_equal(res->hosts[0].status, RESOLVER_TEMPFAIL);
	assert_string_equal(res->hosts[0].dsn, "4.4.3");
	assert_non_null(strstr(res->hosts[0].reason, "SERVFAIL"));
	assert_int_equal(res->hosts[1].naddrs, 1);
	assert_int_equal(res->hosts[1].status, RESOLVER_OK);
	mx_result_free(res);
}

static void
test_timeout(void **state)
{
	struct fx *f = *state;
	struct got g;
	uint64_t t0 = now_mono_us(), dt;
	struct mx_result *res = lookup_mx(f, "slow.test", &g);

	dt = now_mono_us() - t0;
	printf("# timeout after %llu ms: %s\n", (unsigned long long)dt / 1000,
	    res->reason);
	assert_int_equal(res->status, RESOLVER_TEMPFAIL);
	assert_string_equal(res->dsn, "4.4.3");
	assert_non_null(strstr(res->reason, "timeout"));
	assert_true(dt >= 250000 && dt < 2000000);
	assert_int_equal(seen_count("slow.test", T_MX), 1);     /* tries = 1 */
	mx_result_free(res);
}

static void
test_tcp_fallback(void **state)
{
	struct fx *f = *state;
	struct got g;
	struct mx_result *res;

	if (f->tcpev == NULL)
		skip();         /* the UDP port was taken for TCP */
	res = lookup_mx(f, "tc.test", &g);
	assert_int_equal(res->status, RESOLVER_OK);
	assert_int_equal(res->nhosts, 1);
	assert_string_equal(res->hosts[0].name, "mx1.two.test");
	assert_int_equal(res->hosts[0].naddrs, 1);
	assert_int_equal(seen_count("tc.test", T_MX), 2);  /* UDP, then TCP */
	assert_true(tcp_queries >= 1);
	mx_result_free(res);
}

static void
test_host_lookup(void **state)
{
	struct fx *f = *state;
	struct got g;
	char buf[64];
	static const struct {
		const char *host;
		const char *addr;
	} lits[] = {
		{ "127.0.0.5", "127.0.0.5" },
		{ "[127.0.0.6]", "127.0.0.6" },
		{ "::1", "::1" },
		{ "[IPv6:2001:db8::7]", "2001:db8::7" },
	};

	memset(&g, 0, sizeof(g));
	assert_non_null(resolver_host_lookup(f->r, "mx1.two.test", got_cb, &g));
	run_until(f, &g);
	assert_int_equal(g.res->status, RESOLVER_OK);
	assert_int_equal(g.res->nhosts, 1);
	assert_string_equal(g.res->hosts[0].name, "mx1.two.test");
	assert_string_equal(addr_str(&g.res->hosts[0].addrs[0], buf,
	    sizeof(buf)), "127.0.0.1");
	assert_int_equal(seen_count("mx1.two.test", T_MX), 0);  /* no MX */
	mx_result_free(g.res);

	memset(&g, 0, sizeof(g));
	resolver_host_lookup(f->r, "onlyaaaa.test", got_cb, &g);
	run_until(f, &g);
	assert_int_equal(g.res->status, RESOLVER_OK);
	assert_int_equal(g.res->hosts[0].naddrs, 1);
	assert_int_equal(g.res->hosts[0].addrs[0].ss_family, AF_INET6);
	mx_result_free(g.res);

	memset(&g, 0, sizeof(g));
	resolver_host_lookup(f->r, "gone.noaddr.test", got_cb, &g);
	run_until(f, &g);
	assert_int_equal(g.res->status, RESOLVER_PERMFAIL);
	assert_string_equal(g.res->dsn, "5.4.4");
	assert_non_null(strstr(g.res->reason, "no address for gone.noaddr.test"));
	mx_result_free(g.res);

	memset(&g, 0, sizeof(g));
	resolver_host_lookup(f->r, "dead.half.test", got_cb, &g);
	run_until(f, &g);
	assert_int_equal(g.res->status, RESOLVER_TEMPFAIL);
	assert_string_equal(g.res->dsn, "4.4.3");
	mx_result_free(g.res);

	for (size_t i = 0; i < sizeof(lits) / sizeof(lits[0]); i++) {
		size_t before = nseen;

		memset(&g, 0, sizeof(g));
		resolver_host_lookup(f->r, lits[i].host, got_cb, &g);
		assert_int_equal(g.calls, 0);
		run_until(f, &g);
		assert_int_equal(g.res->status, RESOLVER_OK);
		assert_int_equal(g.res->nhosts, 1);
		assert_int_equal(g.res->hosts[0].naddrs, 1);
		assert_string_equal(addr_str(&g.res->hosts[0].addrs[0], buf,
		    sizeof(buf)), lits[i].addr);
		assert_int_equal(nseen, before);        /* no DNS at all */
		mx_result_free(g.res);
	}

	memset(&g, 0, sizeof(g));
	resolver_host_lookup(f->r, "[not.an.address]", got_cb, &g);
	run_until(f, &g);
	assert_int_equal(g.res->status, RESOLVER_PERMFAIL);
	assert_string_equal(g.res->dsn, "5.1.2");
	mx_result_free(g.res);
}

struct got_txt {
	int calls;
	struct txt_result *res;
};

static void
got_txt_cb(void *arg, struct txt_result *res)
{
	struct got_txt *g = arg;

	g->calls++;
	txt_result_free(g->res);
	g->res = res;
}

static void
test_txt_lookup(void **state)
{
	struct fx *f = *state;
	struct got_txt g;
	struct resolver_query *q;
	uint64_t deadline;

	memset(&g, 0, sizeof(g));
	assert_non_null(resolver_txt_lookup(f->r, "_mta-sts.two.test",
	    got_txt_cb, &g));
	assert_int_equal(g.calls, 0);       /* never from inside the call */
	deadline = now_mono_us() + 3000000;
	while (g.calls == 0 && now_mono_us() < deadline)
		event_base_loop(f->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_int_equal(g.calls, 1);
	assert_int_equal(g.res->status, RESOLVER_OK);
	assert_int_equal(g.res->n, 2);
	/* the strings of one record are joined */
	assert_string_equal(g.res->txt[0], "v=STSv1; id=abc;");
	assert_int_equal(g.res->txt_len[0], 16);
	assert_string_equal(g.res->txt[1], "v=spf1 -all");
	assert_int_equal(seen_count("_mta-sts.two.test", T_TXT), 1);
	txt_result_free(g.res);

	/* NODATA (the name has MX only) and NXDOMAIN: PERMFAIL, no record */
	memset(&g, 0, sizeof(g));
	resolver_txt_lookup(f->r, "two.test", got_txt_cb, &g);
	deadline = now_mono_us() + 3000000;
	while (g.calls == 0 && now_mono_us() < deadline)
		event_base_loop(f->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_int_equal(g.res->status, RESOLVER_PERMFAIL);
	assert_int_equal(g.res->n, 0);
	txt_result_free(g.res);

	memset(&g, 0, sizeof(g));
	resolver_txt_lookup(f->r, "fail.test", got_txt_cb, &g);
	deadline = now_mono_us() + 3000000;
	while (g.calls == 0 && now_mono_us() < deadline)
		event_base_loop(f->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_int_equal(g.res->status, RESOLVER_TEMPFAIL);
	assert_string_equal(g.res->dsn, "4.4.3");
	txt_result_free(g.res);

	/* cached: no second query; cancelled: never called back */
	memset(&g, 0, sizeof(g));
	q = resolver_txt_lookup(f->r, "_mta-sts.two.test", got_txt_cb, &g);
	resolver_cancel(q);
	run_for(f, 50);
	assert_int_equal(g.calls, 0);
	assert_int_equal(seen_count("_mta-sts.two.test", T_TXT), 1);
	q = resolver_txt_lookup(f->r, "slow.test", got_txt_cb, &g);
	run_for(f, 50);
	resolver_cancel(q);
	run_for(f, 50);
	assert_int_equal(g.calls, 0);
}

static void
test_cancel(void **state)
{
	struct fx *f = *state;
	struct got g1, g2, g3;
	struct resolver_query *q;

	/* in flight at the server (which never answers) */
	memset(&g1, 0, sizeof(g1));
	q = resolver_mx_lookup(f->r, "slow.test", got_cb, &g1);
	assert_non_null(q);
	run_for(f, 50);
	assert_int_equal(seen_count("slow.test", T_MX), 1);
	resolver_cancel(q);

	/* finished at once (literal), callback not yet run */
	memset(&g2, 0, sizeof(g2));
	q = resolver_host_lookup(f->r, "127.0.0.1", got_cb, &g2);
	resolver_cancel(q);

	/* cancelled while its A/AAAA queries are out */
	memset(&g3, 0, sizeof(g3));
	q = resolver_mx_lookup(f->r, "half.test", got_cb, &g3);
	resolver_cancel(q);

	run_for(f, 600);        /* past the 300 ms timeout */
	assert_int_equal(g1.calls, 0);
	assert_int_equal(g2.calls, 0);
	assert_int_equal(g3.calls, 0);
	resolver_cancel(NULL);

	/* the resolver still works afterwards */
	mx_result_free(lookup_mx(f, "two.test", &g1));
}

static void
test_free_with_pending(void **state)
{
	struct fx *f = *state;
	struct got g1, g2;

	memset(&g1, 0, sizeof(g1));
	memset(&g2, 0, sizeof(g2));
	resolver_mx_lookup(f->r, "slow.test", got_cb, &g1);
	resolver_host_lookup(f->r, "::1", got_cb, &g2);
	run_for(f, 20);
	assert_int_equal(g2.calls, 1);
	mx_result_free(g2.res);
	resolver_mx_lookup(f->r, "slow.test", got_cb, &g1);
	resolver_host_lookup(f->r, "::1", got_cb, &g2);
	resolver_free(f->r);
	f->r = NULL;
	run_for(f, 400);
	assert_int_equal(g1.calls, 0);
	assert_int_equal(g2.calls, 1);  /* only the first, before the free */
}

static void
test_free_inside_callback(void **state)
{
	struct fx *f = *state;
	struct got g, other;

	memset(&g, 0, sizeof(g));
	memset(&other, 0, sizeof(other));
	g.free_me = f->r;
	resolver_mx_lookup(f->r, "slow.test", got_cb, &other);
	resolver_mx_lookup(f->r, "two.test", got_cb, &g);
	run_until(f, &g);
	f->r = NULL;            /* freed by the callback */
	assert_int_equal(g.res->status, RESOLVER_OK);
	mx_result_free(g.res);
	run_for(f, 400);
	assert_int_equal(other.calls, 0);
}

static void
test_resolv_conf_and_bad_server(void **state)
{
	struct fx *f = *state;
	struct resolver *r;
	struct sockaddr_storage bad;
	struct got g;

	/* /etc/resolv.conf: only construction is checked (no network here). */
	r = resolver_new(f->base, NULL, 0, NULL);
	assert_non_null(r);
	resolver_free(r);

	memset(&bad, 0, sizeof(bad));
	bad.ss_family = AF_UNIX;
	assert_null(resolver_new(f->base, &bad, 1, NULL));

	/* too long a name: no handle, no callback */
	{
		char longname[300];

		memset(longname, 'a', sizeof(longname) - 1);
		longname[sizeof(longname) - 1] = '\0';
		memset(&g, 0, sizeof(g));
		assert_null(resolver_mx_lookup(f->r, longname, got_cb, &g));
		assert_null(resolver_host_lookup(f->r, longname, got_cb, &g));
	}
}

struct got_tlsa {
	int calls;
	struct tlsa_result res;
};

static void
got_tlsa_cb(void *arg, const struct tlsa_result *res)
{
	struct got_tlsa *g = arg;

	g->calls++;
	g->res = *res;
}

static void
lookup_tlsa(struct fx *f, const char *host, unsigned port,
    struct got_tlsa *g)
{
	uint64_t deadline = now_mono_us() + 3000000;

	memset(g, 0, sizeof(*g));
	assert_non_null(resolver_tlsa_lookup(f->r, host, port, got_tlsa_cb,
	    g));
	assert_int_equal(g->calls, 0);
	while (g->calls == 0 && now_mono_us() < deadline)
		event_base_loop(f->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_int_equal(g->calls, 1);
}

/* DANE: the AD bit of the MX answer, TLSA lookups, their cache. */
static void
test_dnssec_and_tlsa(void **state)
{
	struct fx *f = *state;
	struct got g;
	struct got_tlsa *gt = calloc(1, sizeof(*gt));
	struct mx_result *res = lookup_mx(f, "dane.sec.test", &g);

	assert_int_equal(res->status, RESOLVER_OK);
	assert_int_equal(res->dnssec_ad, 1);
	mx_result_free(res);        /* lookup_mx() starts g afresh */
	res = lookup_mx(f, "two.test", &g);
	assert_int_equal(res->dnssec_ad, 0);
	mx_result_free(res);
	res = lookup_mx(f, "dane.sec.test", &g);     /* cached: AD kept */
	assert_int_equal(res->dnssec_ad, 1);
	assert_int_equal(seen_count("dane.sec.test", T_MX), 1);
	mx_result_free(res);

	lookup_tlsa(f, "mx.sec.test", 25, gt);
	assert_int_equal(gt->res.status, TLSA_SECURE);
	assert_int_equal(gt->res.n, 1);
	assert_int_equal(tlsa_usable_count(&gt->res), 1);
	lookup_tlsa(f, "MX.sec.test.", 25, gt);        /* a warm cache */
	assert_int_equal(gt->res.status, TLSA_SECURE);
	assert_int_equal(seen_count("_25._tcp.mx.sec.test", T_TLSA), 1);
	/* unsigned records: no DANE */
	lookup_tlsa(f, "mx1.two.test", 25, gt);
	assert_int_equal(gt->res.status, TLSA_INSECURE);
	/* signed NXDOMAIN: no TLSA, securely */
	lookup_tlsa(f, "none.sec.test", 25, gt);
	assert_int_equal(gt->res.status, TLSA_NONE);
	/* SERVFAIL: a failure, never "no TLSA" */
	lookup_tlsa(f, "mx.sec.test", 26, gt);
	assert_int_equal(gt->res.status, TLSA_FAIL);
	free(gt);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
		T(test_two_preferences),
		T(test_cache),
		T(test_equal_preferences_shuffled),
		T(test_failures),
		T(test_implicit_mx),
		T(test_half_dead),
		T(test_timeout),
		T(test_tcp_fallback),
		T(test_host_lookup),
		T(test_txt_lookup),
		T(test_cancel),
		T(test_free_with_pending),
		T(test_free_inside_callback),
		T(test_resolv_conf_and_bad_server),
		T(test_dnssec_and_tlsa),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
