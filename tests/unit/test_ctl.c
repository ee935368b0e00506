/*
 * test_ctl.c - the control server over a real UNIX socket, without a queue:
 * protocol version, command table, ops handed on (struct ctl_op) and their
 * answers (in order, or dropped when the client has gone), errors, line
 * limit, stale socket handling; and the pure filter parser and matcher. (Queue commands are covered end to end by
 * tests/integration/test_ternctl.py.)
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "tern/ctl.h"
#include "tern/envelope.h"
#include "tern/json.h"
#include "tern/queue.h"
#include "tern/tq.h"
#include "tern/util.h"

struct ctl_test {
	struct event_base *base;
	struct ctl_server *srv;
	char path[256];
	int op_calls;
	enum ctl_op_type last_type;
	uint64_t last_id;
	int last_single;
	char last_domain[CTL_FILTER_STR];
	struct ctl_op *kept;            /* an op answered later by the test */
	int keep_next;
};

/*
 * The op hook: id 1 ok, id 2 a failure, id 0xff not found, id 0xee
 * refused by the hook itself; pause/resume echo the domain. Answers at once
 * (posted back to the loop like the scheduler does), or keeps the op.
 */
static int
ctl_test_op(void *arg, struct ctl_op *op)
{
	struct ctl_test *t = arg;
	struct json_writer w;
	char qid[QID_STRLEN + 1];

	t->op_calls++;
	t->last_type = op->type;
	t->last_id = op->nids > 0 ? op->ids[0] : 0;
	t->last_single = op->single;
	snprintf(t->last_domain, sizeof(t->last_domain), "%s", op->domain);
	if (t->last_id == 0xee)
		return -1;
	if (t->keep_next) {
		t->keep_next = 0;
		t->kept = op;
		return 0;
	}
	if (t->last_id == 2) {
		ctl_op_fail(op, CTL_E_STATE, "busy");
		return 0;
	}
	if (t->last_id == 0xff) {
		ctl_op_fail(op, CTL_E_NOT_FOUND, "no such message");
		return 0;
	}
	json_writer_init(&w);
	json_obj_open(&w);
	json_key(&w, "ok");
	json_put_bool(&w, 1);
	json_key(&w, "type");
	json_put_int(&w, op->type);
	if (op->nids > 0) {
		json_key(&w, "ids");
		json_arr_open(&w);
		for (size_t i = 0; i < op->nids; i++) {
			qid_format(op->ids[i], qid);
			json_put_str(&w, qid);
		}
		json_arr_close(&w);
	}
	if (op->domain[0] != '\0') {
		json_key(&w, "domain");
		json_put_str(&w, op->domain);
	}
	json_obj_close(&w);
	ctl_op_reply(op, &w);
	return 0;
}

static struct ctl_hooks ctl_test_hooks = { .op = ctl_test_op };

static void
ctl_test_path(char *buf, size_t len, const char *name)
{
	const char *dir = getenv("TERN_TEST_TMPDIR");
	snprintf(buf, len, "%s/%s.%d", dir ? dir : "/tmp", name, (int)getpid());
}

static int
ctl_test_setup(void **state)
{
	struct ctl_test *t = calloc(1, sizeof(*t));
	char err[256];

	t->base = event_base_new();
	ctl_test_path(t->path, sizeof(t->path), "ctl.sock");
	ctl_test_hooks.arg = t;
	t->srv = ctl_server_new(t->base, t->path, NULL, &ctl_test_hooks, (gid_t)-1,
	    err, sizeof(err));
	if (t->srv == NULL)
		fail_msg("ctl_server_new: %s", err);
	*state = t;
	return 0;
}

static int
ctl_test_teardown(void **state)
{
	struct ctl_test *t = *state;
	ctl_server_free(t->srv);
	event_base_free(t->base);
	free(t);
	return 0;
}

static int
ctl_test_connect(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	strcpy(sun.sun_path, path);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	return fd;
}

/*
 * Run the loop until fd has nlines complete lines (or EOF); returns the
 * text read (caller frees); *eof tells whether the server closed.
 */
