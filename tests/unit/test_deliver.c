/*
 * test_deliver.c - the delivery workers end to end in one process: a real
 * queue in TERN_TEST_TMPDIR, a pool of one worker, and a scripted SMTP
 * server thread on 127.0.0.1:<ephemeral> (blocking sockets, one connection
 * at a time) that records what it reads. Routes are smtp:[127.0.0.1]:PORT,
 * so no DNS is involved.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "tern/conf.h"
#include "tern/deliver.h"
#include "tern/envelope.h"
#include "tern/queue.h"
#include "tern/tq.h"
#include "tern/util.h"

#include "deliver_int.h"

/* ---- the scripted server ---------------------------------------------- */

enum srv_mode {
	SRV_NORMAL,
	SRV_HANG,               /* accept, never greet */
	SRV_GREET_554,          /* refuse at the greeting */
	SRV_DROP_AFTER_MAIL,    /* close the connection on MAIL */
	SRV_GARBAGE_EHLO,       /* answer EHLO with junk */
	SRV_LONG_REPLY,         /* endless continuation lines to EHLO */
	SRV_NO_PIPELINING,      /* EHLO without PIPELINING */
	SRV_DROP_SECOND_MAIL,   /* close on the 2nd MAIL of a connection */
	SRV_LMTP,               /* RFC 2033: LHLO, a reply per recipient after
	                           the dot; "late4"/"late5" recipients are taken
	                           at RCPT and refused there (452 / 552) */
};

/* srv_start_opts(): how a normal session is slowed down */
#define SRV_O_SLOW_READER 0x1u  /* a 4 KiB receive buffer, no SIZE limit,
                                   and 300 ms after the 354 before reading
                                   the body: the client's socket refuses
                                   part of a large one */
#define SRV_O_LATE_FINAL  0x2u  /* the reply to the final dot after 2.5 s */
#define SRV_O_STALL_BODY  0x4u  /* with SLOW_READER: 2.5 s, not 300 ms,
                                   before reading the body */

struct srv {
	enum srv_mode mode;
	unsigned opts;          /* SRV_O_*, set before the thread starts */
	int lfd;
	uint16_t port;
	pthread_t thread;
	volatile int stop;
	pthread_mutex_t lock;
	/* recorded */
	int nconn;
	int pipelined_seen;     /* MAIL ... DATA in one read */
	int nrset;
	int nlhlo;
	int nmessages;
	char mail[8][256];      /* MAIL lines, per message */
	char *body;             /* the last DATA bytes, terminator included */
	size_t bodylen;
};

static int
srv_write(int fd, const char *s)
{
	return write_all(fd, s, strlen(s));
}

/* 1 if p[0..n) contains the string s. */
static int
srv_has(const char *p, size_t n, const char *s)
{
	size_t k = strlen(s);

	for (size_t i = 0; i + k <= n; i++)
		if (memcmp(p + i, s, k) == 0)
			return 1;
	return 0;
}

