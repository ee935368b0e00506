#!/usr/bin/python3
"""bench/fairness.py - one destination must not stall the others.

    /usr/bin/python3 bench/fairness.py --build build [--build /tmp/old/build ...]
        [--fast 2000] [--slow 2000] [--n421 200] [--limit 60]

For each ternd build given, on loopback with the integration tests' helpers
(tests/integration: the Ternd harness, the test DNS server, FakeMX peers):

  alone    FAST messages for fast.test (a healthy FakeMX), queued while
           delivery is paused; seconds from `ternctl resume` until all arrived.
  tarpit   the same, with SLOW messages for slow.test queued first, whose MX
           accepts connections and never greets (command-timeout 30s): seconds
           until fast.test has all of its mail (or "> LIMIT" with the count),
           and the connections the tarpit holds.
  421      N421 messages for a destination that answers every connection with
           421: connections it received until every message had its first
           attempt, and in the LIMIT/4 seconds after that (retry 2s).

Only directives every version knows are used, so old builds run the same
configuration (the new scheduler uses its defaults: dest-initial-connections
5, dest-failure-cohort 5, dest-down-time 5m). Not part of the test suite: it
takes a few minutes. Prints one table.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from conftest import Ternd, TernBin  # noqa: E402
from dnsserver import TestDNSServer  # noqa: E402
from conftest import free_port  # noqa: E402
from fakemx import FakeMX  # noqa: E402
from test_delivery import DeliveryEnv  # noqa: E402
from test_fair_delivery import submit_many  # noqa: E402

BASE = ("retry 2s\ncommand-timeout 30s\nconnect-timeout 5s\ndelay-warning 0\n"
        "max-queue-lifetime 1h\nmax-out-connections 20\nmax-dest-connections 10\n")


class World:
    def __init__(self, build):
        self.bins = TernBin(build)
        self.dns = TestDNSServer("127.0.0.1", free_port(udp=True)).start()
        self.port = DeliveryEnv._pick_port()
        self.dir = tempfile.mkdtemp(prefix="tern-fair-")
        self.peers = []
        self.t = None
        self.dns.set_zone({
            "fast.test": {"MX": [(10, "mx.fast.test")]}, "mx.fast.test": {"A": ["127.0.0.2"]},
            "slow.test": {"MX": [(10, "mx.slow.test")]}, "mx.slow.test": {"A": ["127.0.0.3"]},
            "bad.test": {"MX": [(10, "mx.bad.test")]}, "mx.bad.test": {"A": ["127.0.0.4"]},
            "sender.test": {"MX": [(10, "mx.bad.test")]}})

    def peer(self, ip, mode):
        p = FakeMX(ip, self.port).start()
        p.mode = mode
        self.peers.append(p)
        return p

    def ternd(self):
        self.t = Ternd(self.bins, self.dns, self.dir, default_route=None, relay_domains=None,
                       trusted="127.0.0.0/8", mx_port=self.port, extra_conf=BASE)
        self.t.start()
        r = self.t.ternctl("pause")
        assert r.returncode == 0, r.stderr
        return self.t

    def close(self):
        if self.t is not None:
            self.t.teardown()
        for p in self.peers:
            p.stop()
        self.dns.stop()


def wait(cond, limit):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.05)
    return None


def run_fast(build, nfast, nslow, limit):
    w = World(build)
    try:
        fast = w.peer("127.0.0.2", "ok")
        slow = w.peer("127.0.0.3", "tarpit") if nslow else None
        t = w.ternd()
        if nslow:
            submit_many(t.port(), ["s%d@slow.test" % i for i in range(nslow)])
        submit_many(t.port(), ["f%d@fast.test" % i for i in range(nfast)])
        t.ternctl("resume")
        took = wait(lambda: fast.messages >= nfast, limit)
        held = slow.open_now if slow else 0
        return took, fast.messages, held
    finally:
        w.close()


def run_421(build, n, limit):
    w = World(build)
    try:
        bad = w.peer("127.0.0.4", "421")
        t = w.ternd()
        submit_many(t.port(), ["b%d@bad.test" % i for i in range(n)], conns=2)
        t.ternctl("resume")
        wait(lambda: all(m["attempts"] >= 1 for m in t.queue()), limit)
        first = bad.connections
        time.sleep(limit / 4)        # the measurement window, not an assertion
        return first, bad.connections - first
    finally:
        w.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", action="append", required=True)
    ap.add_argument("--fast", type=int, default=2000)
    ap.add_argument("--slow", type=int, default=2000)
    ap.add_argument("--n421", type=int, default=200)
    ap.add_argument("--limit", type=float, default=60.0)
    a = ap.parse_args()
    rows = []
    for b in a.build:
        b = os.path.abspath(b)
        alone = run_fast(b, a.fast, 0, a.limit)
        beside = run_fast(b, a.fast, a.slow, a.limit)
        c421 = run_421(b, a.n421, a.limit)
        rows.append((b, alone, beside, c421))

    def fmt(r):
        took, got, _ = r
        return "%.2fs" % took if took is not None else "> %.0fs (%d arrived)" % (a.limit, got)

    print("\n%d messages to fast.test; tarpit: %d queued first for slow.test; "
          "421: %d messages" % (a.fast, a.slow, a.n421))
    print("%-40s %-14s %-26s %-8s %-22s" % ("build", "alone", "beside the tarpit",
                                           "held", "421 conns (first/more)"))
    for b, alone, beside, c421 in rows:
        print("%-40s %-14s %-26s %-8d %d / %d" % (b[-40:], fmt(alone), fmt(beside),
                                                beside[2], c421[0], c421[1]))


if __name__ == "__main__":
    main()
