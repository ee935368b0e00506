/*
 * session_dkim.c - DKIM signing in the SMTP server session: which
 * transactions are signed, and the DKIM-Signature fields put before the
 * queued message at the end of data (see tern/dkim.h, tern.conf.5).
 *
 * Runs on a session loop, for the session that owns the transaction. The
 * canonicaliser is fed, from session.c, every message byte that goes to the
 * spool after tern's Received: field (the submission fix-ups included), so
 * the body is hashed once, as it streams; at the end of data the fields are
 * prepended to the spool (spool_prepend), so they are in the queue record,
 * durable before the 250 like the rest of the message.
 *
 * Who is signed: authenticated clients, the local socket, and with
 * dkim-sign-trusted on, trusted-networks; by the From: domain, with every
 * dkim-sign key of that domain, in file order.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tern/dkim.h"
#include "tern/log.h"
#include "smtpd_int.h"

struct dkim_canon *
smtpd_dkim_begin(const struct conf *c, int authed, int local, int trusted)
{
	struct dkim_canon *dk;

	if (c->ndkim_sign == 0 ||
	    !(authed || local || (trusted && c->dkim_sign_trusted)))
		return NULL;
	if ((dk = malloc(sizeof(*dk))) == NULL)
		return NULL;            /* checked again at the end: 451 */
	if (dkim_canon_init(dk) != 0) {
		free(dk);
		return NULL;
	}
	return dk;
}

void
smtpd_dkim_free(struct dkim_canon *dk)
{
	if (dk == NULL)
		return;
	dkim_canon_free(dk);
	free(dk);
}

int
smtpd_dkim_finish(struct dkim_canon *dk, const struct conf *c,
    struct spool *body, const char *qid)
{
	char domain[256], sels[512] = "", *all;
	size_t n = 0, nsig = 0, sl = 0;
	time_t now = time(NULL);

	dkim_canon_finish(dk);
	if (dkim_from_domain(dk, domain, sizeof(domain)) != 0) {
		log_info("id=%s dkim=unsigned reason=from (no From:, two of "
		    "them, or addresses of several domains)", qid);
		return 0;
	}
	for (size_t i = 0; i < c->ndkim_sign; i++)
		nsig += c->dkim_sign[i].key != NULL &&
		    strcmp(c->dkim_sign[i].domain, domain) == 0;
	if (nsig == 0) {
		log_debug("id=%s dkim=unsigned reason=no-key", qid);
		return 0;
	}
	if (dk->overflow) {
		log_info("id=%s dkim=unsigned reason=headers-too-large", qid);
		return 0;
	}
	if ((all = malloc(nsig * DKIM_SIG_MAX)) == NULL)
		return -1;
	for (size_t i = 0; i < c->ndkim_sign; i++) {
		const struct conf_dkim_sign *ds = &c->dkim_sign[i];
		size_t k;
		if (ds->key == NULL || strcmp(ds->domain, domain) != 0)
			continue;
		k = dkim_sign(dk, ds->key, ds->domain, ds->selector, now,
		    all + n, DKIM_SIG_MAX);
		if (k == 0) {
			log_warnx("id=%s dkim=error domain=%s selector=%s: "
			    "signing failed", qid, ds->domain, ds->selector);
			free(all);
			return -1;
		}
		n += k;
		sl += (size_t)snprintf(sels + sl, sizeof(sels) - sl, "%s%s:%s",
		    sl > 0 ? "," : "", ds->selector,
		    dkim_alg_name(dkim_key_alg(ds->key)));
		if (sl >= sizeof(sels))
			sl = sizeof(sels) - 1;
	}
	if (spool_prepend(body, all, n) != 0) {
		free(all);
		return -1;
	}
	free(all);
	log_info("id=%s dkim=signed domain=%s selectors=%s", qid, domain, sels);
	return 0;
}
