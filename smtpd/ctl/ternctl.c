/*
 * ternctl.c - the operator's command line: talks to ternd over the control
 * socket (JSON lines, see include/tern/ctl.h) and prints the answer for a
 * human, or as the server's JSON with --json.
 *
 *   ternctl [-c FILE] [-s SOCKET] [--json] COMMAND [ARGS]
 *
 * Filters (queue, delete --all-matching, retry all) go to the server as
 * "filter" (ctl.h), so the daemon and the offline fallback filter alike.
 * State-changing commands (hold, release, delete, retry, bounce, pause,
 * resume, reload) need the daemon; stats without it reports the queue only.
 *
 * Single-threaded, blocking I/O, short-lived. Reads the configuration with
 * the pure conf_parse() (not conf_load(): an operator in control-group may
 * not read the TLS key, and ternctl needs only queue and control-socket).
 * When the daemon is unreachable, read-only commands (flag TERNCTL_C_LOCAL)
 * open the queue directory read-only and answer with the very same request
 * handler the daemon runs (ctl_request_handle), so the output is the same.
 *
 * Untrusted input: the server's response (bounded, parsed by json.c) and the
 * strings inside it (senders, addresses, errors, chosen by mail peers):
 * human output passes them through log_escape(), so they cannot carry
 * terminal control sequences. Raw bodies are written only by "show --body".
 *
 * Exit codes: 0 ok, 1 no such message, 2 usage or configuration error,
 * 3 daemon unreachable (and no read-only fallback possible; the message
 * names the socket), 4 other error (e.g. CTL_E_STATE: message in flight).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "tern/conf.h"
#include "tern/ctl.h"
#include "tern/json.h"
#include "tern/log.h"
#include "tern/util.h"
#include "ternctl_int.h"

#define TERNCTL_RESP_MAX    (1024u * 1024 * 1024)  /* response line bound */


#define TERNCTL_C_ID     0x01u      /* takes a queue id */
#define TERNCTL_C_LOCAL  0x02u      /* read-only: may answer from the queue dir */
#define TERNCTL_C_BODY   0x04u      /* accepts --body */
#define TERNCTL_C_USER   0x08u      /* user add|del|list: the users database, not the daemon */
#define TERNCTL_C_FILTER 0x10u      /* takes --from/--to/--domain/--held/--older-than */
#define TERNCTL_C_ALL    0x20u      /* ID, or "all" / --all-matching: bulk */
#define TERNCTL_C_DOMAIN 0x40u      /* takes --domain alone (pause, resume) */
#define TERNCTL_C_IDOPT  0x80u      /* the ID is optional (with TERNCTL_C_ALL) */
#define TERNCTL_C_SUB    0x100u     /* "queue <name>": not a command alone */
#define TERNCTL_C_RDONLY 0x200u     /* offline: a read-only open, no recovery */
#define TERNCTL_C_PAGE   0x400u     /* --limit/--after/--summary/--top (queue) */


/* A parsed response: text and its tokens (both owned). */
struct ternctl_resp {
	char *p;
	size_t len;
	struct json_tok *toks;
	size_t ntoks;
};

struct ternctl_cmd {
	const char *name;
	const char *usage;
	unsigned flags;
	int (*print)(const struct ternctl_opts *o, const struct ternctl_resp *r);
};

static int ternctl_print_summary(const struct ternctl_opts *, const struct ternctl_resp *);
static int ternctl_print_show(const struct ternctl_opts *, const struct ternctl_resp *);
static int ternctl_print_ping(const struct ternctl_opts *, const struct ternctl_resp *);
static int ternctl_print_result(const struct ternctl_opts *, const struct ternctl_resp *);
static int ternctl_print_pause(const struct ternctl_opts *, const struct ternctl_resp *);
static int ternctl_print_stats(const struct ternctl_opts *, const struct ternctl_resp *);
static int ternctl_print_done(const struct ternctl_opts *, const struct ternctl_resp *);
static int ternctl_print_verify(const struct ternctl_opts *, const struct ternctl_resp *);

#define TERNCTL_FILTERS "[--from TEXT] [--to TEXT] [--domain D] [--held] [--older-than DURATION]"

/* The command grammar. Add a line here and in ctl_request.c's ctl_cmds[]. */
static const struct ternctl_cmd ternctl_cmds[] = {
	{ "queue", "queue " TERNCTL_FILTERS " [--limit N] [--after ID]\n"
	  "  queue --summary [--top N]  (counts per state and the top domains)",
	  TERNCTL_C_LOCAL | TERNCTL_C_FILTER | TERNCTL_C_PAGE, ternctl_print_summary },
	{ "show",  "show <id> [--body]",
	  TERNCTL_C_ID | TERNCTL_C_LOCAL | TERNCTL_C_BODY, ternctl_print_show },
	{ "delete", "delete <id> | delete all | delete --all-matching " TERNCTL_FILTERS,
	  TERNCTL_C_ALL | TERNCTL_C_FILTER, ternctl_print_result },
	{ "hold",  "hold <id>",            TERNCTL_C_ID, ternctl_print_result },
	{ "release", "release <id>",       TERNCTL_C_ID, ternctl_print_result },
	{ "retry", "retry <id> | retry all | retry --domain D  (attempt now)",
	  TERNCTL_C_ALL | TERNCTL_C_FILTER | TERNCTL_C_IDOPT, ternctl_print_result },
	{ "bounce", "bounce <id>  (fail all pending recipients, DSN to the sender)",
	  TERNCTL_C_ID, ternctl_print_result },
	{ "verify", "queue verify  (index against every segment record; exit 4 "
	  "on a difference)",
	  TERNCTL_C_LOCAL | TERNCTL_C_SUB | TERNCTL_C_RDONLY, ternctl_print_verify },
	{ "stats", "stats",                TERNCTL_C_LOCAL, ternctl_print_stats },
	{ "pause", "pause [--domain D]  (stop handing out deliveries)",
	  TERNCTL_C_DOMAIN, ternctl_print_pause },
	{ "resume", "resume [--domain D]  (without --domain: every pause)",
	  TERNCTL_C_DOMAIN, ternctl_print_pause },
	{ "reload", "reload",              0, ternctl_print_done },
	{ "ping",  "ping",                 0, ternctl_print_ping },
	{ "user",  "user add <name> (password on stdin) | user del <name> | user list",
	  TERNCTL_C_USER, NULL },
};

