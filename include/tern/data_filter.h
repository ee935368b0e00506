/*
 * data_filter.h - incremental filter for the DATA stream (RFC 5321 4.1.1.4,
 * 4.5.2): finds the end of data, undoes dot-stuffing, counts size, and
 * watches line length and bare CR / bare LF.
 *
 * End of data is only <CRLF>.<CRLF> (the CRLF that ends the previous line,
 * or the start of data, then ".", CR, LF). A bare LF or a bare CR never ends
 * data and never starts a line that could end it, so <LF>.<LF>, <LF>.<CRLF>,
 * <CR>.<CR> and the like cannot smuggle a second message.
 *
 * Pure and incremental: feeding the same bytes whole or in any split gives
 * the same output and the same end point. No allocation, no I/O.
 */
#ifndef TERN_DATA_FILTER_H
#define TERN_DATA_FILTER_H

#include <stddef.h>
#include <stdint.h>

/* Flags for data_filter_init(). */
#define DATA_F_NORMALIZE 0x1u /* write bare LF / bare CR as CRLF (else kept as is, and flagged) */
#define DATA_F_RAW       0x2u /* BDAT chunks (RFC 3030): no dot-stuffing and
                                 no end marker; the caller counts the octets
                                 and ends with data_filter_finish() */

/* Result flags, accumulated in f->seen. */
#define DATA_SEEN_BARE_LF  0x1u
#define DATA_SEEN_BARE_CR  0x2u
#define DATA_SEEN_LONG     0x4u   /* a line over SMTP_TEXT_MAX octets incl. CRLF */
#define DATA_SEEN_8BIT     0x8u   /* a byte >= 0x80 */
#define DATA_SEEN_NUL      0x10u

enum data_status { DATA_MORE = 0, DATA_END = 1 };

struct data_filter {
	int state;                /* private */
	unsigned flags;           /* DATA_F_* */
	unsigned seen;            /* DATA_SEEN_* */
	uint64_t size;            /* output bytes produced so far */
	size_t line_len;          /* private: content octets in the current line */
};

/*
 * Output sink: called with runs of unstuffed message bytes, as long as
 * possible (a run is only cut where a byte is dropped or inserted). Line
 * endings are CRLF, except that without DATA_F_NORMALIZE a bare CR / bare LF
 * passes through unchanged (and is flagged). A dot after a bare CR / LF is
 * not at a line start: it is neither unstuffed nor an end marker, but kept
 * as content (the delivery side re-stuffs it). A line ".<LF>x" or ".<CR>x"
 * (after a real CRLF) is a stuffed line: its first dot is removed.
 */
typedef void data_out_fn(void *arg, const char *p, size_t len);

void data_filter_init(struct data_filter *f, unsigned flags);

/*
 * Feed in[0..len). Output goes to out (may be called several times). Sets
 * *consumed to the number of input bytes used: all of them for DATA_MORE;
 * for DATA_END, up to and including the final ".<CRLF>", so the caller can
 * keep any pipelined bytes that follow. The final CRLF.CRLF is not output,
 * except the CRLF that ends the last line, which belongs to the message.
 * Input ".<CRLF>" alone is an empty message; "<CRLF>.<CRLF>" is one empty
 * line. out may be NULL to discard the output (size is still counted).
 * Once DATA_END was returned, further calls return DATA_END, consume
 * nothing and write nothing; data_filter_init() starts a new message.
 * Line length for DATA_SEEN_LONG excludes a removed stuffing dot (RFC 5321
 * 4.5.3.1.6) and counts a bare CR / LF as a 2-octet line ending.
 */
enum data_status data_filter_feed(struct data_filter *f, const char *in,
    size_t len, size_t *consumed, data_out_fn *out, void *arg);

/*
 * DATA_F_RAW: the message ends here (BDAT LAST). A CR left at the very end
 * is a bare CR (flagged; written as CRLF's LF half with DATA_F_NORMALIZE).
 * Later feeds return DATA_END. Without DATA_F_RAW: a no-op.
 */
void data_filter_finish(struct data_filter *f, data_out_fn *out, void *arg);

#endif
