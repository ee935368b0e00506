/*
 * test_log.c - log lines as written to stderr, text and JSON
 * (log_set_json, log_json_line): format, fields broken out of key=value
 * text, escaping, UTF-8, truncation that keeps the JSON valid.
 *
 * stderr is redirected to a file under TERN_TEST_TMPDIR while a test logs,
 * and every JSON line is checked with tern's own strict parser (json.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <event2/event.h>

#include "tern/json.h"
#include "tern/log.h"
#include "tern/log_loop.h"

#define NTOKS 1024

/* ---- capturing stderr ---- */

static int cap_saved = -1;
static int cap_fd = -1;
static char cap_path[512];

static void
cap_begin(void)
{
	const char *dir = getenv("TERN_TEST_TMPDIR");

	snprintf(cap_path, sizeof(cap_path), "%s/test_log.%ld.XXXXXX",
	    dir != NULL ? dir : "/tmp", (long)getpid());
	cap_fd = mkstemp(cap_path);
	assert_true(cap_fd >= 0);
	fflush(stderr);
	cap_saved = dup(STDERR_FILENO);
	assert_true(cap_saved >= 0);
	assert_true(dup2(cap_fd, STDERR_FILENO) == STDERR_FILENO);
}

/* Stop capturing; returns what was written (owned by the caller). */
static char *
cap_end(size_t *lenp)
{
	static char *buf;
	off_t len;

	assert_true(dup2(cap_saved, STDERR_FILENO) == STDERR_FILENO);
	close(cap_saved);
	len = lseek(cap_fd, 0, SEEK_END);
	assert_true(len >= 0);
	buf = malloc((size_t)len + 1);
	assert_non_null(buf);
	assert_int_equal(pread(cap_fd, buf, (size_t)len, 0), len);
	buf[len] = '\0';
	close(cap_fd);
	unlink(cap_path);
	*lenp = (size_t)len;
	return buf;
}

/* ---- checking JSON lines ---- */

struct jline {
	const char *p;
	size_t len;
	struct json_tok toks[NTOKS];
	size_t ntoks;
};

/* Parse one line (without its LF) strictly: one object, valid UTF-8. */
static void
jline_parse(struct jline *j, const char *p, size_t len)
{
	j->p = p;
	j->len = len;
	enum json_status st = json_parse(p, len, j->toks, NTOKS, JSON_MAX_DEPTH,
	    &j->ntoks);
	if (st != JSON_OK)
		fail_msg("not JSON (%s at %zu): %.*s", json_strerror(st), j->ntoks,
		    (int)len, p);
	assert_int_equal(j->toks[0].type, JSON_OBJECT);
	/* flat: every value is a string or a number (or the truncated flag) */
	for (size_t i = 2; i < j->ntoks; i += 2)
		assert_true(j->toks[i].type == JSON_STRING ||
		    j->toks[i].type == JSON_NUMBER || j->toks[i].type == JSON_TRUE);
}

/* The decoded string field key, in a static buffer; NULL when absent. */
static const char *
jline_str(const struct jline *j, const char *key)
{
	static char buf[20000];
	long i = json_obj_find(j->p, j->toks, 0, key);

	if (i < 0)
		return NULL;
	assert_int_equal(j->toks[i].type, JSON_STRING);
	assert_true(json_str_decode(j->p, &j->toks[i], buf, sizeof(buf)) >= 0);
	return buf;
}

/* A number field; fails when it is absent or not a number. */
static int64_t
jline_num(const struct jline *j, const char *key)
{
	long i = json_obj_find(j->p, j->toks, 0, key);

	if (i < 0)
		fail_msg("no field %s in %.*s", key, (int)j->len, j->p);
	assert_int_equal(j->toks[i].type, JSON_NUMBER);
	return j->toks[i].num;
}

/* How many times key occurs as a key of the root object. */
static int
jline_count(const struct jline *j, const char *key)
{
	int n = 0;
	size_t i = 1;

	for (size_t k = 0; k < j->toks[0].size; k++) {
		if (json_str_eq(j->p, &j->toks[i], key))
			n++;
		i = j->toks[i + 1].next;
	}
	return n;
}