static void
ternctl_usage(FILE *f)
{
	fprintf(f, "usage: ternctl [-c FILE] [-s SOCKET] [--json] COMMAND [ARGS]\n"
	    "commands:\n");
	for (size_t i = 0; i < sizeof(ternctl_cmds) / sizeof(ternctl_cmds[0]); i++)
		fprintf(f, "  %s\n", ternctl_cmds[i].usage);
	fprintf(f, "  dkim keygen DOMAIN SELECTOR [--type rsa|ed25519] [--bits 2048] "
	    "[--out FILE]\n");
	fprintf(f,
	    "filters: --from/--to match a substring of the sender / a pending\n"
	    "  recipient (case-insensitive); --domain a pending recipient's domain;\n"
	    "  --held held messages; --older-than N[s|m|h|d] arrived that long ago.\n"
	    "pages: queue --limit N lists at most N messages and ends with the id to\n"
	    "  pass as --after ID for the next page.\n"
	    "exit: 0 done, 1 no such message, 2 usage, 3 ternd unreachable, 4 error.\n"
	    "  queue, show and stats work from the queue directory when ternd is down.\n"
	    "--json prints the server's response, one object (schema: tern/ctl.h):\n"
	    "  error   {\"ok\":false,\"error\":TEXT,\"code\":N}\n"
	    "  queue   {\"ok\":true,\"messages\":[ENV...],\"count\":N,\"next_after\":ID|null}\n"
	    "          (printed as it streams: one ENV a line)\n"
	    "  queue --summary {\"ok\":true,\"states\":{\"messages\",\"new\",\"deferred\",\n"
	    "          \"held\",\"corrupt\"},\"recipients\",\"bytes\",\"oldest_arrival\",\n"
	    "          \"domains\":[{\"domain\",\"messages\",\"recipients\"}...]}\n"
	    "  show    {\"ok\":true,\"message\":ENV+{\"history\":[HIST...],\"history_dropped\"}}\n"
	    "  ENV     {\"id\",\"arrival\",\"size\",\"sender\",\"recipients\":[RCPT...],\n"
	    "           \"attempts\",\"next_attempt\",\"last_error\",\"held\",\"corrupt\",\n"
	    "           \"client\",\"helo\",\"auth_user\"}\n"
	    "  RCPT    {\"address\",\"state\",\"status\",\"last_error\",\"relay\",\"updated\"}\n"
	    "  HIST    {\"time\",\"recipient\",\"result\",\"status\",\"relay\",\"reply\",\"tls\"}\n"
	    "  hold, release, delete, retry, bounce\n"
	    "          {\"ok\":true,\"ids\":[ID...],\"skipped\":[{\"id\",\"reason\"}...]}\n"
	    "  pause, resume {\"ok\":true,\"paused_all\":BOOL,\"paused_domains\":[D...]}\n"
	    "  stats   {\"ok\":true,\"running\",\"uptime\",\"counters\":{\"accepted\",\n"
	    "           \"delivered\",\"deferred\",\"bounced\",\"expired\",\"dsn\"}|null,\n"
	    "           \"paused_all\",\"paused_domains\",\"loading\":{\"done\",\"read\",\n"
	    "           \"total\"},\"destinations_total\",\n"
	    "           \"destinations_down\",\"destinations\":[{\"destination\",\"state\",\n"
	    "           \"down_until\",\"concurrency\",\"max\",\"in_flight\",\"waiting\",\n"
	    "           \"failures\",\"last_error\"}...],\"queue\":{\"messages\",\"pending\",\n"
	    "           \"held\",\"corrupt\",\"domains\":[{\"domain\",\"messages\",\"recipients\"}...]}}\n"
	    "  reload  {\"ok\":true}     ping {\"ok\":true,\"version\",\"pid\"}\n");
}

static void
ternctl_conf_err(void *arg, const char *msg)
{
	fprintf(stderr, "ternctl: %s\n", msg);
}

/* ---- response access ---- */

static long
ternctl_field(const struct ternctl_resp *r, size_t obj, const char *key)
{
	return json_obj_find(r->p, r->toks, obj, key);
}

/* Token i, a string, decoded and made printable in buf: 1, or 0 ("")
 * when it is not a valid string. */
static int
ternctl_tok_str(const struct ternctl_resp *r, long i, char *buf, size_t buflen)
{
	char *tmp;
	long n;

	buf[0] = '\0';
	if (i < 0 || r->toks[i].type != JSON_STRING)
		return 0;
	tmp = xmalloc(r->toks[i].end - r->toks[i].start + 1);
	n = json_str_decode(r->p, &r->toks[i], tmp, r->toks[i].end - r->toks[i].start + 1);
	if (n >= 0)
		log_escape(buf, buflen, tmp, (size_t)n);
	free(tmp);
	return n >= 0;
}

/* A string field, decoded and made printable, in buf; "" if missing/null. */
static const char *
ternctl_str(const struct ternctl_resp *r, size_t obj, const char *key,
    char *buf, size_t buflen, int *present)
{
	int ok = ternctl_tok_str(r, ternctl_field(r, obj, key), buf, buflen);

	if (present != NULL)
		*present = ok;
	return buf;
}

static int64_t
ternctl_num(const struct ternctl_resp *r, size_t obj, const char *key)
{
	long i = ternctl_field(r, obj, key);
	return i >= 0 && r->toks[i].type == JSON_NUMBER ? r->toks[i].num : 0;
}

static int
ternctl_bool(const struct ternctl_resp *r, size_t obj, const char *key)
{
	long i = ternctl_field(r, obj, key);
	return i >= 0 && r->toks[i].type == JSON_TRUE;
}

