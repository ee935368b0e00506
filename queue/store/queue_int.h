/*
 * queue_int.h - queue-private structures shared by queue.c (open, recovery,
 * index access), commit.c (committer and housekeeping threads), segment.c
 * (record format, segment files) and spool.c. Never included outside queue/
 * (unit tests excepted). On-disk formats: doc/queue.md.
 */
#ifndef TERN_QUEUE_INT_H
#define TERN_QUEUE_INT_H

#include <pthread.h>
#include <sys/queue.h>
#include <stddef.h>
#include <stdint.h>

#include "tern/queue.h"
#include "store_int.h"

/* ---- segment record: header, then payload {u32 envlen, env, body} ---- */

#define SEG_MAGIC       0x544e5251u     /* "TNRQ" */
#define SEG_VERSION     1
#define SEG_HDR_LEN     28u
#define SEG_ALIGN       4096u           /* oversized segments round up to this */
#define SEG_ENV_MAX     (4u << 20)      /* largest envelope a record may carry */

struct seg_hdr {
	uint32_t magic;
	uint16_t version;
	uint16_t flags;         /* 0; reserved */
	uint32_t epoch;         /* == segment number */
	uint64_t seq;           /* log order, strictly increasing in a segment */
	uint32_t payload_len;
	uint32_t crc;           /* crc32c from the queue's salt over the header
	                           (crc = 0) and the payload */
};

void seg_hdr_encode(const struct seg_hdr *h, uint8_t out[SEG_HDR_LEN]);
void seg_hdr_decode(const uint8_t in[SEG_HDR_LEN], struct seg_hdr *h);

/* Result of reading one record from a segment file. */
enum seg_rec_status {
	SEG_REC_OK = 0,         /* header, envelope and CRC all valid */
	SEG_REC_DAMAGED,        /* header + envelope valid, CRC bad or body cut */
	SEG_REC_END,            /* zeros or stale bytes: the clean end of the log */
	SEG_REC_BAD,            /* anything else: garbage, torn header ... */
	SEG_REC_REMOVED,        /* as OK, but marked SEG_F_REMOVED: the message
	                           left the queue after this record was written */
};

/*
 * Header flags. SEG_F_REMOVED is written in place (the two flag octets) when
 * the message whose index entry points at the record is removed, so that a
 * rebuild from the segments does not bring delivered mail back. The flags
 * are outside the CRC (read as zero when it is computed).
 */
#define SEG_F_REMOVED   0x0001u
#define SEG_FLAGS_OFF   6u      /* where the flags are in the header */

/*
 * Read and check the record at off of segment num (file fd, readable up to
 * limit). prev_seq: the record's seq must be greater; *seqp gets it (may be
 * NULL). On OK/DAMAGED/REMOVED *env is
 * the decoded envelope with its location fields (seg, off, rec_len,
 * body_off, crc) set from the record; *reason says what is wrong otherwise.
 */
enum seg_rec_status seg_record_read(int fd, uint32_t num, uint32_t salt,
    uint64_t off, uint64_t limit, uint64_t prev_seq, struct envelope **env,
    uint64_t *rec_len, uint64_t *seqp, const char **reason);

/*
 * Queue ids are given at MAIL time (qid_new(): microseconds, < 2^63), so
 * they are unique but not in log order; records carry their own seq. A
 * record whose envelope cannot be decoded is held under id seq | this bit.
 */
#define SEG_PLACEHOLDER_ID (1ULL << 63)

/* Paths: "<segdir>/%08x.seg" */
void seg_path(const char *segdir, uint32_t num, char *buf, size_t len);
/* Write size zero bytes to tmp, fsync, rename to final, fsync dir. */
int seg_prepare(const char *segdir, const char *tmp, const char *final,
    uint64_t size);

/* ---- bodies under construction ---- */

struct spool {
	struct queue *q;        /* borrowed */
	char *mem;              /* owned; NULL once spilled */
	size_t len, cap;
	int fd;                 /* -1, or the unlinked spill file */
	uint64_t size;          /* prefix and body */
	int err;                /* sticky errno after a failed write */
	char *pre;              /* owned or NULL: spool_prepend's bytes, */
	size_t prelen;          /* written before mem / the file */
};

