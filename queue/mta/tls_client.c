/*
 * tls_client.c - the delivery client's OpenSSL context and connections
 * (see tern/tls.h), and the one-line description of a TLS session that
 * both the client and ternd's server sessions log.
 *
 * The context is built once per delivery pool (TLS 1.2+, no compression,
 * no renegotiation, the system CA store: tls_client_trust); SSL objects are made per
 * connection on any worker thread. With verification the peer's chain and
 * name (no partial wildcards) are checked by OpenSSL. tls_libevent_init()
 * makes libevent_openssl's lazily built BIO method before threads race to.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include "tern/log.h"
#include "tern/tls.h"

/* Does one of the directories of list (':'-separated) hold a hashed name
 * ("5ad8a5d6.0", as `openssl rehash` makes)? */
static int
tls_dir_hashed(const char *list)
{
	char buf[4096];
	int found = 0;

	if (strlen(list) >= sizeof(buf))
		return 0;
	memcpy(buf, list, strlen(list) + 1);
	for (char *save = NULL, *d = strtok_r(buf, ":", &save); d != NULL && !found;
	    d = strtok_r(NULL, ":", &save)) {
		DIR *dp = opendir(d);
		struct dirent *e;
		if (dp == NULL)
			continue;
		while (!found && (e = readdir(dp)) != NULL)
			found = strlen(e->d_name) >= 10 &&
			    strspn(e->d_name, "0123456789abcdef") == 8 &&
			    e->d_name[8] == '.' &&
			    strspn(e->d_name + 9, "0123456789") == strlen(e->d_name + 9);
		closedir(dp);
	}
	return found;
}

/*
 * Trust anchors for tls-policy verify and MTA-STS: the system store, where
 * OpenSSL's defaults put it (SSL_CERT_FILE and SSL_CERT_DIR override).
 * The hashed directory is read lazily, one certificate when a chain needs
 * it; the bundle file is parsed whole at once (on Debian ~150
 * certificates: ~70 ms of CPU at every start, and their memory), so it is
 * loaded only when SSL_CERT_FILE names it or when no directory holds
 * hashed names. On Debian both hold the same CAs (update-ca-certificates
 * writes both).
 */
void
tls_client_trust(SSL_CTX *ctx)
{
	const char *file = getenv(X509_get_default_cert_file_env());
	const char *dir = getenv(X509_get_default_cert_dir_env());

	if (dir == NULL || dir[0] == '\0')
		dir = X509_get_default_cert_dir();
	if ((file == NULL || file[0] == '\0') && tls_dir_hashed(dir)) {
		if (SSL_CTX_load_verify_dir(ctx, dir) != 1)
			log_warnx("tls: cannot use the CA directory %s", dir);
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1)
		log_warnx("tls: cannot load the system CA store");
	ERR_clear_error();
}

SSL_CTX *
tls_client_ctx_new(char *err, size_t errlen)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	if (ctx == NULL) {
		unsigned long e = ERR_get_error();
		char buf[256];
		ERR_error_string_n(e, buf, sizeof(buf));
		snprintf(err, errlen, "SSL_CTX_new client: %s", e ? buf : "failed");
		ERR_clear_error();
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	tls_client_trust(ctx);
	/* DANE (queue/mta/dane.c) is enabled per connection on top */
	if (SSL_CTX_dane_enable(ctx) <= 0)
		log_warnx("tls: cannot enable DANE verification");
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	return ctx;
}

void
tls_libevent_init(void)
{
	struct event_base *base = event_base_new();
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	SSL *ssl = ctx != NULL ? SSL_new(ctx) : NULL;
	struct bufferevent *under = NULL, *tb = NULL;

	if (base != NULL)
		under = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (under != NULL && ssl != NULL)
		tb = bufferevent_openssl_filter_new(base, under, ssl,
		    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (tb == NULL)
		fatalx("tls: cannot set up libevent's TLS filters");
	bufferevent_free(tb);   /* frees under and ssl */
	SSL_CTX_free(ctx);
	event_base_free(base);
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
