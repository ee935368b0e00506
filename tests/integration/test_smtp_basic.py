"""Basic SMTP service of the relay listener: greeting, EHLO, transactions,
byte-exact queueing, pipelining, small commands, swaks, relay policy."""

import re
import smtplib
import subprocess

import pytest

from conftest import RawSMTP, require_tool

QID = re.compile(r"^2\.0\.0 Ok: queued as ([0-9A-Fa-f]{16})$")


def stuff(body):
    """Dot-stuff a CRLF body (RFC 5321 4.5.2)."""
    out = []
    for line in body.split(b"\r\n"):
        out.append(b"." + line if line.startswith(b".") else line)
    return b"\r\n".join(out)


def transact(port, body, mail_from="alice@client.test", rcpts=("bob@example.com",),
             mail_params=""):
    """One transaction over a raw socket with `body` (CRLF-terminated, unstuffed).
    Returns the final Reply."""
    c = RawSMTP(port)
    try:
        c.greeting()
        c.ehlo()
        c.cmd("MAIL FROM:<%s>%s" % (mail_from, (" " + mail_params) if mail_params else ""), 250)
        for r in rcpts:
            c.cmd("RCPT TO:<%s>" % r, 250)
        c.cmd("DATA", 354)
        assert body.endswith(b"\r\n")
        c.send(stuff(body) + b".\r\n")
        r = c.reply(timeout=60)
        c.cmd("QUIT", 221)
        return r
    finally:
        c.close()


def assert_queued(r):
    assert r.code == 250, "expected 250 queued, got %r" % r
    m = QID.match(r.lines[-1])
    assert m, "250 reply does not match '2.0.0 Ok: queued as <16 hex>': %r" % r
    return m.group(1)


def test_greeting(ternd, smtp_raw):
    t = ternd()
    c = smtp_raw(t.port())
    r = c.greeting()
    assert len(r.lines) == 1
    assert re.match(r"^mx\.test ESMTP tern\b", r.lines[0]), r


def test_ehlo_keywords(ternd, smtp_raw):
    t = ternd(extra_conf="max-message-size 1M")
    c = smtp_raw(t.port())
    c.greeting()
    r = c.cmd("EHLO client.test", 250)
    assert r.lines[0].split()[0] == "mx.test", r
    kws = {l.split()[0].upper(): l.split()[1:] for l in r.lines[1:]}
    for k in ("PIPELINING", "SIZE", "8BITMIME", "ENHANCEDSTATUSCODES", "DSN"):
        assert k in kws, "EHLO lacks %s: %r" % (k, r)
    assert kws["SIZE"] == [str(1024 * 1024)], r
    assert "STARTTLS" not in kws, "plain listener must not offer STARTTLS: %r" % r
    assert "AUTH" not in kws, r
    # a second EHLO is allowed and answers the same
    r2 = c.cmd("EHLO client.test", 250)
    assert r2.lines == r.lines


def test_helo_then_transaction(ternd, smtp_raw):
    t = ternd()
    c = smtp_raw(t.port())
    c.greeting()
    r = c.cmd("HELO client.test", 250)
    assert len(r.lines) == 1 and r.lines[0].startswith("mx.test"), r
    c.cmd("MAIL FROM:<alice@client.test>", 250)
    c.cmd("RCPT TO:<bob@example.com>", 250)
    c.cmd("DATA", 354)
    c.send(b"Subject: helo\r\n\r\nhi\r\n.\r\n")
    qid = assert_queued(c.reply())
    assert t.show_message(qid) == b"Subject: helo\r\n\r\nhi\r\n"


def test_full_transaction_smtplib(ternd, dns):
    # no route: delivery needs the MX of example.com, whose lookup never answers,
    # so the recipient stays pending while we look
    dns.timeout("example.com")
    t = ternd(default_route=None)
    body = (b"From: Alice <alice@client.test>\r\nTo: bob@example.com\r\n"
            b"Subject: full transaction\r\nMessage-ID: <1@client.test>\r\n\r\n"
            b"Hello Bob.\r\n\r\nSecond paragraph.\r\n")
    with smtplib.SMTP("127.0.0.1", t.port(), local_hostname="client.test", timeout=10) as s:
        code, _ = s.ehlo()
        assert code == 250
        assert s.mail("alice@client.test")[0] == 250
        assert s.rcpt("bob@example.com")[0] == 250
        assert s.rcpt("carol@example.com")[0] == 250
        code, msg = s.data(body)
    assert code == 250, msg
    m = QID.match(msg.decode())
    assert m, msg
    qid = m.group(1)
    t.wait_log(r"id=%s\b.*status=queued|status=queued.*id=%s\b" % (qid, qid))
    q = t.queue()
    assert [x["id"] for x in q] == [qid]
    assert q[0]["sender"] == "alice@client.test"
    assert [(r["address"], r["state"]) for r in q[0]["recipients"]] == \
        [("bob@example.com", "pending"), ("carol@example.com", "pending")]
    assert q[0]["size"] >= len(body)
    assert t.show_message(qid) == body
    rec = t.show_body(qid)[:len(t.show_body(qid)) - len(body)]
    assert b"mx.test" in rec, "Received header should name the host: %r" % rec


