/*
 * auth.h - SMTP AUTH building blocks (RFC 4954): the SASL exchange for
 * PLAIN (RFC 4616) and LOGIN, strict base64, password hashing, the user
 * database, a thread pool that runs the slow checks off the event loop, and
 * a per-client-address throttle for failed attempts.
 *
 * Layers, and where each may run:
 *  - sasl_*()        pure (smtpd/sasl.c): no allocation, no I/O, no globals.
 *                    Any thread. Outputs live in caller-owned structs.
 *  - auth_db_*(),    smtpd/auth.c. auth_check() costs one yescrypt hash (tens
 *    auth_user_*(),  of ms of CPU): never call it on a session loop, post it
 *    auth_check()    to the pool. An auth_db may be shared by any number of
 *                    threads for auth_check()/auth_user_list().
 *  - auth_pool_*()   owns its worker threads; results come back as
 *                    struct auth_result on the caller's tq.
 *  - auth_throttle_* thread-safe; the clock is passed in (tests inject it).
 *
 * Passwords: never logged; every copy this module makes is wiped
 * (explicit_bzero) once used. The caller wipes its own copies: call
 * sasl_wipe() on its struct sasl after handing the credentials on.
 *
 * Reply mapping (RFC 4954 section 6), one place: sasl_status_reply() and
 * auth_status_reply() give code, enhanced code and text:
 *
 *   SASL_CONTINUE      334 <sasl_prompt()>         send, then feed next line
 *   SASL_OK            (credentials ready: post auth_pool_check())
 *   SASL_BAD_SYNTAX    501 5.5.4  AUTH argument malformed (missing or extra
 *                                 tokens, bad characters in the mechanism)
 *   SASL_UNKNOWN_MECH  504 5.5.4  mechanism not PLAIN or LOGIN
 *   SASL_BAD_BASE64    501 5.5.2  response is not strict base64
 *   SASL_CANCELLED     501 5.0.0  client sent "*"
 *   SASL_TOO_LONG      500 5.5.6  decoded response or a field over its limit,
 *                                 or an AUTH line over SASL_LINE_MAX (the
 *                                 session ends the exchange)
 *   SASL_BAD_CREDS     535 5.7.8  PLAIN message malformed (missing NUL,
 *                                 NUL inside a field, empty user or
 *                                 password): treated as a failed attempt
 *   SASL_AUTHZ_DENIED  535 5.7.8  authzid given and != authcid: tern does
 *                                 not support proxy authorisation; an authzid
 *                                 equal to the authcid (byte for byte, after
 *                                 ASCII lower-casing both) is accepted
 *   AUTH_OK            235 2.7.0
 *   AUTH_FAIL          535 5.7.8  wrong password or unknown user (the same
 *                                 reply and the same cost: no user probing)
 *   AUTH_TEMPFAIL      454 4.7.0  user database unreadable, pool full
 *
 * The session decides what counts as a failed attempt for the throttle;
 * the intent is every 535 (SASL_BAD_CREDS, SASL_AUTHZ_DENIED, AUTH_FAIL).
 *
 * Line lengths: RFC 4954 section 4 allows AUTH command and response lines up
 * to 12288 octets (SASL_LINE_MAX), more than SMTP_CMD_MAX; a PLAIN initial
 * response with three 255-octet fields is 1024 base64 characters.
 *
 * User names: 1-255 octets of printable ASCII (0x21-0x7e), no spaces or
 * controls. Names are case-insensitive: they are stored and compared in
 * ASCII lower case ("Alice@Example.COM" and "alice@example.com" are one
 * user). Passwords: 1-255 octets, any byte but NUL.
 */
#ifndef TERN_AUTH_H
#define TERN_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "tern/tq.h"

#define SASL_LINE_MAX     12288  /* AUTH line incl. CRLF (RFC 4954 4) */
#define SASL_FIELD_MAX    255    /* authzid, authcid, passwd (RFC 4616 2) */
/* Largest decoded response accepted: authzid NUL authcid NUL passwd. */
#define SASL_DECODED_MAX  (3 * SASL_FIELD_MAX + 2)
#define AUTH_USER_MAX     SASL_FIELD_MAX
#define AUTH_PASS_MAX     SASL_FIELD_MAX

/* ------------------------------------------------------------------ */
/* SASL (pure, smtpd/sasl.c)                                          */

