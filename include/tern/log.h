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
/* Set the trace mask at run time. */
void log_set_trace(unsigned mask);
unsigned log_trace_mask(void);

void log_warn(const char *fmt, ...) TERN_PRINTF(1, 2);   /* appends strerror(errno) */
void log_warnx(const char *fmt, ...) TERN_PRINTF(1, 2);
void log_info(const char *fmt, ...) TERN_PRINTF(1, 2);
void log_debug(const char *fmt, ...) TERN_PRINTF(1, 2);
void log_trace(unsigned bit, const char *fmt, ...) TERN_PRINTF(2, 3);
void vlog(enum log_level lvl, const char *fmt, va_list ap) TERN_PRINTF(2, 0);

__attribute__((noreturn)) void fatal(const char *fmt, ...) TERN_PRINTF(1, 2);
__attribute__((noreturn)) void fatalx(const char *fmt, ...) TERN_PRINTF(1, 2);
__attribute__((noreturn)) void panic(const char *fmt, ...) TERN_PRINTF(1, 2);

/*
 * Copy src[0..len) into dst (size dstlen, always NUL-terminated) with every
 * byte outside printable ASCII, plus backslash, written as \xHH. Truncates
 * with "..." when dst is too small. Returns dst. Pure.
 */
char *log_escape(char *dst, size_t dstlen, const char *src, size_t len);

#endif
