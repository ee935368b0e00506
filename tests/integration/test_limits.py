"""Every configured limit and protocol refusal, with its exact reply code."""

import os
import socket
import subprocess
import tempfile
import time

import pytest

from test_smtp_basic import assert_queued, stuff


def open_tx(c, rcpts=("bob@example.com",), mail="MAIL FROM:<alice@client.test>"):
    c.greeting()
    c.ehlo()
    c.cmd(mail, 250)
    for r in rcpts:
        c.cmd("RCPT TO:<%s>" % r, 250)


def test_max_recipients(ternd, smtp_raw):
    t = ternd(extra_conf="max-recipients 5")
    c = smtp_raw(t.port())
    open_tx(c, ["r%d@example.com" % i for i in range(5)])
    c.cmd("RCPT TO:<r5@example.com>", 452, "4.5.3")
    c.cmd("RCPT TO:<r6@example.com>", 452, "4.5.3")
    c.cmd("DATA", 354)
    c.send(b"\r\nfive\r\n.\r\n")
    qid = assert_queued(c.reply())
    q = t.queue()
    assert [m["id"] for m in q] == [qid]
    assert [r["address"] for r in q[0]["recipients"]] == ["r%d@example.com" % i for i in range(5)]


def test_declared_size_too_big(ternd, smtp_raw):
    t = ternd(extra_conf="max-message-size 1M")
    c = smtp_raw(t.port())
    c.greeting()
    c.ehlo()
    c.cmd("MAIL FROM:<alice@client.test> SIZE=%d" % (1024 * 1024 + 1), 552, "5.3.4")
    # at the limit is fine
    c.cmd("MAIL FROM:<alice@client.test> SIZE=%d" % (1024 * 1024), 250)


def test_actual_size_too_big(ternd, smtp_raw):
    t = ternd(extra_conf="max-message-size 1M")
    c = smtp_raw(t.port())
    open_tx(c)
    c.cmd("DATA", 354)
    line = b"x" * 998 + b"\r\n"
    c.send(line * 1100 + b".\r\n")          # ~1.1 MB
    c.expect(552, "5.3.4", timeout=30)
    assert t.queue() == []
    # the session is still usable and the next (small) message goes through
    c.cmd("MAIL FROM:<alice@client.test>", 250)
    c.cmd("RCPT TO:<bob@example.com>", 250)
    c.cmd("DATA", 354)
    c.send(b"\r\nsmall\r\n.\r\n")
    qid = assert_queued(c.reply())
    assert t.queue_ids() == {qid}


def test_command_line_too_long(ternd, smtp_raw):
    t = ternd()
    c = smtp_raw(t.port())
    c.greeting()
    c.ehlo()
    # 512 octets including CRLF is the limit (RFC 5321 4.5.3.1.4)
    ok = "NOOP " + "a" * (512 - 5 - 2)
    assert len(ok) + 2 == 512
    c.cmd(ok, 250)
    c.send("MAIL FROM:<" + "a" * 600 + "@client.test>\r\n")
    c.expect(500, "5.5.2")


def test_unknown_command(ternd, smtp_raw):
    t = ternd()
    c = smtp_raw(t.port())
    c.greeting()
    c.ehlo()
    c.cmd("FOOBAR baz", 500, "5.5.1")
    c.cmd("NOOP", 250)


@pytest.mark.parametrize("seq", [
    [("RCPT TO:<bob@example.com>", 503)],
    [("DATA", 503)],
    [("MAIL FROM:<alice@client.test>", 250), ("DATA", 503)],
    [("MAIL FROM:<alice@client.test>", 250), ("MAIL FROM:<alice@client.test>", 503)],
], ids=["rcpt-before-mail", "data-before-mail", "data-before-rcpt", "nested-mail"])
def test_bad_sequence(ternd, smtp_raw, seq):
    t = ternd()
    c = smtp_raw(t.port())
    c.greeting()
    c.ehlo()
    for line, code in seq:
        c.cmd(line, code, "5.5.1" if code == 503 else None)
    assert t.queue() == []


@pytest.mark.parametrize("addr", ["foo@", "foo@@example.com", "fo o@example.com",
                                  "foo@bar@example.com", "@example.com"])
def test_bad_rcpt_syntax(ternd, smtp_raw, addr):
    t = ternd()
    c = smtp_raw(t.port())
    open_tx(c, [])
    c.cmd("RCPT TO:<%s>" % addr, 501, "5.1.3")


