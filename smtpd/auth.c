/*
 * auth.c - password hashing, the user database, the auth_check() thread
 * pool and the failed-attempt throttle (see tern/auth.h).
 *
 * Runs in:   auth_check() on pool threads (or ternctl's main thread);
 *            auth_check_cached() on session loops;
 *            auth_user_set/del in ternctl; throttle calls on session loops.
 * Owns:      struct auth_db (the BDB handle, path), struct auth_pool (its
 *            threads and pending requests, passwords included), struct
 *            auth_throttle (its table). Results posted to a tq belong to
 *            the receiving handler.
 * Never:     logs a password or a hash; keeps a password after use (every
 *            copy is wiped); blocks a session loop (auth_pool_check() only
 *            queues; auth_check_cached() reads one record from the open
 *            user database, never hashes nor re-opens; throttle calls
 *            hold a mutex for a table scan).
 * Untrusted: user names and passwords come from the peer, bounded by
 *            sasl.c to 255 octets; auth_check() re-checks.
 *
 * Hashes are crypt(3) strings from libxcrypt: new ones are yescrypt ("$y$",
 * libxcrypt's default cost); verification accepts whatever prefix is
 * stored. An unknown user, an invalid name or a malformed stored hash costs
 * one hash against a dummy yescrypt hash made once per process with the
 * same parameters, so the reply time does not reveal which users exist.
 *
 * The user file is replaced, never edited: see auth_db_rewrite(). Readers
 * hold their open file, so (device, inode) of what they read cannot be
 * reused while they hold it, and a changed identity means "re-open".
 */
#include <sys/file.h>
#include <sys/queue.h>
#include <sys/stat.h>

#include <crypt.h>
#include <db.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "tern/auth.h"
#include "tern/log.h"
#include "tern/tq.h"
#include "tern/util.h"

/* ------------------------------------------------------------------ */
/* Replies and names                                                  */

const struct sasl_reply *
auth_status_reply(enum auth_status st)
{
	static const struct sasl_reply r_ok = { 235, "2.7.0",
	    "Authentication successful" };
	static const struct sasl_reply r_fail = { 535, "5.7.8",
	    "Authentication credentials invalid" };
	static const struct sasl_reply r_temp = { 454, "4.7.0",
	    "Temporary authentication failure" };

	switch (st) {
	case AUTH_OK: return &r_ok;
	case AUTH_FAIL: return &r_fail;
	case AUTH_TEMPFAIL: return &r_temp;
	}
	return &r_temp;
}

int
auth_user_valid(const char *name, size_t len)
{
	size_t i;

	if (len == 0 || len > AUTH_USER_MAX)
		return 0;
	for (i = 0; i < len; i++)
		if ((unsigned char)name[i] < 0x21 || (unsigned char)name[i] > 0x7e)
			return 0;
	return 1;
}

