/*
 * sink.c - a small, fast, counting SMTP sink for the benchmark (bench/run).
 *
 * Contract: listens on 127.0.0.1:PORT, answers every session 220 / 250 / 354 / 250
 * (PIPELINING honoured: replies are written once the input is drained), and counts
 * messages and recipients. Each message from bench/loadgen carries a header
 * "X-Bench-Id: N" (1 <= N <= expected); the sink keeps, per id, how many recipients
 * arrived with it, so it can tell when every recipient of every message has arrived
 * ("complete") and whether any arrived twice ("over", a duplicate delivery).
 * Control, on the same port: "XSTAT" answers
 *   250 msgs=M rcpts=R complete=C over=O noid=X done_ns=T bdat=B
 * where done_ns is CLOCK_MONOTONIC (ns) of the moment complete reached the expected
 * count (0 until then). On SIGTERM/SIGINT it writes the ids it saw (one per line,
 * "id count") to the -o file, if given, and exits 0.
 *
 * With -B it also offers CHUNKING (RFC 3030) and takes "BDAT n [LAST]": the n
 * octets that follow are read raw (no dot-stuffing), their header lines scanned
 * for X-Bench-Id as in DATA (a header line cut by a chunk boundary is not seen),
 * each chunk answered 250, and LAST ends the message, counted as after DATA
 * (and in bdat=, the messages that came in BDAT chunks).
 *
 * Usage: sink -p PORT -n EXPECTED_IDS [-r RCPTS_PER_ID] [-o SEEN_FILE] [-B]
 * Single-threaded epoll; never blocks; a line longer than the buffer is dropped
 * in DATA (it cannot be a header we need) and closes the session in command mode.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define IN_SIZE (128 * 1024)
#define OUT_SIZE (16 * 1024)

struct conn {
	int fd;
	int in_data;       /* inside DATA */
	int in_headers;    /* inside DATA, before the empty line */
	int skipping;      /* dropping the rest of an over-long line */
	int quit;          /* close once the output is flushed */
	int bdat_msg;      /* a message is coming in BDAT chunks */
	int bdat_last;     /* the BDAT chunk being read is the LAST */
	int bdat_cut;      /* a header line was cut by a chunk's end: skip its rest */
	unsigned long long bdat_left;	/* octets of the BDAT chunk still to read */
	unsigned txn_rcpts;
	unsigned long id;
	size_t in_len;
	size_t out_len;
	char in[IN_SIZE];
	char out[OUT_SIZE];
};

static volatile sig_atomic_t sink_stop;
static unsigned long expected_ids;
static unsigned rcpts_per_id = 1;
static int offer_chunking;
static uint16_t *id_counts;
static unsigned long n_msgs, n_rcpts, n_complete, n_over, n_noid, n_bdat;
static uint64_t done_ns;

static uint64_t sink_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sink_signal_handle(int sig)
{
	(void)sig;
	sink_stop = 1;
}

static void sink_reply_add(struct conn *c, const char *s, size_t len)
{
	if (c->out_len + len > OUT_SIZE) {
		c->quit = 1;	/* client pipelines far too much; give up on it */
		return;
	}
	memcpy(c->out + c->out_len, s, len);
	c->out_len += len;
}

#define REPLY(c, lit) sink_reply_add((c), lit, sizeof(lit) - 1)

static void sink_message_end(struct conn *c)
{
	n_msgs++;
	n_rcpts += c->txn_rcpts;
	if (c->id >= 1 && c->id <= expected_ids) {
		unsigned before = id_counts[c->id];
		unsigned after = before + c->txn_rcpts;

		if (after > 65535)
			after = 65535;
		id_counts[c->id] = (uint16_t)after;
		if (before < rcpts_per_id && after >= rcpts_per_id) {
			n_complete++;
			if (n_complete == expected_ids)
				done_ns = sink_now_ns();
		}
		if (after > rcpts_per_id)
			n_over += after - (before > rcpts_per_id ? before : rcpts_per_id);
	} else {
		n_noid++;
	}
	c->txn_rcpts = 0;
	c->id = 0;
}

/* A line of the message (without its line end): look for the id in the headers. */
static void sink_header_line(struct conn *c, const char *p, size_t len)
{
	if (!c->in_headers)
		return;
	if (len == 0) {
		c->in_headers = 0;
		return;
	}
	if (len > 11 && strncasecmp(p, "X-Bench-Id:", 11) == 0 && c->id == 0)
		c->id = strtoul(p + 11, NULL, 10);
}

static void sink_data_line(struct conn *c, const char *p, size_t len)
{
	if (len == 1 && p[0] == '.') {
		c->in_data = 0;
		sink_message_end(c);
		REPLY(c, "250 2.0.0 Ok: queued\r\n");
		return;
	}
	sink_header_line(c, p, len);
}

