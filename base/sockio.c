/*
 * sockio.c - a plain-socket bufferevent's reads and writes done by its
 * owner (tern/sockio.h): a group of lines written with one writev(2) when
 * the owner is done adding them, and bytes read in blocks of the owner's
 * choosing.
 *
 * Why: libevent 2.1's socket bufferevent arms its write event (epoll_ctl)
 * as soon as bytes are added and disarms it (epoll_ctl) once they are
 * written, a loop pass later; each evbuffer_add meanwhile asks the base
 * (under its lock) whether the event is pending; and it reads at most
 * 4096 bytes per wake-up, each read preceded by an ioctl(FIONREAD). An
 * SMTP dialog that writes a command group and reads its replies pays two
 * epoll_ctl and an ioctl per exchange for nothing. The owners
 * (smtpd/session_io.c, queue/mta/deliver.c) keep the write event off
 * while they produce output, write it here, and enable it only for what
 * the socket did not take; the delivery side also reads here, from its own
 * read event.
 *
 * Runs on the bufferevent's loop thread. Never blocks (the socket is
 * non-blocking). Sees the bytes only as opaque blocks: parsing stays with
 * the callers. Not for TLS bufferevents, which keep libevent's own I/O.
 */
#include <errno.h>
#include <sys/uio.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "tern/sockio.h"

int
sockio_flush(struct bufferevent *bev)
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
sockio_read(struct bufferevent *bev, size_t want)
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
		int e = errno;
		evbuffer_commit_space(in, v, 0);
		evbuffer_freeze(in, 0);
		errno = e;
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
