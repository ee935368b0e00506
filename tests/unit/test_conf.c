/*
 * test_conf.c - tern.conf: value parsers, every directive's bounds from the
 * table, good and bad files (each error text and line asserted), defaults,
 * the documented sample etc/tern.conf, conf_load's system checks, lookups
 * (CIDR, relay domains, routes) and the refcount.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <unistd.h>

#include "tern/conf.h"

#define MAXERR 32

struct errs {
	char *msg[MAXERR];
	int n;
};

static void
errs_add(void *arg, const char *msg)
{
	struct errs *e = arg;

	if (e->n < MAXERR)
		e->msg[e->n] = strdup(msg);
	e->n++;
}

static void
errs_clear(struct errs *e)
{
	for (int i = 0; i < e->n && i < MAXERR; i++)
		free(e->msg[i]);
	e->n = 0;
}

static int
parse(const char *text, struct conf **c, struct errs *e)
{
	int n;

	*c = NULL;
	e->n = 0;
	n = conf_parse(text, strlen(text), "t.conf", c, errs_add, e);
	assert_int_equal(n, e->n);          /* every error reported once */
	if (n == 0)
		assert_non_null(*c);
	else
		assert_null(*c);
	return n;
}

/* Parse a config that must be good; print the errors if it is not. */
static struct conf *
parse_ok(const char *text)
{
	struct conf *c;
	struct errs e = { .n = 0 };

	if (parse(text, &c, &e) != 0) {
		for (int i = 0; i < e.n && i < MAXERR; i++)
			print_error("unexpected: %s\n", e.msg[i]);
		fail_msg("config should parse: %s", text);
	}
	return c;
}

#define LISTEN "listen 127.0.0.1:2525 relay\n"
/* 110 octets: too long for a unix socket's sun_path (108) */
#define LONG_PATH "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" \
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/lmtp-sock"

/* ------------------------------------------------------------------ */
/* local submission */

static void
test_local_socket_and_senders(void **state)
{
	struct conf *c = parse_ok(LISTEN "hostname mx.test\n");
	struct conf *d;
	struct errs e = { .n = 0 };

	assert_null(c->local_socket);              /* default: none */
	conf_unref(c);
	c = parse_ok(LISTEN "hostname mx.test\nlocal-socket /run/tern/l.sock\n"
	    "local-senders www-data @example.com ops@other.test\n"
	    "local-senders Root2 *\n");
	assert_string_equal(c->local_socket, "/run/tern/l.sock");
	assert_int_equal(c->local_listen.mode, CONF_LISTEN_LOCAL);
	assert_int_equal(c->local_listen.tls, CONF_TLS_NONE);
	assert_string_equal(conf_listen_mode_name(CONF_LISTEN_LOCAL), "local");
	/* user@hostname is always the user's own */
	assert_true(conf_local_sender_allowed(c, "alice", "alice@mx.test"));
	assert_true(conf_local_sender_allowed(c, "alice", "ALICE@MX.TEST"));
	assert_false(conf_local_sender_allowed(c, "alice", "alice@mx.test.evil"));
	assert_false(conf_local_sender_allowed(c, "alice", "bob@mx.test"));
	assert_false(conf_local_sender_allowed(c, "alice", "alice@example.com"));
	assert_false(conf_local_sender_allowed(c, "alice", ""));
	/* the listed ones */
	assert_true(conf_local_sender_allowed(c, "www-data", "x@example.com"));
	assert_true(conf_local_sender_allowed(c, "www-data", "ops@other.test"));
	assert_false(conf_local_sender_allowed(c, "www-data", "x@other.test"));
	assert_true(conf_local_sender_allowed(c, "root2", "any@where.test"));
	/* local-senders does not leak into sender-login, nor back */
	assert_false(conf_sender_allowed(c, "www-data", "x@example.com"));
	conf_unref(c);

	c = parse_ok(LISTEN "local-socket none\n");
	assert_null(c->local_socket);
	conf_unref(c);
	assert_int_equal(parse(LISTEN "local-socket run/l.sock\n", &d, &e), 1);
	errs_clear(&e);
	assert_int_equal(parse(LISTEN "local-senders a b\n", &d, &e), 1);
	assert_non_null(strstr(e.msg[0], "local-senders: \"b\" is not an address"));
	errs_clear(&e);
	assert_int_equal(parse(LISTEN "local-senders a *\nlocal-senders A *\n",
	    &d, &e), 1);
	assert_non_null(strstr(e.msg[0], "local-senders: user \"A\" already"));
	errs_clear(&e);
	char longp[200];
	memset(longp, 'a', sizeof(longp));
	longp[0] = '/';
	longp[sizeof(longp) - 1] = '\0';
	char text[300];
	snprintf(text, sizeof(text), LISTEN "local-socket %s\n", longp);
	assert_int_equal(parse(text, &d, &e), 1);
	assert_non_null(strstr(e.msg[0], "too long for a socket"));
	errs_clear(&e);
}

/* ------------------------------------------------------------------ */
/* value parsers */

static void
test_parse_size(void **state)
{
	static const struct { const char *s; int ok; uint64_t v; } t[] = {
		{ "0", 1, 0 }, { "1", 1, 1 }, { "1024", 1, 1024 },
		{ "1K", 1, 1024 }, { "1k", 1, 1024 }, { "35M", 1, 35ULL << 20 },
		{ "2G", 1, 2ULL << 30 }, { "007", 1, 7 },
		{ "18446744073709551615", 1, UINT64_MAX },
		{ "18446744073709551616", 0, 0 },
		{ "17179869184G", 0, 0 },         /* 2^34 G overflows */
		{ "17179869183G", 1, 17179869183ULL << 30 },
		{ "", 0, 0 }, { "K", 0, 0 }, { "1T", 0, 0 }, { "1KB", 0, 0 },
		{ "-1", 0, 0 }, { "+1", 0, 0 }, { " 1", 0, 0 }, { "1 ", 0, 0 },
		{ "1.5M", 0, 0 }, { "0x10", 0, 0 },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		uint64_t v = 12345;
		int r = conf_parse_size(t[i].s, strlen(t[i].s), &v);
		if (r != (t[i].ok ? 0 : -1))
			fail_msg("size \"%s\": got %d", t[i].s, r);
		if (t[i].ok && v != t[i].v)
			fail_msg("size \"%s\": got %llu", t[i].s,
			    (unsigned long long)v);
	}
	/* the length bounds the input: "35M" seen as "35" */
	uint64_t v;
	assert_int_equal(conf_parse_size("35M", 2, &v), 0);
	assert_true(v == 35);
}

static void
test_parse_duration(void **state)
{
	static const struct { const char *s; int ok; unsigned v; } t[] = {
		{ "0", 1, 0 }, { "30", 1, 30 }, { "30s", 1, 30 },
		{ "5m", 1, 300 }, { "1h", 1, 3600 }, { "2d", 1, 172800 },
		{ "4294967295", 1, 4294967295u }, { "4294967296", 0, 0 },
		{ "49710d", 1, 49710u * 86400 }, { "49711d", 0, 0 },
		{ "", 0, 0 }, { "m", 0, 0 }, { "5M", 0, 0 }, { "5w", 0, 0 },
		{ "5mm", 0, 0 }, { "-5", 0, 0 }, { "1.5h", 0, 0 },
		{ "5 m", 0, 0 },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		unsigned v = 12345;
		int r = conf_parse_duration(t[i].s, strlen(t[i].s), &v);
		if (r != (t[i].ok ? 0 : -1))
			fail_msg("duration \"%s\": got %d", t[i].s, r);
		if (t[i].ok && v != t[i].v)
			fail_msg("duration \"%s\": got %u", t[i].s, v);
	}
}

static void
test_parse_hostport(void **state)
{
	static const struct {
		const char *s; uint16_t defport; int ok; int family;
		const char *addr; uint16_t port;
	} t[] = {
		{ "127.0.0.1:25", 0, 1, AF_INET, "127.0.0.1", 25 },
		{ "0.0.0.0:65535", 0, 1, AF_INET, "0.0.0.0", 65535 },
		{ "10.1.2.3", 53, 1, AF_INET, "10.1.2.3", 53 },
		{ "[::1]:2525", 0, 1, AF_INET6, "::1", 2525 },
		{ "[::]:25", 0, 1, AF_INET6, "::", 25 },
		{ "[2001:db8::5]", 53, 1, AF_INET6, "2001:db8::5", 53 },
		{ "::1", 53, 1, AF_INET6, "::1", 53 },
		{ "[::ffff:1.2.3.4]:1", 0, 1, AF_INET6, "::ffff:1.2.3.4", 1 },
		{ "10.1.2.3", 0, 0, 0, NULL, 0 },       /* port required */
		{ "[::1]", 0, 0, 0, NULL, 0 },
		{ "127.0.0.1:0", 0, 0, 0, NULL, 0 },
		{ "127.0.0.1:65536", 0, 0, 0, NULL, 0 },
		{ "127.0.0.1:", 25, 0, 0, NULL, 0 },
		{ "127.0.0.1:+25", 0, 0, 0, NULL, 0 },
		{ "127.0.0.1:000025", 0, 0, 0, NULL, 0 },
		{ "127.0.0.1:2x", 0, 0, 0, NULL, 0 },
		{ "localhost:25", 0, 0, 0, NULL, 0 },   /* numeric only */
		{ "1.2.3:25", 0, 0, 0, NULL, 0 },
		{ "256.0.0.1:25", 0, 0, 0, NULL, 0 },
		{ "[::1:25", 0, 0, 0, NULL, 0 },
		{ "[::1]25", 0, 0, 0, NULL, 0 },
		{ "[127.0.0.1]:25", 0, 0, 0, NULL, 0 },
		{ "[]:25", 0, 0, 0, NULL, 0 },
		{ ":25", 0, 0, 0, NULL, 0 },
		{ "", 25, 0, 0, NULL, 0 },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct sockaddr_storage ss;
		socklen_t len = 0;
		char buf[INET6_ADDRSTRLEN];
		int r = conf_parse_hostport(t[i].s, strlen(t[i].s),
		    t[i].defport, &ss, &len);
		if (r != (t[i].ok ? 0 : -1))
			fail_msg("hostport \"%s\": got %d", t[i].s, r);
		if (!t[i].ok)
			continue;
		assert_int_equal(ss.ss_family, t[i].family);
		if (t[i].family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
			assert_int_equal(len, sizeof(*sin));
			inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf));
			assert_int_equal(ntohs(sin->sin_port), t[i].port);
		} else {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
			assert_int_equal(len, sizeof(*sin6));
			inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf));
			assert_int_equal(ntohs(sin6->sin6_port), t[i].port);
		}
		assert_string_equal(buf, t[i].addr);
	}
}

