/*
 * main.c - ternd: start-up, privilege drop, signals, shutdown.
 *
 * Order of start-up: parse and check the config; raise the open-file
 * limit for max-connections (see ternd_raise_nofile); as root, fork the
 * privileged helper (privhelper.c: it re-reads certificate and key files
 * for reloads); bind every listener (root may be needed for ports < 1024);
 * create the queue directory and hand it to the run-time user; drop
 * privileges (empty the capability bounding set, setgroups, setgid, setuid,
 * then verify that root cannot be regained); set no_new_privs; open the
 * queue, which runs recovery before any listener accepts (the index walk
 * that counts live messages goes on in the background); start the session
 * loops; start delivery and the scheduler (its schedule is loaded in the
 * background); the control socket; log "ready". ternd runs in the
 * foreground (systemd style).
 *
 * Signals are handled on the main loop: SIGTERM/SIGINT stop gracefully
 * (stop accepting, let in-flight commits finish and answer, 421 to idle
 * sessions, close the queue); SIGHUP reloads the config (listeners stay).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "tern/conf.h"
#include "tern/ctl.h"
#include "tern/deliver.h"
#include "tern/log.h"
#include "tern/metrics.h"
#include "tern/queue.h"
#include "tern/dkim.h"
#include "tern/route_auth.h"
#include "tern/tls.h"
#include "tern/tlsrpt.h"
#include "tern/util.h"
#include "privhelper_int.h"
#include "smtpd_int.h"

#define TERND_DEFAULT_CONF "/etc/tern/tern.conf"
#define TERND_STOP_GRACE 10   /* seconds for sessions to finish at SIGTERM */

struct ternd {
	const char *conf_path;
	struct smtpd_server srv;
	struct queue *queue;
	struct event_base *base;
	struct ctl_server *ctl;
	struct deliver_pool *pool;
	struct metrics_server *metrics;
	struct sched *sched;
	struct privhelper *helper;      /* root helper for reloads, or NULL */
	struct tlsrpt_reporter *tlsrpt; /* TLS-RPT counts and reports */
};

static void
ternd_conf_err(void *arg, const char *msg)
{
	int *to_log = arg;
	if (*to_log)
		log_warnx("%s", msg);
	else
		fprintf(stderr, "%s\n", msg);
}

/* Usage on stdout and exit 0 for --help, on stderr and exit 2 otherwise. */
static void
ternd_usage(int help)
{
	fprintf(help ? stdout : stderr,
	    "usage: ternd [-n] [-v] [-c config] [--rebuild-index] "
	    "[--verify-index]\n"
	    "  -c FILE  configuration file (default " TERND_DEFAULT_CONF ")\n"
	    "  -n       check the configuration and exit\n"
	    "  -v       verbose: debug and trace logging\n"
	    "  --rebuild-index  set the queue index aside, rebuild it from the\n"
	    "           segments and exit (ternd must be stopped)\n"
	    "  --verify-index   check the index files with DB->verify before\n"
	    "           opening them (slow on a big queue), then run as usual\n"
	    "  --version  print the version and exit\n"
	    "  --help   print this help and exit\n");
	exit(help ? 0 : 2);
}

/*
 * A users database made by `ternctl user add` as root before the first start
 * (in a root-owned directory) goes to the run-time user. Opened without
 * following a symlink: the queue directory belongs to that user, who must
 * not be able to point root's chown at another file.
 */
static void
ternd_users_db_chown(const char *path, const struct passwd *pw)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY |
	    O_NONBLOCK);

	if (fd < 0) {
		if (errno != ENOENT)
			log_warn("users-db %s: not given to user %s", path,
			    pw->pw_name);
		return;
	}
	if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == 0 &&
	    fchown(fd, pw->pw_uid, pw->pw_gid) < 0)
		fatal("chown %s", path);
	close(fd);
}

/* Create the queue directory if needed and give it to the run-time user. */
static void
ternd_queue_dir(const struct conf *c, const struct passwd *pw)
{
	if (mkdir(c->queue_dir, 0750) < 0 && errno != EEXIST)
		fatal("queue directory %s", c->queue_dir);
	if (pw != NULL && chown(c->queue_dir, pw->pw_uid, pw->pw_gid) < 0)
		fatal("chown %s", c->queue_dir);
	if (pw != NULL && c->users_db != NULL)
		ternd_users_db_chown(c->users_db, pw);
}