/*
 * A finished body already in memory (buf, len; malloc'd, ownership moves):
 * for copy-forward, outside the budget of bodies being received.
 */
struct spool *spool_adopt(struct queue *q, char *buf, size_t len);

/* ---- requests in flight to the committer ---- */

struct queue_req {
	STAILQ_ENTRY(queue_req) next;
	struct envelope *env;   /* owned */
	struct spool *body;     /* owned */
	struct tq *reply;       /* borrowed */
	uint64_t reqid;
	uint8_t *head;          /* owned: record header + u32 envlen + envelope */
	size_t headlen;
	uint64_t rec_len;
	uint64_t seq;           /* record sequence number (log order) */
	uint64_t t_submit;      /* now_mono_us() at submit, for the latency metric */
	/* copy-forward: the record this one replaces (reloc_seg 0: a new message) */
	uint32_t reloc_seg;
	uint64_t reloc_off, reloc_len;
	int reloc_moved;        /* the index now points here */
	int reloc_gone;         /* the message was removed before the copy
	                           was indexed */
};

/* ---- the segment table ---- */

/* A read-only fd of a segment shared by body readers (refs under q->lock). */
struct seg_rfd {
	int fd;
	unsigned refs;          /* the table's reference + one per reader */
};

struct queue_seg {
	uint32_t num;
	uint64_t size;
	uint64_t live;          /* envelopes pointing into it */
	uint64_t live_bytes;    /* their records' bytes */
	uint64_t extent;        /* bytes of records written (0: not known) */
	int64_t cf_next;        /* copy-forward: not before (mono seconds) */
	uint64_t cf_live;       /* copy-forward: live at its last look */
	int cf_looked;          /* copy-forward: cf_live is set */
	int recycling;
	struct seg_rfd *rfd;    /* owned ref or NULL: cached for queue_read_body */
	int wfd;                /* write fd for removal marks; -1 (or 0 before
	                           the first mark: see wfd_open) */
	int wfd_open;
};

/* Drop one reference (q->lock held); the last one closes the fd. */
void queue_seg_rfd_put(struct seg_rfd *rf);

/* A message committed without its query keys (qkeys.c), in log order. */
struct qkeys_pend {
	uint64_t id;            /* 0: removed or keyed since */
	uint32_t seg;
	uint64_t off;
	int64_t arrival;
	uint64_t t_us;          /* now_mono_us() when it was indexed */
};

struct queue {
	char *dir, *segdir, *tmpdir, *dbdir;
	uint64_t segment_size, spool_memory;
	uint64_t spool_budget;          /* cap on spool_inuse */
	/*
	 * Records' CRCs start from this per-queue random value (<dir>/salt,
	 * made with the queue; 0 for a queue made before it existed): bytes a
	 * sender put in a body cannot pass for a record when a recycled file
	 * is scanned.
	 */
	uint32_t crc_salt;
	uint64_t spool_inuse;           /* atomic: bytes of all spools' buffers */
	int readonly;
	int verify_index;               /* queue_opts.verify_index */
	int lockfd;
	struct store *st;
	int qidx;                       /* the query index is kept (query.c) */

	/* lock protects everything down to "committer only" */
	pthread_mutex_t lock;
	pthread_cond_t cond;            /* committer: work or stop */
	pthread_cond_t hk_cond;         /* housekeeping: stop */
	STAILQ_HEAD(, queue_req) reqs;  /* to the committer, oldest first */
	int stopping, hk_stop, threads;
	struct tq *notify;              /* borrowed */
	uint64_t commits, batches;
	uint64_t removals;              /* queue_remove()s since open */
	uint64_t n7bit;                 /* atomic: files in <dir>/7bit (body7.c) */
	struct queue_seg *segs;         /* sorted by num */
	size_t nsegs;
	uint32_t cur_num;               /* 0: no current segment */
	int have_spare;
	int broken;                     /* errno: refuse every commit */
	int space_low;                  /* disk nearly full: refuse new mail */