static void
test_parse_cidr(void **state)
{
	static const struct {
		const char *s; int ok; int family; const char *net;
		unsigned prefix;
	} t[] = {
		{ "127.0.0.0/8", 1, AF_INET, "127.0.0.0", 8 },
		{ "127.1.2.3/8", 1, AF_INET, "127.0.0.0", 8 },   /* masked */
		{ "10.1.2.3", 1, AF_INET, "10.1.2.3", 32 },
		{ "192.168.1.255/23", 1, AF_INET, "192.168.0.0", 23 },
		{ "1.2.3.4/0", 1, AF_INET, "0.0.0.0", 0 },
		{ "1.2.3.4/32", 1, AF_INET, "1.2.3.4", 32 },
		{ "::1", 1, AF_INET6, "::1", 128 },
		{ "2001:db8::1/32", 1, AF_INET6, "2001:db8::", 32 },
		{ "2001:db8:ffff::/33", 1, AF_INET6, "2001:db8:8000::", 33 },
		{ "::/0", 1, AF_INET6, "::", 0 },
		{ "1.2.3.4/33", 0, 0, NULL, 0 },
		{ "::1/129", 0, 0, NULL, 0 },
		{ "1.2.3.4/", 0, 0, NULL, 0 },
		{ "1.2.3.4/-1", 0, 0, NULL, 0 },
		{ "1.2.3.4/0008", 0, 0, NULL, 0 },
		{ "/8", 0, 0, NULL, 0 },
		{ "1.2.3/8", 0, 0, NULL, 0 },
		{ "banana", 0, 0, NULL, 0 },
		{ "", 0, 0, NULL, 0 },
	};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct conf_cidr n;
		char buf[INET6_ADDRSTRLEN];
		int r = conf_parse_cidr(t[i].s, strlen(t[i].s), &n);
		if (r != (t[i].ok ? 0 : -1))
			fail_msg("cidr \"%s\": got %d", t[i].s, r);
		if (!t[i].ok)
			continue;
		assert_int_equal(n.family, t[i].family);
		assert_int_equal(n.prefix, t[i].prefix);
		inet_ntop(n.family, n.addr, buf, sizeof(buf));
		assert_string_equal(buf, t[i].net);
	}
}

/* ------------------------------------------------------------------ */
/* the table: bounds and keywords of every scalar directive */

static uint64_t
field_get(const struct conf *c, const struct conf_directive *d)
{
	const char *f = (const char *)c + d->off;

	switch (d->type) {
	case CONF_T_UINT:
	case CONF_T_DURATION:
		return *(const unsigned *)(const void *)f;
	case CONF_T_PORT:
		return *(const uint16_t *)(const void *)f;
	case CONF_T_SIZE:
		return *(const uint64_t *)(const void *)f;
	case CONF_T_KEYWORD:
		return (uint64_t)*(const int *)(const void *)f;
	default:
		fail_msg("field_get: %s is not scalar", d->name);
	}
	return 0;
}

static void
check_value(const struct conf_directive *d, uint64_t v, int ok)
{
	char text[256];
	struct conf *c;
	struct errs e = { .n = 0 };
	int n;

	snprintf(text, sizeof(text), LISTEN "%s %llu\n", d->name,
	    (unsigned long long)v);
	n = parse(text, &c, &e);
	if (ok) {
		if (n != 0)
			fail_msg("%s %llu: %s", d->name, (unsigned long long)v,
			    e.msg[0]);
		assert_true(field_get(c, d) == v);
		conf_unref(c);
	} else {
		if (n != 1)
			fail_msg("%s %llu: %d errors", d->name,
			    (unsigned long long)v, n);
		char want[64];
		snprintf(want, sizeof(want), "t.conf:2: %s: %llu is out of "
		    "range (", d->name, (unsigned long long)v);
		if (strncmp(e.msg[0], want, strlen(want)) != 0)
			fail_msg("got \"%s\", want \"%s...\"", e.msg[0], want);
	}
	errs_clear(&e);
}

static void
test_table_bounds(void **state)
{
	const struct conf_directive *t;
	size_t n = conf_directives(&t);
	int checked = 0;

	assert_true(n > 30);
	for (size_t i = 0; i < n; i++) {
		const struct conf_directive *d = &t[i];
		if (d->type != CONF_T_UINT && d->type != CONF_T_PORT &&
		    d->type != CONF_T_SIZE && d->type != CONF_T_DURATION)
			continue;
		assert_true(d->min <= d->max);
		check_value(d, d->min, 1);
		check_value(d, d->max, 1);
		if (d->min > 0)
			check_value(d, d->min - 1, 0);
		check_value(d, d->max + 1, 0);
		checked++;
	}
	assert_true(checked >= 17);
}

static void
test_table_keywords(void **state)
{
	const struct conf_directive *t;
	size_t n = conf_directives(&t);
	char text[256];
	struct conf *c;
	struct errs e = { .n = 0 };

	for (size_t i = 0; i < n; i++) {
		const struct conf_directive *d = &t[i];
		if (d->type != CONF_T_KEYWORD)
			continue;
		assert_non_null(d->words);
		for (int w = 0; d->words[w] != NULL; w++) {
			snprintf(text, sizeof(text), LISTEN "%s %s\n", d->name,
			    d->words[w]);
			c = parse_ok(text);
			assert_int_equal(field_get(c, d), w);
			conf_unref(c);
		}
		snprintf(text, sizeof(text), LISTEN "%s bogus\n", d->name);
		assert_int_equal(parse(text, &c, &e), 1);
		char want[64];
		snprintf(want, sizeof(want), "t.conf:2: %s: unknown value "
		    "\"bogus\" (expected ", d->name);
		assert_memory_equal(e.msg[0], want, strlen(want));
		errs_clear(&e);
	}
}

/* ------------------------------------------------------------------ */
/* good files */

static void
test_defaults(void **state)
{
	const struct conf_directive *t;
	size_t n = conf_directives(&t);
	struct conf *c = parse_ok(LISTEN);
	static const unsigned retry[] = { 300, 600, 1800, 3600, 7200, 14400 };

	assert_string_equal(c->path, "t.conf");
	assert_int_equal(c->refcnt, 1);
	assert_null(c->hostname);                 /* conf_load fills it */
	assert_null(c->user);
	assert_null(c->control_group);
	assert_string_equal(c->queue_dir, "/var/spool/tern");
	assert_string_equal(c->control_socket, "/var/spool/tern/control.sock");
	assert_int_equal(c->ntls, 0);
	assert_int_equal(c->nlisten, 1);
	assert_int_equal(c->listen[0].mode, CONF_LISTEN_RELAY);
	assert_int_equal(c->listen[0].tls, CONF_TLS_NONE);
	assert_int_equal(c->listen[0].line, 1);
	assert_string_equal(c->listen[0].spec, "127.0.0.1:2525");
	assert_int_equal(c->nrelay_domains, 0);
	assert_int_equal(c->ntrusted, 0);
	assert_int_equal(c->nroutes, 0);
	assert_int_equal(c->nresolvers, 0);
	assert_int_equal(c->tls_policy, CONF_TLSP_MAY);
	assert_int_equal(c->mx_port, 25);
	assert_true(c->max_message_size == 35ULL << 20);
	assert_int_equal(c->max_recipients, 100);
	assert_int_equal(c->max_connections, 1000);
	assert_int_equal(c->max_connections_per_ip, 20);
	assert_int_equal(c->max_connections_per_ip_trusted, 0);
	assert_int_equal(c->max_errors, 10);
	assert_int_equal(c->idle_timeout, 300);
	assert_int_equal(c->session_timeout, 3600);
	assert_int_equal(c->command_deadline, 0);
	assert_int_equal(conf_command_deadline(c), 600);   /* 2 x idle-timeout */
	assert_true(c->data_min_rate == 500);
	assert_int_equal(c->greet_delay, 0);
	assert_int_equal(c->bare_newline, CONF_BARE_REJECT);
	assert_int_equal(c->max_hops, 50);
	assert_int_equal(c->allow_untrusted_routing, 0);
	assert_null(c->postmaster);       /* derived from hostname by conf_load */
	assert_int_equal(c->session_threads, 0);
	assert_int_equal(c->delivery_threads, 0);
	assert_true(c->segment_size == 64ULL << 20);
	assert_true(c->spool_memory == 256ULL << 10);
	assert_int_equal(c->nretry, 6);
	assert_memory_equal(c->retry, retry, sizeof(retry));
	assert_int_equal(c->max_queue_lifetime, 5 * 86400);
	assert_int_equal(c->delay_warning, 4 * 3600);
	assert_int_equal(c->max_dest_connections, 20);
	assert_int_equal(c->max_out_connections, 200);
	assert_int_equal(c->connect_timeout, 30);
	assert_int_equal(c->log_syslog, 0);
	assert_int_equal(c->log_json, 0);
	assert_null(c->metrics_listen);

	/* every scalar default in the table is in range */
	for (size_t i = 0; i < n; i++) {
		const struct conf_directive *d = &t[i];
		if (d->type == CONF_T_UINT || d->type == CONF_T_PORT ||
		    d->type == CONF_T_SIZE || d->type == CONF_T_DURATION) {
			assert_non_null(d->def);
			uint64_t v = field_get(c, d);
			assert_true(v >= d->min && v <= d->max);
		}
	}
	conf_unref(c);
}

