"""Privileges through the real ternd and ternctl, run as root (CI runs the tests
as root; elsewhere these tests skip when not root, and fail under CI=true):

- `ternctl user add/del` as root in a queue directory owned by the daemon's
  user does not follow symlinks that user planted (it works as the directory's
  owner), and ternd at start does not chown a planted users.db target;
- the privileged helper: a 0600 root key is re-read on SIGHUP after ternd
  dropped to its user (new certificate served; a broken new key keeps the old
  one with a log line); the helper is root, the daemon is not, and the helper
  dies with the daemon;
- hardening of the running daemon: NoNewPrivs, an empty capability bounding
  set, a non-root uid (/proc/PID/status);
- started as an ordinary user: no helper, the reload reads the files itself.
"""

import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import IN_CI, SANITIZER_PATTERNS, default_user

MSG = b"From: <a@other.test>\r\nTo: <rcpt@example.com>\r\nSubject: x\r\n\r\nhello\r\n"


def need_root():
    """The daemon user for ternd; skips (fails under CI=true) unless root."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI=true: the privilege tests expect to run as root")
        pytest.skip("needs root")
    user = default_user()
    if user is None:
        pytest.fail("running as root but neither a `tern` nor a `nobody` user exists")
    return pwd.getpwnam(user)


def plant_symlink(link, target, pw):
    """A symlink made by (and owned by) the daemon's user."""
    os.symlink(str(target), str(link))
    os.lchown(str(link), pw.pw_uid, pw.pw_gid)


@pytest.fixture
def pubdir():
    """A root-owned directory under /tmp that the daemon's user can traverse."""
    d = tempfile.mkdtemp(prefix="ternpriv-", dir="/tmp")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- ternctl user

@pytest.mark.parametrize("op", ["add", "del"])
def test_ternctl_user_as_root_does_not_follow_planted_lock_symlink(ternd, tmp_path, op):
    pw = need_root()
    t = ternd()
    assert os.stat(t.queue_dir).st_uid == pw.pw_uid
    victim = tmp_path / "victim"
    plant_symlink(t.queue_dir / "users.db.lock", victim, pw)

    r = t.ternctl("user", op, "alice@example.com", input=b"secret\n")
    err = r.stderr.decode(errors="replace")
    assert not os.path.lexists(victim), \
        "ternctl user %s as root created the symlink's target (rc %d, %s)" % (
            op, r.returncode, err)
    # refused with a message that names the file (or, for add, done safely)
    if r.returncode != 0:
        assert "users.db.lock" in err and ("symbolic link" in err or "refused" in err
                                           or "Permission denied" in err), err
    else:
        assert op == "add"
    # the planted link is still a link, untouched
    assert os.path.islink(t.queue_dir / "users.db.lock")


def test_ternctl_user_add_as_root_works_as_the_queue_owner(ternd):
    pw = need_root()
    t = ternd()
    t.add_user("alice@example.com", "secret")
    for name in ("users.db", "users.db.lock"):
        st = os.stat(t.queue_dir / name)
        assert (st.st_uid, st.st_gid) == (pw.pw_uid, pw.pw_gid), name
    r = t.ternctl("user", "list")
    assert r.returncode == 0 and b"alice@example.com" in r.stdout
    r = t.ternctl("user", "del", "alice@example.com")
    assert r.returncode == 0, r.stderr


def test_ternd_start_does_not_chown_a_planted_users_db_target(ternd, tmp_path, pubdir):
    pw = need_root()
    t = ternd()
    t.stop()
    # a root-owned file that is a valid users database (readable by all, so
    # the daemon can start with it): made by ternctl in a root-owned directory
    victim = pubdir / "victim.db"
    conf2 = tmp_path / "victim.conf"
    conf2.write_text(t.conf_text + "users-db %s\n" % victim)
    r = subprocess.run([str(t.bins.ternctl), "-c", str(conf2), "user", "add", "bob"],
                       input=b"pw\n", capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    os.chmod(victim, 0o644)
    assert os.stat(victim).st_uid == 0
    plant_symlink(t.queue_dir / "users.db", victim, pw)

    t.start()
    st = os.stat(victim)
    assert (st.st_uid, st.st_gid) == (0, 0), \
        "ternd (as root at start) gave %s to uid %d" % (victim, st.st_uid)
    t.wait_log(r"users-db .*users\.db: not given to user")


# ---------------------------------------------------------------- the privileged helper

def proc_status(pid):
    """/proc/PID/status as a dict of str (None once the process is gone)."""
    try:
        text = open("/proc/%d/status" % pid).read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return dict(l.split(":", 1) for l in text.splitlines() if ":" in l)


def uids(st):
    return [int(x) for x in st["Uid"].split()]


def served_der(port):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True)


