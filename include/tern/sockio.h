/*
 * sockio.h - reads and writes that the owner of a plain-socket bufferevent
 * does itself, instead of libevent's write event and its read callback
 * (base/sockio.c says why). Used by the SMTP server sessions
 * (smtpd/session_io.c) and the delivery connections (queue/mta/deliver.c).
 * Only for a socket bufferevent without TLS (the caller knows which it has);
 * each call runs on the bufferevent's own loop thread.
 */
#ifndef TERN_SOCKIO_H
#define TERN_SOCKIO_H

#include <sys/types.h>

struct bufferevent;

/*
 * Write bev's output to its socket now, as much as the socket takes.
 * 1 if the output is empty after; 0 if bytes are left (the socket is full,
 * or failed: libevent's write event, once enabled, takes over and reports
 * the error).
 */
int sockio_flush(struct bufferevent *bev);

/*
 * Read up to want bytes from bev's socket into its input buffer (one
 * readv, no FIONREAD). The bytes read; 0 at EOF, -1 with errno (EAGAIN:
 * nothing there; ENOMEM: no buffer space).
 */
ssize_t sockio_read(struct bufferevent *bev, size_t want);

#endif