/* Serve one connection until EOF, QUIT or stop. */
static void
srv_session(struct srv *sv, int fd)
{
	char buf[8192], line[1024];
	size_t have = 0, naccepted = 0, nmail = 0;
	const char *late[16];   /* LMTP: the reply due to each accepted RCPT */
	int in_data = 0;
	char *data = NULL;
	size_t datalen = 0, datacap = 0;

	if (sv->mode == SRV_HANG) {
		while (!sv->stop) {
			struct pollfd pf = { fd, POLLIN, 0 };
			if (poll(&pf, 1, 100) > 0 && read(fd, buf, sizeof(buf)) <= 0)
				break;
		}
		return;
	}
	if (sv->mode == SRV_GREET_554) {
		srv_write(fd, "554 5.7.1 go away\r\n");
		if (read(fd, buf, sizeof(buf)) < 0)     /* QUIT, or EOF */
			return;
		return;
	}
	srv_write(fd, "220 sink.test ESMTP\r\n");
	while (!sv->stop) {
		struct pollfd pf = { fd, POLLIN, 0 };
		ssize_t n;

		if (poll(&pf, 1, 100) <= 0)
			continue;
		n = read(fd, buf + have, sizeof(buf) - have);
		if (n <= 0)
			break;
		if (!in_data && srv_has(buf + have, (size_t)n, "MAIL FROM") &&
		    srv_has(buf + have, (size_t)n, "\r\nDATA\r\n")) {
			pthread_mutex_lock(&sv->lock);
			sv->pipelined_seen = 1;
			pthread_mutex_unlock(&sv->lock);
		}
		have += (size_t)n;
		for (;;) {
			char *lf;
			size_t ll;

			if (in_data) {
				/* everything up to and including CRLF.CRLF */
				if (datalen + have > datacap) {
					/* doubling: a body of megabytes stays cheap */
					size_t cap = datacap ? datacap : 8192;
					while (cap < datalen + have)
						cap *= 2;
					char *nd = realloc(data, cap);
					assert_non_null(nd);
					data = nd;
					datacap = cap;
				}
				if (have > 0)   /* data may still be NULL */
					memcpy(data + datalen, buf, have);
				datalen += have;
				have = 0;
				if (datalen >= 3 && (datalen == 3 ?
				    memcmp(data, ".\r\n", 3) == 0 :
				    datalen >= 5 &&
				    memcmp(data + datalen - 5, "\r\n.\r\n", 5) == 0)) {
					pthread_mutex_lock(&sv->lock);
					free(sv->body);
					sv->body = data;
					sv->bodylen = datalen;
					sv->nmessages++;
					pthread_mutex_unlock(&sv->lock);
					data = NULL;
					datalen = datacap = 0;
					in_data = 0;
					if (sv->opts & SRV_O_LATE_FINAL)
						usleep(2500 * 1000);
					if (sv->mode != SRV_LMTP)
						srv_write(fd, "250 2.0.0 Ok: queued\r\n");
					for (size_t k = 0; sv->mode == SRV_LMTP &&
					    k < naccepted && k < 16; k++)
						srv_write(fd, late[k]);
				}
				break;
			}
			lf = memchr(buf, '\n', have);
			if (lf == NULL)
				break;
			ll = (size_t)(lf - buf) + 1;
			snprintf(line, sizeof(line), "%.*s", (int)(ll - 2), buf);
			memmove(buf, buf + ll, have - ll);
			have -= ll;

			if (sv->mode == SRV_LMTP && strncmp(line, "LHLO", 4) == 0) {
				pthread_mutex_lock(&sv->lock);
				sv->nlhlo++;
				pthread_mutex_unlock(&sv->lock);
				srv_write(fd, "250-sink.test\r\n250-PIPELINING\r\n"
				    "250 ENHANCEDSTATUSCODES\r\n");
			} else if (sv->mode == SRV_LMTP && (strncmp(line, "EHLO", 4)
			    == 0 || strncmp(line, "HELO", 4) == 0)) {
				srv_write(fd, "500 5.5.1 this is LMTP\r\n");
			} else if (sv->mode == SRV_LMTP &&
			    strncmp(line, "RCPT TO:<late", 13) == 0) {
				if (naccepted < 16)
					late[naccepted] = line[13] == '4' ?
					    "452 4.2.2 over quota\r\n" :
					    "552 5.2.2 mailbox full\r\n";
				naccepted++;
				srv_write(fd, "250 2.1.5 Ok\r\n");
			} else if (strncmp(line, "EHLO", 4) == 0) {
				if (sv->mode == SRV_GARBAGE_EHLO) {
					srv_write(fd, "hello there\r\n");
				} else if (sv->mode == SRV_LONG_REPLY) {
					for (int i = 0; i < 20000 && !sv->stop; i++)
						if (srv_write(fd, "250-xxxxxxxx\r\n"))
							break;
				} else if (sv->opts & SRV_O_SLOW_READER) {
					srv_write(fd, "250-sink.test\r\n250-PIPELINING\r\n"
					    "250 ENHANCEDSTATUSCODES\r\n");
				} else if (sv->mode == SRV_NO_PIPELINING) {
					srv_write(fd, "250-sink.test\r\n250 SIZE 100000\r\n");
				} else {
					srv_write(fd, "250-sink.test\r\n250-PIPELINING\r\n"
					    "250-SIZE 100000\r\n250-8BITMIME\r\n"
					    "250 ENHANCEDSTATUSCODES\r\n");
				}
			} else if (strncmp(line, "MAIL", 4) == 0) {
				if (sv->mode == SRV_DROP_AFTER_MAIL ||
				    (sv->mode == SRV_DROP_SECOND_MAIL && ++nmail == 2))
					goto out;
				pthread_mutex_lock(&sv->lock);
				snprintf(sv->mail[sv->nmessages & 7], 256, "%.200s", line);
				pthread_mutex_unlock(&sv->lock);
				naccepted = 0;
				srv_write(fd, "250 2.1.0 Ok\r\n");
			} else if (strncmp(line, "RCPT TO:<ok", 11) == 0) {
				if (naccepted < 16)
					late[naccepted] = "250 2.0.0 saved\r\n";
				naccepted++;
				srv_write(fd, "250 2.1.5 Ok\r\n");
			} else if (strncmp(line, "RCPT TO:<temp", 13) == 0) {
				srv_write(fd, "450 4.2.0 mailbox busy\r\n");
			} else if (strncmp(line, "RCPT", 4) == 0) {
				srv_write(fd, "550 5.1.1 no such user\r\n");
			} else if (strcmp(line, "DATA") == 0) {
				if (naccepted == 0) {
					srv_write(fd, "554 5.5.1 no valid recipients\r\n");
				} else {
					srv_write(fd, "354 go ahead\r\n");
					in_data = 1;
					if (sv->opts & SRV_O_STALL_BODY)
						usleep(2500 * 1000);
					else if (sv->opts & SRV_O_SLOW_READER)
						usleep(300 * 1000);
				}
			} else if (strcmp(line, "RSET") == 0) {
				pthread_mutex_lock(&sv->lock);
				sv->nrset++;
				pthread_mutex_unlock(&sv->lock);
				srv_write(fd, "250 2.0.0 Ok\r\n");
			} else if (strcmp(line, "QUIT") == 0) {
				srv_write(fd, "221 2.0.0 Bye\r\n");
				goto out;
			} else {
				srv_write(fd, "502 5.5.2 what\r\n");
			}
		}
	}
out:
	free(data);
}

