/*
 * ctl_int.h - between the two halves of the control socket, the protocol
 * (ctl_request.c) and the daemon's server (ctl_server.c). Private to
 * smtpd/ctl/.
 */
#ifndef TERN_CTL_INT_H
#define TERN_CTL_INT_H

#include <stddef.h>

#include "tern/ctl.h"
#include "tern/json.h"

/*
 * Answer one request into out, or, when async and the command hands work
 * on, return 0 with *opp set (out then stays empty; the op's stats_queue
 * is set, its reply and fail are the caller's to set). A listing returns 0
 * with its header in out and *streamp set (ctl_stream_page).
 */
int ctl_request_run(struct queue *q, const struct ctl_hooks *hooks,
    const char *req, size_t len, struct json_writer *out, int async,
    struct ctl_op **opp, struct ctl_stream **streamp);
/*
 * 1 if the request may read much of the queue (a listing, verify,
 * delete/retry "all"): the server answers it on a worker thread, not on
 * its loop. Pure; a line that does not parse is not slow.
 */
int ctl_request_slow(const char *req, size_t len);
/* Write {"ok":false,"error":text,"code":code} into w. */
void ctl_reply_error(struct json_writer *w, int code, const char *text);

#endif