def der_of(pem_path):
    text = Path(pem_path).read_text()
    return ssl.PEM_cert_to_DER_cert(text[:text.index("-----END CERTIFICATE-----") + 25])


def put_root_only(src, dst, mode):
    """Replace dst atomically (as an ACME client does) by a root-owned copy of src."""
    tmp = str(dst) + ".tmp"
    shutil.copy(str(src), tmp)
    os.chown(tmp, 0, 0)
    os.chmod(tmp, mode)
    os.rename(tmp, str(dst))


def start_root_key(ternd, certs, pubdir):
    """ternd (implicit TLS listener "tls") whose key is 0600 root; the daemon's
    user can reach its conf (it re-reads it on reload) but not the key."""
    cert, key = pubdir / "cert.pem", pubdir / "key.pem"
    put_root_only(certs.cert, cert, 0o644)
    put_root_only(certs.key, key, 0o600)
    t = ternd(listeners=[("tls", "relay tls")],
              extra_conf="tls-cert %s\ntls-key %s\n" % (cert, key))
    p = os.path.dirname(t.conf_path)
    while p not in ("/", "/tmp"):
        os.chmod(p, os.stat(p).st_mode | 0o001)
        p = os.path.dirname(p)
    helper = int(t.wait_log(r"privileged helper pid=(\d+) started").group(1))
    return t, cert, key, helper


def reloads(t, what):
    return len(re.findall(r"reload " + what, t.log()))


def sighup_and_wait(t, what):
    """SIGHUP, then wait until one more "reload done" / "reload failed" is logged."""
    n = reloads(t, what)
    os.kill(t.pid, signal.SIGHUP)
    t.wait_log(r"(?s)" + r".*".join(["reload " + what] * (n + 1)))


def test_reload_reads_root_only_key_through_the_helper(ternd, certs, pubdir):
    pw = need_root()
    t, cert, key, helper = start_root_key(ternd, certs, pubdir)
    # the helper is root and a child of ternd; the daemon is not root
    hs, ds = proc_status(helper), proc_status(t.pid)
    assert hs is not None and int(hs["PPid"]) == t.pid
    assert uids(hs) == [0, 0, 0, 0]
    assert uids(ds) == [pw.pw_uid] * 4
    old_der = der_of(cert)
    assert served_der(t.port("tls")) == old_der

    new_cert, new_key = certs.make_leaf("mx.test", ["DNS:mx.test", "DNS:localhost"],
                                        tag="-privsep")
    put_root_only(new_cert, cert, 0o644)
    put_root_only(new_key, key, 0o600)
    new_der = der_of(new_cert)
    assert new_der != old_der
    sighup_and_wait(t, "done")
    assert reloads(t, "failed") == 0, t.log()
    t.wait_log(r"reload: 1 certificate pair read by the privileged helper")
    assert served_der(t.port("tls")) == new_der

    # a broken new key: refused with a log line, the running certificate stays
    Path(key).write_text("not a key\n")
    sighup_and_wait(t, "failed")
    assert re.search(r"reload failed: tls-key %s: " % re.escape(str(key)), t.log())
    assert served_der(t.port("tls")) == new_der

    # a key that does not match the certificate: the same
    put_root_only(certs.key, key, 0o600)
    sighup_and_wait(t, "failed")
    assert "does not match tls-cert" in t.log()
    assert served_der(t.port("tls")) == new_der

    # `ternctl reload` takes the same path
    put_root_only(new_key, key, 0o600)
    r = t.ternctl("reload")
    assert r.returncode == 0, r.stderr
    assert reloads(t, "done") == 2
    assert served_der(t.port("tls")) == new_der


def test_helper_refuses_a_configuration_the_daemon_user_could_write(ternd, certs, pubdir):
    """A configuration file the daemon's user could edit would let a
    compromised daemon name any file as a key: the helper refuses it."""
    pw = need_root()
    t, cert, key, helper = start_root_key(ternd, certs, pubdir)
    os.chown(t.conf_path, pw.pw_uid, pw.pw_gid)
    os.kill(t.pid, signal.SIGHUP)
    t.wait_log(r"reload failed: .*tern\.conf: not owned by root, or writable by others")
    assert served_der(t.port("tls")) == der_of(cert)
    os.chown(t.conf_path, 0, 0)
    os.chmod(t.conf_path, 0o646)
    sighup_and_wait(t, "failed")
    assert reloads(t, "failed") == 2 and reloads(t, "done") == 0


