/*
 * tls.h - OpenSSL contexts for the listeners (server, smtpd/tls.c) and the
 * delivery client (queue/mta/tls_client.c).
 *
 * Server side: TLS 1.2 and 1.3 only, forward-secret AEAD ciphers, server
 * cipher preference, session resumption (tickets sealed with rotating keys,
 * tls-session-tickets / tls-ticket-lifetime, and a server-side cache for
 * TLS 1.2 session IDs).
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
 * Give ctx the system CA store: the hashed directory, read lazily, or the
 * bundle file (parsed whole) when SSL_CERT_FILE names it or no directory
 * holds hashed names (queue/mta/tls_client.c says why). Logs a failure.
 */
void tls_client_trust(struct ssl_ctx_st *ctx);

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
/*
 * Once, before any thread that makes TLS filters starts: libevent_openssl
 * builds its BIO method on the first bufferevent_openssl_filter_new(),
 * unlocked, so two threads doing their first filter at once each build
 * one (one leaks, and the pointer is written by two threads). This makes
 * that first filter on the calling thread and frees it. fatalx on failure.
 */
void tls_libevent_init(void);

/*
 * Session-ticket keys (RFC 5077; RFC 8446 4.6.1). The server contexts share
 * one process-wide ring (kept across reloads, in memory only): a ticket is
 * sealed with the newest key, made when the ring is empty or its newest key
 * is lifetime/2 old; a key opens tickets until it is 1.5 x lifetime old
 * (its last ticket, sealed just before the next key took over, then expires:
 * the session itself is resumable for `lifetime`), then it is wiped.
 * The functions below are the ring's rules, pure but for RAND_bytes, with the
 * clock passed in (seconds, any monotonic origin); the caller locks.
 */
#define TLS_TICKET_KEYS 4             /* 1.5 x lifetime / (lifetime/2) + 1 */

struct tls_ticket_key {
	unsigned char name[16];       /* sent in clear at the head of a ticket */
	unsigned char aes[32];        /* AES-256-CBC */
	unsigned char hmac[32];       /* HMAC-SHA256 */
	long long born;               /* when it became the sealing key */
	int used;                     /* 0: empty slot */
};

struct tls_ticket_ring {
	struct tls_ticket_key k[TLS_TICKET_KEYS];   /* k[0] newest */
};

/*
 * The key to seal a new ticket with at time now (a copy in *out), rotating
 * first when due and wiping expired keys. 0, or -1 if no random key could be
 * made (then no ticket is issued).
 */
int tls_ticket_ring_seal_key(struct tls_ticket_ring *r, long long now,
    unsigned lifetime, struct tls_ticket_key *out);
/*
 * The key named name, if it may still open tickets at time now (expired
 * keys are wiped first): 1 it is the sealing key, 2 an older one or one due
 * for rotation (the caller renews the ticket: a TLS 1.3 server sends a new
 * ticket after a resumption only then), 0 unknown or expired (full
 * handshake).
 */
int tls_ticket_ring_open_key(struct tls_ticket_ring *r,
    const unsigned char name[16], long long now, unsigned lifetime,
    struct tls_ticket_key *out);
/* Wipe expired keys (all of them with lifetime 0). */
void tls_ticket_ring_expire(struct tls_ticket_ring *r, long long now,
    unsigned lifetime);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384" of an established connection. */
void tls_describe(struct ssl_st *ssl, char *buf, size_t len);

#endif
