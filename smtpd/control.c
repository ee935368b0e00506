/*
 * control.c - the daemon side of the control socket (ctl.h): JSON lines
 * over a UNIX stream socket, one response line per request line.
 *
 * Runs on one event loop (the base given to ctl_server_new), with an
 * evconnlistener and one bufferevent per connection. Owns the listening
 * socket, its path, and its connections. Queue reads (queue_walk, queue_get,
 * queue_read_body) run on this loop: they are Berkeley DB and segment
 * reads, short and bounded; it never commits, never waits for the
 * committer, and the mutating commands only call struct ctl_hooks, which
 * must hand their work on and return. A request handed on (struct ctl_op)
 * holds its connection's later requests until the answer comes back through
 * the server's answer queue (a tq on this loop); an answer whose connection
 * has gone meanwhile is dropped by its token (the connection id).
 *
 * Untrusted input: every byte a connected peer sends. A peer is authorised
 * once, at accept, from SO_PEERCRED/SO_PEERGROUPS (never from anything it
 * says); lines are bounded by CTL_LINE_MAX before the buffer grows; requests
 * go through the pure parser of json.c with a bounded depth and token
 * count. Output is bounded by read back-pressure: while a connection's
 * output holds more than CTL_OUT_HIGH bytes, its input is not read.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "tern/ctl.h"
#include "tern/envelope.h"
#include "tern/json.h"
#include "tern/log.h"
#include "tern/queue.h"
#include "tern/tq.h"
#include "tern/util.h"

#define CTL_OUT_HIGH     (1024 * 1024)   /* stop reading above this output */
#define CTL_REQ_TOKENS   128             /* tokens in one request */
#define CTL_REQ_DEPTH    8
#define CTL_WRITE_TIMEOUT 60

#define CTL_F_CLOSING    0x01u
#define CTL_F_WAITING    0x02u          /* a ctl_op is out: read no further */
#define CTL_F_EOF        0x04u          /* peer half-closed while waiting */

/* Where answers of ctl_ops go: shared by the server and its ops. */
struct ctl_return {
	pthread_mutex_t mu;
	struct tq *tq;                  /* owned by the server; NULL once gone */
	unsigned refs;                  /* under mu */
};

/* An answer on its way back to the control loop. */
struct ctl_answer {
	struct tq_msg hdr;              /* TQ_CTL; reqid = connection id */
	char *text;                     /* owned: response object, no LF */
	size_t len;
};

struct ctl_conn {
	TAILQ_ENTRY(ctl_conn) entry;
	struct ctl_server *srv;         /* borrowed: owns us */
	uint64_t id;                    /* token of its pending op */
	struct bufferevent *bev;        /* owned */
	uid_t uid;
	pid_t pid;
	unsigned flags;
};

struct ctl_server {
	struct event_base *base;        /* borrowed */
	struct evconnlistener *lev;     /* owned, owns the socket */
	char *path;                     /* owned */
	dev_t dev;                      /* of the socket file we made */
	ino_t ino;
	struct queue *q;                /* borrowed, may be NULL */
	const struct ctl_hooks *hooks;  /* borrowed, may be NULL */
	gid_t group;                    /* (gid_t)-1: none */
	struct ctl_return *ret;         /* a reference; ret->tq is ours */
	uint64_t next_conn_id;
	unsigned nconns;
	TAILQ_HEAD(ctl_conn_list, ctl_conn) conns;
};

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
	const char *error;              /* text for a non-zero return */
	size_t verify_listed;           /* verify: differences written */
};

#define CTL_C_ID     0x01u          /* needs "id":"<qid>" */
#define CTL_C_QUEUE  0x02u          /* needs the queue */
#define CTL_C_IDALL  0x04u          /* "id":"<qid>", or "all":true [+filter] */

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

