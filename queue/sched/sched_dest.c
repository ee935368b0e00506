/*
 * sched_dest.c - the scheduler's destinations (sched_int.h): one queue of
 * waiting jobs per destination, a round-robin ring of the destinations that
 * may start a job now, the concurrency window of each (slow start and
 * feedback), dead-destination marks, the table of jobs in flight, and what
 * the operator sees of them (stats, /metrics).
 *
 * Runs on the scheduler's thread only (the core in sched.c calls it). Never
 * touches the envelope store. Lookups are hash tables (destinations by key,
 * jobs in flight by id), so the cost per job does not grow with the number
 * of destinations; only the periodic sweep and stats walk them all.
 *
 * The model is Postfix's queue manager: a destination starts at a small
 * concurrency and earns more by successful sessions; a failed session (no
 * connection, no greeting, 421, a timeout) costs one; after
 * dest-failure-cohort failures in a row with no success the destination is
 * down for dest-down-time (doubling while the probe keeps failing): its
 * messages are deferred without connecting, and when the period ends one
 * session probes it. Untrusted input: the reply texts kept as last errors
 * (escaped when logged; the JSON writer escapes them for stats).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tern/json.h"
#include "tern/log.h"
#include "tern/metrics.h"
#include "tern/util.h"
#include "sched_int.h"

/* ------------------------------------------------------------------ */
/* the concurrency window (pure) */

void
sched_window_init(struct sched_window *w, unsigned initial, unsigned max)
{
	if (initial == 0)
		initial = 1;
	w->limit = initial < max ? initial : max;
	if (w->limit == 0)
		w->limit = 1;
	w->credit = 0;
	w->nfail = 0;
}

enum sched_fb
sched_window_feedback(struct sched_window *w, enum dlv_peer p, unsigned max,
    unsigned cohort)
{
	if (max == 0)
		max = 1;
	switch (p) {
	case DLV_PEER_OK:
		w->nfail = 0;
		if (w->limit > max) {
			w->limit = max;
			return SCHED_FB_DOWNSIZE;
		}
		if (w->limit == max)
			return SCHED_FB_NONE;
		if (++w->credit < w->limit)
			return SCHED_FB_NONE;
		w->credit = 0;
		w->limit++;
		return SCHED_FB_UP;
	case DLV_PEER_FAIL:
		w->credit = 0;
		w->nfail++;
		if (cohort > 0 && w->nfail >= cohort)
			return SCHED_FB_DEAD;
		if (w->limit > 1) {
			w->limit--;
			return SCHED_FB_DOWNSIZE;
		}
		return SCHED_FB_NONE;
	default:
		return SCHED_FB_NONE;
	}
}

unsigned
sched_down_period(unsigned base, unsigned ndown)
{
	uint64_t d = base ? base : 1;

	for (unsigned i = 1; i < ndown && i < 4; i++)
		d *= 2;
	return d > UINT32_MAX ? UINT32_MAX : (unsigned)d;
}

/* ------------------------------------------------------------------ */
/* the table */

static uint64_t
sched_str_hash(const char *k)
{
	uint64_t h = 1469598103934665603ull;       /* FNV-1a */

	for (; *k != '\0'; k++) {
		h ^= (unsigned char)*k;
		h *= 1099511628211ull;
	}
	return h;
}

void
sched_dest_init(struct sched *s)
{
	s->dtabsz = 256;
	s->dtab = xcalloc(s->dtabsz, sizeof(*s->dtab));
	TAILQ_INIT(&s->dests);
	TAILQ_INIT(&s->ready);
	s->ftabsz = 256;
	s->ftab = xcalloc(s->ftabsz, sizeof(*s->ftab));
}

static void
sched_dest_rehash(struct sched *s)
{
	struct sched_dest *d;

	free(s->dtab);
	s->dtabsz *= 2;
	s->dtab = xcalloc(s->dtabsz, sizeof(*s->dtab));
	TAILQ_FOREACH(d, &s->dests, all) {
		size_t h = sched_str_hash(d->key) & (s->dtabsz - 1);
		d->hnext = s->dtab[h];
		s->dtab[h] = d;
	}
}