static const char full_conf[] =
    "# every directive, some oddly spaced\r\n"
    "hostname Mail.Example.COM\r\n"
    "user tern\n"
    "queue /tmp/q\n"
    "control-socket /run/tern.sock\n"
    "control-group ternadm\n"
    "listen 0.0.0.0:25 relay   # comment after a directive\n"
    "\tlisten\t[::1]:2587  submission starttls\n"
    "listen 127.0.0.1:2465 submission tls\n"
    "listen 127.0.0.1:2526 relay plain\n"
    "tls-cert /c1.pem\n"
    "tls-key /k1.pem\n"
    "tls-cert /c2.pem\n"
    "tls-key /k2.pem\n"
    "relay-domains Example.COM .sub.example.org\n"
    "relay-domains example.net\n"
    "trusted-networks 127.0.0.0/8 ::1\n"
    "trusted-networks 10.9.8.7/16\n"
    "route example.org smtp:[10.0.0.5]:2525 tls-policy=verify\n"
    "route .example.org smtp:relay.example.net\n"
    "route Example.NET smtp:[MX.example.net]\n"
    "route * smtp:[::1]:2526\n"
    "route other.test smtp:relay.test:587 tls-policy=none\n"
    "route mx.test mx\n"
    "tls-policy encrypt\n"
    "resolver 127.0.0.1:5353 [::1]\n"
    "resolver 10.0.0.1\n"
    "mx-port 2525\n"
    "max-message-size 10M\n"
    "max-recipients 5\n"
    "max-connections 7\n"
    "max-connections-per-ip 3\n"
    "max-errors 2\n"
    "idle-timeout 30\n"
    "session-timeout 2h\n"
    "bare-newline normalize\n"
    "max-hops 7\n"
    "allow-untrusted-routing yes\n"
    "postmaster Hostmaster@Example.ORG\n"
    "session-threads 2\n"
    "delivery-threads 3\n"
    "segment-size 1G\n"
    "spool-memory 0\n"
    "retry 1s 2s\n"
    "max-queue-lifetime 10m\n"
    "delay-warning 0\n"
    "max-dest-connections 4\n"
    "max-out-connections 40\n"
    "connect-timeout 5s\n"
    "greeting-timeout 1m\n"
    "data-timeout 20m\n"
    "dest-initial-connections 3\n"
    "dest-failure-cohort 7\n"
    "dest-down-time 2m\n"
    "dest-limit Big.Example 50\n"
    "dest-limit relay.example.net 2\n"
    "log syslog\n"
    "log-format json\n"
    "metrics-listen [::1]:9100";      /* no final newline */

static void
test_full(void **state)
{
	struct conf *c = parse_ok(full_conf);
	struct sockaddr_in6 *sin6;
	char buf[INET6_ADDRSTRLEN];

	assert_string_equal(c->hostname, "Mail.Example.COM");
	assert_string_equal(c->user, "tern");
	assert_string_equal(c->queue_dir, "/tmp/q");
	assert_string_equal(c->control_socket, "/run/tern.sock");
	assert_string_equal(c->control_group, "ternadm");

	assert_int_equal(c->nlisten, 4);
	assert_int_equal(c->listen[0].tls, CONF_TLS_STARTTLS); /* has cert */
	assert_int_equal(c->listen[0].mode, CONF_LISTEN_RELAY);
	assert_int_equal(c->listen[0].line, 7);
	assert_string_equal(c->listen[1].spec, "[::1]:2587");
	assert_int_equal(c->listen[1].mode, CONF_LISTEN_SUBMISSION);
	assert_int_equal(c->listen[1].tls, CONF_TLS_STARTTLS);
	sin6 = (struct sockaddr_in6 *)&c->listen[1].addr;
	assert_int_equal(sin6->sin6_family, AF_INET6);
	assert_int_equal(ntohs(sin6->sin6_port), 2587);
	assert_int_equal(c->listen[1].addrlen, sizeof(*sin6));
	assert_int_equal(c->listen[2].tls, CONF_TLS_IMPLICIT);
	assert_int_equal(c->listen[3].tls, CONF_TLS_NONE);

	assert_int_equal(c->ntls, 2);
	assert_string_equal(c->tls[0].cert, "/c1.pem");
	assert_string_equal(c->tls[0].key, "/k1.pem");
	assert_string_equal(c->tls[1].cert, "/c2.pem");
	assert_string_equal(c->tls[1].key, "/k2.pem");
	assert_int_equal(c->tls[1].cert_line, 13);
	assert_int_equal(c->tls[1].key_line, 14);

	assert_int_equal(c->nrelay_domains, 3);
	assert_string_equal(c->relay_domains[0], "example.com");
	assert_string_equal(c->relay_domains[1], ".sub.example.org");
	assert_string_equal(c->relay_domains[2], "example.net");
	assert_int_equal(c->ntrusted, 3);
	assert_int_equal(c->trusted[2].prefix, 16);
	assert_int_equal(c->trusted[2].addr[2], 0);           /* masked */

	assert_int_equal(c->nroutes, 6);
	assert_string_equal(c->routes[0].domain, "example.org");
	assert_int_equal(c->routes[0].kind, CONF_ROUTE_HOST);
	assert_string_equal(c->routes[0].host, "10.0.0.5");
	assert_int_equal(c->routes[0].port, 2525);
	assert_int_equal(c->routes[0].tls, CONF_TLSP_VERIFY);
	assert_int_equal(c->routes[0].line, 19);
	assert_int_equal(c->routes[1].kind, CONF_ROUTE_HOST_MX);
	assert_string_equal(c->routes[1].host, "relay.example.net");
	assert_int_equal(c->routes[1].port, 0);
	/* tls-policy appears after the route: the route still takes it */
	assert_int_equal(c->routes[1].tls, CONF_TLSP_ENCRYPT);
	assert_string_equal(c->routes[2].domain, "example.net");
	assert_int_equal(c->routes[2].kind, CONF_ROUTE_HOST);
	assert_string_equal(c->routes[2].host, "mx.example.net");
	assert_string_equal(c->routes[3].host, "::1");
	assert_int_equal(c->routes[3].port, 2526);
	assert_int_equal(c->routes[4].port, 587);
	assert_int_equal(c->routes[4].tls, CONF_TLSP_NONE);
	assert_int_equal(c->routes[5].kind, CONF_ROUTE_MX);
	assert_null(c->routes[5].host);
	assert_int_equal(c->tls_policy, CONF_TLSP_ENCRYPT);

	assert_int_equal(c->nresolvers, 3);
	sin6 = (struct sockaddr_in6 *)&c->resolvers[1];
	assert_int_equal(sin6->sin6_family, AF_INET6);
	assert_int_equal(ntohs(sin6->sin6_port), 53);
	inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf));
	assert_string_equal(buf, "::1");
	assert_int_equal(ntohs(((struct sockaddr_in *)&c->resolvers[0])->sin_port),
	    5353);

	assert_int_equal(c->mx_port, 2525);
	assert_true(c->max_message_size == 10ULL << 20);
	assert_int_equal(c->max_recipients, 5);
	assert_int_equal(c->max_connections, 7);
	assert_int_equal(c->max_connections_per_ip, 3);
	assert_int_equal(c->max_errors, 2);
	assert_int_equal(c->idle_timeout, 30);
	assert_int_equal(c->session_timeout, 7200);
	assert_int_equal(c->bare_newline, CONF_BARE_NORMALIZE);
	assert_int_equal(c->max_hops, 7);
	assert_int_equal(c->allow_untrusted_routing, 1);
	assert_string_equal(c->postmaster, "Hostmaster@Example.ORG");
	assert_int_equal(c->session_threads, 2);
	assert_int_equal(c->delivery_threads, 3);
	assert_true(c->segment_size == 1ULL << 30);
	assert_true(c->spool_memory == 0);
	assert_int_equal(c->nretry, 2);         /* replaces, not appends */
	assert_int_equal(c->retry[0], 1);
	assert_int_equal(c->retry[1], 2);
	assert_int_equal(c->max_queue_lifetime, 600);
	assert_int_equal(c->delay_warning, 0);
	assert_int_equal(c->max_dest_connections, 4);
	assert_int_equal(c->max_out_connections, 40);
	assert_int_equal(c->connect_timeout, 5);
	assert_int_equal(c->greeting_timeout, 60);
	assert_int_equal(c->data_timeout, 1200);
	assert_int_equal(c->dest_initial_connections, 3);
	assert_int_equal(c->dest_failure_cohort, 7);
	assert_int_equal(c->dest_down_time, 120);
	assert_int_equal(c->ndest_limits, 2);
	assert_int_equal(conf_dest_limit_for(c, "big.example"), 50);
	assert_int_equal(conf_dest_limit_for(c, "BIG.example"), 50);
	assert_int_equal(conf_dest_limit_for(c, "relay.example.net"), 2);
	assert_int_equal(conf_dest_limit_for(c, "other.example"), 4);
	assert_int_equal(c->log_syslog, 1);
	assert_int_equal(c->log_json, 1);
	assert_string_equal(c->metrics_listen, "[::1]:9100");
	conf_unref(c);
}

