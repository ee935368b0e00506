/*
 * dsn.c - builds delivery status notifications: bounces and delay warnings
 * (RFC 3464 message/delivery-status inside RFC 6522 multipart/report, RFC
 * 3461 ENVID/ORCPT propagation, RFC 3834 Auto-Submitted, RFC 3463 codes).
 *
 * Pure: called on the scheduler thread, but touches nothing but its
 * arguments (no clock, no random source, no logging, no globals); the
 * result is a newly allocated buffer the caller queues like any message.
 *
 * Untrusted input: the original message's header (sent by a client) and the
 * remote servers' replies. Every such text is stripped of CR, LF and other
 * control characters (diagnostics also of 8-bit octets) and folded so that
 * no output line exceeds 998 octets (RFC 5322 2.1.1); the returned header is
 * cut at DSN_HEADERS_MAX on a line boundary and re-terminated with CRLF by
 * dsn_headers_extract() (fuzzed: tests/fuzz/fuzz_dsn_headers.c).
 *
 * Choices: the original header is returned (text/rfc822-headers) unless the
 * sender asked RET=FULL: then a failure report carries the whole original
 * (message/rfc822) when it is at most DSN_FULL_MAX and plain RFC 5322 text;
 * otherwise the header only, with a note. Delay warnings and relayed
 * notices always carry the header only (RFC 3461 4.3 lets an MTA return
 * less than asked). Diagnostic-Code is typed "smtp" only for a remote reply
 * ("550 5.1.1 ..."), never for our own words. A report about a message
 * sent with SMTPUTF8 uses RFC 6533's types (message/global-delivery-status,
 * message/global-headers, message/global, utf-8 addresses, a UTF-8
 * explanation). ORCPT values are decoded
 * from xtext for Original-Recipient. The boundary holds the queue id and
 * 64 random bits, and is checked against every embedded text (the returned
 * message included); a collision
 * picks other bits. Message-ID is <QID.RND.dsn@hostname>, so a delay warning
 * and a later bounce of the same message get different ids.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tern/dsn.h"
#include "tern/util.h"

#define DSN_LINE_MAX    998u
#define DSN_WRAP        76u

/* RFC 5322 3.3 date-time in UTC, locale-independent. */
static void
dsn_date(int64_t t, char *out, size_t len)
{
	static const char *const wd[] = { "Sun", "Mon", "Tue", "Wed", "Thu",
	    "Fri", "Sat" };
	static const char *const mon[] = { "Jan", "Feb", "Mar", "Apr", "May",
	    "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL) {
		tt = 0;
		gmtime_r(&tt, &tm);
	}
	snprintf(out, len, "%s, %02d %s %04d %02d:%02d:%02d +0000",
	    wd[tm.tm_wday % 7], tm.tm_mday, mon[tm.tm_mon % 12],
	    tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/*
 * A copy of s for a header field value: control characters (CR, LF, TAB,
 * NUL ...) become spaces, runs of blanks collapse, ends trimmed; with
 * ascii, 8-bit octets become '?'; at most max bytes (then "..."). Sets
 * *eight when 8-bit octets are kept. NULL on allocation failure.
 */
static char *
dsn_clean(const char *s, size_t max, int ascii, unsigned *eight)
{
	size_t n = s ? strlen(s) : 0, o = 0;
	char *d = malloc((n < max ? n : max) + 4);
	int blank = 1;

	if (d == NULL)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (o >= max) {
			while (o > 0 && d[o - 1] == ' ')
				o--;
			memcpy(d + o, "...", 3);
			o += 3;
			blank = 0;
			break;
		}
		if (c < 0x20 || c == 0x7f || c == ' ') {
			if (!blank)
				d[o++] = ' ';
			blank = 1;
			continue;
		}
		if (c >= 0x80) {
			if (ascii)
				c = '?';
			else if (eight != NULL)
				*eight |= DSN_F_8BIT;
		}
		d[o++] = (char)c;
		blank = 0;
	}
	while (o > 0 && d[o - 1] == ' ')
		o--;
	d[o] = '\0';
	return d;
}

/*
 * Append "<first>" + text word-wrapped: lines are kept near DSN_WRAP octets,
 * continuation lines start with cont (a fold: " " or an indent); a word too
 * long for a line is split so that no line exceeds DSN_LINE_MAX. text is
 * already clean (single spaces, no controls). Ends with CRLF.
 */
static void
dsn_wrap(struct buf *b, const char *first, const char *text,
    const char *cont)
{
	size_t col = strlen(first), clen = strlen(cont);
	const char *p = text;
	int fresh = 1;          /* nothing written on this line after first/cont */

	buf_addstr(b, first);
	while (*p != '\0') {
		const char *w = p;
		size_t wl;
		while (*p != '\0' && *p != ' ')
			p++;
		wl = (size_t)(p - w);
		while (*p == ' ')
			p++;
		while (wl > 0) {
			size_t room, take;
			if (!fresh && col + 1 + wl > DSN_WRAP) {
				buf_addstr(b, "\r\n");
				buf_addstr(b, cont);
				col = clen;
				fresh = 1;
			}
			if (!fresh) {
				buf_add(b, " ", 1);
				col++;
			}
			room = DSN_LINE_MAX - 100 > col ? DSN_LINE_MAX - 100 - col : 1;
			take = wl < room ? wl : room;
			buf_add(b, w, take);
			col += take;
			fresh = 0;
			w += take;
			wl -= take;
			if (wl > 0) {           /* split an overlong word */
				buf_addstr(b, "\r\n");
				buf_addstr(b, cont);
				col = clen;
				fresh = 1;
			}
		}
	}
	buf_addstr(b, "\r\n");
}

int
dsn_diag_is_smtp(const char *t)
{
	return t != NULL && t[0] >= '2' && t[0] <= '5' &&
	    t[1] >= '0' && t[1] <= '9' && t[2] >= '0' && t[2] <= '9' &&
	    (t[3] == '\0' || t[3] == ' ');
}

static int
dsn_hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;                      /* xtext hex is upper case */
}

