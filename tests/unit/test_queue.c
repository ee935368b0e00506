/*
 * test_queue.c - the durable queue against a real directory under
 * TERN_TEST_TMPDIR and a real event_base receiving the committer's replies:
 * commit and read back, concurrent group commit, kill -9 (fork + _exit),
 * torn tails and flipped bytes, a lost index, ENOSPC and the reserve on a
 * small tmpfs (root only), removal and segment recycling, oversized messages,
 * read-only open.
 *
 * The throughput loop is bench/queue_commit.c (bench-queue-commit).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <dirent.h>
#include <cmocka.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "tern/log.h"
#include "tern/metrics.h"
#include "tern/queue.h"
#include "tern/tq.h"
#include "tern/util.h"
#include "queue_int.h"      /* record format: the forged-record tests */

#define MAXREQ 1024

struct result {
	int done;
	enum q_status st;
	int err;
	uint64_t qid;
};

struct waiter {
	struct event_base *base;
	struct tq *tq;
	struct event *keep;
	struct result res[MAXREQ];
	size_t ndone;
	uint64_t newids[MAXREQ];
	size_t nnew;
	int notify;             /* also wait until OK replies are indexed */
};

static void
waiter_handler(struct tq_msg *m, void *arg)
{
	struct waiter *w = arg;

	switch (m->type) {
	case TQ_COMMIT_DONE: {
		struct queue_commit_done *d = (struct queue_commit_done *)m;
		assert_true(d->hdr.reqid < MAXREQ);
		assert_false(w->res[d->hdr.reqid].done);   /* exactly one reply */
		w->res[d->hdr.reqid] = (struct result){ 1, d->status, d->err, d->qid };
		w->ndone++;
		break;
	}
	case TQ_NEW_MESSAGE: {
		struct queue_new_message *n = (struct queue_new_message *)m;
		assert_true(n->qid == n->hdr.reqid);
		if (w->nnew < MAXREQ)
			w->newids[w->nnew++] = n->qid;
		break;
	}
	default:
		fail_msg("unexpected tq message %d", m->type);
	}
	free(m);
}

static void
waiter_noop(evutil_socket_t fd, short what, void *arg)
{
}

static struct waiter *
waiter_new(void)
{
	struct waiter *w = calloc(1, sizeof(*w));
	struct timeval tv = { 0, 20000 };

	w->base = event_base_new();
	w->tq = tq_new(w->base, waiter_handler, w);
	w->keep = event_new(w->base, -1, EV_PERSIST, waiter_noop, NULL);
	event_add(w->keep, &tv);
	return w;
}

static void
waiter_free(struct waiter *w)
{
	tq_free(w->tq);
	event_free(w->keep);
	event_base_free(w->base);
	free(w);
}

static size_t
waiter_ok(struct waiter *w)
{
	size_t n = 0;
	for (size_t i = 0; i < MAXREQ; i++)
		if (w->res[i].done && w->res[i].st == Q_OK)
			n++;
	return n;
}

/* Run the loop until n replies arrived (and were indexed) or 20 s. */
static void
waiter_wait(struct waiter *w, size_t n)
{
	uint64_t end = now_mono_us() + 20000000u;

	while (w->ndone < n && now_mono_us() < end)
		event_base_loop(w->base, EVLOOP_ONCE);
	assert_int_equal(w->ndone, n);
	while (w->notify && w->nnew < waiter_ok(w) && now_mono_us() < end)
		event_base_loop(w->base, EVLOOP_ONCE);
	if (w->notify)
		assert_int_equal(w->nnew, waiter_ok(w));
}

static void
qnotify(struct queue *q, struct waiter *w)
{
	queue_set_notify(q, w->tq);
	w->notify = 1;
}

static void
waiter_wait_new(struct waiter *w, size_t n)
{
	uint64_t end = now_mono_us() + 5000000u;

	while (w->nnew < n && now_mono_us() < end)
		event_base_loop(w->base, EVLOOP_ONCE);
}

/* Deterministic body for request r of size n. */
static char *
body_make(uint64_t r, size_t n)
{
	char *b = malloc(n + 1);
	for (size_t i = 0; i < n; i++)
		b[i] = (char)('a' + (r * 7 + i * 13) % 26);
	if (n >= 2) {
		b[n - 2] = '\r';
		b[n - 1] = '\n';
	}
	return b;
}

static void
submit(struct queue *q, struct tq *reply, uint64_t reqid, size_t size)
{
	struct envelope *e = envelope_new();
	struct spool *s = spool_new(q);
	char *b = body_make(reqid, size), rcpt[64];

	e->sender = strdup("sender@example.org");
	snprintf(rcpt, sizeof(rcpt), "r%llu@example.com", (unsigned long long)reqid);
	envelope_add_rcpt(e, rcpt, NULL, 0);
	for (size_t off = 0; off < size; off += 1000) {
		size_t n = size - off > 1000 ? 1000 : size - off;
		assert_int_equal(spool_write(s, b + off, n), 0);
	}
	assert_true(spool_size(s) == size);
	free(b);
	queue_commit_submit(q, e, s, reply, reqid);
}

/* The message stored under qid has request r's recipient and body. */
static void
check_message(struct queue *q, uint64_t qid, uint64_t r, size_t size)
{
	struct envelope *e = NULL;
	char *body = NULL, *want = body_make(r, size), rcpt[64];
	size_t len;

	assert_int_equal(queue_get(q, qid, &e), 0);
	assert_true(e->id == qid);
	assert_int_equal(e->flags & ENV_F_CORRUPT, 0);
	assert_true(e->size == size);
	assert_int_equal(e->nrcpt, 1);
	snprintf(rcpt, sizeof(rcpt), "r%llu@example.com", (unsigned long long)r);
	assert_string_equal(e->rcpts[0].addr, rcpt);
	assert_string_equal(e->sender, "sender@example.org");
	assert_int_equal(queue_read_body(q, e, &body, &len), 0);
	assert_int_equal(len, size);
	assert_memory_equal(body, want, size);
	free(body);
	free(want);
	envelope_free(e);
}

static char *
mktmp(const char *tag)
{
	const char *base = getenv("TERN_TEST_TMPDIR");
	char *p = malloc(4096);

	snprintf(p, 4096, "%s/q-%s-XXXXXX", base ? base : "/tmp", tag);
	assert_non_null(mkdtemp(p));
	return p;
}

static void
rmtree(const char *p)
{
	char cmd[8400];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", p);
	assert_int_equal(system(cmd), 0);
}

static struct queue *
qopen(const char *dir, uint64_t segsize, uint64_t spoolmem, int readonly)
{
	/* spoolmem 0: the daemon's default */
	struct queue_opts o = { .dir = dir, .segment_size = segsize,
	    .spool_memory = spoolmem ? spoolmem : 256 << 10,
	    .spool_budget = 64 << 20, .readonly = readonly };
	struct queue *q = NULL;
	char err[256] = "";

	if (queue_open(&o, &q, err, sizeof(err)) < 0)
		fail_msg("queue_open %s: %s", dir, err);
	return q;
}

static size_t
count_messages(struct queue *q)
{
	struct queue_stats st;
	queue_stats(q, &st);
	return st.messages;
}

/* ---- tests ---- */

static void
test_commit_one(void **state)
{
	char *dir = mktmp("one");
	struct queue *q = qopen(dir, 1 << 20, 0, 0);
	struct waiter *w = waiter_new();
	struct envelope *e = NULL;
	uint64_t qid;

	queue_set_notify(q, w->tq);
	submit(q, w->tq, 1, 7);
	waiter_wait(w, 1);
	assert_int_equal(w->res[1].st, Q_OK);
	assert_int_equal(w->res[1].err, 0);
	qid = w->res[1].qid;
	assert_true(qid != 0);
	waiter_wait_new(w, 1);
	assert_int_equal(w->nnew, 1);
	assert_true(w->newids[0] == qid);
	check_message(q, qid, 1, 7);
	assert_int_equal(queue_get(q, qid + 1, &e), 1);
	assert_int_equal(count_messages(q), 1);
	queue_close(q);

	/* and after a clean reopen */
	q = qopen(dir, 1 << 20, 0, 0);
	check_message(q, qid, 1, 7);
	assert_int_equal(queue_get(q, qid, &e), 0);
	assert_true(e->arrival > 0);
	assert_true(e->seg != 0 && e->rec_len > e->size);
	envelope_free(e);
	queue_close(q);
	waiter_free(w);
	rmtree(dir);
	free(dir);
}

/*
 * queue_read_body reads the header and envelope apart from the body (one
 * preadv): an envelope larger than its 4 KiB head buffer (300 recipients),
 * a body of one byte and one of 200 KiB read back exactly; a changed body
 * byte fails the CRC.
 */
