/*
 * dkim.c - DKIM signing (RFC 6376, RFC 8463); see tern/dkim.h.
 *
 * Runs on a session loop (the canonicaliser, fed from the data path, and
 * the signature at the end of data), in ternd's main thread (keys at start
 * and reload) and in ternctl (keygen). Never logs, never does I/O; keys are
 * read-only once parsed, so loops share them.
 *
 * Untrusted input: the message bytes. The header state machine keeps only
 * the fields it may sign, bounded (DKIM_HDR_MAX, DKIM_FIELDS_MAX): past
 * the bounds it stops keeping and marks the canonicaliser overflowed (the
 * message then goes unsigned). The body is hashed as it streams: no byte
 * of it is kept.
 *
 * Relaxed canonicalisation (RFC 6376 3.4.2, 3.4.4), header and body;
 * signature rsa-sha256 (3.3.1) and ed25519-sha256 (RFC 8463 3: Ed25519
 * over the SHA-256 hash of the header data, not over the data itself).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "tern/dkim.h"
#include "tern/mailhdr.h"
#include "tern/util.h"

const char *const dkim_signed_headers[] = {
	"from", "to", "cc", "subject", "date", "message-id", "reply-to",
	"in-reply-to", "references", "mime-version", "content-type",
	"content-transfer-encoding", "list-id", "list-help", "list-subscribe",
	"list-unsubscribe", "list-unsubscribe-post", "list-post", "list-owner",
	"list-archive", NULL,
};

struct dkim_key {
	EVP_PKEY *pkey;
	enum dkim_alg alg;
};

/* header states, then the body */
enum { DK_EOL, DK_EOL_CR, DK_NAME, DK_VALUE, DK_VALUE_CR, DK_BODY };

static int
dkim_is_wsp(int ch)
{
	return ch == ' ' || ch == '\t';
}

