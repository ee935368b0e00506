/*
 * fault_io.c - an LD_PRELOAD shim for the fault tests
 * (tests/integration/test_disk_faults.py): makes chosen writes and syncs
 * fail, the way a sick disk does, in an otherwise unchanged ternd.
 *
 * Controlled by the environment, read at every call:
 *   TERN_FAULT_TRIGGER  a file: faults happen only while it exists (the
 *                       test creates and removes it while ternd runs)
 *   TERN_FAULT_PATH     only fds whose path (/proc/self/fd) contains this
 *                       string (unset or empty: every fd)
 *   TERN_FAULT_OPS      comma-separated: write (pwrite, pwritev) and
 *                       sync (fdatasync, fsync); default "sync"
 *   TERN_FAULT_ERRNO    the errno to fail with (number; default EIO)
 * A faulted call does nothing and returns -1. Test code only: never
 * linked into ternd or ternctl.
 */
/* both the 32- and 64-bit offset names are defined here, as themselves */
#undef _FILE_OFFSET_BITS
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static int
fault_io_hit(int fd, const char *op)
{
	const char *trig = getenv("TERN_FAULT_TRIGGER");
	const char *pat = getenv("TERN_FAULT_PATH");
	const char *ops = getenv("TERN_FAULT_OPS");
	const char *en = getenv("TERN_FAULT_ERRNO");
	char link[64], path[4096];
	ssize_t n;

	if (trig == NULL || access(trig, F_OK) != 0)
		return 0;
	if (strstr(ops != NULL ? ops : "sync", op) == NULL)
		return 0;
	if (pat != NULL && *pat != '\0') {
		snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
		if ((n = readlink(link, path, sizeof(path) - 1)) < 0)
			return 0;
		path[n] = '\0';
		if (strstr(path, pat) == NULL)
			return 0;
	}
	errno = en != NULL ? atoi(en) : EIO;
	return 1;
}

#define FAULT_NEXT(name, type) \
	static type next; \
	if (next == NULL) \
		next = (type)dlsym(RTLD_NEXT, name)

int
fdatasync(int fd)
{
	typedef int (*fn)(int);
	FAULT_NEXT("fdatasync", fn);
	return fault_io_hit(fd, "sync") ? -1 : next(fd);
}

int
fsync(int fd)
{
	typedef int (*fn)(int);
	FAULT_NEXT("fsync", fn);
	return fault_io_hit(fd, "sync") ? -1 : next(fd);
}

ssize_t
pwrite(int fd, const void *buf, size_t len, off_t off)
{
	typedef ssize_t (*fn)(int, const void *, size_t, off_t);
	FAULT_NEXT("pwrite", fn);
	return fault_io_hit(fd, "write") ? -1 : next(fd, buf, len, off);
}

ssize_t
pwrite64(int fd, const void *buf, size_t len, off64_t off)
{
	typedef ssize_t (*fn)(int, const void *, size_t, off64_t);
	FAULT_NEXT("pwrite64", fn);
	return fault_io_hit(fd, "write") ? -1 : next(fd, buf, len, off);
}

ssize_t
pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
	typedef ssize_t (*fn)(int, const struct iovec *, int, off_t);
	FAULT_NEXT("pwritev", fn);
	return fault_io_hit(fd, "write") ? -1 : next(fd, iov, cnt, off);
}

ssize_t
pwritev64(int fd, const struct iovec *iov, int cnt, off64_t off)
{
	typedef ssize_t (*fn)(int, const struct iovec *, int, off64_t);
	FAULT_NEXT("pwritev64", fn);
	return fault_io_hit(fd, "write") ? -1 : next(fd, iov, cnt, off);
}
