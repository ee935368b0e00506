/*
 * session_io.c - the plain-socket shortcuts of an SMTP server session: a
 * group of replies written with one writev(2) by the session itself, and
 * message bytes read in large blocks.
 *
 * Why: libevent 2.1's socket bufferevent arms the write event (epoll_ctl)
 * as soon as a reply is added and disarms it (epoll_ctl) once written, a
 * loop pass later; and it reads at most 4096 bytes per wake-up, each read
 * preceded by an ioctl(FIONREAD). On a relay session that is two
 * epoll_ctl per reply group and two system calls per 4 KiB of message.
 * The session (session.c) instead keeps EV_WRITE disabled while it
 * handles input, writes the group itself when it is done, and gives the
 * bufferevent only what the socket did not take; while it reads a
 * message it reads what the socket holds, in blocks of up to 64 KiB.
 *
 * Runs on the session's loop thread. Only for a socket bufferevent without
 * TLS (smtpd_io_plain): a TLS bufferevent keeps libevent's own I/O. Never
 * blocks (the socket is non-blocking). Sees untrusted bytes only as an
 * opaque block appended to the input buffer: parsing stays in session.c's
 * callers of data_filter.
 */
#include <errno.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

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
	struct evbuffer *out = bufferevent_get_output(bev);

	/* the bufferevent keeps its output's front frozen but for its own writes */
	evbuffer_unfreeze(out, 1);
	while (evbuffer_get_length(out) > 0)
		if (evbuffer_write(out, bufferevent_getfd(bev)) <= 0)
			break;          /* EAGAIN or an error: libevent's turn */
	evbuffer_freeze(out, 1);
	return evbuffer_get_length(out) == 0;
}

ssize_t
smtpd_io_read(struct bufferevent *bev, size_t want)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_iovec v[2];
	struct iovec iov[2];
	ssize_t r;
	int n;

	/* and its input's end frozen but for its own reads */
	evbuffer_unfreeze(in, 0);
	if ((n = evbuffer_reserve_space(in, (ev_ssize_t)want, v, 2)) <= 0) {
		evbuffer_freeze(in, 0);
		errno = ENOMEM;
		return -1;
	}
	for (int i = 0; i < n; i++) {
		iov[i].iov_base = v[i].iov_base;
		iov[i].iov_len = v[i].iov_len;
	}
	do
		r = readv(bufferevent_getfd(bev), iov, n);
	while (r < 0 && errno == EINTR);
	if (r <= 0) {
		/* EOF and errors are libevent's to report, at its next read */
		evbuffer_commit_space(in, v, 0);
		evbuffer_freeze(in, 0);
		return r;
	}
	size_t left = (size_t)r;
	int used = 0;
	for (; used < n && left > 0; used++) {
		if (v[used].iov_len > left)
			v[used].iov_len = left;
		left -= v[used].iov_len;
	}
	evbuffer_commit_space(in, v, used);
	evbuffer_freeze(in, 0);
	return r;
}