static void
test_read_body_big_envelope(void **state)
{
	char *dir = mktmp("bigenv");
	struct queue *q = qopen(dir, 1 << 20, 0, 0);
	struct waiter *w = waiter_new();
	static const size_t sizes[] = { 1, 200 << 10 };
	uint64_t qid[2];

	(void)state;
	queue_set_notify(q, w->tq);     /* to wait for the index too */
	for (size_t k = 0; k < 2; k++) {
		struct envelope *e = envelope_new();
		struct spool *sp = spool_new(q);
		char *b = body_make(k, sizes[k]), rcpt[80];

		e->sender = strdup("sender@example.org");
		for (int i = 0; i < 300; i++) {
			snprintf(rcpt, sizeof(rcpt),
			    "recipient-number-%03d@a-rather-long-domain.example", i);
			envelope_add_rcpt(e, rcpt, NULL, 0);
		}
		assert_int_equal(spool_write(sp, b, sizes[k]), 0);
		free(b);
		queue_commit_submit(q, e, sp, w->tq, k + 1);
		waiter_wait(w, k + 1);
		assert_int_equal(w->res[k + 1].st, Q_OK);
		qid[k] = w->res[k + 1].qid;
	}
	waiter_wait_new(w, 2);
	assert_int_equal(w->nnew, 2);
	for (size_t k = 0; k < 2; k++) {
		struct envelope *e = NULL;
		char *body = NULL, *want = body_make(k, sizes[k]);
		size_t len = 0;

		assert_int_equal(queue_get(q, qid[k], &e), 0);
		assert_int_equal(e->nrcpt, 300);
		assert_true(e->body_off > 4096);
		assert_int_equal(queue_read_body(q, e, &body, &len), 0);
		assert_int_equal(len, sizes[k]);
		assert_memory_equal(body, want, sizes[k]);
		free(body);
		free(want);
		envelope_free(e);
	}
	/* one body byte changed on disk: the read fails, nothing handed out */
	{
		struct envelope *e = NULL;
		char path[4200], *body = NULL;
		size_t len = 0;
		unsigned char c;
		int fd;

		assert_int_equal(queue_get(q, qid[1], &e), 0);
		snprintf(path, sizeof(path), "%s/segments/%08x.seg", dir, e->seg);
		fd = open(path, O_RDWR);
		assert_true(fd >= 0);
		off_t at = (off_t)(e->off + 28 + e->body_off + 1000);
		assert_int_equal(pread(fd, &c, 1, at), 1);
		c ^= 0x20;
		assert_int_equal(pwrite(fd, &c, 1, at), 1);
		close(fd);
		assert_int_equal(queue_read_body(q, e, &body, &len), -1);
		assert_null(body);
		envelope_free(e);
	}
	queue_close(q);
	waiter_free(w);
	rmtree(dir);
	free(dir);
}

/* 7-bit copies (body7.c): read back, removed with the message, orphans
 * and a damaged copy removed, none for a readonly queue. */
static void
test_body7(void **state)
{
	char *dir = mktmp("b7");
	struct queue *q = qopen(dir, 1 << 20, 0, 0);
	struct waiter *w = waiter_new();
	char *out = NULL, path[4200];
	size_t outlen = 0;
	uint64_t qid, other;
	FILE *f;

	queue_set_notify(q, w->tq);
	submit(q, w->tq, 1, 7);
	submit(q, w->tq, 2, 7);
	waiter_wait(w, 2);
	qid = w->res[1].qid;
	other = w->res[2].qid;
	assert_int_equal(queue_body7_read(q, qid, &out, &outlen), 1);
	assert_int_equal(queue_body7_write(q, qid, "seven\r\n", 7), 0);
	assert_int_equal(queue_body7_write(q, qid + 1000, "orphan", 6), 0);
	assert_int_equal(queue_body7_write(q, other, "other\r\n", 7), 0);
	assert_int_equal(queue_body7_read(q, qid, &out, &outlen), 0);
	assert_int_equal(outlen, 7);
	assert_memory_equal(out, "seven\r\n", 7);
	free(out);
	queue_close(q);

	/* reopen: the orphan goes, the copies of queued messages stay */
	q = qopen(dir, 1 << 20, 0, 0);
	assert_int_equal(queue_body7_read(q, qid + 1000, &out, &outlen), 1);
	assert_int_equal(queue_body7_read(q, qid, &out, &outlen), 0);
	free(out);
	/* a flipped octet: the copy is refused and removed */
	{
		char qs[QID_STRLEN + 1];
		qid_format(other, qs);
		snprintf(path, sizeof(path), "%s/7bit/%s", dir, qs);
		assert_non_null(f = fopen(path, "r+"));
		assert_int_equal(fseek(f, 9, SEEK_SET), 0);
		assert_int_equal(fputc('X', f), 'X');
		fclose(f);
	}
	assert_int_equal(queue_body7_read(q, other, &out, &outlen), 1);
	assert_null(out);
	assert_int_equal(access(path, F_OK), -1);
	/* removed with its message */
	assert_int_equal(queue_remove(q, qid), 0);
	assert_int_equal(queue_body7_read(q, qid, &out, &outlen), 1);
	{
		char qs[QID_STRLEN + 1];
		qid_format(qid, qs);
		snprintf(path, sizeof(path), "%s/7bit/%s", dir, qs);
		assert_int_equal(access(path, F_OK), -1);
	}
	queue_close(q);
	waiter_free(w);
	rmtree(dir);
	free(dir);
}

/*
 * spool_prepend: a prefix made after the body streamed is stored before it,
 * for a body in memory and for one spilled to its file (spool-memory 64).
 */
static void
test_spool_prepend(void **state)
{
	static const size_t sizes[] = { 7, 5000 };
	char *dir = mktmp("prepend");
	struct queue *q = qopen(dir, 1 << 20, 64, 0);
	struct waiter *w = waiter_new();

	qnotify(q, w);
	for (size_t i = 0; i < 2; i++) {
		struct envelope *e = envelope_new(), *got = NULL;
		struct spool *s = spool_new(q);
		char *b = body_make(i, sizes[i]), *body = NULL;
		size_t len;

		e->sender = strdup("sender@example.org");
		envelope_add_rcpt(e, "r@example.com", NULL, 0);
		assert_int_equal(spool_write(s, b, sizes[i]), 0);
		assert_int_equal(spool_prepend(s, "B: 2\r\n", 6), 0);
		assert_int_equal(spool_prepend(s, "A: 1\r\n", 6), 0);
		assert_true(spool_size(s) == sizes[i] + 12);
		queue_commit_submit(q, e, s, w->tq, i + 1);
		waiter_wait(w, i + 1);
		assert_int_equal(w->res[i + 1].st, Q_OK);
		assert_int_equal(queue_get(q, w->res[i + 1].qid, &got), 0);
		assert_true(got->size == sizes[i] + 12);
		assert_int_equal(queue_read_body(q, got, &body, &len), 0);
		assert_int_equal(len, sizes[i] + 12);
		assert_memory_equal(body, "A: 1\r\nB: 2\r\n", 12);
		assert_memory_equal(body + 12, b, sizes[i]);
		free(body);
		free(b);
		envelope_free(got);
	}
	queue_close(q);
	waiter_free(w);
	rmtree(dir);
	free(dir);
}

struct submitter {
	struct queue *q;
	struct tq *reply;
	uint64_t first, n;
};

static size_t
many_size(uint64_t r)
{
	return (size_t)((r * 997) % 20000) + 1;
}

static void *
submitter_main(void *arg)
{
	struct submitter *s = arg;
	for (uint64_t r = s->first; r < s->first + s->n; r++)
		submit(s->q, s->reply, r, many_size(r));
	return NULL;
}

static void
test_commit_concurrent(void **state)
{
	char *dir = mktmp("many");
	/* 4 KiB in memory: most bodies spill to tmp/ */
	struct queue *q = qopen(dir, 1 << 20, 4096, 0);
	struct waiter *w = waiter_new();
	struct submitter subs[4];
	pthread_t th[4];
	struct queue_stats st;

	queue_set_notify(q, w->tq);
	for (int i = 0; i < 4; i++) {
		subs[i] = (struct submitter){ q, w->tq, (uint64_t)i * 50, 50 };
		assert_int_equal(pthread_create(&th[i], NULL, submitter_main,
		    &subs[i]), 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	waiter_wait(w, 200);
	waiter_wait_new(w, 200);     /* indexed after the replies */
	assert_int_equal(w->nnew, 200);
	for (uint64_t r = 0; r < 200; r++) {
		assert_int_equal(w->res[r].st, Q_OK);
		for (uint64_t k = 0; k < r; k++)
			assert_true(w->res[k].qid != w->res[r].qid);
		check_message(q, w->res[r].qid, r, many_size(r));
	}
	queue_stats(q, &st);
	assert_int_equal(st.messages, 200);
	assert_int_equal(st.commits, 200);
	assert_true(st.batches >= 1);
	assert_true(st.batches < st.commits);   /* group commit happened */
	assert_true(st.segments >= 2);          /* ~2 MB over 1 MiB segments */
	print_message("200 commits in %llu batches over %llu segments\n",
	    (unsigned long long)st.batches, (unsigned long long)st.segments);
	queue_close(q);

	q = qopen(dir, 1 << 20, 4096, 0);
	for (uint64_t r = 0; r < 200; r++)
		check_message(q, w->res[r].qid, r, many_size(r));
	queue_close(q);
	waiter_free(w);
	rmtree(dir);
	free(dir);
}

/* kill -9: the child commits, reports every ack, and _exits mid-stream. */
static void
test_crash_recovery(void **state)
{
	char *dir = mktmp("crash");
	int fds[2];
	pid_t pid;
	uint64_t pairs[2 * 200];
	size_t npairs = 0;
	ssize_t n;
	int status;

	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct queue *q;
		struct waiter *w;
		size_t sent = 0;
		close(fds[0]);
		q = qopen(dir, 1 << 20, 8192, 0);
		w = waiter_new();
		for (uint64_t r = 0; r < 150; r++)
			submit(q, w->tq, r, 3000 + (size_t)r * 50);
		uint64_t end = now_mono_us() + 20000000u;
		while (sent < 100 && now_mono_us() < end) {
			event_base_loop(w->base, EVLOOP_ONCE);
			for (uint64_t r = 0; r < 150; r++) {
				uint64_t p[2];
				if (w->res[r].done != 1)
					continue;
				w->res[r].done = 2;
				if (w->res[r].st != Q_OK)
					_exit(3);
				p[0] = r;
				p[1] = w->res[r].qid;
				if (write(fds[1], p, sizeof(p)) != sizeof(p))
					_exit(4);
				sent++;
			}
		}
		_exit(0);   /* like kill -9: no close, no flush, no checkpoint */
	}
	close(fds[1]);
	while ((n = read(fds[0], &pairs[2 * npairs], 2 * sizeof(uint64_t))) > 0) {
		assert_int_equal(n, 2 * sizeof(uint64_t));
		npairs++;
	}
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_true(npairs >= 100);

	struct queue *q = qopen(dir, 1 << 20, 8192, 0);
	for (size_t i = 0; i < npairs; i++)
		check_message(q, pairs[2 * i + 1], pairs[2 * i],
		    3000 + (size_t)pairs[2 * i] * 50);
	assert_true(count_messages(q) >= npairs);
	queue_close(q);
	rmtree(dir);
	free(dir);
}

static void
file_write_at(const char *path, uint64_t off, const void *p, size_t n)
{
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, p, n, (off_t)off), (ssize_t)n);
	close(fd);
}

