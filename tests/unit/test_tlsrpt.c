/*
 * test_tlsrpt.c - SMTP TLS Reporting (queue/mta/tlsrpt*.c): the TXT record
 * parser (table-driven, then from DNS answers built by hand), the JSON
 * report of an aggregate (exact bytes), the gzip form (inflated back with
 * zlib), the report mail, and the aggregate itself: recording, taking the
 * closed periods, putting back, and a save/load round trip.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <ares.h>
#include <zlib.h>

#include "tern/resolver.h"
#include "tern/tlsrpt.h"
#include "tern/util.h"

#include "dns_wire.h"

/* ------------------------------------------------------------------ */
/* TXT records */

struct txt_case {
	const char *in;
	enum tlsrpt_txt_status st;
	size_t nrua, nhttps, nother;
	const char *rua0, *rua1;
};

static const struct txt_case txt_cases[] = {
	{ "v=TLSRPTv1; rua=mailto:reports@example.com", TLSRPT_TXT_OK, 1, 0,
	  0, "reports@example.com", NULL },
	{ "v=TLSRPTv1;rua=mailto:a@x.example,mailto:b@y.example;",
	  TLSRPT_TXT_OK, 2, 0, 0, "a@x.example", "b@y.example" },
	{ "v=TLSRPTv1 ; rua = mailto:a@x.example", TLSRPT_TXT_SYNTAX, 0, 0, 0,
	  NULL, NULL },     /* "rua " is not the field name */
	{ "v=TLSRPTv1;  rua=mailto:a@x.example ,  https://r.example/t",
	  TLSRPT_TXT_OK, 1, 1, 0, "a@x.example", NULL },
	{ "v=TLSRPTv1; rua=https://r.example/t", TLSRPT_TXT_OK, 0, 1, 0,
	  NULL, NULL },
	{ "v=TLSRPTv1; rua=MAILTO:tls%2Dreports@x.example?subject=hi",
	  TLSRPT_TXT_OK, 1, 0, 0, "tls-reports@x.example", NULL },
	{ "v=TLSRPTv1; ext_1=abc; rua=mailto:a@x.example", TLSRPT_TXT_OK, 1, 0,
	  0, "a@x.example", NULL },
	{ "v=TLSRPTv1; rua=mailto:not-an-address, mailto:a@x.example",
	  TLSRPT_TXT_OK, 1, 0, 1, "a@x.example", NULL },
	{ "v=TLSRPTv1; rua=ftp://x.example/", TLSRPT_TXT_OK, 0, 0, 1, NULL,
	  NULL },
	{ "v=TLSRPTv1; rua=mailto:a%zz@x.example", TLSRPT_TXT_OK, 0, 0, 1,
	  NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:a%00@x.example", TLSRPT_TXT_OK, 0, 0, 1,
	  NULL, NULL },
	{ "v=TLSRPTv1; foo=bar", TLSRPT_TXT_NO_RUA, 0, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1", TLSRPT_TXT_SYNTAX, 0, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1;", TLSRPT_TXT_SYNTAX, 0, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1;; rua=mailto:a@x.example", TLSRPT_TXT_SYNTAX, 0, 0, 0,
	  NULL, NULL },
	{ "v=TLSRPTv1; rua=", TLSRPT_TXT_SYNTAX, 0, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:a@x.example,", TLSRPT_TXT_SYNTAX, 0, 0, 0,
	  NULL, NULL },
	{ "v=TLSRPTv1; rua=mailto:a b@x.example", TLSRPT_TXT_SYNTAX, 0, 0, 0,
	  NULL, NULL },
	{ "v=TLSRPTv1; =x; rua=mailto:a@x.example", TLSRPT_TXT_SYNTAX, 0, 0,
	  0, NULL, NULL },
	{ "v=TLSRPTv1; -x=y; rua=mailto:a@x.example", TLSRPT_TXT_SYNTAX, 0, 0,
	  0, NULL, NULL },
	{ "v=TLSRPTv1; x=a=b", TLSRPT_TXT_SYNTAX, 0, 0, 0, NULL, NULL },
	{ "v=TLSRPTv1 rua=mailto:a@x.example", TLSRPT_TXT_NOT_TLSRPT, 0, 0, 0,
	  NULL, NULL },
	{ "v=tlsrptv1; rua=mailto:a@x.example", TLSRPT_TXT_NOT_TLSRPT, 0, 0, 0,
	  NULL, NULL },
	{ "v=TLSRPTv10; rua=mailto:a@x.example", TLSRPT_TXT_NOT_TLSRPT, 0, 0,
	  0, NULL, NULL },
	{ "v=spf1 -all", TLSRPT_TXT_NOT_TLSRPT, 0, 0, 0, NULL, NULL },
	{ "", TLSRPT_TXT_NOT_TLSRPT, 0, 0, 0, NULL, NULL },
};

