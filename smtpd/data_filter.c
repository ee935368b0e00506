/*
 * data_filter.c - the DATA stream filter (RFC 5321 4.1.1.4, 4.5.2,
 * 4.5.3.1.6): finds the end of data, undoes dot-stuffing, counts the size,
 * and watches line length, 8-bit bytes, NUL and bare CR / bare LF.
 *
 * Runs on:    the session's event loop thread, once per read of DATA bytes.
 * Owns:       nothing; struct data_filter is caller-owned and fixed size.
 * Never:      allocates, blocks, logs, or looks past in[0..len).
 * Untrusted:  every byte of in[] comes from the SMTP client.
 *
 * Defence against SMTP smuggling (SEC Consult, 2023): a "line" is the run of
 * bytes between two real CR LF pairs (or from the start of data to the first
 * CR LF). Only a line that is exactly "." ends data. A bare LF (LF not after
 * CR) and a bare CR (CR not before LF) are bytes *inside* a line: they never
 * end a line and never start one, so "\n.\n", "\n.\r\n", "\r.\r",
 * "\r\n.\r", "\r\n.\n", "\r\n\0.\r\n" ... are message content.
 *
 * Dot-unstuffing (4.5.2): a line that starts with "." and is not exactly
 * "." loses that first dot; this includes a line such as ".<LF>..." or
 * ".<CR>x...", whose first dot is removed because the bare LF / bare CR is
 * just another byte on the line. A dot that follows a bare LF / bare CR is
 * not at a line start and is kept as content (the delivery side re-stuffs
 * every output line that starts with ".", so it cannot become an end marker
 * downstream either).
 *
 * Without DATA_F_NORMALIZE the output is the input minus the stuffing dots
 * and the final ".<CRLF>": bare CR / LF pass through unchanged and are only
 * flagged (the session rejects such a message). With DATA_F_NORMALIZE each
 * bare LF is written as CR LF and each bare CR as CR LF, so the output has
 * CRLF line endings only; the text after such a converted ending is still
 * not a line start here (see above).
 *
 * With DATA_F_RAW (BDAT chunks) a line-start dot is plain content: nothing
 * is unstuffed and nothing ends the data; the session counts the chunk's
 * octets and calls data_filter_finish() after the last one. Bare CR / LF,
 * long lines, NUL and 8-bit octets are flagged (and normalized) exactly as
 * in DATA, so both ways in obey the same policy.
 *
 * Line length (DATA_SEEN_LONG): octets of a line as received including its
 * line ending, not counting a removed stuffing dot (4.5.3.1.6 says the
 * duplicated dot does not count). For the length count only, a bare LF or
 * bare CR ends a line and counts as two octets, the size of the CRLF it
 * becomes when normalized; so the flag is the same in both modes, and in
 * normalize mode it matches the output lines exactly.
 *
 * The machine is a switch over five states; in TEXT it skips plain bytes
 * 16 at a time (SSE2, else 8 at a time in a word) and hands out the longest
 * contiguous runs of the input it can: a run is only cut where a byte is
 * dropped (stuffing dot, end marker) or inserted (normalization). A CRLF
 * not followed by "." is passed inline without leaving TEXT. A byte that
 * cannot be decided yet (the CR after a line-start dot) is held in the
 * state and written from a constant once decided, so any split of the input
 * gives the same result.
 */
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "tern/data_filter.h"
#include "tern/smtp.h"

enum data_state {
	DATA_S_LINE_START = 0,  /* at the start of a real line: "." is special */
	DATA_S_TEXT,            /* inside a line */
	DATA_S_CR,              /* after a CR (already written) inside a line */
	DATA_S_DOT,             /* line-start "." seen and dropped */
	DATA_S_DOT_CR,          /* line-start ".", CR: CR held, not written */
	DATA_S_END              /* ".<CRLF>" seen; filter is finished */
};