static char *
ctl_test_read(struct ctl_test *t, int fd, int nlines, int *eof)
{
	size_t cap = 1 << 20, len = 0;
	char *buf = malloc(cap);
	*eof = 0;
	for (int spins = 0; spins < 2000; spins++) {
		event_base_loop(t->base, EVLOOP_NONBLOCK);
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		if (poll(&pfd, 1, 2) == 1) {
			ssize_t n = read(fd, buf + len, cap - len - 1);
			if (n <= 0) {
				*eof = 1;
				break;
			}
			len += (size_t)n;
			buf[len] = '\0';
			int lines = 0;
			for (size_t i = 0; i < len; i++)
				lines += buf[i] == '\n';
			if (lines >= nlines)
				break;
		}
	}
	buf[len] = '\0';
	return buf;
}

static void
test_ctl_requests(void **state)
{
	struct ctl_test *t = *state;
	char ping[128];
	snprintf(ping, sizeof(ping), "{\"ok\":true,\"version\":2,\"pid\":%d}", (int)getpid());
	const struct {
		const char *req;
		const char *resp;
	} cases[] = {
		{ "{\"v\":1,\"cmd\":\"ping\"}", ping },
		{ " { \"cmd\" : \"ping\" , \"v\" : 1 } \r", ping },
		{ "{\"v\":3,\"cmd\":\"ping\"}",
		  "{\"ok\":false,\"error\":\"unsupported protocol version\",\"code\":3}" },
		{ "{\"v\":\"1\",\"cmd\":\"ping\"}",
		  "{\"ok\":false,\"error\":\"unsupported protocol version\",\"code\":3}" },
		{ "{\"v\":1}", "{\"ok\":false,\"error\":\"missing \\\"cmd\\\"\",\"code\":2}" },
		{ "{\"v\":1,\"cmd\":\"pin\"}",
		  "{\"ok\":false,\"error\":\"unknown command\",\"code\":4}" },
		{ "{\"v\":1,\"cmd\":\"p\\u0069ng\"}", ping },
		{ "[1]", "{\"ok\":false,\"error\":\"request is not a JSON object\",\"code\":2}" },
		{ "", "{\"ok\":false,\"error\":\"request is not a JSON object\",\"code\":2}" },
		{ "{\"v\":1,\"cmd\":\"ping\"} x",
		  "{\"ok\":false,\"error\":\"request is not a JSON object\",\"code\":2}" },
		{ "{\"v\":1,\"cmd\":\"queue\"}",
		  "{\"ok\":false,\"error\":\"queue not available\",\"code\":8}" },
		{ "{\"v\":1,\"cmd\":\"show\",\"id\":\"0123\"}",
		  "{\"ok\":false,\"error\":\"\\\"id\\\" must be a queue id (16 hex digits)\",\"code\":2}" },
		{ "{\"v\":1,\"cmd\":\"hold\",\"id\":\"0000000000000001\"}",
		  "{\"ok\":true,\"type\":1,\"ids\":[\"0000000000000001\"]}" },
		{ "{\"v\":1,\"cmd\":\"release\",\"id\":\"0000000000000001\"}",
		  "{\"ok\":true,\"type\":2,\"ids\":[\"0000000000000001\"]}" },
		{ "{\"v\":1,\"cmd\":\"hold\",\"id\":\"0000000000000002\"}",
		  "{\"ok\":false,\"error\":\"busy\",\"code\":9}" },
		{ "{\"v\":1,\"cmd\":\"bounce\",\"id\":\"00000000000000EE\"}",
		  "{\"ok\":false,\"error\":\"cannot hand the request on\",\"code\":8}" },
		{ "{\"v\":1,\"cmd\":\"hold\",\"id\":\"00000000000000FF\"}",
		  "{\"ok\":false,\"error\":\"no such message\",\"code\":1}" },
		{ "{\"v\":1,\"cmd\":\"hold\"}",
		  "{\"ok\":false,\"error\":\"\\\"id\\\" must be a queue id (16 hex digits)\",\"code\":2}" },
		{ "{\"v\":1,\"cmd\":\"hold\",\"all\":true}",
		  "{\"ok\":false,\"error\":\"\\\"id\\\" must be a queue id (16 hex digits)\",\"code\":2}" },
		{ "{\"v\":1,\"cmd\":\"delete\",\"id\":\"0000000000000001\"}",
		  "{\"ok\":true,\"type\":3,\"ids\":[\"0000000000000001\"]}" },
		{ "{\"v\":1,\"cmd\":\"delete\"}",
		  "{\"ok\":false,\"error\":\"\\\"id\\\" or \\\"all\\\":true required\",\"code\":2}" },
		{ "{\"v\":1,\"cmd\":\"delete\",\"all\":false}",
		  "{\"ok\":false,\"error\":\"\\\"all\\\" must be true\",\"code\":2}" },
		{ "{\"v\":1,\"cmd\":\"retry\",\"all\":true,\"filter\":{\"colour\":\"red\"}}",
		  "{\"ok\":false,\"error\":\"unknown filter key\",\"code\":2}" },
		{ "{\"v\":1,\"cmd\":\"retry\",\"all\":true,\"filter\":{\"older_than\":-1}}",
		  "{\"ok\":false,\"error\":\"filter \\\"older_than\\\" must be seconds >= 0\",\"code\":2}" },
		{ "{\"v\":1,\"cmd\":\"retry\",\"all\":true}",
		  "{\"ok\":false,\"error\":\"cannot read the queue\",\"code\":8}" },
		{ "{\"v\":1,\"cmd\":\"pause\"}", "{\"ok\":true,\"type\":6}" },
		{ "{\"v\":1,\"cmd\":\"pause\",\"domain\":\"Example.ORG\"}",
		  "{\"ok\":true,\"type\":6,\"domain\":\"example.org\"}" },
		{ "{\"v\":1,\"cmd\":\"resume\",\"domain\":\"\"}",
		  "{\"ok\":false,\"error\":\"\\\"domain\\\" must be a non-empty string\",\"code\":2}" },
		{ "{\"v\":1,\"cmd\":\"resume\",\"domain\":7}",
		  "{\"ok\":false,\"error\":\"\\\"domain\\\" must be a non-empty string\",\"code\":2}" },
		{ "{\"v\":1,\"cmd\":\"stats\"}", "{\"ok\":true,\"type\":8}" },
		{ "{\"v\":1,\"cmd\":\"reload\"}",
		  "{\"ok\":false,\"error\":\"not supported\",\"code\":5}" },
	};
	size_t n = sizeof(cases) / sizeof(cases[0]);
	char *all = NULL, *want = NULL;
	size_t alllen = 0, wantlen = 0;
	FILE *fa = open_memstream(&all, &alllen), *fw = open_memstream(&want, &wantlen);
	for (size_t i = 0; i < n; i++) {
		fprintf(fa, "%s\n", cases[i].req);
		fprintf(fw, "%s\n", cases[i].resp);
	}
	fclose(fa);
	fclose(fw);

	/* all requests in one write: answered in order on one connection */
	int fd = ctl_test_connect(t->path), eof;
	assert_int_equal(write_all(fd, all, alllen), 0);
	char *got = ctl_test_read(t, fd, (int)n, &eof);
	assert_false(eof);
	assert_string_equal(got, want);
	free(got);
	/* the hook saw every op request that parsed */
	assert_int_equal(t->op_calls, 9);
	assert_int_equal(t->last_type, CTL_OP_STATS);

	/* ctl_request_handle (ternctl's fallback) never hands anything on */
	const char *sync[][2] = {
		{ "{\"v\":1,\"cmd\":\"hold\",\"id\":\"0000000000000001\"}",
		  "{\"ok\":false,\"error\":\"not supported\",\"code\":5}" },
		{ "{\"v\":1,\"cmd\":\"pause\"}",
		  "{\"ok\":false,\"error\":\"not supported\",\"code\":5}" },
		{ "{\"v\":1,\"cmd\":\"stats\"}",
		  "{\"ok\":false,\"error\":\"queue not available\",\"code\":8}" },
		{ "{\"v\":1,\"cmd\":\"v\"}",
		  "{\"ok\":false,\"error\":\"unknown command\",\"code\":4}" },
	};
	int calls = t->op_calls;
	for (size_t i = 0; i < sizeof(sync) / sizeof(sync[0]); i++) {
		struct json_writer w;
		size_t len;
		json_writer_init(&w);
		struct ctl_stream *st = NULL;
		(void)ctl_request_handle(NULL, &ctl_test_hooks, sync[i][0],
		    strlen(sync[i][0]), &w, &st);
		assert_null(st);
		char *out = json_writer_finish(&w, &len);
		assert_string_equal(out, sync[i][1]);
		free(out);
	}
	assert_int_equal(t->op_calls, calls);
	close(fd);
	free(all);
	free(want);
}

