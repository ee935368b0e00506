"""Disk faults: a full file system, write and sync errors, kill -9 in a loop.

Each case counts the messages clients saw acknowledged (250) and what reached
a real SMTP sink: nothing acknowledged is lost, nothing refused is delivered,
duplicates are reported (and allowed only where a crash makes them so).

- the full disk is a small loop-mounted ext4 image (tmpfs if the image cannot
  be mounted) holding the queue: root is needed; without it the tests skip,
  and under CI=true they fail;
- write and sync errors come from tests/shim/fault_io.c (LD_PRELOAD), which
  fails pwrite/pwritev or fdatasync/fsync on chosen files while a trigger file
  exists;
- kill -9 is sent by PID, a bounded number of times.
"""

import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from conftest import RawSMTP
from test_smtp_basic import QID, stuff

CI = os.environ.get("CI") == "true"
TOKEN_RE = re.compile(rb"^X-Fault-Token: (\S+)\r?$", re.M)


def need_root():
    if os.geteuid() != 0:
        if CI:
            pytest.fail("disk fault tests need root (mount) and CI=true")
        pytest.skip("disk fault tests need root (mount)")


def body(token, size):
    line = (b"%s " % token.encode()) * 10 + b"\r\n"
    fill = line * max(1, size // len(line))
    return (b"Subject: fault %s\r\nX-Fault-Token: %s\r\n\r\n" % (token.encode(), token.encode())
            + fill)


def send_one(c, token, size, rcpt="r@example.com"):
    """One transaction on an open RawSMTP: (code, last reply line)."""
    c.send("MAIL FROM:<s@client.test>\r\nRCPT TO:<%s>\r\nDATA\r\n" % rcpt)
    r = c.reply(timeout=30)
    if r.code != 250:
        c.reply(timeout=30)
        c.reply(timeout=30)
        return r.code, r.lines[-1]
    c.expect(250)
    c.expect(354)
    c.send(stuff(body(token, size)) + b".\r\n")
    r = c.reply(timeout=30)
    return r.code, r.lines[-1]


def send_fresh(port, token, size=1000):
    """One message on a connection of its own: (code, last reply line)."""
    c = RawSMTP(port, timeout=30)
    c.greeting()
    c.ehlo()
    code, line = send_one(c, token, size)
    c.close()
    return code, line


class Tally:
    """What clients were told, per token."""

    def __init__(self):
        self.acked = {}         # token -> qid
        self.refused = {}       # token -> reply line
        self.lock = threading.Lock()

    def add(self, token, code, line):
        with self.lock:
            if code == 250:
                m = QID.match(line)
                assert m, "250 without a queue id: %r" % line
                self.acked[token] = m.group(1)
            else:
                self.refused[token] = "%d %s" % (code, line)


def token_of(m):
    """The X-Fault-Token of a sink message (a bounce quotes its original's), or None."""
    mt = TOKEN_RE.search(m.data if isinstance(m.data, bytes) else m.data.encode())
    return mt.group(1).decode() if mt else None


def is_bounce(m):
    return m.mail_from in ("", "<>")


def delivered(sink):
    """{token: times delivered} of what the sink received (bounces aside)."""
    out = {}
    for m in list(sink.messages):
        tok = token_of(m)
        if tok is not None and not is_bounce(m):
            out[tok] = out.get(tok, 0) + len(m.rcpt_tos)
    return out


def bounces(sink):
    """Tokens of the messages the sink got a bounce (DSN) for."""
    return [token_of(m) for m in list(sink.messages) if is_bounce(m)]


def wait_delivered(sink, tokens, timeout, t=None):
    deadline = time.monotonic() + timeout
    while True:
        got = delivered(sink)
        missing = [k for k in tokens if k not in got]
        if not missing:
            return got
        if time.monotonic() > deadline:
            pytest.fail("%d of %d acknowledged messages never delivered: %r\n%s" % (
                len(missing), len(tokens), missing[:10],
                t.log_all()[-6000:] if t is not None else ""))
        time.sleep(0.1)


def route_to(t, port):
    """Point the catch-all route (the conf's last line) at a sink."""
    lines = t.conf_path.read_text().splitlines()
    assert lines[-1].startswith("route * "), lines[-1]
    lines[-1] = "route * smtp:[127.0.0.1]:%d" % port
    t.conf_text = "\n".join(lines) + "\n"
    t.conf_path.write_text(t.conf_text)


def report(name, tally, got, recover_s, logline):
    """One line of figures: delivered counts distinct messages; extra = delivered
    but never acknowledged (in flight at a crash: durable, the client saw no 250)."""
    dups = sorted(k for k, n in got.items() if n > 1)
    lost = [k for k in tally.acked if k not in got]
    extra = [k for k in got if k not in tally.acked]
    print("\n%s: acknowledged=%d refused=%d delivered=%d lost=%d duplicated=%d "
          "extra=%d recover=%.1fs log: %s" % (
              name, len(tally.acked), len(tally.refused), len(got), len(lost),
              len(dups), len(extra), recover_s, logline))


# ---------------------------------------------------------------- (a) a full disk

def avail(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def fill(path, name):
    """Write zeros into path/name until the file system is full (ENOSPC)."""
    chunk = b"\0" * (1 << 20)
    with open(os.path.join(path, name), "ab", buffering=0) as f:
        for size in (1 << 20, 4096, 512):
            buf = chunk[:size]
            for _ in range(1 << 16):
                try:
                    f.write(buf)
                except OSError:
                    break
        try:
            os.fsync(f.fileno())
        except OSError:
            pass


@pytest.fixture
def small_disk():
    """A 64 MiB ext4 file system on a loop device (or a tmpfs), unmounted at teardown."""
    need_root()
    top = Path(tempfile.mkdtemp(prefix="terndisk-", dir="/tmp"))
    os.chmod(top, 0o755)
    img, mnt = top / "disk.img", top / "mnt"
    mnt.mkdir()
    kind = "ext4"
    try:
        with open(img, "wb") as f:
            f.truncate(64 << 20)
        r = subprocess.run(["mkfs.ext4", "-F", "-q", "-m", "0", "-E",
                            "lazy_itable_init=0,lazy_journal_init=0", str(img)],
                           capture_output=True, timeout=60)
        if r.returncode == 0:
            r = subprocess.run(["mount", "-o", "loop", str(img), str(mnt)],
                               capture_output=True, timeout=60)
        if r.returncode != 0:
            kind = "tmpfs"
            r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755",
                                "tmpfs", str(mnt)], capture_output=True, timeout=60)
        if r.returncode != 0:
            msg = "cannot mount a small file system: %s" % r.stderr.decode(errors="replace")
            if CI:
                pytest.fail(msg)
            pytest.skip(msg)
        os.chmod(mnt, 0o755)
        yield mnt, kind
    finally:
        for _ in range(50):
            if not os.path.ismount(mnt):
                break
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        shutil.rmtree(top, ignore_errors=True)


