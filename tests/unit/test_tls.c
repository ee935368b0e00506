/*
 * test_tls.c - smtpd/tls.c: bounded reads of certificate and key files
 * (regular files only, size bound, a FIFO does not hang) and server
 * contexts built from PEM bytes in memory: one pair, a chain, two key types
 * in one context, a key that does not match, garbage, an encrypted key
 * (refused, no prompt). Keys and certificates are made in process.
 * The session-ticket key ring's rules: rotation every lifetime/2, retired
 * keys still open tickets until 1.5 x lifetime, then are wiped.
 * The delivery client's CA store (queue/mta/tls_client.c) is read lazily
 * from a hashed directory.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "tern/conf.h"
#include "tern/tls.h"

static char tmpdir[512];

/* PEM text of bio (malloc'd, NUL-terminated). */
static char *
bio_text(BIO *b, size_t *len)
{
	char *p;
	long n = BIO_get_mem_data(b, &p);
	char *out = malloc((size_t)n + 1);

	assert_non_null(out);
	memcpy(out, p, (size_t)n);
	out[n] = '\0';
	*len = (size_t)n;
	return out;
}

/* A key of type "EC" or "RSA" and a certificate for cn signed by signer. */
static X509 *
make_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *ikey)
{
	X509 *x = X509_new();

	assert_non_null(x);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, key);
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
	    (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
	assert_true(X509_sign(x, ikey ? ikey : key, EVP_sha256()) > 0);
	return x;
}

static EVP_PKEY *
make_key(const char *type)
{
	EVP_PKEY *k = strcmp(type, "RSA") == 0 ?
	    EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048) :
	    EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");

	assert_non_null(k);
	return k;
}

static char *
cert_pem(X509 *x, X509 *chain, size_t *len)
{
	BIO *b = BIO_new(BIO_s_mem());
	PEM_write_bio_X509(b, x);
	if (chain != NULL)
		PEM_write_bio_X509(b, chain);
	char *s = bio_text(b, len);
	BIO_free(b);
	return s;
}

static char *
key_pem(EVP_PKEY *k, int encrypted, size_t *len)
{
	BIO *b = BIO_new(BIO_s_mem());
	if (encrypted)
		PEM_write_bio_PrivateKey(b, k, EVP_aes_128_cbc(),
		    (unsigned char *)"pass", 4, NULL, NULL);
	else
		PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
	char *s = bio_text(b, len);
	BIO_free(b);
	return s;
}

static struct conf_tls_pair pairs[2] = {
	{ .cert = "/c0.pem", .key = "/k0.pem" },
	{ .cert = "/c1.pem", .key = "/k1.pem" },
};

static struct tls_server *
build(struct tls_pem *pems, size_t n, char *err, size_t errlen)
{
	struct conf c;

	memset(&c, 0, sizeof(c));
	c.tls = pairs;
	c.ntls = n;
	return tls_server_new_pem(&c, pems, err, errlen);
}

