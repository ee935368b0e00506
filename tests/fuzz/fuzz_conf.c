/*
 * fuzz_conf.c - conf_parse over arbitrary bytes, then the lookups on what it
 * accepted, and the public value parsers over the same bytes.
 *
 * Checks beyond "no crash, no leak": the return value equals the number of
 * errors reported, every error starts with the file name, *out is set
 * exactly when there are none, and an accepted conf keeps its invariants
 * (at least one listen, a control socket, lists consistent with counts,
 * a route for every domain).
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>
#include <sys/socket.h>

#include "tern/conf.h"

static void
fuzz_conf_err(void *arg, const char *msg)
{
	int *n = arg;

	if (strncmp(msg, "f.conf:", 7) != 0)
		abort();
	(*n)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *s = (const char *)data;
	struct conf *c = NULL;
	struct sockaddr_storage ss;
	struct conf_cidr cidr;
	socklen_t sslen;
	uint64_t u64;
	unsigned u;
	int nerr = 0, r;

	/* the value parsers, on the whole input */
	(void)conf_parse_size(s, size, &u64);
	(void)conf_parse_duration(s, size, &u);
	if (conf_parse_hostport(s, size, 25, &ss, &sslen) == 0 &&
	    ss.ss_family != AF_INET && ss.ss_family != AF_INET6)
		abort();
	if (conf_parse_cidr(s, size, &cidr) == 0 &&
	    cidr.prefix > (cidr.family == AF_INET ? 32u : 128u))
		abort();

	r = conf_parse(s, size, "f.conf", &c, fuzz_conf_err, &nerr);
	if (r != nerr || (r == 0) != (c != NULL))
		abort();
	if (c == NULL)
		return 0;
	if (c->nlisten == 0 || c->control_socket == NULL ||
	    c->queue_dir == NULL || c->nretry == 0 || c->refcnt != 1)
		abort();
	for (size_t i = 0; i < c->nlisten; i++)
		if (c->listen[i].tls != CONF_TLS_NONE && c->ntls == 0)
			abort();

	/* lookups with pieces of the input as queries */
	for (size_t i = 0; i < c->nroutes; i++) {
		const char *d = c->routes[i].domain;
		if (conf_route_for(c, d, strlen(d)) == NULL)
			abort();
	}
	for (size_t i = 0; i < c->nrelay_domains; i++) {
		const char *d = c->relay_domains[i];
		if (d[0] != '.' && !conf_is_relay_domain(c, d, strlen(d)))
			abort();
		if (d[0] == '.' && conf_is_relay_domain(c, d, strlen(d)))
			abort();
	}
	if (conf_route_for(c, s, size > 64 ? 64 : size) == NULL)
		abort();
	(void)conf_is_relay_domain(c, s, size > 64 ? 64 : size);
	for (size_t i = 0; i < c->ntrusted; i++) {
		struct sockaddr_storage a;
		memset(&a, 0, sizeof(a));
		if (c->trusted[i].family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&a;
			sin->sin_family = AF_INET;
			memcpy(&sin->sin_addr, c->trusted[i].addr, 4);
		} else {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&a;
			sin6->sin6_family = AF_INET6;
			memcpy(&sin6->sin6_addr, c->trusted[i].addr, 16);
		}
		if (!conf_is_trusted(c, (struct sockaddr *)&a))
			abort();       /* a network contains its own address */
	}
	conf_unref(conf_ref(c));
	conf_unref(c);
	return 0;
}
