/*
 * dkim.h - DKIM signing (RFC 6376, RFC 8463): the relaxed/relaxed
 * canonicaliser as a streaming state machine, the choice and order of the
 * signed header fields, the DKIM-Signature field (built and folded), the
 * keys (RSA >= 1024 bits, Ed25519) and the signature itself.
 *
 * The canonicaliser is fed the message (header section and body, lines
 * ending in CRLF, as the DATA filter writes them) in chunks of any size,
 * once, while the message is written to the queue: the body goes through
 * the relaxed body canonicalisation (RFC 6376 3.4.4) straight into SHA-256;
 * of the header section it keeps only the fields it may sign, already
 * canonicalised (3.4.2), within DKIM_HDR_MAX bytes. Any split of the input
 * gives the same body hash and the same fields. No I/O, no globals; it
 * allocates only its own bounded buffers.
 *
 * Signed header fields (h=), in this order, each as many times as it is
 * present, From: once more (oversigned, so a second From: cannot be added
 * without breaking the signature): DKIM_SIGNED_HEADERS below. Instances
 * are signed bottom-up (RFC 6376 5.4.2).
 */
#ifndef TERN_DKIM_H
#define TERN_DKIM_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define DKIM_HDR_MAX      (64 * 1024)  /* canonical bytes of signed fields kept */
#define DKIM_FIELDS_MAX   128          /* signed header fields kept */
#define DKIM_KEY_FILE_MAX (64 * 1024)  /* a PEM private key file */
#define DKIM_SIG_MAX      8192         /* one DKIM-Signature field, folded */

/* The header names signed, lowercase, NULL-ended (documented in tern.conf.5). */
extern const char *const dkim_signed_headers[];

enum dkim_alg { DKIM_ALG_RSA_SHA256, DKIM_ALG_ED25519_SHA256 };

/* ---- the streaming canonicaliser ---- */

struct dkim_field {
	uint32_t off, len;            /* in hbuf: "name:value\r\n" canonical */
	uint8_t name;                 /* index in dkim_signed_headers */
};

struct dkim_canon {
	int state;                    /* private */
	int overflow;                 /* the kept fields passed the limits */
	/* header section */
	char name[32];                /* private: the current field's name */
	size_t name_len;
	int capture;                  /* private: index + 1 of a kept name */
	char *raw;                    /* owned: the current kept field, raw */
	size_t raw_len, raw_cap;
	char *hbuf;                   /* owned: kept fields, canonical */
	size_t hlen, hcap;
	struct dkim_field fields[DKIM_FIELDS_MAX];
	size_t nfields;
	/* body */
	void *md;                     /* owned: EVP_MD_CTX (SHA-256) */
	uint64_t nblank;              /* empty lines not yet hashed */
	int wsp;                      /* WSP pending in the current line */
	int cr;                       /* a CR waiting for its LF */
	int line;                     /* the current line has content */
	char obuf[2048];              /* private: output not yet hashed */
	size_t olen;
	int done;
	unsigned char bh[32];         /* the body hash, after dkim_canon_finish */
};

/* 0, or -1 if OpenSSL cannot give a SHA-256 context. */
int dkim_canon_init(struct dkim_canon *c);
void dkim_canon_feed(struct dkim_canon *c, const char *p, size_t len);
/* End of message: completes the body hash (c->bh). */
void dkim_canon_finish(struct dkim_canon *c);
void dkim_canon_free(struct dkim_canon *c);   /* the buffers; c itself not */

/*
 * Relaxed header canonicalisation of one whole field raw[0..len) (name,
 * colon, value, folded lines, final line end optional) into out (at least
 * len + 3 bytes): lowercase name, no WSP around the colon, unfolded, WSP
 * runs as one SP, none at the ends, then CRLF. Returns the length.
 */
size_t dkim_canon_header(const char *raw, size_t len, char *out);

/*
 * The domain of the single From: field's addresses, lowercase, in out
 * (NUL-terminated): 0; -1 when there is no From:, more than one, no
 * address, or addresses in different domains (then nothing is signed).
 */
int dkim_from_domain(const struct dkim_canon *c, char *out, size_t outlen);

/* ---- keys and signatures ---- */

struct dkim_key;

/*
 * A private key from PEM bytes: RSA of at least 1024 bits, or Ed25519.
 * NULL with a message in err otherwise. The caller owns the key.
 */
struct dkim_key *dkim_key_parse(const char *pem, size_t len, char *err,
    size_t errlen);
void dkim_key_free(struct dkim_key *k);    /* NULL is a no-op */
enum dkim_alg dkim_key_alg(const struct dkim_key *k);
const char *dkim_alg_name(enum dkim_alg a);   /* "rsa-sha256" ... */

/*
 * Read a key file (dkim_keyfile.c): a regular file of at most
 * DKIM_KEY_FILE_MAX bytes, not readable or writable by others. 0 with
 * *buf (NUL-terminated; free with dkim_key_buf_free) and *len, or -1
 * with a message in err.
 */
int dkim_key_file_read(const char *path, char **buf, size_t *len, char *err,
    size_t errlen);
void dkim_key_buf_free(char *buf, size_t len);   /* zeroes, then frees */

/*
 * The DNS TXT record value for k's public key, "v=DKIM1; k=rsa; p=...",
 * NUL-terminated in a new buffer (caller frees), or NULL.
 */
char *dkim_key_txt(const struct dkim_key *k);
/*
 * A new key: type "rsa" (bits >= 1024) or "ed25519". PEM (PKCS#8) of its
 * private key in *pem (caller frees). NULL with err.
 */
struct dkim_key *dkim_keygen(const char *type, unsigned bits, char **pem,
    char *err, size_t errlen);

/*
 * The DKIM-Signature field for a finished canonicaliser (dkim_canon_finish
 * done): d=domain, s=selector, t=t, h= the kept fields, bh=, b= signed by
 * k. The whole field with its CRLF, folded to lines of at most 78 octets
 * where it can be, goes to out (outlen >= DKIM_SIG_MAX); returns its
 * length, or 0 on a signing error.
 */
size_t dkim_sign(const struct dkim_canon *c, const struct dkim_key *k,
    const char *domain, const char *selector, time_t t, char *out,
    size_t outlen);

/*
 * Split a TXT record value into DNS character-strings of at most 255
 * octets, written as "..." "..." into out. Returns the length, 0 if out
 * is too small.
 */
size_t dkim_txt_strings(const char *txt, char *out, size_t outlen);

#endif