static void
test_new_pem(void **state)
{
	EVP_PKEY *ca_key = make_key("EC"), *ec = make_key("EC");
	EVP_PKEY *rsa = make_key("RSA"), *other = make_key("EC");
	X509 *ca = make_cert("ca", ca_key, NULL, NULL);
	X509 *leaf = make_cert("mx.test", ec, ca, ca_key);
	X509 *rleaf = make_cert("mx.test", rsa, ca, ca_key);
	struct tls_pem p[2];
	struct tls_server *t;
	char err[512];

	/* one pair with its chain: the leaf and the CA after it */
	p[0].cert = cert_pem(leaf, ca, &p[0].cert_len);
	p[0].key = key_pem(ec, 0, &p[0].key_len);
	t = build(p, 1, err, sizeof(err));
	assert_non_null(t);
	SSL *ssl = tls_server_ssl_new(t);
	assert_non_null(ssl);
	assert_int_equal(X509_cmp(SSL_get_certificate(ssl), leaf), 0);
	STACK_OF(X509) *chain = NULL;
	assert_int_equal(SSL_get0_chain_certs(ssl, &chain), 1);
	assert_int_equal(sk_X509_num(chain), 1);
	assert_int_equal(X509_cmp(sk_X509_value(chain, 0), ca), 0);
	SSL_free(ssl);
	tls_server_unref(t);

	/* RSA and ECDSA pairs for one name: one context */
	p[1].cert = cert_pem(rleaf, NULL, &p[1].cert_len);
	p[1].key = key_pem(rsa, 0, &p[1].key_len);
	t = build(p, 2, err, sizeof(err));
	assert_non_null(t);
	tls_server_unref(t);
	free(p[1].cert);
	free(p[1].key);

	/* a key that is not the leaf's */
	free(p[0].key);
	p[0].key = key_pem(other, 0, &p[0].key_len);
	assert_null(build(p, 1, err, sizeof(err)));
	assert_string_equal(err, "tls-key /k0.pem does not match tls-cert /c0.pem");

	/* an encrypted key: refused, never a prompt */
	free(p[0].key);
	p[0].key = key_pem(ec, 1, &p[0].key_len);
	assert_null(build(p, 1, err, sizeof(err)));
	assert_true(strncmp(err, "tls-key /k0.pem: ", 17) == 0);

	/* garbage key, garbage certificate, an empty file */
	free(p[0].key);
	p[0].key = strdup("not a key\n");
	p[0].key_len = strlen(p[0].key);
	assert_null(build(p, 1, err, sizeof(err)));
	assert_true(strncmp(err, "tls-key /k0.pem: ", 17) == 0);
	free(p[0].key);
	p[0].key = key_pem(ec, 0, &p[0].key_len);
	char *good = p[0].cert;
	size_t good_len = p[0].cert_len;
	p[0].cert = "-----BEGIN CERTIFICATE-----\nxx\n-----END CERTIFICATE-----\n";
	p[0].cert_len = strlen(p[0].cert);
	assert_null(build(p, 1, err, sizeof(err)));
	assert_true(strncmp(err, "tls-cert /c0.pem: ", 18) == 0);
	p[0].cert_len = 0;
	assert_null(build(p, 1, err, sizeof(err)));
	assert_true(strncmp(err, "tls-cert /c0.pem: ", 18) == 0);
	/* a good leaf followed by a broken chain certificate */
	char *bad = malloc(good_len + 64);
	memcpy(bad, good, good_len);
	memcpy(bad + good_len, "-----BEGIN CERTIFICATE-----\nxx\n", 31);
	p[0].cert = bad;
	p[0].cert_len = good_len + 31;
	assert_null(build(p, 1, err, sizeof(err)));
	assert_true(strncmp(err, "tls-cert /c0.pem: ", 18) == 0);
	free(bad);
	free(good);
	free(p[0].key);

	X509_free(ca);
	X509_free(leaf);
	X509_free(rleaf);
	EVP_PKEY_free(ca_key);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(rsa);
	EVP_PKEY_free(other);
}

static void
test_pem_read(void **state)
{
	char path[600], err[256], *out = NULL;
	size_t len = 0;
	int fd;

	snprintf(path, sizeof(path), "%s/file.pem", tmpdir);
	fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "hello\n", 6), 6);
	close(fd);
	assert_int_equal(tls_pem_read(path, &out, &len, err, sizeof(err)), 0);
	assert_int_equal(len, 6);
	assert_memory_equal(out, "hello\n", 6);
	free(out);

	/* larger than TLS_PEM_MAX */
	assert_int_equal(truncate(path, TLS_PEM_MAX + 1), 0);
	assert_int_equal(tls_pem_read(path, &out, &len, err, sizeof(err)), -1);
	assert_string_equal(err, "larger than 1 MiB");
	assert_int_equal(truncate(path, TLS_PEM_MAX), 0);
	assert_int_equal(tls_pem_read(path, &out, &len, err, sizeof(err)), 0);
	assert_int_equal(len, TLS_PEM_MAX);
	free(out);
	unlink(path);

	/* missing, a directory, a FIFO with no writer (must not hang) */
	assert_int_equal(tls_pem_read(path, &out, &len, err, sizeof(err)), -1);
	assert_string_equal(err, strerror(ENOENT));
	assert_int_equal(tls_pem_read(tmpdir, &out, &len, err, sizeof(err)), -1);
	assert_string_equal(err, "not a regular file");
	assert_int_equal(mkfifo(path, 0600), 0);
	assert_int_equal(tls_pem_read(path, &out, &len, err, sizeof(err)), -1);
	assert_string_equal(err, "not a regular file");
	unlink(path);
}

