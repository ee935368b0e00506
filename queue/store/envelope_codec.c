/*
 * envelope_codec.c - struct envelope life cycle and its versioned binary
 * record (see tern/envelope.h, doc/queue.md "Envelope record").
 *
 * Runs on any thread; pure: no I/O, no globals, no logging. encode/decode
 * never abort on their input: the bytes handed to envelope_decode() come
 * from disk (BDB, segment files) and are treated as untrusted.
 *
 * Format (all integers big-endian, fixed width so that the encoded length
 * never depends on the values of the numeric fields):
 *
 *   u8  version (ENVELOPE_VERSION)
 *   u32 flags   u64 id   i64 arrival   u64 size
 *   u32 seg     u64 off  u32 rec_len   u32 body_off   u32 crc
 *   u32 attempts         i64 next_attempt
 *   str sender           (required; may be empty)
 *   ostr client_addr, client_helo, auth_user, listener, envid, last_error
 *   u32 nrcpt            (<= ENV_CODEC_MAX_RCPT)
 *   nrcpt x { str addr, ostr orcpt, u8 state, u8 notify, ostr status,
 *             ostr last_error, ostr relay, i64 updated }
 *   u32 nhist (<= ENV_HISTORY_MAX)   u32 hist_dropped
 *   nhist x { i64 when, u32 rcpt (< nrcpt), u8 result, ostr relay,
 *             ostr status, ostr reply, ostr tls }
 *
 * str = u32 length + bytes (no NUL inside, length <= ENV_CODEC_MAX_STR);
 * ostr = the same, or length 0xffffffff for "absent" (NULL). The record
 * must end exactly after the last field: trailing bytes are rejected.
 * Version 1 records (no history section) are still decoded; encode always
 * writes the current version. For current-version input the encoding is
 * canonical: decode(x) succeeding implies encode() gives x.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "tern/envelope.h"
#include "tern/util.h"

#define ENV_CODEC_MAX_STR   65536u
#define ENV_CODEC_MAX_RCPT  100000u
#define ENV_CODEC_ABSENT    0xffffffffu
/* smallest encoded recipient: addr len + 4 ostr + state + notify + updated */
#define ENV_CODEC_MIN_RCPT  (4u + 4u * 4u + 1u + 1u + 8u)

struct envelope *
envelope_new(void)
{
	return xcalloc(1, sizeof(struct envelope));
}

static void
envelope_rcpt_clear(struct env_rcpt *r)
{
	free(r->addr);
	free(r->orcpt);
	free(r->status);
	free(r->last_error);
	free(r->relay);
}

static void
envelope_attempt_clear(struct env_attempt *a)
{
	free(a->relay);
	free(a->status);
	free(a->reply);
	free(a->tls);
}

void
envelope_free(struct envelope *e)
{
	if (e == NULL)
		return;
	for (size_t i = 0; i < e->nrcpt; i++)
		envelope_rcpt_clear(&e->rcpts[i]);
	free(e->rcpts);
	for (size_t i = 0; i < e->nhist; i++)
		envelope_attempt_clear(&e->hist[i]);
	free(e->hist);
	free(e->sender);
	free(e->client_addr);
	free(e->client_helo);
	free(e->auth_user);
	free(e->listener);
	free(e->envid);
	free(e->last_error);
	free(e);
}

static char *
envelope_strdup_opt(const char *s)
{
	return s == NULL ? NULL : xstrdup(s);
}