static void *
srv_main(void *arg)
{
	struct srv *sv = arg;

	while (!sv->stop) {
		struct pollfd pf = { sv->lfd, POLLIN, 0 };
		int fd;

		if (poll(&pf, 1, 100) <= 0)
			continue;
		fd = accept(sv->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		pthread_mutex_lock(&sv->lock);
		sv->nconn++;
		pthread_mutex_unlock(&sv->lock);
		srv_session(sv, fd);
		close(fd);
	}
	return NULL;
}

static struct srv *
srv_start_opts(enum srv_mode mode, unsigned opts)
{
	struct srv *sv = calloc(1, sizeof(*sv));
	struct sockaddr_in sin = { 0 };
	socklen_t sl = sizeof(sin);
	int small = 4096;

	sv->mode = mode;
	sv->opts = opts;
	pthread_mutex_init(&sv->lock, NULL);
	sv->lfd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(sv->lfd >= 0);
	/* set on the listener, so that accepted sockets start with it */
	if (opts & SRV_O_SLOW_READER)
		assert_int_equal(setsockopt(sv->lfd, SOL_SOCKET, SO_RCVBUF,
		    &small, sizeof(small)), 0);
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(sv->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(sv->lfd, 16), 0);
	assert_int_equal(getsockname(sv->lfd, (struct sockaddr *)&sin, &sl), 0);
	sv->port = ntohs(sin.sin_port);
	assert_int_equal(pthread_create(&sv->thread, NULL, srv_main, sv), 0);
	return sv;
}

static struct srv *
srv_start(enum srv_mode mode)
{
	return srv_start_opts(mode, 0);
}

static void
srv_stop(struct srv *sv)
{
	sv->stop = 1;
	pthread_join(sv->thread, NULL);
	close(sv->lfd);
	pthread_mutex_destroy(&sv->lock);
	free(sv->body);
	free(sv);
}

/* ---- the client side -------------------------------------------------- */

struct fx {
	struct event_base *base;
	struct tq *tq;
	struct queue *q;
	char dir[4096];
	struct conf *conf;
	struct deliver_pool *pool;
	struct queue_commit_done *done;
	struct dlv_result *res;
	uint64_t newqid;        /* last TQ_NEW_MESSAGE: indexed */
};

static void
fx_handler(struct tq_msg *m, void *arg)
{
	struct fx *f = arg;

	switch (m->type) {
	case TQ_COMMIT_DONE:
		free(f->done);
		f->done = (struct queue_commit_done *)m;
		break;
	case TQ_NEW_MESSAGE:
		f->newqid = ((struct queue_new_message *)m)->qid;
		free(m);
		break;
	case TQ_DELIVERY_RESULT:
		dlv_result_free(f->res);
		f->res = (struct dlv_result *)m;
		break;
	default:
		fail_msg("unexpected message %d", (int)m->type);
	}
}

static void
fx_conf_err(void *arg, const char *msg)
{
	fail_msg("conf: %s", msg);
}

static void
fx_conf(struct fx *f, uint16_t port, const char *extra)
{
	char text[1024];

	snprintf(text, sizeof(text), "hostname client.test\n"
	    "listen 127.0.0.1:25999 relay plain\n"
	    "route * smtp:[127.0.0.1]:%u\n%s", (unsigned)port, extra);
	assert_int_equal(conf_parse(text, strlen(text), "test.conf", &f->conf,
	    fx_conf_err, NULL), 0);
}

static void
fx_wait(struct fx *f, void **slot, unsigned sec)
{
	uint64_t end = now_mono_us() + sec * 1000000ull;

	while (*slot == NULL && now_mono_us() < end)
		event_base_loop(f->base, EVLOOP_ONCE);
	assert_non_null(*slot);
}

static struct fx *
fx_new(uint16_t port, const char *extra)
{
	struct fx *f = calloc(1, sizeof(*f));
	const char *tmp = getenv("TERN_TEST_TMPDIR");
	struct queue_opts o = { 0 };
	char err[256];

	f->base = event_base_new();
	f->tq = tq_new(f->base, fx_handler, f);
	snprintf(f->dir, sizeof(f->dir), "%s/dlv-XXXXXX", tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(f->dir));
	o.dir = f->dir;
	o.segment_size = 1 << 20;
	if (queue_open(&o, &f->q, err, sizeof(err)) < 0)
		fail_msg("queue_open: %s", err);
	queue_set_notify(f->q, f->tq);
	fx_conf(f, port, extra);
	f->pool = deliver_pool_start(f->q, f->conf, 1);
	return f;
}

static void
fx_free(struct fx *f)
{
	char cmd[4200];

	deliver_pool_stop(f->pool);
	deliver_pool_free(f->pool);
	queue_close(f->q);
	conf_unref(f->conf);
	tq_free(f->tq);
	event_base_free(f->base);
	free(f->done);
	dlv_result_free(f->res);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
}

/* Commit a message; return its envelope as stored (caller owns). */
static struct envelope *
fx_commit(struct fx *f, const char *body, const char *const *rcpts,
    uint32_t flags)
{
	struct envelope *e = envelope_new(), *got = NULL;
	struct spool *sp = spool_new(f->q);
	uint64_t qid;

	e->sender = strdup("sender@client.test");
	e->flags = flags;
	for (; *rcpts != NULL; rcpts++)
		envelope_add_rcpt(e, *rcpts, NULL, 0);
	assert_int_equal(spool_write(sp, body, strlen(body)), 0);
	free(f->done);
	f->done = NULL;
	queue_commit_submit(f->q, e, sp, f->tq, 7);
	fx_wait(f, (void **)&f->done, 20);
	assert_int_equal(f->done->status, Q_OK);
	qid = f->done->qid;
	{
		/* the index is written after the commit is acknowledged */
		uint64_t end = now_mono_us() + 20000000u;
		while (f->newqid != qid && now_mono_us() < end)
			event_base_loop(f->base, EVLOOP_ONCE);
	}
	assert_int_equal(queue_get(f->q, qid, &got), 0);
	return got;
}

/* Deliver every recipient of env (ownership moves); wait for the result. */
static struct dlv_result *
fx_deliver(struct fx *f, struct envelope *env, uint64_t jobid, unsigned sec)
{
	struct dlv_job *j = calloc(1, sizeof(*j));
	const struct conf_route *rt = conf_route_for(f->conf, "dest.test", 9);
	uint64_t qid = env->id;

	j->hdr.type = TQ_DELIVERY_JOB;
	j->hdr.reqid = jobid;
	j->env = env;
	j->nrcpt = env->nrcpt;
	j->rcpts = calloc(env->nrcpt, sizeof(size_t));
	for (size_t i = 0; i < env->nrcpt; i++)
		j->rcpts[i] = i;
	j->domain = strdup("dest.test");
	j->route = *rt;
	j->route.domain = rt->domain ? strdup(rt->domain) : NULL;
	j->route.host = rt->host ? strdup(rt->host) : NULL;
	j->reply = f->tq;
	dlv_result_free(f->res);
	f->res = NULL;
	deliver_pool_submit(f->pool, j);
	fx_wait(f, (void **)&f->res, sec);
	assert_true(f->res->hdr.reqid == jobid);
	assert_true(f->res->qid == qid);    /* env belongs to the job now */
	return f->res;
}

/* ---- tests ------------------------------------------------------------ */

static const char *const rcpts_mix[] = {
	"ok1@dest.test", "temp@dest.test", "perm@dest.test", "ok2@dest.test",
	NULL,
};

static const char body_dots[] =
	"Subject: dots\r\n\r\n.leading dot\r\n..two dots\r\nplain\r\n.\r\n"
	"x.y\r\n. space\r\nlast line without CRLF";
static const char body_dots_wire[] =
	"Subject: dots\r\n\r\n..leading dot\r\n...two dots\r\nplain\r\n..\r\n"
	"x.y\r\n.. space\r\nlast line without CRLF\r\n.\r\n";

static void
test_deliver_mix_pipelined_reuse(void **state)
{
	struct srv *sv = srv_start(SRV_NORMAL);
	struct fx *f = fx_new(sv->port, "tls-policy none\n");
	struct dlv_result *r;
	char relay[64];

	r = fx_deliver(f, fx_commit(f, body_dots, rcpts_mix, ENV_F_8BIT), 1, 20);
	assert_int_equal(r->n, 4);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(r->r[i].rcpt, i);
	assert_int_equal(r->r[0].cls, DLV_OK);
	assert_string_equal(r->r[0].status, "2.0.0");
	assert_non_null(strstr(r->r[0].reply, "250 2.0.0 Ok: queued"));
	assert_int_equal(r->r[1].cls, DLV_TEMP);
	assert_string_equal(r->r[1].status, "4.2.0");
	assert_non_null(strstr(r->r[1].reply, "450 4.2.0 mailbox busy"));
	assert_int_equal(r->r[2].cls, DLV_PERM);
	assert_string_equal(r->r[2].status, "5.1.1");
	assert_int_equal(r->r[3].cls, DLV_OK);
	snprintf(relay, sizeof(relay), "127.0.0.1[127.0.0.1]:%u",
	    (unsigned)sv->port);
	assert_non_null(r->relay);
	assert_string_equal(r->relay, relay);
	assert_null(r->tls);

	pthread_mutex_lock(&sv->lock);
	assert_int_equal(sv->pipelined_seen, 1);
	assert_int_equal(sv->nmessages, 1);
	assert_int_equal(sv->bodylen, strlen(body_dots_wire));
	assert_memory_equal(sv->body, body_dots_wire, sv->bodylen);
	assert_non_null(strstr(sv->mail[0], "MAIL FROM:<sender@client.test>"));
	assert_non_null(strstr(sv->mail[0], " SIZE="));
	assert_non_null(strstr(sv->mail[0], " BODY=8BITMIME"));
	pthread_mutex_unlock(&sv->lock);

	/* a second message to the same destination reuses the connection */
	{
		const char *const one[] = { "ok3@dest.test", NULL };
		r = fx_deliver(f, fx_commit(f, "hi\r\n", one, 0), 2, 20);
		assert_int_equal(r->n, 1);
		assert_int_equal(r->r[0].cls, DLV_OK);
		pthread_mutex_lock(&sv->lock);
		assert_int_equal(sv->nconn, 1);
		assert_int_equal(sv->nmessages, 2);
		assert_int_equal(sv->bodylen, 7);
		assert_memory_equal(sv->body, "hi\r\n.\r\n", 7);
		assert_null(strstr(sv->mail[1], "BODY="));
		pthread_mutex_unlock(&sv->lock);
	}

	/* nobody accepted: DATA is refused (pipelined), RSET, no body */
	{
		const char *const none[] = { "perm@dest.test", "temp@dest.test",
		    NULL };
		r = fx_deliver(f, fx_commit(f, "x\r\n", none, 0), 3, 20);
		assert_int_equal(r->n, 2);
		assert_int_equal(r->r[0].cls, DLV_PERM);
		assert_int_equal(r->r[1].cls, DLV_TEMP);
		pthread_mutex_lock(&sv->lock);
		assert_int_equal(sv->nmessages, 2);
		assert_int_equal(sv->nrset, 1);
		assert_int_equal(sv->nconn, 1);
		pthread_mutex_unlock(&sv->lock);
	}

	fx_free(f);
	srv_stop(sv);
}

static void
test_deliver_no_pipelining(void **state)
{
	struct srv *sv = srv_start(SRV_NO_PIPELINING);
	struct fx *f = fx_new(sv->port, "tls-policy may\n");
	struct dlv_result *r;

	r = fx_deliver(f, fx_commit(f, body_dots, rcpts_mix, ENV_F_8BIT), 1, 20);
	assert_int_equal(r->n, 4);
	assert_int_equal(r->r[0].cls, DLV_OK);
	assert_int_equal(r->r[1].cls, DLV_TEMP);
	assert_int_equal(r->r[2].cls, DLV_PERM);
	assert_int_equal(r->r[3].cls, DLV_OK);
	pthread_mutex_lock(&sv->lock);
	assert_int_equal(sv->pipelined_seen, 0);
	assert_memory_equal(sv->body, body_dots_wire, sv->bodylen);
	/* 8BITMIME not offered: sent as is, without BODY= */
	assert_null(strstr(sv->mail[0], "BODY="));
	pthread_mutex_unlock(&sv->lock);
	fx_free(f);
	srv_stop(sv);
}

/*
 * The body as DATA puts it on the wire, by the rules of dlv_body_stuff()
 * applied one line at a time: the reference the delivered bytes must equal.
 */
static char *
ref_stuff(const char *p, size_t len, size_t *outlen)
{
	char *out = malloc(2 * len + 8), *o = out;
	size_t i = 0;

	assert_non_null(out);
	while (i < len) {
		const char *lf = memchr(p + i, '\n', len - i);
		size_t end = lf != NULL ? (size_t)(lf - p) : len, cend = end;

		if (p[i] == '.')
			*o++ = '.';
		if (lf != NULL && cend > i && p[cend - 1] == '\r')
			cend--;
		memcpy(o, p + i, cend - i);
		o += cend - i;
		*o++ = '\r';
		*o++ = '\n';
		i = lf != NULL ? end + 1 : len;
	}
	memcpy(o, ".\r\n", 3);
	*outlen = (size_t)(o - out) + 3;
	return out;
}

/* A body of n bytes mixing CRLF and bare-LF lines, leading dots, empty lines. */
static char *
mixed_body(size_t n)
{
	static const char *const pieces[] = {
		"Subject: mixed\r\n\r\n", "plain line\r\n", ".dot\r\n",
		"bare lf\n", ".dot bare\n", "\n", "\r\n", "..\r\n", ".\n",
		"cr\rinside\r\n", "a somewhat longer line of text, as mail has "
		"them, without anything special in it\r\n",
	};
	char *b = malloc(n + 1);
	size_t len = 0, k = 0;

	assert_non_null(b);
	for (;;) {
		const char *pc = pieces[k == 0 ? 0 : 1 + (k * 7) %
		    (sizeof(pieces) / sizeof(pieces[0]) - 1)];
		size_t pl = strlen(pc);
		if (len + pl > n)
			break;
		memcpy(b + len, pc, pl);
		len += pl;
		k++;
	}
	memcpy(b + len, "no final newline\r", 17 <= n - len ? 17 : 0);
	len += 17 <= n - len ? 17 : 0;
	b[len] = '\0';
	return b;
}

/*
 * Dot-stuffing and line ends on the wire: bodies of every kind of line,
 * small (written at once) and large against a slow reader whose socket
 * refuses part of it (the rest goes out by libevent's write event), on one
 * reused connection; each arrives exactly as the reference stuffs it.
 */
static void
test_deliver_body_stuffing(void **state)
{
	struct srv *sv = srv_start_opts(SRV_NORMAL, SRV_O_SLOW_READER);
	struct fx *f = fx_new(sv->port, "tls-policy none\n");
	const char *const one[] = { "ok1@dest.test", NULL };
	/* larger than loopback's send buffer grows to (4 MiB) */
	const size_t sizes[] = { 300, 6 << 20, 0, 5 };

	for (size_t t = 0; t < sizeof(sizes) / sizeof(sizes[0]); t++) {
		char *body = sizes[t] == 5 ? strdup(".\n.\r\n") :
		    mixed_body(sizes[t]);
		size_t wlen;
		char *wire = ref_stuff(body, strlen(body), &wlen);
		struct dlv_result *r;

		r = fx_deliver(f, fx_commit(f, body, one, 0), 100 + t, 60);
		assert_int_equal(r->r[0].cls, DLV_OK);
		pthread_mutex_lock(&sv->lock);
		assert_int_equal(sv->nmessages, (int)t + 1);
		assert_int_equal(sv->bodylen, wlen);
		assert_memory_equal(sv->body, wire, wlen);
		assert_int_equal(sv->nconn, 1);
		pthread_mutex_unlock(&sv->lock);
		free(wire);
		free(body);
	}
	fx_free(f);
	srv_stop(sv);
}

/* n bytes of 998-octet CRLF lines, a dot-line every 100 lines and one bare
 * LF: runs long enough to go into the output by reference. */
static char *
long_runs_body(size_t n)
{
	char *b = malloc(n + 1);
	size_t len = 0, k = 0;

	assert_non_null(b);
	while (len + 1000 <= n) {
		memset(b + len, 'a' + (char)(k % 26), 998);
		if (k % 100 == 7)
			b[len] = '.';
		if (k == 1234) {
			b[len + 998] = '\n';
			len += 999;
		} else {
			memcpy(b + len + 998, "\r\n", 2);
			len += 1000;
		}
		k++;
	}
	b[len] = '\0';
	return b;
}

/*
 * Long runs of the body go into the output by reference, not copied: they
 * arrive exactly as the reference stuffs them, as DATA against a reader
 * whose socket refuses part of the body; and a session that times out
 * while its body still waits in the output leaves the body to the output,
 * which frees it with the connection (the ASan build reports a leak or a
 * double free if a count goes wrong).
 */
static void
test_deliver_body_by_reference(void **state)
{
	const char *const one[] = { "ok1@dest.test", NULL };

	(void)state;
	{
		struct srv *sv = srv_start_opts(SRV_NORMAL, SRV_O_SLOW_READER);
		struct fx *f = fx_new(sv->port, "tls-policy none\n");
		char *body = long_runs_body(3 << 20);
		size_t wlen;
		char *wire = ref_stuff(body, strlen(body), &wlen);
		struct dlv_result *r = fx_deliver(f, fx_commit(f, body, one, 0),
		    300, 60);

		assert_int_equal(r->r[0].cls, DLV_OK);
		pthread_mutex_lock(&sv->lock);
		assert_int_equal(sv->bodylen, wlen);
		assert_memory_equal(sv->body, wire, wlen);
		pthread_mutex_unlock(&sv->lock);
		free(wire);
		free(body);
		fx_free(f);
		srv_stop(sv);
	}
	{
		struct srv *sv = srv_start_opts(SRV_NORMAL,
		    SRV_O_SLOW_READER | SRV_O_STALL_BODY);
		struct fx *f = fx_new(sv->port, "tls-policy none\n"
		    "command-timeout 1s\n");
		char *body = long_runs_body(6 << 20);
		struct dlv_result *r = fx_deliver(f, fx_commit(f, body, one, 0),
		    301, 60);

		if (r->r[0].cls != DLV_TEMP || r->r[0].reply == NULL ||
		    strstr(r->r[0].reply, "timeout") == NULL)
			fail_msg("stalled body: cls %d reply \"%s\"",
			    (int)r->r[0].cls, r->r[0].reply ? r->r[0].reply :
			    "(null)");
		free(body);
		fx_free(f);
		srv_stop(sv);
	}
}

/*
 * Once the whole body is out, the reply to the final dot is awaited
 * data-timeout, not the 3 minutes of a body still being written: both when
 * the body went out at once and when the socket took it in parts. (The
 * reply comes 2.5 s after the body: a timeout means the 1 s was in force.)
 */
static void
test_deliver_data_timeout_after_body(void **state)
{
	const unsigned opts[] = { SRV_O_LATE_FINAL,
	    SRV_O_LATE_FINAL | SRV_O_SLOW_READER };

	for (size_t t = 0; t < 2; t++) {
		struct srv *sv = srv_start_opts(SRV_NORMAL, opts[t]);
		struct fx *f = fx_new(sv->port, "data-timeout 1s\n");
		const char *const one[] = { "ok1@dest.test", NULL };
		char *body = mixed_body(t == 0 ? 200 : 6 << 20);
		struct dlv_result *r;

		r = fx_deliver(f, fx_commit(f, body, one, 0), 200 + t, 60);
		if (r->r[0].cls != DLV_TEMP || r->r[0].reply == NULL ||
		    strstr(r->r[0].reply, "timeout") == NULL)
			fail_msg("case %zu: cls %d reply \"%s\"", t,
			    (int)r->r[0].cls, r->r[0].reply ? r->r[0].reply :
			    "(null)");
		assert_string_equal(r->r[0].status, "4.4.2");
		free(body);
		fx_free(f);
		srv_stop(sv);
	}
}

/* Failure modes: each recipient deferred or bounced with a reason. */
static const struct fail_case {
	enum srv_mode mode;
	const char *conf;
	enum dlv_class cls;
	const char *status;
	const char *reason;             /* substring of the reply */
	unsigned max_sec;               /* must be done within */
} fail_cases[] = {
	{ SRV_HANG, "command-timeout 1s\n", DLV_TEMP, "4.4.2", "timeout", 8 },
	{ SRV_GREET_554, "", DLV_PERM, "5.7.1", "refused to talk to me", 8 },
	{ SRV_DROP_AFTER_MAIL, "", DLV_TEMP, "4.4.2", "lost connection", 8 },
	{ SRV_GARBAGE_EHLO, "", DLV_TEMP, "4.5.0", "protocol error", 8 },
	{ SRV_LONG_REPLY, "", DLV_TEMP, "4.5.0", "too long", 15 },
	{ SRV_NORMAL, "tls-policy encrypt\n", DLV_TEMP, "4.7.5",
	  "TLS required but not offered", 8 },
};

static void
test_deliver_failures(void **state)
{
	for (size_t i = 0; i < sizeof(fail_cases) / sizeof(fail_cases[0]); i++) {
		const struct fail_case *c = &fail_cases[i];
		struct srv *sv = srv_start(c->mode);
		struct fx *f = fx_new(sv->port, c->conf);
		const char *const two[] = { "ok1@dest.test", "ok2@dest.test",
		    NULL };
		uint64_t t0 = now_mono_us();
		struct dlv_result *r;

		r = fx_deliver(f, fx_commit(f, "x\r\n", two, 0), 10 + i,
		    c->max_sec + 5);
		assert_true(now_mono_us() - t0 < c->max_sec * 1000000ull);
		assert_int_equal(r->n, 2);
		for (size_t k = 0; k < 2; k++) {
			if (r->r[k].cls != c->cls ||
			    strcmp(r->r[k].status, c->status) != 0 ||
			    r->r[k].reply == NULL ||
			    strstr(r->r[k].reply, c->reason) == NULL)
				fail_msg("case %zu rcpt %zu: cls %d status %s "
				    "reply \"%s\"", i, k, (int)r->r[k].cls,
				    r->r[k].status, r->r[k].reply ?
				    r->r[k].reply : "(null)");
		}
		pthread_mutex_lock(&sv->lock);
		assert_int_equal(sv->nmessages, 0);
		pthread_mutex_unlock(&sv->lock);
		fx_free(f);
		srv_stop(sv);
	}
}

/* A cached connection that died unnoticed: the job is retried once on a
 * fresh connection. */
static void
test_deliver_reuse_dead(void **state)
{
	struct srv *sv = srv_start(SRV_DROP_SECOND_MAIL);
	struct fx *f = fx_new(sv->port, "");
	const char *const one[] = { "ok1@dest.test", NULL };
	struct dlv_result *r;

	r = fx_deliver(f, fx_commit(f, "a\r\n", one, 0), 1, 20);
	assert_int_equal(r->r[0].cls, DLV_OK);
	r = fx_deliver(f, fx_commit(f, "b\r\n", one, 0), 2, 20);
	assert_int_equal(r->r[0].cls, DLV_OK);
	pthread_mutex_lock(&sv->lock);
	assert_int_equal(sv->nconn, 2);
	assert_int_equal(sv->nmessages, 2);
	assert_memory_equal(sv->body, "b\r\n.\r\n", 6);
	pthread_mutex_unlock(&sv->lock);
	fx_free(f);
	srv_stop(sv);
}

/* Nobody listening: connect fails, 4.4.1 with the reason. */
static void
test_deliver_connect_refused(void **state)
{
	struct srv *sv = srv_start(SRV_NORMAL);
	uint16_t port = sv->port;
	struct fx *f;
	struct dlv_result *r;
	const char *const one[] = { "ok1@dest.test", NULL };

	srv_stop(sv);           /* the port is closed now */
	f = fx_new(port, "");
	r = fx_deliver(f, fx_commit(f, "x\r\n", one, 0), 1, 20);
	assert_int_equal(r->r[0].cls, DLV_TEMP);
	assert_string_equal(r->r[0].status, "4.4.1");
	assert_non_null(strstr(r->r[0].reply, "connect to 127.0.0.1[127.0.0.1]"));
	assert_non_null(strstr(r->r[0].reply, "refused"));
	fx_free(f);
}

/* ---- STARTTLS against an aiosmtpd sink (skipped without it) ------------ */

static const char tls_sink_py[] =
	"import sys, ssl\n"
	"from aiosmtpd.controller import Controller\n"
	"cert, key, port, out = sys.argv[1:5]\n"
	"ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)\n"
	"ctx.load_cert_chain(cert, key)\n"
	"class H:\n"
	"    async def handle_DATA(self, server, session, env):\n"
	"        with open(out, 'a') as f:\n"
	"            f.write('%s %s\\n' % ('tls' if session.ssl else 'plain',\n"
	"                    ','.join(env.rcpt_tos)))\n"
	"        return '250 2.0.0 ok'\n"
	"c = Controller(H(), hostname='127.0.0.1', port=int(port),\n"
	"               tls_context=ctx, require_starttls=False)\n"
	"c.start()\n"
	"print('ready', flush=True)\n"
	"sys.stdin.read()\n"
	"c.stop()\n";

static uint16_t
free_port(void)
{
	struct sockaddr_in sin = { 0 };
	socklen_t sl = sizeof(sin);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &sl), 0);
	close(fd);
	return ntohs(sin.sin_port);
}

