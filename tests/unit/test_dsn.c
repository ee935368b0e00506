/*
 * test_dsn.c - the DSN builder (queue/dsn/dsn.c): every message it builds is
 * parsed back here (header fields, MIME parts split by the boundary,
 * delivery-status fields) and checked for CRLF-only line ends and lines of
 * at most 998 octets.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tern/dsn.h"

#define T_NOW       1700000000
#define T_ARRIVAL   1699990000
#define T_QID       0x0123456789abcdefull

static const char orig_hdrs[] =
    "Received: from client.example (client.example [203.0.113.5])\r\n"
    "\tby mx.test with ESMTPS id 0123456789abcdef\r\n"
    "From: Alice <alice@example.org>\r\n"
    "To: bob@example.com\r\n"
    "Subject: hello\r\n"
    "Message-ID: <m1@example.org>\r\n";
static const char orig_body[] = "\r\nsecret body text\r\nline 2\r\n";

/* ---- a tiny MIME reader for the checks ---- */

struct part {
	const char *hdr;        /* part header (without the empty line) */
	size_t hdrlen;
	const char *body;
	size_t bodylen;
};

/* CRLF only, no line over 998 octets, ends in CRLF. */
static void
check_lines(const char *p, size_t len)
{
	size_t col = 0;

	assert_true(len >= 2);
	assert_memory_equal(p + len - 2, "\r\n", 2);
	for (size_t i = 0; i < len; i++) {
		if (p[i] == '\r') {
			assert_true(i + 1 < len && p[i + 1] == '\n');
			assert_true(col <= 998);
			col = 0;
			i++;
			continue;
		}
		assert_true(p[i] != '\n');
		col++;
	}
}

/* Unfolded value of header field name in h[0..len), malloc'd, or NULL. */
static char *
field(const char *h, size_t len, const char *name)
{
	size_t nl = strlen(name);

	for (size_t i = 0; i < len;) {
		size_t e = i;
		while (e + 1 < len && !(h[e] == '\r' && h[e + 1] == '\n'))
			e++;
		if (e - i > nl && strncasecmp(h + i, name, nl) == 0 &&
		    h[i + nl] == ':') {
			char *v = malloc(len + 1);
			size_t o = 0, k = i + nl + 1;
			while (k < len && h[k] == ' ')
				k++;
			for (;;) {
				while (k < len && !(h[k] == '\r' &&
				    k + 1 < len && h[k + 1] == '\n'))
					v[o++] = h[k++];
				k += 2;
				if (k < len && (h[k] == ' ' || h[k] == '\t'))
					continue;   /* folded: keep the blank */
				break;
			}
			v[o] = '\0';
			return v;
		}
		i = e + 2;
	}
	return NULL;
}

static size_t
count_field(const char *h, size_t len, const char *line_prefix)
{
	size_t n = 0, pl = strlen(line_prefix);
	for (size_t i = 0; i + pl <= len; i++)
		if ((i == 0 || h[i - 1] == '\n') &&
		    strncmp(h + i, line_prefix, pl) == 0)
			n++;
	return n;
}

/* Split msg into header and body; then the body into parts. */
static size_t
split(const char *msg, size_t len, const char **hdr, size_t *hdrlen,
    struct part *parts, size_t maxparts, char *bnd, size_t bndlen)
{
	const char *sep = memmem(msg, len, "\r\n\r\n", 4);
	char *ct, *b, dl[128];
	const char *body, *end = msg + len, *p;
	size_t n = 0;

	assert_non_null(sep);
	*hdr = msg;
	*hdrlen = (size_t)(sep - msg) + 2;
	body = sep + 4;
	ct = field(*hdr, *hdrlen, "Content-Type");
	assert_non_null(ct);
	assert_non_null(strstr(ct, "multipart/report"));
	assert_true(strstr(ct, "report-type=delivery-status") != NULL ||
	    strstr(ct, "report-type=global-delivery-status") != NULL);
	b = strstr(ct, "boundary=\"");
	assert_non_null(b);
	b += 10;
	assert_non_null(strchr(b, '"'));
	*strchr(b, '"') = '\0';
	assert_true(strlen(b) <= 70);
	snprintf(bnd, bndlen, "%s", b);
	free(ct);

