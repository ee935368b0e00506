/* test_envelope.c - envelope life cycle and the versioned record codec. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tern/envelope.h"

/* fixed-width prefix: version..next_attempt */
#define HDR_LEN 65

static struct envelope *
sample(void)
{
	struct envelope *e = envelope_new();
	e->id = 0x0102030405060708ULL;
	e->flags = 0x11;
	e->sender = strdup("alice@example.org");
	e->arrival = 1700000000;
	e->client_addr = strdup("203.0.113.5");
	e->client_helo = strdup("mx.example.org");
	e->auth_user = NULL;
	e->listener = strdup("0.0.0.0:587 submission");
	e->envid = strdup("ENV1");
	e->size = 12345;
	e->seg = 7;
	e->off = 1u << 20;
	e->rec_len = 4000;
	e->body_off = 300;
	e->crc = 0xdeadbeef;
	e->attempts = 3;
	e->next_attempt = -5;   /* signed fields survive */
	e->last_error = strdup("421 try later");
	envelope_add_rcpt(e, "bob@example.com", "rfc822;bob@example.com", 3);
	envelope_add_rcpt(e, "carol@example.net", NULL, 0);
	e->rcpts[1].state = RCPT_SENT;
	e->rcpts[1].status = strdup("2.0.0");
	e->rcpts[1].relay = strdup("mx[192.0.2.1]:25");
	e->rcpts[1].updated = 1700000100;
	envelope_add_attempt(e, 1700000050, 1, ENV_RES_DEFERRED, "mx[192.0.2.1]:25",
	    "4.2.0", "451 4.2.0 greylisted", NULL);
	envelope_add_attempt(e, 1700000100, 1, ENV_RES_SENT, "mx[192.0.2.1]:25",
	    "2.0.0", "250 ok", "TLSv1.3 TLS_AES_256_GCM_SHA384");
	envelope_add_attempt(e, 1700000100, 0, ENV_RES_DEFERRED, NULL, "4.4.3",
	    "", NULL);
	e->hist_dropped = 7;
	return e;
}

static void
assert_same(const struct envelope *a, const struct envelope *b)
{
	assert_true(a->id == b->id);
	assert_int_equal(a->flags, b->flags);
	assert_string_equal(a->sender, b->sender);
	assert_true(a->arrival == b->arrival);
	assert_true(a->size == b->size);
	assert_int_equal(a->seg, b->seg);
	assert_true(a->off == b->off);
	assert_int_equal(a->rec_len, b->rec_len);
	assert_int_equal(a->body_off, b->body_off);
	assert_int_equal(a->crc, b->crc);
	assert_int_equal(a->attempts, b->attempts);
	assert_true(a->next_attempt == b->next_attempt);
#define OPTSTR(x, y) do { if ((x) == NULL) assert_null(y); \
	else { assert_non_null(y); assert_string_equal(x, y); } } while (0)
	OPTSTR(a->client_addr, b->client_addr);
	OPTSTR(a->client_helo, b->client_helo);
	OPTSTR(a->auth_user, b->auth_user);
	OPTSTR(a->listener, b->listener);
	OPTSTR(a->envid, b->envid);
	OPTSTR(a->last_error, b->last_error);
	assert_int_equal(a->nrcpt, b->nrcpt);
	for (size_t i = 0; i < a->nrcpt; i++) {
		assert_string_equal(a->rcpts[i].addr, b->rcpts[i].addr);
		OPTSTR(a->rcpts[i].orcpt, b->rcpts[i].orcpt);
		OPTSTR(a->rcpts[i].status, b->rcpts[i].status);
		OPTSTR(a->rcpts[i].last_error, b->rcpts[i].last_error);
		OPTSTR(a->rcpts[i].relay, b->rcpts[i].relay);
		assert_int_equal(a->rcpts[i].state, b->rcpts[i].state);
		assert_int_equal(a->rcpts[i].notify, b->rcpts[i].notify);
		assert_true(a->rcpts[i].updated == b->rcpts[i].updated);
	}
	assert_int_equal(a->nhist, b->nhist);
	assert_int_equal(a->hist_dropped, b->hist_dropped);
	for (size_t i = 0; i < a->nhist; i++) {
		assert_true(a->hist[i].when == b->hist[i].when);
		assert_int_equal(a->hist[i].rcpt, b->hist[i].rcpt);
		assert_int_equal(a->hist[i].result, b->hist[i].result);
		OPTSTR(a->hist[i].relay, b->hist[i].relay);
		OPTSTR(a->hist[i].status, b->hist[i].status);
		OPTSTR(a->hist[i].reply, b->hist[i].reply);
		OPTSTR(a->hist[i].tls, b->hist[i].tls);
	}
}

