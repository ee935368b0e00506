/*
 * test_privhelper.c - smtpd/privhelper.c through a real forked helper: the
 * bytes of the configuration's certificate and key files come back; the
 * helper keeps no descriptor but its socket; a configuration the daemon's
 * user could write, a file that is not PEM, and a configuration whose pairs
 * changed between the daemon's parse and the helper's are refused; the
 * route-auth file comes back only when root's and 0600; free reaps it. The configuration must be root's for the helper to read it, so
 * the cases that need one skip when not run as root.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tern/conf.h"
#include "tern/dkim.h"
#include "tern/route_auth.h"
#include "tern/tls.h"
#include "privhelper_int.h"

static char tmpdir[512];

static void
put(const char *name, const char *text, mode_t mode, char *path, size_t len)
{
	snprintf(path, len, "%s/%s", tmpdir, name);
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, mode);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static const char CERT[] = "-----BEGIN CERTIFICATE-----\nAAAA\n"
    "-----END CERTIFICATE-----\n";
static const char KEY[] = "-----BEGIN PRIVATE KEY-----\nBBBB\n"
    "-----END PRIVATE KEY-----\n";

static void
write_conf(char *conf, size_t len, const char *cert, const char *key,
    mode_t mode)
{
	char text[2048];

	snprintf(text, sizeof(text), "listen 127.0.0.1:2525 relay\n"
	    "hostname h\ntls-cert %s\ntls-key %s\n", cert, key);
	put("tern.conf", text, mode, conf, len);
}

static struct conf *
load(const char *conf)
{
	struct conf *c = NULL;
	assert_int_equal(conf_load_flags(conf, CONF_LOAD_NO_TLS_FILES, &c,
	    NULL, NULL), 0);
	return c;
}

/* The helper's open descriptors: exactly 0, 1, 2 and 3. */
static void
check_fds(pid_t pid)
{
	char dir[64];
	struct dirent *de;
	int n = 0, max = -1;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(dir);
	if (d == NULL)
		return;          /* no /proc: nothing to check */
	while ((de = readdir(d)) != NULL) {
		if (de->d_name[0] == '.')
			continue;
		n++;
		if (atoi(de->d_name) > max)
			max = atoi(de->d_name);
	}
	closedir(d);
	assert_int_equal(n, 4);
	assert_int_equal(max, 3);
}

