/*
 * ctl.h - the control socket: JSON lines over a UNIX stream socket, served
 * by ternd on a thread of its own (see ctl_server_new) and spoken by
 * ternctl.
 *
 * Protocol (version CTL_PROTO_VERSION; this schema is public: scripts parse
 * it. Add fields freely, rename or retype none):
 *
 *   request   one line, at most CTL_LINE_MAX bytes with its LF:
 *             {"v":2,"cmd":"<name>", ...arguments}
 *   response  one line per request, in order:
 *             {"ok":true, ...result}
 *             {"ok":false,"error":"<text>","code":<CTL_E_*>}
 *             except a listing (queue), which is streamed: see STREAM.
 *
 * Versions: 2 streams listings (STREAM); 1 answered them with one object
 * holding every message. Requests with "v":1 are still answered, except
 * queue (CTL_E_VERSION: a v1 client expects the old single line).
 * A request whose "v" is missing or not in CTL_PROTO_MIN..CTL_PROTO_VERSION
 * gets CTL_E_VERSION;
 * a line that is not a JSON object gets CTL_E_BAD_REQUEST; a line longer than
 * CTL_LINE_MAX gets CTL_E_TOO_LONG and the connection is closed. A peer that
 * is not allowed (see ctl_server_new) gets one CTL_E_DENIED line and is
 * closed before anything it sent is read.
 *
 * Commands (ternctl prints these objects verbatim with --json):
 *   ping                 -> {"ok":true,"version":2,"pid":N}
 *   queue ["filter":F] ["limit":N] ["after":"<qid>"]  -> STREAM of ENV
 *                           (id order; ids > after; at most limit, N >= 1)
 *   summary ["top":N]    -> SUMMARY (from the queue's counters, never a walk)
 *   show  "id":"<qid>"   -> {"ok":true,"message":ENV+HIST}
 *         "body":true       ... plus "body":"<base64 of the raw body>"
 *                            (bodies are bytes, not text; base64 keeps
 *                            them exact). A body that cannot be read gives
 *                            {"ok":false,"error":"...","code":CTL_E_INTERNAL}.
 *   hold|release|bounce "id":"<qid>"                       -> RESULT
 *   delete|retry        "id":"<qid>" | "all":true ["filter":F] -> RESULT
 *   pause|resume        ["domain":"<d>"]  (none: all)      -> PAUSE
 *   stats                                                  -> STATS
 *   reload                                                 -> {"ok":true}
 * F (every key optional; a message matches when all given keys match):
 *   {"from":"<text>"     sender contains text (ASCII case-insensitive)
 *    "to":"<text>"       a pending recipient contains text
 *    "domain":"<d>"      a pending recipient's domain is d (case-insensitive)
 *    "held":true|false   held (ENV_F_HOLD) or not
 *    "older_than":N}     arrived at least N seconds ago (N >= 0)
 * RESULT (the messages acted on, and those a bulk request passed over):
 *   {"ok":true,"ids":["<qid>",...],"skipped":[{"id":"<qid>","reason":"..."}]}
 *   A bulk request ("all") of more than CTL_OP_SLICE messages is handed to
 *   the scheduler in ops of CTL_OP_SLICE ids, one after the other (its
 *   thread keeps delivering in between); the answer joins their lists.
 *   With one "id", a message that cannot be acted on is an error instead:
 *   CTL_E_NOT_FOUND, or CTL_E_STATE ("message is being delivered", "message
 *   is held", ...). Reasons in "skipped": "in flight", "held", "corrupt",
 *   "gone", "nothing pending".
 * STREAM (a listing, one line each, produced a page at a time while the
 * reader keeps up: the server holds at most about CTL_OUT_HIGH bytes of it):
 *   {"ok":true,"stream":"messages"}          header (or one error line:
 *                                            then nothing follows)
 *   ENV                                      one line per message
 *   {"end":true,"ok":true,"count":N,"next_after":"<qid>"|null}   trailer
 *   count: the rows sent; next_after: with "limit", when the page is full,
 *   the "after" of the next page (which may turn out empty), else null. A
 *   read error after the header ends the stream with
 *   {"end":true,"ok":false,"error":"...","code":N,"count":N,
 *    "next_after":null}. Rows never have an "end" key.
 *   Pages: queue_query from the last id sent, so messages queued or removed
 *   meanwhile appear or not as of each page; no id is sent twice.
 * SUMMARY (like Postfix's qshape, but counted as the queue changes):
 *   {"ok":true,"states":{"messages":N,"new":N,"deferred":N,"held":N,
 *    "corrupt":N},"recipients":N,"bytes":N,"oldest_arrival":<unix>|0,
 *    "domains":[{"domain":"<d>","messages":N,"recipients":N},...]}
 *   new = never attempted and not held; deferred = attempted, not held;
 *   held includes corrupt; recipients: pending ones; domains: the top
 *   (default CTL_SUMMARY_TOP, 0: all) by pending recipients, most first.
 * PAUSE: {"ok":true,"paused_all":bool,"paused_domains":["<d>",...]}
 * STATS:
 *   {"ok":true,"running":bool,"uptime":N|null,"counters":C|null,
 *    "paused_all":bool,"paused_domains":[...],
 *    "destinations_total":N,"destinations_down":N,"destinations":[DEST,...],
 *    "queue":{"messages":N,"pending":N,"held":N,"corrupt":N,
 *             "domains":[{"domain":"<d>","messages":N,"recipients":N},...]}}
 *   C = {"accepted":N,"delivered":N,"deferred":N,"bounced":N,"expired":N,
 *   "dsn":N}, counted since ternd started: accepted = messages received
 *   and answered 250 (the DSNs tern generates are counted in "dsn", not
 *   here); delivered/deferred = recipient results of delivery attempts
 *   (2xx / 4xx, network or DNS trouble); bounced = recipients failed for
 *   good (5xx, or by the operator); expired = recipients that reached
 *   max-queue-lifetime. The same numbers as /metrics'
 *   tern_messages_accepted_total, tern_deliveries_total{result=...} and
 *   tern_dsn_total. "queue": a message is counted once, as corrupt, else
 *   held, else pending; "domains" counts pending recipients by domain
 *   (sorted by domain), and the messages that have one there. With the
 *   daemon down, ternctl answers stats from the queue directory with
 *   "running":false, "uptime":null and "counters":null (and no
 *   "destinations*" keys).
 *   DEST = {"destination":"mx:<domain>"|"smtp:<host>:<port>:<tls>",
 *   "state":"up"|"down"|"probe","down_until":<unix>|null,"concurrency":N,
 *   "max":N,"in_flight":N,"waiting":N,"failures":N,"last_error":"..."|null}:
 *   the scheduler's destinations, down ones and then the busiest first, at
 *   most 200. retry (all, or "all" with a "domain" filter, or an id) also
 *   lifts the down marks of all destinations, the domain's, or the
 *   message's.
 *
 * Mutating commands (hold, release, delete, retry, bounce, pause, resume,
 * stats' counters) run on the scheduler's thread: the server hands a struct
 * ctl_op to ctl_hooks.op and answers when the op is answered (op->reply);
 * a connection's later requests wait for that answer (and for the end of
 * a listing), so responses stay in order: a client that wants to ask
 * while a listing runs opens a second connection. Without an op hook (ternctl's offline fallback, tests) they answer
 * CTL_E_UNSUPPORTED, except stats, which then reports the queue only.
 *
 * Semantics: hold sets ENV_F_HOLD durably and unschedules; release clears it
 * and schedules now; delete marks the pending recipients RCPT_DELETED, then
 * removes the message (log "id=... status=deleted by=operator"); retry sets
 * next_attempt to now (held and corrupt messages are skipped); bounce fails
 * every pending recipient with 5.0.0 "bounced by the operator" and sends the
 * DSN to the sender now (no DSN for the null sender). A message whose
 * delivery attempt (or DSN commit) is in flight is refused by hold, delete
 * and bounce (CTL_E_STATE; bulk: skipped "in flight"): try again when the
 * attempt has returned. A message that only waits in its destination's
 * queue for a connection is not in flight (those three take it out of the
 * queue). pause stops handing jobs to the delivery workers
 * (all, or jobs with a recipient in the domain); attempts already at a
 * worker go on. A job that became due while paused waits, counted as in
 * flight, until resume ("resume" without a domain clears every pause).
 *
 * An id that is not 16 hex digits gets CTL_E_BAD_REQUEST; an unknown id gets
 * {"ok":false,"error":"no such message","code":1}.
 *
 * ENV (one queued message):
 *   {"id":"<16 hex>","arrival":<unix>,"size":<body bytes>,"sender":"<addr or
 *    empty for <>>","recipients":[RCPT,...],"attempts":N,"next_attempt":<unix>,
 *    "last_error":"..."|null,"held":bool,"corrupt":bool,"smtputf8":bool,
 *    "8bitmime":bool,"requiretls":bool,"tls_optional":bool,
 *    "client":"<ip>"|null,"helo":"..."|null,"auth_user":"..."|null}
 * RCPT:
 *   {"address":"...","state":"pending|sent|bounced|expired|deleted",
 *    "status":"4.4.1"|null,"last_error":"..."|null,"relay":"..."|null,
 *    "updated":<unix of the last attempt or state change>|0}
 * HIST (show only) adds to ENV the delivery history, oldest first:
 *   "history":[{"time":<unix>,"recipient":"...","result":"sent|deferred|
 *     bounced|expired","status":"4.4.1"|null,"relay":"..."|null,
 *     "reply":"..."|null,"tls":"TLSv1.3 ..."|null},...],
 *   "history_dropped":N   (older entries not kept: at most ENV_HISTORY_MAX
 *                          are; the log has every attempt)
 * Strings are escaped by the JSON writer (json.h): always valid JSON and
 * UTF-8; bytes that are not UTF-8 appear as \u00XX.
 */