int
dsn_orcpt_decode(const char *orcpt, char *out, size_t outcap)
{
	const char *semi = strchr(orcpt, ';'), *p;
	size_t o, tl;

	if (semi == NULL || semi == orcpt)
		return -1;
	tl = (size_t)(semi - orcpt);
	if (tl + 3 > outcap)
		return -1;
	memcpy(out, orcpt, tl);
	out[tl] = ';';
	out[tl + 1] = ' ';
	o = tl + 2;
	for (p = semi + 1; *p == ' '; p++)
		;
	for (; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;
		if (c < 0x21 || c > 0x7e || c == '=')
			return -1;              /* not xchar */
		if (c == '+') {
			int hi = dsn_hexval(p[1]), lo;
			if (hi < 0 || (lo = dsn_hexval(p[2])) < 0)
				return -1;
			c = (unsigned char)(hi << 4 | lo);
			p += 2;
		}
		if (o + 2 > outcap)
			return -1;
		out[o++] = (char)c;
	}
	out[o] = '\0';
	return 0;
}

/*
 * 1 if p[0..len) can be returned as message/rfc822 as it is: at most
 * DSN_FULL_MAX octets, no NUL, CRLF line ends only, lines of at most 998
 * octets. Sets DSN_F_8BIT in *fl when 8-bit octets are present.
 */
static int
dsn_full_ok(const char *p, size_t len, unsigned *fl)
{
	size_t col = 0;
	unsigned eight = 0;

	if (p == NULL || len == 0 || len > DSN_FULL_MAX)
		return 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '\0')
			return 0;
		if (c == '\r') {
			if (i + 1 >= len || p[i + 1] != '\n')
				return 0;
			i++;
			col = 0;
			continue;
		}
		if (c == '\n' || ++col > DSN_LINE_MAX)
			return 0;
		if (c >= 0x80)
			eight = DSN_F_8BIT;
	}
	*fl |= eight;
	return 1;
}

