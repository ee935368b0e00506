/*
 * ctl_server.c - the daemon side of the control socket (ctl.h): JSON lines
 * over a UNIX stream socket, one response line per request line (a
 * listing: a stream of lines), each answered by ctl_request.c.
 *
 * Threads. The control thread runs an event loop of its own (not ternd's
 * main loop): the evconnlistener, one bufferevent per connection, short
 * requests (ping, show, summary, the hand-off of ops). Requests that may
 * read much of the queue (ctl_request_slow: listings, verify, delete/retry
 * "all") go to CTL_WORKERS worker threads as jobs; a listing is one job
 * per page (ctl_stream_page, CTL_PAGE_ROWS rows), and the next page is
 * asked for only once the connection's output is below CTL_OUT_LOW (the
 * bufferevent's write low-water mark calls back), so a reader that stops
 * reading stops the listing and holds at most about CTL_OUT_LOW +
 * CTL_PAGE_BYTES of memory. A job owns what it carries (the request copy,
 * the listing's cursor, the page) and comes back to the control loop as a
 * tq call; the control loop alone touches connections. Hooks (op, reload)
 * run on the base given to ctl_server_new (ternd's main loop, where
 * signals and SIGHUP reloads run): ops are posted there as tq calls, and
 * every answer, the hooks' and the jobs', comes back through the server's
 * answer queue (a tq on the control loop); an answer whose connection has
 * gone meanwhile is dropped by its token (the connection id).
 *
 * Shared between threads: the queue (queue.h: reads are safe from any
 * thread), the immutable server fields (q, hooks), the job list (under
 * jmu), struct ctl_return (under its mu). Never commits, never waits for
 * the committer; a worker holds nothing of the queue between pages.
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

#include "ctl_int.h"

#define CTL_WRITE_TIMEOUT 60

#define CTL_F_CLOSING    0x01u
#define CTL_F_WAITING    0x02u          /* an op, a job or a listing is out:
                                           read no further */
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

/* Work for a worker thread: a whole request, or a listing's next page. */
struct ctl_job {
	STAILQ_ENTRY(ctl_job) next;
	struct ctl_server *srv;         /* borrowed */
	uint64_t token;                 /* the connection id */
	char *req;                      /* owned: a request to run, or NULL */
	size_t len;
	struct ctl_stream *st;          /* owned: the listing, or NULL */
	int done;                       /* the listing's trailer is in out */
	struct ctl_op *op;              /* owned: to hand on, or NULL */
	struct buf out;                 /* the bytes to send */
};

/*
 * A bulk op (delete/retry "all") of more than CTL_OP_SLICE ids, handed on
 * a slice at a time so the scheduler's thread never takes them in one go;
 * the slices' answers are joined into the one RESULT the client expects.
 */
struct ctl_bulk {
	struct ctl_op *op;              /* owned: every id; never handed on */
	size_t next;                    /* first id of the next slice */
	struct buf ids, skipped;        /* the answers' array elements */
};

struct ctl_conn {
	TAILQ_ENTRY(ctl_conn) entry;
	struct ctl_server *srv;         /* borrowed: owns us */
	uint64_t id;                    /* token of its pending op or job */
	struct bufferevent *bev;        /* owned */
	struct ctl_stream *st;          /* owned: a listing waiting for the
	                                   output to drain, or NULL */
	struct ctl_bulk *bulk;          /* owned: a sliced bulk op, or NULL */
	uid_t uid;
	pid_t pid;
	unsigned flags;
};