static void
test_txt_parse(void **state)
{
	(void)state;
	for (size_t i = 0; i < sizeof(txt_cases) / sizeof(txt_cases[0]); i++) {
		const struct txt_case *c = &txt_cases[i];
		struct tlsrpt_txt t;
		enum tlsrpt_txt_status st;

		st = tlsrpt_txt_parse(c->in, strlen(c->in), &t);
		if (st != c->st)
			fail_msg("case %zu \"%s\": status %d, want %d", i, c->in,
			    (int)st, (int)c->st);
		if (st != TLSRPT_TXT_OK)
			continue;
		assert_int_equal(t.nrua, c->nrua);
		assert_int_equal(t.nhttps, c->nhttps);
		assert_int_equal(t.nother, c->nother);
		if (c->rua0 != NULL)
			assert_string_equal(t.rua[0], c->rua0);
		if (c->rua1 != NULL)
			assert_string_equal(t.rua[1], c->rua1);
	}
}

/* More than TLSRPT_RUA_MAX addresses: the first ones are kept. */
static void
test_txt_rua_max(void **state)
{
	char rec[2048] = "v=TLSRPTv1; rua=";
	struct tlsrpt_txt t;

	(void)state;
	for (int i = 0; i < TLSRPT_RUA_MAX + 3; i++)
		snprintf(rec + strlen(rec), sizeof(rec) - strlen(rec),
		    "%smailto:r%d@x.example", i ? "," : "", i);
	assert_int_equal(tlsrpt_txt_parse(rec, strlen(rec), &t),
	    TLSRPT_TXT_OK);
	assert_int_equal(t.nrua, TLSRPT_RUA_MAX);
	assert_int_equal(t.nother, 3);
	assert_string_equal(t.rua[TLSRPT_RUA_MAX - 1], "r7@x.example");
}

static void
w_head(struct wire *w, unsigned ancount)
{
	w->n = 0;
	w_u16(w, 0x1234);
	w_u16(w, 0x8180);
	w_u16(w, 1);
	w_u16(w, ancount);
	w_u16(w, 0);
	w_u16(w, 0);
	w_name(w, "_smtp._tls.x.example");
	w_u16(w, 16);
	w_u16(w, 1);
}

/* A TXT record of the character-strings in strs (NULL-terminated). */
static void
w_txt(struct wire *w, const char *const *strs)
{
	size_t at;

	w_name(w, "_smtp._tls.x.example");
	w_u16(w, 16);
	w_u16(w, 1);
	w_u32(w, 300);
	at = w->n;
	w_u16(w, 0);
	for (; *strs != NULL; strs++) {
		w_u8(w, (unsigned)strlen(*strs));
		for (const char *p = *strs; *p != '\0'; p++)
			w_u8(w, (unsigned char)*p);
	}
	w->b[at] = (unsigned char)((w->n - at - 2) >> 8);
	w->b[at + 1] = (unsigned char)(w->n - at - 2);
}

/* The records of a wire answer as the resolver gives them; then ours. */
static enum tlsrpt_txt_status
txt_records(const struct wire *w, size_t len, struct tlsrpt_txt *t)
{
	struct txt_result res;
	enum tlsrpt_txt_status st;

	memset(&res, 0, sizeof(res));
	if (txt_from_reply(ARES_SUCCESS, w->b, len, "_smtp._tls.x.example",
	    &res) != RESOLVER_OK) {
		memset(t, 0, sizeof(*t));
		st = TLSRPT_TXT_NOT_TLSRPT;     /* as the sender treats it */
	} else
		st = tlsrpt_txt_from_records(res.txt, res.txt_len, res.n, t);
	for (size_t i = 0; i < res.n; i++)
		free(res.txt[i]);
	return st;
}

