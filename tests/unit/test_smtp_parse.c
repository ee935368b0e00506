/*
 * test_smtp_parse.c - table-driven tests of base/smtp_parse.c: command
 * lines, paths and mailboxes (incl. the relay tricks whose domain must be
 * the real one), ESMTP parameters, HELO and BDAT arguments, and the length
 * limits of RFC 5321 4.5.3.1 on both sides of each boundary.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tern/smtp.h"

/* A string literal and its length (literals may hold NUL bytes). */
#define S(x) x, sizeof(x) - 1

static const char *
status_name(enum smtp_parse_status st)
{
	switch (st) {
	case SMTP_PARSE_OK: return "OK";
	case SMTP_PARSE_TOO_LONG: return "TOO_LONG";
	case SMTP_PARSE_BAD_SYNTAX: return "BAD_SYNTAX";
	case SMTP_PARSE_UNKNOWN: return "UNKNOWN";
	case SMTP_PARSE_BAD_CHAR: return "BAD_CHAR";
	case SMTP_PARSE_BAD_ADDRESS: return "BAD_ADDRESS";
	case SMTP_PARSE_BAD_PARAM: return "BAD_PARAM";
	case SMTP_PARSE_BAD_UTF8: return "BAD_UTF8";
	}
	return "?";
}

#define CHECK_STATUS(got, want, what, idx) do {                          \
	if ((got) != (want))                                             \
		fail_msg("case %zu (%s): got %s, want %s", (size_t)(idx), \
		    (what), status_name(got), status_name(want));         \
} while (0)

/* Invariants every parse must keep, whatever the outcome. */
static void
check_mailbox_invariants(const struct smtp_mailbox *mb,
    enum smtp_parse_status st)
{
	assert_true(memchr(mb->addr, '\0', sizeof(mb->addr)) != NULL);
	assert_int_equal(strlen(mb->addr), mb->len);
	assert_true(mb->domain_off <= mb->len);
	if (st != SMTP_PARSE_OK) {
		assert_int_equal(mb->len, 0);
		assert_int_equal(mb->flags, 0);
		return;
	}
	if (mb->flags & SMTP_MB_NULL) {
		assert_int_equal(mb->len, 0);
	} else if (mb->flags & SMTP_MB_POSTMASTER) {
		assert_int_equal(mb->domain_off, mb->len);
	} else {
		assert_true(mb->domain_off >= 2);
		assert_int_equal(mb->addr[mb->domain_off - 1], '@');
		/* the domain never holds an '@': it is after the last one */
		assert_null(strchr(mb->addr + mb->domain_off, '@'));
	}
}

/* ---- command lines ---------------------------------------------------- */

struct cmd_case {
	const char *line;
	size_t len;
	enum smtp_parse_status st;
	enum smtp_verb verb;
	const char *arg;          /* expected arg on OK */
};

static const struct cmd_case cmd_cases[] = {
	{ S("EHLO mail.example.com"), SMTP_PARSE_OK, SMTP_V_EHLO, "mail.example.com" },
	{ S("helo x"), SMTP_PARSE_OK, SMTP_V_HELO, "x" },
	{ S("MAIL FROM:<a@b.example>"), SMTP_PARSE_OK, SMTP_V_MAIL, "<a@b.example>" },
	{ S("mail from: <a@b.example>"), SMTP_PARSE_OK, SMTP_V_MAIL, "<a@b.example>" },
	{ S("MAIL FROM:   <a@b.example> SIZE=10  "), SMTP_PARSE_OK, SMTP_V_MAIL,
	  "<a@b.example> SIZE=10" },
	{ S("MAIL\tFROM:<a@b.example>"), SMTP_PARSE_OK, SMTP_V_MAIL, "<a@b.example>" },
	{ S("RCPT TO:<a@b.example>"), SMTP_PARSE_OK, SMTP_V_RCPT, "<a@b.example>" },
	{ S("rCpT tO: <postmaster>"), SMTP_PARSE_OK, SMTP_V_RCPT, "<postmaster>" },
	{ S("MAIL FROM:"), SMTP_PARSE_OK, SMTP_V_MAIL, "" },
	{ S("MAIL FROM:<j\xc3\xb6rg@b.example>"), SMTP_PARSE_OK, SMTP_V_MAIL,
	  "<j\xc3\xb6rg@b.example>" },
	{ S("RCPT TO:<\xe7\x94\xa8@\xe4\xbe\x8b.example>"), SMTP_PARSE_OK, SMTP_V_RCPT,
	  "<\xe7\x94\xa8@\xe4\xbe\x8b.example>" },
	{ S("MAIL"), SMTP_PARSE_BAD_SYNTAX, SMTP_V_NONE, NULL },
	{ S("MAIL <a@b.example>"), SMTP_PARSE_BAD_SYNTAX, SMTP_V_NONE, NULL },
	{ S("MAIL FROM <a@b.example>"), SMTP_PARSE_BAD_SYNTAX, SMTP_V_NONE, NULL },
	{ S("MAIL TO:<a@b.example>"), SMTP_PARSE_BAD_SYNTAX, SMTP_V_NONE, NULL },
	{ S("RCPT FROM:<a@b.example>"), SMTP_PARSE_BAD_SYNTAX, SMTP_V_NONE, NULL },
	{ S("RCPT"), SMTP_PARSE_BAD_SYNTAX, SMTP_V_NONE, NULL },
	{ S("DATA"), SMTP_PARSE_OK, SMTP_V_DATA, "" },
	{ S("QUIT   "), SMTP_PARSE_OK, SMTP_V_QUIT, "" },
	{ S("quit"), SMTP_PARSE_OK, SMTP_V_QUIT, "" },
	{ S("RSET"), SMTP_PARSE_OK, SMTP_V_RSET, "" },
	{ S("NOOP\thello"), SMTP_PARSE_OK, SMTP_V_NOOP, "hello" },
	{ S("VRFY  user  "), SMTP_PARSE_OK, SMTP_V_VRFY, "user" },
	{ S("EXPN staff"), SMTP_PARSE_OK, SMTP_V_EXPN, "staff" },
	{ S("HELP"), SMTP_PARSE_OK, SMTP_V_HELP, "" },
	{ S("StartTLS"), SMTP_PARSE_OK, SMTP_V_STARTTLS, "" },
	{ S("AUTH PLAIN AGFAYgBj"), SMTP_PARSE_OK, SMTP_V_AUTH, "PLAIN AGFAYgBj" },
	{ S("BDAT 100 LAST"), SMTP_PARSE_OK, SMTP_V_BDAT, "100 LAST" },
	{ S("QUITX"), SMTP_PARSE_UNKNOWN, SMTP_V_NONE, NULL },
	{ S("XYZZY plugh"), SMTP_PARSE_UNKNOWN, SMTP_V_NONE, NULL },
	{ S("MAIL:FROM:<a@b.example>"), SMTP_PARSE_UNKNOWN, SMTP_V_NONE, NULL },
	{ S(""), SMTP_PARSE_UNKNOWN, SMTP_V_NONE, NULL },
	{ S(" QUIT"), SMTP_PARSE_UNKNOWN, SMTP_V_NONE, NULL },
	{ S("DATA\0"), SMTP_PARSE_BAD_CHAR, SMTP_V_NONE, NULL },
	{ S("MAIL FROM:<a\0@b.example>"), SMTP_PARSE_BAD_CHAR, SMTP_V_NONE, NULL },
	{ S("NOOP a\rb"), SMTP_PARSE_BAD_CHAR, SMTP_V_NONE, NULL },
	{ S("NOOP a\nb"), SMTP_PARSE_BAD_CHAR, SMTP_V_NONE, NULL },
	{ S("NOOP a\x7f"), SMTP_PARSE_BAD_CHAR, SMTP_V_NONE, NULL },
	{ S("NOOP \xff"), SMTP_PARSE_BAD_CHAR, SMTP_V_NONE, NULL },
	{ S("EHLO h\xc3\xa9.example"), SMTP_PARSE_BAD_CHAR, SMTP_V_NONE, NULL },
	{ S("MA\xffIL FROM:<a@b.example>"), SMTP_PARSE_BAD_CHAR, SMTP_V_NONE, NULL },
	{ S("XYZ\x1b[31m"), SMTP_PARSE_BAD_CHAR, SMTP_V_NONE, NULL },
};

