/*
 * test_auth.c - smtpd/auth.c: yescrypt hash/verify, the constant-cost path
 * for unknown users (hash counter and time), the user database (set, list,
 * del, case folding, atomic replacement, a reader picking up changes
 * without a reload, missing and corrupt files, symlinks and extra links
 * refused by the writer), the failed-attempt throttle
 * with an injected clock, and the pool posting results to a real
 * event_base through a tq.
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
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "tern/auth.h"
#include "tern/tq.h"
#include "tern/util.h"

static char tmpdir[512];

static void
path_in_tmp(char *buf, size_t len, const char *name)
{
	snprintf(buf, len, "%s/%s", tmpdir, name);
}

static double
ms_since(const struct timespec *a)
{
	struct timespec b;
	clock_gettime(CLOCK_MONOTONIC, &b);
	return (double)(b.tv_sec - a->tv_sec) * 1e3 +
	    (double)(b.tv_nsec - a->tv_nsec) / 1e6;
}

static void
test_hash_verify(void **state)
{
	char h1[AUTH_HASH_MAX], h2[AUTH_HASH_MAX];
	uint64_t n0;

	assert_int_equal(auth_password_hash("s3cret pw", h1, sizeof(h1)), 0);
	assert_int_equal(auth_password_hash("s3cret pw", h2, sizeof(h2)), 0);
	assert_memory_equal(h1, "$y$", 3);
	assert_string_not_equal(h1, h2);              /* fresh salt each time */
	assert_int_equal(auth_password_verify("s3cret pw", h1), 1);
	assert_int_equal(auth_password_verify("s3cret pw", h2), 1);
	assert_int_equal(auth_password_verify("s3cret pW", h1), 0);
	assert_int_equal(auth_password_verify("s3cret p", h1), 0);
	assert_int_equal(auth_password_verify("s3cret pw ", h1), 0);
	/* too small an output buffer is an error, not a truncation */
	assert_int_equal(auth_password_hash("x", h2, 20), -1);

	/* Malformed stored hashes fail, and still cost exactly one hash. */
	static const char *bad[] = { "", "*", "!", "$x$nope", "$y$", "plain" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		n0 = auth_hash_count();
		assert_int_equal(auth_password_verify("s3cret pw", bad[i]), 0);
		assert_true(auth_hash_count() - n0 >= 1);
	}
}

static int
list_cb(const char *name, void *arg)
{
	char *acc = arg;
	strcat(acc, name);
	strcat(acc, ",");
	return 0;
}

static int
list_stop_cb(const char *name, void *arg)
{
	(*(int *)arg)++;
	return 1;
}

static void
list_users(struct auth_db *db, char *acc, size_t len, int want_n)
{
	char err[256];
	acc[0] = '\0';
	assert_int_equal(auth_user_list(db, list_cb, acc, err, sizeof(err)),
	    want_n);
}