/* Longest content of a line before its 2-octet ending that is not LONG. */
#define DATA_LINE_CONTENT_MAX ((size_t)SMTP_TEXT_MAX - 2)

#define DATA_ONES  0x0101010101010101ULL
#define DATA_HIGHS 0x8080808080808080ULL
/* Nonzero iff some byte of x is zero (exact as a truth value). */
#define DATA_HASZERO(x) (((x) - DATA_ONES) & ~(x) & DATA_HIGHS)

static inline void
data_filter_emit(struct data_filter *f, data_out_fn *out, void *arg,
    const unsigned char *p, size_t n)
{
	if (n == 0)
		return;
	if (out != NULL)
		out(arg, (const char *)p, n);
	f->size += n;
}

/*
 * Return the first byte in [p, end) that the state machine must look at:
 * CR, LF, and NUL or a byte >= 0x80 until their flag is set (after that
 * they are plain text and need no stop).
 */
static const unsigned char *
data_filter_scan(const unsigned char *p, const unsigned char *end,
    unsigned seen)
{
	const uint64_t crs = DATA_ONES * '\r', lfs = DATA_ONES * '\n';
	const uint64_t highs = (seen & DATA_SEEN_8BIT) ? 0 : DATA_HIGHS;
	const int stop_nul = !(seen & DATA_SEEN_NUL);
	const int stop_8bit = !(seen & DATA_SEEN_8BIT);

#ifdef __SSE2__
	const __m128i vcr = _mm_set1_epi8('\r'), vlf = _mm_set1_epi8('\n');
	const __m128i vzero = _mm_setzero_si128();

	while (end - p >= 16) {
		__m128i v = _mm_loadu_si128((const __m128i *)(const void *)p);
		__m128i eq = _mm_or_si128(_mm_cmpeq_epi8(v, vcr),
		    _mm_cmpeq_epi8(v, vlf));
		unsigned hit;

		if (stop_nul)
			eq = _mm_or_si128(eq, _mm_cmpeq_epi8(v, vzero));
		hit = (unsigned)_mm_movemask_epi8(eq);
		if (stop_8bit)
			hit |= (unsigned)_mm_movemask_epi8(v);   /* high bits */
		if (hit)
			return p + __builtin_ctz(hit);
		p += 16;
	}
#endif
	while (end - p >= 8) {
		uint64_t v, hit;

		memcpy(&v, p, sizeof(v));
		hit = DATA_HASZERO(v ^ crs) | DATA_HASZERO(v ^ lfs) |
		    (v & highs);
		if (stop_nul)
			hit |= DATA_HASZERO(v);
		if (hit)
			break;
		p += 8;
	}
	for (; p < end; p++) {
		unsigned char c = *p;
		if (c == '\r' || c == '\n' || (c == 0 && stop_nul) ||
		    (c >= 0x80 && stop_8bit))
			break;
	}
	return p;
}

void
data_filter_init(struct data_filter *f, unsigned flags)
{
	memset(f, 0, sizeof(*f));
	f->state = DATA_S_LINE_START;
	f->flags = flags;
}