static void
test_txt_from_records(void **state)
{
	static const char *const split[] = { "v=TLSRPTv1; rua=mai",
	    "lto:a@x.example", NULL };
	static const char *const spf[] = { "v=spf1 -all", NULL };
	static const char *const other[] = {
	    "v=TLSRPTv1; rua=mailto:b@x.example", NULL };
	struct wire w;
	struct tlsrpt_txt t;
	char *big = malloc(4096);
	char *recs[1] = { big };
	size_t lens[1] = { 4096 };

	(void)state;
	/* one record in two character-strings, beside a non-TLSRPT one */
	w_head(&w, 2);
	w_txt(&w, spf);
	w_txt(&w, split);
	assert_int_equal(txt_records(&w, w.n, &t), TLSRPT_TXT_OK);
	assert_int_equal(t.nrua, 1);
	assert_string_equal(t.rua[0], "a@x.example");

	/* two TLSRPT records: none is used (RFC 8460 3) */
	w_head(&w, 2);
	w_txt(&w, split);
	w_txt(&w, other);
	assert_int_equal(txt_records(&w, w.n, &t), TLSRPT_TXT_NOT_TLSRPT);

	/* none at all, an empty answer, garbage */
	w_head(&w, 1);
	w_txt(&w, spf);
	assert_int_equal(txt_records(&w, w.n, &t), TLSRPT_TXT_NOT_TLSRPT);
	w_head(&w, 0);
	assert_int_equal(txt_records(&w, w.n, &t), TLSRPT_TXT_NOT_TLSRPT);
	assert_int_equal(txt_records(&w, 5, &t), TLSRPT_TXT_NOT_TLSRPT);
	assert_int_equal(tlsrpt_txt_from_records(NULL, NULL, 0, &t),
	    TLSRPT_TXT_NOT_TLSRPT);

	/* a record as long as the resolver keeps may have been cut */
	assert_non_null(big);
	memset(big, 'x', 4096);
	memcpy(big, "v=TLSRPTv1; rua=mailto:c@x.example; ", 36);
	assert_int_equal(tlsrpt_txt_from_records(recs, lens, 1, &t),
	    TLSRPT_TXT_SYNTAX);
	lens[0] = 35;                   /* without the trailing "; " */
	assert_int_equal(tlsrpt_txt_from_records(recs, lens, 1, &t),
	    TLSRPT_TXT_OK);
	assert_string_equal(t.rua[0], "c@x.example");
	free(big);
}

/* ------------------------------------------------------------------ */
/* the report */

static struct tlsrpt_agg *
agg_sample(void)
{
	struct tlsrpt_agg *a = xcalloc(1, sizeof(*a));
	struct tlsrpt_event ev = { .policy_domain = "x.example",
	    .mx_host = "mx1.x.example", .receiving_ip = "192.0.2.1",
	    .sending_ip = "198.51.100.7" };

	a->start = 86400;
	a->end = 2 * 86400;
	a->policy = TLSRPT_POLICY_STS;
	a->domain = xstrdup("x.example");
	a->policy_string = xstrdup("version: STSv1\nmode: enforce\n"
	    "mx: *.x.example\nmax_age: 86400");
	ev.result = TLSRPT_SUCCESS;
	tlsrpt_agg_add(a, &ev);
	tlsrpt_agg_add(a, &ev);
	ev.result = TLSRPT_CERT_EXPIRED;
	tlsrpt_agg_add(a, &ev);
	ev.mx_host = "mx2.x.example";
	ev.receiving_ip = NULL;
	ev.result = TLSRPT_STARTTLS_NOT_SUPPORTED;
	tlsrpt_agg_add(a, &ev);
	tlsrpt_agg_add(a, &ev);
	return a;
}

static const struct tlsrpt_report_info sample_info = {
	.org = "Company-X", .contact = "tls@x.example", .report_id = "r1",
	.hostname = "mta.x.example", .from = "tls@x.example",
	.domain = "x.example", .start = 86400, .end = 2 * 86400,
	.now = 2 * 86400 + 60, .rnd = 0x1234,
};

static const char sample_json[] =
    "{\"organization-name\":\"Company-X\","
    "\"date-range\":{\"start-datetime\":\"1970-01-02T00:00:00Z\","
    "\"end-datetime\":\"1970-01-02T23:59:59Z\"},"
    "\"contact-info\":\"tls@x.example\",\"report-id\":\"r1\","
    "\"policies\":[{\"policy\":{\"policy-type\":\"sts\","
    "\"policy-string\":[\"version: STSv1\",\"mode: enforce\","
    "\"mx: *.x.example\",\"max_age: 86400\"],"
    "\"policy-domain\":\"x.example\","
    "\"mx-host\":[\"mx1.x.example\",\"mx2.x.example\"]},"
    "\"summary\":{\"total-successful-session-count\":2,"
    "\"total-failure-session-count\":3},"
    "\"failure-details\":[{\"result-type\":\"certificate-expired\","
    "\"sending-mta-ip\":\"198.51.100.7\","
    "\"receiving-mx-hostname\":\"mx1.x.example\","
    "\"receiving-ip\":\"192.0.2.1\",\"failed-session-count\":1},"
    "{\"result-type\":\"starttls-not-supported\","
    "\"sending-mta-ip\":\"198.51.100.7\","
    "\"receiving-mx-hostname\":\"mx2.x.example\","
    "\"failed-session-count\":2}]}]}";

