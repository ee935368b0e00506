/*
 * fuzz_smtp_parse.c - libFuzzer target for base/smtp_parse.c.
 *
 * The input is one command line (no CRLF). It goes through
 * smtp_parse_command() and, for MAIL/RCPT, through the path parsers; the raw
 * bytes also go to smtp_parse_mailbox(), smtp_parse_helo() and
 * smtp_parse_bdat(). Invariants checked (abort on violation):
 *  - arg borrows from the line; verb set iff OK;
 *  - mailbox addr is NUL-terminated, len == strlen(addr), domain_off <= len;
 *  - on OK, for a non-null, non-postmaster path addr[domain_off-1] == '@',
 *    the domain holds no '@', and addr re-parses as a bare mailbox with the
 *    same domain_off and flags (minus ROUTE/BARE): what the relay check sees
 *    is stable;
 *  - on failure all outputs are empty;
 *  - smtp_mailbox_routing() names a source route iff ROUTE is set, and
 *    another form iff the local part holds '%', '!' or (quoted) '@'.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tern/smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond) do { if (!(cond)) abort(); } while (0)

static void
fuzz_check_routing(const struct smtp_mailbox *mb)
{
	unsigned r = smtp_mailbox_routing(mb);
	size_t llen = mb->domain_off - 1;
	int special = memchr(mb->addr, '%', llen) != NULL ||
	    memchr(mb->addr, '!', llen) != NULL ||
	    memchr(mb->addr, '@', llen) != NULL;

	FUZZ_CHECK(!(r & SMTP_ROUTING_SOURCE) == !(mb->flags & SMTP_MB_ROUTE));
	FUZZ_CHECK(!(r & ~(unsigned)SMTP_ROUTING_SOURCE) == !special);
	FUZZ_CHECK(!(r & SMTP_ROUTING_QUOTED) || (mb->flags & SMTP_MB_QUOTED));
}

static void
fuzz_check_mailbox(const struct smtp_mailbox *mb, enum smtp_parse_status st)
{
	struct smtp_mailbox again;

	FUZZ_CHECK(memchr(mb->addr, '\0', sizeof(mb->addr)) != NULL);
	FUZZ_CHECK(strlen(mb->addr) == mb->len);
	FUZZ_CHECK(mb->domain_off <= mb->len);
	if (st != SMTP_PARSE_OK) {
		FUZZ_CHECK(mb->len == 0 && mb->flags == 0 && mb->domain_off == 0);
		return;
	}
	if (mb->flags & SMTP_MB_NULL) {
		FUZZ_CHECK(mb->len == 0 && mb->flags == SMTP_MB_NULL);
		FUZZ_CHECK(smtp_mailbox_routing(mb) == 0);
		return;
	}
	if (mb->flags & SMTP_MB_POSTMASTER) {
		FUZZ_CHECK(mb->domain_off == mb->len && mb->len == 10);
		FUZZ_CHECK(smtp_mailbox_routing(mb) == 0);
		return;
	}
	FUZZ_CHECK(mb->domain_off >= 2);
	FUZZ_CHECK(mb->addr[mb->domain_off - 1] == '@');
	FUZZ_CHECK(memchr(mb->addr + mb->domain_off, '@',
	    mb->len - mb->domain_off) == NULL);
	FUZZ_CHECK(mb->domain_off - 1 <= SMTP_LOCAL_MAX);
	FUZZ_CHECK(mb->len <= SMTP_PATH_MAX - 2);
	FUZZ_CHECK(smtp_parse_mailbox(mb->addr, mb->len, &again) == SMTP_PARSE_OK);
	FUZZ_CHECK(again.len == mb->len && again.domain_off == mb->domain_off);
	FUZZ_CHECK(again.flags ==
	    (mb->flags & ~(unsigned)(SMTP_MB_ROUTE | SMTP_MB_BARE)));
	FUZZ_CHECK(memcmp(again.addr, mb->addr, mb->len + 1) == 0);
	fuzz_check_routing(mb);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *line = (const char *)data;
	struct smtp_cmd cmd;
	struct smtp_mailbox mb;
	struct smtp_mail_params mp;
	struct smtp_rcpt_params rp;
	enum smtp_parse_status st;
	uint64_t bsize;
	int last;

	st = smtp_parse_command(line, size, &cmd);
	if (st == SMTP_PARSE_OK) {
		FUZZ_CHECK(cmd.verb != SMTP_V_NONE);
		FUZZ_CHECK(cmd.arg >= line && cmd.arg_len <= size &&
		    cmd.arg + cmd.arg_len <= line + size);
		FUZZ_CHECK(strcmp(smtp_verb_name(cmd.verb), "UNKNOWN") != 0);
		if (cmd.verb == SMTP_V_MAIL) {
			st = smtp_parse_mail_from(cmd.arg, cmd.arg_len, &mb, &mp);
			fuzz_check_mailbox(&mb, st);
			FUZZ_CHECK(memchr(mp.envid, '\0', sizeof(mp.envid)) != NULL);
			FUZZ_CHECK(memchr(mp.auth, '\0', sizeof(mp.auth)) != NULL);
			FUZZ_CHECK(mp.has_size || mp.size == 0);
			FUZZ_CHECK(!(mb.flags & SMTP_MB_POSTMASTER));
		} else if (cmd.verb == SMTP_V_RCPT) {
			st = smtp_parse_rcpt_to(cmd.arg, cmd.arg_len, &mb, &rp);
			fuzz_check_mailbox(&mb, st);
			FUZZ_CHECK(memchr(rp.orcpt, '\0', sizeof(rp.orcpt)) != NULL);
			FUZZ_CHECK(!(rp.notify & SMTP_NOTIFY_NEVER) ||
			    rp.notify == SMTP_NOTIFY_NEVER);
			FUZZ_CHECK(!(mb.flags & SMTP_MB_NULL));
		} else if (cmd.verb == SMTP_V_BDAT) {
			st = smtp_parse_bdat(cmd.arg, cmd.arg_len, &bsize, &last);
			FUZZ_CHECK(st == SMTP_PARSE_OK || (bsize == 0 && last == 0));
		} else if (cmd.verb == SMTP_V_EHLO || cmd.verb == SMTP_V_HELO) {
			(void)smtp_parse_helo(cmd.arg, cmd.arg_len);
		}
	} else {
		FUZZ_CHECK(cmd.verb == SMTP_V_NONE);
	}

	/* The raw bytes through every entry point, too. */
	st = smtp_parse_mailbox(line, size, &mb);
	fuzz_check_mailbox(&mb, st);
	FUZZ_CHECK(!(mb.flags & (SMTP_MB_NULL | SMTP_MB_POSTMASTER |
	    SMTP_MB_ROUTE | SMTP_MB_BARE)));
	st = smtp_parse_mail_from(line, size, &mb, &mp);
	fuzz_check_mailbox(&mb, st);
	st = smtp_parse_rcpt_to(line, size, &mb, &rp);
	fuzz_check_mailbox(&mb, st);
	(void)smtp_parse_helo(line, size);
	st = smtp_parse_bdat(line, size, &bsize, &last);
	FUZZ_CHECK(st == SMTP_PARSE_OK || (bsize == 0 && last == 0));
	return 0;
}