def test_queue_ids_unique(ternd):
    t = ternd()
    ids = [assert_queued(transact(t.port(), b"Subject: %d\r\n\r\nx\r\n" % i)) for i in range(5)]
    assert len(set(ids)) == 5
    assert t.queue_ids() == set(ids)


DOT_BODY = (b"Subject: dots\r\n\r\n"
            b".leading dot\r\n"
            b"..two leading dots\r\n"
            b".\r\n"           # a lone dot inside the body (stuffed to "..")
            b"..\r\n"
            b"a.b\r\n"
            b" .space dot\r\n"
            b"last\r\n")


def test_dot_stuffing_raw(ternd):
    t = ternd()
    qid = assert_queued(transact(t.port(), DOT_BODY))
    assert t.show_message(qid) == DOT_BODY


def test_dot_stuffing_smtplib(ternd):
    t = ternd()
    with smtplib.SMTP("127.0.0.1", t.port(), timeout=10) as s:
        s.ehlo("client.test")
        s.mail("alice@client.test")
        s.rcpt("bob@example.com")
        code, msg = s.data(DOT_BODY)   # smtplib stuffs
    assert code == 250, msg
    assert t.show_message(QID.match(msg.decode()).group(1)) == DOT_BODY


def test_explicit_stuffing_on_the_wire(ternd, smtp_raw):
    # what the client writes, byte for byte, and what must be queued
    t = ternd()
    c = smtp_raw(t.port())
    c.greeting()
    c.ehlo()
    c.cmd("MAIL FROM:<a@client.test>", 250)
    c.cmd("RCPT TO:<b@example.com>", 250)
    c.cmd("DATA", 354)
    c.send(b"\r\n..x\r\n...\r\n.. \r\n.\r\n")
    qid = assert_queued(c.reply())
    assert t.show_message(qid) == b"\r\n.x\r\n..\r\n. \r\n"


def test_8bitmime_body(ternd):
    t = ternd()
    high = bytes(range(0x80, 0x100))
    body = (b"Subject: 8bit\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n"
            + "caf\u00e9 \u65e5\u672c \U0001F600\r\n".encode() + high + b"\r\n"
            + b"\x01\x02\x7f tab\tend\r\n")
    qid = assert_queued(transact(t.port(), body, mail_params="BODY=8BITMIME"))
    assert t.show_message(qid) == body
    # and 7BIT is a valid value too
    qid = assert_queued(transact(t.port(), b"\r\nplain\r\n", mail_params="BODY=7BIT"))
    assert t.show_message(qid) == b"\r\nplain\r\n"


def test_5mb_message(ternd):
    t = ternd(extra_conf="max-message-size 10M")
    line = b"".join(bytes([0x41 + (i % 26)]) for i in range(76)) + b"\r\n"
    lines = []
    n = 0
    i = 0
    while n < 5 * 1024 * 1024:
        # vary lines so a misplaced chunk is detected; some start with a dot
        l = (b"." if i % 97 == 0 else b"") + b"%08d " % i + line
        lines.append(l)
        n += len(l)
        i += 1
    body = b"Subject: big\r\n\r\n" + b"".join(lines)
    qid = assert_queued(transact(t.port(), body, mail_params="SIZE=%d" % len(body)))
    got = t.show_message(qid)
    assert len(got) == len(body)
    assert got == body


def test_smtplib_adds_final_crlf(ternd):
    t = ternd()
    with smtplib.SMTP("127.0.0.1", t.port(), timeout=10) as s:
        s.ehlo("client.test")
        s.mail("alice@client.test")
        s.rcpt("bob@example.com")
        code, msg = s.data(b"Subject: no final newline\r\n\r\nno newline at end")
    assert code == 250, msg
    got = t.show_message(QID.match(msg.decode()).group(1))
    assert got == b"Subject: no final newline\r\n\r\nno newline at end\r\n"


