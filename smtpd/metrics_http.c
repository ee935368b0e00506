/*
 * metrics_http.c - Prometheus text exposition (format 0.0.4) of tern's
 * counters (base/metrics.c) at GET /metrics, served by libevent's evhttp on
 * ternd's main loop.
 *
 * Counters are updated from every thread with relaxed atomics and read here
 * without locks: a scrape may see one counter a few events ahead of
 * another, never a torn value. The queue-size gauges come from the
 * queue's counters (queue_counts, queue_domains: no walk of the index). The HTTP side accepts only GET (and
 * HEAD) of /metrics; it reads nothing from the peer but the request line
 * and headers, which evhttp bounds (set below).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include "tern/conf.h"
#include "tern/envelope.h"
#include "tern/log.h"
#include "tern/metrics.h"
#include "tern/queue.h"
#include "tern/util.h"

static uint64_t
metrics_load(const uint64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static int64_t
metrics_load_i(const int64_t *p)
{
	return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void
metrics_head(struct evbuffer *b, const char *name, const char *type,
    const char *help)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name,
	    type);
}

static void
metrics_counter(struct evbuffer *b, const char *name, const char *help,
    uint64_t v)
{
	metrics_head(b, name, "counter", help);
	evbuffer_add_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

/* Values are stored times 1e6; print them back in base units. */
static void
metrics_e6(struct evbuffer *b, uint64_t v)
{
	evbuffer_add_printf(b, "%llu.%06llu", (unsigned long long)(v / 1000000),
	    (unsigned long long)(v % 1000000));
}

static void
metrics_histogram(struct evbuffer *b, const char *name, const char *help,
    struct metrics_hist *h)
{
	uint64_t cum = 0;
	metrics_head(b, name, "histogram", help);
	for (size_t i = 0; i <= h->n; i++) {
		cum += metrics_load(&h->buckets[i]);
		evbuffer_add_printf(b, "%s_bucket{le=\"", name);
		if (i < h->n)
			metrics_e6(b, h->bounds[i]);
		else
			evbuffer_add_printf(b, "+Inf");
		evbuffer_add_printf(b, "\"} %llu\n", (unsigned long long)cum);
	}
	evbuffer_add_printf(b, "%s_sum ", name);
	metrics_e6(b, metrics_load(&h->sum));
	evbuffer_add_printf(b, "\n%s_count %llu\n", name,
	    (unsigned long long)metrics_load(&h->count));
}

/* Domains exported as tern_queue_domain_* gauges (most pending first). */
#define METRICS_QUEUE_DOMAINS 20

struct metrics_qdoms {
	struct {
		char *name;         /* owned */
		uint64_t v[2];      /* messages, recipients */
	} d[METRICS_QUEUE_DOMAINS];
	size_t n;
};

/* A label value: \\, " and newline escaped (exposition format 0.0.4). */
static void
metrics_label(struct evbuffer *b, const char *v)
{
	for (; *v != '\0'; v++) {
		if (*v == '\\' || *v == '"')
			evbuffer_add_printf(b, "\\%c", *v);
		else if (*v == '\n')
			evbuffer_add(b, "\\n", 2);
		else
			evbuffer_add(b, v, 1);
	}
}

static int
metrics_qdom_fn(void *arg, const char *domain, uint64_t messages,
    uint64_t recipients)
{
	struct metrics_qdoms *d = arg;

	if (d->n == METRICS_QUEUE_DOMAINS)
		return 1;
	d->d[d->n].name = xstrdup(domain);
	d->d[d->n].v[0] = messages;
	d->d[d->n++].v[1] = recipients;
	return 0;
}

