/*
 * test_session.c - the SMTP server state machine, in process: a session on
 * one end of a socketpair(), driven by its own event_base, with a real
 * queue in a temporary directory (so commits really go to disk). The test
 * plays the client on the other end. No ports, no daemon.
 */
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "tern/conf.h"
#include "tern/log.h"
#include "tern/queue.h"
#include "tern/util.h"
#include "smtpd_int.h"

struct fixture {
	struct smtpd_server srv;
	struct smtpd_loop loop;
	struct queue *q;
	struct conf *conf;
	char dir[512];
	int fd;               /* the client's end */
	char in[65536];       /* what the client has read so far */
	size_t inlen;
};

static const char *test_conf_text =
    "hostname mx.test\n"
    "queue /unused\n"
    "listen 127.0.0.1:20025 relay\n"
    "listen 127.0.0.1:20587 submission\n"
    "relay-domains example.com .sub.example.org\n"
    "trusted-networks 192.0.2.0/24\n"
    "max-recipients 3\n"
    "max-message-size 10K\n"
    "max-errors 20\n"
    "idle-timeout 30s\n";

static void
conf_err(void *arg, const char *msg)
{
	fprintf(stderr, "conf: %s\n", msg);
}

static int
setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	const char *tmp = getenv("TERN_TEST_TMPDIR");
	char err[256];

	snprintf(f->dir, sizeof(f->dir), "%s/session-XXXXXX", tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(f->dir));
	assert_int_equal(conf_parse(test_conf_text, strlen(test_conf_text),
	    "test.conf", &f->conf, conf_err, NULL), 0);
	struct queue_opts qo = { .dir = f->dir, .segment_size = 1 << 20,
	    .spool_memory = 4096 };
	assert_int_equal(queue_open(&qo, &f->q, err, sizeof(err)), 0);

	f->srv.conf = f->conf;
	f->srv.queue = f->q;
	f->srv.nloops = 1;
	pthread_mutex_init(&f->srv.conf_lock, NULL);
	smtpd_connlimit_init(&f->srv);
	f->loop.srv = &f->srv;
	f->loop.base = event_base_new();
	f->loop.inbox = tq_new(f->loop.base, smtpd_loop_inbox, &f->loop);
	*state = f;
	return 0;
}

static int
teardown(void **state)
{
	struct fixture *f = *state;
	if (f->fd > 0)
		close(f->fd);
	/* let the session see EOF and free itself */
	for (int i = 0; i < 50 && f->loop.nsessions > 0; i++)
		event_base_loop(f->loop.base, EVLOOP_NONBLOCK);
	assert_int_equal(f->loop.nsessions, 0);
	queue_close(f->q);
	tq_free(f->loop.inbox);
	event_base_free(f->loop.base);
	conf_unref(f->conf);
	f->srv.conf = NULL;
	smtpd_loops_free(&f->srv);
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

/* Connect a client from addr (dotted quad) to listener index li. */
static void
connect_client(struct fixture *f, const char *addr, size_t li)
{
	int sv[2];
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(40000) };
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	inet_pton(AF_INET, addr, &sin.sin_addr);
	f->fd = sv[0];
	fcntl(f->fd, F_SETFL, O_NONBLOCK);
	f->srv.nconnections++;
	assert_int_equal(smtpd_connlimit_take(&f->srv, (struct sockaddr *)&sin, 0), 0);
	smtpd_session_accept(&f->loop, sv[1], (struct sockaddr *)&sin,
	    sizeof(sin), &f->conf->listen[li], conf_ref(f->conf), NULL);
	f->inlen = 0;
}

static void
client_send(struct fixture *f, const char *s, size_t len)
{
	size_t off = 0;
	while (off < len) {
		ssize_t n = write(f->fd, s + off, len - off);
		if (n < 0 && errno == EAGAIN) {
			event_base_loop(f->loop.base, EVLOOP_NONBLOCK);
			continue;
		}
		assert_true(n > 0);
		off += (size_t)n;
	}
}

/*
 * Run the loop until the client has received `nreplies` complete final
 * reply lines ("ddd " lines) beyond what it consumed, then return them
 * (all text received) and consume. Fails after ~5 s.
 */
