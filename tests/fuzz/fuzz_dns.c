/*
 * fuzz_dns.c - raw DNS reply bytes through c-ares' MX/A/AAAA parsers and
 * the pure routing rules of resolver/mx.c (plan, addresses, TTL walk,
 * verdicts), checking their invariants. Corpus: tests/fuzz/corpus/dns/.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include <ares.h>

#include "tern/resolver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t
fuzz_rand(void *ctx, uint32_t n)
{
	uint32_t *s = ctx;

	*s = *s * 1103515245u + 12345u;
	return (*s >> 8) % n;
}

static void
fuzz_check_status(enum resolver_status s, const char *dsn)
{
	if (s != RESOLVER_OK && s != RESOLVER_TEMPFAIL && s != RESOLVER_PERMFAIL)
		abort();
	if (strlen(dsn) < 5 || dsn[0] != "245"[s])
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const int statuses[] = { ARES_SUCCESS, ARES_ENODATA,
	    ARES_ENOTFOUND, ARES_ESERVFAIL, ARES_ETIMEOUT, ARES_EBADNAME };
	struct sockaddr_storage addrs[RESOLVER_ADDRS_MAX];
	struct mx_plan plan;
	struct mx_host hosts[RESOLVER_MX_MAX];
	struct mx_result res;
	uint32_t seed = size ? data[0] : 0, ttl;
	size_t n = 0, i;
	int st4, st6;

	/* MX plan: always with ARES_SUCCESS, the interesting case. */
	mx_plan_from_reply(ARES_SUCCESS, data, size, "fuzz.example",
	    fuzz_rand, &seed, &plan);
	fuzz_check_status(plan.status, plan.dsn);
	if (plan.n > RESOLVER_MX_MAX)
		abort();
	if (plan.status == RESOLVER_OK && plan.n == 0)
		abort();
	if (plan.status != RESOLVER_OK && plan.n != 0)
		abort();
	if (plan.implicit_mx && (plan.n != 1 ||
	    strcmp(plan.ex[0].name, "fuzz.example") != 0))
		abort();
	for (i = 0; i < plan.n; i++) {
		if (strnlen(plan.ex[i].name, sizeof(plan.ex[i].name)) >
		    RESOLVER_NAME_MAX || plan.ex[i].name[0] == '\0')
			abort();
		if (i > 0 && plan.ex[i - 1].pref > plan.ex[i].pref)
			abort();
	}
	if (memchr(plan.reason, '\0', sizeof(plan.reason)) == NULL)
		abort();

	/* Other statuses need no bytes and must never be OK-with-hosts. */
	mx_plan_from_reply(statuses[seed % 6], NULL, 0, "fuzz.example", NULL,
	    NULL, &plan);
	fuzz_check_status(plan.status, plan.dsn);

	/* Addresses, both families, into one bounded array. */
	st4 = mx_addrs_from_reply(ARES_SUCCESS, data, size, AF_INET, addrs, &n,
	    RESOLVER_ADDRS_MAX);
	st6 = mx_addrs_from_reply(ARES_SUCCESS, data, size, AF_INET6, addrs,
	    &n, RESOLVER_ADDRS_MAX);
	if (n > RESOLVER_ADDRS_MAX)
		abort();
	for (i = 0; i < n; i++)
		if (addrs[i].ss_family != AF_INET &&
		    addrs[i].ss_family != AF_INET6)
			abort();
	if ((st4 == ARES_SUCCESS || st6 == ARES_SUCCESS) && n == 0)
		abort();

	/* TTL walk. */
	if (mx_reply_min_ttl(data, size, &ttl) == 0 && ttl > INT32_MAX)
		abort();

	/* Verdicts over the plan from the bytes. */
	mx_plan_from_reply(ARES_SUCCESS, data, size, "fuzz.example",
	    fuzz_rand, &seed, &plan);
	memset(&res, 0, sizeof(res));
	memset(hosts, 0, sizeof(hosts));
	strcpy(res.query, "fuzz.example");
	res.implicit_mx = plan.implicit_mx;
	res.status = plan.status;
	memcpy(res.dsn, plan.dsn, sizeof(res.dsn));
	res.hosts = hosts;
	res.nhosts = plan.n;
	for (i = 0; i < plan.n; i++) {
		memcpy(hosts[i].name, plan.ex[i].name, sizeof(hosts[i].name));
		hosts[i].naddrs = (i + seed) % 3 == 0 ? n : 0;
		mx_host_classify(&hosts[i], i % 2 ? st4 : -1, st6);
		fuzz_check_status(hosts[i].status, hosts[i].dsn);
	}
	mx_result_classify(&res);
	fuzz_check_status(res.status, res.dsn);
	return 0;
}
