"""8BITMIME both ways (RFC 6152 3): an 8-bit message for a next hop that
does not offer 8BITMIME is converted to 7 bits (quoted-printable text,
base64 binary, structure kept), and what cannot be converted bounces with
5.6.3 unless the operator says "8bit-unconvertible send". The real ternd
delivers to a FakeMX on loopback that offers 8BITMIME or not."""

import email
import email.policy
import re
import time

from conftest import RawSMTP
from fakemx import FakeMX
from test_delivery import SENDER, dsn_parts, env  # noqa: F401 (fixture)

TEXT = "Grüße aus Köln = viel Spaß  \r\n.leading dot\r\n".encode()
_RAW = bytes(b for b in range(256) if b not in (10, 13)) * 2
BINARY = b"\r\n".join(_RAW[i:i + 64] for i in range(0, len(_RAW), 64))

MULTI = (b"From: <" + SENDER.encode() + b">\r\nTo: <bob@example.test>\r\n"
         b"Subject: eight bits\r\nMIME-Version: 1.0\r\n"
         b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n"
         b"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n"
         b"Content-Transfer-Encoding: 8bit\r\n\r\n" + TEXT +
         b"\r\n--b1\r\nContent-Type: text/plain\r\n\r\nseven bits\r\n"
         b"--b1\r\nContent-Type: application/octet-stream\r\n\r\n" +
         BINARY +
         b"\r\n--b1--\r\n")

SIGNED = (b"From: <" + SENDER.encode() + b">\r\nSubject: signed\r\nMIME-Version: 1.0\r\n"
          b"Content-Type: multipart/signed; protocol=\"application/pgp-signature\";"
          b" boundary=\"s\"\r\n\r\n--s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
          b"sign\xc3\xa9d\r\n--s\r\nContent-Type: application/pgp-signature\r\n\r\nSIG\r\n--s--\r\n")


def send(env, msg, body8=True):
    c = RawSMTP(env.t.port(), timeout=30)
    c.greeting()
    c.ehlo()
    c.cmd("MAIL FROM:<%s>%s" % (SENDER, " BODY=8BITMIME" if body8 else ""), 250)
    c.cmd("RCPT TO:<bob@example.test>", 250)
    c.cmd("DATA", 354)
    stuffed = b"\r\n".join(b"." + l if l.startswith(b".") else l for l in msg.split(b"\r\n"))
    c.send(stuffed + b".\r\n")
    r = c.reply(timeout=30)
    assert r.code == 250 and r.queue_id, r
    c.cmd("QUIT", 221)
    c.close()
    return r.queue_id


def world(env, eightbit, extra=""):
    env.zone_add({"example.test": {"MX": [(10, "mx1.example.test")]},
                  "mx1.example.test": {"A": ["127.0.0.2"]}})
    mx = FakeMX("127.0.0.2", env.port)
    mx.eightbit = eightbit
    mx.start()
    env.start(extra=extra)
    return mx


def delivered(env, mx, msg):
    """Send msg, wait until mx has it and the queue let it go; the peer's
    (MAIL line, message bytes) and the queue id."""
    try:
        qid = send(env, msg)
        mx.wait_messages(1, timeout=15)
        env.wait_gone([qid])
    finally:
        mx.stop()
    return mx.data[0] + (qid,)


def received_body(data):
    """The message as the peer got it, after ternd's Received: field."""
    assert data.startswith(b"Received: "), data[:200]
    lines = data.split(b"\r\n")
    i = 1
    while lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