	snprintf(dl, sizeof(dl), "--%s\r\n", bnd);
	p = memmem(body, (size_t)(end - body), dl, strlen(dl));
	assert_non_null(p);
	assert_true(p == body || p[-1] == '\n');
	p += strlen(dl);
	snprintf(dl, sizeof(dl), "\r\n--%s", bnd);
	for (;;) {
		const char *q = memmem(p, (size_t)(end - p), dl, strlen(dl));
		const char *ph;
		assert_non_null(q);
		assert_true(n < maxparts);
		ph = memmem(p, (size_t)(q - p) + 2, "\r\n\r\n", 4);
		if (ph == NULL && (size_t)(q - p) >= 2 && memcmp(p, "\r\n", 2) == 0)
			ph = p - 2;     /* empty header (not ours) */
		assert_non_null(ph);
		parts[n].hdr = p;
		parts[n].hdrlen = (size_t)(ph - p) + 2;
		parts[n].body = ph + 4 <= q ? ph + 4 : q;
		parts[n].bodylen = (size_t)(q - parts[n].body);
		n++;
		q += strlen(dl);
		if (q + 2 <= end && memcmp(q, "--", 2) == 0)
			break;
		assert_true(q + 2 <= end && memcmp(q, "\r\n", 2) == 0);
		p = q + 2;
	}
	return n;
}

static void
assert_field(const char *h, size_t len, const char *name, const char *want)
{
	char *v = field(h, len, name);
	if (v == NULL)
		fail_msg("field %s missing", name);
	if (strcmp(v, want) != 0)
		fail_msg("field %s: got \"%s\", want \"%s\"", name, v, want);
	free(v);
}

static char *
build(const struct dsn_msg *m, size_t *len, unsigned *fl)
{
	char *out = NULL;
	assert_int_equal(dsn_build(m, &out, len, fl), DSN_OK);
	assert_non_null(out);
	assert_int_equal(strlen(out), *len);    /* no NUL inside */
	check_lines(out, *len);
	return out;
}

static char *
orig_message(size_t *len)
{
	char *o = malloc(sizeof(orig_hdrs) + sizeof(orig_body));
	strcpy(o, orig_hdrs);
	strcat(o, orig_body);
	*len = strlen(o);
	return o;
}

static void
test_one_rcpt(void **state)
{
	struct dsn_rcpt r = {
		.addr = "bob@example.com", .action = DSN_ACTION_FAILED,
		.status = "5.1.1", .remote_mta = "mx.example.com",
		.diag = "550 5.1.1 <bob@example.com>: user unknown",
		.diag_smtp = 1, .last_attempt = T_NOW,
	};
	struct dsn_msg m = {
		.hostname = "mx.test", .qid = T_QID,
		.sender = "alice@example.org", .arrival = T_ARRIVAL,
		.now = T_NOW, .rcpts = &r, .nrcpt = 1, .rnd = 42,
	};
	struct part p[4];
	const char *h;
	size_t len, hl, np;
	unsigned fl;
	char bnd[128], *v, *out;
	(void)state;

	m.orig = orig_message(&m.origlen);
	out = build(&m, &len, &fl);
	assert_int_equal(fl, 0);
	np = split(out, len, &h, &hl, p, 4, bnd, sizeof(bnd));
	assert_int_equal(np, 3);
	assert_non_null(strstr(bnd, "0123456789abcdef"));   /* qid in it */

	assert_field(h, hl, "From", "Mail Delivery System <MAILER-DAEMON@mx.test>");
	assert_field(h, hl, "To", "<alice@example.org>");
	assert_field(h, hl, "Subject", "Undelivered Mail Returned to Sender");
	assert_field(h, hl, "Date", "Tue, 14 Nov 2023 22:13:20 +0000");
	assert_field(h, hl, "Auto-Submitted", "auto-replied");
	assert_field(h, hl, "MIME-Version", "1.0");
	assert_field(h, hl, "Content-Transfer-Encoding", "7bit");
	v = field(h, hl, "Message-ID");
	assert_non_null(v);
	assert_true(strncmp(v, "<0123456789abcdef.", 18) == 0);
	assert_non_null(strstr(v, ".dsn@mx.test>"));
	free(v);

	/* part 1: human text names the recipient and the reason */
	assert_field(p[0].hdr, p[0].hdrlen, "Content-Type",
	    "text/plain; charset=us-ascii");
	assert_non_null(memmem(p[0].body, p[0].bodylen, "<bob@example.com>:", 18));
	assert_non_null(memmem(p[0].body, p[0].bodylen, "user unknown", 12));

	/* part 2: delivery-status; per-message block, then one recipient */
	assert_field(p[1].hdr, p[1].hdrlen, "Content-Type",
	    "message/delivery-status");
	assert_field(p[1].body, p[1].bodylen, "Reporting-MTA", "dns; mx.test");
	assert_field(p[1].body, p[1].bodylen, "Arrival-Date",
	    "Tue, 14 Nov 2023 19:26:40 +0000");
	assert_null(field(p[1].body, p[1].bodylen, "Original-Envelope-Id"));
	assert_null(field(p[1].body, p[1].bodylen, "Original-Recipient"));
	assert_field(p[1].body, p[1].bodylen, "Final-Recipient",
	    "rfc822; bob@example.com");
	assert_field(p[1].body, p[1].bodylen, "Action", "failed");
	assert_field(p[1].body, p[1].bodylen, "Status", "5.1.1");
	assert_field(p[1].body, p[1].bodylen, "Remote-MTA", "dns; mx.example.com");
	assert_field(p[1].body, p[1].bodylen, "Diagnostic-Code",
	    "smtp; 550 5.1.1 <bob@example.com>: user unknown");
	assert_field(p[1].body, p[1].bodylen, "Last-Attempt-Date",
	    "Tue, 14 Nov 2023 22:13:20 +0000");
	/* the per-recipient block is separated by an empty line */
	assert_non_null(memmem(p[1].body, p[1].bodylen,
	    "\r\n\r\nFinal-Recipient:", 19));

	/* part 3: exactly the original header, not the body */
	assert_field(p[2].hdr, p[2].hdrlen, "Content-Type", "text/rfc822-headers");
	assert_int_equal(p[2].bodylen, strlen(orig_hdrs));
	assert_memory_equal(p[2].body, orig_hdrs, p[2].bodylen);
	assert_null(memmem(out, len, "secret body", 11));

	free(out);
	free((char *)m.orig);
}

