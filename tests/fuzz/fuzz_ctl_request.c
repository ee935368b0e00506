/*
 * fuzz_ctl_request.c - one control request line (ctl.h) through
 * ctl_request_handle(), the synchronous path ternctl uses on a queue opened
 * read-only and the server uses for every line, as test_ctl.c calls it.
 *
 * The input up to its first LF (the server splits lines there; at most
 * CTL_LINE_MAX - 1 bytes) is answered four times: without a queue and
 * without hooks; and on a small read-only queue without hooks, with hooks
 * whose reload succeeds, and with hooks whose reload fails. The queue is
 * made once, in a temporary directory removed at exit, by the real
 * committer: three messages (one plain; one from the null sender, held,
 * with a delivery history and a recipient without a domain; one with
 * non-UTF-8 bytes in its sender and body). So that requests can name
 * them, each 16-byte "@@@@@@@@@@@@@@@N" (N = 0..2) in the input is
 * replaced by message N's id before the call.
 *
 * Oracles, for every answer:
 *  - it is exactly one line: non-empty, no LF or CR, and json_parse()
 *    accepts the whole of it as one JSON object;
 *  - "ok" is a boolean, true exactly when the return value is 0; when
 *    false, "code" is that return value, a CTL_E_* (1..9), and "error" a
 *    non-empty string;
 *  - ctl_request_handle never hands an op on (the op hook aborts), and the
 *    reload hook's result decides the answer: ok after a successful
 *    reload, CTL_E_INTERNAL after a failed one;
 *  - without queue and hooks only ping can succeed, answering version 1.
 * Everything returned is freed.
 */
#include <ftw.h>
#include <sys/time.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "tern/ctl.h"
#include "tern/envelope.h"
#include "tern/json.h"
#include "tern/log.h"
#include "tern/queue.h"
#include "tern/tq.h"
#include "tern/util.h"

#define FUZZ_NMSG       3
#define FUZZ_MARK       "@@@@@@@@@@@@@@@"   /* + one digit: 16 bytes */
#define FUZZ_TOKS       16384

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct queue *fq;
static char fq_dir[64];
static char fq_ids[FUZZ_NMSG][QID_STRLEN + 1];
static int fq_done, fq_indexed;
static int reload_calls;
static struct json_tok out_toks[FUZZ_TOKS];

static int
fuzz_op(void *arg, struct ctl_op *op)
{
	abort();        /* ctl_request_handle never hands an op on */
}

static int
fuzz_reload_ok(void *arg)
{
	reload_calls++;
	return 0;
}

static int
fuzz_reload_fail(void *arg)
{
	reload_calls++;
	return -1;
}

static const struct ctl_hooks hooks_ok = { fuzz_op, fuzz_reload_ok, NULL };
static const struct ctl_hooks hooks_fail = { fuzz_op, fuzz_reload_fail, NULL };