static void
test_roundtrip(void **state)
{
	struct envelope *e = sample(), *d = NULL, *c;
	uint8_t *buf, *buf2;
	size_t len, len2;

	assert_int_equal(envelope_encode(e, &buf, &len), 0);
	assert_int_equal(buf[0], ENVELOPE_VERSION);
	assert_int_equal(envelope_decode(buf, len, &d), ENV_DECODE_OK);
	assert_same(e, d);
	/* canonical: re-encoding gives the same bytes */
	assert_int_equal(envelope_encode(d, &buf2, &len2), 0);
	assert_int_equal(len, len2);
	assert_memory_equal(buf, buf2, len);
	/* an empty reply is stored as absent */
	assert_int_equal(d->nhist, 3);
	assert_null(d->hist[2].reply);
	assert_string_equal(d->hist[1].tls, "TLSv1.3 TLS_AES_256_GCM_SHA384");
	/* dup is deep, history included, and can grow */
	c = envelope_dup(e);
	assert_ptr_not_equal(c->sender, e->sender);
	assert_ptr_not_equal(c->rcpts, e->rcpts);
	assert_ptr_not_equal(c->hist, e->hist);
	assert_ptr_not_equal(c->hist[0].reply, e->hist[0].reply);
	assert_same(e, c);
	for (int i = 0; i < ENV_HISTORY_MAX; i++)
		envelope_add_attempt(c, 1, 0, ENV_RES_SENT, "r", "2.0.0", "ok", NULL);
	assert_int_equal(c->nhist, ENV_HISTORY_MAX);
	envelope_free(c);
	envelope_free(d);
	free(buf);
	free(buf2);

	/* the empty envelope round-trips too (null sender, no rcpts) */
	envelope_free(e);
	e = envelope_new();
	assert_int_equal(envelope_encode(e, &buf, &len), 0);
	assert_int_equal(envelope_decode(buf, len, &d), ENV_DECODE_OK);
	assert_string_equal(d->sender, "");
	assert_int_equal(d->nrcpt, 0);
	envelope_free(d);
	envelope_free(e);
	free(buf);
	envelope_free(NULL);
}

static void
test_helpers(void **state)
{
	struct envelope *e = sample();
	assert_int_equal(envelope_pending(e), 1);
	e->rcpts[0].state = RCPT_BOUNCED;
	assert_int_equal(envelope_pending(e), 0);
	assert_string_equal(rcpt_state_name(RCPT_PENDING), "pending");
	assert_string_equal(rcpt_state_name(RCPT_SENT), "sent");
	assert_string_equal(rcpt_state_name(RCPT_BOUNCED), "bounced");
	assert_string_equal(rcpt_state_name(RCPT_EXPIRED), "expired");
	assert_string_equal(rcpt_state_name(RCPT_DELETED), "deleted");
	assert_string_equal(rcpt_state_name((enum rcpt_state)42), "unknown");
	assert_string_equal(env_result_name(ENV_RES_SENT), "sent");
	assert_string_equal(env_result_name(ENV_RES_DEFERRED), "deferred");
	assert_string_equal(env_result_name(ENV_RES_BOUNCED), "bounced");
	assert_string_equal(env_result_name(ENV_RES_EXPIRED), "expired");
	assert_string_equal(env_result_name((enum env_result)9), "unknown");
	envelope_free(e);
}