static void
metrics_qdoms_render(struct evbuffer *b, struct metrics_qdoms *d)
{
	static const char *const name[2] = { "tern_queue_domain_messages",
	    "tern_queue_domain_recipients" };
	static const char *const help[2] = { "Messages with a pending "
	    "recipient at the domain (the 20 domains with the most pending "
	    "recipients).", "Pending recipients at the domain (the same "
	    "domains)." };

	for (int k = 0; k < 2; k++) {
		metrics_head(b, name[k], "gauge", help[k]);
		for (size_t i = 0; i < d->n; i++) {
			evbuffer_add_printf(b, "%s{domain=\"", name[k]);
			metrics_label(b, d->d[i].name);
			evbuffer_add_printf(b, "\"} %llu\n",
			    (unsigned long long)d->d[i].v[k]);
		}
	}
	for (size_t i = 0; i < d->n; i++)
		free(d->d[i].name);
}

/* The queue gauges, from the queue's counters (no walk). */
static void
metrics_render_queue(struct evbuffer *b, struct queue *q)
{
	struct queue_counts c;
	struct metrics_qdoms d;

	memset(&d, 0, sizeof(d));
	if (queue_counts(q, &c) < 0)
		return;
	metrics_head(b, "tern_queue_messages", "gauge",
	    "Messages in the queue, by state.");
	evbuffer_add_printf(b, "tern_queue_messages{state=\"active\"} %llu\n"
	    "tern_queue_messages{state=\"held\"} %llu\n"
	    "tern_queue_messages{state=\"corrupt\"} %llu\n",
	    (unsigned long long)(c.messages - c.held),
	    (unsigned long long)(c.held - c.corrupt),
	    (unsigned long long)c.corrupt);
	metrics_head(b, "tern_queue_deferred", "gauge",
	    "Messages not held that were attempted at least once.");
	evbuffer_add_printf(b, "tern_queue_deferred %llu\n",
	    (unsigned long long)c.deferred);
	metrics_head(b, "tern_queue_recipients_pending", "gauge",
	    "Recipients not yet delivered or bounced.");
	evbuffer_add_printf(b, "tern_queue_recipients_pending %llu\n",
	    (unsigned long long)c.recipients);
	metrics_head(b, "tern_queue_bytes", "gauge",
	    "Body bytes of the messages in the queue.");
	evbuffer_add_printf(b, "tern_queue_bytes %llu\n",
	    (unsigned long long)c.bytes);
	metrics_head(b, "tern_queue_oldest_arrival_seconds", "gauge",
	    "Arrival (unix time) of the oldest message queued; 0: empty.");
	evbuffer_add_printf(b, "tern_queue_oldest_arrival_seconds %lld\n",
	    (long long)c.oldest_arrival);
	(void)queue_domains(q, METRICS_QUEUE_DOMAINS, metrics_qdom_fn, &d);
	metrics_qdoms_render(b, &d);    /* what was collected; frees it */
}

static void
metrics_render_dests(struct evbuffer *b)
{
	static const struct { const char *name, *help; } g[] = {
		{ "tern_destination_concurrency", "Sessions a destination may "
		    "have at once now (slow start window)." },
		{ "tern_destination_in_flight", "Delivery jobs at a worker." },
		{ "tern_destination_waiting", "Jobs waiting for a session." },
		{ "tern_destination_down", "1 while a destination is marked "
		    "down (deferred without connecting), 2 while probed." },
	};
	struct metrics_dest d[METRICS_DEST_MAX];
	size_t n;
	unsigned total, down;

	n = metrics_dest_read(d, &total, &down);
	metrics_head(b, "tern_destinations", "gauge",
	    "Destinations the scheduler tracks now.");
	evbuffer_add_printf(b, "tern_destinations %u\n", total);
	metrics_head(b, "tern_destinations_down", "gauge",
	    "Destinations marked down now.");
	evbuffer_add_printf(b, "tern_destinations_down %u\n", down);
	for (size_t k = 0; k < sizeof(g) / sizeof(g[0]); k++) {
		metrics_head(b, g[k].name, "gauge", g[k].help);
		for (size_t i = 0; i < n; i++) {
			unsigned v = k == 0 ? d[i].concurrency : k == 1 ?
			    d[i].in_flight : k == 2 ? d[i].waiting :
			    (unsigned)d[i].down;
			/* keys are lowercase names, ':', digits: no escaping */
			evbuffer_add_printf(b, "%s{destination=\"%s\"} %u\n",
			    g[k].name, d[i].name, v);
		}
	}
}