static const char *
client_expect(struct fixture *f, int nreplies)
{
	static char out[65536];
	for (int iter = 0; iter < 5000; iter++) {
		event_base_loop(f->loop.base, EVLOOP_NONBLOCK);
		ssize_t n = read(f->fd, f->in + f->inlen, sizeof(f->in) - 1 - f->inlen);
		if (n > 0)
			f->inlen += (size_t)n;
		f->in[f->inlen] = '\0';
		int finals = 0;
		const char *p = f->in;
		while (*p) {
			const char *eol = strstr(p, "\r\n");
			if (eol == NULL)
				break;
			if (eol - p >= 4 && p[3] == ' ')
				finals++;
			p = eol + 2;
		}
		if (finals >= nreplies) {
			memcpy(out, f->in, f->inlen + 1);
			f->inlen = 0;
			return out;
		}
		if (n <= 0)
			usleep(1000);
	}
	fail_msg("timeout waiting for %d replies; got \"%s\"", nreplies, f->in);
	return NULL;
}

static void
dialog(struct fixture *f, const char *cmd, const char *expect_prefix)
{
	client_send(f, cmd, strlen(cmd));
	const char *r = client_expect(f, 1);
	const char *last = r, *p = r;
	while ((p = strstr(p, "\r\n")) != NULL && p[2] != '\0') {
		p += 2;
		last = p;
	}
	if (strncmp(last, expect_prefix, strlen(expect_prefix)) != 0)
		fail_msg("after \"%s\": expected \"%s\", got \"%s\"", cmd,
		    expect_prefix, r);
}

/* One command and the reply it must get: dialogs as tables. */
struct step {
	const char *send, *expect;
};

static void
dialog_steps(struct fixture *f, const struct step *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		dialog(f, s[i].send, s[i].expect);
}
#define DIALOG_STEPS(f, s) dialog_steps((f), (s), sizeof(s) / sizeof((s)[0]))

/*
 * Messages in the index, once the committer has indexed what it acked:
 * the index follows the durable commit (and the 250) by a moment, so wait
 * until it holds every message committed (nothing here removes any).
 */
static size_t
queue_count(struct fixture *f)
{
	struct queue_stats st;
	uint64_t end = now_mono_us() + 5000000u;

	for (;;) {
		queue_stats(f->q, &st);
		if (st.messages >= st.commits || now_mono_us() > end)
			return (size_t)st.messages;
		usleep(1000);
	}
}

static void
test_greeting_and_ehlo(void **state)
{
	struct fixture *f = *state;
	connect_client(f, "198.51.100.7", 0);
	const char *r = client_expect(f, 1);
	assert_string_equal(r, "220 mx.test ESMTP tern\r\n");
	client_send(f, "EHLO client.example\r\n", 21);
	r = client_expect(f, 1);
	assert_non_null(strstr(r, "250-mx.test\r\n"));
	assert_non_null(strstr(r, "250-PIPELINING\r\n"));
	assert_non_null(strstr(r, "250-SIZE 10240\r\n"));
	assert_non_null(strstr(r, "250-8BITMIME\r\n"));
	assert_non_null(strstr(r, "250-ENHANCEDSTATUSCODES\r\n"));
	assert_null(strstr(r, "STARTTLS"));       /* no certificate configured */
	assert_null(strstr(r, "AUTH"));
	dialog(f, "HELO client.example\r\n", "250 mx.test");
	dialog(f, "NOOP\r\n", "250 2.0.0");
	dialog(f, "VRFY root\r\n", "252 2.5.0");
	dialog(f, "HELP\r\n", "214 ");
	dialog(f, "QUIT\r\n", "221 2.0.0");
}

static void
test_sequence_errors(void **state)
{
	struct fixture *f = *state;
	static const struct step steps[] = {
		{ "MAIL FROM:<a@b.example>\r\n", "503 5.5.1" },
		{ "EHLO c\r\n", "250 " },
		{ "RCPT TO:<x@example.com>\r\n", "503 5.5.1" },
		{ "DATA\r\n", "503 5.5.1" },
		{ "MAIL FROM:<a@b.example>\r\n", "250 2.1.0" },
		{ "MAIL FROM:<a@b.example>\r\n", "503 5.5.1" },
		{ "DATA\r\n", "503 5.5.1" },
		{ "RSET\r\n", "250 2.0.0" },
		{ "RCPT TO:<x@example.com>\r\n", "503 5.5.1" },
		{ "FOO\r\n", "500 5.5.1" },
	};
	connect_client(f, "198.51.100.7", 0);
	client_expect(f, 1);
	DIALOG_STEPS(f, steps);
	assert_int_equal(queue_count(f), 0);
}

