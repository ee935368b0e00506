/*
 * local.c - the local-submission socket (local-socket): how tern-sendmail
 * hands a message to ternd.
 *
 * A UNIX stream socket, mode 0666 like Postfix's world-writable maildrop:
 * every local user may submit. It speaks the same SMTP as the TCP listeners
 * and its sessions run on the first session loop through session.c, so a
 * message takes the one commit path (queue_commit_submit) and "250 queued"
 * means durable. What differs is who the client is: the kernel's
 * SO_PEERCRED uid of the connecting process, read once at accept (never
 * anything the client says). session.c makes such a session trusted to
 * relay, forces the envelope sender of a non-root caller to
 * user@hostname unless local-senders allows the one it gave, and adds
 * Date:/Message-ID: when missing (as on submission).
 *
 * The socket is bound in main() before the privilege drop (its directory
 * may be root's, e.g. /run/tern), then given to the run-time user.
 */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "tern/log.h"
#include "tern/util.h"
#include "smtpd_int.h"

/* Create path's directory (one level) if missing: 0755, given to pw. */
static int
smtpd_local_dir(const char *path, const struct passwd *pw, char *err,
    size_t errlen)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	if ((slash = strrchr(dir, '/')) == NULL || slash == dir)
		return 0;
	*slash = '\0';
	if (mkdir(dir, 0755) < 0) {
		if (errno == EEXIST)
			return 0;
		snprintf(err, errlen, "local-socket: mkdir %s: %s", dir,
		    strerror(errno));
		return -1;
	}
	if (pw != NULL && chown(dir, pw->pw_uid, pw->pw_gid) < 0) {
		snprintf(err, errlen, "local-socket: chown %s: %s", dir,
		    strerror(errno));
		return -1;
	}
	return 0;
}

int
smtpd_local_bind(const char *path, const struct passwd *pw, char *err,
    size_t errlen)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct stat st;
	int fd;

	if (smtpd_local_dir(path, pw, err, errlen) < 0)
		return -1;
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	/* a socket left by a previous run goes; anything else stays */
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode)) {
			snprintf(err, errlen, "local-socket %s: exists and is "
			    "not a socket", path);
			return -1;
		}
		unlink(path);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "local-socket: socket: %s", strerror(errno));
		return -1;
	}
	if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
	    chmod(path, 0666) < 0 ||
	    (pw != NULL && chown(path, pw->pw_uid, pw->pw_gid) < 0) ||
	    listen(fd, 128) < 0) {
		snprintf(err, errlen, "local-socket %s: %s", path,
		    strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int
smtpd_local_peer(int fd, uid_t *uid, char *name, size_t namelen)
{
	struct ucred cr;
	socklen_t crlen = sizeof(cr);
	struct passwd pwbuf, *pw = NULL;
	char buf[2048];

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) < 0)
		return -1;
	*uid = cr.uid;
	if (getpwuid_r(cr.uid, &pwbuf, buf, sizeof(buf), &pw) == 0 && pw != NULL)
		snprintf(name, namelen, "%s", pw->pw_name);
	else
		snprintf(name, namelen, "uid%u", (unsigned)cr.uid);
	return 0;
}

static void
smtpd_local_accept_cb(struct evconnlistener *lev, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	struct smtpd_loop *loop = arg;
	struct smtpd_server *srv = loop->srv;
	struct conf *conf = smtpd_conf_get(srv);
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	const char *refuse = NULL;

	if (loop->stopping)
		refuse = "421 4.3.2 Service shutting down\r\n";
	else if (conf->local_socket == NULL)
		refuse = "421 4.3.2 Local submission disabled\r\n";
	else if (srv->nconnections >= conf->max_connections)
		refuse = "421 4.7.0 Too many connections, try again later\r\n";
	if (refuse != NULL) {
		ssize_t w = write(fd, refuse, strlen(refuse));
		(void)w;        /* best effort: the peer may be gone */
		close(fd);
		conf_unref(conf);
		return;
	}
	srv->nconnections++;
	smtpd_session_accept(loop, fd, (struct sockaddr *)&sun, sizeof(sun),
	    &conf->local_listen, conf, NULL);
}

void
smtpd_local_arm(struct smtpd_loop *loop)
{
	struct smtpd_server *srv = loop->srv;

	if (srv->local_fd < 0)
		return;
	loop->local_lev = evconnlistener_new(loop->base, smtpd_local_accept_cb,
	    loop, LEV_OPT_CLOSE_ON_FREE, -1, srv->local_fd);
	if (loop->local_lev == NULL)
		fatalx("evconnlistener_new failed for the local socket");
	srv->local_fd = -1;     /* owned by the listener now */
}
