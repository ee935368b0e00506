/*
 * log.h - one line per event, to stderr or syslog.
 *
 * Lines are "key=value" text, the queue or session id first. Every string a
 * peer supplied goes through log_escape() first, so CR, LF and other control
 * bytes can never forge a line. All functions are thread-safe and preserve
 * errno. fatal*() are for start-up and invariants only, never for anything a
 * peer can cause; panic() is for "cannot happen" and aborts with a core.
 */
#ifndef TERN_LOG_H
#define TERN_LOG_H

#include <stdarg.h>
#include <stddef.h>

#define TERN_PRINTF(f, a) __attribute__((format(printf, f, a)))

enum log_level { LOG_L_ERR, LOG_L_WARN, LOG_L_INFO, LOG_L_DEBUG };

/* Trace bits, switched on with -v (all) or per module. */
#define TRACE_SMTP   0x01u  /* server dialog, state changes */
#define TRACE_QUEUE  0x02u  /* commits, batches, recovery */
#define TRACE_DNS    0x04u
#define TRACE_CLIENT 0x08u  /* outbound dialog */
#define TRACE_CTL    0x10u

/* Set the program name, destination and verbosity. Call once, early. */
void log_init(const char *progname, int use_syslog, int verbose);
/*
 * Line format on both destinations: 0 (default) "key=value" text, 1 one JSON
 * object a line (log-format json; see log_json_line()). May be called again
 * at any time, e.g. after a reload.
 */
void log_set_json(int on);
/* The trace mask (-v sets every bit). */
unsigned log_trace_mask(void);

void log_warn(const char *fmt, ...) TERN_PRINTF(1, 2);   /* appends strerror(errno) */
void log_warnx(const char *fmt, ...) TERN_PRINTF(1, 2);
void log_info(const char *fmt, ...) TERN_PRINTF(1, 2);
void log_debug(const char *fmt, ...) TERN_PRINTF(1, 2);
void log_trace(unsigned bit, const char *fmt, ...) TERN_PRINTF(2, 3);
void vlog(enum log_level lvl, const char *fmt, va_list ap) TERN_PRINTF(2, 0);

/*
 * Batches (stderr only, this thread only): between log_batch_begin() and
 * log_batch_end() info and debug lines are gathered and written together,
 * several whole lines per write(2), at most LOG_BATCH_MAX bytes (PIPE_BUF:
 * a write that size is never interleaved with other threads' lines). A
 * warning or error writes what is gathered, then itself, at once. end
 * writes the rest; begin while a batch is open does nothing.
 */
#define LOG_BATCH_MAX 4096
void log_batch_begin(void);
void log_batch_end(void);
/*
 * Turn mode (a loop thread, through log_loop.h): this thread batches from
 * now on, and the first line gathered into an empty batch calls kick(),
 * which must see that log_batch_flush() runs before the thread sleeps or
 * exits. log_batch_end() in turn mode writes what is gathered and batching
 * goes on; log_batch_turn(NULL) writes the rest and ends turn mode.
 */
void log_batch_turn(void (*kick)(void));
/* Write this thread's gathered lines now (nothing if there are none). */
void log_batch_flush(void);

__attribute__((noreturn)) void fatal(const char *fmt, ...) TERN_PRINTF(1, 2);
__attribute__((noreturn)) void fatalx(const char *fmt, ...) TERN_PRINTF(1, 2);
__attribute__((noreturn)) void panic(const char *fmt, ...) TERN_PRINTF(1, 2);

/*
 * Copy src[0..len) into dst (size dstlen, always NUL-terminated) with every
 * byte outside printable ASCII, plus backslash, written as \xHH. Truncates
 * with "..." when dst is too small. Returns dst. Pure.
 */
char *log_escape(char *dst, size_t dstlen, const char *src, size_t len);

/*
 * Format one log line as a JSON object into dst (size dstlen):
 *   {"ts":TS,"level":LEVEL,"prog":PROG,"pid":PID,"msg":MSG,KEY:VALUE...}
 * followed by '\n' and a NUL. Every key=value or key="quoted value" token
 * of msg (key: a letter, then letters, digits, '_', '-', '.') is also a
 * field of its own: a number when the value is 1 to 18 digits without a
 * leading zero, a string otherwise. Keys that repeat, or collide with the
 * fixed ones, stay in msg only; at most LOG_JSON_MAX_FIELDS are broken out.
 * Strings escape '"', '\\', every control byte and 0x7f, and each byte not
 * part of well-formed UTF-8 as \u00XX, so the line is valid JSON and UTF-8.
 * If dst is too small, msg is cut at a character boundary or fields are
 * left out, and the object ends with "truncated":true: it stays valid JSON.
 * (Room for that marker is kept free while writing, so a whole line needs
 * up to 17 bytes more than its length plus the NUL.)
 * Returns the line length (with '\n', without the NUL), or 0 (dst "" when
 * dstlen > 0) if not even the fixed fields fit. Pure: no allocation.
 */
#define LOG_JSON_MAX_FIELDS 64
size_t log_json_line(char *dst, size_t dstlen, const char *ts,
    const char *level, const char *prog, long pid, const char *msg);

#endif
