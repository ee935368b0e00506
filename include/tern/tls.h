/*
 * tls.h - OpenSSL contexts for the listeners (server, smtpd/tls.c) and the
 * delivery client (queue/mta/tls_client.c).
 *
 * Server side: TLS 1.2 and 1.3 only, forward-secret AEAD ciphers, server
 * cipher preference, session resumption (tickets + a server-side cache).
 * Several tls-cert/tls-key pairs may be configured: pairs of different key
 * types (RSA, ECDSA) share one context and OpenSSL picks what the client
 * supports; a pair whose key type is already taken starts another context,
 * chosen by SNI (the first context is the default). A struct tls_server is
 * immutable and reference-counted so SIGHUP can build a new one while
 * sessions keep the one they started with.
 */
#ifndef TERN_TLS_H
#define TERN_TLS_H

#include <stddef.h>

#include "tern/conf.h"

struct ssl_ctx_st;
struct ssl_st;

struct tls_server;

#define TLS_PEM_MAX (1024 * 1024)     /* bound on one certificate or key file */

/* The PEM bytes of one tls-cert/tls-key pair (cert: leaf first, then chain). */
struct tls_pem {
	char *cert;
	size_t cert_len;
	char *key;
	size_t key_len;
};

/*
 * Read one regular file of at most TLS_PEM_MAX bytes into *out (caller owns,
 * *outlen bytes, not NUL-terminated). 0, or -1 with the reason in err.
 */
int tls_pem_read(const char *path, char **out, size_t *outlen, char *err,
    size_t errlen);
/*
 * Read every c->tls pair: *out is an array of c->ntls (free with
 * tls_pems_free(*out, c->ntls)). 0, or -1 with "tls-key FILE: reason".
 */
int tls_pems_load(const struct conf *c, struct tls_pem **out, char *err,
    size_t errlen);
void tls_pems_free(struct tls_pem *pems, size_t n);   /* wipes the keys */

/* Build contexts from c->tls pairs. NULL with a message in err on failure. */
struct tls_server *tls_server_new(const struct conf *c, char *err, size_t errlen);
/*
 * The same from pems[0..c->ntls), the bytes of c->tls[i] (paths are used in
 * messages only). The caller keeps pems.
 */
struct tls_server *tls_server_new_pem(const struct conf *c,
    const struct tls_pem *pems, char *err, size_t errlen);
struct tls_server *tls_server_ref(struct tls_server *t);
void tls_server_unref(struct tls_server *t);          /* NULL is a no-op */
/*
 * New server SSL object (caller owns), or NULL. It holds a reference on t
 * until SSL_free(), so a handshake still picks among t's certificates (SNI)
 * after a reload dropped t.
 */
struct ssl_st *tls_server_ssl_new(struct tls_server *t);

/*
 * Client context for deliveries: TLS 1.2+, system CA store loaded (used
 * only when the policy asks for verification). Thread-safe to share.
 */
struct ssl_ctx_st *tls_client_ctx_new(char *err, size_t errlen);
/*
 * New client SSL for a peer: SNI set to host; with verify, the chain must
 * check against the CA store and the certificate must match host.
 */
struct ssl_st *tls_client_ssl_new(struct ssl_ctx_st *ctx, const char *host,
    int verify);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384" of an established connection. */
void tls_describe(struct ssl_st *ssl, char *buf, size_t len);

#endif
