"""The DSN extension (RFC 3461) end to end: tern offers DSN, passes RET,
ENVID, NOTIFY and ORCPT on to a next hop that offers it too, and sends the
sender a "relayed" notice when NOTIFY=SUCCESS meets a hop that does not.

One ternd routes everything (`route * smtp:[127.0.0.1]:P`) to an aiosmtpd
sink; the notices go to the same sink (MAIL FROM:<>)."""

import email
import email.policy
import re
import smtplib
import time

import pytest

QID = re.compile(r"queued as ([0-9a-fA-F]{16})")
BODY = b"From: alice@sender.test\r\nSubject: dsn ext\r\n\r\nhello\r\n"


def send(t, rcpts, mail_options=(), rcpt_options=()):
    with smtplib.SMTP(*t.addr(), timeout=10) as s:
        s.ehlo("client.test")
        assert s.has_extn("dsn")
        code, resp = s.mail("alice@sender.test", list(mail_options))
        assert code == 250, resp
        for r, opts in zip(rcpts, rcpt_options):
            code, resp = s.rcpt(r, list(opts))
            assert code == 250, resp
        code, resp = s.data(BODY)
        assert code == 250, resp
        return QID.search(resp.decode()).group(1).lower()


@pytest.fixture
def world(ternd, sink):
    s = sink()
    t = ternd(default_route="smtp:[127.0.0.1]:%d" % s.port, trusted="127.0.0.0/8")
    return t, s


def reports(sink):
    return [m for m in sink.messages if m.mail_from in ("", "<>")]


def assert_no_notice(t, s, qid, timeout=10):
    """No notice about qid, ever: decided without a grace sleep. The
    scheduler removes a message only after the notice it owes (if any) has
    been committed (queue/sched/sched.c: sched_finalize runs from the DSN's commit
    reply), and a queued notice leaves the queue only after the sink took it
    (the sink records a message before its 250). So once qid has left the
    queue, a notice is either still queued or already at the sink."""
    deadline = time.time() + timeout
    while qid in t.queue_ids() and time.time() < deadline:
        time.sleep(0.05)
    left = t.queue()
    assert qid not in [m["id"] for m in left], "message still queued after %ds" % timeout
    assert left == [], "a notice was queued: %r" % left
    assert reports(s) == []
    log = t.log()
    assert re.search(r"id=%s removed" % qid, log, re.I), log[-2000:]
    assert "relayed notice sent" not in log, log[-2000:]


def test_parameters_go_on_to_a_hop_that_offers_dsn(world):
    t, s = world
    s.dsn = True
    qid = send(t, ["bob@example.com", "carol@example.com"],
               mail_options=["RET=HDRS", "ENVID=QQ+2B314"],
               rcpt_options=[["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob+40Example.com"],
                             []])
    (m,) = s.wait_for(1)
    assert m.rcpt_tos == ["bob@example.com", "carol@example.com"]
    assert m.dsn_mail == ["RET=HDRS", "ENVID=QQ+2B314"]
    assert m.dsn_rcpt == [["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;Bob+40Example.com"],
                          []]
    # the hop took over NOTIFY=SUCCESS: no notice from tern
    assert_no_notice(t, s, qid)


def test_each_notify_form_is_passed_on(world):
    t, s = world
    s.dsn = True
    send(t, ["a@example.com", "b@example.com", "c@example.com"],
         mail_options=["RET=FULL"],
         rcpt_options=[["NOTIFY=NEVER"], ["NOTIFY=DELAY,FAILURE"], ["NOTIFY=FAILURE"]])
    (m,) = s.wait_for(1)
    assert m.dsn_mail == ["RET=FULL"]
    # tern writes the keywords in one order: SUCCESS, FAILURE, DELAY
    assert m.dsn_rcpt == [["NOTIFY=NEVER"], ["NOTIFY=FAILURE,DELAY"], ["NOTIFY=FAILURE"]]


def test_relayed_notice_when_the_hop_has_no_dsn(world):
    t, s = world
    assert s.dsn is False
    qid = send(t, ["bob@example.com", "carol@example.com"],
               mail_options=["ENVID=QQ+2B314"],
               rcpt_options=[["NOTIFY=SUCCESS", "ORCPT=rfc822;Bob+40Example.com"],
                             ["NOTIFY=FAILURE"]])
    msgs = s.wait_for(2)
    orig = [m for m in msgs if m.mail_from == "alice@sender.test"]
    assert len(orig) == 1 and orig[0].rcpt_tos == ["bob@example.com", "carol@example.com"]
    # no DSN parameter went to a hop that did not offer DSN
    assert not any(o.upper().startswith(("ENVID", "RET")) for o in orig[0].mail_options)
    (rep,) = reports(s)
    assert rep.rcpt_tos == ["alice@sender.test"]
    msg = email.message_from_bytes(rep.data, policy=email.policy.compat32)
    assert msg["Subject"] == "Relayed Mail (no delivery report to follow)"
    assert msg.get_content_type() == "multipart/report"
    status = [p for p in msg.walk() if p.get_content_type() == "message/delivery-status"]
    assert status, rep.data
    text = rep.data.decode()
    assert "Original-Envelope-Id: QQ+2B314" in text
    assert text.count("Action: relayed") == 1
    assert "Final-Recipient: rfc822; bob@example.com" in text
    assert "carol@example.com" not in text.split("Content-Type: message/delivery-status")[1]
    assert "Status: 2." in text
    assert re.search(r"Remote-MTA: dns; 127\.0\.0\.1\[127\.0\.0\.1\]:%d" % s.port, text)
    # the message is done; the notice is logged with the DSN's id
    deadline = time.time() + 10
    while qid in [m["id"] for m in t.queue()] and time.time() < deadline:
        time.sleep(0.1)
    assert qid not in [m["id"] for m in t.queue()]
    assert re.search(r"id=%s relayed notice sent nrcpt=1 dsn_id=[0-9A-Fa-f]{16}" % qid,
                     t.log(), re.I), t.log()[-2000:]


def test_no_notice_without_notify_success(world):
    t, s = world
    qid = send(t, ["bob@example.com"], rcpt_options=[["NOTIFY=FAILURE,DELAY"]])
    s.wait_for(1)
    assert_no_notice(t, s, qid)
    assert len(s.messages) == 1
