/*
 * client_auth.c - the delivery client's SMTP AUTH (RFC 4954): PLAIN with
 * an initial response (RFC 4616), or LOGIN (the user and the password each
 * answer a 334), for a route that has route-auth credentials.
 *
 * Runs on a delivery worker loop, called by deliver_session.c, which
 * decides when AUTH may happen (after the last EHLO, only over TLS the
 * route verified) and what a failure means (the mail is deferred). Owns
 * nothing: the credentials are borrowed from the session's pinned conf.
 *
 * Secrets: a line that carries credentials is built in its own buffer,
 * given to the output evbuffer by reference and zeroed (OPENSSL_cleanse)
 * when the evbuffer lets go of it; stack copies are zeroed before return.
 * Nothing here logs. Untrusted input: the EHLO reply (parsed, bounded by
 * the reply parser) and the reply codes.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "tern/route_auth.h"
#include "tern/util.h"

#include "client_auth.h"

/* The mechanism words of one "AUTH" line s[0..n) (after the keyword). */
static unsigned
client_auth_words(const char *s, size_t n)
{
	unsigned m = 0;
	size_t i = 0;

	while (i < n) {
		size_t w;

		while (i < n && s[i] == ' ')
			i++;
		w = i;
		while (i < n && s[i] != ' ')
			i++;
		if (i - w == 5 && strncasecmp(s + w, "PLAIN", 5) == 0)
			m |= CLIENT_AUTH_PLAIN;
		else if (i - w == 5 && strncasecmp(s + w, "LOGIN", 5) == 0)
			m |= CLIENT_AUTH_LOGIN;
	}
	return m;
}

unsigned
client_auth_offered(const char *raw, size_t len)
{
	unsigned m = 0;
	size_t i = 0;

	while (i < len) {
		const char *lf = memchr(raw + i, '\n', len - i);
		size_t end = lf != NULL ? (size_t)(lf - raw) : len, n;

		n = end - i;
		if (n > 0 && raw[i + n - 1] == '\r')
			n--;
		/* "250-AUTH PLAIN LOGIN", "250 AUTH=LOGIN" */
		if (n > 9 && strncasecmp(raw + i + 4, "AUTH", 4) == 0 &&
		    (raw[i + 8] == ' ' || raw[i + 8] == '='))
			m |= client_auth_words(raw + i + 9, n - 9);
		i = end + 1;
	}
	return m;
}

enum client_auth_mech
client_auth_choose(unsigned offered)
{
	if (offered & CLIENT_AUTH_PLAIN)
		return CLIENT_AUTH_PLAIN;
	if (offered & CLIENT_AUTH_LOGIN)
		return CLIENT_AUTH_LOGIN;
	return CLIENT_AUTH_NONE;
}

const char *
client_auth_mech_name(enum client_auth_mech m)
{
	return m == CLIENT_AUTH_PLAIN ? "PLAIN" : m == CLIENT_AUTH_LOGIN ?
	    "LOGIN" : "none";
}

static int
client_auth_b64(const unsigned char *in, size_t n, char *out, size_t outlen)
{
	if (n > (size_t)1 << 20 || outlen < 4 * ((n + 2) / 3) + 1)
		return -1;
	return EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

int
client_auth_plain(const char *user, const char *pass, char *out,
    size_t outlen)
{
	size_t ul = strlen(user), pl = strlen(pass);
	unsigned char raw[2 * ROUTE_AUTH_FIELD_MAX + 2];
	int n;

	if (ul > ROUTE_AUTH_FIELD_MAX || pl > ROUTE_AUTH_FIELD_MAX)
		return -1;
	raw[0] = '\0';
	memcpy(raw + 1, user, ul);
	raw[1 + ul] = '\0';
	memcpy(raw + 2 + ul, pass, pl);
	n = client_auth_b64(raw, ul + pl + 2, out, outlen);
	OPENSSL_cleanse(raw, sizeof(raw));
	return n;
}

static void
client_auth_cleanse_cb(const void *data, size_t len, void *arg)
{
	(void)arg;
	OPENSSL_cleanse((void *)(uintptr_t)data, len);
	free((void *)(uintptr_t)data);
}

/* Write prefix + b64 + CRLF to out by reference; zeroed once sent. */
static void
client_auth_send(struct evbuffer *out, const char *prefix, const char *b64)
{
	size_t n = strlen(prefix) + strlen(b64) + 2;
	char *line = xmalloc(n + 1);

	snprintf(line, n + 1, "%s%s\r\n", prefix, b64);
	if (evbuffer_add_reference(out, line, n, client_auth_cleanse_cb,
	    NULL) != 0)
		client_auth_cleanse_cb(line, n, NULL);
}

/* Send one field, base64, as the answer to a 334 (LOGIN). */
static void
client_auth_send_field(struct evbuffer *out, const char *s)
{
	char b64[CLIENT_AUTH_B64_MAX];

	if (client_auth_b64((const unsigned char *)s, strlen(s), b64,
	    sizeof(b64)) < 0)
		b64[0] = '\0';       /* cannot happen: fields are bounded */
	client_auth_send(out, "", b64);
	OPENSSL_cleanse(b64, sizeof(b64));
}

static void
client_auth_send_plain(struct evbuffer *out, const struct client_auth *a,
    const char *prefix)
{
	char b64[CLIENT_AUTH_B64_MAX];

	if (client_auth_plain(a->user, a->pass, b64, sizeof(b64)) < 0)
		b64[0] = '\0';       /* cannot happen: fields are bounded */
	client_auth_send(out, prefix, b64);
	OPENSSL_cleanse(b64, sizeof(b64));
}

void
client_auth_start(struct client_auth *a, enum client_auth_mech mech,
    const char *user, const char *pass, struct evbuffer *out)
{
	a->mech = mech;
	a->step = 0;
	a->user = user;
	a->pass = pass;
	if (mech == CLIENT_AUTH_PLAIN)
		client_auth_send_plain(out, a, "AUTH PLAIN ");
	else
		evbuffer_add(out, "AUTH LOGIN\r\n", 12);
}

enum client_auth_result
client_auth_reply(struct client_auth *a, int code, struct evbuffer *out)
{
	if (code == 235)
		return CLIENT_AUTH_DONE;
	if (code != 334 || a->step >= 2 ||
	    (a->mech == CLIENT_AUTH_PLAIN && a->step >= 1))
		return CLIENT_AUTH_FAILED;
	/* 334: the server wants the next line */
	if (a->mech == CLIENT_AUTH_PLAIN)
		client_auth_send_plain(out, a, "");   /* initial response ignored */
	else
		client_auth_send_field(out, a->step == 0 ? a->user : a->pass);
	a->step++;
	return CLIENT_AUTH_MORE;
}