static void
file_flip(const char *path, uint64_t off)
{
	int fd = open(path, O_RDWR);
	unsigned char c;
	assert_true(fd >= 0);
	assert_int_equal(pread(fd, &c, 1, (off_t)off), 1);
	c ^= 0x20;
	assert_int_equal(pwrite(fd, &c, 1, (off_t)off), 1);
	close(fd);
}

/*
 * Commit three messages, one batch each (so in order) into one segment,
 * read back their envelopes, close q; path is that segment's file.
 */
static void
torn_three(const char *dir, struct queue *q, struct waiter *w,
    uint64_t qid[3], struct envelope *e[3], char *path, size_t pathlen)
{
	qnotify(q, w);
	for (uint64_t r = 0; r < 3; r++) {
		submit(q, w->tq, r, 5000);
		waiter_wait(w, r + 1);   /* one per batch: ordered */
		assert_int_equal(w->res[r].st, Q_OK);
		qid[r] = w->res[r].qid;
	}
	for (int i = 0; i < 3; i++)
		assert_int_equal(queue_get(q, qid[i], &e[i]), 0);
	queue_close(q);
	assert_int_equal(e[0]->seg, e[2]->seg);
	snprintf(path, pathlen, "%s/segments/%08x.seg", dir, e[2]->seg);
}

enum torn_kind { TORN_GARBAGE, TORN_TRUNCATE, TORN_FLIP_MIDDLE,
	TORN_FLIP_INDEXED };

static void
torn_case(enum torn_kind kind)
{
	char *dir = mktmp("torn"), path[4200];
	struct queue *q = qopen(dir, 1 << 20, 0, 0);
	struct waiter *w = waiter_new();
	struct envelope *e[3];
	uint64_t qid[3];
	char *body;
	size_t len;

	torn_three(dir, q, w, qid, e, path, sizeof(path));

	if (kind != TORN_FLIP_INDEXED) {
		/* the index never saw them: recovery must rebuild from the log */
		char db[4200];
		snprintf(db, sizeof(db), "%s/db", dir);
		rmtree(db);
	}
	switch (kind) {
	case TORN_GARBAGE: {
		char junk[300];
		for (size_t i = 0; i < sizeof(junk); i++)
			junk[i] = (char)(i * 31 + 7);
		file_write_at(path, e[2]->off + e[2]->rec_len, junk, sizeof(junk));
		break;
	}
	case TORN_TRUNCATE:
		assert_int_equal(truncate(path, (off_t)(e[2]->off +
		    e[2]->rec_len / 2)), 0);
		break;
	case TORN_FLIP_MIDDLE:
	case TORN_FLIP_INDEXED:
		file_flip(path, e[1]->off + 28 + e[1]->body_off + 100);
		break;
	}

	q = qopen(dir, 1 << 20, 0, 0);
	qnotify(q, w);
	check_message(q, qid[0], 0, 5000);
	if (kind == TORN_GARBAGE) {
		check_message(q, qid[1], 1, 5000);
		check_message(q, qid[2], 2, 5000);
		assert_int_equal(count_messages(q), 3);
	} else {
		/* the damaged one is held and reported, never silently dropped */
		int bad = kind == TORN_TRUNCATE ? 2 : 1;
		struct envelope *d = NULL;
		struct queue_stats st;
		assert_int_equal(queue_get(q, qid[bad], &d), 0);
		/* an entry the recovery scan made was checked by it; one
		 * indexed before is checked by the background walk, or when
		 * its body is read, whichever comes first */
		if (kind != TORN_FLIP_INDEXED)
			assert_true(d->flags & ENV_F_CORRUPT);
		errno = 0;
		assert_int_equal(queue_read_body(q, d, &body, &len), -1);
		/*
		 * Cut short (EOF inside the record) and a CRC mismatch both
		 * mean a damaged record: EBADMSG, never EIO (an I/O error the
		 * caller would retry).
		 */
		assert_int_equal(errno, EBADMSG);
		envelope_free(d);
		assert_int_equal(queue_get(q, qid[bad], &d), 0);
		assert_true(d->flags & ENV_F_CORRUPT);
		envelope_free(d);
		if (kind != TORN_TRUNCATE)
			check_message(q, qid[2], 2, 5000);
		queue_stats(q, &st);
		assert_int_equal(st.messages, 3);
		assert_int_equal(st.corrupt, 1);
	}
	/* the queue still accepts, and a second recovery agrees */
	submit(q, w->tq, 3, 100);
	waiter_wait(w, 4);
	assert_int_equal(w->res[3].st, Q_OK);
	queue_close(q);
	q = qopen(dir, 1 << 20, 0, 0);
	check_message(q, w->res[3].qid, 3, 100);
	assert_int_equal(count_messages(q), 4);
	queue_close(q);
	for (int i = 0; i < 3; i++)
		envelope_free(e[i]);
	waiter_free(w);
	rmtree(dir);
	free(dir);
}

static void test_torn_garbage(void **s) { torn_case(TORN_GARBAGE); }
static void test_torn_truncate(void **s) { torn_case(TORN_TRUNCATE); }
static void test_torn_flip_unindexed(void **s) { torn_case(TORN_FLIP_MIDDLE); }
static void test_torn_flip_indexed(void **s) { torn_case(TORN_FLIP_INDEXED); }

/*
 * Damage seg_record_read (queue/store/segment.c) must cut at or hold, one case
 * each: three 5000-byte records in one segment, the index removed so that
 * recovery rebuilds it from the log, then one record's header or envelope
 * patched (or the file cut inside it). The log (stderr) of the recovering
 * queue_open is captured to check the reason it gives.
 */
/*
 * The held cases also check the id floor: recovery's index walk once
 * counted a placeholder's key (seq | SEG_PLACEHOLDER_ID) as an id, so every
 * later message got bit 63 and was held as corrupt at the next start.
 */

enum torn_hdr_kind { TH_VERSION, TH_EPOCH, TH_SEQ, TH_PAYLOAD_SMALL,
	TH_PAYLOAD_HUGE, TH_ENVLEN_MAX, TH_ENVLEN_PAYLOAD, TH_CUT_ENVELOPE,
	TH_CUT_BEFORE_ENVELOPE };

static const struct {
	int rec;                /* the damaged record (0..2) */
	const char *why;        /* its reason in the log; NULL: clean end */
	int held;               /* 1: held as corrupt, 0: the log ends there */
} torn_hdr_want[] = {
	[TH_VERSION] = { 1, "unknown record version", 0 },
	[TH_EPOCH] = { 1, NULL, 0 },
	[TH_SEQ] = { 1, "sequence not increasing", 0 },
	[TH_PAYLOAD_SMALL] = { 1, "payload length out of bounds", 0 },
	[TH_PAYLOAD_HUGE] = { 1, "payload length out of bounds", 0 },
	[TH_ENVLEN_MAX] = { 2, "envelope length out of bounds", 1 },
	[TH_ENVLEN_PAYLOAD] = { 1, "envelope length out of bounds", 1 },
	[TH_CUT_ENVELOPE] = { 2, "record cut inside its envelope", 1 },
	[TH_CUT_BEFORE_ENVELOPE] = { 2, "record cut before its envelope", 1 },
};

static uint64_t
file_read_be(const char *path, uint64_t off, int n)
{
	unsigned char b[8];
	uint64_t v = 0;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0 && n <= 8);
	assert_int_equal(pread(fd, b, (size_t)n, (off_t)off), n);
	close(fd);
	for (int i = 0; i < n; i++)
		v = v << 8 | b[i];
	return v;
}

static void
file_write_be(const char *path, uint64_t off, uint64_t v, int n)
{
	unsigned char b[8];

	for (int i = n - 1; i >= 0; i--, v >>= 8)
		b[i] = (unsigned char)v;
	file_write_at(path, off, b, (size_t)n);
}

/* qopen() with stderr, where log lines go, captured into *logp. */
static struct queue *
qopen_logged(const char *dir, char **logp)
{
	struct queue_opts o = { .dir = dir, .segment_size = 1 << 20,
	    .spool_memory = 256 << 10, .spool_budget = 64 << 20 };
	struct queue *q = NULL;
	char err[256] = "", path[4200];
	int fd, saved = dup(STDERR_FILENO), rc;
	off_t n;

	snprintf(path, sizeof(path), "%s.log", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0 && saved >= 0);
	assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	rc = queue_open(&o, &q, err, sizeof(err));
	assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	n = lseek(fd, 0, SEEK_END);
	assert_true(n >= 0);
	*logp = calloc(1, (size_t)n + 1);
	assert_int_equal(pread(fd, *logp, (size_t)n, 0), n);
	close(fd);
	unlink(path);
	fputs(*logp, stderr);
	if (rc < 0)
		fail_msg("queue_open %s: %s", dir, err);
	return q;
}

struct torn_held {
	size_t n;
	uint64_t id;            /* the last corrupt envelope's id */
	int corrupt;
};

static int
torn_held_walk(void *arg, const struct envelope *env)
{
	struct torn_held *h = arg;

	h->n++;
	if (env->flags & ENV_F_CORRUPT) {
		h->corrupt++;
		h->id = env->id;
	}
	return 0;
}

