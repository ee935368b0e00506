/*
 * metrics.c - the process-wide counters, histograms and destination gauges
 * of tern/metrics.h: storage and the lock-free updates every thread makes.
 * No I/O: ternd's metrics HTTP server (smtpd/metrics_http.c) and the
 * control socket read them.
 */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "tern/metrics.h"

/* batch sizes: messages per fdatasync */
static const uint64_t metrics_batch_bounds[] = {
	1000000, 2000000, 4000000, 8000000, 16000000, 32000000, 64000000,
	128000000, 256000000,
};
/* seconds, as microseconds */
static const uint64_t metrics_latency_bounds[] = {
	100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000,
	500000, 1000000, 2500000,
};

struct metrics tern_metrics = {
	.commit_batch_size = { metrics_batch_bounds,
	    sizeof(metrics_batch_bounds) / sizeof(metrics_batch_bounds[0]),
	    { 0 }, 0, 0 },
	.commit_seconds = { metrics_latency_bounds,
	    sizeof(metrics_latency_bounds) / sizeof(metrics_latency_bounds[0]),
	    { 0 }, 0, 0 },
	.dns_seconds = { metrics_latency_bounds,
	    sizeof(metrics_latency_bounds) / sizeof(metrics_latency_bounds[0]),
	    { 0 }, 0, 0 },
};

void
metrics_observe(struct metrics_hist *h, uint64_t v)
{
	size_t i;
	for (i = 0; i < h->n && v > h->bounds[i]; i++)
		;
	__atomic_add_fetch(&h->buckets[i], 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&h->sum, v, __ATOMIC_RELAXED);
	__atomic_add_fetch(&h->count, 1, __ATOMIC_RELAXED);
}

/* the scheduler's last snapshot of its destinations */
static pthread_mutex_t metrics_dest_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metrics_dest metrics_dests[METRICS_DEST_MAX];
static size_t metrics_ndests;
static unsigned metrics_dest_total, metrics_dest_down;

void
metrics_dest_publish(const struct metrics_dest *d, size_t n, unsigned ndest,
    unsigned ndown)
{
	if (n > METRICS_DEST_MAX)
		n = METRICS_DEST_MAX;
	pthread_mutex_lock(&metrics_dest_lock);
	memcpy(metrics_dests, d, n * sizeof(*d));
	metrics_ndests = n;
	metrics_dest_total = ndest;
	metrics_dest_down = ndown;
	pthread_mutex_unlock(&metrics_dest_lock);
}

size_t
metrics_dest_read(struct metrics_dest *d, unsigned *ndest, unsigned *ndown)
{
	size_t n;

	pthread_mutex_lock(&metrics_dest_lock);
	n = metrics_ndests;
	memcpy(d, metrics_dests, n * sizeof(*d));
	*ndest = metrics_dest_total;
	*ndown = metrics_dest_down;
	pthread_mutex_unlock(&metrics_dest_lock);
	return n;
}
