/*
 * tls.c - OpenSSL contexts (see tern/tls.h).
 *
 * Runs in main() at start-up and at SIGHUP (building contexts), and on any
 * thread afterwards (SSL objects from an immutable context are thread-safe
 * to create). Reads certificate and key files; never sees peer bytes
 * itself (OpenSSL does), except the SNI name, compared with X509_check_host.
 *
 * RFC 8314 (implicit TLS), RFC 3207 (STARTTLS), RFC 7525/9325 (TLS 1.2+,
 * AEAD with forward secrecy).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tern/log.h"
#include "tern/tls.h"
#include "tern/util.h"

/* TLS 1.2 suites: ECDHE/DHE only (forward secrecy), AEAD only. */
#define TLS_CIPHERS_12 \
	"ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:" \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:" \
	"DHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES128-GCM-SHA256"

#define TLS_MAX_CTX 16

struct tls_server {
	int refcnt;
	SSL_CTX *ctx[TLS_MAX_CTX];      /* owned; ctx[0] is the default */
	int keytypes[TLS_MAX_CTX][4];   /* EVP_PKEY ids loaded in each ctx */
	size_t nctx;
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

static void
tls_ssl_idx_init(void)
{
	tls_ssl_idx = SSL_get_ex_new_index(0, NULL, NULL, NULL,
	    tls_ssl_ref_free);
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
tls_server_ctx_new(char *err, size_t errlen)
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
	if (SSL_CTX_set_cipher_list(ctx, TLS_CIPHERS_12) != 1) {
		tls_err(err, errlen, "cipher list", "");
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_dh_auto(ctx, 1);
	SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
	SSL_CTX_sess_set_cache_size(ctx, 20000);
	SSL_CTX_set_timeout(ctx, 3600);
	SSL_CTX_set_tlsext_servername_callback(ctx, tls_sni_cb);
	/* Partial writes let libevent hand OpenSSL less than a whole record. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	return ctx;
}

struct tls_server *
tls_server_new(const struct conf *c, char *err, size_t errlen)
{
	struct tls_server *t = xcalloc(1, sizeof(*t));
	t->refcnt = 1;

	for (size_t i = 0; i < c->ntls; i++) {
		const struct conf_tls_pair *p = &c->tls[i];
		SSL_CTX *tmp = SSL_CTX_new(TLS_server_method());
		if (tmp == NULL) {
			tls_err(err, errlen, "SSL_CTX_new", "");
			goto fail;
		}
		/* Load into a scratch context first to learn the key type. */
		if (SSL_CTX_use_certificate_chain_file(tmp, p->cert) != 1) {
			tls_err(err, errlen, "tls-cert", p->cert);
			SSL_CTX_free(tmp);
			goto fail;
		}
		if (SSL_CTX_use_PrivateKey_file(tmp, p->key, SSL_FILETYPE_PEM) != 1) {
			tls_err(err, errlen, "tls-key", p->key);
			SSL_CTX_free(tmp);
			goto fail;
		}
		if (SSL_CTX_check_private_key(tmp) != 1) {
			snprintf(err, errlen, "tls-key %s does not match tls-cert %s",
			    p->key, p->cert);
			SSL_CTX_free(tmp);
			goto fail;
		}
		int type = EVP_PKEY_base_id(SSL_CTX_get0_privatekey(tmp));
		SSL_CTX_free(tmp);

		/* First context without this key type takes the pair. */
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
				goto fail;
			}
			if ((t->ctx[k] = tls_server_ctx_new(err, errlen)) == NULL)
				goto fail;
			t->nctx++;
		}
		int slot;
		for (slot = 0; slot < 4 && t->keytypes[k][slot] != 0; slot++)
			;
		if (slot == 4) {
			snprintf(err, errlen, "too many key types for one name");
			goto fail;
		}
		if (SSL_CTX_use_certificate_chain_file(t->ctx[k], p->cert) != 1) {
			tls_err(err, errlen, "tls-cert", p->cert);
			goto fail;
		}
		if (SSL_CTX_use_PrivateKey_file(t->ctx[k], p->key,
		    SSL_FILETYPE_PEM) != 1) {
			tls_err(err, errlen, "tls-key", p->key);
			goto fail;
		}
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

SSL_CTX *
tls_client_ctx_new(char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		tls_err(err, errlen, "SSL_CTX_new", "client");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	if (SSL_CTX_set_default_verify_paths(ctx) != 1)
		log_warnx("tls: cannot load the system CA store");
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	return ctx;
}

SSL *
tls_client_ssl_new(SSL_CTX *ctx, const char *host, int verify)
{
	SSL *ssl = SSL_new(ctx);
	if (ssl == NULL)
		return NULL;
	if (host != NULL && host[0] != '\0' && host[0] != '[')
		SSL_set_tlsext_host_name(ssl, host);
	if (verify) {
		SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
		X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
		X509_VERIFY_PARAM_set_hostflags(vp,
		    X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (X509_VERIFY_PARAM_set1_host(vp, host, 0) != 1) {
			SSL_free(ssl);
			return NULL;
		}
	} else {
		SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
	}
	return ssl;
}

void
tls_describe(SSL *ssl, char *buf, size_t len)
{
	snprintf(buf, len, "%s %s", SSL_get_version(ssl),
	    SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)));
}