static void
torn_hdr_case(enum torn_hdr_kind kind)
{
	char *dir = mktmp("tornhdr"), path[4200], db[4200], want[512], *log;
	struct queue *q = qopen(dir, 1 << 20, 0, 0);
	struct waiter *w = waiter_new();
	struct envelope *e[3], *d = NULL;
	struct torn_held h = { 0 };
	struct queue_stats st;
	uint64_t qid[3], seq[3], off, envlen;
	int rec = torn_hdr_want[kind].rec, held = torn_hdr_want[kind].held;
	size_t expect = held ? 3 : (size_t)rec, len;
	char *body;

	torn_three(dir, q, w, qid, e, path, sizeof(path));
	snprintf(db, sizeof(db), "%s/db", dir);
	rmtree(db);
	for (int i = 0; i < 3; i++)
		seq[i] = file_read_be(path, e[i]->off + 12, 8);
	assert_true(seq[0] < seq[1] && seq[1] < seq[2]);

	/* header: magic 0, version 4, flags 6, epoch 8, seq 12, payload_len
	 * 20, crc 24; then the u32 envelope length at 28 */
	off = e[rec]->off;
	envlen = e[rec]->body_off - 4;
	switch (kind) {
	case TH_VERSION:
		file_write_be(path, off + 4, file_read_be(path, off + 4, 2) + 1, 2);
		break;
	case TH_EPOCH:          /* a record of the file's earlier use */
		assert_int_equal(file_read_be(path, off + 8, 4), e[rec]->seg);
		file_write_be(path, off + 8, e[rec]->seg - 1, 4);
		break;
	case TH_SEQ:            /* equal to the previous one's: not greater */
		file_write_be(path, off + 12, seq[rec - 1], 8);
		break;
	case TH_PAYLOAD_SMALL:  /* cannot even hold the envelope length */
		file_write_be(path, off + 20, 3, 4);
		break;
	case TH_PAYLOAD_HUGE:   /* the first value where 28 + len overflows u32 */
		file_write_be(path, off + 20, UINT32_MAX - 27, 4);
		break;
	case TH_ENVLEN_MAX:
		/* over the 4 MiB envelope cap, yet inside a (claimed) 8 MiB
		 * payload: only the cap catches it (else "cut inside") */
		file_write_be(path, off + 20, 8u << 20, 4);
		file_write_be(path, off + 28, (4u << 20) + 1, 4);
		break;
	case TH_ENVLEN_PAYLOAD: /* one byte longer than the payload allows */
		file_write_be(path, off + 28,
		    file_read_be(path, off + 20, 4) - 3, 4);
		break;
	case TH_CUT_ENVELOPE:
		assert_int_equal(truncate(path, (off_t)(off + 28 + 4 +
		    envlen / 2)), 0);
		break;
	case TH_CUT_BEFORE_ENVELOPE:
		assert_int_equal(truncate(path, (off_t)(off + 28 + 2)), 0);
		break;
	}

	q = qopen_logged(dir, &log);
	qnotify(q, w);
	/* the records before the damage come back intact */
	for (int i = 0; i < rec; i++)
		check_message(q, qid[i], (uint64_t)i, 5000);
	if (torn_hdr_want[kind].why == NULL) {
		/* a clean end of the log: no warning at all */
		assert_null(strstr(log, "log cut here"));
		assert_null(strstr(log, "held as corrupt"));
	} else {
		snprintf(want, sizeof(want), "segment=%08x offset=%llu: %s: %s",
		    e[rec]->seg, (unsigned long long)off, torn_hdr_want[kind].why,
		    held ? "held as corrupt" : "log cut here");
		if (strstr(log, want) == NULL)
			fail_msg("log lacks \"%s\"", want);
	}
	snprintf(want, sizeof(want), "scanned=%zu reindexed=%zu damaged=%d ",
	    held ? (size_t)3 : (size_t)rec, expect, held);
	if (strstr(log, want) == NULL)
		fail_msg("log lacks \"%s\"", want);
	free(log);

	/* the damaged record's own id is never indexed */
	assert_int_not_equal(queue_get(q, qid[rec], &d), 0);
	assert_int_equal(queue_walk(q, torn_held_walk, &h), 0);
	assert_int_equal(h.n, expect);
	queue_stats(q, &st);
	assert_int_equal(st.messages, expect);
	assert_int_equal(st.corrupt, held);
	assert_int_equal(h.corrupt, held);
	if (held) {
		/* a placeholder under seq | bit 63 (queue_int.h
		 * SEG_PLACEHOLDER_ID), its body refused */
		assert_true(h.id == (seq[rec] | 1ULL << 63));
		assert_int_equal(queue_get(q, h.id, &d), 0);
		assert_true(d->flags & ENV_F_CORRUPT);
		assert_true(d->seg == e[rec]->seg && d->off == off);
		errno = 0;
		assert_int_equal(queue_read_body(q, d, &body, &len), -1);
		assert_int_equal(errno, EBADMSG);
		envelope_free(d);
		/* a held record does not end the scan: the next one is read */
		if (rec == 1)
			check_message(q, qid[2], 2, 5000);
	} else {
		/* the log ends at the damage: nothing after it comes back */
		for (int i = rec; i < 3; i++)
			assert_int_not_equal(queue_get(q, qid[i], &d), 0);
	}

	/* the queue still accepts, and a second recovery agrees */
	submit(q, w->tq, 3, 100);
	waiter_wait(w, 4);
	assert_int_equal(w->res[3].st, Q_OK);
	queue_close(q);
	q = qopen(dir, 1 << 20, 0, 0);
	queue_stats(q, &st);
	assert_int_equal(st.messages, expect + 1);
	assert_false(w->res[3].qid & 1ULL << 63);
	check_message(q, w->res[3].qid, 3, 100);
	assert_int_equal(st.corrupt, held);
	queue_close(q);
	for (int i = 0; i < 3; i++)
		envelope_free(e[i]);
	waiter_free(w);
	rmtree(dir);
	free(dir);
}

/*
 * Each case runs in a child process of its own (a nested cmocka run, so a
 * failed assertion ends the child, whose status the parent checks): the
 * id floor recovery raises (qid_seen) is process-wide, and a case that
 * failed on it must not leave later tests in this file with bit-63 ids.
 */
static enum torn_hdr_kind torn_hdr_kind_run;

static void
torn_hdr_child(void **s)
{
	torn_hdr_case(torn_hdr_kind_run);
}

