/*
 * route_auth.h - smarthost credentials: the `route-auth FILE` of tern.conf.
 *
 * File format (doc/tern.conf.5, ROUTE-AUTH FILE): one entry a line,
 *
 *     HOST USER PASSWORD
 *
 * HOST is a route target without its "smtp:" prefix, written as in the
 * route: "[127.0.0.1]:587", "[smtp.provider.example]:587",
 * "smtp.provider.example". It matches a route whose target, rebuilt from
 * the parsed route (route_auth_route_key), is the same string, compared
 * without case: brackets and port must be written the same way (an omitted
 * port is not the same as ":25"). USER is one word. PASSWORD is the rest of
 * the line after the blanks that follow USER: it may hold blanks and '#';
 * blanks at its end are not part of it. A line whose first non-blank
 * character is '#' is a comment; blank lines are skipped. No control
 * characters; USER and PASSWORD at most ROUTE_AUTH_FIELD_MAX bytes.
 *
 * Secrets: nothing here logs or reports a password (error messages name
 * the file, the line and the field); every copy is zeroed before it is
 * freed (route_auth_free, route_auth_buf_free).
 */
#ifndef TERN_ROUTE_AUTH_H
#define TERN_ROUTE_AUTH_H

#include <stddef.h>
#include <sys/types.h>

#include "tern/conf.h"

#define ROUTE_AUTH_FIELD_MAX 255          /* USER, PASSWORD: bytes */
#define ROUTE_AUTH_LINE_MAX  1024
#define ROUTE_AUTH_FILE_MAX  (1024 * 1024)
#define ROUTE_AUTH_KEY_MAX   300          /* "[host]:65535" */

struct route_auth_entry {
	char *host;                   /* lowercase, as the route is written */
	char *user;
	char *pass;                   /* secret */
	int line;
};

struct route_auth {
	struct route_auth_entry *v;
	size_t n;
};

/*
 * Parse buf[0..len) (the text of file fname). Every error goes to err as
 * "FILE:LINE: message" (never with a password in it); returns the number
 * of errors, and sets *out (owned by the caller) only when it is 0. An
 * empty file gives an empty table. Pure: no file access, no logging.
 */
int route_auth_parse(const char *buf, size_t len, const char *fname,
    struct route_auth **out, conf_err_fn *err, void *arg);

/* Zero every user and password, free. NULL is a no-op. */
void route_auth_free(struct route_auth *ra);

/* The entry for a route key (any case), or NULL. Pure. */
const struct route_auth_entry *route_auth_find(const struct route_auth *ra,
    const char *key);

/*
 * Route r's target as HOST is written in the file: "[host]:port",
 * "[host]", "host:port" or "host" (lowercase). 0, or -1 for a route that
 * is not smtp:HOST or smtp:[HOST] ("mx" has no host) or when buf is too
 * small. Pure.
 */
int route_auth_route_key(const struct conf_route *r, char *buf, size_t len);

/*
 * Read path for route-auth: a regular file (no symbolic link), owned by
 * root or by uid owner, with no permission for group or others (0600 or
 * stricter), at most ROUTE_AUTH_FILE_MAX bytes. 0 with *buf (free with
 * route_auth_buf_free) and *len, or -1 with a message in err.
 */
int route_auth_read(const char *path, uid_t owner, char **buf, size_t *len,
    char *err, size_t errlen);
/* Zero and free what route_auth_read returned. NULL is a no-op. */
void route_auth_buf_free(char *buf, size_t len);

/*
 * route_auth_read then route_auth_parse. Returns the number of errors (a
 * read error is one, "FILE: message"); *out set only when 0.
 */
int route_auth_load(const char *path, uid_t owner, struct route_auth **out,
    conf_err_fn *err, void *arg);

#endif
