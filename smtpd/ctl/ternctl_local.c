/*
 * ternctl_local.c - ternctl-local's work on files (ternctl_int.h): the
 * answer from the queue directory when ternd is unreachable (the very
 * request handler ternd runs, ctl_request_handle, on a queue opened here),
 * and user add|del|list on the users database.
 *
 * Single-threaded, short-lived. Run as root, it first becomes the owner of
 * the directory it works in (ternctl_become_owner), so that no file ends up
 * owned by root and no symlink planted by that owner is followed with
 * root's rights.
 */
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "tern/auth.h"
#include "tern/conf.h"
#include "tern/ctl.h"
#include "tern/json.h"
#include "tern/queue.h"
#include "tern/util.h"
#include "ternctl_int.h"

/*
 * Root becomes the owner of a directory (uid and gid, no other groups) for
 * good before touching anything in it: that owner, the daemon's user, could
 * have planted symlinks there, and root following them would write anywhere.
 * Exits when the switch fails.
 */
static void
ternctl_become_owner(const struct stat *st, const char *dir)
{
	gid_t g = st->st_gid;

	if (setgroups(1, &g) != 0 || setresgid(g, g, g) != 0 ||
	    setresuid(st->st_uid, st->st_uid, st->st_uid) != 0)
		fatal("cannot become the owner (uid %u) of %s",
		    (unsigned)st->st_uid, dir);
}

/* Below this much free space, recovery is not tried offline. */
#define TERNCTL_RECOVER_MIN   (32ull << 20)

/*
 * Open the queue for an offline answer: with recovery when qo says so and
 * the disk has room for it, else (or when that fails) read-only, which
 * writes nothing and so works on a full disk; the index is then read as it
 * stands (exact after a clean stop; doc/queue.md "Read-only open").
 */
static int
ternctl_local_open(struct queue_opts *qo, struct queue **q, char *err,
    size_t errlen)
{
	struct statvfs sv;
	char why[512];
	int full = statvfs(qo->dir, &sv) == 0 &&
	    (uint64_t)sv.f_bavail * sv.f_frsize < TERNCTL_RECOVER_MIN;

	if (qo->readonly)
		return queue_open(qo, q, err, errlen);
	if (!full && queue_open(qo, q, err, errlen) == 0)
		return 0;
	snprintf(why, sizeof(why), "%s", full ? "disk nearly full" : err);
	qo->readonly = 1;
	if (queue_open(qo, q, err, errlen) < 0)
		return -1;
	fprintf(stderr, "ternctl: %s: %s; reading the index as it stands "
	    "(start ternd to recover it)\n", qo->dir, why);
	return 0;
}

/* What an offline answer keeps open while src is read. */
struct ternctl_offline {
	struct queue *q;
	struct ctl_stream *st;      /* the listing, or NULL */
};

static int
ternctl_offline_page(void *arg, struct buf *in)
{
	struct ternctl_offline *off = arg;

	return off->st == NULL || ctl_stream_page(off->st, off->q, in);
}

static void
ternctl_offline_free(void *arg)
{
	struct ternctl_offline *off = arg;

	ctl_stream_free(off->st);
	queue_close(off->q);
	free(off);
}

int
ternctl_local(const struct ternctl_opts *o, const struct conf *cf,
    const char *req, size_t reqlen, int rdonly, struct ternctl_src *src)
{
	struct queue_opts qo = {
		.dir = cf->queue_dir, .segment_size = cf->segment_size,
		.spool_memory = cf->spool_memory, .readonly = 1,
		/* the reserve is ternd's: a reader never spends it */
	};
	struct queue *q = NULL;
	struct ctl_stream *cs = NULL;
	struct ternctl_offline *off;
	struct json_writer w;
	char err[512];
	struct stat st;

	(void)o;

	/* never create a queue where there was none */
	if (stat(cf->queue_dir, &st) == -1) {
		fprintf(stderr, "ternctl: queue directory %s: %s\n", cf->queue_dir,
		    strerror(errno));
		return -1;
	}
	/*
	 * After a crash the index may lag the segment log (acknowledged mail
	 * is indexed by recovery). So when we can act as the queue's owner,
	 * run the same recovery ternd would at start (the queue lock keeps
	 * ternd out meanwhile); root first becomes that owner so no file ends
	 * up owned by root. Otherwise read the index as it stands.
	 */
	if (geteuid() == 0 && st.st_uid != 0) {
		ternctl_become_owner(&st, cf->queue_dir);
		qo.readonly = 0;
	} else if (geteuid() == st.st_uid)
		qo.readonly = 0;
	if (rdonly)
		qo.readonly = 1;
	if (ternctl_local_open(&qo, &q, err, sizeof(err)) == -1) {
		fprintf(stderr, "ternctl: cannot open the queue directory %s: %s\n",
		    cf->queue_dir, err);
		if (rdonly)
			fprintf(stderr, "ternctl: the index cannot be read; rebuild "
			    "it from the segments: ternd --rebuild-index -c CONFIG\n");
		return -1;
	}
	json_writer_init(&w);
	(void)ctl_request_handle(q, NULL, req, reqlen, &w, &cs);
	size_t len;
	char *out = json_writer_finish(&w, &len);
	if (out == NULL) {
		fprintf(stderr, "ternctl: out of memory\n");
		ctl_stream_free(cs);
		queue_close(q);
		return -1;
	}
	off = xcalloc(1, sizeof(*off));
	off->q = q;                     /* closed with src: pages may follow */
	off->st = cs;
	src->local = off;
	src->local_page = ternctl_offline_page;
	src->local_free = ternctl_offline_free;
	buf_add(&src->in, out, len);
	buf_add(&src->in, "\n", 1);
	free(out);
	return 0;
}