static int
jline_truncated(const struct jline *j)
{
	long i = json_obj_find(j->p, j->toks, 0, "truncated");
	return i >= 0 && j->toks[i].type == JSON_TRUE;
}

static int
matches(const char *re, const char *s)
{
	regex_t rx;
	assert_int_equal(regcomp(&rx, re, REG_EXTENDED | REG_NOSUB), 0);
	int ok = regexec(&rx, s, 0, NULL, 0) == 0;
	regfree(&rx);
	return ok;
}

/* ---- tests ---- */

static void
test_text_lines(void **state)
{
	char re[256];
	size_t len;

	log_set_json(0);
	cap_begin();
	log_info("id=%s from=<%s> size=%d", "00ab", "a@b.example", 42);
	log_warnx("something odd count=%u", 3u);
	log_debug("not shown without -v");
	errno = ENOENT;
	log_warn("open %s", "/x");
	assert_int_equal(errno, ENOENT);                /* preserved */
	char *out = cap_end(&len);

	char *l1 = out, *l2 = strchr(l1, '\n');
	assert_non_null(l2);
	*l2++ = '\0';
	char *l3 = strchr(l2, '\n');
	assert_non_null(l3);
	*l3++ = '\0';
	char *rest = strchr(l3, '\n');
	assert_non_null(rest);
	*rest++ = '\0';
	assert_string_equal(rest, "");                  /* no debug line */

	snprintf(re, sizeof(re), "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:"
	    "[0-9]{2}\\.[0-9]{3}Z test_log\\[%ld\\]: ", (long)getpid());
	assert_true(matches(re, l1));
	assert_true(matches(re, l2));
	assert_non_null(strstr(l1, "]: id=00ab from=<a@b.example> size=42"));
	assert_non_null(strstr(l2, "]: warning: something odd count=3"));
	char want[256];
	snprintf(want, sizeof(want), "]: warning: open /x: %s", strerror(ENOENT));
	assert_non_null(strstr(l3, want));
	assert_null(strchr(l1, '{'));
	free(out);
}

static void
test_json_lines(void **state)
{
	struct jline j;
	size_t len;

	log_set_json(1);
	cap_begin();
	log_info("id=%s from=<%s> size=%d helo=\"%s\" proto=ESMTPS "
	    "msg=dup pid=7 id=again delay=0 empty= q=\"\"", "00ab", "a@b.example",
	    42, "mail x.example");
	errno = EACCES;
	log_warn("cannot open path=%s", "/var/spool/tern");
	log_set_json(0);
	char *out = cap_end(&len);

	char *l1 = out, *l2 = strchr(out, '\n');
	assert_non_null(l2);
	l2++;
	char *end = strchr(l2, '\n');
	assert_non_null(end);
	assert_int_equal(end[1], '\0');                 /* two lines exactly */

	jline_parse(&j, l1, (size_t)(l2 - 1 - l1));
	assert_true(matches("^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:"
	    "[0-9]{2}\\.[0-9]{3}Z$", jline_str(&j, "ts")));
	assert_string_equal(jline_str(&j, "level"), "info");
	assert_string_equal(jline_str(&j, "prog"), "test_log");
	assert_int_equal(jline_num(&j, "pid"), getpid());
	assert_string_equal(jline_str(&j, "msg"), "id=00ab from=<a@b.example> "
	    "size=42 helo=\"mail x.example\" proto=ESMTPS msg=dup pid=7 id=again "
	    "delay=0 empty= q=\"\"");
	/* broken out, id first and once; a leading zero keeps it a string */
	assert_string_equal(jline_str(&j, "id"), "00ab");
	assert_int_equal(jline_count(&j, "id"), 1);
	assert_string_equal(jline_str(&j, "from"), "<a@b.example>");
	assert_int_equal(jline_num(&j, "size"), 42);
	assert_string_equal(jline_str(&j, "helo"), "mail x.example");
	assert_string_equal(jline_str(&j, "proto"), "ESMTPS");
	assert_int_equal(jline_num(&j, "delay"), 0);
	assert_string_equal(jline_str(&j, "empty"), "");
	assert_string_equal(jline_str(&j, "q"), "");
	/* the fixed fields win over the message's own */
	assert_int_equal(jline_count(&j, "msg"), 1);
	assert_int_equal(jline_count(&j, "pid"), 1);
	assert_false(jline_truncated(&j));
	/* keys come in message order after the fixed ones */
	assert_true(strstr(l1, "\"id\":") > strstr(l1, "\"msg\":"));
	assert_true(strstr(l1, "\"size\":") > strstr(l1, "\"from\":"));

	jline_parse(&j, l2, (size_t)(end - l2));
	assert_string_equal(jline_str(&j, "level"), "warning");
	char want[256];
	snprintf(want, sizeof(want), "cannot open path=/var/spool/tern: %s",
	    strerror(EACCES));
	assert_string_equal(jline_str(&j, "msg"), want);
	snprintf(want, sizeof(want), "/var/spool/tern:");
	assert_string_equal(jline_str(&j, "path"), want);
	free(out);
}