static const char *
ternctl_time(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (gmtime_r(&tt, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "%lld", (long long)t);
	return buf;
}

/* ---- printers ---- */

static void
ternctl_print_rcpts_brief(const struct ternctl_resp *r, size_t msg)
{
	char addr[1024], state[32], status[32], err[512];
	long a = ternctl_field(r, msg, "recipients");

	if (a < 0 || r->toks[a].type != JSON_ARRAY)
		return;
	size_t i = (size_t)a + 1;
	for (size_t k = 0; k < r->toks[a].size; i = r->toks[i].next, k++) {
		int has_err;
		ternctl_str(r, i, "address", addr, sizeof(addr), NULL);
		ternctl_str(r, i, "state", state, sizeof(state), NULL);
		ternctl_str(r, i, "status", status, sizeof(status), NULL);
		ternctl_str(r, i, "last_error", err, sizeof(err), &has_err);
		printf("%16s %-8s %s", "", state, addr);
		if (status[0] != '\0' || has_err)
			printf(" (%s%s%s)", status, status[0] && has_err ? " " : "", err);
		printf("\n");
	}
}

/* One listed message (a row of a listing, token 0 of r). */
static void
ternctl_print_row(const struct ternctl_resp *r, uint64_t k)
{
	char id[64], sender[1024], when[32];

	if (k == 0)
		printf("%-16s %-20s %10s  %s\n", "ID", "ARRIVAL (UTC)", "SIZE",
		    "SENDER");
	ternctl_str(r, 0, "id", id, sizeof(id), NULL);
	ternctl_str(r, 0, "sender", sender, sizeof(sender), NULL);
	printf("%-16s %-20s %10lld  <%s>%s%s\n", id,
	    ternctl_time(ternctl_num(r, 0, "arrival"), when, sizeof(when)),
	    (long long)ternctl_num(r, 0, "size"), sender,
	    ternctl_bool(r, 0, "held") ? " HELD" : "",
	    ternctl_bool(r, 0, "corrupt") ? " CORRUPT" : "");
	ternctl_print_rcpts_brief(r, 0);
}

/* The end of a listing (human). */
static void
ternctl_print_end(const struct ternctl_resp *r, uint64_t rows)
{
	char next[64];

	if (rows == 0)
		printf("queue is empty\n");
	else
		printf("-- %llu message%s\n", (unsigned long long)rows,
		    rows == 1 ? "" : "s");
	if (ternctl_str(r, 0, "next_after", next, sizeof(next), NULL)[0])
		printf("-- more: ternctl queue --after %s\n", next);
}

static void
ternctl_print_kv(const struct ternctl_resp *r, size_t obj, const char *indent,
    const char *key)
{
	char buf[2048];
	int present;

	ternctl_str(r, obj, key, buf, sizeof(buf), &present);
	printf("%s%s: %s\n", indent, key, present ? buf : "-");
}

static int
ternctl_body_write(const struct ternctl_resp *r)
{
	long b = ternctl_field(r, 0, "body");

	if (b < 0 || r->toks[b].type != JSON_STRING || r->toks[b].escaped) {
		fprintf(stderr, "ternctl: response has no body\n");
		return TERNCTL_EX_FAIL;
	}
	size_t n = r->toks[b].end - r->toks[b].start;
	uint8_t *out = xmalloc(n / 4 * 3 + 1);
	long len = json_base64_decode(r->p + r->toks[b].start, n, out);
	int rc = TERNCTL_EX_OK;
	if (len < 0) {
		fprintf(stderr, "ternctl: body is not valid base64\n");
		rc = TERNCTL_EX_FAIL;
	} else if (fwrite(out, 1, (size_t)len, stdout) != (size_t)len ||
	    fflush(stdout) != 0) {
		fprintf(stderr, "ternctl: writing the body: %s\n", strerror(errno));
		rc = TERNCTL_EX_FAIL;
	}
	free(out);
	return rc;
}

/* "history:" then per entry: TIME RESULT <rcpt> status= relay= [tls=], and
 * the reply indented on the next line */
static void
ternctl_print_history(const struct ternctl_resp *r, size_t e)
{
	char rcpt[1024], res[32], st[64], relay[512], tls[256], reply[1024];
	char when[32];
	long a = ternctl_field(r, e, "history");
	int64_t dropped = ternctl_num(r, e, "history_dropped");
	int has_tls, has_reply;

	if (a < 0 || r->toks[a].type != JSON_ARRAY)
		return;
	if (dropped > 0)
		printf("history: (%lld older entries not kept)\n",
		    (long long)dropped);
	else
		printf("history:%s\n", r->toks[a].size == 0 ? " -" : "");
	size_t i = (size_t)a + 1;
	for (size_t k = 0; k < r->toks[a].size; i = r->toks[i].next, k++) {
		ternctl_str(r, i, "recipient", rcpt, sizeof(rcpt), NULL);
		ternctl_str(r, i, "result", res, sizeof(res), NULL);
		ternctl_str(r, i, "status", st, sizeof(st), NULL);
		ternctl_str(r, i, "relay", relay, sizeof(relay), NULL);
		ternctl_str(r, i, "tls", tls, sizeof(tls), &has_tls);
		ternctl_str(r, i, "reply", reply, sizeof(reply), &has_reply);
		printf("  %s %s <%s> status=%s relay=%s%s%s\n",
		    ternctl_time(ternctl_num(r, i, "time"), when, sizeof(when)),
		    res, rcpt, st[0] ? st : "-", relay[0] ? relay : "none",
		    has_tls ? " tls=" : "", has_tls ? tls : "");
		if (has_reply)
			printf("    %s\n", reply);
	}
}

static int
ternctl_print_show(const struct ternctl_opts *o, const struct ternctl_resp *r)
{
	char buf[2048], when[32];
	long m = ternctl_field(r, 0, "message");

	if (m < 0 || r->toks[m].type != JSON_OBJECT) {
		fprintf(stderr, "ternctl: malformed response\n");
		return TERNCTL_EX_FAIL;
	}
	if (o->body)
		return ternctl_body_write(r);
	size_t e = (size_t)m;
	ternctl_print_kv(r, e, "", "id");
	printf("arrival: %s\n", ternctl_time(ternctl_num(r, e, "arrival"), when,
	    sizeof(when)));
	printf("size: %lld\n", (long long)ternctl_num(r, e, "size"));
	printf("sender: <%s>\n", ternctl_str(r, e, "sender", buf, sizeof(buf), NULL));
	ternctl_print_kv(r, e, "", "client");
	ternctl_print_kv(r, e, "", "helo");
	ternctl_print_kv(r, e, "", "auth_user");
	printf("attempts: %lld\n", (long long)ternctl_num(r, e, "attempts"));
	int64_t next = ternctl_num(r, e, "next_attempt");
	printf("next_attempt: %s\n", next == 0 ? "now" :
	    ternctl_time(next, when, sizeof(when)));
	ternctl_print_kv(r, e, "", "last_error");
	printf("held: %s\n", ternctl_bool(r, e, "held") ? "yes" : "no");
	printf("corrupt: %s\n", ternctl_bool(r, e, "corrupt") ? "yes" : "no");
	printf("smtputf8: %s\n", ternctl_bool(r, e, "smtputf8") ? "yes" : "no");
	printf("8bitmime: %s\n", ternctl_bool(r, e, "8bitmime") ? "yes" : "no");
	printf("requiretls: %s\n", ternctl_bool(r, e, "requiretls") ? "yes" :
	    ternctl_bool(r, e, "tls_optional") ? "no (TLS-Required: No)" : "no");
	long a = ternctl_field(r, e, "recipients");
	if (a >= 0 && r->toks[a].type == JSON_ARRAY) {
		size_t i = (size_t)a + 1;
		for (size_t k = 0; k < r->toks[a].size; i = r->toks[i].next, k++) {
			printf("recipient: %s\n",
			    ternctl_str(r, i, "address", buf, sizeof(buf), NULL));
			ternctl_print_kv(r, i, "  ", "state");
			ternctl_print_kv(r, i, "  ", "status");
			ternctl_print_kv(r, i, "  ", "last_error");
			ternctl_print_kv(r, i, "  ", "relay");
			int64_t up = ternctl_num(r, i, "updated");
			printf("  updated: %s\n", up == 0 ? "-" :
			    ternctl_time(up, when, sizeof(when)));
		}
	}
	ternctl_print_history(r, e);
	return TERNCTL_EX_OK;
}

static int
ternctl_print_ping(const struct ternctl_opts *o, const struct ternctl_resp *r)
{
	printf("ternd is running (pid %lld, protocol %lld)\n",
	    (long long)ternctl_num(r, 0, "pid"), (long long)ternctl_num(r, 0, "version"));
	return TERNCTL_EX_OK;
}

static void
ternctl_print_idlist(const struct ternctl_resp *r, const char *key,
    const char *verb)
{
	char id[64], reason[128];
	long a = ternctl_field(r, 0, key);

	if (a < 0 || r->toks[a].type != JSON_ARRAY)
		return;
	size_t i = (size_t)a + 1;
	for (size_t k = 0; k < r->toks[a].size; i = r->toks[i].next, k++) {
		if (r->toks[i].type == JSON_STRING) {
			ternctl_tok_str(r, (long)i, id, sizeof(id));
			printf("%s %s\n", verb, id);
		} else {
			ternctl_str(r, i, "id", id, sizeof(id), NULL);
			ternctl_str(r, i, "reason", reason, sizeof(reason), NULL);
			printf("%s %s (%s)\n", verb, id, reason);
		}
	}
}

static int
ternctl_print_result(const struct ternctl_opts *o, const struct ternctl_resp *r)
{
	static const struct { const char *cmd, *verb; } verbs[] = {
		{ "delete", "deleted" }, { "hold", "held" },
		{ "release", "released" }, { "retry", "retrying" },
		{ "bounce", "bounced" },
	};
	const char *verb = "done";
	long a = ternctl_field(r, 0, "ids"), sk = ternctl_field(r, 0, "skipped");

	if (a < 0 || r->toks[a].type != JSON_ARRAY) {
		fprintf(stderr, "ternctl: malformed response\n");
		return TERNCTL_EX_FAIL;
	}
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (strcmp(verbs[i].cmd, o->cmd_name) == 0)
			verb = verbs[i].verb;
	ternctl_print_idlist(r, "ids", verb);
	ternctl_print_idlist(r, "skipped", "skipped");
	if (o->all) {
		size_t nsk = sk >= 0 && r->toks[sk].type == JSON_ARRAY ?
		    r->toks[sk].size : 0;
		printf("-- %zu message%s %s, %zu skipped\n", r->toks[a].size,
		    r->toks[a].size == 1 ? "" : "s", verb, nsk);
	}
	return TERNCTL_EX_OK;
}

static void
ternctl_print_paused(const struct ternctl_resp *r)
{
	char d[300];
	long a = ternctl_field(r, 0, "paused_domains");
	int any = 0;

	if (ternctl_bool(r, 0, "paused_all"))
		printf("delivery: paused (all)\n");
	if (a >= 0 && r->toks[a].type == JSON_ARRAY) {
		size_t i = (size_t)a + 1;
		for (size_t k = 0; k < r->toks[a].size; i = r->toks[i].next, k++) {
			ternctl_tok_str(r, (long)i, d, sizeof(d));
			printf("delivery: paused for %s\n", d);
			any = 1;
		}
	}
	if (!any && !ternctl_bool(r, 0, "paused_all"))
		printf("delivery: running\n");
}

static int
ternctl_print_pause(const struct ternctl_opts *o, const struct ternctl_resp *r)
{
	ternctl_print_paused(r);
	return TERNCTL_EX_OK;
}

/* The scheduler's destinations: state, window, jobs, last error. */
static void
ternctl_print_dests(const struct ternctl_resp *r)
{
	long a = ternctl_field(r, 0, "destinations");
	char name[300], st[16], err[400], when[64];

	if (a < 0 || r->toks[a].type != JSON_ARRAY)
		return;
	printf("destinations: %lld (%lld down)\n",
	    (long long)ternctl_num(r, 0, "destinations_total"),
	    (long long)ternctl_num(r, 0, "destinations_down"));
	size_t i = (size_t)a + 1;
	for (size_t k = 0; k < r->toks[a].size; i = r->toks[i].next, k++) {
		ternctl_str(r, i, "destination", name, sizeof(name), NULL);
		ternctl_str(r, i, "state", st, sizeof(st), NULL);
		if (strcmp(st, "down") == 0)
			printf("  %-40s down until %s", name, ternctl_time(
			    ternctl_num(r, i, "down_until"), when, sizeof(when)));
		else
			printf("  %-40s %s", name, st);
		printf(" concurrency %lld/%lld in-flight %lld waiting %lld "
		    "failures %lld\n",
		    (long long)ternctl_num(r, i, "concurrency"),
		    (long long)ternctl_num(r, i, "max"),
		    (long long)ternctl_num(r, i, "in_flight"),
		    (long long)ternctl_num(r, i, "waiting"),
		    (long long)ternctl_num(r, i, "failures"));
		if (ternctl_str(r, i, "last_error", err, sizeof(err), NULL)[0])
			printf("    last error: %s\n", err);
	}
}

static int
ternctl_print_verify(const struct ternctl_opts *o, const struct ternctl_resp *r)
{
	static const char *const keys[] = { "segments", "records", "damaged",
	    "torn", "entries", "held_corrupt", "dead", "unindexed",
	    "differences" };
	long a = ternctl_field(r, 0, "diffs");
	char id[64], seg[32], what[300];

	(void)o;
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++)
		printf("%s%s=%lld", k ? " " : "", keys[k],
		    (long long)ternctl_num(r, 0, keys[k]));
	printf("\n");
	if (a >= 0 && r->toks[a].type == JSON_ARRAY) {
		size_t i = (size_t)a + 1;
		for (size_t k = 0; k < r->toks[a].size; i = r->toks[i].next, k++)
			printf("differs: id=%s segment=%s offset=%lld: %s\n",
			    ternctl_str(r, i, "id", id, sizeof(id), NULL)[0] ? id : "-",
			    ternctl_str(r, i, "segment", seg, sizeof(seg), NULL),
			    (long long)ternctl_num(r, i, "offset"),
			    ternctl_str(r, i, "what", what, sizeof(what), NULL));
	}
	if (ternctl_num(r, 0, "differences") > 0) {
		printf("index and segments disagree; to rebuild the index from the "
		    "segments, stop ternd and run: ternd --rebuild-index -c CONFIG\n");
		return TERNCTL_EX_FAIL;
	}
	printf("index and segments agree\n");
	return TERNCTL_EX_OK;
}

