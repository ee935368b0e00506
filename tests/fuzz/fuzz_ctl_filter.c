/*
 * fuzz_ctl_filter.c - the control socket's queue filter (ctl.h "F") on
 * arbitrary bytes: the input is tokenized as ctl_request.c tokenizes a request
 * line (json_parse, same token and depth bounds), and ctl_filter_parse()
 * runs on the root object and on its "filter" member (as a "queue" request
 * carries it). A filter that parses is matched with ctl_filter_match()
 * against a fixed set of envelopes (null, odd and missing senders;
 * recipients with and without a domain, in every state; held, corrupt;
 * arrival in the past, now, the future and at the int64 extremes, as a
 * decoded record may carry).
 *
 * Oracles:
 *  - parse returns 0 or -1; -1 comes with a non-empty *err; a non-object
 *    is refused;
 *  - a parsed filter is well formed (strings NUL-terminated inside
 *    CTL_FILTER_STR, held -1/0/1, older_than -1 or >= 0) and parsing is
 *    deterministic;
 *  - match returns 0 or 1, and is the AND of the one-key filters built from
 *    the same filter; "held" and "older_than" alone agree with a reference
 *    computed here without overflow.
 *
 * struct ctl_filter owns no memory (fixed arrays): there is nothing to free
 * beyond the envelopes, which live for the whole run.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/ctl.h"
#include "tern/envelope.h"
#include "tern/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_TOKENS 128         /* as ctl_request.c: CTL_REQ_TOKENS */
#define FUZZ_DEPTH  8           /* as ctl_request.c: CTL_REQ_DEPTH */
#define FUZZ_NOW    INT64_C(1700000000)
#define FUZZ_NENV   7

static struct envelope *fuzz_envs[FUZZ_NENV];

static struct envelope *
fuzz_ctl_env(const char *sender, uint32_t flags, int64_t arrival)
{
	struct envelope *e = envelope_new();

	if (e == NULL)
		abort();
	if (sender != NULL && (e->sender = strdup(sender)) == NULL)
		abort();
	e->flags = flags;
	e->arrival = arrival;
	return e;
}

static void
fuzz_ctl_rcpt(struct envelope *e, const char *addr, enum rcpt_state st)
{
	size_t i = envelope_add_rcpt(e, addr, NULL, 0);

	e->rcpts[i].state = (uint8_t)st;
}

static void
fuzz_ctl_envs_init(void)
{
	struct envelope *e;

	if (fuzz_envs[0] != NULL)
		return;
	e = fuzz_envs[0] = fuzz_ctl_env("Alice@Sender.Test", 0, 1000);
	fuzz_ctl_rcpt(e, "bob@example.com", RCPT_PENDING);
	fuzz_ctl_rcpt(e, "carol@EXAMPLE.org", RCPT_SENT);

	e = fuzz_envs[1] = fuzz_ctl_env("", ENV_F_HOLD | ENV_F_DSN, FUZZ_NOW);
	fuzz_ctl_rcpt(e, "postmaster", RCPT_PENDING);          /* no domain */
	fuzz_ctl_rcpt(e, "x@example.net", RCPT_DELETED);

	e = fuzz_envs[2] = fuzz_ctl_env("user@", 0, FUZZ_NOW + 3600);
	fuzz_ctl_rcpt(e, "a@", RCPT_PENDING);                  /* empty domain */
	fuzz_ctl_rcpt(e, "b@c@d.example", RCPT_PENDING);
	fuzz_ctl_rcpt(e, "@only.example", RCPT_PENDING);
	fuzz_ctl_rcpt(e, "", RCPT_PENDING);

	e = fuzz_envs[3] = fuzz_ctl_env("weird\xff\x01@bytes.\xc3\xa9xample",
	    ENV_F_HOLD | ENV_F_CORRUPT, 0);                    /* no recipients */

	/* a decoded record may carry any arrival and a recipient without addr */
	e = fuzz_envs[4] = fuzz_ctl_env(NULL, 0, INT64_MIN);
	fuzz_ctl_rcpt(e, "gone@example.com", RCPT_PENDING);
	free(e->rcpts[0].addr);
	e->rcpts[0].addr = NULL;
	fuzz_ctl_rcpt(e, "Bob@Example.COM", RCPT_PENDING);
	fuzz_ctl_rcpt(e, "late@example.org", RCPT_EXPIRED);

	e = fuzz_envs[5] = fuzz_ctl_env("bounce@example.com", ENV_F_HOLD, INT64_MAX);
	fuzz_ctl_rcpt(e, "z@EXAMPLE.net", RCPT_BOUNCED);
	fuzz_ctl_rcpt(e, "y@example.net", RCPT_PENDING);

	e = fuzz_envs[6] = fuzz_ctl_env("a", 0, FUZZ_NOW - 86400);
	fuzz_ctl_rcpt(e, "A@A", RCPT_PENDING);
}

