"""SMTPUTF8 (RFC 6531) through the real ternd: UTF-8 mailboxes are taken
with the SMTPUTF8 parameter (refused 553 5.6.7 without it, 501 5.6.7 when
the UTF-8 is malformed); a domain written with U-labels is the same domain
as its A-label form (relay-domains, DNS, delivery); a message that needs
SMTPUTF8 goes only to a next hop that offers it, else bounces 5.6.7;
ASCII mail with the parameter is unaffected."""

import email
import email.policy
import json
import re

from conftest import RawSMTP
from fakemx import FakeMX
from test_delivery import SENDER, env  # noqa: F401 (fixture)

ULABEL = "exämple.de"
ALABEL = "xn--exmple-cua.de"


def open_session(env):
    c = RawSMTP(env.t.port(), timeout=30)
    c.greeting()
    assert "SMTPUTF8" in c.ehlo()
    return c


def send(env, rcpt, sender=SENDER, utf8=True, subject="utf8", body="hello\r\n"):
    c = open_session(env)
    c.send(("MAIL FROM:<%s>%s\r\n" % (sender, " SMTPUTF8" if utf8 else "")).encode())
    c.expect(250)
    c.send(("RCPT TO:<%s>\r\n" % rcpt).encode())
    c.expect(250)
    c.cmd("DATA", 354)
    msg = "From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n\r\n%s" % (sender, rcpt, subject, body)
    c.send(msg.encode() + b".\r\n")
    r = c.expect(250)
    c.cmd("QUIT", 221)
    return r.queue_id


def mx_for(env, domain, eightbit=True, utf8=True):
    env.zone_add({domain: {"MX": [(10, "mx1." + domain)]},
                  "mx1." + domain: {"A": ["127.0.0.2"]}})
    mx = FakeMX("127.0.0.2", env.port)
    mx.smtputf8 = utf8
    mx.start()
    return mx


def test_refusals(env):
    env.start(relay_domains="example.com")
    c = open_session(env)
    c.send("MAIL FROM:<josé@example.com>\r\n".encode())
    c.expect(553, "5.6.7")
    c.send(b"MAIL FROM:<jos\xc3@example.com> SMTPUTF8\r\n")        # cut UTF-8
    c.expect(501, "5.6.7")
    c.send(b"MAIL FROM:<jos\xc0\xa9@example.com> SMTPUTF8\r\n")    # overlong
    c.expect(501, "5.6.7")
    c.cmd("MAIL FROM:<a@client.test>", 250)
    c.send("RCPT TO:<josé@example.com>\r\n".encode())              # no SMTPUTF8
    c.expect(553, "5.6.7")
    c.cmd("RSET", 250)
    c.cmd("MAIL FROM:<a@client.test> SMTPUTF8", 250)
    c.send("RCPT TO:<a@exa\u2044mple.com>\r\n".encode())            # not IDNA2008
    c.expect(553, "5.1.3")
    c.cmd("QUIT", 221)


def test_u_label_and_a_label_are_one_domain(env):
    """relay-domains names the A-label form; the U-label form of the same
    domain is taken too, and both are delivered through its A-label MX."""
    mx = mx_for(env, ALABEL)
    env.start(relay_domains=ALABEL, trusted=None)
    try:
        q1 = send(env, "josé@" + ULABEL)
        q2 = send(env, "bob@" + ALABEL, utf8=False)
        mx.wait_messages(2, timeout=20)
        env.wait_gone([q1, q2])
    finally:
        mx.stop()
    assert sorted(mx.rcpts) == sorted(["josé@" + ALABEL, "bob@" + ALABEL])
    assert (ALABEL + ".", "MX") in [(n.lower(), t) for n, t, _ in env.dns.queries] or \
        any(n.lower().rstrip(".") == ALABEL for n, t, _ in env.dns.queries)
    c = open_session(env)                   # and a foreign U-label is no relay
    c.cmd("MAIL FROM:<a@client.test> SMTPUTF8", 250)
    c.send("RCPT TO:<a@bücher.example>\r\n".encode())
    c.expect(554, "5.7.1")


