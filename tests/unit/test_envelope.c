/* test_envelope.c - envelope life cycle and the versioned record codec. */
#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
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
	/* dup is deep */
	c = envelope_dup(e);
	assert_ptr_not_equal(c->sender, e->sender);
	assert_ptr_not_equal(c->rcpts, e->rcpts);
	assert_same(e, c);
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

enum { K_EMPTY, K_VERSION0, K_VERSION2, K_TRAILING, K_NUL_SENDER,
	K_LONG_SENDER, K_ABSENT_SENDER, K_HUGE_STRLEN_SHORT, K_NRCPT_MAX,
	K_NRCPT_SHORT, K_BAD_STATE, K_NUL_RCPT, K_ABSENT_RCPT };

static const struct decode_case decode_cases[] = {
	{ "empty", K_EMPTY, ENV_DECODE_TRUNCATED },
	{ "version 0", K_VERSION0, ENV_DECODE_BAD_VERSION },
	{ "version 2", K_VERSION2, ENV_DECODE_BAD_VERSION },
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

	e->sender = strdup("ab");
	envelope_add_rcpt(e, "x", NULL, 0);
	assert_int_equal(envelope_encode(e, &buf, &len), 0);
	assert_int_equal(len, state_at + 1 + 1 + 3 * 4 + 8);

	for (size_t i = 0; i < sizeof(decode_cases) / sizeof(decode_cases[0]); i++) {
		const struct decode_case *c = &decode_cases[i];
		size_t mlen = len;
		m = malloc(len + 16);
		memcpy(m, buf, len);
		switch (c->kind) {
		case K_EMPTY: mlen = 0; break;
		case K_VERSION0: m[0] = 0; break;
		case K_VERSION2: m[0] = 2; break;
		case K_TRAILING: m[mlen++] = 0; break;
		case K_NUL_SENDER: m[sender_at + 1] = 0; break;
		case K_LONG_SENDER: put32(m + sender_len_at, 70000); break;
		case K_ABSENT_SENDER: put32(m + sender_len_at, 0xffffffffu); break;
		case K_HUGE_STRLEN_SHORT: put32(m + sender_len_at, 60000); break;
		case K_NRCPT_MAX: put32(m + nrcpt_at, 200000); break;
		case K_NRCPT_SHORT: put32(m + nrcpt_at, 2); break;
		case K_BAD_STATE: m[state_at] = RCPT_DELETED + 1; break;
		case K_NUL_RCPT: m[rcpt_at + 4] = 0; break;
		case K_ABSENT_RCPT: put32(m + rcpt_at, 0xffffffffu); break;
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
	free(buf);
	envelope_free(e);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_helpers),
		cmocka_unit_test(test_encode_limits),
		cmocka_unit_test(test_decode_failures),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
