"""Real mail software against the real ternd, byte-exact at the far end.

Submission: swaks, curl, msmtp, Python smtplib and Node's nodemailer each send
over a STARTTLS + AUTH submission listener (587-style) and over an implicit-TLS
one (465-style); ternd routes to the aiosmtpd sink, which must receive exactly
the bytes sent plus ternd's Received: field (the message has Date: and
Message-ID:, so the submission listener adds nothing). The body has lines
starting with "." and "..", a line that is only ".", and 8-bit UTF-8 text, so
the clients' dot-stuffing and 8-bit transport are exercised. Without AUTH each
client is refused (530 5.7.0) and nothing is queued.

Postfix: a private instance (its own config, queue and data directories under
the test's tmp dir, `postfix -c DIR start`, loopback ports only, no DNS; never
the system instance) relays into ternd and receives from ternd. An SMTPUTF8
message (UTF-8 local parts, a U-label domain, a UTF-8 Subject), an 8-bit body,
a dot-stuffed body and a ~200 KB body must arrive byte-exact at the sink, below
the two Received: fields the MTAs add. ternd -> Postfix must use BDAT (Postfix
smtpd's debug log and its per-session command counts say so). Postfix's SMTP
client never sends BDAT (Postfix takes CHUNKING only as a server), so for
Postfix -> ternd the test checks, in Postfix's debug log of that dialogue, that
ternd offered CHUNKING and SMTPUTF8 and that the UTF-8 sender went with SMTPUTF8.

The Node client is installed with npm at test time into build/test-npm
(once); the test skips only when the npm registry cannot be reached. Postfix
needs root (its master process); without root those tests skip.
"""

import os
import pwd
import re
import shutil
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import IN_CI, REPO, free_port, require_tool, strip_received
from test_auth import PASSWORD, USER, start as start_submission

RCPT = "rcpt@other.test"
BODY_8BIT = ("Grüße aus Köln: naïve café, Ελληνικά, 日本語.\r\n"
             "\u00e9t\u00e9 \u2014 z\u00fcrich\r\n").encode()
DOT_LINES = (b".\r\n"
             b"..\r\n"
             b".leading dot\r\n"
             b"..two leading dots\r\n"
             b"...\r\n"
             b"end. .\r\n")


def message(tag, frm=USER, to=RCPT, subject=None, body=None):
    """A complete message (Date: and Message-ID: included), CRLF line ends."""
    subject = subject or "real client " + tag
    if body is None:
        body = b"hello from " + tag.encode() + b"\r\n" + DOT_LINES + BODY_8BIT + b"bye\r\n"
    head = ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\n"
            "Date: Sun, 06 Dec 2026 05:00:00 +0000\r\n"
            "Message-ID: <%s.%d@client.test>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n\r\n"
            % (frm, to, subject, re.sub(r"[^A-Za-z0-9.-]", "-", tag), os.getpid()))
    return head.encode() + body


def assert_same(got, sent, what):
    if got != sent:
        i = next((k for k in range(min(len(got), len(sent))) if got[k] != sent[k]),
                 min(len(got), len(sent)))
        pytest.fail("%s: message differs at byte %d (got %d bytes, sent %d):\n"
                    "got  %r\nsent %r" % (what, i, len(got), len(sent),
                                          got[max(0, i - 60):i + 60],
                                          sent[max(0, i - 60):i + 60]))


def run(args, **kw):
    kw.setdefault("timeout", 60)
    return subprocess.run([str(a) for a in args], capture_output=True, **kw)


def run_client(args, **kw):
    """(exit status 0, stdout + stderr as text) of a client run."""
    r = run(args, **kw)
    return r.returncode == 0, (r.stdout + r.stderr).decode(errors="replace")


# ---------------------------------------------------------------- clients
#
# Each sender: (ternd, certs, tmp_path, port, implicit_tls, msg, auth) -> (ok, transcript)

def send_swaks(t, certs, tmp, port, implicit, msg, auth=True):
    swaks = require_tool("swaks")
    # swaks ends the data with CRLF "." CRLF itself: it is given the message
    # without its last line end
    assert msg.endswith(b"\r\n")
    f = tmp / "swaks.eml"
    f.write_bytes(msg[:-2])
    args = [swaks, "--server", "127.0.0.1", "--port", port,
            "--tlsc" if implicit else "--tls", "--tls-verify", "--tls-ca-path", certs.ca_cert,
            "--tls-sni", "localhost",
            "--from", USER, "--to", RCPT, "--helo", "client.test",
            "--data", "@%s" % f, "--timeout", "20"]
    if auth:
        args += ["--auth", "PLAIN", "--auth-user", USER, "--auth-password", PASSWORD]
    return run_client(args)