/*
 * Empty the capability bounding set while root still has CAP_SETPCAP:
 * whatever this process runs later can never gain a capability again, even
 * through a set-uid or file-capability binary. Where it is not allowed (a
 * container or unit without CAP_SETPCAP) say so and go on: the setresuid()
 * below clears the effective and permitted sets anyway.
 */
static void
ternd_capbset_clear(void)
{
	for (int cap = 0; prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0; cap++)
		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
			log_warn("capability bounding set not emptied "
			    "(capability %d)", cap);
			return;
		}
}

/* No exec of this process or its children may gain privileges again. */
static void
ternd_no_new_privs(void)
{
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		fatal("prctl(PR_SET_NO_NEW_PRIVS)");
}

/*
 * Every session holds a socket: the soft open-file limit goes up to the
 * hard one (often 1024 against 524288 under systemd), and, while still
 * root, the hard one too if max-connections needs more. What is left short
 * is said once: past it, accept fails (EMFILE) and new sessions wait.
 */
#define TERND_FD_RESERVE 1024   /* queue, index, delivery, resolver, control */

static void
ternd_raise_nofile(const struct conf *c)
{
	struct rlimit rl;
	rlim_t need = (rlim_t)c->max_connections + TERND_FD_RESERVE;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
		return;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
		struct rlimit up = { need, need };
		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			rl = up;
	}
	if (rl.rlim_cur != rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			getrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need)
		log_warnx("open-file limit %llu is below max-connections %u + %u: "
		    "raise it (LimitNOFILE=, ulimit -n)", (unsigned long long)
		    rl.rlim_cur, c->max_connections, TERND_FD_RESERVE);
	else
		log_debug("open-file limit %llu", (unsigned long long)rl.rlim_cur);
}

static void
ternd_drop_privileges(const struct passwd *pw)
{
	gid_t gid = pw->pw_gid;
	ternd_capbset_clear();
	if (setgroups(1, &gid) < 0)
		fatal("setgroups");
	if (setresgid(gid, gid, gid) < 0)
		fatal("setresgid %u", (unsigned)gid);
	if (setresuid(pw->pw_uid, pw->pw_uid, pw->pw_uid) < 0)
		fatal("setresuid %u", (unsigned)pw->pw_uid);
	/* Verify: root must be gone for good. */
	if (pw->pw_uid != 0 && (setuid(0) == 0 || seteuid(0) == 0))
		fatalx("privilege drop failed: could regain root");
	if (getuid() != pw->pw_uid || geteuid() != pw->pw_uid ||
	    getgid() != gid || getegid() != gid)
		fatalx("privilege drop failed: ids not as expected");
	log_info("running as user=%s uid=%u gid=%u", pw->pw_name,
	    (unsigned)pw->pw_uid, (unsigned)gid);
}

/*
 * TLS contexts for a reload. Started as root, the privileged helper reads
 * the files (they may be root's alone); started unprivileged, or once the
 * helper is gone, they are read here with the daemon's rights.
 */
static struct tls_server *
ternd_reload_tls(struct ternd *t, const struct conf *nc, char *err,
    size_t errlen)
{
	struct tls_pem *pems;
	struct tls_server *ntls;

	if (t->helper == NULL || !privhelper_alive(t->helper))
		return tls_server_new(nc, err, errlen);
	if (privhelper_tls_fetch(t->helper, nc, &pems, err, errlen) != 0) {
		if (!privhelper_alive(t->helper))
			log_warnx("privileged helper pid=%d lost: certificate "
			    "files are read as user from now on",
			    (int)privhelper_pid(t->helper));
		return NULL;
	}
	ntls = tls_server_new_pem(nc, pems, err, errlen);
	tls_pems_free(pems, nc->ntls);
	if (ntls != NULL)
		log_info("reload: %zu certificate pair%s read by the privileged "
		    "helper", nc->ntls, nc->ntls == 1 ? "" : "s");
	return ntls;
}

/*
 * What the operator should know about the credentials just read: which
 * hosts have them (never a user or password), and the entries that can
 * never be used (no route to that host, or a route without tls-policy
 * verify: credentials go only over verified TLS, so its mail defers).
 */
