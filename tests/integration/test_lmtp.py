"""LMTP delivery (RFC 2033) into a real, private Dovecot, read back over IMAP.

An application submits on a 587-style listener (STARTTLS, then AUTH) as
alice@example.com; `route example.com lmtp:...` hands the mail to Dovecot's
LMTP server (TCP or unix socket); the test logs in over IMAP (imaplib) and
compares bytes. Bounces go back to alice's own Dovecot INBOX over the same
route, so the whole DSN path is checked end to end too.
"""
import json
import os
import re
import smtplib
import ssl
import time

import pytest

from conftest import IN_CI
from dovecot import DOVECOT, Dovecot
from test_auth import PASSWORD, USER, start
from test_delivery import attempts, dsn_parts

BASE = "command-timeout 5s\nconnect-timeout 2s\ndelay-warning 0\n"

# A message with the bytes that dot-stuffing and line handling could break;
# it has Date and Message-ID, so the submission fix-ups leave it alone.
MSG = (b"From: Alice <alice@example.com>\r\n"
       b"To: bob@example.com\r\n"
       b"Subject: over LMTP\r\n"
       b"Date: Sun, 06 Dec 2026 04:00:00 +0000\r\n"
       b"Message-ID: <lmtp-test@client.test>\r\n"
       b"\r\n"
       b"first line\r\n"
       b".a line with a leading dot\r\n"
       b"..two dots\r\n"
       b".\r\n"
       b"tab\there, trailing space \r\n"
       + b"x" * 900 + b"\r\n"
       b"last line\r\n")


@pytest.fixture
def dovecot():
    if not os.access(DOVECOT, os.X_OK):
        msg = "dovecot not installed (Debian dovecot-lmtpd dovecot-imapd)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    made = []

    def make(users=("alice", "bob", "carol"), start=True, **kw):
        d = Dovecot(users, **kw)
        made.append(d)
        return d.start() if start else d

    yield make
    for d in made:
        d.cleanup()


def submit(t, certs, rcpts, msg=MSG):
    """STARTTLS + AUTH on the submission listener; returns the queue id."""
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    ctx.check_hostname = False
    with smtplib.SMTP(*t.addr("sub"), timeout=10) as s:
        s.starttls(context=ctx)
        s.login(USER, PASSWORD)
        s.mail(USER)
        for r in rcpts:
            code, resp = s.rcpt(r)
            assert code == 250, (r, code, resp)
        code, resp = s.data(msg)
        assert code == 250, resp
        return re.search(rb"queued as ([0-9a-f]{16})", resp).group(1).decode()


def wait_status(t, qid, to, status, timeout=15):
    deadline = time.monotonic() + timeout
    while True:
        a = [x for x in attempts(t.log(), qid, to) if x["status"] == status]
        if a:
            return a[-1]
        if time.monotonic() > deadline:
            pytest.fail("no status=%s for %s within %ds; log:\n%s"
                        % (status, to, timeout, t.log()[-4000:]))
        time.sleep(0.05)


def wait_gone(t, qid, timeout=15):
    deadline = time.monotonic() + timeout
    while qid.upper() in {q.upper() for q in t.queue_ids()}:
        if time.monotonic() > deadline:
            pytest.fail("%s still queued: %r\n%s" % (qid, t.queue(), t.log()[-4000:]))
        time.sleep(0.1)


def check_copy(raw, msg=MSG):
    """Dovecot's copy = its own lines (Return-Path, Received ... with LMTP)
    + tern's Received + the submitted message, byte for byte."""
    assert raw.endswith(msg), raw[:600]
    head = raw[:-len(msg)]
    assert head.startswith(b"Return-Path: <%s>\r\n" % USER.encode()), head
    assert re.search(rb"Received: from mx\.test.*?by \S+ with LMTP", head, re.S), head
    # tern's own Received: header is the last field before the message
    assert re.search(rb"\r\nReceived: from [^\r]*\r\n(?:\t[^\r]*\r\n)*?\tby mx\.test"
                     rb"(?:[^\r]*\r\n(?:\t[^\r]*\r\n)*)$", head), head


def lmtp_ternd(ternd, certs, target, retry="1s 2s"):
    return start(ternd, certs, extra=BASE + "retry %s\nroute example.com %s\n"
                 % (retry, target))


