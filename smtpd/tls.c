/*
 * tls.c - OpenSSL server contexts (see tern/tls.h); the delivery client's
 * context is queue/mta/tls_client.c.
 *
 * Runs in main() at start-up and at SIGHUP (building contexts), and on any
 * thread afterwards (SSL objects from an immutable context are thread-safe
 * to create). Reads certificate and key files (tls_pem_read, also used by
 * the privileged helper) or takes their PEM bytes from memory; never sees
 * peer bytes itself (OpenSSL does), except the SNI name, compared with
 * X509_check_host. Key bytes are wiped when freed; an encrypted key is
 * refused (no pass phrase prompt).
 *
 * Owns the process-wide session-ticket key ring (tls_ring, under a mutex):
 * random keys made in memory, never written out. There is no timer: each
 * ticket sealed or opened first wipes the expired keys and, when sealing,
 * makes a new key if the newest is due; a ticket opened with a retired or
 * due key is renewed, which seals (see tern/tls.h). OpenSSL hands the
 * ticket callback the client's ticket; the callback only looks up its
 * 16-byte key name.
 *
 * RFC 8314 (implicit TLS), RFC 3207 (STARTTLS), RFC 7525/9325 (TLS 1.2+,
 * AEAD with forward secrecy), RFC 5077 and RFC 8446 4.6.1 (tickets).
 */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tern/log.h"
#include "tern/tls.h"
#include "tern/util.h"

/*
 * TLS 1.2 suites: ECDHE/DHE only (forward secrecy), AEAD only. Both lists
 * put AES-128-GCM with SHA-256 first (the order of Mozilla's "intermediate"
 * profile): 128-bit AES is not the weak point of any of them, and SHA-256
 * runs on the CPU's SHA instructions where SHA-384 does not, which makes the
 * TLS 1.3 key schedule and transcript hash of every handshake cheaper.
 */
#define TLS_CIPHERS_12 \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:" \
	"DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384"
#define TLS_SUITES_13 \
	"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:" \
	"TLS_CHACHA20_POLY1305_SHA256"

#define TLS_MAX_CTX 16

struct tls_server {
	int refcnt;
	SSL_CTX *ctx[TLS_MAX_CTX];      /* owned; ctx[0] is the default */
	int keytypes[TLS_MAX_CTX][4];   /* EVP_PKEY ids loaded in each ctx */
	size_t nctx;
	int tickets;                    /* tls-session-tickets */
	unsigned ticket_lifetime;       /* tls-ticket-lifetime, seconds */
};

/*
 * Every server SSL holds a reference on the tls_server it came from (in its
 * ex_data, dropped by SSL_free): the SNI callback of a handshake that starts
 * after a reload still finds the contexts it may switch to.
 */
static int tls_ssl_idx = -1;
static pthread_once_t tls_ssl_idx_once = PTHREAD_ONCE_INIT;

static void
tls_ssl_ref_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
    long argl, void *argp)
{
	tls_server_unref(ptr);
}

/* The ticket cipher, fetched once rather than at every ticket. */
static EVP_CIPHER *tls_ticket_cipher;

static void
tls_ssl_idx_init(void)
{
	tls_ssl_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL,
	    tls_ssl_ref_free);
	tls_ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-256-CBC", NULL);
}

/* ------------------------------------------------------------------ */
/* session-ticket keys */

static pthread_mutex_t tls_ring_mu = PTHREAD_MUTEX_INITIALIZER;
static struct tls_ticket_ring tls_ring;   /* under tls_ring_mu */

static void
tls_ticket_key_wipe(struct tls_ticket_key *k)
{
	OPENSSL_cleanse(k, sizeof(*k));
}

void
tls_ticket_ring_expire(struct tls_ticket_ring *r, long long now,
    unsigned lifetime)
{
	long long keep = (long long)lifetime + lifetime / 2;

	for (size_t i = 0; i < TLS_TICKET_KEYS; i++)
		if (r->k[i].used && (now - r->k[i].born >= keep ||
		    now < r->k[i].born))
			tls_ticket_key_wipe(&r->k[i]);
}

