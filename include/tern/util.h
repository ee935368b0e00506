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
/* 1 if p[0..n) holds an octet >= 0x80 (p may be NULL when n is 0). */
int has_8bit(const void *p, size_t n);

/*
 * Base64 (RFC 4648 section 4), the one codec of the tree. Pure.
 * base64_encode: in[0..inlen) into out, padded and NUL-terminated; returns
 * the length without the NUL, or 0 when outsize < BASE64_LEN(inlen) + 1
 * (then out is "" if outsize > 0).
 * base64_decode: strict - alphabet A-Z a-z 0-9 + /, length a multiple of 4,
 * '=' only as the last one or two characters, unused bits zero, no
 * whitespace. Decodes into out (outsize bytes), *outlen the length.
 * Returns 0, BASE64_E_SYNTAX, or BASE64_E_SPACE when the result would not
 * fit (*outlen = 0 on error; out may be partly written).
 */
#define BASE64_LEN(n)   (((n) + 2) / 3 * 4)
#define BASE64_E_SYNTAX (-1)
#define BASE64_E_SPACE  (-2)
size_t base64_encode(const void *in, size_t inlen, char *out, size_t outsize);
int base64_decode(const char *in, size_t inlen, unsigned char *out,
    size_t outsize, size_t *outlen);

/*
 * The inside of a JSON string (RFC 8259 section 7) for src[0..n): '"', '\\'
 * and \n \r \t \b \f by name, every other control byte, DEL and each byte
 * that is not part of a well-formed UTF-8 sequence as \u00XX (its Latin-1
 * reading), well-formed UTF-8 as it is. Writes whole characters only into
 * dst[0..dstlen) (no quotes, no NUL) and stops at the first that does not
 * fit; returns the bytes written and stores in *used the bytes of src
 * consumed. The one JSON escaper of the tree (json.c writer, log.c lines).
 * Pure.
 */
size_t json_escape(char *dst, size_t dstlen, const char *src, size_t n,
    size_t *used);

/*
 * FNV-1a, 32 bits: fold p[0..n) into h (start with FNV1A32_INIT). For
 * in-memory hash tables only (not keyed: never for peer-chosen keys where
 * collisions would matter). Pure.
 */
#define FNV1A32_INIT 2166136261u
uint32_t fnv1a32(uint32_t h, const void *p, size_t n);

/*
 * A growable byte buffer for pure producers of text or records (DSN
 * messages, envelope records, the control protocol's JSON): the one such
 * type of the tree. It needs no event loop and links nothing but libc, so
 * parsers, codecs and fuzz targets can use it; code that already writes to
 * a bufferevent uses libevent's evbuffer instead. Allocation is fallible
 * (a peer may choose the size): a failure sets err (ENOMEM), err is
 * sticky and later adds do nothing, so a producer checks once at the end.
 * p is NUL-terminated after any successful add. Zero-initialise to start.
 */
struct buf {
	char *p;                /* owned; NULL until the first add */
	size_t len, cap;
	int err;                /* 0, ENOMEM, or a producer's own errno */
};
/* Room for len + more + 1 bytes: 0, or -1 with err set (sticky). */
int buf_reserve(struct buf *b, size_t more);
void buf_add(struct buf *b, const void *p, size_t n);
void buf_addstr(struct buf *b, const char *s);
void buf_printf(struct buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void buf_free(struct buf *b);   /* frees p and zeroes b */

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