/* The end of a BDAT chunk: answer it; the LAST one ends the message. */
static void sink_bdat_end(struct conn *c)
{
	if (c->bdat_last) {
		c->bdat_msg = 0;
		c->in_headers = 0;
		n_bdat++;
		sink_message_end(c);
		REPLY(c, "250 2.0.0 Ok: queued\r\n");
	} else {
		REPLY(c, "250 2.0.0 Ok: chunk\r\n");
	}
}

/* "BDAT n [LAST]" (the arguments after the verb, not terminated). */
static void sink_bdat_begin(struct conn *c, const char *p, size_t len)
{
	char arg[64], *end;

	if (len >= sizeof(arg)) {
		REPLY(c, "501 5.5.4 Syntax: BDAT size [LAST]\r\n");
		return;
	}
	memcpy(arg, p, len);
	arg[len] = '\0';
	c->bdat_left = strtoull(arg, &end, 10);
	c->bdat_last = strncasecmp(end, " LAST", 5) == 0;
	if (!c->bdat_msg) {	/* the first chunk of a message */
		c->bdat_msg = 1;
		c->bdat_cut = 0;
		c->in_headers = 1;
	}
	if (c->bdat_left == 0)
		sink_bdat_end(c);
}

/*
 * Take up to the rest of a BDAT chunk from in[0..avail): whole lines while in
 * the headers (0 if a header line is not whole yet), everything after them.
 */
static size_t sink_bdat_take(struct conn *c, const char *in, size_t avail)
{
	size_t n = avail < c->bdat_left ? avail : (size_t)c->bdat_left;
	const char *nl;

	if (c->in_headers) {
		nl = memchr(in, '\n', n);
		if (nl) {
			size_t len = (size_t)(nl - in);

			n = len + 1;
			if (!c->bdat_cut)
				sink_header_line(c, in, len > 0 && in[len - 1] == '\r' ?
						 len - 1 : len);
			c->bdat_cut = 0;
		} else if (n < c->bdat_left && avail < IN_SIZE) {
			return 0;	/* wait for the rest of the line */
		} else {
			c->bdat_cut = 1;
		}
	}
	c->bdat_left -= n;
	if (c->bdat_left == 0)
		sink_bdat_end(c);
	return n;
}