	pthread_mutex_t prep_lock;      /* one spare preparation at a time */
	pthread_t committer, hk;

	/* committer only */
	int cur_fd;
	uint64_t cur_size, cur_pos;
	uint32_t next_seg;
	uint64_t last_id;
	int index_stuck;                /* stop advancing the indexed position */
	int roll_err;                   /* errno of the last failed roll, or 0 */
	uint64_t roll_fails;            /* messages refused since it failed */

	/* space.c: main thread at open, then housekeeping only */
	uint64_t reserve_size;          /* configured; 0: no reserve */
	uint64_t reserve_held;          /* bytes <dir>/reserve holds now */
	int reserve_noted;              /* "no room for the reserve" was logged */

	/* housekeeping only: compaction once the queue has been quiet */
	uint64_t hk_activity, hk_removals_compacted;
	unsigned hk_quiet;

	/* the last recovery's counts (queue_recover), for its log line */
	uint64_t rec_scanned, rec_indexed, rec_damaged, rec_entries;

	/* qkeys.c: messages whose query keys are written late */
	int qk_lazy;                    /* new messages get keys late */
	pthread_mutex_t qk_lock;        /* the list, qk_end_*, qk_keyed */
	pthread_mutex_t qk_run;         /* one run at a time */
	struct qkeys_pend *qk;          /* ring: qk_n from qk_head */
	size_t qk_cap, qk_head, qk_n;
	uint32_t qk_end_seg;            /* after the committer's last txn */
	uint64_t qk_end_off;
	uint64_t qk_keyed;              /* messages keyed late since open */
	int qk_failed;                  /* run thread: the last run failed */
	uint32_t qk_wseg;               /* run thread: META_QKEYS as written */
	uint64_t qk_woff;
	uint64_t qk_eager_until;        /* atomic: now_mono_us() before which
	                                   new messages are keyed at commit */

	/* recount.c (under lock): live counts of the segments of the open */
	int recount_needed;             /* queue_recover left them to it */
	int counting;                   /* segments < count_below: not yet */
	uint32_t count_below;
	struct queue_recount *recount;  /* owned while it runs */
};

struct queue_recount {
	pthread_t thr;
	int running, stop;              /* stop: atomic */
	uint64_t entries, corrupt;      /* walk thread only */
	int fd;                         /* walk thread: segment fd_seg, or -1 */
	uint32_t fd_seg;
	uint64_t fd_size;
	uint64_t *counted;              /* ids counted, in walk order */
	size_t ncounted, capcounted;
	uint64_t *removed;              /* ids removed before the walk met them */
	size_t nremoved, capremoved;
};

/* <dir>/QUEUE_VERIFY_MARK: a walk of the index failed while running; the
 * next read-write open verifies it (as --verify-index) and removes it. */
#define QUEUE_VERIFY_MARK "verify-index"

/* meta keys */
#define META_STAMP      "stamp"         /* u32 salt, u64 generation; also a
                                           key of STORE_ENVELOPES (5 bytes) */
#define META_INDEXED    "indexed"       /* u32 seg, u64 off */
#define META_NEXT_ID    "next_id"       /* u64 */
#define META_NEXT_SEG   "next_seg"      /* u32 */
#define META_CUT        "cut/"          /* + u32 seg -> u64 offset */
#define META_END        "end/"          /* + u32 seg -> u64 bytes written */
#define META_QKEYS      "qkeys"         /* u32 seg, u64 off: every record
                                           before it has its query keys, or
                                           is no longer indexed (qkeys.c) */

void queue_be32(uint8_t *p, uint32_t v);
void queue_be64(uint8_t *p, uint64_t v);
uint32_t queue_get_be32(const uint8_t *p);
uint64_t queue_get_be64(const uint8_t *p);

