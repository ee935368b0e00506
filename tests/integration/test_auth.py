"""SMTP AUTH (RFC 4954) end to end through the real ternd: offered only after
TLS on submission listeners, PLAIN (RFC 4616) and LOGIN, the failure answers and
the per-address throttle, submission needing AUTH (RFC 6409 4.3), sender
ownership (sender-login), and where the authenticated user shows up (Received
header, envelope) and where the password never does (the log).

Clients: Python smtplib, swaks and curl, and the raw line client of conftest
(wrapped in TLS after STARTTLS) for exact replies.
"""

import base64
import json
import re
import smtplib
import ssl
import subprocess
import time

import pytest

from conftest import require_tool

PASSWORD = "s3cret-Pa55word!"
USER = "alice@example.com"          # a login that is an address: may send as it


def tls_conf(certs):
    return "tls-cert %s\ntls-key %s\n" % (certs.cert, certs.key)


def client_ctx(certs):
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    return ctx


def start(ternd, certs, extra="", **kw):
    """ternd with a STARTTLS submission listener "sub", an implicit-TLS one
    "subtls", a relay listener with STARTTLS "relay", and user alice."""
    kw.setdefault("listeners", [("sub", "submission starttls"),
                                ("subtls", "submission tls"),
                                ("relay", "relay starttls")])
    # Users are added once ternd runs: it owns the queue directory by then, and
    # `ternctl user add` (as root) gives a new users.db the directory's owner.
    t = ternd(extra_conf=tls_conf(certs) + extra, **kw)
    t.add_user(USER, PASSWORD)
    t.add_user("bob", "bobs-password")
    return t


def b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


def raw_tls(smtp_raw, certs, port, ehlo=True):
    """Raw client on a STARTTLS listener, after STARTTLS (and EHLO again)."""
    r = smtp_raw(port)
    r.greeting()
    kw = r.ehlo()
    assert "STARTTLS" in kw
    r.cmd("STARTTLS", 220)
    r.sock = client_ctx(certs).wrap_socket(r.sock, server_hostname="localhost")
    if ehlo:
        r.ehlo()
    return r


def auth_plain(r, authz, user, pw):
    return r.cmd("AUTH PLAIN " + b64("%s\0%s\0%s" % (authz, user, pw)))


# ---------------------------------------------------------------- offering

def test_auth_only_after_starttls(ternd, certs, smtp_raw):
    t = start(ternd, certs)

    r = smtp_raw(t.port("sub"))
    r.greeting()
    kw = r.ehlo()
    assert "STARTTLS" in kw and "AUTH" not in kw, kw
    # Tried anyway before TLS: 538 (RFC 4954 4), and the password is not looked at.
    r.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (USER, PASSWORD)), 538, "5.7.11")
    r.cmd("MAIL FROM:<%s>" % USER, 530, "5.7.0")
    r.cmd("STARTTLS", 220)
    r.sock = client_ctx(certs).wrap_socket(r.sock, server_hostname="localhost")
    kw = r.ehlo()
    assert "AUTH" in kw and "STARTTLS" not in kw, kw
    line = [l for l in r.cmd("EHLO again.test", 250).lines if l.upper().startswith("AUTH")]
    assert line and set(line[0].upper().split()[1:]) == {"PLAIN", "LOGIN"}, line

    # smtplib sees the same.
    with smtplib.SMTP("127.0.0.1", t.port("sub"), timeout=10) as s:
        s.ehlo("client.test")
        assert not s.has_extn("auth")
        s.starttls(context=client_ctx(certs))
        s.ehlo("client.test")
        assert s.has_extn("auth")

    # Relay listeners never offer AUTH, TLS or not: 503.
    r = raw_tls(smtp_raw, certs, t.port("relay"))
    assert "AUTH" not in r.ehlo()
    r.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (USER, PASSWORD)), 503, "5.5.1")


def test_mail_without_auth_on_submission_is_530(ternd, certs, smtp_raw):
    t = start(ternd, certs)
    r = raw_tls(smtp_raw, certs, t.port("sub"))
    r.cmd("MAIL FROM:<%s>" % USER, 530, "5.7.0")
    with smtplib.SMTP_SSL("127.0.0.1", t.port("subtls"), timeout=10,
                          context=client_ctx(certs)) as s:
        s.ehlo("client.test")
        code, msg = s.mail(USER)
        assert code == 530 and msg.startswith(b"5.7.0"), (code, msg)
    assert t.queue() == []


