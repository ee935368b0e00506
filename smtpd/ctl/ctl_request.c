/*
 * ctl_request.c - the control protocol (tern/ctl.h): one request line in,
 * one response object out. Used by ternd's control server
 * (ctl_server.c) for every line, and by ternctl directly on a queue opened
 * read-only when the daemon is down, so both answers are the same bytes.
 *
 * No I/O besides queue reads (queue_walk, queue_get, queue_read_body: short
 * Berkeley DB and segment reads). A state-changing command becomes a
 * struct ctl_op that the caller hands on; the op carries the functions its
 * receiver answers with, so the receiver (the scheduler) names nothing of
 * this layer.
 *
 * Untrusted input: the request line, parsed by the pure parser of json.c
 * with a bounded depth and token count.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tern/ctl.h"
#include "tern/envelope.h"
#include "tern/json.h"
#include "tern/log.h"
#include "tern/queue.h"
#include "tern/util.h"

#include "ctl_int.h"

#define CTL_REQ_TOKENS   128             /* tokens in one request */
#define CTL_REQ_DEPTH    8

/* ---- request handling (no I/O besides queue reads) ---- */

struct ctl_req {
	struct queue *q;
	const struct ctl_hooks *hooks;
	const char *p;                  /* the request line */
	const struct json_tok *toks;
	struct json_writer *out;
	uint64_t id;                    /* parsed "id" for CTL_C_ID commands */
	int has_id;
	int arg;                        /* the command's table argument */
	int async;                      /* may hand work on (struct ctl_op) */
	struct ctl_op *op;              /* out: the op to hand on, owned */
	struct ctl_stream *stream;      /* out: a listing to page, owned */
	int64_t version;                /* the request's "v" */
	const char *error;              /* text for a non-zero return */
	size_t verify_listed;           /* verify: differences written */
};

#define CTL_C_ID     0x01u          /* needs "id":"<qid>" */
#define CTL_C_QUEUE  0x02u          /* needs the queue */
#define CTL_C_IDALL  0x04u          /* "id":"<qid>", or "all":true [+filter] */
#define CTL_C_SLOW   0x08u          /* may read much of the queue */

struct ctl_cmd {
	const char *name;
	int (*fn)(struct ctl_req *r);
	unsigned flags;
	int arg;
};

static void
ctl_reply_ok_open(struct json_writer *w)
{
	json_obj_open(w);
	json_kv_bool(w, "ok", 1);
}

static long
ctl_req_arg(const struct ctl_req *r, const char *key)
{
	return json_obj_find(r->p, r->toks, 0, key);
}

/* Write one envelope as ENV (ctl.h); with history, as ENV+HIST. */
static void
ctl_envelope_write(struct json_writer *w, const struct envelope *env,
    int history)
{
	char qid[QID_STRLEN + 1];

	qid_format(env->id, qid);
	json_obj_open(w);
	json_kv_str(w, "id", qid);
	json_kv_int(w, "arrival", env->arrival);
	json_kv_uint(w, "size", env->size);
	json_kv_str(w, "sender", env->sender != NULL ? env->sender : "");
	json_key(w, "recipients");
	json_arr_open(w);
	for (size_t i = 0; i < env->nrcpt; i++) {
		const struct env_rcpt *rc = &env->rcpts[i];
		json_obj_open(w);
		json_kv_str(w, "address", rc->addr != NULL ? rc->addr : "");
		json_kv_str(w, "state",
		    rcpt_state_name((enum rcpt_state)rc->state));
		json_kv_str(w, "status", rc->status);
		json_kv_str(w, "last_error", rc->last_error);
		json_kv_str(w, "relay", rc->relay);
		json_kv_int(w, "updated", rc->updated);
		json_obj_close(w);
	}
	json_arr_close(w);
	json_kv_uint(w, "attempts", env->attempts);
	json_kv_int(w, "next_attempt", env->next_attempt);
	json_kv_str(w, "last_error", env->last_error);
	json_kv_bool(w, "held", (env->flags & ENV_F_HOLD) != 0);
	json_kv_bool(w, "corrupt", (env->flags & ENV_F_CORRUPT) != 0);
	json_kv_bool(w, "smtputf8", (env->flags & ENV_F_SMTPUTF8) != 0);
	json_kv_bool(w, "8bitmime", (env->flags & ENV_F_8BIT) != 0);
	json_kv_bool(w, "requiretls", (env->flags & ENV_F_REQUIRETLS) != 0);
	json_kv_bool(w, "tls_optional", (env->flags & ENV_F_TLS_OPTIONAL) != 0);
	json_kv_str(w, "client", env->client_addr);
	json_kv_str(w, "helo", env->client_helo);
	json_kv_str(w, "auth_user", env->auth_user);
	if (history) {
		json_key(w, "history");
		json_arr_open(w);
		for (size_t i = 0; i < env->nhist; i++) {
			const struct env_attempt *a = &env->hist[i];
			json_obj_open(w);
			json_kv_int(w, "time", a->when);
			json_kv_str(w, "recipient", a->rcpt < env->nrcpt &&
			    env->rcpts[a->rcpt].addr != NULL ?
			    env->rcpts[a->rcpt].addr : "");
			json_kv_str(w, "result",
			    env_result_name((enum env_result)a->result));
			json_kv_str(w, "status", a->status);
			json_kv_str(w, "relay", a->relay);
			json_kv_str(w, "reply", a->reply);
			json_kv_str(w, "tls", a->tls);
			json_obj_close(w);
		}
		json_arr_close(w);
		json_kv_uint(w, "history_dropped", env->hist_dropped);
	}
	json_obj_close(w);
}

