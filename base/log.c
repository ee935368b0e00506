/*
 * log.c - logging for ternd and ternctl.
 *
 * Runs on every thread; each line is written with one write(2) (stderr) or
 * one syslog(3) call, so lines from different threads never interleave. A
 * thread may gather its lines in a batch (log_batch_begin) and write
 * several whole lines with one write(2) of at most PIPE_BUF bytes; a loop
 * thread may batch all the time, its lines written once per turn of its
 * loop (log_batch_turn, used by log_loop.c).
 * Never allocates on the logging path (fixed buffers on the stack, cut
 * safely when full); preserves errno.
 *
 * Two line formats: "key=value" text (default) and, with log-format json,
 * one JSON object a line (log_json_line(), pure) whose fields repeat the
 * message's key=value pairs. The message text itself is trusted to be
 * printable already: peer-supplied strings went through log_escape() before
 * they reached a format string. The JSON encoder still escapes everything,
 * so a bug elsewhere can spoil a field but never the line structure.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "tern/log.h"
#include "tern/util.h"

static const char *log_progname = "tern";
static int log_use_syslog;
static int log_verbose;
static volatile unsigned log_tracebits;
static pid_t log_pid_cached;

/* The pid, read once (the only child, the privileged helper, never logs). */
static pid_t
log_pid(void)
{
	if (log_pid_cached == 0)
		log_pid_cached = getpid();
	return log_pid_cached;
}
static volatile int log_json;

#define LOG_MSG_MAX   4096            /* formatted message, with suffix */
#define LOG_JSON_MAX  16384           /* one JSON line: msg + its fields */

void
log_init(const char *progname, int use_syslog, int verbose)
{
	log_progname = progname;
	log_pid_cached = getpid();
	log_use_syslog = use_syslog;
	log_verbose = verbose;
	if (verbose)
		log_tracebits = ~0u;
	if (use_syslog)
		openlog(progname, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void
log_set_json(int on)
{
	log_json = on != 0;
}

unsigned
log_trace_mask(void)
{
	return log_tracebits;
}

static void log_emit(enum log_level lvl, const char *suffix, const char *fmt,
    va_list ap) TERN_PRINTF(3, 0);

static const char *const log_level_names[] = {
	"error", "warning", "info", "debug" };
static const int log_level_prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };

/* This thread's batch (log_batch_begin): whole lines not yet written. */
static __thread char log_batch_buf[LOG_BATCH_MAX];
static __thread size_t log_batch_len;
static __thread int log_batch_on;
static __thread void (*log_batch_kick)(void);  /* turn mode: see log.h */

void
log_batch_flush(void)
{
	if (log_batch_len > 0) {
		ssize_t w = write(STDERR_FILENO, log_batch_buf, log_batch_len);
		(void)w;
	}
	log_batch_len = 0;
}

/* One whole line to stderr: into the batch, or written now. */
static void
log_write_line(enum log_level lvl, const char *line, size_t n)
{
	if (log_batch_on && lvl >= LOG_L_INFO && n <= LOG_BATCH_MAX) {
		if (log_batch_len + n > LOG_BATCH_MAX)
			log_batch_flush();
		if (log_batch_len == 0 && log_batch_kick != NULL)
			log_batch_kick();       /* the turn's end writes it */
		memcpy(log_batch_buf + log_batch_len, line, n);
		log_batch_len += n;
		return;
	}
	log_batch_flush();              /* keeps the lines in order */
	ssize_t w = write(STDERR_FILENO, line, n);
	(void)w;
}

void
log_batch_begin(void)
{
	log_batch_on = 1;
}

void
log_batch_end(void)
{
	log_batch_flush();
	log_batch_on = log_batch_kick != NULL;
}

void
log_batch_turn(void (*kick)(void))
{
	log_batch_flush();
	log_batch_kick = kick;
	log_batch_on = kick != NULL;
}

/* The JSON form of msg, to syslog or stderr; its own frame for the buffer. */
static void
log_emit_json(enum log_level lvl, const char *tbuf, const char *msg)
{
	char line[LOG_JSON_MAX];
	size_t n = log_json_line(line, sizeof(line), tbuf, log_level_names[lvl],
	    log_progname, (long)log_pid(), msg);

	if (n == 0)
		return;
	if (log_use_syslog) {
		line[n - 1] = '\0';              /* syslog adds its own end */
		syslog(log_level_prio[lvl], "%s", line);
		return;
	}
	log_write_line(lvl, line, n);
}

static void
log_emit(enum log_level lvl, const char *suffix, const char *fmt, va_list ap)
{
	char msg[LOG_MSG_MAX];
	int n;

	if (lvl == LOG_L_DEBUG && !log_verbose)
		return;
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(msg))
		n = sizeof(msg) - 1;
	if (suffix != NULL)
		snprintf(msg + n, sizeof(msg) - n, ": %s", suffix);

	/* the seconds part changes once a second: format it once per thread */
	static __thread time_t last_sec = -1;
	static __thread char last_buf[32];
	static __thread int last_len;
	struct timespec ts;
	char tbuf[48];
	clock_gettime(CLOCK_REALTIME, &ts);
	if (ts.tv_sec != last_sec) {
		struct tm tm;
		gmtime_r(&ts.tv_sec, &tm);
		last_len = (int)strftime(last_buf, sizeof(last_buf),
		    "%Y-%m-%dT%H:%M:%S", &tm);
		last_sec = ts.tv_sec;
	}
	memcpy(tbuf, last_buf, (size_t)last_len);
	n = last_len;
	snprintf(tbuf + n, sizeof(tbuf) - (size_t)n, ".%03ldZ",
	    ts.tv_nsec / 1000000);

	if (log_json) {
		log_emit_json(lvl, tbuf, msg);
		return;
	}
	if (log_use_syslog) {
		syslog(log_level_prio[lvl], "%s", msg);
		return;
	}
	char line[LOG_MSG_MAX + 104];
	n = snprintf(line, sizeof(line), "%s %s[%d]: %s%s%s\n", tbuf,
	    log_progname, (int)log_pid(),
	    lvl <= LOG_L_WARN ? log_level_names[lvl] : "",
	    lvl <= LOG_L_WARN ? ": " : "", msg);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	log_write_line(lvl, line, (size_t)n);
}