/* The history keeps the newest ENV_HISTORY_MAX entries and cuts long texts. */
static void
test_history(void **state)
{
	struct envelope *e = envelope_new(), *d = NULL;
	char reply[1000], num[16];
	uint8_t *buf;
	size_t len;

	e->sender = strdup("");
	envelope_add_rcpt(e, "a@example.com", NULL, 0);
	envelope_add_rcpt(e, "b@example.com", NULL, 0);
	for (int i = 0; i < ENV_HISTORY_MAX + 5; i++) {
		snprintf(num, sizeof(num), "%d", i);
		envelope_add_attempt(e, 1000 + i, (size_t)(i % 2),
		    i % 3 ? ENV_RES_DEFERRED : ENV_RES_BOUNCED, num, "4.0.0",
		    num, NULL);
	}
	assert_int_equal(e->nhist, ENV_HISTORY_MAX);
	assert_int_equal(e->hist_dropped, 5);
	assert_true(e->hist[0].when == 1005);
	assert_string_equal(e->hist[0].relay, "5");
	assert_true(e->hist[ENV_HISTORY_MAX - 1].when == 1000 + ENV_HISTORY_MAX + 4);
	assert_int_equal(e->hist[0].rcpt, 1);

	/* a reply over the limit is cut, never inside a UTF-8 sequence */
	memset(reply, 'x', sizeof(reply) - 1);
	reply[sizeof(reply) - 1] = '\0';
	reply[ENV_HISTORY_TEXT - 1] = (char)0xc3;   /* a 2-byte sequence across */
	reply[ENV_HISTORY_TEXT] = (char)0xa9;       /* the cut */
	envelope_add_attempt(e, 2000, 0, ENV_RES_EXPIRED, NULL, NULL, reply, NULL);
	assert_int_equal(strlen(e->hist[ENV_HISTORY_MAX - 1].reply),
	    ENV_HISTORY_TEXT - 1);
	assert_int_equal(e->hist_dropped, 6);

	assert_int_equal(envelope_encode(e, &buf, &len), 0);
	assert_int_equal(envelope_decode(buf, len, &d), ENV_DECODE_OK);
	assert_int_equal(d->nhist, ENV_HISTORY_MAX);
	assert_int_equal(d->hist[ENV_HISTORY_MAX - 1].result, ENV_RES_EXPIRED);
	assert_null(d->hist[ENV_HISTORY_MAX - 1].relay);
	envelope_free(d);
	free(buf);
	envelope_free(e);
}

static void
test_encode_limits(void **state)
{
	struct envelope *e = envelope_new();
	uint8_t *buf = NULL;
	size_t len;
	char *big = malloc(70000);

	memset(big, 'a', 69999);
	big[69999] = '\0';
	e->sender = big;
	errno = 0;
	assert_int_equal(envelope_encode(e, &buf, &len), -1);
	assert_int_equal(errno, EINVAL);
	assert_null(buf);
	envelope_free(e);
}

static void
put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/* Build a mutated copy of a minimal record and check the decode result. */
struct decode_case {
	const char *name;
	int kind;
	enum envelope_decode_status want;
};

enum { K_EMPTY, K_VERSION0, K_VERSION3, K_TRAILING, K_NUL_SENDER,
	K_LONG_SENDER, K_ABSENT_SENDER, K_HUGE_STRLEN_SHORT, K_NRCPT_MAX,
	K_NRCPT_SHORT, K_BAD_STATE, K_NUL_RCPT, K_ABSENT_RCPT, K_NHIST_MAX,
	K_NHIST_SHORT, K_HIST_RCPT, K_HIST_RESULT, K_V1_WITH_HIST };

static const struct decode_case decode_cases[] = {
	{ "empty", K_EMPTY, ENV_DECODE_TRUNCATED },
	{ "version 0", K_VERSION0, ENV_DECODE_BAD_VERSION },
	{ "version 3", K_VERSION3, ENV_DECODE_BAD_VERSION },
	{ "trailing garbage", K_TRAILING, ENV_DECODE_BAD_FIELD },
	{ "NUL in sender", K_NUL_SENDER, ENV_DECODE_BAD_FIELD },
	{ "sender over limit", K_LONG_SENDER, ENV_DECODE_BAD_FIELD },
	{ "sender absent", K_ABSENT_SENDER, ENV_DECODE_BAD_FIELD },
	{ "string runs past end", K_HUGE_STRLEN_SHORT, ENV_DECODE_TRUNCATED },
	{ "too many recipients", K_NRCPT_MAX, ENV_DECODE_BAD_FIELD },
	{ "more recipients than bytes", K_NRCPT_SHORT, ENV_DECODE_TRUNCATED },
	{ "recipient state out of range", K_BAD_STATE, ENV_DECODE_BAD_FIELD },
	{ "NUL in recipient", K_NUL_RCPT, ENV_DECODE_BAD_FIELD },
	{ "recipient address absent", K_ABSENT_RCPT, ENV_DECODE_BAD_FIELD },
	{ "too many history entries", K_NHIST_MAX, ENV_DECODE_BAD_FIELD },
	{ "more history than bytes", K_NHIST_SHORT, ENV_DECODE_TRUNCATED },
	{ "history names no recipient", K_HIST_RCPT, ENV_DECODE_BAD_FIELD },
	{ "history result out of range", K_HIST_RESULT, ENV_DECODE_BAD_FIELD },
	{ "version 1 with a history", K_V1_WITH_HIST, ENV_DECODE_BAD_FIELD },
};