static int
ctl_cmd_ping(struct ctl_req *r)
{
	ctl_reply_ok_open(r->out);
	json_kv_int(r->out, "version", CTL_PROTO_VERSION);
	json_kv_int(r->out, "pid", (int64_t)getpid());
	json_obj_close(r->out);
	return 0;
}

/* ---- filters (pure) ---- */

void
ctl_filter_init(struct ctl_filter *f)
{
	memset(f, 0, sizeof(*f));
	f->held = -1;
	f->older_than = -1;
}

static int
ctl_filter_str(const char *p, const struct json_tok *t, char *out,
    const char **err)
{
	long n;

	if (t->type != JSON_STRING) {
		*err = "filter values \"from\", \"to\", \"domain\" must be strings";
		return -1;
	}
	n = json_str_decode(p, t, out, CTL_FILTER_STR);
	if (n < 0 || memchr(out, '\0', (size_t)n) != NULL) {
		*err = "filter string too long or contains NUL";
		return -1;
	}
	return 0;
}

int
ctl_filter_parse(const char *p, const struct json_tok *toks, size_t obj,
    struct ctl_filter *f, const char **err)
{
	size_t i = obj + 1;

	ctl_filter_init(f);
	if (toks[obj].type != JSON_OBJECT) {
		*err = "\"filter\" must be an object";
		return -1;
	}
	for (size_t k = 0; k < toks[obj].size; k++, i = toks[i + 1].next) {
		const struct json_tok *key = &toks[i], *v = &toks[i + 1];
		if (json_str_eq(p, key, "from")) {
			if (ctl_filter_str(p, v, f->from, err) < 0)
				return -1;
		} else if (json_str_eq(p, key, "to")) {
			if (ctl_filter_str(p, v, f->to, err) < 0)
				return -1;
		} else if (json_str_eq(p, key, "domain")) {
			if (ctl_filter_str(p, v, f->domain, err) < 0)
				return -1;
		} else if (json_str_eq(p, key, "held")) {
			if (v->type != JSON_TRUE && v->type != JSON_FALSE) {
				*err = "filter \"held\" must be true or false";
				return -1;
			}
			f->held = v->type == JSON_TRUE;
		} else if (json_str_eq(p, key, "older_than")) {
			if (v->type != JSON_NUMBER || v->num < 0) {
				*err = "filter \"older_than\" must be seconds >= 0";
				return -1;
			}
			f->older_than = v->num;
		} else {
			*err = "unknown filter key";
			return -1;
		}
	}
	return 0;
}

/* The store's filter for f at time now; it points into f. Pure. */
static void
ctl_filter_query(const struct ctl_filter *f, int64_t now,
    struct queue_filter *out)
{
	queue_filter_init(out);
	out->sender = f->from[0] != '\0' ? f->from : NULL;
	out->rcpt = f->to[0] != '\0' ? f->to : NULL;
	out->domain = f->domain[0] != '\0' ? f->domain : NULL;
	out->held = f->held;
	out->older_than = f->older_than;
	out->now = now;
}

