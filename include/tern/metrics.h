/*
 * metrics.h - process-wide counters and histograms, served as Prometheus
 * text at /metrics (metrics-listen ADDR:PORT) by libevent's evhttp.
 *
 * The counters live in the base library (base/metrics.c), so every layer
 * may count; the HTTP server is ternd's (smtpd/metrics_http.c). Any thread
 * updates them with relaxed atomics (no locks on the hot path); the HTTP
 * server reads them on ternd's main loop. Names follow Prometheus
 * conventions: prefix tern_, _total for counters, base units (seconds,
 * bytes). The set of names is public interface (dashboards depend on it).
 */
#ifndef TERN_METRICS_H
#define TERN_METRICS_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct queue;

/* Labels for per-listener-mode series. */
enum metrics_mode { METRICS_RELAY = 0, METRICS_SUBMISSION, METRICS_NMODES };

/* Why a message (or a recipient) was refused. */
enum metrics_refusal {
	METRICS_REF_RELAY = 0,      /* relay access denied, sender routing */
	METRICS_REF_AUTH,           /* authentication required / failed */
	METRICS_REF_SENDER,         /* sender not owned */
	METRICS_REF_SIZE,           /* too big */
	METRICS_REF_CONTENT,        /* bare CR/LF, line too long, too many hops */
	METRICS_REF_QUEUE,          /* commit failed (4.3.x) */
	METRICS_REF_LIMIT,          /* recipients, connections, errors */
	METRICS_NREFUSALS,
};

/* Why a connection was closed before its session started. */
enum metrics_conn_refusal {
	METRICS_CREF_MAX = 0,       /* max-connections */
	METRICS_CREF_PER_IP,        /* max-connections-per-ip */
	METRICS_CREF_PROXY,         /* PROXY header missing, bad, or not from
	                               proxy-networks */
	METRICS_CREF_STOPPING,      /* shutting down, listener removed */
	METRICS_NCREFUSALS,
};

enum metrics_delivery { METRICS_DLV_SENT = 0, METRICS_DLV_DEFERRED,
	METRICS_DLV_BOUNCED, METRICS_DLV_EXPIRED, METRICS_NDLV };

#define METRICS_HIST_MAX 16

/* A histogram with fixed upper bounds (in the metric's unit, times 1e6). */
struct metrics_hist {
	const uint64_t *bounds;       /* ascending, n of them; +Inf implied */
	size_t n;
	uint64_t buckets[METRICS_HIST_MAX + 1];  /* non-cumulative counts */
	uint64_t sum;                 /* in units * 1e6 */
	uint64_t count;
};

struct metrics {
	uint64_t sessions_total[METRICS_NMODES];
	int64_t sessions_open[METRICS_NMODES];
	uint64_t tls_handshakes_total;
	uint64_t auth_total[2];               /* [0] failed, [1] ok */
	uint64_t early_talkers_total;         /* relay clients that sent before 220 */
	uint64_t connections_refused_total[METRICS_NCREFUSALS];
	uint64_t messages_accepted_total;
	uint64_t messages_refused_total[METRICS_NREFUSALS];
	uint64_t bytes_accepted_total;
	struct metrics_hist commit_batch_size;   /* messages per fdatasync */
	struct metrics_hist commit_seconds;      /* submit -> durable */
	uint64_t deliveries_total[METRICS_NDLV]; /* per recipient */
	struct metrics_hist dns_seconds;
	int64_t out_connections_open;
	uint64_t out_connections_total;
	uint64_t out_connections_reused_total;
	uint64_t dsn_total;
	int64_t spool_memory_bytes;           /* bodies being received, in memory */
	uint64_t spool_spills_total;          /* bodies moved to a file */
	uint64_t queue_copied_forward_total;  /* records moved out of old segments */
};

extern struct metrics tern_metrics;

/* Relaxed atomic helpers. */
#define METRIC_ADD(field, v) \
	__atomic_add_fetch(&tern_metrics.field, (v), __ATOMIC_RELAXED)
#define METRIC_INC(field) METRIC_ADD(field, 1)
#define METRIC_DEC(field) __atomic_sub_fetch(&tern_metrics.field, 1, \
	__ATOMIC_RELAXED)

/* Record one observation (value in base units * 1e6, e.g. microseconds). */
void metrics_observe(struct metrics_hist *h, uint64_t value_e6);

/*
 * Per-destination gauges: the scheduler publishes its busiest and down
 * destinations (at most METRICS_DEST_MAX, a bounded set of label values)
 * now and then; /metrics renders the last snapshot.
 */
#define METRICS_DEST_MAX 20
struct metrics_dest {
	char name[128];               /* the destination key */
	int down;                     /* 1 down, 2 probing, 0 up */
	unsigned concurrency, in_flight, waiting;
};
/* Copy n (<= METRICS_DEST_MAX) entries and the totals (any thread). */
void metrics_dest_publish(const struct metrics_dest *d, size_t n,
    unsigned ndest, unsigned ndown);
/* Copy the last snapshot into d (METRICS_DEST_MAX slots); its length. */
size_t metrics_dest_read(struct metrics_dest *d, unsigned *ndest,
    unsigned *ndown);

struct metrics_server;
/* Serve GET /metrics on addr ("127.0.0.1:9100") on base. NULL + err on failure. */
struct metrics_server *metrics_server_new(struct event_base *base,
    const char *addr, struct queue *q, char *err, size_t errlen);
void metrics_server_free(struct metrics_server *m);

#endif