static void
test_db_basic(void **state)
{
	char path[600], tmp[620], acc[256], err[256];
	struct auth_db *db;
	struct stat st;
	uint64_t n0;
	int calls = 0;

	path_in_tmp(path, sizeof(path), "auth_basic.db");
	unlink(path);
	db = auth_db_open(path, 1, err, sizeof(err));
	assert_non_null(db);
	list_users(db, acc, sizeof(acc), 0);
	assert_int_equal(auth_check(db, "alice", "pw"), AUTH_FAIL);

	assert_int_equal(auth_user_set(db, "Alice@Example.com", "pw-a", err,
	    sizeof(err)), 0);
	assert_int_equal(auth_user_set(db, "bob", "pw-b", err, sizeof(err)), 0);
	list_users(db, acc, sizeof(acc), 2);
	assert_string_equal(acc, "alice@example.com,bob,");
	assert_int_equal(auth_user_list(db, list_stop_cb, &calls, err,
	    sizeof(err)), 1);
	assert_int_equal(calls, 1);

	/* mode 0600, no temporary left behind */
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	assert_int_equal(stat(tmp, &st), -1);
	assert_int_equal(errno, ENOENT);

	assert_int_equal(auth_check(db, "alice@example.com", "pw-a"), AUTH_OK);
	assert_int_equal(auth_check(db, "ALICE@EXAMPLE.COM", "pw-a"), AUTH_OK);
	assert_int_equal(auth_check(db, "alice@example.com", "pw-b"), AUTH_FAIL);
	assert_int_equal(auth_check(db, "bob", "pw-b"), AUTH_OK);
	assert_int_equal(auth_check(db, "bob", "PW-B"), AUTH_FAIL);

	/* replace a password: the old one stops working */
	assert_int_equal(auth_user_set(db, "BOB", "new", err, sizeof(err)), 0);
	list_users(db, acc, sizeof(acc), 2);
	assert_int_equal(auth_check(db, "bob", "pw-b"), AUTH_FAIL);
	assert_int_equal(auth_check(db, "bob", "new"), AUTH_OK);

	/* invalid names and passwords are refused at set */
	assert_int_equal(auth_user_set(db, "a b", "x", err, sizeof(err)), -1);
	assert_int_equal(auth_user_set(db, "", "x", err, sizeof(err)), -1);
	assert_int_equal(auth_user_set(db, "a\x7f", "x", err, sizeof(err)), -1);
	assert_int_equal(auth_user_set(db, "\xc3\xa9", "x", err, sizeof(err)),
	    -1);
	assert_int_equal(auth_user_set(db, "carol", "", err, sizeof(err)), -1);
	{
		char longname[300], longpw[300];
		memset(longname, 'n', sizeof(longname));
		longname[256] = '\0';
		assert_int_equal(auth_user_set(db, longname, "x", err,
		    sizeof(err)), -1);
		longname[255] = '\0';
		assert_int_equal(auth_user_set(db, longname, "x", err,
		    sizeof(err)), 0);
		memset(longpw, 'p', sizeof(longpw));
		longpw[256] = '\0';
		assert_int_equal(auth_user_set(db, "carol", longpw, err,
		    sizeof(err)), -1);
		n0 = auth_hash_count();
		assert_int_equal(auth_check(db, "carol", longpw), AUTH_FAIL);
		assert_int_equal(auth_hash_count() - n0, 1);
		assert_int_equal(auth_user_del(db, longname, err, sizeof(err)),
		    0);
	}
	list_users(db, acc, sizeof(acc), 2);

	/* delete */
	assert_int_equal(auth_user_del(db, "Bob", err, sizeof(err)), 0);
	assert_int_equal(auth_user_del(db, "bob", err, sizeof(err)), 1);
	assert_int_equal(auth_user_del(db, "a b", err, sizeof(err)), 1);
	list_users(db, acc, sizeof(acc), 1);
	assert_string_equal(acc, "alice@example.com,");
	assert_int_equal(auth_check(db, "bob", "new"), AUTH_FAIL);
	auth_db_close(db);

	/* a read-only handle cannot write */
	db = auth_db_open(path, 0, err, sizeof(err));
	assert_non_null(db);
	assert_int_equal(auth_user_set(db, "x", "y", err, sizeof(err)), -1);
	assert_int_equal(auth_user_del(db, "alice@example.com", err,
	    sizeof(err)), -1);
	assert_int_equal(auth_check(db, "alice@example.com", "pw-a"), AUTH_OK);
	auth_db_close(db);
	auth_db_close(NULL);
	unlink(path);
}

/*
 * Unknown users, invalid names and wrong passwords all cost one hash, and
 * comparable time.
 */
