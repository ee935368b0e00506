/*
 * ctl.h - the control socket: JSON lines over a UNIX stream socket, served
 * by ternd on its main event loop and spoken by ternctl.
 *
 * Protocol (version CTL_PROTO_VERSION; this schema is public: scripts parse
 * it. Add fields freely, rename or retype none):
 *
 *   request   one line, at most CTL_LINE_MAX bytes with its LF:
 *             {"v":1,"cmd":"<name>", ...arguments}
 *   response  one line per request, in order:
 *             {"ok":true, ...result}
 *             {"ok":false,"error":"<text>","code":<CTL_E_*>}
 *
 * A request whose "v" is missing or not CTL_PROTO_VERSION gets CTL_E_VERSION;
 * a line that is not a JSON object gets CTL_E_BAD_REQUEST; a line longer than
 * CTL_LINE_MAX gets CTL_E_TOO_LONG and the connection is closed. A peer that
 * is not allowed (see ctl_server_new) gets one CTL_E_DENIED line and is
 * closed before anything it sent is read.
 *
 * Commands:
 *   ping                 -> {"ok":true,"version":1,"pid":N}
 *   queue                -> {"ok":true,"messages":[ENV,...]}   (id order)
 *   show  "id":"<qid>"   -> {"ok":true,"message":ENV}
 *         "body":true       ... plus "body":"<base64 of the raw body>"
 *                            (bodies are bytes, not text; base64 keeps
 *                            them exact). A body that cannot be read gives
 *                            {"ok":false,"error":"...","code":CTL_E_INTERNAL}.
 *   hold|release|delete|retry|bounce  "id":"<qid>"   -> {"ok":true}
 *   pause|resume|reload                              -> {"ok":true}
 *             (through struct ctl_hooks; a command whose hook is NULL gets
 *              {"ok":false,"error":"not supported","code":CTL_E_UNSUPPORTED})
 * An id that is not 16 hex digits gets CTL_E_BAD_REQUEST; an unknown id gets
 * {"ok":false,"error":"no such message","code":1}.
 *
 * ENV (one queued message):
 *   {"id":"<16 hex>","arrival":<unix>,"size":<body bytes>,"sender":"<addr or
 *    empty for <>>","recipients":[RCPT,...],"attempts":N,"next_attempt":<unix>,
 *    "last_error":"..."|null,"held":bool,"corrupt":bool,
 *    "client":"<ip>"|null,"helo":"..."|null,"auth_user":"..."|null}
 * RCPT:
 *   {"address":"...","state":"pending|sent|bounced|expired|deleted",
 *    "status":"4.4.1"|null,"last_error":"..."|null,"relay":"..."|null}
 * Strings are escaped by the JSON writer (json.h): always valid JSON and
 * UTF-8; bytes that are not UTF-8 appear as \u00XX.
 */
#ifndef TERN_CTL_H
#define TERN_CTL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tern/json.h"

#define CTL_PROTO_VERSION 1
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
};

/*
 * What the daemon can do beyond reading the queue. Each hook runs on the
 * control loop and must not block (hand the work to the owning thread and
 * return). Return 0 done, 1 no such message, -1 failure. A NULL hook makes
 * its command answer "not supported".
 */
struct ctl_hooks {
	int (*hold)(void *arg, uint64_t id, int on);   /* hold / release */
	int (*remove)(void *arg, uint64_t id);         /* delete */
	int (*retry)(void *arg, uint64_t id);          /* schedule now */
	int (*bounce)(void *arg, uint64_t id);         /* fail now, send DSN */
	int (*pause)(void *arg, int on);               /* pause / resume delivery */
	int (*reload)(void *arg);                      /* as SIGHUP */
	void *arg;
};

struct ctl_server;
struct event_base;
struct queue;
struct envelope;

/*
 * Create the control socket at path (a stale socket file there is unlinked
 * first; the socket gets mode 0660 and, when group is not (gid_t)-1, that
 * group) and serve it on base. Each connection is authorised once, from
 * SO_PEERCRED: uid 0, the daemon's effective uid, and processes whose
 * primary or supplementary group (SO_PEERGROUPS) is group are allowed.
 * Requests are answered on base's thread: queue reads (queue_walk,
 * queue_get, queue_read_body) are Berkeley DB and segment reads, short
 * enough to run on the loop; a big queue listing is built in memory.
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
 * same bytes. hooks may be NULL. Returns the response's code: 0 for ok,
 * or a CTL_E_* value.
 */
int ctl_request_handle(struct queue *q, const struct ctl_hooks *hooks,
    const char *req, size_t len, struct json_writer *out);

/* Write one envelope as ENV (above). */
void ctl_envelope_write(struct json_writer *w, const struct envelope *env);

#endif