static void
torn_hdr_forked(enum torn_hdr_kind kind)
{
	int status;
	pid_t pid;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		const struct CMUnitTest one[] = {
			cmocka_unit_test(torn_hdr_child),
		};
		torn_hdr_kind_run = kind;
		_exit(cmocka_run_group_tests(one, NULL, NULL) == 0 ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_torn_version(void **s) { torn_hdr_forked(TH_VERSION); }
static void test_torn_stale_epoch(void **s) { torn_hdr_forked(TH_EPOCH); }
static void test_torn_seq(void **s) { torn_hdr_forked(TH_SEQ); }
static void test_torn_payload_small(void **s) { torn_hdr_forked(TH_PAYLOAD_SMALL); }
static void test_torn_payload_huge(void **s) { torn_hdr_forked(TH_PAYLOAD_HUGE); }
static void test_torn_envlen_max(void **s) { torn_hdr_forked(TH_ENVLEN_MAX); }
static void test_torn_envlen_payload(void **s) { torn_hdr_forked(TH_ENVLEN_PAYLOAD); }
static void test_torn_cut_envelope(void **s) { torn_hdr_forked(TH_CUT_ENVELOPE); }
static void test_torn_cut_before_envelope(void **s)
{
	torn_hdr_forked(TH_CUT_BEFORE_ENVELOPE);
}

static size_t
count_files(const char *dir, const char *suffix)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;
	assert_non_null(d);
	while ((de = readdir(d)) != NULL) {
		size_t l = strlen(de->d_name), sl = strlen(suffix);
		if (l > sl && strcmp(de->d_name + l - sl, suffix) == 0)
			n++;
	}
	closedir(d);
	return n;
}

/*
 * Removals in one transaction: the ids there go (counts follow, a second
 * batch finds them gone), an unknown id is reported gone, the others stay,
 * and a batch above the bound is refused whole.
 */
static void
test_remove_many(void **state)
{
	char *dir = mktmp("rmmany");
	struct queue *q = qopen(dir, 64 << 10, 0, 0);
	struct waiter *w = waiter_new();
	struct queue_counts c;
	struct envelope *e = NULL;
	uint64_t ids[QUEUE_REMOVE_BATCH + 1];
	int gone[QUEUE_REMOVE_BATCH + 1];
	(void)state;

	qnotify(q, w);
	for (uint64_t r = 0; r < 10; r++)
		submit(q, w->tq, r, 1000);
	waiter_wait(w, 10);
	for (size_t i = 0; i < 5; i++)
		ids[i] = w->res[2 * i].qid;
	ids[5] = 12345;                         /* never queued */
	assert_int_equal(queue_remove_many(q, ids, 6, gone), 0);
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(gone[i], 0);
	assert_int_equal(gone[5], 1);
	for (uint64_t r = 0; r < 10; r++) {
		int rc = queue_get(q, w->res[r].qid, &e);
		assert_int_equal(rc, r % 2 == 0 ? 1 : 0);
		envelope_free(e);
		e = NULL;
	}
	assert_int_equal(queue_counts(q, &c), 0);
	assert_int_equal(c.messages, 5);
	assert_int_equal(queue_remove_many(q, ids, 2, gone), 0);
	assert_true(gone[0] && gone[1]);
	for (size_t i = 0; i <= QUEUE_REMOVE_BATCH; i++)
		ids[i] = w->res[1].qid;
	errno = 0;
	assert_int_equal(queue_remove_many(q, ids, QUEUE_REMOVE_BATCH + 1,
	    gone), -1);
	assert_int_equal(errno, EINVAL);
	assert_int_equal(queue_get(q, w->res[1].qid, &e), 0);
	envelope_free(e);
	queue_close(q);
	waiter_free(w);
	rmtree(dir);
	free(dir);
}

static void
test_remove_recycle(void **state)
{
	char *dir = mktmp("recycle"), segdir[4200];
	/* 64 KiB segments, 10 KB messages: about 6 per segment */
	struct queue *q = qopen(dir, 64 << 10, 0, 0);
	struct waiter *w = waiter_new();
	struct queue_stats st;
	struct envelope *e = NULL;
	uint32_t last_seg;
	size_t before, after;

	qnotify(q, w);
	snprintf(segdir, sizeof(segdir), "%s/segments", dir);
	for (uint64_t r = 0; r < 30; r++)
		submit(q, w->tq, r, 10000);
	waiter_wait(w, 30);
	assert_int_equal(queue_get(q, w->res[29].qid, &e), 0);
	last_seg = e->seg;
	envelope_free(e);
	queue_stats(q, &st);
	before = st.segments;
	assert_true(before >= 4);
	assert_int_equal(count_files(segdir, ".seg"), before);

	/* remove everything outside the current segment */
	size_t kept = 0;
	for (uint64_t r = 0; r < 30; r++) {
		assert_int_equal(queue_get(q, w->res[r].qid, &e), 0);
		if (e->seg != last_seg)
			assert_int_equal(queue_remove(q, w->res[r].qid), 0);
		else
			kept++;
		envelope_free(e);
	}
	errno = 0;
	assert_int_equal(queue_remove(q, w->res[0].qid), -1);
	assert_int_equal(errno, ENOENT);
	/* housekeeping recycles once the removals are flushed */
	for (int i = 0; i < 50; i++) {
		queue_stats(q, &st);
		if (st.segments == 1)
			break;
		usleep(100000);
	}
	assert_int_equal(st.segments, 1);
	assert_int_equal(st.messages, kept);
	after = count_files(segdir, ".seg");
	assert_int_equal(after, 1);
	for (uint64_t r = 0; r < 30; r++) {
		int rc = queue_get(q, w->res[r].qid, &e);
		if (rc == 0) {
			check_message(q, w->res[r].qid, r, 10000);
			envelope_free(e);
		}
	}
	queue_close(q);

	/* nothing removed comes back, and the recycled files hold no live data */
	q = qopen(dir, 64 << 10, 0, 0);
	assert_int_equal(count_messages(q), kept);
	for (uint64_t r = 0; r < 30; r++) {
		if (queue_get(q, w->res[r].qid, &e) == 0) {
			assert_int_equal(e->seg, last_seg);
			envelope_free(e);
			check_message(q, w->res[r].qid, r, 10000);
		}
	}
	queue_close(q);
	waiter_free(w);
	rmtree(dir);
	free(dir);
}

/*
 * Copy-forward: segments that hold only a few live records are emptied by
 * writing those records again; the envelopes' state is kept, old locations
 * still read (the index is asked again), and a restart finds the same.
 */
static void
test_copy_forward(void **state)
{
	char *dir = mktmp("cf"), segdir[4200];
	struct queue *q = qopen(dir, 64 << 10, 0, 0);
	struct waiter *w = waiter_new();
	struct envelope *e = NULL, *stale = NULL;
	uint32_t first_seg, last_seg, seen = 0;
	uint64_t keep[30];
	size_t nkeep = 0, inlast = 0;
	int moved = 0;

	qnotify(q, w);
	snprintf(segdir, sizeof(segdir), "%s/segments", dir);
	for (uint64_t r = 0; r < 30; r++)
		submit(q, w->tq, r, 10000);
	waiter_wait(w, 30);
	assert_int_equal(queue_get(q, w->res[0].qid, &e), 0);
	first_seg = e->seg;
	envelope_free(e);
	assert_int_equal(queue_get(q, w->res[29].qid, &e), 0);
	last_seg = e->seg;
	envelope_free(e);
	assert_true(last_seg >= first_seg + 3);

	/* keep the first message of every older segment, remove the rest */
	for (uint64_t r = 0; r < 30; r++) {
		assert_int_equal(queue_get(q, w->res[r].qid, &e), 0);
		if (e->seg != last_seg && e->seg != seen) {
			seen = e->seg;
			keep[nkeep++] = r;
		} else if (e->seg != last_seg)
			assert_int_equal(queue_remove(q, w->res[r].qid), 0);
		else
			inlast++;
		envelope_free(e);
	}
	assert_true(nkeep >= 3);
	/* state written meanwhile is kept by the move */
	assert_int_equal(queue_get(q, w->res[keep[0]].qid, &stale), 0);
	e = envelope_dup(stale);
	e->attempts = 7;
	e->next_attempt = 12345;
	assert_int_equal(queue_update(q, e), 0);
	envelope_free(e);

	/* housekeeping moves them (one segment a second) and recycles */
	for (int i = 0; i < 150 && !moved; i++) {
		usleep(100000);
		moved = 1;
		for (size_t k = 0; k < nkeep && moved; k++) {
			assert_int_equal(queue_get(q, w->res[keep[k]].qid, &e), 0);
			moved = e->seg >= last_seg;
			envelope_free(e);
		}
		if (moved)
			moved = count_files(segdir, ".seg") <= 2;
	}
	assert_true(moved);
	for (size_t k = 0; k < nkeep; k++)
		check_message(q, w->res[keep[k]].qid, keep[k], 10000);
	assert_int_equal(queue_get(q, w->res[keep[0]].qid, &e), 0);
	assert_int_equal(e->attempts, 7);
	assert_true(e->next_attempt == 12345);
	assert_true(e->seg != stale->seg);
	envelope_free(e);
	/* a reader holding the old location still gets the body */
	{
		char *body = NULL, *want = body_make(keep[0], 10000);
		size_t len;
		assert_int_equal(queue_read_body(q, stale, &body, &len), 0);
		assert_int_equal(len, 10000);
		assert_memory_equal(body, want, 10000);
		free(body);
		free(want);
	}
	envelope_free(stale);
	assert_int_equal(count_messages(q), nkeep + inlast);
	queue_close(q);

	/* a restart finds every kept message, nowhere near the old segments */
	q = qopen(dir, 64 << 10, 0, 0);
	assert_int_equal(count_messages(q), nkeep + inlast);
	for (size_t k = 0; k < nkeep; k++) {
		assert_int_equal(queue_get(q, w->res[keep[k]].qid, &e), 0);
		assert_true(e->seg >= last_seg);
		assert_int_equal(e->flags & ENV_F_CORRUPT, 0);
		envelope_free(e);
		check_message(q, w->res[keep[k]].qid, keep[k], 10000);
	}
	queue_close(q);
	waiter_free(w);
	rmtree(dir);
	free(dir);
}

/* kill -9 at several moments around a copy-forward: nothing live is lost,
 * nothing removed (and flushed) comes back, no body is held as corrupt */
static void
test_copy_forward_crash(void **state)
{
	static const unsigned delays_ms[] = { 0, 30, 120, 400 };

	for (size_t d = 0; d < sizeof(delays_ms) / sizeof(delays_ms[0]); d++) {
		char *dir = mktmp("cfcrash");
		uint64_t pairs[2 * 30];
		size_t npairs = 0;
		ssize_t n;
		int fds[2], status;
		pid_t pid;

		assert_int_equal(pipe(fds), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			struct queue *q = qopen(dir, 64 << 10, 0, 0);
			struct waiter *w = waiter_new();
			struct envelope *e;
			uint32_t last_seg, seen = 0, first = 0;
			uint64_t firstq = 0;

			close(fds[0]);
			qnotify(q, w);          /* wait for indexed, not only durable */
			for (uint64_t r = 0; r < 30; r++)
				submit(q, w->tq, r, 10000);
			waiter_wait(w, 30);
			if (queue_get(q, w->res[29].qid, &e) != 0)
				_exit(3);
			last_seg = e->seg;
			envelope_free(e);
			for (uint64_t r = 0; r < 30; r++) {
				uint64_t p[2] = { r, w->res[r].qid };
				if (queue_get(q, w->res[r].qid, &e) != 0)
					_exit(3);
				if (e->seg != last_seg && e->seg != seen) {
					seen = e->seg;
					if (first == 0) {
						first = e->seg;
						firstq = p[1];
					}
				} else if (e->seg != last_seg) {
					if (queue_remove(q, p[1]) != 0)
						_exit(4);
					envelope_free(e);
					continue;
				}
				envelope_free(e);
				if (write(fds[1], p, sizeof(p)) != sizeof(p))
					_exit(5);
			}
			close(fds[1]);
			usleep(300000);          /* the removals are flushed */
			for (int i = 0; i < 500; i++) {
				if (queue_get(q, firstq, &e) != 0)
					_exit(6);
				int gone = e->seg != first;
				envelope_free(e);
				if (gone)
					break;
				usleep(10000);
			}
			usleep(delays_ms[d] * 1000u);
			kill(getpid(), SIGKILL);
			_exit(7);
		}
		close(fds[1]);
		while ((n = read(fds[0], &pairs[2 * npairs],
		    2 * sizeof(uint64_t))) > 0) {
			assert_int_equal(n, 2 * sizeof(uint64_t));
			npairs++;
		}
		close(fds[0]);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
			fail_msg("child: status %#x", status);
		assert_true(npairs >= 6);

		struct queue *q = qopen(dir, 64 << 10, 0, 0);
		assert_int_equal(count_messages(q), npairs);
		for (size_t i = 0; i < npairs; i++)
			check_message(q, pairs[2 * i + 1], pairs[2 * i], 10000);
		queue_close(q);
		rmtree(dir);
		free(dir);
	}
}

/*
 * Forge one record after the end of the log of a queue holding message A,
 * as recovery will find it: id, envelope flags, CRC salt as given. Returns
 * what the reopened queue holds under id (queue_get: 0 found, 1 not).
 */
static int
forged_record_recovered(const char *tag, uint32_t env_flags, int wrong_salt,
    struct envelope **found)
{
	char *dir = mktmp(tag), path[4300], segdir[4200], saltbuf[16] = "";
	struct queue *q = qopen(dir, 1 << 20, 0, 0);
	struct waiter *w = waiter_new();
	struct envelope *a = NULL, *e = envelope_new();
	static const char body[] = "Subject: forged\r\n\r\nnot sent by anyone\r\n";
	uint8_t *enc, *rec, hb[SEG_HDR_LEN];
	size_t enclen, payload, len;
	uint32_t salt = 0, crc;
	uint64_t id;
	struct seg_hdr h;
	int fd, rc;

	qnotify(q, w);
	submit(q, w->tq, 1, 500);
	waiter_wait(w, 1);
	assert_int_equal(queue_get(q, w->res[1].qid, &a), 0);
	queue_close(q);

	/* the salt file a new queue gets: 8 hex digits */
	snprintf(path, sizeof(path), "%s/salt", dir);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	assert_int_equal(read(fd, saltbuf, sizeof(saltbuf) - 1), 8);
	close(fd);
	assert_int_equal(sscanf(saltbuf, "%8x", &salt), 1);
	assert_true(salt != 0);

	id = a->id + 777;
	e->id = id;
	e->flags = env_flags;
	e->sender = strdup("forger@example.org");
	e->arrival = 1;
	e->size = sizeof(body) - 1;
	envelope_add_rcpt(e, "victim@example.com", NULL, 0);
	assert_int_equal(envelope_encode(e, &enc, &enclen), 0);
	payload = 4 + enclen + e->size;
	len = SEG_HDR_LEN + payload;
	rec = calloc(1, len);
	queue_be32(rec + SEG_HDR_LEN, (uint32_t)enclen);
	memcpy(rec + SEG_HDR_LEN + 4, enc, enclen);
	memcpy(rec + SEG_HDR_LEN + 4 + enclen, body, e->size);
	memset(&h, 0, sizeof(h));
	h.magic = SEG_MAGIC;
	h.version = SEG_VERSION;
	h.epoch = a->seg;
	h.seq = a->id + (1ull << 40);   /* above A's (ids are microseconds) */
	h.payload_len = (uint32_t)payload;
	seg_hdr_encode(&h, hb);
	crc = crc32c(crc32c(wrong_salt ? 0 : salt, hb, SEG_HDR_LEN),
	    rec + SEG_HDR_LEN, payload);
	h.crc = crc;
	seg_hdr_encode(&h, rec);
	snprintf(segdir, sizeof(segdir), "%s/segments", dir);
	seg_path(segdir, a->seg, path, sizeof(path));
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, rec, len, (off_t)(a->off + a->rec_len)),
	    (ssize_t)len);
	close(fd);

	q = qopen(dir, 1 << 20, 0, 0);
	rc = queue_get(q, id, found);
	check_message(q, w->res[1].qid, 1, 500);        /* A is untouched */
	queue_close(q);
	free(rec);
	free(enc);
	envelope_free(e);
	envelope_free(a);
	waiter_free(w);
	rmtree(dir);
	free(dir);
	return rc;
}