static void
test_tls_default_order(void **state)
{
	/* the certificate comes after the listen: still starttls */
	struct conf *c = parse_ok(LISTEN "tls-key /k\ntls-cert /c\n");

	assert_int_equal(c->listen[0].tls, CONF_TLS_STARTTLS);
	assert_int_equal(c->ntls, 1);
	conf_unref(c);
	/* a blank or comment-only file part, CR-only line ends as blanks */
	c = parse_ok("\n\n   \n# x\n\t# y\n" LISTEN "#\n");
	assert_int_equal(c->listen[0].line, 6);
	conf_unref(c);
}

/* ------------------------------------------------------------------ */
/* bad files: every error, with its line */

static const struct {
	const char *text;
	const char *errs[6];
} bad[] = {
	{ "", { "t.conf: no listen directive (at least one is required)" } },
	{ "# only a comment\n",
	  { "t.conf: no listen directive (at least one is required)" } },
	{ LISTEN "bogus 1\n", { "t.conf:2: unknown directive \"bogus\"" } },
	{ LISTEN "Hostname x\n", { "t.conf:2: unknown directive \"Hostname\"" } },
	{ LISTEN "hostname\n",
	  { "t.conf:2: hostname: missing argument (usage: hostname NAME)" } },
	{ LISTEN "hostname a b\n",
	  { "t.conf:2: hostname: too many arguments (usage: hostname NAME)" } },
	{ LISTEN "hostname a\nhostname b\n",
	  { "t.conf:3: hostname: already set at line 2" } },
	{ LISTEN "hostname a..b\n", { "t.conf:2: hostname: bad host name \"a..b\"" } },
	{ LISTEN "max-recipients 0\n",
	  { "t.conf:2: max-recipients: 0 is out of range (1..100000)" } },
	{ LISTEN "max-hops 0\n",
	  { "t.conf:2: max-hops: 0 is out of range (1..1000)" } },
	{ LISTEN "postmaster pm\n",
	  { "t.conf:2: postmaster: bad address \"pm\" (use local@domain)" } },
	{ LISTEN "postmaster pm@[127.0.0.1]\n",
	  { "t.conf:2: postmaster: bad address \"pm@[127.0.0.1]\" "
	    "(use local@domain)" } },
	{ LISTEN "max-recipients 99999999999999999999\n",
	  { "t.conf:2: max-recipients: bad number \"99999999999999999999\"" } },
	{ LISTEN "max-recipients -1\n",
	  { "t.conf:2: max-recipients: bad number \"-1\"" } },
	{ LISTEN "max-recipients 1 2\n",
	  { "t.conf:2: max-recipients: too many arguments (usage: "
	    "max-recipients NUMBER)" } },
	{ LISTEN "max-message-size 512\n",
	  { "t.conf:2: max-message-size: 512 is out of range (1K..4G)" } },
	{ LISTEN "max-message-size 5X\n",
	  { "t.conf:2: max-message-size: bad size \"5X\" (use e.g. 512K, 35M, "
	    "1G)" } },
	{ LISTEN "segment-size 512K\n",
	  { "t.conf:2: segment-size: 512K is out of range (1M..16G)" } },
	{ LISTEN "idle-timeout 0\n",
	  { "t.conf:2: idle-timeout: 0 is out of range (1s..1d)" } },
	{ LISTEN "connect-timeout 2h\n",
	  { "t.conf:2: connect-timeout: 2h is out of range (1s..1h)" } },
	{ LISTEN "idle-timeout 5w\n",
	  { "t.conf:2: idle-timeout: bad duration \"5w\" (use e.g. 30s, 5m, 1h, "
	    "2d)" } },
	{ LISTEN "mx-port 0\n", { "t.conf:2: mx-port: 0 is out of range (1..65535)" } },
	{ LISTEN "mx-port smtp\n", { "t.conf:2: mx-port: bad port \"smtp\"" } },
	{ LISTEN "retry 5m 0 1x\n",
	  { "t.conf:2: retry: 0 is out of range (1s..7d)",
	    "t.conf:2: retry: bad duration \"1x\" (use e.g. 30s, 5m, 1h, 2d)" } },
	{ LISTEN "retry\n",
	  { "t.conf:2: retry: missing argument (usage: retry DURATION ...)" } },
	{ LISTEN "retry 1m\nretry 2m\n", { "t.conf:3: retry: already set at line 2" } },
	{ "listen 127.0.0.1 relay\n",
	  { "t.conf:1: listen: bad port in \"127.0.0.1\"",
	    "t.conf: no listen directive (at least one is required)" } },
	{ LISTEN "listen 127.0.0.1:70000 relay\n",
	  { "t.conf:2: listen: bad port in \"127.0.0.1:70000\"" } },
	{ LISTEN "listen 1.2.3:25 relay\n",
	  { "t.conf:2: listen: bad address \"1.2.3:25\" (use 0.0.0.0:25 or "
	    "[::]:25)" } },
	{ LISTEN "listen localhost:25 relay\n",
	  { "t.conf:2: listen: bad address \"localhost:25\" (use 0.0.0.0:25 or "
	    "[::]:25)" } },
	{ LISTEN "listen 127.0.0.1:25 mta ssl\n",
	  { "t.conf:2: listen: unknown mode \"mta\" (expected relay or "
	    "submission)",
	    "t.conf:2: listen: unknown option \"ssl\" (expected one of "
	    "starttls, tls or plain, and proxy)" } },
	{ LISTEN "listen 127.0.0.1:25\n",
	  { "t.conf:2: listen: missing argument (usage: listen ADDR:PORT "
	    "relay|submission [starttls|tls|plain] [proxy])" } },
	{ LISTEN "listen 127.0.0.1:25 relay tls proxy x\n",
	  { "t.conf:2: listen: too many arguments (usage: listen ADDR:PORT "
	    "relay|submission [starttls|tls|plain] [proxy])" } },
	{ LISTEN "listen 127.0.0.1:2525 submission\n",
	  { "t.conf:2: listen: 127.0.0.1:2525 already listed at line 1" } },
	{ LISTEN "listen 127.0.0.1:25 relay proxy proxy\n"
	    "listen 127.0.0.1:26 relay plain tls\nproxy-networks 10.0.0.1\n",
	  { "t.conf:2: listen: repeated option \"proxy\" (expected one of "
	    "starttls, tls or plain, and proxy)",
	    "t.conf:3: listen: repeated option \"tls\" (expected one of "
	    "starttls, tls or plain, and proxy)" } },
	{ LISTEN "listen 127.0.0.1:25 relay proxy\n",
	  { "t.conf:2: listen 127.0.0.1:25: proxy needs proxy-networks (the "
	    "balancers allowed to name clients)" } },
	{ LISTEN "proxy-networks 10.0.0.0/33 x\nproxy-timeout 0\n",
	  { "t.conf:2: proxy-networks: bad network \"10.0.0.0/33\" (use "
	    "10.0.0.0/8, 2001:db8::/32 or an address)",
	    "t.conf:2: proxy-networks: bad network \"x\" (use "
	    "10.0.0.0/8, 2001:db8::/32 or an address)",
	    "t.conf:3: proxy-timeout: 0 is out of range (1s..5m)" } },
	{ LISTEN "listen [::1]:25 relay tls\nlisten [::1]:26 relay starttls\n",
	  { "t.conf:2: listen [::1]:25: tls needs tls-cert and tls-key",
	    "t.conf:3: listen [::1]:26: starttls needs tls-cert and tls-key" } },
	{ LISTEN "tls-cert /a\ntls-cert /b\ntls-key /k\n",
	  { "t.conf:3: tls-cert /b has no matching tls-key" } },
	{ LISTEN "tls-key /k\nlisten 127.0.0.1:1 relay tls\n",
	  { "t.conf:2: tls-key /k has no matching tls-cert",
	    "t.conf:3: listen 127.0.0.1:1: tls needs tls-cert and tls-key" } },
	{ LISTEN "relay-domains * *.example.com exa..mple.com ok.com -\n",
	  { "t.conf:2: relay-domains: \"*\" is not allowed (it would make an "
	    "open relay)",
	    "t.conf:2: relay-domains: \"*.example.com\": write \".example.com\" "
	    "for subdomains",
	    "t.conf:2: relay-domains: bad domain \"exa..mple.com\"",
	    "t.conf:2: relay-domains: bad domain \"-\"" } },
	{ LISTEN "relay-domains . example.com.\n",
	  { "t.conf:2: relay-domains: bad domain \".\"",
	    "t.conf:2: relay-domains: bad domain \"example.com.\"" } },
	{ LISTEN "trusted-networks 10.0.0.0/33 ::1/129 banana 1.2.3.4/\n",
	  { "t.conf:2: trusted-networks: bad network \"10.0.0.0/33\" (use "
	    "10.0.0.0/8, 2001:db8::/32 or an address)",
	    "t.conf:2: trusted-networks: bad network \"::1/129\" (use "
	    "10.0.0.0/8, 2001:db8::/32 or an address)",
	    "t.conf:2: trusted-networks: bad network \"banana\" (use "
	    "10.0.0.0/8, 2001:db8::/32 or an address)",
	    "t.conf:2: trusted-networks: bad network \"1.2.3.4/\" (use "
	    "10.0.0.0/8, 2001:db8::/32 or an address)" } },
	{ LISTEN "route a.test smtp:\nroute b.test smtp:[10.0.0.5\n"
	  "route c.test smtp:h:0\nroute d.test smtp:a:b:c\nroute e.test lmtp:x:\n"
	  "route f.test smtp:[]:25\n",
	  { "t.conf:2: route: bad target \"smtp:\" (expected mx, "
	    "smtp:HOST[:PORT] or smtp:[HOST][:PORT])",
	    "t.conf:3: route: bad target \"smtp:[10.0.0.5\" (expected mx, "
	    "smtp:HOST[:PORT] or smtp:[HOST][:PORT])",
	    "t.conf:4: route: bad target \"smtp:h:0\" (expected mx, "
	    "smtp:HOST[:PORT] or smtp:[HOST][:PORT])",
	    "t.conf:5: route: bad target \"smtp:a:b:c\" (expected mx, "
	    "smtp:HOST[:PORT] or smtp:[HOST][:PORT])",
	    "t.conf:6: route: bad LMTP target \"lmtp:x:\" (expected "
	    "lmtp:[HOST][:PORT], lmtp:HOST[:PORT] or lmtp:unix:/PATH)",
	    "t.conf:7: route: bad target \"smtp:[]:25\" (expected mx, "
	    "smtp:HOST[:PORT] or smtp:[HOST][:PORT])" } },
	{ LISTEN "route a.test smtp:10.0.0.5:25\nroute b.test smtp:[10.0.0.256]\n"
	  "route c.test smtp:[::1x]\nroute d.test smtp:[10.0.0.5]:25\n",
	  { "t.conf:2: route: \"smtp:10.0.0.5:25\": an IP address has no MX "
	    "record; write smtp:[IP] to deliver to it directly",
	    "t.conf:3: route: bad target \"smtp:[10.0.0.256]\" (expected mx, "
	    "smtp:HOST[:PORT] or smtp:[HOST][:PORT])",
	    "t.conf:4: route: bad target \"smtp:[::1x]\" (expected mx, "
	    "smtp:HOST[:PORT] or smtp:[HOST][:PORT])" } },
	{ LISTEN "route x.test mx tls-policy=maybe\nroute y.test mx tls=none\n",
	  { "t.conf:2: route: unknown tls-policy \"maybe\" (expected none, may, "
	    "encrypt, verify or dane)",
	    "t.conf:3: route: unknown option \"tls=none\" (expected "
	    "tls-policy=none|may|encrypt|verify|dane)" } },
	{ LISTEN "route X.test mx\nroute x.TEST smtp:[h]\n",
	  { "t.conf:3: route: x.test already routed at line 2" } },
	{ LISTEN "route x.test\n",
	  { "t.conf:2: route: missing argument (usage: route DOMAIN "
	    "mx|smtp:HOST[:PORT]|smtp:[HOST][:PORT]|lmtp:[HOST][:PORT]|"
	    "lmtp:unix:/PATH [tls-policy=none|may|encrypt|verify|dane])" } },
	{ LISTEN "route a.test lmtp:unix:run/lmtp\nroute b.test lmtp:unix:\n"
	  "route c.test lmtp:unix:/a/../b\nroute d.test lmtp:[10.0.0.256]:24\n"
	  "route e.test lmtp:[::1]:0\nroute f.test lmtp:\n",
	  { "t.conf:2: route: bad LMTP target \"lmtp:unix:run/lmtp\" (expected "
	    "lmtp:[HOST][:PORT], lmtp:HOST[:PORT] or lmtp:unix:/PATH)",
	    "t.conf:3: route: bad LMTP target \"lmtp:unix:\" (expected "
	    "lmtp:[HOST][:PORT], lmtp:HOST[:PORT] or lmtp:unix:/PATH)",
	    "t.conf:4: route: bad LMTP target \"lmtp:unix:/a/../b\" (expected "
	    "lmtp:[HOST][:PORT], lmtp:HOST[:PORT] or lmtp:unix:/PATH)",
	    "t.conf:5: route: bad LMTP target \"lmtp:[10.0.0.256]:24\" "
	    "(expected lmtp:[HOST][:PORT], lmtp:HOST[:PORT] or lmtp:unix:/PATH)",
	    "t.conf:6: route: bad LMTP target \"lmtp:[::1]:0\" (expected "
	    "lmtp:[HOST][:PORT], lmtp:HOST[:PORT] or lmtp:unix:/PATH)",
	    "t.conf:7: route: bad LMTP target \"lmtp:\" (expected "
	    "lmtp:[HOST][:PORT], lmtp:HOST[:PORT] or lmtp:unix:/PATH)" } },
	{ LISTEN "route g.test lmtp:unix:/" LONG_PATH "\n"
	  "route h.test lmtp:unix:/run/lmtp tls-policy=may\n",
	  { "t.conf:2: route: bad LMTP target \"lmtp:unix:/" LONG_PATH "\" "
	    "(expected lmtp:[HOST][:PORT], lmtp:HOST[:PORT] or lmtp:unix:/PATH)",
	    "t.conf:3: route: an LMTP unix socket takes no TLS "
	    "(tls-policy=may)" } },
	{ LISTEN "resolver 1.2.3.4:0 example.com\n",
	  { "t.conf:2: resolver: bad port in \"1.2.3.4:0\"",
	    "t.conf:2: resolver: bad address \"example.com\" (numeric IP, "
	    "optional :port)" } },
	{ LISTEN "tls-policy maybe\n",
	  { "t.conf:2: tls-policy: unknown value \"maybe\" (expected none, may, "
	    "encrypt, verify or dane)" } },
	{ LISTEN "log file\n",
	  { "t.conf:2: log: unknown value \"file\" (expected stderr or "
	    "syslog)" } },
	{ LISTEN "queue var/spool\n",
	  { "t.conf:2: queue: \"var/spool\" is not an absolute path" } },
	{ LISTEN "user -x\ncontrol-group a:b\n",
	  { "t.conf:2: user: bad name \"-x\"",
	    "t.conf:3: control-group: bad name \"a:b\"" } },
	{ LISTEN "metrics-listen 127.0.0.1\nmetrics-listen x:1\n",
	  { "t.conf:2: metrics-listen: bad port in \"127.0.0.1\"",
	    "t.conf:3: metrics-listen: already set at line 2" } },
	{ LISTEN "hostname a\001b\n", { "t.conf:2: invalid character 0x01" } },
	{ LISTEN "queue /" "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
	  { "t.conf:2: queue: /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/"
	    "control.sock is too long for a socket (max 107 bytes): set "
	    "control-socket" } },
	{ LISTEN "dest-limit a.example 0\ndest-limit a.example x\n"
	  "dest-limit -bad- 3\ndest-limit b.example 3\n"
	  "dest-limit B.example 4\n",
	  { "t.conf:2: dest-limit: bad number \"0\" (1 to 10000)",
	    "t.conf:3: dest-limit: bad number \"x\" (1 to 10000)",
	    "t.conf:4: dest-limit: \"-bad-\" is not a domain",
	    "t.conf:6: dest-limit: B.example already limited at line 5" } },
	/* many problems in one file: all reported, in order, with lines */
	{ "hostname ok\n"
	  "max-errors 0\n"
	  "# fine\n"
	  "frobnicate\n"
	  "listen 127.0.0.1:25 relay starttls\n"
	  "hostname again\n",
	  { "t.conf:2: max-errors: 0 is out of range (1..1000)",
	    "t.conf:4: unknown directive \"frobnicate\"",
	    "t.conf:6: hostname: already set at line 1",
	    "t.conf:5: listen 127.0.0.1:25: starttls needs tls-cert and "
	    "tls-key" } },
};