int
tls_ticket_ring_seal_key(struct tls_ticket_ring *r, long long now,
    unsigned lifetime, struct tls_ticket_key *out)
{
	tls_ticket_ring_expire(r, now, lifetime);
	if (lifetime == 0)
		return -1;
	if (!r->k[0].used || now - r->k[0].born >= lifetime / 2) {
		struct tls_ticket_key nk = { .born = now, .used = 1 };
		if (RAND_priv_bytes(nk.name, sizeof(nk.name)) != 1 ||
		    RAND_priv_bytes(nk.aes, sizeof(nk.aes)) != 1 ||
		    RAND_priv_bytes(nk.hmac, sizeof(nk.hmac)) != 1) {
			tls_ticket_key_wipe(&nk);
			return -1;
		}
		tls_ticket_key_wipe(&r->k[TLS_TICKET_KEYS - 1]);
		memmove(&r->k[1], &r->k[0],
		    (TLS_TICKET_KEYS - 1) * sizeof(r->k[0]));
		r->k[0] = nk;
		tls_ticket_key_wipe(&nk);
	}
	*out = r->k[0];
	return 0;
}

int
tls_ticket_ring_open_key(struct tls_ticket_ring *r,
    const unsigned char name[16], long long now, unsigned lifetime,
    struct tls_ticket_key *out)
{
	tls_ticket_ring_expire(r, now, lifetime);
	for (size_t i = 0; i < TLS_TICKET_KEYS; i++)
		if (r->k[i].used && CRYPTO_memcmp(r->k[i].name, name,
		    sizeof(r->k[i].name)) == 0) {
			*out = r->k[i];
			return i == 0 && now - r->k[0].born < lifetime / 2 ?
			    1 : 2;
		}
	return 0;
}

static long long
tls_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec;
}

/*
 * OpenSSL's ticket callback: enc 1 seals a new ticket (key name and IV out),
 * enc 0 opens the client's (key name in). Returns 1 (go on), 2 (opened with
 * a retired key: renew), 0 (no ticket, or a full handshake), -1 (error).
 */
static int
tls_ticket_cb(SSL *ssl, unsigned char *name, unsigned char *iv,
    EVP_CIPHER_CTX *cctx, EVP_MAC_CTX *hctx, int enc)
{
	static char digest[] = "SHA256";
	struct tls_server *t = SSL_get_ex_data(ssl, tls_ssl_idx);
	struct tls_ticket_key k;
	int r;

	if (t == NULL || tls_ticket_cipher == NULL)
		return 0;
	pthread_mutex_lock(&tls_ring_mu);
	if (enc)
		r = tls_ticket_ring_seal_key(&tls_ring, tls_now(),
		    t->ticket_lifetime, &k) == 0 ? 1 : 0;
	else
		r = tls_ticket_ring_open_key(&tls_ring, name, tls_now(),
		    t->ticket_lifetime, &k);
	pthread_mutex_unlock(&tls_ring_mu);
	if (r == 0)
		return 0;
	if (enc) {
		memcpy(name, k.name, sizeof(k.name));
		if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(tls_ticket_cipher))
		    != 1)
			r = -1;
	}
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k.hmac,
		    sizeof(k.hmac)),
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
		OSSL_PARAM_construct_end(),
	};
	if (r > 0 && (EVP_MAC_CTX_set_params(hctx, params) != 1 ||
	    (enc ? EVP_EncryptInit_ex(cctx, tls_ticket_cipher, NULL, k.aes, iv) :
	    EVP_DecryptInit_ex(cctx, tls_ticket_cipher, NULL, k.aes, iv)) != 1))
		r = -1;
	tls_ticket_key_wipe(&k);
	return r;
}

static void
tls_err(char *err, size_t errlen, const char *what, const char *file)
{
	unsigned long e = ERR_get_error();
	char buf[256];
	ERR_error_string_n(e, buf, sizeof(buf));
	snprintf(err, errlen, "%s %s: %s", what, file, e ? buf : "failed");
	ERR_clear_error();
}

