/*
 * envelope.h - the envelope of a queued message and its versioned record
 * codec.
 *
 * An envelope is the state of one message: who sent it, to whom, where its
 * body lives in the segment log, and per recipient how far delivery got.
 * envelope_encode()/envelope_decode() are pure; decode rejects unknown
 * versions and any truncated, overlong or unterminated field (a record that
 * fails to decode is held and reported, never deleted).
 */
#ifndef TERN_ENVELOPE_H
#define TERN_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#define ENVELOPE_VERSION 2     /* 1: the same without the history; still read */

enum rcpt_state {
	RCPT_PENDING = 0,   /* not yet delivered (maybe deferred) */
	RCPT_SENT,          /* accepted by the next hop: done */
	RCPT_BOUNCED,       /* failed for good; DSN generated */
	RCPT_EXPIRED,       /* max-queue-lifetime reached; DSN generated */
	RCPT_DELETED,       /* removed by the operator */
};

struct env_rcpt {
	char *addr;         /* owned: "local@domain" */
	char *orcpt;        /* owned or NULL: ORCPT as given */
	uint8_t state;      /* enum rcpt_state */
	uint8_t notify;     /* SMTP_NOTIFY_* bits */
	char *status;       /* owned or NULL: last enhanced status, "4.4.1" */
	char *last_error;   /* owned or NULL: last reply or reason text */
	char *relay;        /* owned or NULL: host[addr]:port of last attempt */
	int64_t updated;    /* unix seconds of last state change */
};

/*
 * Delivery history: one entry per recipient per attempt outcome, newest
 * last, at most ENV_HISTORY_MAX (older entries are dropped and counted).
 * The per-recipient fields above hold only the latest result.
 */
enum env_result {
	ENV_RES_SENT = 0,
	ENV_RES_DEFERRED,
	ENV_RES_BOUNCED,
	ENV_RES_EXPIRED,
};
#define ENV_HISTORY_MAX     32
#define ENV_HISTORY_TEXT    400     /* longer reply texts are cut */

struct env_attempt {
	int64_t when;       /* unix seconds */
	uint32_t rcpt;      /* index into rcpts */
	uint8_t result;     /* enum env_result */
	char *relay;        /* owned or NULL: host[addr]:port */
	char *status;       /* owned or NULL: enhanced status */
	char *reply;        /* owned or NULL: reply or reason, cut */
	char *tls;          /* owned or NULL: "TLSv1.3 cipher" */
};

/* envelope flags */
#define ENV_F_HOLD      0x01u  /* operator hold: not scheduled */
#define ENV_F_CORRUPT   0x02u  /* body missing or failed its CRC: held, reported */
#define ENV_F_8BIT      0x04u  /* BODY=8BITMIME */
#define ENV_F_SMTPUTF8  0x08u
#define ENV_F_DSN       0x10u  /* this message is itself a bounce (sender <>) */
#define ENV_F_WARNED    0x20u  /* delay-warning DSN already sent */
#define ENV_F_RET_HDRS  0x40u  /* RET=HDRS */
#define ENV_F_RET_FULL  0x80u  /* RET=FULL (passed on to a DSN-capable hop) */
#define ENV_F_COPY      0x100u /* a copy-forward record (segment only, never
                                  in the index): see queue_rec_scan() */
#define ENV_F_REQUIRETLS 0x200u /* MAIL FROM:<..> REQUIRETLS (RFC 8689):
                                  only over DANE or MTA-STS authenticated TLS
                                  to a hop offering REQUIRETLS, else 5.7.30 */
#define ENV_F_TLS_OPTIONAL 0x400u /* the header holds "TLS-Required: No"
                                  (RFC 8689 5): DANE and MTA-STS failures
                                  do not stop delivery */
#define ENV_F_TLSRPT    0x800u /* a TLS-RPT report: its delivery is not
                                  itself recorded for TLS-RPT */
#define ENV_F_NOKEYS    0x1000u /* index only: its query keys are not
                                  written yet (queue/store/qkeys.c) */

struct envelope {
	uint64_t id;
	uint32_t flags;             /* ENV_F_* */
	char *sender;               /* owned: "" for the null path */
	struct env_rcpt *rcpts;     /* owned array */
	size_t nrcpt;
	int64_t arrival;            /* unix seconds */
	char *client_addr;          /* owned or NULL: "203.0.113.5" */
	char *client_helo;          /* owned or NULL */
	char *auth_user;            /* owned or NULL */
	char *listener;             /* owned or NULL: listener spec it came in on */
	char *envid;                /* owned or NULL: ENVID */
	uint64_t size;              /* body bytes */

	/* where the body lives (set by the committer) */
	uint32_t seg;               /* segment number */
	uint64_t off;               /* offset of the record header in the segment */
	uint32_t rec_len;           /* whole record length, header included */
	uint32_t body_off;          /* body offset inside the record payload */
	uint32_t crc;               /* record CRC-32C */

	/* scheduling */
	uint32_t attempts;
	int64_t next_attempt;       /* unix seconds; 0 = now */
	char *last_error;           /* owned or NULL: last message-level error */

	struct env_attempt *hist;   /* owned array, oldest first */
	size_t nhist;               /* <= ENV_HISTORY_MAX */
	uint32_t hist_dropped;      /* older entries no longer kept */
};

struct envelope *envelope_new(void);               /* zeroed, owned by caller */
void envelope_free(struct envelope *e);             /* NULL is a no-op */
struct envelope *envelope_dup(const struct envelope *e);
/* Append a recipient (copies addr and orcpt); returns its index. */
size_t envelope_add_rcpt(struct envelope *e, const char *addr, const char *orcpt,
    unsigned notify);
/*
 * Append a history entry for recipient rcpt (strings copied, reply cut to
 * ENV_HISTORY_TEXT bytes); drops the oldest entry when full.
 */
void envelope_add_attempt(struct envelope *e, int64_t when, size_t rcpt,
    enum env_result result, const char *relay, const char *status,
    const char *reply, const char *tls);
const char *env_result_name(enum env_result r);    /* "sent", "deferred", ... */
/* Number of recipients still RCPT_PENDING. */
size_t envelope_pending(const struct envelope *e);

/*
 * Encode into a newly allocated buffer (*out, *outlen; caller frees).
 * Returns 0, or -1 if a field is too large for the format.
 */
int envelope_encode(const struct envelope *e, uint8_t **out, size_t *outlen);

/*
 * The flags and segment of an encoded envelope without decoding it (the
 * fixed-width prefix): 0, or -1 if buf is too short or of no known version.
 */
int envelope_peek(const uint8_t *buf, size_t len, uint32_t *flags,
    uint32_t *seg);

enum envelope_decode_status {
	ENV_DECODE_OK = 0,
	ENV_DECODE_TRUNCATED,
	ENV_DECODE_BAD_VERSION,
	ENV_DECODE_BAD_FIELD,
	ENV_DECODE_NOMEM,
};
/* Decode buf[0..len) into a new envelope (*out, caller owns). */
enum envelope_decode_status envelope_decode(const uint8_t *buf, size_t len,
    struct envelope **out);

const char *rcpt_state_name(enum rcpt_state s);    /* "pending", "sent", ... */

#endif
