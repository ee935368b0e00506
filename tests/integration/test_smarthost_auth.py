"""Smarthost with AUTH (doc/tern.conf.5, route-auth): `route * smtp:[HOST]:PORT
tls-policy=verify` plus `route-auth FILE` with a `[HOST]:PORT USER PASSWORD`
line makes the delivery client authenticate (AUTH PLAIN, else LOGIN) after
the last EHLO, and only over TLS whose certificate the route verified.

The smarthost is a real aiosmtpd server on loopback with an authenticator
and STARTTLS (the `certs` test CA; ternd trusts it through SSL_CERT_FILE, a
world-readable copy as in test_tls_verify.py). It records every AUTH command
and every credential it was given, and the login each message arrived under.

What must hold: right credentials deliver (the server saw the user); a wrong
password (535) defers the mail with 4.7.8 and one log line naming host and
user, and the password (plain or base64) is nowhere in the log, not even with
-v tracing, nor in `ternctl show --json` / `queue --json`; no TLS, TLS not
verified, or a certificate that fails verification: no AUTH is ever sent,
the mail is deferred; a credentials file open to group or others, or owned
by someone else, stops ternd at start; a reload picks up a changed file."""

import base64
import os
import re
import smtplib
import ssl
import subprocess
import threading
import time

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult

from conftest import QID_RE, free_port

USER = "relay-user@tern.test"
PASSWORD = "c0rrect horse#battery staple"      # a blank and a '#' in it
RCPT = "bob@far.example"
CONF = "retry 1h\ndelay-warning 0\nconnect-timeout 5s\ncommand-timeout 5s"


class AuthServer:
    """aiosmtpd smarthost: users {login: password}; TLS when cert is given."""

    def __init__(self, port, cert=None, key=None, users=None, mechanisms=("PLAIN", "LOGIN")):
        self.port = port
        self.users = dict(users or {})
        self.auth_commands = []       # the mechanism word of each AUTH command
        self.credentials = []         # (mechanism, login, password) tried
        self.messages = []            # dicts: login, rcpt, tls
        self.sessions = 0
        self._cond = threading.Condition()
        ctx = None
        if cert:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(str(cert), str(key))
        srv = self
        exclude = [m for m in ("PLAIN", "LOGIN") if m not in mechanisms]

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                login = None
                if session.authenticated:
                    login = session.auth_data        # set by authenticator()
                srv._note(srv.messages, {"login": login, "rcpt": list(envelope.rcpt_tos),
                                         "tls": session.ssl is not None})
                return "250 2.0.0 OK"

        def authenticator(server, session, envelope, mechanism, auth_data):
            login = auth_data.login.decode()
            password = auth_data.password.decode()
            srv._note(srv.credentials, (mechanism, login, password))
            ok = srv.users.get(login) == password
            return AuthResult(success=ok, handled=False, auth_data=login if ok else None)

        class Server(SMTP):
            async def smtp_AUTH(self, arg):
                srv._note(srv.auth_commands, (arg or "").split(" ")[0].upper())
                return await super().smtp_AUTH(arg)

            async def _handle_client(self):
                with srv._cond:
                    srv.sessions += 1
                return await super()._handle_client()

        class Ctl(Controller):
            def factory(self):
                return Server(self.handler, hostname="smarthost.test", tls_context=ctx,
                              require_starttls=False, authenticator=authenticator,
                              auth_require_tls=False, auth_exclude_mechanism=exclude,
                              decode_data=False, timeout=30)

        self._ctl = Ctl(Handler(), hostname="127.0.0.1", port=port, ready_timeout=10)

    def _note(self, lst, item):
        with self._cond:
            lst.append(item)
            self._cond.notify_all()

    def start(self):
        self._ctl.start()
        with self._cond:               # the controller's start-up probe
            self.sessions = 0
        return self

    def stop(self):
        self._ctl.stop()

    def wait_messages(self, n, timeout=15.0):
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                assert left > 0, "smarthost: wanted %d messages, got %r" % (n, self.messages)
                self._cond.wait(left)
            return list(self.messages)


@pytest.fixture
def smarthost(certs):
    made = []

    def make(tls="good", **kw):
        if tls == "good":
            cert, key = certs.cert, certs.key          # valid for mx.test
        elif tls == "other":
            cert, key = certs.make_leaf("other.example", tag="-smarthost")
        else:
            cert = key = None
        s = AuthServer(free_port(), cert, key, **kw).start()
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def write_auth(path, text, mode=0o600):
    path.write_text(text)
    os.chmod(path, mode)
    return path


def auth_line(port, password=PASSWORD):
    return "# smarthost credentials\n\n[mx.test]:%d %s %s\n" % (port, USER, password)


def start(ternd, dns, ca_file, port, authfile, policy="verify", **kw):
    dns.set_zone({"mx.test": {"A": ["127.0.0.1"]}})
    extra = "%s\nroute * smtp:[mx.test]:%d tls-policy=%s\nroute-auth %s" % (
        CONF, port, policy, authfile)
    return ternd(hostname="tern.test", default_route=None, relay_domains=None,
                 trusted="127.0.0.0/8", extra_conf=extra, env={"SSL_CERT_FILE": ca_file},
                 **kw)


