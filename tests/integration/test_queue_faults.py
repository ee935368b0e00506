"""Queue faults: the segments are the truth, the index (BDB) is a cache.

Each case queues N messages behind a dead route, stops ternd, damages the
queue directory the way an operator or a sick disk would, starts ternd
again, checks the log line that names what recovery did, then points the
route at an aiosmtpd sink and counts: acknowledged, delivered, lost (must
be 0), duplicated (reported), and the time to recover (start to ready).
Run with -s to see the figures.
"""

import os
import re
import shutil
import time

import pytest

from conftest import RawSMTP

N = 200
SEG = "segment-size 1M\nretry 1h"
TOKEN = re.compile(rb"X-Fault-Token: (\d+)")
QID = re.compile(r"queued as ([0-9A-Fa-f]{16})")


def fill(t, n, rcpt=lambda i: "r%d@example.com" % i, first=0, body_lines=180):
    """Queue n messages in one pipelined session: {token: qid} of the 250s."""
    acked = {}
    c = RawSMTP(t.port(), timeout=30)
    c.greeting()
    c.ehlo()
    for i in range(first, first + n):
        body = (b"Subject: fault %d\r\nX-Fault-Token: %d\r\n\r\n" % (i, i)
                + (b"filler line %d .................................................\r\n" % i) * body_lines)
        c.send("MAIL FROM:<s@client.test>\r\nRCPT TO:<%s>\r\nDATA\r\n" % rcpt(i))
        c.expect(250)
        c.expect(250)
        c.expect(354)
        c.send(body + b".\r\n")
        r = c.reply(timeout=30)
        m = QID.search(r.lines[-1]) if r.code == 250 else None
        assert m, "message %d not queued: %r" % (i, r)
        acked[i] = m.group(1)
    c.close()
    return acked


def route_to(t, port):
    """Rewrite the last `route *` line of t's config to port."""
    lines = t.conf_text.splitlines()
    lines = [l for l in lines if not l.startswith("route * ")]
    lines.append("route * smtp:[127.0.0.1]:%d" % port)
    t.conf_text = "\n".join(lines) + "\n"
    t.conf_path.write_text(t.conf_text)


def timed_start(t):
    t0 = time.monotonic()
    t.start()
    return time.monotonic() - t0


def deliver_all(t, sink, expect, timeout=40, left=0):
    """Retry everything, wait until the queue holds only `left` messages
    (or timeout), count."""
    r = t.ternctl("retry", "all")
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = {int(m.group(1)) for m in
               (TOKEN.search(x.data) for x in list(sink.messages)) if m}
        if expect <= got and len(t.queue_ids()) <= left:
            break
        time.sleep(0.2)
    counts = {}
    for x in list(sink.messages):
        m = TOKEN.search(x.data)
        if m:
            counts[int(m.group(1))] = counts.get(int(m.group(1)), 0) + 1
    return counts


def report(name, acked, counts, recover_s, line, extra=""):
    delivered = set(counts)
    lost = set(acked) - delivered
    dups = sum(c - 1 for c in counts.values() if c > 1)
    print("\nFAULT %-24s acked=%d delivered=%d lost=%d duplicated=%d recover=%.2fs %s\n"
          "  log: %s" % (name, len(acked), len(delivered & set(acked)), len(lost), dups,
                         recover_s, extra, line))
    return lost, dups


def damage_delete_index(q):
    os.unlink(q / "db" / "envelopes.db")


def damage_delete_index_logs(q):
    for p in (q / "db").iterdir():
        if p.name == "envelopes.db" or p.name.startswith(("log.", "__db.")):
            p.unlink()


def damage_delete_logs(q):
    for p in (q / "db").iterdir():
        if p.name.startswith(("log.", "__db.")):
            p.unlink()


def damage_delete_db(q):
    for p in (q / "db").iterdir():
        p.unlink()


