/*
 * util.c - allocation helpers, clocks, queue ids, socket address text,
 * CRC-32C, base64, the JSON string escaper, FNV-1a, struct buf.
 * Thread-safe; the only state is the queue-id floor (one atomic) and the
 * CRC-32C table (built once, pthread_once).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "tern/log.h"
#include "tern/util.h"

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (p == NULL)
		panic("xmalloc: out of memory (%zu bytes)", n);
	return p;
}

void *
xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (p == NULL)
		panic("xcalloc: out of memory");
	return p;
}

void *
xreallocarray(void *p, size_t n, size_t size)
{
	if (size != 0 && n > SIZE_MAX / size)
		panic("xreallocarray: overflow");
	size_t bytes = n * size;
	void *q = realloc(p, bytes != 0 ? bytes : 1);
	if (q == NULL)
		panic("xreallocarray: out of memory");
	return q;
}

char *
xstrdup(const char *s)
{
	char *p = strdup(s);
	if (p == NULL)
		panic("xstrdup: out of memory");
	return p;
}

char *
xstrndup(const char *s, size_t n)
{
	char *p = xmalloc(n + 1);
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

/*
 * CRC-32C, slice-by-1 table; the SSE4.2 instruction is used when present.
 * The instruction takes 3 cycles and can start one per cycle: a long
 * buffer is cut into three blocks whose CRCs run side by side, then are
 * joined by shifting the first over the second's length (a table of the
 * "append N zero bytes" operator, built once) and XOR-ing (the CRC is
 * linear). Blocks of 8 KiB, then 256 bytes; the rest one stream.
 */
#define CRC32C_POLY  0x82F63B78u
#define CRC32C_LONG  8192
#define CRC32C_SHORT 256

static uint32_t crc32c_table[256];
static uint32_t crc32c_long[4][256], crc32c_short[4][256];
static pthread_once_t crc32c_once = PTHREAD_ONCE_INIT;

/* mat (32 columns, GF(2)) times vec */
static uint32_t
gf2_times(const uint32_t *mat, uint32_t vec)
{
	uint32_t sum = 0;
	for (; vec != 0; vec >>= 1, mat++)
		if (vec & 1)
			sum ^= *mat;
	return sum;
}

static void
gf2_square(uint32_t *sq, const uint32_t *mat)
{
	for (int n = 0; n < 32; n++)
		sq[n] = gf2_times(mat, mat[n]);
}

/* The operator that appends len zero bytes (len a power of two, >= 1). */
static void
crc32c_zeros_op(uint32_t *even, size_t len)
{
	uint32_t odd[32], row = 1;

	odd[0] = CRC32C_POLY;           /* one zero bit */
	for (int n = 1; n < 32; n++, row <<= 1)
		odd[n] = row;
	gf2_square(even, odd);          /* two */
	gf2_square(odd, even);          /* four */
	for (;;) {
		gf2_square(even, odd);      /* 8 bits = 1 byte, then 4, 16... */
		if ((len >>= 1) == 0)
			return;
		gf2_square(odd, even);      /* 2 bytes, 8, 32... */
		if ((len >>= 1) == 0)
			break;
	}
	memcpy(even, odd, sizeof(odd));
}

static void
crc32c_zeros(uint32_t zeros[4][256], size_t len)
{
	uint32_t op[32];

	crc32c_zeros_op(op, len);
	for (uint32_t n = 0; n < 256; n++)
		for (int k = 0; k < 4; k++)
			zeros[k][n] = gf2_times(op, n << (8 * k));
}

static void
crc32c_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = (c & 1) ? (c >> 1) ^ CRC32C_POLY : c >> 1;
		crc32c_table[i] = c;
	}
	crc32c_zeros(crc32c_long, CRC32C_LONG);
	crc32c_zeros(crc32c_short, CRC32C_SHORT);
}

#if defined(__x86_64__)
static inline uint32_t
crc32c_shift(const uint32_t zeros[4][256], uint32_t crc)
{
	return zeros[0][crc & 0xff] ^ zeros[1][(crc >> 8) & 0xff] ^
	    zeros[2][(crc >> 16) & 0xff] ^ zeros[3][crc >> 24];
}