enum sasl_status {
	SASL_OK = 0,        /* exchange complete: creds filled */
	SASL_CONTINUE,      /* reply 334 + sasl_prompt(), feed the next line */
	SASL_BAD_SYNTAX,
	SASL_UNKNOWN_MECH,
	SASL_BAD_BASE64,
	SASL_CANCELLED,
	SASL_TOO_LONG,
	SASL_BAD_CREDS,
	SASL_AUTHZ_DENIED,
};

enum sasl_mech {
	SASL_MECH_NONE = 0,
	SASL_MECH_PLAIN,
	SASL_MECH_LOGIN,
};

/* What the client claims; NUL-terminated, user already lower-cased. */
struct sasl_creds {
	char authzid[SASL_FIELD_MAX + 1];   /* "" when not given */
	char user[SASL_FIELD_MAX + 1];      /* authcid */
	char pass[SASL_FIELD_MAX + 1];      /* secret: wipe with sasl_wipe() */
};

/* One AUTH exchange, embedded in the session (caller-owned, no pointers). */
struct sasl {
	enum sasl_mech mech;
	int step;                           /* private */
	struct sasl_creds creds;            /* valid once SASL_OK */
};

struct sasl_reply {
	int code;              /* 334, 501, 504, 500, 535, 235, 454 */
	const char *enhanced;  /* "5.5.2"; NULL for 334 */
	const char *text;      /* human text; for 334 use sasl_prompt() */
};

/*
 * Strict base64 (RFC 4648 section 4): alphabet A-Z a-z 0-9 + /, length a
 * multiple of 4, '=' only as the last one or two characters, unused bits
 * zero, no whitespace. Decodes in[0..inlen) into out (outsize bytes) and
 * stores the length in *outlen. Returns SASL_OK, SASL_BAD_BASE64, or
 * SASL_TOO_LONG when the result would exceed outsize (*outlen = 0 on error;
 * out may be partly written).
 */
enum sasl_status sasl_base64_decode(const char *in, size_t inlen,
    unsigned char *out, size_t outsize, size_t *outlen);
/*
 * Encode in[0..inlen) into out (NUL-terminated). Returns the length written
 * without the NUL, or 0 when outsize < 4 * ceil(inlen / 3) + 1 (then out is
 * "" if outsize > 0). Encoding "" gives "" and returns 0 too.
 */
size_t sasl_base64_encode(const void *in, size_t inlen, char *out,
    size_t outsize);

/*
 * Split the AUTH argument "MECH [initial-response]" (one SP between them;
 * the mechanism is case-insensitive, RFC 4422 charset [A-Z0-9-_], 1-20
 * chars). *ir and *irlen borrow from arg; *has_ir is 1 when an initial response
 * was given ("=" gives has_ir = 1, irlen = 1: sasl_start() turns it into an
 * empty response). Returns SASL_OK, SASL_BAD_SYNTAX or SASL_UNKNOWN_MECH.
 */
enum sasl_status sasl_mech_parse(const char *arg, size_t len,
    enum sasl_mech *mech, const char **ir, size_t *irlen, int *has_ir);

/*
 * RFC 4616: decoded message "[authzid] NUL authcid NUL passwd", each field
 * at most 255 octets with no NUL inside; authcid and passwd non-empty. Fills
 * creds (user lower-cased). Returns SASL_OK, SASL_BAD_CREDS, SASL_TOO_LONG
 * or SASL_AUTHZ_DENIED. creds is wiped on failure.
 */
enum sasl_status sasl_plain_parse(const unsigned char *msg, size_t len,
    struct sasl_creds *creds);

/*
 * Start an exchange from the AUTH argument (as given after "AUTH "). Returns
 * SASL_CONTINUE (send 334 + sasl_prompt(x)), SASL_OK (initial response held
 * everything) or an error. LOGIN takes an initial response as the user name
 * (the common client extension) and then prompts for the password.
 */
enum sasl_status sasl_start(struct sasl *x, const char *arg, size_t len);
/*
 * Feed one client response line (without CRLF). "*" cancels. Returns
 * SASL_CONTINUE, SASL_OK or an error; after anything but SASL_CONTINUE the
 * exchange is over (on error x is wiped).
 */
