/*
 * index.c - the index is a cache of the segments: opening it, checking that
 * it belongs to these segments, and rebuilding it from them when it does not
 * (doc/queue.md "Index rebuild").
 *
 * Main thread, during queue_open() (read-write), before the committer and
 * housekeeping start. Owns nothing after it returns but q->st.
 * Causes of a rebuild: no envelopes.db or meta.db while segments exist; a
 * failed open (BDB recovery, DB->verify where it runs, DB_RUNRECOVERY); a
 * stamp (meta "stamp" = queue salt + generation, also kept in envelopes.db)
 * that is missing, of another queue's salt, or differs between the two
 * files; a failed recovery walk; an operator request (ternd
 * --rebuild-index).
 * A rebuilt-from index is moved aside as <dir>/db.damaged.<time>, never
 * deleted. No segment is recycled before the index was checked in this
 * run: queue_recover() (which recycles) runs only on an index that BDB
 * recovered, that passed the stamp check and a synchronous stamp write,
 * and whose every entry its walk read without error. The files carry page
 * checksums (DB_CHKSUM), so BDB checks each page that walk reads: a
 * damaged page fails the walk (a rebuild), it is never read as data.
 * DB->verify (the whole structure, ~4 s per million entries) runs only for
 * a file made without checksums or on request (ternd --verify-index).
 * Other errors (ENOSPC, EACCES, EIO ...) are refused with the command to
 * run, never answered by moving the index aside.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tern/log.h"
#include "tern/util.h"
#include "queue_int.h"

#define INDEX_HINT "; to rebuild the index from the segments, stop ternd and " \
    "run: ternd --rebuild-index -c CONFIG"

static int
queue_index_file_exists(const struct queue *q, const char *name)
{
	char path[4096];

	snprintf(path, sizeof(path), "%s/%s", q->dbdir, name);
	return access(path, F_OK) == 0;
}

/* Read a 12-byte stamp from tb: 0, STORE_NOTFOUND (or wrong size), -1. */
static int
queue_index_stamp_get(struct queue *q, enum store_table tb, uint8_t out[12])
{
	void *v = NULL;
	size_t vlen = 0;
	int rc = store_get(q->st, NULL, tb, META_STAMP, strlen(META_STAMP), &v,
	    &vlen);

	if (rc == 0 && vlen != 12)
		rc = STORE_NOTFOUND;
	if (rc == 0)
		memcpy(out, v, 12);
	free(v);
	return rc;
}

/*
 * Does the open index belong to these segments? 0 yes; 1 no (cause says
 * why); -1 a read failed (errno).
 */
static int
queue_index_stamp_check(struct queue *q, char *cause, size_t len)
{
	uint8_t m[12], e[12];
	void *v = NULL;
	size_t vlen;
	int rm, re, ri;

	if ((rm = queue_index_stamp_get(q, STORE_META, m)) < 0 ||
	    (re = queue_index_stamp_get(q, STORE_ENVELOPES, e)) < 0)
		return -1;
	ri = store_get(q->st, NULL, STORE_META, META_INDEXED,
	    strlen(META_INDEXED), &v, &vlen);
	free(v);
	if (ri < 0)
		return -1;
	if (rm != 0 && re != 0) {
		/* an index made before stamps, or a new one */
		if (ri == 0 || q->nsegs == 0)
			return 0;
		snprintf(cause, len, "index empty (no indexed position) while "
		    "%zu segments exist", q->nsegs);
		return 1;
	}
	if (rm == 0 && queue_get_be32(m) != q->crc_salt) {
		snprintf(cause, len, "index of another queue (salt %08x, the "
		    "queue's is %08x)", queue_get_be32(m), q->crc_salt);
		return 1;
	}
	if (rm != 0 || re != 0 || memcmp(m, e, 12) != 0) {
		snprintf(cause, len, "envelopes.db and meta.db do not belong "
		    "together (stamps %s)", rm != 0 ? "missing in meta.db" :
		    re != 0 ? "missing in envelopes.db" : "differ");
		return 1;
	}
	return 0;
}

/* A new generation in both files, synchronously: also a write probe. */
static int
queue_index_stamp_put(struct queue *q)
{
	struct store_txn *t = NULL;
	uint8_t v[12];
	uint64_t gen = 0;
	int rc;

	if (getrandom(&gen, sizeof(gen), 0) != (ssize_t)sizeof(gen))
		gen = now_mono_us() ^ (uint64_t)time(NULL);
	queue_be32(v, q->crc_salt);
	queue_be64(v + 4, gen);
	if ((rc = store_begin(q->st, &t)) != 0)
		return -1;
	rc = store_put(q->st, t, STORE_META, META_STAMP, strlen(META_STAMP), v, 12);
	if (rc == 0)
		rc = store_put(q->st, t, STORE_ENVELOPES, META_STAMP,
		    strlen(META_STAMP), v, 12);
	if (rc != 0) {
		store_abort(t);
		return -1;
	}
	return store_commit(t, 1) == 0 ? 0 : -1;
}

/*
 * The highest epoch a file in segments/ may hold: a recycled spare keeps
 * the records of the segment it was (its first header has the highest
 * epoch in it). A rebuilt index must never give that number out again.
 */
