/*
 * space.c - surviving a full disk: the reserve and the low-space state
 * (doc/queue.md "A full disk").
 *
 * <dir>/reserve is a file of queue_opts.reserve_size bytes allocated with
 * posix_fallocate(), so that its blocks are ours whatever fills the disk.
 * It is given back only so that the index (BDB log, checkpoints) and
 * delivery can go on when the file system has next to nothing free:
 *  - queue_space_open(), before BDB opens: with less than half a reserve
 *    free, all of it (recovery and the first deliveries need room);
 *  - queue_space_check() while running: with less than an eighth free, a
 *    quarter at a time, down to a quarter kept for the next start.
 * While less than half a reserve is free the queue is "low": the committer
 * refuses new messages (Q_TEMPFAIL ENOSPC: 452 4.3.1), housekeeping
 * prepares no spare and copies nothing forward; delivery and bounces run.
 * The state ends once the reserve is whole again and half a reserve plus
 * one segment is still free. reserve_size 0 turns all of this off.
 *
 * Runs on the main thread at open and on the housekeeping thread after
 * that (the only writer of the reserve and of space_low, which the
 * committer reads under q->lock). Never touches the BDB environment.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "tern/log.h"
#include "queue_int.h"

/* Bytes free for us on the queue's file system, or UINT64_MAX if unknown. */
static uint64_t
queue_space_avail(const struct queue *q)
{
	struct statvfs sv;

	if (statvfs(q->dir, &sv) < 0)
		return UINT64_MAX;
	return (uint64_t)sv.f_bavail * sv.f_frsize;
}

static void
queue_space_path(const struct queue *q, char *buf, size_t len)
{
	snprintf(buf, len, "%s/reserve", q->dir);
}

/* Bytes the reserve file holds now (0 if it is missing). */
static uint64_t
queue_space_held(const struct queue *q)
{
	char path[4096];
	struct stat sb;

	queue_space_path(q, path, sizeof(path));
	if (stat(path, &sb) < 0)
		return 0;
	return (uint64_t)sb.st_blocks * 512u;
}

/* Shrink the reserve to keep bytes. 0 or -1. */
static int
queue_space_release(struct queue *q, uint64_t keep, uint64_t avail,
    const char *why)
{
	char path[4096];
	int fd;

	queue_space_path(q, path, sizeof(path));
	if ((fd = open(path, O_WRONLY | O_CLOEXEC)) < 0)
		return -1;
	/* the fsync commits the journal: only then may others use the blocks */
	if (ftruncate(fd, (off_t)keep) < 0 || fsync(fd) < 0) {
		close(fd);
		return -1;
	}
	close(fd);
	log_warnx("queue: disk nearly full (free=%llu): reserve released to "
	    "%llu bytes %s", (unsigned long long)avail, (unsigned long long)keep,
	    why);
	q->reserve_held = keep;
	return 0;
}

/* Make the reserve whole again. 0, or -1 (nothing kept beyond what was). */
static int
queue_space_regrow(struct queue *q)
{
	char path[4096];
	int fd, rc;

	queue_space_path(q, path, sizeof(path));
	if ((fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600)) < 0)
		return -1;
	rc = posix_fallocate(fd, 0, (off_t)q->reserve_size);
	if (rc != 0) {
		/* a partial allocation would be space taken from delivery */
		if (ftruncate(fd, (off_t)q->reserve_held) < 0)
			log_warn("queue: %s: cannot give back a partial "
			    "reserve", path);
		close(fd);
		errno = rc;
		return -1;
	}
	if (fsync(fd) < 0) {
		close(fd);
		return -1;
	}
	close(fd);
	q->reserve_held = q->reserve_size;
	return 0;
}

static void
queue_space_set_low(struct queue *q, int low)
{
	pthread_mutex_lock(&q->lock);
	q->space_low = low;
	pthread_mutex_unlock(&q->lock);
}