static void
test_deliver_starttls(void **state)
{
	const char *tmp = getenv("TERN_TEST_TMPDIR");
	char dir[1024], cmd[8192], path[1200], line[256];
	const char *const one[] = { "ok1@dest.test", NULL };
	uint16_t port = free_port();
	struct dlv_result *r;
	struct fx *f;
	FILE *py, *out;
	int up = 0;

	if (system("/usr/bin/python3 -c 'import aiosmtpd' 2>/dev/null") != 0 ||
	    system("command -v openssl >/dev/null") != 0)
		skip();
	snprintf(dir, sizeof(dir), "%s/dlvtls-XXXXXX", tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(dir));
	snprintf(cmd, sizeof(cmd), "openssl req -x509 -newkey rsa:2048 -nodes "
	    "-keyout %s/key.pem -out %s/cert.pem -subj /CN=localhost -days 1 "
	    ">/dev/null 2>&1", dir, dir);
	assert_int_equal(system(cmd), 0);
	snprintf(path, sizeof(path), "%s/sink.py", dir);
	out = fopen(path, "w");
	fputs(tls_sink_py, out);
	fclose(out);
	snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s/sink.py %s/cert.pem "
	    "%s/key.pem %u %s/got >/dev/null 2>&1", dir, dir, dir, (unsigned)port,
	    dir);
	py = popen(cmd, "w");
	assert_non_null(py);
	for (int i = 0; i < 100 && !up; i++) {
		struct sockaddr_in sin = { 0 };
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		sin.sin_family = AF_INET;
		sin.sin_port = htons(port);
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		up = connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0;
		close(fd);
		if (!up)
			usleep(100000);
	}
	assert_true(up);

	/* may: STARTTLS offered, taken */
	f = fx_new(port, "tls-policy may\n");
	r = fx_deliver(f, fx_commit(f, "tls\r\n", one, 0), 1, 20);
	assert_int_equal(r->r[0].cls, DLV_OK);
	assert_non_null(r->tls);
	assert_true(strncmp(r->tls, "TLSv1.", 6) == 0);
	fx_free(f);

	/* verify: a self-signed certificate fails; deferred, 4.7.5 */
	f = fx_new(port, "tls-policy verify\n");
	r = fx_deliver(f, fx_commit(f, "tls\r\n", one, 0), 2, 20);
	assert_int_equal(r->r[0].cls, DLV_TEMP);
	assert_string_equal(r->r[0].status, "4.7.5");
	assert_non_null(strstr(r->r[0].reply, "TLS handshake"));
	fx_free(f);

	pclose(py);     /* EOF on its stdin stops it */
	snprintf(path, sizeof(path), "%s/got", dir);
	out = fopen(path, "r");
	assert_non_null(out);
	assert_non_null(fgets(line, sizeof(line), out));
	assert_string_equal(line, "tls ok1@dest.test\n");
	assert_null(fgets(line, sizeof(line), out));    /* verify sent nothing */
	fclose(out);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/*
 * LMTP (RFC 2033): LHLO, pipelined, one reply per accepted recipient after
 * the dot, in RCPT order, each deciding its own recipient; the connection
 * is reused for the next message.
 */
