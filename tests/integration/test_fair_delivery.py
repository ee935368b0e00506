"""Delivery that no single destination can stall (the scheduler's
per-destination queues, dead-destination marks and slow start), through the
real ternd against FakeMX peers (fakemx.py) that count connections:

- a tarpit (accepts, never greets) beside a healthy sink: the healthy mail
  all arrives within seconds while the tarpit keeps the connections it got;
- a destination that answers 421 to every connection goes down after
  dest-failure-cohort failures; its other messages are deferred without
  connecting (counted at the peer), stats and /metrics say so, and
  `ternctl retry --domain` lifts the mark;
- a down destination is probed when dest-down-time is up, and drained;
- slow start: the peer sees dest-initial-connections at first, more later,
  up to the destination's dest-limit.

Messages are queued while delivery is paused (`ternctl pause`), so each test
starts the scheduler on a full queue; `ternctl resume` is time zero.
"""

import json
import re
import socket
import threading
import time
import urllib.request

from conftest import free_port
from fakemx import FakeMX
from test_delivery import env  # noqa: F401  (fixture)

SENDER = "alice@sender.test"


def submit_many(port, rcpts, conns=4):
    """Queue one message per recipient over `conns` parallel SMTP sessions
    (MAIL, RCPT, DATA pipelined); returns the queue ids."""
    chunks = [rcpts[i::conns] for i in range(conns)]
    ids, errors = [], []

    def run(chunk):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            f = s.makefile("rb")

            def reply():
                while True:
                    line = f.readline()
                    if not line:
                        raise AssertionError("connection closed")
                    if line[3:4] != b"-":
                        return line

            assert reply().startswith(b"220")
            s.sendall(b"EHLO client.test\r\n")
            assert reply().startswith(b"250")
            for r in chunk:
                s.sendall(("MAIL FROM:<%s>\r\nRCPT TO:<%s>\r\nDATA\r\n" % (SENDER, r)).encode())
                for want in (b"250", b"250", b"354"):
                    got = reply()
                    assert got.startswith(want), got
                s.sendall(("From: <%s>\r\nTo: <%s>\r\nSubject: fair\r\n\r\nhello\r\n.\r\n"
                           % (SENDER, r)).encode())
                got = reply()
                assert got.startswith(b"250"), got
                ids.append(re.search(rb"queued as ([0-9A-Fa-f]{16})", got).group(1).decode())
            s.sendall(b"QUIT\r\n")
            s.close()
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,)) for c in chunks if c]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert len(ids) == len(rcpts)
    return ids