void
vlog(enum log_level lvl, const char *fmt, va_list ap)
{
	int saved = errno;
	log_emit(lvl, NULL, fmt, ap);
	errno = saved;
}

#define LOG_BODY(lvl, suffix)                   \
	do {                                        \
		int saved_ = errno;                     \
		va_list ap_;                            \
		va_start(ap_, fmt);                     \
		log_emit((lvl), (suffix), fmt, ap_);    \
		va_end(ap_);                            \
		errno = saved_;                         \
	} while (0)

void
log_warn(const char *fmt, ...)
{
	const char *e = strerror(errno);
	LOG_BODY(LOG_L_WARN, e);
}

void
log_warnx(const char *fmt, ...)
{
	LOG_BODY(LOG_L_WARN, NULL);
}

void
log_info(const char *fmt, ...)
{
	LOG_BODY(LOG_L_INFO, NULL);
}

void
log_debug(const char *fmt, ...)
{
	LOG_BODY(LOG_L_DEBUG, NULL);
}

void
log_trace(unsigned bit, const char *fmt, ...)
{
	if ((log_tracebits & bit) == 0)
		return;
	int saved_ = errno;
	va_list ap_;
	va_start(ap_, fmt);
	log_emit(LOG_L_INFO, NULL, fmt, ap_);
	va_end(ap_);
	errno = saved_;
}

void
fatal(const char *fmt, ...)
{
	const char *e = strerror(errno);
	LOG_BODY(LOG_L_ERR, e);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	LOG_BODY(LOG_L_ERR, NULL);
	exit(1);
}

void
panic(const char *fmt, ...)
{
	LOG_BODY(LOG_L_ERR, NULL);
	abort();
}

char *
log_escape(char *dst, size_t dstlen, const char *src, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (dstlen == 0)
		return dst;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)src[i];
		size_t need = (c >= 0x20 && c < 0x7f && c != '\\') ? 1 : 4;
		if (o + need + 1 > dstlen) {
			/* no room: end with "..." if it fits */
			if (dstlen >= 4) {
				o = o > dstlen - 4 ? dstlen - 4 : o;
				memcpy(dst + o, "...", 3);
				o += 3;
			}
			break;
		}
		if (need == 1) {
			dst[o++] = (char)c;
		} else {
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		}
	}
	dst[o] = '\0';
	return dst;
}

/* ------------------------------------------------------------------ */
/* JSON lines */

/* Room always kept free for the end of a line: ,"truncated":true}\n NUL */
#define LOG_JSON_TAIL (sizeof(",\"truncated\":true}\n"))

/*
 * A window on the caller's fixed buffer, not a growable one (struct buf):
 * the logging path never allocates, so a line that does not fit is cut.
 */
struct log_jbuf {
	char *p;
	size_t len;
	size_t lim;                   /* cap - LOG_JSON_TAIL: writes stop here */
	int truncated;
};

/* Append n raw bytes if they fit below the limit; 0 or -1. */
static int
log_jbuf_raw(struct log_jbuf *b, const char *s, size_t n)
{
	if (n > b->lim - b->len)
		return -1;
	memcpy(b->p + b->len, s, n);
	b->len += n;
	return 0;
}


/*
 * Append s[0..n) as a quoted JSON string. partial: cut it (at a character
 * boundary) when it does not fit, close the quote and set truncated;
 * otherwise leave the buffer as it was and return -1.
 */
static int
log_jbuf_str(struct log_jbuf *b, const char *s, size_t n, int partial)
{
	size_t used;

	/* the opening quote, and room for the closing one throughout */
	if (b->lim - b->len < 2)
		return -1;
	size_t w = json_escape(b->p + b->len + 1, b->lim - b->len - 2, s, n,
	    &used);
	if (used < n) {
		if (!partial)
			return -1;
		b->truncated = 1;
	}
	b->p[b->len] = '"';
	b->len += 1 + w;
	b->p[b->len++] = '"';
	return 0;
}