/* The array a of {"domain","messages","recipients"}: stats' lines, or a
 * table under a header (summary). */
static void
ternctl_print_domains(const struct ternctl_resp *r, long a, int table)
{
	char d[300];

	if (a < 0 || r->toks[a].type != JSON_ARRAY)
		return;
	size_t i = (size_t)a + 1;
	for (size_t k = 0; k < r->toks[a].size; i = r->toks[i].next, k++) {
		long long m = (long long)ternctl_num(r, i, "messages");
		long long n = (long long)ternctl_num(r, i, "recipients");
		ternctl_str(r, i, "domain", d, sizeof(d), NULL);
		if (table)
			printf("%-40s %10lld %10lld\n", d, m, n);
		else
			printf("  %-40s %6lld messages %6lld recipients\n", d, m, n);
	}
}

static int
ternctl_print_stats(const struct ternctl_opts *o, const struct ternctl_resp *r)
{
	long c = ternctl_field(r, 0, "counters"), q = ternctl_field(r, 0, "queue");

	if (q < 0 || r->toks[q].type != JSON_OBJECT) {
		fprintf(stderr, "ternctl: malformed response\n");
		return TERNCTL_EX_FAIL;
	}
	if (c >= 0 && r->toks[c].type == JSON_OBJECT) {
		printf("uptime: %llds\n", (long long)ternctl_num(r, 0, "uptime"));
		printf("accepted: %lld\n", (long long)ternctl_num(r, (size_t)c, "accepted"));
		printf("delivered: %lld\n", (long long)ternctl_num(r, (size_t)c, "delivered"));
		printf("deferred: %lld\n", (long long)ternctl_num(r, (size_t)c, "deferred"));
		printf("bounced: %lld\n", (long long)ternctl_num(r, (size_t)c, "bounced"));
		printf("expired: %lld\n", (long long)ternctl_num(r, (size_t)c, "expired"));
		printf("dsn: %lld\n", (long long)ternctl_num(r, (size_t)c, "dsn"));
		ternctl_print_paused(r);
		long l = ternctl_field(r, 0, "loading");
		if (l >= 0 && r->toks[l].type == JSON_OBJECT &&
		    !ternctl_bool(r, (size_t)l, "done") &&
		    ternctl_num(r, (size_t)l, "total") > 0)
			printf("loading: %lld of %lld\n",
			    (long long)ternctl_num(r, (size_t)l, "read"),
			    (long long)ternctl_num(r, (size_t)l, "total"));
		else if (l >= 0 && r->toks[l].type == JSON_OBJECT &&
		    !ternctl_bool(r, (size_t)l, "done"))
			printf("loading: %lld entries read\n",
			    (long long)ternctl_num(r, (size_t)l, "read"));
		ternctl_print_dests(r);
	} else
		printf("ternd is not running: queue only, no counters\n");
	printf("queue: %lld messages (%lld pending, %lld held, %lld corrupt)\n",
	    (long long)ternctl_num(r, (size_t)q, "messages"),
	    (long long)ternctl_num(r, (size_t)q, "pending"),
	    (long long)ternctl_num(r, (size_t)q, "held"),
	    (long long)ternctl_num(r, (size_t)q, "corrupt"));
	printf("disk: segments %lld bytes, index %lld bytes\n",
	    (long long)ternctl_num(r, (size_t)q, "segments_bytes"),
	    (long long)ternctl_num(r, (size_t)q, "index_bytes"));
	ternctl_print_domains(r, ternctl_field(r, (size_t)q, "domains"), 0);
	return TERNCTL_EX_OK;
}