struct envelope *
envelope_dup(const struct envelope *e)
{
	struct envelope *d = xmalloc(sizeof(*d));

	*d = *e;
	d->sender = envelope_strdup_opt(e->sender);
	d->client_addr = envelope_strdup_opt(e->client_addr);
	d->client_helo = envelope_strdup_opt(e->client_helo);
	d->auth_user = envelope_strdup_opt(e->auth_user);
	d->listener = envelope_strdup_opt(e->listener);
	d->envid = envelope_strdup_opt(e->envid);
	d->last_error = envelope_strdup_opt(e->last_error);
	d->rcpts = NULL;
	if (e->nrcpt > 0) {
		d->rcpts = xcalloc(e->nrcpt, sizeof(*d->rcpts));
		for (size_t i = 0; i < e->nrcpt; i++) {
			const struct env_rcpt *s = &e->rcpts[i];
			struct env_rcpt *r = &d->rcpts[i];
			*r = *s;
			r->addr = envelope_strdup_opt(s->addr);
			r->orcpt = envelope_strdup_opt(s->orcpt);
			r->status = envelope_strdup_opt(s->status);
			r->last_error = envelope_strdup_opt(s->last_error);
			r->relay = envelope_strdup_opt(s->relay);
		}
	}
	d->hist = NULL;
	if (e->nhist > 0) {
		d->hist = xcalloc(ENV_HISTORY_MAX, sizeof(*d->hist));
		for (size_t i = 0; i < e->nhist; i++) {
			const struct env_attempt *s = &e->hist[i];
			struct env_attempt *a = &d->hist[i];
			*a = *s;
			a->relay = envelope_strdup_opt(s->relay);
			a->status = envelope_strdup_opt(s->status);
			a->reply = envelope_strdup_opt(s->reply);
			a->tls = envelope_strdup_opt(s->tls);
		}
	}
	return d;
}

/* NULL for NULL or ""; else a copy of at most max bytes, not splitting a
 * UTF-8 sequence */
static char *
envelope_strdup_cut(const char *s, size_t max)
{
	size_t n;

	if (s == NULL || s[0] == '\0')
		return NULL;
	n = strlen(s);
	if (n > max) {
		n = max;
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--;
	}
	return xstrndup(s, n);
}

void
envelope_add_attempt(struct envelope *e, int64_t when, size_t rcpt,
    enum env_result result, const char *relay, const char *status,
    const char *reply, const char *tls)
{
	struct env_attempt *a;

	if (e->nhist >= ENV_HISTORY_MAX) {
		envelope_attempt_clear(&e->hist[0]);
		memmove(&e->hist[0], &e->hist[1],
		    (e->nhist - 1) * sizeof(*e->hist));
		e->nhist--;
		if (e->hist_dropped < UINT32_MAX)
			e->hist_dropped++;
	}
	if (e->hist == NULL)
		e->hist = xcalloc(ENV_HISTORY_MAX, sizeof(*e->hist));
	a = &e->hist[e->nhist++];
	a->when = when;
	a->rcpt = (uint32_t)rcpt;
	a->result = (uint8_t)result;
	a->relay = envelope_strdup_cut(relay, ENV_HISTORY_TEXT);
	a->status = envelope_strdup_cut(status, 32);
	a->reply = envelope_strdup_cut(reply, ENV_HISTORY_TEXT);
	a->tls = envelope_strdup_cut(tls, ENV_HISTORY_TEXT);
}

const char *
env_result_name(enum env_result r)
{
	switch (r) {
	case ENV_RES_SENT:
		return "sent";
	case ENV_RES_DEFERRED:
		return "deferred";
	case ENV_RES_BOUNCED:
		return "bounced";
	case ENV_RES_EXPIRED:
		return "expired";
	}
	return "unknown";
}

size_t
envelope_add_rcpt(struct envelope *e, const char *addr, const char *orcpt,
    unsigned notify)
{
	struct env_rcpt *r;

	e->rcpts = xreallocarray(e->rcpts, e->nrcpt + 1, sizeof(*e->rcpts));
	r = &e->rcpts[e->nrcpt];
	memset(r, 0, sizeof(*r));
	r->addr = xstrdup(addr);
	r->orcpt = envelope_strdup_opt(orcpt);
	r->state = RCPT_PENDING;
	r->notify = (uint8_t)notify;
	return e->nrcpt++;
}

size_t
envelope_pending(const struct envelope *e)
{
	size_t n = 0;

	for (size_t i = 0; i < e->nrcpt; i++)
		if (e->rcpts[i].state == RCPT_PENDING)
			n++;
	return n;
}

const char *
rcpt_state_name(enum rcpt_state s)
{
	switch (s) {
	case RCPT_PENDING:
		return "pending";
	case RCPT_SENT:
		return "sent";
	case RCPT_BOUNCED:
		return "bounced";
	case RCPT_EXPIRED:
		return "expired";
	case RCPT_DELETED:
		return "deleted";
	}
	return "unknown";
}

