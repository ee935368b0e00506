/*
 * tlsrpt_report.c - the aggregate report of SMTP TLS Reporting: the JSON
 * document (RFC 8460 4.4), its gzip form and the mail that carries it
 * (RFC 8460 5.3). See tern/tlsrpt.h.
 *
 * Pure: no I/O, no globals, no logging; the clock and the randomness come
 * in as arguments (struct tlsrpt_report_info). Runs on the reporter's
 * thread (tlsrpt_send.c).
 *
 * Untrusted input: MX host names and policy strings that came from DNS or
 * from a policy file. They only ever go into JSON strings (escaped by the
 * JSON writer) and into the gzip attachment; header fields carry only the
 * policy domain (a recipient domain tern delivered to, in A-labels), the
 * configured organisation name and addresses parsed as local@domain.
 *
 * Dates: date-range is [start, end - 1] in RFC 3339 UTC ("...T23:59:59Z"
 * for a day, as RFC 8460's example); the attachment name uses the same two
 * instants in Unix seconds.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <zlib.h>

#include "tern/json.h"
#include "tern/tlsrpt.h"
#include "tern/util.h"

#define TLSRPT_B64_LINE 76

static void
tlsrpt_rfc3339(int64_t t, char *out, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL || strftime(out, len,
	    "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(out, len, "1970-01-01T00:00:00Z");
}

/* policy-string: one JSON string per line of s. */
static void
tlsrpt_json_lines(struct json_writer *w, const char *s)
{
	json_arr_open(w);
	while (s != NULL && *s != '\0') {
		const char *e = strchr(s, '\n');
		size_t n = e != NULL ? (size_t)(e - s) : strlen(s);

		if (n > 0)
			json_put_strn(w, s, n);
		s = e != NULL ? e + 1 : NULL;
	}
	json_arr_close(w);
}

static void
tlsrpt_json_policy(struct json_writer *w, const struct tlsrpt_agg *a)
{
	json_obj_open(w);
	json_key(w, "policy");
	json_obj_open(w);
	json_kv_str(w, "policy-type", tlsrpt_policy_name(a->policy));
	json_key(w, "policy-string");
	tlsrpt_json_lines(w, a->policy_string);
	json_kv_str(w, "policy-domain", a->domain);
	json_key(w, "mx-host");
	json_arr_open(w);
	for (size_t i = 0; i < a->nmx; i++)
		json_put_str(w, a->mx[i]);
	json_arr_close(w);
	json_obj_close(w);

	json_key(w, "summary");
	json_obj_open(w);
	json_kv_uint(w, "total-successful-session-count", a->ok);
	json_kv_uint(w, "total-failure-session-count", a->failed);
	json_obj_close(w);

	json_key(w, "failure-details");
	json_arr_open(w);
	for (size_t i = 0; i < a->ndetails; i++) {
		const struct tlsrpt_detail *d = &a->details[i];

		json_obj_open(w);
		json_kv_str(w, "result-type", tlsrpt_result_name(d->result));
		if (d->sip != NULL)
			json_kv_str(w, "sending-mta-ip", d->sip);
		if (d->mx != NULL)
			json_kv_str(w, "receiving-mx-hostname", d->mx);
		if (d->ip != NULL)
			json_kv_str(w, "receiving-ip", d->ip);
		json_kv_uint(w, "failed-session-count", d->count);
		json_obj_close(w);
	}
	json_arr_close(w);
	json_obj_close(w);
}

int
tlsrpt_json_build(const struct tlsrpt_report_info *ri,
    const struct tlsrpt_agg *list, char **out, size_t *outlen)
{
	struct json_writer w;
	char t[32];

	json_writer_init(&w);
	json_obj_open(&w);
	json_kv_str(&w, "organization-name", ri->org);
	json_key(&w, "date-range");
	json_obj_open(&w);
	tlsrpt_rfc3339(ri->start, t, sizeof(t));
	json_kv_str(&w, "start-datetime", t);
	tlsrpt_rfc3339(ri->end - 1, t, sizeof(t));
	json_kv_str(&w, "end-datetime", t);
	json_obj_close(&w);
	json_kv_str(&w, "contact-info", ri->contact);
	json_kv_str(&w, "report-id", ri->report_id);
	json_key(&w, "policies");
	json_arr_open(&w);
	for (const struct tlsrpt_agg *a = list; a != NULL; a = a->next)
		tlsrpt_json_policy(&w, a);
	json_arr_close(&w);
	json_obj_close(&w);
	*out = json_writer_finish(&w, outlen);
	return *out != NULL ? 0 : -1;
}