static int
walk_last_id(void *arg, const struct envelope *e)
{
	*(uint64_t *)arg = e->id;
	return 0;
}

static void
test_transaction_queued(void **state)
{
	struct fixture *f = *state;
	connect_client(f, "198.51.100.7", 0);
	client_expect(f, 1);
	dialog(f, "EHLO c\r\n", "250 ");
	dialog(f, "MAIL FROM:<a@b.example> SIZE=100 BODY=8BITMIME\r\n", "250 2.1.0");
	dialog(f, "RCPT TO:<x@example.com>\r\n", "250 2.1.5");
	dialog(f, "RCPT TO:<y@a.sub.example.org>\r\n", "250 2.1.5");
	dialog(f, "DATA\r\n", "354 ");
	dialog(f, "Subject: t\r\n\r\n..dot\r\nx\xe9y\r\n.\r\n",
	    "250 2.0.0 Ok: queued as ");
	assert_int_equal(queue_count(f), 1);

	/* find it and check envelope and body */
	struct envelope *env = NULL;
	uint64_t id = 0;
	/* the index follows the durable commit by a moment: wait for it */
	for (int i = 0; i < 2000 && id == 0; i++) {
		queue_walk(f->q, walk_last_id, &id);
		if (id == 0)
			usleep(1000);
	}
	assert_int_equal(queue_get(f->q, id, &env), 0);
	assert_string_equal(env->sender, "a@b.example");
	assert_int_equal(env->nrcpt, 2);
	assert_string_equal(env->rcpts[0].addr, "x@example.com");
	assert_string_equal(env->rcpts[1].addr, "y@a.sub.example.org");
	assert_string_equal(env->client_addr, "198.51.100.7");
	assert_true(env->flags & ENV_F_8BIT);
	char *body;
	size_t len;
	assert_int_equal(queue_read_body(f->q, env, &body, &len), 0);
	const char *tail = "Subject: t\r\n\r\n.dot\r\nx\xe9y\r\n";
	assert_true(len > strlen(tail));
	assert_memory_equal(body + len - strlen(tail), tail, strlen(tail));
	assert_memory_equal(body, "Received: from c ([198.51.100.7])\r\n", 35);
	char qid[QID_STRLEN + 1];
	qid_format(env->id, qid);
	assert_non_null(strstr(body, qid));   /* Received names the queue id */
	free(body);
	envelope_free(env);
}

static void
test_pipelined_group(void **state)
{
	struct fixture *f = *state;
	const char *group = "EHLO c\r\nMAIL FROM:<a@b.example>\r\n"
	    "RCPT TO:<x@example.com>\r\nRCPT TO:<bad@elsewhere.example>\r\n"
	    "RCPT TO:<y@example.com>\r\nDATA\r\nhello\r\n.\r\nQUIT\r\n";
	connect_client(f, "198.51.100.7", 0);
	client_expect(f, 1);
	client_send(f, group, strlen(group));
	const char *r = client_expect(f, 8);
	const char *want[] = { "250 HELP", "250 2.1.0", "250 2.1.5",
	    "554 5.7.1", "250 2.1.5", "354 ", "250 2.0.0 Ok: queued as ",
	    "221 2.0.0" };
	const char *p = r;
	for (size_t i = 0; i < 8; i++) {
		/* skip continuation lines */
		while (p[3] == '-')
			p = strstr(p, "\r\n") + 2;
		if (strncmp(p, want[i], strlen(want[i])) != 0)
			fail_msg("reply %zu: expected \"%s\" in \"%s\"", i, want[i], r);
		p = strstr(p, "\r\n") + 2;
	}
	assert_int_equal(queue_count(f), 1);
}

