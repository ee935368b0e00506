/*
 * store.c - the queue index on Berkeley DB 5.3 (see store_int.h).
 *
 * Any thread. Owns the DB_ENV and the two DB handles (free-threaded:
 * DB_THREAD, so every DBT that BDB fills uses DB_DBT_MALLOC/REALLOC).
 * Read-write: a transactional environment opened with DB_RECOVER (the
 * caller guarantees a single process) and DB_PRIVATE: its regions (cache,
 * log buffer, locks) live in this process's heap, not in mmapped __db.*
 * files, which grow as holes and fault (SIGBUS) when touched on a full
 * disk; nobody else joins the environment (readers open their own,
 * below). Region files an older run left are deleted. Log files are zeroed
 * in full when made (DB_LOG_ZERO): a log write never needs a new block.
 * Commits use DB_TXN_NOSYNC (the
 * log stays in BDB's buffer), durability by store_flush() every 100 ms or
 * an explicit sync commit; the accept path never waits for it (the
 * segment log is the source of truth for acceptance, doc/queue.md).
 * Read-only: a private (heap) environment with only a buffer pool, both
 * databases opened DB_RDONLY: nothing is written, no recovery is run.
 * DB->verify of the files runs only when asked (STORE_OPEN_VERIFY), for a
 * file made without page checksums, or for one shorter than its meta page
 * says: with checksums every page BDB reads is checked, so a damaged one is
 * an error where it is read, never data; a missing one is caught here.
 * Never blocks on anything but BDB's own locks and I/O; deadlocks are
 * reported as STORE_RETRY for the caller to re-run its transaction.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <db.h>

#include "tern/log.h"
#include "tern/util.h"
#include "store_int.h"

struct store {
	DB_ENV *env;
	DB *db[STORE_NTABLES];
	int readonly;
	int running;            /* opened: a panic now is news to the operator */
};

static const char *const store_files[STORE_NTABLES] = { "envelopes.db",
	"meta.db", "query.db", "counts.db" };

static void
store_errcall(const DB_ENV *env, const char *pfx, const char *msg)
{
	log_warnx("queue: bdb: %s", msg);
}

/*
 * errno for a BDB return code: EBADMSG when the index files are damaged or
 * inconsistent (a rebuild from the segments cures it), else the system's.
 */
static int
store_errno(int rc)
{
	if (rc == EINVAL || rc == ENOENT || rc == DB_RUNRECOVERY ||
	    rc == DB_VERIFY_BAD || rc == DB_PAGE_NOTFOUND || rc == DB_OLD_VERSION ||
	    rc == DB_SECONDARY_BAD || rc == DB_LOG_VERIFY_BAD)
		return EBADMSG;
	return rc > 0 ? rc : EIO;
}

/*
 * A panic while running leaves every later BDB call failing with
 * DB_RUNRECOVERY: accepted mail is still safe in the segments, but nothing
 * is indexed or removed any more. Say once what cures it.
 */
static void
store_event(DB_ENV *env, u_int32_t event, void *info)
{
	const struct store *s = env->app_private;

	(void)info;
	if (event == DB_EVENT_PANIC && s != NULL && s->running)
		log_warnx("queue: bdb panic: the index is unusable until ternd is "
		    "restarted (the start checks it and rebuilds it from the "
		    "segments if needed)");
}

static int
store_rc(int rc)
{
	if (rc == 0)
		return 0;
	if (rc == DB_NOTFOUND || rc == DB_KEYEMPTY)
		return STORE_NOTFOUND;
	if (rc == DB_LOCK_DEADLOCK || rc == DB_LOCK_NOTGRANTED)
		return STORE_RETRY;
	errno = rc == DB_RUNRECOVERY ? EBADMSG : rc > 0 ? rc : EIO;
	return -1;
}

/*
 * Region files (__db.001 ...) left by a run with a shared environment:
 * DB_RECOVER would map them to tear them down, and a hole in them faults
 * (SIGBUS) on a full disk. Nobody else can be using them (the caller holds
 * the queue's exclusive lock; the environment is private now), and they
 * hold disk blocks. The log and the databases are untouched.
 */
static void
store_drop_regions(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[4096];
	int dropped = 0;

	if (d == NULL)
		return;
	while ((de = readdir(d)) != NULL) {
		if (strncmp(de->d_name, "__db.", 5) != 0 ||
		    strspn(de->d_name + 5, "0123456789") != 3 ||
		    de->d_name[8] != '\0')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		dropped += unlink(path) == 0;
	}
	closedir(d);
	/* a journal commit frees their blocks for the new regions */
	if (dropped > 0)
		(void)fsync_dir(dir);
}