static void
test_lmtp_per_recipient(void **state)
{
	static const char *const rcpts[] = {
		"ok1@dest.test", "late4@dest.test", "perm@dest.test",
		"late5@dest.test", "ok2@dest.test", NULL,
	};
	struct srv *sv = srv_start(SRV_LMTP);
	char extra[128], relay[80];
	struct fx *f;
	struct dlv_result *r;

	snprintf(extra, sizeof(extra), "route dest.test lmtp:[127.0.0.1]:%u\n",
	    (unsigned)sv->port);
	f = fx_new(1, extra);       /* "*" routes to a dead port: unused */
	r = fx_deliver(f, fx_commit(f, body_dots, rcpts, 0), 1, 20);
	assert_int_equal(r->n, 5);
	assert_int_equal(r->r[0].cls, DLV_OK);
	assert_string_equal(r->r[0].status, "2.0.0");
	assert_non_null(strstr(r->r[0].reply, "250 2.0.0 saved"));
	assert_int_equal(r->r[1].cls, DLV_TEMP);
	assert_string_equal(r->r[1].status, "4.2.2");
	assert_non_null(strstr(r->r[1].reply, "452 4.2.2 over quota"));
	assert_int_equal(r->r[2].cls, DLV_PERM);        /* refused at RCPT */
	assert_string_equal(r->r[2].status, "5.1.1");
	assert_int_equal(r->r[3].cls, DLV_PERM);
	assert_string_equal(r->r[3].status, "5.2.2");
	assert_non_null(strstr(r->r[3].reply, "552 5.2.2 mailbox full"));
	assert_int_equal(r->r[4].cls, DLV_OK);
	snprintf(relay, sizeof(relay), "lmtp:127.0.0.1[127.0.0.1]:%u",
	    (unsigned)sv->port);
	assert_string_equal(r->relay, relay);
	assert_int_equal(r->peer, DLV_PEER_OK);

	pthread_mutex_lock(&sv->lock);
	assert_int_equal(sv->nlhlo, 1);
	assert_int_equal(sv->pipelined_seen, 1);
	assert_int_equal(sv->bodylen, strlen(body_dots_wire));
	assert_memory_equal(sv->body, body_dots_wire, sv->bodylen);
	pthread_mutex_unlock(&sv->lock);

	/* the next message reuses the connection: no second LHLO */
	{
		const char *const one[] = { "late4@dest.test", "ok3@dest.test",
		    NULL };
		r = fx_deliver(f, fx_commit(f, "hi\r\n", one, 0), 2, 20);
		assert_int_equal(r->n, 2);
		assert_int_equal(r->r[0].cls, DLV_TEMP);
		assert_int_equal(r->r[1].cls, DLV_OK);
		pthread_mutex_lock(&sv->lock);
		assert_int_equal(sv->nconn, 1);
		assert_int_equal(sv->nlhlo, 1);
		assert_int_equal(sv->nmessages, 2);
		pthread_mutex_unlock(&sv->lock);
	}
	fx_free(f);
	srv_stop(sv);
}

