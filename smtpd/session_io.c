/*
 * session_io.c - the plain-socket shortcuts of an SMTP server session: a
 * group of replies written with one writev(2) by the session itself, and
 * message bytes read in large blocks (the reads and writes themselves are
 * base/sockio.c's, shared with the delivery side).
 *
 * Why: libevent 2.1's socket bufferevent arms the write event (epoll_ctl)
 * as soon as a reply is added and disarms it (epoll_ctl) once written, a
 * loop pass later; and it reads at most 4096 bytes per wake-up, each read
 * preceded by an ioctl(FIONREAD). On a relay session that is two
 * epoll_ctl per reply group and two system calls per 4 KiB of message.
 * The session (session.c) instead keeps EV_WRITE disabled while it
 * handles input, writes the group itself when it is done, and gives the
 * bufferevent only what the socket did not take. It reads with its own
 * persistent read event (the bufferevent's reading stays disabled): one
 * readv per wake-up, no FIONREAD, no epoll_ctl; while it reads a message
 * it reads what the socket holds, in blocks of up to 64 KiB.
 *
 * Runs on the session's loop thread. Only for a socket bufferevent without
 * TLS (smtpd_io_plain), or the socket bufferevent under a STARTTLS filter,
 * which the session writes the same way (session.c, smtpd_uflush_cb);
 * reading under TLS stays libevent's. Never
 * blocks (the socket is non-blocking). Sees untrusted bytes only as an
 * opaque block appended to the input buffer: parsing stays in session.c's
 * callers of data_filter.
 */
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

#include "tern/sockio.h"

#include "smtpd_int.h"

int
smtpd_io_plain(struct bufferevent *bev)
{
	return bufferevent_get_underlying(bev) == NULL &&
	    bufferevent_openssl_get_ssl(bev) == NULL;
}

int
smtpd_io_flush(struct bufferevent *bev)
{
	return sockio_flush(bev);
}

ssize_t
smtpd_io_read(struct bufferevent *bev, size_t want)
{
	/* EOF and errors: the caller's to report, or its next read's */
	return sockio_read(bev, want);
}