static void sink_command_line(struct conn *c, const char *p, size_t len)
{
	char buf[256];

	if (len >= 4 && (strncasecmp(p, "EHLO", 4) == 0)) {
		REPLY(c, "250-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n");
		if (offer_chunking)
			REPLY(c, "250-CHUNKING\r\n");
		REPLY(c, "250 SIZE 1073741824\r\n");
	} else if (len >= 4 && strncasecmp(p, "HELO", 4) == 0) {
		REPLY(c, "250 sink\r\n");
	} else if (len >= 4 && strncasecmp(p, "MAIL", 4) == 0) {
		c->txn_rcpts = 0;
		c->id = 0;
		c->bdat_msg = 0;
		REPLY(c, "250 2.1.0 Ok\r\n");
	} else if (len >= 4 && strncasecmp(p, "RCPT", 4) == 0) {
		c->txn_rcpts++;
		REPLY(c, "250 2.1.5 Ok\r\n");
	} else if (len >= 4 && strncasecmp(p, "DATA", 4) == 0) {
		c->in_data = 1;
		c->in_headers = 1;
		REPLY(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
	} else if (offer_chunking && len > 5 && strncasecmp(p, "BDAT ", 5) == 0) {
		sink_bdat_begin(c, p + 5, len - 5);
	} else if (len >= 4 && strncasecmp(p, "RSET", 4) == 0) {
		c->txn_rcpts = 0;
		c->bdat_msg = 0;
		REPLY(c, "250 2.0.0 Ok\r\n");
	} else if (len >= 4 && strncasecmp(p, "NOOP", 4) == 0) {
		REPLY(c, "250 2.0.0 Ok\r\n");
	} else if (len >= 4 && strncasecmp(p, "QUIT", 4) == 0) {
		REPLY(c, "221 2.0.0 Bye\r\n");
		c->quit = 1;
	} else if (len >= 5 && strncasecmp(p, "XSTAT", 5) == 0) {
		int n = snprintf(buf, sizeof(buf),
				 "250 msgs=%lu rcpts=%lu complete=%lu over=%lu noid=%lu done_ns=%llu "
				 "bdat=%lu\r\n", n_msgs, n_rcpts, n_complete, n_over, n_noid,
				 (unsigned long long)done_ns, n_bdat);
		sink_reply_add(c, buf, (size_t)n);
	} else {
		REPLY(c, "502 5.5.2 Command not recognized\r\n");
	}
}

/* Consume every complete line of c->in; keep the partial tail. */
static void sink_input_process(struct conn *c)
{
	size_t pos = 0;

	while (pos < c->in_len && !c->quit) {
		char *start = c->in + pos;
		char *nl;
		size_t len;

		if (c->bdat_left > 0) {
			len = sink_bdat_take(c, start, c->in_len - pos);
			if (len == 0)
				break;
			pos += len;
			continue;
		}
		nl = memchr(start, '\n', c->in_len - pos);
		if (!nl)
			break;
		len = (size_t)(nl - start);
		pos += len + 1;
		if (c->skipping) {
			c->skipping = 0;
			continue;
		}
		if (len > 0 && start[len - 1] == '\r')
			len--;
		if (c->in_data)
			sink_data_line(c, start, len);
		else
			sink_command_line(c, start, len);
	}
	if (pos > 0) {
		memmove(c->in, c->in + pos, c->in_len - pos);
		c->in_len -= pos;
	}
	if (c->in_len == IN_SIZE) {	/* one line fills the buffer */
		if (!c->in_data)
			c->quit = 1;
		c->skipping = 1;
		c->in_len = 0;
	}
}

static int sink_output_flush(struct conn *c)
{
	size_t off = 0;

	while (off < c->out_len) {
		ssize_t n = write(c->fd, c->out + off, c->out_len - off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				break;
			return -1;
		}
		off += (size_t)n;
	}
	memmove(c->out, c->out + off, c->out_len - off);
	c->out_len -= off;
	return 0;
}

static void sink_conn_close(int ep, struct conn *c)
{
	epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	free(c);
}

static void sink_conn_event(int ep, struct conn *c)
{
	for (;;) {
		ssize_t n = read(c->fd, c->in + c->in_len, IN_SIZE - c->in_len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0) {
			sink_conn_close(ep, c);
			return;
		}
		c->in_len += (size_t)n;
		sink_input_process(c);
		if (c->quit)
			break;
	}
	if (sink_output_flush(c) < 0 || (c->quit && c->out_len == 0)) {
		sink_conn_close(ep, c);
		return;
	}
	{
		struct epoll_event ev = { .events = EPOLLIN | (c->out_len ? EPOLLOUT : 0u),
					  .data.ptr = c };
		epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
	}
}

static int sink_seen_write(const char *path)
{
	FILE *f = fopen(path, "w");
	unsigned long i;

	if (!f)
		return -1;
	for (i = 1; i <= expected_ids; i++)
		if (id_counts[i])
			fprintf(f, "%lu %u\n", i, id_counts[i]);
	return fclose(f);
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	const char *seen_path = NULL;
	int port = 0, opt, lfd, ep, one = 1;
	struct epoll_event ev;
	struct sigaction sact = { .sa_handler = sink_signal_handle };

	while ((opt = getopt(argc, argv, "p:n:r:o:B")) != -1) {
		switch (opt) {
		case 'p': port = atoi(optarg); break;
		case 'n': expected_ids = strtoul(optarg, NULL, 10); break;
		case 'r': rcpts_per_id = (unsigned)atoi(optarg); break;
		case 'o': seen_path = optarg; break;
		case 'B': offer_chunking = 1; break;
		default:
			fprintf(stderr, "usage: sink -p PORT -n EXPECTED_IDS [-r RCPTS] [-o FILE] [-B]\n");
			return 2;
		}
	}
	if (port <= 0 || rcpts_per_id == 0) {
		fprintf(stderr, "sink: -p PORT required\n");
		return 2;
	}
	id_counts = calloc(expected_ids + 1, sizeof(*id_counts));
	if (!id_counts)
		return 1;
	sigaction(SIGTERM, &sact, NULL);
	sigaction(SIGINT, &sact, NULL);
	signal(SIGPIPE, SIG_IGN);

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4096) < 0) {
		perror("sink: bind/listen");
		return 1;
	}
	ep = epoll_create1(0);
	ev.events = EPOLLIN;
	ev.data.ptr = NULL;
	epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
	fprintf(stderr, "sink: listening on 127.0.0.1:%d\n", port);

	while (!sink_stop) {
		struct epoll_event evs[256];
		int i, n = epoll_wait(ep, evs, 256, 200);

		for (i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;

			if (!c) {
				int fd;

				while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					c = calloc(1, sizeof(*c));
					if (!c) {
						close(fd);
						continue;
					}
					c->fd = fd;
					setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					REPLY(c, "220 sink ESMTP\r\n");
					sink_output_flush(c);
					ev.events = EPOLLIN;
					ev.data.ptr = c;
					epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
				}
				continue;
			}
			sink_conn_event(ep, c);
		}
	}
	if (seen_path && sink_seen_write(seen_path) != 0) {
		perror("sink: write seen file");
		return 1;
	}
	return 0;
}