static void
test_unknown_user_cost(void **state)
{
	static const struct {
		const char *user, *pass;
		enum auth_status want;
	} cases[] = {
		{ "dave", "right", AUTH_OK },
		{ "dave", "wrong", AUTH_FAIL },
		{ "nobody", "right", AUTH_FAIL },
		{ "no body", "right", AUTH_FAIL },        /* invalid name */
		{ "", "right", AUTH_FAIL },
		{ "dave", "", AUTH_FAIL },
	};
	char path[600], err[256];
	struct auth_db *db;
	double ms[sizeof(cases) / sizeof(cases[0])];
	size_t i;

	path_in_tmp(path, sizeof(path), "auth_cost.db");
	unlink(path);
	db = auth_db_open(path, 1, err, sizeof(err));
	assert_non_null(db);
	assert_int_equal(auth_user_set(db, "dave", "right", err, sizeof(err)),
	    0);
	(void)auth_check(db, "nobody", "warm-up");   /* dummy hash made */
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct timespec t0;
		uint64_t n0 = auth_hash_count();
		clock_gettime(CLOCK_MONOTONIC, &t0);
		assert_int_equal(auth_check(db, cases[i].user, cases[i].pass),
		    cases[i].want);
		ms[i] = ms_since(&t0);
		if (auth_hash_count() - n0 != 1)
			fail_msg("case %zu: %llu hashes, want 1", i,
			    (unsigned long long)(auth_hash_count() - n0));
	}
	/* yescrypt is slow by design: every path pays it. */
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (ms[i] < 2.0)
			fail_msg("case %zu took %.2f ms: no real hash?", i, ms[i]);
	auth_db_close(db);
	unlink(path);
}

/*
 * A correct password is remembered: the second check costs no hash. Wrong
 * passwords are never remembered, and a password change forgets at once.
 */
static void
test_verified_cache(void **state)
{
	char path[600], err[256];
	struct auth_db *db, *ro;
	uint64_t n0, h0;

	path_in_tmp(path, sizeof(path), "auth_cache.db");
	unlink(path);
	db = auth_db_open(path, 1, err, sizeof(err));
	assert_non_null(db);
	assert_int_equal(auth_user_set(db, "erin", "first", err, sizeof(err)), 0);
	ro = auth_db_open(path, 0, err, sizeof(err));
	assert_non_null(ro);

	n0 = auth_hash_count();
	h0 = auth_cache_hit_count();
	assert_int_equal(auth_check(ro, "erin", "first"), AUTH_OK);
	assert_int_equal(auth_hash_count() - n0, 1);
	assert_int_equal(auth_check(ro, "ERIN", "first"), AUTH_OK);
	assert_int_equal(auth_hash_count() - n0, 1);          /* from the cache */
	assert_int_equal(auth_cache_hit_count() - h0, 1);
	assert_int_equal(auth_check(ro, "erin", "wrong"), AUTH_FAIL);
	assert_int_equal(auth_check(ro, "erin", "wrong"), AUTH_FAIL);
	assert_int_equal(auth_hash_count() - n0, 3);          /* never cached */

	/* a new password: the old one fails (one hash), the new one works */
	assert_int_equal(auth_user_set(db, "erin", "second", err, sizeof(err)), 0);
	n0 = auth_hash_count();
	assert_int_equal(auth_check(ro, "erin", "first"), AUTH_FAIL);
	assert_int_equal(auth_hash_count() - n0, 1);
	assert_int_equal(auth_check(ro, "erin", "second"), AUTH_OK);
	assert_int_equal(auth_check(ro, "erin", "second"), AUTH_OK);
	assert_int_equal(auth_hash_count() - n0, 2);
	/* deleted: fails (against the dummy hash) */
	assert_int_equal(auth_user_del(db, "erin", err, sizeof(err)), 0);
	assert_int_equal(auth_check(ro, "erin", "second"), AUTH_FAIL);
	assert_int_equal(auth_hash_count() - n0, 3);
	auth_db_close(ro);
	auth_db_close(db);
	unlink(path);
}

/*
 * The cache alone (what a session loop asks before the pool): a pair is
 * known only after auth_check() found it correct; a wrong password, an
 * unknown or invalid user, a changed password and a replaced file are
 * misses, answered without any hash; a hit is no hash either.
 */