/* ---- encoding ---- */

/* The record grows in a struct buf (tern/util.h); its err is sticky. */
static void
envelope_put(struct buf *w, const void *src, size_t n)
{
	buf_add(w, src, n);
}

static void
envelope_put_u64(struct buf *w, uint64_t v)
{
	uint8_t b[8];
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(v >> (56 - 8 * i));
	envelope_put(w, b, 8);
}

static void
envelope_put_u32(struct buf *w, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)(v >> 24), (uint8_t)(v >> 16),
	    (uint8_t)(v >> 8), (uint8_t)v };
	envelope_put(w, b, 4);
}

static void
envelope_put_u8(struct buf *w, uint8_t v)
{
	envelope_put(w, &v, 1);
}

static void
envelope_put_str(struct buf *w, const char *s, int optional)
{
	size_t n;

	if (s == NULL) {
		if (!optional && !w->err)
			w->err = EINVAL;
		envelope_put_u32(w, ENV_CODEC_ABSENT);
		return;
	}
	n = strlen(s);
	if (n > ENV_CODEC_MAX_STR) {
		if (!w->err)
			w->err = EINVAL;
		return;
	}
	envelope_put_u32(w, (uint32_t)n);
	envelope_put(w, s, n);
}

int
envelope_encode(const struct envelope *e, uint8_t **out, size_t *outlen)
{
	struct buf w = { 0 };

	*out = NULL;
	*outlen = 0;
	if (e->nrcpt > ENV_CODEC_MAX_RCPT) {
		errno = EINVAL;
		return -1;
	}
	envelope_put_u8(&w, ENVELOPE_VERSION);
	envelope_put_u32(&w, e->flags);
	envelope_put_u64(&w, e->id);
	envelope_put_u64(&w, (uint64_t)e->arrival);
	envelope_put_u64(&w, e->size);
	envelope_put_u32(&w, e->seg);
	envelope_put_u64(&w, e->off);
	envelope_put_u32(&w, e->rec_len);
	envelope_put_u32(&w, e->body_off);
	envelope_put_u32(&w, e->crc);
	envelope_put_u32(&w, e->attempts);
	envelope_put_u64(&w, (uint64_t)e->next_attempt);
	envelope_put_str(&w, e->sender ? e->sender : "", 0);
	envelope_put_str(&w, e->client_addr, 1);
	envelope_put_str(&w, e->client_helo, 1);
	envelope_put_str(&w, e->auth_user, 1);
	envelope_put_str(&w, e->listener, 1);
	envelope_put_str(&w, e->envid, 1);
	envelope_put_str(&w, e->last_error, 1);
	envelope_put_u32(&w, (uint32_t)e->nrcpt);
	for (size_t i = 0; i < e->nrcpt; i++) {
		const struct env_rcpt *r = &e->rcpts[i];
		envelope_put_str(&w, r->addr, 0);
		envelope_put_str(&w, r->orcpt, 1);
		envelope_put_u8(&w, r->state);
		envelope_put_u8(&w, r->notify);
		envelope_put_str(&w, r->status, 1);
		envelope_put_str(&w, r->last_error, 1);
		envelope_put_str(&w, r->relay, 1);
		envelope_put_u64(&w, (uint64_t)r->updated);
	}
	if (e->nhist > ENV_HISTORY_MAX) {
		free(w.p);
		errno = EINVAL;
		return -1;
	}
	envelope_put_u32(&w, (uint32_t)e->nhist);
	envelope_put_u32(&w, e->hist_dropped);
	for (size_t i = 0; i < e->nhist; i++) {
		const struct env_attempt *a = &e->hist[i];
		envelope_put_u64(&w, (uint64_t)a->when);
		envelope_put_u32(&w, a->rcpt);
		envelope_put_u8(&w, a->result);
		envelope_put_str(&w, a->relay, 1);
		envelope_put_str(&w, a->status, 1);
		envelope_put_str(&w, a->reply, 1);
		envelope_put_str(&w, a->tls, 1);
	}
	if (w.err) {
		free(w.p);
		errno = w.err;
		return -1;
	}
	*out = (uint8_t *)w.p;
	*outlen = w.len;
	return 0;
}