static void
test_relay_policy(void **state)
{
	struct fixture *f = *state;
	/* untrusted client on the relay listener */
	static const struct step untrusted[] = {
		{ "EHLO c\r\n", "250 " },
		{ "MAIL FROM:<a@b.example>\r\n", "250 " },
		{ "RCPT TO:<x@elsewhere.example>\r\n", "554 5.7.1" },
		{ "RCPT TO:<x@sub.example.org>\r\n", "554 5.7.1" }, /* only subdomains */
		{ "RCPT TO:<x@EXAMPLE.COM>\r\n", "250 " },
		/* sender-specified routing towards a relay domain: refused */
		{ "RCPT TO:<x%elsewhere.example@example.com>\r\n", "554 5.7.1" },
		{ "RCPT TO:<\"x@elsewhere.example\"@example.com>\r\n", "554 5.7.1" },
		{ "RCPT TO:<elsewhere.example!x@example.com>\r\n", "554 5.7.1" },
		{ "RCPT TO:<@example.com:x@elsewhere.example>\r\n", "554 5.7.1" },
		{ "RCPT TO:<x@[192.0.2.1]>\r\n", "554 5.7.1" },
		{ "RCPT TO:<x@example.com.>\r\n", "501 5.1.3" },
		/* RFC 5321 4.5.1: from anyone */
		{ "RCPT TO:<PostMaster>\r\n", "250 2.1.5" },
	};
	/* trusted client may relay anywhere ... */
	static const struct step trusted[] = {
		{ "EHLO c\r\n", "250 " },
		{ "MAIL FROM:<a@b.example>\r\n", "250 " },
		{ "RCPT TO:<x@elsewhere.example>\r\n", "250 2.1.5" },
		/* ... and keeps sender-specified routing */
		{ "RCPT TO:<x%elsewhere.example@example.com>\r\n", "250 2.1.5" },
		{ "RCPT TO:<@example.com:y@elsewhere.example>\r\n", "250 2.1.5" },
	};

	connect_client(f, "198.51.100.7", 0);
	client_expect(f, 1);
	DIALOG_STEPS(f, untrusted);
	close(f->fd);
	f->fd = -1;
	for (int i = 0; i < 50 && f->loop.nsessions > 0; i++)
		event_base_loop(f->loop.base, EVLOOP_NONBLOCK);

	connect_client(f, "192.0.2.9", 0);
	client_expect(f, 1);
	DIALOG_STEPS(f, trusted);
}

static void
test_submission_needs_auth(void **state)
{
	struct fixture *f = *state;
	connect_client(f, "198.51.100.7", 1);
	client_expect(f, 1);
	dialog(f, "EHLO c\r\n", "250 ");
	dialog(f, "MAIL FROM:<a@b.example>\r\n", "530 5.7.0");
}

static void
test_limits(void **state)
{
	struct fixture *f = *state;
	char line[700];
	connect_client(f, "198.51.100.7", 0);
	client_expect(f, 1);
	dialog(f, "EHLO c\r\n", "250 ");
	/* command line over 512 octets; the session goes on */
	memset(line, 'A', sizeof(line));
	memcpy(line, "NOOP ", 5);
	memcpy(line + sizeof(line) - 2, "\r\n", 2);
	client_send(f, line, sizeof(line));
	const char *r = client_expect(f, 1);
	assert_memory_equal(r, "500 5.5.2", 9);
	dialog(f, "NOOP\r\n", "250 ");
	dialog(f, "MAIL FROM:<a@b.example> SIZE=20000\r\n", "552 5.3.4");
	dialog(f, "MAIL FROM:<a@b.example> FOO=1\r\n", "555 5.5.4");
	dialog(f, "MAIL FROM:<a@@b>\r\n", "501 5.1.7");
	dialog(f, "MAIL FROM:<a@b.example>\r\n", "250 ");
	dialog(f, "RCPT TO:<1@example.com>\r\n", "250 ");
	dialog(f, "RCPT TO:<2@example.com>\r\n", "250 ");
	dialog(f, "RCPT TO:<3@example.com>\r\n", "250 ");
	dialog(f, "RCPT TO:<4@example.com>\r\n", "452 4.5.3");
	dialog(f, "DATA\r\n", "354 ");
	/* body over 10K: refused at the end, nothing queued */
	char big[1000];
	memset(big, 'x', sizeof(big));
	memcpy(big + sizeof(big) - 2, "\r\n", 2);
	for (int i = 0; i < 11; i++)
		client_send(f, big, sizeof(big));
	dialog(f, ".\r\n", "552 5.3.4");
	/* a 1001-octet text line */
	dialog(f, "MAIL FROM:<a@b.example>\r\n", "250 ");
	dialog(f, "RCPT TO:<1@example.com>\r\n", "250 ");
	dialog(f, "DATA\r\n", "354 ");
	char longl[1001];
	memset(longl, 'y', sizeof(longl));
	memcpy(longl + sizeof(longl) - 2, "\r\n", 2);
	client_send(f, longl, sizeof(longl));
	dialog(f, ".\r\n", "550 5.6.0");
	assert_int_equal(queue_count(f), 0);
}