static void
test_three_rcpts_envid_orcpt(void **state)
{
	struct dsn_rcpt r[3] = {
		{ .addr = "a@one.example", .orcpt = "rfc822;A+2BX@One.Example",
		  .action = DSN_ACTION_FAILED, .status = "5.2.2",
		  .remote_mta = "mx1.one.example", .diag = "552 5.2.2 full",
		  .diag_smtp = 1 },
		{ .addr = "b@two.example", .action = DSN_ACTION_FAILED,
		  .status = "5.1.2", .diag = "Host or domain name not found",
		  .diag_smtp = 0 },
		{ .addr = "c@three.example", .orcpt = "c@three.example",
		  .action = DSN_ACTION_DELAYED, .status = "4.4.1",
		  .remote_mta = "mx.three.example", .diag = "421 busy",
		  .diag_smtp = 1, .retry_until = T_ARRIVAL + 5 * 86400 },
	};
	struct dsn_msg m = {
		.hostname = "mx.test", .qid = 7, .sender = "alice@example.org",
		.envid = "QQ+2B314", .arrival = T_ARRIVAL, .now = T_NOW,
		.rcpts = r, .nrcpt = 3, .rnd = 1,
	};
	struct part p[4];
	const char *h, *blk;
	size_t len, hl;
	unsigned fl;
	char bnd[128], *out;
	(void)state;

	m.orig = orig_message(&m.origlen);
	out = build(&m, &len, &fl);
	assert_int_equal(split(out, len, &h, &hl, p, 4, bnd, sizeof(bnd)), 3);
	assert_field(h, hl, "Subject", "Undelivered Mail Returned to Sender");
	assert_field(p[1].body, p[1].bodylen, "Original-Envelope-Id", "QQ+2B314");
	assert_int_equal(count_field(p[1].body, p[1].bodylen,
	    "Final-Recipient: rfc822; "), 3);
	assert_int_equal(count_field(p[1].body, p[1].bodylen, "Action: failed"), 2);
	assert_int_equal(count_field(p[1].body, p[1].bodylen, "Action: delayed"), 1);
	assert_int_equal(count_field(p[1].body, p[1].bodylen,
	    "Original-Recipient: "), 2);
	assert_non_null(memmem(p[1].body, p[1].bodylen,
	    "Original-Recipient: rfc822; A+X@One.Example\r\n"
	    "Final-Recipient: rfc822; a@one.example\r\n", 83));
	/* an ORCPT without a type gets rfc822 */
	assert_non_null(memmem(p[1].body, p[1].bodylen,
	    "Original-Recipient: rfc822; c@three.example\r\n", 45));
	/* the DNS failure has no Remote-MTA and a non-smtp diagnostic */
	blk = memmem(p[1].body, p[1].bodylen, "Final-Recipient: rfc822; b@", 27);
	assert_non_null(blk);
	assert_field(blk, p[1].bodylen - (size_t)(blk - p[1].body),
	    "Diagnostic-Code", "X-tern; Host or domain name not found");
	assert_int_equal(count_field(p[1].body, p[1].bodylen, "Remote-MTA: "), 2);
	assert_field(p[1].body, p[1].bodylen, "Will-Retry-Until",
	    "Sun, 19 Nov 2023 19:26:40 +0000");
	for (int i = 0; i < 3; i++)
		assert_non_null(memmem(p[0].body, p[0].bodylen, r[i].addr,
		    strlen(r[i].addr)));
	assert_int_equal(p[2].bodylen, strlen(orig_hdrs));
	free(out);
	free((char *)m.orig);
}