def send(t, subject="smarthost"):
    with smtplib.SMTP(*t.addr(), timeout=10) as c:
        c.ehlo("client.test")
        assert c.mail("alice@sender.test")[0] == 250
        code, resp = c.rcpt(RCPT)
        assert code == 250, resp
        code, resp = c.data(("From: alice@sender.test\r\nSubject: %s\r\n\r\nhi\r\n"
                             % subject).encode())
        assert code == 250, resp
        return QID_RE.search(resp.decode()).group(1).lower()


def attempt_line(t, qid, status, timeout=20):
    return t.wait_log(r"id=%s to=<%s> relay=(\S+) dsn=(\S+) status=%s [^\n]*"
                      % (qid, re.escape(RCPT), status), timeout=timeout)


def secret_forms():
    """The password as it could leak: plain, and inside PLAIN or LOGIN base64."""
    plain = base64.b64encode(b"\0" + USER.encode() + b"\0" + PASSWORD.encode()).decode()
    return [PASSWORD, plain, base64.b64encode(PASSWORD.encode()).decode()]


def assert_no_secret(t, qid, queued=True):
    texts = {"log": t.log_all()}
    for args in (("show", qid, "--json"), ("queue", "--json"), ("show", qid)):
        r = t.ternctl(*args)
        assert r.returncode == (0 if queued or args[0] == "queue" else 1), r
        texts["ternctl " + " ".join(args)] = (r.stdout + r.stderr).decode(errors="replace")
    for where, text in texts.items():
        for s in secret_forms():
            assert s not in text, "the password (%r form) appears in %s" % (s[:6], where)


@pytest.mark.parametrize("mechanisms,used", [(("PLAIN", "LOGIN"), "PLAIN"),
                                             (("LOGIN",), "LOGIN")])
def test_right_credentials_deliver_and_the_connection_stays_authenticated(
        ternd, dns, ca_file, smarthost, tmp_path, mechanisms, used):
    s = smarthost(users={USER: PASSWORD}, mechanisms=mechanisms)
    f = write_auth(tmp_path / "route-auth", auth_line(s.port))
    t = start(ternd, dns, ca_file, s.port, f, verbose=True)
    t.wait_log(r"route-auth %s: credentials for 1 host\b" % re.escape(str(f)))
    qid = send(t, "one")
    (m,) = s.wait_messages(1)
    assert m == {"login": USER, "rcpt": [RCPT], "tls": True}
    assert s.credentials == [(used, USER, PASSWORD)]
    line = attempt_line(t, qid, "sent")
    assert line.group(1) == "mx.test[127.0.0.1]:%d" % s.port, line.group(0)
    # a second message reuses the authenticated connection: no new AUTH
    send(t, "two")
    msgs = s.wait_messages(2)
    assert [x["login"] for x in msgs] == [USER, USER]
    assert s.sessions == 1 and s.auth_commands == [used], (s.sessions, s.auth_commands)
    assert_no_secret(t, qid, queued=False)


def test_wrong_password_defers_with_one_line_and_no_secret(ternd, dns, ca_file, smarthost,
                                                           tmp_path):
    s = smarthost(users={USER: "another password"})
    f = write_auth(tmp_path / "route-auth", auth_line(s.port))
    t = start(ternd, dns, ca_file, s.port, f, verbose=True)   # -v: traces too
    qid = send(t)
    line = attempt_line(t, qid, "deferred")
    assert line.group(2) == "4.7.8", line.group(0)
    assert s.credentials == [("PLAIN", USER, PASSWORD)]
    assert s.messages == []
    ops = [l for l in t.log().splitlines() if "smarthost authentication" in l]
    assert len(ops) == 1, ops
    assert re.search(r"id=%s relay=mx\.test\[127\.0\.0\.1\]:%d user=%s dsn=4\.7\.8 "
                     r"smarthost authentication: \[mx\.test\]:%d refused AUTH PLAIN as %s: "
                     r"535 5\.7\.8 " % (qid, s.port, re.escape(USER), s.port,
                                        re.escape(USER)), ops[0]), ops[0]
    (q,) = t.queue()                    # deferred, not bounced: no DSN was made
    assert q["id"] == qid
    (r,) = q["recipients"]
    assert r["state"] == "pending" and r["status"] == "4.7.8", q
    assert_no_secret(t, qid)