/*
 * The first bytes of a BDB database file (its meta page): 1 if it is a
 * btree made with page checksums, 0 if not (or not a btree we know).
 * Offsets of DBMETA in BDB 5.3's db_page.h: magic at 12, metaflags at 26,
 * DBMETA_CHKSUM 0x01; the magic is in the machine's byte order.
 */
int
store_meta_has_chksum(const uint8_t *p, size_t len)
{
	uint32_t magic;

	if (len < 27)
		return 0;
	memcpy(&magic, p + 12, 4);
	return magic == DB_BTREEMAGIC && (p[26] & 0x01) != 0;
}

int
store_meta_size_ok(const uint8_t *p, size_t len, uint64_t file_size)
{
	uint32_t pagesize, last_pgno;

	if (len < 36)
		return 0;
	memcpy(&pagesize, p + 20, 4);
	memcpy(&last_pgno, p + 32, 4);
	return pagesize >= 512 &&
	    file_size >= ((uint64_t)last_pgno + 1) * pagesize;
}

/*
 * 1 if the file at path exists and must be verified: made without page
 * checksums, or shorter than its meta page says (pages cut off are no
 * checksum failure, just missing).
 */
static int
store_file_unchecked(const char *path)
{
	uint8_t b[64];
	struct stat sb;
	ssize_t n;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	n = read(fd, b, sizeof(b));
	if (fstat(fd, &sb) < 0)
		sb.st_size = 0;
	close(fd);
	return n > 0 && (!store_meta_has_chksum(b, (size_t)n) ||
	    !store_meta_size_ok(b, (size_t)n, (uint64_t)sb.st_size));
}

/*
 * DB->verify of database files (a fresh handle each: verify consumes it):
 * every one that exists when all is set, else those made without page
 * checksums (on them a damaged page would be read as data, or fault a
 * walk). Run after the environment's recovery and before the files are
 * opened. 0, or a BDB error (err says which file).
 */
static int
store_verify_files(struct store *s, const char *dir, int all, char *err,
    size_t errlen)
{
	char path[4096];
	DB *db = NULL;
	int rc;
	uint64_t t0;

	for (int i = 0; i < STORE_NTABLES; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, store_files[i]);
		if (access(path, F_OK) != 0 ||
		    (!all && !store_file_unchecked(path)))
			continue;
		t0 = now_mono_us();
		if ((rc = db_create(&db, s->env, 0)) != 0)
			return rc;
		s->env->set_errcall(s->env, NULL);      /* verify is chatty */
		rc = db->verify(db, store_files[i], NULL, NULL, DB_NOORDERCHK);
		s->env->set_errcall(s->env, store_errcall);
		if (rc != 0) {
			snprintf(err, errlen, "bdb verify %s: %s", path,
			    db_strerror(rc));
			return rc == DB_VERIFY_BAD ? rc : DB_VERIFY_BAD;
		}
		log_info("queue: bdb verify %s: ok in %llu ms%s", path,
		    (unsigned long long)((now_mono_us() - t0) / 1000),
		    all ? "" : " (no page checksums, or shorter than its "
		    "meta page says)");
	}
	return 0;
}

static int
store_file_exists(const char *dir, const char *name)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return access(path, F_OK) == 0;
}