static void
test_fetch(void **state)
{
	char conf[600], cert[600], key[600], key2[600], err[512];
	struct tls_pem *pems = NULL;
	struct conf *c;

	if (geteuid() != 0)
		skip();
	put("cert.pem", CERT, 0644, cert, sizeof(cert));
	put("key.pem", KEY, 0600, key, sizeof(key));
	write_conf(conf, sizeof(conf), cert, key, 0644);
	c = load(conf);

	struct privhelper *h = privhelper_start(conf, err, sizeof(err));
	assert_non_null(h);
	assert_true(privhelper_pid(h) > 0);

	/* the files' bytes, as many times as asked */
	for (int i = 0; i < 2; i++) {
		assert_int_equal(privhelper_tls_fetch(h, c, &pems, err,
		    sizeof(err)), 0);
		assert_int_equal(pems[0].cert_len, strlen(CERT));
		assert_memory_equal(pems[0].cert, CERT, strlen(CERT));
		assert_int_equal(pems[0].key_len, strlen(KEY));
		assert_memory_equal(pems[0].key, KEY, strlen(KEY));
		tls_pems_free(pems, c->ntls);
	}
	check_fds(privhelper_pid(h));

	/* a key file without a PEM key in it */
	put("key.pem", "root:x:0:0::/root:/bin/sh\n", 0600, key, sizeof(key));
	assert_int_equal(privhelper_tls_fetch(h, c, &pems, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "no PEM private key"));
	assert_true(privhelper_alive(h));

	/* the configuration names other files than the daemon's parse */
	put("key2.pem", KEY, 0600, key2, sizeof(key2));
	write_conf(conf, sizeof(conf), cert, key2, 0644);
	assert_int_equal(privhelper_tls_fetch(h, c, &pems, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "changed"));
	assert_true(privhelper_alive(h));

	/* writable by others, or not root's: refused */
	assert_int_equal(chmod(conf, 0646), 0);
	assert_int_equal(privhelper_tls_fetch(h, c, &pems, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not owned by root, or writable by others"));
	assert_int_equal(chmod(conf, 0644), 0);
	assert_int_equal(chown(conf, 65534, 65534), 0);
	assert_int_equal(privhelper_tls_fetch(h, c, &pems, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "not owned by root"));
	assert_int_equal(chown(conf, 0, 0), 0);

	/* back to the daemon's pairs: served again */
	write_conf(conf, sizeof(conf), cert, key2, 0644);
	conf_unref(c);
	c = load(conf);
	assert_int_equal(privhelper_tls_fetch(h, c, &pems, err, sizeof(err)), 0);
	tls_pems_free(pems, c->ntls);

	pid_t pid = privhelper_pid(h);
	privhelper_free(h);
	assert_int_equal(kill(pid, 0), -1);       /* reaped */
	assert_int_equal(errno, ESRCH);
	conf_unref(c);
	unlink(conf);
	unlink(cert);
	unlink(key);
	unlink(key2);
}

/* route-auth: the file's bytes, checked as ternd checks them. */
static void
test_route_auth(void **state)
{
	static const char CREDS[] = "[h.example]:587 u pass word\n";
	char conf[600], ra[600], ra2[600], text[1400], err[512], *buf;
	size_t len;
	struct conf *c;
	struct privhelper *h;

	if (geteuid() != 0)
		skip();
	put("route-auth", CREDS, 0600, ra, sizeof(ra));
	snprintf(text, sizeof(text), "listen 127.0.0.1:2525 relay\nhostname h\n"
	    "route-auth %s\n", ra);
	put("tern.conf", text, 0644, conf, sizeof(conf));
	c = load(conf);
	h = privhelper_start(conf, err, sizeof(err));
	assert_non_null(h);

	assert_int_equal(privhelper_route_auth_fetch(h, c, &buf, &len, err,
	    sizeof(err)), 0);
	assert_int_equal(len, strlen(CREDS));
	assert_memory_equal(buf, CREDS, len);
	route_auth_buf_free(buf, len);

	/* open to others: refused, without the content in the message */
	assert_int_equal(chmod(ra, 0640), 0);
	assert_int_equal(privhelper_route_auth_fetch(h, c, &buf, &len, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "mode 0640 is too open"));
	assert_null(strstr(err, "pass word"));
	assert_true(privhelper_alive(h));
	assert_int_equal(chmod(ra, 0600), 0);

	/* the configuration now names another file: refused */
	put("route-auth2", CREDS, 0600, ra2, sizeof(ra2));
	snprintf(text, sizeof(text), "listen 127.0.0.1:2525 relay\nhostname h\n"
	    "route-auth %s\n", ra2);
	put("tern.conf", text, 0644, conf, sizeof(conf));
	assert_int_equal(privhelper_route_auth_fetch(h, c, &buf, &len, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "changed"));
	assert_true(privhelper_alive(h));

	privhelper_free(h);
	conf_unref(c);
	unlink(conf);
	unlink(ra);
	unlink(ra2);
}

/*
 * dkim-sign key files: each one's bytes, in order; one open to others, or
 * a configuration that now names other files, refuses the whole answer.
 */
static void
test_dkim_keys(void **state)
{
	char conf[600], k1[600], k2[600], text[2000], err[512];
	char *bufs[2] = { NULL, NULL };
	size_t lens[2];
	struct conf *c;
	struct privhelper *h;

	if (geteuid() != 0)
		skip();
	put("dkim1.key", KEY, 0600, k1, sizeof(k1));
	put("dkim2.key", CERT, 0640, k2, sizeof(k2));
	snprintf(text, sizeof(text), "listen 127.0.0.1:2525 relay\nhostname h\n"
	    "dkim-sign example.com a %s\ndkim-sign example.com b %s\n", k1, k2);
	put("tern.conf", text, 0644, conf, sizeof(conf));
	c = load(conf);
	h = privhelper_start(conf, err, sizeof(err));
	assert_non_null(h);

	assert_int_equal(privhelper_dkim_fetch(h, c, bufs, lens, err,
	    sizeof(err)), 0);
	assert_int_equal(lens[0], strlen(KEY));
	assert_memory_equal(bufs[0], KEY, lens[0]);
	assert_int_equal(lens[1], strlen(CERT));
	assert_memory_equal(bufs[1], CERT, lens[1]);
	dkim_key_buf_free(bufs[0], lens[0]);
	dkim_key_buf_free(bufs[1], lens[1]);

	/* readable by others: refused, nothing to free */
	assert_int_equal(chmod(k2, 0644), 0);
	bufs[0] = bufs[1] = NULL;
	assert_int_equal(privhelper_dkim_fetch(h, c, bufs, lens, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "others may read"));
	assert_null(strstr(err, "BBBB"));
	assert_null(bufs[0]);
	assert_true(privhelper_alive(h));
	assert_int_equal(chmod(k2, 0600), 0);

	/* the configuration now names one key only: refused */
	snprintf(text, sizeof(text), "listen 127.0.0.1:2525 relay\nhostname h\n"
	    "dkim-sign example.com a %s\n", k1);
	put("tern.conf", text, 0644, conf, sizeof(conf));
	assert_int_equal(privhelper_dkim_fetch(h, c, bufs, lens, err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "changed"));
	assert_null(bufs[0]);
	assert_true(privhelper_alive(h));

	privhelper_free(h);
	conf_unref(c);
	unlink(conf);
	unlink(k1);
	unlink(k2);
}

/* A helper that died: the daemon learns it once and lets it go. */
static void
test_helper_gone(void **state)
{
	char conf[600], err[512];
	struct tls_pem *pems = NULL;

	write_conf(conf, sizeof(conf), "/c.pem", "/k.pem", 0644);
	struct conf *c = load(conf);
	struct privhelper *h = privhelper_start(conf, err, sizeof(err));
	assert_non_null(h);
	assert_int_equal(kill(privhelper_pid(h), SIGKILL), 0);
	assert_int_equal(privhelper_tls_fetch(h, c, &pems, err, sizeof(err)), -1);
	assert_false(privhelper_alive(h));
	assert_int_equal(privhelper_tls_fetch(h, c, &pems, err, sizeof(err)), -1);
	assert_string_equal(err, "privileged helper is gone");
	privhelper_free(h);
	conf_unref(c);
	unlink(conf);
}

static int
setup(void **state)
{
	const char *d = getenv("TERN_TEST_TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/privhelper-%ld", d ? d : "/tmp",
	    (long)getpid());
	if (mkdir(tmpdir, 0700) != 0 && errno != EEXIST)
		return -1;
	signal(SIGPIPE, SIG_IGN);
	return 0;
}

static int
teardown(void **state)
{
	rmdir(tmpdir);
	return 0;
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fetch),
		cmocka_unit_test(test_route_auth),
		cmocka_unit_test(test_dkim_keys),
		cmocka_unit_test(test_helper_gone),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