/* Values: which become numbers, which strings (table). */
static void
test_json_values(void **state)
{
	static const struct {
		const char *msg;
		int numeric;          /* 1: number, 0: string, -1: no field */
		const char *str;      /* the string, or the number in decimal */
	} cases[] = {
		{ "n=0", 1, "0" },
		{ "n=7", 1, "7" },
		{ "n=123456789012345678", 1, "123456789012345678" },
		{ "n=1234567890123456789", 0, "1234567890123456789" },
		{ "n=007", 0, "007" },
		{ "n=-1", 0, "-1" },
		{ "n=1.5", 0, "1.5" },
		{ "n=12k", 0, "12k" },
		{ "n=\"42\"", 0, "42" },                    /* quoted: a string */
		{ "n=\"a b\" m=1", 0, "a b" },
		{ "n=\"a\"b\" c", 0, "a\"b" },              /* ends at '" ' */
		{ "n=\"open", 0, "\"open" },                /* unterminated */
		{ "x n=1", 1, "1" },
		{ "xn=1", -1, NULL },
		{ "1n=1", -1, NULL },                       /* key starts with a letter */
		{ "=1", -1, NULL },
		{ "-n=1", -1, NULL },
		{ "a:n=1", -1, NULL },
		{ "n.x=1", -1, NULL },
		{ "ab n=x\\x0d\\x0ay", 0, "x\\x0d\\x0ay" }, /* log_escape output */
		{ "n=<a@b> ", 0, "<a@b>" },
		{ "n=a=b", 0, "a=b" },
	};
	char line[4096];
	struct jline j;

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		size_t n = log_json_line(line, sizeof(line), "T", "info", "p", 1,
		    cases[c].msg);
		assert_true(n > 0 && line[n - 1] == '\n' && line[n] == '\0');
		jline_parse(&j, line, n - 1);
		assert_string_equal(jline_str(&j, "msg"), cases[c].msg);
		long i = json_obj_find(j.p, j.toks, 0, "n");
		if (cases[c].numeric < 0) {
			if (i >= 0)
				fail_msg("case %zu: unexpected n in %s", c, line);
			continue;
		}
		if (i < 0)
			fail_msg("case %zu: no n in %s", c, line);
		if (cases[c].numeric) {
			char dec[32];
			assert_int_equal(j.toks[i].type, JSON_NUMBER);
			snprintf(dec, sizeof(dec), "%lld", (long long)j.toks[i].num);
			assert_string_equal(dec, cases[c].str);
		} else
			assert_string_equal(jline_str(&j, "n"), cases[c].str);
	}
	/* "n.x" is a key of its own */
	size_t n = log_json_line(line, sizeof(line), "T", "info", "p", 1,
	    "n.x=1 n-y=2 n_z=3");
	jline_parse(&j, line, n - 1);
	assert_int_equal(jline_num(&j, "n.x"), 1);
	assert_int_equal(jline_num(&j, "n-y"), 2);
	assert_int_equal(jline_num(&j, "n_z"), 3);
}