#ifndef TERN_CTL_H
#define TERN_CTL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tern/json.h"

struct ctl_server;
struct event_base;
struct queue;
struct envelope;

#define CTL_PROTO_VERSION 2
#define CTL_PROTO_MIN     1             /* oldest version still answered */
#define CTL_STREAM_VERSION 2            /* listings stream from this one */
#define CTL_PAGE_ROWS     512           /* rows per page of a listing ... */
#define CTL_PAGE_BYTES    (256 * 1024)  /* ... or about this many bytes */
#define CTL_PAGE_FIRST    64            /* rows of a listing's first page */
#define CTL_SUMMARY_TOP   20            /* summary's domains by default */
#define CTL_OUT_HIGH      (1024 * 1024) /* output held per connection */
#define CTL_OUT_LOW       (256 * 1024)  /* next page below this */
#define CTL_WORKERS       2             /* threads for slow requests */
#define CTL_OP_SLICE      1000          /* ids per op handed on */
#define CTL_LINE_MAX      (64 * 1024)   /* request line, LF included */
#define CTL_MAX_CLIENTS   64            /* concurrent control connections */
#define CTL_IDLE_TIMEOUT  300           /* seconds without a request */

/* "code" of an error response; ternctl exits with 1 for CTL_E_NOT_FOUND. */
enum ctl_error {
	CTL_E_NOT_FOUND = 1,        /* "no such message" */
	CTL_E_BAD_REQUEST = 2,      /* not a JSON object, missing/bad argument */
	CTL_E_VERSION = 3,          /* "v" missing or unsupported */
	CTL_E_UNKNOWN = 4,          /* unknown command */
	CTL_E_UNSUPPORTED = 5,      /* known command, not available here */
	CTL_E_DENIED = 6,           /* peer not allowed */
	CTL_E_TOO_LONG = 7,         /* request line over CTL_LINE_MAX */
	CTL_E_INTERNAL = 8,         /* queue read failed, out of memory, ... */
	CTL_E_STATE = 9,            /* not possible now: in flight, held, ... */
};

