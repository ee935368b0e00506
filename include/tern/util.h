/*
 * util.h - small helpers shared by every module.
 *
 * x*() allocators abort on failure: use them for bookkeeping only, never for
 * anything whose size a peer chooses (those allocations are fallible and end
 * in a 4xx reply).
 */
#ifndef TERN_UTIL_H
#define TERN_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xreallocarray(void *p, size_t n, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);

/* CRC-32C (Castagnoli), as used by the queue's segment records. Pure. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

/* Clocks. */
int64_t now_unix(void);          /* wall clock, seconds */
uint64_t now_mono_us(void);      /* monotonic, microseconds */

/* Queue ids are 64-bit; the printed form is 16 lowercase hex digits. */
#define QID_STRLEN 16
void qid_format(uint64_t id, char out[QID_STRLEN + 1]);
int qid_parse(const char *s, uint64_t *out);       /* 0 ok, -1 bad */
/*
 * A new queue id, unique in this process and increasing: max(now in us,
 * last + 1). Thread-safe (one atomic). qid_seen() raises the floor, so ids
 * found at recovery are never handed out again even if the clock went back.
 */
uint64_t qid_new(void);
void qid_seen(uint64_t id);

/* "1.2.3.4" / "::1" of a socket address into buf (INET6_ADDRSTRLEN+). */
const char *sockaddr_ntop(const struct sockaddr *sa, char *buf, size_t len);
uint16_t sockaddr_port(const struct sockaddr *sa);

/*
 * Length (1-4) of the well-formed UTF-8 sequence at p[0..n) per RFC 3629
 * (no overlong forms, no surrogates, nothing above U+10FFFF), or 0. Pure.
 */
size_t utf8_seq_len(const unsigned char *p, size_t n);

/* ASCII-only case-insensitive compare of two byte ranges (0 if equal). */
int ascii_casecmp_n(const char *a, size_t alen, const char *b, size_t blen);
/* The domain of "local@domain" (after the last '@'), "" without one. */
const char *addr_domain(const char *addr);

struct event_base;
/*
 * A new event_base for a busy loop: epoll with the change list, so that
 * enabling and disabling events within one loop iteration costs no
 * epoll_ctl() calls of its own. Never NULL (panics).
 */
struct event_base *util_event_base_new(void);

/* write() all of buf, retrying on EINTR; 0 or -1 with errno. */
int write_all(int fd, const void *buf, size_t len);
/* fsync() the directory that holds path (or path itself if a directory). */
int fsync_dir(const char *dirpath);

#endif