int
dkim_canon_init(struct dkim_canon *c)
{
	memset(c, 0, sizeof(*c));
	c->state = DK_EOL;
	if ((c->md = EVP_MD_CTX_new()) == NULL)
		return -1;
	if (EVP_DigestInit_ex(c->md, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(c->md);
		c->md = NULL;
		return -1;
	}
	return 0;
}

void
dkim_canon_free(struct dkim_canon *c)
{
	EVP_MD_CTX_free(c->md);
	c->md = NULL;
	free(c->raw);
	free(c->hbuf);
	c->raw = c->hbuf = NULL;
	c->raw_len = c->raw_cap = c->hlen = c->hcap = 0;
}

/* ---- header section ---- */

size_t
dkim_canon_header(const char *raw, size_t len, char *out)
{
	size_t i = 0, n = 0, vstart;
	int sp = 0;

	/* name, lowercase, without the WSP before the colon */
	for (; i < len && raw[i] != ':'; i++)
		if (!dkim_is_wsp((unsigned char)raw[i]))
			out[n++] = (char)((raw[i] >= 'A' && raw[i] <= 'Z') ?
			    raw[i] + 32 : raw[i]);
	out[n++] = ':';
	vstart = n;
	if (i < len)
		i++;
	/* value: unfolded, WSP runs as one SP, none at either end */
	for (; i < len; i++) {
		char ch = raw[i];
		if (ch == '\r' || ch == '\n')
			continue;
		if (dkim_is_wsp((unsigned char)ch)) {
			sp = 1;
			continue;
		}
		if (sp && n > vstart)      /* none at the start of the value */
			out[n++] = ' ';
		sp = 0;
		out[n++] = ch;
	}
	out[n++] = '\r';
	out[n++] = '\n';
	return n;
}

static int
dkim_grow(char **buf, size_t *cap, size_t need)
{
	size_t ncap = *cap ? *cap : 1024;
	char *nb;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	if ((nb = realloc(*buf, ncap)) == NULL)
		return -1;
	*buf = nb;
	*cap = ncap;
	return 0;
}

/* The field in c->raw is complete: keep it canonical. */
static void
dkim_field_close(struct dkim_canon *c)
{
	if (!c->capture)
		return;
	if (c->nfields == DKIM_FIELDS_MAX || c->hlen + c->raw_len + 3 >
	    DKIM_HDR_MAX || dkim_grow(&c->hbuf, &c->hcap, c->hlen +
	    c->raw_len + 3) < 0) {
		c->overflow = 1;
	} else {
		struct dkim_field *f = &c->fields[c->nfields++];
		f->off = (uint32_t)c->hlen;
		f->len = (uint32_t)dkim_canon_header(c->raw, c->raw_len,
		    c->hbuf + c->hlen);
		f->name = (uint8_t)(c->capture - 1);
		c->hlen += f->len;
	}
	c->capture = 0;
	c->raw_len = 0;
}

static void
dkim_raw_put(struct dkim_canon *c, const char *p, size_t n)
{
	if (!c->capture)
		return;
	if (c->raw_len + n > DKIM_HDR_MAX ||
	    dkim_grow(&c->raw, &c->raw_cap, c->raw_len + n) < 0) {
		c->overflow = 1;
		c->capture = 0;
		c->raw_len = 0;
		return;
	}
	memcpy(c->raw + c->raw_len, p, n);
	c->raw_len += n;
}

/* A colon ended the field name: is it one we sign? */
static void
dkim_name_done(struct dkim_canon *c)
{
	size_t n = c->name_len;

	while (n > 0 && dkim_is_wsp((unsigned char)c->name[n - 1]))
		n--;
	c->capture = 0;
	if (c->name_len >= sizeof(c->name))
		return;
	for (size_t k = 0; dkim_signed_headers[k] != NULL; k++)
		if (ascii_casecmp_n(c->name, n, dkim_signed_headers[k],
		    strlen(dkim_signed_headers[k])) == 0) {
			c->capture = (int)k + 1;
			break;
		}
	dkim_raw_put(c, c->name, c->name_len);
	dkim_raw_put(c, ":", 1);
}

/* Header bytes; returns how many were header (the rest is body). */
static size_t
dkim_header_feed(struct dkim_canon *c, const char *p, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		char ch = p[i];
again:
		switch (c->state) {
		case DK_EOL:
			if (dkim_is_wsp((unsigned char)ch)) {   /* folded */
				dkim_raw_put(c, &ch, 1);
				c->state = DK_VALUE;
			} else if (ch == '\r')
				c->state = DK_EOL_CR;
			else if (ch == '\n') {
				dkim_field_close(c);
				c->state = DK_BODY;
				return i + 1;
			} else {
				dkim_field_close(c);
				c->name[0] = ch;
				c->name_len = 1;
				c->state = DK_NAME;
			}
			break;
		case DK_EOL_CR:
			dkim_field_close(c);
			if (ch == '\n') {
				c->state = DK_BODY;
				return i + 1;
			}
			c->state = DK_VALUE;     /* a line that is no field */
			goto again;
		case DK_NAME:
			if (ch == ':') {
				dkim_name_done(c);
				c->state = DK_VALUE;
			} else if (ch == '\r' || ch == '\n') {
				c->state = ch == '\r' ? DK_VALUE_CR : DK_EOL;
			} else if (c->name_len < sizeof(c->name))
				c->name[c->name_len++] = ch;
			else
				c->name_len = sizeof(c->name);  /* too long: not ours */
			break;
		case DK_VALUE:
		case DK_VALUE_CR:
			dkim_raw_put(c, &ch, 1);
			if (ch == '\n')
				c->state = DK_EOL;
			else
				c->state = ch == '\r' ? DK_VALUE_CR : DK_VALUE;
			break;
		}
	}
	return len;
}

/* ---- body ---- */

static void
dkim_out(struct dkim_canon *c, const char *p, size_t n)
{
	if (c->olen + n > sizeof(c->obuf)) {
		EVP_DigestUpdate(c->md, c->obuf, c->olen);
		c->olen = 0;
		if (n > sizeof(c->obuf)) {
			EVP_DigestUpdate(c->md, p, n);
			return;
		}
	}
	memcpy(c->obuf + c->olen, p, n);
	c->olen += n;
}

/* Content (no WSP, no CRLF): first the empty lines and the WSP it follows. */
static void
dkim_body_text(struct dkim_canon *c, const char *p, size_t n)
{
	for (; c->nblank > 0; c->nblank--)
		dkim_out(c, "\r\n", 2);
	if (c->wsp)
		dkim_out(c, " ", 1);
	c->wsp = 0;
	dkim_out(c, p, n);
	c->line = 1;
}

static void
dkim_body_eol(struct dkim_canon *c)
{
	c->wsp = 0;             /* WSP at the end of a line goes */
	if (c->line)
		dkim_out(c, "\r\n", 2);
	else
		c->nblank++;    /* hashed only if content follows */
	c->line = 0;
}