static void
test_delayed_only(void **state)
{
	struct dsn_rcpt r = { .addr = "c@x.example", .action = DSN_ACTION_DELAYED,
	    .status = "4.4.1", .diag = "connection refused" };
	struct dsn_msg m = { .hostname = "h", .qid = 1, .sender = "s@y",
	    .now = T_NOW, .rcpts = &r, .nrcpt = 1 };
	struct part p[4];
	const char *h;
	size_t len, hl;
	unsigned fl;
	char bnd[128], *out;
	(void)state;

	out = build(&m, &len, &fl);
	assert_int_equal(split(out, len, &h, &hl, p, 4, bnd, sizeof(bnd)), 3);
	assert_field(h, hl, "Subject", "Delayed Mail (still being retried)");
	assert_field(p[1].body, p[1].bodylen, "Action", "delayed");
	assert_null(field(p[1].body, p[1].bodylen, "Arrival-Date"));
	assert_int_equal(p[2].bodylen, 0);      /* no original: empty header part */
	free(out);
}

/* NOTIFY=SUCCESS through a hop without DSN: "relayed", 2.x, its own subject
 * and text; next to a failure the failure decides the subject */
static void
test_relayed(void **state)
{
	struct dsn_rcpt r[2] = {
		{ .addr = "d@x.example", .orcpt = "rfc822;D@x.example",
		  .action = DSN_ACTION_RELAYED, .status = "2.0.0",
		  .remote_mta = "mx.x.example[192.0.2.7]:25",
		  .diag = "250 2.0.0 queued as 42", .diag_smtp = 1,
		  .last_attempt = T_NOW },
		{ .addr = "e@x.example", .action = DSN_ACTION_FAILED,
		  .status = "5.1.1", .diag = "550 5.1.1 no such user",
		  .remote_mta = "mx.x.example", .diag_smtp = 1 },
	};
	struct dsn_msg m = { .hostname = "h", .qid = 1, .sender = "s@y",
	    .now = T_NOW, .rcpts = r, .nrcpt = 1 };
	struct part p[4];
	const char *h;
	size_t len, hl;
	unsigned fl;
	char bnd[128], *out;
	(void)state;

	out = build(&m, &len, &fl);
	assert_int_equal(split(out, len, &h, &hl, p, 4, bnd, sizeof(bnd)), 3);
	assert_field(h, hl, "Subject", "Relayed Mail (no delivery report to follow)");
	assert_field(p[1].body, p[1].bodylen, "Action", "relayed");
	assert_field(p[1].body, p[1].bodylen, "Status", "2.0.0");
	assert_field(p[1].body, p[1].bodylen, "Diagnostic-Code",
	    "smtp; 250 2.0.0 queued as 42");
	assert_non_null(memmem(p[0].body, p[0].bodylen, "passed on to", 12));
	assert_non_null(memmem(p[0].body, p[0].bodylen, "<d@x.example>", 13));
	assert_null(memmem(p[0].body, p[0].bodylen, "I'm sorry", 9));
	free(out);

	/* a relayed status left empty is reported as 2.0.0 */
	r[0].status = NULL;
	out = build(&m, &len, &fl);
	assert_int_equal(split(out, len, &h, &hl, p, 4, bnd, sizeof(bnd)), 3);
	assert_field(p[1].body, p[1].bodylen, "Status", "2.0.0");
	free(out);

	m.nrcpt = 2;
	out = build(&m, &len, &fl);
	assert_int_equal(split(out, len, &h, &hl, p, 4, bnd, sizeof(bnd)), 3);
	assert_field(h, hl, "Subject", "Undelivered Mail Returned to Sender");
	assert_int_equal(count_field(p[1].body, p[1].bodylen, "Action: relayed"), 1);
	assert_int_equal(count_field(p[1].body, p[1].bodylen, "Action: failed"), 1);
	free(out);
}

static void
test_refusals(void **state)
{
	struct dsn_rcpt r = { .addr = "a@b", .action = DSN_ACTION_FAILED };
	struct dsn_msg m = { .hostname = "h", .sender = "", .rcpts = &r,
	    .nrcpt = 1 };
	char *out = (char *)1;
	size_t len = 5;
	unsigned fl = 9;
	(void)state;

	assert_int_equal(dsn_build(&m, &out, &len, &fl), DSN_NULL_SENDER);
	assert_null(out);
	assert_int_equal(len, 0);
	m.sender = NULL;
	assert_int_equal(dsn_build(&m, &out, &len, &fl), DSN_NULL_SENDER);
	m.sender = "x@y";
	m.nrcpt = 0;
	assert_int_equal(dsn_build(&m, &out, &len, &fl), DSN_NO_RCPT);
}