static int
fuzz_rm(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void
fuzz_cleanup(void)
{
	if (fq != NULL)
		queue_close(fq);
	fq = NULL;
	if (fq_dir[0] != '\0')
		nftw(fq_dir, fuzz_rm, 16, FTW_DEPTH | FTW_PHYS);
}

static void
fuzz_commit_done(struct tq_msg *m, void *arg)
{
	if (m->type == TQ_COMMIT_DONE) {
		struct queue_commit_done *d = (struct queue_commit_done *)m;
		if (d->status != Q_OK || d->hdr.reqid >= FUZZ_NMSG)
			abort();
		qid_format(d->qid, fq_ids[d->hdr.reqid]);
		fq_done++;
	} else if (m->type == TQ_NEW_MESSAGE)
		fq_indexed++;   /* queue_get finds it from now on */
	free(m);
}

static void
fuzz_submit(struct queue *q, struct tq *tq, uint64_t n, const char *sender,
    const char *const *rcpts, const char *body, size_t bodylen)
{
	struct envelope *e = envelope_new();
	struct spool *s = spool_new(q);

	e->sender = xstrdup(sender);
	for (; *rcpts != NULL; rcpts++)
		envelope_add_rcpt(e, *rcpts, NULL, 0);
	e->client_addr = xstrdup("127.0.0.1");
	e->client_helo = xstrdup("client.test");
	if (spool_write(s, body, bodylen) != 0)
		abort();
	queue_commit_submit(q, e, s, tq, n);
}

/* Build the queue once, then reopen it read-only as ternctl does. */
static void
fuzz_queue_make(void)
{
	static const char *const r0[] = { "r0@example.com", NULL };
	static const char *const r1[] = { "b@Example.NET", "no-domain",
	    "c@example.com", NULL };
	static const char *const r2[] = { "d@example.org", NULL };
	static const char b2[] = "Subject: \xff\xfe\r\n\r\n\x00\x01\x80\r\n";
	struct queue_opts o = { .segment_size = 1 << 20,
	    .spool_memory = 256 << 10, .spool_budget = 16 << 20 };
	struct event_base *base;
	struct envelope *e = NULL;
	struct tq *tq;
	char err[256];
	uint64_t id;

	snprintf(fq_dir, sizeof(fq_dir), "/tmp/fuzz_ctl_request-XXXXXX");
	if (mkdtemp(fq_dir) == NULL)
		abort();
	atexit(fuzz_cleanup);
	o.dir = fq_dir;
	evthread_use_pthreads();
	base = event_base_new();
	tq = tq_new(base, fuzz_commit_done, NULL);
	if (base == NULL || tq == NULL || queue_open(&o, &fq, err, sizeof(err)) < 0)
		abort();
	queue_set_notify(fq, tq);
	fuzz_submit(fq, tq, 0, "alice@example.org", r0,
	    "Subject: a\r\n\r\nhello\r\n", 21);
	fuzz_submit(fq, tq, 1, "", r1, "Subject: b\r\n\r\n", 14);
	fuzz_submit(fq, tq, 2, "\xff\"\\@x", r2, b2, sizeof(b2) - 1);
	for (int i = 0; (fq_done < FUZZ_NMSG || fq_indexed < FUZZ_NMSG) &&
	    i < 400; i++) {     /* at most 20 s */
		struct timeval tv = { 0, 50000 };
		event_base_loopexit(base, &tv);
		event_base_loop(base, EVLOOP_ONCE);
	}
	if (fq_done != FUZZ_NMSG || fq_indexed != FUZZ_NMSG)
		abort();
	/* message 1: held, with a history */
	if (qid_parse(fq_ids[1], &id) != 0 || queue_get(fq, id, &e) != 0)
		abort();
	e->flags |= ENV_F_HOLD;
	e->rcpts[0].state = RCPT_SENT;
	envelope_add_attempt(e, 1700000000, 0, ENV_RES_SENT, "mx[192.0.2.1]:25",
	    "2.0.0", "250 ok \"quoted\"", "TLSv1.3 TLS_AES_128_GCM_SHA256");
	envelope_add_attempt(e, 1700000001, 2, ENV_RES_DEFERRED, NULL, "4.4.1",
	    "connection refused", NULL);
	if (queue_update(fq, e) != 0)
		abort();
	envelope_free(e);
	queue_close(fq);
	fq = NULL;
	tq_free(tq);
	event_base_free(base);
	o.readonly = 1;
	if (queue_open(&o, &fq, err, sizeof(err)) < 0)
		abort();
}

/* One answer, checked. */
static void
fuzz_check(struct queue *q, const struct ctl_hooks *hooks, const char *req,
    size_t len)
{
	struct json_writer w;
	size_t outlen, used;
	char *out;
	long k;
	int rc, calls = reload_calls;

	struct ctl_stream *st = NULL;
	json_writer_init(&w);
	rc = ctl_request_handle(q, hooks, req, len, &w, &st);
	if (st != NULL) {
		/* a listing: its pages are lines of JSON, the last one ends it */
		struct buf page = { 0 };
		int done = 0;
		for (int i = 0; i < 1000 && !done; i++)
			done = ctl_stream_page(st, q, &page);
		if (!done || page.err != 0 || page.len == 0 ||
		    page.p[page.len - 1] != '\n')
			abort();
		buf_free(&page);
		ctl_stream_free(st);
	}
	out = json_writer_finish(&w, &outlen);
	if (out == NULL || outlen == 0 || strlen(out) != outlen ||
	    memchr(out, '\n', outlen) != NULL || memchr(out, '\r', outlen) != NULL)
		abort();
	if (json_parse(out, outlen, out_toks, FUZZ_TOKS, JSON_MAX_DEPTH,
	    &used) != JSON_OK || out_toks[0].type != JSON_OBJECT)
		abort();
	k = json_obj_find(out, out_toks, 0, "ok");
	if (k < 0 || (out_toks[k].type != JSON_TRUE &&
	    out_toks[k].type != JSON_FALSE))
		abort();
	if ((out_toks[k].type == JSON_TRUE) != (rc == 0))
		abort();
	if (rc != 0) {
		long c = json_obj_find(out, out_toks, 0, "code");
		long e = json_obj_find(out, out_toks, 0, "error");
		if (rc < CTL_E_NOT_FOUND || rc > CTL_E_STATE || c < 0 ||
		    out_toks[c].type != JSON_NUMBER || out_toks[c].num != rc ||
		    e < 0 || out_toks[e].type != JSON_STRING ||
		    out_toks[e].end <= out_toks[e].start)
			abort();
	}
	if (reload_calls != calls) {
		if (reload_calls != calls + 1)
			abort();
		if (hooks == &hooks_ok && rc != 0)
			abort();
		if (hooks == &hooks_fail && rc != CTL_E_INTERNAL)
			abort();
	}
	if (q == NULL && hooks == NULL && rc == 0) {
		long v = json_obj_find(out, out_toks, 0, "version");
		if (v < 0 || out_toks[v].type != JSON_NUMBER || out_toks[v].num !=
		    CTL_PROTO_VERSION || json_obj_find(out, out_toks, 0, "pid") < 0)
			abort();
	}
	free(out);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *lf = memchr(data, '\n', size);
	size_t len = lf != NULL ? (size_t)(lf - data) : size;
	char *req;

	if (!fq_dir[0]) {
		log_init("fuzz_ctl_request", 0, 0);
		fuzz_queue_make();
	}
	if (len > CTL_LINE_MAX - 1)
		len = CTL_LINE_MAX - 1;
	req = malloc(len ? len : 1);
	if (req == NULL)
		return 0;
	memcpy(req, data, len);
	for (size_t i = 0; i + 16 <= len; i++) {
		unsigned n = (unsigned char)req[i + 15] - '0';
		if (n < FUZZ_NMSG && memcmp(req + i, FUZZ_MARK, 15) == 0) {
			memcpy(req + i, fq_ids[n], 16);
			i += 15;
		}
	}
	fuzz_check(NULL, NULL, req, len);
	fuzz_check(fq, NULL, req, len);
	fuzz_check(fq, &hooks_ok, req, len);
	fuzz_check(fq, &hooks_fail, req, len);
	free(req);
	return 0;
}