static unsigned
sched_dest_max(const struct sched *s, const struct sched_dest *d)
{
	unsigned n = conf_dest_limit_for(s->conf, d->name);
	return n ? n : 1;
}

struct sched_dest *
sched_dest_get(struct sched *s, const char *key, const char *name,
    int64_t now)
{
	size_t h = sched_str_hash(key) & (s->dtabsz - 1);
	struct sched_dest *d;

	for (d = s->dtab[h]; d != NULL; d = d->hnext)
		if (strcmp(d->key, key) == 0)
			return d;
	if (s->ndest >= s->dtabsz) {
		sched_dest_rehash(s);
		h = sched_str_hash(key) & (s->dtabsz - 1);
	}
	d = xcalloc(1, sizeof(*d));
	d->key = xstrdup(key);
	d->name = xstrdup(name);
	TAILQ_INIT(&d->wait);
	d->max = sched_dest_max(s, d);
	sched_window_init(&d->win, s->conf->dest_initial_connections, d->max);
	d->last_used = now;
	d->hnext = s->dtab[h];
	s->dtab[h] = d;
	TAILQ_INSERT_TAIL(&s->dests, d, all);
	s->ndest++;
	return d;
}

static void
sched_dest_forget(struct sched *s, struct sched_dest *d)
{
	struct sched_dest **pp = &s->dtab[sched_str_hash(d->key) &
	    (s->dtabsz - 1)];

	while (*pp != NULL && *pp != d)
		pp = &(*pp)->hnext;
	if (*pp == d)
		*pp = d->hnext;
	if (d->in_ready)
		TAILQ_REMOVE(&s->ready, d, ready);
	TAILQ_REMOVE(&s->dests, d, all);
	s->ndest--;
	free(d->key);
	free(d->name);
	free(d);
}

void
sched_dest_free_all(struct sched *s)
{
	struct sched_dest *d;

	while ((d = TAILQ_FIRST(&s->dests)) != NULL) {
		struct sched_wait *w;
		while ((w = TAILQ_FIRST(&d->wait)) != NULL) {
			TAILQ_REMOVE(&d->wait, w, link);
			sched_wait_free(w);
		}
		sched_dest_forget(s, d);
	}
	free(s->dtab);
	s->dtab = NULL;
	for (size_t i = 0; i < s->ftabsz; i++) {
		struct sched_flight *f, *fn;
		for (f = s->ftab[i]; f != NULL; f = fn) {
			fn = f->hnext;
			free(f);
		}
	}
	free(s->ftab);
	s->ftab = NULL;
}

char *
sched_dest_key(const struct conf_route *r, const char *domain,
    const char **name)
{
	size_t n;
	char *k;

	if (r->kind == CONF_ROUTE_MX || r->host == NULL) {
		n = strlen(domain) + 4;
		k = xmalloc(n);
		snprintf(k, n, "mx:%s", domain);
		*name = k + 3;
	} else {
		n = strlen(r->host) + 48;
		k = xmalloc(n);
		snprintf(k, n, "%s:%s:%u:%d", r->transport != CONF_XPORT_SMTP ?
		    "lmtp" : r->kind == CONF_ROUTE_HOST ? "smtp" : "smtp-mx",
		    r->host, (unsigned)r->port, (int)r->tls);
		*name = r->host;
	}
	for (char *p = k; *p != '\0'; p++)
		if (*p >= 'A' && *p <= 'Z')
			*p = (char)(*p - 'A' + 'a');
	return k;
}

/* ------------------------------------------------------------------ */
/* the ring and the marks */

static int
sched_dest_can(const struct sched_dest *d)
{
	unsigned lim;

	if (d->nwait == 0 || d->state == SCHED_D_DOWN)
		return 0;
	lim = d->state == SCHED_D_PROBE ? 1 : d->win.limit;
	return d->active < lim;
}

void
sched_dest_kick(struct sched *s, struct sched_dest *d)
{
	if (!d->in_ready && sched_dest_can(d)) {
		TAILQ_INSERT_TAIL(&s->ready, d, ready);
		d->in_ready = 1;
	}
}