# ---------------------------------------------------------------- success

def test_auth_plain_and_login_smtplib(ternd, certs):
    t = start(ternd, certs)
    for mech in ("PLAIN", "LOGIN"):
        with smtplib.SMTP("127.0.0.1", t.port("sub"), timeout=10) as s:
            s.starttls(context=client_ctx(certs))
            s.ehlo("client.test")
            s.user, s.password = USER, PASSWORD
            code, msg = s.auth(mech, getattr(s, "auth_" + mech.lower()),
                               initial_response_ok=(mech == "PLAIN"))
            assert code == 235 and msg.startswith(b"2.7.0"), (mech, code, msg)
            # a second AUTH after success: 503 (RFC 4954 4)
            code, msg = s.docmd("AUTH", "PLAIN " + b64("\0%s\0%s" % (USER, PASSWORD)))
            assert code == 503, (code, msg)
            s.sendmail(USER, ["rcpt@other.test"], b"Subject: via %s\r\n\r\nhi\r\n"
                       % mech.encode())
    # implicit TLS (RFC 8314) with login()
    with smtplib.SMTP_SSL("127.0.0.1", t.port("subtls"), timeout=10,
                          context=client_ctx(certs)) as s:
        s.login(USER, PASSWORD)
        s.sendmail(USER, ["rcpt@other.test"], b"Subject: smtps\r\n\r\nhi\r\n")
    msgs = t.queue()
    assert len(msgs) == 3, msgs
    assert PASSWORD not in t.log()


def test_auth_plain_authzid(ternd, certs, smtp_raw):
    t = start(ternd, certs)
    # PLAIN with authzid == authcid: allowed
    r2 = raw_tls(smtp_raw, certs, t.port("sub"))
    rep = auth_plain(r2, USER, USER, PASSWORD)
    assert rep.code == 235 and rep.enh == "2.7.0", rep
    # authzid != authcid (bob asks to act as alice): 535 5.7.8
    r3 = raw_tls(smtp_raw, certs, t.port("sub"))
    rep = auth_plain(r3, USER, "bob", "bobs-password")
    assert rep.code == 535 and rep.enh == "5.7.8", rep
    r3.cmd("MAIL FROM:<bob@example.net>", 530, "5.7.0")