static void
test_long_hostile_diag(void **state)
{
	char *diag = malloc(6000), *out, *v, bnd[128];
	struct dsn_rcpt r = { .addr = "b@x", .action = DSN_ACTION_FAILED,
	    .status = "5.0.0", .remote_mta = "mx\r\nX-Evil: 1", .diag_smtp = 1 };
	struct dsn_msg m = { .hostname = "h", .qid = 3, .sender = "s@y",
	    .now = T_NOW, .rcpts = &r, .nrcpt = 1 };
	struct part p[4];
	const char *h;
	size_t len, hl, o = 0;
	unsigned fl;
	(void)state;

	o += (size_t)sprintf(diag, "550 5.0.0 go away\r\nX-Injected: yes\r\n");
	for (int i = 0; i < 300; i++)
		o += (size_t)sprintf(diag + o, "word%d ", i);
	memset(diag + o, 'Z', 3000);            /* one enormous word */
	o += 3000;
	diag[o] = '\0';
	r.diag = diag;
	out = build(&m, &len, &fl);             /* checks line lengths */
	assert_int_equal(split(out, len, &h, &hl, p, 4, bnd, sizeof(bnd)), 3);
	assert_int_equal(count_field(out, len, "X-Injected"), 0);
	assert_int_equal(count_field(out, len, "X-Evil"), 0);
	v = field(p[1].body, p[1].bodylen, "Diagnostic-Code");
	assert_non_null(v);
	assert_true(strncmp(v, "smtp; 550 5.0.0 go away X-Injected: yes word0 "
	    "word1", 51) == 0);
	assert_true(strlen(v) <= DSN_DIAG_MAX + 64);   /* truncated */
	assert_string_equal(v + strlen(v) - 3, "...");
	/* folded: the field spans several lines of reasonable width */
	assert_true(count_field(p[1].body, p[1].bodylen, " word") > 3);
	free(v);
	v = field(p[1].body, p[1].bodylen, "Remote-MTA");
	assert_string_equal(v, "dns; mx X-Evil: 1");
	free(v);
	free(out);
	free(diag);
}

static void
test_boundary_collision(void **state)
{
	char orig[512], bnd0[80], bnd[128], *out;
	struct dsn_rcpt r = { .addr = "b@x", .action = DSN_ACTION_FAILED };
	struct dsn_msg m = { .hostname = "h", .qid = 5, .sender = "s@y",
	    .now = T_NOW, .rcpts = &r, .nrcpt = 1, .rnd = 99 };
	struct part p[4];
	const char *h;
	size_t len, hl;
	unsigned fl;
	(void)state;

	/* first learn the boundary these inputs produce */
	out = build(&m, &len, &fl);
	split(out, len, &h, &hl, p, 4, bnd0, sizeof(bnd0));
	free(out);
	/* then plant it (as a delimiter line) in the original header */
	snprintf(orig, sizeof(orig), "Subject: x\r\nX-Trap: y\r\n--%s\r\n"
	    "\r\nbody\r\n", bnd0);
	m.orig = orig;
	m.origlen = strlen(orig);
	out = build(&m, &len, &fl);
	assert_int_equal(split(out, len, &h, &hl, p, 4, bnd, sizeof(bnd)), 3);
	assert_string_not_equal(bnd, bnd0);
	assert_int_equal(p[2].bodylen, strlen(orig) - strlen("\r\nbody\r\n"));
	free(out);
}

static void
test_eightbit(void **state)
{
	static const char orig[] = "Subject: gr\xc3\xbc\xc3\x9f\x65\r\n\r\nb\r\n";
	struct dsn_rcpt r = { .addr = "b@x", .action = DSN_ACTION_FAILED,
	    .diag = "550 caf\xc3\xa9" };
	struct dsn_msg m = { .hostname = "h", .qid = 5, .sender = "s@y",
	    .now = T_NOW, .rcpts = &r, .nrcpt = 1, .orig = orig,
	    .origlen = sizeof(orig) - 1 };
	struct part p[4];
	const char *h;
	size_t len, hl;
	unsigned fl;
	char bnd[128], *out, *v;
	(void)state;

	out = build(&m, &len, &fl);
	assert_int_equal(fl & DSN_F_8BIT, DSN_F_8BIT);
	assert_int_equal(split(out, len, &h, &hl, p, 4, bnd, sizeof(bnd)), 3);
	assert_field(h, hl, "Content-Transfer-Encoding", "8bit");
	assert_field(p[2].hdr, p[2].hdrlen, "Content-Transfer-Encoding", "8bit");
	/* the diagnostic is ASCII-only */
	v = field(p[1].body, p[1].bodylen, "Diagnostic-Code");
	assert_string_equal(v, "X-tern; 550 caf??");
	free(v);
	free(out);
}

/* ---- dsn_headers_extract ---- */

struct hx_case {
	const char *name;
	const char *in;
	size_t inlen;           /* 0: strlen */
	size_t max;
	const char *want;
};