def send_curl(t, certs, tmp, port, implicit, msg, auth=True):
    curl = require_tool("curl")
    f = tmp / "curl.eml"
    f.write_bytes(msg)
    url = ("smtps://127.0.0.1:%d" if implicit else "smtp://127.0.0.1:%d") % port
    args = [curl, "-v", "-sS", "--ssl-reqd", "--cacert", certs.ca_cert, "--url", url,
            "--mail-from", USER, "--mail-rcpt", RCPT, "--upload-file", f,
            "--max-time", "30"]
    if auth:
        args += ["--user", "%s:%s" % (USER, PASSWORD)]
    return run_client(args)


def send_msmtp(t, certs, tmp, port, implicit, msg, auth=True):
    msmtp = require_tool("msmtp")
    conf = tmp / "msmtprc"
    lines = ["account default", "host 127.0.0.1", "port %d" % port,
             "domain client.test", "from %s" % USER, "tls on",
             "tls_starttls %s" % ("off" if implicit else "on"),
             "tls_trust_file %s" % certs.ca_cert, "tls_host_override localhost",
             "logfile -"]
    if auth:
        lines += ["auth plain", "user %s" % USER, "password %s" % PASSWORD]
    else:
        lines += ["auth off"]
    conf.write_text("\n".join(lines) + "\n")
    conf.chmod(0o600)
    return run_client([msmtp, "-C", conf, "-a", "default", "-f", USER, "--", RCPT], input=msg)


def send_smtplib(t, certs, tmp, port, implicit, msg, auth=True):
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    try:
        if implicit:
            s = smtplib.SMTP_SSL("127.0.0.1", port, context=ctx, timeout=20,
                                 local_hostname="client.test")
        else:
            s = smtplib.SMTP("127.0.0.1", port, timeout=20, local_hostname="client.test")
            s.starttls(context=ctx)
        with s:
            if auth:
                s.login(USER, PASSWORD)
            s.sendmail(USER, [RCPT], msg, mail_options=["BODY=8BITMIME"])
    except smtplib.SMTPException as e:
        return False, repr(e)
    return True, ""


NODE_SCRIPT = r"""
// send one raw message with nodemailer; argv: port implicit(0|1) ca user pass from to file
const fs = require('fs');
const nodemailer = require(process.env.TERN_NODEMAILER);
const [port, implicit, ca, user, pass, from, to, file] = process.argv.slice(2);
const t = nodemailer.createTransport({
  host: '127.0.0.1', port: Number(port), secure: implicit === '1',
  requireTLS: implicit !== '1', name: 'client.test',
  auth: user ? { user: user, pass: pass } : undefined,
  tls: { ca: [fs.readFileSync(ca)], servername: 'localhost' },
  connectionTimeout: 20000, greetingTimeout: 20000, socketTimeout: 20000,
});
t.sendMail({ envelope: { from: from, to: [to] }, raw: fs.readFileSync(file) }).then(
  (info) => { console.log('sent: ' + info.response); process.exit(0); },
  (err) => { console.log('error: ' + (err.responseCode || '') + ' ' + err.message);
             process.exit(1); });
"""