/* Quotes, backslashes, control bytes, DEL, UTF-8 and bytes that are not. */
static void
test_json_escaping(void **state)
{
	static const struct {
		const char *in;
		const char *decoded;  /* msg after JSON decoding */
		const char *raw;      /* must appear in the line as written */
	} cases[] = {
		{ "say \"hi\"", "say \"hi\"", "say \\\"hi\\\"" },
		{ "a\\b", "a\\b", "a\\\\b" },
		{ "a\nb\rc\td", "a\nb\rc\td", "a\\nb\\rc\\td" },
		{ "\x01\x1f\x7f", "\x01\x1f\x7f", "\\u0001\\u001f\\u007f" },
		{ "\b\f", "\b\f", "\\b\\f" },
		{ "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7",
		  "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7",
		  "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x93\xa7" },
		/* not UTF-8: each byte as its Latin-1 code point */
		{ "\xff", "\xc3\xbf", "\\u00ff" },
		{ "\xc3", "\xc3\x83", "\\u00c3" },                /* cut sequence */
		{ "\xc0\xaf", "\xc3\x80\xc2\xaf", "\\u00c0\\u00af" }, /* overlong */
		{ "\xed\xa0\x80", "\xc3\xad\xc2\xa0\xc2\x80",
		  "\\u00ed\\u00a0\\u0080" },                      /* surrogate */
		{ "\xf4\x90\x80\x80", "\xc3\xb4\xc2\x90\xc2\x80\xc2\x80",
		  "\\u00f4\\u0090" },                             /* > U+10FFFF */
		{ "k=\"x\\\"y\"", "k=\"x\\\"y\"", "\"k\":\"x\\\\\\\"y\"" },
	};
	char line[4096];
	struct jline j;

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		size_t n = log_json_line(line, sizeof(line), "T", "info", "p", 1,
		    cases[c].in);
		assert_true(n > 0);
		jline_parse(&j, line, n - 1);
		assert_string_equal(jline_str(&j, "msg"), cases[c].decoded);
		if (strstr(line, cases[c].raw) == NULL)
			fail_msg("case %zu: %s not in %s", c, cases[c].raw, line);
		/* no raw control byte anywhere but the final LF */
		for (size_t i = 0; i + 1 < n; i++)
			assert_true((unsigned char)line[i] >= 0x20 &&
			    line[i] != 0x7f);
	}
	/* the fixed fields are escaped too */
	size_t n = log_json_line(line, sizeof(line), "T\"", "info", "p\\\n", 1,
	    "m");
	jline_parse(&j, line, n - 1);
	assert_string_equal(jline_str(&j, "ts"), "T\"");
	assert_string_equal(jline_str(&j, "prog"), "p\\\n");
}

/*
 * Every buffer size from "too small" up to "fits" gives either nothing or
 * a valid, LF-ended object that says truncated exactly when it is shorter
 * than the full line, with a msg that is a prefix of the real one.
 */
static void
test_json_truncation(void **state)
{
	static const char *const msgs[] = {
		"id=0011 from=<a@b.example> to=<c@d.example> size=1234 "
		    "status=deferred why=\"connection refused\"",
		"\x01\x02\x03\"\\ caf\xc3\xa9 \xe2\x82\xac\xf0\x9f\x93\xa7 \xff k=\"\x01\"",
		"no pairs at all in this one, just words",
	};
	char full[4096], line[4096], prefix[4096];
	struct jline j;

	for (size_t m = 0; m < sizeof(msgs) / sizeof(msgs[0]); m++) {
		size_t flen = log_json_line(full, sizeof(full), "2026-11-21T16:40:"
		    "48.123Z", "info", "ternd", 123, msgs[m]);
		assert_true(flen > 0);
		jline_parse(&j, full, flen - 1);
		assert_false(jline_truncated(&j));
		int saw_empty = 0, saw_cut = 0;
		int saw_full = 0;
		for (size_t cap = 0; cap <= flen + 20; cap++) {
			memset(line, 'X', sizeof(line));
			size_t n = log_json_line(line, cap, "2026-11-21T16:40:48.123Z",
			    "info", "ternd", 123, msgs[m]);
			if (cap > 0)
				assert_int_equal(line[n], '\0');
			assert_int_equal(line[cap], 'X');       /* no overrun */
			if (n == 0) {
				saw_empty = 1;
				continue;
			}
			assert_true(n < cap);
			assert_int_equal(line[n - 1], '\n');
			jline_parse(&j, line, n - 1);
			assert_string_equal(jline_str(&j, "ts"), "2026-11-21T16:40:48.123Z");
			assert_int_equal(jline_num(&j, "pid"), 123);
			if (!jline_truncated(&j)) {
				saw_full = 1;
				assert_int_equal(n, flen);
				assert_memory_equal(line, full, flen);
				assert_false(jline_truncated(&j));
				continue;
			}
			saw_cut = 1;
			assert_false(saw_full);                 /* more room, never less */
			/* msg is a prefix of the full decoded message */
			strcpy(prefix, jline_str(&j, "msg"));
			jline_parse(&j, full, flen - 1);
			const char *fullmsg = jline_str(&j, "msg");
			assert_memory_equal(prefix, fullmsg, strlen(prefix));
		}
		assert_true(saw_empty && saw_cut && saw_full);
		/*
		 * Room for the "truncated" marker is kept free while writing, so
		 * a whole line needs at most that much (17 bytes) beyond its own
		 * length and the NUL.
		 */
		assert_int_equal(log_json_line(line, flen + 18, "2026-11-21T16:40:"
		    "48.123Z", "info", "ternd", 123, msgs[m]), flen);
	}
}

