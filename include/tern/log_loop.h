/*
 * log_loop.h - a loop thread's log lines written once per turn of its
 * event loop (base/log_loop.c says why).
 */
#ifndef TERN_LOG_LOOP_H
#define TERN_LOG_LOOP_H

struct event_base;

/*
 * On the thread that runs base, before its loop: from now on the thread's
 * info and debug lines (stderr, text or JSON) are gathered and written with
 * one write(2) at the end of the loop turn that produced them (or sooner,
 * at LOG_BATCH_MAX, or before a warning or error). 0, or -1 if the event
 * could not be made (lines are then written one by one, as before).
 */
int log_loop_attach(struct event_base *base);
/* On the same thread, once its loop has returned: write the rest, stop. */
void log_loop_detach(void);

#endif