/*
 * A copy-forward record whose id the index lacks is the copy of a removed
 * message: recovery does not bring it back (a plain record, the control,
 * it does index).
 */
static void
test_copy_of_removed_not_recovered(void **state)
{
	struct envelope *e = NULL;

	assert_int_equal(forged_record_recovered("cfplain", 0, 0, &e), 0);
	assert_int_equal(e->flags & (ENV_F_CORRUPT | ENV_F_COPY), 0);
	envelope_free(e);
	e = NULL;
	assert_int_equal(forged_record_recovered("cfcopy", ENV_F_COPY, 0, &e), 1);
	assert_null(e);
}

/*
 * Records carry CRCs from the queue's random salt: a record whose CRC was
 * made without it (as bytes a sender put in a body, later found in a
 * recycled file, would be) is never taken as a message: held as corrupt.
 */
static void
test_crc_salt(void **state)
{
	struct envelope *e = NULL;

	assert_int_equal(forged_record_recovered("saltbad", 0, 1, &e), 0);
	assert_true(e->flags & ENV_F_CORRUPT);
	envelope_free(e);
}

static void
test_oversized(void **state)
{
	char *dir = mktmp("big");
	struct queue *q = qopen(dir, 128 << 10, 64 << 10, 0);
	struct waiter *w = waiter_new();

	qnotify(q, w);
	submit(q, w->tq, 0, 1000);
	submit(q, w->tq, 1, 700000);      /* > segment: a segment of its own */
	submit(q, w->tq, 2, 1000);
	waiter_wait(w, 3);
	for (int r = 0; r < 3; r++)
		assert_int_equal(w->res[r].st, Q_OK);
	check_message(q, w->res[1].qid, 1, 700000);
	queue_close(q);
	q = qopen(dir, 128 << 10, 64 << 10, 0);
	check_message(q, w->res[0].qid, 0, 1000);
	check_message(q, w->res[1].qid, 1, 700000);
	check_message(q, w->res[2].qid, 2, 1000);
	queue_close(q);
	waiter_free(w);
	rmtree(dir);
	free(dir);
}

static void
test_update(void **state)
{
	char *dir = mktmp("upd");
	struct queue *q = qopen(dir, 1 << 20, 0, 0);
	struct waiter *w = waiter_new();
	struct envelope *e = NULL, *f = NULL;

	qnotify(q, w);
	submit(q, w->tq, 0, 300);
	waiter_wait(w, 1);
	assert_int_equal(queue_get(q, w->res[0].qid, &e), 0);
	e->flags |= ENV_F_HOLD;
	e->rcpts[0].state = RCPT_SENT;
	e->attempts = 2;
	e->off = 12345;          /* not the caller's to change */
	assert_int_equal(queue_update(q, e), 0);
	queue_close(q);
	q = qopen(dir, 1 << 20, 0, 0);
	assert_int_equal(queue_get(q, w->res[0].qid, &f), 0);
	assert_true(f->flags & ENV_F_HOLD);
	assert_int_equal(f->rcpts[0].state, RCPT_SENT);
	assert_int_equal(f->attempts, 2);
	assert_true(f->off != 12345);
	check_message(q, w->res[0].qid, 0, 300);
	e->id += 1000;
	errno = 0;
	assert_int_equal(queue_update(q, e), -1);
	assert_int_equal(errno, ENOENT);
	struct queue_stats st;
	queue_stats(q, &st);
	assert_int_equal(st.held, 1);
	envelope_free(e);
	envelope_free(f);
	queue_close(q);
	waiter_free(w);
	rmtree(dir);
	free(dir);
}

/* Concatenated "name size mtime" of every file under dir. */
static void
snapshot(const char *dir, char *out, size_t outlen)
{
	char cmd[4300];
	FILE *f;
	size_t n;
	snprintf(cmd, sizeof(cmd), "cd '%s' && find . -type f -printf "
	    "'%%p %%s %%T@\\n' | sort", dir);
	f = popen(cmd, "r");
	assert_non_null(f);
	n = fread(out, 1, outlen - 1, f);
	out[n] = '\0';
	pclose(f);
}

static int
walk_count(void *arg, const struct envelope *e)
{
	(*(size_t *)arg)++;
	return 0;
}

/*
 * queue_verify() on a live queue, then the index deleted: the open rebuilds
 * it from the segments. Removed messages whose segment is still there come
 * back (the segments do not record removals: doc/queue.md); none is lost.
 */
static void
test_index_rebuild_verify(void **state)
{
	char *dir = mktmp("rebuild"), path[4200];
	struct queue *q = qopen(dir, 1 << 20, 0, 0);
	struct waiter *w = waiter_new();
	struct queue_verify v;

	queue_set_notify(q, w->tq);
	for (uint64_t r = 0; r < 10; r++)
		submit(q, w->tq, r, 3000);
	waiter_wait(w, 10);
	waiter_wait_new(w, 10);         /* indexed */
	for (uint64_t r = 0; r < 3; r++)
		assert_int_equal(queue_remove(q, w->res[r].qid), 0);
	assert_int_equal(queue_verify(q, &v, NULL, NULL), 0);
	assert_int_equal(v.entries, 7);
	assert_int_equal(v.records, 10);
	assert_int_equal(v.dead, 3);
	assert_int_equal(v.differences, 0);
	queue_close(q);

	snprintf(path, sizeof(path), "%s/db/envelopes.db", dir);
	assert_int_equal(unlink(path), 0);
	/* the rebuild brings back the 7 queued, not the 3 removed (their
	 * records carry the removal mark) */
	q = qopen(dir, 1 << 20, 0, 0);
	assert_int_equal(count_messages(q), 7);
	for (uint64_t r = 0; r < 10; r++) {
		struct envelope *gone = NULL;
		if (r >= 3)
			check_message(q, w->res[r].qid, r, 3000);
		else
			assert_int_equal(queue_get(q, w->res[r].qid, &gone), 1);
	}
	assert_int_equal(queue_verify(q, &v, NULL, NULL), 0);
	assert_int_equal(v.differences, 0);
	assert_int_equal(v.dead, 3);
	queue_close(q);

	/* an index record pointing nowhere is a difference, offline too */
	q = qopen(dir, 1 << 20, 0, 0);
	struct envelope *e = NULL;
	assert_int_equal(queue_get(q, w->res[5].qid, &e), 0);
	queue_close(q);
	snprintf(path, sizeof(path), "%s/segments/%08x.seg", dir, e->seg);
	int fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "garbage!", 8, (off_t)(e->off + e->rec_len - 10)), 8);
	close(fd);
	envelope_free(e);
	q = qopen(dir, 1 << 20, 0, 1);
	assert_int_equal(queue_verify(q, &v, NULL, NULL), 0);
	assert_int_equal(v.damaged, 1);
	assert_int_equal(v.differences, 1);
	queue_close(q);
	waiter_free(w);
	rmtree(dir);
	free(dir);
}