static void
test_cache_probe(void **state)
{
	char path[600], err[256], name[AUTH_USER_MAX + 1];
	struct auth_db *db, *ro;
	uint64_t n0;

	path_in_tmp(path, sizeof(path), "auth_probe.db");
	unlink(path);
	db = auth_db_open(path, 1, err, sizeof(err));
	assert_non_null(db);
	assert_int_equal(auth_user_set(db, "Fay", "pw-one", err, sizeof(err)), 0);
	ro = auth_db_open(path, 0, err, sizeof(err));
	assert_non_null(ro);

	n0 = auth_hash_count();
	assert_int_equal(auth_check_cached(ro, "fay", "pw-one", name), -1);
	assert_int_equal(auth_check(ro, "fay", "pw-one"), AUTH_OK);
	assert_int_equal(auth_hash_count() - n0, 1);
	strcpy(name, "x");
	assert_int_equal(auth_check_cached(ro, "FAY", "pw-one", name), 0);
	assert_string_equal(name, "fay");
	assert_int_equal(auth_check_cached(ro, "fay", "pw-One", name), -1);
	assert_int_equal(auth_check_cached(ro, "nobody", "pw-one", name), -1);
	assert_int_equal(auth_check_cached(ro, "bad name", "pw-one", name), -1);
	assert_int_equal(auth_check_cached(ro, "fay", "", name), -1);
	assert_int_equal(auth_hash_count() - n0, 1);      /* no hash above */

	/* a new password: the file changed, so the probe leaves it to the
	 * pool (which re-opens); after that the old pair is still a miss */
	assert_int_equal(auth_user_set(db, "fay", "pw-two", err, sizeof(err)), 0);
	assert_int_equal(auth_check_cached(ro, "fay", "pw-one", name), -1);
	assert_int_equal(auth_check(ro, "fay", "pw-two"), AUTH_OK);
	assert_int_equal(auth_check_cached(ro, "fay", "pw-one", name), -1);
	assert_int_equal(auth_check_cached(ro, "fay", "pw-two", name), 0);
	auth_db_close(ro);
	auth_db_close(db);
	unlink(path);
}

/* Replace path with a file holding bytes (atomically, like a writer). */
static void
replace_file(const char *path, const char *bytes)
{
	char tmp[700];
	int fd;

	snprintf(tmp, sizeof(tmp), "%s.junk", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write_all(fd, bytes, strlen(bytes)), 0);
	close(fd);
	assert_int_equal(rename(tmp, path), 0);
}

static void
test_db_reopen(void **state)
{
	char path[600], saved[620], err[256];
	struct auth_db *rd, *wr;

	path_in_tmp(path, sizeof(path), "auth_reopen.db");
	snprintf(saved, sizeof(saved), "%s.saved", path);
	unlink(path);

	/* The daemon opens before the file exists: no users, no error. */
	rd = auth_db_open(path, 0, err, sizeof(err));
	assert_non_null(rd);
	assert_int_equal(auth_check(rd, "erin", "pw1"), AUTH_FAIL);

	/* ternctl adds a user: the reader sees it without a reload. */
	wr = auth_db_open(path, 1, err, sizeof(err));
	assert_non_null(wr);
	assert_int_equal(auth_user_set(wr, "erin", "pw1", err, sizeof(err)), 0);
	assert_int_equal(auth_check(rd, "erin", "pw1"), AUTH_OK);

	/* ... changes the password ... */
	assert_int_equal(auth_user_set(wr, "erin", "pw2", err, sizeof(err)), 0);
	assert_int_equal(auth_check(rd, "erin", "pw1"), AUTH_FAIL);
	assert_int_equal(auth_check(rd, "erin", "pw2"), AUTH_OK);

	/* A corrupt file: temporary failure, then recovery when it is fixed. */
	assert_int_equal(link(path, saved), 0);
	replace_file(path, "this is not a btree\n");
	assert_int_equal(auth_check(rd, "erin", "pw2"), AUTH_TEMPFAIL);
	assert_int_equal(auth_check(rd, "erin", "pw2"), AUTH_TEMPFAIL);
	{
		char acc[64];
		assert_int_equal(auth_user_list(rd, list_cb, acc, err,
		    sizeof(err)), -1);
	}
	assert_int_equal(rename(saved, path), 0);
	assert_int_equal(auth_check(rd, "erin", "pw2"), AUTH_OK);

	/* The file removed: nobody can log in, and it is not an error. */
	assert_int_equal(unlink(path), 0);
	assert_int_equal(auth_check(rd, "erin", "pw2"), AUTH_FAIL);
	assert_int_equal(auth_user_set(wr, "frank", "pw", err, sizeof(err)), 0);
	assert_int_equal(auth_check(rd, "frank", "pw"), AUTH_OK);
	assert_int_equal(auth_check(rd, "erin", "pw2"), AUTH_FAIL);

	/* A writer cannot open a corrupt file either. */
	auth_db_close(wr);
	replace_file(path, "garbage");
	err[0] = '\0';
	assert_null(auth_db_open(path, 1, err, sizeof(err)));
	assert_true(strlen(err) > 0);

	auth_db_close(rd);
	unlink(path);
}

