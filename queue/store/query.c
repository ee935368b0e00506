/*
 * query.c - queries on the index (tern/queue.h "queries"): filtered,
 * paged listings in id order, the counts of what the queue holds, and the
 * pending recipients per domain.
 *
 * Any thread. Reads only. This version answers every query with a walk of
 * the envelopes table (O(queue) per call); the matching rule is the pure
 * queue_filter_match().
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tern/queue.h"
#include "tern/util.h"
#include "queue_int.h"

void
queue_filter_init(struct queue_filter *f)
{
	memset(f, 0, sizeof(*f));
	f->held = -1;
	f->older_than = -1;
}

/* A whole address: something@something, no second '@'. */
static int
queue_is_address(const char *s)
{
	const char *at = strchr(s, '@');

	return at != NULL && at != s && at[1] != '\0' &&
	    strchr(at + 1, '@') == NULL;
}

static int
queue_text_match(const char *text, const char *addr)
{
	if (addr == NULL)
		return 0;
	if (queue_is_address(text))
		return strcasecmp(text, addr) == 0;
	return strcasestr(addr, text) != NULL;
}

int
queue_filter_match(const struct queue_filter *f, const struct envelope *env)
{
	int to_ok = f->rcpt == NULL, dom_ok = f->domain == NULL;

	if (f->held >= 0 && ((env->flags & ENV_F_HOLD) != 0) != f->held)
		return 0;
	/* arrival comes from a queue record (any int64): no now - arrival */
	if (f->older_than >= 0 && (env->arrival > f->now ||
	    (uint64_t)f->now - (uint64_t)env->arrival < (uint64_t)f->older_than))
		return 0;
	if (f->sender != NULL && !queue_text_match(f->sender, env->sender))
		return 0;
	for (size_t i = 0; i < env->nrcpt && !(to_ok && dom_ok); i++) {
		const struct env_rcpt *rc = &env->rcpts[i];
		if (rc->state != RCPT_PENDING || rc->addr == NULL)
			continue;
		if (!to_ok && queue_text_match(f->rcpt, rc->addr))
			to_ok = 1;
		if (!dom_ok && strcasecmp(addr_domain(rc->addr), f->domain) == 0)
			dom_ok = 1;
	}
	return to_ok && dom_ok;
}

struct queue_query_ctx {
	const struct queue_filter *f;
	uint64_t after;
	size_t limit;
	long n;
	uint64_t last;
	queue_walk_fn *fn;
	void *arg;
};

static int
queue_query_one(void *arg, const struct envelope *env)
{
	struct queue_query_ctx *c = arg;
	int r;

	if (env->id <= c->after || !queue_filter_match(c->f, env))
		return 0;
	r = c->fn(c->arg, env);
	c->n++;
	c->last = env->id;
	if (r != 0)
		return r;
	return c->limit != 0 && (size_t)c->n >= c->limit;
}

long
queue_query(struct queue *q, const struct queue_filter *f, uint64_t after,
    size_t limit, uint64_t *last, queue_walk_fn *fn, void *arg)
{
	struct queue_query_ctx c = { f, after, limit, 0, 0, fn, arg };

	if (last != NULL)
		*last = 0;
	if (queue_walk(q, queue_query_one, &c) == -1)
		return -1;
	if (last != NULL)
		*last = c.last;
	return c.n;
}

static int
queue_counts_one(void *arg, const struct envelope *e)
{
	struct queue_counts *c = arg;
	size_t pending = envelope_pending(e);

	c->messages++;
	if (e->flags & ENV_F_HOLD)
		c->held++;
	if (e->flags & ENV_F_CORRUPT)
		c->corrupt++;
	if (!(e->flags & ENV_F_HOLD) && e->attempts > 0)
		c->deferred++;
	c->recipients += pending;
	c->bytes += e->size;
	if (c->oldest_arrival == 0 || e->arrival < c->oldest_arrival)
		c->oldest_arrival = e->arrival;
	return 0;
}

int
queue_counts(struct queue *q, struct queue_counts *out)
{
	memset(out, 0, sizeof(*out));
	return queue_walk(q, queue_counts_one, out) == -1 ? -1 : 0;
}

/* One domain's counts while walking. */
struct queue_dom {
	char *name;                     /* owned, lower case */
	uint64_t messages, recipients;
	uint64_t last_id;               /* last message counted */
};

struct queue_doms {
	struct queue_dom *d;
	size_t n, cap;
};

static struct queue_dom *
queue_doms_find(struct queue_doms *ds, const char *name)
{
	for (size_t i = 0; i < ds->n; i++)
		if (strcmp(ds->d[i].name, name) == 0)
			return &ds->d[i];
	if (ds->n == ds->cap) {
		ds->cap = ds->cap ? ds->cap * 2 : 16;
		ds->d = xreallocarray(ds->d, ds->cap, sizeof(*ds->d));
	}
	memset(&ds->d[ds->n], 0, sizeof(ds->d[ds->n]));
	ds->d[ds->n].name = xstrdup(name);
	return &ds->d[ds->n++];
}

static int
queue_domains_one(void *arg, const struct envelope *e)
{
	struct queue_doms *ds = arg;

	for (size_t i = 0; i < e->nrcpt; i++) {
		const struct env_rcpt *rc = &e->rcpts[i];
		struct queue_dom *d;
		char *name;
		if (rc->state != RCPT_PENDING || rc->addr == NULL)
			continue;
		name = xstrdup(addr_domain(rc->addr));
		for (char *p = name; *p != '\0'; p++)
			if (*p >= 'A' && *p <= 'Z')
				*p = (char)(*p - 'A' + 'a');
		d = queue_doms_find(ds, name);
		free(name);
		d->recipients++;
		if (d->messages == 0 || d->last_id != e->id)
			d->messages++;
		d->last_id = e->id;
	}
	return 0;
}

static int
queue_dom_cmp(const void *a, const void *b)
{
	const struct queue_dom *x = a, *y = b;

	if (x->recipients != y->recipients)
		return x->recipients > y->recipients ? -1 : 1;
	return strcmp(x->name, y->name);
}

int
queue_domains(struct queue *q, size_t top, queue_domain_fn *fn, void *arg)
{
	struct queue_doms ds = { 0 };
	int rc = queue_walk(q, queue_domains_one, &ds);

	if (rc != -1) {
		if (ds.n > 1)
			qsort(ds.d, ds.n, sizeof(*ds.d), queue_dom_cmp);
		for (size_t i = 0; i < ds.n && (top == 0 || i < top); i++)
			if (fn(arg, ds.d[i].name, ds.d[i].messages,
			    ds.d[i].recipients) != 0)
				break;
	}
	for (size_t i = 0; i < ds.n; i++)
		free(ds.d[i].name);
	free(ds.d);
	return rc == -1 ? -1 : 0;
}