static void
test_command_table(void **state)
{
	for (size_t i = 0; i < sizeof(cmd_cases) / sizeof(cmd_cases[0]); i++) {
		const struct cmd_case *c = &cmd_cases[i];
		struct smtp_cmd cmd;
		enum smtp_parse_status st;

		memset(&cmd, 0xa5, sizeof(cmd));
		st = smtp_parse_command(c->line, c->len, &cmd);
		CHECK_STATUS(st, c->st, c->line, i);
		if (st != SMTP_PARSE_OK) {
			assert_int_equal(cmd.verb, SMTP_V_NONE);
			continue;
		}
		if (cmd.verb != c->verb)
			fail_msg("case %zu (%s): verb %s", i, c->line,
			    smtp_verb_name(cmd.verb));
		/* arg borrows from the line */
		assert_true(cmd.arg >= c->line && cmd.arg + cmd.arg_len <= c->line + c->len);
		assert_int_equal(cmd.arg_len, strlen(c->arg));
		assert_memory_equal(cmd.arg, c->arg, cmd.arg_len);
	}
}

static void
test_command_length(void **state)
{
	char line[SMTP_CMD_MAX + 8];
	struct smtp_cmd cmd;

	memcpy(line, "NOOP ", 5);
	memset(line + 5, 'x', sizeof(line) - 5);
	/* 510 octets + CRLF = 512: the limit itself is fine */
	assert_int_equal(smtp_parse_command(line, SMTP_CMD_MAX - 2, &cmd),
	    SMTP_PARSE_OK);
	assert_int_equal(cmd.verb, SMTP_V_NOOP);
	assert_int_equal(cmd.arg_len, SMTP_CMD_MAX - 2 - 5);
	assert_int_equal(smtp_parse_command(line, SMTP_CMD_MAX - 1, &cmd),
	    SMTP_PARSE_TOO_LONG);
	assert_int_equal(cmd.verb, SMTP_V_NONE);
	/* length is checked before content */
	line[10] = '\0';
	assert_int_equal(smtp_parse_command(line, SMTP_CMD_MAX, &cmd),
	    SMTP_PARSE_TOO_LONG);
	assert_int_equal(smtp_parse_command(line, 20, &cmd), SMTP_PARSE_BAD_CHAR);
}

static void
test_verb_names(void **state)
{
	static const enum smtp_verb verbs[] = {
		SMTP_V_HELO, SMTP_V_EHLO, SMTP_V_MAIL, SMTP_V_RCPT, SMTP_V_DATA,
		SMTP_V_BDAT, SMTP_V_RSET, SMTP_V_NOOP, SMTP_V_QUIT, SMTP_V_VRFY,
		SMTP_V_EXPN, SMTP_V_HELP, SMTP_V_STARTTLS, SMTP_V_AUTH,
	};
	char line[32];

	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		const char *name = smtp_verb_name(verbs[i]);
		struct smtp_cmd cmd;
		int n;

		assert_string_not_equal(name, "UNKNOWN");
		/* MAIL/RCPT need their keyword; give every verb one */
		n = snprintf(line, sizeof(line), "%s %s", name,
		    verbs[i] == SMTP_V_MAIL ? "FROM:<>" :
		    verbs[i] == SMTP_V_RCPT ? "TO:<a@b>" : "x");
		assert_int_equal(smtp_parse_command(line, (size_t)n, &cmd),
		    SMTP_PARSE_OK);
		assert_int_equal(cmd.verb, verbs[i]);
	}
	assert_string_equal(smtp_verb_name(SMTP_V_MAIL), "MAIL");
	assert_string_equal(smtp_verb_name(SMTP_V_STARTTLS), "STARTTLS");
	assert_string_equal(smtp_verb_name(SMTP_V_NONE), "UNKNOWN");
}

/* ---- paths and mailboxes ---------------------------------------------- */

enum kind { K_MAIL, K_RCPT, K_MBOX };

struct path_case {
	enum kind kind;
	const char *in;
	size_t len;
	enum smtp_parse_status st;
	const char *addr;         /* expected on OK */
	const char *domain;
	unsigned flags;
};