@pytest.mark.parametrize("addr", ["foo@", "foo@@client.test", "foo@bar@client.test",
                                  "@client.test"])
def test_bad_mail_syntax(ternd, smtp_raw, addr):
    t = ternd()
    c = smtp_raw(t.port())
    c.greeting()
    c.ehlo()
    c.cmd("MAIL FROM:<%s>" % addr, 501, "5.1.7")


def test_unknown_esmtp_parameter(ternd, smtp_raw):
    t = ternd()
    c = smtp_raw(t.port())
    c.greeting()
    c.ehlo()
    c.cmd("MAIL FROM:<alice@client.test> FOO=BAR", 555, "5.5.4")
    c.cmd("MAIL FROM:<alice@client.test>", 250)
    c.cmd("RCPT TO:<bob@example.com> FOO=BAR", 555, "5.5.4")


def test_text_line_limit(ternd, smtp_raw):
    t = ternd()
    c = smtp_raw(t.port())
    # 998 octets + CRLF = 1000: allowed (RFC 5321 4.5.3.1.6)
    open_tx(c)
    c.cmd("DATA", 354)
    ok_body = b"\r\n" + b"y" * 998 + b"\r\n"
    c.send(ok_body + b".\r\n")
    qid = assert_queued(c.reply())
    assert t.show_message(qid) == ok_body
    # 999 octets + CRLF: refused at end of data, nothing queued
    c.cmd("MAIL FROM:<alice@client.test>", 250)
    c.cmd("RCPT TO:<bob@example.com>", 250)
    c.cmd("DATA", 354)
    c.send(b"\r\n" + b"z" * 999 + b"\r\nmore\r\n.\r\n")
    c.expect(550, "5.6.0")
    # a much longer line too, and the session continues
    c.cmd("MAIL FROM:<alice@client.test>", 250)
    c.cmd("RCPT TO:<bob@example.com>", 250)
    c.cmd("DATA", 354)
    c.send(b"\r\n" + b"w" * 5000 + b"\r\n.\r\n")
    c.expect(550, "5.6.0")
    c.cmd("NOOP", 250)
    assert t.queue_ids() == {qid}


@pytest.mark.parametrize("body", [b"\r\na\nb\r\n", b"\r\na\rb\r\n", b"\r\nend\n"],
                         ids=["bare-lf", "bare-cr", "bare-lf-at-end"])
def test_bare_newline_reject(ternd, smtp_raw, body):
    t = ternd(extra_conf="bare-newline reject")
    c = smtp_raw(t.port())
    open_tx(c)
    c.cmd("DATA", 354)
    c.send(body + (b"" if body.endswith(b"\r\n") else b"\r\n") + b".\r\n")
    c.expect(550, "5.6.0")
    c.cmd("NOOP", 250)
    assert t.queue() == []


def test_bare_newline_is_default_reject(ternd, smtp_raw):
    t = ternd()
    c = smtp_raw(t.port())
    open_tx(c)
    c.cmd("DATA", 354)
    c.send(b"\r\na\nb\r\n.\r\n")
    c.expect(550, "5.6.0")
    assert t.queue() == []


def test_idle_timeout(ternd, smtp_raw):
    t = ternd(extra_conf="idle-timeout 3s")
    c = smtp_raw(t.port())
    c.greeting()
    c.ehlo()
    t0 = time.monotonic()
    c.expect(421, "4.4.2", timeout=10)
    waited = time.monotonic() - t0
    assert 2.0 <= waited <= 8.0, "421 after %.1fs with idle-timeout 3s" % waited
    assert c.wait_closed(5), "connection not closed after 421"


def test_idle_timeout_reset_by_activity(ternd, smtp_raw):
    t = ternd(extra_conf="idle-timeout 3s")
    c = smtp_raw(t.port())
    c.greeting()
    for _ in range(4):          # 4 x 1.5 s = 6 s of activity > 3 s
        time.sleep(1.5)
        c.cmd("NOOP", 250)


def test_idle_timeout_in_data(ternd, smtp_raw):
    t = ternd(extra_conf="idle-timeout 3s")
    c = smtp_raw(t.port())
    open_tx(c)
    c.cmd("DATA", 354)
    c.send(b"Subject: stalled\r\n\r\npartial")
    c.expect(421, "4.4.2", timeout=10)
    assert c.wait_closed(5)
    assert t.queue() == []