/* 3 blocks of blk bytes from p, side by side, joined into crc. */
__attribute__((target("sse4.2"))) static inline uint32_t
crc32c_hw3(uint32_t crc, const unsigned char *p, size_t blk,
    const uint32_t zeros[4][256])
{
	uint64_t c0 = crc, c1 = 0, c2 = 0;

	for (size_t i = 0; i < blk; i += 8) {
		uint64_t v0, v1, v2;
		memcpy(&v0, p + i, 8);
		memcpy(&v1, p + blk + i, 8);
		memcpy(&v2, p + 2 * blk + i, 8);
		c0 = __builtin_ia32_crc32di(c0, v0);
		c1 = __builtin_ia32_crc32di(c1, v1);
		c2 = __builtin_ia32_crc32di(c2, v2);
	}
	crc = crc32c_shift(zeros, (uint32_t)c0) ^ (uint32_t)c1;
	return crc32c_shift(zeros, crc) ^ (uint32_t)c2;
}

__attribute__((target("sse4.2"))) static uint32_t
crc32c_hw(uint32_t crc, const unsigned char *p, size_t len)
{
	if (len >= 3 * CRC32C_SHORT) {
		pthread_once(&crc32c_once, crc32c_init);
		while (len >= 3 * CRC32C_LONG) {
			crc = crc32c_hw3(crc, p, CRC32C_LONG, crc32c_long);
			p += 3 * CRC32C_LONG;
			len -= 3 * CRC32C_LONG;
		}
		while (len >= 3 * CRC32C_SHORT) {
			crc = crc32c_hw3(crc, p, CRC32C_SHORT, crc32c_short);
			p += 3 * CRC32C_SHORT;
			len -= 3 * CRC32C_SHORT;
		}
	}
	uint64_t c = crc;
	while (len >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
		p += 8;
		len -= 8;
	}
	uint32_t c32 = (uint32_t)c;
	while (len--)
		c32 = __builtin_ia32_crc32qi(c32, *p++);
	return c32;
}
#endif

uint32_t
crc32c(uint32_t crc, const void *buf, size_t len)
{
	const unsigned char *p = buf;
	crc = ~crc;
#if defined(__x86_64__)
	if (__builtin_cpu_supports("sse4.2"))
		return ~crc32c_hw(crc, p, len);
#endif
	pthread_once(&crc32c_once, crc32c_init);
	while (len--)
		crc = crc32c_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

int64_t
now_unix(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec;
}

uint64_t
now_mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void
qid_format(uint64_t id, char out[QID_STRLEN + 1])
{
	static const char hex[] = "0123456789abcdef";

	/* "%016llx" by hand: several per message, snprintf costs ~1k
	 * instructions each */
	for (int i = QID_STRLEN - 1; i >= 0; i--, id >>= 4)
		out[i] = hex[id & 0xf];
	out[QID_STRLEN] = '\0';
}

static uint64_t qid_last;   /* accessed with __atomic builtins only */

uint64_t
qid_new(void)
{
	uint64_t now, last, next;
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	now = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
	last = __atomic_load_n(&qid_last, __ATOMIC_RELAXED);
	do {
		next = now > last ? now : last + 1;
	} while (!__atomic_compare_exchange_n(&qid_last, &last, next, 0,
	    __ATOMIC_RELAXED, __ATOMIC_RELAXED));
	return next;
}

void
qid_seen(uint64_t id)
{
	uint64_t last = __atomic_load_n(&qid_last, __ATOMIC_RELAXED);
	while (id > last && !__atomic_compare_exchange_n(&qid_last, &last, id,
	    0, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

int
qid_parse(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	size_t i;
	for (i = 0; s[i] != '\0'; i++) {
		char c = s[i];
		unsigned d;
		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			d = (unsigned)(c - 'A' + 10);
		else
			return -1;
		if (i >= QID_STRLEN)
			return -1;
		v = (v << 4) | d;
	}
	if (i != QID_STRLEN)
		return -1;
	*out = v;
	return 0;
}

const char *
sockaddr_ntop(const struct sockaddr *sa, char *buf, size_t len)
{
	const void *a;
	if (sa->sa_family == AF_INET)
		a = &((const struct sockaddr_in *)sa)->sin_addr;
	else if (sa->sa_family == AF_INET6)
		a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
	else {
		snprintf(buf, len, "unix");
		return buf;
	}
	if (inet_ntop(sa->sa_family, a, buf, (socklen_t)len) == NULL)
		snprintf(buf, len, "?");
	return buf;
}

uint16_t
sockaddr_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)sa)->sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
	return 0;
}

size_t
utf8_seq_len(const unsigned char *p, size_t n)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t need;

	if (n == 0)
		return 0;
	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf)
		need = 2;
	else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		need = 3;
		if (p[0] == 0xe0)
			lo = 0xa0;                /* no overlong forms */
		else if (p[0] == 0xed)
			hi = 0x9f;                /* no surrogates */
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		need = 4;
		if (p[0] == 0xf0)
			lo = 0x90;
		else if (p[0] == 0xf4)
			hi = 0x8f;                /* nothing above U+10FFFF */
	} else
		return 0;
	if (n < need || p[1] < lo || p[1] > hi)
		return 0;
	for (size_t i = 2; i < need; i++)
		if (p[i] < 0x80 || p[i] > 0xbf)
			return 0;
	return need;
}

