/*
 * privhelper.h - private to smtpd/: the privileged helper that re-reads the
 * certificate and key files for a reload after ternd dropped root.
 *
 * ternd started as root forks it before the privilege drop (the main
 * process is the one that drops, so it stays the PID systemd and operators
 * see); the helper stays root and does one thing on request: re-read the
 * configuration file it was started with and send back the PEM bytes of the
 * tls-cert/tls-key files it names, or the bytes of its route-auth file. The request carries no path, so a
 * compromised daemon cannot make it read anything else. See privhelper.c.
 */
#ifndef TERN_PRIVHELPER_H
#define TERN_PRIVHELPER_H

#include <stddef.h>
#include <sys/types.h>

#include "tern/conf.h"
#include "tern/tls.h"

struct privhelper;

/*
 * Fork the helper for conf_path (copied; fixed for its whole life). Call as
 * root, before any thread is started and before the privilege drop. NULL
 * with a message in err on failure. The caller owns the handle.
 */
struct privhelper *privhelper_start(const char *conf_path, char *err,
    size_t errlen);
pid_t privhelper_pid(const struct privhelper *h);
/* 1 while the helper can still be asked (no protocol error or EOF yet). */
int privhelper_alive(const struct privhelper *h);
/*
 * Ask for the PEM bytes of c's tls pairs (c: the configuration the daemon
 * just parsed from the same file; the helper's pairs must name the same
 * files in the same order). 0 with *out an array of c->ntls (free with
 * tls_pems_free(*out, c->ntls)), or -1 with a message in err. Blocks the
 * caller for at most a few seconds; after a timeout or a protocol error the
 * helper is let go (privhelper_alive() turns 0).
 */
int privhelper_tls_fetch(struct privhelper *h, const struct conf *c,
    struct tls_pem **out, char *err, size_t errlen);
/*
 * Ask for the bytes of c's route-auth file, read and checked by the helper
 * (route_auth_read: root's or the run-time user's, 0600 or stricter). 0
 * with *buf (free with route_auth_buf_free) and *len, or -1 with a message
 * in err (never the file's content). Blocks as privhelper_tls_fetch.
 */
int privhelper_route_auth_fetch(struct privhelper *h, const struct conf *c,
    char **buf, size_t *len, char *err, size_t errlen);
/*
 * Ask for the bytes of c's dkim-sign key files, in order (the helper's
 * configuration must name the same files). 0 with bufs[i], lens[i] for
 * each of c->ndkim_sign (free each with dkim_key_buf_free), or -1 with a
 * message in err and nothing to free. Blocks as privhelper_tls_fetch.
 */
int privhelper_dkim_fetch(struct privhelper *h, const struct conf *c,
    char **bufs, size_t *lens, char *err, size_t errlen);
/* Close the socket, end and reap the helper. NULL is a no-op. */
void privhelper_free(struct privhelper *h);

#endif