static int
ternctl_print_summary(const struct ternctl_opts *o, const struct ternctl_resp *r)
{
	static const char *const states[] = { "messages", "new", "deferred",
	    "held", "corrupt" };
	long st = ternctl_field(r, 0, "states"), a = ternctl_field(r, 0, "domains");
	char when[32];

	(void)o;
	if (st < 0 || r->toks[st].type != JSON_OBJECT) {
		fprintf(stderr, "ternctl: malformed response\n");
		return TERNCTL_EX_FAIL;
	}
	for (size_t k = 0; k < sizeof(states) / sizeof(states[0]); k++)
		printf("%-10s %10lld\n", states[k],
		    (long long)ternctl_num(r, (size_t)st, states[k]));
	printf("%-10s %10lld (pending)\n", "recipients",
	    (long long)ternctl_num(r, 0, "recipients"));
	printf("%-10s %10lld\n", "bytes", (long long)ternctl_num(r, 0, "bytes"));
	int64_t oldest = ternctl_num(r, 0, "oldest_arrival");
	printf("%-10s %s\n", "oldest", oldest == 0 ? "-" :
	    ternctl_time(oldest, when, sizeof(when)));
	if (a >= 0 && r->toks[a].type == JSON_ARRAY && r->toks[a].size > 0) {
		printf("%-40s %10s %10s\n", "DOMAIN", "MESSAGES", "RECIPIENTS");
		ternctl_print_domains(r, a, 1);
	}
	return TERNCTL_EX_OK;
}

static int
ternctl_print_done(const struct ternctl_opts *o, const struct ternctl_resp *r)
{
	printf("%s: done\n", o->cmd_name);
	return TERNCTL_EX_OK;
}

/* ---- transport ---- */

/* Connect; the fd, or -1 with errno. */
static int
ternctl_connect(const char *path)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1)
		return -1;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun)) == -1) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/*
 * Where response lines come from: the socket, or (offline) the request
 * handler and its listing's pages. Either way memory holds one line, plus
 * at most one page offline.
 */

