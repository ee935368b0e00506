/*
 * fuzz_sasl.c - libFuzzer target for smtpd/sasl.c.
 *
 * The raw input goes through every parser; then it is split at LF into
 * lines, the first fed to sasl_start() as the AUTH argument and the rest
 * to sasl_step(). Invariants checked (abort on violation):
 *  - base64: a successful decode re-encodes to exactly the input (strict,
 *    canonical), within the output bound; encode then decode of any input
 *    gives the input back;
 *  - mech parse: ir borrows from the argument; mech set iff OK;
 *  - PLAIN: on OK user and pass are non-empty, NUL-terminated, <= 255,
 *    user has no upper case, authzid is "" or the user; on failure the
 *    creds are all zero;
 *  - exchange: every error leaves struct sasl all zero; SASL_OK leaves a
 *    non-empty user and password; the prompt is one of the three known.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond) do { if (!(cond)) abort(); } while (0)

static int
fuzz_all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;
	for (size_t i = 0; i < n; i++)
		if (b[i] != 0)
			return 0;
	return 1;
}

static void
fuzz_check_creds(const struct sasl_creds *c)
{
	size_t ulen = strnlen(c->user, sizeof(c->user));
	size_t plen = strnlen(c->pass, sizeof(c->pass));

	FUZZ_CHECK(ulen >= 1 && ulen <= SASL_FIELD_MAX);
	FUZZ_CHECK(plen >= 1 && plen <= SASL_FIELD_MAX);
	for (size_t i = 0; i < ulen; i++)
		FUZZ_CHECK(!(c->user[i] >= 'A' && c->user[i] <= 'Z'));
	FUZZ_CHECK(c->authzid[0] == '\0' || strcmp(c->authzid, c->user) == 0);
}

static void
fuzz_base64(const uint8_t *data, size_t size)
{
	static unsigned char out[SASL_DECODED_MAX];
	static char enc[2 * SASL_LINE_MAX];
	size_t n = 99, elen;
	enum sasl_status st;

	st = sasl_base64_decode((const char *)data, size, out, sizeof(out), &n);
	FUZZ_CHECK(st == SASL_OK || st == SASL_BAD_BASE64 ||
	    st == SASL_TOO_LONG);
	if (st != SASL_OK) {
		FUZZ_CHECK(n == 0);
	} else {
		FUZZ_CHECK(n <= sizeof(out));
		elen = sasl_base64_encode(out, n, enc, sizeof(enc));
		FUZZ_CHECK(elen == size && memcmp(enc, data, size) == 0);
	}
	if (size <= sizeof(out)) {
		elen = sasl_base64_encode(data, size, enc, sizeof(enc));
		FUZZ_CHECK(elen == (size + 2) / 3 * 4);
		FUZZ_CHECK(sasl_base64_decode(enc, elen, out, sizeof(out), &n) ==
		    SASL_OK);
		FUZZ_CHECK(n == size && memcmp(out, data, size) == 0);
	}
}

static void
fuzz_exchange(const uint8_t *data, size_t size)
{
	struct sasl x;
	const char *p = (const char *)data, *end = p + size, *nl;
	enum sasl_status st;
	int first = 1;

	memset(&x, 0, sizeof(x));
	while (p <= end) {
		nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
		st = first ? sasl_start(&x, p, len) : sasl_step(&x, p, len);
		first = 0;
		if (st == SASL_CONTINUE) {
			const char *pr = sasl_prompt(&x);
			FUZZ_CHECK(strcmp(pr, "") == 0 ||
			    strcmp(pr, "VXNlcm5hbWU6") == 0 ||
			    strcmp(pr, "UGFzc3dvcmQ6") == 0);
		} else if (st == SASL_OK) {
			fuzz_check_creds(&x.creds);
		} else {
			FUZZ_CHECK(fuzz_all_zero(&x, sizeof(x)));
			FUZZ_CHECK(sasl_status_reply(st)->code >= 500);
		}
		if (nl == NULL)
			break;
		p = nl + 1;
	}
	sasl_wipe(&x);
	FUZZ_CHECK(fuzz_all_zero(&x, sizeof(x)));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sasl_creds c;
	enum sasl_mech mech;
	const char *ir;
	size_t irlen;
	int has_ir;
	enum sasl_status st;

	fuzz_base64(data, size);

	st = sasl_mech_parse((const char *)data, size, &mech, &ir, &irlen,
	    &has_ir);
	if (st == SASL_OK) {
		FUZZ_CHECK(mech == SASL_MECH_PLAIN || mech == SASL_MECH_LOGIN);
		if (has_ir)
			FUZZ_CHECK(irlen > 0 && ir > (const char *)data &&
			    ir + irlen == (const char *)data + size);
		else
			FUZZ_CHECK(ir == NULL && irlen == 0);
	} else {
		FUZZ_CHECK(mech == SASL_MECH_NONE && ir == NULL && !has_ir);
	}

	st = sasl_plain_parse(data, size, &c);
	if (st == SASL_OK)
		fuzz_check_creds(&c);
	else
		FUZZ_CHECK(fuzz_all_zero(&c, sizeof(c)));

	fuzz_exchange(data, size);
	return 0;
}
