/* test_hdr_scan.c - the header-section scanner, whole and byte by byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "tern/hdr_scan.h"

static const struct {
	const char *in;
	size_t hdr_len;          /* bytes of the header section incl. the empty line */
	unsigned flags;
} cases[] = {
	{ "Subject: x\r\n\r\nbody\r\n", 14, HDR_END },
	{ "Date: Sat, 21 Nov 2026 16:40:48 +0000\r\nSubject: x\r\n\r\nb\r\n",
	  53, HDR_END | HDR_HAVE_DATE },
	{ "message-ID: <a@b>\r\n\r\n", 21, HDR_END | HDR_HAVE_MSGID },
	{ "MESSAGE-ID:<a@b>\r\nDATE:x\r\n\r\n", 28,
	  HDR_END | HDR_HAVE_MSGID | HDR_HAVE_DATE },
	/* a folded line that starts with "Date:" is not a Date field */
	{ "Subject: a\r\n Date: no\r\n\r\n", 25, HDR_END },
	/* "Date" needs its colon; longer names do not match */
	{ "Dates: x\r\nDate : y\r\nX-Date: z\r\n\r\n", 33, HDR_END },
	/* no empty line: all of it is header section, not ended */
	{ "Subject: only headers\r\n", 23, 0 },
	/* bare LF line ends */
	{ "Date: x\n\nbody\n", 9, HDR_END | HDR_HAVE_DATE },
	/* empty message / body starting at once */
	{ "\r\nbody\r\n", 2, HDR_END },
	{ "", 0, 0 },
	/* a lone CR at a line start is not an empty line */
	{ "\rX: y\r\n\r\n", 9, HDR_END },
	/* the empty line after a body line in the body is not looked at */
	{ "A: b\r\n\r\nDate: later\r\n\r\n", 8, HDR_END },
	/* RFC 8689 5: TLS-Required: No, any case, folded, blanks aside */
	{ "TLS-Required: No\r\n\r\n", 20, HDR_END | HDR_TLS_REQUIRED_NO },
	{ "tls-required:\r\n  nO \r\nX: y\r\n\r\n", 30,
	  HDR_END | HDR_TLS_REQUIRED_NO },
	{ "TLS-Required: Nope\r\n\r\n", 22, HDR_END },
	{ "TLS-Required: N o\r\n\r\n", 21, HDR_END | HDR_TLS_REQUIRED_NO },
	{ "TLS-Required: Yes\r\n\r\n", 21, HDR_END },
	{ "X: a\r\n TLS-Required: No\r\n\r\n", 27, HDR_END },
	{ "TLS-Required-X: No\r\n\r\n", 22, HDR_END },
	{ "A: b\r\n\r\nTLS-Required: No\r\n\r\n", 8, HDR_END },
};

static void
test_whole_and_bytewise(void **state)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *in = cases[i].in;
		size_t len = strlen(in), n, tot = 0;
		struct hdr_scan h;

		hdr_scan_init(&h);
		n = hdr_scan_feed(&h, in, len);
		if (n != cases[i].hdr_len || h.flags != cases[i].flags)
			fail_msg("case %zu: len %zu flags %u, want %zu %u", i, n,
			    h.flags, cases[i].hdr_len, cases[i].flags);
		hdr_scan_init(&h);
		for (size_t k = 0; k < len; k++)
			tot += hdr_scan_feed(&h, in + k, 1);
		assert_int_equal(tot, cases[i].hdr_len);
		assert_int_equal(h.flags, cases[i].flags);
		/* after the end, nothing more is taken */
		if (h.flags & HDR_END)
			assert_int_equal(hdr_scan_feed(&h, "Date: x\r\n", 9), 0);
	}
}

/* Trace fields counted for the hop limit (RFC 5321 6.3). */
static const struct {
	const char *in;
	unsigned ntrace;
} trace_cases[] = {
	{ "Received: a\r\nReceived: b\r\nSubject: x\r\n\r\n", 2 },
	{ "RECEIVED:a\r\nreceived: b\r\n\tfolded Received: c\r\n\r\n", 2 },
	{ "Delivered-To: u@d\r\nReceived: x\r\n\r\n", 2 },
	/* not trace fields: other names, a colon missing, a folded line */
	{ "Received-SPF: pass\r\nX-Received: y\r\nReceived x\r\n"
	  "Subject: a\r\n Received: no\r\n\r\n", 0 },
	/* a Received: line in the body is not counted */
	{ "Received: a\r\n\r\nReceived: body\r\n", 1 },
	/* bare LF line ends */
	{ "Received: a\nReceived: b\n\n", 2 },
	{ "", 0 },
};

static void
test_trace_count(void **state)
{
	for (size_t i = 0; i < sizeof(trace_cases) / sizeof(trace_cases[0]);
	    i++) {
		const char *in = trace_cases[i].in;
		size_t len = strlen(in);
		struct hdr_scan h;

		hdr_scan_init(&h);
		(void)hdr_scan_feed(&h, in, len);
		if (h.ntrace != trace_cases[i].ntrace)
			fail_msg("case %zu: ntrace %u, want %u", i, h.ntrace,
			    trace_cases[i].ntrace);
		hdr_scan_init(&h);
		for (size_t k = 0; k < len; k++)
			(void)hdr_scan_feed(&h, in + k, 1);
		assert_int_equal(h.ntrace, trace_cases[i].ntrace);
	}
}

/* Many trace fields: counted one by one, no limit in the scanner. */
static void
test_trace_many(void **state)
{
	struct hdr_scan h;

	hdr_scan_init(&h);
	for (unsigned i = 0; i < 5000; i++)
		(void)hdr_scan_feed(&h, "Received: from x by y; date\r\n", 29);
	(void)hdr_scan_feed(&h, "\r\n", 2);
	assert_int_equal(h.ntrace, 5000);
	assert_true(h.flags & HDR_END);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_whole_and_bytewise),
		cmocka_unit_test(test_trace_count),
		cmocka_unit_test(test_trace_many),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