static void
test_too_many_errors(void **state)
{
	struct fixture *f = *state;
	connect_client(f, "198.51.100.7", 0);
	client_expect(f, 1);
	for (int i = 0; i < 19; i++)
		dialog(f, "BOGUS\r\n", "500 5.5.1");
	client_send(f, "BOGUS\r\n", 7);
	const char *r = client_expect(f, 2);
	assert_non_null(strstr(r, "421 4.7.0"));
	/* the session closes by itself */
	for (int i = 0; i < 200 && f->loop.nsessions > 0; i++) {
		event_base_loop(f->loop.base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
	assert_int_equal(f->loop.nsessions, 0);
}

static void
test_smuggling(void **state)
{
	struct fixture *f = *state;
	static const char *tricks[] = {
		"\n.\n", "\n.\r\n", "\r.\r", "\r\n.\n", "\r\n.\r",
	};
	for (size_t i = 0; i < sizeof(tricks) / sizeof(tricks[0]); i++) {
		char msg[512];
		connect_client(f, "198.51.100.7", 0);
		client_expect(f, 1);
		dialog(f, "EHLO c\r\n", "250 ");
		dialog(f, "MAIL FROM:<a@b.example>\r\n", "250 ");
		dialog(f, "RCPT TO:<x@example.com>\r\n", "250 ");
		dialog(f, "DATA\r\n", "354 ");
		int n = snprintf(msg, sizeof(msg), "Subject: a\r\n\r\nfirst%s"
		    "MAIL FROM:<evil@b.example>\r\nRCPT TO:<y@example.com>\r\n"
		    "DATA\r\nsmuggled\r\n", tricks[i]);
		client_send(f, msg, (size_t)n);
		/* nothing may be answered: still inside DATA */
		for (int k = 0; k < 20; k++)
			event_base_loop(f->loop.base, EVLOOP_NONBLOCK);
		assert_int_equal(read(f->fd, msg, sizeof(msg)), -1);
		/* the real end: refused (bare CR/LF), nothing queued */
		dialog(f, ".\r\n", "550 5.6.0");
		dialog(f, "QUIT\r\n", "221 ");
		close(f->fd);
		f->fd = -1;
		for (int k = 0; k < 50 && f->loop.nsessions > 0; k++)
			event_base_loop(f->loop.base, EVLOOP_NONBLOCK);
	}
	assert_int_equal(queue_count(f), 0);
}

/* Mail loops (RFC 5321 6.3): max-hops trace fields or more are refused. */
static void
test_hop_limit(void **state)
{
	struct fixture *f = *state;
	static const unsigned hops[] = { 49, 50, 120 };
	static const char *want[] = { "250 2.0.0", "554 5.4.6", "554 5.4.6" };
	char msg[8192];

	connect_client(f, "198.51.100.7", 0);
	client_expect(f, 1);
	dialog(f, "EHLO c\r\n", "250 ");
	for (size_t i = 0; i < sizeof(hops) / sizeof(hops[0]); i++) {
		size_t n = 0;
		for (unsigned k = 0; k < hops[i]; k++)
			n += (size_t)snprintf(msg + n, sizeof(msg) - n,
			    k % 2 ? "Received: from h%u\r\n" : "Delivered-To: u%u@x\r\n",
			    k);
		snprintf(msg + n, sizeof(msg) - n, "Subject: s\r\n\r\nbody\r\n.\r\n");
		dialog(f, i == 2 ? "MAIL FROM:<>\r\n" : "MAIL FROM:<a@b.example>\r\n",
		    "250 ");
		dialog(f, "RCPT TO:<x@example.com>\r\n", "250 ");
		dialog(f, "DATA\r\n", "354 ");
		dialog(f, msg, want[i]);
	}
	dialog(f, "NOOP\r\n", "250 ");
	assert_int_equal(queue_count(f), 1);
}

int
main(void)
{
	log_init("test_session", 0, 0);
	evthread_use_pthreads();
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_greeting_and_ehlo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hop_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sequence_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_transaction_queued, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pipelined_group, setup, teardown),
		cmocka_unit_test_setup_teardown(test_relay_policy, setup, teardown),
		cmocka_unit_test_setup_teardown(test_submission_needs_auth, setup, teardown),
		cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_many_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_smuggling, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
