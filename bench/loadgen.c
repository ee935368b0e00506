/*
 * loadgen.c - SMTP load generator for the benchmark (bench/run).
 *
 * Contract: opens -c concurrent sessions to HOST:PORT (one blocking thread each) and
 * sends -m messages in all, numbered 1..m by a shared counter; message N carries the
 * header "X-Bench-Id: N" so bench/sink can account for it. Each message: MAIL, -r RCPTs
 * and DATA pipelined in one write, then the body (-l bytes, 76-column lines) and the
 * terminator in one write. Sessions are reused for -C messages (0: until done).
 * With -t: STARTTLS (no certificate check) and AUTH PLAIN -u USER -w PASS; with -R
 * as well, each session thread offers the TLS session of its previous connection
 * (a ticket, or a TLS 1.2 session ID) for resumption, like a mail client that keeps
 * its session between submissions; the JSON line then counts "resumed" handshakes.
 * A message counts as acknowledged only on a 250 after the data. A session that fails
 * (connection refused/reset, e.g. the MTA was killed) is retried after 50 ms until
 * -T seconds have passed; the message in flight is then counted as failed, never
 * acknowledged. Prints one JSON line: sent, acked, rejected, errors, t_start_ns,
 * t_end_ns (CLOCK_MONOTONIC). With -o FILE, writes every acknowledged id, one a line.
 * Recipients are rcptI@bench.example (I = 1..r); with -D N they are instead
 * rcptI-mID@dK.bench.example, K = ID mod N: every address unique, and each of the
 * N domains holds about m/N messages (bench/scale queries them).
 *
 * Usage: loadgen -s HOST:PORT -m MSGS [-c SESS] [-r RCPTS] [-l BYTES] [-C PER_CONN]
 *                [-t -u USER -w PASS [-R]] [-T TIMEOUT_S] [-o ACKED_FILE]
 *                [-D DOMAINS]
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct lg_conn {
	int fd;
	SSL *ssl;
	size_t rlen, rpos;
	char rbuf[16384];
};

struct lg_thread {
	pthread_t tid;
	unsigned long *acked_ids;
	size_t n_acked, cap_acked;
	unsigned long sent, rejected, errors;
	unsigned long handshakes, resumed;
	SSL_SESSION *sess;	/* -R: the last connection's session */
	char *msg;
};

static struct sockaddr_in lg_addr;
static unsigned long lg_total;
static unsigned lg_rcpts = 1, lg_per_conn;
static unsigned long lg_domains;
static size_t lg_size = 4096;
static int lg_tls, lg_resume;
static const char *lg_user = "", *lg_pass = "";
static char lg_auth_b64[512];
static double lg_timeout = 600;
static SSL_CTX *lg_ssl_ctx;
static atomic_ulong lg_next = 1;
static char *lg_body;
static size_t lg_body_len;
static uint64_t lg_deadline_ns;