def test_auth_swaks_and_curl(ternd, certs, tmp_path):
    swaks = require_tool("swaks")
    curl = require_tool("curl")
    t = start(ternd, certs)
    for mech in ("PLAIN", "LOGIN"):
        r = subprocess.run([swaks, "--server", "127.0.0.1", "--port", str(t.port("sub")),
                            "--tls", "--auth", mech, "--auth-user", USER,
                            "--auth-password", PASSWORD, "--from", USER,
                            "--to", "rcpt@other.test", "--helo", "client.test",
                            "--tls-ca-path", str(certs.ca_cert), "--tls-verify",
                            "--timeout", "20"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert re.search(r"<~ +235 2\.7\.0", r.stdout), r.stdout
        assert re.search(r"<~ +250 2\.0\.0 Ok: queued as", r.stdout), r.stdout
    # implicit TLS
    r = subprocess.run([swaks, "--server", "127.0.0.1", "--port", str(t.port("subtls")),
                        "--tlsc", "--auth", "PLAIN", "--auth-user", USER,
                        "--auth-password", PASSWORD, "--from", USER,
                        "--to", "rcpt@other.test", "--helo", "client.test",
                        "--timeout", "20"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    # a wrong password: swaks fails, 535 in its transcript
    r = subprocess.run([swaks, "--server", "127.0.0.1", "--port", str(t.port("sub")),
                        "--tls", "--auth", "PLAIN", "--auth-user", USER,
                        "--auth-password", "wrong", "--from", USER,
                        "--to", "rcpt@other.test", "--timeout", "20"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and re.search(r"<~\* +535 5\.7\.8", r.stdout), r.stdout

    mail = tmp_path / "m.eml"
    mail.write_bytes(b"From: <%s>\r\nSubject: curl\r\n\r\nhello\r\n" % USER.encode())
    for url in ("smtp://127.0.0.1:%d" % t.port("sub"),
                "smtps://127.0.0.1:%d" % t.port("subtls")):
        r = subprocess.run([curl, "-sS", "--ssl-reqd", "--cacert", str(certs.ca_cert),
                            "--url", url, "--user", "%s:%s" % (USER, PASSWORD),
                            "--mail-from", USER, "--mail-rcpt", "rcpt@other.test",
                            "--upload-file", str(mail), "--max-time", "30"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (url, r.stdout, r.stderr)
    # curl with a wrong password: exit 67 (login denied)
    r = subprocess.run([curl, "-sS", "--ssl-reqd", "--cacert", str(certs.ca_cert),
                        "--url", "smtp://127.0.0.1:%d" % t.port("sub"),
                        "--user", "%s:nope" % USER, "--mail-from", USER,
                        "--mail-rcpt", "rcpt@other.test", "--upload-file", str(mail),
                        "--max-time", "30"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 67, (r.returncode, r.stderr)
    assert len(t.queue()) == 5
    assert PASSWORD not in t.log()


# ---------------------------------------------------------------- failures

def test_wrong_password_and_unknown_user_same_answer(ternd, certs, smtp_raw):
    t = start(ternd, certs)
    r = raw_tls(smtp_raw, certs, t.port("sub"))
    bad = auth_plain(r, "", USER, "wrong-password")
    assert bad.code == 535 and bad.enh == "5.7.8", bad
    r2 = raw_tls(smtp_raw, certs, t.port("sub"))
    unknown = auth_plain(r2, "", "nobody@example.com", PASSWORD)
    assert (unknown.code, unknown.text) == (bad.code, bad.text)
    # LOGIN, unknown user: the same again
    r3 = raw_tls(smtp_raw, certs, t.port("sub"))
    r3.cmd("AUTH LOGIN", 334)
    r3.cmd(b64("ghost"), 334)
    rep = r3.cmd(b64("x"))
    # third failure from this address: may be slowed down, but the same answer
    assert (rep.code, rep.text) == (bad.code, bad.text)
    # the session goes on after a failure
    r.cmd("NOOP", 250)
    r.cmd("MAIL FROM:<%s>" % USER, 530, "5.7.0")


def test_repeated_login_and_password_change(ternd, certs, smtp_raw):
    """A second login with the same password is answered from the verified
    cache, on the session loop; after `ternctl user add` changes the
    password, the old one fails at once and the new one works."""
    t = start(ternd, certs)
    for _ in range(3):                  # the first costs a hash, then the cache
        r = raw_tls(smtp_raw, certs, t.port("sub"))
        ok = auth_plain(r, "", USER, PASSWORD)
        assert ok.code == 235, ok
    t.add_user(USER, "n3w-Pa55word!")
    r = raw_tls(smtp_raw, certs, t.port("sub"))
    old = auth_plain(r, "", USER, PASSWORD)
    assert old.code == 535 and old.enh == "5.7.8", old
    r = raw_tls(smtp_raw, certs, t.port("sub"))
    assert auth_plain(r, "", USER, "n3w-Pa55word!").code == 235
    assert len(re.findall(r"auth=ok user=%s" % re.escape(USER), t.log())) == 4


def test_rfc4954_reply_codes(ternd, certs, smtp_raw):
    t = start(ternd, certs)
    r = raw_tls(smtp_raw, certs, t.port("sub"))
    r.cmd("AUTH PLAIN not*base64!", 501)
    r.cmd("AUTH PLAIN QUJD=", 501)                       # non-canonical padding bits
    r.cmd("AUTH CRAM-MD5", 504, "5.5.4")
    r.cmd("AUTH XYZZY " + b64("x"), 504, "5.5.4")
    r.cmd("AUTH", 501)                                  # no mechanism
    # "*" cancels an exchange: 501
    r.cmd("AUTH PLAIN", 334)
    r.cmd("*", 501, "5.0.0")
    r.cmd("AUTH LOGIN", 334)
    r.cmd(b64(USER), 334)
    r.cmd("*", 501, "5.0.0")
    # malformed base64 inside an exchange
    r.cmd("AUTH LOGIN", 334)
    r.cmd("%%%%", 501)
    # the session still works: a real login, then a second AUTH is 503
    r.cmd("AUTH LOGIN", 334)
    r.cmd(b64(USER), 334)
    r.cmd(b64(PASSWORD), 235, "2.7.0")
    r.cmd("AUTH PLAIN " + b64("\0%s\0%s" % (USER, PASSWORD)), 503, "5.5.1")
    assert "AUTH" not in r.ehlo()          # not offered once authenticated
    r.cmd("MAIL FROM:<%s>" % USER, 250)
    # AUTH inside a transaction: 503
    r.cmd("RSET", 250)
    # 538 before TLS (again, on a fresh connection)
    p = smtp_raw(t.port("sub"))
    p.greeting()
    p.ehlo()
    p.cmd("AUTH LOGIN", 538, "5.7.11")


def test_auth_failures_are_throttled(ternd, certs, smtp_raw):
    t = start(ternd, certs, extra="auth-max-failures 4\n")
    r = raw_tls(smtp_raw, certs, t.port("sub"))
    times = []
    for i in range(4):
        t0 = time.monotonic()
        rep = auth_plain(r, "", USER, "wrong-%d" % i)
        times.append(time.monotonic() - t0)
        assert rep.code == 535 and rep.enh == "5.7.8", (i, rep)
    # the first answers are quick, later ones slowed (3 failures -> 3 s)
    assert times[0] < 2.0 and times[1] < 2.0, times
    assert times[2] >= 2.5, times
    assert times[3] >= 2.5, times
    # at the limit: refused without looking at the credentials, even right ones
    t0 = time.monotonic()
    rep = auth_plain(r, "", USER, PASSWORD)
    assert rep.code == 454 and rep.enh == "4.7.0", rep
    assert time.monotonic() - t0 < 2.0
    # per address, not per session
    r2 = raw_tls(smtp_raw, certs, t.port("sub"))
    r2.cmd("AUTH LOGIN", 454, "4.7.0")
    t.wait_log(r"auth=refused reason=too-many-failures")
    assert PASSWORD not in t.log()
    assert "wrong-0" not in t.log()


# ---------------------------------------------------------------- senders

def test_sender_ownership(ternd, certs, smtp_raw):
    t = start(ternd, certs,
              extra="sender-login bob bob@example.net @bob.test\n")
    # alice: her own address only (her login is an address)
    r = raw_tls(smtp_raw, certs, t.port("sub"))
    auth_plain(r, "", USER, PASSWORD)
    r.cmd("MAIL FROM:<%s>" % USER, 250, "2.1.0")
    r.cmd("RSET", 250)
    r.cmd("MAIL FROM:<ALICE@Example.COM>", 250, "2.1.0")   # case of an address
    r.cmd("RSET", 250)
    r.cmd("MAIL FROM:<bob@example.net>", 553, "5.7.1")
    r.cmd("MAIL FROM:<mallory@example.com>", 553, "5.7.1")
    # bob: listed address and @domain
    r = raw_tls(smtp_raw, certs, t.port("sub"))
    auth_plain(r, "", "bob", "bobs-password")
    r.cmd("MAIL FROM:<bob@example.net>", 250)
    r.cmd("RSET", 250)
    r.cmd("MAIL FROM:<anything@bob.test>", 250)
    r.cmd("RSET", 250)
    r.cmd("MAIL FROM:<x@sub.bob.test>", 553, "5.7.1")      # @domain is that domain only
    r.cmd("MAIL FROM:<%s>" % USER, 553, "5.7.1")
    r.cmd("MAIL FROM:<bob@example.net.evil.test>", 553, "5.7.1")
    t.wait_log(r"status=refused reason=sender-not-owned")


def test_auth_user_in_received_and_envelope_not_password(ternd, certs, smtp_raw):
    t = start(ternd, certs, verbose=True)
    with smtplib.SMTP("127.0.0.1", t.port("sub"), timeout=10) as s:
        s.starttls(context=client_ctx(certs))
        s.login(USER, PASSWORD)
        s.sendmail(USER, ["rcpt@other.test"], b"Subject: t\r\n\r\nbody\r\n")
    msgs = t.queue()
    assert len(msgs) == 1
    qid = msgs[0]["id"]
    body = t.show_body(qid)
    hdr = body.split(b"\r\n\r\n", 1)[0]
    received = re.match(rb"Received:.*?\r\n(?=\S)", hdr, re.S).group(0)
    assert b"Authenticated sender: " + USER.encode() in received, received
    assert b"ESMTPSA" in received, received
    r = t.ternctl("show", qid, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert json.dumps(doc).count('"auth_user": "%s"' % USER) >= 1, doc
    assert PASSWORD not in t.log()
    assert b64("\0%s\0%s" % (USER, PASSWORD)) not in t.log()
    assert b64(PASSWORD) not in t.log()