size_t
dsn_headers_extract(const char *p, size_t len, size_t max, char *out,
    size_t outcap)
{
	size_t i = 0, o = 0, lim = max < outcap ? max : outcap;

	while (i < len) {
		size_t j = i;
		while (j < len && p[j] != '\r' && p[j] != '\n')
			j++;
		if (j == i)
			break;                  /* the empty line: end of header */
		/* emit p[i..j) as physical lines of at most DSN_LINE_MAX */
		size_t k = i;
		int first = 1;
		while (k < j) {
			size_t room = first ? DSN_LINE_MAX : DSN_LINE_MAX - 1;
			size_t take = j - k < room ? j - k : room;
			size_t need = (first ? 0 : 1) + take + 2;
			if (o + need > lim)
				return o;       /* keep whole physical lines only */
			if (!first)
				out[o++] = ' ';
			for (size_t t = 0; t < take; t++)
				out[o++] = p[k + t] == '\0' ? ' ' : p[k + t];
			out[o++] = '\r';
			out[o++] = '\n';
			k += take;
			first = 0;
		}
		/* skip one line end: CRLF, a bare CR or a bare LF */
		if (j < len && p[j] == '\r') {
			j++;
			if (j < len && p[j] == '\n')
				j++;
		} else if (j < len && p[j] == '\n') {
			j++;
		}
		i = j;
	}
	return o;
}

static int
dsn_contains(const char *hay, size_t hlen, const char *needle)
{
	size_t nl = strlen(needle);
	return hay != NULL && hlen >= nl && memmem(hay, hlen, needle, nl) != NULL;
}

static int
dsn_boundary_clash(const struct dsn_msg *m, const char *hdrs, size_t hlen,
    const char *bnd)
{
	if (dsn_contains(hdrs, hlen, bnd))
		return 1;
	for (size_t i = 0; i < m->nrcpt; i++) {
		const struct dsn_rcpt *r = &m->rcpts[i];
		const char *f[] = { r->addr, r->orcpt, r->remote_mta, r->diag,
		    r->status };
		for (size_t k = 0; k < sizeof(f) / sizeof(f[0]); k++)
			if (f[k] != NULL && dsn_contains(f[k], strlen(f[k]), bnd))
				return 1;
	}
	return (m->envid && dsn_contains(m->envid, strlen(m->envid), bnd)) ||
	    dsn_contains(m->sender, strlen(m->sender), bnd) ||
	    (m->hostname && dsn_contains(m->hostname, strlen(m->hostname), bnd));
}

/* The human explanation of one recipient: "<addr>: host X said: ..." */
static void
dsn_human_rcpt(struct buf *b, const struct dsn_rcpt *r, const char *addr,
    const char *mta, const char *diag)
{
	struct buf line = { 0 };
	char *txt;

	buf_printf(&line, "<%s>:", addr);
	if (mta[0] != '\0' && diag[0] != '\0' && r->diag_smtp &&
	    dsn_diag_is_smtp(diag))
		buf_printf(&line, " host %s said: %s", mta, diag);
	else if (mta[0] != '\0' && diag[0] != '\0')
		buf_printf(&line, " %s (host %s)", diag, mta);
	else if (diag[0] != '\0')
		buf_printf(&line, " %s", diag);
	else
		buf_printf(&line, " %s (status %s)",
		    r->action == DSN_ACTION_DELAYED ? "delivery delayed" :
		    r->action == DSN_ACTION_RELAYED ? "relayed" :
		    "delivery failed", r->status ? r->status : "unknown");
	if (line.err) {
		b->err = ENOMEM;
		free(line.p);
		return;
	}
	txt = line.p;
	dsn_wrap(b, "", txt, "    ");
	buf_addstr(b, "\r\n");
	free(txt);
}

