/*
 * lmtp.c - the pure parts of delivery over LMTP (RFC 2033) to a mailbox
 * server (route DOMAIN lmtp:[host]:port or lmtp:unix:/path): which
 * recipient a reply after the end of data belongs to, a unix socket
 * address, the relay name in logs.
 *
 * The dialog itself is the SMTP client's (deliver_session.c) with three
 * differences: LHLO instead of EHLO (no HELO fallback), PIPELINING always
 * (RFC 2033 5), and one reply per accepted recipient after the final dot
 * instead of one for the whole transaction (RFC 2033 4.2), so that one
 * recipient can be delivered while another is deferred or bounced.
 *
 * No state, no allocation, no logging: callable from any thread.
 */
#include <stdio.h>
#include <string.h>

#include <sys/socket.h>
#include <sys/un.h>

#include "tern/util.h"

#include "deliver_int.h"

size_t
dlv_lmtp_next_rcpt(const unsigned char *rstate, const size_t *sendlist,
    size_t nsend)
{
	size_t k;

	for (k = 0; k < nsend; k++)
		if (rstate[sendlist[k]] == DLV_R_ACCEPTED)
			break;
	return k;
}

int
dlv_lmtp_unix_addr(const char *path, struct sockaddr_storage *ss,
    unsigned *len)
{
	struct sockaddr_un *sun = (struct sockaddr_un *)ss;
	size_t n = path != NULL ? strlen(path) : 0;

	if (n == 0 || n >= sizeof(sun->sun_path))
		return -1;
	memset(ss, 0, sizeof(*ss));
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, path, n);
	*len = (unsigned)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	return 0;
}

void
dlv_relay_name(char *buf, size_t len, int lmtp, const char *host,
    const struct sockaddr_storage *ss, unsigned port)
{
	char a[64];

	if (ss->ss_family == AF_UNIX) {
		snprintf(buf, len, "lmtp:unix:%s", host);
		return;
	}
	sockaddr_ntop((const struct sockaddr *)ss, a, sizeof(a));
	snprintf(buf, len, "%s%s[%s]:%u", lmtp ? "lmtp:" : "", host, a, port);
}