def test_helper_dies_with_the_daemon(ternd, certs, pubdir):
    need_root()
    t, cert, key, helper = start_root_key(ternd, certs, pubdir)
    assert proc_status(helper) is not None
    t.kill9()
    deadline = time.monotonic() + 5
    while True:
        st = proc_status(helper)
        if st is None or st["State"].strip().startswith(("Z", "X")):
            break
        assert time.monotonic() < deadline, \
            "helper pid %d still alive 5 s after ternd was SIGKILLed: %r" % (
                helper, st["State"])
        time.sleep(0.02)


def test_helper_exits_when_ternd_stops(ternd, certs, pubdir):
    need_root()
    t, cert, key, helper = start_root_key(ternd, certs, pubdir)
    t.stop()
    st = proc_status(helper)
    assert st is None or st["State"].strip().startswith(("Z", "X"))


# ---------------------------------------------------------------- hardening

def test_running_daemon_is_hardened(ternd, certs, pubdir):
    pw = need_root()
    t, cert, key, helper = start_root_key(ternd, certs, pubdir)
    st = proc_status(t.pid)
    assert st["NoNewPrivs"].strip() == "1"
    for field in ("CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb"):
        assert int(st[field], 16) == 0, (field, st[field])
    assert 0 not in uids(st) and uids(st) == [pw.pw_uid] * 4
    assert 0 not in [int(x) for x in st["Gid"].split()]
    assert st["Groups"].split() == [str(pw.pw_gid)]
    # the helper keeps root and what it needs to read root's files
    hs = proc_status(helper)
    assert uids(hs) == [0, 0, 0, 0] and int(hs["CapBnd"], 16) != 0
    # and every thread of the daemon, not just the main one
    for tid in os.listdir("/proc/%d/task" % t.pid):
        ts = open("/proc/%d/task/%s/status" % (t.pid, tid)).read()
        assert re.search(r"^NoNewPrivs:\s+1$", ts, re.M), tid
        assert re.search(r"^CapBnd:\s+0+$", ts, re.M), tid


def test_started_unprivileged_no_helper_and_reload_reads_the_files(ternd, certs, pubdir):
    """ternd started as an ordinary user: no helper (nothing to keep), the
    reload reads the files with that user's rights, no_new_privs is set."""
    pw = need_root()
    q = pubdir / "queue"
    q.mkdir()
    os.chown(q, pw.pw_uid, pw.pw_gid)
    cert, key = pubdir / "cert.pem", pubdir / "key.pem"
    for src, dst in ((certs.cert, cert), (certs.key, key)):
        shutil.copy(str(src), str(dst))
        os.chown(dst, pw.pw_uid, pw.pw_gid)
    os.chmod(key, 0o600)
    t = ternd(start=False, user=None, queue_dir=str(q), listeners=[("tls", "relay tls")],
              extra_conf="tls-cert %s\ntls-key %s\n" % (cert, key))
    conf = pubdir / "tern.conf"
    conf.write_text(t.conf_text)
    log_path = pubdir / "ternd.log"
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen([str(t.bins.ternd), "-c", str(conf)], stdin=subprocess.DEVNULL,
                                stdout=logf, stderr=logf, env=t.env, cwd=str(pubdir),
                                user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])

    def wait_for(pattern, n=1):
        deadline = time.monotonic() + 15
        while len(re.findall(pattern, log_path.read_text(errors="replace"))) < n:
            assert proc.poll() is None, "ternd exited:\n" + log_path.read_text()
            assert time.monotonic() < deadline, "no %r:\n%s" % (pattern, log_path.read_text())
            time.sleep(0.05)

    try:
        wait_for(r" ready ")
        st = proc_status(proc.pid)
        assert st["NoNewPrivs"].strip() == "1" and uids(st) == [pw.pw_uid] * 4
        assert "privileged helper" not in log_path.read_text()
        new_cert, new_key = certs.make_leaf("mx.test", ["DNS:mx.test"], tag="-unpriv")
        for src, dst in ((new_cert, cert), (new_key, key)):
            shutil.copy(str(src), str(dst))
        os.kill(proc.pid, signal.SIGHUP)
        wait_for(r"reload done")
        assert served_der(t.port("tls")) == der_of(new_cert)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("ternd did not stop on SIGTERM")
    text = log_path.read_text(errors="replace")
    assert rc == 0, text
    assert not any(p in text for p in SANITIZER_PATTERNS), text