static void
test_bad(void **state)
{
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct conf *c;
		struct errs e = { .n = 0 };
		int want = 0;
		const char *t = bad[i].text;
		size_t len = strlen(t);

		while (want < 6 && bad[i].errs[want] != NULL)
			want++;
		int n = conf_parse(t, len, "t.conf", &c, errs_add, &e);
		for (int j = 0; j < e.n && j < want; j++)
			if (strcmp(e.msg[j], bad[i].errs[j]) != 0)
				fail_msg("case %zu error %d:\n got  %s\n want %s",
				    i, j, e.msg[j], bad[i].errs[j]);
		if (n != want || e.n != want)
			fail_msg("case %zu: %d errors, want %d (first: %s)", i,
			    n, want, e.n ? e.msg[0] : "-");
		errs_clear(&e);
	}
}

static void
test_bad_nul(void **state)
{
	static const char text[] = LISTEN "hostname a\0b\n# \0 in a comment\n";
	struct conf *c;
	struct errs e = { .n = 0 };

	assert_int_equal(conf_parse(text, sizeof(text) - 1, "t.conf", &c,
	    errs_add, &e), 1);
	assert_string_equal(e.msg[0], "t.conf:2: invalid character 0x00");
	errs_clear(&e);
}

static void
test_err_null(void **state)
{
	struct conf *c = NULL;

	/* no error sink: still counted, nothing returned */
	assert_int_equal(conf_parse("bogus\n", 6, "t.conf", &c, NULL, NULL), 2);
	assert_null(c);
}

/* ------------------------------------------------------------------ */
/* the documented sample */