/* queue.c: segment table (caller holds q->lock) */
struct queue_seg *queue_seg_find(struct queue *q, uint32_t num);
struct queue_seg *queue_seg_add(struct queue *q, uint32_t num, uint64_t size);
void queue_seg_drop(struct queue *q, uint32_t num);
/* One envelope of rec_len bytes no longer points into segment num. */
void queue_seg_unref(struct queue *q, uint32_t num, uint64_t rec_len);
/* The same for a message removed (recount.c: the walk may not have
 * counted it yet). */
void queue_seg_gone(struct queue *q, uint64_t id, uint32_t num,
    uint64_t rec_len);
/* 1 while segment num's live count is still being made: keep it. */
int queue_seg_counting(const struct queue *q, uint32_t num);
/* recount.c: the walk on its thread (after the committer starts); stop
 * joins it (before the store closes). */
int queue_recount_start(struct queue *q);
void queue_recount_stop(struct queue *q);

/* queue.c: set ENV_F_CORRUPT on id's entry (one transaction; logged with
 * why). 0 (also when gone or already set), or -1. */
int queue_mark_corrupt(struct queue *q, uint64_t id, const char *why);
/*
 * queue.c: store the envelope (location fields set) in t, or delete it
 * (old: its decoded copy, NULL if undecodable); both keep the query index.
 */
int queue_index_put(struct queue *q, struct store_txn *t, const struct envelope *e);
int queue_index_del(struct queue *q, struct store_txn *t, uint64_t id,
    const struct envelope *old);
/* A new message (committer): with lazy (queue_qkeys_lazy_now), the
 * envelope with ENV_F_NOKEYS (its counters, no keys, no read of a stored
 * copy), else queue_index_put. */
int queue_index_put_new(struct queue *q, struct store_txn *t,
    const struct envelope *e, int lazy);
/* cur, stored without its keys: store it with them (counters unchanged). */
int queue_index_rekey(struct queue *q, struct store_txn *t,
    const struct envelope *cur);
/* v, the stored copy of an envelope read in t: if it carries ENV_F_NOKEYS,
 * queue_index_rekey it. 1 keyed, 0 nothing to do (or undecodable), or a
 * store error (STORE_RETRY, -1). */
int queue_index_rekey_stored(struct queue *q, struct store_txn *t,
    const void *v, size_t vlen);
/* Put one meta key in a transaction of its own (deadlocks retried); sync:
 * durable when this returns. 0 or -1. */
int queue_meta_put(struct queue *q, const char *key, size_t klen,
    const uint8_t *val, size_t vlen, int sync);

/* Record positions in log order: (s1, o1) before (s2, o2). */
static inline int
queue_pos_lt(uint32_t s1, uint64_t o1, uint32_t s2, uint64_t o2)
{
	return s1 < s2 || (s1 == s2 && o1 < o2);
}

/*
 * qkeys.c (doc/queue.md "Query keys written late"). append: the committer,
 * for each new message after its transaction, in log order; end: then its
 * position after them. gone: a message stored without keys was removed or
 * keyed (after that transaction committed): nothing left to do for it.
 * run: write the keys of the entries at least min_age_us old (0: all), and
 * META_QKEYS; 0, or -1 (left for the next run). open: read-write open,
 * before the committer starts: records the position and turns q->qk_lazy
 * on (off when it cannot). oldest: the earliest arrival listed (0: none).
 */
void queue_qkeys_append(struct queue *q, const struct envelope *e,
    uint64_t now);
void queue_qkeys_end(struct queue *q, uint32_t seg, uint64_t off);
void queue_qkeys_gone(struct queue *q, uint32_t seg, uint64_t off);
int queue_qkeys_run(struct queue *q, uint64_t min_age_us);
int queue_qkeys_open(struct queue *q);
int64_t queue_qkeys_oldest(struct queue *q);
/* How old a new message's keys-to-be get before housekeeping writes them. */
#define QUEUE_QKEYS_DELAY_US    (1000 * 1000)
/* When most of them were still queued at that age (delivery paused or
 * slow: writing them late costs more than at commit), the committer writes
 * them at commit for this long, then tries again. */
