#!/usr/bin/python3
"""bench/dkim.py - the cost of DKIM signing per message: none, RSA-2048, Ed25519.

    /usr/bin/python3 bench/dkim.py [--build build] [--msgs 5000] [--sess 50]
        [--reps 3] [--workdir /var/tmp/tern-bench-dkim]

W1 as in bench/run (4 KiB messages, 1 recipient, SESS sessions reused until
done, pipelined by bench/loadgen.c) into ternd's relay listener from
trusted-networks, relayed to bench/sink.c, in three set-ups, alternating their
order each repetition:

  none      no dkim-sign line
  rsa2048   dkim-sign loadgen.example with an RSA-2048 key (ternctl dkim keygen)
  ed25519   the same with an Ed25519 key

(loadgen's messages are From: sender@loadgen.example, and dkim-sign-trusted
is on, so every message is signed.) It prints, per set-up, the median CPU
time of the ternd process (user + system, from /proc/PID/stat, from before
the first connection until the sink has every message) per message, the
accept rate, and the difference to `none`: the cost of signing, body hash
included. CPU per message is what to compare; rates are noisy on a shared
machine. No root needed (as root, ternd drops to the harness's user after
reading the keys). Not part of the test suite.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from conftest import Ternd  # noqa: E402
from proxy import Sink, stop, w1_setup, wait_until  # noqa: E402

CONF = ("max-connections-per-ip 1000\nmax-connections-per-ip-trusted 0\n"
        "tls-policy none\ndkim-sign-trusted on\n")
SETUPS = {"none": None, "rsa2048": "rsa", "ed25519": "ed25519"}


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def keygen(bins, work, ktype):
    out = work / ("loadgen.example.%s.key" % ktype)
    if not out.exists():
        subprocess.run([str(bins.ternctl), "dkim", "keygen", "loadgen.example", ktype,
                        "--type", ktype, "--out", str(out)], check=True,
                       capture_output=True)
    return out


def one_run(bins, dns, work, setup, a):
    sink = Sink(work, a.msgs)
    extra = CONF
    if SETUPS[setup]:
        extra += "dkim-sign loadgen.example %s %s\n" % (
            SETUPS[setup], keygen(bins, work, SETUPS[setup]))
    d = Path(tempfile.mkdtemp(prefix="node-", dir=work))
    t = Ternd(bins, dns, d, listeners=[("relay", "relay plain")], trusted="127.0.0.0/8",
              relay_domains=None, extra_conf=extra,
              default_route="smtp:[127.0.0.1]:%d" % sink.port)
    try:
        t.start()
        c0 = cpu_seconds(t.pid)
        out = subprocess.run([str(work / "loadgen"), "-s", "127.0.0.1:%d" % t.port("relay"),
                              "-m", str(a.msgs), "-c", str(a.sess), "-r", "1",
                              "-l", "4096", "-C", "0", "-T", "300"],
                             check=True, capture_output=True, timeout=400).stdout
        lg = json.loads(out)
        wait_until(lambda: sink.stat()["complete"] >= a.msgs, 300, "the sink")
        cpu = cpu_seconds(t.pid) - c0
        st = sink.stat()
        signed = len([1 for line in t.log().splitlines() if "dkim=signed" in line])
        dur = (lg["t_end_ns"] - lg["t_start_ns"]) / 1e9
        return dict(cpu_us=cpu * 1e6 / a.msgs, accept=lg["acked"] / dur, signed=signed,
                    ok=lg["acked"] == a.msgs and st["complete"] == a.msgs
                    and st["over"] == 0 and signed == (a.msgs if SETUPS[setup] else 0))
    finally:
        for problem in t.teardown():
            print(problem, file=sys.stderr)
        stop(sink.proc)


def main():
    a, work, bins, dns = w1_setup(__doc__, "/var/tmp/tern-bench-dkim")
    runs = {s: [] for s in SETUPS}
    try:
        for rep in range(a.reps):
            order = list(SETUPS) if rep % 2 == 0 else list(reversed(SETUPS))
            for s in order:
                r = one_run(bins, dns, work, s, a)
                runs[s].append(r)
                print("rep %d %-8s ternd CPU %6.0f us/msg  accept %6.0f msg/s  signed %d  %s"
                      % (rep + 1, s, r["cpu_us"], r["accept"], r["signed"],
                         "ok" if r["ok"] else "FAILED"), flush=True)
                time.sleep(0.2)
    finally:
        dns.stop()
    base = statistics.median(r["cpu_us"] for r in runs["none"])
    print("\nW1 (%d x 4 KiB, 1 rcpt, %d sessions), median of %d:" % (a.msgs, a.sess, a.reps))
    print("| signing | ternd CPU us/msg | signing cost us/msg | accept msg/s | all ok |")
    print("|---|---|---|---|---|")
    for s in SETUPS:
        cpu = statistics.median(r["cpu_us"] for r in runs[s])
        print("| %s | %.0f | %+.0f | %.0f | %s |" % (
            s, cpu, cpu - base, statistics.median(r["accept"] for r in runs[s]),
            "yes" if all(r["ok"] for r in runs[s]) else "NO"))


if __name__ == "__main__":
    main()