/* The key ring, on a clock of our own: lifetime 100 s. */
static void
test_ticket_ring(void **state)
{
	struct tls_ticket_ring r;
	struct tls_ticket_key a, b, c, x;
	const unsigned life = 100;

	memset(&r, 0, sizeof(r));
	/* the first seal makes a key; it stays the sealing key for 49 s */
	assert_int_equal(tls_ticket_ring_seal_key(&r, 1000, life, &a), 0);
	assert_int_equal(tls_ticket_ring_seal_key(&r, 1049, life, &x), 0);
	assert_memory_equal(a.name, x.name, sizeof(a.name));
	assert_memory_equal(a.aes, x.aes, sizeof(a.aes));
	assert_int_equal(tls_ticket_ring_open_key(&r, a.name, 1049, life, &x), 1);
	assert_memory_equal(a.hmac, x.hmac, sizeof(a.hmac));

	/* at lifetime/2 the key is due: it opens, asking for a new ticket */
	assert_int_equal(tls_ticket_ring_open_key(&r, a.name, 1050, life, &x), 2);
	/* at lifetime/2 a new key takes over; the old one still opens (2) */
	assert_int_equal(tls_ticket_ring_seal_key(&r, 1050, life, &b), 0);
	assert_memory_not_equal(a.name, b.name, sizeof(a.name));
	assert_memory_not_equal(a.aes, b.aes, sizeof(a.aes));
	assert_int_equal(tls_ticket_ring_open_key(&r, b.name, 1050, life, &x), 1);
	assert_int_equal(tls_ticket_ring_open_key(&r, a.name, 1050, life, &x), 2);
	assert_memory_equal(a.aes, x.aes, sizeof(a.aes));

	/* a third key; the first one opens until 1.5 x lifetime after its birth */
	assert_int_equal(tls_ticket_ring_seal_key(&r, 1120, life, &c), 0);
	assert_int_equal(tls_ticket_ring_open_key(&r, a.name, 1149, life, &x), 2);
	assert_int_equal(tls_ticket_ring_open_key(&r, a.name, 1150, life, &x), 0);
	assert_int_equal(tls_ticket_ring_open_key(&r, b.name, 1150, life, &x), 2);
	/* and is wiped from the ring */
	for (size_t i = 0; i < TLS_TICKET_KEYS; i++)
		assert_memory_not_equal(r.k[i].name, a.name, sizeof(a.name));

	/* an unknown name */
	memset(x.name, 0x5a, sizeof(x.name));
	assert_int_equal(tls_ticket_ring_open_key(&r, x.name, 1150, life, &x), 0);

	/* long silence: every key expires, the next seal makes a fresh one */
	assert_int_equal(tls_ticket_ring_open_key(&r, c.name, 1270, life, &x), 0);
	assert_int_equal(tls_ticket_ring_seal_key(&r, 1270, life, &x), 0);
	assert_memory_not_equal(x.name, c.name, sizeof(x.name));
	int live = 0;
	for (size_t i = 0; i < TLS_TICKET_KEYS; i++)
		live += r.k[i].used;
	assert_int_equal(live, 1);

	/* a clock that steps back wipes rather than trusts; lifetime 0 wipes all */
	assert_int_equal(tls_ticket_ring_open_key(&r, x.name, 1269, life, &x), 0);
	assert_int_equal(tls_ticket_ring_seal_key(&r, 1300, life, &x), 0);
	tls_ticket_ring_expire(&r, 1300, 0);
	for (size_t i = 0; i < TLS_TICKET_KEYS; i++)
		assert_int_equal(r.k[i].used, 0);
	assert_int_equal(tls_ticket_ring_seal_key(&r, 1300, 0, &x), -1);
}