static char *
read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "r");
	char *buf;

	if (f == NULL)
		fail_msg("cannot open %s", path);
	buf = malloc(1 << 20);
	assert_non_null(buf);
	*len = fread(buf, 1, (1 << 20) - 1, f);
	buf[*len] = '\0';
	fclose(f);
	return buf;
}

static char *
source_path(const char *rel)
{
	const char *root = getenv("TERN_SOURCE_ROOT");
	char *p;

	if (root == NULL)
		fail_msg("TERN_SOURCE_ROOT is not set (run through meson test)");
	if (asprintf(&p, "%s/%s", root, rel) == -1)
		fail_msg("asprintf");
	return p;
}

/* "#name a  b" / "name a b" -> "a b" if the line sets name, else NULL */
static int
line_sets(const char *line, const char *name, char *rest, size_t restlen)
{
	size_t n = strlen(name), o = 0;
	int blank = 0;

	if (line[0] == '#')
		line++;
	if (strncmp(line, name, n) != 0 ||
	    (line[n] != ' ' && line[n] != '\t' && line[n] != '\0'))
		return 0;
	for (const char *s = line + n; *s != '\0' && *s != '#'; s++) {
		if (*s == ' ' || *s == '\t') {
			blank = 1;
			continue;
		}
		if (blank && o > 0 && o + 1 < restlen)
			rest[o++] = ' ';
		blank = 0;
		if (o + 1 < restlen)
			rest[o++] = *s;
	}
	rest[o] = '\0';
	return 1;
}

static void
test_sample_documents_table(void **state)
{
	const struct conf_directive *t;
	size_t n = conf_directives(&t), len;
	char *path = source_path("etc/tern.conf");
	char *text = read_file(path, &len), *lines[1024], rest[256];
	size_t nlines = 0;

	for (char *s = strtok(text, "\n"); s != NULL && nlines < 1024;
	    s = strtok(NULL, "\n"))
		lines[nlines++] = s;
	for (size_t i = 0; i < n; i++) {
		int found = 0;
		for (size_t l = 0; l < nlines && !found; l++) {
			if (!line_sets(lines[l], t[i].name, rest, sizeof(rest)))
				continue;
			if (t[i].def != NULL && strcmp(rest, t[i].def) != 0)
				continue;
			found = 1;
			/* documented: a prose comment right above */
			if (l == 0 || strncmp(lines[l - 1], "# ", 2) != 0)
				fail_msg("etc/tern.conf: \"%s\" has no comment "
				    "line above it", lines[l]);
		}
		if (!found)
			fail_msg("etc/tern.conf does not show \"%s%s%s\"",
			    t[i].name, t[i].def ? " " : "",
			    t[i].def ? t[i].def : "");
	}
	free(text);
	free(path);
}

static void
test_sample_parses(void **state)
{
	const struct conf_directive *t;
	size_t n = conf_directives(&t), len;
	char *path = source_path("etc/tern.conf");
	char *text = read_file(path, &len), *text2, rest[256];
	struct conf *c, *c2;
	struct errs e = { .n = 0 };

	/* as shipped: conf_parse does not open the tls-cert files */
	if (conf_parse(text, len, path, &c, errs_add, &e) != 0)
		fail_msg("etc/tern.conf: %s", e.msg[0]);
	assert_string_equal(c->hostname, "mail.example.com");
	assert_int_equal(c->nlisten, 3);
	assert_int_equal(c->listen[0].tls, CONF_TLS_STARTTLS);
	assert_int_equal(c->listen[1].mode, CONF_LISTEN_SUBMISSION);
	assert_int_equal(c->listen[2].tls, CONF_TLS_IMPLICIT);
	assert_int_equal(c->ntls, 1);
	assert_int_equal(c->nrelay_domains, 1);
	assert_int_equal(c->ntrusted, 2);
	assert_int_equal(c->nroutes, 0);

	/*
	 * Uncomment every "#name default" line: the documented defaults must
	 * be the real ones, so every scalar comes out the same.
	 */
	text2 = malloc(len + 1);
	assert_non_null(text2);
	size_t o = 0;
	for (char *s = text; s < text + len;) {
		char *nl = strchr(s, '\n');
		size_t ll = nl ? (size_t)(nl - s) + 1 : strlen(s);
		char line[512];
		int uncomment = 0;
		snprintf(line, sizeof(line), "%.*s", (int)(nl ? ll - 1 : ll), s);
		for (size_t i = 0; i < n && s[0] == '#'; i++)
			if (t[i].def != NULL &&
			    line_sets(line, t[i].name, rest, sizeof(rest)) &&
			    strcmp(rest, t[i].def) == 0)
				uncomment = 1;
		memcpy(text2 + o, s + uncomment, ll - uncomment);
		o += ll - uncomment;
		s += ll;
	}
	assert_true(o < len);                   /* something was uncommented */
	if (conf_parse(text2, o, "uncommented", &c2, errs_add, &e) != 0)
		fail_msg("uncommented defaults: %s", e.msg[0]);
	for (size_t i = 0; i < n; i++) {
		if (t[i].type == CONF_T_OTHER || t[i].type == CONF_T_STRING)
			continue;
		if (field_get(c, &t[i]) != field_get(c2, &t[i]))
			fail_msg("%s: documented default differs", t[i].name);
	}
	assert_int_equal(c2->nretry, c->nretry);
	assert_memory_equal(c2->retry, c->retry, c->nretry * sizeof(*c->retry));
	assert_string_equal(c2->queue_dir, c->queue_dir);
	assert_string_equal(c2->control_socket, c->control_socket);
	conf_unref(c);
	conf_unref(c2);
	free(text2);
	free(text);
	free(path);
}

static void
test_demo_template(void **state)
{
	size_t len;
	char *path = source_path("etc/demo.conf.in");
	char *text = read_file(path, &len), *out, *s, *d;
	struct conf *c;
	struct errs e = { .n = 0 };

	out = malloc(len * 8 + 1);
	assert_non_null(out);
	for (s = text, d = out; *s != '\0';) {
		if (strncmp(s, "@DIR@", 5) == 0) {
			d += sprintf(d, "/tmp/tern-demo");
			s += 5;
		} else
			*d++ = *s++;
	}
	*d = '\0';
	assert_null(strstr(out, "@DIR@"));
	if (conf_parse(out, strlen(out), path, &c, errs_add, &e) != 0)
		fail_msg("demo.conf.in: %s", e.msg[0]);
	assert_string_equal(c->queue_dir, "/tmp/tern-demo/queue");
	assert_int_equal(c->nlisten, 3);
	assert_int_equal(c->listen[0].mode, CONF_LISTEN_RELAY);
	assert_int_equal(c->listen[0].tls, CONF_TLS_STARTTLS);  /* a cert is set */
	assert_int_equal(c->listen[1].mode, CONF_LISTEN_SUBMISSION);
	assert_int_equal(c->listen[1].tls, CONF_TLS_STARTTLS);
	assert_int_equal(c->listen[2].tls, CONF_TLS_IMPLICIT);
	assert_string_equal(c->tls[0].cert, "/tmp/tern-demo/cert.pem");
	assert_true(conf_sender_allowed(c, "demo@localhost", "demo@localhost"));
	assert_false(conf_sender_allowed(c, "demo@localhost", "demo@example.com"));
	/* the null sender claims no address: any authenticated user */
	assert_true(conf_sender_allowed(c, "demo@localhost", ""));
	assert_true(conf_sender_allowed(c, "someone", ""));
	conf_unref(c);
	free(out);
	free(text);
	free(path);
}

/* ------------------------------------------------------------------ */
/* conf_load */

