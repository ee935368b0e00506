/*
 * queue.h - the durable queue: a segment log of message records (envelope
 * and body, CRC-framed) on the accept path with group commit, and a Berkeley
 * DB environment as the index and the delivery state. See doc/queue.md.
 *
 * Threads: one committer thread owns the current segment and the
 * fdatasync; everything else (index updates, reads) is safe from any thread.
 *
 * Promises: (a) a commit is reported Q_OK only after body and envelope are
 * durable on disk; (b) after kill -9 or power loss, every message reported
 * Q_OK is found again by queue_open(); (c) what cannot be read back is held
 * (ENV_F_CORRUPT) and reported, never silently dropped.
 */
#ifndef TERN_QUEUE_H
#define TERN_QUEUE_H

#include <stddef.h>
#include <stdint.h>

#include "tern/envelope.h"
#include "tern/tq.h"

enum q_status {
	Q_OK = 0,
	Q_TEMPFAIL,         /* 451 4.3.0, or 452 4.3.1 when err == ENOSPC/EDQUOT */
	Q_PERMFAIL,         /* 554 5.3.0 (e.g. message over a hard limit) */
};

struct queue;
struct spool;

struct queue_opts {
	const char *dir;            /* queue directory (created if missing) */
	uint64_t segment_size;      /* bytes per segment file */
	uint64_t spool_memory;      /* body bytes kept in memory before spilling
	                               (per body; 0: every body goes to a file) */
	uint64_t spool_budget;      /* bodies' memory in all (0: none) */
	uint64_t reserve_size;      /* <dir>/reserve kept for a full disk (0: none) */
	int readonly;               /* ternctl with the daemon stopped: no recovery writes */
	int rebuild_index;          /* set the index aside, rebuild it from the segments */
	int verify_index;           /* DB->verify the index files at this open (slow) */
};

/*
 * Open the queue: BDB recovery, segment scan (index acknowledged records the
 * index lacks, cut torn tails, hold damaged entries), then start the
 * committer. On error returns -1 with a message in err.
 */
int queue_open(const struct queue_opts *o, struct queue **out, char *err, size_t errlen);
/* Finish in-flight commits, stop the committer, flush and close. */
void queue_close(struct queue *q);

/* ---- bodies under construction (session loop thread) ---- */

/* New empty body. Never NULL. Owned by the caller until committed or freed. */
struct spool *spool_new(struct queue *q);
/* Append bytes. 0, or -1 with errno (ENOSPC, EDQUOT, EIO, ENOMEM). */
int spool_write(struct spool *s, const void *p, size_t len);
uint64_t spool_size(const struct spool *s);
/*
 * Put bytes before everything written so far (and after, before any
 * earlier prefix), without copying the body: the committer writes them
 * first, in the same record (a header field made once the body has
 * streamed, e.g. DKIM-Signature:). 0, or -1 with errno ENOMEM.
 */
int spool_prepend(struct spool *s, const void *p, size_t len);
void spool_free(struct spool *s);   /* NULL is a no-op; discards the body */

/* ---- commit (any thread) ---- */

struct queue_commit_done {
	struct tq_msg hdr;          /* type TQ_COMMIT_DONE, reqid as submitted */
	enum q_status status;
	int err;                    /* errno of the failure, 0 on Q_OK */
	uint64_t qid;               /* the queue id on Q_OK */
};

/*
 * Hand a finished message to the committer. Ownership of env and body moves
 * to the queue at once (the caller must forget both). env->id, arrival and
 * size are filled by the queue. When the message is durable (or failed), a
 * struct queue_commit_done with hdr.reqid = reqid is posted to reply; the
 * receiver frees it. The index entry (queue_get) appears just after the
 * Q_OK reply, before the id is posted to the notify queue (queue_set_notify).
 */
void queue_commit_submit(struct queue *q, struct envelope *env, struct spool *body,
    struct tq *reply, uint64_t reqid);

/*
 * Where the committer reports every newly queued id (the scheduler); NULL ok.
 * After each committed and indexed batch, one struct queue_new_message per
 * id is posted there (the receiver frees it).
 */