int
has_8bit(const void *p, size_t n)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < n; i++)
		if (c[i] >= 0x80)
			return 1;
	return 0;
}

const char *
addr_domain(const char *addr)
{
	const char *at = strrchr(addr, '@');
	return at != NULL ? at + 1 : "";
}

int
ascii_casecmp_n(const char *a, size_t alen, const char *b, size_t blen)
{
	if (alen != blen)
		return alen < blen ? -1 : 1;
	for (size_t i = 0; i < alen; i++) {
		unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
		if (x >= 'A' && x <= 'Z')
			x += 32;
		if (y >= 'A' && y <= 'Z')
			y += 32;
		if (x != y)
			return x < y ? -1 : 1;
	}
	return 0;
}

int
write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int
fsync_dir(const char *dirpath)
{
	int fd = open(dirpath, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	int r = fsync(fd);
	int saved = errno;
	close(fd);
	errno = saved;
	return r;
}

struct event_base *
util_event_base_new(void)
{
	struct event_config *cfg = event_config_new();
	struct event_base *base;

	if (cfg == NULL)
		panic("util_event_base_new: event_config_new failed");
	event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	if (base == NULL)
		base = event_base_new();
	if (base == NULL)
		panic("util_event_base_new: event_base_new failed");
	return base;
}

static const char base64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t
base64_encode(const void *in, size_t inlen, char *out, size_t outsize)
{
	const unsigned char *p = in;
	size_t i, n = 0;

	if (outsize > 0)
		out[0] = '\0';
	if (inlen > (SIZE_MAX - 1) / 4 * 3 - 2 ||
	    outsize < BASE64_LEN(inlen) + 1)
		return 0;
	for (i = 0; i + 2 < inlen; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 |
		    p[i + 2];
		out[n++] = base64_alphabet[(v >> 18) & 0x3f];
		out[n++] = base64_alphabet[(v >> 12) & 0x3f];
		out[n++] = base64_alphabet[(v >> 6) & 0x3f];
		out[n++] = base64_alphabet[v & 0x3f];
	}
	if (i < inlen) {
		uint32_t v = (uint32_t)p[i] << 16;
		if (i + 1 < inlen)
			v |= (uint32_t)p[i + 1] << 8;
		out[n++] = base64_alphabet[(v >> 18) & 0x3f];
		out[n++] = base64_alphabet[(v >> 12) & 0x3f];
		out[n++] = (i + 1 < inlen) ?
		    base64_alphabet[(v >> 6) & 0x3f] : '=';
		out[n++] = '=';
	}
	out[n] = '\0';
	return n;
}

static int
base64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int
base64_decode(const char *in, size_t inlen, unsigned char *out,
    size_t outsize, size_t *outlen)
{
	const unsigned char *s = (const unsigned char *)in;
	size_t i, n = 0, pad = 0;

	*outlen = 0;
	if (inlen % 4 != 0)
		return BASE64_E_SYNTAX;
	if (inlen == 0)
		return 0;
	if (s[inlen - 1] == '=')
		pad = (s[inlen - 2] == '=') ? 2 : 1;
	if (inlen / 4 * 3 - pad > outsize)
		return BASE64_E_SPACE;
	for (i = 0; i < inlen; i += 4) {
		size_t k, quad_pad = (i + 4 == inlen) ? pad : 0;
		uint32_t x = 0;

		for (k = 0; k < 4; k++) {
			int v = k >= 4 - quad_pad ? 0 : base64_value(s[i + k]);
			if (v < 0)
				return BASE64_E_SYNTAX;
			x = x << 6 | (uint32_t)v;
		}
		if ((quad_pad == 1 && (x & 0xff) != 0) ||
		    (quad_pad == 2 && (x & 0xffff) != 0))
			return BASE64_E_SYNTAX;  /* non-canonical unused bits */
		out[n++] = (unsigned char)(x >> 16);
		if (quad_pad < 2)
			out[n++] = (unsigned char)(x >> 8);
		if (quad_pad < 1)
			out[n++] = (unsigned char)x;
	}
	*outlen = n;
	return 0;
}

size_t
json_escape(char *dst, size_t dstlen, const char *src, size_t n,
    size_t *used)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *p = (const unsigned char *)src;
	size_t i = 0, o = 0;

	while (i < n) {
		size_t run = i;
		/* the longest run that needs no escape, in one copy */
		while (run < n && p[run] >= 0x20 && p[run] < 0x7f &&
		    p[run] != '"' && p[run] != '\\')
			run++;
		if (run > i) {
			size_t k = run - i < dstlen - o ? run - i : dstlen - o;
			if (k == 0)
				break;
			memcpy(dst + o, src + i, k);
			o += k;
			i += k;
			continue;
		}
		unsigned char c = p[i];
		const char *out = src + i;
		size_t olen = 1, step = 1;
		char esc[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };

		switch (c) {
		case '"':  out = "\\\""; olen = 2; break;
		case '\\': out = "\\\\"; olen = 2; break;
		case '\n': out = "\\n";  olen = 2; break;
		case '\r': out = "\\r";  olen = 2; break;
		case '\t': out = "\\t";  olen = 2; break;
		case '\b': out = "\\b";  olen = 2; break;
		case '\f': out = "\\f";  olen = 2; break;
		default:
			if (c >= 0x80 && (step = utf8_seq_len(p + i, n - i)) != 0)
				olen = step;              /* well-formed UTF-8 */
			else {
				out = esc;                /* control, DEL, bad byte */
				olen = sizeof(esc);
				step = 1;
			}
		}
		if (olen > dstlen - o)
			break;
		memcpy(dst + o, out, olen);
		o += olen;
		i += step;
	}
	*used = i;
	return o;
}

uint32_t
fnv1a32(uint32_t h, const void *p, size_t n)
{
	const unsigned char *s = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 16777619u;
	return h;
}

int
buf_reserve(struct buf *b, size_t more)
{
	if (b->err)
		return -1;
	if (more > SIZE_MAX / 2 - b->len - 1) {
		b->err = ENOMEM;
		return -1;
	}
	size_t need = b->len + more + 1;
	if (need <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < need)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (p == NULL) {
		b->err = ENOMEM;
		return -1;
	}
	b->p = p;
	b->cap = cap;
	return 0;
}

void
buf_add(struct buf *b, const void *p, size_t n)
{
	if (buf_reserve(b, n) < 0)
		return;
	if (n > 0)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = '\0';
}

void
buf_addstr(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

void
buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->err)
		return;
	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0) {
		b->err = EINVAL;
		return;
	}
	if (buf_reserve(b, (size_t)n) < 0)
		return;
	va_start(ap, fmt);
	vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

void
buf_free(struct buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}