static void
test_readonly(void **state)
{
	char *dir = mktmp("ro");
	struct queue *q = qopen(dir, 1 << 20, 0, 0), *ro;
	struct waiter *w = waiter_new();
	struct queue_opts o = { .dir = dir, .segment_size = 1 << 20,
	    .readonly = 1 };
	char err[256], *before = malloc(65536), *after = malloc(65536);
	struct envelope *e = NULL;
	size_t n = 0;

	for (uint64_t r = 0; r < 5; r++)
		submit(q, w->tq, r, 2000);
	waiter_wait(w, 5);
	/* a reader may not open while the writer runs */
	ro = NULL;
	assert_int_equal(queue_open(&o, &ro, err, sizeof(err)), -1);
	assert_null(ro);
	queue_close(q);

	snapshot(dir, before, 65536);
	ro = qopen(dir, 1 << 20, 0, 1);
	for (uint64_t r = 0; r < 5; r++)
		check_message(ro, w->res[r].qid, r, 2000);
	assert_int_equal(queue_walk(ro, walk_count, &n), 0);
	assert_int_equal(n, 5);
	assert_int_equal(queue_get(ro, w->res[0].qid, &e), 0);
	errno = 0;
	assert_int_equal(queue_update(ro, e), -1);
	assert_int_equal(errno, EROFS);
	assert_int_equal(queue_remove(ro, e->id), -1);
	envelope_free(e);
	submit(ro, w->tq, 5, 10);
	waiter_wait(w, 6);
	assert_int_equal(w->res[5].st, Q_TEMPFAIL);
	assert_int_equal(w->res[5].err, EROFS);
	queue_close(ro);
	snapshot(dir, after, 65536);
	assert_string_equal(before, after);   /* nothing written */
	free(before);
	free(after);
	waiter_free(w);
	rmtree(dir);
	free(dir);
}

static void
test_status_reply(void **state)
{
	static const struct {
		enum q_status st;
		int err, code;
		const char *enh;
	} cases[] = {
		{ Q_OK, 0, 250, "2.0.0" },
		{ Q_TEMPFAIL, ENOSPC, 452, "4.3.1" },
		{ Q_TEMPFAIL, EDQUOT, 452, "4.3.1" },
		{ Q_TEMPFAIL, EIO, 451, "4.3.0" },
		{ Q_TEMPFAIL, 0, 451, "4.3.0" },
		{ Q_PERMFAIL, EFBIG, 554, "5.3.0" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int code = 0;
		const char *enh = NULL, *text = NULL;
		queue_status_reply(cases[i].st, cases[i].err, &code, &enh, &text);
		assert_int_equal(code, cases[i].code);
		assert_string_equal(enh, cases[i].enh);
		assert_non_null(text);
	}
	int code;
	const char *enh, *text;
	queue_status_reply(Q_TEMPFAIL, ENOSPC, &code, &enh, &text);
	assert_string_equal(text, "Insufficient system storage");
	queue_status_reply(Q_TEMPFAIL, EIO, &code, &enh, &text);
	assert_string_equal(text, "Local error in processing; try again later");
}

static int64_t
spool_mem_now(void)
{
	return __atomic_load_n(&tern_metrics.spool_memory_bytes, __ATOMIC_RELAXED);
}

static uint64_t
spool_spills_now(void)
{
	return __atomic_load_n(&tern_metrics.spool_spills_total, __ATOMIC_RELAXED);
}

/*
 * The bodies' buffers together stay within spool_budget: a body whose growth
 * the budget cannot take goes to its file, and is committed all the same;
 * freeing a body returns its memory to the budget.
 */
static void
test_spool_budget(void **state)
{
	char *dir = mktmp("budget");
	struct queue_opts o = { .dir = dir, .segment_size = 1 << 20,
	    .spool_memory = 64 << 10, .spool_budget = 100 << 10 };
	struct queue *q = NULL;
	struct waiter *w = waiter_new();
	struct spool *s[3];
	struct envelope *e;
	char err[256], *b[3];
	int64_t mem0;
	uint64_t spills0;

	assert_int_equal(queue_open(&o, &q, err, sizeof(err)), 0);
	qnotify(q, w);          /* waiter_wait: until indexed, not only durable */
	mem0 = spool_mem_now();
	spills0 = spool_spills_now();
	for (int i = 0; i < 3; i++) {
		b[i] = body_make((uint64_t)i + 1, 60 << 10);
		s[i] = spool_new(q);
	}
	/* the first fits: 64K of buffer */
	for (size_t off = 0; off < 60 << 10; off += 1000)
		assert_int_equal(spool_write(s[0], b[0] + off,
		    (60 << 10) - off < 1000 ? (60 << 10) - off : 1000), 0);
	assert_true(spool_mem_now() - mem0 == 64 << 10);
	assert_true(spool_spills_now() == spills0);
	/* the second would take the total past 100K: it spills, and its
	 * buffer's memory is given back */
	for (size_t off = 0; off < 60 << 10; off += 1000)
		assert_int_equal(spool_write(s[1], b[1] + off,
		    (60 << 10) - off < 1000 ? (60 << 10) - off : 1000), 0);
	assert_true(spool_spills_now() == spills0 + 1);
	assert_true(spool_mem_now() - mem0 == 64 << 10);
	assert_true(spool_size(s[1]) == 60 << 10);
	/* freeing the first makes room for the third in memory */
	spool_free(s[0]);
	assert_true(spool_mem_now() == mem0);
	assert_int_equal(spool_write(s[2], b[2], 60 << 10), 0);
	assert_true(spool_spills_now() == spills0 + 1);
	assert_true(spool_mem_now() - mem0 == 64 << 10);

	/* both bodies, from file and from memory, are queued exactly */
	for (int i = 1; i < 3; i++) {
		char rcpt[64];
		e = envelope_new();
		e->sender = strdup("sender@example.org");
		snprintf(rcpt, sizeof(rcpt), "r%d@example.com", i + 1);
		envelope_add_rcpt(e, rcpt, NULL, 0);
		queue_commit_submit(q, e, s[i], w->tq, (uint64_t)i);
	}
	waiter_wait(w, 2);
	for (int i = 1; i < 3; i++) {
		assert_int_equal(w->res[i].st, Q_OK);
		check_message(q, w->res[i].qid, (uint64_t)i + 1, 60 << 10);
	}
	for (int i = 0; i < 3; i++)
		free(b[i]);
	queue_close(q);
	/* the committer freed them: every byte is back */
	assert_true(spool_mem_now() == mem0);
	waiter_free(w);
	rmtree(dir);
	free(dir);
}


/* Wait (10 s at most) until housekeeping has a spare segment ready. */
static void
wait_spare(struct queue *q)
{
	uint64_t end = now_mono_us() + 10000000u;
	int have = 0;

	while (!have && now_mono_us() < end) {
		pthread_mutex_lock(&q->lock);
		have = q->have_spare;
		pthread_mutex_unlock(&q->lock);
		if (!have)
			usleep(1000);
	}
	assert_true(have);
}

static void
test_enospc(void **state)
{
	char *dir = mktmp("enospc"), mnt[4200], qdir[4300], ballast[4300];
	struct queue *q;
	struct waiter *w;
	struct spool *s;
	char *big;
	int fd, tempfails = 0;
	uint64_t r, acked = 0;

	snprintf(mnt, sizeof(mnt), "%s/mnt", dir);
	assert_int_equal(mkdir(mnt, 0700), 0);
	if (mount("tmpfs", mnt, "tmpfs", 0, "size=24m,mode=0700") < 0) {
		rmtree(dir);
		free(dir);
		skip();
	}
	snprintf(qdir, sizeof(qdir), "%s/q", mnt);
	snprintf(ballast, sizeof(ballast), "%s/ballast", mnt);
	q = qopen(qdir, 1 << 20, 512 << 10, 0);
	w = waiter_new();
	submit(q, w->tq, 0, 1000);
	waiter_wait(w, 1);
	assert_int_equal(w->res[0].st, Q_OK);
	acked++;
	wait_spare(q);       /* housekeeping prepares its spare */

	/* fill the file system */
	big = calloc(1, 1 << 16);
	fd = open(ballast, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	while (write(fd, big, 1 << 16) > 0)
		;
	while (write(fd, big, 512) > 0)
		;
	close(fd);
	free(big);

	/* a body that must spill cannot */
	s = spool_new(q);
	big = body_make(0, 600 << 10);
	errno = 0;
	assert_int_equal(spool_write(s, big, 600 << 10), -1);
	assert_int_equal(errno, ENOSPC);
	free(big);
	spool_free(s);

	/* in-memory bodies fill the current segment and the spare, then fail */
	for (r = 1; r < 20 && tempfails == 0; r++) {
		submit(q, w->tq, r, 300 << 10);
		waiter_wait(w, r + 1);
		if (w->res[r].st == Q_OK) {
			acked++;
		} else {
			int code;
			const char *enh, *text;
			assert_int_equal(w->res[r].st, Q_TEMPFAIL);
			assert_int_equal(w->res[r].err, ENOSPC);
			queue_status_reply(w->res[r].st, w->res[r].err, &code, &enh,
			    &text);
			assert_int_equal(code, 452);
			assert_string_equal(enh, "4.3.1");
			tempfails++;
		}
	}
	assert_int_equal(tempfails, 1);
	queue_close(q);

	/* space back: every acked message is there, nothing else became live */
	assert_int_equal(unlink(ballast), 0);
	q = qopen(qdir, 1 << 20, 512 << 10, 0);
	assert_int_equal(count_messages(q), acked);
	check_message(q, w->res[0].qid, 0, 1000);
	for (uint64_t k = 1; k < r; k++)
		if (w->res[k].st == Q_OK)
			check_message(q, w->res[k].qid, k, 300 << 10);
	/* and it accepts again */
	submit(q, w->tq, r, 1000);
	waiter_wait(w, r + 1);
	assert_int_equal(w->res[r].st, Q_OK);
	queue_close(q);
	waiter_free(w);
	umount2(mnt, MNT_DETACH);
	rmtree(dir);
	free(dir);
}

/* Bytes a file holds on disk. */
static uint64_t
file_blocks(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0 ? (uint64_t)sb.st_blocks * 512 : 0;
}

/* Write zeros to path until the file system is full. */
static void
fill_fs(const char *path)
{
	char *big = calloc(1, 1 << 16);
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND, 0600);

	assert_true(fd >= 0);
	while (write(fd, big, 1 << 16) > 0)
		;
	while (write(fd, big, 512) > 0)
		;
	fsync(fd);
	close(fd);
	free(big);
}

/* Poll (up to 5 s) until the queue's low state is want. */
static void
wait_low(struct queue *q, int want)
{
	for (int i = 0; i < 500 && (queue_space_refuse(q) != 0) != want; i++)
		usleep(10000);
	assert_int_equal(queue_space_refuse(q) != 0, want);
}

/*
 * A full disk (tmpfs, root only): the reserve is allocated at open; below
 * half of it free new mail gets ENOSPC (452) but a bounce is taken; with
 * nothing free the reserve is given back a quarter at a time, never below
 * a quarter; with space back it is whole again and mail is taken.
 */
static void
test_space_reserve(void **state)
{
	char *dir = mktmp("space"), mnt[4200], qdir[4300], ballast[4300];
	char rpath[4400], err[256] = "";
	struct queue_opts o = { .segment_size = 1 << 20,
	    .spool_memory = 256 << 10, .spool_budget = 64 << 20,
	    .reserve_size = 4 << 20 };
	struct queue *q = NULL;
	struct waiter *w;
	struct envelope *e;
	struct spool *sp;
	struct stat sb;

	snprintf(mnt, sizeof(mnt), "%s/mnt", dir);
	assert_int_equal(mkdir(mnt, 0700), 0);
	if (mount("tmpfs", mnt, "tmpfs", 0, "size=24m,mode=0700") < 0) {
		rmtree(dir);
		free(dir);
		skip();
	}
	snprintf(qdir, sizeof(qdir), "%s/q", mnt);
	snprintf(ballast, sizeof(ballast), "%s/ballast", mnt);
	snprintf(rpath, sizeof(rpath), "%s/reserve", qdir);
	o.dir = qdir;
	assert_int_equal(queue_open(&o, &q, err, sizeof(err)), 0);
	assert_true(file_blocks(rpath) >= (4u << 20));
	w = waiter_new();

	/* less than half the reserve free: new mail refused, a bounce taken */
	fill_fs(ballast);
	assert_int_equal(stat(ballast, &sb), 0);
	assert_int_equal(truncate(ballast, sb.st_size - (1 << 20)), 0);
	wait_low(q, 1);
	submit(q, w->tq, 0, 1000);
	waiter_wait(w, 1);
	assert_int_equal(w->res[0].st, Q_TEMPFAIL);
	assert_int_equal(w->res[0].err, ENOSPC);
	e = envelope_new();
	e->sender = strdup("");
	e->flags = ENV_F_DSN;
	envelope_add_rcpt(e, "sender@example.org", NULL, 0);
	sp = spool_new(q);
	assert_int_equal(spool_write(sp, "Subject: bounce\r\n\r\nx\r\n", 22), 0);
	queue_commit_submit(q, e, sp, w->tq, 1);
	waiter_wait(w, 2);
	assert_int_equal(w->res[1].st, Q_OK);

	/* nothing free: given back down to a quarter, not below */
	for (int i = 0; i < 300 && file_blocks(rpath) > (1u << 20); i++) {
		fill_fs(ballast);
		usleep(10000);
	}
	assert_true(file_blocks(rpath) == (1u << 20));

	/* space back: whole again, mail taken */
	assert_int_equal(unlink(ballast), 0);
	wait_low(q, 0);
	assert_true(file_blocks(rpath) >= (4u << 20));
	submit(q, w->tq, 2, 1000);
	waiter_wait(w, 3);
	assert_int_equal(w->res[2].st, Q_OK);
	queue_close(q);
	waiter_free(w);
	umount2(mnt, MNT_DETACH);
	rmtree(dir);
	free(dir);
}

/* The meta page of a file made by the store says it has page checksums
 * (so a start skips DB->verify); one that does not say so is verified. */
static void
test_index_checksums(void **state)
{
	char *dir = mktmp("chk"), path[4200];
	struct stat sb;
	uint8_t b[64];
	struct queue *q;
	int fd;
	(void)state;

	q = qopen(dir, 1 << 20, 0, 0);
	queue_close(q);
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/db/%s", dir,
		    i ? "meta.db" : "envelopes.db");
		assert_true((fd = open(path, O_RDONLY)) >= 0);
		assert_int_equal(read(fd, b, sizeof(b)), (ssize_t)sizeof(b));
		close(fd);
		assert_int_equal(store_meta_has_chksum(b, sizeof(b)), 1);
		assert_int_equal(stat(path, &sb), 0);
		assert_int_equal(store_meta_size_ok(b, sizeof(b),
		    (uint64_t)sb.st_size), 1);
		assert_int_equal(store_meta_size_ok(b, sizeof(b), 512), 0);
	}
	assert_int_equal(store_meta_has_chksum(b, 20), 0);    /* short */
	b[26] &= (uint8_t)~0x01;
	assert_int_equal(store_meta_has_chksum(b, sizeof(b)), 0);
	b[26] |= 0x01;
	b[12] ^= 0xff;                                        /* not a btree */
	assert_int_equal(store_meta_has_chksum(b, sizeof(b)), 0);
	memset(b, 0, sizeof(b));
	assert_int_equal(store_meta_has_chksum(b, sizeof(b)), 0);
	rmtree(dir);
	free(dir);
}