enum dsn_status
dsn_build(const struct dsn_msg *m, char **out, size_t *outlen,
    unsigned *flags)
{
	struct buf b = { 0 };
	char *hdrs = NULL, *host = NULL, *sender = NULL, *envid = NULL;
	const char *ret;                /* what is returned: header or whole */
	char bnd[80], date[64], arr[64];
	size_t hlen = 0, retlen, nfailed = 0, ndelayed = 0;
	int full = 0;
	unsigned fl = 0;
	uint64_t rnd = m->rnd;
	enum dsn_status st = DSN_NOMEM;

	*out = NULL;
	*outlen = 0;
	*flags = 0;
	if (m->sender == NULL || m->sender[0] == '\0')
		return DSN_NULL_SENDER;
	if (m->nrcpt == 0)
		return DSN_NO_RCPT;
	for (size_t i = 0; i < m->nrcpt; i++) {
		if (m->rcpts[i].action == DSN_ACTION_FAILED)
			nfailed++;
		else if (m->rcpts[i].action == DSN_ACTION_DELAYED)
			ndelayed++;
	}

	if ((hdrs = malloc(DSN_HEADERS_MAX)) == NULL)
		goto fail;
	hlen = dsn_headers_extract(m->orig, m->orig ? m->origlen : 0,
	    DSN_HEADERS_MAX, hdrs, DSN_HEADERS_MAX);
	for (size_t i = 0; i < hlen; i++)
		if ((unsigned char)hdrs[i] >= 0x80)
			fl |= DSN_F_8BIT;
	if (m->ret_full && nfailed > 0 && dsn_full_ok(m->orig, m->origlen, &fl)) {
		ret = m->orig;
		retlen = m->origlen;
		full = 1;
	} else {
		ret = hdrs;
		retlen = hlen;
	}
	host = dsn_clean(m->hostname ? m->hostname : "localhost", 255, 1, NULL);
	sender = dsn_clean(m->sender, 512, 0, &fl);
	envid = m->envid ? dsn_clean(m->envid, 200, 1, NULL) : NULL;
	if (host == NULL || sender == NULL || (m->envid && envid == NULL))
		goto fail;
	for (int tries = 0;; tries++) {
		snprintf(bnd, sizeof(bnd), "tern=%016llx=%016llx",
		    (unsigned long long)m->qid, (unsigned long long)rnd);
		if (!dsn_boundary_clash(m, ret, retlen, bnd) || tries > 64)
			break;
		rnd = rnd * 6364136223846793005ull + 1442695040888963407ull;
	}

	/* ---- the message header ---- */
	dsn_date(m->now, date, sizeof(date));
	buf_printf(&b, "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n",
	    host);
	buf_printf(&b, "To: <%s>\r\n", sender);
	buf_printf(&b, "Subject: %s\r\n", nfailed > 0 ?
	    "Undelivered Mail Returned to Sender" : ndelayed > 0 ?
	    "Delayed Mail (still being retried)" :
	    "Relayed Mail (no delivery report to follow)");
	buf_printf(&b, "Date: %s\r\n", date);
	buf_printf(&b, "Message-ID: <%016llx.%016llx.dsn@%s>\r\n",
	    (unsigned long long)m->qid, (unsigned long long)m->rnd, host);
	buf_addstr(&b, "Auto-Submitted: auto-replied\r\n");
	buf_addstr(&b, "MIME-Version: 1.0\r\n");
	buf_printf(&b, "Content-Type: multipart/report; "
	    "report-type=%sdelivery-status;\r\n boundary=\"%s\"\r\n",
	    m->utf8 ? "global-" : "", bnd);
	/* filled in below, once we know whether 8-bit octets are present */
	size_t cte_at = b.len;
	buf_addstr(&b, "\r\nThis is a MIME-encapsulated message.\r\n\r\n");

	/* ---- part 1: the explanation ---- */
	buf_printf(&b, "--%s\r\n", bnd);
	buf_printf(&b, "Content-Description: Notification\r\n"
	    "Content-Type: text/plain; charset=%s\r\n\r\n",
	    m->utf8 ? "utf-8" : "us-ascii");
	buf_printf(&b, "This is the mail system at host %s.\r\n\r\n", host);
	if (nfailed > 0) {
		buf_printf(&b, "I'm sorry to have to inform you that your "
		    "message could not\r\nbe delivered to one or more "
		    "recipients. %s is attached below.\r\n\r\n",
		    full ? "It" : "Its header");
		if (m->ret_full && !full)
			buf_printf(&b, "You asked for the whole message back, "
			    "but it is larger than\r\n%u bytes or not plain "
			    "text, so only its header is returned.\r\n\r\n",
			    DSN_FULL_MAX);
	}
	for (int pass = 0; pass < 3; pass++) {
		enum dsn_action want = pass == 0 ? DSN_ACTION_FAILED :
		    pass == 1 ? DSN_ACTION_DELAYED : DSN_ACTION_RELAYED;
		int any = 0;
		for (size_t i = 0; i < m->nrcpt; i++) {
			const struct dsn_rcpt *r = &m->rcpts[i];
			char *a, *mta, *dg;
			if (r->action != want)
				continue;
			if (want == DSN_ACTION_DELAYED && !any) {
				char until[64] = "";
				if (r->retry_until > 0)
					dsn_date(r->retry_until, until,
					    sizeof(until));
				buf_addstr(&b, "Your message has not been "
				    "delivered yet to the recipients below.\r\n"
				    "The mail system will keep trying");
				if (until[0] != '\0')
					buf_printf(&b, " until\r\n%s", until);
				buf_addstr(&b, "; you do not need to resend "
				    "it.\r\n\r\n");
			}
			if (want == DSN_ACTION_RELAYED && !any)
				buf_addstr(&b, "Your message was passed on to "
				    "the recipients below. You asked\r\nto be told "
				    "of its delivery, but the next mail system does "
				    "not\r\nsend delivery reports, so no further "
				    "notice will follow.\r\n\r\n");
			any = 1;
			a = dsn_clean(r->addr, 512, !m->utf8, &fl);
			mta = dsn_clean(r->remote_mta, 255, 1, NULL);
			dg = dsn_clean(r->diag, DSN_DIAG_MAX, 1, NULL);
			if (a == NULL || mta == NULL || dg == NULL)
				b.err = ENOMEM;
			else
				dsn_human_rcpt(&b, r, a, mta, dg);
			free(a);
			free(mta);
			free(dg);
		}
	}

	/* ---- part 2: message/delivery-status (RFC 3464 2.2, 2.3) ---- */
	buf_printf(&b, "--%s\r\n", bnd);
	buf_printf(&b, "Content-Description: Delivery report\r\n"
	    "Content-Type: message/%sdelivery-status\r\n\r\n",
	    m->utf8 ? "global-" : "");
	buf_printf(&b, "Reporting-MTA: dns; %s\r\n", host);
	if (envid != NULL && envid[0] != '\0')
		buf_printf(&b, "Original-Envelope-Id: %s\r\n", envid);
	if (m->arrival > 0) {
		dsn_date(m->arrival, arr, sizeof(arr));
		buf_printf(&b, "Arrival-Date: %s\r\n", arr);
	}
	for (size_t i = 0; i < m->nrcpt; i++) {
		const struct dsn_rcpt *r = &m->rcpts[i];
		int delayed = r->action == DSN_ACTION_DELAYED;
		int relayed = r->action == DSN_ACTION_RELAYED;
		char *a = dsn_clean(r->addr, 512, 0, &fl);
		char orc[600];
		char *o = r->orcpt == NULL ? NULL : dsn_clean(
		    dsn_orcpt_decode(r->orcpt, orc, sizeof(orc)) == 0 ? orc :
		    r->orcpt, 512, 0, &fl);
		char *s = dsn_clean(r->status, 15, 1, NULL);
		char *mta = dsn_clean(r->remote_mta, 255, 1, NULL);
		char *dg = dsn_clean(r->diag, DSN_DIAG_MAX, 1, NULL);
		char *d2 = NULL;

		if (a == NULL || s == NULL || mta == NULL || dg == NULL ||
		    (r->orcpt && o == NULL))
			b.err = ENOMEM;
		else {
			buf_addstr(&b, "\r\n");
			if (o != NULL && o[0] != '\0')
				buf_printf(&b, "Original-Recipient: %s%s\r\n",
				    strchr(o, ';') ? "" : "rfc822; ", o);
			/* RFC 6533 3: a UTF-8 address is of type utf-8 */
			buf_printf(&b, "Final-Recipient: %s; %s\r\n",
			    m->utf8 && has_8bit(a, strlen(a)) ? "utf-8" : "rfc822", a);
			buf_printf(&b, "Action: %s\r\n",
			    delayed ? "delayed" : relayed ? "relayed" : "failed");
			buf_printf(&b, "Status: %s\r\n", s[0] ? s :
			    delayed ? "4.0.0" : relayed ? "2.0.0" : "5.0.0");
			if (mta[0] != '\0')
				buf_printf(&b, "Remote-MTA: dns; %s\r\n", mta);
			if (dg[0] != '\0') {
				struct buf f = { 0 };
				buf_printf(&f, "Diagnostic-Code: %s; ",
				    r->diag_smtp && dsn_diag_is_smtp(dg) ?
				    "smtp" : "X-tern");
				if (f.err)
					b.err = ENOMEM;
				else
					dsn_wrap(&b, f.p, dg, " ");
				d2 = f.p;
			}
			if (r->last_attempt > 0) {
				dsn_date(r->last_attempt, arr, sizeof(arr));
				buf_printf(&b, "Last-Attempt-Date: %s\r\n",
				    arr);
			}
			if (delayed && r->retry_until > 0) {
				dsn_date(r->retry_until, arr, sizeof(arr));
				buf_printf(&b, "Will-Retry-Until: %s\r\n",
				    arr);
			}
		}
		free(a);
		free(o);
		free(s);
		free(mta);
		free(dg);
		free(d2);
	}

	/*
	 * ---- part 3: the original (message/rfc822) or its header (RFC 6522
	 * text/rfc822-headers) ----
	 */
	buf_printf(&b, "\r\n--%s\r\n", bnd);
	buf_printf(&b, "Content-Description: Undelivered Message%s\r\n"
	    "Content-Type: %s\r\n", full ? "" : " Headers",
	    full ? (m->utf8 ? "message/global" : "message/rfc822") :
	    (m->utf8 ? "message/global-headers" : "text/rfc822-headers"));
	if (fl & DSN_F_8BIT)
		buf_addstr(&b, "Content-Transfer-Encoding: 8bit\r\n");
	buf_addstr(&b, "\r\n");
	buf_add(&b, ret, retlen);
	if (retlen >= 2 && memcmp(ret + retlen - 2, "\r\n", 2) != 0)
		buf_addstr(&b, "\r\n");
	buf_printf(&b, "\r\n--%s--\r\n", bnd);
	if (b.err)
		goto fail;

	/* the top-level transfer encoding, now that 8-bit is known */
	{
		const char *cte = (fl & DSN_F_8BIT) ?
		    "Content-Transfer-Encoding: 8bit\r\n" :
		    "Content-Transfer-Encoding: 7bit\r\n";
		size_t cl = strlen(cte);
		buf_add(&b, cte, cl);       /* grow by cl, then shift */
		if (b.err)
			goto fail;
		memmove(b.p + cte_at + cl, b.p + cte_at, b.len - cl - cte_at);
		memcpy(b.p + cte_at, cte, cl);
	}

	*out = b.p;
	*outlen = b.len;
	*flags = fl;
	b.p = NULL;
	st = DSN_OK;
fail:
	free(b.p);
	free(hdrs);
	free(host);
	free(sender);
	free(envid);
	return st;
}