static int
log_json_is_keychar(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.';
}

/* A JSON number we are willing to write: 1-18 digits, no leading zero. */
static int
log_json_is_number(const char *v, size_t n)
{
	if (n == 0 || n > 18 || (n > 1 && v[0] == '0'))
		return 0;
	for (size_t i = 0; i < n; i++)
		if (v[i] < '0' || v[i] > '9')
			return 0;
	return 1;
}

/* Is key[0..n) one of the fixed fields, or already written? */
static int
log_json_key_taken(const char *key, size_t n, const char *msg,
    const size_t (*seen)[2], size_t nseen)
{
	static const char *const fixed[] = {
		"ts", "level", "prog", "pid", "msg", "truncated" };

	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		if (strlen(fixed[i]) == n && memcmp(fixed[i], key, n) == 0)
			return 1;
	for (size_t i = 0; i < nseen; i++)
		if (seen[i][1] == n && memcmp(msg + seen[i][0], key, n) == 0)
			return 1;
	return 0;
}

size_t
log_json_line(char *dst, size_t dstlen, const char *ts, const char *level,
    const char *prog, long pid, const char *msg)
{
	struct log_jbuf b = { .p = dst };
	size_t seen[LOG_JSON_MAX_FIELDS][2];      /* key offset, length in msg */
	size_t nseen = 0, mlen = strlen(msg);
	char num[32];

	if (dstlen > 0)
		dst[0] = '\0';
	if (dstlen <= LOG_JSON_TAIL)
		return 0;
	b.lim = dstlen - LOG_JSON_TAIL;
	snprintf(num, sizeof(num), ",\"pid\":%ld,\"msg\":", pid);
	if (log_jbuf_raw(&b, "{\"ts\":", 6) < 0 ||
	    log_jbuf_str(&b, ts, strlen(ts), 0) < 0 ||
	    log_jbuf_raw(&b, ",\"level\":", 9) < 0 ||
	    log_jbuf_str(&b, level, strlen(level), 0) < 0 ||
	    log_jbuf_raw(&b, ",\"prog\":", 8) < 0 ||
	    log_jbuf_str(&b, prog, strlen(prog), 0) < 0 ||
	    log_jbuf_raw(&b, num, strlen(num)) < 0 ||
	    log_jbuf_str(&b, msg, mlen, 1) < 0) {
		dst[0] = '\0';
		return 0;
	}

	/* key=value and key="quoted value" tokens, separated by spaces */
	for (size_t i = 0; i < mlen && !b.truncated; ) {
		size_t key = i, k = i, klen, v, vlen, end;
		int quoted = 0;

		while (k < mlen && log_json_is_keychar((unsigned char)msg[k]))
			k++;
		klen = k - key;
		if (klen == 0 || k >= mlen || msg[k] != '=' ||
		    !((msg[key] >= 'a' && msg[key] <= 'z') ||
		    (msg[key] >= 'A' && msg[key] <= 'Z'))) {
			/* not a pair: skip this token */
			const char *sp = memchr(msg + i, ' ', mlen - i);
			i = sp == NULL ? mlen : (size_t)(sp - msg) + 1;
			continue;
		}
		v = k + 1;
		end = mlen;                       /* where the token ends */
		if (v < mlen && msg[v] == '"') {
			/* quoted: up to a '"' that ends the token */
			for (size_t q = v + 1; q < mlen; q++)
				if (msg[q] == '"' && (q + 1 == mlen || msg[q + 1] == ' ')) {
					quoted = 1;
					end = q + 1;
					break;
				}
		}
		if (quoted) {
			v++;
			vlen = end - 1 - v;
		} else {
			/* plain, or an unterminated quote: up to the next space */
			const char *sp = memchr(msg + v, ' ', mlen - v);
			end = sp == NULL ? mlen : (size_t)(sp - msg);
			vlen = end - v;
		}
		i = end < mlen ? end + 1 : mlen;
		if (log_json_key_taken(msg + key, klen, msg,
		    (const size_t (*)[2])seen, nseen))
			continue;
		if (nseen == LOG_JSON_MAX_FIELDS)
			break;

		size_t mark = b.len;
		int numeric = !quoted && log_json_is_number(msg + v, vlen);
		if (log_jbuf_raw(&b, ",\"", 2) < 0 ||
		    log_jbuf_raw(&b, msg + key, klen) < 0 ||
		    log_jbuf_raw(&b, "\":", 2) < 0 ||
		    (numeric ? log_jbuf_raw(&b, msg + v, vlen) :
		    log_jbuf_str(&b, msg + v, vlen, 0)) < 0) {
			b.len = mark;                 /* no half field */
			b.truncated = 1;
			break;
		}
		seen[nseen][0] = key;
		seen[nseen][1] = klen;
		nseen++;
	}

	/* the tail always fits: LOG_JSON_TAIL was kept free */
	b.lim = dstlen;
	if (b.truncated)
		(void)log_jbuf_raw(&b, ",\"truncated\":true", 17);
	(void)log_jbuf_raw(&b, "}\n", 2);
	dst[b.len] = '\0';
	return b.len;
}