def load(port, tally, prefix, size, until_refused, limit):
    """Send messages on one connection until until_refused replies were 452 (or limit)."""
    c = RawSMTP(port, timeout=30)
    c.greeting()
    c.ehlo()
    refused = 0
    for i in range(limit):
        tok = "%s-%d" % (prefix, i)
        code, line = send_one(c, tok, size)
        assert code in (250, 452), "unexpected reply %d %s" % (code, line)
        if code == 452:
            assert line.startswith("4.3.1"), "452 without 4.3.1: %r" % line
            refused += 1
        tally.add(tok, code, line)
        if refused >= until_refused:
            break
    c.close()
    return refused


def test_disk_full(ternd, sink, small_disk):
    mnt, kind = small_disk
    s = sink()
    t = ternd(queue_dir=str(mnt / "q"),
              extra_conf="segment-size 1M\nqueue-reserve 8M\nretry 1h")
    reserve = mnt / "q" / "reserve"
    assert reserve.stat().st_blocks * 512 >= 8 << 20, "no reserve allocated"
    tally = Tally()

    # 1. the disk fills while mail comes in: 250 or 452 4.3.1, nothing else
    keep = (4 << 20) + (6 << 20)
    with open(mnt / "filler1", "wb") as f:
        f.truncate(0)
    fill_to = avail(mnt) - keep
    if fill_to > 0:
        with open(mnt / "filler1", "wb") as f:
            f.write(b"\0" * fill_to)
            os.fsync(f.fileno())
    refused = load(t.port(), tally, "a", 200 << 10, 3, 200)
    assert refused == 3, "the queue never refused mail on a filling disk"
    assert len(tally.acked) > 0
    t.wait_log(r"queue: disk nearly full", timeout=10)

    # 2. now to 0 bytes free while ternd runs: it gives back its reserve down
    # to the quarter kept for a start, keeps refusing, keeps listing
    floor = "reserve released to %d bytes so that delivery" % (2 << 20)
    deadline = time.monotonic() + 10
    while floor not in t.log():
        fill(mnt, "filler2")
        assert time.monotonic() < deadline, "reserve not released:\n" + t.log()[-3000:]
        time.sleep(0.05)
    fill(mnt, "filler2")
    code, line = send_fresh(t.port(), "full-running")
    assert (code, line[:5]) == (452, "4.3.1"), (code, line)
    tally.add("full-running", code, line)
    # refused at MAIL: no body is sent for nothing
    c = RawSMTP(t.port(), timeout=30)
    c.greeting()
    c.ehlo()
    c.cmd("MAIL FROM:<s@client.test>", 452, "4.3.1")
    c.close()
    assert "reason=queue-disk-full" in t.log()
    assert set(tally.acked.values()) <= t.queue_ids()

    # 3. stop and start on the full disk; offline ternctl reads the queue
    t.stop()
    fill(mnt, "filler2")
    assert avail(mnt) < (1 << 20), "the disk is not full: %d bytes free" % avail(mnt)
    offline = t.queue_ids()
    assert set(tally.acked.values()) <= offline, "offline listing misses mail"
    qid0 = next(iter(tally.acked.values()))
    r = t.ternctl("show", qid0)
    assert r.returncode == 0, r.stderr
    r = t.ternctl("stats")
    assert r.returncode == 0, r.stderr

    fill(mnt, "filler2")
    route_to(t, s.port)
    t0 = time.monotonic()
    t.start()
    t.wait_log(r"reserve released to 0 bytes to open the queue", timeout=1)
    assert set(tally.acked.values()) <= t.queue_ids()
    code, line = send_fresh(t.port(), "full-started")
    assert (code, line[:5]) == (452, "4.3.1"), (code, line)
    tally.add("full-started", code, line)
    # a bounce on the full disk: the DSN replaces the message bounced
    tok_b, qid_b = next(iter(tally.acked.items()))
    r = t.ternctl("bounce", qid_b)
    assert r.returncode == 0, r.stderr
    del tally.acked[tok_b]
    t.ternctl("retry", "all")
    got = wait_delivered(s, list(tally.acked), 60, t)
    deadline = time.monotonic() + 20
    while tok_b not in bounces(s):
        assert time.monotonic() < deadline, "no bounce for %s:\n%s" % (
            qid_b, t.log()[-3000:])
        time.sleep(0.1)
    recover = time.monotonic() - t0
    for tok in tally.refused:
        assert tok not in got, "refused message %s was delivered" % tok
    assert tok_b not in got, "bounced message %s was also delivered" % tok_b
    m = re.search(r"^.*queue: disk nearly full.*$", t.log_all(), re.M)
    report("disk full (%s)" % kind, tally, got, recover, m.group(0) if m else "-")
    dups = [k for k, n in got.items() if n > 1]
    assert not dups, "duplicates after a clean stop: %r" % dups

    # 4. space returns: the reserve is made again and mail is accepted
    os.unlink(mnt / "filler1")
    os.unlink(mnt / "filler2")
    t.wait_log(r"queue: disk space back", timeout=15)
    code, line = send_fresh(t.port(), "after")
    assert code == 250, (code, line)
    assert reserve.stat().st_blocks * 512 >= 8 << 20