/*
 * Through the logging path: a message at the size limit fits with its
 * fields; one whose escaping would blow up six-fold is cut, still valid.
 */
static void
test_json_long_line(void **state)
{
	char big[6000];
	struct jline j;
	size_t len;

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	memcpy(big, "id=1 v=", 7);
	log_set_json(1);
	cap_begin();
	log_info("%s", big);
	memset(big + 7, '\x01', sizeof(big) - 8);
	log_info("%s", big);
	log_set_json(0);
	char *out = cap_end(&len);

	char *l2 = strchr(out, '\n');
	assert_non_null(l2);
	l2++;
	jline_parse(&j, out, (size_t)(l2 - 1 - out));
	assert_false(jline_truncated(&j));
	assert_int_equal(jline_num(&j, "id"), 1);
	assert_int_equal(strlen(jline_str(&j, "msg")), 4095);  /* LOG_MSG_MAX */
	assert_int_equal(strlen(jline_str(&j, "v")), 4095 - 7);

	size_t n2 = len - (size_t)(l2 - out);
	assert_true(n2 < 16384);
	assert_int_equal(l2[n2 - 1], '\n');
	assert_null(memchr(l2, '\n', n2 - 1));
	jline_parse(&j, l2, n2 - 1);
	assert_true(jline_truncated(&j));
	const char *msg = jline_str(&j, "msg");
	assert_true(strlen(msg) > 2000);
	assert_memory_equal(msg, big, strlen(msg));
	free(out);

	/* many fields: at most LOG_JSON_MAX_FIELDS of them */
	char many[2048], line[8192];
	size_t o = 0;
	for (int i = 0; i < LOG_JSON_MAX_FIELDS + 10; i++)
		o += (size_t)snprintf(many + o, sizeof(many) - o, "k%d=%d ", i, i);
	size_t n = log_json_line(line, sizeof(line), "T", "info", "p", 1, many);
	jline_parse(&j, line, n - 1);
	assert_int_equal(j.toks[0].size, 5 + LOG_JSON_MAX_FIELDS);
	assert_int_equal(jline_num(&j, "k63"), 63);
	assert_int_equal(json_obj_find(j.p, j.toks, 0, "k64"), -1);
}

/*
 * A batch: info lines wait, a warning writes them and itself at once, the
 * end writes the rest; more than a batch holds goes out in whole lines, in
 * order.
 */