/* ---- operations answered by another thread ---- */

/* A queue filter (F above); strings are decoded copies, "" = not given. */
#define CTL_FILTER_STR 256
struct ctl_filter {
	char from[CTL_FILTER_STR];
	char to[CTL_FILTER_STR];
	char domain[CTL_FILTER_STR];
	int held;                   /* -1 not given, 0, 1 */
	int64_t older_than;         /* -1 not given, else seconds */
};

/*
 * Parse the filter object toks[obj] of request p into f (pure). Unknown
 * keys, wrong types, strings over CTL_FILTER_STR - 1 bytes and negative
 * ages are refused: -1 with *err set to a static text. toks[obj] not an
 * object: -1.
 */
int ctl_filter_parse(const char *p, const struct json_tok *toks, size_t obj,
    struct ctl_filter *f, const char **err);
void ctl_filter_init(struct ctl_filter *f);     /* matches everything */
/* 1 if env matches f at time now (unix seconds). Pure. */
int ctl_filter_match(const struct ctl_filter *f, const struct envelope *env,
    int64_t now);

enum ctl_op_type {
	CTL_OP_HOLD = 1,
	CTL_OP_RELEASE,
	CTL_OP_DELETE,
	CTL_OP_RETRY,
	CTL_OP_BOUNCE,
	CTL_OP_PAUSE,
	CTL_OP_RESUME,
	CTL_OP_STATS,
	CTL_OP_RELOAD,              /* the server's own: never handed to op */
};

struct ctl_return;              /* where answers go (ctl_server.c) */

/*
 * One state-changing request, handed by the control server to
 * ctl_hooks.op. The receiver owns it and must answer it exactly once, from
 * any thread, through the op's own reply or fail (which free it): the
 * receiver (the scheduler, a layer below the control socket) names no
 * function of the control layer.
 */
