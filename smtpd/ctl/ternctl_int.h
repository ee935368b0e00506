/*
 * ternctl_int.h - private to ternctl: what its two builds share.
 *
 * ternctl is built twice from ternctl.c. `ternctl` (with ternctl_exec.c)
 * only talks to ternd over the control socket: it links the C library and
 * tern's own parsers, nothing else, so it starts fast (on a virtual
 * machine every page a process touches at start costs a trip to the
 * host, and OpenSSL, Berkeley DB and the others cost ~170 such faults, 2-3
 * times the whole of a socket client). `ternctl-local` (with
 * ternctl_local.c and ternctl_dkim.c) is the whole program: it also
 * answers from the queue directory when ternd is down, and manages the
 * users database and DKIM keys. `ternctl` runs `ternctl-local` in its
 * place, with the same arguments, for those (ternctl_local_exec), so an
 * operator only ever types `ternctl`.
 */
#ifndef TERN_TERNCTL_INT_H
#define TERN_TERNCTL_INT_H

#include <stddef.h>
#include <stdint.h>

#include "tern/util.h"

struct conf;

enum { TERNCTL_EX_OK, TERNCTL_EX_NOTFOUND, TERNCTL_EX_USAGE,
       TERNCTL_EX_UNREACHABLE, TERNCTL_EX_FAIL };

#define TERNCTL_CONF        "/etc/tern/tern.conf"
#define TERNCTL_LOCAL_NAME  "ternctl-local"

struct ternctl_opts {
	char **argv;                /* as given: ternctl-local gets the same */
	const char *conf_path;
	const char *socket_path;
	int json;
	int body;
	const char *id;
	const char *user_op;        /* add, del, list */
	const char *user_name;
	const char *cmd_name;
	int all;                    /* "all" or --all-matching */
	int all_matching;
	int nfilter;                /* filter options given */
	const char *from, *to, *domain;
	int held;
	int64_t older_than;         /* -1: not given */
	int64_t limit;              /* queue --limit; 0: not given */
	const char *after;          /* queue --after ID */
	int summary;                /* queue --summary */
	int64_t top;                /* queue --summary --top N; -1: default */
};

/* Where a response's lines come from: the socket, or an offline answer. */
struct ternctl_src {
	int fd;                     /* -1: offline */
	void *local;                /* offline: the open queue and listing, owned */
	/* the next page of an offline listing into in: 1 when it was the last */
	int (*local_page)(void *local, struct buf *in);
	void (*local_free)(void *local);
	struct buf in;              /* bytes not yet taken start at off */
	size_t off;
};

/*
 * The index in argv of the command word, after ternctl's global options
 * (-c FILE, -s SOCKET, --json); *conf_path is set when -c is given. 0
 * when there is none or an option is not one of these. Pure.
 */
int ternctl_command_index(int argc, char **argv, const char **conf_path);

/*
 * The work on files. In ternctl-local: done here (ternctl_local.c,
 * ternctl_dkim.c). In ternctl: each runs ternctl-local in this process's
 * place (ternctl_exec.c) and returns only when that fails (printed).
 */
/* If argv names the dkim command, run it: 1 with the exit code in *rc. */
int ternctl_dkim_main(int argc, char **argv, int *rc);
/* user add|del|list on the users database. An exit code. */
int ternctl_user(const struct ternctl_opts *o, const struct conf *cf);
/*
 * Answer req from the queue directory (ternd unreachable): the answer's
 * first line goes into src, a listing's pages follow as src is read. 0,
 * or -1 (cannot; printed).
 */
int ternctl_local(const struct ternctl_opts *o, const struct conf *cf,
    const char *req, size_t reqlen, int rdonly, struct ternctl_src *src);

#endif