@pytest.fixture(scope="session")
def nodemailer():
    """Path of an installed nodemailer package (npm install, once, into the
    repository's build/test-npm, whatever TERN_BUILD_DIR says)."""
    node = require_tool("node")
    npm = require_tool("npm")
    prefix = REPO / "build" / "test-npm"
    pkg = prefix / "node_modules" / "nodemailer"
    if not (pkg / "package.json").is_file():
        prefix.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([npm, "install", "--no-audit", "--no-fund", "--no-save",
                            "--prefix", str(prefix), "nodemailer@6"],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            text = r.stdout + r.stderr
            if re.search(r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ETIMEDOUT|ENETUNREACH|"
                         r"network|socket hang up", text):
                pytest.skip("npm registry unreachable, cannot install nodemailer: "
                            + text.strip().splitlines()[-1])
            pytest.fail("npm install nodemailer failed:\n" + text)
    return node, pkg


def make_send_nodemailer(nodemailer):
    node, pkg = nodemailer

    def send(t, certs, tmp, port, implicit, msg, auth=True):
        js = tmp / "send.js"
        js.write_text(NODE_SCRIPT)
        f = tmp / "node.eml"
        f.write_bytes(msg)
        env = dict(os.environ, TERN_NODEMAILER=str(pkg))
        return run_client([node, js, port, "1" if implicit else "0", certs.ca_cert,
                           USER if auth else "", PASSWORD if auth else "", USER, RCPT, f],
                          env=env)
    return send


SENDERS = {"swaks": send_swaks, "curl": send_curl, "msmtp": send_msmtp,
           "smtplib": send_smtplib}
CLIENTS = ["swaks", "curl", "msmtp", "smtplib", "nodemailer"]


def sender_for(name, request):
    if name == "nodemailer":
        return make_send_nodemailer(request.getfixturevalue("nodemailer"))
    return SENDERS[name]


@pytest.mark.parametrize("client", CLIENTS)
def test_submission_byte_exact(client, request, ternd, sink, certs, tmp_path):
    """587-style (STARTTLS + AUTH PLAIN) and 465-style (implicit TLS) submission:
    the sink gets exactly what the client was given, below ternd's Received:."""
    send = sender_for(client, request)
    s = sink()
    t = start_submission(ternd, certs, default_route="smtp:[127.0.0.1]:%d" % s.port)
    sent = []
    for implicit, listener in ((False, "sub"), (True, "subtls")):
        msg = message("%s-%s" % (client, listener))
        ok, out = send(t, certs, tmp_path, t.port(listener), implicit, msg)
        assert ok, "%s on %s failed:\n%s\nternd log:\n%s" % (client, listener, out,
                                                              t.log()[-3000:])
        sent.append(msg)
        got = s.wait_for(len(sent), timeout=20)
        assert [m.mail_from for m in got] == [USER] * len(sent)
        assert got[-1].rcpt_tos == [RCPT]
        assert_same(strip_received(got[-1].data), msg, "%s via %s" % (client, listener))
    assert strip_received(s.messages[0].data) != strip_received(s.messages[1].data)


@pytest.mark.parametrize("client", CLIENTS)
def test_submission_without_auth_refused(client, request, ternd, sink, certs, tmp_path):
    """The same clients without credentials: MAIL is refused 530 5.7.0 on both
    submission listeners and nothing is queued or delivered."""
    send = sender_for(client, request)
    s = sink()
    t = start_submission(ternd, certs, default_route="smtp:[127.0.0.1]:%d" % s.port)
    for implicit, listener in ((False, "sub"), (True, "subtls")):
        ok, out = send(t, certs, tmp_path, t.port(listener), implicit,
                       message("noauth-" + client), auth=False)
        assert not ok, "%s without AUTH was accepted on %s:\n%s" % (client, listener, out)
        assert "530" in out, "%s: no 530 in the client's output:\n%s" % (client, out)
    assert t.queue() == []
    assert s.messages == []


# ---------------------------------------------------------------- Postfix

MAIN_CF = """\
# a private Postfix instance for tests/integration/test_real_clients.py
compatibility_level = 3.6
config_directory = {dir}/etc
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
maillog_file_prefixes = {dir}
maillog_file = {dir}/maillog
myhostname = postfix.test
mydomain = postfix.test
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
local_transport = error:no local delivery in tests
relayhost = [127.0.0.1]:{relay_port}
smtp_host_lookup = native
smtp_dns_support_level = disabled
smtpd_peername_lookup = no
smtp_tls_security_level = none
smtpd_tls_security_level = none
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
local_header_rewrite_clients =
smtputf8_enable = yes
message_size_limit = 10240000
biff = no
delay_warning_time = 0h
maximal_backoff_time = 1s
minimal_backoff_time = 1s
queue_run_delay = 1s
debug_peer_list = 127.0.0.1
"""

MASTER_CF = """\
# master.cf of the private test instance (no chroot)
{port}    inet  n       -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def merge_main_cf(base, extra):
    """main.cf text with each parameter once: a line of `extra` replaces the
    base's line for the same name, in place. A parameter written twice makes
    every Postfix process log an "overriding earlier entry" warning at start;
    the master, pickup and qmgr together send more than the kernel's
    net.unix.max_dgram_qlen (10) datagrams to the postlog socket before
    postlogd runs, and the master, which must start postlogd, then blocks in
    sendto() on that socket for ever (seen on a loaded machine: no 220, and
    `postfix stop` hangs too)."""
    def name(line):
        m = re.match(r"\s*([A-Za-z0-9_]+)\s*=", line)
        return m.group(1) if m else None
    lines = base.splitlines()
    index = {name(l): i for i, l in enumerate(lines) if name(l)}
    for line in extra.splitlines():
        n = name(line)
        if n in index:
            lines[index[n]] = line
        elif line.strip():
            index[n] = len(lines)
            lines.append(line)
    return "\n".join(lines) + "\n"


class PrivatePostfix:
    """`postfix -c DIR/etc` with everything under DIR; stopped by `postfix -c
    DIR/etc stop`, then by the master's PID if it is still there."""

    def __init__(self, postfix, d, relay_port, extra_main=""):
        self.postfix = postfix
        self.dir = Path(d)
        self.etc = self.dir / "etc"
        self.port = free_port()
        self.master = None
        self.etc.mkdir(parents=True)
        (self.dir / "queue").mkdir()
        (self.dir / "data").mkdir()
        self.dir.chmod(0o755)
        (self.etc / "main.cf").write_text(
            merge_main_cf(MAIN_CF.format(dir=self.dir, relay_port=relay_port), extra_main))
        (self.etc / "master.cf").write_text(MASTER_CF.format(port=self.port))
        pw = pwd.getpwnam("postfix")
        os.chown(self.dir / "data", pw.pw_uid, pw.pw_gid)

    def _ctl(self, *args):
        return run([self.postfix, "-c", self.etc] + list(args), timeout=60)

    @property
    def log(self):
        p = self.dir / "maillog"
        return p.read_text(errors="replace") if p.exists() else ""

    def start(self):
        # any warning here would be logged by every daemon (see merge_main_cf)
        r = run(["postconf", "-c", self.etc, "-n"])
        assert r.returncode == 0 and not r.stderr, "main.cf: %s" % r.stderr.decode(errors="replace")
        r = self._ctl("start")      # makes the queue's subdirectories too
        assert r.returncode == 0, "postfix start: %s%s\n%s" % (r.stdout, r.stderr, self.log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.master = self._master_pid()
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as c:
                    if c.makefile("rb").readline().startswith(b"220"):
                        return self
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.1)
        pytest.fail("private postfix did not answer on %d; log:\n%s" % (self.port, self.log))

    def _master_pid(self):
        try:
            return int((self.dir / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self):
        self.master = self.master or self._master_pid()
        if self.master is None:
            return
        try:
            self._ctl("stop")
        except subprocess.TimeoutExpired:
            pass        # a wedged master: its process group goes below
        deadline = time.monotonic() + 20
        while os.path.exists("/proc/%d" % self.master) and time.monotonic() < deadline:
            time.sleep(0.05)
        if os.path.exists("/proc/%d" % self.master):
            # the master leads its own session: its children are in its group
            try:
                os.killpg(self.master, 9)
            except OSError:
                os.kill(self.master, 9)
        self.master = None

    def wait_log(self, pattern, count=1, timeout=30):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            found = rx.findall(self.log)
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                pytest.fail("postfix log: %d x %r not seen within %ds:\n%s"
                            % (count, pattern, timeout, self.log[-6000:]))
            time.sleep(0.1)


@pytest.fixture
def postfix():
    exe = require_tool("postfix")
    if os.geteuid() != 0:
        msg = "a private Postfix instance needs root (its master process)"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    made = []
    # not under pytest's tmp dir: Postfix's unprivileged processes must reach it
    base = Path(tempfile.mkdtemp(prefix="tern-postfix-", dir="/tmp"))
    base.chmod(0o755)

    def make(relay_port, extra_main=""):
        p = PrivatePostfix(exe, base / ("pf%d" % len(made)), relay_port, extra_main)
        made.append(p)
        return p.start()

    yield make
    for p in made:
        p.stop()
    shutil.rmtree(base, ignore_errors=True)


ULABEL = "exämple.com"
ALABEL = "xn--exmple-cua.com"
UTF8_FROM = "josé@client.test"
UTF8_RCPT = "jürgen@" + ULABEL


def postfix_messages():
    """(name, mail_from, rcpt, message bytes, SMTPUTF8 needed)."""
    big = b"".join(b"line %06d of a large body .. with some text to fill it up\r\n" % i
                   for i in range(3400))
    return [
        ("smtputf8", UTF8_FROM, UTF8_RCPT,
         message("pf-utf8", frm=UTF8_FROM, to=UTF8_RCPT, subject="Grüße, jürgen ✓",
                 body="Hallo Jürgen,\r\nλ ok\r\n".encode()), True),
        ("8bit", "a@client.test", "rcpt@example.com",
         message("pf-8bit", frm="a@client.test", to="rcpt@example.com",
                 body=BODY_8BIT * 20), False),
        ("dots", "a@client.test", "rcpt@example.com",
         message("pf-dots", frm="a@client.test", to="rcpt@example.com",
                 body=b"before\r\n" + DOT_LINES * 3 + b"after\r\n"), False),
        ("200k", "a@client.test", "rcpt@example.com",
         message("pf-200k", frm="a@client.test", to="rcpt@example.com", body=big), False),
    ]


def submit_plain(port, mail_from, rcpt, msg, utf8):
    opts = ["BODY=8BITMIME"] + (["SMTPUTF8"] if utf8 else [])
    with smtplib.SMTP("127.0.0.1", port, timeout=30, local_hostname="client.test") as s:
        s.ehlo()
        assert s.has_extn("smtputf8") or not utf8, s.esmtp_features
        refused = s.sendmail(mail_from, [rcpt], msg, mail_options=opts)
        assert refused == {}


def check_arrivals(s, msgs, what):
    """Each message at the sink once, byte-exact below exactly two Received: fields."""
    got = s.wait_for(len(msgs), timeout=60)
    assert len(got) == len(msgs), got
    by_id = {}
    for m in got:
        mid = re.search(rb"Message-ID: <([^>]+)>", m.data)
        assert mid, m.data[:1000]
        by_id[mid.group(1)] = m
    for name, mail_from, rcpt, msg, utf8 in msgs:
        mid = re.search(rb"Message-ID: <([^>]+)>", msg).group(1)
        m = by_id.get(mid)
        assert m is not None, "%s: message %r never reached the sink" % (what, name)
        assert_same(strip_received(strip_received(m.data)), msg, "%s, %s" % (what, name))
        assert m.mail_from == mail_from
        # ternd keeps domains in A-label form, so it relays (and delivers) them so
        assert m.rcpt_tos == [rcpt.replace(ULABEL, ALABEL)], m.rcpt_tos
        assert ("SMTPUTF8" in m.mail_options) == utf8, (name, m.mail_options)


def test_postfix_relays_into_tern(ternd, sink, postfix):
    """client -> Postfix -> ternd (relay listener) -> sink; Postfix sends with BDAT."""
    s = sink()
    t = ternd(relay_domains="example.com " + ALABEL,
              default_route="smtp:[127.0.0.1]:%d" % s.port)
    pf = postfix(t.port())
    msgs = postfix_messages()
    for _, mail_from, rcpt, msg, utf8 in msgs:
        submit_plain(pf.port, mail_from, rcpt, msg, utf8)
    check_arrivals(s, msgs, "postfix -> tern")
    # Postfix's SMTP client (debug_peer_list) logs the dialogue with ternd: ternd
    # offered SMTPUTF8 and CHUNKING, and the UTF-8 sender went with SMTPUTF8.
    # Postfix's client itself never sends BDAT (only its server takes it), so
    # it sent every message with DATA, dot-stuffed.
    peer = r"127\.0\.0\.1\[127\.0\.0\.1\]:%d: " % t.port()
    pf.wait_log(r"< " + peer + r"250[- ]CHUNKING")
    pf.wait_log(r"< " + peer + r"250[- ]SMTPUTF8")
    pf.wait_log(r"> " + peer + re.escape("MAIL FROM:<%s>" % UTF8_FROM) + r".* SMTPUTF8")
    assert len(re.findall(r"status=sent", pf.log)) == len(msgs), pf.log[-4000:]


def test_tern_relays_into_postfix(ternd, sink, postfix):
    """client -> ternd (relay listener) -> Postfix -> sink; ternd sends with BDAT."""
    s = sink()
    pf = postfix(s.port)
    t = ternd(relay_domains="example.com " + ALABEL,
              default_route="smtp:[127.0.0.1]:%d" % pf.port)
    msgs = postfix_messages()
    for _, mail_from, rcpt, msg, utf8 in msgs:
        submit_plain(t.port(), mail_from, rcpt, msg, utf8)
    check_arrivals(s, msgs, "tern -> postfix")
    # Postfix's smtpd (debug_peer_list) logs the commands it got: ternd sent
    # every message as one BDAT LAST chunk and never DATA
    chunks = pf.wait_log(r"< \S+\[127\.0\.0\.1\]: BDAT (\d+) LAST", count=len(msgs))
    assert len(chunks) == len(msgs), chunks
    assert not re.search(r"< \S+\[127\.0\.0\.1\]: DATA\b", pf.log)
    # and once ternd has closed its session, smtpd's command counts agree
    t.stop()
    counts = pf.wait_log(r"disconnect from \S+\[127\.0\.0\.1\] .*\bbdat=(\d+)")
    assert sum(int(n) for n in counts) == len(msgs), counts