/* Read more bytes into src->in. 1 read, 0 end, -1 error (printed). */
static int
ternctl_src_fill(struct ternctl_src *src)
{
	if (src->off > 0) {                     /* keep only what is not taken */
		memmove(src->in.p, src->in.p + src->off, src->in.len - src->off);
		src->in.len -= src->off;
		src->off = 0;
	}
	if (src->fd == -1) {
		if (src->local == NULL)
			return 0;
		size_t before = src->in.len;
		int done = src->local_page(src->local, &src->in);
		if (done) {
			src->local_free(src->local);
			src->local = NULL;
		}
		return src->in.len > before || !done ? 1 : 0;
	}
	if (src->in.len >= TERNCTL_RESP_MAX) {
		fprintf(stderr, "ternctl: response too long\n");
		return -1;
	}
	if (buf_reserve(&src->in, 64 * 1024) == -1) {
		fprintf(stderr, "ternctl: out of memory\n");
		return -1;
	}
	for (;;) {
		ssize_t n = read(src->fd, src->in.p + src->in.len,
		    src->in.cap - src->in.len - 1);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			fprintf(stderr, "ternctl: reading the response: %s\n",
			    strerror(errno));
			return -1;
		}
		src->in.len += (size_t)n;
		return n > 0;
	}
}

/*
 * The next response line (without its LF) in *line, valid until the next
 * call. 0, or -1 (the end came first, or an error; printed).
 */
static int
ternctl_src_line(struct ternctl_src *src, const char **line, size_t *len)
{
	size_t scanned = 0;

	for (;;) {
		char *p = src->in.p != NULL ? src->in.p + src->off : NULL;
		size_t have = src->in.len - src->off;
		char *nl = have > scanned ? memchr(p + scanned, '\n',
		    have - scanned) : NULL;
		if (nl != NULL) {
			*line = p;
			*len = (size_t)(nl - p);
			src->off += *len + 1;
			return 0;
		}
		scanned = have;
		int r = ternctl_src_fill(src);
		if (r == 0)
			fprintf(stderr, "ternctl: ternd closed the connection\n");
		if (r <= 0)
			return -1;
	}
}

static void
ternctl_src_close(struct ternctl_src *src)
{
	if (src->fd != -1)
		close(src->fd);
	if (src->local != NULL)
		src->local_free(src->local);
	buf_free(&src->in);
}

int
ternctl_command_index(int argc, char **argv, const char **conf_path)
{
	int i = 1;

	while (i < argc && argv[i][0] == '-') {
		if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "-s") == 0) &&
		    i + 1 < argc) {
			if (argv[i][1] == 'c')
				*conf_path = argv[i + 1];
			i += 2;
		} else if (strcmp(argv[i], "--json") == 0)
			i++;
		else
			return 0;
	}
	return i < argc ? i : 0;
}

/* Parse r->p[0..len) (borrowed) into r->toks (owned, reused). 0 or -1. */
static int
ternctl_resp_parse(struct ternctl_resp *r)
{
	size_t n;
	enum json_status st = json_parse(r->p, r->len, NULL, 0, JSON_MAX_DEPTH, &n);

	if (st == JSON_OK) {
		if (n > r->ntoks) {
			r->toks = xreallocarray(r->toks, n, sizeof(*r->toks));
			r->ntoks = n;
		}
		st = json_parse(r->p, r->len, r->toks, n, JSON_MAX_DEPTH, &n);
	}
	if (st != JSON_OK || r->toks[0].type != JSON_OBJECT) {
		fprintf(stderr, "ternctl: malformed response: %s\n",
		    st != JSON_OK ? json_strerror(st) : "not an object");
		return -1;
	}
	return 0;
}

/* A whole decimal number >= min (and < 2^31) into *out; 0, or -1 (printed). */
static int
ternctl_parse_count(const char *arg, int64_t min, int64_t *out)
{
	char *end;
	long long v;

	errno = 0;
	v = strtoll(arg, &end, 10);
	if (errno != 0 || end == arg || *end != '\0' || v < min ||
	    v > 0x7fffffff) {
		fprintf(stderr, "ternctl: not a number >= %lld: %s\n",
		    (long long)min, arg);
		return -1;
	}
	*out = v;
	return 0;
}