static void
test_json(void **state)
{
	struct tlsrpt_agg *a = agg_sample();
	char *json;
	size_t len;

	(void)state;
	assert_int_equal(tlsrpt_json_build(&sample_info, a, &json, &len), 0);
	assert_string_equal(json, sample_json);
	assert_int_equal(len, strlen(sample_json));
	free(json);
	tlsrpt_agg_free_list(a);
}

static void
test_gzip(void **state)
{
	unsigned char *gz, back[sizeof(sample_json)];
	size_t gzlen;
	uLongf n = sizeof(back);
	z_stream z;

	(void)state;
	assert_int_equal(tlsrpt_gzip(sample_json, strlen(sample_json), &gz,
	    &gzlen), 0);
	assert_true(gzlen > 18 && gz[0] == 0x1f && gz[1] == 0x8b);
	memset(&z, 0, sizeof(z));
	assert_int_equal(inflateInit2(&z, 15 + 16), Z_OK);
	z.next_in = gz;
	z.avail_in = (uInt)gzlen;
	z.next_out = back;
	z.avail_out = (uInt)n;
	assert_int_equal(inflate(&z, Z_FINISH), Z_STREAM_END);
	assert_int_equal(z.total_out, strlen(sample_json));
	assert_memory_equal(back, sample_json, strlen(sample_json));
	inflateEnd(&z);
	free(gz);
}

static void
test_mail(void **state)
{
	static const char rua[2][TLSRPT_ADDR_MAX] = { "a@r.example",
	    "b@r.example" };
	char *mail;
	size_t len;

	(void)state;
	assert_int_equal(tlsrpt_mail_build(&sample_info, rua, 2, sample_json,
	    strlen(sample_json), &mail, &len), 0);
	assert_int_equal(strlen(mail), len);
	assert_non_null(strstr(mail, "From: <tls@x.example>\r\n"));
	assert_non_null(strstr(mail, "Date: Sat, 03 Jan 1970 00:01:00 +0000\r\n"));
	assert_non_null(strstr(mail, "Subject: Report Domain: x.example "
	    "Submitter: Company-X Report-ID: <r1>\r\n"));
	assert_non_null(strstr(mail, "To: <a@r.example>,\r\n <b@r.example>\r\n"));
	assert_non_null(strstr(mail, "TLS-Report-Domain: x.example\r\n"));
	assert_non_null(strstr(mail, "TLS-Report-Submission: Company-X\r\n"));
	assert_non_null(strstr(mail, "Content-Type: multipart/report; "
	    "report-type=\"tlsrpt\";\r\n boundary=\"=_tlsrpt_0000000000001234\""));
	assert_non_null(strstr(mail, "Content-Type: application/tlsrpt+gzip"));
	assert_non_null(strstr(mail, "filename=\"Company-X!x.example!86400!"
	    "172799.json.gz\""));
	assert_non_null(strstr(mail, "\r\n--=_tlsrpt_0000000000001234--\r\n"));
	for (size_t i = 0; i < len; i++)
		if (mail[i] == '\n')
			assert_true(i > 0 && mail[i - 1] == '\r');
	free(mail);
}

/* ------------------------------------------------------------------ */
/* the aggregate */

static size_t
list_len(const struct tlsrpt_agg *a)
{
	size_t n = 0;

	for (; a != NULL; a = a->next)
		n++;
	return n;
}

static const struct tlsrpt_agg *
list_find(const struct tlsrpt_agg *a, const char *domain)
{
	for (; a != NULL; a = a->next)
		if (strcmp(a->domain, domain) == 0)
			return a;
	return NULL;
}

static void
record(const char *domain, enum tlsrpt_result r, const char *mx)
{
	struct tlsrpt_event ev = { .policy_domain = domain, .result = r,
	    .mx_host = mx, .receiving_ip = "192.0.2.9" };
	tlsrpt_record(&ev);
}