def test_pipelined_transaction_in_one_write(ternd, smtp_raw):
    t = ternd()
    c = smtp_raw(t.port())
    c.greeting()
    c.send(b"EHLO client.test\r\n"
           b"MAIL FROM:<alice@client.test>\r\n"
           b"RCPT TO:<bob@example.com>\r\n"
           b"RCPT TO:<carol@example.com>\r\n"
           b"DATA\r\n")
    r = c.expect(250)
    assert "PIPELINING" in [l.split()[0] for l in r.lines[1:]]
    c.expect(250)       # MAIL
    c.expect(250)       # RCPT
    c.expect(250)       # RCPT
    c.expect(354)       # DATA
    body = b"Subject: pipelined\r\n\r\nbody\r\n"
    c.send(body + b".\r\nQUIT\r\n")
    qid = assert_queued(c.reply())
    c.expect(221, "2.0.0")
    assert c.wait_closed(5), "server did not close after QUIT"
    assert c.buf == b"", "bytes after 221: %r" % c.buf
    assert t.show_message(qid) == body
    rcpts = [r["address"] for r in t.queue()[0]["recipients"]]
    assert rcpts == ["bob@example.com", "carol@example.com"]


def pipelined_to_data(c):
    """Greeting, then EHLO, MAIL a@client.test, RCPT b@example.com and DATA
    in one write, up to the 354."""
    c.greeting()
    c.send(b"EHLO client.test\r\nMAIL FROM:<a@client.test>\r\nRCPT TO:<b@example.com>\r\n"
           b"DATA\r\n")
    for code in (250, 250, 250, 354):
        c.expect(code)
    return c


def test_pipelined_second_transaction_after_data(ternd, smtp_raw):
    # RFC 2920: after the end-of-data dot, the next MAIL/RCPT/DATA may follow
    # in the same write
    t = ternd()
    c = pipelined_to_data(smtp_raw(t.port()))
    c.send(b"\r\nfirst\r\n.\r\nMAIL FROM:<c@client.test>\r\nRCPT TO:<d@example.com>\r\n"
           b"DATA\r\n")
    q1 = assert_queued(c.reply())
    c.expect(250)
    c.expect(250)
    c.expect(354)
    c.send(b"\r\nsecond\r\n.\r\nQUIT\r\n")
    q2 = assert_queued(c.reply())
    c.expect(221, "2.0.0")
    assert q1 != q2
    assert t.show_message(q1) == b"\r\nfirst\r\n"
    assert t.show_message(q2) == b"\r\nsecond\r\n"
    senders = {m["id"]: m["sender"] for m in t.queue()}
    assert senders == {q1: "a@client.test", q2: "c@client.test"}


def test_big_body_then_pipelined_transaction_in_one_write(ternd, smtp_raw):
    # the session reads a streaming message in large blocks: the block that
    # ends the first message also holds the next transaction, which must run
    # as commands, and both bodies are queued byte for byte
    t = ternd(extra_conf="max-message-size 10M")
    c = pipelined_to_data(smtp_raw(t.port()))
    first = b"Subject: big\r\n\r\n" + b"".join(
        (b"." if i % 89 == 0 else b"") + b"%07d " % i + b"x" * 70 + b"\r\n"
        for i in range(3000))
    second = b"Subject: small\r\n\r\nsecond\r\n"
    c.send(stuff(first) + b".\r\nMAIL FROM:<c@client.test>\r\nRCPT TO:<d@example.com>\r\n"
           b"DATA\r\n")
    q1 = assert_queued(c.reply(timeout=30))
    for code in (250, 250, 354):
        c.expect(code)
    c.send(second + b".\r\nQUIT\r\n")
    q2 = assert_queued(c.reply())
    c.expect(221, "2.0.0")
    assert t.show_message(q1) == first
    assert t.show_message(q2) == second


def test_rset_noop_vrfy_help_quit(ternd, smtp_raw):
    t = ternd()
    c = smtp_raw(t.port())
    c.greeting()
    c.ehlo()
    c.cmd("NOOP", 250, "2.0.0")
    c.cmd("MAIL FROM:<alice@client.test>", 250)
    c.cmd("RCPT TO:<bob@example.com>", 250)
    c.cmd("RSET", 250, "2.0.0")
    # the transaction is gone
    c.cmd("RCPT TO:<bob@example.com>", 503, "5.5.1")
    c.cmd("DATA", 503, "5.5.1")
    c.cmd("VRFY bob@example.com", 252, "2.5.0")
    r = c.cmd("HELP", 214)
    assert r.lines
    c.cmd("NOOP ignored argument", 250, "2.0.0")
    # a new transaction after RSET works
    c.cmd("MAIL FROM:<alice@client.test>", 250)
    c.cmd("RCPT TO:<bob@example.com>", 250)
    c.cmd("DATA", 354)
    c.send(b"\r\nafter rset\r\n.\r\n")
    qid = assert_queued(c.reply())
    c.cmd("QUIT", 221, "2.0.0")
    assert c.wait_closed(5)
    assert t.queue_ids() == {qid}