static int
ternctl_parse_args(int argc, char **argv, struct ternctl_opts *o,
    const struct ternctl_cmd **cmdp)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "body", no_argument, NULL, 'b' },
		{ "help", no_argument, NULL, 'h' },
		{ "from", required_argument, NULL, 'F' },
		{ "to", required_argument, NULL, 'T' },
		{ "domain", required_argument, NULL, 'D' },
		{ "held", no_argument, NULL, 'H' },
		{ "older-than", required_argument, NULL, 'O' },
		{ "all-matching", no_argument, NULL, 'A' },
		{ "version", no_argument, NULL, 'V' },
		{ "limit", required_argument, NULL, 'L' },
		{ "after", required_argument, NULL, 'a' },
		{ "summary", no_argument, NULL, 'S' },
		{ "top", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	const struct ternctl_cmd *cmd = NULL;
	int ch;

	o->conf_path = TERNCTL_CONF;
	o->older_than = -1;
	o->top = -1;
	while ((ch = getopt_long(argc, argv, "c:s:h", longopts, NULL)) != -1) {
		switch (ch) {
		case 'c': o->conf_path = optarg; break;
		case 's': o->socket_path = optarg; break;
		case 'j': o->json = 1; break;
		case 'b': o->body = 1; break;
		case 'F': o->from = optarg; o->nfilter++; break;
		case 'T': o->to = optarg; o->nfilter++; break;
		case 'D': o->domain = optarg; o->nfilter++; break;
		case 'H': o->held = 1; o->nfilter++; break;
		case 'A': o->all_matching = 1; break;
		case 'S': o->summary = 1; break;
		case 'a': {
			uint64_t id;
			if (qid_parse(optarg, &id) == -1) {
				fprintf(stderr, "ternctl: not a queue id: %s\n", optarg);
				return -1;
			}
			o->after = optarg;
			break;
		}
		case 'L':
		case 't':
			if (ternctl_parse_count(optarg, ch == 'L' ? 1 : 0,
			    ch == 'L' ? &o->limit : &o->top) == -1)
				return -1;
			break;
		case 'O': {
			unsigned secs;
			if (conf_parse_duration(optarg, strlen(optarg), &secs) < 0) {
				fprintf(stderr, "ternctl: not a duration: %s "
				    "(N, Ns, Nm, Nh or Nd)\n", optarg);
				return -1;
			}
			o->older_than = secs;
			o->nfilter++;
			break;
		}
		case 'h': ternctl_usage(stdout); exit(TERNCTL_EX_OK);
		case 'V': printf("ternctl %s\n", TERN_VERSION); exit(TERNCTL_EX_OK);
		default: goto usage;
		}
	}
	if (optind >= argc)
		goto usage;
	/* "queue verify": a sub-command of queue */
	if (strcmp(argv[optind], "queue") == 0 && optind + 1 < argc &&
	    argv[optind + 1][0] != '-')
		optind++;
	for (size_t i = 0; i < sizeof(ternctl_cmds) / sizeof(ternctl_cmds[0]); i++)
		if (strcmp(argv[optind], ternctl_cmds[i].name) == 0 &&
		    ((ternctl_cmds[i].flags & TERNCTL_C_SUB) != 0) ==
		    (optind > 0 && strcmp(argv[optind - 1], "queue") == 0))
			cmd = &ternctl_cmds[i];
	if (cmd == NULL) {
		/* one line and a hint: the whole usage would bury the typo */
		fprintf(stderr, "ternctl: unknown command: %s (ternctl --help "
		    "lists the commands)\n", argv[optind]);
		return -1;
	}
	optind++;
	o->cmd_name = cmd->name;
	if (cmd->flags & TERNCTL_C_ALL) {
		/* <id> | all | --all-matching FILTER (retry: | --domain D) */
		if (optind < argc && strcmp(argv[optind], "all") == 0) {
			o->all = 1;
			optind++;
		} else if (optind < argc && !o->all_matching) {
			uint64_t id;
			o->id = argv[optind++];
			if (qid_parse(o->id, &id) == -1) {
				fprintf(stderr, "ternctl: not a queue id: %s\n", o->id);
				return -1;
			}
			if (o->nfilter > 0)
				goto usage;
		} else if (o->all_matching ||
		    ((cmd->flags & TERNCTL_C_IDOPT) && o->nfilter > 0))
			o->all = 1;
		else
			goto usage;
	} else if (cmd->flags & TERNCTL_C_ID) {
		uint64_t id;
		if (optind >= argc)
			goto usage;
		o->id = argv[optind++];
		if (qid_parse(o->id, &id) == -1) {
			fprintf(stderr, "ternctl: not a queue id: %s\n", o->id);
			return -1;
		}
	}
	if (o->all_matching && !(cmd->flags & TERNCTL_C_ALL))
		goto usage;
	if ((o->limit > 0 || o->after != NULL || o->summary || o->top >= 0) &&
	    !(cmd->flags & TERNCTL_C_PAGE))
		goto usage;
	/* the summary is of the whole queue; --top only shapes it */
	if ((o->summary && (o->nfilter > 0 || o->limit > 0 || o->after != NULL)) ||
	    (o->top >= 0 && !o->summary))
		goto usage;
	if (o->nfilter > 0 && !(cmd->flags & TERNCTL_C_FILTER) &&
	    !((cmd->flags & TERNCTL_C_DOMAIN) && o->nfilter == 1 &&
	    o->domain != NULL))
		goto usage;
	if (cmd->flags & TERNCTL_C_USER) {
		if (optind >= argc)
			goto usage;
		o->user_op = argv[optind++];
		if (strcmp(o->user_op, "list") != 0) {
			if ((strcmp(o->user_op, "add") != 0 &&
			    strcmp(o->user_op, "del") != 0) || optind >= argc)
				goto usage;
			o->user_name = argv[optind++];
		}
	}
	if (optind < argc || (o->body && !(cmd->flags & TERNCTL_C_BODY)))
		goto usage;
	*cmdp = cmd;
	return 0;
usage:
	ternctl_usage(stderr);
	return -1;
}

/* An error response: printed; the exit code. */
static int
ternctl_fail(const struct ternctl_opts *o, const struct ternctl_cmd *cmd,
    const struct ternctl_resp *r)
{
	char msg[512];
	int64_t code = ternctl_num(r, 0, "code");

	ternctl_str(r, 0, "error", msg, sizeof(msg), NULL);
	if (o->json)
		printf("%.*s\n", (int)r->len, r->p);
	fprintf(stderr, "ternctl: %s: %s\n", cmd->name, msg[0] ? msg : "failed");
	return code == CTL_E_NOT_FOUND ? TERNCTL_EX_NOTFOUND :
	    code == CTL_E_BAD_REQUEST ? TERNCTL_EX_USAGE : TERNCTL_EX_FAIL;
}

/*
 * A listing (ctl.h STREAM), printed row by row as it arrives. --json
 * prints one JSON object as it goes: {"ok":true,"messages":[ENV,...
 * one ENV a line ...],"count":N,"next_after":ID|null} (an error after the
 * first rows adds "error" and "code" there, and exits 4).
 */
static int
ternctl_stream(const struct ternctl_opts *o, struct ternctl_src *src,
    struct ternctl_resp *r)
{
	uint64_t rows = 0;
	char msg[512];

	if (o->json)
		printf("{\"ok\":true,\"messages\":[");
	for (;;) {
		if (ternctl_src_line(src, (const char **)&r->p, &r->len) == -1 ||
		    ternctl_resp_parse(r) == -1)
			return TERNCTL_EX_FAIL;
		if (ternctl_field(r, 0, "end") >= 0)
			break;
		if (o->json)
			printf("%s%.*s", rows > 0 ? ",\n" : "\n", (int)r->len, r->p);
		else
			ternctl_print_row(r, rows);
		rows++;
	}
	int failed = !ternctl_bool(r, 0, "ok");
	if (o->json) {
		long n = ternctl_field(r, 0, "next_after");
		printf("%s],\"count\":%llu,\"next_after\":", rows > 0 ? "\n" : "",
		    (unsigned long long)rows);
		if (n >= 0 && r->toks[n].type == JSON_STRING)
			printf("%.*s", (int)(r->toks[n].end - r->toks[n].start + 2),
			    r->p + r->toks[n].start - 1);
		else
			printf("null");
		if (failed) {
			long e = ternctl_field(r, 0, "error");
			printf(",\"error\":%.*s,\"code\":%lld", e >= 0 ?
			    (int)(r->toks[e].end - r->toks[e].start + 2) : 4,
			    e >= 0 ? r->p + r->toks[e].start - 1 : "null",
			    (long long)ternctl_num(r, 0, "code"));
		}
		printf("}\n");
	} else if (!failed)
		ternctl_print_end(r, rows);
	if (failed) {
		ternctl_str(r, 0, "error", msg, sizeof(msg), NULL);
		fprintf(stderr, "ternctl: queue: %s\n", msg[0] ? msg : "failed");
		return TERNCTL_EX_FAIL;
	}
	if ((uint64_t)ternctl_num(r, 0, "count") != rows) {
		fprintf(stderr, "ternctl: queue: %llu rows, the trailer says %lld\n",
		    (unsigned long long)rows, (long long)ternctl_num(r, 0, "count"));
		return TERNCTL_EX_FAIL;
	}
	return fflush(stdout) == 0 ? TERNCTL_EX_OK : TERNCTL_EX_FAIL;
}