def damage_truncate_index(q):
    p = q / "db" / "envelopes.db"
    os.truncate(p, os.path.getsize(p) // 2)


def damage_garbage_index(q):
    p = q / "db" / "envelopes.db"
    size = os.path.getsize(p)
    with open(p, "r+b") as f:
        for off in range(0, size, 4096):       # every page, past its header
            f.seek(off + 64)
            f.write(os.urandom(256))


CASES = [
    ("index_deleted", damage_delete_index, r"cause=\"index missing"),
    ("index_and_logs_deleted", damage_delete_index_logs, r"cause=\"index missing"),
    ("db_all_deleted", damage_delete_db, r"cause=\"index missing"),
    ("logs_deleted", damage_delete_logs, r"cause=\"index damaged"),
    ("index_truncated", damage_truncate_index, r"cause=\"index damaged"),
    ("index_garbage", damage_garbage_index, r"cause=\"index damaged"),
]


@pytest.mark.parametrize("name,damage,cause", CASES, ids=[c[0] for c in CASES])
def test_index_fault(ternd, sink, name, damage, cause):
    t = ternd(extra_conf=SEG)
    acked = fill(t, N)
    t.stop()
    damage(t.queue_dir)
    recover = timed_start(t)
    m = t.wait_log(r"queue: index rebuilt from segments: " + cause + r".*")
    assert re.search(r"messages=%d " % N, m.group(0)), m.group(0)
    assert len(t.queue_ids()) == N
    assert any(p.name.startswith("db.damaged.") for p in t.queue_dir.iterdir())
    s = sink()
    route_to(t, s.port)
    t.restart()
    counts = deliver_all(t, s, set(acked))
    lost, dups = report(name, acked, counts, recover, m.group(0))
    assert not lost, "lost %d acknowledged messages" % len(lost)


def copy_owned(src, dst):
    """Copy a file keeping its owner (the tests may run as root, ternd not)."""
    shutil.copy(src, dst)
    st = os.stat(src)
    os.chown(dst, st.st_uid, st.st_gid)


def foreign_whole_db(t, other):
    for p in (t.queue_dir / "db").iterdir():
        p.unlink()
    for p in (other.queue_dir / "db").iterdir():
        copy_owned(p, t.queue_dir / "db" / p.name)


def foreign_envelopes_db(t, other):
    copy_owned(other.queue_dir / "db" / "envelopes.db", t.queue_dir / "db" / "envelopes.db")


FOREIGN = [
    ("index_of_other_queue", foreign_whole_db, r"index of another queue"),
    # only envelopes.db replaced: the two files' stamps differ
    ("envelopes_of_other_queue", foreign_envelopes_db,
     r"envelopes.db and meta.db do not belong together"),
]


@pytest.mark.parametrize("name,swap,cause", FOREIGN, ids=[c[0] for c in FOREIGN])
def test_index_from_another_queue(ternd, sink, name, swap, cause):
    t = ternd(extra_conf=SEG)
    other = ternd(extra_conf=SEG)
    acked = fill(t, N)
    fill(other, 20, first=10000)
    t.stop()
    other.stop()
    swap(t, other)
    recover = timed_start(t)
    m = t.wait_log(r"queue: index rebuilt from segments: cause=\"%s.*" % cause)
    s = sink()
    route_to(t, s.port)
    t.restart()
    counts = deliver_all(t, s, set(acked))
    lost, dups = report(name, acked, counts, recover, m.group(0))
    assert not lost
    assert not any(k >= 10000 for k in counts), "the other queue's mail was delivered"


def last_used_segment(q):
    segs = sorted((q / "segments").glob("*.seg"))
    for p in reversed(segs):
        with open(p, "rb") as f:
            if f.read(4) == b"TNRQ":
                return p
    raise AssertionError("no segment with records in %s" % q)


def last_record(q):
    """(segment path, offset of its last record): records are packed from 0."""
    seg = last_used_segment(q)
    data = seg.read_bytes()
    off, last = 0, None
    while off + 28 <= len(data) and data[off:off + 4] == b"TNRQ":
        last = off
        off += 28 + int.from_bytes(data[off + 20:off + 24], "big")
    return seg, last


def test_last_segment_truncated_mid_record(ternd, sink):
    t = ternd(extra_conf=SEG)
    acked = fill(t, N)
    t.stop()
    seg, last = last_record(t.queue_dir)
    os.truncate(seg, last + 100)
    recover = timed_start(t)
    m = t.wait_log(r"queue: id=\S+ segment=%s offset=%d: .*held as corrupt"
                   % (seg.stem, last))
    held = [x for x in t.queue() if x.get("corrupt")]
    assert len(held) == 1, held
    s = sink()
    route_to(t, s.port)
    t.restart()
    counts = deliver_all(t, s, set(acked) - {max(acked)}, left=1)
    lost, dups = report("last_segment_truncated", acked, counts, recover, m.group(0),
                        "held_corrupt=1")
    assert "index unusable" not in t.log_all()
    # the one record the fault destroyed is held and shown, not silently lost
    assert lost == {max(acked)}, lost
    assert held[0]["id"] == acked[max(acked)]


def test_kill9_during_copy_forward(ternd, sink):
    """Most of each segment deleted, so copy-forward runs; kill -9 while it
    does, a few times; then nothing kept is lost and nothing deleted comes back."""
    t = ternd(extra_conf=SEG)
    acked = fill(t, N, rcpt=lambda i: ("keep%d@example.com" if i % 5 == 0
                                       else "gone%d@example.com") % i)
    keep = {i for i in acked if i % 5 == 0}
    r = t.ternctl("delete", "--all-matching", "--to", "gone")
    assert r.returncode == 0, r.stderr
    assert len(t.queue_ids()) == len(keep)
    kills = 0
    for _ in range(4):
        if not t.running:
            t.start()
        try:
            t.wait_log(r"copy-forward segment=", timeout=4)
        except BaseException:
            break
        t.kill9()
        kills += 1
    assert kills >= 1, "copy-forward never ran"
    recover = timed_start(t)
    s = sink()
    route_to(t, s.port)
    t.restart()
    counts = deliver_all(t, s, keep)
    kept = {k: acked[k] for k in keep}
    lost, dups = report("kill9_copy_forward", kept, counts, recover,
                        "kills=%d" % kills)
    assert "index unusable" not in t.log_all()      # a crash is no reason to rebuild
    assert not lost
    back = set(counts) - keep
    assert not back, "%d deleted messages came back" % len(back)


def verify(t, *extra):
    r = t.ternctl("queue", "verify", *extra)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")


def test_verify_and_rebuild_index_commands(ternd):
    import json
    import subprocess
    t = ternd(extra_conf=SEG)
    acked = fill(t, 50)
    # online, through the control socket
    rc, out, err = verify(t)
    assert rc == 0, (out, err)
    assert "index and segments agree" in out
    rc, out, err = verify(t, "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["agree"] is True and doc["records"] >= 50, doc
    assert doc["entries"] == 50 and doc["differences"] == 0, doc
    # online while mail arrives: what the committer writes meanwhile is no difference
    import threading
    more = {}
    th = threading.Thread(target=lambda: more.update(fill(t, 100, first=1000)))
    th.start()
    runs = 0
    while th.is_alive() and runs < 20:
        rc, out, err = verify(t)
        assert rc == 0, (out, err)
        runs += 1
    th.join(60)
    assert len(more) == 100 and runs >= 1
    acked.update(more)
    t.stop()
    # offline, read-only: the same answer, nothing written
    rc, out, err = verify(t, "--json")
    assert rc == 0 and json.loads(out)["agree"] is True, (out, err)
    # an indexed record destroyed: verify says so and exits non-zero
    seg, last = last_record(t.queue_dir)
    with open(seg, "r+b") as f:
        f.seek(last + 3000)       # inside the body
        f.write(b"\xff" * 64)
    rc, out, err = verify(t)
    assert rc == 4, (rc, out, err)
    assert re.search(r"differs: id=%s segment=%s offset=%d: index entry points at a "
                     r"damaged record" % (acked[max(acked)], seg.stem, last), out), out
    assert "ternd --rebuild-index" in out
    # the offline rebuild: the damaged record is held, everything else indexed
    r = subprocess.run([str(t.bins.ternd), "--rebuild-index", "-c", str(t.conf_path)],
                       capture_output=True, text=True, timeout=60, env=t.env)
    assert r.returncode == 0, r.stderr
    assert re.search(r"index rebuilt from segments: cause=\"rebuild requested\" "
                     r"segments=\d+ records=150 messages=150 damaged=1 ", r.stderr), r.stderr
    assert any(p.name.startswith("db.damaged.") for p in t.queue_dir.iterdir())
    rc, out, err = verify(t, "--json")
    doc = json.loads(out)
    assert rc == 0 and doc["held_corrupt"] == 1 and doc["entries"] == 150, doc
    # a damaged index: a clear answer, never a fault (SIGBUS) of ternctl
    damage_garbage_index(t.queue_dir)
    rc, out, err = verify(t)
    assert rc > 0 and "rebuild" in out + err, (rc, out, err)
    # no index at all: the read-only check cannot open it and says what to run
    for p in (t.queue_dir / "db").iterdir():
        p.unlink()
    rc, out, err = verify(t)
    assert rc != 0 and "ternd --rebuild-index" in err, (rc, out, err)
    t.start()
    t.wait_log(r"index rebuilt from segments: cause=\"index missing")
    assert len(t.queue_ids()) == 150


def test_index_deleted_after_deliveries_nothing_lost_nothing_revived(ternd, sink):
    """Half the messages are delivered, then the index is lost: the rebuild
    from the segments takes the other half back and leaves the delivered
    ones out (their records carry the removal mark), so nothing is lost
    and nothing is delivered twice."""
    s = sink()
    t = ternd(extra_conf=SEG, default_route="smtp:[127.0.0.1]:%d" % s.port)
    for i in range(N):
        if i % 2:
            s.rcpt_reply["r%d@example.com" % i] = "450 4.2.1 later"
    acked = fill(t, N)
    delivered_before = {i for i in acked if i % 2 == 0}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(t.queue_ids()) > N // 2:
        time.sleep(0.2)
    assert len(t.queue_ids()) == N // 2
    t.stop()
    damage_delete_index(t.queue_dir)
    s.rcpt_reply.clear()
    before = len(s.messages)
    recover = timed_start(t)
    m = t.wait_log(r"queue: index rebuilt from segments: cause=\"index missing.*")
    counts = deliver_all(t, s, set(acked))
    lost, dups = report("index_deleted_after_half_delivered", acked, counts, recover,
                        m.group(0), "delivered_before=%d" % before)
    assert not lost
    assert before == len(delivered_before)
    assert dups == 0, counts
    assert re.search(r"queue: recovered .* removed=%d\b" % len(delivered_before),
                     t.log()), t.log()[-3000:]


def test_rebuild_after_copy_forward_keeps_the_copies_state(ternd, sink):
    """A copy carries the envelope as it was when copied (here: held by the
    operator); a rebuild must take it, not the original record."""
    t = ternd(extra_conf=SEG)
    acked = fill(t, N, rcpt=lambda i: ("keep%d@example.com" if i % 10 == 0
                                       else "gone%d@example.com") % i)
    # Held before the deletes: the first kept messages sit in segment 1,
    # which the deletes leave nearly empty, so copy-forward (once a second)
    # can only copy them after they are held. A state change made after a
    # record was written and never copied is not in the segments: a rebuild
    # cannot know it (doc/queue.md), so this test pins only the copies.
    held = [acked[i] for i in sorted(acked) if i % 10 == 0][:5]
    for qid in held:
        assert t.ternctl("hold", qid).returncode == 0
    r = t.ternctl("delete", "--all-matching", "--to", "gone")
    assert r.returncode == 0, r.stderr
    t.restart()
    # wait until segment 1 has been copied and copy-forward has settled
    # (no new move for 3 s)
    deadline = time.monotonic() + 30
    moves, last_change = None, time.monotonic()
    while time.monotonic() < deadline:
        now_moves = re.findall(r"copy-forward segment=(\w+)", t.log_all())
        if now_moves != moves:
            moves, last_change = now_moves, time.monotonic()
        if "00000001" in moves and time.monotonic() - last_change >= 3:
            break
        time.sleep(0.2)
    assert "00000001" in moves and time.monotonic() - last_change >= 3, moves
    t.stop()
    damage_delete_index(t.queue_dir)
    recover = timed_start(t)
    m = t.wait_log(r"queue: index rebuilt from segments: cause=\"index missing.*")
    q = {x["id"]: x for x in t.queue()}
    assert set(held) <= set(q)
    assert all(q[i]["held"] for i in held), [q[i] for i in held]
    s = sink()
    route_to(t, s.port)
    t.restart()
    for qid in held:
        assert t.ternctl("release", qid).returncode == 0
    keep = {i for i in acked if i % 10 == 0}
    counts = deliver_all(t, s, keep)
    lost, dups = report("rebuild_after_copy_forward", {i: acked[i] for i in keep}, counts,
                        recover, m.group(0), "revived=%d" % len(set(counts) - keep))
    assert not lost