enum sasl_status sasl_step(struct sasl *x, const char *line, size_t len);
/* Text after "334 ": "" for PLAIN, base64 "Username:" / "Password:". */
const char *sasl_prompt(const struct sasl *x);
/* Zero everything, the password first. Safe on a zeroed struct. */
void sasl_wipe(struct sasl *x);
/* The reply for a status (never NULL). SASL_OK is not a reply (code 0):
 * the credentials go to the pool, and auth_status_reply() answers. */
const struct sasl_reply *sasl_status_reply(enum sasl_status st);
/* ASCII name, for logs and tests. */
const char *sasl_status_name(enum sasl_status st);

/* ------------------------------------------------------------------ */
/* Passwords and users (smtpd/auth.c)                                 */

enum auth_status { AUTH_OK = 0, AUTH_FAIL, AUTH_TEMPFAIL };

/* The reply for an auth_status: 235 2.7.0 / 535 5.7.8 / 454 4.7.0. */
const struct sasl_reply *auth_status_reply(enum auth_status st);

/*
 * 1 if name is a valid user name (see above), else 0. Pure.
 */
int auth_user_valid(const char *name, size_t len);

/*
 * Hash pass with yescrypt and a fresh random salt into out (at least
 * AUTH_HASH_MAX bytes). 0 or -1. Thread-safe.
 */
#define AUTH_HASH_MAX 384
int auth_password_hash(const char *pass, char *out, size_t outlen);
/*
 * 1 if pass matches hash, 0 if not (also for a malformed hash, which still
 * costs one dummy hash). The final compare is constant-time. Thread-safe.
 */
int auth_password_verify(const char *pass, const char *hash);
/* Number of password hashes computed by this process (tests use it). */
uint64_t auth_hash_count(void);

/*
 * The user database: a Berkeley DB btree file (normally
 * <queue_dir>/users.db), key = lower-cased user name, value = crypt(3)
 * string. Not the queue's transactional environment.
 *
 * auth_db_open(path, 0, ...) is what ternd uses: read-only, DB_THREAD. A
 * missing file is an empty database (not an error). Before each lookup the
 * file is stat()ed; when it was replaced (device, inode, size or mtime
 * differ) it is re-opened, so `ternctl user add` takes effect without a
 * reload. If the re-open fails, auth_check() says AUTH_TEMPFAIL until a
 * later one succeeds.
 *
 * auth_db_open(path, 1, ...) is what ternctl uses. auth_user_set/del never
 * modify the file in place: under an exclusive flock on "<path>.lock" they
 * copy it to "<path>.tmp", apply the change, sync, fsync, rename() over
 * path and fsync the directory. Readers thus always see a whole file. The
 * new file keeps the old one's owner, group and mode (a first file gets
 * mode 0600 and, when run as root, the directory's owner and group).
 *
 * Returns NULL and a message in err on failure. The handle is owned by the
 * caller; auth_db_close(NULL) is a no-op. Close only after every pending
 * auth_pool_check() on it has completed (stop the pool first).
 */
struct auth_db;
struct auth_db *auth_db_open(const char *path, int writable, char *err,
    size_t errlen);
void auth_db_close(struct auth_db *db);
/* Add or replace; 0, or -1 with err (invalid name/password, I/O). */
int auth_user_set(struct auth_db *db, const char *name, const char *pass,
    char *err, size_t errlen);
/* 0 deleted, 1 no such user, -1 error with err. */
int auth_user_del(struct auth_db *db, const char *name, char *err,
    size_t errlen);
/*
 * Call cb(name, arg) for each user in name order; cb returning non-zero
 * stops the walk. Returns the number of users visited, or -1 on error.
 * Hashes are never passed out.
 */
int auth_user_list(struct auth_db *db, int (*cb)(const char *name, void *arg),
    void *arg, char *err, size_t errlen);
/*
 * Check user/pass. Costs one yescrypt hash whether or not the user exists
 * (unknown or invalid names hash against a dummy), so timing does not tell
 * which users exist. Thread-safe. Slow: call from the pool.
 */
enum auth_status auth_check(struct auth_db *db, const char *user,
    const char *pass);
/*
 * auth_check() remembers a successful check for 10 minutes as an HMAC (with
 * a secret made at start) of user, password and stored hash, so the same
 * correct password costs one HMAC instead of a yescrypt hash next time.
 * Wrong passwords and unknown users are never cached (always one hash); a
 * password change or deletion invalidates at once. Number of hits so far:
 */
