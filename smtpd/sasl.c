/*
 * sasl.c - pure parts of SMTP AUTH: strict base64, the AUTH argument, the
 * PLAIN message (RFC 4616) and the PLAIN/LOGIN exchange state.
 *
 * Runs in:   any thread; reentrant.
 * Owns:      nothing. struct sasl and struct sasl_creds are caller-owned
 *            and hold bounded copies; sasl_mech_parse() outputs borrow arg.
 * Never:     allocates, logs, does I/O, keeps global state, or reads past
 *            len; inputs need not be NUL-terminated and may hold any byte.
 * Untrusted: every byte comes from the network peer.
 * Implements RFC 4954 section 4 (AUTH, "=" and "*"), RFC 4616 (PLAIN),
 *            RFC 4648 section 4 (base64, strictly), draft-murchison-sasl-
 *            login (LOGIN, prompts "Username:" / "Password:").
 *
 * Decisions: non-canonical base64 (non-zero unused bits) is refused, so one
 * response has one encoding; a NUL inside a LOGIN user name or password is
 * SASL_BAD_CREDS (it could not be compared as a C string); user names are
 * lower-cased (ASCII) here, once, so every later layer sees one spelling.
 */
#include <stdint.h>
#include <string.h>

#include "tern/auth.h"
#include "tern/util.h"

/* Private LOGIN/PLAIN steps (struct sasl.step). */
#define SASL_STEP_RESPONSE  0   /* PLAIN: waiting for the message */
#define SASL_STEP_USER      1   /* LOGIN: waiting for the user name */
#define SASL_STEP_PASS      2   /* LOGIN: waiting for the password */
#define SASL_STEP_DONE      3

#define SASL_MECH_NAME_MAX  20  /* RFC 4422 3.1 */

enum sasl_status
sasl_base64_decode(const char *in, size_t inlen, unsigned char *out,
    size_t outsize, size_t *outlen)
{
	switch (base64_decode(in, inlen, out, outsize, outlen)) {
	case 0:              return SASL_OK;
	case BASE64_E_SPACE: return SASL_TOO_LONG;
	default:             return SASL_BAD_BASE64;
	}
}

size_t
sasl_base64_encode(const void *in, size_t inlen, char *out, size_t outsize)
{
	return base64_encode(in, inlen, out, outsize);
}