struct queue_new_message {
	struct tq_msg hdr;          /* type TQ_NEW_MESSAGE, reqid = qid */
	uint64_t qid;
};
void queue_set_notify(struct queue *q, struct tq *notify);

/* ---- index access (any thread) ---- */

/* Load one envelope (caller owns *out). 0, 1 not found, -1 error. */
int queue_get(struct queue *q, uint64_t id, struct envelope **out);

/*
 * Replace the stored envelope (same id) in one transaction. The body
 * location fields (seg, off, rec_len, body_off, crc, size) are kept from the
 * stored copy. 0, or -1 (errno ENOENT if the id is unknown).
 */
int queue_update(struct queue *q, const struct envelope *env);

/*
 * Remove a message whose recipients are all done (or on operator delete).
 * 0, or -1 (errno ENOENT if the id is unknown).
 */
int queue_remove(struct queue *q, uint64_t id);
/*
 * queue_remove of n ids in one transaction (what a delivery loop finished
 * in one turn): gone[i] is set to 1 for an id that was not there. 0, or -1
 * (none removed). At most QUEUE_REMOVE_BATCH ids.
 */
#define QUEUE_REMOVE_BATCH 64
int queue_remove_many(struct queue *q, const uint64_t *ids, size_t n,
    int *gone);

/* Call fn for each envelope in id order; stop early if fn returns non-zero. */
typedef int queue_walk_fn(void *arg, const struct envelope *env);
int queue_walk(struct queue *q, queue_walk_fn *fn, void *arg);
/* The same for the ids above `after` only (0: all): a walk in slices. */
int queue_walk_after(struct queue *q, uint64_t after, queue_walk_fn *fn,
    void *arg);
/* Index entries found by the recovery walk at open (a size estimate). */
uint64_t queue_open_entries(const struct queue *q);

/*
 * Read the body of env into a new buffer (*out, *len; caller frees).
 * Verifies the record CRC. 0, or -1 (errno EIO / EBADMSG on CRC mismatch).
 */
int queue_read_body(struct queue *q, const struct envelope *env,
    char **out, size_t *len);

/*
 * The 7-bit form of message id's body (RFC 6152 3), made once by the
 * delivery client for a next hop without 8BITMIME and kept until the
 * message is removed (queue/store/body7.c). read: 0 with *out (caller
 * frees, NUL-terminated) and *outlen, or 1 when there is no usable copy.
 * write: 0, or -1 with errno (the copy is a cache: a failure costs only a
 * conversion next time). Any thread.
 */
int queue_body7_read(struct queue *q, uint64_t id, char **out, size_t *outlen);
int queue_body7_write(struct queue *q, uint64_t id, const char *p, size_t len);

/*
 * ENOSPC while the queue refuses new mail (its disk is nearly full:
 * doc/queue.md "A full disk"), else 0. Any thread, cheap: the session asks
 * at MAIL so that a client is not made to send a body that cannot be kept.
 */
int queue_space_refuse(struct queue *q);

/* ---- queries (any thread; doc/queue.md "Queries") ---- */

/*
 * Which messages a query visits: every field given must match.
 * Strings are compared ASCII case-insensitively. A sender or recipient text
 * that is a whole address (local@domain) is matched exactly; any other text
 * matches when it is contained in the address (a fragment such as "erin@").
 */
struct queue_filter {
	const char *sender;         /* NULL: any */
	const char *rcpt;           /* NULL: any; tested on pending recipients */
	const char *domain;         /* NULL: any; a pending recipient's domain */
	int held;                   /* -1: any; 1: held (ENV_F_HOLD); 0: not */
	int64_t older_than;         /* -1: any; else arrived >= this many
	                               seconds before now (never in the future) */
	int64_t now;                /* unix seconds, for older_than */
};
void queue_filter_init(struct queue_filter *f);     /* matches everything */
/* 1 if env matches f. Pure. */
int queue_filter_match(const struct queue_filter *f, const struct envelope *env);