static void
ternd_route_auth_note(const struct conf *c)
{
	const struct route_auth *ra = c->route_auth;

	log_info("route-auth %s: credentials for %zu host%s",
	    c->route_auth_file, ra->n, ra->n == 1 ? "" : "s");
	for (size_t i = 0; i < ra->n; i++) {
		const struct conf_route *r = NULL;
		char key[ROUTE_AUTH_KEY_MAX];

		for (size_t k = 0; k < c->nroutes && r == NULL; k++)
			if (route_auth_route_key(&c->routes[k], key,
			    sizeof(key)) == 0 &&
			    strcasecmp(key, ra->v[i].host) == 0)
				r = &c->routes[k];
		if (r == NULL)
			log_warnx("route-auth %s:%d: no route goes to %s: "
			    "unused", c->route_auth_file, ra->v[i].line,
			    ra->v[i].host);
		else if (r->tls != CONF_TLSP_VERIFY)
			log_warnx("route-auth %s:%d: route %s to %s has "
			    "tls-policy %s: credentials are sent only over "
			    "verified TLS, so its mail will be deferred",
			    c->route_auth_file, ra->v[i].line, r->domain,
			    ra->v[i].host, conf_tls_policy_name(r->tls));
	}
}

/*
 * route-auth: read the credentials into c, before c is shared. At start
 * ternd is still root; on a reload the privileged helper reads the file
 * when there is one (it may be root's alone). The file must belong to
 * root or to the run-time user. Returns 0, or -1 (errors reported through
 * ternd_conf_err, never with a password).
 */
static int
ternd_route_auth(struct ternd *t, struct conf *c, int reload, int *to_log)
{
	uid_t owner = geteuid();
	struct passwd *pw;
	int nerr;

	if (c->route_auth_file == NULL)
		return 0;
	if (c->user != NULL && (pw = getpwnam(c->user)) != NULL)
		owner = pw->pw_uid;
	if (reload && t->helper != NULL && privhelper_alive(t->helper)) {
		char *buf, err[512], msg[1024];
		size_t len;

		if (privhelper_route_auth_fetch(t->helper, c, &buf, &len, err,
		    sizeof(err)) != 0) {
			snprintf(msg, sizeof(msg), "%s: route-auth: %s",
			    c->route_auth_file, err);
			ternd_conf_err(to_log, msg);
			return -1;
		}
		nerr = route_auth_parse(buf, len, c->route_auth_file,
		    &c->route_auth, ternd_conf_err, to_log);
		route_auth_buf_free(buf, len);
		if (nerr == 0)
			log_info("reload: route-auth read by the privileged "
			    "helper");
	} else {
		nerr = route_auth_load(c->route_auth_file, owner,
		    &c->route_auth, ternd_conf_err, to_log);
	}
	if (nerr != 0)
		return -1;
	ternd_route_auth_note(c);
	return 0;
}

/*
 * dkim-sign: read and parse each key into c, before c is shared. At start
 * ternd is still root; on a reload the privileged helper reads the files
 * when there is one. A key that cannot be read, or is not RSA >= 1024 bits
 * or Ed25519, is a configuration error at its dkim-sign line. 0 or -1.
 */
static int
ternd_dkim_keys(struct ternd *t, struct conf *c, int reload, int *to_log)
{
	char **bufs, err[512], msg[1024];
	size_t *lens, i;
	int nerr = 0, helper;

	if (c->ndkim_sign == 0)
		return 0;
	c->dkim_key_free = dkim_key_free;
	bufs = xcalloc(c->ndkim_sign, sizeof(*bufs));
	lens = xcalloc(c->ndkim_sign, sizeof(*lens));
	helper = reload && t->helper != NULL && privhelper_alive(t->helper);
	if (helper && privhelper_dkim_fetch(t->helper, c, bufs, lens, err,
	    sizeof(err)) != 0) {
		snprintf(msg, sizeof(msg), "%s: dkim-sign: %s", c->path, err);
		ternd_conf_err(to_log, msg);
		free(bufs);
		free(lens);
		return -1;
	}
	for (i = 0; i < c->ndkim_sign; i++) {
		struct conf_dkim_sign *ds = &c->dkim_sign[i];
		if (!helper && dkim_key_file_read(ds->keyfile, &bufs[i], &lens[i],
		    err, sizeof(err)) != 0)
			ds->key = NULL;
		else {
			ds->key = dkim_key_parse(bufs[i], lens[i], err, sizeof(err));
			dkim_key_buf_free(bufs[i], lens[i]);
		}
		if (ds->key == NULL) {
			snprintf(msg, sizeof(msg), "%s:%d: dkim-sign %s %s: %s: %s",
			    c->path, ds->line, ds->domain, ds->selector,
			    ds->keyfile, err);
			ternd_conf_err(to_log, msg);
			nerr++;
		}
	}
	free(bufs);
	free(lens);
	if (nerr == 0)
		log_info("dkim-sign: %zu key%s read%s", c->ndkim_sign,
		    c->ndkim_sign == 1 ? "" : "s", helper ? " by the privileged "
		    "helper" : "");
	return nerr == 0 ? 0 : -1;
}