static int
ternctl_user_list_cb(const char *name, void *arg)
{
	struct json_writer *w = arg;
	if (w != NULL)
		json_put_str(w, name);
	else
		printf("%s\n", name);
	return 0;
}

/*
 * Run as root, user add|del|list first become the owner of the directory
 * that holds the users database when that owner is not root (the queue
 * directory, owned by the daemon's user): the files are then made, locked
 * and replaced with that user's rights only, and a new users.db belongs to
 * it. A root-owned directory (or none yet) keeps root, and auth.c refuses
 * symlinks there.
 */
static void
ternctl_user_drop(const char *users_db)
{
	char *dir = xstrdup(users_db), *slash = strrchr(dir, '/');
	struct stat st;

	if (slash == NULL)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	if (geteuid() == 0 && stat(dir, &st) == 0 && S_ISDIR(st.st_mode) &&
	    st.st_uid != 0)
		ternctl_become_owner(&st, dir);
	free(dir);
}

/*
 * user add|del|list: works on the users database file directly (atomic
 * replace; ternd notices the new file at its next AUTH), so it needs write
 * access to the queue directory but not a running daemon.
 */
int
ternctl_user(const struct ternctl_opts *o, const struct conf *cf)
{
	char err[512], pass[AUTH_PASS_MAX + 2];
	int rc = TERNCTL_EX_FAIL;
	struct auth_db *db;

	ternctl_user_drop(cf->users_db);
	db = auth_db_open(cf->users_db, strcmp(o->user_op, "list") != 0, err,
	    sizeof(err));
	if (db == NULL) {
		fprintf(stderr, "ternctl: %s: %s\n", cf->users_db, err);
		return TERNCTL_EX_FAIL;
	}
	if (strcmp(o->user_op, "add") == 0) {
		if (isatty(STDIN_FILENO))
			fprintf(stderr, "password for %s (one line): ", o->user_name);
		if (fgets(pass, sizeof(pass), stdin) == NULL) {
			fprintf(stderr, "ternctl: user add: no password on stdin\n");
			rc = TERNCTL_EX_USAGE;
			goto done;
		}
		size_t n = strlen(pass);
		if (n > 0 && pass[n - 1] != '\n' && !feof(stdin)) {
			fprintf(stderr, "ternctl: user add: password longer than %d "
			    "bytes\n", AUTH_PASS_MAX);
			rc = TERNCTL_EX_USAGE;
			goto done;
		}
		while (n > 0 && (pass[n - 1] == '\n' || pass[n - 1] == '\r'))
			pass[--n] = '\0';
		if (auth_user_set(db, o->user_name, pass, err, sizeof(err)) < 0) {
			fprintf(stderr, "ternctl: user add %s: %s\n", o->user_name, err);
			rc = TERNCTL_EX_USAGE;
			goto done;
		}
		if (o->json)
			printf("{\"ok\":true}\n");
		else
			printf("user %s set\n", o->user_name);
		rc = TERNCTL_EX_OK;
	} else if (strcmp(o->user_op, "del") == 0) {
		int r = auth_user_del(db, o->user_name, err, sizeof(err));
		if (r < 0) {
			fprintf(stderr, "ternctl: user del %s: %s\n", o->user_name, err);
			goto done;
		}
		if (r == 1) {
			fprintf(stderr, "ternctl: user del: no such user: %s\n",
			    o->user_name);
			rc = TERNCTL_EX_NOTFOUND;
			goto done;
		}
		if (o->json)
			printf("{\"ok\":true}\n");
		else
			printf("user %s deleted\n", o->user_name);
		rc = TERNCTL_EX_OK;
	} else {
		struct json_writer w;
		if (o->json) {
			json_writer_init(&w);
			json_obj_open(&w);
			json_key(&w, "ok");
			json_put_bool(&w, 1);
			json_key(&w, "users");
			json_arr_open(&w);
		}
		if (auth_user_list(db, ternctl_user_list_cb, o->json ? &w : NULL,
		    err, sizeof(err)) < 0) {
			fprintf(stderr, "ternctl: user list: %s\n", err);
			goto done;
		}
		if (o->json) {
			size_t len;
			json_arr_close(&w);
			json_obj_close(&w);
			char *out = json_writer_finish(&w, &len);
			if (out != NULL)
				printf("%.*s\n", (int)len, out);
			free(out);
		}
		rc = TERNCTL_EX_OK;
	}
done:
	explicit_bzero(pass, sizeof(pass));
	auth_db_close(db);
	return rc;
}
