"""kill -9 in the middle of delivery, then restart (doc/queue.md, "Promises"
2; doc/design.md, "How a message travels", step 6).

Every message is delivered at least once; a recipient whose delivery was
durably recorded before the crash is never sent again. The index is flushed
about every 100 ms (DB_TXN_WRITE_NOSYNC + periodic flush), so a "status=sent"
line logged more than GRACE seconds before the kill must have been durable.
Duplicates of the last moments (in flight, or marked but not yet flushed)
are allowed and reported.
"""

import datetime
import re
import time

from conftest import RawSMTP
from test_delivery import env, slow_data  # noqa: F401  (fixture)

N = 50
GRACE = 1.0
SENT_RE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z .*?id=([0-9A-Fa-f]{16}) "
                     r"to=<([^>]*)> relay=\S+ dsn=\S+ status=sent", re.M)


def sent_times(log):
    """{recipient: unix time of its first 'status=sent' line} of one run's log."""
    out = {}
    for m in SENT_RE.finditer(log):
        ts = datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%f").replace(
            tzinfo=datetime.timezone.utc).timestamp()
        out.setdefault(m.group(3), ts)
    return out


def test_kill9_during_delivery(env):  # noqa: F811
    env.zone_add({"example.test": {"MX": [(10, "mx1.example.test")]},
                  "mx1.example.test": {"A": ["127.0.0.2"]}})
    s = env.sink("127.0.0.2")
    delay = [0.2]
    slow_data(s, delay)
    t = env.start(extra="max-dest-connections 2")
    rcpts = ["r%02d@example.test" % i for i in range(N)]
    c = RawSMTP(t.port(), timeout=30)
    c.greeting()
    c.ehlo()
    qids = [env.send(r, c=c, subject="crash %s" % r) for r in rcpts]
    c.close()

    s.wait_for(N // 3, timeout=30)
    time.sleep(0.3)
    kill_at = time.time()
    t.kill9()
    got_before = len(s.messages)
    log1 = t.log()
    assert got_before < N, "all delivered before the kill: slow the sink down"
    durable = {r for r, ts in sent_times(log1).items() if ts < kill_at - GRACE}
    assert len(durable) >= 3, "too few deliveries logged well before the kill: %r" % durable

    delay[0] = 0.0                           # restart with a fast sink
    t.start()
    deadline = time.monotonic() + 30
    while True:
        counts = {}
        for m in s.messages:
            for r in m.rcpt_tos:
                counts[r] = counts.get(r, 0) + 1
        missing = [r for r in rcpts if counts.get(r, 0) == 0]
        if not missing:
            break
        assert time.monotonic() < deadline, \
            "lost after kill -9 and restart: %r\nlog:\n%s" % (missing, t.log_all()[-5000:])
        time.sleep(0.1)
    env.wait_gone(qids, timeout=15)
    time.sleep(0.5)
    counts = {}
    for m in s.messages:
        for r in m.rcpt_tos:
            counts[r] = counts.get(r, 0) + 1
    dups = sorted(r for r, n in counts.items() if n > 1)
    print("kill -9 after %d of %d deliveries; %d logged durable; duplicates: %d %r"
          % (got_before, N, len(durable), len(dups), dups))
    assert set(counts) == set(rcpts)
    bad = [r for r in dups if r in durable]
    assert not bad, ("redelivered after the restart although their delivery was logged "
                     "more than %.1fs before the kill: %r" % (GRACE, bad))
    # the restart logs nothing as sent for a durable recipient either
    again = set(sent_times(t.log())) & durable
    assert not again, again
