/*
 * log_loop.c - a loop thread's log lines written once per turn of its
 * event loop (tern/log_loop.h).
 *
 * Why: a session loop logs a line per message ("status=queued"), each a
 * write(2) of its own, and on a virtual machine a system call costs far
 * more than the line. The commit results of a group commit reach the loop
 * together, so their lines can leave together: the thread stays in the
 * log's turn mode (log_batch_turn), and the first line of a turn activates
 * a flush event on the loop. libevent runs an event activated from a
 * callback in the same pass over the active events, after those already
 * queued, so the lines are written before the loop polls or sleeps again:
 * a line waits at most one turn (a crash loses at most that turn's lines),
 * and the detach after the loop writes what its last turn left.
 *
 * Runs on the loop's own thread only (the state is thread-local); the
 * event is never touched by another thread, so activating it needs no
 * wake-up of the loop.
 */
#include <event2/event.h>

#include "tern/log.h"
#include "tern/log_loop.h"

static __thread struct event *log_loop_ev;

static void
log_loop_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	log_batch_flush();
}

static void
log_loop_kick(void)
{
	event_active(log_loop_ev, EV_TIMEOUT, 0);
}

int
log_loop_attach(struct event_base *base)
{
	if (log_loop_ev != NULL)
		return 0;
	log_loop_ev = event_new(base, -1, 0, log_loop_flush_cb, NULL);
	if (log_loop_ev == NULL)
		return -1;
	log_batch_turn(log_loop_kick);
	return 0;
}

void
log_loop_detach(void)
{
	log_batch_turn(NULL);
	if (log_loop_ev != NULL) {
		event_free(log_loop_ev);
		log_loop_ev = NULL;
	}
}