static void
test_ctl_line_too_long(void **state)
{
	struct ctl_test *t = *state;
	int fd = ctl_test_connect(t->path), eof;
	size_t len = CTL_LINE_MAX + 10;
	char *big = malloc(len);
	memset(big, 'x', len);

	/* a line of exactly CTL_LINE_MAX bytes with its LF is still read */
	size_t ok = CTL_LINE_MAX - 1;
	char *req = malloc(ok + 1);
	memset(req, ' ', ok);
	memcpy(req, "{\"v\":1,\"cmd\":\"reload\"}", 22);
	req[ok] = '\n';
	assert_int_equal(write_all(fd, req, ok + 1), 0);
	char *got = ctl_test_read(t, fd, 1, &eof);
	assert_string_equal(got, "{\"ok\":false,\"error\":\"not supported\",\"code\":5}\n");
	free(got);
	free(req);

	/* one byte more: an error, then the server closes */
	(void)write_all(fd, big, len);
	got = ctl_test_read(t, fd, 2, &eof);
	assert_string_equal(got,
	    "{\"ok\":false,\"error\":\"request line too long\",\"code\":7}\n");
	free(got);
	got = ctl_test_read(t, fd, 1, &eof);
	assert_true(eof);
	free(got);
	free(big);
	close(fd);
}

