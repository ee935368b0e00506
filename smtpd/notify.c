/*
 * notify.c - readiness for the service manager (systemd Type=notify),
 * without libsystemd: the sd_notify(3) protocol is one datagram of
 * "KEY=VALUE" lines to the AF_UNIX socket named by $NOTIFY_SOCKET (a path,
 * or "@name" for the abstract namespace).
 *
 * main() sends READY=1 once every listener accepts, RELOADING=1 (with
 * MONOTONIC_USEC, as systemd 253+ wants) and READY=1 around a reload, and
 * STOPPING=1 when a graceful stop begins. Any user may write to systemd's
 * notify socket, so this works after the privilege drop; systemd accepts
 * the datagram from the main PID (NotifyAccess=main), which ternd is.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "tern/log.h"
#include "smtpd_int.h"

void
smtpd_notify(const char *state)
{
	static int warned;
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char msg[256];
	size_t plen;
	int fd, n;

	if (path == NULL || (path[0] != '/' && path[0] != '@'))
		return;
	plen = strlen(path);
	if (plen >= sizeof(sun.sun_path))
		return;
	memcpy(sun.sun_path, path, plen);
	if (path[0] == '@')
		sun.sun_path[0] = '\0';
	if (strcmp(state, "RELOADING=1") == 0) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		n = snprintf(msg, sizeof(msg), "%s\nMONOTONIC_USEC=%llu", state,
		    (unsigned long long)ts.tv_sec * 1000000ull +
		    (unsigned long long)ts.tv_nsec / 1000);
	} else
		n = snprintf(msg, sizeof(msg), "%s", state);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || sendto(fd, msg, (size_t)n, MSG_NOSIGNAL,
	    (struct sockaddr *)&sun, (socklen_t)(offsetof(struct sockaddr_un,
	    sun_path) + plen)) < 0) {
		if (!warned++)
			log_warn("notify %s: %s", path, state);
	} else
		log_debug("notify %s: %s", path, state);
	if (fd >= 0)
		close(fd);
}