int
ctl_filter_match(const struct ctl_filter *f, const struct envelope *env,
    int64_t now)
{
	struct queue_filter qf;

	ctl_filter_query(f, now, &qf);
	return queue_filter_match(&qf, env);
}

/* The request's "filter" (absent: match all). 0, or CTL_E_BAD_REQUEST. */
static int
ctl_req_filter(struct ctl_req *r, struct ctl_filter *f)
{
	long i = ctl_req_arg(r, "filter");

	ctl_filter_init(f);
	if (i < 0)
		return 0;
	if (ctl_filter_parse(r->p, r->toks, (size_t)i, f, &r->error) < 0)
		return CTL_E_BAD_REQUEST;
	return 0;
}

/* Collects the ids of the matching messages (delete/retry --all-matching). */
struct ctl_ids {
	uint64_t *ids;                  /* owned */
	size_t nids, cap;
};

static int
ctl_ids_cb(void *arg, const struct envelope *env)
{
	struct ctl_ids *c = arg;

	if (c->nids == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 64;
		c->ids = xreallocarray(c->ids, c->cap, sizeof(*c->ids));
	}
	c->ids[c->nids++] = env->id;
	return 0;
}

/* ---- listings, streamed in pages (ctl.h: ctl_stream_page) ---- */

struct ctl_stream {
	struct ctl_filter f;
	int64_t now;                    /* of the request, for older_than */
	uint64_t after;                 /* the last id written; 0: none yet */
	uint64_t limit;                 /* rows wanted; 0: all */
	uint64_t count;                 /* rows written */
	int done;                       /* the trailer is written */
};

/* Where one page's rows go. */
struct ctl_page {
	struct buf *out;
	size_t start;                   /* out->len when the page began */
};

static int
ctl_stream_row_cb(void *arg, const struct envelope *env)
{
	struct ctl_page *pg = arg;
	struct json_writer w;
	size_t len;
	char *p;

	json_writer_init(&w);
	ctl_envelope_write(&w, env, 0);
	if ((p = json_writer_finish(&w, &len)) == NULL) {
		pg->out->err = ENOMEM;
		return 1;
	}
	buf_add(pg->out, p, len);
	buf_add(pg->out, "\n", 1);
	free(p);
	/* a page ends at CTL_PAGE_BYTES, so a row of many recipients still
	   leaves it bounded */
	return pg->out->len - pg->start >= CTL_PAGE_BYTES;
}

/* The trailer line: done, count, next_after (or the error). */
static void
ctl_stream_trailer(struct ctl_stream *st, struct buf *out, int code,
    const char *error)
{
	struct json_writer w;
	char qid[QID_STRLEN + 1];
	size_t len;
	char *p;

	json_writer_init(&w);
	json_obj_open(&w);
	json_kv_bool(&w, "end", 1);
	json_kv_bool(&w, "ok", code == 0);
	if (code != 0) {
		json_kv_str(&w, "error", error);
		json_kv_int(&w, "code", code);
	}
	json_kv_uint(&w, "count", st->count);
	json_key(&w, "next_after");
	if (code == 0 && st->limit != 0 && st->count == st->limit &&
	    st->after != 0) {
		qid_format(st->after, qid);
		json_put_str(&w, qid);
	} else
		json_put_null(&w);
	json_obj_close(&w);
	if ((p = json_writer_finish(&w, &len)) == NULL) {
		out->err = ENOMEM;
		return;
	}
	buf_add(out, p, len);
	buf_add(out, "\n", 1);
	free(p);
	st->done = 1;
}

int
ctl_stream_page(struct ctl_stream *st, struct queue *q, struct buf *out)
{
	struct queue_filter qf;
	struct ctl_page pg = { out, out->len };
	size_t want = CTL_PAGE_ROWS;
	uint64_t last = 0;
	long n;

	if (st->done)
		return 1;
	if (st->count == 0)             /* the first rows go out at once */
		want = CTL_PAGE_FIRST;
	if (st->limit != 0 && st->limit - st->count < want)
		want = (size_t)(st->limit - st->count);
	ctl_filter_query(&st->f, st->now, &qf);
	n = want == 0 ? 0 :
	    queue_query(q, &qf, st->after, want, &last, ctl_stream_row_cb, &pg);
	if (n < 0 || out->err != 0) {
		out->err = 0;
		out->len = pg.start;    /* no half page before the error */
		if (out->p != NULL)
			out->p[out->len] = '\0';
		ctl_stream_trailer(st, out, CTL_E_INTERNAL, n < 0 ?
		    "cannot read the queue" : "out of memory");
		return 1;
	}
	st->count += (uint64_t)n;
	if (n > 0)
		st->after = last;
	/* fewer rows than asked (and not cut by size): the listing is over */
	if ((size_t)n < want && out->len - pg.start < CTL_PAGE_BYTES)
		ctl_stream_trailer(st, out, 0, NULL);
	else if (st->limit != 0 && st->count >= st->limit)
		ctl_stream_trailer(st, out, 0, NULL);
	return st->done;
}