struct ctl_op {
	enum ctl_op_type type;
	uint64_t *ids;              /* owned: the messages (HOLD..BOUNCE) */
	size_t nids;
	int single;                 /* one "id" was named: see RESULT */
	char domain[CTL_FILTER_STR];/* PAUSE/RESUME: "" = all; RETRY with
	                               "all": the filter's domain or "" */
	struct ctl_return *ret;     /* a reference */
	uint64_t token;             /* the waiting request */
	/* Answer with the response object in w (finished; w is reset). */
	void (*reply)(struct ctl_op *op, struct json_writer *w);
	/* Answer {"ok":false,"error":text,"code":code}. */
	void (*fail)(struct ctl_op *op, int code, const char *text);
	/* STATS: write the "queue" object from q's counters. 0 or -1. */
	int (*stats_queue)(struct json_writer *w, struct queue *q);
};

/* The control server's reply and fail (what it sets in every op). */
void ctl_op_reply(struct ctl_op *op, struct json_writer *w);
void ctl_op_fail(struct ctl_op *op, int code, const char *text);
/* Write the "queue" object of STATS from q's counters (any thread). 0 or -1. */
int ctl_stats_queue_write(struct json_writer *w, struct queue *q);

/*
 * What the daemon can do beyond reading the queue. Each hook runs on the
 * loop given to ctl_server_new (ternd's main loop, the one its signals and
 * reloads run on), never on the control thread, and must not block. op takes ownership of the op and hands
 * it to the thread that owns the state (answer later with ctl_op_reply);
 * it returns 0, or -1 without taking it. reload returns 0 done, -1 failed.
 * A NULL hook makes its commands answer "not supported".
 */
struct ctl_hooks {
	int (*op)(void *arg, struct ctl_op *op);
	int (*reload)(void *arg);                      /* as SIGHUP */
	void *arg;
};


/*
 * Create the control socket at path (a stale socket file there is unlinked
 * first; the socket gets mode 0660 and, when group is not (gid_t)-1, that
 * group) and serve it from a thread of its own. Each connection is
 * authorised once, from SO_PEERCRED: uid 0, the daemon's effective uid, and
 * processes whose primary or supplementary group (SO_PEERGROUPS) is group
 * are allowed.
 * Threads: the control thread runs its own event loop (connections, short
 * requests: ping, show, summary, stats' hand-off); requests that may read
 * much of the queue (ctl_request_slow: listings page by page, verify,
 * delete/retry "all") run on CTL_WORKERS worker threads, one page or one
 * request at a time, so they never hold up the control loop, base, or
 * each other's connections. Hooks (ctl_hooks) run on base. A listing's
 * next page is produced only while its connection holds less than
 * CTL_OUT_HIGH bytes of output: memory per listing stays bounded.
 * q and hooks are borrowed and must outlive the server; q may be NULL (queue
 * commands then answer CTL_E_INTERNAL). Returns NULL with a message in err.
 */
struct ctl_server *ctl_server_new(struct event_base *base, const char *path,
    struct queue *q, const struct ctl_hooks *hooks, gid_t group,
    char *err, size_t errlen);
/* Close all connections and the listener, unlink the socket. NULL ok. */
void ctl_server_free(struct ctl_server *s);

/*
 * Answer one request line req[0..len) (no LF) into out (one JSON object, no
 * LF). The server uses it for every line; ternctl uses it directly on a
 * queue opened read-only when the daemon is down, so both answers are the
 * same bytes. hooks may be NULL; commands that need hooks->op answer
 * CTL_E_UNSUPPORTED here (stats: the queue part only). Returns the
 * response's code: 0 for ok, or a CTL_E_* value. A listing answers 0 with
 * its header in out and *streamp set (owned by the caller): the rest of
 * the STREAM comes from ctl_stream_page.
 */
struct ctl_stream;
int ctl_request_handle(struct queue *q, const struct ctl_hooks *hooks,
    const char *req, size_t len, struct json_writer *out,
    struct ctl_stream **streamp);
/*
 * Append the next page of a listing to out: at most CTL_PAGE_ROWS rows
 * (CTL_PAGE_FIRST for the first page, so the first row comes at once;
 * fewer once CTL_PAGE_BYTES are written), each an ENV line with its LF,
 * and the trailer line once the listing is over. Reads q afresh from the
 * last id sent (any thread; nothing is held between pages). Returns 1 when
 * the trailer has been written (then 1 again, appending nothing), else 0.
 * out->err is left 0.
 */
int ctl_stream_page(struct ctl_stream *st, struct queue *q, struct buf *out);
void ctl_stream_free(struct ctl_stream *st);    /* NULL ok */

#endif