void
queue_space_open(struct queue *q)
{
	uint64_t avail, r = q->reserve_size;

	if (r == 0 || q->readonly)
		return;
	q->reserve_held = queue_space_held(q);
	avail = queue_space_avail(q);
	if (avail >= r / 2)
		return;
	q->space_low = 1;
	if (q->reserve_held > 0 && queue_space_release(q, 0, avail,
	    "to open the queue; new mail is refused (452 4.3.1) until space "
	    "returns") < 0)
		log_warn("queue: cannot release the reserve");
}

void
queue_space_check(struct queue *q)
{
	uint64_t avail, r = q->reserve_size, seg = q->segment_size;
	int low;

	if (r == 0 || q->readonly)
		return;
	avail = queue_space_avail(q);
	pthread_mutex_lock(&q->lock);
	low = q->space_low;
	pthread_mutex_unlock(&q->lock);
	if (!low && avail < r / 2) {
		log_warnx("queue: disk nearly full (free=%llu, below half the "
		    "reserve of %llu): new mail is refused (452 4.3.1) until "
		    "space returns", (unsigned long long)avail,
		    (unsigned long long)r);
		queue_space_set_low(q, 1);
		low = 1;
	}
	if (low && avail < r / 8 && q->reserve_held > r / 4) {
		uint64_t keep = q->reserve_held - r / 4;
		if (keep < r / 4)
			keep = r / 4;
		if (queue_space_release(q, keep, avail,
		    "so that delivery can go on") < 0)
			log_warn("queue: cannot release the reserve");
		return;
	}
	/* regrow only with room to spare: half a reserve and one segment */
	if (q->reserve_held < r &&
	    avail >= (r - q->reserve_held) + r / 2 + seg &&
	    queue_space_regrow(q) < 0) {
		if (!low)
			log_warn("queue: cannot allocate the reserve of %llu bytes",
			    (unsigned long long)r);
		return;
	}
	if (q->reserve_held < r && !low && !q->reserve_noted) {
		log_warnx("queue: no room for the reserve of %llu bytes (free=%llu): "
		    "a full disk would stop delivery too", (unsigned long long)r,
		    (unsigned long long)avail);
		q->reserve_noted = 1;
	}
	if (low && q->reserve_held >= r && queue_space_avail(q) >= r / 2 + seg) {
		log_info("queue: disk space back (free=%llu, reserve=%llu): "
		    "accepting mail again", (unsigned long long)queue_space_avail(q),
		    (unsigned long long)q->reserve_held);
		queue_space_set_low(q, 0);
	}
}

/*
 * Allocate up to want bytes of reserve again, as much as fits (halving
 * the ask); called at close with what the close borrowed.
 */
static void
queue_space_restore(struct queue *q, uint64_t want)
{
	char path[4096];
	int fd;

	queue_space_path(q, path, sizeof(path));
	if ((fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600)) < 0)
		return;
	for (uint64_t len = want; len >= (64u << 10); len /= 2) {
		if (fallocate(fd, 0, 0, (off_t)len) == 0) {
			q->reserve_held = len;
			break;
		}
		if (ftruncate(fd, 0) < 0)
			log_warn("queue: %s", path);
	}
	(void)fsync(fd);
	close(fd);
}

void
queue_space_close(struct queue *q)
{
	uint64_t borrowed = q->reserve_held;

	if (q->reserve_size == 0 || q->readonly || q->st == NULL)
		return;
	if (store_checkpoint(q->st) == 0 || errno != ENOSPC || borrowed == 0)
		return;
	/* the last dirty index pages must reach the files: spend the rest */
	if (queue_space_release(q, 0, queue_space_avail(q),
	    "for the last checkpoint") < 0)
		return;
	if (store_checkpoint(q->st) < 0)
		log_warn("queue: checkpoint at close");
	queue_space_restore(q, borrowed);
	log_info("queue: reserve lent to the last checkpoint; %llu bytes kept",
	    (unsigned long long)q->reserve_held);
}

int
queue_space_refuse(struct queue *q)
{
	int low;

	pthread_mutex_lock(&q->lock);
	low = q->space_low;
	pthread_mutex_unlock(&q->lock);
	return low ? ENOSPC : 0;
}