struct sched_dest *
sched_dest_next(struct sched *s)
{
	struct sched_dest *d;

	while ((d = TAILQ_FIRST(&s->ready)) != NULL) {
		TAILQ_REMOVE(&s->ready, d, ready);
		d->in_ready = 0;
		if (sched_dest_can(d))
			return d;
	}
	return NULL;
}

static void
sched_dest_up(struct sched *s, struct sched_dest *d, const char *why)
{
	log_info("dest=%s up (%s) skipped=%llu", d->key, why,
	    (unsigned long long)d->nskipped);
	d->state = SCHED_D_UP;
	d->ndown = 0;
	d->nskipped = 0;
	d->down_until = 0;
	sched_window_init(&d->win, s->conf->dest_initial_connections, d->max);
	sched_dest_kick(s, d);
}

int
sched_dest_down(struct sched *s, struct sched_dest *d, int64_t now)
{
	d->last_used = now;
	if (d->state != SCHED_D_DOWN)
		return 0;
	if (now < d->down_until)
		return 1;
	d->state = SCHED_D_PROBE;
	log_info("dest=%s probing after %llu deferred without connecting",
	    d->key, (unsigned long long)d->nskipped);
	return 0;
}

static void
sched_dest_mark_down(struct sched *s, struct sched_dest *d, int64_t now)
{
	unsigned period = sched_down_period(s->conf->dest_down_time,
	    ++d->ndown);
	char esc[400];

	d->state = SCHED_D_DOWN;
	d->down_until = now + period;
	log_escape(esc, sizeof(esc), d->last_error, strlen(d->last_error));
	log_warnx("dest=%s down for %us after %u failed sessions: deferring "
	    "its %u waiting jobs without connecting; last_error=\"%s\"",
	    d->key, period, d->win.nfail, d->nwait, esc);
}

enum sched_fb
sched_dest_feedback(struct sched *s, struct sched_dest *d,
    const struct dlv_result *r, int64_t now)
{
	enum sched_fb fb;

	d->last_used = now;
	if (r->peer == DLV_PEER_FAIL && r->n > 0) {
		snprintf(d->last_status, sizeof(d->last_status), "%s",
		    r->r[0].status[0] ? r->r[0].status : "4.4.1");
		snprintf(d->last_error, sizeof(d->last_error), "%s",
		    r->r[0].reply ? r->r[0].reply : "connection failed");
	}
	switch (d->state) {
	case SCHED_D_DOWN:
		return SCHED_FB_NONE;   /* a job out before the mark */
	case SCHED_D_PROBE:
		if (r->peer == DLV_PEER_OK) {
			sched_dest_up(s, d, "probe succeeded");
			return SCHED_FB_UP;
		}
		if (r->peer == DLV_PEER_FAIL) {
			d->win.nfail++;
			sched_dest_mark_down(s, d, now);
			return SCHED_FB_DEAD;
		}
		sched_dest_kick(s, d);  /* no verdict: probe with the next */
		return SCHED_FB_NONE;
	case SCHED_D_UP:
		break;
	}
	fb = sched_window_feedback(&d->win, r->peer, d->max,
	    s->conf->dest_failure_cohort);
	if (fb == SCHED_FB_DEAD)
		sched_dest_mark_down(s, d, now);
	else if (fb == SCHED_FB_UP || r->peer == DLV_PEER_OK)
		d->ndown = 0;
	return fb;
}

static void
sched_dest_lift_one(struct sched *s, struct sched_dest *d)
{
	if (d->state != SCHED_D_UP)
		sched_dest_up(s, d, "by operator");
	d->win.nfail = 0;
}