/* lmtp.c: the reply-to-recipient mapping, socket addresses, relay names. */
static void
test_lmtp_pure(void **state)
{
	unsigned char rs[5] = { DLV_R_DONE, DLV_R_ACCEPTED, DLV_R_OPEN,
	    DLV_R_ACCEPTED, DLV_R_ACCEPTED };
	size_t order[4] = { 4, 0, 3, 1 };     /* RCPT order, job positions */
	struct sockaddr_storage ss;
	unsigned len;
	char buf[200], path[120];

	assert_int_equal(dlv_lmtp_next_rcpt(rs, order, 4), 0);  /* rcpt 4 */
	rs[4] = DLV_R_DONE;
	assert_int_equal(dlv_lmtp_next_rcpt(rs, order, 4), 2);  /* rcpt 3 */
	rs[3] = DLV_R_DONE;
	assert_int_equal(dlv_lmtp_next_rcpt(rs, order, 4), 3);  /* rcpt 1 */
	rs[1] = DLV_R_DONE;
	assert_int_equal(dlv_lmtp_next_rcpt(rs, order, 4), 4);  /* none */
	assert_int_equal(dlv_lmtp_next_rcpt(rs, order, 0), 0);

	assert_int_equal(dlv_lmtp_unix_addr("/run/dovecot/lmtp", &ss, &len), 0);
	assert_int_equal(ss.ss_family, AF_UNIX);
	dlv_relay_name(buf, sizeof(buf), 1, "/run/dovecot/lmtp", &ss, 0);
	assert_string_equal(buf, "lmtp:unix:/run/dovecot/lmtp");
	assert_int_equal(dlv_lmtp_unix_addr("", &ss, &len), -1);
	memset(path, 'a', sizeof(path) - 1);
	path[sizeof(path) - 1] = '\0';
	assert_int_equal(dlv_lmtp_unix_addr(path, &ss, &len), -1);

	memset(&ss, 0, sizeof(ss));
	ss.ss_family = AF_INET;
	((struct sockaddr_in *)&ss)->sin_addr.s_addr = htonl(0x7f000001);
	dlv_relay_name(buf, sizeof(buf), 1, "store.test", &ss, 24);
	assert_string_equal(buf, "lmtp:store.test[127.0.0.1]:24");
	dlv_relay_name(buf, sizeof(buf), 0, "mx.test", &ss, 25);
	assert_string_equal(buf, "mx.test[127.0.0.1]:25");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_deliver_mix_pipelined_reuse),
		cmocka_unit_test(test_deliver_no_pipelining),
		cmocka_unit_test(test_deliver_body_stuffing),
		cmocka_unit_test(test_deliver_body_by_reference),
		cmocka_unit_test(test_deliver_data_timeout_after_body),
		cmocka_unit_test(test_deliver_failures),
		cmocka_unit_test(test_deliver_connect_refused),
		cmocka_unit_test(test_deliver_reuse_dead),
		cmocka_unit_test(test_deliver_starttls),
		cmocka_unit_test(test_lmtp_per_recipient),
		cmocka_unit_test(test_lmtp_pure),
	};

	if (evthread_use_pthreads() < 0)
		return 1;
	signal(SIGPIPE, SIG_IGN);       /* as ternd: peers close on us */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