void
ctl_stream_free(struct ctl_stream *st)
{
	free(st);
}

/* "limit": N >= 1 and "after": "<qid>" of a listing. */
static int
ctl_req_page(struct ctl_req *r, struct ctl_stream *st)
{
	long i;
	char buf[QID_STRLEN + 2];

	if ((i = ctl_req_arg(r, "limit")) >= 0) {
		if (r->toks[i].type != JSON_NUMBER || r->toks[i].num < 1) {
			r->error = "\"limit\" must be a number >= 1";
			return CTL_E_BAD_REQUEST;
		}
		st->limit = (uint64_t)r->toks[i].num;
	}
	if ((i = ctl_req_arg(r, "after")) >= 0) {
		if (r->toks[i].type != JSON_STRING ||
		    json_str_decode(r->p, &r->toks[i], buf, sizeof(buf)) < 0 ||
		    qid_parse(buf, &st->after) == -1) {
			r->error = "\"after\" must be a queue id (16 hex digits)";
			return CTL_E_BAD_REQUEST;
		}
	}
	return 0;
}

/* queue: the header now; the rows and the trailer by ctl_stream_page */
static int
ctl_cmd_queue(struct ctl_req *r)
{
	struct ctl_stream *st;
	int code;

	if (r->version < CTL_STREAM_VERSION) {
		r->error = "listings are streamed since protocol 2: send \"v\":2";
		return CTL_E_VERSION;
	}
	st = xcalloc(1, sizeof(*st));
	if ((code = ctl_req_filter(r, &st->f)) != 0 ||
	    (code = ctl_req_page(r, st)) != 0) {
		free(st);
		return code;
	}
	st->now = now_unix();
	ctl_reply_ok_open(r->out);
	json_kv_str(r->out, "stream", "messages");
	json_obj_close(r->out);
	r->stream = st;
	return 0;
}

/* summary: counts per state and the top domains, from the counters */
static int
ctl_summary_dom_cb(void *arg, const char *domain, uint64_t messages,
    uint64_t recipients)
{
	struct json_writer *w = arg;

	json_obj_open(w);
	json_kv_str(w, "domain", domain);
	json_kv_uint(w, "messages", messages);
	json_kv_uint(w, "recipients", recipients);
	json_obj_close(w);
	return 0;
}

static int
ctl_cmd_summary(struct ctl_req *r)
{
	struct queue_counts c;
	int64_t top = CTL_SUMMARY_TOP;
	long i;

	if ((i = ctl_req_arg(r, "top")) >= 0) {
		if (r->toks[i].type != JSON_NUMBER || r->toks[i].num < 0) {
			r->error = "\"top\" must be a number >= 0";
			return CTL_E_BAD_REQUEST;
		}
		top = r->toks[i].num;
	}
	if (queue_counts(r->q, &c) < 0) {
		r->error = "cannot read the queue";
		return CTL_E_INTERNAL;
	}
	ctl_reply_ok_open(r->out);
	json_key(r->out, "states");
	json_obj_open(r->out);
	json_kv_uint(r->out, "messages", c.messages);
	json_kv_uint(r->out, "new", c.messages - c.held - c.deferred);
	json_kv_uint(r->out, "deferred", c.deferred);
	json_kv_uint(r->out, "held", c.held);
	json_kv_uint(r->out, "corrupt", c.corrupt);
	json_obj_close(r->out);
	json_kv_uint(r->out, "recipients", c.recipients);
	json_kv_uint(r->out, "bytes", c.bytes);
	json_kv_int(r->out, "oldest_arrival", c.oldest_arrival);
	json_key(r->out, "domains");
	json_arr_open(r->out);
	if (queue_domains(r->q, (size_t)top, ctl_summary_dom_cb, r->out) < 0) {
		r->error = "cannot read the queue";
		return CTL_E_INTERNAL;
	}
	json_arr_close(r->out);
	json_obj_close(r->out);
	return 0;
}