/*
 * Call fn for each envelope matching f whose id is > after (0: from the
 * first), in id order, at most limit of them (0: no limit); stop early when
 * fn returns non-zero. *last (may be NULL) gets the id of the last
 * envelope passed to fn (0 if none): the "after" of the next page.
 * Returns the number passed to fn, or -1 if the index could not be read.
 * A caller serving a loop pages with a small limit and resumes after *last.
 */
long queue_query(struct queue *q, const struct queue_filter *f, uint64_t after,
    size_t limit, uint64_t *last, queue_walk_fn *fn, void *arg);

/* What the queue holds now (kept up to date, not counted on demand). */
struct queue_counts {
	uint64_t messages;          /* envelopes in the index */
	uint64_t held;              /* ENV_F_HOLD or ENV_F_CORRUPT (a corrupt
	                               message is held) */
	uint64_t corrupt;           /* ENV_F_CORRUPT */
	uint64_t deferred;          /* not held, attempted at least once */
	uint64_t recipients;        /* pending recipients */
	uint64_t bytes;             /* body bytes of the queued messages */
	int64_t oldest_arrival;     /* arrival of the oldest message; 0: empty */
};
int queue_counts(struct queue *q, struct queue_counts *out);   /* 0 or -1 */

/*
 * Per recipient domain (lower case), the messages with a pending
 * recipient there and those recipients: fn is called for at most top
 * domains (0: all), the ones with the most pending recipients first.
 * 0, or -1 if the index could not be read.
 */
typedef int queue_domain_fn(void *arg, const char *domain, uint64_t messages,
    uint64_t recipients);
int queue_domains(struct queue *q, size_t top, queue_domain_fn *fn, void *arg);

/*
 * The messages a scheduler loads, soonest next attempt first: fn(arg, id,
 * next_attempt) for every message neither held nor corrupt, in (next
 * attempt, id) order, from just after *pos (zeroed: from the start); *pos
 * follows the walk, so a later call resumes after the last one seen. fn
 * returns non-zero to stop. 0, 1 if there is no query index to read (walk
 * the envelopes instead), or -1. A walk from the start first writes the
 * keys of the messages committed without them so far (queue/store/qkeys.c);
 * those committed during the walk are the committer's to announce.
 */
struct queue_due_pos {
	int64_t when;
	uint64_t id;
	int started;
};
typedef int queue_due_fn(void *arg, uint64_t id, int64_t when);
int queue_walk_due(struct queue *q, struct queue_due_pos *pos,
    queue_due_fn *fn, void *arg);

struct queue_stats {
	uint64_t messages;          /* envelopes in the index */
	uint64_t held;
	uint64_t corrupt;
	uint64_t commits;           /* messages committed since open */
	uint64_t batches;           /* fdatasync batches since open */
	uint64_t segments;          /* segment files in use */
};
void queue_stats(struct queue *q, struct queue_stats *out);

/*
 * Disk use: bytes of the segment files (spare included) and of the index
 * (every file in <dir>/db: databases, BDB log and region files).
 */
void queue_disk_use(struct queue *q, uint64_t *segments, uint64_t *index);

/*
 * Check that the index and the segments agree: read every segment record
 * (CRC checked) and every index entry. Each difference is counted and
 * passed to fn (may be NULL; id/seg/off 0 when not about one record).
 * Online (a read-write queue) records of the current segment not yet
 * indexed are not differences. 0, or -1 (the index could not be read).
 */
struct queue_verify {
	uint64_t segments, records;     /* read */
	uint64_t damaged;               /* records failing their CRC */
	uint64_t torn;                  /* segments whose log ends in garbage */
	uint64_t entries;               /* index entries */
	uint64_t held_corrupt;          /* entries held as corrupt (known) */
	uint64_t dead;                  /* records of removed messages */
	uint64_t unindexed;             /* acknowledged records not indexed */
	uint64_t differences;
};
typedef void queue_verify_diff_fn(void *arg, uint64_t id, uint32_t seg,
    uint64_t off, const char *what);
int queue_verify(struct queue *q, struct queue_verify *out,
    queue_verify_diff_fn *fn, void *arg);

/* Map a failed commit to its SMTP reply ("451", "4.3.0", text). */
void queue_status_reply(enum q_status st, int err, int *code,
    const char **enh, const char **text);

#endif