static void
test_decode_failures(void **state)
{
	struct envelope *e = envelope_new(), *d;
	uint8_t *buf, *m;
	size_t len;
	/* offsets in the minimal record (sender "ab", no optionals, 1 rcpt "x") */
	size_t sender_len_at = HDR_LEN, sender_at = HDR_LEN + 4;
	size_t nrcpt_at = sender_at + 2 + 6 * 4;
	size_t rcpt_at = nrcpt_at + 4;
	size_t state_at = rcpt_at + 4 + 1 + 4;
	size_t nhist_at = state_at + 1 + 1 + 3 * 4 + 8;
	size_t hist_at = nhist_at + 8;

	e->sender = strdup("ab");
	envelope_add_rcpt(e, "x", NULL, 0);
	envelope_add_attempt(e, 5, 0, ENV_RES_SENT, NULL, NULL, NULL, NULL);
	assert_int_equal(envelope_encode(e, &buf, &len), 0);
	assert_int_equal(len, hist_at + 8 + 4 + 1 + 4 * 4);

	for (size_t i = 0; i < sizeof(decode_cases) / sizeof(decode_cases[0]); i++) {
		const struct decode_case *c = &decode_cases[i];
		size_t mlen = len;
		m = malloc(len + 16);
		memcpy(m, buf, len);
		switch (c->kind) {
		case K_EMPTY: mlen = 0; break;
		case K_VERSION0: m[0] = 0; break;
		case K_VERSION3: m[0] = 3; break;
		case K_TRAILING: m[mlen++] = 0; break;
		case K_NUL_SENDER: m[sender_at + 1] = 0; break;
		case K_LONG_SENDER: put32(m + sender_len_at, 70000); break;
		case K_ABSENT_SENDER: put32(m + sender_len_at, 0xffffffffu); break;
		case K_HUGE_STRLEN_SHORT: put32(m + sender_len_at, 60000); break;
		case K_NRCPT_MAX: put32(m + nrcpt_at, 200000); break;
		case K_NRCPT_SHORT: put32(m + nrcpt_at, 100); break;
		case K_BAD_STATE: m[state_at] = RCPT_DELETED + 1; break;
		case K_NUL_RCPT: m[rcpt_at + 4] = 0; break;
		case K_ABSENT_RCPT: put32(m + rcpt_at, 0xffffffffu); break;
		case K_NHIST_MAX: put32(m + nhist_at, ENV_HISTORY_MAX + 1); break;
		case K_NHIST_SHORT: put32(m + nhist_at, 2); break;
		case K_HIST_RCPT: put32(m + hist_at + 8, 1); break;
		case K_HIST_RESULT: m[hist_at + 12] = ENV_RES_EXPIRED + 1; break;
		case K_V1_WITH_HIST: m[0] = 1; break;
		}
		d = (struct envelope *)1;
		enum envelope_decode_status st = envelope_decode(m, mlen, &d);
		if (st != c->want)
			fail_msg("case '%s': got %d want %d", c->name, st, c->want);
		assert_null(d);
		free(m);
	}
	/* every strict prefix is truncated, never accepted */
	for (size_t cut = 1; cut < len; cut++) {
		d = NULL;
		enum envelope_decode_status st = envelope_decode(buf, cut, &d);
		if (st != ENV_DECODE_TRUNCATED)
			fail_msg("prefix %zu: got %d", cut, st);
		assert_null(d);
	}
	/* and the unmodified record decodes */
	assert_int_equal(envelope_decode(buf, len, &d), ENV_DECODE_OK);
	envelope_free(d);

	/* a version 1 record (no history section) still decodes, and is
	 * written back in the current version */
	m = malloc(len);
	memcpy(m, buf, nhist_at);
	m[0] = 1;
	d = NULL;
	assert_int_equal(envelope_decode(m, nhist_at, &d), ENV_DECODE_OK);
	assert_int_equal(d->nhist, 0);
	assert_int_equal(d->nrcpt, 1);
	assert_string_equal(d->rcpts[0].addr, "x");
	{
		uint8_t *b2;
		size_t l2;
		assert_int_equal(envelope_encode(d, &b2, &l2), 0);
		assert_int_equal(b2[0], ENVELOPE_VERSION);
		assert_int_equal(l2, nhist_at + 8);
		assert_memory_equal(b2 + 1, m + 1, nhist_at - 1);
		free(b2);
	}
	envelope_free(d);
	free(m);
	free(buf);
	envelope_free(e);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_helpers),
		cmocka_unit_test(test_history),
		cmocka_unit_test(test_encode_limits),
		cmocka_unit_test(test_decode_failures),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