/*
 * Re-read the configuration and certificates; on any error keep the
 * running ones. Listeners stay as bound. Returns 0 or -1.
 */
static int ternd_reload_conf(struct ternd *t);

static int
ternd_reload(struct ternd *t)
{
	log_info("reloading %s", t->conf_path);
	smtpd_notify("RELOADING=1");
	int r = ternd_reload_conf(t);
	smtpd_notify("READY=1");
	return r;
}

/* The reload proper; ternd_reload() tells the service manager around it. */
static int
ternd_reload_conf(struct ternd *t)
{
	struct conf *nc = NULL;
	int to_log = 1;
	struct tls_server *ntls = NULL;
	char err[512];

	/* with the helper, the certificate and key files are its to open */
	unsigned flags = t->helper != NULL && privhelper_alive(t->helper) ?
	    CONF_LOAD_NO_TLS_FILES : 0;
	if (conf_load_flags(t->conf_path, flags, &nc, ternd_conf_err,
	    &to_log) != 0) {
		log_warnx("reload failed: keeping the running configuration");
		return -1;
	}
	if (ternd_route_auth(t, nc, 1, &to_log) != 0 ||
	    ternd_dkim_keys(t, nc, 1, &to_log) != 0) {
		log_warnx("reload failed: keeping the running configuration");
		conf_unref(nc);
		return -1;
	}
	if (nc->ntls > 0 && (ntls = ternd_reload_tls(t, nc, err,
	    sizeof(err))) == NULL) {
		log_warnx("reload failed: %s: keeping the running "
		    "configuration", err);
		conf_unref(nc);
		return -1;
	}
	pthread_mutex_lock(&t->srv.conf_lock);
	struct conf *old = t->srv.conf;
	struct tls_server *oldtls = t->srv.tls;
	t->srv.conf = nc;
	t->srv.tls = ntls;
	pthread_mutex_unlock(&t->srv.conf_lock);
	log_set_json(nc->log_json);
	deliver_pool_set_conf(t->pool, nc);
	sched_set_conf(t->sched, nc);
	tlsrpt_reporter_set_conf(t->tlsrpt, nc);
	conf_unref(old);
	tls_server_unref(oldtls);
	log_info("reload done (listeners unchanged: they need a restart)");
	return 0;
}

static int
ternd_ctl_reload(void *arg)
{
	return ternd_reload(arg);
}

static void
ternd_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct ternd *t = arg;

	switch (sig) {
	case SIGTERM:
	case SIGINT:
		log_info("signal %d: stopping", (int)sig);
		smtpd_notify("STOPPING=1");
		event_base_loopbreak(t->base);
		break;
	case SIGHUP:
		ternd_reload(t);
		break;
	}
}

static unsigned
ternd_ncpu(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}

/* Operator requests go to the scheduler thread, which answers them. */
static int
ternd_ctl_op(void *arg, struct ctl_op *op)
{
	struct ternd *t = arg;

	sched_ctl_submit(t->sched, op);
	return 0;
}

/*
 * --rebuild-index: offline (the queue lock refuses while ternd runs), as
 * the run-time user; the rebuild logs its own line with the counts.
 */
static int
ternd_rebuild_index(struct conf *conf, const struct passwd *pw)
{
	struct queue_opts qo = {
		.dir = conf->queue_dir,
		.segment_size = conf->segment_size,
		.spool_memory = conf->spool_memory,
		.spool_budget = conf->spool_memory_total,
		.rebuild_index = 1,
	};
	struct queue *q = NULL;
	char err[512];

	ternd_queue_dir(conf, pw);
	if (pw != NULL)
		ternd_drop_privileges(pw);
	if (queue_open(&qo, &q, err, sizeof(err)) < 0) {
		log_warnx("queue %s: index not rebuilt: %s", conf->queue_dir, err);
		conf_unref(conf);
		return 1;
	}
	queue_close(q);
	conf_unref(conf);
	return 0;
}