int
store_open(const char *dir, int flags, struct store **out, char *err,
    size_t errlen)
{
	struct store *s = xcalloc(1, sizeof(*s));
	u_int32_t envflags, dbflags;
	int rc, readonly = (flags & STORE_OPEN_READONLY) != 0;

	s->readonly = readonly;
	if ((rc = db_env_create(&s->env, 0)) != 0) {
		snprintf(err, errlen, "db_env_create: %s", db_strerror(rc));
		goto fail;
	}
	s->env->set_errcall(s->env, store_errcall);
	s->env->app_private = s;
	s->env->set_event_notify(s->env, store_event);
	/*
	 * 64 MiB: the query index's keys (by recipient address, domain,
	 * sender) are written at scattered places, and a drain deletes them
	 * there; with 4 MiB every one of those was a page read and a dirty
	 * eviction (bench-queue-query: drain 2.8k/s at 4 MiB, 7.2k/s at 64
	 * MiB, 100k messages). Heap pages: resident only once used.
	 */
	s->env->set_cachesize(s->env, 0, 64u << 20, 1);
	if (readonly) {
		/* heap regions, no log, no locks: nothing touches the disk */
		envflags = DB_CREATE | DB_PRIVATE | DB_INIT_MPOOL | DB_THREAD;
	} else {
		s->env->set_lg_bsize(s->env, 256u << 10);
		s->env->set_lg_max(s->env, 8u << 20);
		s->env->set_lk_detect(s->env, DB_LOCK_DEFAULT);
		/* no write(2) per commit: the housekeeper flushes every 100 ms */
		s->env->set_flags(s->env, DB_TXN_NOSYNC, 1);
		/*
		 * every log page gets its block when the file is made: a log
		 * write, and recovery zeroing the log's tail, never need one
		 * the full disk cannot give (without it, a log write that
		 * failed with ENOSPC once left a page whose LSN was past the
		 * end of the log, and the next open panicked)
		 */
		s->env->log_set_config(s->env, DB_LOG_ZERO, 1);
		envflags = DB_CREATE | DB_INIT_TXN | DB_INIT_LOG | DB_INIT_LOCK |
		    DB_INIT_MPOOL | DB_THREAD | DB_RECOVER | DB_PRIVATE;
		store_drop_regions(dir);
	}
	if ((rc = s->env->open(s->env, dir, envflags, 0600)) != 0) {
		snprintf(err, errlen, "bdb env open %s: %s", dir, db_strerror(rc));
		goto fail;
	}
	if (!readonly && (rc = store_verify_files(s, dir,
	    (flags & STORE_OPEN_VERIFY) != 0, err, errlen)) != 0)
		goto fail;
	dbflags = readonly ? DB_RDONLY | DB_THREAD :
	    DB_CREATE | DB_AUTO_COMMIT | DB_THREAD;
	for (int i = 0; i < STORE_NTABLES; i++) {
		/* an index made before the query tables: read without them */
		if (readonly && i >= STORE_QUERY &&
		    !store_file_exists(dir, store_files[i]))
			continue;
		if ((rc = db_create(&s->db[i], s->env, 0)) != 0) {
			snprintf(err, errlen, "db_create: %s", db_strerror(rc));
			goto fail;
		}
		/* page checksums: a damaged page reads as an error, not as data
		 * (ignored for a file made without them) */
		if (!readonly)
			s->db[i]->set_flags(s->db[i], DB_CHKSUM);
		if ((rc = s->db[i]->open(s->db[i], NULL, store_files[i], NULL,
		    DB_BTREE, dbflags, 0600)) != 0) {
			snprintf(err, errlen, "bdb open %s/%s: %s", dir,
			    store_files[i], db_strerror(rc));
			s->db[i]->close(s->db[i], 0);
			s->db[i] = NULL;
			goto fail;
		}
	}
	s->running = 1;
	*out = s;
	return 0;
fail:
	store_close_discard(s);
	*out = NULL;
	errno = store_errno(rc);
	return -1;
}

void
store_close(struct store *s)
{
	if (s == NULL)
		return;
	if (!s->readonly && s->env != NULL) {
		s->env->log_flush(s->env, NULL);
		s->env->txn_checkpoint(s->env, 0, 0, DB_FORCE);
		s->env->log_archive(s->env, NULL, DB_ARCH_REMOVE);
	}
	for (int i = 0; i < STORE_NTABLES; i++)
		if (s->db[i] != NULL)
			s->db[i]->close(s->db[i], 0);
	if (s->env != NULL)
		s->env->close(s->env, 0);
	free(s);
}

void
store_close_discard(struct store *s)
{
	if (s == NULL)
		return;
	s->readonly = 1;        /* nothing to flush or checkpoint */
	/* a panicked environment (DB_RUNRECOVERY) is still closed and freed */
	if (s->env != NULL)
		s->env->set_flags(s->env, DB_NOPANIC, 1);
	store_close(s);
}

/* A transaction: BDB's, and what the layer above hung on it. */
struct store_txn {
	DB_TXN *tx;
	struct store_txn_data *data;
};

static DB_TXN *
store_tx(struct store_txn *t)
{
	return t != NULL ? t->tx : NULL;
}

int
store_begin(struct store *s, struct store_txn **out)
{
	DB_TXN *t = NULL;
	int rc;

	*out = NULL;
	if (s->readonly) {
		errno = EROFS;
		return -1;
	}
	if ((rc = s->env->txn_begin(s->env, NULL, &t, 0)) != 0)
		return store_rc(rc);
	*out = xcalloc(1, sizeof(**out));
	(*out)->tx = t;
	return 0;
}