struct ctl_server {
	struct event_base *base;        /* borrowed: the hooks' loop */
	struct event_base *cbase;       /* owned: the control loop */
	pthread_t thread;               /* runs cbase */
	struct tq *hooktq;              /* owned, on base: ops to the hooks */
	pthread_t workers[CTL_WORKERS];
	size_t nworkers;
	pthread_mutex_t jmu;            /* guards jobs and jstop */
	pthread_cond_t jcv;
	STAILQ_HEAD(, ctl_job) jobs;
	int jstop;
	int stopping;                   /* ctl_server_free has begun */
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

void
ctl_op_fail(struct ctl_op *op, int code, const char *text)
{
	struct json_writer w;

	json_writer_init(&w);
	ctl_reply_error(&w, code, text);
	ctl_op_reply(op, &w);
}

/* ---- hooks, on the hooks' loop ---- */

struct ctl_hook_call {
	struct ctl_server *srv;
	struct ctl_op *op;
};

/* On base: give op to its hook (reload: run it), or fail it. */
static void
ctl_server_hook_run(void *arg)
{
	struct ctl_hook_call *hc = arg;
	struct ctl_server *s = hc->srv;
	const struct ctl_hooks *h = s->hooks;
	struct ctl_op *op = hc->op;

	free(hc);
	if (s->stopping) {
		ctl_op_fail(op, CTL_E_INTERNAL, "ternd is stopping");
	} else if (op->type == CTL_OP_RELOAD) {
		struct json_writer w;
		if (h->reload(h->arg) != 0) {
			ctl_op_fail(op, CTL_E_INTERNAL, "reload failed (see the log)");
			return;
		}
		json_writer_init(&w);
		json_obj_open(&w);
		json_kv_bool(&w, "ok", 1);
		json_obj_close(&w);
		ctl_op_reply(op, &w);
	} else if (h->op(h->arg, op) != 0)
		ctl_op_fail(op, CTL_E_INTERNAL, "cannot hand the request on");
}

/* ---- jobs, on the worker threads ---- */

static void
ctl_job_free(struct ctl_job *j)
{
	if (j == NULL)
		return;
	free(j->req);
	ctl_stream_free(j->st);
	ctl_op_free(j->op);
	buf_free(&j->out);
	free(j);
}

static void ctl_job_done(void *arg);

/* Run the request (if any), then a page of its listing (if any). */
static void
ctl_job_run(struct ctl_job *j)
{
	struct ctl_server *s = j->srv;

	if (j->req != NULL) {
		struct json_writer w;
		size_t len;
		char *p;
		json_writer_init(&w);
		(void)ctl_request_run(s->q, s->hooks, j->req, j->len, &w, 1,
		    &j->op, &j->st);
		if (j->op == NULL) {
			if ((p = json_writer_finish(&w, &len)) == NULL) {
				ctl_reply_error(&w, CTL_E_INTERNAL, "out of memory");
				p = json_writer_finish(&w, &len);
			}
			if (p != NULL) {
				buf_add(&j->out, p, len);
				buf_add(&j->out, "\n", 1);
			}
			free(p);
		}
		json_writer_reset(&w);
		free(j->req);
		j->req = NULL;
	}
	j->done = j->st == NULL || ctl_stream_page(j->st, s->q, &j->out) == 1;
}

/* Back to the control loop; dropped when the server has gone. */
static void
ctl_job_post(struct ctl_job *j)
{
	struct ctl_return *ret = j->srv->ret;

	pthread_mutex_lock(&ret->mu);
	if (ret->tq != NULL) {
		tq_call(ret->tq, ctl_job_done, j);
		j = NULL;
	}
	pthread_mutex_unlock(&ret->mu);
	ctl_job_free(j);
}

static void *
ctl_worker_main(void *arg)
{
	struct ctl_server *s = arg;
	struct ctl_job *j;

	for (;;) {
		pthread_mutex_lock(&s->jmu);
		while (STAILQ_EMPTY(&s->jobs) && !s->jstop)
			pthread_cond_wait(&s->jcv, &s->jmu);
		if (s->jstop) {
			pthread_mutex_unlock(&s->jmu);
			return NULL;
		}
		j = STAILQ_FIRST(&s->jobs);
		STAILQ_REMOVE_HEAD(&s->jobs, next);
		pthread_mutex_unlock(&s->jmu);
		ctl_job_run(j);
		ctl_job_post(j);
	}
}

static void
ctl_job_submit(struct ctl_server *s, struct ctl_job *j)
{
	pthread_mutex_lock(&s->jmu);
	STAILQ_INSERT_TAIL(&s->jobs, j, next);
	pthread_cond_signal(&s->jcv);
	pthread_mutex_unlock(&s->jmu);
}

/* ---- connections ---- */

static void ctl_conn_readcb(struct bufferevent *bev, void *arg);

static void
ctl_bulk_free(struct ctl_bulk *b)
{
	if (b == NULL)
		return;
	ctl_op_free(b->op);
	buf_free(&b->ids);
	buf_free(&b->skipped);
	free(b);
}

static void
ctl_conn_free(struct ctl_conn *c)
{
	TAILQ_REMOVE(&c->srv->conns, c, entry);
	c->srv->nconns--;
	bufferevent_free(c->bev);
	ctl_stream_free(c->st);
	ctl_bulk_free(c->bulk);
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

/* Post op to the hooks' loop; the connection waits for its answer. */
static void
ctl_conn_hand_on(struct ctl_conn *c, struct ctl_op *op)
{
	struct ctl_return *ret = c->srv->ret;
	struct ctl_hook_call *hc = xcalloc(1, sizeof(*hc));

	pthread_mutex_lock(&ret->mu);
	ret->refs++;
	pthread_mutex_unlock(&ret->mu);
	op->ret = ret;
	op->token = c->id;
	op->reply = ctl_op_reply;
	op->fail = ctl_op_fail;
	hc->srv = c->srv;
	hc->op = op;
	c->flags |= CTL_F_WAITING;
	tq_call(c->srv->hooktq, ctl_server_hook_run, hc);
}

/* Hand on the bulk op's next slice of ids. */
static void
ctl_conn_bulk_next(struct ctl_conn *c)
{
	struct ctl_bulk *b = c->bulk;
	struct ctl_op *op = xcalloc(1, sizeof(*op));
	size_t n = b->op->nids - b->next;

	if (n > CTL_OP_SLICE)
		n = CTL_OP_SLICE;
	op->type = b->op->type;
	memcpy(op->domain, b->op->domain, sizeof(op->domain));
	op->stats_queue = b->op->stats_queue;
	op->ids = xreallocarray(NULL, n, sizeof(*op->ids));
	memcpy(op->ids, b->op->ids + b->next, n * sizeof(*op->ids));
	op->nids = n;
	b->next += n;
	ctl_conn_hand_on(c, op);
}

/* Append the raw elements of array key of the answer p to out. */
static void
ctl_bulk_join(struct buf *out, const char *p, const struct json_tok *toks,
    const char *key)
{
	long a = json_obj_find(p, toks, 0, key);

	if (a < 0 || toks[a].type != JSON_ARRAY || toks[a].size == 0)
		return;
	if (out->len > 0)
		buf_add(out, ",", 1);
	/* the elements, between the brackets, as the scheduler wrote them */
	buf_add(out, p + toks[a].start + 1, toks[a].end - toks[a].start - 2);
}

/*
 * A slice's answer text[0..len): joined, or (an error) the answer itself.
 * Returns the text to send (owned) once the bulk op is over, else NULL
 * (the next slice is out).
 */
static char *
ctl_conn_bulk_answer(struct ctl_conn *c, const char *text, size_t len,
    size_t *outlen)
{
	struct ctl_bulk *b = c->bulk;
	struct json_tok *toks = NULL;
	size_t n;
	long ok;
	char *res = NULL;

	if (json_parse(text, len, NULL, 0, JSON_MAX_DEPTH, &n) == JSON_OK) {
		toks = xreallocarray(NULL, n, sizeof(*toks));
		(void)json_parse(text, len, toks, n, JSON_MAX_DEPTH, &n);
	}
	if (toks == NULL || (ok = json_obj_find(text, toks, 0, "ok")) < 0 ||
	    toks[ok].type != JSON_TRUE) {
		res = xmalloc(len + 1);         /* an error ends it */
		memcpy(res, text, len);
		*outlen = len;
	} else {
		ctl_bulk_join(&b->ids, text, toks, "ids");
		ctl_bulk_join(&b->skipped, text, toks, "skipped");
		if (b->next < b->op->nids) {
			free(toks);
			ctl_conn_bulk_next(c);
			return NULL;
		}
		struct buf out = { 0 };
		buf_printf(&out, "{\"ok\":true,\"ids\":[%s],\"skipped\":[%s]}",
		    b->ids.p != NULL ? b->ids.p : "",
		    b->skipped.p != NULL ? b->skipped.p : "");
		if (out.err != 0 || b->ids.err != 0 || b->skipped.err != 0) {
			buf_free(&out);
			res = xstrdup("{\"ok\":false,\"error\":\"out of memory\","
			    "\"code\":8}");
		} else
			res = out.p;
		*outlen = strlen(res);
	}
	free(toks);
	ctl_bulk_free(b);
	c->bulk = NULL;
	return res;
}

/* A worker answers the request line[0..len); the connection waits. */
static void
ctl_conn_to_worker(struct ctl_conn *c, const char *line, size_t len)
{
	struct ctl_job *j = xcalloc(1, sizeof(*j));

	j->srv = c->srv;
	j->token = c->id;
	j->req = xmalloc(len + 1);
	memcpy(j->req, line, len);
	j->req[len] = '\0';
	j->len = len;
	c->flags |= CTL_F_WAITING;
	ctl_job_submit(c->srv, j);
}

/*
 * The listing c->st goes on: its next page now if the output is short,
 * else once it has drained below CTL_OUT_LOW (ctl_conn_writecb).
 */
static void
ctl_conn_stream_next(struct ctl_conn *c)
{
	struct ctl_job *j;

	if (evbuffer_get_length(bufferevent_get_output(c->bev)) >= CTL_OUT_LOW) {
		bufferevent_setwatermark(c->bev, EV_WRITE, CTL_OUT_LOW, 0);
		return;
	}
	j = xcalloc(1, sizeof(*j));
	j->srv = c->srv;
	j->token = c->id;
	j->st = c->st;
	c->st = NULL;
	ctl_job_submit(c->srv, j);
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
		if (ctl_request_slow(line, len)) {
			log_trace(TRACE_CTL, "ctl uid=%u pid=%d to a worker",
			    (unsigned)c->uid, (int)c->pid);
			ctl_conn_to_worker(c, line, len);
			evbuffer_drain(in, n + 1);
			break;
		}
		struct ctl_op *op = NULL;
		struct ctl_stream *st = NULL;
		int code = ctl_request_run(c->srv->q, c->srv->hooks, line, len, &w,
		    1, &op, &st);
		log_trace(TRACE_CTL, "ctl uid=%u pid=%d code=%d%s", (unsigned)c->uid,
		    (int)c->pid, code, op != NULL ? " handed on" : "");
		evbuffer_drain(in, n + 1);
		if (op != NULL) {
			ctl_conn_hand_on(c, op);
			break;                  /* answered by ctl_server_answer_cb */
		}
		if (ctl_conn_send(c, &w) == -1) {
			log_warnx("ctl uid=%u: cannot queue a response", (unsigned)c->uid);
			ctl_stream_free(st);
			c->flags |= CTL_F_CLOSING;
		} else if (st != NULL) {
			c->st = st;
			c->flags |= CTL_F_WAITING;
			ctl_conn_stream_next(c);
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

/* The output has drained (below CTL_OUT_LOW while a listing waits). */
static void
ctl_conn_writecb(struct bufferevent *bev, void *arg)
{
	struct ctl_conn *c = arg;

	if (c->st != NULL) {
		bufferevent_setwatermark(bev, EV_WRITE, 0, 0);
		ctl_conn_stream_next(c);
		return;
	}
	if (c->flags & CTL_F_CLOSING) {
		ctl_conn_free(c);
		return;
	}
	if (!(c->flags & CTL_F_WAITING) &&
	    !(bufferevent_get_enabled(bev) & EV_READ)) {
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
			/* the answer comes later: ctl_conn_resume closes */
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

/* The awaited answer is queued: go on with the input (c may be freed). */
static void
ctl_conn_resume(struct ctl_conn *c)
{
	c->flags &= ~CTL_F_WAITING;
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
}

/* A job is back, on the control loop: send its bytes, then go on. */
static void
ctl_job_done(void *arg)
{
	struct ctl_job *j = arg;
	struct ctl_server *s = j->srv;
	struct ctl_conn *c;

	if (s->stopping || (c = ctl_conn_waiting(s, j->token)) == NULL) {
		ctl_job_free(j);                /* the connection has gone */
		return;
	}
	if (j->out.err != 0 || evbuffer_add(bufferevent_get_output(c->bev),
	    j->out.p, j->out.len) == -1) {
		ctl_conn_error(c, CTL_E_INTERNAL, "out of memory");
		c->flags &= ~CTL_F_WAITING;
	} else if (j->op != NULL && !j->op->single &&
	    j->op->nids > CTL_OP_SLICE) {
		c->bulk = xcalloc(1, sizeof(*c->bulk));
		c->bulk->op = j->op;
		j->op = NULL;
		ctl_conn_bulk_next(c);
	} else if (j->op != NULL) {
		ctl_conn_hand_on(c, j->op);
		j->op = NULL;
	} else if (!j->done) {
		c->st = j->st;
		j->st = NULL;
		ctl_conn_stream_next(c);
	} else {
		ctl_job_free(j);
		ctl_conn_resume(c);
		return;
	}
	ctl_job_free(j);
	if ((c->flags & CTL_F_CLOSING) &&
	    evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		ctl_conn_free(c);
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
	if (s->stopping || (c = ctl_conn_waiting(s, msg->reqid)) == NULL) {
		log_debug("ctl: answer for a connection that has gone, dropped");
		goto out;
	}
	if (a->text != NULL && c->bulk != NULL) {
		size_t len;
		char *text = ctl_conn_bulk_answer(c, a->text, a->len, &len);
		if (text == NULL)
			goto out;               /* the next slice is out */
		free(a->text);
		a->text = text;
		a->len = len;
	}
	if (a->text == NULL) {
		ctl_conn_error(c, CTL_E_INTERNAL, "out of memory");
	} else {
		a->text[a->len] = '\n';         /* the NUL slot */
		if (evbuffer_add(bufferevent_get_output(c->bev), a->text,
		    a->len + 1) == -1)
			c->flags |= CTL_F_CLOSING;
	}
	ctl_conn_resume(c);
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
	struct bufferevent *bev = bufferevent_socket_new(s->cbase, fd,
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
	struct tq *tq = ret->tq;
	ret->tq = NULL;
	pthread_mutex_unlock(&ret->mu);
	tq_free(tq);                    /* pending answers: no connection left */
	s->ret = NULL;
	ctl_return_unref(ret);
}

static void
ctl_server_break(void *arg)
{
	event_base_loopbreak(arg);
}

static void *
ctl_server_thread(void *arg)
{
	struct ctl_server *s = arg;
	struct ctl_conn *c;

	event_base_dispatch(s->cbase);
	/* close the connections here, and let the loop finish freeing them */
	while ((c = TAILQ_FIRST(&s->conns)) != NULL)
		ctl_conn_free(c);
	event_base_loop(s->cbase, EVLOOP_NONBLOCK);
	return NULL;
}

/* Stop and join the worker threads; drop the jobs not started. */
static void
ctl_server_workers_stop(struct ctl_server *s)
{
	struct ctl_job *j;

	pthread_mutex_lock(&s->jmu);
	s->jstop = 1;
	pthread_cond_broadcast(&s->jcv);
	pthread_mutex_unlock(&s->jmu);
	for (size_t i = 0; i < s->nworkers; i++)
		pthread_join(s->workers[i], NULL);
	s->nworkers = 0;
	while ((j = STAILQ_FIRST(&s->jobs)) != NULL) {
		STAILQ_REMOVE_HEAD(&s->jobs, next);
		ctl_job_free(j);
	}
}

/* Everything but the socket file; threads already joined. */
static void
ctl_server_destroy(struct ctl_server *s)
{
	struct ctl_conn *c;

	s->stopping = 1;
	ctl_server_workers_stop(s);
	ctl_server_ret_close(s);        /* pending answers and jobs: dropped */
	while ((c = TAILQ_FIRST(&s->conns)) != NULL)
		ctl_conn_free(c);
	tq_free(s->hooktq);             /* pending ops: failed, answers dropped */
	if (s->lev != NULL)
		evconnlistener_free(s->lev);
	if (s->cbase != NULL)
		event_base_free(s->cbase);
	pthread_cond_destroy(&s->jcv);
	pthread_mutex_destroy(&s->jmu);
	free(s->path);
	free(s);
}

/* The loop, its queues, the workers and the thread; 0 or -1. */
static int
ctl_server_start(struct ctl_server *s, int fd, char *err, size_t errlen)
{
	s->cbase = event_base_new();
	if (s->cbase == NULL) {
		snprintf(err, errlen, "cannot create the control loop");
		return -1;
	}
	s->ret = xcalloc(1, sizeof(*s->ret));
	pthread_mutex_init(&s->ret->mu, NULL);
	s->ret->refs = 1;
	s->ret->tq = tq_new(s->cbase, ctl_server_answer_cb, s);
	s->hooktq = tq_new(s->base, NULL, NULL);
	s->lev = evconnlistener_new(s->cbase, ctl_server_acceptcb, s,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
	if (s->lev == NULL) {
		snprintf(err, errlen, "%s: cannot create the listener", s->path);
		return -1;
	}
	for (; s->nworkers < CTL_WORKERS; s->nworkers++)
		if (pthread_create(&s->workers[s->nworkers], NULL,
		    ctl_worker_main, s) != 0) {
			snprintf(err, errlen, "cannot start the control workers");
			return -1;
		}
	if (pthread_create(&s->thread, NULL, ctl_server_thread, s) != 0) {
		snprintf(err, errlen, "cannot start the control thread");
		return -1;
	}
	return 0;
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
	STAILQ_INIT(&s->jobs);
	pthread_mutex_init(&s->jmu, NULL);
	pthread_cond_init(&s->jcv, NULL);
	if (ctl_server_start(s, fd, err, errlen) == -1) {
		if (s->lev != NULL)
			fd = -1;                /* the listener closes it */
		ctl_server_destroy(s);
		goto fail;
	}
	return s;
fail:
	if (fd != -1)
		close(fd);
	if (bound)
		unlink(path);
	return NULL;
}

void
ctl_server_free(struct ctl_server *s)
{
	struct stat st;

	if (s == NULL)
		return;
	/* from inside the loop: a break before it has started would be lost */
	tq_call(s->ret->tq, ctl_server_break, s->cbase);
	pthread_join(s->thread, NULL);
	/* only our own socket: a successor may have replaced it */
	if (lstat(s->path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino)
		unlink(s->path);
	ctl_server_destroy(s);
}