int
tlsrpt_gzip(const char *in, size_t len, unsigned char **out, size_t *outlen)
{
	z_stream z;
	uLong cap;
	unsigned char *p;
	int rc;

	memset(&z, 0, sizeof(z));
	/* windowBits 15 + 16: a gzip header and trailer (RFC 1952) */
	if (len > 0x7fffffffu || deflateInit2(&z, Z_BEST_COMPRESSION,
	    Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return -1;
	cap = deflateBound(&z, (uLong)len) + 32;
	if ((p = malloc(cap)) == NULL) {
		deflateEnd(&z);
		return -1;
	}
	z.next_in = (Bytef *)(uintptr_t)in;
	z.avail_in = (uInt)len;
	z.next_out = p;
	z.avail_out = (uInt)cap;
	rc = deflate(&z, Z_FINISH);
	*outlen = z.total_out;
	deflateEnd(&z);
	if (rc != Z_STREAM_END) {
		free(p);
		return -1;
	}
	*out = p;
	return 0;
}

static void
tlsrpt_mail_header(struct buf *b, const struct tlsrpt_report_info *ri,
    const char (*rua)[TLSRPT_ADDR_MAX], size_t nrua, const char *bnd)
{
	time_t tt = (time_t)ri->now;
	struct tm tm;
	char date[64];

	if (gmtime_r(&tt, &tm) == NULL ||
	    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S +0000",
	    &tm) == 0)
		snprintf(date, sizeof(date), "Thu, 01 Jan 1970 00:00:00 +0000");
	buf_printf(b, "From: <%s>\r\n", ri->from);
	buf_printf(b, "Date: %s\r\n", date);
	buf_printf(b, "Subject: Report Domain: %s Submitter: %s "
	    "Report-ID: <%s>\r\n", ri->domain, ri->org, ri->report_id);
	buf_addstr(b, "To: ");
	for (size_t i = 0; i < nrua; i++)
		buf_printf(b, "%s<%s>", i > 0 ? ",\r\n " : "", rua[i]);
	buf_addstr(b, "\r\n");
	buf_printf(b, "Message-ID: <%016llx.tlsrpt@%s>\r\n",
	    (unsigned long long)ri->rnd, ri->hostname);
	buf_printf(b, "TLS-Report-Domain: %s\r\n", ri->domain);
	buf_printf(b, "TLS-Report-Submission: %s\r\n", ri->org);
	buf_addstr(b, "Auto-Submitted: auto-generated\r\n");
	buf_addstr(b, "MIME-Version: 1.0\r\n");
	buf_printf(b, "Content-Type: multipart/report; report-type=\"tlsrpt\";"
	    "\r\n boundary=\"%s\"\r\n\r\n", bnd);
}

int
tlsrpt_mail_build(const struct tlsrpt_report_info *ri,
    const char (*rua)[TLSRPT_ADDR_MAX], size_t nrua, const char *json,
    size_t jsonlen, char **out, size_t *outlen)
{
	struct buf b = { 0 };
	unsigned char *gz = NULL;
	char *b64 = NULL, bnd[64], t0[32], t1[32];
	size_t gzlen = 0, b64len;

	if (tlsrpt_gzip(json, jsonlen, &gz, &gzlen) != 0)
		return -1;
	if ((b64 = malloc(BASE64_LEN(gzlen) + 1)) == NULL) {
		free(gz);
		return -1;
	}
	b64len = base64_encode(gz, gzlen, b64, BASE64_LEN(gzlen) + 1);
	free(gz);
	snprintf(bnd, sizeof(bnd), "=_tlsrpt_%016llx",
	    (unsigned long long)ri->rnd);
	tlsrpt_rfc3339(ri->start, t0, sizeof(t0));
	tlsrpt_rfc3339(ri->end - 1, t1, sizeof(t1));

	tlsrpt_mail_header(&b, ri, rua, nrua, bnd);
	buf_printf(&b, "--%s\r\n", bnd);
	buf_addstr(&b, "Content-Type: text/plain; charset=us-ascii\r\n"
	    "Content-Transfer-Encoding: 7bit\r\n\r\n");
	buf_printf(&b, "This is an aggregate TLS report (RFC 8460) from %s\r\n"
	    "for the policy domain %s, covering %s to %s.\r\n"
	    "The report is in the attached gzip-compressed JSON file.\r\n\r\n",
	    ri->org, ri->domain, t0, t1);
	buf_printf(&b, "--%s\r\n", bnd);
	buf_addstr(&b, "Content-Type: application/tlsrpt+gzip\r\n"
	    "Content-Transfer-Encoding: base64\r\n");
	buf_printf(&b, "Content-Disposition: attachment;\r\n filename=\""
	    "%s!%s!%lld!%lld.json.gz\"\r\n\r\n", ri->org, ri->domain,
	    (long long)ri->start, (long long)(ri->end - 1));
	for (size_t i = 0; i < b64len; i += TLSRPT_B64_LINE) {
		size_t n = b64len - i < TLSRPT_B64_LINE ? b64len - i :
		    TLSRPT_B64_LINE;
		buf_add(&b, b64 + i, n);
		buf_addstr(&b, "\r\n");
	}
	buf_printf(&b, "--%s--\r\n", bnd);
	free(b64);
	if (b.err != 0) {
		buf_free(&b);
		return -1;
	}
	*out = b.p;
	*outlen = b.len;
	return 0;
}