# ---------------------------------------------------------------- (b) EIO on write and sync

@pytest.fixture
def shim(tern_bin):
    """shim(path, ops) -> (env for ternd with the fault shim preloaded, trigger
    Path): faults happen while the trigger file exists."""
    lib = Path(tern_bin.build_dir) / "tests" / "libfault_io.so"
    if not lib.exists():
        msg = "fault shim not built: %s" % lib
        if CI:
            pytest.fail(msg)
        pytest.skip(msg)
    dirs = []

    def make(path, ops):
        # ternd runs as an unprivileged user: the trigger's directory is open to it
        tdir = Path(tempfile.mkdtemp(prefix="ternfault-", dir="/tmp"))
        os.chmod(tdir, 0o755)
        dirs.append(tdir)
        trigger = tdir / "fault.on"
        env = {"LD_PRELOAD": str(lib), "TERN_FAULT_TRIGGER": str(trigger),
               "TERN_FAULT_PATH": path, "TERN_FAULT_OPS": ops}
        if tern_bin.asan:
            # the sanitizer runtime wants to come first; the shim only wraps libc calls
            env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:verify_asan_link_order=0"
        return env, trigger

    yield make
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


def send_batch(port, tally, prefix, n, threads=4, size=2000):
    """n messages over `threads` connections at once (so that groups have several)."""
    errors = []

    def run(k):
        try:
            c = RawSMTP(port, timeout=30)
            c.greeting()
            c.ehlo()
            for i in range(k, n, threads):
                tok = "%s-%d" % (prefix, i)
                code, line = send_one(c, tok, size)
                tally.add(tok, code, line)
            c.close()
        except BaseException as e:    # reported below
            errors.append(e)

    ths = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    for th in ths:
        th.start()
    for th in ths:
        th.join(60)
    if errors:
        raise errors[0]


