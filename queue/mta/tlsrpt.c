/*
 * tlsrpt.c - the delivery client's TLS outcomes in RFC 8460 terms (see
 * tern/tlsrpt.h): one log line at debug level per outcome and, while
 * reporting is on (tlsrpt on), the aggregate the daily report is built
 * from (tlsrpt_send.c sends it).
 *
 * Threads: tlsrpt_record() runs on the delivery workers; take, put back,
 * save and load on the reporter's thread. One mutex guards the table; no
 * I/O and no logging happen under it (save copies the table to a buffer
 * first).
 *
 * Owns: the table, a hash of entries keyed by period, policy domain, policy
 * type and policy string (RFC 8460 4.4: one "policies" element each). Bounded
 * by TLSRPT_POLICIES_MAX entries, TLSRPT_DETAILS_MAX failure details and
 * TLSRPT_MX_MAX mx-host names per entry; what does not fit is still counted
 * in the totals (details) or dropped with one warning per power of two
 * (whole entries).
 *
 * Persistence: tlsrpt_save() writes the table as JSON to a file under the
 * queue directory, replaced atomically (tmp file, fsync, rename, fsync of
 * the directory); tlsrpt_load() merges it back at start. The file is ours
 * but still parsed defensively (the JSON parser, bounded size); a file that
 * does not parse is renamed *.bad and logged, never fatal.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tern/json.h"
#include "tern/log.h"
#include "tern/tlsrpt.h"
#include "tern/util.h"

#define TLSRPT_BUCKETS      1024u
#define TLSRPT_FILE_MAX     (64u << 20)

static const char *const result_names[] = {
	[TLSRPT_SUCCESS] = "success",
	[TLSRPT_STARTTLS_NOT_SUPPORTED] = "starttls-not-supported",
	[TLSRPT_CERT_HOST_MISMATCH] = "certificate-host-mismatch",
	[TLSRPT_CERT_EXPIRED] = "certificate-expired",
	[TLSRPT_CERT_NOT_TRUSTED] = "certificate-not-trusted",
	[TLSRPT_VALIDATION_FAILURE] = "validation-failure",
	[TLSRPT_TLSA_INVALID] = "tlsa-invalid",
	[TLSRPT_DNSSEC_INVALID] = "dnssec-invalid",
	[TLSRPT_DANE_REQUIRED] = "dane-required",
	[TLSRPT_STS_POLICY_FETCH_ERROR] = "sts-policy-fetch-error",
	[TLSRPT_STS_POLICY_INVALID] = "sts-policy-invalid",
	[TLSRPT_STS_WEBPKI_INVALID] = "sts-webpki-invalid",
};
#define TLSRPT_NRESULTS (sizeof(result_names) / sizeof(result_names[0]))

static struct {
	pthread_mutex_t mu;
	struct tlsrpt_agg *tab[TLSRPT_BUCKETS];
	size_t n;
	uint64_t dropped;
	int dirty;
	int on;                     /* atomic */
	unsigned interval;          /* atomic */
} tlsrpt_g = { .mu = PTHREAD_MUTEX_INITIALIZER, .interval = 86400 };

const char *
tlsrpt_result_name(enum tlsrpt_result r)
{
	if ((unsigned)r >= TLSRPT_NRESULTS)
		return "validation-failure";
	return result_names[r];
}

const char *
tlsrpt_policy_name(enum tlsrpt_policy p)
{
	switch (p) {
	case TLSRPT_POLICY_STS:
		return "sts";
	case TLSRPT_POLICY_TLSA:
		return "tlsa";
	default:
		return "no-policy-found";
	}
}