/* ---- stats ---- */

/* Domains listed by STATS at most (the most pending recipients first). */
#define CTL_STATS_DOMAINS 100

struct ctl_stats_doms {
	struct json_writer *w;
	uint64_t n;
};

static int
ctl_stats_dom_cb(void *arg, const char *domain, uint64_t messages,
    uint64_t recipients)
{
	struct ctl_stats_doms *d = arg;

	d->n++;
	if (d->n > CTL_STATS_DOMAINS)
		return 0;       /* counted, not listed */
	json_obj_open(d->w);
	json_kv_str(d->w, "domain", domain);
	json_kv_uint(d->w, "messages", messages);
	json_kv_uint(d->w, "recipients", recipients);
	json_obj_close(d->w);
	return 0;
}

/*
 * The queue part of STATS, from the queue's counters (queue_counts,
 * queue_domains): no walk. "held" and "pending" count messages that are
 * not corrupt; "domains" lists the CTL_STATS_DOMAINS domains with the most
 * pending recipients, "domains_total" says how many have any.
 */
int
ctl_stats_queue_write(struct json_writer *w, struct queue *q)
{
	struct queue_counts c;
	struct ctl_stats_doms d = { w, 0 };
	uint64_t seg_bytes, index_bytes;
	int rc;

	if (queue_counts(q, &c) < 0)
		return -1;
	json_obj_open(w);
	json_kv_uint(w, "messages", c.messages);
	json_kv_uint(w, "pending", c.messages - c.held);
	json_kv_uint(w, "held", c.held - c.corrupt);
	json_kv_uint(w, "corrupt", c.corrupt);
	json_kv_uint(w, "deferred", c.deferred);
	json_kv_uint(w, "recipients", c.recipients);
	json_kv_uint(w, "bytes", c.bytes);
	json_kv_int(w, "oldest_arrival", c.oldest_arrival);
	queue_disk_use(q, &seg_bytes, &index_bytes);
	json_kv_uint(w, "segments_bytes", seg_bytes);
	json_kv_uint(w, "index_bytes", index_bytes);
	json_key(w, "domains");
	json_arr_open(w);
	rc = queue_domains(q, 0, ctl_stats_dom_cb, &d);
	json_arr_close(w);
	json_kv_uint(w, "domains_total", d.n);
	json_obj_close(w);
	return rc;
}

static int
ctl_cmd_show(struct ctl_req *r)
{
	struct envelope *env = NULL;
	char *body = NULL;
	size_t bodylen = 0;
	int want_body = 0, rc;
	long b = ctl_req_arg(r, "body");

	if (b >= 0) {
		if (r->toks[b].type != JSON_TRUE && r->toks[b].type != JSON_FALSE) {
			r->error = "\"body\" must be true or false";
			return CTL_E_BAD_REQUEST;
		}
		want_body = r->toks[b].type == JSON_TRUE;
	}
	rc = queue_get(r->q, r->id, &env);
	if (rc == 1) {
		r->error = "no such message";
		return CTL_E_NOT_FOUND;
	}
	if (rc != 0) {
		r->error = "cannot read the queue";
		return CTL_E_INTERNAL;
	}
	if (want_body && queue_read_body(r->q, env, &body, &bodylen) == -1) {
		r->error = errno == EBADMSG ? "body fails its checksum" :
		    "cannot read the body";
		rc = CTL_E_INTERNAL;
		goto fail;
	}
	ctl_reply_ok_open(r->out);
	json_key(r->out, "message");
	ctl_envelope_write(r->out, env, 1);
	if (want_body) {
		json_key(r->out, "body");
		json_put_base64(r->out, body, bodylen);
	}
	json_obj_close(r->out);
	rc = 0;
fail:
	free(body);
	envelope_free(env);
	return rc;
}