static void
dkim_body_feed(struct dkim_canon *c, const char *p, size_t len)
{
	size_t i = 0;

	while (i < len) {
		char ch = p[i];
		if (c->cr) {
			c->cr = 0;
			if (ch == '\n') {
				dkim_body_eol(c);
				i++;
				continue;
			}
			dkim_body_text(c, "\r", 1);    /* a bare CR is content */
		}
		if (ch == '\r') {
			c->cr = 1;
			i++;
		} else if (dkim_is_wsp((unsigned char)ch)) {
			c->wsp = 1;
			i++;
		} else {
			size_t j = i + 1;
			while (j < len && p[j] != '\r' && p[j] != ' ' &&
			    p[j] != '\t')
				j++;
			dkim_body_text(c, p + i, j - i);
			i = j;
		}
	}
}

void
dkim_canon_feed(struct dkim_canon *c, const char *p, size_t len)
{
	if (c->done || len == 0)
		return;
	if (c->state != DK_BODY) {
		size_t n = dkim_header_feed(c, p, len);
		p += n;
		len -= n;
	}
	if (len > 0)
		dkim_body_feed(c, p, len);
}

void
dkim_canon_finish(struct dkim_canon *c)
{
	unsigned int n = 0;

	if (c->done)
		return;
	if (c->state != DK_BODY)
		dkim_field_close(c);    /* headers only, no empty line */
	if (c->cr) {
		c->cr = 0;
		dkim_body_text(c, "\r", 1);
	}
	if (c->line)            /* no CRLF at the end: one is added */
		dkim_out(c, "\r\n", 2);
	EVP_DigestUpdate(c->md, c->obuf, c->olen);
	c->olen = 0;
	EVP_DigestFinal_ex(c->md, c->bh, &n);
	c->done = 1;
}

int
dkim_from_domain(const struct dkim_canon *c, char *out, size_t outlen)
{
	const struct dkim_field *from = NULL;
	char addr[1024];
	size_t off = 0;
	int naddr = 0;

	for (size_t i = 0; i < c->nfields; i++)
		if (c->fields[i].name == 0) {
			if (from != NULL)
				return -1;      /* two From: fields */
			from = &c->fields[i];
		}
	if (from == NULL || outlen == 0)
		return -1;
	/* canonical "from:value\r\n" */
	const char *v = c->hbuf + from->off + 5;
	size_t vlen = from->len - 5;
	while (mailhdr_addr_next(v, vlen, &off, addr, sizeof(addr))) {
		const char *at = strrchr(addr, '@');
		size_t dl;
		if (at == NULL || at[1] == '\0')
			return -1;
		at++;
		dl = strlen(at);
		if (naddr == 0) {
			if (dl >= outlen)
				return -1;
			for (size_t k = 0; k <= dl; k++)
				out[k] = (char)((at[k] >= 'A' && at[k] <= 'Z') ?
				    at[k] + 32 : at[k]);
		} else if (ascii_casecmp_n(out, strlen(out), at, dl) != 0)
			return -1;
		naddr++;
	}
	return naddr > 0 ? 0 : -1;
}

/* ---- keys ---- */

static int
dkim_no_passphrase(char *buf, int size, int rwflag, void *u)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)u;
	return -1;              /* an encrypted key is refused, never prompted */
}

static struct dkim_key *
dkim_key_wrap(EVP_PKEY *pk, char *err, size_t errlen)
{
	struct dkim_key *k;
	enum dkim_alg alg;

	switch (EVP_PKEY_base_id(pk)) {
	case EVP_PKEY_RSA:
		if (EVP_PKEY_bits(pk) < 1024 || EVP_PKEY_bits(pk) > 8192) {
			snprintf(err, errlen, "RSA key of %d bits (1024 to 8192 "
			    "needed; 2048 advised)", EVP_PKEY_bits(pk));
			EVP_PKEY_free(pk);
			return NULL;
		}
		alg = DKIM_ALG_RSA_SHA256;
		break;
	case EVP_PKEY_ED25519:
		alg = DKIM_ALG_ED25519_SHA256;
		break;
	default:
		snprintf(err, errlen, "not an RSA or Ed25519 key");
		EVP_PKEY_free(pk);
		return NULL;
	}
	k = xcalloc(1, sizeof(*k));
	k->pkey = pk;
	k->alg = alg;
	return k;
}