static void
fuzz_ctl_check_match(const struct ctl_filter *f)
{
	struct ctl_filter one[5];

	for (size_t k = 0; k < 5; k++)
		ctl_filter_init(&one[k]);
	memcpy(one[0].from, f->from, sizeof(f->from));
	memcpy(one[1].to, f->to, sizeof(f->to));
	memcpy(one[2].domain, f->domain, sizeof(f->domain));
	one[3].held = f->held;
	one[4].older_than = f->older_than;

	for (size_t i = 0; i < FUZZ_NENV; i++) {
		const struct envelope *e = fuzz_envs[i];
		int m = ctl_filter_match(f, e, FUZZ_NOW), all = 1;

		if (m != 0 && m != 1)
			abort();
		for (size_t k = 0; k < 5; k++) {
			int mk = ctl_filter_match(&one[k], e, FUZZ_NOW);
			if (mk != 0 && mk != 1)
				abort();
			all &= mk;
		}
		if (m != all)
			abort();
		/* references for the two keys that need no string search */
		int held = (e->flags & ENV_F_HOLD) != 0;
		if (ctl_filter_match(&one[3], e, FUZZ_NOW) !=
		    (f->held < 0 || f->held == held))
			abort();
		__int128 age = (__int128)FUZZ_NOW - e->arrival;
		if (ctl_filter_match(&one[4], e, FUZZ_NOW) !=
		    (f->older_than < 0 || age >= f->older_than))
			abort();
	}
}

static void
fuzz_ctl_check_filter(const char *p, const struct json_tok *toks, size_t obj)
{
	struct ctl_filter f, again;
	const char *err = NULL, *err2 = NULL;
	int rc = ctl_filter_parse(p, toks, obj, &f, &err);

	if (toks[obj].type != JSON_OBJECT && rc != -1)
		abort();
	if (rc == -1) {
		if (err == NULL || err[0] == '\0')
			abort();
		return;
	}
	if (rc != 0)
		abort();
	if (memchr(f.from, '\0', sizeof(f.from)) == NULL ||
	    memchr(f.to, '\0', sizeof(f.to)) == NULL ||
	    memchr(f.domain, '\0', sizeof(f.domain)) == NULL ||
	    f.held < -1 || f.held > 1 || f.older_than < -1)
		abort();
	if (ctl_filter_parse(p, toks, obj, &again, &err2) != 0 ||
	    memcmp(&f, &again, sizeof(f)) != 0)
		abort();
	fuzz_ctl_check_match(&f);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *p = (const char *)data;
	struct json_tok toks[FUZZ_TOKENS];
	size_t used;
	long fi;

	fuzz_ctl_envs_init();
	if (json_parse(p, size, toks, FUZZ_TOKENS, FUZZ_DEPTH, &used) != JSON_OK)
		return 0;
	fuzz_ctl_check_filter(p, toks, 0);
	if (toks[0].type == JSON_OBJECT &&
	    (fi = json_obj_find(p, toks, 0, "filter")) >= 0)
		fuzz_ctl_check_filter(p, toks, (size_t)fi);
	return 0;
}