static void
test_batch(void **state)
{
	char *out, want[64];
	const char *p;
	size_t len;
	(void)state;

	log_set_json(0);
	cap_begin();
	log_batch_begin();
	log_info("batch one");
	log_info("batch two");
	assert_int_equal(lseek(cap_fd, 0, SEEK_END), 0);    /* waiting */
	log_warnx("batch three");
	assert_true(lseek(cap_fd, 0, SEEK_END) > 0);
	log_info("batch four");
	for (int i = 0; i < 200; i++)
		log_info("batch line %03d %s", i, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
	log_batch_end();
	log_info("batch after");                /* unbatched */
	out = cap_end(&len);
	p = out;
	assert_non_null(p = strstr(p, "batch one\n"));
	assert_non_null(p = strstr(p, "batch two\n"));
	assert_non_null(p = strstr(p, "warning: batch three\n"));
	assert_non_null(p = strstr(p, "batch four\n"));
	for (int i = 0; i < 200; i++) {
		snprintf(want, sizeof(want), "]: batch line %03d x", i);
		assert_non_null(p = strstr(p, want));
	}
	assert_non_null(strstr(p, "batch after\n"));
	free(out);
}

/* ---- a loop thread's lines, once per turn (log_loop.c) ---- */

static int turn_kicks;

static void
turn_kick(void)
{
	turn_kicks++;
}

static void
test_batch_turn(void **state)
{
	char *out;
	size_t len;
	(void)state;

	log_set_json(0);
	cap_begin();
	turn_kicks = 0;
	log_batch_turn(turn_kick);
	log_info("turn one");
	log_info("turn two");
	assert_int_equal(turn_kicks, 1);        /* once per empty batch */
	assert_int_equal(lseek(cap_fd, 0, SEEK_END), 0);
	log_batch_flush();
	off_t first = lseek(cap_fd, 0, SEEK_END);
	assert_true(first > 0);
	log_info("turn three");
	assert_int_equal(turn_kicks, 2);
	log_batch_begin();                      /* a batch inside: no change */
	log_batch_end();                        /* writes, keeps batching */
	assert_true(lseek(cap_fd, 0, SEEK_END) > first);
	log_info("turn four");
	assert_int_equal(turn_kicks, 3);
	off_t before = lseek(cap_fd, 0, SEEK_END);
	log_batch_turn(NULL);                   /* writes the rest, ends */
	assert_true(lseek(cap_fd, 0, SEEK_END) > before);
	log_info("turn after");                 /* unbatched, no kick */
	assert_int_equal(turn_kicks, 3);
	out = cap_end(&len);
	const char *p = out;
	assert_non_null(p = strstr(p, "turn one\n"));
	assert_non_null(p = strstr(p, "turn two\n"));
	assert_non_null(p = strstr(p, "turn three\n"));
	assert_non_null(p = strstr(p, "turn four\n"));
	assert_non_null(strstr(p, "turn after\n"));
	free(out);
}

static off_t loop_seen = -1;

/* A loop callback: its lines are not written while the turn goes on. */
static void
loop_logger_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	log_info("loop line one");
	log_info("loop line two");
	loop_seen = lseek(cap_fd, 0, SEEK_END);
}

static void
test_loop_turn(void **state)
{
	struct event_base *base = event_base_new();
	struct timeval now = { 0, 0 };
	char *out;
	size_t len;
	(void)state;

	assert_non_null(base);
	struct event *ev = evtimer_new(base, loop_logger_cb, NULL);
	assert_non_null(ev);
	log_set_json(1);
	cap_begin();
	assert_int_equal(log_loop_attach(base), 0);
	evtimer_add(ev, &now);
	assert_int_equal(event_base_loop(base, EVLOOP_ONCE), 0);
	assert_int_equal(loop_seen, 0);         /* held during the callback */
	off_t after = lseek(cap_fd, 0, SEEK_END);
	assert_true(after > 0);                 /* written by the turn's end */
	log_info("loop line three");            /* after the loop: held */
	assert_int_equal(lseek(cap_fd, 0, SEEK_END), after);
	log_loop_detach();                      /* the rest is written */
	assert_true(lseek(cap_fd, 0, SEEK_END) > after);
	out = cap_end(&len);
	log_set_json(0);
	const char *p = out;
	assert_non_null(p = strstr(p, "\"msg\":\"loop line one\""));
	assert_non_null(p = strstr(p, "\"msg\":\"loop line two\""));
	assert_non_null(strstr(p, "\"msg\":\"loop line three\""));
	free(out);
	event_free(ev);
	event_base_free(base);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_text_lines),
		cmocka_unit_test(test_batch),
		cmocka_unit_test(test_batch_turn),
		cmocka_unit_test(test_loop_turn),
		cmocka_unit_test(test_json_lines),
		cmocka_unit_test(test_json_values),
		cmocka_unit_test(test_json_escaping),
		cmocka_unit_test(test_json_truncation),
		cmocka_unit_test(test_json_long_line),
	};

	log_init("test_log", 0, 0);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
