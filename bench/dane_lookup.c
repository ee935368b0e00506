/*
 * dane_lookup.c - what a DANE TLSA lookup costs the delivery client, cold
 * and with a warm cache (resolver/resolver.c, resolver_tlsa_lookup()).
 *
 *   build/bench/bench-dane-lookup [-n LOOKUPS]
 *
 * One event loop holds a resolver and, on 127.0.0.1, a minimal DNS server
 * that answers every query with one TLSA record (3 1 1) and the AD bit. It
 * times N lookups of the same name through a resolver with its cache (the
 * first one asks the server, the others are cache hits) and N through one
 * without a cache (each asks the server: a UDP round trip on loopback and
 * the parse), and prints microseconds per lookup and the queries the server
 * saw. Not run by the test command; see bench/README.md.
 */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "tern/resolver.h"
#include "tern/tlsa.h"
#include "tern/util.h"

#include "dns_stub.h"

/* The answer to query q: its header and question, one TLSA, AD set. */
static size_t
bench_answer(const unsigned char *q, size_t qlen, unsigned char *out)
{
	static const unsigned char rr[] = {
		0xc0, 0x0c, 0x00, 0x34, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2c,
		0x00, 0x23, 3, 1, 1 };
	size_t n = dns_stub_header(q, qlen, out, 0xa0, 1);

	if (n == 0)
		return 0;
	memcpy(out + n, rr, sizeof(rr));
	n += sizeof(rr);
	memset(out + n, 0xab, 32);
	return n + 32;
}

struct bench_run {
	struct event_base *base;
	struct resolver *r;
	unsigned left, secure;
};

static void bench_next(struct bench_run *b);

static void
bench_tlsa_cb(void *arg, const struct tlsa_result *res)
{
	struct bench_run *b = arg;

	if (res->status == TLSA_SECURE && tlsa_usable_count(res) == 1)
		b->secure++;
	bench_next(b);
}

static void
bench_next(struct bench_run *b)
{
	if (b->left == 0) {
		event_base_loopbreak(b->base);
		return;
	}
	b->left--;
	if (resolver_tlsa_lookup(b->r, "mx.example.test", 25, bench_tlsa_cb,
	    b) == NULL) {
		fprintf(stderr, "lookup refused\n");
		exit(1);
	}
}

/* us per lookup over n lookups with resolver r. */
static double
bench_time(struct event_base *base, struct resolver *r, unsigned n,
    unsigned *secure)
{
	struct bench_run b = { base, r, n, 0 };
	uint64_t t0 = now_mono_us();

	bench_next(&b);
	event_base_dispatch(base);
	*secure = b.secure;
	return (double)(now_mono_us() - t0) / n;
}

int
main(int argc, char **argv)
{
	struct sockaddr_storage ss;
	struct resolver_opts nocache = { .cache_max = (size_t)-1 };
	struct event_base *base = event_base_new();
	unsigned n = 20000, ok, q0;
	int c;
	double warm, cold;

	while ((c = getopt(argc, argv, "n:")) != -1)
		if (c == 'n')
			n = (unsigned)strtoul(optarg, NULL, 10);
	if (n == 0 || base == NULL)
		return 2;
	if (dns_stub_start(base, bench_answer, &ss) == -1)
		return 1;

	struct resolver *cached = resolver_new(base, &ss, 1, NULL);
	struct resolver *uncached = resolver_new(base, &ss, 1, &nocache);
	if (cached == NULL || uncached == NULL)
		return 1;
	q0 = dns_stub_queries();
	warm = bench_time(base, cached, n, &ok);
	printf("cached:   %u lookups, %u secure, %u queries sent, %.2f us per "
	    "lookup\n", n, ok, dns_stub_queries() - q0, warm);
	q0 = dns_stub_queries();
	cold = bench_time(base, uncached, n, &ok);
	printf("uncached: %u lookups, %u secure, %u queries sent, %.2f us per "
	    "lookup\n", n, ok, dns_stub_queries() - q0, cold);
	resolver_free(cached);
	resolver_free(uncached);
	return 0;
}
