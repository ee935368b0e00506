/*
 * dns_stub.h - a minimal DNS server on 127.0.0.1 for the resolver
 * benchmarks (bench/dane_lookup.c, bench/sts_lookup.c): every UDP query
 * gets the answer the caller's function makes of it, on the caller's event
 * loop. Not a DNS implementation: no TCP, no parsing beyond what the
 * answer function does. Benchmarks only; nothing in ternd uses it.
 */
#ifndef TERN_BENCH_DNS_STUB_H
#define TERN_BENCH_DNS_STUB_H

#include <stddef.h>
#include <sys/socket.h>

struct event_base;

/*
 * Answer query q[0..qlen) into out (at least 600 bytes): the answer's
 * length, or 0 to drop the query.
 */
typedef size_t dns_stub_answer_fn(const unsigned char *q, size_t qlen,
    unsigned char *out);

/*
 * Serve on base from a fresh UDP socket on 127.0.0.1 (any port); *ss gets
 * its address for resolver_new(). 0, or -1 with a message on stderr.
 */
int dns_stub_start(struct event_base *base, dns_stub_answer_fn *fn,
    struct sockaddr_storage *ss);

/* Queries answered so far. */
unsigned dns_stub_queries(void);

/* A copy of query q as the start of an answer with ancount records and rcode
 * NOERROR, flags1 in the fourth header octet (RA, AD...); its length. */
size_t dns_stub_header(const unsigned char *q, size_t qlen, unsigned char *out,
    unsigned char flags1, unsigned ancount);

#endif