def ctl_ok(t, *args):
    r = t.ternctl(*args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def stats(t):
    return json.loads(ctl_ok(t, "stats", "--json").stdout)


def dest_of(st, key):
    for d in st["destinations"]:
        if d["destination"] == key:
            return d
    return None


def wait_until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("not within %.0fs: %s" % (timeout, what))
        time.sleep(0.1)


def two_domains(env, fast_ip="127.0.0.2", slow_ip="127.0.0.3"):
    env.zone_add({"fast.test": {"MX": [(10, "mx.fast.test")]},
                  "mx.fast.test": {"A": [fast_ip]},
                  "slow.test": {"MX": [(10, "mx.slow.test")]},
                  "mx.slow.test": {"A": [slow_ip]}})


def start_paused(env, extra):
    t = env.start(extra=extra)
    ctl_ok(t, "pause")
    return t


# ---------------------------------------------------------------- tarpit

NSLOW = 300
NFAST = 2000


def test_tarpit_does_not_stall_other_destinations(env):  # noqa: F811
    """slow.test accepts connections and never greets; fast.test is healthy.
    Only directives the old scheduler knew are used, so this fails on it:
    there the tarpit's jobs filled the global backlog (2 x
    max-out-connections) and fast.test got nothing until the greeting
    timeout."""
    two_domains(env)
    fast = FakeMX("127.0.0.2", env.port).start()
    slow = FakeMX("127.0.0.3", env.port).start()
    slow.mode = "tarpit"
    try:
        t = start_paused(env, "max-out-connections 20\nmax-dest-connections 10\n"
                              "command-timeout 60s\nretry 1m")
        submit_many(t.port(), ["s%d@slow.test" % i for i in range(NSLOW)])
        submit_many(t.port(), ["f%d@fast.test" % i for i in range(NFAST)])
        t0 = time.monotonic()
        ctl_ok(t, "resume")
        fast.wait_messages(NFAST, timeout=40)
        took = time.monotonic() - t0
        print("fair: %d fast messages in %.2fs beside a tarpit holding %d connections"
              % (NFAST, took, slow.open_now))
        assert took < 30, took
        assert sorted(fast.rcpts) == sorted("f%d@fast.test" % i for i in range(NFAST))
        # the tarpit holds every connection it got, within the limits
        assert 1 <= slow.connections <= 10, slow.connections
        assert slow.open_now == slow.connections, (slow.open_now, slow.connections)
        st = stats(t)
        d = dest_of(st, "mx:slow.test")
        assert d is not None and d["state"] == "up", st["destinations"]
        assert d["in_flight"] == slow.connections, d
        assert d["in_flight"] + d["waiting"] == NSLOW, d
        assert len(t.queue_ids()) == NSLOW
        # the messages waiting for slow.test are not "in flight": the
        # operator can delete them; those at the tarpit are
        r = json.loads(ctl_ok(t, "--json", "delete", "--all-matching",
                              "--domain", "slow.test").stdout)
        assert len(r["ids"]) == NSLOW - slow.connections, len(r["ids"])
        assert {x["reason"] for x in r["skipped"]} == {"in flight"}, r["skipped"]
        assert len(t.queue_ids()) == slow.connections
    finally:
        fast.stop()
        slow.stop()


# ---------------------------------------------------------------- 421 / down

N421 = 40


def metrics(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        return r.read().decode()


def test_421_destination_goes_down_then_retry_lifts_it(env):  # noqa: F811
    two_domains(env, slow_ip="127.0.0.4")
    bad = FakeMX("127.0.0.4", env.port).start()
    bad.mode = "421"
    mport = free_port()
    try:
        t = start_paused(env, "dest-failure-cohort 4\ndest-down-time 1h\n"
                              "dest-initial-connections 2\nretry 1s\n"
                              "metrics-listen 127.0.0.1:%d" % mport)
        ids = submit_many(t.port(), ["b%d@slow.test" % i for i in range(N421)], conns=2)
        ctl_ok(t, "resume")
        t.wait_log(r"dest=mx:slow\.test down for 3600s after 4 failed sessions")
        # every message was tried, or deferred without a connection
        wait_until(lambda: all(m["attempts"] >= 1 for m in t.queue()), 20,
                   "every message deferred")
        conns = bad.connections
        # mail that comes while it is down is deferred at once, unconnected
        ids += submit_many(t.port(), ["c%d@slow.test" % i for i in range(10)], conns=1)
        wait_until(lambda: len(t.queue()) == N421 + 10 and
                   all(m["attempts"] >= 1 for m in t.queue()), 20,
                   "the late messages deferred")
        assert bad.connections == conns
        print("421: %d connections for %d messages (cohort 4, window 2)" % (conns, N421))
        assert 4 <= conns <= 4 + 2, conns
        log = t.log()
        assert len(re.findall(r"dest=mx:slow\.test down for", log)) == 1, log[-3000:]
        sent = [l for l in log.splitlines() if "status=deferred" in l]
        assert len(sent) <= conns, "one attempt line per real attempt: %d" % len(sent)
        m = [x for x in t.queue() if x["id"] == ids[-1]][0]
        assert "421" in m["recipients"][0]["last_error"], m
        assert "destination down" in m["recipients"][0]["last_error"], m
        st = stats(t)
        assert st["destinations_down"] == 1, st
        d = dest_of(st, "mx:slow.test")
        assert d["state"] == "down" and d["down_until"] > time.time() + 3000, d
        assert "421" in d["last_error"], d
        text = ctl_ok(t, "stats").stdout.decode()
        assert re.search(r"mx:slow\.test\s+down until \d{4}-", text), text
        assert re.search(r"last error: .*421 4.3.2 go away", text), text
        wait_until(lambda: 'tern_destination_down{destination="mx:slow.test"} 1'
                   in metrics(mport), 10, "/metrics shows the destination down")
        # it comes back; the operator lifts the mark: all delivered
        bad.mode = "ok"
        ctl_ok(t, "retry", "--domain", "slow.test")
        bad.wait_messages(N421, timeout=30)
        env.wait_gone(ids, timeout=15)
        t.wait_log(r"dest=mx:slow\.test up \(by operator\)")
    finally:
        bad.stop()


def test_down_destination_is_probed_and_drained(env):  # noqa: F811
    two_domains(env, slow_ip="127.0.0.5")
    mx = FakeMX("127.0.0.5", env.port).start()
    mx.mode = "421"
    try:
        t = start_paused(env, "dest-failure-cohort 3\ndest-down-time 3s\n"
                              "dest-initial-connections 1\nretry 1s")
        ids = submit_many(t.port(), ["p%d@slow.test" % i for i in range(20)], conns=2)
        ctl_ok(t, "resume")
        t.wait_log(r"dest=mx:slow\.test down for 3s after 3 failed sessions")
        before = mx.connections
        assert before == 3, before
        mx.mode = "ok"
        mx.wait_messages(20, timeout=30)
        env.wait_gone(ids, timeout=15)
        log = t.log()
        assert re.search(r"dest=mx:slow\.test probing after \d+ deferred", log), log[-3000:]
        assert "dest=mx:slow.test up (probe succeeded)" in log, log[-3000:]
        # the probe was one connection alone: nothing opened beside it
        # until it had succeeded
        probe_t = [ts for ts, n in mx.timeline if n > 0][before]
        first_two = [n for ts, n in mx.timeline if ts >= probe_t][:2]
        assert first_two[0] == 1, mx.timeline
    finally:
        mx.stop()


# ---------------------------------------------------------------- slow start

def test_slow_start_seen_at_the_peer(env):  # noqa: F811
    two_domains(env)
    mx = FakeMX("127.0.0.2", env.port).start()
    mx.data_delay = 0.3
    try:
        # dest-limit raises fast.test above max-dest-connections
        t = start_paused(env, "dest-initial-connections 2\nmax-dest-connections 3\n"
                              "dest-limit fast.test 8")
        submit_many(t.port(), ["w%d@fast.test" % i for i in range(60)], conns=2)
        ctl_ok(t, "resume")
        mx.wait_messages(60, timeout=60)
        tl = mx.timeline
        t_first = tl[0][0]
        early = [n for ts, n in tl if ts < t_first + 0.25]
        assert max(early) <= 2, tl[:10]
        t3 = min(ts for ts, n in tl if n >= 3)
        assert t3 >= t_first + 0.25, "a third connection before any success"
        assert mx.max_open >= 5, mx.max_open
        assert mx.max_open <= 8, mx.max_open
        print("slow start: open connections over time %r"
              % [(round(ts - t_first, 2), n) for ts, n in tl][:40])
    finally:
        mx.stop()


# ---------------------------------------------------------------- timeouts

def test_greeting_timeout_costs_one_slot_for_that_long(env):  # noqa: F811
    """greeting-timeout 1s (no command-timeout): a server that never greets
    costs each session one second, then the message is deferred with the
    reason; the destination goes down after the cohort."""
    two_domains(env)
    pit = FakeMX("127.0.0.3", env.port).start()
    pit.mode = "tarpit"
    try:
        t = start_paused(env, "command-timeout 0\ngreeting-timeout 1s\n"
                              "dest-initial-connections 1\ndest-failure-cohort 2\n"
                              "dest-down-time 1h")
        ids = submit_many(t.port(), ["g%d@slow.test" % i for i in range(5)], conns=1)
        t0 = time.monotonic()
        ctl_ok(t, "resume")
        t.wait_log(r"dest=mx:slow\.test down for 3600s after 2 failed sessions", timeout=10)
        took = time.monotonic() - t0
        assert 1.8 <= took <= 5, took          # two sessions, one at a time
        assert pit.connections == 2, pit.connections
        wait_until(lambda: all(m["attempts"] >= 1 for m in t.queue()), 10, "all deferred")
        errs = [m["recipients"][0]["last_error"] for m in t.queue()]
        assert all("waiting for the greeting" in e for e in errs), errs
        assert len(ids) == 5
    finally:
        pit.stop()