enum data_status
data_filter_feed(struct data_filter *f, const char *in, size_t len,
    size_t *consumed, data_out_fn *out, void *arg)
{
	const unsigned char *p = (const unsigned char *)in;
	const unsigned char *end = p + len;
	const unsigned char *run = p;   /* start of input not yet written */
	const int normalize = (f->flags & DATA_F_NORMALIZE) != 0;
	int state = f->state;
	size_t line = f->line_len;      /* content octets of the current line */
	unsigned seen = f->seen;

	if (state == DATA_S_END) {
		*consumed = 0;
		return DATA_END;
	}

	while (p < end) {
		switch (state) {
		case DATA_S_LINE_START:
			if (*p == '.' && !(f->flags & DATA_F_RAW)) {
				/* Dropped: stuffing dot, or part of ".<CRLF>". */
				data_filter_emit(f, out, arg, run,
				    (size_t)(p - run));
				run = ++p;
				state = DATA_S_DOT;
				break;
			}
			state = DATA_S_TEXT;
			break;

		case DATA_S_TEXT: {
			const unsigned char *q = data_filter_scan(p, end, seen);

			line += (size_t)(q - p);
			if (line > DATA_LINE_CONTENT_MAX)
				seen |= DATA_SEEN_LONG;
			p = q;
			if (p == end)
				break;
			switch (*p) {
			case '\r':
				if (end - p >= 3 && p[1] == '\n' && p[2] != '.') {
					/* Fast path: CRLF, next line not "."-led. */
					p += 2;
					line = 0;
					break;
				}
				p++;
				state = DATA_S_CR;
				break;
			case '\n':
				/* LF not after CR: bare. Not a line start. */
				seen |= DATA_SEEN_BARE_LF;
				line = 0;
				if (normalize) {
					data_filter_emit(f, out, arg, run,
					    (size_t)(p - run));
					data_filter_emit(f, out, arg,
					    (const unsigned char *)"\r", 1);
					run = p;    /* the LF follows */
				}
				p++;
				break;
			default:
				/* NUL or 8-bit: kept, flagged once. */
				seen |= (*p == 0) ? DATA_SEEN_NUL :
				    DATA_SEEN_8BIT;
				if (++line > DATA_LINE_CONTENT_MAX)
					seen |= DATA_SEEN_LONG;
				p++;
				break;
			}
			break;
		}

		case DATA_S_CR:
			if (*p == '\n') {
				/* Real CRLF: the only way to a line start. */
				p++;
				line = 0;
				state = DATA_S_LINE_START;
				break;
			}
			/* Bare CR (already written); *p is looked at in TEXT. */
			seen |= DATA_SEEN_BARE_CR;
			line = 0;
			if (normalize) {
				data_filter_emit(f, out, arg, run,
				    (size_t)(p - run));
				data_filter_emit(f, out, arg,
				    (const unsigned char *)"\n", 1);
				run = p;
			}
			state = DATA_S_TEXT;
			break;

		case DATA_S_DOT:
			if (*p == '\r') {
				/* Hold the CR: written only if no LF follows. */
				run = ++p;
				state = DATA_S_DOT_CR;
				break;
			}
			/* The dot was stuffing; *p is content. */
			state = DATA_S_TEXT;
			break;

		case DATA_S_DOT_CR:
			if (*p == '\n') {
				p++;
				line = 0;
				f->state = DATA_S_END;
				f->line_len = line;
				f->seen = seen;
				*consumed = (size_t)(p - (const unsigned char *)in);
				return DATA_END;
			}
			/*
			 * ".<CR>x": the dot was stuffing and the held CR is
			 * bare. Here run == p (everything before was dropped),
			 * so writing the CR from a constant keeps the order.
			 */
			seen |= DATA_SEEN_BARE_CR;
			line = 0;
			data_filter_emit(f, out, arg,
			    (const unsigned char *)"\r\n", normalize ? 2 : 1);
			state = DATA_S_TEXT;
			break;

		default:
			/* Cannot happen: state is private and always valid. */
			state = DATA_S_TEXT;
			break;
		}
	}

	data_filter_emit(f, out, arg, run, (size_t)(end - run));
	f->state = state;
	f->line_len = line;
	f->seen = seen;
	*consumed = len;
	return DATA_MORE;
}

void
data_filter_finish(struct data_filter *f, data_out_fn *out, void *arg)
{
	if (!(f->flags & DATA_F_RAW) || f->state == DATA_S_END)
		return;
	if (f->state == DATA_S_CR) {
		f->seen |= DATA_SEEN_BARE_CR;
		if (f->flags & DATA_F_NORMALIZE)
			data_filter_emit(f, out, arg,
			    (const unsigned char *)"\n", 1);
	}
	f->state = DATA_S_END;
}