def deliver_all(t, s, tally, timeout=60):
    """Route to sink s, start t, deliver everything; the delivered tally."""
    route_to(t, s.port)
    t0 = time.monotonic()
    t.start()
    t.ternctl("retry", "all")
    got = wait_delivered(s, list(tally.acked), timeout, t)
    recover = time.monotonic() - t0
    deadline = time.monotonic() + timeout
    while t.queue_ids() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not t.queue_ids(), "queue not drained: %r" % t.queue()
    got = delivered(s)
    for tok in tally.refused:
        assert tok not in got, "refused message %s (%s) was delivered" % (
            tok, tally.refused[tok])
    return got, recover


@pytest.mark.parametrize("ops", ["sync", "write"])
def test_segment_io_error(ternd, sink, shim, ops):
    # the segment files fail: 451 4.3.0, one log line per failed group
    env, trigger = shim("/segments/", ops)
    s = sink()
    t = ternd(env=env, extra_conf="segment-size 1M\nretry 1h")
    tally = Tally()
    send_batch(t.port(), tally, "ok1", 8)
    assert len(tally.acked) == 8 and not tally.refused
    trigger.touch()
    send_batch(t.port(), tally, "bad", 12)
    assert not [k for k in tally.acked if k.startswith("bad")], \
        "250 for data that did not reach the disk: %r" % tally.acked
    for tok, line in tally.refused.items():
        assert line.startswith("451 4.3.0"), line
    op = "fdatasync" if ops == "sync" else "write"
    lines = re.findall(r"queue: %s failed segment=[0-9a-f]{8} offset=\d+ length=\d+ "
                       r"messages=(\d+): .*segment abandoned" % op, t.log())
    assert lines, "no log line for the failed %s:\n%s" % (op, t.log()[-3000:])
    assert sum(int(n) for n in lines) <= len(tally.refused)
    assert len(lines) <= len(tally.refused)
    trigger.unlink()
    send_batch(t.port(), tally, "ok2", 8)
    assert len([k for k in tally.acked if k.startswith("ok2")]) == 8, tally.refused
    t.stop()
    got, recover = deliver_all(t, s, tally)
    report("EIO on segment %s" % op, tally, got, recover, lines and re.search(
        r"^.*queue: %s failed.*$" % op, t.log_all(), re.M).group(0))
    assert not [k for k, n in got.items() if n > 1]