#define QUEUE_QKEYS_EAGER_US    (10 * 1000 * 1000)
/* 1: a new message committed now gets its keys late. */
int queue_qkeys_lazy_now(struct queue *q);
/* A queue_placeholder(): what an undecodable index record reads as. */
struct envelope *queue_placeholder(uint64_t id);

/*
 * query.c: the query index and its counters (doc/queue.md "Query index").
 * queue_qidx_change: in t, envelope old (NULL: none) becomes e (NULL:
 * removed): its keys move (a side with ENV_F_NOKEYS has none stored, or
 * is to store none) and, with counts, the counts' deltas are noted on t.
 * queue_index_commit: write the noted deltas, then commit; a deadlock
 * aborts t and returns STORE_RETRY. Every transaction that put or deleted
 * an envelope ends with it (or store_abort). 0, STORE_RETRY or -1.
 */
int queue_qidx_change(struct queue *q, struct store_txn *t,
    const struct envelope *old, const struct envelope *e, int counts);
int queue_index_commit(struct queue *q, struct store_txn *t, int sync);
/*
 * Read-write open, before the recovery scan: build the query index from
 * the envelopes when it is missing or unfinished (an index made before it
 * existed: one walk, logged). Sets q->qidx. 0 or -1.
 */
int queue_qidx_ensure(struct queue *q);
/*
 * verify.c: compare the counters and the number of keys with what a walk
 * of the envelopes gives; each difference goes to fn. The number found.
 */
uint64_t queue_qidx_verify(struct queue *q, queue_verify_diff_fn *fn, void *arg);

/* Point dst at the record src points at (segment, offset, lengths, CRC). */
static inline void
queue_env_locate(struct envelope *dst, const struct envelope *src)
{
	dst->seg = src->seg;
	dst->off = src->off;
	dst->rec_len = src->rec_len;
	dst->body_off = src->body_off;
	dst->crc = src->crc;
}

/* queue.c: recovery steps (read-write open, main thread) */
/* Build the segment table from segments/ (and note the spare). 0 or -1. */
int queue_rec_list(struct queue *q, uint32_t *max_num);
/* Load (or make, for a new queue) the records' CRC salt. 0 or -1. */
int queue_salt_load(struct queue *q);
/*
 * Scan the segments into the open index, verify it, recycle empty segments
 * (doc/queue.md "Recovery"). rebuild: the index is new, take every record
 * and prefer the latest copy of a message. 0, or -1 (errno EBADMSG: the
 * index is damaged).
 */
int queue_recover(struct queue *q, int rebuild, char *err, size_t errlen);

/* index.c: open the index, checking it belongs to these segments, and
 * rebuild it from them when it does not (doc/queue.md "Index rebuild"). */
int queue_index_open(struct queue *q, int force, char *err, size_t errlen);

/* commit.c */
int queue_commit_start(struct queue *q);
void queue_commit_stop(struct queue *q);
/* Roll to a new current segment big enough for need bytes. Committer or open. */
int queue_seg_roll(struct queue *q, uint64_t need);
/* Recycle one empty segment file (rename to the spare or unlink). */
void queue_seg_recycle(struct queue *q, uint32_t num, uint64_t size);
int queue_spare_prepare(struct queue *q);

/* space.c (doc/queue.md "A full disk") */
/* Before the index opens: with the disk nearly full, release the reserve. */
void queue_space_open(struct queue *q);
/* Measure; enter or leave the low state; release or regrow the reserve. */
void queue_space_check(struct queue *q);
/* Before the index closes: lend the reserve to a checkpoint that needs it. */
void queue_space_close(struct queue *q);

/* body7.c: the 7-bit copies' directory at open, and a copy's removal. */
int queue_body7_open(struct queue *q);
void queue_body7_drop(struct queue *q, uint64_t id);

/* Mark the record at off of segment seg SEG_F_REMOVED (q->lock held). */
void queue_mark_removed(struct queue *q, uint32_t seg, uint64_t off);

#endif
