"""Integration-test harness for tern: real ternd, real clients, test DNS, SMTP sinks.

Run:  /usr/bin/python3 -m pytest tests/integration          (from the repo root)
Binaries come from $TERN_BUILD_DIR (default <repo>/build): ternd, ternctl.
Under CI=true a missing tool (swaks, openssl) or binary fails the test; otherwise it
skips. Only loopback addresses and ports in 20000-60000 are used; every process is
started and stopped by PID.

Fixtures
--------
tern_bin          (session) .ternd, .ternctl (Path), .build_dir, .asan (bool: the
                  binary was built with a sanitizer).

dns               (function) a TestDNSServer (see dnsserver.py) already running on
                  127.0.0.1:<free port>, UDP and TCP. NXDOMAIN for everything until
                  the test declares zones:
                      dns.set_zone({"example.test": {"MX": [(10, "mx1.example.test")]},
                                    "mx1.example.test": {"A": ["127.0.0.2"]}})
                  null MX: {"MX": [(0, ".")]}. Faults: dns.servfail(name[, type]),
                  dns.timeout(name[, type]). dns.queries lists (name, type, proto).
                  dns.addr == "127.0.0.1:PORT". Every ternd started by the `ternd`
                  fixture has `resolver <dns.addr>`.

sink              (function, factory) sink(host="127.0.0.1", port=None, tls=False)
                  -> a started Sink (see sink.py): aiosmtpd on host:port (free port if
                  None), recording .messages (envelope + raw bytes); .wait_for(n);
                  per-recipient replies (.rcpt_reply[addr] = "450 ..."), .mail_reply,
                  .data_reply, .hang = "greeting"|"ehlo"|"mail"|"rcpt"|"data".
                  tls=True offers STARTTLS with the `certs` leaf. Stopped at teardown.

certs             (session) test CA + leaf made once with the openssl CLI:
                  .ca_cert, .cert, .key (Path); the leaf is for mx.test, localhost,
                  *.test, 127.0.0.1 and ::1. .make_leaf(name, sans) makes another one
                  (key_type="rsa" for an RSA key; tag="x" to keep several per name).

ternd             (function, factory) ternd(**kw) -> a running Ternd. Keywords:
                    listeners=("relay",)   each item is a mode ("relay", "submission"),
                                           giving `listen 127.0.0.1:PORT MODE plain`, or a
                                           tuple (NAME, "MODE [TLS-WORD]") for full control,
                                           e.g. ("subtls", "submission tls"). The NAME (or
                                           the mode) is the key for .port(NAME).
                    hostname="mx.test"
                    relay_domains="example.com"   None -> no relay-domains line
                    trusted=None           e.g. "127.0.0.0/8 ::1"; None -> no line, so
                                           127.0.0.1 (all test traffic) is UNTRUSTED
                    extra_conf=""          more directives, appended verbatim (do not
                                           repeat the ones above: use the keywords)
                    default_route="dead"   "dead": append `route * smtp:[127.0.0.1]:P`
                                           where P refuses connections, so queued mail
                                           stays queued (deferred) and can be inspected;
                                           None: no default route (MX lookups via `dns`).
                                           It is the LAST line, so routes in extra_conf win.
                    mx_port=None           `mx-port` (default: a free port, see .mx_port)
                    queue_dir=None         default: a fresh short dir under /tmp
                    user=DEFAULT           `user` directive; when the tests run as root
                                           (ternd refuses to run as root without it) the
                                           default is "tern" if that user exists, else
                                           "nobody"; None -> no line
                    start=True, verbose=False, env=None
                  A Ternd has:
                    .port(name="relay"), .addr(name) -> ("127.0.0.1", port)
                    .conf_path, .queue_dir, .mx_port, .pid, .running
                    .log() -> stderr text of the current run; .log_all() all runs
                    .wait_log(regex, timeout=10) -> re.Match (fails with the log)
                    .ternctl(*args, input=None, timeout=30) -> CompletedProcess (bytes)
                    .queue() -> list of message dicts from `ternctl queue --json`
                    .queue_ids() -> set of ids
                    .show_body(id) -> bytes of `ternctl show ID --body` (raw, with Received)
                    .show_message(id) -> the same without tern's leading Received header
                                         (fails if it is not there)
                    .add_user(name, password) -> `ternctl user add` (password on stdin)
                    .check_config() -> CompletedProcess of `ternd -n -c CONF`
                    .start(), .stop(), .kill9(), .restart()
                  .stop() sends SIGTERM and waits 10 s; if ternd is still alive it is
                  SIGKILLed and the test FAILS ("did not stop cleanly"); a non-zero exit
                  also fails. At teardown every instance still running is stopped that
                  way; one that died on its own fails the test; sanitizer reports in the
                  log fail the test.

smtp_raw          (function, factory) smtp_raw(port, host="127.0.0.1", timeout=10,
                  source=None) -> RawSMTP, a line-level client for exact-byte tests
                  (source: a local address to connect from, e.g. "127.0.0.5"):
                    .send(bytes|str), .reply() -> Reply(code, enh, lines, text),
                    .expect(code, enh=None) -> Reply (asserts), .cmd(line, code=None,
                    enh=None) (sends line+CRLF, reads one reply), .greeting(),
                    .ehlo(name="client.test") -> list of keywords, .wait_closed(timeout).
                  Reply.queue_id: the id in "queued as <ID>" or None.

Module-level helpers (tests import them with `from conftest import ...`; this
directory is on sys.path): free_port(host, udp=False), require_tool(name),
strip_received(body), RawSMTP, Reply, QID_RE, default_user().

Environment: TERN_BUILD_DIR (binaries), TERN_READY_TIMEOUT (default 15 s),
TERN_STOP_TIMEOUT (default 10 s), CI=true (missing tools fail instead of skip).
ASAN_OPTIONS / UBSAN_OPTIONS get defaults if unset; sanitizer reports in the
ternd log fail the test.
"""