uint64_t auth_cache_hit_count(void);
/*
 * That cache alone, cheap enough for a session loop (an HMAC, a stat and
 * one read of the user database, never a hash nor a re-open): 0 when
 * user/pass is the remembered correct pair for the stored hash (name gets
 * the canonical user name), -1 for anything else, which is auth_check()'s
 * to answer (so a miss takes one hash, as before, and timing still tells
 * nothing about which users exist). Thread-safe.
 */
int auth_check_cached(struct auth_db *db, const char *user, const char *pass,
    char name[AUTH_USER_MAX + 1]);

/* ------------------------------------------------------------------ */
/* Thread pool for auth_check()                                       */

/* Posted to the reply tq with hdr.type TQ_AUTH_DONE, hdr.reqid as given.
 * The handler owns it: free() it. */
struct auth_result {
	struct tq_msg hdr;
	int status;                       /* enum auth_status */
	char user[AUTH_USER_MAX + 1];     /* lower-cased name ("" if invalid) */
};

#define AUTH_POOL_MAX_PENDING 256

struct auth_pool;
/* Start nthreads (1-64) workers. Aborts (fatal) if threads cannot start. */
struct auth_pool *auth_pool_start(int nthreads);
/*
 * Queue a check. user and pass are copied (the copy of pass is wiped after
 * use); the caller may wipe its own at once. db is borrowed until the result
 * is posted. Returns 0, or -1 when AUTH_POOL_MAX_PENDING requests are
 * already waiting (reply 454 4.7.0) or the pool is stopping. Any thread.
 */
int auth_pool_check(struct auth_pool *pool, struct auth_db *db,
    const char *user, const char *pass, struct tq *reply, uint64_t reqid);
/*
 * Stop: requests not yet started are dropped (no result posted), running
 * ones finish and post; then the threads are joined and pool freed.
 * auth_pool_stop(NULL) is a no-op.
 */
void auth_pool_stop(struct auth_pool *pool);

/* ------------------------------------------------------------------ */
/* Failed-attempt throttle                                            */

/*
 * Keyed by client address: an IPv4 address (IPv4-mapped IPv6 counts as
 * IPv4), or the /64 prefix of an IPv6 address (one host usually owns a
 * whole /64). Failures are counted in a window that starts at the first
 * failure and lasts window_s seconds; when it has passed, the count starts
 * again. With n failures in the window:
 *   n >= max_failures             -> AUTH_THROTTLE_REFUSE (suggest 454 4.7.0
 *                                    or 421 4.7.0 and close)
 *   n >= delay_after              -> AUTH_THROTTLE_DELAY, *delay_ms =
 *                                    min(n * 1000, delay_cap_ms)
 *   otherwise                     -> AUTH_THROTTLE_ALLOW
 * A success forgets the address. The table holds at most max_entries
 * addresses; a new one evicts an expired entry or else the least recently
 * updated one. Lookups scan the table (O(max_entries), under a mutex), none
 * while it holds no address (no failure in the window).
 */
enum auth_throttle_verdict {
	AUTH_THROTTLE_ALLOW = 0,
	AUTH_THROTTLE_DELAY,
	AUTH_THROTTLE_REFUSE,
};

struct auth_throttle_conf {
	unsigned window_s;       /* default 900 */
	unsigned max_failures;   /* default 10 */
	unsigned delay_after;    /* default 3 */
	unsigned delay_cap_ms;   /* default 5000 */
	size_t max_entries;      /* default 4096 */
};
#define AUTH_THROTTLE_CONF_DEFAULT { 900, 10, 3, 5000, 4096 }

struct auth_throttle;
/* conf NULL means the defaults. Zero fields take their default. */
struct auth_throttle *auth_throttle_new(const struct auth_throttle_conf *conf);
void auth_throttle_free(struct auth_throttle *t);
/* now: seconds on any steady clock (now_unix() or a test's). sa: AF_INET
 * or AF_INET6; other families always ALLOW and are never counted. */
enum auth_throttle_verdict auth_throttle_check(struct auth_throttle *t,
    const struct sockaddr *sa, int64_t now, unsigned *delay_ms);
void auth_throttle_fail(struct auth_throttle *t, const struct sockaddr *sa,
    int64_t now);
void auth_throttle_success(struct auth_throttle *t,
    const struct sockaddr *sa, int64_t now);

#endif