def test_sync_error_everywhere_then_crash(ternd, sink, shim):
    # every sync fails (the segment's and the index's): the cut cannot be
    # recorded, the queue refuses all mail until restarted; after kill -9
    # and a start on a healthy disk, no refused message comes back
    env, trigger = shim("", "sync")
    s = sink()
    t = ternd(env=env, extra_conf="segment-size 1M\nretry 1h")
    tally = Tally()
    send_batch(t.port(), tally, "ok", 8)
    trigger.touch()
    send_batch(t.port(), tally, "bad", 8)
    assert not [k for k in tally.acked if k.startswith("bad")]
    assert len(tally.refused) == 8, tally.refused
    t.wait_log(r"queue: fdatasync failed segment=")
    t.kill9()
    trigger.unlink()
    got, recover = deliver_all(t, s, tally)
    report("EIO on every sync + kill -9", tally, got, recover, re.search(
        r"^.*queue: fdatasync failed.*$", t.log_all(), re.M).group(0))


# ---------------------------------------------------------------- (c) kill -9 in a loop

ROUNDS = 5


def test_kill9_loop_during_accept(ternd, sink):
    s = sink()
    t = ternd(extra_conf="segment-size 1M\nretry 1h")
    tally = Tally()
    t0 = time.monotonic()
    for rnd in range(ROUNDS):
        if not t.running:
            t.start()
        stop = threading.Event()
        errors = []

        def run(k, rnd=rnd):
            i = 0
            try:
                c = RawSMTP(t.port(), timeout=10)
                c.greeting()
                c.ehlo()
                while not stop.is_set() and i < 2000:
                    tok = "r%d-c%d-%d" % (rnd, k, i)
                    code, line = send_one(c, tok, 3000 + 200 * k)
                    tally.add(tok, code, line)
                    i += 1
            except (OSError, EOFError, AssertionError, TimeoutError) as e:
                errors.append(e)      # the kill cut the connection: expected

        ths = [threading.Thread(target=run, args=(k,)) for k in range(4)]
        for th in ths:
            th.start()
        before = len(tally.acked)
        deadline = time.monotonic() + 10
        while len(tally.acked) < before + 20 + 10 * rnd and time.monotonic() < deadline:
            time.sleep(0.01)
        t.kill9()
        stop.set()
        for th in ths:
            th.join(30)
    t.start()
    ids = t.queue_ids()
    lost = [k for k, q in tally.acked.items() if q not in ids]
    assert not lost, "acknowledged and lost after kill -9: %r" % lost[:10]
    t.stop()
    got, recover = deliver_all(t, s, tally)
    report("kill -9 x%d during accept" % ROUNDS, tally, got, time.monotonic() - t0,
           "-")
    assert not [k for k, n in got.items() if n > 1]


def test_kill9_loop_during_delivery(ternd, sink):
    from test_delivery import slow_data
    s = sink()
    delay = [0.05]
    slow_data(s, delay)
    t = ternd(extra_conf="segment-size 1M\nretry 1h\nmax-dest-connections 2")
    tally = Tally()
    send_batch(t.port(), tally, "d", 60)
    assert len(tally.acked) == 60
    t.stop()
    route_to(t, s.port)
    t0 = time.monotonic()
    for rnd in range(ROUNDS):
        t.start()
        t.ternctl("retry", "all")
        target = min(60, len(delivered(s)) + 6)
        deadline = time.monotonic() + 20
        while len(delivered(s)) < target and time.monotonic() < deadline:
            time.sleep(0.01)
        t.kill9()
    delay[0] = 0.0
    got, _ = deliver_all(t, s, tally)
    recover = time.monotonic() - t0
    dups = sorted(k for k, n in got.items() if n > 1)
    report("kill -9 x%d during delivery" % ROUNDS, tally, got, recover,
           "duplicates: %r" % dups[:10])