static uint64_t lg_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int lg_write(struct lg_conn *c, const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n;

		if (c->ssl) {
			int r = SSL_write(c->ssl, p, (int)len);

			if (r <= 0)
				return -1;
			n = r;
		} else {
			n = send(c->fd, p, len, MSG_NOSIGNAL);
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0)
				return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read one reply (all its lines); return its code, or -1. */
static int lg_reply_read(struct lg_conn *c)
{
	char line[1024];
	size_t ll = 0;

	for (;;) {
		if (c->rpos == c->rlen) {
			ssize_t n;

			if (c->ssl) {
				int r = SSL_read(c->ssl, c->rbuf, sizeof(c->rbuf));

				n = r > 0 ? r : -1;
			} else {
				do
					n = recv(c->fd, c->rbuf, sizeof(c->rbuf), 0);
				while (n < 0 && errno == EINTR);
			}
			if (n <= 0)
				return -1;
			c->rlen = (size_t)n;
			c->rpos = 0;
		}
		while (c->rpos < c->rlen) {
			char ch = c->rbuf[c->rpos++];

			if (ch != '\n') {
				if (ll < sizeof(line) - 1)
					line[ll++] = ch;
				continue;
			}
			line[ll] = '\0';
			if (ll < 4)
				return -1;
			if (line[3] == ' ' || line[3] == '\r')
				return atoi(line);
			ll = 0;	/* continuation line */
		}
	}
}

static void lg_conn_close(struct lg_conn *c)
{
	if (c->ssl) {
		/* close_notify: a session freed without it is not resumable */
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/* -R: keep the session (with the ticket that came after the handshake). */
static void lg_session_keep(struct lg_conn *c, struct lg_thread *t)
{
	SSL_SESSION *s;

	if (!lg_resume || !c->ssl || !(s = SSL_get1_session(c->ssl)))
		return;
	if (SSL_SESSION_is_resumable(s)) {
		SSL_SESSION_free(t->sess);
		t->sess = s;
	} else {
		SSL_SESSION_free(s);
	}
}

static int lg_conn_open(struct lg_conn *c, struct lg_thread *t)
{
	int one = 1;

	c->rlen = c->rpos = 0;
	c->ssl = NULL;
	c->fd = socket(AF_INET, SOCK_STREAM, 0);
	if (c->fd < 0)
		return -1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(c->fd, (struct sockaddr *)&lg_addr, sizeof(lg_addr)) < 0)
		goto fail;
	if (lg_reply_read(c) != 220)
		goto fail;
	if (lg_write(c, "EHLO loadgen.example\r\n", 22) < 0 || lg_reply_read(c) != 250)
		goto fail;
	if (lg_tls) {
		char cmd[600];
		int n;

		if (lg_write(c, "STARTTLS\r\n", 10) < 0 || lg_reply_read(c) != 220)
			goto fail;
		c->ssl = SSL_new(lg_ssl_ctx);
		if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1)
			goto fail;
		if (lg_resume && t->sess)
			SSL_set_session(c->ssl, t->sess);
		if (SSL_connect(c->ssl) != 1)
			goto fail;
		t->handshakes++;
		if (SSL_session_reused(c->ssl))
			t->resumed++;
		if (lg_write(c, "EHLO loadgen.example\r\n", 22) < 0 || lg_reply_read(c) != 250)
			goto fail;
		n = snprintf(cmd, sizeof(cmd), "AUTH PLAIN %s\r\n", lg_auth_b64);
		if (lg_write(c, cmd, (size_t)n) < 0 || lg_reply_read(c) != 235)
			goto fail;
	}
	return 0;
fail:
	lg_conn_close(c);
	return -1;
}

static void lg_acked_add(struct lg_thread *t, unsigned long id)
{
	if (t->n_acked == t->cap_acked) {
		t->cap_acked = t->cap_acked ? t->cap_acked * 2 : 1024;
		t->acked_ids = realloc(t->acked_ids, t->cap_acked * sizeof(*t->acked_ids));
		if (!t->acked_ids)
			abort();
	}
	t->acked_ids[t->n_acked++] = id;
}

/* Send message id on an open session: 1 acked, 0 rejected, -1 session broken. */
static int lg_message_send(struct lg_conn *c, struct lg_thread *t, unsigned long id)
{
	char cmds[256 + 64 * 100];
	size_t len = 0, hl;
	unsigned i;
	int code, ok = 1;

	len += (size_t)snprintf(cmds + len, sizeof(cmds) - len,
				"MAIL FROM:<sender@loadgen.example> SIZE=%zu\r\n", lg_size);
	for (i = 0; i < lg_rcpts && i < 100; i++)
		if (lg_domains)
			len += (size_t)snprintf(cmds + len, sizeof(cmds) - len,
						"RCPT TO:<rcpt%u-m%lu@d%lu.bench.example>\r\n",
						i + 1, id, id % lg_domains);
		else
			len += (size_t)snprintf(cmds + len, sizeof(cmds) - len,
						"RCPT TO:<rcpt%u@bench.example>\r\n", i + 1);
	len += (size_t)snprintf(cmds + len, sizeof(cmds) - len, "DATA\r\n");
	if (lg_write(c, cmds, len) < 0)
		return -1;
	t->sent++;
	if ((code = lg_reply_read(c)) < 0)
		return -1;
	if (code != 250)
		ok = 0;
	for (i = 0; i < lg_rcpts && i < 100; i++) {
		if ((code = lg_reply_read(c)) < 0)
			return -1;
		if (code != 250)
			ok = 0;
	}
	if ((code = lg_reply_read(c)) < 0)
		return -1;
	if (code != 354) {
		t->rejected++;
		if (lg_write(c, "RSET\r\n", 6) < 0 || lg_reply_read(c) < 0)
			return -1;
		return 0;
	}
	hl = (size_t)sprintf(t->msg, "X-Bench-Id: %lu\r\n", id);
	memcpy(t->msg + hl, lg_body, lg_body_len);
	if (lg_write(c, t->msg, hl + lg_body_len) < 0)
		return -1;
	if ((code = lg_reply_read(c)) < 0)
		return -1;
	if (code != 250 || !ok) {
		t->rejected++;
		return 0;
	}
	lg_acked_add(t, id);
	return 1;
}

static void *lg_thread_run(void *arg)
{
	struct lg_thread *t = arg;
	struct lg_conn c = { .fd = -1 };
	unsigned on_conn = 0;

	t->msg = malloc(lg_body_len + 64);
	for (;;) {
		unsigned long id = atomic_fetch_add(&lg_next, 1);

		if (id > lg_total)
			break;
		while (c.fd < 0) {
			if (lg_now_ns() > lg_deadline_ns)
				goto out;
			if (lg_conn_open(&c, t) == 0) {
				on_conn = 0;
				break;
			}
			t->errors++;
			usleep(50000);
		}
		if (lg_message_send(&c, t, id) < 0) {
			t->errors++;	/* id counted as sent, not acked */
			lg_conn_close(&c);
			continue;
		}
		if (lg_per_conn && ++on_conn >= lg_per_conn) {
			if (lg_write(&c, "QUIT\r\n", 6) == 0)
				lg_reply_read(&c);
			lg_session_keep(&c, t);
			lg_conn_close(&c);
		}
	}
out:
	SSL_SESSION_free(t->sess);
	t->sess = NULL;
	if (c.fd >= 0) {
		if (lg_write(&c, "QUIT\r\n", 6) == 0)
			lg_reply_read(&c);
		lg_conn_close(&c);
	}
	return NULL;
}

static void lg_body_make(void)
{
	static const char hdr[] = "From: <sender@loadgen.example>\r\n"
				  "To: <rcpt1@bench.example>\r\n"
				  "Subject: tern benchmark\r\n"
				  "\r\n";
	size_t hl = sizeof(hdr) - 1, pos;

	lg_body = malloc(lg_size + hl + 128);
	memcpy(lg_body, hdr, hl);
	pos = hl;
	while (pos < lg_size) {
		size_t i;

		for (i = 0; i < 76; i++)
			lg_body[pos + i] = (char)('a' + (pos + i) % 26);
		lg_body[pos + 76] = '\r';
		lg_body[pos + 77] = '\n';
		pos += 78;
	}
	memcpy(lg_body + pos, ".\r\n", 3);
	lg_body_len = pos + 3;
}

int main(int argc, char **argv)
{
	unsigned sessions = 50, i;
	const char *acked_path = NULL;
	char host[64] = "127.0.0.1";
	int port = 25, opt;
	struct lg_thread *threads;
	unsigned long sent = 0, acked = 0, rejected = 0, errors = 0, hs = 0, resumed = 0;
	uint64_t t_start, t_end;

	while ((opt = getopt(argc, argv, "s:m:c:r:l:C:tu:w:T:o:D:R")) != -1) {
		switch (opt) {
		case 's': {
			char *colon = strrchr(optarg, ':');

			if (!colon || (size_t)(colon - optarg) >= sizeof(host))
				return 2;
			memcpy(host, optarg, (size_t)(colon - optarg));
			host[colon - optarg] = '\0';
			port = atoi(colon + 1);
			break;
		}
		case 'm': lg_total = strtoul(optarg, NULL, 10); break;
		case 'c': sessions = (unsigned)atoi(optarg); break;
		case 'r': lg_rcpts = (unsigned)atoi(optarg); break;
		case 'l': lg_size = strtoul(optarg, NULL, 10); break;
		case 'C': lg_per_conn = (unsigned)atoi(optarg); break;
		case 't': lg_tls = 1; break;
		case 'u': lg_user = optarg; break;
		case 'w': lg_pass = optarg; break;
		case 'T': lg_timeout = atof(optarg); break;
		case 'o': acked_path = optarg; break;
		case 'D': lg_domains = strtoul(optarg, NULL, 10); break;
		case 'R': lg_resume = 1; break;
		default:
			fprintf(stderr, "usage: see bench/loadgen.c\n");
			return 2;
		}
	}
	if (lg_total == 0 || sessions == 0 || lg_rcpts == 0 || lg_rcpts > 100)
		return 2;
	lg_addr.sin_family = AF_INET;
	lg_addr.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &lg_addr.sin_addr) != 1)
		return 2;
	signal(SIGPIPE, SIG_IGN);
	if (lg_tls) {
		unsigned char plain[300];
		size_t ul = strlen(lg_user), pl = strlen(lg_pass);

		if (ul + pl + 2 > sizeof(plain))
			return 2;
		plain[0] = 0;
		memcpy(plain + 1, lg_user, ul);
		plain[1 + ul] = 0;
		memcpy(plain + 2 + ul, lg_pass, pl);
		EVP_EncodeBlock((unsigned char *)lg_auth_b64, plain, (int)(ul + pl + 2));
		lg_ssl_ctx = SSL_CTX_new(TLS_client_method());
		SSL_CTX_set_verify(lg_ssl_ctx, SSL_VERIFY_NONE, NULL);
	}
	lg_body_make();
	threads = calloc(sessions, sizeof(*threads));
	t_start = lg_now_ns();
	lg_deadline_ns = t_start + (uint64_t)(lg_timeout * 1e9);
	for (i = 0; i < sessions; i++)
		pthread_create(&threads[i].tid, NULL, lg_thread_run, &threads[i]);
	for (i = 0; i < sessions; i++)
		pthread_join(threads[i].tid, NULL);
	t_end = lg_now_ns();
	for (i = 0; i < sessions; i++) {
		sent += threads[i].sent;
		acked += threads[i].n_acked;
		rejected += threads[i].rejected;
		errors += threads[i].errors;
		hs += threads[i].handshakes;
		resumed += threads[i].resumed;
	}
	if (acked_path) {
		FILE *f = fopen(acked_path, "w");
		size_t j;

		if (!f)
			return 1;
		for (i = 0; i < sessions; i++)
			for (j = 0; j < threads[i].n_acked; j++)
				fprintf(f, "%lu\n", threads[i].acked_ids[j]);
		fclose(f);
	}
	printf("{\"sent\": %lu, \"acked\": %lu, \"rejected\": %lu, \"errors\": %lu, "
	       "\"handshakes\": %lu, \"resumed\": %lu, "
	       "\"t_start_ns\": %llu, \"t_end_ns\": %llu}\n",
	       sent, acked, rejected, errors, hs, resumed, (unsigned long long)t_start,
	       (unsigned long long)t_end);
	return 0;
}
