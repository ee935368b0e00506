/*
 * ternctl_exec.c - the socket-only ternctl's stand-ins for the work on
 * files (ternctl_int.h): each runs ternctl-local, found beside this
 * program's own file (/proc/self/exe), in this process's place with the
 * very same arguments, so the result, the output and the exit code are
 * ternctl-local's. Returns only when it cannot be run (printed).
 *
 * Why a second program: see ternctl_int.h. It costs an exec only for the
 * commands that need the files (offline answers, user, dkim); every
 * command ternd answers is served without loading what those need.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ternctl_int.h"

static void
ternctl_local_exec(char **argv)
{
	char path[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
	char *slash;

	if (n <= 0) {
		fprintf(stderr, "ternctl: cannot find my own file: %s\n",
		    strerror(errno));
		return;
	}
	path[n] = '\0';
	if ((slash = strrchr(path, '/')) == NULL ||
	    (size_t)(slash + 1 - path) + sizeof(TERNCTL_LOCAL_NAME) > sizeof(path)) {
		fprintf(stderr, "ternctl: %s: unexpected path\n", path);
		return;
	}
	memcpy(slash + 1, TERNCTL_LOCAL_NAME, sizeof(TERNCTL_LOCAL_NAME));
	fflush(NULL);
	execv(path, argv);
	fprintf(stderr, "ternctl: cannot run %s: %s\n", path, strerror(errno));
}

int
ternctl_dkim_main(int argc, char **argv, int *rc)
{
	const char *conf_path = NULL;
	int i = ternctl_command_index(argc, argv, &conf_path);

	if (i == 0 || strcmp(argv[i], "dkim") != 0)
		return 0;
	ternctl_local_exec(argv);
	*rc = TERNCTL_EX_FAIL;
	return 1;
}

int
ternctl_user(const struct ternctl_opts *o, const struct conf *cf)
{
	(void)cf;
	ternctl_local_exec(o->argv);
	return TERNCTL_EX_FAIL;
}

int
ternctl_local(const struct ternctl_opts *o, const struct conf *cf,
    const char *req, size_t reqlen, int rdonly, struct ternctl_src *src)
{
	(void)cf;
	(void)req;
	(void)reqlen;
	(void)rdonly;
	(void)src;
	ternctl_local_exec(o->argv);
	return -1;
}