static char *
tmp_write(const char *name, const char *text)
{
	const char *dir = getenv("TERN_TEST_TMPDIR");
	char *p;
	FILE *f;

	if (asprintf(&p, "%s/test_conf.%ld.%s", dir ? dir : "/tmp",
	    (long)getpid(), name) == -1)
		fail_msg("asprintf");
	f = fopen(p, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
	return p;
}

static void
test_load(void **state)
{
	char *cert = tmp_write("cert.pem", "x\n");
	char *key = tmp_write("key.pem", "x\n");
	char *text, *path, want[1024];
	struct conf *c = NULL;
	struct errs e = { .n = 0 };

	/* missing file */
	assert_int_equal(conf_load("/nonexistent/tern.conf", &c, errs_add, &e),
	    1);
	assert_null(c);
	assert_string_equal(e.msg[0], "/nonexistent/tern.conf: cannot open: "
	    "No such file or directory");
	errs_clear(&e);

	/* a directory: opens, but cannot be read */
	assert_int_equal(conf_load("/", &c, errs_add, &e), 1);
	assert_string_equal(e.msg[0], "/: cannot read: Is a directory");
	errs_clear(&e);

	/* good: certificates readable, user root exists, hostname filled */
	if (asprintf(&text, LISTEN "tls-cert %s\ntls-key %s\nuser root\n"
	    "control-group root\n", cert, key) == -1)
		fail_msg("asprintf");
	path = tmp_write("good.conf", text);
	if (conf_load(path, &c, errs_add, &e) != 0)
		fail_msg("load: %s", e.msg[0]);
	assert_non_null(c->hostname);
	char host[256];
	gethostname(host, sizeof(host));
	host[255] = '\0';
	assert_string_equal(c->hostname, host);
	/* postmaster defaults to postmaster@<hostname> */
	assert_non_null(c->postmaster);
	assert_true(strncmp(c->postmaster, "postmaster@", 11) == 0);
	assert_string_equal(c->postmaster + 11, host);
	assert_string_equal(c->path, path);
	assert_string_equal(c->user, "root");
	conf_unref(c);
	c = NULL;
	free(text);
	free(path);

	/* system errors are collected with parse errors, each with its line */
	if (asprintf(&text, LISTEN "tls-cert /nonexistent/c.pem\n"
	    "tls-key %s\nuser no-such-user-tern\ncontrol-group "
	    "no-such-group-tern\nmax-errors 0\nhostname h\n", key) == -1)
		fail_msg("asprintf");
	path = tmp_write("bad.conf", text);
	assert_int_equal(conf_load(path, &c, errs_add, &e), 4);
	assert_null(c);
	snprintf(want, sizeof(want), "%s:6: max-errors: 0 is out of range "
	    "(1..1000)", path);
	assert_string_equal(e.msg[0], want);
	snprintf(want, sizeof(want), "%s:2: tls-cert /nonexistent/c.pem: No "
	    "such file or directory", path);
	assert_string_equal(e.msg[1], want);
	snprintf(want, sizeof(want), "%s:4: user no-such-user-tern: no such "
	    "user", path);
	assert_string_equal(e.msg[2], want);
	snprintf(want, sizeof(want), "%s:5: control-group no-such-group-tern: "
	    "no such group", path);
	assert_string_equal(e.msg[3], want);
	errs_clear(&e);
	unlink(path);
	free(text);
	free(path);

	/* CONF_LOAD_NO_TLS_FILES: the files are someone else's to open */
	path = tmp_write("notls.conf", LISTEN "tls-cert /nonexistent/c.pem\n"
	    "tls-key /nonexistent/k.pem\nhostname h\n");
	assert_int_equal(conf_load_flags(path, CONF_LOAD_NO_TLS_FILES, &c,
	    errs_add, &e), 0);
	assert_int_equal(c->ntls, 1);
	assert_string_equal(c->tls[0].key, "/nonexistent/k.pem");
	conf_unref(c);
	c = NULL;
	assert_int_equal(conf_load_flags(path, 0, &c, errs_add, &e), 2);
	assert_null(c);
	errs_clear(&e);
	unlink(path);
	free(path);

	/* hostname from the file wins */
	path = tmp_write("host.conf", LISTEN "hostname mx.example.test\n");
	assert_int_equal(conf_load(path, &c, errs_add, &e), 0);
	assert_string_equal(c->hostname, "mx.example.test");
	conf_unref(c);
	unlink(path);
	free(path);

	unlink(cert);
	unlink(key);
	free(cert);
	free(key);
}

/* ------------------------------------------------------------------ */
/* lookups */

static struct sockaddr_storage
sa(const char *ip)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
	}
	return ss;
}

/* proxy listeners and proxy-networks: set apart from trusted-networks */
static void
test_proxy(void **state)
{
	struct conf *c = parse_ok("listen 127.0.0.1:2525 relay plain proxy\n"
	    "listen 127.0.0.1:2526 relay\n"
	    "listen 127.0.0.1:2527 submission proxy\n"
	    "proxy-networks 10.1.0.0/16 ::1\ntrusted-networks 127.0.0.1\n");
	struct sockaddr_storage in = sa("10.1.2.3"), out = sa("10.2.0.1"),
	    six = sa("::1"), lo = sa("127.0.0.1");

	assert_int_equal(c->listen[0].proxy, 1);
	assert_int_equal(c->listen[0].tls, CONF_TLS_NONE);
	assert_int_equal(c->listen[1].proxy, 0);
	assert_int_equal(c->listen[2].proxy, 1);
	assert_int_equal(c->nproxy_nets, 2);
	assert_int_equal(c->proxy_timeout, 10);
	assert_int_equal(conf_is_proxy_peer(c, (struct sockaddr *)&in), 1);
	assert_int_equal(conf_is_proxy_peer(c, (struct sockaddr *)&out), 0);
	assert_int_equal(conf_is_proxy_peer(c, (struct sockaddr *)&six), 1);
	assert_int_equal(conf_is_proxy_peer(c, (struct sockaddr *)&lo), 0);
	assert_int_equal(conf_is_trusted(c, (struct sockaddr *)&in), 0);
	conf_unref(c);
}

static void
test_trusted(void **state)
{
	static const struct { const char *ip; int want; } t[] = {
		{ "127.0.0.1", 1 }, { "127.255.255.255", 1 }, { "128.0.0.1", 0 },
		{ "126.255.255.255", 0 },
		{ "10.20.0.0", 1 }, { "10.20.255.255", 1 }, { "10.21.0.0", 0 },
		{ "10.19.255.255", 0 },
		{ "192.168.1.7", 1 }, { "192.168.1.8", 0 }, { "192.168.1.6", 0 },
		{ "::1", 1 }, { "::2", 0 }, { "::", 0 },
		{ "2001:db8:ab00::1", 1 }, { "2001:db8:abff:ffff::", 1 },
		{ "2001:db8:ac00::", 0 }, { "2001:db8:aa00::", 0 },
		{ "::ffff:127.0.0.1", 1 },         /* mapped matches IPv4 */
		{ "::ffff:10.20.3.4", 1 }, { "::ffff:10.21.3.4", 0 },
		{ "::127.0.0.1", 0 },              /* compatible is not mapped */
		{ "0.0.0.1", 0 },
	};
	struct conf *c = parse_ok(LISTEN "trusted-networks 127.0.0.0/8 ::1\n"
	    "trusted-networks 10.20.99.99/16 192.168.1.7 2001:db8:ab00::/40\n");
	struct conf *none = parse_ok(LISTEN);
	struct conf *all = parse_ok(LISTEN "trusted-networks 0.0.0.0/0\n");

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct sockaddr_storage ss = sa(t[i].ip);
		if (conf_is_trusted(c, (struct sockaddr *)&ss) != t[i].want)
			fail_msg("trusted %s: want %d", t[i].ip, t[i].want);
		assert_int_equal(conf_is_trusted(none, (struct sockaddr *)&ss),
		    0);
		assert_int_equal(conf_is_trusted(all, (struct sockaddr *)&ss),
		    ss.ss_family == AF_INET ||
		    strncmp(t[i].ip, "::ffff:", 7) == 0);
	}
	struct sockaddr_storage un = { .ss_family = AF_UNIX };
	assert_int_equal(conf_is_trusted(all, (struct sockaddr *)&un), 0);
	conf_unref(c);
	conf_unref(none);
	conf_unref(all);
}

static void
test_relay_domain(void **state)
{
	static const struct { const char *d; int want; } t[] = {
		{ "example.com", 1 }, { "EXAMPLE.com", 1 }, { "Example.Com", 1 },
		{ "a.example.com", 0 },              /* exact entry only */
		{ "example.com.", 0 },               /* trailing dot never */
		{ "xexample.com", 0 }, { "example.co", 0 }, { "", 0 },
		{ "sub.example.org", 0 },            /* subdomains only */
		{ "a.sub.example.org", 1 }, { "a.b.SUB.example.ORG", 1 },
		{ "asub.example.org", 0 }, { ".sub.example.org", 0 },
		{ "a..sub.example.org", 0 }, { "a.sub.example.org.", 0 },
		{ "example.net", 1 }, { "www.example.net", 1 },
		{ "example.org", 0 },
	};
	struct conf *c = parse_ok(LISTEN "relay-domains EXAMPLE.com "
	    ".Sub.Example.Org\nrelay-domains example.net .example.net\n");

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (conf_is_relay_domain(c, t[i].d, strlen(t[i].d)) != t[i].want)
			fail_msg("relay %s: want %d", t[i].d, t[i].want);
	/* the length bounds the query */
	assert_int_equal(conf_is_relay_domain(c, "example.comX", 11), 1);
	assert_int_equal(conf_is_relay_domain(c, "example.com", 10), 0);
	conf_unref(c);
}

static void
test_route_for(void **state)
{
	static const struct { const char *d; int line; } t[] = {
		{ "example.org", 2 }, { "EXAMPLE.ORG", 2 },
		{ "a.example.org", 3 }, { "x.y.example.org", 3 },
		{ "deep.sub.example.org", 4 },      /* longest suffix */
		{ "a.b.deep.sub.example.org", 4 },
		{ "sub.example.org", 3 },           /* .sub... is subdomains only */
		{ "example.net", 5 }, { "other.test", 5 }, { "", 5 },
		{ "example.org.", 5 },
	};
	struct conf *c = parse_ok(LISTEN
	    "route example.org smtp:[10.0.0.1]\n"
	    "route .example.org smtp:[10.0.0.2]\n"
	    "route .sub.example.org smtp:[10.0.0.3] tls-policy=verify\n"
	    "route * smtp:relay.test:2525\n");
	const struct conf_route *r;

	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		r = conf_route_for(c, t[i].d, strlen(t[i].d));
		assert_non_null(r);
		if (r->line != t[i].line)
			fail_msg("route %s: line %d, want %d", t[i].d, r->line,
			    t[i].line);
	}
	r = conf_route_for(c, "a.deep.sub.example.org", 22);
	assert_string_equal(r->host, "10.0.0.3");
	assert_int_equal(r->tls, CONF_TLSP_VERIFY);
	conf_unref(c);

	/* no "*" route: the built-in "* mx" with the global tls-policy */
	c = parse_ok(LISTEN "route example.org smtp:[h]\ntls-policy verify\n");
	r = conf_route_for(c, "example.net", 11);
	assert_string_equal(r->domain, "*");
	assert_int_equal(r->kind, CONF_ROUTE_MX);
	assert_null(r->host);
	assert_int_equal(r->line, 0);
	assert_int_equal(r->tls, CONF_TLSP_VERIFY);
	assert_int_equal(conf_route_for(c, "example.org", 11)->line, 2);
	conf_unref(c);
	c = parse_ok(LISTEN);
	r = conf_route_for(c, "example.net", 11);
	assert_int_equal(r->kind, CONF_ROUTE_MX);
	assert_int_equal(r->tls, CONF_TLSP_MAY);
	conf_unref(c);
}