/* ---- throttle ---- */

static struct sockaddr_storage
addr(const char *s)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (strchr(s, ':') != NULL) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, s, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, s, &s4->sin_addr), 1);
	}
	return ss;
}

enum thr_op { T_FAIL, T_OK, T_CHECK };

struct thr_step {
	enum thr_op op;
	const char *ip;
	int64_t now;
	enum auth_throttle_verdict want;   /* T_CHECK */
	unsigned delay_ms;                 /* T_CHECK */
};

static void
thr_run(struct auth_throttle *t, const struct thr_step *steps, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct sockaddr_storage ss = addr(steps[i].ip);
		const struct sockaddr *sa = (const struct sockaddr *)&ss;
		unsigned d = 12345;
		enum auth_throttle_verdict v;

		switch (steps[i].op) {
		case T_FAIL:
			auth_throttle_fail(t, sa, steps[i].now);
			break;
		case T_OK:
			auth_throttle_success(t, sa, steps[i].now);
			break;
		case T_CHECK:
			v = auth_throttle_check(t, sa, steps[i].now, &d);
			if (v != steps[i].want || d != steps[i].delay_ms)
				fail_msg("step %zu (%s at %lld): got %d/%u, "
				    "want %d/%u", i, steps[i].ip,
				    (long long)steps[i].now, v, d,
				    steps[i].want, steps[i].delay_ms);
			break;
		}
	}
}

#define F(ip, t) { T_FAIL, ip, t, 0, 0 }
#define OK(ip, t) { T_OK, ip, t, 0, 0 }
#define ALLOW(ip, t) { T_CHECK, ip, t, AUTH_THROTTLE_ALLOW, 0 }
#define DELAY(ip, t, ms) { T_CHECK, ip, t, AUTH_THROTTLE_DELAY, ms }
#define REFUSE(ip, t) { T_CHECK, ip, t, AUTH_THROTTLE_REFUSE, 0 }

