/*
 * test_ctl.c - the control server over a real UNIX socket, without a queue:
 * protocol version, command table, hooks, errors, line limit, stale socket
 * handling. (Queue commands are covered end to end by
 * tests/integration/test_ternctl.py.)
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <cmocka.h>

#include <event2/event.h>

#include "tern/ctl.h"
#include "tern/json.h"
#include "tern/util.h"

struct ctl_test {
	struct event_base *base;
	struct ctl_server *srv;
	char path[256];
	uint64_t hold_id;
	int hold_on, hold_calls;
};

static int
ctl_test_hold(void *arg, uint64_t id, int on)
{
	struct ctl_test *t = arg;
	t->hold_id = id;
	t->hold_on = on;
	t->hold_calls++;
	return id == 1 ? 0 : id == 2 ? -1 : 1;
}

static struct ctl_hooks ctl_test_hooks = { .hold = ctl_test_hold };

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
	snprintf(ping, sizeof(ping), "{\"ok\":true,\"version\":1,\"pid\":%d}", (int)getpid());
	const struct {
		const char *req;
		const char *resp;
	} cases[] = {
		{ "{\"v\":1,\"cmd\":\"ping\"}", ping },
		{ " { \"cmd\" : \"ping\" , \"v\" : 1 } \r", ping },
		{ "{\"v\":2,\"cmd\":\"ping\"}",
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
		{ "{\"v\":1,\"cmd\":\"hold\",\"id\":\"0000000000000001\"}", "{\"ok\":true}" },
		{ "{\"v\":1,\"cmd\":\"release\",\"id\":\"0000000000000001\"}", "{\"ok\":true}" },
		{ "{\"v\":1,\"cmd\":\"hold\",\"id\":\"0000000000000002\"}",
		  "{\"ok\":false,\"error\":\"failed\",\"code\":8}" },
		{ "{\"v\":1,\"cmd\":\"hold\",\"id\":\"00000000000000FF\"}",
		  "{\"ok\":false,\"error\":\"no such message\",\"code\":1}" },
		{ "{\"v\":1,\"cmd\":\"hold\"}",
		  "{\"ok\":false,\"error\":\"\\\"id\\\" must be a queue id (16 hex digits)\",\"code\":2}" },
		{ "{\"v\":1,\"cmd\":\"delete\",\"id\":\"0000000000000001\"}",
		  "{\"ok\":false,\"error\":\"not supported\",\"code\":5}" },
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
	/* the hooks saw the right calls: hold 1, release 1, hold 2, hold ff */
	assert_int_equal(t->hold_calls, 4);
	assert_true(t->hold_id == 0xff);
	assert_int_equal(t->hold_on, 1);

	/* the same answers from ctl_request_handle directly (ternctl's fallback) */
	for (size_t i = 0; i < n; i++) {
		struct json_writer w;
		size_t len;
		json_writer_init(&w);
		int code = ctl_request_handle(NULL, &ctl_test_hooks, cases[i].req,
		    strlen(cases[i].req), &w);
		char *out = json_writer_finish(&w, &len);
		/* the server strips one trailing CR, the function does not */
		if (strchr(cases[i].req, '\r') != NULL) {
			free(out);
			continue;
		}
		assert_string_equal(out, cases[i].resp);
		assert_int_equal(code == 0, strstr(cases[i].resp, "\"ok\":true") != NULL);
		free(out);
	}
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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ctl_requests, ctl_test_setup,
		    ctl_test_teardown),
		cmocka_unit_test_setup_teardown(test_ctl_line_too_long, ctl_test_setup,
		    ctl_test_teardown),
		cmocka_unit_test_setup_teardown(test_ctl_socket_file, ctl_test_setup,
		    ctl_test_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