/* LMTP routes: TCP (no MX, port 24 by default) and unix sockets. */
static void
test_route_lmtp(void **state)
{
	struct conf *c = parse_ok(LISTEN "tls-policy encrypt\n"
	    "route a.test lmtp:[127.0.0.1]:2424\n"
	    "route b.test lmtp:mailstore.example\n"
	    "route c.test lmtp:[::1]\n"
	    "route d.test lmtp:unix:/run/Dovecot/lmtp\n"
	    "route e.test lmtp:[10.0.0.7]:24 tls-policy=verify\n"
	    "route f.test lmtp:unix:/run/lmtp tls-policy=none\n"
	    "route g.test smtp:[127.0.0.1]:2424\n");
	const struct conf_route *r = c->routes;

	assert_int_equal(c->nroutes, 7);
	assert_int_equal(r[0].transport, CONF_XPORT_LMTP);
	assert_int_equal(r[0].kind, CONF_ROUTE_HOST);
	assert_string_equal(r[0].host, "127.0.0.1");
	assert_int_equal(r[0].port, 2424);
	/* LMTP is plaintext unless the route says otherwise (not global) */
	assert_int_equal(r[0].tls, CONF_TLSP_NONE);
	assert_int_equal(r[1].kind, CONF_ROUTE_HOST);     /* never an MX */
	assert_string_equal(r[1].host, "mailstore.example");
	assert_int_equal(r[1].port, LMTP_DEFAULT_PORT);
	assert_string_equal(r[2].host, "::1");
	assert_int_equal(r[2].port, 24);
	assert_int_equal(r[3].transport, CONF_XPORT_LMTP_UNIX);
	assert_string_equal(r[3].host, "/run/Dovecot/lmtp");   /* case kept */
	assert_int_equal(r[3].port, 0);
	assert_int_equal(r[3].tls, CONF_TLSP_NONE);
	assert_int_equal(r[4].tls, CONF_TLSP_VERIFY);
	assert_int_equal(r[5].transport, CONF_XPORT_LMTP_UNIX);
	assert_int_equal(r[6].transport, CONF_XPORT_SMTP);
	assert_int_equal(r[6].tls, CONF_TLSP_ENCRYPT);
	assert_int_equal(conf_route_for(c, "d.test", 6)->transport,
	    CONF_XPORT_LMTP_UNIX);
	assert_int_equal(conf_route_for(c, "other.test", 10)->transport,
	    CONF_XPORT_SMTP);
	conf_unref(c);
}

static void
test_names(void **state)
{
	assert_string_equal(conf_listen_mode_name(CONF_LISTEN_RELAY), "relay");
	assert_string_equal(conf_listen_mode_name(CONF_LISTEN_SUBMISSION),
	    "submission");
	assert_string_equal(conf_tls_policy_name(CONF_TLSP_NONE), "none");
	assert_string_equal(conf_tls_policy_name(CONF_TLSP_VERIFY), "verify");
	assert_string_equal(conf_listen_tls_name(CONF_TLS_NONE), "plain");
	assert_string_equal(conf_listen_tls_name(CONF_TLS_IMPLICIT), "tls");
	assert_string_equal(conf_tls_policy_name((enum conf_tls_policy)9), "?");
}

/* ------------------------------------------------------------------ */
/* refcount */

static void *
refcount_thread(void *arg)
{
	struct conf *c = arg;

	for (int i = 0; i < 100000; i++)
		conf_unref(conf_ref(c));
	conf_unref(c);                  /* the reference given to the thread */
	return NULL;
}

static void
test_command_deadline(void **state)
{
	struct conf *c = parse_ok(LISTEN "idle-timeout 7s\n");
	assert_int_equal(conf_command_deadline(c), 14);
	conf_unref(c);
	c = parse_ok(LISTEN "idle-timeout 7s\ncommand-deadline 3s\n"
	    "data-min-rate 2K\ngreet-delay 1m\n"
	    "max-connections-per-ip-trusted 50\n");
	assert_int_equal(conf_command_deadline(c), 3);
	assert_true(c->data_min_rate == 2048);
	assert_int_equal(c->greet_delay, 60);
	assert_int_equal(c->max_connections_per_ip_trusted, 50);
	conf_unref(c);
	c = parse_ok(LISTEN "idle-timeout 1d\n");
	assert_int_equal(conf_command_deadline(c), 2 * 86400);
	conf_unref(c);
}

static void
test_refcount(void **state)
{
	struct conf *c = parse_ok(full_conf);
	pthread_t th[4];

	assert_int_equal(c->refcnt, 1);
	assert_ptr_equal(conf_ref(c), c);
	assert_int_equal(c->refcnt, 2);
	conf_unref(c);
	assert_int_equal(c->refcnt, 1);
	for (int i = 0; i < 4; i++) {
		conf_ref(c);
		assert_int_equal(pthread_create(&th[i], NULL, refcount_thread, c),
		    0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(c->refcnt, 1);
	conf_unref(c);                  /* frees: ASan/valgrind see no leak */
	conf_unref(NULL);
}

/* conf_listener_for: would a delivery to this address reach us? */
static struct sockaddr_storage
sa_of(const char *ip, unsigned port)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (strchr(ip, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
	}
	return ss;
}

static void
test_listener_for(void **state)
{
	struct conf *c = parse_ok(
	    "listen 127.0.0.1:2525 relay\n"
	    "listen 0.0.0.0:2526 relay\n"
	    "listen [::]:2527 relay\n"
	    "listen [::1]:2528 submission\n");
	static const struct {
		const char *ip;
		unsigned port;
		int local;
		int want;              /* index of the listener, -1: none */
	} cases[] = {
		{ "127.0.0.1", 2525, 0, 0 },
		{ "127.0.0.1", 2525, 1, 0 },
		{ "127.0.0.2", 2525, 1, -1 },      /* not a wildcard listener */
		{ "127.0.0.1", 25, 1, -1 },        /* another port */
		{ "::ffff:127.0.0.1", 2525, 0, 0 },/* IPv4-mapped */
		{ "127.0.0.1", 2526, 1, 1 },       /* 0.0.0.0 takes local ones */
		{ "127.0.0.1", 2526, 0, -1 },      /* ... not remote ones */
		{ "192.0.2.7", 2526, 1, 1 },
		{ "192.0.2.7", 2526, 0, -1 },
		{ "::1", 2527, 1, 2 },             /* :: takes local IPv6 */
		{ "127.0.0.1", 2527, 1, -1 },      /* ... not IPv4 (V6ONLY) */
		{ "::1", 2528, 0, 3 },
		{ "::2", 2528, 1, -1 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct sockaddr_storage ss = sa_of(cases[i].ip, cases[i].port);
		const struct conf_listen *l = conf_listener_for(c,
		    (struct sockaddr *)&ss, cases[i].local);
		int got = l == NULL ? -1 : (int)(l - c->listen);
		if (got != cases[i].want)
			fail_msg("case %zu (%s port %u local %d): listener %d, "
			    "want %d", i, cases[i].ip, cases[i].port,
			    cases[i].local, got, cases[i].want);
	}
	conf_unref(c);
}

/* U-label domains in relay-domains and routes are kept as A-labels */
static void
test_idn_domains(void **state)
{
	struct conf *c;
	struct errs e = { .n = 0 };
	(void)state;

	c = parse_ok(LISTEN "relay-domains ex\xc3\xa4" "mple.de .B\xc3\xbc" "cher.example\n"
	    "route ex\xc3\xa4" "mple.de smtp:[127.0.0.1]:2526\n");
	assert_int_equal(c->nrelay_domains, 2);
	assert_string_equal(c->relay_domains[0], "xn--exmple-cua.de");
	assert_string_equal(c->relay_domains[1], ".xn--bcher-kva.example");
	assert_string_equal(c->routes[0].domain, "xn--exmple-cua.de");
	conf_unref(c);
	assert_int_equal(parse(LISTEN "relay-domains a\xe2\x81\x84" "b.example\n",
	    &c, &e), 1);
	assert_non_null(strstr(e.msg[0], "not a valid internationalized"));
	errs_clear(&e);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_listener_for),
		cmocka_unit_test(test_parse_size),
		cmocka_unit_test(test_parse_duration),
		cmocka_unit_test(test_parse_hostport),
		cmocka_unit_test(test_parse_cidr),
		cmocka_unit_test(test_table_bounds),
		cmocka_unit_test(test_idn_domains),
		cmocka_unit_test(test_table_keywords),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_full),
		cmocka_unit_test(test_tls_default_order),
		cmocka_unit_test(test_bad),
		cmocka_unit_test(test_bad_nul),
		cmocka_unit_test(test_err_null),
		cmocka_unit_test(test_sample_documents_table),
		cmocka_unit_test(test_sample_parses),
		cmocka_unit_test(test_demo_template),
		cmocka_unit_test(test_load),
		cmocka_unit_test(test_trusted),
		cmocka_unit_test(test_proxy),
		cmocka_unit_test(test_relay_domain),
		cmocka_unit_test(test_route_for),
		cmocka_unit_test(test_route_lmtp),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_command_deadline),
		cmocka_unit_test(test_refcount),
		cmocka_unit_test(test_local_socket_and_senders),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