/* Validate name and copy it lower-cased into out[AUTH_USER_MAX + 1]. */
static int
auth_user_canon(const char *name, char *out)
{
	size_t i, len = strnlen(name, AUTH_USER_MAX + 1);

	out[0] = '\0';
	if (!auth_user_valid(name, len))
		return -1;
	for (i = 0; i < len; i++) {
		char c = name[i];
		out[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
	}
	out[len] = '\0';
	return 0;
}

static int
auth_pass_valid(const char *pass)
{
	size_t len = strnlen(pass, AUTH_PASS_MAX + 1);
	return len > 0 && len <= AUTH_PASS_MAX;
}

/* ------------------------------------------------------------------ */
/* Password hashing                                                   */

static atomic_uint_fast64_t auth_hashes;
static pthread_once_t auth_dummy_once = PTHREAD_ONCE_INIT;
static char auth_dummy[AUTH_HASH_MAX];

uint64_t
auth_hash_count(void)
{
	return (uint64_t)atomic_load(&auth_hashes);
}

/* crypt_rn() into a heap crypt_data (30 KiB: too big for a small stack). */
static int
auth_crypt(const char *pass, const char *setting, char *out, size_t outlen)
{
	struct crypt_data *cd;
	const char *h;
	int rc = -1;

	cd = calloc(1, sizeof(*cd));
	if (cd == NULL)
		return -1;
	atomic_fetch_add(&auth_hashes, 1);
	h = crypt_rn(pass, setting, cd, (int)sizeof(*cd));
	if (h != NULL && h[0] != '*' && strlen(h) < outlen) {
		memcpy(out, h, strlen(h) + 1);
		rc = 0;
	}
	explicit_bzero(cd, sizeof(*cd));
	free(cd);
	return rc;
}

int
auth_password_hash(const char *pass, char *out, size_t outlen)
{
	char salt[CRYPT_GENSALT_OUTPUT_SIZE];

	if (outlen > 0)
		out[0] = '\0';
	if (crypt_gensalt_rn("$y$", 0, NULL, 0, salt, (int)sizeof(salt)) ==
	    NULL)
		return -1;
	return auth_crypt(pass, salt, out, outlen);
}

static void
auth_dummy_init(void)
{
	unsigned char rnd[16];
	char phrase[sizeof(rnd) * 2 + 1];
	size_t i;

	/* The phrase does not matter (no user maps to it); make it random. */
	memset(rnd, 0x5a, sizeof(rnd));
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		log_debug("auth: RAND_bytes failed; a fixed dummy phrase");
	for (i = 0; i < sizeof(rnd); i++)
		snprintf(phrase + 2 * i, 3, "%02x", rnd[i]);
	if (auth_password_hash(phrase, auth_dummy, sizeof(auth_dummy)) != 0)
		fatalx("auth: cannot make the dummy yescrypt hash");
}

/* Spend one hash on nothing, the way a real check would. */
static void
auth_dummy_verify(const char *pass)
{
	char out[AUTH_HASH_MAX];

	pthread_once(&auth_dummy_once, auth_dummy_init);
	(void)auth_crypt(pass, auth_dummy, out, sizeof(out));
	explicit_bzero(out, sizeof(out));
}

int
auth_password_verify(const char *pass, const char *hash)
{
	char out[AUTH_HASH_MAX];
	size_t hlen = strnlen(hash, AUTH_HASH_MAX);
	int ok;

	if (hlen == 0 || hlen >= AUTH_HASH_MAX || hash[0] != '$' ||
	    auth_crypt(pass, hash, out, sizeof(out)) != 0) {
		auth_dummy_verify(pass);
		return 0;
	}
	/* Lengths are public (same hash string); the bytes compare in
	 * constant time. */
	ok = strlen(out) == hlen && CRYPTO_memcmp(out, hash, hlen) == 0;
	explicit_bzero(out, sizeof(out));
	return ok;
}

/* ------------------------------------------------------------------ */
/* User database                                                      */

struct auth_db {
	char *path;               /* owned */
	int writable;
	pthread_rwlock_t lock;    /* read: lookups; write: re-open */
	DB *db;                   /* NULL when absent or broken */
	int present;              /* the file existed at the last open */
	int broken;               /* the last (re)open failed */
	dev_t dev;                /* identity of the open file */
	ino_t ino;
	off_t size;
	struct timespec mtim;
};

static void
auth_seterr(char *err, size_t errlen, const char *fmt, ...)
    TERN_PRINTF(3, 4);

static void
auth_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Berkeley DB's own diagnostics go to our log, not to stderr. */
static void
auth_db_errcall(const DB_ENV *env, const char *pfx, const char *msg)
{
	log_warnx("auth: db: %s", msg);
}

/* Open a btree file; *out NULL and 0 when it does not exist (ENOENT). */
static int
auth_db_open_file(const char *path, u_int32_t flags, int mode, DB **out,
    char *err, size_t errlen)
{
	DB *d = NULL;
	int ret;

	*out = NULL;
	ret = db_create(&d, NULL, 0);
	if (ret != 0) {
		auth_seterr(err, errlen, "db_create: %s", db_strerror(ret));
		return -1;
	}
	d->set_errcall(d, auth_db_errcall);
	ret = d->open(d, NULL, path, NULL, DB_BTREE, flags, mode);
	if (ret != 0) {
		d->close(d, 0);
		if (ret == ENOENT && !(flags & DB_CREATE))
			return 0;
		auth_seterr(err, errlen, "%s: %s", path, db_strerror(ret));
		return -1;
	}
	*out = d;
	return 0;
}

/* Close and re-open the reader handle. Write lock held. */
static void
auth_db_reopen(struct auth_db *db)
{
	char err[256];
	struct stat st;
	int fd;

	if (db->db != NULL) {
		db->db->close(db->db, 0);
		db->db = NULL;
	}
	db->present = 0;
	db->broken = 0;
	if (auth_db_open_file(db->path, DB_RDONLY | DB_THREAD, 0, &db->db,
	    err, sizeof(err)) != 0) {
		log_warnx("auth: %s", err);
		db->broken = 1;
		return;
	}
	if (db->db == NULL)
		return;      /* no file: no users */
	if (db->db->fd(db->db, &fd) != 0 || fstat(fd, &st) != 0) {
		log_warn("auth: %s: fstat", db->path);
		db->db->close(db->db, 0);
		db->db = NULL;
		db->broken = 1;
		return;
	}
	db->present = 1;
	db->dev = st.st_dev;
	db->ino = st.st_ino;
	db->size = st.st_size;
	db->mtim = st.st_mtim;
}

/* Does the file at path differ from what is open? Any lock held. */
static int
auth_db_changed(const struct auth_db *db, int rc, int serr,
    const struct stat *st)
{
	if (rc != 0)
		return serr == ENOENT ? (db->present || db->broken) : 1;
	return !db->present || db->broken || st->st_dev != db->dev ||
	    st->st_ino != db->ino || st->st_size != db->size ||
	    st->st_mtim.tv_sec != db->mtim.tv_sec ||
	    st->st_mtim.tv_nsec != db->mtim.tv_nsec;
}

/* Take the read lock on an up-to-date handle. */
static void
auth_db_acquire(struct auth_db *db)
{
	struct stat st;
	int rc, serr;

	rc = stat(db->path, &st);
	serr = errno;
	pthread_rwlock_rdlock(&db->lock);
	if (!auth_db_changed(db, rc, serr, &st))
		return;
	pthread_rwlock_unlock(&db->lock);

	pthread_rwlock_wrlock(&db->lock);
	rc = stat(db->path, &st);
	serr = errno;
	if (auth_db_changed(db, rc, serr, &st))
		auth_db_reopen(db);
	pthread_rwlock_unlock(&db->lock);
	pthread_rwlock_rdlock(&db->lock);
}

struct auth_db *
auth_db_open(const char *path, int writable, char *err, size_t errlen)
{
	struct auth_db *db;

	db = xcalloc(1, sizeof(*db));
	db->path = xstrdup(path);
	db->writable = writable;
	pthread_rwlock_init(&db->lock, NULL);
	auth_db_reopen(db);
	if (db->broken) {
		auth_seterr(err, errlen, "%s: cannot open user database", path);
		auth_db_close(db);
		return NULL;
	}
	if (!writable)     /* make the dummy hash now, not on a first check */
		pthread_once(&auth_dummy_once, auth_dummy_init);
	return db;
}

void
auth_db_close(struct auth_db *db)
{
	if (db == NULL)
		return;
	if (db->db != NULL)
		db->db->close(db->db, 0);
	pthread_rwlock_destroy(&db->lock);
	free(db->path);
	free(db);
}

/*
 * The directory of the user file may be writable by the daemon's user while
 * ternctl runs as root: open the lock file without following a symlink, and
 * only if it is a plain file with one link, so a planted name cannot make
 * root create, truncate or lock a file elsewhere. Returns the locked fd or
 * -1 with err.
 */
static int
auth_db_open_lock(const char *lockpath, char *err, size_t errlen)
{
	struct stat st;
	int fd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW |
	    O_NOCTTY | O_NONBLOCK, 0600);

	if (fd < 0) {
		auth_seterr(err, errlen, "%s: %s%s", lockpath, strerror(errno),
		    errno == ELOOP ? " (a symbolic link: refused)" : "");
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_nlink != 1) {
		auth_seterr(err, errlen, "%s: not a plain file: refused",
		    lockpath);
		close(fd);
		return -1;
	}
	if (flock(fd, LOCK_EX) != 0) {
		auth_seterr(err, errlen, "%s: %s", lockpath, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* The user file, when present, must be a plain file, not a symlink. */
static int
auth_db_check_plain(const char *path, char *err, size_t errlen)
{
	struct stat st;

	if (lstat(path, &st) != 0) {
		if (errno == ENOENT)
			return 0;
		auth_seterr(err, errlen, "%s: %s", path, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		auth_seterr(err, errlen, "%s: not a plain file: refused", path);
		return -1;
	}
	return 0;
}

/*
 * Replace the file with a copy in which name is set to hash (hash != NULL)
 * or removed (hash == NULL). Steps, and why a crash anywhere is safe:
 *  1. flock "<path>.lock": one writer at a time (a lost update otherwise);
 *  2. build "<path>.tmp" from the current file plus the change: a crash
 *     leaves only a stale .tmp, removed by the next writer;
 *  3. sync and close it, copy owner/mode, fsync it: its bytes are durable
 *     before anyone can see it;
 *  4. rename() over path: readers see the old file or the new one, whole;
 *  5. fsync the directory: the rename itself is durable.
 * Returns 0, 1 (delete: no such user, nothing changed), -1 with err.
 */
static int
auth_db_rewrite(struct auth_db *db, const char *name, const char *hash,
    char *err, size_t errlen)
{
	char *lockpath = NULL, *tmppath = NULL, *dir = NULL, *slash;
	DB *old = NULL, *new = NULL;
	DBC *cur = NULL;
	DBT k, v;
	struct stat ost, dst, nst;
	int lockfd = -1, fd = -1, have_ost = 0, found = 0, made = 0, renamed = 0;
	int rc = -1, ret;
	size_t nlen = strlen(name), plen = strlen(db->path);

	lockpath = xmalloc(plen + 6);
	snprintf(lockpath, plen + 6, "%s.lock", db->path);
	tmppath = xmalloc(plen + 5);
	snprintf(tmppath, plen + 5, "%s.tmp", db->path);
	dir = xstrdup(db->path);
	slash = strrchr(dir, '/');
	if (slash == NULL)
		strcpy(dir, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';

	/* 1 */
	lockfd = auth_db_open_lock(lockpath, err, errlen);
	if (lockfd < 0)
		goto fail;
	if (auth_db_check_plain(db->path, err, errlen) != 0)
		goto fail;

	/* 2 */
	if (unlink(tmppath) != 0 && errno != ENOENT) {
		auth_seterr(err, errlen, "%s: %s", tmppath, strerror(errno));
		goto fail;
	}
	if (auth_db_open_file(db->path, DB_RDONLY, 0, &old, err, errlen) != 0)
		goto fail;
	if (old != NULL && old->fd(old, &fd) == 0 && fstat(fd, &ost) == 0)
		have_ost = 1;
	fd = -1;
	if (auth_db_open_file(tmppath, DB_CREATE | DB_EXCL, 0600, &new, err,
	    errlen) != 0)
		goto fail;
	made = 1;
	if (new->fd(new, &fd) != 0 || fstat(fd, &nst) != 0) {
		fd = -1;
		goto fail_io;
	}
	fd = -1;
	if (old != NULL) {
		ret = old->cursor(old, NULL, &cur, 0);
		if (ret != 0) {
			auth_seterr(err, errlen, "%s: cursor: %s", db->path,
			    db_strerror(ret));
			goto fail;
		}
		memset(&k, 0, sizeof(k));
		memset(&v, 0, sizeof(v));
		while ((ret = cur->get(cur, &k, &v, DB_NEXT)) == 0) {
			if (k.size == nlen && memcmp(k.data, name, nlen) == 0) {
				found = 1;
				continue;
			}
			ret = new->put(new, NULL, &k, &v, 0);
			if (ret != 0)
				break;
		}
		if (ret != DB_NOTFOUND) {
			auth_seterr(err, errlen, "%s: copy: %s", db->path,
			    db_strerror(ret));
			goto fail;
		}
		cur->close(cur);
		cur = NULL;
	}
	if (hash == NULL && !found) {
		rc = 1;
		goto fail;     /* nothing to change: drop the copy */
	}
	if (hash != NULL) {
		memset(&k, 0, sizeof(k));
		memset(&v, 0, sizeof(v));
		k.data = (void *)(uintptr_t)name;
		k.size = (u_int32_t)nlen;
		v.data = (void *)(uintptr_t)hash;
		v.size = (u_int32_t)strlen(hash);
		ret = new->put(new, NULL, &k, &v, 0);
		if (ret != 0) {
			auth_seterr(err, errlen, "%s: put: %s", tmppath,
			    db_strerror(ret));
			goto fail;
		}
	}

	/* 3 */
	ret = new->sync(new, 0);
	ret = new->close(new, 0) != 0 ? -1 : ret;
	new = NULL;
	if (ret != 0) {
		auth_seterr(err, errlen, "%s: sync/close failed", tmppath);
		goto fail;
	}
	/* the very file made above, not whatever another user put there since */
	fd = open(tmppath, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (fd < 0)
		goto fail_io;
	if (fstat(fd, &dst) != 0)
		goto fail_io;
	if (dst.st_dev != nst.st_dev || dst.st_ino != nst.st_ino) {
		auth_seterr(err, errlen, "%s: replaced while being written",
		    tmppath);
		goto fail;
	}
	if (have_ost) {
		if (geteuid() == 0 && fchown(fd, ost.st_uid, ost.st_gid) != 0)
			goto fail_io;
		if (fchmod(fd, ost.st_mode & 07777) != 0)
			goto fail_io;
	} else {
		if (geteuid() == 0 && stat(dir, &dst) == 0 &&
		    fchown(fd, dst.st_uid, dst.st_gid) != 0)
			goto fail_io;
		if (fchmod(fd, 0600) != 0)
			goto fail_io;
	}
	if (fsync(fd) != 0)
		goto fail_io;

	/* 4, 5 */
	if (rename(tmppath, db->path) != 0)
		goto fail_io;
	renamed = 1;
	if (fsync_dir(dir) != 0) {
		auth_seterr(err, errlen, "%s: fsync: %s", dir, strerror(errno));
		goto fail;
	}
	rc = 0;
	goto fail;      /* shared cleanup */

fail_io:
	auth_seterr(err, errlen, "%s: %s", tmppath, strerror(errno));
fail:
	if (cur != NULL)
		cur->close(cur);
	if (new != NULL)
		new->close(new, 0);
	if (old != NULL)
		old->close(old, 0);
	if (fd >= 0)
		close(fd);
	if (made && !renamed)
		(void)unlink(tmppath);
	if (lockfd >= 0)
		close(lockfd);     /* releases the flock */
	free(lockpath);
	free(tmppath);
	free(dir);
	return rc;
}

int
auth_user_set(struct auth_db *db, const char *name, const char *pass,
    char *err, size_t errlen)
{
	char user[AUTH_USER_MAX + 1], hash[AUTH_HASH_MAX];
	int rc;

	if (!db->writable) {
		auth_seterr(err, errlen, "user database opened read-only");
		return -1;
	}
	if (auth_user_canon(name, user) != 0) {
		auth_seterr(err, errlen, "invalid user name (1-255 printable "
		    "ASCII characters, no spaces)");
		return -1;
	}
	if (!auth_pass_valid(pass)) {
		auth_seterr(err, errlen, "invalid password (1-255 octets)");
		return -1;
	}
	if (auth_password_hash(pass, hash, sizeof(hash)) != 0) {
		auth_seterr(err, errlen, "cannot hash the password (yescrypt)");
		return -1;
	}
	pthread_rwlock_wrlock(&db->lock);
	rc = auth_db_rewrite(db, user, hash, err, errlen);
	pthread_rwlock_unlock(&db->lock);
	explicit_bzero(hash, sizeof(hash));
	return rc;
}

int
auth_user_del(struct auth_db *db, const char *name, char *err, size_t errlen)
{
	char user[AUTH_USER_MAX + 1];
	int rc;

	if (!db->writable) {
		auth_seterr(err, errlen, "user database opened read-only");
		return -1;
	}
	if (auth_user_canon(name, user) != 0)
		return 1;       /* could never have been added */
	pthread_rwlock_wrlock(&db->lock);
	rc = auth_db_rewrite(db, user, NULL, err, errlen);
	pthread_rwlock_unlock(&db->lock);
	return rc;
}

int
auth_user_list(struct auth_db *db, int (*cb)(const char *name, void *arg),
    void *arg, char *err, size_t errlen)
{
	char name[AUTH_USER_MAX + 1];
	DBC *cur = NULL;
	DBT k, v;
	int ret, n = 0;

	auth_db_acquire(db);
	if (db->broken) {
		auth_seterr(err, errlen, "%s: cannot open user database",
		    db->path);
		n = -1;
		goto done;
	}
	if (db->db == NULL)
		goto done;
	ret = db->db->cursor(db->db, NULL, &cur, 0);
	if (ret != 0) {
		auth_seterr(err, errlen, "%s: %s", db->path, db_strerror(ret));
		n = -1;
		goto done;
	}
	memset(&k, 0, sizeof(k));
	memset(&v, 0, sizeof(v));
	k.data = name;
	k.ulen = AUTH_USER_MAX;
	k.flags = DB_DBT_USERMEM;
	v.flags = DB_DBT_USERMEM | DB_DBT_PARTIAL;   /* no hash copied out */
	v.data = name;     /* never written: dlen 0 */
	v.ulen = 0;
	v.dlen = 0;
	while ((ret = cur->get(cur, &k, &v, DB_NEXT)) == 0) {
		name[k.size] = '\0';
		n++;
		if (cb(name, arg) != 0)
			break;
	}
	if (ret != 0 && ret != DB_NOTFOUND) {
		auth_seterr(err, errlen, "%s: %s", db->path, db_strerror(ret));
		n = -1;
	}
done:
	if (cur != NULL)
		cur->close(cur);
	pthread_rwlock_unlock(&db->lock);
	return n;
}

/* ------------------------------------------------------------------ */
/* Verified-credentials cache                                         */

/*
 * A client that logs in again with the same, correct password should not
 * pay a yescrypt hash (~25 ms of CPU) each time: submission clients often
 * open a session per message. After a successful check we remember
 * tag = HMAC-SHA256(secret, user NUL password NUL stored-hash), with a
 * secret drawn at start and never stored. Only the correct password for
 * the current stored hash reproduces a tag, so: wrong passwords and unknown
 * users always take the slow path (nothing about which users exist leaks
 * through timing); a changed password or a deleted user (new or no stored
 * hash) no longer matches; entries expire after AUTH_CACHE_TTL seconds.
 */
#define AUTH_CACHE_SLOTS 1024
#define AUTH_CACHE_TTL   600

struct auth_cache_entry {
	unsigned char tag[32];
	int64_t expires;          /* 0: empty */
};

static struct auth_cache_entry auth_cache[AUTH_CACHE_SLOTS];
static pthread_mutex_t auth_cache_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned char auth_cache_key[32];
static pthread_once_t auth_cache_once = PTHREAD_ONCE_INIT;
static int auth_cache_ok;
static _Atomic uint64_t auth_cache_hits;

static void
auth_cache_init(void)
{
	auth_cache_ok = RAND_bytes(auth_cache_key, sizeof(auth_cache_key)) == 1;
}

static int
auth_cache_tag(const char *name, const char *pass, const char *hash,
    unsigned char tag[32])
{
	unsigned char buf[AUTH_USER_MAX + AUTH_PASS_MAX + AUTH_HASH_MAX + 3];
	size_t nl = strlen(name), pl = strlen(pass), hl = strlen(hash), o = 0;
	unsigned int tl = 32;

	pthread_once(&auth_cache_once, auth_cache_init);
	if (!auth_cache_ok || nl + pl + hl + 2 > sizeof(buf))
		return -1;
	memcpy(buf + o, name, nl + 1);
	o += nl + 1;
	memcpy(buf + o, pass, pl + 1);
	o += pl + 1;
	memcpy(buf + o, hash, hl);
	o += hl;
	unsigned char *r = HMAC(EVP_sha256(), auth_cache_key,
	    sizeof(auth_cache_key), buf, o, tag, &tl);
	OPENSSL_cleanse(buf, sizeof(buf));
	return r != NULL && tl == 32 ? 0 : -1;
}

static size_t
auth_cache_slot(const unsigned char tag[32])
{
	size_t h;
	memcpy(&h, tag, sizeof(h));
	return h % AUTH_CACHE_SLOTS;
}

static int
auth_cache_hit(const unsigned char tag[32])
{
	int64_t now = now_unix();
	int hit;
	pthread_mutex_lock(&auth_cache_lock);
	struct auth_cache_entry *e = &auth_cache[auth_cache_slot(tag)];
	hit = e->expires > now && CRYPTO_memcmp(e->tag, tag, 32) == 0;
	pthread_mutex_unlock(&auth_cache_lock);
	if (hit)
		auth_cache_hits++;
	return hit;
}

static void
auth_cache_put(const unsigned char tag[32])
{
	pthread_mutex_lock(&auth_cache_lock);
	struct auth_cache_entry *e = &auth_cache[auth_cache_slot(tag)];
	memcpy(e->tag, tag, 32);
	e->expires = now_unix() + AUTH_CACHE_TTL;
	pthread_mutex_unlock(&auth_cache_lock);
}

uint64_t
auth_cache_hit_count(void)
{
	return auth_cache_hits;
}

/*
 * The stored hash of user (canonical name in name): 0; AUTH_FAIL when the
 * name or password is invalid or the user unknown (no hash made here);
 * AUTH_TEMPFAIL on a broken database or a read error; -1 when probe is set
 * and the file changed since it was opened (re-opening is left to a pool
 * thread).
 */
static int
auth_stored_hash(struct auth_db *db, const char *user, const char *pass,
    int probe, char name[AUTH_USER_MAX + 1], char hash[AUTH_HASH_MAX])
{
	DBT k, v;
	int ret;

	if (auth_user_canon(user, name) != 0 || !auth_pass_valid(pass))
		return AUTH_FAIL;
	if (probe) {
		struct stat st;
		int rc = stat(db->path, &st), serr = errno;
		pthread_rwlock_rdlock(&db->lock);
		if (auth_db_changed(db, rc, serr, &st)) {
			pthread_rwlock_unlock(&db->lock);
			return -1;
		}
	} else
		auth_db_acquire(db);
	if (db->broken) {
		pthread_rwlock_unlock(&db->lock);
		return AUTH_TEMPFAIL;
	}
	ret = DB_NOTFOUND;
	if (db->db != NULL) {
		memset(&k, 0, sizeof(k));
		memset(&v, 0, sizeof(v));
		k.data = name;
		k.size = (u_int32_t)strlen(name);
		v.data = hash;
		v.ulen = AUTH_HASH_MAX - 1;
		v.flags = DB_DBT_USERMEM;
		ret = db->db->get(db->db, NULL, &k, &v, 0);
	}
	pthread_rwlock_unlock(&db->lock);

	if (ret == DB_NOTFOUND || ret == DB_BUFFER_SMALL)
		return AUTH_FAIL;
	if (ret != 0) {
		log_warnx("auth: %s: get: %s", db->path, db_strerror(ret));
		return AUTH_TEMPFAIL;
	}
	hash[v.size] = '\0';
	return 0;
}

enum auth_status
auth_check(struct auth_db *db, const char *user, const char *pass)
{
	char name[AUTH_USER_MAX + 1], hash[AUTH_HASH_MAX];
	int ret, ok;

	ret = auth_stored_hash(db, user, pass, 0, name, hash);
	if (ret == AUTH_FAIL) {
		auth_dummy_verify(pass);        /* as long as a real check */
		return AUTH_FAIL;
	}
	if (ret != 0)
		return AUTH_TEMPFAIL;
	unsigned char tag[32];
	int have_tag = auth_cache_tag(name, pass, hash, tag) == 0;
	if (have_tag && auth_cache_hit(tag)) {
		explicit_bzero(hash, sizeof(hash));
		return AUTH_OK;
	}
	ok = auth_password_verify(pass, hash);
	explicit_bzero(hash, sizeof(hash));
	if (ok && have_tag)
		auth_cache_put(tag);
	return ok ? AUTH_OK : AUTH_FAIL;
}

int
auth_check_cached(struct auth_db *db, const char *user, const char *pass,
    char name[AUTH_USER_MAX + 1])
{
	char hash[AUTH_HASH_MAX];
	unsigned char tag[32];
	int hit;

	if (auth_stored_hash(db, user, pass, 1, name, hash) != 0) {
		explicit_bzero(hash, sizeof(hash));
		return -1;
	}
	hit = auth_cache_tag(name, pass, hash, tag) == 0 && auth_cache_hit(tag);
	explicit_bzero(hash, sizeof(hash));
	explicit_bzero(tag, sizeof(tag));
	return hit ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* Thread pool                                                        */

struct auth_req {
	STAILQ_ENTRY(auth_req) next;
	struct auth_db *db;          /* borrowed */
	struct tq *reply;            /* borrowed */
	uint64_t reqid;
	char user[AUTH_USER_MAX + 1];
	char pass[AUTH_PASS_MAX + 1];  /* secret: wiped before free */
};

struct auth_pool {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	STAILQ_HEAD(auth_req_list, auth_req) reqs;     /* owned, oldest first */
	size_t pending;
	int stopping;
	int nthreads;
	pthread_t *threads;
};

static void
auth_req_free(struct auth_req *r)
{
	explicit_bzero(r, sizeof(*r));
	free(r);
}

static void *
auth_pool_main(void *arg)
{
	struct auth_pool *p = arg;
	struct auth_req *r;
	struct auth_result *res;

	for (;;) {
		pthread_mutex_lock(&p->lock);
		while (STAILQ_EMPTY(&p->reqs) && !p->stopping)
			pthread_cond_wait(&p->cond, &p->lock);
		if (p->stopping) {
			pthread_mutex_unlock(&p->lock);
			return NULL;
		}
		r = STAILQ_FIRST(&p->reqs);
		STAILQ_REMOVE_HEAD(&p->reqs, next);
		p->pending--;
		pthread_mutex_unlock(&p->lock);

		res = xcalloc(1, sizeof(*res));
		res->hdr.type = TQ_AUTH_DONE;
		res->hdr.reqid = r->reqid;
		res->status = auth_check(r->db, r->user, r->pass);
		if (auth_user_canon(r->user, res->user) != 0)
			res->user[0] = '\0';
		tq_post(r->reply, &res->hdr);
		auth_req_free(r);
	}
}

struct auth_pool *
auth_pool_start(int nthreads)
{
	struct auth_pool *p;
	sigset_t all, old;
	int i;

	if (nthreads < 1 || nthreads > 64)
		fatalx("auth_pool_start: bad thread count %d", nthreads);
	p = xcalloc(1, sizeof(*p));
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	STAILQ_INIT(&p->reqs);
	p->threads = xcalloc((size_t)nthreads, sizeof(*p->threads));
	/* Workers take no signals: the loops handle them. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	for (i = 0; i < nthreads; i++) {
		int err = pthread_create(&p->threads[i], NULL, auth_pool_main, p);
		if (err != 0) {
			errno = err;
			fatal("auth_pool_start: pthread_create");
		}
		p->nthreads++;
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_once(&auth_dummy_once, auth_dummy_init);
	return p;
}

int
auth_pool_check(struct auth_pool *p, struct auth_db *db, const char *user,
    const char *pass, struct tq *reply, uint64_t reqid)
{
	struct auth_req *r;

	r = xcalloc(1, sizeof(*r));
	r->db = db;
	r->reply = reply;
	r->reqid = reqid;
	/* Over-long input cannot be a valid user: "" fails, after a hash. */
	if (strnlen(user, AUTH_USER_MAX + 1) <= AUTH_USER_MAX &&
	    strnlen(pass, AUTH_PASS_MAX + 1) <= AUTH_PASS_MAX) {
		memcpy(r->user, user, strlen(user) + 1);
		memcpy(r->pass, pass, strlen(pass) + 1);
	}

	pthread_mutex_lock(&p->lock);
	if (p->stopping || p->pending >= AUTH_POOL_MAX_PENDING) {
		pthread_mutex_unlock(&p->lock);
		auth_req_free(r);
		return -1;
	}
	STAILQ_INSERT_TAIL(&p->reqs, r, next);
	p->pending++;
	pthread_cond_signal(&p->cond);
	pthread_mutex_unlock(&p->lock);
	return 0;
}

void
auth_pool_stop(struct auth_pool *p)
{
	struct auth_req *r;
	int i;

	if (p == NULL)
		return;
	pthread_mutex_lock(&p->lock);
	p->stopping = 1;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	for (i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	while ((r = STAILQ_FIRST(&p->reqs)) != NULL) {
		STAILQ_REMOVE_HEAD(&p->reqs, next);
		auth_req_free(r);
	}
	pthread_cond_destroy(&p->cond);
	pthread_mutex_destroy(&p->lock);
	free(p->threads);
	free(p);
}

/* ------------------------------------------------------------------ */
/* Failed-attempt throttle                                            */

#define AUTH_THR_KEYLEN 9    /* family byte + IPv4 (4) or IPv6 /64 (8) */

struct auth_thr_entry {
	unsigned char key[AUTH_THR_KEYLEN];
	int used;
	unsigned count;           /* failures in the window */
	int64_t first;            /* start of the window */
	int64_t last;             /* last update, for eviction */
};

struct auth_throttle {
	pthread_mutex_t lock;
	struct auth_throttle_conf conf;
	struct auth_thr_entry *e;   /* owned, conf.max_entries */
	size_t nused;               /* entries with used set: 0 skips the scan */
};

/* 0 and the key, or -1 for a family that is not throttled. */
static int
auth_thr_key(const struct sockaddr *sa, unsigned char key[AUTH_THR_KEYLEN])
{
	static const unsigned char v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0,
	    0, 0, 0xff, 0xff };

	memset(key, 0, AUTH_THR_KEYLEN);
	if (sa == NULL)
		return -1;
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		key[0] = 4;
		memcpy(key + 1, &s4->sin_addr, 4);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		const unsigned char *a = s6->sin6_addr.s6_addr;
		if (memcmp(a, v4mapped, sizeof(v4mapped)) == 0) {
			key[0] = 4;
			memcpy(key + 1, a + 12, 4);
		} else {
			key[0] = 6;
			memcpy(key + 1, a, 8);
		}
		return 0;
	}
	return -1;
}

static int
auth_thr_expired(const struct auth_throttle *t, const struct auth_thr_entry *e,
    int64_t now)
{
	return now - e->first >= (int64_t)t->conf.window_s;
}

static struct auth_thr_entry *
auth_thr_find(struct auth_throttle *t, const unsigned char *key)
{
	size_t i;

	if (t->nused == 0)      /* the common case: no recent failure at all */
		return NULL;
	for (i = 0; i < t->conf.max_entries; i++)
		if (t->e[i].used && memcmp(t->e[i].key, key,
		    AUTH_THR_KEYLEN) == 0)
			return &t->e[i];
	return NULL;
}

static void
auth_thr_clear(struct auth_throttle *t, struct auth_thr_entry *e)
{
	if (e->used)
		t->nused--;
	memset(e, 0, sizeof(*e));
}

/* The entry of key, or NULL when there is none or its window has passed
 * (the expired entry is cleared). */
static struct auth_thr_entry *
auth_thr_live(struct auth_throttle *t, const unsigned char *key, int64_t now)
{
	struct auth_thr_entry *e = auth_thr_find(t, key);

	if (e != NULL && auth_thr_expired(t, e, now)) {
		auth_thr_clear(t, e);
		e = NULL;
	}
	return e;
}

/* A free slot, else an expired one, else the least recently updated. */
static struct auth_thr_entry *
auth_thr_slot(struct auth_throttle *t, int64_t now)
{
	struct auth_thr_entry *oldest = &t->e[0];
	size_t i;

	for (i = 0; i < t->conf.max_entries; i++) {
		struct auth_thr_entry *e = &t->e[i];
		if (!e->used || auth_thr_expired(t, e, now))
			return e;
		if (e->last < oldest->last)
			oldest = e;
	}
	return oldest;
}

struct auth_throttle *
auth_throttle_new(const struct auth_throttle_conf *conf)
{
	static const struct auth_throttle_conf def = AUTH_THROTTLE_CONF_DEFAULT;
	struct auth_throttle *t = xcalloc(1, sizeof(*t));

	t->conf = conf != NULL ? *conf : def;
	if (t->conf.window_s == 0)
		t->conf.window_s = def.window_s;
	if (t->conf.max_failures == 0)
		t->conf.max_failures = def.max_failures;
	if (t->conf.delay_after == 0)
		t->conf.delay_after = def.delay_after;
	if (t->conf.delay_cap_ms == 0)
		t->conf.delay_cap_ms = def.delay_cap_ms;
	if (t->conf.max_entries == 0)
		t->conf.max_entries = def.max_entries;
	t->e = xcalloc(t->conf.max_entries, sizeof(*t->e));
	pthread_mutex_init(&t->lock, NULL);
	return t;
}

void
auth_throttle_free(struct auth_throttle *t)
{
	if (t == NULL)
		return;
	pthread_mutex_destroy(&t->lock);
	free(t->e);
	free(t);
}

enum auth_throttle_verdict
auth_throttle_check(struct auth_throttle *t, const struct sockaddr *sa,
    int64_t now, unsigned *delay_ms)
{
	unsigned char key[AUTH_THR_KEYLEN];
	struct auth_thr_entry *e;
	enum auth_throttle_verdict v = AUTH_THROTTLE_ALLOW;
	uint64_t ms;

	*delay_ms = 0;
	if (auth_thr_key(sa, key) != 0)
		return AUTH_THROTTLE_ALLOW;
	pthread_mutex_lock(&t->lock);
	e = auth_thr_live(t, key, now);
	if (e != NULL && e->count >= t->conf.max_failures) {
		v = AUTH_THROTTLE_REFUSE;
	} else if (e != NULL && e->count >= t->conf.delay_after) {
		v = AUTH_THROTTLE_DELAY;
		ms = (uint64_t)e->count * 1000;
		*delay_ms = ms > t->conf.delay_cap_ms ? t->conf.delay_cap_ms :
		    (unsigned)ms;
	}
	pthread_mutex_unlock(&t->lock);
	return v;
}

void
auth_throttle_fail(struct auth_throttle *t, const struct sockaddr *sa,
    int64_t now)
{
	unsigned char key[AUTH_THR_KEYLEN];
	struct auth_thr_entry *e;

	if (auth_thr_key(sa, key) != 0)
		return;
	pthread_mutex_lock(&t->lock);
	if ((e = auth_thr_live(t, key, now)) == NULL) {
		e = auth_thr_slot(t, now);
		auth_thr_clear(t, e);
		memcpy(e->key, key, AUTH_THR_KEYLEN);
		e->used = 1;
		t->nused++;
		e->first = now;
	}
	if (e->count < UINT_MAX)
		e->count++;
	e->last = now;
	pthread_mutex_unlock(&t->lock);
}

void
auth_throttle_success(struct auth_throttle *t, const struct sockaddr *sa,
    int64_t now)
{
	unsigned char key[AUTH_THR_KEYLEN];
	struct auth_thr_entry *e;

	if (auth_thr_key(sa, key) != 0)
		return;
	pthread_mutex_lock(&t->lock);
	e = auth_thr_find(t, key);
	if (e != NULL)
		auth_thr_clear(t, e);
	pthread_mutex_unlock(&t->lock);
}