static const struct path_case path_cases[] = {
	/* plain */
	{ K_MAIL, S("<user@example.com>"), SMTP_PARSE_OK, "user@example.com", "example.com", 0 },
	{ K_MAIL, S("<User.Name+tag@Example.COM>"), SMTP_PARSE_OK,
	  "User.Name+tag@Example.COM", "Example.COM", 0 },
	{ K_MAIL, S("<!#$%&'*+-/=?^_`{|}~@x.example>"), SMTP_PARSE_OK,
	  "!#$%&'*+-/=?^_`{|}~@x.example", "x.example", 0 },
	{ K_MAIL, S("<user@localhost>"), SMTP_PARSE_OK, "user@localhost", "localhost", 0 },
	{ K_MAIL, S("<user@ex-am-ple.com>"), SMTP_PARSE_OK, "user@ex-am-ple.com", "ex-am-ple.com", 0 },
	{ K_MAIL, S("<user@192.0.2.1>"), SMTP_PARSE_OK, "user@192.0.2.1", "192.0.2.1", 0 },
	{ K_MAIL, S("  <a@b.example>  "), SMTP_PARSE_OK, "a@b.example", "b.example", 0 },
	/* null path */
	{ K_MAIL, S("<>"), SMTP_PARSE_OK, "", "", SMTP_MB_NULL },
	{ K_MAIL, S("<> SIZE=100"), SMTP_PARSE_OK, "", "", SMTP_MB_NULL },
	{ K_RCPT, S("<>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	/* postmaster */
	{ K_RCPT, S("<postmaster>"), SMTP_PARSE_OK, "postmaster", "", SMTP_MB_POSTMASTER },
	{ K_RCPT, S("<PostMaster>"), SMTP_PARSE_OK, "PostMaster", "", SMTP_MB_POSTMASTER },
	{ K_RCPT, S("<postmaster@example.com>"), SMTP_PARSE_OK, "postmaster@example.com",
	  "example.com", 0 },
	{ K_MAIL, S("<postmaster>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_RCPT, S("postmaster"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_RCPT, S("<postmasters>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	/* quoted local parts */
	{ K_MAIL, S("<\"john doe\"@example.com>"), SMTP_PARSE_OK,
	  "\"john doe\"@example.com", "example.com", SMTP_MB_QUOTED },
	{ K_MAIL, S("<\"a\\\"b\\\\c\"@x.example>"), SMTP_PARSE_OK,
	  "\"a\\\"b\\\\c\"@x.example", "x.example", SMTP_MB_QUOTED },
	{ K_MAIL, S("<\"a>b\"@x.example> SIZE=5"), SMTP_PARSE_OK,
	  "\"a>b\"@x.example", "x.example", SMTP_MB_QUOTED },
	{ K_MAIL, S("<\"\"@x.example>"), SMTP_PARSE_OK, "\"\"@x.example", "x.example",
	  SMTP_MB_QUOTED },
	{ K_MAIL, S("<\"abc@x.example>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<\"a\tb\"@x.example>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<\"a\\\x01\"@x.example>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<\"a\"b@x.example>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<a\"b\"@x.example>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	/* relay tricks: the domain is the real one, never "other" */
	{ K_RCPT, S("<\"user@other.example\"@ours.example>"), SMTP_PARSE_OK,
	  "\"user@other.example\"@ours.example", "ours.example", SMTP_MB_QUOTED },
	{ K_RCPT, S("<user%other.example@ours.example>"), SMTP_PARSE_OK,
	  "user%other.example@ours.example", "ours.example", 0 },
	{ K_RCPT, S("<other.example!user@ours.example>"), SMTP_PARSE_OK,
	  "other.example!user@ours.example", "ours.example", 0 },
	{ K_RCPT, S("<a!b%c@ours.example>"), SMTP_PARSE_OK, "a!b%c@ours.example",
	  "ours.example", 0 },
	{ K_RCPT, S("<user@other.example@ours.example>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_RCPT, S("<user@ours.example@>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_RCPT, S("<@ours.example:user@other.example>"), SMTP_PARSE_OK,
	  "user@other.example", "other.example", SMTP_MB_ROUTE },
	{ K_MBOX, S("\"a@b\"@ours.example"), SMTP_PARSE_OK, "\"a@b\"@ours.example",
	  "ours.example", SMTP_MB_QUOTED },
	{ K_MBOX, S("user%other@ours.example"), SMTP_PARSE_OK, "user%other@ours.example",
	  "ours.example", 0 },
	{ K_MBOX, S("a!b@ours.example"), SMTP_PARSE_OK, "a!b@ours.example",
	  "ours.example", 0 },
	/* source routes */
	{ K_MAIL, S("<@a.example,@b.example:user@c.example>"), SMTP_PARSE_OK,
	  "user@c.example", "c.example", SMTP_MB_ROUTE },
	{ K_RCPT, S("<@a.example:\"x y\"@[192.0.2.7]>"), SMTP_PARSE_OK,
	  "\"x y\"@[192.0.2.7]", "[192.0.2.7]",
	  SMTP_MB_ROUTE | SMTP_MB_QUOTED | SMTP_MB_LITERAL },
	{ K_MAIL, S("<@a.example user@c.example>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<@:user@c.example>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<@a.example,user@c.example>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<@a.example,:user@c.example>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<@a..example:user@c.example>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<@b\xc3\xbc.example:user@c.example>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<@a.example:>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<@example.com>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("@a.example:user@c.example"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	/* address literals */
	{ K_MAIL, S("<user@[192.0.2.1]>"), SMTP_PARSE_OK, "user@[192.0.2.1]", "[192.0.2.1]",
	  SMTP_MB_LITERAL },
	{ K_MAIL, S("<user@[IPv6:2001:db8::1]>"), SMTP_PARSE_OK, "user@[IPv6:2001:db8::1]",
	  "[IPv6:2001:db8::1]", SMTP_MB_LITERAL },
	{ K_RCPT, S("<user@[ipv6:::ffff:192.0.2.1]>"), SMTP_PARSE_OK,
	  "user@[ipv6:::ffff:192.0.2.1]", "[ipv6:::ffff:192.0.2.1]", SMTP_MB_LITERAL },
	{ K_MAIL, S("<user@[192.0.2.256]>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<user@[192.0.2]>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<user@[2001:db8::1]>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<user@[IPv6:192.0.2.1]>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<user@[IPv6:2001:db8:::1]>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<user@[x-tag:content]>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<user@[]>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<user@[192.0.2.1>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<user@[192.0.2.1].x>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MBOX, S("user@[192.0.2.1\0]"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MBOX, S("user@[192.0.2.1 ]"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	/* domains */
	{ K_MAIL, S("<user@example.com.>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<user@example..com>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<user@.example.com>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<user@-example.com>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<user@example-.com>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<user@exa_mple.com>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<user@exa mple.com>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<user@>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	/* local parts */
	{ K_MAIL, S("<userexample.com>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<@>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<.user@x.example>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<user.@x.example>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<us..er@x.example>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<us er@x.example>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<us(er)@x.example>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<us\\er@x.example>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	/* brackets */
	{ K_MAIL, S("<user@example.com"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<user@example.com>x"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<user@example.com>SIZE=1"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("<<a@b.example>>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S("user@example.com>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MAIL, S(""), SMTP_PARSE_BAD_SYNTAX, NULL, NULL, 0 },
	{ K_RCPT, S("   "), SMTP_PARSE_BAD_SYNTAX, NULL, NULL, 0 },
	/* bare paths (lenient) */
	{ K_MAIL, S("user@example.com"), SMTP_PARSE_OK, "user@example.com", "example.com",
	  SMTP_MB_BARE },
	{ K_RCPT, S("user@example.com NOTIFY=NEVER"), SMTP_PARSE_OK, "user@example.com",
	  "example.com", SMTP_MB_BARE },
	{ K_MAIL, S("\"a b\"@example.com SIZE=1"), SMTP_PARSE_OK, "\"a b\"@example.com",
	  "example.com", SMTP_MB_BARE | SMTP_MB_QUOTED },
	/* UTF-8 */
	{ K_MAIL, S("<j\xc3\xb6rg@b\xc3\xbc" "cher.example>"), SMTP_PARSE_OK,
	  "j\xc3\xb6rg@b\xc3\xbc" "cher.example", "b\xc3\xbc" "cher.example", SMTP_MB_UTF8 },
	{ K_RCPT, S("<\"j\xc3\xb6 rg\"@x.example>"), SMTP_PARSE_OK, "\"j\xc3\xb6 rg\"@x.example",
	  "x.example", SMTP_MB_UTF8 | SMTP_MB_QUOTED },
	{ K_RCPT, S("<user@\xf0\x9f\x93\xa7.example>"), SMTP_PARSE_OK,
	  "user@\xf0\x9f\x93\xa7.example", "\xf0\x9f\x93\xa7.example", SMTP_MB_UTF8 },
	{ K_MAIL, S("<j\xc3@x.example>"), SMTP_PARSE_BAD_UTF8, NULL, NULL, 0 },
	{ K_MAIL, S("<j\xc0\xaf@x.example>"), SMTP_PARSE_BAD_UTF8, NULL, NULL, 0 },
	{ K_MAIL, S("<a@b\xed\xa0\x80.example>"), SMTP_PARSE_BAD_UTF8, NULL, NULL, 0 },
	{ K_MAIL, S("<a@b\xf4\x90\x80\x80.example>"), SMTP_PARSE_BAD_UTF8, NULL, NULL, 0 },
	{ K_MAIL, S("<a\xff@b.example>"), SMTP_PARSE_BAD_UTF8, NULL, NULL, 0 },
	/* bare mailboxes */
	{ K_MBOX, S("user@example.com"), SMTP_PARSE_OK, "user@example.com", "example.com", 0 },
	{ K_MBOX, S("<user@example.com>"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MBOX, S("user@example.com "), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MBOX, S("postmaster"), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MBOX, S(""), SMTP_PARSE_BAD_ADDRESS, NULL, NULL, 0 },
	{ K_MBOX, S("a@b"), SMTP_PARSE_OK, "a@b", "b", 0 },
};

static enum smtp_parse_status
parse_kind(enum kind k, const char *in, size_t len, struct smtp_mailbox *mb)
{
	struct smtp_mail_params mp;
	struct smtp_rcpt_params rp;

	switch (k) {
	case K_MAIL:
		return smtp_parse_mail_from(in, len, mb, &mp);
	case K_RCPT:
		return smtp_parse_rcpt_to(in, len, mb, &rp);
	default:
		return smtp_parse_mailbox(in, len, mb);
	}
}

static void
test_path_table(void **state)
{
	for (size_t i = 0; i < sizeof(path_cases) / sizeof(path_cases[0]); i++) {
		const struct path_case *c = &path_cases[i];
		struct smtp_mailbox mb;
		enum smtp_parse_status st;

		memset(&mb, 0x5a, sizeof(mb));
		st = parse_kind(c->kind, c->in, c->len, &mb);
		CHECK_STATUS(st, c->st, c->in, i);
		check_mailbox_invariants(&mb, st);
		if (st != SMTP_PARSE_OK)
			continue;
		if (strcmp(mb.addr, c->addr) != 0)
			fail_msg("case %zu (%s): addr %s", i, c->in, mb.addr);
		if (strcmp(mb.addr + mb.domain_off, c->domain) != 0)
			fail_msg("case %zu (%s): domain %s", i, c->in,
			    mb.addr + mb.domain_off);
		if (mb.flags != c->flags)
			fail_msg("case %zu (%s): flags %#x want %#x", i, c->in,
			    mb.flags, c->flags);
	}
}

/* A failed parse empties outputs that held a previous result. */
static void
test_path_failure_resets(void **state)
{
	struct smtp_mailbox mb;
	struct smtp_mail_params mp;

	assert_int_equal(smtp_parse_mail_from(S("<a@b.example> SIZE=9"), &mb, &mp),
	    SMTP_PARSE_OK);
	assert_int_equal(mp.size, 9);
	assert_int_equal(smtp_parse_mail_from(S("<a@b.example> SIZE=x"), &mb, &mp),
	    SMTP_PARSE_BAD_PARAM);
	assert_string_equal(mb.addr, "");
	assert_int_equal(mb.len, 0);
	assert_int_equal(mp.has_size, 0);
	assert_int_equal(mp.size, 0);
}

/* "x" repeated n times; labels of 60 so no label is over 63. */
static void
fill_domain(char *d, size_t n)
{
	for (size_t i = 0; i < n; i++)
		d[i] = (i % 61 == 60) ? '.' : 'd';
	assert_true(n == 0 || d[n - 1] != '.');
	d[n] = '\0';
}

/* "<" + local(l) + "@" + domain(d) + ">" into buf; returns the length. */
static size_t
make_path(char *buf, size_t l, size_t d, int brackets)
{
	size_t n = 0;

	if (brackets)
		buf[n++] = '<';
	memset(buf + n, 'l', l);
	n += l;
	buf[n++] = '@';
	fill_domain(buf + n, d);
	n += d;
	if (brackets)
		buf[n++] = '>';
	buf[n] = '\0';
	return n;
}

static void
test_lengths(void **state)
{
	char buf[1024];
	struct smtp_mailbox mb;
	size_t n;

	/* local part: 64 ok, 65 too long (dot-string, quoted, bare) */
	n = make_path(buf, 64, 11, 1);
	assert_int_equal(parse_kind(K_MAIL, buf, n, &mb), SMTP_PARSE_OK);
	assert_int_equal(mb.domain_off, 65);
	n = make_path(buf, 65, 11, 1);
	assert_int_equal(parse_kind(K_RCPT, buf, n, &mb), SMTP_PARSE_TOO_LONG);
	n = make_path(buf, 64, 11, 0);
	assert_int_equal(parse_kind(K_MBOX, buf, n, &mb), SMTP_PARSE_OK);
	n = make_path(buf, 65, 11, 0);
	assert_int_equal(parse_kind(K_MBOX, buf, n, &mb), SMTP_PARSE_TOO_LONG);
	n = make_path(buf, 64, 11, 1);
	buf[1] = '"';
	buf[64] = '"';          /* "lll...l" of 64 octets with its quotes */
	assert_int_equal(parse_kind(K_MAIL, buf, n, &mb), SMTP_PARSE_OK);
	assert_int_equal(mb.flags, SMTP_MB_QUOTED);
	n = make_path(buf, 65, 11, 1);
	buf[1] = '"';
	buf[65] = '"';
	assert_int_equal(parse_kind(K_MAIL, buf, n, &mb), SMTP_PARSE_TOO_LONG);

	/* whole path: 256 with <> ok, 257 too long */
	n = make_path(buf, 64, 189, 1);
	assert_int_equal(n, 256);
	assert_int_equal(parse_kind(K_MAIL, buf, n, &mb), SMTP_PARSE_OK);
	assert_int_equal(mb.len, 254);
	n = make_path(buf, 64, 190, 1);
	assert_int_equal(parse_kind(K_MAIL, buf, n, &mb), SMTP_PARSE_TOO_LONG);
	/* bare path and bare mailbox: 254 ok, 255 too long */
	n = make_path(buf, 64, 189, 0);
	assert_int_equal(parse_kind(K_RCPT, buf, n, &mb), SMTP_PARSE_OK);
	assert_int_equal(mb.flags, SMTP_MB_BARE);
	assert_int_equal(parse_kind(K_MBOX, buf, n, &mb), SMTP_PARSE_OK);
	n = make_path(buf, 64, 190, 0);
	assert_int_equal(parse_kind(K_RCPT, buf, n, &mb), SMTP_PARSE_TOO_LONG);
	assert_int_equal(parse_kind(K_MBOX, buf, n, &mb), SMTP_PARSE_TOO_LONG);
	/* a source route counts toward the path but is not copied */
	n = (size_t)snprintf(buf, sizeof(buf), "<@r.example:");
	n += make_path(buf + n, 64, 256 - 12 - 65 - 1, 0);
	buf[n++] = '>';
	assert_int_equal(n, 256);
	assert_int_equal(parse_kind(K_MAIL, buf, n, &mb), SMTP_PARSE_OK);
	assert_int_equal(mb.flags, SMTP_MB_ROUTE);
	assert_int_equal(mb.len, 256 - 12 - 1);
	n = (size_t)snprintf(buf, sizeof(buf), "<@r.example:");
	n += make_path(buf + n, 64, 256 - 12 - 65 - 1 + 1, 0);
	buf[n++] = '>';
	assert_int_equal(parse_kind(K_MAIL, buf, n, &mb), SMTP_PARSE_TOO_LONG);

	/* domain over 255 in a mailbox */
	n = make_path(buf, 1, 256, 0);
	assert_int_equal(parse_kind(K_MBOX, buf, n, &mb), SMTP_PARSE_TOO_LONG);

	/* label: 63 ok, 64 bad */
	memcpy(buf, "u@", 2);
	memset(buf + 2, 'a', 63);
	memcpy(buf + 65, ".example", 8);
	assert_int_equal(smtp_parse_mailbox(buf, 73, &mb), SMTP_PARSE_OK);
	memset(buf + 2, 'a', 64);
	memcpy(buf + 66, ".example", 8);
	assert_int_equal(smtp_parse_mailbox(buf, 74, &mb), SMTP_PARSE_BAD_ADDRESS);

	/* a full-length command line carrying a full-length path */
	n = (size_t)snprintf(buf, sizeof(buf), "MAIL FROM:");
	n += make_path(buf + n, 64, 189, 1);
	{
		struct smtp_cmd cmd;
		struct smtp_mail_params mp;

		assert_int_equal(smtp_parse_command(buf, n, &cmd), SMTP_PARSE_OK);
		assert_int_equal(cmd.verb, SMTP_V_MAIL);
		assert_int_equal(smtp_parse_mail_from(cmd.arg, cmd.arg_len, &mb, &mp),
		    SMTP_PARSE_OK);
		assert_int_equal(mb.len, 254);
	}
}

/* ---- MAIL parameters -------------------------------------------------- */

struct mail_param_case {
	const char *in;
	enum smtp_parse_status st;
	int has_size;
	uint64_t size;
	enum smtp_body body;
	int smtputf8;
	char ret;
	const char *envid;
	const char *auth;
};

static const struct mail_param_case mail_param_cases[] = {
	{ "<a@b.example>", SMTP_PARSE_OK, 0, 0, SMTP_BODY_7BIT, 0, 0, "", "" },
	{ "<a@b.example> SIZE=12345", SMTP_PARSE_OK, 1, 12345, SMTP_BODY_7BIT, 0, 0, "", "" },
	{ "<a@b.example> size=0", SMTP_PARSE_OK, 1, 0, SMTP_BODY_7BIT, 0, 0, "", "" },
	{ "<a@b.example> SIZE=18446744073709551615", SMTP_PARSE_OK, 1, UINT64_MAX,
	  SMTP_BODY_7BIT, 0, 0, "", "" },
	{ "<a@b.example> SIZE=18446744073709551616", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> SIZE=99999999999999999999", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> SIZE=000000000000000000001", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> SIZE=12a", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> SIZE=-1", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> SIZE=", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> SIZE", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> SIZE=1=2", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> SIZE=1 size=2", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> BODY=8BITMIME", SMTP_PARSE_OK, 0, 0, SMTP_BODY_8BITMIME, 0, 0, "", "" },
	{ "<a@b.example> body=binarymime", SMTP_PARSE_OK, 0, 0, SMTP_BODY_BINARYMIME, 0, 0, "", "" },
	{ "<a@b.example> BODY=7bit", SMTP_PARSE_OK, 0, 0, SMTP_BODY_7BIT, 0, 0, "", "" },
	{ "<a@b.example> BODY=9BIT", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> BODY=8BITMIME BODY=7BIT", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> SMTPUTF8", SMTP_PARSE_OK, 0, 0, SMTP_BODY_7BIT, 1, 0, "", "" },
	{ "<a@b.example> smtputf8=yes", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> SMTPUTF8 SMTPUTF8", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> RET=FULL", SMTP_PARSE_OK, 0, 0, SMTP_BODY_7BIT, 0, 'F', "", "" },
	{ "<a@b.example> ret=hdrs", SMTP_PARSE_OK, 0, 0, SMTP_BODY_7BIT, 0, 'H', "", "" },
	{ "<a@b.example> RET=NONE", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> RET", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> ENVID=QQ314159", SMTP_PARSE_OK, 0, 0, SMTP_BODY_7BIT, 0, 0,
	  "QQ314159", "" },
	{ "<a@b.example> ENVID=a+2Bb+3d", SMTP_PARSE_OK, 0, 0, SMTP_BODY_7BIT, 0, 0,
	  "a+2Bb+3d", "" },
	{ "<a@b.example> ENVID=a+2", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> ENVID=a+ZZ", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> ENVID=a=b", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> AUTH=<a=b>", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> ENVID=\xc3\xa9", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> AUTH=<>", SMTP_PARSE_OK, 0, 0, SMTP_BODY_7BIT, 0, 0, "", "<>" },
	{ "<a@b.example> AUTH=e+3Dmc2@example.com", SMTP_PARSE_OK, 0, 0, SMTP_BODY_7BIT, 0, 0,
	  "", "e+3Dmc2@example.com" },
	{ "<a@b.example> AUTH=a+", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> AUTH", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> FOO=bar", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> X-FOO", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> NOTIFY=NEVER", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> =x", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> -SIZE=1", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> SI_ZE=1", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<a@b.example> SIZE=1\x01", SMTP_PARSE_BAD_PARAM, 0, 0, 0, 0, 0, "", "" },
	{ "<> SIZE=10  BODY=8BITMIME\tSMTPUTF8 RET=HDRS ENVID=x AUTH=<>", SMTP_PARSE_OK,
	  1, 10, SMTP_BODY_8BITMIME, 1, 'H', "x", "<>" },
};

static void
test_mail_params(void **state)
{
	char envid[128];
	struct smtp_mailbox mb;
	struct smtp_mail_params p;

	for (size_t i = 0; i < sizeof(mail_param_cases) / sizeof(mail_param_cases[0]); i++) {
		const struct mail_param_case *c = &mail_param_cases[i];
		enum smtp_parse_status st;

		memset(&p, 0x77, sizeof(p));
		st = smtp_parse_mail_from(c->in, strlen(c->in), &mb, &p);
		CHECK_STATUS(st, c->st, c->in, i);
		check_mailbox_invariants(&mb, st);
		assert_int_equal(p.has_size, c->has_size);
		assert_true(p.size == c->size);
		assert_int_equal(p.body, c->body);
		assert_int_equal(p.smtputf8, c->smtputf8);
		assert_int_equal(p.ret, c->ret);
		assert_string_equal(p.envid, c->envid);
		assert_string_equal(p.auth, c->auth);
	}
	/* ENVID: 100 octets ok, 101 refused */
	memcpy(envid, "<> ENVID=", 9);
	memset(envid + 9, 'e', 101);
	assert_int_equal(smtp_parse_mail_from(envid, 9 + 100, &mb, &p), SMTP_PARSE_OK);
	assert_int_equal(strlen(p.envid), 100);
	assert_int_equal(smtp_parse_mail_from(envid, 9 + 101, &mb, &p),
	    SMTP_PARSE_BAD_PARAM);
	/* RFC 8689 4.1: REQUIRETLS takes no value, once */
	memset(&p, 0, sizeof(p));
	assert_int_equal(smtp_parse_mail_from("<a@b.example> requiretls "
	    "SMTPUTF8", 33, &mb, &p), SMTP_PARSE_OK);
	assert_int_equal(p.requiretls, 1);
	assert_int_equal(p.smtputf8, 1);
	assert_int_equal(smtp_parse_mail_from("<a@b.example> REQUIRETLS=yes",
	    28, &mb, &p), SMTP_PARSE_BAD_PARAM);
	assert_int_equal(smtp_parse_mail_from("<a@b.example> REQUIRETLS "
	    "REQUIRETLS", 35, &mb, &p), SMTP_PARSE_BAD_PARAM);
	memset(&p, 0x77, sizeof(p));
	assert_int_equal(smtp_parse_mail_from("<a@b.example>", 13, &mb, &p),
	    SMTP_PARSE_OK);
	assert_int_equal(p.requiretls, 0);
}

/* ---- RCPT parameters -------------------------------------------------- */

struct rcpt_param_case {
	const char *in;
	enum smtp_parse_status st;
	unsigned notify;
	const char *orcpt;
};

static const struct rcpt_param_case rcpt_param_cases[] = {
	{ "<a@b.example>", SMTP_PARSE_OK, 0, "" },
	{ "<a@b.example> NOTIFY=NEVER", SMTP_PARSE_OK, SMTP_NOTIFY_NEVER, "" },
	{ "<a@b.example> NOTIFY=SUCCESS,FAILURE,DELAY", SMTP_PARSE_OK,
	  SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY, "" },
	{ "<a@b.example> notify=delay,success", SMTP_PARSE_OK,
	  SMTP_NOTIFY_SUCCESS | SMTP_NOTIFY_DELAY, "" },
	{ "<a@b.example> NOTIFY=FAILURE", SMTP_PARSE_OK, SMTP_NOTIFY_FAILURE, "" },
	{ "<a@b.example> NOTIFY=NEVER,DELAY", SMTP_PARSE_BAD_PARAM, 0, "" },
	{ "<a@b.example> NOTIFY=SUCCESS,NEVER", SMTP_PARSE_BAD_PARAM, 0, "" },
	{ "<a@b.example> NOTIFY=SUCCESS,,DELAY", SMTP_PARSE_BAD_PARAM, 0, "" },
	{ "<a@b.example> NOTIFY=SUCCESS,", SMTP_PARSE_BAD_PARAM, 0, "" },
	{ "<a@b.example> NOTIFY=,SUCCESS", SMTP_PARSE_BAD_PARAM, 0, "" },
	{ "<a@b.example> NOTIFY=SUCCESS,SUCCESS", SMTP_PARSE_BAD_PARAM, 0, "" },
	{ "<a@b.example> NOTIFY=ALWAYS", SMTP_PARSE_BAD_PARAM, 0, "" },
	{ "<a@b.example> NOTIFY", SMTP_PARSE_BAD_PARAM, 0, "" },
	{ "<a@b.example> NOTIFY=NEVER NOTIFY=NEVER", SMTP_PARSE_BAD_PARAM, 0, "" },
	{ "<a@b.example> ORCPT=rfc822;user@example.com", SMTP_PARSE_OK, 0,
	  "rfc822;user@example.com" },
	{ "<a@b.example> ORCPT=rfc822;user+2Bx@example.com", SMTP_PARSE_OK, 0,
	  "rfc822;user+2Bx@example.com" },
	{ "<a@b.example> ORCPT=utf-8;j\\x{00F6}rg@x.example", SMTP_PARSE_OK, 0,
	  "utf-8;j\\x{00F6}rg@x.example" },
	{ "<a@b.example> ORCPT=rfc822;", SMTP_PARSE_BAD_PARAM, 0, "" },
	{ "<a@b.example> ORCPT=;a@b.example", SMTP_PARSE_BAD_PARAM, 0, "" },
	{ "<a@b.example> ORCPT=rfc822", SMTP_PARSE_BAD_PARAM, 0, "" },
	{ "<a@b.example> ORCPT=rfc822;a+G1", SMTP_PARSE_BAD_PARAM, 0, "" },
	{ "<a@b.example> ORCPT=rfc822;a=b", SMTP_PARSE_BAD_PARAM, 0, "" },
	{ "<a@b.example> ORCPT=rfc 822;a", SMTP_PARSE_BAD_PARAM, 0, "" },
	{ "<a@b.example> ORCPT=rfc822;a ORCPT=rfc822;b", SMTP_PARSE_BAD_PARAM, 0, "" },
	{ "<a@b.example> SIZE=10", SMTP_PARSE_BAD_PARAM, 0, "" },
	{ "<a@b.example> SMTPUTF8", SMTP_PARSE_BAD_PARAM, 0, "" },
	{ "<postmaster> NOTIFY=FAILURE,DELAY ORCPT=rfc822;postmaster", SMTP_PARSE_OK,
	  SMTP_NOTIFY_FAILURE | SMTP_NOTIFY_DELAY, "rfc822;postmaster" },
};

static void
test_rcpt_params(void **state)
{
	char buf[512];
	struct smtp_mailbox mb;
	struct smtp_rcpt_params p;
	size_t n;

	for (size_t i = 0; i < sizeof(rcpt_param_cases) / sizeof(rcpt_param_cases[0]); i++) {
		const struct rcpt_param_case *c = &rcpt_param_cases[i];
		enum smtp_parse_status st;

		memset(&p, 0x77, sizeof(p));
		st = smtp_parse_rcpt_to(c->in, strlen(c->in), &mb, &p);
		CHECK_STATUS(st, c->st, c->in, i);
		check_mailbox_invariants(&mb, st);
		assert_int_equal(p.notify, c->notify);
		assert_string_equal(p.orcpt, c->orcpt);
	}
	/* ORCPT: as long as its buffer holds (266), then refused */
	n = (size_t)snprintf(buf, sizeof(buf), "<a@b.example> ORCPT=rfc822;");
	memset(buf + n, 'o', sizeof(buf) - n);
	assert_int_equal(smtp_parse_rcpt_to(buf, n + SMTP_PATH_MAX + 10 - 7, &mb, &p),
	    SMTP_PARSE_OK);
	assert_int_equal(strlen(p.orcpt), SMTP_PATH_MAX + 10);
	assert_int_equal(smtp_parse_rcpt_to(buf, n + SMTP_PATH_MAX + 11 - 7, &mb, &p),
	    SMTP_PARSE_BAD_PARAM);
}

/* ---- HELO ------------------------------------------------------------- */

struct helo_case {
	const char *in;
	size_t len;
	enum smtp_parse_status st;
};

static const struct helo_case helo_cases[] = {
	{ S("mail.example.com"), SMTP_PARSE_OK },
	{ S("localhost"), SMTP_PARSE_OK },
	{ S("MY_PC"), SMTP_PARSE_OK },
	{ S("host.example."), SMTP_PARSE_OK },
	{ S("192.0.2.1"), SMTP_PARSE_OK },
	{ S("[192.0.2.1]"), SMTP_PARSE_OK },
	{ S("[IPv6:::1]"), SMTP_PARSE_OK },
	{ S("host.example.."), SMTP_PARSE_BAD_SYNTAX },
	{ S("."), SMTP_PARSE_BAD_SYNTAX },
	{ S(""), SMTP_PARSE_BAD_SYNTAX },
	{ S("a b"), SMTP_PARSE_BAD_SYNTAX },
	{ S("a\tb"), SMTP_PARSE_BAD_SYNTAX },
	{ S("-host"), SMTP_PARSE_BAD_SYNTAX },
	{ S("host-"), SMTP_PARSE_BAD_SYNTAX },
	{ S("a..b"), SMTP_PARSE_BAD_SYNTAX },
	{ S("a@b"), SMTP_PARSE_BAD_SYNTAX },
	{ S("[300.1.1.1]"), SMTP_PARSE_BAD_SYNTAX },
	{ S("[192.0.2.1"), SMTP_PARSE_BAD_SYNTAX },
	{ S("[host.example]"), SMTP_PARSE_BAD_SYNTAX },
	{ S("a\x01"), SMTP_PARSE_BAD_CHAR },
	{ S("a\0b"), SMTP_PARSE_BAD_CHAR },
	{ S("h\xc3\xa9.example"), SMTP_PARSE_BAD_CHAR },
};

static void
test_helo(void **state)
{
	char buf[300];

	for (size_t i = 0; i < sizeof(helo_cases) / sizeof(helo_cases[0]); i++)
		CHECK_STATUS(smtp_parse_helo(helo_cases[i].in, helo_cases[i].len),
		    helo_cases[i].st, helo_cases[i].in, i);
	/* 255 ok (also with a trailing dot), 256 too long */
	fill_domain(buf, 255);
	assert_int_equal(smtp_parse_helo(buf, 255), SMTP_PARSE_OK);
	buf[255] = '.';
	assert_int_equal(smtp_parse_helo(buf, 256), SMTP_PARSE_OK);
	fill_domain(buf, 256);
	assert_int_equal(smtp_parse_helo(buf, 256), SMTP_PARSE_TOO_LONG);
	/* label 63 ok, 64 bad */
	memset(buf, 'h', 64);
	assert_int_equal(smtp_parse_helo(buf, 63), SMTP_PARSE_OK);
	assert_int_equal(smtp_parse_helo(buf, 64), SMTP_PARSE_BAD_SYNTAX);
}

/* ---- BDAT ------------------------------------------------------------- */

struct bdat_case {
	const char *in;
	enum smtp_parse_status st;
	uint64_t size;
	int last;
};

static const struct bdat_case bdat_cases[] = {
	{ "0", SMTP_PARSE_OK, 0, 0 },
	{ "0 LAST", SMTP_PARSE_OK, 0, 1 },
	{ "100", SMTP_PARSE_OK, 100, 0 },
	{ "100 LAST", SMTP_PARSE_OK, 100, 1 },
	{ "100 last", SMTP_PARSE_OK, 100, 1 },
	{ "100  LAST ", SMTP_PARSE_OK, 100, 1 },
	{ "007", SMTP_PARSE_OK, 7, 0 },
	{ "18446744073709551615", SMTP_PARSE_OK, UINT64_MAX, 0 },
	{ "18446744073709551616", SMTP_PARSE_BAD_SYNTAX, 0, 0 },
	{ "000000000000000000001", SMTP_PARSE_BAD_SYNTAX, 0, 0 },
	{ "", SMTP_PARSE_BAD_SYNTAX, 0, 0 },
	{ "LAST", SMTP_PARSE_BAD_SYNTAX, 0, 0 },
	{ " 100", SMTP_PARSE_BAD_SYNTAX, 0, 0 },
	{ "100 LASTX", SMTP_PARSE_BAD_SYNTAX, 0, 0 },
	{ "100LAST", SMTP_PARSE_BAD_SYNTAX, 0, 0 },
	{ "100 LAST extra", SMTP_PARSE_BAD_SYNTAX, 0, 0 },
	{ "-1", SMTP_PARSE_BAD_SYNTAX, 0, 0 },
	{ "+1", SMTP_PARSE_BAD_SYNTAX, 0, 0 },
	{ "1 2", SMTP_PARSE_BAD_SYNTAX, 0, 0 },
	{ "0x10", SMTP_PARSE_BAD_SYNTAX, 0, 0 },
};

static void
test_bdat(void **state)
{
	for (size_t i = 0; i < sizeof(bdat_cases) / sizeof(bdat_cases[0]); i++) {
		const struct bdat_case *c = &bdat_cases[i];
		uint64_t size = 12345;
		int last = 7;

		CHECK_STATUS(smtp_parse_bdat(c->in, strlen(c->in), &size, &last),
		    c->st, c->in, i);
		assert_true(size == c->size);
		assert_int_equal(last, c->last);
	}
}

/* ---- end to end: command line, then its path -------------------------- */

static void
test_command_then_path(void **state)
{
	static const struct {
		const char *line;
		const char *domain;
		unsigned flags;
	} cases[] = {
		{ "MAIL FROM: <\"a@b\"@ours.example> SMTPUTF8", "ours.example", SMTP_MB_QUOTED },
		{ "RCPT TO:<user%other.example@ours.example>", "ours.example", 0 },
		{ "rcpt to:   <@ours.example:u@other.example>  ", "other.example", SMTP_MB_ROUTE },
		{ "RCPT TO:<b\xc3\xa9@\xc3\xa9.example> NOTIFY=NEVER", "\xc3\xa9.example",
		  SMTP_MB_UTF8 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct smtp_cmd cmd;
		struct smtp_mailbox mb;
		struct smtp_mail_params mp;
		struct smtp_rcpt_params rp;
		enum smtp_parse_status st;

		assert_int_equal(smtp_parse_command(cases[i].line, strlen(cases[i].line),
		    &cmd), SMTP_PARSE_OK);
		if (cmd.verb == SMTP_V_MAIL)
			st = smtp_parse_mail_from(cmd.arg, cmd.arg_len, &mb, &mp);
		else
			st = smtp_parse_rcpt_to(cmd.arg, cmd.arg_len, &mb, &rp);
		CHECK_STATUS(st, SMTP_PARSE_OK, cases[i].line, i);
		check_mailbox_invariants(&mb, st);
		assert_string_equal(mb.addr + mb.domain_off, cases[i].domain);
		assert_int_equal(mb.flags, cases[i].flags);
	}
}

/* ---- sender-specified routing ------------------------------------------ */

static void
test_routing(void **state)
{
	static const struct {
		const char *arg;          /* RCPT TO: argument */
		unsigned routing;
	} cases[] = {
		{ "<user@relay.example>", 0 },
		{ "<first.last+tag@relay.example>", 0 },
		{ "<postmaster>", 0 },
		{ "<POSTMASTER>", 0 },
		{ "<user%other.example@relay.example>", SMTP_ROUTING_PERCENT },
		{ "<%@relay.example>", SMTP_ROUTING_PERCENT },
		{ "<host!user@relay.example>", SMTP_ROUTING_BANG },
		{ "<a!b%c@relay.example>", SMTP_ROUTING_BANG | SMTP_ROUTING_PERCENT },
		{ "<\"user@other.example\"@relay.example>", SMTP_ROUTING_QUOTED },
		{ "<\"u%h\"@relay.example>", SMTP_ROUTING_QUOTED },
		{ "<\"h!u\"@relay.example>", SMTP_ROUTING_QUOTED },
		{ "<\"a\\@b\"@relay.example>", SMTP_ROUTING_QUOTED },
		{ "<\"plain quoted\"@relay.example>", 0 },
		{ "<@hop.example:user@relay.example>", SMTP_ROUTING_SOURCE },
		{ "<@a.example,@b.example:user@relay.example>", SMTP_ROUTING_SOURCE },
		{ "<@a.example:u%v@relay.example>",
		  SMTP_ROUTING_SOURCE | SMTP_ROUTING_PERCENT },
		/* a '%' or '!' in the domain is not routing (nor valid) */
		{ "<user@[127.0.0.1]>", 0 },
		{ "user%x@relay.example", SMTP_ROUTING_PERCENT },   /* bare path */
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct smtp_mailbox mb;
		struct smtp_rcpt_params rp;
		enum smtp_parse_status st;

		st = smtp_parse_rcpt_to(cases[i].arg, strlen(cases[i].arg), &mb,
		    &rp);
		CHECK_STATUS(st, SMTP_PARSE_OK, cases[i].arg, i);
		if (smtp_mailbox_routing(&mb) != cases[i].routing)
			fail_msg("case %zu (%s): routing %#x, want %#x", i,
			    cases[i].arg, smtp_mailbox_routing(&mb),
			    cases[i].routing);
	}
	/* the null reverse-path and bare mailboxes */
	{
		struct smtp_mailbox mb;
		struct smtp_mail_params mp;

		assert_int_equal(smtp_parse_mail_from(S("<>"), &mb, &mp),
		    SMTP_PARSE_OK);
		assert_int_equal(smtp_mailbox_routing(&mb), 0);
		assert_int_equal(smtp_parse_mailbox(S("a!b@c.example"), &mb),
		    SMTP_PARSE_OK);
		assert_int_equal(smtp_mailbox_routing(&mb), SMTP_ROUTING_BANG);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_routing),
		cmocka_unit_test(test_command_table),
		cmocka_unit_test(test_command_length),
		cmocka_unit_test(test_verb_names),
		cmocka_unit_test(test_path_table),
		cmocka_unit_test(test_path_failure_resets),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_mail_params),
		cmocka_unit_test(test_rcpt_params),
		cmocka_unit_test(test_helo),
		cmocka_unit_test(test_bdat),
		cmocka_unit_test(test_command_then_path),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
