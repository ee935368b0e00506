/*
 * log.c - logging for ternd and ternctl.
 *
 * Runs on every thread; each line is written with one write(2) (stderr) or
 * one syslog(3) call, so lines from different threads never interleave.
 * Never allocates on the logging path; preserves errno.
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

static const char *log_progname = "tern";
static int log_use_syslog;
static int log_verbose;
static volatile unsigned log_tracebits;

void
log_init(const char *progname, int use_syslog, int verbose)
{
	log_progname = progname;
	log_use_syslog = use_syslog;
	log_verbose = verbose;
	if (verbose)
		log_tracebits = ~0u;
	if (use_syslog)
		openlog(progname, LOG_PID | LOG_NDELAY, LOG_MAIL);
}

void
log_set_trace(unsigned mask)
{
	log_tracebits = mask;
}

unsigned
log_trace_mask(void)
{
	return log_tracebits;
}

static void log_emit(enum log_level lvl, const char *suffix, const char *fmt,
    va_list ap) TERN_PRINTF(3, 0);

static void
log_emit(enum log_level lvl, const char *suffix, const char *fmt, va_list ap)
{
	static const char *names[] = { "error", "warning", "info", "debug" };
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char msg[4096];
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

	if (log_use_syslog) {
		syslog(prio[lvl], "%s", msg);
		return;
	}
	char line[4200];
	struct timespec ts;
	struct tm tm;
	char tbuf[32];
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	strftime(tbuf, sizeof(tbuf), "%Y-%m-%dT%H:%M:%S", &tm);
	n = snprintf(line, sizeof(line), "%s.%03ldZ %s[%d]: %s%s%s\n", tbuf,
	    ts.tv_nsec / 1000000, log_progname, (int)getpid(),
	    lvl <= LOG_L_WARN ? names[lvl] : "", lvl <= LOG_L_WARN ? ": " : "",
	    msg);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof(line)) {
		n = sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	ssize_t w = write(STDERR_FILENO, line, (size_t)n);
	(void)w;
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