/* hold, release, delete, retry, bounce, pause, resume (table arg: type) */
static int
ctl_cmd_op(struct ctl_req *r)
{
	struct ctl_op *op;
	long a;

	if (!r->async || r->hooks == NULL || r->hooks->op == NULL) {
		r->error = "not supported";
		return CTL_E_UNSUPPORTED;
	}
	op = xcalloc(1, sizeof(*op));
	op->type = (enum ctl_op_type)r->arg;
	op->stats_queue = ctl_stats_queue_write;
	if (op->type == CTL_OP_PAUSE || op->type == CTL_OP_RESUME) {
		if ((a = ctl_req_arg(r, "domain")) >= 0) {
			const char *err = NULL;
			if (ctl_filter_str(r->p, &r->toks[a], op->domain, &err) < 0 ||
			    op->domain[0] == '\0') {
				r->error = "\"domain\" must be a non-empty string";
				free(op);
				return CTL_E_BAD_REQUEST;
			}
			for (char *c = op->domain; *c != '\0'; c++)
				if (*c >= 'A' && *c <= 'Z')
					*c = (char)(*c - 'A' + 'a');
		}
	} else if (op->type == CTL_OP_STATS) {
		/* no arguments */
	} else if (r->has_id) {
		op->ids = xcalloc(1, sizeof(*op->ids));
		op->ids[0] = r->id;
		op->nids = 1;
		op->single = 1;
	} else if ((a = ctl_req_arg(r, "all")) >= 0) {
		struct ctl_filter f;
		struct queue_filter qf;
		struct ctl_ids c = { 0 };
		int code;
		if (r->toks[a].type != JSON_TRUE) {
			r->error = "\"all\" must be true";
			free(op);
			return CTL_E_BAD_REQUEST;
		}
		if ((code = ctl_req_filter(r, &f)) != 0) {
			free(op);
			return code;
		}
		ctl_filter_query(&f, now_unix(), &qf);
		if (r->q == NULL ||
		    queue_query(r->q, &qf, 0, 0, NULL, ctl_ids_cb, &c) < 0) {
			r->error = "cannot read the queue";
			free(c.ids);
			free(op);
			return CTL_E_INTERNAL;
		}
		op->ids = c.ids;
		op->nids = c.nids;
		/* retry --domain D also lifts D's down mark */
		if (op->type == CTL_OP_RETRY)
			snprintf(op->domain, sizeof(op->domain), "%s", f.domain);
	} else {
		r->error = "\"id\" or \"all\":true required";
		free(op);
		return CTL_E_BAD_REQUEST;
	}
	r->op = op;
	return 0;
}

/* stats: through the scheduler when it runs here, else the queue only */
static int
ctl_cmd_stats(struct ctl_req *r)
{
	if (r->async && r->hooks != NULL && r->hooks->op != NULL)
		return ctl_cmd_op(r);
	if (r->q == NULL) {
		r->error = "queue not available";
		return CTL_E_INTERNAL;
	}
	ctl_reply_ok_open(r->out);
	json_kv_bool(r->out, "running", 0);
	json_kv_null(r->out, "uptime");
	json_kv_null(r->out, "counters");
	json_kv_bool(r->out, "paused_all", 0);
	json_key(r->out, "paused_domains");
	json_arr_open(r->out);
	json_arr_close(r->out);
	json_key(r->out, "queue");
	if (ctl_stats_queue_write(r->out, r->q) == -1) {
		r->error = "cannot read the queue";
		return CTL_E_INTERNAL;
	}
	json_obj_close(r->out);
	return 0;
}

/* verify: the index against every segment record (queue_verify) */
#define CTL_VERIFY_DIFFS 100            /* differences listed; all are counted */

static void
ctl_verify_diff_cb(void *arg, uint64_t id, uint32_t seg, uint64_t off,
    const char *what)
{
	struct ctl_req *r = arg;
	char qid[QID_STRLEN + 1], sg[16];

	if (r->verify_listed++ >= CTL_VERIFY_DIFFS)
		return;
	json_obj_open(r->out);
	json_key(r->out, "id");
	if (id != 0) {
		qid_format(id, qid);
		json_put_str(r->out, qid);
	} else
		json_put_null(r->out);
	snprintf(sg, sizeof(sg), "%08x", seg);
	json_key(r->out, "segment");
	json_put_str(r->out, sg);
	json_key(r->out, "offset");
	json_put_uint(r->out, off);
	json_key(r->out, "what");
	json_put_str(r->out, what);
	json_obj_close(r->out);
}