int
main(int argc, char **argv)
{
	struct ternctl_opts o = { 0 };
	const struct ternctl_cmd *cmd = NULL;
	struct ternctl_resp r = { 0 };
	struct ternctl_src src = { .fd = -1 };
	struct conf *cf = NULL;
	struct json_writer w;
	char *req = NULL, *text = NULL;
	size_t reqlen;
	int rc = TERNCTL_EX_FAIL;

	log_init("ternctl", 0, 0);
	if (ternctl_dkim_main(argc, argv, &rc))    /* dkim keygen: its own args */
		return rc;
	if (ternctl_parse_args(argc, argv, &o, &cmd) == -1)
		return TERNCTL_EX_USAGE;
	o.argv = argv;

	FILE *f = fopen(o.conf_path, "r");
	if (f == NULL) {
		fprintf(stderr, "ternctl: %s: %s\n", o.conf_path, strerror(errno));
		return TERNCTL_EX_USAGE;
	}
	size_t cap = 4096, len = 0, n;
	text = xmalloc(cap);
	while ((n = fread(text + len, 1, cap - len, f)) > 0) {
		len += n;
		if (len == cap)
			text = xreallocarray(text, cap *= 2, 1);
	}
	int ferr = ferror(f);
	fclose(f);
	if (ferr || conf_parse(text, len, o.conf_path, &cf, ternctl_conf_err, NULL) != 0) {
		if (ferr)
			fprintf(stderr, "ternctl: %s: read error\n", o.conf_path);
		free(text);
		return TERNCTL_EX_USAGE;
	}
	free(text);
	text = NULL;
	if (cmd->flags & TERNCTL_C_USER) {
		rc = ternctl_user(&o, cf);
		conf_unref(cf);
		return rc;
	}
	const char *sock = o.socket_path != NULL ? o.socket_path : cf->control_socket;

	json_writer_init(&w);
	json_obj_open(&w);
	json_key(&w, "v");
	json_put_int(&w, CTL_PROTO_VERSION);
	json_key(&w, "cmd");
	json_put_str(&w, o.summary ? "summary" : cmd->name);
	if (o.limit > 0)
		json_kv_int(&w, "limit", o.limit);
	if (o.after != NULL)
		json_kv_str(&w, "after", o.after);
	if (o.top >= 0)
		json_kv_int(&w, "top", o.top);
	if (o.id != NULL) {
		json_key(&w, "id");
		json_put_str(&w, o.id);
	}
	if (o.body) {
		json_key(&w, "body");
		json_put_bool(&w, 1);
	}
	if (o.all) {
		json_key(&w, "all");
		json_put_bool(&w, 1);
	}
	if ((cmd->flags & TERNCTL_C_DOMAIN) && o.domain != NULL) {
		json_key(&w, "domain");
		json_put_str(&w, o.domain);
	} else if (o.nfilter > 0) {
		json_key(&w, "filter");
		json_obj_open(&w);
		if (o.from != NULL) {
			json_key(&w, "from");
			json_put_str(&w, o.from);
		}
		if (o.to != NULL) {
			json_key(&w, "to");
			json_put_str(&w, o.to);
		}
		if (o.domain != NULL) {
			json_key(&w, "domain");
			json_put_str(&w, o.domain);
		}
		if (o.held) {
			json_key(&w, "held");
			json_put_bool(&w, 1);
		}
		if (o.older_than >= 0) {
			json_key(&w, "older_than");
			json_put_int(&w, o.older_than);
		}
		json_obj_close(&w);
	}
	json_obj_close(&w);
	req = json_writer_finish(&w, &reqlen);
	if (req == NULL) {
		fprintf(stderr, "ternctl: out of memory\n");
		goto done;
	}

	if ((src.fd = ternctl_connect(sock)) == -1) {
		int e = errno;
		if (!(cmd->flags & TERNCTL_C_LOCAL) ||
		    ternctl_local(&o, cf, req, reqlen,
		    (cmd->flags & TERNCTL_C_RDONLY) != 0, &src) == -1) {
			fprintf(stderr, "ternctl: cannot connect to %s: %s (is ternd running?)\n",
			    sock, strerror(e));
			rc = TERNCTL_EX_UNREACHABLE;
			goto done;
		}
		fprintf(stderr, "ternctl: ternd not reachable at %s (%s); "
		    "answered from the queue directory %s\n", sock, strerror(e),
		    cf->queue_dir);
	} else if (write_all(src.fd, req, reqlen) == -1 ||
	    write_all(src.fd, "\n", 1) == -1) {
		fprintf(stderr, "ternctl: sending the request: %s\n", strerror(errno));
		goto done;
	}
	if (ternctl_src_line(&src, (const char **)&r.p, &r.len) == -1 ||
	    ternctl_resp_parse(&r) == -1)
		goto done;

	long ok = ternctl_field(&r, 0, "ok");
	if (ok < 0 || r.toks[ok].type != JSON_TRUE) {
		rc = ternctl_fail(&o, cmd, &r);
		goto done;
	}
	if (ternctl_field(&r, 0, "stream") >= 0)
		rc = ternctl_stream(&o, &src, &r);
	else if (o.json) {
		printf("%.*s\n", (int)r.len, r.p);
		rc = fflush(stdout) == 0 ? TERNCTL_EX_OK : TERNCTL_EX_FAIL;
		long ag = ternctl_field(&r, 0, "agree");
		if (ag >= 0 && r.toks[ag].type == JSON_FALSE)
			rc = TERNCTL_EX_FAIL;
	} else
		rc = cmd->print(&o, &r);
done:
	ternctl_src_close(&src);
	free(req);
	free(r.toks);
	conf_unref(cf);
	return rc;
}