import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from dnsserver import TestDNSServer  # noqa: E402
from sink import Sink  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() == "true"
READY_TIMEOUT = float(os.environ.get("TERN_READY_TIMEOUT", "15"))
STOP_TIMEOUT = float(os.environ.get("TERN_STOP_TIMEOUT", "10"))
QID_RE = re.compile(r"queued as ([0-9A-Fa-f]{16})\b")

# ---------------------------------------------------------------- helpers

_ports_lock = threading.Lock()
_ports_given = set()


def free_port(host="127.0.0.1", udp=False):
    """A port in 20000-60000 that binds now on host (TCP, and UDP too if udp),
    never handed out before in this test run."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(500):
        port = random.randint(20000, 60000)
        with _ports_lock:
            if port in _ports_given:
                continue
        socks = []
        try:
            kinds = [socket.SOCK_STREAM] + ([socket.SOCK_DGRAM] if udp else [])
            for kind in kinds:
                s = socket.socket(family, kind)
                socks.append(s)
                s.bind((host, port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        with _ports_lock:
            if port in _ports_given:
                continue
            _ports_given.add(port)
        return port
    raise RuntimeError("no free port found in 20000-60000")


def require_tool(name):
    """Path of tool `name`; skip (or fail under CI=true) when it is missing."""
    path = shutil.which(name)
    if path is None:
        msg = "required tool %r not found on PATH" % name
        if IN_CI:
            pytest.fail(msg + " (CI=true: missing tools are failures)")
        pytest.skip(msg)
    return path


SANITIZER_PATTERNS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                      "WARNING: ThreadSanitizer", "SUMMARY: UndefinedBehaviorSanitizer")


# ---------------------------------------------------------------- binaries

class TernBin:
    def __init__(self, build_dir):
        self.build_dir = Path(build_dir).resolve()   # ternd runs with cwd=tmp dir
        self.ternd = self.build_dir / "ternd"
        self.ternctl = self.build_dir / "ternctl"
        self.asan = False
        try:
            data = self.ternd.read_bytes()
            self.asan = b"__asan_init" in data or b"__ubsan_handle" in data
        except OSError:
            pass


@pytest.fixture(scope="session")
def tern_bin():
    build = os.environ.get("TERN_BUILD_DIR") or str(REPO / "build")
    b = TernBin(build)
    for p in (b.ternd, b.ternctl):
        if not (p.is_file() and os.access(p, os.X_OK)):
            msg = "%s not built (set TERN_BUILD_DIR or build first)" % p
            if IN_CI:
                pytest.fail(msg)
            pytest.skip(msg)
    return b


# ---------------------------------------------------------------- DNS

@pytest.fixture
def dns():
    srv = TestDNSServer("127.0.0.1", free_port(udp=True)).start()
    yield srv
    srv.stop()


# ---------------------------------------------------------------- sink

@pytest.fixture
def sink(request):
    started = []

    def make(host="127.0.0.1", port=None, tls=False):
        cert = key = None
        if tls:
            c = request.getfixturevalue("certs")
            cert, key = str(c.cert), str(c.key)
        s = Sink(host, port or free_port(host), tls_cert=cert, tls_key=key).start()
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


# ---------------------------------------------------------------- certs

class Certs:
    def __init__(self, d, openssl):
        self.dir = Path(d)
        self.openssl = openssl
        self.ca_key = self.dir / "ca.key"
        self.ca_cert = self.dir / "ca.pem"
        self._run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                  "-nodes", "-keyout", self.ca_key, "-out", self.ca_cert, "-days", "30",
                  "-subj", "/CN=tern test CA",
                  "-addext", "basicConstraints=critical,CA:TRUE",
                  "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        self.cert, self.key = self.make_leaf(
            "mx.test", ["DNS:mx.test", "DNS:localhost", "DNS:*.test", "IP:127.0.0.1", "IP:::1"])

    def _run(self, *args):
        subprocess.run([self.openssl] + [str(a) for a in args], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)

    def make_leaf(self, name, sans=None, key_type="ec", tag=""):
        """Leaf cert signed by the test CA: returns (cert Path, key Path).
        key_type "ec" (P-256, the default) or "rsa" (2048 bits); tag is added to
        the file names so several leaves for one name can coexist."""
        sans = sans or ["DNS:" + name]
        base = name + tag
        key = self.dir / (base + ".key")
        csr = self.dir / (base + ".csr")
        cert = self.dir / (base + ".pem")
        ext = self.dir / (base + ".ext")
        ext.write_text("subjectAltName=%s\nbasicConstraints=CA:FALSE\n"
                       "extendedKeyUsage=serverAuth,clientAuth\n" % ",".join(sans))
        keyopts = (["-newkey", "rsa:2048"] if key_type == "rsa" else
                   ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"])
        self._run("req", *keyopts, "-nodes",
                  "-keyout", key, "-out", csr, "-subj", "/CN=" + name)
        self._run("x509", "-req", "-in", csr, "-CA", self.ca_cert, "-CAkey", self.ca_key,
                  "-CAcreateserial", "-out", cert, "-days", "30", "-extfile", ext)
        return cert, key


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    openssl = require_tool("openssl")
    return Certs(tmp_path_factory.mktemp("certs"), openssl)


# ---------------------------------------------------------------- raw SMTP client

class Reply:
    def __init__(self, code, lines):
        self.code = code
        self.lines = lines                  # texts after "NNN-"/"NNN "
        self.text = "\n".join(lines)
        m = re.match(r"([245]\.\d{1,3}\.\d{1,3})\b", lines[-1] if lines else "")
        self.enh = m.group(1) if m else None
        m = QID_RE.search(self.text)
        self.queue_id = m.group(1) if m else None

    def __repr__(self):
        return "<Reply %d %r>" % (self.code, self.text)


class RawSMTP:
    def __init__(self, port, host="127.0.0.1", timeout=10.0, source=None):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.timeout = timeout
        self.buf = b""
        self.eof = False

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def _fill(self, timeout):
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
        self.buf += chunk
        return chunk

    def readline(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\n" not in self.buf:
            if self.eof:
                raise AssertionError("connection closed by server; pending bytes %r" % self.buf)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timeout waiting for a reply line; pending bytes %r"
                                     % self.buf)
            try:
                self._fill(left)
            except socket.timeout:
                raise AssertionError("timeout waiting for a reply line; pending bytes %r"
                                     % self.buf)
        line, self.buf = self.buf.split(b"\n", 1)
        assert line.endswith(b"\r"), "reply line not ended by CRLF: %r" % line
        return line[:-1].decode("utf-8", "replace")

    def reply(self, timeout=None):
        lines = []
        while True:
            line = self.readline(timeout)
            m = re.match(r"^(\d{3})([ -]?)(.*)$", line)
            assert m, "malformed reply line %r" % line
            code = int(m.group(1))
            lines.append(m.group(3))
            if m.group(2) != "-":
                return Reply(code, lines)

    def expect(self, code, enh=None, timeout=None):
        r = self.reply(timeout)
        assert r.code == code, "expected %d%s, got %r" % (code, " " + enh if enh else "", r)
        if enh is not None:
            assert r.enh == enh, "expected enhanced code %s, got %r" % (enh, r)
        return r

    def cmd(self, line, code=None, enh=None):
        self.send(line + "\r\n")
        if code is None:
            return self.reply()
        return self.expect(code, enh)

    def greeting(self):
        return self.expect(220)

    def ehlo(self, name="client.test"):
        r = self.cmd("EHLO " + name, 250)
        return [l.split()[0].upper() for l in r.lines[1:] if l.strip()]

    def wait_closed(self, timeout=5.0):
        """True if the server closes the connection within timeout (data before the
        close is kept in .buf)."""
        deadline = time.monotonic() + timeout
        while not self.eof:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                self._fill(left)
            except socket.timeout:
                return False
            except OSError:
                self.eof = True
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def smtp_raw():
    conns = []

    def make(port, host="127.0.0.1", timeout=10.0, source=None):
        c = RawSMTP(port, host, timeout, source)
        conns.append(c)
        return c

    yield make
    for c in conns:
        c.close()


# ---------------------------------------------------------------- ternd

class Ternd:
    def __init__(self, bins, dns, workdir, listeners=("relay",), hostname="mx.test",
                 relay_domains="example.com", trusted=None, extra_conf="",
                 default_route="dead", mx_port=None, queue_dir=None, verbose=False,
                 env=None, user="DEFAULT"):
        self.bins = bins
        self.dns = dns
        self.workdir = Path(workdir)
        self.verbose = verbose
        self.proc = None
        self.runs = 0
        self.log_path = None
        self.expect_exit = True     # no run yet
        self.problems = []
        self._own_queue = queue_dir is None
        self.queue_dir = Path(queue_dir or tempfile.mkdtemp(prefix="ternq-", dir="/tmp"))
        self.mx_port = mx_port or free_port()
        self.conf_path = self.workdir / "tern.conf"
        self.env = dict(os.environ)
        self.env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        self.env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
        if env:
            self.env.update(env)
        self._dead = None
        self._ports = {}
        lines = ["# written by tests/integration/conftest.py",
                 "hostname %s" % hostname,
                 "queue %s" % self.queue_dir]
        if user == "DEFAULT":
            user = default_user()
        if user:
            lines.append("user %s" % user)
        for item in listeners:
            if isinstance(item, str):
                name, words = item, item + " plain"
            else:
                name, words = item
            if name in self._ports:
                raise ValueError("duplicate listener name %r" % name)
            self._ports[name] = free_port()
            lines.append("listen 127.0.0.1:%d %s" % (self._ports[name], words))
        if relay_domains:
            lines.append("relay-domains %s" % relay_domains)
        if trusted:
            lines.append("trusted-networks %s" % trusted)
        lines.append("resolver %s" % dns.addr)
        lines.append("mx-port %d" % self.mx_port)
        if extra_conf:
            lines.extend(l.strip() for l in extra_conf.strip().splitlines())
        if default_route == "dead":
            # bound, never listening: connects get ECONNREFUSED -> delivery defers
            self._dead = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self._dead.bind(("127.0.0.1", free_port()))
            lines.append("route * smtp:[127.0.0.1]:%d" % self._dead.getsockname()[1])
        elif default_route:
            lines.append("route * %s" % default_route)
        self.conf_text = "\n".join(lines) + "\n"
        self.conf_path.write_text(self.conf_text)

    # ---- addresses
    def port(self, name="relay"):
        return self._ports[name]

    def addr(self, name="relay"):
        return ("127.0.0.1", self._ports[name])

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    # ---- logs
    def log(self):
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    def log_all(self):
        out = []
        for i in range(1, self.runs + 1):
            p = self.workdir / ("ternd.%d.log" % i)
            if p.exists():
                out.append("==== run %d ====\n" % i + p.read_text(errors="replace"))
        return "".join(out)

    def _tail(self, n=60):
        return "\n".join(self.log().splitlines()[-n:])

    def wait_log(self, pattern, timeout=10.0):
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log())
            if m:
                return m
            if time.monotonic() > deadline:
                pytest.fail("no log line matching %r within %.0fs; log:\n%s"
                            % (pattern, timeout, self._tail()))
            time.sleep(0.05)

    # ---- lifecycle
    def check_config(self):
        return subprocess.run([str(self.bins.ternd), "-n", "-c", str(self.conf_path)],
                              capture_output=True, text=True, timeout=30, env=self.env)

    def start(self):
        assert not self.running, "ternd already running (pid %d)" % self.pid
        self.runs += 1
        self.log_path = self.workdir / ("ternd.%d.log" % self.runs)
        args = [str(self.bins.ternd), "-c", str(self.conf_path)]
        if self.verbose:
            args.append("-v")
        with open(self.log_path, "wb") as logf:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=logf,
                                         stderr=logf, env=self.env, cwd=str(self.workdir))
        self.expect_exit = False
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            text = self.log()
            if any(" ready " in l or l.endswith(" ready") or '"msg":"ready ' in l
                   for l in text.splitlines()):
                return self
            rc = self.proc.poll()
            if rc is not None:
                self.expect_exit = True
                pytest.fail("ternd exited with code %s before logging ' ready '.\n"
                            "config:\n%s\nstderr:\n%s" % (rc, self.conf_text, text))
            if time.monotonic() > deadline:
                self._sigkill()
                self.expect_exit = True
                pytest.fail("ternd did not log ' ready ' within %.0fs.\nconfig:\n%s\n"
                            "stderr:\n%s" % (READY_TIMEOUT, self.conf_text, text))
            time.sleep(0.02)

    def _sigkill(self):
        if self.running:
            os.kill(self.proc.pid, signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(timeout=10)

    def kill9(self):
        """SIGKILL by PID, right now (simulates a crash / power cut for the daemon)."""
        assert self.running, "kill9: ternd not running"
        self.expect_exit = True
        self._sigkill()

    def stop(self):
        """Graceful stop; fails the test if ternd needs SIGKILL or exits non-zero."""
        if not self.running:
            return
        self.expect_exit = True
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._sigkill()
            pytest.fail("ternd did not stop cleanly: still running %.0fs after SIGTERM, "
                        "SIGKILLed.\nstderr:\n%s" % (STOP_TIMEOUT, self._tail()))
        self._check_sanitizers()
        if rc != 0:
            pytest.fail("ternd exited with code %d after SIGTERM (want 0).\nstderr:\n%s"
                        % (rc, self._tail()))

    def restart(self):
        if self.running:
            self.stop()
        return self.start()

    def _check_sanitizers(self):
        text = self.log()
        for pat in SANITIZER_PATTERNS:
            if pat in text:
                pytest.fail("sanitizer report in ternd stderr (%r):\n%s" % (pat, self._tail(200)))

    def teardown(self):
        """Called by the fixture; returns a list of problems (strings)."""
        problems = []
        try:
            if self.running:
                try:
                    self.stop()
                except pytest.fail.Exception as e:
                    problems.append(str(e))
            elif self.proc is not None and not self.expect_exit:
                problems.append("ternd (pid %d) died on its own with code %s.\nstderr:\n%s"
                                % (self.proc.pid, self.proc.returncode, self._tail()))
            for pat in SANITIZER_PATTERNS:
                if pat in self.log_all():
                    problems.append("sanitizer report in ternd stderr (%r):\n%s"
                                    % (pat, self.log_all()[-8000:]))
                    break
        finally:
            if self._dead is not None:
                self._dead.close()
            if self._own_queue:
                shutil.rmtree(self.queue_dir, ignore_errors=True)
        return problems

    # ---- ternctl
    def ternctl(self, *args, input=None, timeout=30):
        return subprocess.run([str(self.bins.ternctl), "-c", str(self.conf_path)]
                              + [str(a) for a in args], input=input, capture_output=True,
                              timeout=timeout, env=self.env)

    def queue(self):
        import json
        r = self.ternctl("queue", "--json")
        assert r.returncode == 0, "ternctl queue --json exited %d: %s" % (
            r.returncode, r.stderr.decode(errors="replace"))
        try:
            doc = json.loads(r.stdout)
        except ValueError as e:
            raise AssertionError("ternctl queue --json printed invalid JSON (%s): %r"
                                 % (e, r.stdout[:2000]))
        assert doc.get("ok") is True, "ternctl queue --json: %r" % doc
        return doc["messages"]

    def queue_ids(self):
        return {m["id"] for m in self.queue()}

    def show_body(self, qid):
        r = self.ternctl("show", qid, "--body")
        assert r.returncode == 0, "ternctl show %s --body exited %d: %s" % (
            qid, r.returncode, r.stderr.decode(errors="replace"))
        return r.stdout

    def show_message(self, qid):
        return strip_received(self.show_body(qid))

    def add_user(self, name, password):
        """`ternctl user add NAME` with the password on stdin (users-db)."""
        r = self.ternctl("user", "add", name, input=(password + "\n").encode())
        assert r.returncode == 0, "ternctl user add %s exited %d: %s" % (
            name, r.returncode, r.stderr.decode(errors="replace"))
        return r


def default_user():
    """The run-time user for ternd in tests: None unless we are root."""
    if os.geteuid() != 0:
        return None
    import pwd
    forced = os.environ.get("TERN_TEST_USER")     # e.g. to try "nobody" here
    for name in ((forced,) if forced else ("tern", "nobody")):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    return None


def strip_received(body):
    """Remove the first header field, which must be tern's Received: header."""
    assert body[:9].lower() == b"received:", \
        "queued message does not start with a Received: header: %r" % body[:200]
    pos = 0
    while True:
        nl = body.find(b"\n", pos)
        assert nl >= 0, "Received header never ends: %r" % body[:500]
        pos = nl + 1
        if body[pos:pos + 1] not in (b" ", b"\t"):
            return body[pos:]


@pytest.fixture
def ternd(tern_bin, dns, tmp_path):
    made = []

    def make(start=True, **kw):
        d = tmp_path / ("ternd%d" % len(made)) if made else tmp_path
        d.mkdir(exist_ok=True)
        t = Ternd(tern_bin, dns, d, **kw)
        made.append(t)
        if start:
            t.start()
        return t

    yield make
    problems = []
    for t in made:
        problems.extend(t.teardown())
    if problems:
        pytest.fail("\n\n".join(problems))