static uint32_t
queue_index_spare_epoch(const struct queue *q)
{
	char path[4096];
	uint8_t b[SEG_HDR_LEN];
	struct seg_hdr h;
	int fd;

	snprintf(path, sizeof(path), "%s/spare", q->segdir);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	if (pread(fd, b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
		close(fd);
		return 0;
	}
	close(fd);
	seg_hdr_decode(b, &h);
	return h.magic == SEG_MAGIC ? h.epoch : 0;
}

/* Rename db/ to db.damaged.<time>[.N] and make a new empty db/. */
static int
queue_index_set_aside(struct queue *q, char *aside, size_t len)
{
	char stamp[32];
	time_t now = time(NULL);
	struct tm tm;

	aside[0] = '\0';
	if (access(q->dbdir, F_OK) != 0)
		return mkdir(q->dbdir, 0700) < 0 && errno != EEXIST ? -1 : 0;
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
	for (int n = 0; n < 100; n++) {
		if (n == 0)
			snprintf(aside, len, "%s/db.damaged.%s", q->dir, stamp);
		else
			snprintf(aside, len, "%s/db.damaged.%s.%d", q->dir, stamp, n);
		if (access(aside, F_OK) == 0)
			continue;
		if (rename(q->dbdir, aside) < 0)
			return -1;
		if (mkdir(q->dbdir, 0700) < 0 || fsync_dir(q->dir) < 0)
			return -1;
		return 0;
	}
	errno = EEXIST;
	return -1;
}

/* Set the index aside and rebuild it from every segment record. */
static int
queue_index_rebuild(struct queue *q, const char *cause, char *err,
    size_t errlen)
{
	char aside[4200], e2[512];
	uint64_t t0 = now_mono_us();
	uint32_t epoch;
	uint8_t v[4];
	struct store_txn *t = NULL;

	log_warnx("queue: index unusable: %s: rebuilding it from the segments",
	    cause);
	store_close_discard(q->st);
	q->st = NULL;
	if (queue_index_set_aside(q, aside, sizeof(aside)) < 0) {
		snprintf(err, errlen, "cannot set the index %s aside: %s",
		    q->dbdir, strerror(errno));
		return -1;
	}
	if (store_open(q->dbdir, 0, &q->st, e2, sizeof(e2)) < 0) {
		snprintf(err, errlen, "new index: %s", e2);
		return -1;
	}
	if (queue_index_stamp_put(q) < 0) {
		snprintf(err, errlen, "new index: stamp: %s", strerror(errno));
		return -1;
	}
	/* numbers already used by the spare's records are never given again */
	if ((epoch = queue_index_spare_epoch(q)) > 0 &&
	    store_begin(q->st, &t) == 0) {
		queue_be32(v, epoch + 1);
		if (store_put(q->st, t, STORE_META, META_NEXT_SEG,
		    strlen(META_NEXT_SEG), v, 4) == 0)
			store_commit(t, 1);
		else
			store_abort(t);
	}
	(void)queue_qidx_ensure(q);     /* an empty one, kept by the scan */
	if (queue_recover(q, 1, err, errlen) < 0)
		return -1;
	log_warnx("queue: index rebuilt from segments: cause=\"%s\" "
	    "segments=%zu records=%llu messages=%llu damaged=%llu "
	    "old-index=%s ms=%llu", cause, q->nsegs,
	    (unsigned long long)q->rec_scanned,
	    (unsigned long long)q->rec_entries,
	    (unsigned long long)q->rec_damaged,
	    aside[0] != '\0' ? aside : "none",
	    (unsigned long long)((now_mono_us() - t0) / 1000));
	return 0;
}

/* The open index, checked and stamped, recovered: 0; 1 rebuild (cause);
 * -1 refused (err). */
static int
queue_index_try(struct queue *q, char *cause, size_t clen, char *err,
    size_t errlen)
{
	char e2[512];
	int r;

	if (q->nsegs > 0 && (!queue_index_file_exists(q, "envelopes.db") ||
	    !queue_index_file_exists(q, "meta.db"))) {
		snprintf(cause, clen, "index missing (%s/%s)", q->dbdir,
		    queue_index_file_exists(q, "meta.db") ? "envelopes.db" :
		    "meta.db");
		return 1;
	}
	if (store_open(q->dbdir, q->verify_index ? STORE_OPEN_VERIFY : 0,
	    &q->st, e2, sizeof(e2)) < 0) {
		if (errno == EBADMSG) {
			snprintf(cause, clen, "index damaged: %s", e2);
			return 1;
		}
		snprintf(err, errlen, "%s%s", e2, INDEX_HINT);
		return -1;
	}
	if ((r = queue_index_stamp_check(q, cause, clen)) != 0 ||
	    (r = queue_index_stamp_put(q)) != 0) {
		if (r > 0)
			return 1;
		if (errno == EBADMSG) {
			snprintf(cause, clen, "index damaged: %s", strerror(errno));
			return 1;
		}
		snprintf(err, errlen, "index %s: %s%s", q->dbdir, strerror(errno),
		    INDEX_HINT);
		return -1;
	}
	(void)queue_qidx_ensure(q);     /* failing, it logs; walks answer */
	if (queue_recover(q, 0, e2, sizeof(e2)) < 0) {
		if (errno == EBADMSG) {
			snprintf(cause, clen, "index damaged: %s", e2);
			return 1;
		}
		snprintf(err, errlen, "%s%s", e2, INDEX_HINT);
		return -1;
	}
	return 0;
}

int
queue_index_open(struct queue *q, int force, char *err, size_t errlen)
{
	char cause[700];
	uint32_t max_num;
	int r;

	if (queue_rec_list(q, &max_num) < 0) {
		snprintf(err, errlen, "%s: %s", q->segdir, strerror(errno));
		return -1;
	}
	if (queue_salt_load(q) < 0) {
		snprintf(err, errlen, "%s/salt: %s", q->dir, strerror(errno));
		return -1;
	}
	if (force) {
		snprintf(cause, sizeof(cause), "rebuild requested");
		r = 1;
	} else
		r = queue_index_try(q, cause, sizeof(cause), err, errlen);
	if (r <= 0)
		return r;
	return queue_index_rebuild(q, cause, err, errlen);
}