def test_session_timeout(ternd, smtp_raw):
    # a client that keeps sending NOOPs is still cut at session-timeout
    t = ternd(extra_conf="session-timeout 3s\nidle-timeout 60s")
    c = smtp_raw(t.port())
    c.greeting()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        c.send("NOOP\r\n")
        r = c.reply()
        if r.code != 250:
            assert r.code == 421, r
            break
        time.sleep(0.5)
    else:
        pytest.fail("session not closed after 10 s with session-timeout 3s")
    assert c.wait_closed(5)


def test_max_connections_per_ip(ternd, smtp_raw):
    t = ternd(extra_conf="max-connections-per-ip 2")
    a = smtp_raw(t.port())
    a.greeting()
    b = smtp_raw(t.port())
    b.greeting()
    c = smtp_raw(t.port())
    c.expect(421, "4.7.0")
    assert c.wait_closed(5)
    # when one leaves, a new one is accepted
    a.cmd("QUIT", 221)
    assert a.wait_closed(5)
    deadline = time.monotonic() + 5
    while True:
        d = smtp_raw(t.port())
        r = d.reply()
        if r.code == 220:
            break
        assert r.code == 421, r
        assert time.monotonic() < deadline, "slot not freed after QUIT"
        time.sleep(0.2)


def test_too_many_errors(ternd, smtp_raw):
    # smtpd/session.c smtpd_error(): every bad command is answered first and
    # then counted for the whole session; the max-errors'th one is followed
    # at once by 421 4.7.0, and the connection closes.
    t = ternd(extra_conf="max-errors 3")
    c = smtp_raw(t.port())
    c.greeting()
    c.ehlo()
    c.cmd("BOGUS0", 500, "5.5.1")                 # error 1
    c.cmd("NOOP", 250)                            # a good command resets nothing
    c.cmd("BOGUS1", 500, "5.5.1")                 # error 2: no 421 yet
    c.cmd("BOGUS2", 500, "5.5.1")                 # error 3: its own reply, then
    r = c.expect(421, "4.7.0")
    assert "Too many errors" in r.text, r
    assert c.wait_closed(5)
    assert not c.buf, "bytes after the 421: %r" % c.buf


def test_submission_requires_auth(ternd, smtp_raw):
    t = ternd(listeners=["relay", "submission"])
    c = smtp_raw(t.port("submission"))
    c.greeting()
    c.ehlo()
    c.cmd("MAIL FROM:<alice@client.test>", 530, "5.7.0")
    c.cmd("RCPT TO:<bob@example.com>", 503)
    assert t.queue() == []
    # the relay listener of the same daemon still accepts
    r = smtp_raw(t.port("relay"))
    r.greeting()
    r.ehlo()
    r.cmd("MAIL FROM:<alice@client.test>", 250)


def test_disk_full(ternd, smtp_raw, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    mnt = tempfile.mkdtemp(prefix="ternfull-", dir="/tmp")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt],
                       capture_output=True, text=True)
    if r.returncode != 0:
        os.rmdir(mnt)
        pytest.skip("cannot mount tmpfs: " + r.stderr)
    try:
        q = os.path.join(mnt, "q")
        os.mkdir(q)
        t = ternd(queue_dir=q, extra_conf="segment-size 4M\nmax-message-size 2M")
        c = smtp_raw(t.port())
        c.greeting()
        c.ehlo()
        body = b"\r\n" + (b"d" * 998 + b"\r\n") * 512            # 512 KB
        acked = []
        refused = None
        for i in range(80):                                      # 40 MB > 16 MB
            # the refusal comes after a DATA, or at MAIL once the queue
            # knows its disk is nearly full
            c.send(b"MAIL FROM:<alice@client.test>\r\n")
            r = c.reply(timeout=30)
            if r.code != 250:
                refused = r
                break
            c.cmd("RCPT TO:<bob@example.com>", 250)
            c.cmd("DATA", 354)
            c.send(body + b".\r\n")
            r = c.reply(timeout=30)
            if r.code == 250:
                acked.append(r.queue_id)
                continue
            refused = r
            break
        assert refused is not None, "80 x 512 KB all accepted on a 16 MB filesystem"
        assert (refused.code, refused.enh) == (452, "4.3.1"), refused
        assert t.running, "ternd died on disk full"
        c.cmd("NOOP", 250)
        ids = t.queue_ids()
        assert set(acked) <= ids, "acknowledged but missing: %r" % (set(acked) - ids)
        t.stop()
    finally:
        subprocess.run(["umount", "-l", mnt], capture_output=True)
        os.rmdir(mnt)