def retry_now(t, qid, timeout=10):
    """`ternctl retry ID`, again while the scheduler still has the attempt
    that just failed in flight."""
    deadline = time.monotonic() + timeout
    while True:
        r = t.ternctl("retry", qid)
        if r.returncode == 0:
            return
        assert b"in flight" in r.stderr and time.monotonic() < deadline, r.stderr
        time.sleep(0.1)


def test_lmtp_tcp_delivers_byte_exact_and_bounces_unknown(ternd, certs, dovecot):
    d = dovecot()
    t = lmtp_ternd(ternd, certs, "lmtp:[127.0.0.1]:%d" % d.lmtp_port)
    qid = submit(t, certs, ["bob@example.com", "nobody@example.com", "carol@example.com"])
    relay = "lmtp:127.0.0.1[127.0.0.1]:%d" % d.lmtp_port
    for who in ("bob", "carol"):
        (raw,) = d.wait_count(who, 1)
        check_copy(raw)
        a = wait_status(t, qid, who + "@example.com", "sent")
        assert a["relay"] == relay and a["dsn"].startswith("2."), a
    a = wait_status(t, qid, "nobody@example.com", "bounced")
    assert a["relay"] == relay and a["dsn"] == "5.1.1", a
    # the bounce went back to the sender, alice, through the same route
    (dsn,) = d.wait_count("alice", 1)
    msg, per_msg, per_rcpt, htext = dsn_parts(dsn.split(b"\r\n", 1)[1])
    assert [r["final-recipient"].replace(" ", "").lower() for r in per_rcpt] == \
        ["rfc822;nobody@example.com"], per_rcpt
    assert per_rcpt[0]["status"].strip() == "5.1.1", per_rcpt
    assert per_rcpt[0]["action"].strip().lower() == "failed", per_rcpt
    assert "Subject: over LMTP" in htext
    assert "User doesn't exist" in str(per_rcpt[0].get("diagnostic-code", "")), per_rcpt
    wait_gone(t, qid)
    # ternctl-visible history stays with the log; nothing was delivered twice
    assert len(d.fetch_all("bob")) == 1 and len(d.fetch_all("carol")) == 1


def test_lmtp_unix_socket(ternd, certs, dovecot):
    d = dovecot()
    t = lmtp_ternd(ternd, certs, "lmtp:unix:%s" % d.lmtp_socket)
    qid = submit(t, certs, ["bob@example.com"])
    (raw,) = d.wait_count("bob", 1)
    check_copy(raw)
    a = wait_status(t, qid, "bob@example.com", "sent")
    assert a["relay"] == "lmtp:unix:%s" % d.lmtp_socket, a
    assert "Connect from local" in d.log()


def test_lmtp_reuses_one_connection(ternd, certs, dovecot):
    """Several messages in a row: one LMTP connection (RSET-free reuse after a
    completed transaction, as for SMTP), every message delivered once."""
    d = dovecot()
    t = lmtp_ternd(ternd, certs, "lmtp:[127.0.0.1]:%d" % d.lmtp_port)
    n = 5
    qids = []
    for i in range(n):
        qids.append(submit(t, certs, ["bob@example.com"],
                           MSG.replace(b"over LMTP", b"over LMTP %d" % i)))
        wait_status(t, qids[-1], "bob@example.com", "sent")
    msgs = d.wait_count("bob", n)
    assert len(msgs) == n
    assert d.log().count("Connect from 127.0.0.1") == 1, d.log()