void
sched_dest_lift(struct sched *s, const char *domain, int64_t now)
{
	struct sched_dest *d;

	if (domain == NULL) {
		TAILQ_FOREACH(d, &s->dests, all)
			sched_dest_lift_one(s, d);
		return;
	}
	const struct conf_route *r = conf_route_for(s->conf, domain,
	    strlen(domain));
	const char *name;
	char *key = sched_dest_key(r, domain, &name);
	size_t h = sched_str_hash(key) & (s->dtabsz - 1);

	for (d = s->dtab[h]; d != NULL; d = d->hnext)
		if (strcmp(d->key, key) == 0)
			sched_dest_lift_one(s, d);
	free(key);
	(void)now;
}

void
sched_dest_conf(struct sched *s)
{
	struct sched_dest *d;

	TAILQ_FOREACH(d, &s->dests, all) {
		d->max = sched_dest_max(s, d);
		if (d->win.limit > d->max)
			d->win.limit = d->max;
		sched_dest_kick(s, d);
	}
}

/* ------------------------------------------------------------------ */
/* jobs in flight */

static size_t
sched_flight_hash(const struct sched *s, uint64_t id)
{
	id ^= id >> 29;
	id *= 0xbf58476d1ce4e5b9ull;
	return (size_t)(id >> 32) & (s->ftabsz - 1);
}

void
sched_flight_add(struct sched *s, uint64_t jobid, uint64_t qid,
    struct sched_dest *d)
{
	struct sched_flight *f = xcalloc(1, sizeof(*f));
	size_t h;

	if (s->nfl >= s->ftabsz) {
		struct sched_flight **old = s->ftab;
		size_t oldsz = s->ftabsz;
		s->ftabsz *= 2;
		s->ftab = xcalloc(s->ftabsz, sizeof(*s->ftab));
		for (size_t i = 0; i < oldsz; i++) {
			struct sched_flight *x, *xn;
			for (x = old[i]; x != NULL; x = xn) {
				xn = x->hnext;
				h = sched_flight_hash(s, x->jobid);
				x->hnext = s->ftab[h];
				s->ftab[h] = x;
			}
		}
		free(old);
	}
	f->jobid = jobid;
	f->qid = qid;
	f->dest = d;
	h = sched_flight_hash(s, jobid);
	f->hnext = s->ftab[h];
	s->ftab[h] = f;
	s->nfl++;
}

int
sched_flight_take(struct sched *s, uint64_t jobid, struct sched_flight *out)
{
	struct sched_flight **pp = &s->ftab[sched_flight_hash(s, jobid)];

	for (; *pp != NULL; pp = &(*pp)->hnext) {
		struct sched_flight *f = *pp;
		if (f->jobid != jobid)
			continue;
		*pp = f->hnext;
		*out = *f;
		out->hnext = NULL;
		free(f);
		s->nfl--;
		return 1;
	}
	return 0;
}

/* ------------------------------------------------------------------ */
/* sweep, stats, metrics */

/* Order for stats and /metrics: down first, then the most jobs. */
static int
sched_dest_cmp(const void *a, const void *b)
{
	const struct sched_dest *x = *(struct sched_dest *const *)a;
	const struct sched_dest *y = *(struct sched_dest *const *)b;
	unsigned nx = x->active + x->nwait, ny = y->active + y->nwait;

	if ((x->state != SCHED_D_UP) != (y->state != SCHED_D_UP))
		return x->state != SCHED_D_UP ? -1 : 1;
	if (nx != ny)
		return nx > ny ? -1 : 1;
	return strcmp(x->key, y->key);
}

/* Every destination, sorted (caller frees); *ndown counted. */
static struct sched_dest **
sched_dest_sorted(const struct sched *s, unsigned *ndown)
{
	struct sched_dest **v = xcalloc(s->ndest + 1, sizeof(*v));
	struct sched_dest *d;
	size_t n = 0;

	*ndown = 0;
	TAILQ_FOREACH(d, &s->dests, all) {
		v[n++] = d;
		if (d->state != SCHED_D_UP)
			(*ndown)++;
	}
	qsort(v, n, sizeof(*v), sched_dest_cmp);
	return v;
}