def test_commands_case_insensitive(ternd, smtp_raw):
    t = ternd()
    c = smtp_raw(t.port())
    c.greeting()
    c.cmd("ehlo client.test", 250)
    c.cmd("mail from:<alice@client.test>", 250)
    c.cmd("Rcpt To:<bob@example.com>", 250)
    c.cmd("data", 354)
    c.send(b"\r\nx\r\n.\r\n")
    assert_queued(c.reply())


def test_swaks(ternd):
    swaks = require_tool("swaks")
    t = ternd()
    r = subprocess.run([swaks, "--server", "127.0.0.1:%d" % t.port(), "--from",
                        "alice@client.test", "--to", "bob@example.com", "--helo",
                        "client.test", "--header", "Subject: swaks test",
                        "--body", "sent by swaks"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"<[-~]  250 2\.0\.0 Ok: queued as ([0-9A-Fa-f]{16})", r.stdout)
    assert m, r.stdout
    body = t.show_message(m.group(1))
    assert b"Subject: swaks test\r\n" in body
    assert b"\r\n\r\nsent by swaks\r\n" in body


def test_relay_denied_for_untrusted(ternd, smtp_raw):
    t = ternd()          # no trusted-networks: 127.0.0.1 is untrusted
    c = smtp_raw(t.port())
    c.greeting()
    c.ehlo()
    c.cmd("MAIL FROM:<alice@client.test>", 250)
    c.cmd("RCPT TO:<victim@elsewhere.test>", 554, "5.7.1")
    c.cmd("RCPT TO:<x@sub.example.com>", 554, "5.7.1")     # exact domain only
    c.cmd("RCPT TO:<x@example.com.evil.test>", 554, "5.7.1")
    c.cmd("RCPT TO:<x@elsewhere.test@example.com>", None)  # whatever: must not queue
    c.cmd("DATA", 503, "5.5.1")     # no valid recipient
    c.cmd("RSET", 250)
    assert t.queue() == []
    # mixed: only the relay-domain recipient is kept
    c.cmd("MAIL FROM:<alice@client.test>", 250)
    c.cmd("RCPT TO:<Bob@EXAMPLE.COM>", 250)        # domains are case-insensitive
    c.cmd("RCPT TO:<victim@elsewhere.test>", 554, "5.7.1")
    c.cmd("DATA", 354)
    c.send(b"\r\nmixed\r\n.\r\n")
    qid = assert_queued(c.reply())
    q = t.queue()
    assert [m["id"] for m in q] == [qid]
    assert [r["address"].lower() for r in q[0]["recipients"]] == ["bob@example.com"]
    assert re.search(r"554|5\.7\.1|relay", t.log()), "relay refusal not logged:\n" + t.log()


def test_trusted_client_may_relay(ternd):
    t = ternd(trusted="127.0.0.0/8 ::1")
    qid = assert_queued(transact(t.port(), b"\r\nrelayed\r\n",
                                 rcpts=("someone@elsewhere.test", "bob@example.com")))
    q = t.queue()
    assert [m["id"] for m in q] == [qid]
    assert sorted(r["address"] for r in q[0]["recipients"]) == \
        ["bob@example.com", "someone@elsewhere.test"]


def test_trusted_networks_not_matching(ternd, smtp_raw):
    t = ternd(trusted="192.0.2.0/24")
    c = smtp_raw(t.port())
    c.greeting()
    c.ehlo()
    c.cmd("MAIL FROM:<alice@client.test>", 250)
    c.cmd("RCPT TO:<victim@elsewhere.test>", 554, "5.7.1")


def test_null_sender_accepted(ternd, smtp_raw):
    t = ternd()
    c = smtp_raw(t.port())
    c.greeting()
    c.ehlo()
    c.cmd("MAIL FROM:<>", 250)
    c.cmd("RCPT TO:<bob@example.com>", 250)
    c.cmd("DATA", 354)
    c.send(b"\r\nbounce\r\n.\r\n")
    qid = assert_queued(c.reply())
    assert [m["sender"] for m in t.queue() if m["id"] == qid] == [""]