static void
test_throttle_defaults(void **state)
{
	static const struct thr_step steps[] = {
		ALLOW("192.0.2.1", 1000),
		F("192.0.2.1", 1000), ALLOW("192.0.2.1", 1001),
		F("192.0.2.1", 1001), ALLOW("192.0.2.1", 1002),
		F("192.0.2.1", 1002), DELAY("192.0.2.1", 1003, 3000),
		F("192.0.2.1", 1003), DELAY("192.0.2.1", 1004, 4000),
		F("192.0.2.1", 1004), DELAY("192.0.2.1", 1005, 5000),
		F("192.0.2.1", 1005), DELAY("192.0.2.1", 1006, 5000), /* cap */
		/* another address is not affected */
		ALLOW("192.0.2.2", 1006),
		F("192.0.2.1", 1006), F("192.0.2.1", 1007),
		F("192.0.2.1", 1008), DELAY("192.0.2.1", 1009, 5000),
		F("192.0.2.1", 1009),                     /* 10th failure */
		REFUSE("192.0.2.1", 1010),
		/* the same address as IPv4-mapped IPv6 */
		REFUSE("::ffff:192.0.2.1", 1010),
		REFUSE("192.0.2.1", 1000 + 899),
		/* the window (900 s from the first failure) has passed */
		ALLOW("192.0.2.1", 1000 + 900),
		F("192.0.2.1", 1900), ALLOW("192.0.2.1", 1901),
		/* success forgets */
		F("192.0.2.3", 2000), F("192.0.2.3", 2000), F("192.0.2.3", 2000),
		DELAY("192.0.2.3", 2001, 3000),
		OK("192.0.2.3", 2001), ALLOW("192.0.2.3", 2002),
		F("192.0.2.3", 2003), ALLOW("192.0.2.3", 2003),
		/* IPv6: one /64 is one client */
		F("2001:db8:1:2::1", 3000), F("2001:db8:1:2::2", 3000),
		F("2001:db8:1:2:ffff::3", 3000),
		DELAY("2001:db8:1:2::99", 3001, 3000),
		ALLOW("2001:db8:1:3::1", 3001),
	};
	struct auth_throttle *t = auth_throttle_new(NULL);
	thr_run(t, steps, sizeof(steps) / sizeof(steps[0]));
	auth_throttle_free(t);
	auth_throttle_free(NULL);
}

static void
test_throttle_conf_and_evict(void **state)
{
	static const struct thr_step steps[] = {
		F("10.0.0.1", 100), F("10.0.0.1", 101),
		REFUSE("10.0.0.1", 102),               /* max 2 */
		F("10.0.0.2", 103), DELAY("10.0.0.2", 103, 700),
		F("10.0.0.3", 104),
		/* table full (3): 10.0.0.4 evicts the least recently
		 * updated, 10.0.0.1 */
		F("10.0.0.4", 105),
		ALLOW("10.0.0.1", 105),
		DELAY("10.0.0.2", 105, 700), DELAY("10.0.0.3", 105, 700),
		DELAY("10.0.0.4", 105, 700),
		/* window 60 s: 10.0.0.2 (first failure at 103) expires at 163,
		 * and its slot is taken before a live one */
		F("10.0.0.5", 163),
		ALLOW("10.0.0.2", 163), DELAY("10.0.0.3", 163, 700),
		DELAY("10.0.0.4", 163, 700), DELAY("10.0.0.5", 163, 700),
	};
	static const struct auth_throttle_conf conf = {
		.window_s = 60, .max_failures = 2, .delay_after = 1,
		.delay_cap_ms = 700, .max_entries = 3,
	};
	struct auth_throttle *t = auth_throttle_new(&conf);
	struct sockaddr sa_unix = { .sa_family = AF_UNIX };
	unsigned d;

	thr_run(t, steps, sizeof(steps) / sizeof(steps[0]));
	/* other families are never throttled */
	auth_throttle_fail(t, &sa_unix, 200);
	auth_throttle_fail(t, &sa_unix, 200);
	assert_int_equal(auth_throttle_check(t, &sa_unix, 200, &d),
	    AUTH_THROTTLE_ALLOW);
	assert_int_equal(d, 0);
	auth_throttle_free(t);
}

/* The table empties (success, expiry) and fills again: a lookup that skips
 * the scan when no address is held must still find every later entry. */