static int
tls_sni_cb(SSL *ssl, int *alert, void *arg)
{
	struct tls_server *t = SSL_get_ex_data(ssl, tls_ssl_idx);
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	if (t == NULL || name == NULL || t->nctx < 2)
		return SSL_TLSEXT_ERR_OK;
	for (size_t i = 0; i < t->nctx; i++) {
		X509 *x = SSL_CTX_get0_certificate(t->ctx[i]);
		if (x != NULL && X509_check_host(x, name, strlen(name), 0, NULL) == 1) {
			if (i != 0)
				SSL_set_SSL_CTX(ssl, t->ctx[i]);
			return SSL_TLSEXT_ERR_OK;
		}
	}
	return SSL_TLSEXT_ERR_OK;   /* no match: default certificate */
}

static SSL_CTX *
tls_server_ctx_new(const struct tls_server *t, char *err, size_t errlen)
{
	static const unsigned char sid_ctx[] = "tern";
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (ctx == NULL) {
		tls_err(err, errlen, "SSL_CTX_new", "");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE |
	    SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	if (SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12) != 1 ||
	    SSL_CTX_set_ciphersuites(ctx, TLS_SUITES_13) != 1) {
		tls_err(err, errlen, "cipher list", "");
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_dh_auto(ctx, 1);
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_sess_set_cache_size(ctx, 20000);
	if (t->ticket_lifetime > 0)     /* 0 in a conf not from conf_parse */
		SSL_CTX_set_timeout(ctx, (long)t->ticket_lifetime);
	if (t->tickets) {
		SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, tls_ticket_cb);
		/*
		 * One TLS 1.3 ticket per handshake, not OpenSSL's two: an SMTP
		 * client resumes one connection at a time, and each ticket
		 * costs a session encoding and a sealing.
		 */
		SSL_CTX_set_num_tickets(ctx, 1);
	} else {
		/* no stateless tickets, and none backed by the cache (TLS 1.3) */
		SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
		SSL_CTX_set_num_tickets(ctx, 0);
	}
	SSL_CTX_set_tlsext_servername_callback(ctx, tls_sni_cb);
	/* Partial writes let libevent hand OpenSSL less than a whole record. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	return ctx;
}

/* ------------------------------------------------------------------ */
/* PEM bytes: read from files, or handed over by the privileged helper */

int
tls_pem_read(const char *path, char **out, size_t *outlen, char *err,
    size_t errlen)
{
	struct stat st = { 0 };
	char *buf = NULL;
	size_t len = 0;
	ssize_t r = 0;
	int fd;

	/* O_NONBLOCK: a FIFO named as a key must not hang the reader */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		snprintf(err, errlen, "%s", strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
	    st.st_size > TLS_PEM_MAX) {
		snprintf(err, errlen, "%s", S_ISREG(st.st_mode) ?
		    "larger than 1 MiB" : "not a regular file");
		close(fd);
		return -1;
	}
	buf = xmalloc((size_t)st.st_size + 1);
	while (len <= (size_t)st.st_size) {
		r = read(fd, buf + len, (size_t)st.st_size + 1 - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	if (r < 0 || len > (size_t)st.st_size) {
		snprintf(err, errlen, "%s", r < 0 ? strerror(errno) :
		    "changed while being read");
		close(fd);
		OPENSSL_cleanse(buf, len);
		free(buf);
		return -1;
	}
	close(fd);
	*out = buf;
	*outlen = len;
	return 0;
}

int
tls_pems_load(const struct conf *c, struct tls_pem **out, char *err,
    size_t errlen)
{
	struct tls_pem *pems = xcalloc(c->ntls ? c->ntls : 1, sizeof(*pems));
	char why[256];

	for (size_t i = 0; i < c->ntls; i++) {
		if (tls_pem_read(c->tls[i].cert, &pems[i].cert,
		    &pems[i].cert_len, why, sizeof(why)) != 0) {
			snprintf(err, errlen, "tls-cert %s: %s", c->tls[i].cert, why);
			tls_pems_free(pems, c->ntls);
			return -1;
		}
		if (tls_pem_read(c->tls[i].key, &pems[i].key,
		    &pems[i].key_len, why, sizeof(why)) != 0) {
			snprintf(err, errlen, "tls-key %s: %s", c->tls[i].key, why);
			tls_pems_free(pems, c->ntls);
			return -1;
		}
	}
	*out = pems;
	return 0;
}

void
tls_pems_free(struct tls_pem *pems, size_t n)
{
	if (pems == NULL)
		return;
	for (size_t i = 0; i < n; i++) {
		free(pems[i].cert);
		if (pems[i].key != NULL)
			OPENSSL_cleanse(pems[i].key, pems[i].key_len);
		free(pems[i].key);
	}
	free(pems);
}

/* Never prompt for a pass phrase: encrypted keys are refused. */
static int
tls_no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

/*
 * One pair in memory: the leaf (first certificate), its chain (the rest, in
 * order) and the key, which must match the leaf. 0, or -1 with err.
 */
struct tls_pair_parsed {
	X509 *leaf;
	STACK_OF(X509) *chain;
	EVP_PKEY *key;
};

static void
tls_pair_parsed_free(struct tls_pair_parsed *pp)
{
	X509_free(pp->leaf);
	sk_X509_pop_free(pp->chain, X509_free);
	EVP_PKEY_free(pp->key);
	memset(pp, 0, sizeof(*pp));
}

static int
tls_pair_parse(const struct conf_tls_pair *p, const struct tls_pem *m,
    struct tls_pair_parsed *pp, char *err, size_t errlen)
{
	BIO *b;
	X509 *x;

	memset(pp, 0, sizeof(*pp));
	if (m->cert_len > INT_MAX || m->key_len > INT_MAX ||
	    (b = BIO_new_mem_buf(m->cert, (int)m->cert_len)) == NULL) {
		tls_err(err, errlen, "tls-cert", p->cert);
		return -1;
	}
	pp->leaf = PEM_read_bio_X509_AUX(b, NULL, tls_no_passphrase, NULL);
	pp->chain = sk_X509_new_null();
	while (pp->leaf != NULL && pp->chain != NULL &&
	    (x = PEM_read_bio_X509(b, NULL, tls_no_passphrase, NULL)) != NULL)
		if (sk_X509_push(pp->chain, x) == 0) {
			X509_free(x);
			break;
		}
	BIO_free(b);
	unsigned long e = ERR_peek_last_error();
	if (pp->leaf == NULL || pp->chain == NULL ||
	    !(ERR_GET_LIB(e) == ERR_LIB_PEM &&
	    ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
		tls_err(err, errlen, "tls-cert", p->cert);
		tls_pair_parsed_free(pp);
		return -1;
	}
	ERR_clear_error();
	if ((b = BIO_new_mem_buf(m->key, (int)m->key_len)) == NULL ||
	    (pp->key = PEM_read_bio_PrivateKey(b, NULL, tls_no_passphrase,
	    NULL)) == NULL) {
		BIO_free(b);
		tls_err(err, errlen, "tls-key", p->key);
		tls_pair_parsed_free(pp);
		return -1;
	}
	BIO_free(b);
	if (X509_check_private_key(pp->leaf, pp->key) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "tls-key %s does not match tls-cert %s",
		    p->key, p->cert);
		tls_pair_parsed_free(pp);
		return -1;
	}
	return 0;
}

/* Install a parsed pair as the context's certificate of its key type. */
static int
tls_ctx_use_pair(SSL_CTX *ctx, const struct conf_tls_pair *p,
    const struct tls_pair_parsed *pp, char *err, size_t errlen)
{
	if (SSL_CTX_use_certificate(ctx, pp->leaf) != 1 ||
	    SSL_CTX_clear_chain_certs(ctx) != 1) {
		tls_err(err, errlen, "tls-cert", p->cert);
		return -1;
	}
	for (int i = 0; i < sk_X509_num(pp->chain); i++)
		if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(pp->chain, i)) != 1) {
			tls_err(err, errlen, "tls-cert", p->cert);
			return -1;
		}
	if (SSL_CTX_use_PrivateKey(ctx, pp->key) != 1) {
		tls_err(err, errlen, "tls-key", p->key);
		return -1;
	}
	return 0;
}

/* The context that takes a key of this type: the first without one. */
static int
tls_server_slot(struct tls_server *t, int type, size_t *kout, int *slotout,
    char *err, size_t errlen)
{
	size_t k;

	for (k = 0; k < t->nctx; k++) {
		int taken = 0;
		for (int j = 0; j < 4; j++)
			if (t->keytypes[k][j] == type)
				taken = 1;
		if (!taken)
			break;
	}
	if (k == t->nctx) {
		if (t->nctx == TLS_MAX_CTX) {
			snprintf(err, errlen, "too many certificate pairs");
			return -1;
		}
		if ((t->ctx[k] = tls_server_ctx_new(t, err, errlen)) == NULL)
			return -1;
		t->nctx++;
	}
	int slot;
	for (slot = 0; slot < 4 && t->keytypes[k][slot] != 0; slot++)
		;
	if (slot == 4) {
		snprintf(err, errlen, "too many key types for one name");
		return -1;
	}
	*kout = k;
	*slotout = slot;
	return 0;
}

struct tls_server *
tls_server_new_pem(const struct conf *c, const struct tls_pem *pems,
    char *err, size_t errlen)
{
	struct tls_server *t = xcalloc(1, sizeof(*t));
	struct tls_pair_parsed pp;
	t->refcnt = 1;
	t->tickets = c->tls_session_tickets;
	t->ticket_lifetime = c->tls_ticket_lifetime;
	pthread_once(&tls_ssl_idx_once, tls_ssl_idx_init);

	for (size_t i = 0; i < c->ntls; i++) {
		const struct conf_tls_pair *p = &c->tls[i];
		size_t k;
		int slot;

		if (tls_pair_parse(p, &pems[i], &pp, err, errlen) != 0)
			goto fail;
		int type = EVP_PKEY_base_id(pp.key);
		if (tls_server_slot(t, type, &k, &slot, err, errlen) != 0 ||
		    tls_ctx_use_pair(t->ctx[k], p, &pp, err, errlen) != 0) {
			tls_pair_parsed_free(&pp);
			goto fail;
		}
		tls_pair_parsed_free(&pp);
		t->keytypes[k][slot] = type;
	}
	if (t->nctx == 0) {
		snprintf(err, errlen, "no tls-cert/tls-key configured");
		goto fail;
	}
	return t;
fail:
	tls_server_unref(t);
	return NULL;
}

struct tls_server *
tls_server_new(const struct conf *c, char *err, size_t errlen)
{
	struct tls_pem *pems;
	struct tls_server *t;

	if (tls_pems_load(c, &pems, err, errlen) != 0)
		return NULL;
	t = tls_server_new_pem(c, pems, err, errlen);
	tls_pems_free(pems, c->ntls);
	return t;
}

struct tls_server *
tls_server_ref(struct tls_server *t)
{
	__atomic_add_fetch(&t->refcnt, 1, __ATOMIC_RELAXED);
	return t;
}

void
tls_server_unref(struct tls_server *t)
{
	if (t == NULL || __atomic_sub_fetch(&t->refcnt, 1, __ATOMIC_ACQ_REL) != 0)
		return;
	for (size_t i = 0; i < t->nctx; i++)
		SSL_CTX_free(t->ctx[i]);
	free(t);
}

SSL *
tls_server_ssl_new(struct tls_server *t)
{
	SSL *ssl;

	pthread_once(&tls_ssl_idx_once, tls_ssl_idx_init);
	if (tls_ssl_idx < 0 || (ssl = SSL_new(t->ctx[0])) == NULL)
		return NULL;
	if (SSL_set_ex_data(ssl, tls_ssl_idx, tls_server_ref(t)) != 1) {
		tls_server_unref(t);
		SSL_free(ssl);
		return NULL;
	}
	return ssl;
}