static void
test_headers_extract(void **state)
{
	static const struct hx_case cases[] = {
		{ "crlf", "A: 1\r\nB: 2\r\n\r\nbody\r\n", 0, 1000,
		  "A: 1\r\nB: 2\r\n" },
		{ "bare lf", "A: 1\nB: 2\n\nbody\n", 0, 1000, "A: 1\r\nB: 2\r\n" },
		{ "bare cr", "A: 1\rB: 2\r\rbody", 0, 1000, "A: 1\r\nB: 2\r\n" },
		{ "no blank line", "A: 1\r\nB: 2", 0, 1000, "A: 1\r\nB: 2\r\n" },
		{ "no header", "\r\nbody\r\n", 0, 1000, "" },
		{ "empty", "", 0, 1000, "" },
		{ "nul", "A: x\0y\r\n\r\n", 10, 1000, "A: x y\r\n" },
		{ "cut on a line", "A: 1\r\nB: 2\r\nC: 3\r\n\r\n", 0, 13,
		  "A: 1\r\nB: 2\r\n" },
		{ "cut exact", "A: 1\r\nB: 2\r\n", 0, 12, "A: 1\r\nB: 2\r\n" },
		{ "too small", "Abcdef: 1\r\n", 0, 5, "" },
	};
	char out[4096];
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct hx_case *c = &cases[i];
		size_t n = dsn_headers_extract(c->in,
		    c->inlen ? c->inlen : strlen(c->in), c->max, out,
		    sizeof(out));
		if (n != strlen(c->want) || memcmp(out, c->want, n) != 0)
			fail_msg("case %s: got %zu bytes \"%.*s\"", c->name, n,
			    (int)n, out);
	}
}

static void
test_headers_extract_long_line(void **state)
{
	size_t inlen = 3000 + 20, n;
	char *in = malloc(inlen), *out = malloc(8192);
	(void)state;

	memcpy(in, "X-Long: ", 8);
	memset(in + 8, 'a', inlen - 8);
	memcpy(in + inlen - 4, "\r\n\r\n", 4);
	n = dsn_headers_extract(in, inlen, 8192, out, 8192);
	check_lines(out, n);
	/* 3016 octets -> 998 + 997 + 997 + 24 on 4 lines, folded */
	assert_int_equal(n, 3016 + 3 + 4 * 2);
	assert_true(out[998 + 2] == ' ');
	/* and within a small limit only whole lines come back */
	n = dsn_headers_extract(in, inlen, 1500, out, 8192);
	assert_int_equal(n, 1000);
	free(in);
	free(out);
}

/* ORCPT xtext (RFC 3461 4.2) decoded for Original-Recipient */
static void
test_orcpt_decode(void **state)
{
	const struct {
		const char *in, *out;       /* out NULL: refused */
	} cases[] = {
		{ "rfc822;a@b.example", "rfc822; a@b.example" },
		{ "rfc822; a@b.example", "rfc822; a@b.example" },
		{ "rfc822;a+2Bb@x", "rfc822; a+b@x" },
		{ "rfc822;+3D+2B+20@x", "rfc822; =+ @x" },
		{ "utf-8;j+C3+A9@x", "utf-8; j\xc3\xa9@x" },
		{ "rfc822;a+2b@x", NULL },          /* lower-case hex */
		{ "rfc822;a+2", NULL },             /* cut short */
		{ "rfc822;a+", NULL },
		{ "rfc822;a=b", NULL },             /* '=' is not xchar */
		{ "rfc822;a b", NULL },
		{ "a@b", NULL },                    /* no type */
		{ ";a@b", NULL },
	};
	char out[64];
	(void)state;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int rc = dsn_orcpt_decode(cases[i].in, out, sizeof(out));
		if (cases[i].out == NULL) {
			assert_int_equal(rc, -1);
			continue;
		}
		assert_int_equal(rc, 0);
		assert_string_equal(out, cases[i].out);
	}
	assert_int_equal(dsn_orcpt_decode("rfc822;abcdefgh", out, 12), -1);
	assert_int_equal(dsn_orcpt_decode("rfc822;abc", out, 12), 0);
}

