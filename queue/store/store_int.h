/*
 * store_int.h - queue-private key/value store (Berkeley DB 5.3 today; kept
 * small so that LMDB or SQLite could replace it without touching queue.c).
 *
 * Tables: STORE_ENVELOPES (8-byte big-endian id -> envelope record),
 * STORE_META (short ASCII key -> small big-endian value), and the query
 * index's two (below). Writes happen in
 * transactions that commit without a log sync (store_commit(t, 0)); the
 * housekeeping thread calls store_flush() about every 100 ms. Everything is
 * safe from any thread. Private to queue/: never include from elsewhere.
 */
#ifndef TERN_QUEUE_STORE_H
#define TERN_QUEUE_STORE_H

#include <stddef.h>
#include <stdint.h>

/*
 * STORE_QUERY (query.db) holds the query index's keys (values empty) and
 * STORE_COUNTS (counts.db) its counters: see query.c and doc/queue.md
 * "Query index". In a read-only open of an index made before them they are
 * absent (store_has() says 0).
 */
enum store_table { STORE_ENVELOPES = 0, STORE_META = 1, STORE_QUERY = 2,
	STORE_COUNTS = 3 };
#define STORE_NTABLES 4

/* Return codes beyond 0 / -1 (errno set). */
#define STORE_NOTFOUND  1
#define STORE_RETRY    -2       /* deadlock: abort the txn and run it again */

struct store;
struct store_txn;

/*
 * Open (creating) the environment in dir. flags: STORE_OPEN_READONLY: no
 * recovery and no writes at all (see doc/queue.md "Read-only open" for
 * what that costs). Read-write: BDB recovery; new files get page
 * checksums; a file made without them passes DB->verify first, and with
 * STORE_OPEN_VERIFY every file does. -1 with errno EBADMSG: the files are
 * damaged or inconsistent (rebuild them); another errno: a system error.
 */
#define STORE_OPEN_READONLY 0x1
#define STORE_OPEN_VERIFY   0x2
int store_open(const char *dir, int flags, struct store **out,
    char *err, size_t errlen);
/* Pure: 1 if the meta page p[0..len) is a btree's made with checksums. */
int store_meta_has_chksum(const uint8_t *p, size_t len);
/* Pure: 1 if a file of file_size bytes holds every page its meta page
 * p[0..len) counts (last page number, page size). */
int store_meta_size_ok(const uint8_t *p, size_t len, uint64_t file_size);
/* Checkpoint (unless readonly) and close. NULL is a no-op. */
void store_close(struct store *s);
/* Close without a checkpoint or log flush: for an index being set aside. */
void store_close_discard(struct store *s);

int store_begin(struct store *s, struct store_txn **out);
/* sync: 1 = durable when this returns; 0 = durable at the next flush. */
int store_commit(struct store_txn *t, int sync);
void store_abort(struct store_txn *t);        /* NULL is a no-op */

int store_put(struct store *s, struct store_txn *t, enum store_table tb,
    const void *key, size_t klen, const void *val, size_t vlen);
/* *val is malloc'd (caller frees). 0, STORE_NOTFOUND, STORE_RETRY, -1. */
int store_get(struct store *s, struct store_txn *t, enum store_table tb,
    const void *key, size_t klen, void **val, size_t *vlen);
/* 0, STORE_NOTFOUND, STORE_RETRY, -1 */
int store_del(struct store *s, struct store_txn *t, enum store_table tb,
    const void *key, size_t klen);
/* store_get then store_del of that record in t (not NULL), with one
 * cursor: one search. *val as store_get's. 0, STORE_NOTFOUND, STORE_RETRY,
 * -1. */
int store_take(struct store *s, struct store_txn *t, enum store_table tb,
    const void *key, size_t klen, void **val, size_t *vlen);

/*
 * Call fn for every record of tb in key order, outside any lock (records
 * are read in chunks; fn may write to the store). Stops when fn returns
 * non-zero. 0, or -1.
 */
typedef int store_walk_fn(void *arg, const void *key, size_t klen,
    const void *val, size_t vlen);
int store_walk(struct store *s, enum store_table tb, store_walk_fn *fn, void *arg);
/* The same from the first key after `after` (byte order; NULL: the first). */
int store_walk_after(struct store *s, enum store_table tb, const void *after,
    size_t afterlen, store_walk_fn *fn, void *arg);
/* The same from the first key >= from (fromlen bytes). */
int store_walk_from(struct store *s, enum store_table tb, const void *from,
    size_t fromlen, store_walk_fn *fn, void *arg);

/* 1 if table tb is open (always, read-write). */
int store_has(struct store *s, enum store_table tb);
/* Empty tb in t. 0, STORE_RETRY or -1. */
int store_truncate(struct store *s, struct store_txn *t, enum store_table tb);
/*
 * Estimate (O(log n), no lock held after it returns) the fraction of the
 * keys of tb that sort before key. 0 on failure.
 */
double store_key_before(struct store *s, enum store_table tb, const void *key,
    size_t klen);

/*
 * Data the layer above hangs on a transaction: store_commit() and
 * store_abort() call its free function once the transaction is over.
 */
struct store_txn_data {
	void (*free)(struct store_txn_data *d);
};
void store_txn_set_data(struct store_txn *t, struct store_txn_data *d);
struct store_txn_data *store_txn_data(struct store_txn *t);

/*
 * Compact both databases and give their free pages back to the file system
 * (the files shrink); *pages gets how many. Runs its own transactions.
 * 0, STORE_RETRY, or -1.
 */
int store_compact(struct store *s, uint64_t *pages);

/* Make every committed transaction durable (log flush). 0 or -1. */
int store_flush(struct store *s);
/* Checkpoint and remove log files no longer needed. 0 or -1. */
int store_checkpoint(struct store *s);

#endif