int
ctl_filter_match(const struct ctl_filter *f, const struct envelope *env,
    int64_t now)
{
	int to_ok = f->to[0] == '\0', dom_ok = f->domain[0] == '\0';

	if (f->held >= 0 && ((env->flags & ENV_F_HOLD) != 0) != f->held)
		return 0;
	/* arrival comes from a queue record (any int64): no now - arrival */
	if (f->older_than >= 0 && (env->arrival > now ||
	    (uint64_t)now - (uint64_t)env->arrival < (uint64_t)f->older_than))
		return 0;
	if (f->from[0] != '\0' && (env->sender == NULL ||
	    strcasestr(env->sender, f->from) == NULL))
		return 0;
	for (size_t i = 0; i < env->nrcpt && !(to_ok && dom_ok); i++) {
		const struct env_rcpt *rc = &env->rcpts[i];
		if (rc->state != RCPT_PENDING || rc->addr == NULL)
			continue;
		if (!to_ok && strcasestr(rc->addr, f->to) != NULL)
			to_ok = 1;
		if (!dom_ok && strcasecmp(addr_domain(rc->addr),
		    f->domain) == 0)
			dom_ok = 1;
	}
	return to_ok && dom_ok;
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

struct ctl_walk {
	const struct ctl_filter *f;
	int64_t now;
	struct json_writer *w;          /* queue: write matches */
	uint64_t *ids;                  /* or collect their ids (owned) */
	size_t nids, cap;
};

static int
ctl_queue_walk_cb(void *arg, const struct envelope *env)
{
	struct ctl_walk *c = arg;

	if (!ctl_filter_match(c->f, env, c->now))
		return 0;
	if (c->w != NULL) {
		ctl_envelope_write(c->w, env, 0);
		return 0;
	}
	if (c->nids == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 64;
		c->ids = xreallocarray(c->ids, c->cap, sizeof(*c->ids));
	}
	c->ids[c->nids++] = env->id;
	return 0;
}

static int
ctl_cmd_queue(struct ctl_req *r)
{
	struct ctl_filter f;
	struct ctl_walk c = { .f = &f, .now = now_unix(), .w = r->out };
	int code;

	if ((code = ctl_req_filter(r, &f)) != 0)
		return code;
	ctl_reply_ok_open(r->out);
	json_key(r->out, "messages");
	json_arr_open(r->out);
	if (queue_walk(r->q, ctl_queue_walk_cb, &c) == -1) {
		r->error = "cannot read the queue";
		return CTL_E_INTERNAL;
	}
	json_arr_close(r->out);
	json_obj_close(r->out);
	return 0;
}

/* ---- stats ---- */

/* One pending recipient's domain (lower case) and its message. */
struct ctl_dom_rcpt {
	char *dom;                      /* owned */
	uint64_t id;
};

struct ctl_stats {
	uint64_t messages, pending, held, corrupt;
	struct ctl_dom_rcpt *r;         /* every pending recipient */
	size_t nr, cap;
};

static int
ctl_stats_walk_cb(void *arg, const struct envelope *env)
{
	struct ctl_stats *st = arg;

	st->messages++;
	if (env->flags & ENV_F_CORRUPT)
		st->corrupt++;
	else if (env->flags & ENV_F_HOLD)
		st->held++;
	else
		st->pending++;
	for (size_t i = 0; i < env->nrcpt; i++) {
		if (env->rcpts[i].state != RCPT_PENDING || env->rcpts[i].addr == NULL)
			continue;
		if (st->nr == st->cap) {
			st->cap = st->cap ? st->cap * 2 : 64;
			st->r = xreallocarray(st->r, st->cap, sizeof(*st->r));
		}
		st->r[st->nr].dom = xstrdup(addr_domain(env->rcpts[i].addr));
		for (char *c = st->r[st->nr].dom; *c != '\0'; c++)
			if (*c >= 'A' && *c <= 'Z')
				*c = (char)(*c - 'A' + 'a');
		st->r[st->nr++].id = env->id;
	}
	return 0;
}

static int
ctl_dom_rcpt_cmp(const void *a, const void *b)
{
	const struct ctl_dom_rcpt *x = a, *y = b;
	int c = strcmp(x->dom, y->dom);

	return c != 0 ? c : x->id < y->id ? -1 : x->id > y->id;
}

/*
 * The queue part of STATS. Pending recipients are sorted by (domain, id)
 * and counted in runs: O(R log R), where a table searched per recipient
 * was O(R x domains).
 */
int
ctl_stats_queue_write(struct json_writer *w, struct queue *q)
{
	struct ctl_stats st = { 0 };
	int rc = queue_walk(q, ctl_stats_walk_cb, &st);

	if (st.nr > 1)
		qsort(st.r, st.nr, sizeof(*st.r), ctl_dom_rcpt_cmp);
	if (rc != -1) {
		json_obj_open(w);
		json_kv_uint(w, "messages", st.messages);
		json_kv_uint(w, "pending", st.pending);
		json_kv_uint(w, "held", st.held);
		json_kv_uint(w, "corrupt", st.corrupt);
		uint64_t seg_bytes, index_bytes;
		queue_disk_use(q, &seg_bytes, &index_bytes);
		json_kv_uint(w, "segments_bytes", seg_bytes);
		json_kv_uint(w, "index_bytes", index_bytes);
		json_key(w, "domains");
		json_arr_open(w);
		for (size_t k = 0, end; k < st.nr; k = end) {
			uint64_t msgs = 1;
			for (end = k + 1; end < st.nr &&
			    strcmp(st.r[end].dom, st.r[k].dom) == 0; end++)
				msgs += st.r[end].id != st.r[end - 1].id;
			json_obj_open(w);
			json_kv_str(w, "domain", st.r[k].dom);
			json_kv_uint(w, "messages", msgs);
			json_kv_uint(w, "recipients", end - k);
			json_obj_close(w);
		}
		json_arr_close(w);
		json_obj_close(w);
	}
	for (size_t k = 0; k < st.nr; k++)
		free(st.r[k].dom);
	free(st.r);
	return rc == -1 ? -1 : 0;
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

/* ---- operations handed on (struct ctl_op) ---- */

static void
ctl_return_unref(struct ctl_return *ret)
{
	int last;

	if (ret == NULL)
		return;
	pthread_mutex_lock(&ret->mu);
	last = --ret->refs == 0;
	pthread_mutex_unlock(&ret->mu);
	if (last) {
		pthread_mutex_destroy(&ret->mu);
		free(ret);
	}
}

static void
ctl_op_free(struct ctl_op *op)
{
	if (op == NULL)
		return;
	ctl_return_unref(op->ret);
	free(op->ids);
	free(op);
}

/* Post text (owned, or NULL: out of memory) back to the control loop. */
static void
ctl_op_post(struct ctl_op *op, char *text, size_t len)
{
	struct ctl_return *ret = op->ret;
	struct ctl_answer *a = xcalloc(1, sizeof(*a));

	a->hdr.type = TQ_CTL;
	a->hdr.reqid = op->token;
	a->text = text;
	a->len = len;
	if (ret != NULL) {
		pthread_mutex_lock(&ret->mu);
		if (ret->tq != NULL) {
			tq_post(ret->tq, &a->hdr);
			a = NULL;
		}
		pthread_mutex_unlock(&ret->mu);
	}
	if (a != NULL) {                /* the server is gone */
		free(a->text);
		free(a);
	}
	ctl_op_free(op);
}

void
ctl_op_reply(struct ctl_op *op, struct json_writer *w)
{
	size_t len = 0;
	char *text = json_writer_finish(w, &len);

	ctl_op_post(op, text, len);
}

static void ctl_reply_error(struct json_writer *w, int code, const char *text);

void
ctl_op_fail(struct ctl_op *op, int code, const char *text)
{
	struct json_writer w;

	json_writer_init(&w);
	ctl_reply_error(&w, code, text);
	ctl_op_reply(op, &w);
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
		struct ctl_walk c = { .f = &f, .now = now_unix() };
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
		if (r->q == NULL || queue_walk(r->q, ctl_queue_walk_cb, &c) == -1) {
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
	{ "queue",   ctl_cmd_queue,  CTL_C_QUEUE, 0 },
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
	{ "verify",  ctl_cmd_verify, CTL_C_QUEUE, 0 },
};

/* Find the command and check its arguments; 0, or a CTL_E_* with r->error. */
static int
ctl_request_check(struct ctl_req *r, const struct ctl_cmd **cmdp)
{
	long v = ctl_req_arg(r, "v");
	long c = ctl_req_arg(r, "cmd");
	const struct ctl_cmd *cmd = NULL;

	if (v < 0 || r->toks[v].type != JSON_NUMBER ||
	    r->toks[v].num != CTL_PROTO_VERSION) {
		r->error = "unsupported protocol version";
		return CTL_E_VERSION;
	}
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

static void
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
 * on, return 0 with *opp set (out then stays empty).
 */
static int
ctl_request_run(struct queue *q, const struct ctl_hooks *hooks,
    const char *req, size_t len, struct json_writer *out, int async,
    struct ctl_op **opp)
{
	struct json_tok toks[CTL_REQ_TOKENS];
	struct ctl_req r = { .q = q, .hooks = hooks, .p = req, .toks = toks,
	    .out = out, .async = async };
	const struct ctl_cmd *cmd = NULL;
	size_t used;
	int code;

	*opp = NULL;
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
	return code;
}

int
ctl_request_handle(struct queue *q, const struct ctl_hooks *hooks,
    const char *req, size_t len, struct json_writer *out)
{
	struct ctl_op *op;

	return ctl_request_run(q, hooks, req, len, out, 0, &op);
}

/* ---- connections ---- */

static void ctl_conn_readcb(struct bufferevent *bev, void *arg);

static void
ctl_conn_free(struct ctl_conn *c)
{
	TAILQ_REMOVE(&c->srv->conns, c, entry);
	c->srv->nconns--;
	bufferevent_free(c->bev);
	free(c);
}

/* Queue one response line; -1 if it could not be queued. */
static int
ctl_conn_send(struct ctl_conn *c, struct json_writer *w)
{
	size_t len;
	char *p = json_writer_finish(w, &len);

	if (p == NULL)
		return -1;
	p[len] = '\n';       /* the NUL slot: finish leaves room for it */
	int rc = evbuffer_add(bufferevent_get_output(c->bev), p, len + 1);
	free(p);
	return rc;
}

/* Give op to the hook; the connection waits for its answer. 0 or -1. */
static int
ctl_conn_hand_on(struct ctl_conn *c, struct ctl_op *op)
{
	struct ctl_return *ret = c->srv->ret;

	pthread_mutex_lock(&ret->mu);
	ret->refs++;
	pthread_mutex_unlock(&ret->mu);
	op->ret = ret;
	op->token = c->id;
	if (c->srv->hooks->op(c->srv->hooks->arg, op) != 0) {
		ctl_op_free(op);
		return -1;
	}
	c->flags |= CTL_F_WAITING;
	return 0;
}

static void
ctl_conn_error(struct ctl_conn *c, int code, const char *text)
{
	struct json_writer w;

	json_writer_init(&w);
	ctl_reply_error(&w, code, text);
	(void)ctl_conn_send(c, &w);
	c->flags |= CTL_F_CLOSING;
}

/* Answer every complete line; returns with CLOSING set or input wanted. */
static void
ctl_conn_process(struct ctl_conn *c)
{
	struct evbuffer *in = bufferevent_get_input(c->bev);
	struct evbuffer *out = bufferevent_get_output(c->bev);
	struct json_writer w;

	json_writer_init(&w);
	while (!(c->flags & (CTL_F_CLOSING | CTL_F_WAITING))) {
		if (evbuffer_get_length(out) > CTL_OUT_HIGH) {
			/* resumed by ctl_conn_writecb once the peer has read */
			bufferevent_disable(c->bev, EV_READ);
			break;
		}
		size_t eol_len;
		struct evbuffer_ptr eol = evbuffer_search_eol(in, NULL, &eol_len,
		    EVBUFFER_EOL_LF);
		if (eol.pos < 0) {
			if (evbuffer_get_length(in) >= CTL_LINE_MAX)
				ctl_conn_error(c, CTL_E_TOO_LONG, "request line too long");
			break;
		}
		size_t n = (size_t)eol.pos;
		if (n + 1 > CTL_LINE_MAX) {
			ctl_conn_error(c, CTL_E_TOO_LONG, "request line too long");
			break;
		}
		const char *line = (const char *)evbuffer_pullup(in, (ev_ssize_t)n + 1);
		size_t len = n;
		if (len > 0 && line[len - 1] == '\r')
			len--;
		struct ctl_op *op = NULL;
		int code = ctl_request_run(c->srv->q, c->srv->hooks, line, len, &w,
		    1, &op);
		log_trace(TRACE_CTL, "ctl uid=%u pid=%d code=%d%s", (unsigned)c->uid,
		    (int)c->pid, code, op != NULL ? " handed on" : "");
		evbuffer_drain(in, n + 1);
		if (op != NULL) {
			if (ctl_conn_hand_on(c, op) == 0)
				break;          /* answered by ctl_server_answer_cb */
			ctl_reply_error(&w, CTL_E_INTERNAL, "cannot hand the request on");
		}
		if (ctl_conn_send(c, &w) == -1) {
			log_warnx("ctl uid=%u: cannot queue a response", (unsigned)c->uid);
			c->flags |= CTL_F_CLOSING;
		}
	}
	json_writer_reset(&w);
	if (c->flags & CTL_F_CLOSING)
		bufferevent_disable(c->bev, EV_READ);
}

static void
ctl_conn_readcb(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *c = arg;

	ctl_conn_process(c);
	if ((c->flags & CTL_F_CLOSING) &&
	    evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		ctl_conn_free(c);
}

/* The output has drained: close, or resume reading. */
static void
ctl_conn_writecb(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *c = arg;

	if (c->flags & CTL_F_CLOSING) {
		ctl_conn_free(c);
		return;
	}
	if (!(bufferevent_get_enabled(bev) & EV_READ)) {
		bufferevent_enable(bev, EV_READ);
		ctl_conn_readcb(bev, c);
	}
}

static void
ctl_conn_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct ctl_conn *c = arg;

	if ((what & BEV_EVENT_EOF) && !(what & BEV_EVENT_ERROR) &&
	    !(c->flags & CTL_F_CLOSING)) {
		/* half-closed after its requests: answer them, then close */
		ctl_conn_process(c);
		if (c->flags & CTL_F_WAITING) {
			/* the answer comes later: ctl_server_answer_cb closes */
			c->flags |= CTL_F_EOF;
			bufferevent_disable(bev, EV_READ);
			return;
		}
		c->flags |= CTL_F_CLOSING;
		if (evbuffer_get_length(bufferevent_get_output(bev)) > 0) {
			bufferevent_disable(bev, EV_READ);
			return;
		}
	}
	if (what & BEV_EVENT_TIMEOUT)
		log_debug("ctl uid=%u: idle timeout", (unsigned)c->uid);
	ctl_conn_free(c);
}

/* An op's answer, on the control loop: send it, go on with the input. */
/* The connection id waiting for an answer, or NULL (it has gone). */
static struct ctl_conn *
ctl_conn_waiting(struct ctl_server *s, uint64_t id)
{
	struct ctl_conn *c;

	TAILQ_FOREACH(c, &s->conns, entry)
		if (c->id == id && (c->flags & CTL_F_WAITING))
			return c;
	return NULL;
}

static void
ctl_server_answer_cb(struct tq_msg *msg, void *arg)
{
	struct ctl_server *s = arg;
	struct ctl_answer *a = (struct ctl_answer *)msg;
	struct ctl_conn *c;

	if (msg->type != TQ_CTL)
		panic("ctl_server_answer_cb: unexpected message type %d",
		    (int)msg->type);
	if ((c = ctl_conn_waiting(s, msg->reqid)) == NULL) {
		log_debug("ctl: answer for a connection that has gone, dropped");
		goto out;
	}
	c->flags &= ~CTL_F_WAITING;
	if (a->text == NULL) {
		ctl_conn_error(c, CTL_E_INTERNAL, "out of memory");
	} else {
		a->text[a->len] = '\n';         /* the NUL slot */
		if (evbuffer_add(bufferevent_get_output(c->bev), a->text,
		    a->len + 1) == -1)
			c->flags |= CTL_F_CLOSING;
	}
	if (c->flags & CTL_F_EOF) {
		ctl_conn_process(c);            /* what it sent before EOF */
		if (!(c->flags & CTL_F_WAITING))
			c->flags |= CTL_F_CLOSING;
	} else if (!(c->flags & CTL_F_CLOSING)) {
		bufferevent_enable(c->bev, EV_READ);
		ctl_conn_process(c);
	}
	if ((c->flags & CTL_F_CLOSING) &&
	    evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		ctl_conn_free(c);
out:
	free(a->text);
	free(a);
}

/* 1 if the peer may use the socket. */
static int
ctl_peer_allowed(struct ctl_server *s, int fd, const struct ucred *cr)
{
	if (cr->uid == 0 || cr->uid == geteuid())
		return 1;
	if (s->group == (gid_t)-1)
		return 0;
	if (cr->gid == s->group)
		return 1;
#ifdef SO_PEERGROUPS
	gid_t small[64], *g = small;
	socklen_t glen = sizeof(small);
	int ok = 0;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &glen) == -1) {
		if (errno != ERANGE || glen == 0 || glen > 65536 * sizeof(gid_t))
			return 0;
		g = malloc(glen);
		if (g == NULL ||
		    getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g, &glen) == -1) {
			free(g);
			return 0;
		}
	}
	for (size_t i = 0; i < glen / sizeof(gid_t); i++)
		if (g[i] == s->group)
			ok = 1;
	if (g != small)
		free(g);
	return ok;
#else
	return 0;
#endif
}

static void
ctl_server_acceptcb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct ctl_server *s = arg;
	struct ucred cr;
	socklen_t crlen = sizeof(cr);
	int allowed;

	if (s->nconns >= CTL_MAX_CLIENTS) {
		log_warnx("ctl: too many control connections, refusing one");
		close(fd);
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) == -1) {
		log_warn("ctl: SO_PEERCRED");
		close(fd);
		return;
	}
	allowed = ctl_peer_allowed(s, fd, &cr);
	struct ctl_conn *c = calloc(1, sizeof(*c));
	struct bufferevent *bev = bufferevent_socket_new(s->base, fd,
	    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (c == NULL || bev == NULL) {
		log_warnx("ctl: out of memory accepting a connection");
		free(c);
		if (bev != NULL)
			bufferevent_free(bev);
		else
			close(fd);
		return;
	}
	c->srv = s;
	c->id = ++s->next_conn_id;
	c->bev = bev;
	c->uid = cr.uid;
	c->pid = cr.pid;
	TAILQ_INSERT_TAIL(&s->conns, c, entry);
	s->nconns++;

	struct timeval rt = { CTL_IDLE_TIMEOUT, 0 }, wt = { CTL_WRITE_TIMEOUT, 0 };
	bufferevent_set_timeouts(bev, &rt, &wt);
	bufferevent_setwatermark(bev, EV_READ, 0, CTL_LINE_MAX);
	bufferevent_setcb(bev, ctl_conn_readcb, ctl_conn_writecb, ctl_conn_eventcb, c);
	if (!allowed) {
		log_info("ctl: denied uid=%u gid=%u pid=%d", (unsigned)cr.uid,
		    (unsigned)cr.gid, (int)cr.pid);
		ctl_conn_error(c, CTL_E_DENIED, "permission denied");
		bufferevent_enable(bev, EV_WRITE);
		return;
	}
	log_trace(TRACE_CTL, "ctl: connection uid=%u pid=%d", (unsigned)cr.uid,
	    (int)cr.pid);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

/*
 * Remove whatever stale socket sits at path: refuse if it is not a socket
 * or if a live server still answers on it.
 */
static int
ctl_server_unlink_stale(const struct sockaddr_un *sun, char *err, size_t errlen)
{
	struct stat st;

	if (lstat(sun->sun_path, &st) == -1) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "%s: %s", sun->sun_path, strerror(errno));
		return -1;
	}
	if (!S_ISSOCK(st.st_mode)) {
		snprintf(err, errlen, "%s: exists and is not a socket", sun->sun_path);
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	if (connect(fd, (const struct sockaddr *)sun, sizeof(*sun)) == 0) {
		close(fd);
		snprintf(err, errlen, "%s: another server is listening on it",
		    sun->sun_path);
		return -1;
	}
	close(fd);
	if (unlink(sun->sun_path) == -1 && errno != ENOENT) {
		snprintf(err, errlen, "unlink %s: %s", sun->sun_path, strerror(errno));
		return -1;
	}
	return 0;
}

/* Stop answers: later ones are dropped by whoever posts them. */
static void
ctl_server_ret_close(struct ctl_server *s)
{
	struct ctl_return *ret = s->ret;

	if (ret == NULL)
		return;
	pthread_mutex_lock(&ret->mu);
	tq_free(ret->tq);               /* pending answers: no connection left */
	ret->tq = NULL;
	pthread_mutex_unlock(&ret->mu);
	s->ret = NULL;
	ctl_return_unref(ret);
}

struct ctl_server *
ctl_server_new(struct event_base *base, const char *path, struct queue *q,
    const struct ctl_hooks *hooks, gid_t group, char *err, size_t errlen)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct ctl_server *s = NULL;
	struct stat st;
	int fd = -1, bound = 0;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		snprintf(err, errlen, "%s: control socket path too long", path);
		return NULL;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if (ctl_server_unlink_stale(&sun, err, errlen) == -1)
		return NULL;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		goto fail;
	}
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		snprintf(err, errlen, "bind %s: %s", path, strerror(errno));
		goto fail;
	}
	bound = 1;
	/* connect() needs write permission on the socket file */
	if (chmod(path, 0660) == -1) {
		snprintf(err, errlen, "chmod %s: %s", path, strerror(errno));
		goto fail;
	}
	if (group != (gid_t)-1 && chown(path, (uid_t)-1, group) == -1) {
		snprintf(err, errlen, "chown %s to gid %u: %s", path,
		    (unsigned)group, strerror(errno));
		goto fail;
	}
	if (lstat(path, &st) == -1) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto fail;
	}
	if (listen(fd, SOMAXCONN) == -1) {
		snprintf(err, errlen, "listen %s: %s", path, strerror(errno));
		goto fail;
	}
	s = xcalloc(1, sizeof(*s));
	s->base = base;
	s->path = xstrdup(path);
	s->dev = st.st_dev;
	s->ino = st.st_ino;
	s->q = q;
	s->hooks = hooks;
	s->group = group;
	TAILQ_INIT(&s->conns);
	s->ret = xcalloc(1, sizeof(*s->ret));
	pthread_mutex_init(&s->ret->mu, NULL);
	s->ret->refs = 1;
	s->ret->tq = tq_new(base, ctl_server_answer_cb, s);
	s->lev = evconnlistener_new(base, ctl_server_acceptcb, s,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (s->lev == NULL) {
		snprintf(err, errlen, "%s: cannot create the listener", path);
		goto fail;
	}
	return s;
fail:
	if (s != NULL) {
		ctl_server_ret_close(s);
		free(s->path);
		free(s);
	}
	if (fd != -1)
		close(fd);
	if (bound)
		unlink(path);
	return NULL;
}

void
ctl_server_free(struct ctl_server *s)
{
	struct ctl_conn *c;
	struct stat st;

	if (s == NULL)
		return;
	while ((c = TAILQ_FIRST(&s->conns)) != NULL)
		ctl_conn_free(c);
	ctl_server_ret_close(s);
	evconnlistener_free(s->lev);
	/* only our own socket: a successor may have replaced it */
	if (lstat(s->path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino)
		unlink(s->path);
	free(s->path);
	free(s);
}