/* "smtp;" only for a remote reply; our own words stay ours */
static void
test_diag_typing(void **state)
{
	struct dsn_rcpt r[3] = {
		{ .addr = "a@x.example", .action = DSN_ACTION_FAILED,
		  .status = "4.4.7", .remote_mta = "mx.x.example[192.0.2.1]:25",
		  .diag = "450 4.2.0 mailbox busy", .diag_smtp = 1 },
		{ .addr = "b@x.example", .action = DSN_ACTION_FAILED,
		  .status = "5.3.4", .remote_mta = "mx.x.example[192.0.2.1]:25",
		  .diag = "message size 9000 exceeds size limit 100 of mx",
		  .diag_smtp = 1 },
		{ .addr = "c@x.example", .action = DSN_ACTION_FAILED,
		  .status = "5.1.1", .diag = "550 5.1.1 looks like a reply",
		  .diag_smtp = 0 },
	};
	struct dsn_msg m = {
		.hostname = "mx.test", .qid = 9, .sender = "s@example.org",
		.arrival = T_ARRIVAL, .now = T_NOW, .rcpts = r, .nrcpt = 3,
		.rnd = 3,
	};
	struct part p[4];
	const char *h, *blk;
	size_t len, hl;
	unsigned fl;
	char bnd[128], *out;
	(void)state;

	assert_true(dsn_diag_is_smtp("450 4.2.0 busy"));
	assert_true(dsn_diag_is_smtp("250"));
	assert_false(dsn_diag_is_smtp("45 short"));
	assert_false(dsn_diag_is_smtp("6000 x"));
	assert_false(dsn_diag_is_smtp("4500 x"));
	assert_false(dsn_diag_is_smtp("message size"));
	assert_false(dsn_diag_is_smtp(NULL));

	m.orig = orig_message(&m.origlen);
	out = build(&m, &len, &fl);
	assert_int_equal(split(out, len, &h, &hl, p, 4, bnd, sizeof(bnd)), 3);
	blk = memmem(p[1].body, p[1].bodylen, "Final-Recipient: rfc822; a@", 27);
	assert_field(blk, p[1].bodylen - (size_t)(blk - p[1].body),
	    "Diagnostic-Code", "smtp; 450 4.2.0 mailbox busy");
	blk = memmem(p[1].body, p[1].bodylen, "Final-Recipient: rfc822; b@", 27);
	assert_field(blk, p[1].bodylen - (size_t)(blk - p[1].body),
	    "Diagnostic-Code",
	    "X-tern; message size 9000 exceeds size limit 100 of mx");
	blk = memmem(p[1].body, p[1].bodylen, "Final-Recipient: rfc822; c@", 27);
	assert_field(blk, p[1].bodylen - (size_t)(blk - p[1].body),
	    "Diagnostic-Code", "X-tern; 550 5.1.1 looks like a reply");
	/* the explanation quotes the host only for its own words */
	assert_non_null(memmem(p[0].body, p[0].bodylen, "said: 450 4.2.0", 15));
	assert_null(memmem(p[0].body, p[0].bodylen, "said: message size", 18));
	assert_non_null(memmem(p[0].body, p[0].bodylen,
	    "message size 9000 exceeds size limit 100 of mx (host", 52));
	free(out);
	free((char *)m.orig);
}

/* RET=FULL: the whole original for a failure, headers for the rest */
static void
test_ret_full(void **state)
{
	struct dsn_rcpt fail = { .addr = "a@x.example",
	    .action = DSN_ACTION_FAILED, .status = "5.1.1",
	    .diag = "550 5.1.1 no such user", .diag_smtp = 1,
	    .remote_mta = "mx.x.example" };
	struct dsn_rcpt delay = { .addr = "a@x.example",
	    .action = DSN_ACTION_DELAYED, .status = "4.2.0",
	    .diag = "450 4.2.0 busy", .diag_smtp = 1 };
	struct dsn_msg m = {
		.hostname = "mx.test", .qid = 10, .sender = "s@example.org",
		.arrival = T_ARRIVAL, .now = T_NOW, .rcpts = &fail, .nrcpt = 1,
		.rnd = 4, .ret_full = 1,
	};
	struct part p[4];
	const char *h;
	size_t len, hl, big;
	unsigned fl;
	char bnd[128], *out, *o;
	(void)state;

	/* whole and plain: returned as message/rfc822, byte for byte */
	m.orig = o = orig_message(&m.origlen);
	out = build(&m, &len, &fl);
	check_lines(out, len);
	assert_int_equal(split(out, len, &h, &hl, p, 4, bnd, sizeof(bnd)), 3);
	assert_field(p[2].hdr, p[2].hdrlen, "Content-Type", "message/rfc822");
	assert_int_equal(p[2].bodylen, m.origlen);
	assert_memory_equal(p[2].body, m.orig, m.origlen);
	assert_non_null(memmem(p[0].body, p[0].bodylen, "It is attached", 14));
	assert_int_equal(fl & DSN_F_8BIT, 0);
	free(out);

	/* a delay warning returns the header only, whatever RET says */
	m.rcpts = &delay;
	out = build(&m, &len, &fl);
	assert_int_equal(split(out, len, &h, &hl, p, 4, bnd, sizeof(bnd)), 3);
	assert_field(p[2].hdr, p[2].hdrlen, "Content-Type", "text/rfc822-headers");
	assert_null(memmem(out, len, "secret body", 11));
	free(out);
	m.rcpts = &fail;

	/* a bare LF in the body: not plain text, header only with a note */
	o[m.origlen - 4] = '\n';
	out = build(&m, &len, &fl);
	assert_int_equal(split(out, len, &h, &hl, p, 4, bnd, sizeof(bnd)), 3);
	assert_field(p[2].hdr, p[2].hdrlen, "Content-Type", "text/rfc822-headers");
	assert_null(memmem(out, len, "secret body", 11));
	assert_non_null(memmem(p[0].body, p[0].bodylen,
	    "only its header is returned", 27));
	free(out);
	free(o);

	/* over DSN_FULL_MAX: header only with the note; 8-bit kept as 8bit */
	big = DSN_FULL_MAX + 10;
	o = malloc(big);
	memcpy(o, orig_hdrs, strlen(orig_hdrs));
	for (size_t i = strlen(orig_hdrs); i < big; i += 80) {
		size_t n = big - i < 80 ? big - i : 80;
		memset(o + i, 'x', n);
		if (n >= 2)
			memcpy(o + i + n - 2, "\r\n", 2);
	}
	memcpy(o + strlen(orig_hdrs), "\r\n", 2);
	m.orig = o;
	m.origlen = big;
	out = build(&m, &len, &fl);
	assert_int_equal(split(out, len, &h, &hl, p, 4, bnd, sizeof(bnd)), 3);
	assert_field(p[2].hdr, p[2].hdrlen, "Content-Type", "text/rfc822-headers");
	assert_non_null(memmem(p[0].body, p[0].bodylen,
	    "only its header is returned", 27));
	free(out);
	m.origlen = DSN_FULL_MAX - 20;
	memcpy(o + m.origlen - 2, "\r\n", 2);
	o[strlen(orig_hdrs) + 10] = (char)0xe9;
	out = build(&m, &len, &fl);
	check_lines(out, len);
	assert_int_equal(split(out, len, &h, &hl, p, 4, bnd, sizeof(bnd)), 3);
	assert_field(p[2].hdr, p[2].hdrlen, "Content-Type", "message/rfc822");
	assert_field(p[2].hdr, p[2].hdrlen, "Content-Transfer-Encoding", "8bit");
	assert_int_equal(fl & DSN_F_8BIT, DSN_F_8BIT);
	assert_int_equal(p[2].bodylen, m.origlen);
	free(out);
	free(o);
}