static void
metrics_render_buf(struct evbuffer *b, struct queue *q)
{
	static const char *modes[] = { "relay", "submission" };
	static const char *refusals[] = { "relay_denied", "auth", "sender",
	    "size", "content", "queue", "limit" };
	static const char *dlv[] = { "sent", "deferred", "bounced", "expired" };
	static const char *crefusals[] = { "max-connections",
	    "max-connections-per-ip", "proxy", "shutting-down" };
	struct metrics *m = &tern_metrics;

	metrics_head(b, "tern_sessions_total", "counter",
	    "Inbound SMTP sessions accepted, by listener mode.");
	for (int i = 0; i < METRICS_NMODES; i++)
		evbuffer_add_printf(b, "tern_sessions_total{listener=\"%s\"} %llu\n",
		    modes[i], (unsigned long long)metrics_load(&m->sessions_total[i]));
	metrics_head(b, "tern_sessions_open", "gauge",
	    "Inbound SMTP sessions open now, by listener mode.");
	for (int i = 0; i < METRICS_NMODES; i++)
		evbuffer_add_printf(b, "tern_sessions_open{listener=\"%s\"} %lld\n",
		    modes[i], (long long)metrics_load_i(&m->sessions_open[i]));
	metrics_counter(b, "tern_tls_handshakes_total",
	    "Inbound TLS handshakes completed.",
	    metrics_load(&m->tls_handshakes_total));
	metrics_head(b, "tern_auth_total", "counter",
	    "SMTP AUTH attempts, by result.");
	evbuffer_add_printf(b, "tern_auth_total{result=\"failed\"} %llu\n",
	    (unsigned long long)metrics_load(&m->auth_total[0]));
	evbuffer_add_printf(b, "tern_auth_total{result=\"ok\"} %llu\n",
	    (unsigned long long)metrics_load(&m->auth_total[1]));
	metrics_counter(b, "tern_early_talkers_total",
	    "Relay clients refused (554 5.5.1) for sending before the greeting.",
	    metrics_load(&m->early_talkers_total));
	metrics_head(b, "tern_connections_refused_total", "counter",
	    "Inbound connections closed before their session, by reason.");
	for (int i = 0; i < METRICS_NCREFUSALS; i++)
		evbuffer_add_printf(b, "tern_connections_refused_total{reason="
		    "\"%s\"} %llu\n", crefusals[i], (unsigned long long)
		    metrics_load(&m->connections_refused_total[i]));
	metrics_counter(b, "tern_messages_accepted_total",
	    "Messages accepted (durable, answered 250).",
	    metrics_load(&m->messages_accepted_total));
	metrics_head(b, "tern_messages_refused_total", "counter",
	    "Messages or recipients refused, by reason.");
	for (int i = 0; i < METRICS_NREFUSALS; i++)
		evbuffer_add_printf(b, "tern_messages_refused_total{reason=\"%s\"} "
		    "%llu\n", refusals[i],
		    (unsigned long long)metrics_load(&m->messages_refused_total[i]));
	metrics_counter(b, "tern_accepted_bytes_total",
	    "Message bytes accepted.", metrics_load(&m->bytes_accepted_total));
	metrics_histogram(b, "tern_commit_batch_size",
	    "Messages made durable by one fdatasync.", &m->commit_batch_size);
	metrics_histogram(b, "tern_commit_duration_seconds",
	    "Time from end of DATA to durable (group commit).",
	    &m->commit_seconds);
	metrics_head(b, "tern_deliveries_total", "counter",
	    "Delivery attempts per recipient, by result.");
	for (int i = 0; i < METRICS_NDLV; i++)
		evbuffer_add_printf(b, "tern_deliveries_total{result=\"%s\"} %llu\n",
		    dlv[i], (unsigned long long)metrics_load(&m->deliveries_total[i]));
	metrics_counter(b, "tern_dsn_total", "Delivery status notifications "
	    "(bounces and delay warnings) queued.", metrics_load(&m->dsn_total));
	metrics_head(b, "tern_spool_memory_bytes", "gauge",
	    "Memory held by message bodies being received (spool-memory-total "
	    "caps it).");
	evbuffer_add_printf(b, "tern_spool_memory_bytes %lld\n",
	    (long long)metrics_load_i(&m->spool_memory_bytes));
	metrics_counter(b, "tern_spool_spills_total",
	    "Message bodies moved from memory to a file while being received.",
	    metrics_load(&m->spool_spills_total));
	metrics_counter(b, "tern_queue_copied_forward_total",
	    "Queued messages rewritten out of mostly empty old segment files.",
	    metrics_load(&m->queue_copied_forward_total));
	metrics_histogram(b, "tern_dns_duration_seconds",
	    "Time to resolve a delivery destination.", &m->dns_seconds);
	metrics_head(b, "tern_outbound_connections_open", "gauge",
	    "Outbound SMTP connections open now.");
	evbuffer_add_printf(b, "tern_outbound_connections_open %lld\n",
	    (long long)metrics_load_i(&m->out_connections_open));
	metrics_counter(b, "tern_outbound_connections_total",
	    "Outbound SMTP connections opened.",
	    metrics_load(&m->out_connections_total));
	metrics_counter(b, "tern_outbound_connections_reused_total",
	    "Deliveries that reused an open outbound connection.",
	    metrics_load(&m->out_connections_reused_total));
	metrics_render_dests(b);

	if (q != NULL)
		metrics_render_queue(b, q);
}