static int
sasl_mech_char(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	    (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static int
sasl_name_eq(const char *a, size_t alen, const char *b)
{
	return ascii_casecmp_n(a, alen, b, strlen(b)) == 0;
}

enum sasl_status
sasl_mech_parse(const char *arg, size_t len, enum sasl_mech *mech,
    const char **ir, size_t *irlen, int *has_ir)
{
	size_t i, mlen;

	*mech = SASL_MECH_NONE;
	*ir = NULL;
	*irlen = 0;
	*has_ir = 0;

	for (mlen = 0; mlen < len && arg[mlen] != ' '; mlen++)
		if (!sasl_mech_char((unsigned char)arg[mlen]))
			return SASL_BAD_SYNTAX;
	if (mlen == 0 || mlen > SASL_MECH_NAME_MAX)
		return SASL_BAD_SYNTAX;
	if (mlen < len) {
		/* Exactly one SP, then a non-empty token with no SP. */
		const char *r = arg + mlen + 1;
		size_t rlen = len - mlen - 1;
		if (rlen == 0)
			return SASL_BAD_SYNTAX;
		for (i = 0; i < rlen; i++) {
			unsigned char c = (unsigned char)r[i];
			if (c <= ' ' || c >= 0x7f)
				return SASL_BAD_SYNTAX;
		}
		*ir = r;
		*irlen = rlen;
		*has_ir = 1;
	}
	if (sasl_name_eq(arg, mlen, "PLAIN"))
		*mech = SASL_MECH_PLAIN;
	else if (sasl_name_eq(arg, mlen, "LOGIN"))
		*mech = SASL_MECH_LOGIN;
	else {
		*ir = NULL;
		*irlen = 0;
		*has_ir = 0;
		return SASL_UNKNOWN_MECH;
	}
	return SASL_OK;
}

/* Copy a field (no NUL inside, checked by the caller) and terminate. */
static void
sasl_copy_field(char *dst, const unsigned char *src, size_t len, int lower)
{
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char c = src[i];
		if (lower && c >= 'A' && c <= 'Z')
			c = (unsigned char)(c - 'A' + 'a');
		dst[i] = (char)c;
	}
	dst[len] = '\0';
}

enum sasl_status
sasl_plain_parse(const unsigned char *msg, size_t len, struct sasl_creds *creds)
{
	const unsigned char *nul1, *nul2, *user, *pass;
	size_t zlen, ulen, plen;
	enum sasl_status st;

	explicit_bzero(creds, sizeof(*creds));
	nul1 = memchr(msg, '\0', len);
	if (nul1 == NULL)
		return SASL_BAD_CREDS;
	zlen = (size_t)(nul1 - msg);
	user = nul1 + 1;
	nul2 = memchr(user, '\0', len - zlen - 1);
	if (nul2 == NULL)
		return SASL_BAD_CREDS;
	ulen = (size_t)(nul2 - user);
	pass = nul2 + 1;
	plen = len - zlen - ulen - 2;
	if (zlen > SASL_FIELD_MAX || ulen > SASL_FIELD_MAX ||
	    plen > SASL_FIELD_MAX)
		return SASL_TOO_LONG;
	if (ulen == 0 || plen == 0 || memchr(pass, '\0', plen) != NULL)
		return SASL_BAD_CREDS;

	sasl_copy_field(creds->authzid, msg, zlen, 1);
	sasl_copy_field(creds->user, user, ulen, 1);
	sasl_copy_field(creds->pass, pass, plen, 0);
	if (zlen != 0 && strcmp(creds->authzid, creds->user) != 0) {
		st = SASL_AUTHZ_DENIED;
		goto fail;
	}
	return SASL_OK;

fail:
	explicit_bzero(creds, sizeof(*creds));
	return st;
}

/*
 * Decode one client response: "*" cancels, anything else must be strict
 * base64 of at most outsize bytes.
 */
static enum sasl_status
sasl_response_decode(const char *line, size_t len, unsigned char *out,
    size_t outsize, size_t *outlen)
{
	*outlen = 0;
	if (len == 1 && line[0] == '*')
		return SASL_CANCELLED;
	return sasl_base64_decode(line, len, out, outsize, outlen);
}

/* A LOGIN field: 1-255 octets, no NUL. */
static enum sasl_status
sasl_login_field(const unsigned char *buf, size_t n, char *dst, int lower)
{
	if (n == 0 || memchr(buf, '\0', n) != NULL)
		return SASL_BAD_CREDS;
	if (n > SASL_FIELD_MAX)
		return SASL_TOO_LONG;
	sasl_copy_field(dst, buf, n, lower);
	return SASL_OK;
}

enum sasl_status
sasl_step(struct sasl *x, const char *line, size_t len)
{
	/* One spare byte so an over-long LOGIN field is seen as too long. */
	unsigned char buf[SASL_DECODED_MAX + 1];
	size_t n = 0;
	enum sasl_status st;

	switch (x->mech) {
	case SASL_MECH_PLAIN:
		if (x->step != SASL_STEP_RESPONSE) {
			st = SASL_BAD_SYNTAX;
			goto fail;
		}
		st = sasl_response_decode(line, len, buf, SASL_DECODED_MAX, &n);
		if (st != SASL_OK)
			goto fail;
		st = sasl_plain_parse(buf, n, &x->creds);
		if (st != SASL_OK)
			goto fail;
		break;
	case SASL_MECH_LOGIN:
		if (x->step != SASL_STEP_USER && x->step != SASL_STEP_PASS) {
			st = SASL_BAD_SYNTAX;
			goto fail;
		}
		st = sasl_response_decode(line, len, buf, SASL_FIELD_MAX + 1, &n);
		if (st != SASL_OK)
			goto fail;
		if (x->step == SASL_STEP_USER) {
			st = sasl_login_field(buf, n, x->creds.user, 1);
			if (st != SASL_OK)
				goto fail;
			x->step = SASL_STEP_PASS;
			explicit_bzero(buf, sizeof(buf));
			return SASL_CONTINUE;
		}
		st = sasl_login_field(buf, n, x->creds.pass, 0);
		if (st != SASL_OK)
			goto fail;
		break;
	case SASL_MECH_NONE:
	default:
		st = SASL_BAD_SYNTAX;
		goto fail;
	}
	explicit_bzero(buf, sizeof(buf));
	x->step = SASL_STEP_DONE;
	return SASL_OK;

fail:
	explicit_bzero(buf, sizeof(buf));
	sasl_wipe(x);
	return st;
}

enum sasl_status
sasl_start(struct sasl *x, const char *arg, size_t len)
{
	enum sasl_mech mech;
	const char *ir;
	size_t irlen;
	int has_ir;
	enum sasl_status st;

	sasl_wipe(x);
	st = sasl_mech_parse(arg, len, &mech, &ir, &irlen, &has_ir);
	if (st != SASL_OK)
		return st;
	x->mech = mech;
	x->step = (mech == SASL_MECH_PLAIN) ? SASL_STEP_RESPONSE :
	    SASL_STEP_USER;
	if (!has_ir)
		return SASL_CONTINUE;
	/* RFC 4954 4: "=" is a zero-length initial response. */
	if (irlen == 1 && ir[0] == '=')
		irlen = 0;
	return sasl_step(x, ir, irlen);
}

const char *
sasl_prompt(const struct sasl *x)
{
	if (x->mech == SASL_MECH_LOGIN)
		return x->step == SASL_STEP_PASS ? "UGFzc3dvcmQ6" :
		    "VXNlcm5hbWU6";
	return "";
}

void
sasl_wipe(struct sasl *x)
{
	explicit_bzero(x, sizeof(*x));
}

const struct sasl_reply *
sasl_status_reply(enum sasl_status st)
{
	static const struct sasl_reply r_ok = { 0, "", "" };  /* not a reply */
	static const struct sasl_reply r_cont = { 334, NULL, "" };
	static const struct sasl_reply r_syntax = { 501, "5.5.4",
	    "Syntax: AUTH mechanism [initial-response]" };
	static const struct sasl_reply r_mech = { 504, "5.5.4",
	    "Unrecognized authentication type" };
	static const struct sasl_reply r_b64 = { 501, "5.5.2",
	    "Cannot decode response" };
	static const struct sasl_reply r_cancel = { 501, "5.0.0",
	    "Authentication cancelled" };
	static const struct sasl_reply r_long = { 500, "5.5.6",
	    "Authentication Exchange line is too long" };
	static const struct sasl_reply r_creds = { 535, "5.7.8",
	    "Authentication credentials invalid" };

	switch (st) {
	case SASL_OK: return &r_ok;
	case SASL_CONTINUE: return &r_cont;
	case SASL_BAD_SYNTAX: return &r_syntax;
	case SASL_UNKNOWN_MECH: return &r_mech;
	case SASL_BAD_BASE64: return &r_b64;
	case SASL_CANCELLED: return &r_cancel;
	case SASL_TOO_LONG: return &r_long;
	case SASL_BAD_CREDS:
	case SASL_AUTHZ_DENIED:
		return &r_creds;
	}
	return &r_creds;
}

const char *
sasl_status_name(enum sasl_status st)
{
	switch (st) {
	case SASL_OK: return "OK";
	case SASL_CONTINUE: return "CONTINUE";
	case SASL_BAD_SYNTAX: return "BAD_SYNTAX";
	case SASL_UNKNOWN_MECH: return "UNKNOWN_MECH";
	case SASL_BAD_BASE64: return "BAD_BASE64";
	case SASL_CANCELLED: return "CANCELLED";
	case SASL_TOO_LONG: return "TOO_LONG";
	case SASL_BAD_CREDS: return "BAD_CREDS";
	case SASL_AUTHZ_DENIED: return "AUTHZ_DENIED";
	}
	return "?";
}
