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
  set, a non-root uid (/proc/PID/status).
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

from conftest import IN_CI, default_user

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