static int
ctl_cmd_verify(struct ctl_req *r)
{
	struct queue_verify v;
	int rc;

	ctl_reply_ok_open(r->out);
	json_key(r->out, "diffs");
	json_arr_open(r->out);
	rc = queue_verify(r->q, &v, ctl_verify_diff_cb, r);
	json_arr_close(r->out);
	if (rc < 0) {
		json_writer_reset(r->out);
		r->error = "cannot read the index";
		return CTL_E_INTERNAL;
	}
	static const struct { const char *k; size_t off; } f[] = {
		{ "segments", offsetof(struct queue_verify, segments) },
		{ "records", offsetof(struct queue_verify, records) },
		{ "damaged", offsetof(struct queue_verify, damaged) },
		{ "torn", offsetof(struct queue_verify, torn) },
		{ "entries", offsetof(struct queue_verify, entries) },
		{ "held_corrupt", offsetof(struct queue_verify, held_corrupt) },
		{ "dead", offsetof(struct queue_verify, dead) },
		{ "unindexed", offsetof(struct queue_verify, unindexed) },
		{ "differences", offsetof(struct queue_verify, differences) },
	};
	for (size_t i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		json_key(r->out, f[i].k);
		json_put_uint(r->out, *(const uint64_t *)(const void *)
		    ((const char *)&v + f[i].off));
	}
	json_key(r->out, "agree");
	json_put_bool(r->out, v.differences == 0);
	json_obj_close(r->out);
	return 0;
}

static int
ctl_cmd_reload(struct ctl_req *r)
{
	const struct ctl_hooks *h = r->hooks;

	if (h == NULL || h->reload == NULL) {
		r->error = "not supported";
		return CTL_E_UNSUPPORTED;
	}
	if (r->async) {                 /* the server runs it on the hooks' loop */
		r->op = xcalloc(1, sizeof(*r->op));
		r->op->type = CTL_OP_RELOAD;
		return 0;
	}
	if (h->reload(h->arg) != 0) {
		r->error = "reload failed (see the log)";
		return CTL_E_INTERNAL;
	}
	ctl_reply_ok_open(r->out);
	json_obj_close(r->out);
	return 0;
}

/* The command set. Add a line here (and one in ternctl's table). */
static const struct ctl_cmd ctl_cmds[] = {
	{ "ping",    ctl_cmd_ping,   0, 0 },
	{ "queue",   ctl_cmd_queue,  CTL_C_QUEUE | CTL_C_SLOW, 0 },
	{ "summary", ctl_cmd_summary, CTL_C_QUEUE, 0 },
	{ "show",    ctl_cmd_show,   CTL_C_QUEUE | CTL_C_ID, 0 },
	{ "hold",    ctl_cmd_op,     CTL_C_ID, CTL_OP_HOLD },
	{ "release", ctl_cmd_op,     CTL_C_ID, CTL_OP_RELEASE },
	{ "delete",  ctl_cmd_op,     CTL_C_IDALL, CTL_OP_DELETE },
	{ "retry",   ctl_cmd_op,     CTL_C_IDALL, CTL_OP_RETRY },
	{ "bounce",  ctl_cmd_op,     CTL_C_ID, CTL_OP_BOUNCE },
	{ "pause",   ctl_cmd_op,     0, CTL_OP_PAUSE },
	{ "resume",  ctl_cmd_op,     0, CTL_OP_RESUME },
	{ "stats",   ctl_cmd_stats,  0, CTL_OP_STATS },
	{ "reload",  ctl_cmd_reload, 0, 0 },
	{ "verify",  ctl_cmd_verify, CTL_C_QUEUE | CTL_C_SLOW, 0 },
};