/* Free what hangs on st and st itself; returns BDB's handle. */
static DB_TXN *
store_txn_done(struct store_txn *st)
{
	DB_TXN *t = st->tx;

	if (st->data != NULL)
		st->data->free(st->data);
	free(st);
	return t;
}

int
store_commit(struct store_txn *st, int sync)
{
	DB_TXN *t = store_txn_done(st);

	return store_rc(t->commit(t, sync ? DB_TXN_SYNC : 0));
}

void
store_abort(struct store_txn *st)
{
	DB_TXN *t;

	if (st != NULL) {
		t = store_txn_done(st);
		t->abort(t);
	}
}

void
store_txn_set_data(struct store_txn *st, struct store_txn_data *d)
{
	st->data = d;
}

struct store_txn_data *
store_txn_data(struct store_txn *st)
{
	return st->data;
}

static void store_dbt(DBT *d, const void *p, size_t len);

int
store_has(struct store *s, enum store_table tb)
{
	return s->db[tb] != NULL;
}

int
store_truncate(struct store *s, struct store_txn *t, enum store_table tb)
{
	u_int32_t n = 0;

	return store_rc(s->db[tb]->truncate(s->db[tb], store_tx(t), &n, 0));
}

double
store_key_before(struct store *s, enum store_table tb, const void *key,
    size_t klen)
{
	DB_KEY_RANGE r;
	DBT k;

	store_dbt(&k, key, klen);
	if (s->db[tb] == NULL ||
	    s->db[tb]->key_range(s->db[tb], NULL, &k, &r, 0) != 0)
		return 0;
	return r.less;
}

static void
store_dbt(DBT *d, const void *p, size_t len)
{
	memset(d, 0, sizeof(*d));
	d->data = (void *)(uintptr_t)p;
	d->size = (u_int32_t)len;
}

int
store_put(struct store *s, struct store_txn *t, enum store_table tb,
    const void *key, size_t klen, const void *val, size_t vlen)
{
	DBT k, v;

	store_dbt(&k, key, klen);
	store_dbt(&v, val, vlen);
	return store_rc(s->db[tb]->put(s->db[tb], store_tx(t), &k, &v, 0));
}

int
store_get(struct store *s, struct store_txn *t, enum store_table tb,
    const void *key, size_t klen, void **val, size_t *vlen)
{
	DBT k, v;
	int rc;

	*val = NULL;
	*vlen = 0;
	store_dbt(&k, key, klen);
	memset(&v, 0, sizeof(v));
	v.flags = DB_DBT_MALLOC;
	rc = s->db[tb]->get(s->db[tb], store_tx(t), &k, &v,
	    t != NULL ? DB_RMW : 0);
	if (rc != 0)
		return store_rc(rc);
	*val = v.data;
	*vlen = v.size;
	return 0;
}

int
store_del(struct store *s, struct store_txn *t, enum store_table tb,
    const void *key, size_t klen)
{
	DBT k;

	store_dbt(&k, key, klen);
	return store_rc(s->db[tb]->del(s->db[tb], store_tx(t), &k, 0));
}

int
store_take(struct store *s, struct store_txn *t, enum store_table tb,
    const void *key, size_t klen, void **val, size_t *vlen)
{
	DB *db = s->db[tb];
	DBC *c = NULL;
	DBT k, v;
	int rc, rc2;

	*val = NULL;
	*vlen = 0;
	if ((rc = db->cursor(db, store_tx(t), &c, 0)) != 0)
		return store_rc(rc);
	store_dbt(&k, key, klen);
	memset(&v, 0, sizeof(v));
	v.flags = DB_DBT_MALLOC;
	rc = c->get(c, &k, &v, DB_SET | DB_RMW);
	if (rc == 0 && (rc = c->del(c, 0)) != 0)
		free(v.data);
	rc2 = c->close(c);
	if (rc == 0 && rc2 != 0) {
		free(v.data);
		rc = rc2;
	}
	if (rc != 0)
		return store_rc(rc);
	*val = v.data;
	*vlen = v.size;
	return 0;
}

#define STORE_WALK_CHUNK 64

struct store_walk_item {
	void *k, *v;
	size_t klen, vlen;
};

static int store_walk_range(struct store *s, enum store_table tb,
    const void *key, size_t klen, int inclusive, store_walk_fn *fn, void *arg);

int
store_walk(struct store *s, enum store_table tb, store_walk_fn *fn, void *arg)
{
	return store_walk_range(s, tb, NULL, 0, 0, fn, arg);
}

