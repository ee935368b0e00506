"""Restart with a full queue: mail is accepted while the schedule loads.

A queue is filled offline (build/bench/bench-queue-fill: N messages, two
recipients each, through the queue's own committer) and ternd is started on
it with the route pointing at a port where nothing listens yet. Then, once
after kill -9 and once after SIGTERM, ternd is started again: the listeners
answer and a new message gets its 250 without waiting for the scheduler's
walk of the index ("ready" comes before "schedule loaded"), and a hold and
a delete sent at once are obeyed. Finally a sink listens on that port,
`ternctl retry` asks for delivery, and every message that was neither held
nor deleted arrives exactly once per recipient.

A second test starts ternd on a queue where a few messages are overdue
and the rest due in an hour, their ids in the reverse of their due order:
the schedule is loaded soonest next attempt first, so the most overdue
messages are delivered first and the others wait.

The size here only exercises the path; restart times at 200k messages
are measured with the same filler (bench/README.md).
"""
import collections
import os
import re
import shutil
import smtplib
import subprocess
import tempfile
import time

import pytest

from conftest import default_user, free_port

N = 3000


def fill(tern_bin, qdir, n, *extra):
    exe = tern_bin.build_dir / "bench" / "bench-queue-fill"
    if not exe.exists():
        pytest.skip("bench-queue-fill not built")
    r = subprocess.run([str(exe), str(qdir), str(n)] + [str(a) for a in extra],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "committed=%d " % n in r.stdout, r.stdout
    user = default_user() if os.geteuid() == 0 else None
    if user:
        for root, dirs, files in os.walk(qdir):
            shutil.chown(root, user)
            for f in files:
                shutil.chown(os.path.join(root, f), user)


def fill_id(data):
    m = re.search(rb"^X-Fill-Id: (\d+)\r?$", data, re.M)
    return int(m.group(1)) if m else None


def send_new(t, tag):
    start = time.monotonic()
    with smtplib.SMTP(*t.addr(), timeout=30) as c:
        c.sendmail("new@example.org", ["n@fill.test"],
                   "Subject: %s\r\nX-New: %s\r\n\r\nnew\r\n" % (tag, tag))
    return time.monotonic() - start


def restart_and_check(t, how, hold_id, delete_id):
    if how == "term":
        t.stop()
    else:
        t.kill9()
    t.start()
    took = send_new(t, how)
    assert took < 10, "the new message took %.1fs" % took
    if hold_id:
        r = t.ternctl("hold", hold_id)
        assert r.returncode == 0, r.stderr
    if delete_id:
        r = t.ternctl("delete", delete_id)
        assert r.returncode == 0, r.stderr
    m = t.wait_log(r"scheduler: schedule loaded: (\d+) entries read", timeout=30)
    assert int(m.group(1)) >= N - 1
    log = t.log()
    # the listeners did not wait for the load: it was handed to the
    # scheduler's loop before "ready"; and a load long enough to tell
    # (at this size it may take 3 ms, less than the rest of the start-up)
    # ends after "ready"
    assert log.index("loading the schedule in the background") < \
        log.index(" ready "), log[-3000:]
    took = re.search(r"schedule loaded: .* in (\d+) ms", log)
    assert took, log[-3000:]
    if int(took.group(1)) >= 50:
        assert log.index(" ready ") < log.index("schedule loaded"), log[-3000:]
    assert "queue: bdb verify" not in log


@pytest.fixture
def qdir():
    # like the ternd fixture's own queue: a short dir under /tmp that the
    # run-time user can reach (the test's tmp_path is root's alone)
    d = tempfile.mkdtemp(prefix="ternq-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_restart_full_queue_accepts_while_loading(ternd, tern_bin, sink, qdir):
    fill(tern_bin, qdir, N)
    port = free_port()
    t = ternd(queue_dir=qdir, default_route=None, relay_domains="fill.test",
              extra_conf="route fill.test smtp:[127.0.0.1]:%d" % port)
    # keys moved by the deferrals meanwhile may be read twice
    m = t.wait_log(r"scheduler: schedule loaded: \d+ entries read, (\d+) "
                   r"messages scheduled", timeout=30)
    assert int(m.group(1)) == N
    ids = sorted(m["id"] for m in t.queue())
    assert len(ids) == N
    hold_id, delete_id = ids[10], ids[20]

    # operator changes are durable at the next log flush (100 ms) or a
    # clean stop: they go to the run that ends with SIGTERM
    restart_and_check(t, "kill", hold_id, delete_id)
    restart_and_check(t, "term", None, None)
    # the hold survived the restart, the delete is final
    left = {m["id"]: m for m in t.queue()}
    assert left[hold_id]["held"]
    assert delete_id not in left
    assert len(left) == N - 1 + 2          # two new messages

    s = sink(port=port)
    r = t.ternctl("retry", "all")
    assert r.returncode == 0, r.stderr
    want = N - 2 + 2                       # not the held nor the deleted one
    s.wait_for(want, timeout=60)
    deadline = time.monotonic() + 30
    while len(t.queue()) > 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    left = t.queue()
    assert [m["id"] for m in left] == [hold_id]

    per = collections.Counter()
    new = 0
    for msg in s.messages:
        i = fill_id(msg.data)
        if i is None:
            new += 1
            continue
        for rcpt in msg.rcpt_tos:
            per[(i, rcpt)] += 1
    assert new == 2
    dup = {k: v for k, v in per.items() if v != 1}
    assert not dup, "delivered more than once: %r" % list(dup.items())[:10]
    ids_seen = {i for i, _ in per}
    assert len(ids_seen) == N - 2
    assert len(per) == 2 * (N - 2)


def test_start_loads_nearest_attempts_first(ternd, tern_bin, sink, qdir):
    n, every = 4000, 20
    # message i (X-Fill-Id) is overdue by i seconds when 20 divides it, due
    # in an hour otherwise; ids in fill order: the most overdue come last
    fill(tern_bin, qdir, n, 3600, every)
    due = list(range(n, 0, -every))             # most overdue first
    port = free_port()
    s = sink(port=port)
    t = ternd(queue_dir=qdir, default_route=None, relay_domains="fill.test",
              extra_conf="route fill.test smtp:[127.0.0.1]:%d" % port)
    got = s.wait_for(len(due), timeout=60)
    t.wait_log(r"scheduler: schedule loaded", timeout=30)
    order = [fill_id(m.data) for m in got]
    assert sorted(order) == sorted(due), "not the overdue ones: %r" % (
        sorted(set(order) - set(due))[:10])
    # connections run side by side, so arrival order is only nearly the
    # due order; a load in id order would start with ids below n / 2
    head = order[:every]
    assert set(head) <= set(due[:3 * every]), head
    assert all(len(m.rcpt_tos) == 2 for m in got)
    left = t.queue()
    assert len(left) == n - len(due)
    assert all(m["next_attempt"] > time.time() + 3000 for m in left[:50])
    assert len(s.messages) == len(due)      # nothing else was started