static int
counting(struct queue *q)
{
	int c;

	pthread_mutex_lock(&q->lock);
	c = q->counting;
	pthread_mutex_unlock(&q->lock);
	return c;
}

/*
 * A plain reopen counts live messages in the background: the segment of
 * before the start is kept while it counts, and once its messages are
 * removed (some during the count, some after) housekeeping recycles it.
 */
static void
test_recount_then_recycle(void **state)
{
	char *dir = mktmp("recount"), path[4200];
	struct waiter *w = waiter_new();
	struct envelope *e = NULL;
	uint64_t qid[40], end;
	uint32_t seg;
	struct queue *q;
	(void)state;

	q = qopen(dir, 1 << 20, 0, 0);
	for (int i = 0; i < 40; i++)
		submit(q, w->tq, (uint64_t)i, 100);
	waiter_wait(w, 40);
	for (int i = 0; i < 40; i++) {
		assert_int_equal(w->res[i].st, Q_OK);
		qid[i] = w->res[i].qid;
	}
	assert_int_equal(queue_get(q, qid[0], &e), 0);
	seg = e->seg;
	envelope_free(e);
	queue_close(q);

	q = qopen(dir, 1 << 20, 0, 0);
	assert_true(q->recount_needed);
	seg_path(q->segdir, seg, path, sizeof(path));
	for (int i = 0; i < 20; i++)            /* perhaps while it counts */
		assert_int_equal(queue_remove(q, qid[i]), 0);
	end = now_mono_us() + 10000000u;
	while (counting(q) && now_mono_us() < end)
		usleep(10000);
	assert_false(counting(q));
	assert_int_equal(access(path, F_OK), 0);        /* 20 still live */
	assert_int_equal(count_messages(q), 20);
	for (int i = 20; i < 40; i++)
		assert_int_equal(queue_remove(q, qid[i]), 0);
	end = now_mono_us() + 10000000u;
	while (access(path, F_OK) == 0 && now_mono_us() < end)
		usleep(10000);
	assert_int_not_equal(access(path, F_OK), 0);    /* recycled */
	queue_close(q);
	waiter_free(w);
	rmtree(dir);
	free(dir);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_status_reply),
		cmocka_unit_test(test_commit_one),
		cmocka_unit_test(test_read_body_big_envelope),
		cmocka_unit_test(test_body7),
		cmocka_unit_test(test_spool_prepend),
		cmocka_unit_test(test_commit_concurrent),
		cmocka_unit_test(test_crash_recovery),
		cmocka_unit_test(test_torn_garbage),
		cmocka_unit_test(test_torn_truncate),
		cmocka_unit_test(test_torn_flip_unindexed),
		cmocka_unit_test(test_torn_flip_indexed),
		cmocka_unit_test(test_torn_version),
		cmocka_unit_test(test_torn_stale_epoch),
		cmocka_unit_test(test_torn_seq),
		cmocka_unit_test(test_torn_payload_small),
		cmocka_unit_test(test_torn_payload_huge),
		cmocka_unit_test(test_torn_envlen_max),
		cmocka_unit_test(test_torn_envlen_payload),
		cmocka_unit_test(test_torn_cut_envelope),
		cmocka_unit_test(test_torn_cut_before_envelope),
		cmocka_unit_test(test_remove_recycle),
		cmocka_unit_test(test_remove_many),
		cmocka_unit_test(test_copy_forward),
		cmocka_unit_test(test_copy_forward_crash),
		cmocka_unit_test(test_copy_of_removed_not_recovered),
		cmocka_unit_test(test_crc_salt),
		cmocka_unit_test(test_oversized),
		cmocka_unit_test(test_update),
		cmocka_unit_test(test_readonly),
		cmocka_unit_test(test_index_rebuild_verify),
		cmocka_unit_test(test_spool_budget),
		cmocka_unit_test(test_enospc),
		cmocka_unit_test(test_index_checksums),
		cmocka_unit_test(test_recount_then_recycle),
		cmocka_unit_test(test_space_reserve),
	};

	log_init("test_queue", 0, 0);
	evthread_use_pthreads();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