int
store_walk_after(struct store *s, enum store_table tb, const void *after,
    size_t afterlen, store_walk_fn *fn, void *arg)
{
	return store_walk_range(s, tb, after, afterlen, 0, fn, arg);
}

int
store_walk_from(struct store *s, enum store_table tb, const void *from,
    size_t fromlen, store_walk_fn *fn, void *arg)
{
	return store_walk_range(s, tb, from, fromlen, 1, fn, arg);
}

/*
 * The walk itself, from key (NULL: the first key): with inclusive from the
 * first key >= key, else from the first key > key (a walk resumed after key
 * had been handed out).
 */
static int
store_walk_range(struct store *s, enum store_table tb, const void *key,
    size_t klen, int inclusive, store_walk_fn *fn, void *arg)
{
	int first = key != NULL && inclusive;
	struct store_walk_item items[STORE_WALK_CHUNK];
	void *last = NULL;
	size_t lastlen = 0, n = 0;
	int ret = -1, done = 0, rc, retries = 0;

	if (key != NULL) {
		last = xmalloc(klen ? klen : 1);
		memcpy(last, key, klen);
		lastlen = klen;
	}
	while (!done) {
		DBC *c = NULL;
		DBT k, v;

		n = 0;
		if ((rc = s->db[tb]->cursor(s->db[tb], NULL, &c, 0)) != 0) {
			store_rc(rc);
			goto fail;
		}
		memset(&k, 0, sizeof(k));
		memset(&v, 0, sizeof(v));
		k.flags = v.flags = DB_DBT_REALLOC;
		if (last != NULL) {
			k.data = malloc(lastlen);
			if (k.data == NULL) {
				c->close(c);
				goto fail;
			}
			memcpy(k.data, last, lastlen);
			k.size = (u_int32_t)lastlen;
			rc = c->get(c, &k, &v, DB_SET_RANGE);
			/* skip the key we already handed out */
			if (rc == 0 && !first && k.size == lastlen &&
			    memcmp(k.data, last, lastlen) == 0)
				rc = c->get(c, &k, &v, DB_NEXT);
		} else
			rc = c->get(c, &k, &v, DB_FIRST);
		while (rc == 0) {
			struct store_walk_item *it = &items[n];
			it->k = xmalloc(k.size ? k.size : 1);
			it->v = xmalloc(v.size ? v.size : 1);
			memcpy(it->k, k.data, k.size);
			memcpy(it->v, v.data, v.size);
			it->klen = k.size;
			it->vlen = v.size;
			if (++n == STORE_WALK_CHUNK)
				break;
			rc = c->get(c, &k, &v, DB_NEXT);
		}
		free(k.data);
		free(v.data);
		c->close(c);
		if (rc != 0 && rc != DB_NOTFOUND) {
			for (size_t i = 0; i < n; i++) {
				free(items[i].k);
				free(items[i].v);
			}
			if (store_rc(rc) == STORE_RETRY && ++retries < 100)
				continue;
			goto fail;
		}
		int eof = (rc == DB_NOTFOUND), stop = 0;
		for (size_t i = 0; i < n; i++) {
			if (!stop && fn(arg, items[i].k, items[i].klen,
			    items[i].v, items[i].vlen) != 0)
				stop = 1;
			free(items[i].v);
			if (i + 1 == n) {
				free(last);
				last = items[i].k;
				lastlen = items[i].klen;
			} else
				free(items[i].k);
		}
		if (eof || stop || n == 0)
			done = 1;
		first = 0;
	}
	ret = 0;
fail:
	free(last);
	return ret;
}

int
store_compact(struct store *s, uint64_t *pages)
{
	int rc = 0;

	*pages = 0;
	if (s->readonly)
		return 0;
	for (int i = 0; i < STORE_NTABLES && rc == 0; i++) {
		DB_COMPACT c;
		memset(&c, 0, sizeof(c));
		rc = s->db[i]->compact(s->db[i], NULL, NULL, NULL, &c,
		    DB_FREE_SPACE, NULL);
		*pages += c.compact_pages_truncated;
	}
	return store_rc(rc);
}

int
store_flush(struct store *s)
{
	if (s->readonly)
		return 0;
	return store_rc(s->env->log_flush(s->env, NULL));
}

int
store_checkpoint(struct store *s)
{
	int rc;

	if (s->readonly)
		return 0;
	if ((rc = s->env->txn_checkpoint(s->env, 0, 0, 0)) != 0)
		return store_rc(rc);
	return store_rc(s->env->log_archive(s->env, NULL, DB_ARCH_REMOVE));
}
