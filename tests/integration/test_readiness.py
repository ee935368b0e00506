"""Readiness for systemd (Type=notify) and the command-line basics.

ternd writes sd_notify(3) datagrams to $NOTIFY_SOCKET itself (no
libsystemd): READY=1 once its listeners accept, RELOADING=1 ... READY=1
around a reload, STOPPING=1 when it stops. The test plays systemd: a
datagram socket of its own in a directory the run-time user can write to.
"""

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest


class NotifySocket:
    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="ternn-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.path = self.dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        os.chmod(self.path, 0o666)      # ternd sends after the privilege drop

    def next(self, timeout=10.0):
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def close(self):
        self.sock.close()
        self.path.unlink()
        self.dir.rmdir()


@pytest.fixture
def notify():
    n = NotifySocket()
    yield n
    n.close()


def test_ready_reloading_stopping(ternd, notify):
    t = ternd(start=False, env={"NOTIFY_SOCKET": str(notify.path)})
    t.start()
    assert notify.next() == "READY=1"
    # READY=1 means the listener accepts: a client gets its greeting now
    with socket.create_connection(t.addr(), timeout=5) as c:
        assert c.recv(512).startswith(b"220 ")
    os.kill(t.pid, signal.SIGHUP)
    msg = notify.next()
    assert msg.startswith("RELOADING=1\nMONOTONIC_USEC="), msg
    assert int(msg.split("=")[-1]) > 0
    assert notify.next() == "READY=1"
    t.stop()
    assert notify.next() == "STOPPING=1"


def test_version_and_help(tern_bin):
    for prog in (tern_bin.ternd, tern_bin.ternctl):
        r = subprocess.run([str(prog), "--version"], capture_output=True, timeout=10)
        assert r.returncode == 0
        assert r.stdout.decode().startswith("%s 0." % prog.name), r.stdout
    r = subprocess.run([str(tern_bin.ternd), "--help"], capture_output=True, timeout=10)
    assert r.returncode == 0, r
    assert r.stdout.decode().startswith("usage: ternd"), r.stdout
    assert b"invalid option" not in r.stderr


def test_ternctl_unknown_command_one_line(tern_bin):
    r = subprocess.run([str(tern_bin.ternctl), "-c", "/nonexistent", "frobnicate"],
                       capture_output=True, timeout=10)
    assert r.returncode == 2
    err = r.stderr.decode().splitlines()
    assert err == ["ternctl: unknown command: frobnicate (ternctl --help lists "
                   "the commands)"], err
