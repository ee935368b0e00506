"""What tern's own DSNs say (RFC 3461, RFC 3464), end to end through the
real ternd, a test DNS and aiosmtpd sinks: RET=FULL returns the whole
failed message, ORCPT comes back decoded from xtext, Diagnostic-Code is
typed "smtp" exactly when a remote reply caused it (the expiry bounce
included), and a skipped MX host is logged without -v."""

import re

from conftest import RawSMTP
from fakemx import FakeMX
from test_delivery import SENDER, attempts, dsn_parts, env  # noqa: F401 (fixture)

BODY_LINE = "the body line that RET=FULL brings back"


def send(env, rcpt, mail_params="", rcpt_params="", subject="report"):
    """One message on the relay listener with ESMTP parameters."""
    c = RawSMTP(env.t.port(), timeout=30)
    c.greeting()
    c.ehlo()
    c.cmd(("MAIL FROM:<%s> %s" % (SENDER, mail_params)).strip(), 250)
    c.cmd(("RCPT TO:<%s> %s" % (rcpt, rcpt_params)).strip(), 250)
    c.cmd("DATA", 354)
    msg = ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s@client.test>\r\n"
           "\r\n%s\r\n..a dot-stuffed line\r\n" % (SENDER, rcpt, subject, subject, BODY_LINE))
    c.send(msg.encode() + b".\r\n")
    r = c.reply(timeout=30)
    assert r.code == 250 and r.queue_id, r
    c.cmd("QUIT", 221)
    c.close()
    return r.queue_id


def one_mx(env, ip="127.0.0.2"):
    env.zone_add({"example.test": {"MX": [(10, "mx1.example.test")]},
                  "mx1.example.test": {"A": [ip]}})
    return env.sink(ip)


def the_report(env, qid):
    (d,) = env.dsn_sink.wait_for(1, timeout=20)
    env.wait_gone([qid])
    return d


def test_ret_full_returns_the_whole_message(env):
    s = one_mx(env)
    s.rcpt_reply["nope@example.test"] = "550 5.1.1 no such user"
    env.start()
    qid = send(env, "nope@example.test", mail_params="RET=FULL", subject="full")
    d = the_report(env, qid)
    msg, _, rc, _ = dsn_parts(d.data)
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts][-1] == "message/rfc822"
    raw = d.data.decode()
    # the original as it was queued (tern's Received: on top), unstuffed
    assert BODY_LINE + "\r\n.a dot-stuffed line\r\n" in raw, raw
    assert "Subject: full" in raw
    assert rc[0]["diagnostic-code"].strip() == "smtp; 550 5.1.1 no such user", rc


def test_default_returns_the_header_only(env):
    s = one_mx(env)
    s.rcpt_reply["nope@example.test"] = "550 5.1.1 no such user"
    env.start()
    qid = send(env, "nope@example.test", subject="hdrs")
    d = the_report(env, qid)
    msg, _, _, htext = dsn_parts(d.data)
    assert msg.get_payload()[-1].get_content_type() == "text/rfc822-headers"
    assert "Subject: hdrs" in htext
    assert BODY_LINE not in d.data.decode()


def test_orcpt_is_decoded_in_the_report(env):
    s = one_mx(env)
    s.rcpt_reply["nope@example.test"] = "550 5.1.1 no such user"
    env.start()
    qid = send(env, "nope@example.test", rcpt_params="NOTIFY=FAILURE ORCPT=rfc822;Nope+2Bx@Example.test")
    d = the_report(env, qid)
    _, _, rc, _ = dsn_parts(d.data)
    assert rc[0]["original-recipient"].strip() == "rfc822; Nope+x@Example.test", rc


def test_expiry_after_a_remote_450_is_typed_smtp(env):
    """The expiry bounce reports the remote 450 as "smtp;", as the delay
    notice did."""
    s = one_mx(env)
    s.rcpt_reply["slow@example.test"] = "450 4.2.1 mailbox busy"
    t = env.start(extra="max-queue-lifetime 4s")
    qid = send(env, "slow@example.test", subject="expiring")
    d = the_report(env, qid)
    _, _, rc, _ = dsn_parts(d.data)
    assert rc[0]["action"].strip() == "failed", rc
    assert rc[0]["status"].strip() == "4.4.7", rc
    assert rc[0]["diagnostic-code"].strip() == "smtp; 450 4.2.1 mailbox busy", rc
    assert attempts(t.log(), qid)[-1]["status"] == "expired"


def test_own_reason_is_not_the_remote_words(env):
    """The peer offers SIZE 100: tern does not send a bigger message, and
    reports that in its own name (X-tern), not as something the host said."""
    env.zone_add({"example.test": {"MX": [(10, "mx1.example.test")]},
                  "mx1.example.test": {"A": ["127.0.0.2"]}})
    mx = FakeMX("127.0.0.2", env.port)
    mx.size = 100
    mx.start()
    try:
        env.start()
        qid = send(env, "big@example.test", subject="too big for the peer")
        d = the_report(env, qid)
    finally:
        mx.stop()
    assert mx.messages == 0
    msg, _, rc, _ = dsn_parts(d.data)
    assert rc[0]["status"].strip() == "5.3.4", rc
    diag = " ".join(rc[0]["diagnostic-code"].split())
    assert diag.startswith("X-tern; message size "), rc
    assert "exceeds size limit 100" in diag, rc
    text = " ".join(msg.get_payload()[0].get_payload().split())
    assert "said:" not in text, text
    assert "(host mx1.example.test[127.0.0.2]" in text, text


def test_skipped_mx_is_logged_at_info(env):
    """MX 10 refuses the connection: the delivery goes to MX 20, and the
    skip is in the log without -v."""
    env.zone_add({"example.test": {"MX": [(10, "mx1.example.test"), (20, "mx2.example.test")]},
                  "mx1.example.test": {"A": ["127.0.0.4"]},     # nothing listens
                  "mx2.example.test": {"A": ["127.0.0.3"]}})
    s2 = env.sink("127.0.0.3")
    t = env.start()
    assert not t.verbose
    qid = send(env, "bob@example.test")
    s2.wait_for(1)
    env.wait_gone([qid])
    assert re.search(r"id=%s next hop skipped: status=4\.4\.1 connect to "
                     r"mx1\.example\.test\[127\.0\.0\.4\]:\d+ failed" % qid, t.log(), re.I), t.log()