/* RFC 6533: SMTPUTF8 mail gets the global types and utf-8 addresses */
static void
test_global(void **state)
{
	struct dsn_rcpt r = { .addr = "jos\xc3\xa9@example.test",
	    .action = DSN_ACTION_FAILED, .status = "5.6.7",
	    .diag = "no SMTPUTF8 at mx", .diag_smtp = 0 };
	struct dsn_msg m = {
		.hostname = "mx.test", .qid = 11, .sender = "s@example.org",
		.arrival = T_ARRIVAL, .now = T_NOW, .rcpts = &r, .nrcpt = 1,
		.rnd = 5, .utf8 = 1,
	};
	struct part p[4];
	const char *h;
	size_t len, hl;
	unsigned fl;
	char bnd[128], *out;
	(void)state;

	m.orig = orig_message(&m.origlen);
	out = build(&m, &len, &fl);
	check_lines(out, len);
	assert_int_equal(split(out, len, &h, &hl, p, 4, bnd, sizeof(bnd)), 3);
	assert_non_null(memmem(h, hl, "report-type=global-delivery-status", 34));
	assert_field(p[0].hdr, p[0].hdrlen, "Content-Type", "text/plain; charset=utf-8");
	assert_field(p[1].hdr, p[1].hdrlen, "Content-Type",
	    "message/global-delivery-status");
	assert_field(p[2].hdr, p[2].hdrlen, "Content-Type", "message/global-headers");
	assert_field(p[1].body, p[1].bodylen, "Final-Recipient",
	    "utf-8; jos\xc3\xa9@example.test");
	assert_non_null(memmem(p[0].body, p[0].bodylen,
	    "<jos\xc3\xa9@example.test>", 20));
	assert_int_equal(fl & DSN_F_8BIT, DSN_F_8BIT);
	free(out);
	/* an ASCII address keeps type rfc822 */
	r.addr = "jose@example.test";
	out = build(&m, &len, &fl);
	assert_int_equal(split(out, len, &h, &hl, p, 4, bnd, sizeof(bnd)), 3);
	assert_field(p[1].body, p[1].bodylen, "Final-Recipient",
	    "rfc822; jose@example.test");
	free(out);
	free((char *)m.orig);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_rcpt),
		cmocka_unit_test(test_three_rcpts_envid_orcpt),
		cmocka_unit_test(test_delayed_only),
		cmocka_unit_test(test_relayed),
		cmocka_unit_test(test_refusals),
		cmocka_unit_test(test_long_hostile_diag),
		cmocka_unit_test(test_boundary_collision),
		cmocka_unit_test(test_eightbit),
		cmocka_unit_test(test_headers_extract),
		cmocka_unit_test(test_headers_extract_long_line),
		cmocka_unit_test(test_orcpt_decode),
		cmocka_unit_test(test_diag_typing),
		cmocka_unit_test(test_ret_full),
		cmocka_unit_test(test_global),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