def test_converted_for_a_peer_without_8bitmime(env):
    mx = world(env, eightbit=False)
    mail, data, qid = delivered(env, mx, MULTI)
    assert b"BODY=8BITMIME" not in mail, mail
    assert max(data) < 0x80, "8-bit octet sent to a 7-bit peer"
    assert all(len(l) <= 998 for l in data.split(b"\r\n"))
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == \
        ["text/plain", "text/plain", "application/octet-stream"]
    assert parts[0]["Content-Transfer-Encoding"] == "quoted-printable"
    assert parts[0].get_payload(decode=True) == TEXT
    assert parts[1]["Content-Transfer-Encoding"] is None      # untouched
    assert b"--b1\r\nContent-Type: text/plain\r\n\r\nseven bits\r\n--b1\r\n" in data
    assert parts[2]["Content-Transfer-Encoding"] == "base64"
    assert parts[2].get_payload(decode=True) == BINARY
    assert re.search(r"id=%s converted to 7 bits" % qid, env.t.log(), re.I)


def test_sent_as_is_to_a_peer_with_8bitmime(env):
    mx = world(env, eightbit=True)
    mail, data, qid = delivered(env, mx, MULTI)
    assert mail.endswith(b" BODY=8BITMIME"), mail
    assert received_body(data) == MULTI


def test_signed_8bit_bounces_with_5_6_3(env):
    mx = world(env, eightbit=False)
    d = env.dsn_sink
    try:
        qid = send(env, SIGNED)
        (dsn,) = d.wait_for(1, timeout=20)
        env.wait_gone([qid])
    finally:
        mx.stop()
    assert mx.messages == 0
    _, _, rc, _ = dsn_parts(dsn.data)
    assert rc[0]["status"].strip() == "5.6.3", rc
    assert "signed" in rc[0]["diagnostic-code"], rc


def test_unconvertible_sent_as_is_when_told(env):
    mx = world(env, eightbit=False, extra="8bit-unconvertible send")
    mail, data, qid = delivered(env, mx, SIGNED)
    assert b"BODY=8BITMIME" not in mail
    assert received_body(data) == SIGNED
    assert re.search(r"id=%s sent as it is" % qid, env.t.log(), re.I)


def test_converted_once_and_reused_by_the_retry(env):
    """The conversion is made once: the first attempt (answered 451 at the
    final dot) converts and keeps the 7-bit copy, the retry sends the same
    bytes without converting again, and the copy leaves with the message."""
    mx = world(env, eightbit=False)
    mx.data_defer = 1
    copies = env.t.queue_dir / "7bit"
    try:
        qid = send(env, MULTI)
        env.t.wait_log(r"id=%s 7-bit copy reused" % qid, timeout=20)
        mx.wait_messages(1, timeout=15)
        env.wait_gone([qid])
    finally:
        mx.stop()
    log = env.t.log()
    assert len(re.findall(r"id=%s converted to 7 bits" % qid, log)) == 1, log
    assert len(re.findall(r"id=%s 7-bit copy reused" % qid, log)) == 1, log
    (deferred,) = mx.deferred
    (accepted,) = mx.data
    assert max(accepted[1]) < 0x80
    assert received_body(deferred[1]) == received_body(accepted[1])
    assert list(copies.iterdir()) == [], "the 7-bit copy outlived its message"


def test_damaged_copy_is_converted_again(env):
    """A 7-bit copy that fails its check is removed and the message is
    converted again, never sent damaged."""
    mx = world(env, eightbit=False)
    mx.data_defer = 1
    copies = env.t.queue_dir / "7bit"
    try:
        qid = send(env, MULTI)
        deadline = time.monotonic() + 15
        while not mx.deferred and time.monotonic() < deadline:
            time.sleep(0.05)
        (f,) = list(copies.iterdir())
        raw = bytearray(f.read_bytes())
        raw[len(raw) // 2] ^= 0x01
        f.write_bytes(bytes(raw))
        mx.wait_messages(1, timeout=15)
        env.wait_gone([qid])
    finally:
        mx.stop()
    log = env.t.log()
    assert "damaged 7-bit copy removed" in log, log
    assert len(re.findall(r"id=%s converted to 7 bits" % qid, log)) == 2, log
    assert received_body(mx.deferred[0][1]) == received_body(mx.data[0][1])
