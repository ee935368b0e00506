/*
 * sts_lookup.c - what the MTA-STS decision costs a delivery when the
 * policy is cached (queue/mta/mta_sts.c, mta_sts_query()).
 *
 *   build/bench/bench-sts-lookup [-n LOOKUPS]
 *
 * A policy for bench.example (mode enforce) is put in a policy cache file
 * in a temporary directory and loaded with mta_sts_init(), as ternd loads
 * <queue>/mta-sts.cache at start. One event loop holds a resolver and, on
 * 127.0.0.1, a minimal DNS server answering every query with the
 * "_mta-sts" TXT record whose id matches the cached policy. The program
 * times N decisions through a resolver with its cache (the TXT record is
 * asked once, then served from the resolver's cache: the warm case a
 * delivery to a busy domain sees) and N through a resolver without one
 * (a UDP round trip on loopback for each), and prints microseconds per
 * decision and the queries the server saw. No HTTPS fetch happens: the
 * cached policy stays valid. Not run by the test command; see
 * bench/README.md.
 */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "tern/conf.h"
#include "tern/resolver.h"
#include "tern/util.h"

#include "dns_stub.h"
#include "mta_sts.h"

#define BENCH_DOMAIN "bench.example"
#define BENCH_ID     "20261206"
#define BENCH_POLICY "version: STSv1\nmode: enforce\nmx: mx.bench.example\n" \
	"max_age: 86400\n"

/* The answer to query q: its header and question, one TXT record. */
static size_t
bench_answer(const unsigned char *q, size_t qlen, unsigned char *out)
{
	static const char txt[] = "v=STSv1; id=" BENCH_ID ";";
	static const unsigned char rr[] = {
		0xc0, 0x0c, 0x00, 0x10, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2c,
		0x00, sizeof(txt), sizeof(txt) - 1 };
	size_t n = dns_stub_header(q, qlen, out, 0x80, 1);

	if (n == 0)
		return 0;
	memcpy(out + n, rr, sizeof(rr));
	n += sizeof(rr);
	memcpy(out + n, txt, sizeof(txt) - 1);
	return n + sizeof(txt) - 1;
}

struct bench_run {
	struct event_base *base;
	struct resolver *r;
	const struct conf *conf;
	unsigned left, enforce;
};

static void bench_next(struct bench_run *b);

static void
bench_sts_cb(void *arg, struct mta_sts_outcome *o)
{
	struct bench_run *b = arg;

	if (o != NULL && o->pol.mode == STS_MODE_ENFORCE)
		b->enforce++;
	mta_sts_outcome_free(o);
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
	if (mta_sts_query(b->base, b->r, b->conf, BENCH_DOMAIN, bench_sts_cb,
	    b) == NULL) {
		fprintf(stderr, "query refused\n");
		exit(1);
	}
}

/* us per decision over n decisions with resolver r. */
static double
bench_time(struct event_base *base, struct resolver *r,
    const struct conf *conf, unsigned n, unsigned *enforce)
{
	struct bench_run b = { base, r, conf, n, 0 };
	uint64_t t0 = now_mono_us();

	bench_next(&b);
	event_base_dispatch(base);
	*enforce = b.enforce;
	return (double)(now_mono_us() - t0) / n;
}

/* The policy cache file ternd would have written after a fetch. */
static int
bench_cache_file(const char *dir)
{
	char path[512];
	long long now = (long long)time(NULL);
	FILE *f;

	snprintf(path, sizeof(path), "%s/mta-sts.cache", dir);
	if ((f = fopen(path, "w")) == NULL)
		return -1;
	fprintf(f, "tern-mta-sts 1\n%s %s %lld %lld %zu\n%s\n", BENCH_DOMAIN,
	    BENCH_ID, now, now + 86400, strlen(BENCH_POLICY), BENCH_POLICY);
	return fclose(f);
}

static void
bench_conf_err(void *arg, const char *msg)
{
	(void)arg;
	fprintf(stderr, "%s\n", msg);
}

int
main(int argc, char **argv)
{
	static const char conf_text[] = "listen 127.0.0.1:1 relay plain\n";
	struct sockaddr_storage ss;
	struct resolver_opts nocache = { .cache_max = (size_t)-1 };
	struct event_base *base = event_base_new();
	struct conf *conf = NULL;
	char dir[] = "/tmp/tern-sts-bench-XXXXXX", path[600];
	unsigned n = 20000, ok, q0;
	int c;
	double warm, cold;

	while ((c = getopt(argc, argv, "n:")) != -1)
		if (c == 'n')
			n = (unsigned)strtoul(optarg, NULL, 10);
	if (n == 0 || base == NULL || mkdtemp(dir) == NULL ||
	    bench_cache_file(dir) != 0 ||
	    conf_parse(conf_text, strlen(conf_text), "bench", &conf,
	    bench_conf_err, NULL) != 0)
		return 2;
	mta_sts_init(dir);
	if (dns_stub_start(base, bench_answer, &ss) == -1)
		return 1;

	struct resolver *cached = resolver_new(base, &ss, 1, NULL);
	struct resolver *uncached = resolver_new(base, &ss, 1, &nocache);
	if (cached == NULL || uncached == NULL)
		return 1;
	q0 = dns_stub_queries();
	warm = bench_time(base, cached, conf, n, &ok);
	printf("cached TXT, cached policy: %.2f us per decision, %u of %u "
	    "enforce, %u DNS queries\n", warm, ok, n, dns_stub_queries() - q0);
	q0 = dns_stub_queries();
	cold = bench_time(base, uncached, conf, n, &ok);
	printf("TXT asked each time, cached policy: %.2f us per decision, "
	    "%u of %u enforce, %u DNS queries\n", cold, ok, n, dns_stub_queries() - q0);
	resolver_free(cached);
	resolver_free(uncached);
	mta_sts_shutdown();
	conf_unref(conf);
	snprintf(path, sizeof(path), "%s/mta-sts.cache", dir);
	unlink(path);
	rmdir(dir);
	return 0;
}
