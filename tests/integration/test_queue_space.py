"""Queue space: copy-forward does its work once, and the index gives space back.

The first test restarts twice and checks that the log never copies the same
records forward again (a segment holding nothing but copies is not copied).
The second drains a queue and checks that envelopes.db shrinks and that
`ternctl stats` shows the queue's disk use.
"""

import json
import re
import time

from test_queue_faults import SEG, fill, route_to, deliver_all

CF = re.compile(r"copy-forward segment=([0-9a-f]{8}) records=(\d+)")


def cf_lines(t):
    return CF.findall(t.log())


def wait_for(cond, timeout, step=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(step)
    return cond()


def test_copy_forward_not_repeated_at_each_start(ternd):
    t = ternd(extra_conf=SEG)
    acked = fill(t, 200, rcpt=lambda i: ("keep%d@example.com" if i % 10 == 0
                                         else "gone%d@example.com") % i)
    assert len(acked) == 200
    r = t.ternctl("delete", "--all-matching", "--to", "gone")
    assert r.returncode == 0, r.stderr
    # run 1: the full old segments move; run 2: the last current one moves
    runs = []
    for _ in range(2):
        t.restart()
        lines = wait_for(lambda: cf_lines(t), 6)
        # every move of this run is logged within a few passes
        time.sleep(2.5)
        runs.append(cf_lines(t))
    moved = [seg for run in runs for seg, _ in run]
    assert moved, "copy-forward never ran"
    assert len(moved) == len(set(moved)), "a segment was copied twice: %r" % runs
    # run 3: everything live sits in segments of copies: nothing moves
    t.restart()
    time.sleep(3.5)     # three copy-forward passes (one a second)
    again = cf_lines(t)
    assert not again, "copy-forward repeated at start: %r (earlier runs: %r)" % (again, runs)
    assert len(t.queue_ids()) == 20


def index_bytes(t):
    return (t.queue_dir / "db" / "envelopes.db").stat().st_size


def test_index_shrinks_after_drain_and_stats_show_disk_use(ternd, sink):
    t = ternd(extra_conf=SEG)
    # a few thousand envelopes: several MB of index
    acked = {}
    for k in range(2):
        acked.update(fill(t, 500, first=k * 500, body_lines=2))
    r = t.ternctl("stats", "--json")
    assert r.returncode == 0, r.stderr
    q = json.loads(r.stdout)["queue"]
    assert q["segments_bytes"] > 0 and q["index_bytes"] > 0, q
    t.stop()
    full = index_bytes(t)
    s = sink()
    route_to(t, s.port)
    t.start()
    counts = deliver_all(t, s, set(acked), timeout=60)
    assert set(acked) <= set(counts)
    m = t.wait_log(r"queue: index compacted: .*", timeout=20)
    t.stop()
    empty = index_bytes(t)
    print("\nindex bytes: %d full, %d after the drain; %s" % (full, empty, m.group(0)))
    assert empty * 4 < full, (full, empty)
    r = t.ternctl("stats")
    assert r.returncode == 0, r.stderr
    assert re.search(rb"disk: segments \d+ bytes, index \d+ bytes", r.stdout), r.stdout