static void
test_throttle_empty_again(void **state)
{
	static const struct thr_step steps[] = {
		ALLOW("10.0.0.1", 100),                 /* empty table */
		F("10.0.0.1", 100), DELAY("10.0.0.1", 100, 500),
		OK("10.0.0.1", 101), ALLOW("10.0.0.1", 101),   /* empty */
		F("10.0.0.2", 102), DELAY("10.0.0.2", 102, 500),
		/* expiry seen by a check empties it again */
		ALLOW("10.0.0.2", 162),
		F("10.0.0.3", 163), DELAY("10.0.0.3", 163, 500),
		F("10.0.0.4", 163), F("10.0.0.5", 164),
		/* full (3): 10.0.0.6 evicts 10.0.0.3 */
		F("10.0.0.6", 165),
		ALLOW("10.0.0.3", 165), DELAY("10.0.0.6", 165, 500),
		OK("10.0.0.4", 166), OK("10.0.0.5", 166),
		DELAY("10.0.0.6", 166, 500), OK("10.0.0.6", 166),
		ALLOW("10.0.0.6", 166),                 /* empty */
		F("10.0.0.7", 167), DELAY("10.0.0.7", 167, 500),
		F("10.0.0.7", 167), REFUSE("10.0.0.7", 168),
	};
	static const struct auth_throttle_conf conf = {
		.window_s = 60, .max_failures = 2, .delay_after = 1,
		.delay_cap_ms = 500, .max_entries = 3,
	};
	struct auth_throttle *t = auth_throttle_new(&conf);

	(void)state;
	thr_run(t, steps, sizeof(steps) / sizeof(steps[0]));
	auth_throttle_free(t);
}

/* ---- pool ---- */

struct pool_seen {
	struct event_base *base;
	int n, want;
	int status[8];
	char user[8][AUTH_USER_MAX + 1];
};

static void
pool_handler(struct tq_msg *m, void *arg)
{
	struct pool_seen *s = arg;
	struct auth_result *r = (struct auth_result *)m;

	assert_int_equal(m->type, TQ_AUTH_DONE);
	if (m->reqid < 8) {
		s->status[m->reqid] = r->status;
		snprintf(s->user[m->reqid], sizeof(s->user[0]), "%s", r->user);
	}
	s->n++;
	if (s->n == s->want)
		event_base_loopbreak(s->base);
	free(r);
}

static void
test_pool(void **state)
{
	char path[600], err[256], longpw[300];
	struct pool_seen seen;
	struct auth_db *db;
	struct auth_pool *pool;
	struct tq *q;
	struct timeval tv = { 20, 0 };

	path_in_tmp(path, sizeof(path), "auth_pool.db");
	unlink(path);
	db = auth_db_open(path, 1, err, sizeof(err));
	assert_non_null(db);
	assert_int_equal(auth_user_set(db, "Grace", "hopper", err, sizeof(err)),
	    0);

	memset(&seen, 0, sizeof(seen));
	for (int i = 0; i < 8; i++)
		seen.status[i] = -1;
	seen.base = event_base_new();
	seen.want = 5;
	q = tq_new(seen.base, pool_handler, &seen);
	pool = auth_pool_start(2);
	memset(longpw, 'p', sizeof(longpw));
	longpw[sizeof(longpw) - 1] = '\0';
	assert_int_equal(auth_pool_check(pool, db, "GRACE", "hopper", q, 1), 0);
	assert_int_equal(auth_pool_check(pool, db, "grace", "Hopper", q, 2), 0);
	assert_int_equal(auth_pool_check(pool, db, "nobody", "hopper", q, 3),
	    0);
	assert_int_equal(auth_pool_check(pool, db, "grace", longpw, q, 4), 0);
	assert_int_equal(auth_pool_check(pool, db, "a b", "x", q, 5), 0);
	event_base_loopexit(seen.base, &tv);          /* safety net */
	assert_int_equal(event_base_dispatch(seen.base), 0);
	assert_int_equal(seen.n, 5);
	assert_int_equal(seen.status[1], AUTH_OK);
	assert_string_equal(seen.user[1], "grace");
	assert_int_equal(seen.status[2], AUTH_FAIL);
	assert_int_equal(seen.status[3], AUTH_FAIL);
	assert_int_equal(seen.status[4], AUTH_FAIL);
	assert_int_equal(seen.status[5], AUTH_FAIL);
	assert_string_equal(seen.user[5], "");
	auth_pool_stop(pool);
	auth_pool_stop(NULL);

	/* A full pool refuses; stopping drops what has not started. */
	pool = auth_pool_start(1);
	{
		int accepted = 0, refused = 0;
		/* a wrong password is never cached: every check is slow */
		for (int i = 0; i < AUTH_POOL_MAX_PENDING + 20; i++) {
			if (auth_pool_check(pool, db, "grace", "not-hopper", q,
			    100 + (uint64_t)i) == 0)
				accepted++;
			else
				refused++;
		}
		assert_true(accepted >= AUTH_POOL_MAX_PENDING);
		assert_true(refused > 0);
		assert_int_equal(accepted + refused, AUTH_POOL_MAX_PENDING + 20);
	}
	seen.n = 0;
	seen.want = -1;
	auth_pool_stop(pool);       /* joins after at most the running one */
	tq_free(q);                 /* hands what was posted to the handler */
	assert_true(seen.n <= 5);      /* not the 256 queued */
	event_base_free(seen.base);
	auth_db_close(db);
	unlink(path);
}

