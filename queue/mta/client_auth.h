/*
 * client_auth.h - private to queue/mta/: the delivery client's side of SMTP
 * AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms, for
 * routes with route-auth credentials. See client_auth.c.
 */
#ifndef TERN_CLIENT_AUTH_H
#define TERN_CLIENT_AUTH_H

#include <stddef.h>

#include "tern/route_auth.h"

struct evbuffer;

/* base64 of the longest secret, "\0" user "\0" pass, with its NUL */
#define CLIENT_AUTH_B64_MAX (4 * ((2 * ROUTE_AUTH_FIELD_MAX + 2 + 2) / 3) + 1)

enum client_auth_mech {
	CLIENT_AUTH_NONE = 0,
	CLIENT_AUTH_PLAIN = 0x1,
	CLIENT_AUTH_LOGIN = 0x2,
};

enum client_auth_result {
	CLIENT_AUTH_MORE,       /* the next line is written: wait for a reply */
	CLIENT_AUTH_DONE,       /* 235: authenticated */
	CLIENT_AUTH_FAILED,     /* any other reply: not authenticated */
};

/* One exchange; user and pass are borrowed (the session pins its conf). */
struct client_auth {
	enum client_auth_mech mech;
	int step;               /* lines sent after the AUTH command */
	const char *user;
	const char *pass;
};

/*
 * The mechanisms an EHLO reply raw[0..len) offers (its "AUTH" line, or the
 * old "AUTH=" form), as CLIENT_AUTH_* bits; others are ignored. Pure.
 */
unsigned client_auth_offered(const char *raw, size_t len);
/* PLAIN when offered, else LOGIN when offered, else CLIENT_AUTH_NONE. */
enum client_auth_mech client_auth_choose(unsigned offered);
const char *client_auth_mech_name(enum client_auth_mech m);

/*
 * base64 of "\0user\0pass" (RFC 4616: no authorization identity) into
 * out, NUL-terminated. Returns its length, or -1 if out is too small.
 * Pure; the caller zeroes out when done.
 */
int client_auth_plain(const char *user, const char *pass, char *out,
    size_t outlen);

/*
 * Write the AUTH command for mech to out and set a up. Lines with
 * credentials are handed to out by reference and zeroed once sent; they
 * are never logged.
 */
void client_auth_start(struct client_auth *a, enum client_auth_mech mech,
    const char *user, const char *pass, struct evbuffer *out);
/* Feed the server's reply code; may write the next line to out. */
enum client_auth_result client_auth_reply(struct client_auth *a, int code,
    struct evbuffer *out);

#endif