void
tlsrpt_configure(int on, unsigned interval)
{
	__atomic_store_n(&tlsrpt_g.interval, interval > 0 ? interval : 86400,
	    __ATOMIC_RELAXED);
	__atomic_store_n(&tlsrpt_g.on, on, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------------ */
/* entries */

static int
tlsrpt_streq(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static char *
tlsrpt_dup(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

static void
tlsrpt_agg_free(struct tlsrpt_agg *a)
{
	free(a->domain);
	free(a->policy_string);
	for (size_t i = 0; i < a->nmx; i++)
		free(a->mx[i]);
	for (size_t i = 0; i < a->ndetails; i++) {
		free(a->details[i].mx);
		free(a->details[i].ip);
		free(a->details[i].sip);
	}
	free(a->details);
	free(a);
}

void
tlsrpt_agg_free_list(struct tlsrpt_agg *list)
{
	while (list != NULL) {
		struct tlsrpt_agg *n = list->next;
		tlsrpt_agg_free(list);
		list = n;
	}
}

static void
tlsrpt_agg_mx(struct tlsrpt_agg *a, const char *mx)
{
	if (mx == NULL || mx[0] == '\0')
		return;
	for (size_t i = 0; i < a->nmx; i++)
		if (strcasecmp(a->mx[i], mx) == 0)
			return;
	if (a->nmx < TLSRPT_MX_MAX)
		a->mx[a->nmx++] = xstrdup(mx);
}

static void
tlsrpt_agg_detail(struct tlsrpt_agg *a, enum tlsrpt_result r,
    const char *mx, const char *ip, const char *sip, uint64_t count)
{
	struct tlsrpt_detail *d;

	for (size_t i = 0; i < a->ndetails; i++) {
		d = &a->details[i];
		if (d->result == r && tlsrpt_streq(d->mx, mx) &&
		    tlsrpt_streq(d->ip, ip) && tlsrpt_streq(d->sip, sip)) {
			d->count += count;
			return;
		}
	}
	if (a->ndetails >= TLSRPT_DETAILS_MAX)
		return;             /* the total still counts it */
	a->details = xreallocarray(a->details, a->ndetails + 1,
	    sizeof(*a->details));
	d = &a->details[a->ndetails++];
	d->result = r;
	d->mx = tlsrpt_dup(mx);
	d->ip = tlsrpt_dup(ip);
	d->sip = tlsrpt_dup(sip);
	d->count = count;
}

void
tlsrpt_agg_add(struct tlsrpt_agg *a, const struct tlsrpt_event *ev)
{
	tlsrpt_agg_mx(a, ev->mx_host);
	if (ev->result == TLSRPT_SUCCESS) {
		a->ok++;
		return;
	}
	a->failed++;
	tlsrpt_agg_detail(a, ev->result, ev->mx_host, ev->receiving_ip,
	    ev->sending_ip, 1);
}

static uint32_t
tlsrpt_hash(int64_t start, const char *domain)
{
	return fnv1a32(fnv1a32(FNV1A32_INIT, &start, sizeof(start)), domain,
	    strlen(domain)) % TLSRPT_BUCKETS;
}

/* The entry for a key, or NULL. Under the mutex. */
static struct tlsrpt_agg *
tlsrpt_find(int64_t start, enum tlsrpt_policy pol, const char *domain,
    const char *pstr)
{
	struct tlsrpt_agg *a = tlsrpt_g.tab[tlsrpt_hash(start, domain)];

	for (; a != NULL; a = a->next)
		if (a->start == start && a->policy == pol &&
		    strcmp(a->domain, domain) == 0 &&
		    tlsrpt_streq(a->policy_string, pstr))
			return a;
	return NULL;
}

/* Link a (owned) into the table. Under the mutex. */
static void
tlsrpt_insert(struct tlsrpt_agg *a)
{
	uint32_t h = tlsrpt_hash(a->start, a->domain);

	a->next = tlsrpt_g.tab[h];
	tlsrpt_g.tab[h] = a;
	tlsrpt_g.n++;
}

static struct tlsrpt_agg *
tlsrpt_agg_new(int64_t start, int64_t end, enum tlsrpt_policy pol,
    const char *domain, const char *pstr)
{
	struct tlsrpt_agg *a = xcalloc(1, sizeof(*a));

	a->start = start;
	a->end = end;
	a->policy = pol;
	a->domain = xstrdup(domain);
	for (char *p = a->domain; *p != '\0'; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	a->policy_string = tlsrpt_dup(pstr);
	return a;
}

void
tlsrpt_record(const struct tlsrpt_event *ev)
{
	unsigned interval = __atomic_load_n(&tlsrpt_g.interval,
	    __ATOMIC_RELAXED);
	struct tlsrpt_agg *a, *fresh;
	int64_t now, start;
	uint64_t dropped = 0;

	log_debug("tlsrpt: domain=%s policy=%s mx=%s ip=%s result=%s%s%s",
	    ev->policy_domain != NULL ? ev->policy_domain : "-",
	    tlsrpt_policy_name(ev->policy),
	    ev->mx_host != NULL ? ev->mx_host : "-",
	    ev->receiving_ip != NULL ? ev->receiving_ip : "-",
	    tlsrpt_result_name(ev->result),
	    ev->detail != NULL ? " detail=" : "",
	    ev->detail != NULL ? ev->detail : "");
	if (!__atomic_load_n(&tlsrpt_g.on, __ATOMIC_RELAXED) ||
	    ev->policy_domain == NULL || ev->policy_domain[0] == '\0')
		return;
	now = now_unix();
	start = now - now % interval;
	/* built outside the lock; dropped if an entry exists already */
	fresh = tlsrpt_agg_new(start, start + interval, ev->policy,
	    ev->policy_domain, ev->policy_string);
	pthread_mutex_lock(&tlsrpt_g.mu);
	a = tlsrpt_find(start, ev->policy, fresh->domain, ev->policy_string);
	if (a == NULL && tlsrpt_g.n < TLSRPT_POLICIES_MAX) {
		tlsrpt_insert(fresh);
		a = fresh;
		fresh = NULL;
	}
	if (a != NULL) {
		tlsrpt_agg_add(a, ev);
		tlsrpt_g.dirty = 1;
	} else {
		uint64_t n = ++tlsrpt_g.dropped;
		if ((n & (n - 1)) == 0)
			dropped = n;    /* one warning per power of two */
	}
	pthread_mutex_unlock(&tlsrpt_g.mu);
	if (fresh != NULL)
		tlsrpt_agg_free(fresh);
	if (dropped != 0)
		log_warnx("tlsrpt: %d policies kept already; %llu outcomes "
		    "not recorded", TLSRPT_POLICIES_MAX,
		    (unsigned long long)dropped);
}

struct tlsrpt_agg *
tlsrpt_take_due(int64_t now)
{
	struct tlsrpt_agg *out = NULL;

	pthread_mutex_lock(&tlsrpt_g.mu);
	for (size_t h = 0; h < TLSRPT_BUCKETS; h++) {
		struct tlsrpt_agg **ap = &tlsrpt_g.tab[h];

		while (*ap != NULL) {
			struct tlsrpt_agg *a = *ap;

			if (a->end > now) {
				ap = &a->next;
				continue;
			}
			*ap = a->next;
			tlsrpt_g.n--;
			a->next = out;
			out = a;
		}
	}
	if (out != NULL)
		tlsrpt_g.dirty = 1;
	pthread_mutex_unlock(&tlsrpt_g.mu);
	return out;
}

/* Merge b into the entry a of the same key; frees b. */
static void
tlsrpt_merge(struct tlsrpt_agg *a, struct tlsrpt_agg *b)
{
	a->ok += b->ok;
	a->failed += b->failed;
	for (size_t i = 0; i < b->nmx; i++)
		tlsrpt_agg_mx(a, b->mx[i]);
	for (size_t i = 0; i < b->ndetails; i++) {
		const struct tlsrpt_detail *d = &b->details[i];
		tlsrpt_agg_detail(a, d->result, d->mx, d->ip, d->sip,
		    d->count);
	}
	tlsrpt_agg_free(b);
}

void
tlsrpt_put_back(struct tlsrpt_agg *list)
{
	pthread_mutex_lock(&tlsrpt_g.mu);
	while (list != NULL) {
		struct tlsrpt_agg *b = list, *a;

		list = list->next;
		a = tlsrpt_find(b->start, b->policy, b->domain,
		    b->policy_string);
		if (a != NULL)
			tlsrpt_merge(a, b);
		else
			tlsrpt_insert(b);
	}
	tlsrpt_g.dirty = 1;
	pthread_mutex_unlock(&tlsrpt_g.mu);
}

int
tlsrpt_dirty(void)
{
	int d;

	pthread_mutex_lock(&tlsrpt_g.mu);
	d = tlsrpt_g.dirty;
	pthread_mutex_unlock(&tlsrpt_g.mu);
	return d;
}

void
tlsrpt_reset(void)
{
	pthread_mutex_lock(&tlsrpt_g.mu);
	for (size_t h = 0; h < TLSRPT_BUCKETS; h++) {
		tlsrpt_agg_free_list(tlsrpt_g.tab[h]);
		tlsrpt_g.tab[h] = NULL;
	}
	tlsrpt_g.n = 0;
	tlsrpt_g.dirty = 0;
	pthread_mutex_unlock(&tlsrpt_g.mu);
}

/* ------------------------------------------------------------------ */
/* persistence */

static void
tlsrpt_save_entry(struct json_writer *w, const struct tlsrpt_agg *a)
{
	json_obj_open(w);
	json_kv_int(w, "start", a->start);
	json_kv_int(w, "end", a->end);
	json_kv_str(w, "policy", tlsrpt_policy_name(a->policy));
	json_kv_str(w, "domain", a->domain);
	json_kv_str(w, "string", a->policy_string);
	json_kv_uint(w, "ok", a->ok);
	json_kv_uint(w, "failed", a->failed);
	json_key(w, "mx");
	json_arr_open(w);
	for (size_t i = 0; i < a->nmx; i++)
		json_put_str(w, a->mx[i]);
	json_arr_close(w);
	json_key(w, "details");
	json_arr_open(w);
	for (size_t i = 0; i < a->ndetails; i++) {
		const struct tlsrpt_detail *d = &a->details[i];
		json_obj_open(w);
		json_kv_str(w, "result", tlsrpt_result_name(d->result));
		json_kv_str(w, "mx", d->mx);
		json_kv_str(w, "ip", d->ip);
		json_kv_str(w, "sip", d->sip);
		json_kv_uint(w, "count", d->count);
		json_obj_close(w);
	}
	json_arr_close(w);
	json_obj_close(w);
}

int
tlsrpt_save(const char *path)
{
	struct json_writer w;
	char tmp[4096], *text;
	size_t len;
	int fd, rc;

	json_writer_init(&w);
	json_obj_open(&w);
	json_kv_int(&w, "version", 1);
	json_key(&w, "entries");
	json_arr_open(&w);
	pthread_mutex_lock(&tlsrpt_g.mu);
	for (size_t h = 0; h < TLSRPT_BUCKETS; h++)
		for (const struct tlsrpt_agg *a = tlsrpt_g.tab[h]; a != NULL;
		    a = a->next)
			tlsrpt_save_entry(&w, a);
	tlsrpt_g.dirty = 0;
	pthread_mutex_unlock(&tlsrpt_g.mu);
	json_arr_close(&w);
	json_obj_close(&w);
	if ((text = json_writer_finish(&w, &len)) == NULL) {
		errno = ENOMEM;
		goto fail;
	}
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
	    0600)) < 0) {
		free(text);
		goto fail;
	}
	rc = write_all(fd, text, len);
	free(text);
	if (rc < 0 || fsync(fd) < 0) {
		int e = errno;
		close(fd);
		unlink(tmp);
		errno = e;
		goto fail;
	}
	if (close(fd) < 0 || rename(tmp, path) < 0)
		goto fail;
	(void)fsync_dir(path);
	return 0;
fail:
	pthread_mutex_lock(&tlsrpt_g.mu);
	tlsrpt_g.dirty = 1;
	pthread_mutex_unlock(&tlsrpt_g.mu);
	return -1;
}

/* A string member of object obj, decoded into a new string, or NULL. */
static char *
tlsrpt_load_str(const char *p, const struct json_tok *t, size_t obj,
    const char *key)
{
	long i = json_obj_find(p, t, obj, key);
	size_t n;
	char *s;

	if (i < 0 || t[i].type != JSON_STRING)
		return NULL;
	n = t[i].end - t[i].start + 1;
	s = xmalloc(n);
	if (json_str_decode(p, &t[i], s, n) < 0 || strlen(s) == 0) {
		free(s);
		return NULL;
	}
	return s;
}

static int64_t
tlsrpt_load_int(const char *p, const struct json_tok *t, size_t obj,
    const char *key)
{
	long i = json_obj_find(p, t, obj, key);

	return i >= 0 && t[i].type == JSON_NUMBER && t[i].num >= 0 ?
	    t[i].num : -1;
}

static int
tlsrpt_load_result(const char *p, const struct json_tok *t, size_t obj,
    enum tlsrpt_result *r)
{
	long i = json_obj_find(p, t, obj, "result");

	if (i < 0 || t[i].type != JSON_STRING)
		return -1;
	for (size_t k = 1; k < TLSRPT_NRESULTS; k++)
		if (json_str_eq(p, &t[i], result_names[k])) {
			*r = (enum tlsrpt_result)k;
			return 0;
		}
	return -1;
}

/* One saved entry (toks[obj]) into a new aggregate, or NULL. */
static struct tlsrpt_agg *
tlsrpt_load_entry(const char *p, const struct json_tok *t, size_t obj)
{
	static const enum tlsrpt_policy pols[] = { TLSRPT_POLICY_NONE,
	    TLSRPT_POLICY_STS, TLSRPT_POLICY_TLSA };
	int64_t start = tlsrpt_load_int(p, t, obj, "start");
	int64_t end = tlsrpt_load_int(p, t, obj, "end");
	int64_t ok = tlsrpt_load_int(p, t, obj, "ok");
	int64_t failed = tlsrpt_load_int(p, t, obj, "failed");
	long pi = json_obj_find(p, t, obj, "policy");
	long mi = json_obj_find(p, t, obj, "mx");
	long di = json_obj_find(p, t, obj, "details");
	char *domain, *pstr;
	struct tlsrpt_agg *a;
	int pol = -1;

	if (t[obj].type != JSON_OBJECT || start < 0 || end <= start ||
	    ok < 0 || failed < 0 || pi < 0 || mi < 0 || di < 0 ||
	    t[mi].type != JSON_ARRAY || t[di].type != JSON_ARRAY)
		return NULL;
	for (size_t k = 0; k < 3; k++)
		if (json_str_eq(p, &t[pi], tlsrpt_policy_name(pols[k])))
			pol = (int)pols[k];
	if (pol < 0 || (domain = tlsrpt_load_str(p, t, obj, "domain")) == NULL)
		return NULL;
	pstr = tlsrpt_load_str(p, t, obj, "string");
	a = tlsrpt_agg_new(start, end, (enum tlsrpt_policy)pol, domain, pstr);
	free(domain);
	free(pstr);
	a->ok = (uint64_t)ok;
	a->failed = (uint64_t)failed;
	for (size_t i = (size_t)mi + 1, k = 0; k < t[mi].size; k++,
	    i = t[i].next) {
		char *s;
		if (t[i].type != JSON_STRING)
			continue;
		s = xmalloc(t[i].end - t[i].start + 1);
		if (json_str_decode(p, &t[i], s, t[i].end - t[i].start + 1) > 0)
			tlsrpt_agg_mx(a, s);
		free(s);
	}
	for (size_t i = (size_t)di + 1, k = 0; k < t[di].size; k++,
	    i = t[i].next) {
		enum tlsrpt_result r;
		int64_t count = tlsrpt_load_int(p, t, i, "count");
		char *mx, *ip, *sip;

		if (t[i].type != JSON_OBJECT || count <= 0 ||
		    tlsrpt_load_result(p, t, i, &r) != 0)
			continue;
		mx = tlsrpt_load_str(p, t, i, "mx");
		ip = tlsrpt_load_str(p, t, i, "ip");
		sip = tlsrpt_load_str(p, t, i, "sip");
		tlsrpt_agg_detail(a, r, mx, ip, sip, (uint64_t)count);
		free(mx);
		free(ip);
		free(sip);
	}
	return a;
}

/* Parse text into a list of entries; -1 if it is not a saved table. */
static int
tlsrpt_load_text(const char *p, size_t len, struct tlsrpt_agg **out)
{
	struct json_tok *t;
	size_t n = 0;
	long ei;

	*out = NULL;
	if (json_parse(p, len, NULL, 0, 8, &n) != JSON_OK || n == 0)
		return -1;
	t = xcalloc(n, sizeof(*t));
	if (json_parse(p, len, t, n, 8, &n) != JSON_OK ||
	    t[0].type != JSON_OBJECT ||
	    tlsrpt_load_int(p, t, 0, "version") != 1 ||
	    (ei = json_obj_find(p, t, 0, "entries")) < 0 ||
	    t[ei].type != JSON_ARRAY) {
		free(t);
		return -1;
	}
	for (size_t i = (size_t)ei + 1, k = 0; k < t[ei].size; k++,
	    i = t[i].next) {
		struct tlsrpt_agg *a = tlsrpt_load_entry(p, t, i);
		if (a != NULL) {
			a->next = *out;
			*out = a;
		}
	}
	free(t);
	return 0;
}

int
tlsrpt_load(const char *path)
{
	struct tlsrpt_agg *list;
	struct stat st;
	char *text, bad[4096];
	ssize_t r;
	int fd, rc;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return errno == ENOENT ? 0 : -1;
	if (fstat(fd, &st) < 0 || st.st_size > TLSRPT_FILE_MAX) {
		close(fd);
		errno = EFBIG;
		return -1;
	}
	text = xmalloc((size_t)st.st_size + 1);
	r = read(fd, text, (size_t)st.st_size);
	close(fd);
	rc = r == st.st_size ? tlsrpt_load_text(text, (size_t)r, &list) : -1;
	free(text);
	if (rc != 0) {
		snprintf(bad, sizeof(bad), "%s.bad", path);
		log_warnx("tlsrpt: %s does not parse; set aside as %s", path,
		    bad);
		(void)rename(path, bad);
		errno = EINVAL;
		return -1;
	}
	if (list != NULL)
		tlsrpt_put_back(list);
	return 0;
}