@pytest.mark.parametrize("tls,policy,status", [
    ("none", "may", "4.7.10"),           # the server has no TLS: AUTH in clear refused
    ("good", "encrypt", "4.7.10"),       # TLS, but the route does not verify it
    ("other", "verify", "4.7.5"),        # a certificate for another name: no session
])
def test_credentials_only_over_verified_tls(ternd, dns, ca_file, smarthost, tmp_path,
                                            tls, policy, status):
    s = smarthost(tls=tls, users={USER: PASSWORD})
    f = write_auth(tmp_path / "route-auth", auth_line(s.port))
    t = start(ternd, dns, ca_file, s.port, f, policy=policy)
    if policy != "verify":
        t.wait_log(r"route-auth %s:3: route \* to \[mx\.test\]:%d has tls-policy %s"
                   % (re.escape(str(f)), s.port, policy))
    qid = send(t)
    line = attempt_line(t, qid, "deferred")
    assert line.group(2) == status, line.group(0)
    assert s.sessions >= 1                  # the server was reached
    assert s.auth_commands == [] and s.credentials == [] and s.messages == []
    if status == "4.7.10":
        assert "credentials for [mx.test]:%d not sent" % s.port in line.group(0)
    (q,) = t.queue()
    assert q["recipients"][0]["state"] == "pending", q
    assert_no_secret(t, qid)


def run_ternd(t):
    return subprocess.run([str(t.bins.ternd), "-c", str(t.conf_path)], capture_output=True,
                          text=True, timeout=30, env=t.env)


def test_file_open_to_others_or_owned_by_another_user_stops_ternd(ternd, dns, ca_file,
                                                                  tmp_path):
    f = write_auth(tmp_path / "route-auth", auth_line(2525), 0o644)
    t = start(ternd, dns, ca_file, 2525, f, start=False)
    for run in (run_ternd, lambda t: t.check_config()):
        r = run(t)
        assert r.returncode != 0
        assert "%s: route-auth: mode 0644 is too open: it holds passwords (chmod 600)" % f \
            in r.stderr, r.stderr
        assert PASSWORD not in r.stderr + r.stdout
    if os.geteuid() == 0:
        os.chmod(f, 0o600)
        os.chown(f, 65534, 65534)           # nobody: neither root nor the run-time user
        r = run_ternd(t)
        assert r.returncode != 0
        assert "%s: route-auth: owned by uid 65534" % f in r.stderr, r.stderr
        os.chown(f, 0, 0)
    # a broken line is reported with its number, without the password
    write_auth(f, "[mx.test]:2525 %s\n" % USER)
    r = t.check_config()
    assert r.returncode != 0
    assert "%s:1: expected HOST USER PASSWORD" % f in r.stderr, r.stderr


def test_reload_picks_up_a_changed_file(ternd, dns, ca_file, smarthost, tmp_path):
    s = smarthost(users={USER: PASSWORD})
    f = write_auth(tmp_path / "route-auth", auth_line(s.port, "an old password"))
    t = start(ternd, dns, ca_file, s.port, f)
    p = os.path.dirname(t.conf_path)   # ternd's user re-reads tern.conf, not the file
    while p not in ("/", "/tmp"):
        os.chmod(p, os.stat(p).st_mode | 0o001)
        p = os.path.dirname(p)
    qid = send(t)
    attempt_line(t, qid, "deferred")
    assert s.messages == []
    # a file open to others is refused at reload too; the running one stays
    write_auth(f, auth_line(s.port), 0o644)
    r = t.ternctl("reload")
    assert r.returncode != 0, r
    t.wait_log(r"route-auth: mode 0644 is too open")
    # the right password, 0600: the reload takes it (through the privileged
    # helper when ternd started as root: the file is root's alone)
    os.chmod(f, 0o600)
    r = t.ternctl("reload")
    assert r.returncode == 0, r
    if os.geteuid() == 0:
        t.wait_log(r"reload: route-auth read by the privileged helper")
    assert t.ternctl("retry", qid).returncode == 0
    (m,) = s.wait_messages(1)
    assert m["login"] == USER
    attempt_line(t, qid, "sent")
    assert s.credentials == [("PLAIN", USER, "an old password"), ("PLAIN", USER, PASSWORD)]
    assert_no_secret(t, qid, queued=False)


def test_reload_with_new_credentials_closes_the_authenticated_connection(
        ternd, dns, ca_file, smarthost, tmp_path):
    """A cached connection authenticated under the old credentials is not
    reused after a reload changes them: the next message opens a new
    session and authenticates as the new user."""
    other = "other-user@tern.test"
    s = smarthost(users={USER: PASSWORD, other: "a new secret"})
    f = write_auth(tmp_path / "route-auth", auth_line(s.port))
    t = start(ternd, dns, ca_file, s.port, f)
    p = os.path.dirname(t.conf_path)   # ternd's user re-reads tern.conf
    while p not in ("/", "/tmp"):
        os.chmod(p, os.stat(p).st_mode | 0o001)
        p = os.path.dirname(p)
    send(t, "one")
    s.wait_messages(1)
    write_auth(f, "[mx.test]:%d %s %s\n" % (s.port, other, "a new secret"))
    r = t.ternctl("reload")
    assert r.returncode == 0, r
    t.wait_log(r"reload: .*route-auth|route-auth %s: credentials" % re.escape(str(f)))
    qid = send(t, "two")
    msgs = s.wait_messages(2)
    assert [m["login"] for m in msgs] == [USER, other], msgs
    assert s.sessions == 2, s.sessions
    assert [c[1] for c in s.credentials] == [USER, other]
    attempt_line(t, qid, "sent")