static void
test_aggregate(void **state)
{
	struct tlsrpt_agg *due;
	const struct tlsrpt_agg *a;
	int64_t far = now_unix() + 3 * 86400;

	(void)state;
	tlsrpt_reset();
	tlsrpt_configure(0, 86400);
	record("off.example", TLSRPT_SUCCESS, "mx.off.example");
	assert_false(tlsrpt_dirty());
	assert_null(tlsrpt_take_due(far));

	tlsrpt_configure(1, 86400);
	record("A.example", TLSRPT_SUCCESS, "mx.a.example");
	record("a.example", TLSRPT_SUCCESS, "MX.A.example");
	record("a.example", TLSRPT_CERT_NOT_TRUSTED, "mx.a.example");
	record("b.example", TLSRPT_STARTTLS_NOT_SUPPORTED, "mx.b.example");
	record("", TLSRPT_SUCCESS, NULL);
	assert_true(tlsrpt_dirty());
	assert_null(tlsrpt_take_due(now_unix()));   /* today is not over */

	due = tlsrpt_take_due(far);
	assert_int_equal(list_len(due), 2);
	a = list_find(due, "a.example");
	assert_non_null(a);
	assert_int_equal(a->ok, 2);
	assert_int_equal(a->failed, 1);
	assert_int_equal(a->nmx, 1);                /* names compare caseless */
	assert_int_equal(a->ndetails, 1);
	assert_int_equal(a->details[0].result, TLSRPT_CERT_NOT_TRUSTED);
	assert_int_equal(a->end - a->start, 86400);
	assert_int_equal(a->start % 86400, 0);
	assert_int_equal(a->policy, TLSRPT_POLICY_NONE);
	assert_null(a->policy_string);
	assert_null(tlsrpt_take_due(far));

	/* back, merged with what came meanwhile */
	record("a.example", TLSRPT_SUCCESS, "mx.a.example");
	tlsrpt_put_back(due);
	due = tlsrpt_take_due(far);
	assert_int_equal(list_len(due), 2);
	a = list_find(due, "a.example");
	assert_int_equal(a->ok, 3);
	assert_int_equal(a->failed, 1);
	tlsrpt_agg_free_list(due);
	tlsrpt_configure(0, 86400);
}

static void
test_save_load(void **state)
{
	const char *dir = getenv("TERN_TEST_TMPDIR");
	char path[1024], bad[1100];
	struct tlsrpt_agg *due;
	const struct tlsrpt_agg *a;
	int64_t far = now_unix() + 3 * 86400;
	FILE *f;

	(void)state;
	snprintf(path, sizeof(path), "%s/test_tlsrpt.%d.state",
	    dir != NULL ? dir : "/tmp", (int)getpid());
	snprintf(bad, sizeof(bad), "%s.bad", path);
	unlink(path);
	unlink(bad);
	assert_int_equal(tlsrpt_load(path), 0);     /* missing: fine */
	tlsrpt_reset();
	tlsrpt_configure(1, 86400);
	record("a.example", TLSRPT_SUCCESS, "mx.a.example");
	record("a.example", TLSRPT_CERT_EXPIRED, "mx\"q.a.example");
	record("b.example", TLSRPT_VALIDATION_FAILURE, NULL);
	tlsrpt_configure(0, 86400);
	assert_int_equal(tlsrpt_save(path), 0);
	assert_false(tlsrpt_dirty());
	tlsrpt_reset();
	assert_int_equal(tlsrpt_load(path), 0);
	due = tlsrpt_take_due(far);
	assert_int_equal(list_len(due), 2);
	a = list_find(due, "a.example");
	assert_int_equal(a->ok, 1);
	assert_int_equal(a->failed, 1);
	assert_int_equal(a->ndetails, 1);
	assert_string_equal(a->details[0].mx, "mx\"q.a.example");
	assert_string_equal(a->details[0].ip, "192.0.2.9");
	assert_int_equal(a->details[0].result, TLSRPT_CERT_EXPIRED);
	a = list_find(due, "b.example");
	assert_int_equal(a->failed, 1);
	assert_null(a->details[0].mx);
	tlsrpt_agg_free_list(due);

	/* a damaged file is set aside, not fatal */
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("{\"version\":1,\"entries\":[{", f);
	fclose(f);
	assert_int_equal(tlsrpt_load(path), -1);
	assert_int_equal(access(path, F_OK), -1);
	assert_int_equal(access(bad, F_OK), 0);
	unlink(bad);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_txt_parse),
		cmocka_unit_test(test_txt_rua_max),
		cmocka_unit_test(test_txt_from_records),
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_gzip),
		cmocka_unit_test(test_mail),
		cmocka_unit_test(test_aggregate),
		cmocka_unit_test(test_save_load),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