static void
write_text(const char *path, const char *text, size_t len)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(text, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
}

static int
store_count(SSL_CTX *ctx)
{
	return sk_X509_OBJECT_num(X509_STORE_get0_objects(
	    SSL_CTX_get_cert_store(ctx)));
}

/*
 * The delivery client's trust anchors (queue/mta/tls_client.c): from a
 * hashed directory, with no SSL_CERT_FILE, nothing is parsed up front (the
 * system bundle would be ~150 certificates), yet a chain to a CA stored
 * there verifies, the CA read when needed; SSL_CERT_FILE loads its bundle
 * whole at once.
 */
static void
test_client_trust(void **state)
{
	EVP_PKEY *cakey = make_key("EC"), *leafkey = make_key("EC");
	X509 *ca = make_cert("Tern Test CA", cakey, NULL, NULL);
	X509 *leaf = make_cert("mx.test", leafkey, ca, cakey);
	char dir[600], path[700], file[700];
	size_t len;
	char *pem = cert_pem(ca, NULL, &len);

	snprintf(dir, sizeof(dir), "%s/cadir", tmpdir);
	assert_true(mkdir(dir, 0700) == 0 || errno == EEXIST);
	snprintf(path, sizeof(path), "%s/%08lx.0", dir,
	    X509_subject_name_hash(ca));
	write_text(path, pem, len);
	snprintf(file, sizeof(file), "%s/bundle.pem", tmpdir);
	write_text(file, pem, len);

	assert_int_equal(setenv("SSL_CERT_DIR", dir, 1), 0);
	unsetenv("SSL_CERT_FILE");
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(ctx);
	tls_client_trust(ctx);
	assert_int_equal(store_count(ctx), 0);          /* nothing parsed yet */
	X509_STORE_CTX *vc = X509_STORE_CTX_new();
	assert_non_null(vc);
	assert_int_equal(X509_STORE_CTX_init(vc, SSL_CTX_get_cert_store(ctx),
	    leaf, NULL), 1);
	assert_int_equal(X509_verify_cert(vc), 1);
	X509_STORE_CTX_free(vc);
	assert_int_equal(store_count(ctx), 1);          /* the CA, on demand */
	SSL_CTX_free(ctx);

	assert_int_equal(setenv("SSL_CERT_FILE", file, 1), 0);
	ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(ctx);
	tls_client_trust(ctx);
	assert_true(store_count(ctx) >= 1);             /* the bundle, at once */
	SSL_CTX_free(ctx);

	unsetenv("SSL_CERT_FILE");
	unsetenv("SSL_CERT_DIR");
	unlink(path);
	unlink(file);
	rmdir(dir);
	free(pem);
	X509_free(leaf);
	X509_free(ca);
	EVP_PKEY_free(leafkey);
	EVP_PKEY_free(cakey);
}

static int
setup(void **state)
{
	const char *d = getenv("TERN_TEST_TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/tls-%ld", d ? d : "/tmp",
	    (long)getpid());
	if (mkdir(tmpdir, 0700) != 0 && errno != EEXIST)
		return -1;
	return 0;
}

static int
teardown(void **state)
{
	rmdir(tmpdir);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pem_read),
		cmocka_unit_test(test_new_pem),
		cmocka_unit_test(test_ticket_ring),
		cmocka_unit_test(test_client_trust),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
