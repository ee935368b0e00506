/*
 * dns_stub.c - the benchmarks' loopback DNS server (see dns_stub.h).
 */
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/event.h>

#include "dns_stub.h"

static unsigned stub_queries;

static void
dns_stub_cb(evutil_socket_t fd, short what, void *arg)
{
	dns_stub_answer_fn *fn = (dns_stub_answer_fn *)arg;
	unsigned char q[512], a[600];
	struct sockaddr_storage from;
	socklen_t flen = sizeof(from);
	ssize_t n = recvfrom(fd, q, sizeof(q), 0, (struct sockaddr *)&from,
	    &flen);
	size_t alen;

	(void)what;
	if (n <= 0 || (alen = fn(q, (size_t)n, a)) == 0)
		return;
	stub_queries++;
	(void)sendto(fd, a, alen, 0, (struct sockaddr *)&from, flen);
}

int
dns_stub_start(struct event_base *base, dns_stub_answer_fn *fn,
    struct sockaddr_storage *ss)
{
	struct sockaddr_in sin;
	socklen_t slen = sizeof(sin);
	struct event *ev;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == -1 ||
	    getsockname(fd, (struct sockaddr *)&sin, &slen) == -1) {
		perror("dns socket");
		return -1;
	}
	ev = event_new(base, fd, EV_READ | EV_PERSIST, dns_stub_cb,
	    (void *)fn);
	if (ev == NULL || event_add(ev, NULL) == -1) {
		fprintf(stderr, "dns socket: event_add failed\n");
		return -1;
	}
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, &sin, sizeof(sin));
	return 0;
}

unsigned
dns_stub_queries(void)
{
	return stub_queries;
}

size_t
dns_stub_header(const unsigned char *q, size_t qlen, unsigned char *out,
    unsigned char flags1, unsigned ancount)
{
	if (qlen < 12 || qlen > 400)
		return 0;
	memcpy(out, q, qlen);
	out[2] = 0x81;                  /* QR, RD */
	out[3] = flags1;                /* RA (0x80), AD (0x20), NOERROR */
	out[6] = (unsigned char)(ancount >> 8);
	out[7] = (unsigned char)ancount;
	out[10] = out[11] = 0;          /* no ARCOUNT (no OPT echoed) */
	return qlen;
}