struct metrics_server {
	struct evhttp *http;
	struct queue *q;              /* borrowed */
};

static void
metrics_http_cb(struct evhttp_request *req, void *arg)
{
	struct metrics_server *m = arg;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));

	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_send_error(req, 405, "Method Not Allowed");
		return;
	}
	if (path == NULL || strcmp(path, "/metrics") != 0) {
		evhttp_send_error(req, 404, "Not Found");
		return;
	}
	struct evbuffer *b = evbuffer_new();
	if (b == NULL) {
		evhttp_send_error(req, 500, "Internal Server Error");
		return;
	}
	metrics_render_buf(b, m->q);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	    "text/plain; version=0.0.4; charset=utf-8");
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

struct metrics_server *
metrics_server_new(struct event_base *base, const char *addr, struct queue *q,
    char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	char host[64];

	if (conf_parse_hostport(addr, strlen(addr), 0, &ss, &sslen) < 0) {
		snprintf(err, errlen, "bad address %s", addr);
		return NULL;
	}
	struct metrics_server *m = xcalloc(1, sizeof(*m));
	m->q = q;
	m->http = evhttp_new(base);
	if (m->http == NULL) {
		snprintf(err, errlen, "evhttp_new failed");
		free(m);
		return NULL;
	}
	evhttp_set_max_headers_size(m->http, 8192);
	evhttp_set_max_body_size(m->http, 0);
	evhttp_set_timeout(m->http, 10);
	evhttp_set_allowed_methods(m->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD);
	evhttp_set_gencb(m->http, metrics_http_cb, m);
	sockaddr_ntop((struct sockaddr *)&ss, host, sizeof(host));
	if (evhttp_bind_socket(m->http, host, sockaddr_port((struct sockaddr *)&ss)) != 0) {
		snprintf(err, errlen, "cannot listen on %s", addr);
		evhttp_free(m->http);
		free(m);
		return NULL;
	}
	return m;
}

void
metrics_server_free(struct metrics_server *m)
{
	if (m == NULL)
		return;
	evhttp_free(m->http);
	free(m);
}
