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
	size_t line_len;          /* private: octets in the current line */
};

/* Output sink: called with runs of unstuffed message bytes (CRLF endings). */
typedef void data_out_fn(void *arg, const char *p, size_t len);

void data_filter_init(struct data_filter *f, unsigned flags);

/*
 * Feed in[0..len). Output goes to out (may be called several times). Sets
 * *consumed to the number of input bytes used: all of them for DATA_MORE;
 * for DATA_END, up to and including the final ".<CRLF>", so the caller can
 * keep any pipelined bytes that follow. The final CRLF.CRLF is not output,
 * except the CRLF that ends the last line, which belongs to the message.
 */
enum data_status data_filter_feed(struct data_filter *f, const char *in,
    size_t len, size_t *consumed, data_out_fn *out, void *arg);

#endif