/* Links in the database's directory are never followed by a writer. */
static void
test_db_symlinks_refused(void **state)
{
	char path[600], lock[620], victim[620], err[256];
	struct auth_db *db;
	struct stat st;

	path_in_tmp(path, sizeof(path), "auth_links.db");
	snprintf(lock, sizeof(lock), "%s.lock", path);
	path_in_tmp(victim, sizeof(victim), "auth_links.victim");
	unlink(path);
	unlink(lock);
	unlink(victim);
	db = auth_db_open(path, 1, err, sizeof(err));
	assert_non_null(db);

	/* a lock that is a link: refused, its target never made */
	assert_int_equal(symlink(victim, lock), 0);
	assert_int_equal(auth_user_set(db, "alice", "pw", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "symbolic link"));
	assert_int_equal(auth_user_del(db, "alice", err, sizeof(err)), -1);
	assert_int_equal(lstat(victim, &st), -1);
	assert_int_equal(lstat(path, &st), -1);
	unlink(lock);

	/* a lock with a second name (a hard link to another file): refused */
	int fd = open(victim, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(link(victim, lock), 0);
	assert_int_equal(auth_user_set(db, "alice", "pw", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not a plain file"));
	unlink(lock);

	/* the database itself a link: refused, the link left alone */
	assert_int_equal(symlink(victim, path), 0);
	assert_int_equal(auth_user_set(db, "alice", "pw", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not a plain file"));
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_int_equal(stat(victim, &st), 0);
	assert_int_equal(st.st_size, 0);
	unlink(path);

	/* and with plain files all is well */
	assert_int_equal(auth_user_set(db, "alice", "pw", err, sizeof(err)), 0);
	auth_db_close(db);
	unlink(victim);
	unlink(path);
	unlink(lock);
}

static int
setup(void **state)
{
	const char *d = getenv("TERN_TEST_TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/auth-%ld", d ? d : "/tmp",
	    (long)getpid());
	if (mkdir(tmpdir, 0700) != 0 && errno != EEXIST)
		return -1;
	return 0;
}

static int
teardown(void **state)
{
	char p[700];
	static const char *names[] = { "auth_basic.db", "auth_cost.db",
	    "auth_reopen.db", "auth_pool.db" };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s.lock", tmpdir, names[i]);
		unlink(p);
		snprintf(p, sizeof(p), "%s/%s", tmpdir, names[i]);
		unlink(p);
	}
	rmdir(tmpdir);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hash_verify),
		cmocka_unit_test(test_db_basic),
		cmocka_unit_test(test_unknown_user_cost),
		cmocka_unit_test(test_verified_cache),
		cmocka_unit_test(test_cache_probe),
		cmocka_unit_test(test_db_reopen),
		cmocka_unit_test(test_db_symlinks_refused),
		cmocka_unit_test(test_throttle_defaults),
		cmocka_unit_test(test_throttle_conf_and_evict),
		cmocka_unit_test(test_throttle_empty_again),
		cmocka_unit_test(test_pool),
	};
	evthread_use_pthreads();
	return cmocka_run_group_tests(tests, setup, teardown);
}