static void
test_ctl_socket_file(void **state)
{
	struct ctl_test *t = *state;
	struct event_base *b2 = event_base_new();
	char err[256], other[256];
	struct stat st;

	/* mode 0660 */
	assert_int_equal(lstat(t->path, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 0777, 0660);

	/* a live server is not stolen from */
	assert_null(ctl_server_new(b2, t->path, NULL, NULL, (gid_t)-1, err, sizeof(err)));
	assert_non_null(strstr(err, "another server"));
	assert_int_equal(lstat(t->path, &st), 0);

	/* a regular file is not removed */
	ctl_test_path(other, sizeof(other), "ctl.file");
	FILE *f = fopen(other, "w");
	fclose(f);
	assert_null(ctl_server_new(b2, other, NULL, NULL, (gid_t)-1, err, sizeof(err)));
	assert_non_null(strstr(err, "not a socket"));
	unlink(other);

	/* a stale socket (nobody listening) is replaced; free unlinks it */
	ctl_test_path(other, sizeof(other), "ctl.stale");
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	strcpy(sun.sun_path, other);
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	close(fd);
	struct ctl_server *s2 = ctl_server_new(b2, other, NULL, NULL, (gid_t)-1, err,
	    sizeof(err));
	assert_non_null(s2);
	fd = ctl_test_connect(other);
	close(fd);
	ctl_server_free(s2);
	assert_int_equal(lstat(other, &st), -1);
	assert_int_equal(errno, ENOENT);

	/* a path that does not fit sun_path */
	char longp[200];
	memset(longp, 'a', sizeof(longp) - 1);
	longp[sizeof(longp) - 1] = '\0';
	assert_null(ctl_server_new(b2, longp, NULL, NULL, (gid_t)-1, err, sizeof(err)));
	event_base_free(b2);
}

/* An answer given later holds the next request; one for a gone client is dropped. */
static void
test_ctl_answer_later(void **state)
{
	struct ctl_test *t = *state;
	struct json_writer w;
	int fd = ctl_test_connect(t->path), eof;
	const char *two = "{\"v\":1,\"cmd\":\"hold\",\"id\":\"0000000000000005\"}\n"
	    "{\"v\":1,\"cmd\":\"ping\"}\n";
	size_t first = (size_t)(strchr(two, '\n') - two) + 1;

	t->keep_next = 1;
	assert_int_equal(write_all(fd, two, strlen(two)), 0);
	char *got = ctl_test_read(t, fd, 1, &eof);
	assert_string_equal(got, "");           /* the ping waits its turn */
	free(got);
	assert_non_null(t->kept);
	assert_int_equal(t->last_single, 1);
	assert_true(t->last_id == 5);
	json_writer_init(&w);
	json_obj_open(&w);
	json_key(&w, "ok");
	json_put_bool(&w, 1);
	json_obj_close(&w);
	ctl_op_reply(t->kept, &w);
	t->kept = NULL;
	got = ctl_test_read(t, fd, 2, &eof);
	char want[256];
	snprintf(want, sizeof(want), "{\"ok\":true}\n{\"ok\":true,\"version\":2,"
	    "\"pid\":%d}\n", (int)getpid());
	assert_string_equal(got, want);
	free(got);

	/* half-close while waiting: the answer still comes, then EOF */
	t->keep_next = 1;
	assert_int_equal(write_all(fd, two, first), 0);
	shutdown(fd, SHUT_WR);
	got = ctl_test_read(t, fd, 1, &eof);
	assert_string_equal(got, "");
	free(got);
	assert_non_null(t->kept);
	ctl_op_fail(t->kept, CTL_E_STATE, "later");
	t->kept = NULL;
	got = ctl_test_read(t, fd, 1, &eof);
	assert_string_equal(got, "{\"ok\":false,\"error\":\"later\",\"code\":9}\n");
	free(got);
	got = ctl_test_read(t, fd, 1, &eof);
	assert_true(eof);
	free(got);
	close(fd);

	/* the client leaves before the answer: dropped, nothing breaks */
	fd = ctl_test_connect(t->path);
	t->keep_next = 1;
	assert_int_equal(write_all(fd, two, first), 0);
	got = ctl_test_read(t, fd, 1, &eof);
	free(got);
	assert_non_null(t->kept);
	close(fd);
	for (int i = 0; i < 20; i++)
		event_base_loop(t->base, EVLOOP_NONBLOCK);
	ctl_op_fail(t->kept, CTL_E_STATE, "nobody listens");
	t->kept = NULL;
	for (int i = 0; i < 20; i++)
		event_base_loop(t->base, EVLOOP_NONBLOCK);

	/* an op outliving the server: answered into the void at the end */
	fd = ctl_test_connect(t->path);
	t->keep_next = 1;
	assert_int_equal(write_all(fd, two, first), 0);
	got = ctl_test_read(t, fd, 1, &eof);
	free(got);
	close(fd);
	assert_non_null(t->kept);
	ctl_server_free(t->srv);
	t->srv = NULL;
	ctl_op_fail(t->kept, CTL_E_INTERNAL, "too late");
	t->kept = NULL;
}

static struct envelope *
ctl_test_env(const char *sender, uint32_t flags, int64_t arrival,
    const char *r1, int s1, const char *r2, int s2)
{
	struct envelope *e = envelope_new();
	e->sender = strdup(sender);
	e->flags = flags;
	e->arrival = arrival;
	e->rcpts = calloc(2, sizeof(*e->rcpts));
	e->rcpts[0].addr = strdup(r1);
	e->rcpts[0].state = (uint8_t)s1;
	e->rcpts[1].addr = strdup(r2);
	e->rcpts[1].state = (uint8_t)s2;
	e->nrcpt = 2;
	return e;
}

static void
test_ctl_filter(void **state)
{
	struct envelope *a = ctl_test_env("Alice@Sender.test", 0, 1000,
	    "bob@example.com", RCPT_PENDING, "erin@Example.ORG", RCPT_SENT);
	struct envelope *h = ctl_test_env("", ENV_F_HOLD, 5000,
	    "x@example.org", RCPT_PENDING, "y@example.net", RCPT_DELETED);
	const struct {
		const char *filter;
		int parse_ok, match_a, match_h;
	} cases[] = {
		{ "{}", 1, 1, 1 },
		{ "{\"from\":\"alice\"}", 1, 1, 0 },
		{ "{\"from\":\"SENDER.TEST\"}", 1, 1, 0 },
		{ "{\"from\":\"\"}", 1, 1, 1 },
		{ "{\"to\":\"bob@\"}", 1, 1, 0 },
		{ "{\"to\":\"erin\"}", 1, 0, 0 },       /* sent: not pending */
		{ "{\"domain\":\"EXAMPLE.com\"}", 1, 1, 0 },
		{ "{\"domain\":\"example.org\"}", 1, 0, 1 },
		{ "{\"domain\":\"example\"}", 1, 0, 0 },   /* whole domain */
		{ "{\"domain\":\"example.net\"}", 1, 0, 0 },  /* deleted */
		{ "{\"held\":true}", 1, 0, 1 },
		{ "{\"held\":false}", 1, 1, 0 },
		{ "{\"older_than\":0}", 1, 1, 1 },
		{ "{\"older_than\":5000}", 1, 1, 0 },        /* now = 6000 */
		{ "{\"older_than\":1000}", 1, 1, 1 },
		{ "{\"from\":\"alice\",\"held\":true}", 1, 0, 0 },
		{ "{\"to\":\"x@\",\"domain\":\"example.org\",\"held\":true}", 1, 0, 1 },
		{ "{\"held\":1}", 0, 0, 0 },
		{ "{\"older_than\":-5}", 0, 0, 0 },
		{ "{\"older_than\":\"1h\"}", 0, 0, 0 },
		{ "{\"from\":7}", 0, 0, 0 },
		{ "{\"from\":\"a\\u0000b\"}", 0, 0, 0 },
		{ "{\"size\":1}", 0, 0, 0 },
		{ "[]", 0, 0, 0 },
	};
	char longf[400];
	snprintf(longf, sizeof(longf), "{\"to\":\"%0300d\"}", 0);

	for (size_t i = 0; i <= sizeof(cases) / sizeof(cases[0]); i++) {
		const char *p = i < sizeof(cases) / sizeof(cases[0]) ?
		    cases[i].filter : longf;
		struct json_tok toks[32];
		struct ctl_filter f;
		const char *err = NULL;
		size_t used;
		assert_int_equal(json_parse(p, strlen(p), toks, 32, 8, &used), JSON_OK);
		int rc = ctl_filter_parse(p, toks, 0, &f, &err);
		if (i == sizeof(cases) / sizeof(cases[0])) {
			assert_int_equal(rc, -1);   /* over CTL_FILTER_STR */
			break;
		}
		if (!cases[i].parse_ok) {
			assert_int_equal(rc, -1);
			assert_non_null(err);
			continue;
		}
		assert_int_equal(rc, 0);
		assert_int_equal(ctl_filter_match(&f, a, 6000), cases[i].match_a);
		assert_int_equal(ctl_filter_match(&f, h, 6000), cases[i].match_h);
	}
	envelope_free(a);
	envelope_free(h);
}

/* "older_than" against any arrival a queue record may carry (no overflow) */
static void
test_ctl_filter_age_extremes(void **state)
{
	const struct {
		int64_t arrival, now, older_than;
		int match;
	} cases[] = {
		{ INT64_MIN, 6000, 0, 1 },
		{ INT64_MIN, 6000, INT64_MAX, 1 },
		{ INT64_MIN, INT64_MAX, INT64_MAX, 1 },
		{ INT64_MAX, 6000, 0, 0 },              /* in the future */
		{ INT64_MAX, INT64_MAX, 0, 1 },
		{ INT64_MAX, INT64_MAX, 1, 0 },
		{ 6000, 6000, 0, 1 },
		{ 6000, 6000, 1, 0 },
		{ 6001, 6000, 0, 0 },
		{ -1, 0, 1, 1 },
		{ -1, 0, 2, 0 },
		{ 0, INT64_MAX, INT64_MAX, 1 },
		{ 1, INT64_MAX, INT64_MAX, 0 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct envelope *e = ctl_test_env("a@b", 0, cases[i].arrival,
		    "c@d", RCPT_PENDING, "e@f", RCPT_PENDING);
		struct ctl_filter f;
		ctl_filter_init(&f);
		f.older_than = cases[i].older_than;
		assert_int_equal(ctl_filter_match(&f, e, cases[i].now), cases[i].match);
		envelope_free(e);
	}
}

/* ---- listings in pages (ctl_stream_page) on a real queue ---- */

struct ctl_test_commits {
	size_t done, ok;
};

static void
ctl_test_commit_cb(struct tq_msg *m, void *arg)
{
	struct ctl_test_commits *c = arg;

	if (m->type == TQ_COMMIT_DONE) {
		c->done++;
		c->ok += ((struct queue_commit_done *)m)->status == Q_OK;
	}
	free(m);
}

/* Queue n messages of nrcpt recipients each (committed, indexed). */
static void
ctl_test_fill(struct queue *q, size_t n, size_t nrcpt)
{
	struct event_base *b = event_base_new();
	struct ctl_test_commits c = { 0 };
	struct tq *tq = tq_new(b, ctl_test_commit_cb, &c);
	char rcpt[128];

	for (size_t i = 0; i < n; i++) {
		struct envelope *e = envelope_new();
		struct spool *sp = spool_new(q);
		e->sender = strdup("s@example.org");
		for (size_t k = 0; k < nrcpt; k++) {
			snprintf(rcpt, sizeof(rcpt), "rcpt%zu.%zu.padpadpadpadpadpad@"
			    "d%zu.example", i, k, k % 3);
			envelope_add_rcpt(e, rcpt, NULL, 0);
		}
		assert_int_equal(spool_write(sp, "x\r\n", 3), 0);
		queue_commit_submit(q, e, sp, tq, i);
	}
	uint64_t end = now_mono_us() + 20000000u;
	while (c.done < n && now_mono_us() < end)
		event_base_loop(b, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	assert_int_equal(c.ok, n);
	tq_free(tq);
	event_base_free(b);
}

/*
 * Run the listing request req to its end: the ids of its rows (in *ids,
 * at most max), and checks on every page: rows are single-line ENV
 * objects, a page is at most CTL_PAGE_ROWS rows and ends near
 * CTL_PAGE_BYTES, the trailer comes once, last. Returns the row count;
 * *next gets next_after ("" for null).
 */
static size_t
ctl_test_list(struct queue *q, const char *req, uint64_t *ids, size_t max,
    char *next, size_t maxrow)
{
	struct json_writer w;
	struct ctl_stream *st = NULL;
	struct json_tok toks[64];
	size_t used, rows = 0, len;
	char *hdr;
	int done = 0;

	json_writer_init(&w);
	assert_int_equal(ctl_request_handle(q, NULL, req, strlen(req), &w, &st),
	    0);
	hdr = json_writer_finish(&w, &len);
	assert_string_equal(hdr, "{\"ok\":true,\"stream\":\"messages\"}");
	free(hdr);
	assert_non_null(st);
	for (int pages = 0; !done; pages++) {
		struct buf b = { 0 };
		assert_true(pages < 10000);
		done = ctl_stream_page(st, q, &b);
		assert_int_equal(b.err, 0);
		assert_true(b.len < CTL_PAGE_BYTES + maxrow);
		size_t nrows = 0;
		for (char *p = b.p, *nl; p != NULL && p < b.p + b.len; p = nl + 1) {
			nl = memchr(p, '\n', (size_t)(b.p + b.len - p));
			assert_non_null(nl);
			long i = -1;
			if (json_parse(p, (size_t)(nl - p), toks, 64, JSON_MAX_DEPTH,
			    &used) != JSON_OK) {
				/* a row with many recipients: more tokens */
				assert_int_equal(json_parse(p, (size_t)(nl - p), NULL, 0,
				    JSON_MAX_DEPTH, &used), JSON_OK);
				assert_true(memcmp(p, "{\"id\":\"", 7) == 0);
				char qid[QID_STRLEN + 1];
				memcpy(qid, p + 7, QID_STRLEN);
				qid[QID_STRLEN] = '\0';
				assert_int_equal(qid_parse(qid, &ids[rows]), 0);
			} else if ((i = json_obj_find(p, toks, 0, "end")) >= 0) {
				assert_true(done && nl + 1 == b.p + b.len);
				long c = json_obj_find(p, toks, 0, "count");
				long n = json_obj_find(p, toks, 0, "next_after");
				assert_true(c >= 0 && n >= 0);
				assert_int_equal(toks[c].num, (int64_t)rows);
				next[0] = '\0';
				if (toks[n].type == JSON_STRING)
					json_str_decode(p, &toks[n], next, QID_STRLEN + 1);
				continue;
			} else {
				long id = json_obj_find(p, toks, 0, "id");
				char qid[QID_STRLEN + 1];
				assert_true(id >= 0);
				json_str_decode(p, &toks[id], qid, sizeof(qid));
				assert_int_equal(qid_parse(qid, &ids[rows]), 0);
			}
			if (rows > 0)
				assert_true(ids[rows] > ids[rows - 1]);
			assert_true(++rows <= max);
			nrows++;
		}
		assert_true(nrows <= CTL_PAGE_ROWS);
		buf_free(&b);
	}
	/* done stays done, adding nothing */
	struct buf b = { 0 };
	assert_int_equal(ctl_stream_page(st, q, &b), 1);
	assert_int_equal(b.len, 0);
	ctl_stream_free(st);
	return rows;
}

static void
test_ctl_stream_pages(void **state)
{
	char dir[256], req[256], cmd[300], next[QID_STRLEN + 1];
	const char *tmp = getenv("TERN_TEST_TMPDIR");
	struct queue_opts o = { .segment_size = 4 << 20,
	    .spool_memory = 256 << 10, .spool_budget = 64 << 20 };
	struct queue *q = NULL;
	char err[256];
	size_t n = CTL_PAGE_ROWS * 2 + 7;
	uint64_t *all = calloc(n + 100, sizeof(*all));
	uint64_t *page = calloc(n + 100, sizeof(*page));

	snprintf(dir, sizeof(dir), "%s/ctlq-XXXXXX", tmp ? tmp : "/tmp");
	assert_non_null(mkdtemp(dir));
	o.dir = dir;
	if (queue_open(&o, &q, err, sizeof(err)) < 0)
		fail_msg("queue_open: %s", err);
	ctl_test_fill(q, n, 1);
	ctl_test_fill(q, 40, 150);              /* rows of ~20 KB */

	/* the whole listing: pages of at most CTL_PAGE_ROWS, or cut by size */
	size_t total = ctl_test_list(q, "{\"v\":2,\"cmd\":\"queue\"}", all,
	    n + 100, next, 64 * 1024);
	assert_int_equal(total, n + 40);
	assert_string_equal(next, "");

	/* pages of 100 join to the same ids; next_after is the last id */
	size_t got = 0;
	char after[QID_STRLEN + 1] = "";
	for (int i = 0; i < 100; i++) {
		if (after[0] == '\0')
			snprintf(req, sizeof(req), "{\"v\":2,\"cmd\":\"queue\","
			    "\"limit\":100}");
		else
			snprintf(req, sizeof(req), "{\"v\":2,\"cmd\":\"queue\","
			    "\"limit\":100,\"after\":\"%s\"}", after);
		size_t k = ctl_test_list(q, req, page + got, n + 100 - got, next,
		    64 * 1024);
		assert_true(k <= 100);
		got += k;
		if (next[0] == '\0')
			break;
		assert_int_equal(k, 100);
		char last[QID_STRLEN + 1];
		qid_format(page[got - 1], last);
		assert_string_equal(next, last);
		memcpy(after, next, sizeof(after));
	}
	assert_int_equal(got, total);
	assert_memory_equal(page, all, total * sizeof(*all));

	/* a filter that matches nothing: the trailer alone */
	assert_int_equal(ctl_test_list(q, "{\"v\":2,\"cmd\":\"queue\","
	    "\"filter\":{\"held\":true}}", page, 1, next, 0), 0);
	queue_close(q);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
	free(all);
	free(page);
}

int
main(void)
{
	signal(SIGPIPE, SIG_IGN);       /* as ternd: a gone client is EPIPE */
	evthread_use_pthreads();        /* as ternd: the server has its thread */
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ctl_requests, ctl_test_setup,
		    ctl_test_teardown),
		cmocka_unit_test_setup_teardown(test_ctl_line_too_long, ctl_test_setup,
		    ctl_test_teardown),
		cmocka_unit_test_setup_teardown(test_ctl_answer_later, ctl_test_setup,
		    ctl_test_teardown),
		cmocka_unit_test(test_ctl_filter),
		cmocka_unit_test(test_ctl_stream_pages),
		cmocka_unit_test(test_ctl_filter_age_extremes),
		cmocka_unit_test_setup_teardown(test_ctl_socket_file, ctl_test_setup,
		    ctl_test_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
