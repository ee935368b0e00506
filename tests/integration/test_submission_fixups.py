"""Submission fix-ups (RFC 6409 8.1, 8.3): on a submission listener, tern adds
Date: and Message-ID: when the client left them out, at the end of the header
section; it never touches a message that has them, nor mail on the relay
listener."""
import email
import email.policy
import re
import smtplib
import ssl

from conftest import strip_received
from test_auth import PASSWORD, USER, start


def submit(t, certs, msg, name="sub"):
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    ctx.check_hostname = False
    with smtplib.SMTP(*t.addr(name), timeout=10) as s:
        s.starttls(context=ctx)
        s.login(USER, PASSWORD)
        s.mail(USER)
        s.rcpt("someone@example.com")
        code, resp = s.data(msg)
        assert code == 250, resp
        return re.search(rb"queued as ([0-9a-f]{16})", resp).group(1).decode()


def test_date_and_message_id_added(ternd, certs):
    t = start(ternd, certs)
    qid = submit(t, certs, b"From: alice\r\nSubject: no date\r\n\r\nbody line\r\n")
    body = strip_received(t.show_body(qid))
    head, sep, rest = body.partition(b"\r\n\r\n")
    assert sep and rest == b"body line\r\n", body
    lines = head.split(b"\r\n")
    assert lines[:2] == [b"From: alice", b"Subject: no date"], lines
    m = email.message_from_bytes(body, policy=email.policy.default)
    assert m["Date"] is not None and m["Date"].datetime is not None, head
    assert re.fullmatch(r"<%s\.[0-9a-f]{8}@mx\.test>" % qid, str(m["Message-ID"])), head


def test_existing_fields_kept_and_not_doubled(ternd, certs):
    t = start(ternd, certs)
    msg = (b"Date: Sat, 21 Nov 2026 10:00:00 +0000\r\nmessage-id: <given@client>\r\n"
           b"Subject: has both\r\n\r\nbody\r\n")
    qid = submit(t, certs, msg)
    assert strip_received(t.show_body(qid)) == msg
    # only one of them present: only the other is added
    qid = submit(t, certs, b"Message-ID: <m@c>\r\n\r\nx\r\n")
    body = strip_received(t.show_body(qid))
    assert body.count(b"Message-ID:") == 1 and body.count(b"\r\nDate: ") == 1, body


def test_header_only_message_gets_fields_at_the_end(ternd, certs):
    t = start(ternd, certs)
    qid = submit(t, certs, b"Subject: no body at all\r\n")
    body = strip_received(t.show_body(qid))
    assert body.startswith(b"Subject: no body at all\r\nDate: "), body
    assert b"\r\nMessage-ID: <" in body and body.endswith(b">\r\n"), body


def test_relay_listener_untouched(ternd, certs):
    t = ternd(relay_domains="example.com")
    msg = b"Subject: relayed\r\n\r\nbody\r\n"
    with smtplib.SMTP(*t.addr("relay"), timeout=10) as s:
        s.sendmail("a@sender.test", ["x@example.com"], msg)
    [m] = t.queue()
    assert strip_received(t.show_body(m["id"])) == msg