/* Find the command and check its arguments; 0, or a CTL_E_* with r->error. */
static int
ctl_request_check(struct ctl_req *r, const struct ctl_cmd **cmdp)
{
	long v = ctl_req_arg(r, "v");
	long c = ctl_req_arg(r, "cmd");
	const struct ctl_cmd *cmd = NULL;

	if (v < 0 || r->toks[v].type != JSON_NUMBER ||
	    r->toks[v].num < CTL_PROTO_MIN || r->toks[v].num > CTL_PROTO_VERSION) {
		r->error = "unsupported protocol version";
		return CTL_E_VERSION;
	}
	r->version = r->toks[v].num;
	if (c < 0 || r->toks[c].type != JSON_STRING) {
		r->error = "missing \"cmd\"";
		return CTL_E_BAD_REQUEST;
	}
	for (size_t i = 0; i < sizeof(ctl_cmds) / sizeof(ctl_cmds[0]); i++)
		if (json_str_eq(r->p, &r->toks[c], ctl_cmds[i].name))
			cmd = &ctl_cmds[i];
	if (cmd == NULL) {
		r->error = "unknown command";
		return CTL_E_UNKNOWN;
	}
	if ((cmd->flags & CTL_C_ID) || ((cmd->flags & CTL_C_IDALL) &&
	    ctl_req_arg(r, "id") >= 0)) {
		long i = ctl_req_arg(r, "id");
		char buf[QID_STRLEN + 2];
		if (i < 0 || r->toks[i].type != JSON_STRING ||
		    json_str_decode(r->p, &r->toks[i], buf, sizeof(buf)) < 0 ||
		    qid_parse(buf, &r->id) == -1) {
			r->error = "\"id\" must be a queue id (16 hex digits)";
			return CTL_E_BAD_REQUEST;
		}
		r->has_id = 1;
	}
	if ((cmd->flags & CTL_C_QUEUE) && r->q == NULL) {
		r->error = "queue not available";
		return CTL_E_INTERNAL;
	}
	r->arg = cmd->arg;
	*cmdp = cmd;
	return 0;
}

void
ctl_reply_error(struct json_writer *w, int code, const char *text)
{
	json_writer_reset(w);
	json_obj_open(w);
	json_kv_bool(w, "ok", 0);
	json_kv_str(w, "error", text);
	json_kv_int(w, "code", code);
	json_obj_close(w);
}

/*
 * Answer one request into out, or, when async and the command hands work
 * on, return 0 with *opp set (out then stays empty); a listing returns 0
 * with its header in out and *streamp set.
 */
int
ctl_request_run(struct queue *q, const struct ctl_hooks *hooks,
    const char *req, size_t len, struct json_writer *out, int async,
    struct ctl_op **opp, struct ctl_stream **streamp)
{
	struct json_tok toks[CTL_REQ_TOKENS];
	struct ctl_req r = { .q = q, .hooks = hooks, .p = req, .toks = toks,
	    .out = out, .async = async };
	const struct ctl_cmd *cmd = NULL;
	size_t used;
	int code;

	*opp = NULL;
	*streamp = NULL;
	json_writer_reset(out);
	if (json_parse(req, len, toks, CTL_REQ_TOKENS, CTL_REQ_DEPTH, &used) !=
	    JSON_OK || toks[0].type != JSON_OBJECT) {
		ctl_reply_error(out, CTL_E_BAD_REQUEST, "request is not a JSON object");
		return CTL_E_BAD_REQUEST;
	}
	code = ctl_request_check(&r, &cmd);
	if (code == 0)
		code = cmd->fn(&r);
	if (code == 0 && r.op != NULL) {
		*opp = r.op;
		return 0;
	}
	if (code != 0)
		ctl_reply_error(out, code, r.error != NULL ? r.error : "failed");
	else if (out->failed) {
		code = CTL_E_INTERNAL;
		ctl_reply_error(out, code, "out of memory");
	}
	if (code == 0)
		*streamp = r.stream;
	else
		ctl_stream_free(r.stream);
	return code;
}

int
ctl_request_slow(const char *req, size_t len)
{
	struct json_tok toks[CTL_REQ_TOKENS];
	struct ctl_req r = { .p = req, .toks = toks };
	size_t used;
	long c;

	if (json_parse(req, len, toks, CTL_REQ_TOKENS, CTL_REQ_DEPTH, &used) !=
	    JSON_OK || toks[0].type != JSON_OBJECT ||
	    (c = ctl_req_arg(&r, "cmd")) < 0 || toks[c].type != JSON_STRING)
		return 0;
	for (size_t i = 0; i < sizeof(ctl_cmds) / sizeof(ctl_cmds[0]); i++) {
		if (!json_str_eq(req, &toks[c], ctl_cmds[i].name))
			continue;
		if (ctl_cmds[i].flags & CTL_C_SLOW)
			return 1;
		/* delete/retry "all": the matching ids are collected */
		return (ctl_cmds[i].flags & CTL_C_IDALL) &&
		    ctl_req_arg(&r, "all") >= 0;
	}
	return 0;
}

int
ctl_request_handle(struct queue *q, const struct ctl_hooks *hooks,
    const char *req, size_t len, struct json_writer *out,
    struct ctl_stream **streamp)
{
	struct ctl_op *op;

	return ctl_request_run(q, hooks, req, len, out, 0, &op, streamp);
}