def test_lmtp_per_recipient_reply_after_data(ternd, certs, dovecot):
    """carol is over quota: Dovecot takes her RCPT and refuses her at the end
    of data (4.2.2, quota_full_tempfail) while bob's copy is saved. Only carol
    is deferred and retried; once her quota is lifted she gets it, and bob
    still has exactly one copy."""
    d = dovecot(quota={"carol": "1"}, quota_tempfail=True)
    # retries every 2s: Dovecot may still apply the old quota to the first
    # attempt after the change
    t = lmtp_ternd(ternd, certs, "lmtp:[127.0.0.1]:%d" % d.lmtp_port)
    big = MSG.replace(b"last line", b"y" * 900 + b"\r\n" + b"z" * 900)
    qid = submit(t, certs, ["bob@example.com", "carol@example.com"], big)
    a = wait_status(t, qid, "carol@example.com", "deferred")
    assert a["dsn"] == "4.2.2", a
    wait_status(t, qid, "bob@example.com", "sent")
    # `ternctl show`: only carol is pending; the history has both replies
    r = t.ternctl("show", qid, "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)["message"]
    pending = [x["address"] for x in m["recipients"] if x["state"] == "pending"]
    assert pending == ["carol@example.com"], m
    hist = {(h["recipient"], h["result"], h["status"], h["relay"]) for h in m["history"]}
    relay = "lmtp:127.0.0.1[127.0.0.1]:%d" % d.lmtp_port
    assert ("bob@example.com", "sent", "2.0.0", relay) in hist, m["history"]
    assert ("carol@example.com", "deferred", "4.2.2", relay) in hist, m["history"]
    assert d.fetch_all("carol") == []
    # lift the quota (passwd-file is read again on change), retry now
    users = os.path.join(d.dir, "users")
    with open(users) as f:
        text = f.read()
    with open(users, "w") as f:
        f.write(text.replace("storage=1\n", "storage=100M\n"))
    retry_now(t, qid)
    (raw,) = d.wait_count("carol", 1)
    check_copy(raw, big)
    wait_gone(t, qid)
    assert len(d.fetch_all("bob")) == 1


def test_lmtp_permanent_reply_after_data_bounces_only_that_recipient(ternd, certs, dovecot):
    d = dovecot(quota={"carol": "1"})
    t = lmtp_ternd(ternd, certs, "lmtp:[127.0.0.1]:%d" % d.lmtp_port)
    big = MSG.replace(b"last line", (b"y" * 900 + b"\r\n") * 3)
    qid = submit(t, certs, ["carol@example.com", "bob@example.com"], big)
    a = wait_status(t, qid, "carol@example.com", "bounced")
    assert a["dsn"] == "5.2.2", a
    wait_status(t, qid, "bob@example.com", "sent")
    (raw,) = d.wait_count("bob", 1)
    check_copy(raw, big)
    (dsn,) = d.wait_count("alice", 1)
    _, _, per_rcpt, _ = dsn_parts(dsn.split(b"\r\n", 1)[1])
    assert [r["final-recipient"].replace(" ", "").lower() for r in per_rcpt] == \
        ["rfc822;carol@example.com"], per_rcpt
    assert per_rcpt[0]["status"].strip() == "5.2.2", per_rcpt
    wait_gone(t, qid)


def test_lmtp_server_down_defers_then_retry_delivers_once(ternd, certs, dovecot):
    d = dovecot(start=False)
    # the next scheduled attempt is an hour away: only `ternctl retry` delivers
    t = lmtp_ternd(ternd, certs, "lmtp:unix:%s" % d.lmtp_socket, retry="1h")
    qid = submit(t, certs, ["bob@example.com"])
    a = wait_status(t, qid, "bob@example.com", "deferred")
    assert a["relay"] == "lmtp:unix:%s" % d.lmtp_socket and a["dsn"].startswith("4."), a
    assert qid.upper() in {q.upper() for q in t.queue_ids()}
    d.start()
    retry_now(t, qid)
    wait_status(t, qid, "bob@example.com", "sent")
    wait_gone(t, qid)
    (raw,) = d.wait_count("bob", 1)
    check_copy(raw)
    # later attempts (none are due) cannot add a copy: the queue is empty
    assert len(d.fetch_all("bob")) == 1 and d.fetch_all("alice") == []


def test_lmtp_route_to_own_listener_is_a_loop(ternd, certs):
    """The own-listener check holds for LMTP over TCP: a route that names one
    of tern's own listeners bounces (5.4.6) instead of talking to itself."""
    t = start(ternd, certs, extra=BASE + "retry 1s 2s\n")
    t.stop()
    t.conf_path.write_text(t.conf_path.read_text() +
                           "route example.com lmtp:[127.0.0.1]:%d\n" % t.port("relay"))
    t.start()
    qid = submit(t, certs, ["bob@example.com"])
    a = wait_status(t, qid, "bob@example.com", "bounced")
    assert a["dsn"] == "5.4.6", a
    assert "loops back to myself" in t.log()