def test_needs_smtputf8_goes_only_to_a_hop_that_offers_it(env):
    mx = mx_for(env, "example.test", utf8=True)
    env.start()
    try:
        qid = send(env, "josé@example.test", subject="Grüße")
        mx.wait_messages(1, timeout=20)
        env.wait_gone([qid])
    finally:
        mx.stop()
    mail, data = mx.data[0]
    assert mail.endswith(b" SMTPUTF8"), mail
    assert "josé@example.test" in mx.rcpts
    assert "Subject: Grüße".encode() in data


def test_without_smtputf8_at_the_hop_it_bounces_5_6_7(env):
    mx = mx_for(env, "example.test", utf8=False)
    d = env.dsn_sink
    env.start()
    try:
        qid = send(env, "josé@example.test", subject="no downgrade")
        (dsn,) = d.wait_for(1, timeout=20)
        env.wait_gone([qid])
    finally:
        mx.stop()
    assert mx.messages == 0
    # RFC 6533: the report on SMTPUTF8 mail uses the global types
    msg = email.message_from_bytes(dsn.data, policy=email.policy.compat32)
    assert msg.get_param("report-type") == "global-delivery-status", msg["Content-Type"]
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == \
        ["text/plain", "message/global-delivery-status", "message/global-headers"]
    report = dsn.data.decode("utf-8")
    assert "Final-Recipient: utf-8; josé@example.test\r\n" in report, report
    assert "Status: 5.6.7\r\n" in report
    assert "<josé@example.test>" in parts[0].get_payload(decode=True).decode("utf-8")
    assert re.search(r"id=%s .*status=bounced" % qid, env.t.log(), re.I)


def test_an_mx_without_smtputf8_is_skipped_for_the_next(env):
    """The preferred MX lacks SMTPUTF8: the next MX, which offers it, gets
    the message (RFC 6531 3.4 forbids sending it to the first, not trying
    the others), also when the first MX's connection is reused from the
    cache after an ASCII message."""
    env.zone_add({"example.test": {"MX": [(10, "mx1.example.test"),
                                          (20, "mx2.example.test")]},
                  "mx1.example.test": {"A": ["127.0.0.2"]},
                  "mx2.example.test": {"A": ["127.0.0.3"]}})
    mx1 = FakeMX("127.0.0.2", env.port)
    mx2 = FakeMX("127.0.0.3", env.port)
    mx2.smtputf8 = True
    mx1.start()
    mx2.start()
    env.start()
    try:
        q1 = send(env, "bob@example.test", utf8=False, subject="ascii first")
        mx1.wait_messages(1, timeout=20)
        env.wait_gone([q1])
        q2 = send(env, "josé@example.test", subject="Grüße")
        mx2.wait_messages(1, timeout=20)
        env.wait_gone([q2])
    finally:
        mx1.stop()
        mx2.stop()
    assert mx1.messages == 1 and mx2.messages == 1
    assert "josé@example.test" in mx2.rcpts
    assert mx2.data[0][0].endswith(b" SMTPUTF8")
    log = env.t.log()
    assert re.search(r"id=%s next hop skipped: status=5\.6\.7 .*SMTPUTF8" % q2, log), log
    assert re.search(r"id=%s .*status=sent" % q2, log), log


def test_show_says_smtputf8(env):
    env.zone_add({"example.com": {"MX": [(10, "mx1.example.com")]},
                  "mx1.example.com": {"A": ["127.0.0.4"]}})   # nothing listens
    env.start(relay_domains="example.com", trusted=None)
    qid = send(env, "josé@example.com")
    r = env.t.ternctl("show", qid, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    m = doc.get("message", doc)
    assert m["smtputf8"] is True, m
    assert m["8bitmime"] is True, m         # the UTF-8 To: field is 8-bit
    assert [x["address"] for x in m["recipients"]] == ["josé@example.com"]
    out = env.t.ternctl("show", qid).stdout.decode()
    assert "smtputf8: yes" in out, out


def test_ascii_mail_with_the_parameter_is_unaffected(env):
    mx = mx_for(env, "example.test", utf8=False)
    env.start()
    try:
        qid = send(env, "bob@example.test", subject="plain")
        mx.wait_messages(1, timeout=20)
        env.wait_gone([qid])
    finally:
        mx.stop()
    mail, _ = mx.data[0]
    assert b"SMTPUTF8" not in mail