struct dkim_key *
dkim_key_parse(const char *pem, size_t len, char *err, size_t errlen)
{
	BIO *bio;
	EVP_PKEY *pk;

	if (len > DKIM_KEY_FILE_MAX || len > INT32_MAX) {
		snprintf(err, errlen, "key file too large");
		return NULL;
	}
	if ((bio = BIO_new_mem_buf(pem, (int)len)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	pk = PEM_read_bio_PrivateKey(bio, NULL, dkim_no_passphrase, NULL);
	BIO_free(bio);
	if (pk == NULL) {
		snprintf(err, errlen, "no PEM private key (or an encrypted one)");
		return NULL;
	}
	return dkim_key_wrap(pk, err, errlen);
}

void
dkim_key_free(struct dkim_key *k)
{
	if (k == NULL)
		return;
	EVP_PKEY_free(k->pkey);
	free(k);
}

enum dkim_alg
dkim_key_alg(const struct dkim_key *k)
{
	return k->alg;
}

const char *
dkim_alg_name(enum dkim_alg a)
{
	return a == DKIM_ALG_ED25519_SHA256 ? "ed25519-sha256" : "rsa-sha256";
}

char *
dkim_key_txt(const struct dkim_key *k)
{
	unsigned char *der = NULL, raw[32];
	const unsigned char *pub;
	size_t publen = sizeof(raw), n;
	int dlen;
	char *txt;

	if (k->alg == DKIM_ALG_RSA_SHA256) {
		if ((dlen = i2d_PUBKEY(k->pkey, &der)) <= 0)
			return NULL;
		pub = der;
		publen = (size_t)dlen;
	} else {
		if (EVP_PKEY_get_raw_public_key(k->pkey, raw, &publen) != 1)
			return NULL;
		pub = raw;
	}
	n = 40 + BASE64_LEN(publen) + 1;
	txt = xmalloc(n);
	int h = snprintf(txt, n, "v=DKIM1; k=%s; p=",
	    k->alg == DKIM_ALG_RSA_SHA256 ? "rsa" : "ed25519");
	base64_encode(pub, publen, txt + h, n - (size_t)h);
	OPENSSL_free(der);
	return txt;
}

struct dkim_key *
dkim_keygen(const char *type, unsigned bits, char **pem, char *err,
    size_t errlen)
{
	int ed = strcmp(type, "ed25519") == 0;
	EVP_PKEY_CTX *pc = NULL;
	EVP_PKEY *pk = NULL;
	BIO *bio = NULL;
	char *data;
	long dl;

	if (!ed && (strcmp(type, "rsa") != 0 || bits < 1024 || bits > 8192)) {
		snprintf(err, errlen, "type rsa (1024 to 8192 bits) or ed25519");
		return NULL;
	}
	if ((pc = EVP_PKEY_CTX_new_id(ed ? EVP_PKEY_ED25519 : EVP_PKEY_RSA,
	    NULL)) == NULL || EVP_PKEY_keygen_init(pc) != 1 ||
	    (!ed && EVP_PKEY_CTX_set_rsa_keygen_bits(pc, (int)bits) != 1) ||
	    EVP_PKEY_keygen(pc, &pk) != 1 ||
	    (bio = BIO_new(BIO_s_mem())) == NULL ||
	    PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL) != 1 ||
	    (dl = BIO_get_mem_data(bio, &data)) <= 0) {
		snprintf(err, errlen, "key generation failed");
		EVP_PKEY_CTX_free(pc);
		EVP_PKEY_free(pk);
		BIO_free(bio);
		return NULL;
	}
	*pem = xstrndup(data, (size_t)dl);
	EVP_PKEY_CTX_free(pc);
	BIO_free(bio);
	return dkim_key_wrap(pk, err, errlen);
}

size_t
dkim_txt_strings(const char *txt, char *out, size_t outlen)
{
	size_t len = strlen(txt), n = 0;

	for (size_t i = 0; i < len || i == 0; i += 255) {
		size_t part = len - i > 255 ? 255 : len - i;
		if (n + part + 4 > outlen)
			return 0;
		if (i > 0)
			out[n++] = ' ';
		out[n++] = '"';
		memcpy(out + n, txt + i, part);
		n += part;
		out[n++] = '"';
		if (len == 0)
			break;
	}
	out[n] = '\0';
	return n;
}

/* ---- the signature ---- */

/* Append s to out at *n, if it fits (*n grows anyway, checked at the end). */
static void
dkim_put(char *out, size_t outlen, size_t *n, const char *s, size_t len)
{
	if (*n + len < outlen)
		memcpy(out + *n, s, len);
	*n += len;
}

/*
 * The signed field names (h=) and the header data they stand for: each
 * present field bottom-up, From: once more than present. Returns the
 * data's length (the fields, canonical, in h= order) in a new *data.
 */
static size_t
dkim_header_data(const struct dkim_canon *c, char *hl, size_t hlcap,
    size_t *hllen, char **data)
{
	size_t n = 0, col = 3, h = 0;

	*data = xmalloc(c->hlen + 1);
	for (size_t k = 0; dkim_signed_headers[k] != NULL; k++) {
		size_t count = 0, nl = strlen(dkim_signed_headers[k]);
		for (size_t i = 0; i < c->nfields; i++)
			count += c->fields[i].name == k;
		size_t listed = count + (k == 0);      /* From: oversigned */
		for (size_t j = 0, seen = 0; j < listed; j++) {
			if (h > 0) {
				dkim_put(hl, hlcap, &h, ":", 1);
				col++;
				if (col + nl > 76) {
					dkim_put(hl, hlcap, &h, "\r\n\t", 3);
					col = 1;
				}
			}
			dkim_put(hl, hlcap, &h, dkim_signed_headers[k], nl);
			col += nl;
			/* the (count - j)th instance of this name, from the top */
			for (size_t i = c->nfields; i-- > 0 && j < count; )
				if (c->fields[i].name == k && seen++ == j) {
					memcpy(*data + n, c->hbuf + c->fields[i].off,
					    c->fields[i].len);
					n += c->fields[i].len;
					break;
				}
			seen = 0;
		}
	}
	*hllen = h;
	return n;
}

static int
dkim_do_sign(const struct dkim_key *k, const char *data, size_t dlen,
    unsigned char *sig, size_t *siglen)
{
	EVP_MD_CTX *mc = EVP_MD_CTX_new();
	unsigned char hash[32];
	unsigned int hl = 0;
	int ok;

	if (mc == NULL)
		return -1;
	if (k->alg == DKIM_ALG_RSA_SHA256)
		ok = EVP_DigestSignInit(mc, NULL, EVP_sha256(), NULL,
		    k->pkey) == 1 && EVP_DigestSign(mc, sig, siglen,
		    (const unsigned char *)data, dlen) == 1;
	else    /* RFC 8463 3: Ed25519 over the SHA-256 of the data */
		ok = EVP_Digest(data, dlen, hash, &hl, EVP_sha256(), NULL) == 1 &&
		    EVP_DigestSignInit(mc, NULL, NULL, NULL, k->pkey) == 1 &&
		    EVP_DigestSign(mc, sig, siglen, hash, hl) == 1;
	EVP_MD_CTX_free(mc);
	return ok ? 0 : -1;
}

size_t
dkim_sign(const struct dkim_canon *c, const struct dkim_key *k,
    const char *domain, const char *selector, time_t t, char *out,
    size_t outlen)
{
	char hl[DKIM_SIG_MAX], bh[BASE64_LEN(32) + 1];
	char b64[BASE64_LEN(1024) + 1];
	unsigned char sig[1024];
	size_t hllen, n = 0, dlen, siglen = sizeof(sig), blen;
	char *data;
	int m;

	if (!c->done || c->overflow || outlen < DKIM_SIG_MAX)
		return 0;
	dlen = dkim_header_data(c, hl, sizeof(hl), &hllen, &data);
	if (hllen >= sizeof(hl)) {
		free(data);
		return 0;
	}
	base64_encode(c->bh, sizeof(c->bh), bh, sizeof(bh));
	m = snprintf(out, outlen, "DKIM-Signature: v=1; a=%s; c=relaxed/relaxed;"
	    " d=%s;\r\n\ts=%s; t=%lld;\r\n\th=%.*s;\r\n\tbh=%s;\r\n\tb=",
	    dkim_alg_name(k->alg), domain, selector, (long long)t,
	    (int)hllen, hl, bh);
	if (m < 0 || (size_t)m >= outlen / 2) {
		free(data);
		return 0;
	}
	n = (size_t)m;
	/* the field itself, b= empty, canonical, without its CRLF, comes last */
	char *nd = realloc(data, dlen + n + 3);
	if (nd == NULL) {
		free(data);
		return 0;
	}
	data = nd;
	dlen += dkim_canon_header(out, n, data + dlen) - 2;
	if (dkim_do_sign(k, data, dlen, sig, &siglen) != 0) {
		free(data);
		return 0;
	}
	free(data);
	blen = base64_encode(sig, siglen, b64, sizeof(b64));
	for (size_t i = 0; i < blen; i += 72) {
		size_t part = blen - i > 72 ? 72 : blen - i;
		if (i > 0)
			dkim_put(out, outlen, &n, "\r\n\t", 3);
		dkim_put(out, outlen, &n, b64 + i, part);
	}
	dkim_put(out, outlen, &n, "\r\n", 2);
	return n < outlen ? n : 0;
}