static void
sched_dest_publish(const struct sched *s)
{
	struct metrics_dest m[METRICS_DEST_MAX];
	unsigned ndown;
	struct sched_dest **v = sched_dest_sorted(s, &ndown);
	size_t n = s->ndest < METRICS_DEST_MAX ? s->ndest : METRICS_DEST_MAX;

	memset(m, 0, sizeof(m));
	for (size_t i = 0; i < n; i++) {
		const struct sched_dest *d = v[i];
		size_t k;
		for (k = 0; k < sizeof(m[i].name) - 1 && d->key[k] != '\0'; k++) {
			char c = d->key[k];
			/* a label value: nothing that needs escaping */
			m[i].name[k] = (c == '"' || c == '\\' || c < 0x21 ||
			    c > 0x7e) ? '_' : c;
		}
		m[i].down = d->state == SCHED_D_DOWN ? 1 :
		    d->state == SCHED_D_PROBE ? 2 : 0;
		m[i].concurrency = d->state == SCHED_D_UP ? d->win.limit :
		    d->state == SCHED_D_PROBE ? 1 : 0;
		m[i].in_flight = d->active;
		m[i].waiting = d->nwait;
	}
	metrics_dest_publish(m, n, (unsigned)s->ndest, ndown);
	free(v);
}

void
sched_dest_sweep(struct sched *s, int64_t now)
{
	struct sched_dest *d, *dn;
	int64_t keep = (int64_t)sched_down_period(s->conf->dest_down_time, 4);

	if (now < s->swept + SCHED_SWEEP_SEC && now >= s->swept)
		return;
	s->swept = now;
	for (d = TAILQ_FIRST(&s->dests); d != NULL; d = dn) {
		dn = TAILQ_NEXT(d, all);
		if (d->state == SCHED_D_DOWN && now >= d->down_until &&
		    d->nwait > 0) {
			sched_dest_down(s, d, now);     /* -> probe */
			sched_dest_kick(s, d);
		}
		if (d->active > 0 || d->nwait > 0)
			continue;
		/* idle: forgotten unless it has failures to remember */
		if ((d->state == SCHED_D_UP && d->win.nfail == 0) ||
		    now > d->last_used + keep ||
		    (d->state == SCHED_D_DOWN && now > d->down_until + keep))
			sched_dest_forget(s, d);
	}
	sched_dest_publish(s);
}

static const char *
sched_dest_state_name(enum sched_dstate st)
{
	return st == SCHED_D_DOWN ? "down" : st == SCHED_D_PROBE ? "probe" :
	    "up";
}

void
sched_dest_stats(const struct sched *s, struct json_writer *w, int64_t now)
{
	unsigned ndown;
	struct sched_dest **v = sched_dest_sorted(s, &ndown);
	size_t n = s->ndest < SCHED_STATS_MAX ? s->ndest : SCHED_STATS_MAX;

	json_key(w, "destinations_total");
	json_put_uint(w, s->ndest);
	json_key(w, "destinations_down");
	json_put_uint(w, ndown);
	json_key(w, "destinations");
	json_arr_open(w);
	for (size_t i = 0; i < n; i++) {
		const struct sched_dest *d = v[i];
		json_obj_open(w);
		json_key(w, "destination");
		json_put_str(w, d->key);
		json_key(w, "state");
		json_put_str(w, sched_dest_state_name(d->state));
		json_key(w, "down_until");
		if (d->state == SCHED_D_DOWN)
			json_put_int(w, d->down_until);
		else
			json_put_null(w);
		json_key(w, "concurrency");
		json_put_uint(w, d->state == SCHED_D_UP ? d->win.limit :
		    d->state == SCHED_D_PROBE ? 1 : 0);
		json_key(w, "max");
		json_put_uint(w, d->max);
		json_key(w, "in_flight");
		json_put_uint(w, d->active);
		json_key(w, "waiting");
		json_put_uint(w, d->nwait);
		json_key(w, "failures");
		json_put_uint(w, d->win.nfail);
		json_key(w, "last_error");
		if (d->last_error[0] != '\0')
			json_put_str(w, d->last_error);
		else
			json_put_null(w);
		json_obj_close(w);
	}
	json_arr_close(w);
	free(v);
	(void)now;
}