int
main(int argc, char **argv)
{
	struct ternd t;
	int ch, check_only = 0, verbose = 0, to_log = 0;
	struct conf *conf = NULL;
	char err[512];

	memset(&t, 0, sizeof(t));
	t.conf_path = TERND_DEFAULT_CONF;
	static const struct option longopts[] = {
		{ "rebuild-index", no_argument, NULL, 'R' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'H' },
		{ "verify-index", no_argument, NULL, 'X' },
		{ NULL, 0, NULL, 0 },
	};
	int rebuild = 0, verify = 0;
	while ((ch = getopt_long(argc, argv, "c:nvh", longopts, NULL)) != -1) {
		switch (ch) {
		case 'R':
			rebuild = 1;
			break;
		case 'V':
			printf("ternd %s\n", TERN_VERSION);
			return 0;
		case 'H':
			ternd_usage(1);
			break;
		case 'X':
			verify = 1;
			break;
		case 'c':
			t.conf_path = optarg;
			break;
		case 'n':
			check_only = 1;
			break;
		case 'v':
			verbose = 1;
			break;
		default:
			ternd_usage(0);
		}
	}
	if (optind != argc)
		ternd_usage(0);

	log_init("ternd", 0, verbose);
	if (conf_load(t.conf_path, &conf, ternd_conf_err, &to_log) != 0) {
		fprintf(stderr, "ternd: %s: configuration has errors\n", t.conf_path);
		return 1;
	}
	/* as root, before the drop: the file may be root's alone */
	if (ternd_route_auth(&t, conf, 0, &to_log) != 0 ||
	    ternd_dkim_keys(&t, conf, 0, &to_log) != 0) {
		fprintf(stderr, "ternd: %s: configuration has errors\n", t.conf_path);
		conf_unref(conf);
		return 1;
	}
	if (check_only) {
		printf("ternd: configuration %s is valid\n", t.conf_path);
		conf_unref(conf);
		return 0;
	}
	if (conf->log_syslog)
		log_init("ternd", 1, verbose);
	log_set_json(conf->log_json);

	signal(SIGPIPE, SIG_IGN);
	ternd_raise_nofile(conf);
	if (evthread_use_pthreads() < 0)
		fatalx("evthread_use_pthreads failed");
	tls_libevent_init();    /* before the loops and workers start */

	struct passwd *pw = NULL;
	if (geteuid() == 0) {
		if (conf->user == NULL)
			fatalx("%s: refusing to run as root: set the `user` directive",
			    t.conf_path);
		if ((pw = getpwnam(conf->user)) == NULL)
			fatalx("%s: user %s does not exist", t.conf_path, conf->user);
	}

	if (rebuild)
		return ternd_rebuild_index(conf, pw);
	/* before any thread, any listener and the drop: see privhelper.c */
	if (pw != NULL && pw->pw_uid != 0) {
		if ((t.helper = privhelper_start(t.conf_path, err,
		    sizeof(err))) == NULL)
			fatalx("privileged helper: %s", err);
		log_info("privileged helper pid=%d started: it reads tls-cert "
		    "and tls-key files for reloads", (int)privhelper_pid(t.helper));
	}

	struct smtpd_server *srv = &t.srv;
	pthread_mutex_init(&srv->conf_lock, NULL);
	srv->conf = conf;
	srv->nloops = conf->session_threads ? conf->session_threads : ternd_ncpu();
	smtpd_connlimit_init(srv);
	if (smtpd_listeners_bind(srv, err, sizeof(err)) < 0)
		fatalx("%s", err);
	srv->local_fd = -1;
	if (conf->local_socket != NULL && (srv->local_fd = smtpd_local_bind(
	    conf->local_socket, pw, err, sizeof(err))) < 0)
		fatalx("%s", err);
	/* Keys are read while still root; they need not be readable later. */
	if (conf->ntls > 0 && (srv->tls = tls_server_new(conf, err,
	    sizeof(err))) == NULL)
		fatalx("%s: %s", t.conf_path, err);

	ternd_queue_dir(conf, pw);
	if (pw != NULL)
		ternd_drop_privileges(pw);
	ternd_no_new_privs();

	struct queue_opts qo = {
		.dir = conf->queue_dir,
		.segment_size = conf->segment_size,
		.spool_memory = conf->spool_memory,
		.spool_budget = conf->spool_memory_total,
		.reserve_size = conf->queue_reserve,
		.readonly = 0,
		.verify_index = verify,
	};
	uint64_t t0 = now_mono_us();
	if (queue_open(&qo, &t.queue, err, sizeof(err)) < 0)
		fatalx("queue %s: %s", conf->queue_dir, err);
	log_info("queue %s open in %llu ms", conf->queue_dir,
	    (unsigned long long)((now_mono_us() - t0) / 1000));
	srv->queue = t.queue;

	/* AUTH: users database (read-only here; ternctl writes it), pool, throttle. */
	srv->auth_db = auth_db_open(conf->users_db, 0, err, sizeof(err));
	if (srv->auth_db == NULL)
		fatalx("users-db %s: %s", conf->users_db, err);
	srv->auth_pool = auth_pool_start(2);
	struct auth_throttle_conf atc = AUTH_THROTTLE_CONF_DEFAULT;
	atc.max_failures = conf->auth_max_failures;
	atc.window_s = conf->auth_failure_window;
	srv->auth_throttle = auth_throttle_new(&atc);

	t.base = event_base_new();
	if (t.base == NULL)
		fatalx("event_base_new failed");
	struct event *sigs[4];
	int signos[4] = { SIGTERM, SIGINT, SIGHUP, 0 };
	for (int i = 0; signos[i]; i++) {
		sigs[i] = evsignal_new(t.base, signos[i], ternd_signal_cb, &t);
		evsignal_add(sigs[i], NULL);
	}

	/*
	 * Mail first: the sessions accept from here on (what they commit is
	 * in the index before the scheduler's load walks it, or announced to
	 * it). Then delivery: workers, then the scheduler, which loads its
	 * schedule in the background.
	 */
	smtpd_loops_start(srv);
	unsigned ndlv = conf->delivery_threads ? conf->delivery_threads :
	    ternd_ncpu();
	t.tlsrpt = tlsrpt_reporter_start(t.queue, conf);
	t.pool = deliver_pool_start(t.queue, conf, ndlv);
	t.sched = sched_start(t.queue, conf, t.pool);
	queue_set_notify(t.queue, sched_inbox(t.sched));

	/* Control socket for ternctl, after the drop: owned by the run-time user. */
	struct ctl_hooks hooks = { .op = ternd_ctl_op,
	    .reload = ternd_ctl_reload, .arg = &t };
	gid_t ctl_gid = (gid_t)-1;
	if (conf->control_group != NULL) {
		struct group *gr = getgrnam(conf->control_group);
		if (gr == NULL)
			fatalx("control-group %s does not exist", conf->control_group);
		ctl_gid = gr->gr_gid;
	}
	t.ctl = ctl_server_new(t.base, conf->control_socket, t.queue, &hooks,
	    ctl_gid, err, sizeof(err));
	if (t.ctl == NULL)
		fatalx("control socket %s: %s", conf->control_socket, err);

	if (conf->metrics_listen != NULL && (t.metrics = metrics_server_new(t.base,
	    conf->metrics_listen, t.queue, err, sizeof(err))) == NULL)
		fatalx("metrics-listen %s: %s", conf->metrics_listen, err);

	char lbuf[1024];
	size_t o = 0;
	lbuf[0] = '\0';
	for (size_t i = 0; i < conf->nlisten && o < sizeof(lbuf); i++)
		o += (size_t)snprintf(lbuf + o, sizeof(lbuf) - o, "%s%s/%s",
		    i ? "," : "", conf->listen[i].spec,
		    conf_listen_mode_name(conf->listen[i].mode));
	log_info("ready listeners=%s%s%s threads=%u version=%s", lbuf,
	    conf->local_socket != NULL ? " local-socket=" : "",
	    conf->local_socket != NULL ? conf->local_socket : "", srv->nloops,
	    TERN_VERSION);
	smtpd_notify("READY=1");

	event_base_dispatch(t.base);

	/* Graceful stop. */
	ctl_server_free(t.ctl);
	metrics_server_free(t.metrics);
	smtpd_loops_stop(srv, TERND_STOP_GRACE);
	/* workers first (attempts in flight stay pending), then the scheduler */
	queue_set_notify(t.queue, NULL);
	deliver_pool_stop(t.pool);
	sched_stop(t.sched);
	tlsrpt_reporter_stop(t.tlsrpt);     /* saves the TLS-RPT counts */
	deliver_pool_free(t.pool);
	queue_close(t.queue);
	smtpd_loops_free(srv);
	auth_pool_stop(srv->auth_pool);
	auth_db_close(srv->auth_db);
	auth_throttle_free(srv->auth_throttle);
	for (int i = 0; signos[i]; i++)
		event_free(sigs[i]);
	event_base_free(t.base);
	conf_unref(srv->conf);
	tls_server_unref(srv->tls);
	pthread_mutex_destroy(&srv->conf_lock);
	privhelper_free(t.helper);
	log_info("stopped");
	return 0;
}