int
envelope_peek(const uint8_t *buf, size_t len, uint32_t *flags, uint32_t *seg)
{
	/* version, flags, id, arrival, size: then seg */
	const size_t seg_at = 1 + 4 + 8 + 8 + 8;

	if (len < seg_at + 4 || (buf[0] != ENVELOPE_VERSION && buf[0] != 1))
		return -1;
	*flags = (uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 |
	    (uint32_t)buf[3] << 8 | buf[4];
	*seg = (uint32_t)buf[seg_at] << 24 | (uint32_t)buf[seg_at + 1] << 16 |
	    (uint32_t)buf[seg_at + 2] << 8 | buf[seg_at + 3];
	return 0;
}

/* ---- decoding: a cursor over buf[0..len), never reads past it ---- */

struct envelope_rbuf {
	const uint8_t *p;
	size_t len, pos;
	enum envelope_decode_status st;   /* sticky first error */
};

static int
envelope_need(struct envelope_rbuf *r, size_t n)
{
	if (r->st != ENV_DECODE_OK)
		return -1;
	if (r->len - r->pos < n) {
		r->st = ENV_DECODE_TRUNCATED;
		return -1;
	}
	return 0;
}

static uint64_t
envelope_get_u64(struct envelope_rbuf *r)
{
	uint64_t v = 0;
	if (envelope_need(r, 8) < 0)
		return 0;
	for (int i = 0; i < 8; i++)
		v = (v << 8) | r->p[r->pos + i];
	r->pos += 8;
	return v;
}

static uint32_t
envelope_get_u32(struct envelope_rbuf *r)
{
	uint32_t v;
	if (envelope_need(r, 4) < 0)
		return 0;
	v = (uint32_t)r->p[r->pos] << 24 | (uint32_t)r->p[r->pos + 1] << 16 |
	    (uint32_t)r->p[r->pos + 2] << 8 | r->p[r->pos + 3];
	r->pos += 4;
	return v;
}

static uint8_t
envelope_get_u8(struct envelope_rbuf *r)
{
	if (envelope_need(r, 1) < 0)
		return 0;
	return r->p[r->pos++];
}

/* A string field; *out NULL when absent (only allowed if optional). */
static void
envelope_get_str(struct envelope_rbuf *r, char **out, int optional)
{
	uint32_t n = envelope_get_u32(r);
	char *s;

	*out = NULL;
	if (r->st != ENV_DECODE_OK)
		return;
	if (n == ENV_CODEC_ABSENT) {
		if (!optional)
			r->st = ENV_DECODE_BAD_FIELD;
		return;
	}
	if (n > ENV_CODEC_MAX_STR) {
		r->st = ENV_DECODE_BAD_FIELD;
		return;
	}
	if (envelope_need(r, n) < 0)
		return;
	if (memchr(r->p + r->pos, '\0', n) != NULL) {
		r->st = ENV_DECODE_BAD_FIELD;
		return;
	}
	if ((s = malloc((size_t)n + 1)) == NULL) {
		r->st = ENV_DECODE_NOMEM;
		return;
	}
	memcpy(s, r->p + r->pos, n);
	s[n] = '\0';
	r->pos += n;
	*out = s;
}

/* the history section (version 2); -1 with r->st set on error */
static int
envelope_decode_history(struct envelope_rbuf *r, struct envelope *e)
{
	uint32_t n = envelope_get_u32(r);

	e->hist_dropped = envelope_get_u32(r);
	if (r->st != ENV_DECODE_OK)
		return -1;
	if (n > ENV_HISTORY_MAX) {
		r->st = ENV_DECODE_BAD_FIELD;
		return -1;
	}
	if (n > 0 && (e->hist = calloc(ENV_HISTORY_MAX,
	    sizeof(*e->hist))) == NULL) {
		r->st = ENV_DECODE_NOMEM;
		return -1;
	}
	for (uint32_t i = 0; i < n && r->st == ENV_DECODE_OK; i++) {
		struct env_attempt *a = &e->hist[i];
		e->nhist = (size_t)i + 1;   /* so envelope_free() frees it */
		a->when = (int64_t)envelope_get_u64(r);
		a->rcpt = envelope_get_u32(r);
		a->result = envelope_get_u8(r);
		envelope_get_str(r, &a->relay, 1);
		envelope_get_str(r, &a->status, 1);
		envelope_get_str(r, &a->reply, 1);
		envelope_get_str(r, &a->tls, 1);
		if (r->st == ENV_DECODE_OK && (a->rcpt >= e->nrcpt ||
		    a->result > ENV_RES_EXPIRED))
			r->st = ENV_DECODE_BAD_FIELD;
	}
	return r->st == ENV_DECODE_OK ? 0 : -1;
}

enum envelope_decode_status
envelope_decode(const uint8_t *buf, size_t len, struct envelope **out)
{
	struct envelope_rbuf r = { buf, len, 0, ENV_DECODE_OK };
	struct envelope *e;
	uint32_t nrcpt;
	uint8_t version;

	*out = NULL;
	if (len < 1)
		return ENV_DECODE_TRUNCATED;
	version = envelope_get_u8(&r);
	if (version != ENVELOPE_VERSION && version != 1)
		return ENV_DECODE_BAD_VERSION;
	if ((e = calloc(1, sizeof(*e))) == NULL)
		return ENV_DECODE_NOMEM;
	e->flags = envelope_get_u32(&r);
	e->id = envelope_get_u64(&r);
	e->arrival = (int64_t)envelope_get_u64(&r);
	e->size = envelope_get_u64(&r);
	e->seg = envelope_get_u32(&r);
	e->off = envelope_get_u64(&r);
	e->rec_len = envelope_get_u32(&r);
	e->body_off = envelope_get_u32(&r);
	e->crc = envelope_get_u32(&r);
	e->attempts = envelope_get_u32(&r);
	e->next_attempt = (int64_t)envelope_get_u64(&r);
	envelope_get_str(&r, &e->sender, 0);
	envelope_get_str(&r, &e->client_addr, 1);
	envelope_get_str(&r, &e->client_helo, 1);
	envelope_get_str(&r, &e->auth_user, 1);
	envelope_get_str(&r, &e->listener, 1);
	envelope_get_str(&r, &e->envid, 1);
	envelope_get_str(&r, &e->last_error, 1);
	nrcpt = envelope_get_u32(&r);
	if (r.st != ENV_DECODE_OK)
		goto fail;
	if (nrcpt > ENV_CODEC_MAX_RCPT) {
		r.st = ENV_DECODE_BAD_FIELD;
		goto fail;
	}
	/* bound the allocation by what the remaining bytes can hold */
	if ((size_t)nrcpt > (r.len - r.pos) / ENV_CODEC_MIN_RCPT) {
		r.st = ENV_DECODE_TRUNCATED;
		goto fail;
	}
	if (nrcpt > 0 && (e->rcpts = calloc(nrcpt, sizeof(*e->rcpts))) == NULL) {
		r.st = ENV_DECODE_NOMEM;
		goto fail;
	}
	for (uint32_t i = 0; i < nrcpt && r.st == ENV_DECODE_OK; i++) {
		struct env_rcpt *rc = &e->rcpts[i];
		e->nrcpt = (size_t)i + 1;   /* so envelope_free() frees it */
		envelope_get_str(&r, &rc->addr, 0);
		envelope_get_str(&r, &rc->orcpt, 1);
		rc->state = envelope_get_u8(&r);
		rc->notify = envelope_get_u8(&r);
		envelope_get_str(&r, &rc->status, 1);
		envelope_get_str(&r, &rc->last_error, 1);
		envelope_get_str(&r, &rc->relay, 1);
		rc->updated = (int64_t)envelope_get_u64(&r);
		if (r.st == ENV_DECODE_OK && rc->state > RCPT_DELETED)
			r.st = ENV_DECODE_BAD_FIELD;
	}
	if (r.st != ENV_DECODE_OK)
		goto fail;
	if (version >= 2 && envelope_decode_history(&r, e) < 0)
		goto fail;
	if (r.pos != r.len) {
		r.st = ENV_DECODE_BAD_FIELD;   /* trailing garbage */
		goto fail;
	}
	*out = e;
	return ENV_DECODE_OK;
fail:
	envelope_free(e);
	return r.st;
}
