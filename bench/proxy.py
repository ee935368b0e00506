#!/usr/bin/python3
"""bench/proxy.py - W1 through HAProxy (PROXY protocol) against W1 direct.

    /usr/bin/python3 bench/proxy.py [--build build] [--msgs 5000] [--sess 50]
        [--reps 3] [--workdir /var/tmp/tern-bench-proxy]

W1 as in bench/run (4 KiB messages, 1 recipient, SESS sessions reused until
done, MAIL/RCPT/DATA pipelined by bench/loadgen.c), relayed by ternd to
bench/sink.c, in three set-ups, alternating their order each repetition:

  direct     loadgen -> ternd (relay listener)
  haproxy-1  loadgen -> haproxy (mode tcp, send-proxy-v2) -> ternd (a
             `relay plain proxy` listener of the same kind of ternd)
  haproxy-2  loadgen -> haproxy (roundrobin) -> two ternd nodes, each with its
             own queue (the scale-out recipe of doc/scale-out.md)

and prints the median accept rate (250s after DATA per second, at the
client) and end-to-end rate (until the sink has every message), with the
sink's duplicate check. Everything is on loopback; haproxy is a private
instance (config in WORKDIR, foreground, stopped by PID). No root needed
(run as root, ternd drops to the harness's default user). Not part of the
test suite: it takes a minute or more. The figures depend on the machine
(on a machine with few cores, HAProxy, loadgen and ternd share them).
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(REPO / "tests" / "integration"))

from conftest import Ternd, TernBin, free_port  # noqa: E402
from dnsserver import TestDNSServer  # noqa: E402
from test_proxy_protocol import listening  # noqa: E402

CONF = ("proxy-networks 127.0.0.1\nmax-connections-per-ip 1000\n"
        "max-connections-per-ip-trusted 0\ntls-policy none\n")


def sh(cmd):
    subprocess.run(cmd, check=True)


def build_tools(work):
    flags = ["-O2", "-D_GNU_SOURCE", "-Wall", "-Wextra"]
    sh(["cc", *flags, "-o", str(work / "sink"), str(HERE / "sink.c")])
    sh(["cc", *flags, "-pthread", "-o", str(work / "loadgen"), str(HERE / "loadgen.c"),
        "-lssl", "-lcrypto"])


def wait_until(cond, limit, what):
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end:
            raise RuntimeError("timed out waiting for " + what)
        time.sleep(0.05)


def stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Sink:
    def __init__(self, work, n):
        self.port = free_port()
        self.proc = subprocess.Popen([str(work / "sink"), "-p", str(self.port), "-n", str(n)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: listening(self.port), 10, "sink")

    def stat(self):
        import socket
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            f = s.makefile("rb")
            f.readline()
            s.sendall(b"XSTAT\r\nQUIT\r\n")
            line = f.readline().decode()
        return {k: int(v) for k, v in (w.split("=") for w in line.split()[1:])}


def haproxy(work, servers):
    port = free_port()
    conf = work / ("haproxy-%d.cfg" % port)
    lines = ["global", "    maxconn 2000", "defaults", "    mode tcp",
             "    timeout connect 5s", "    timeout client 60s", "    timeout server 60s",
             "frontend smtp", "    bind 127.0.0.1:%d" % port, "    default_backend tern",
             "backend tern", "    balance roundrobin"]
    lines += ["    server t%d 127.0.0.1:%d send-proxy-v2" % (i, p)
              for i, p in enumerate(servers)]
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen(["haproxy", "-f", str(conf), "-db"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until(lambda: listening(port), 10, "haproxy")
    return proc, port


def one_run(bins, dns, work, setup, a):
    sink = Sink(work, a.msgs)
    nodes, hp = [], None
    try:
        for i in range(2 if setup == "haproxy-2" else 1):
            d = Path(tempfile.mkdtemp(prefix="node-", dir=work))
            t = Ternd(bins, dns, d, listeners=[("relay", "relay plain"),
                                               ("proxy", "relay plain proxy")],
                      trusted="127.0.0.0/8", relay_domains=None, extra_conf=CONF,
                      default_route="smtp:[127.0.0.1]:%d" % sink.port)
            t.start()
            nodes.append(t)
        if setup == "direct":
            port = nodes[0].port("relay")
        else:
            hp, port = haproxy(work, [t.port("proxy") for t in nodes])
        out = subprocess.run([str(work / "loadgen"), "-s", "127.0.0.1:%d" % port,
                              "-m", str(a.msgs), "-c", str(a.sess), "-r", "1",
                              "-l", "4096", "-C", "0", "-T", "300"],
                             check=True, capture_output=True, timeout=400).stdout
        lg = json.loads(out)
        wait_until(lambda: sink.stat()["complete"] >= a.msgs, 300, "the sink")
        time.sleep(0.5)                  # duplicates would show up now
        st = sink.stat()
        dur = (lg["t_end_ns"] - lg["t_start_ns"]) / 1e9
        return dict(accept=lg["acked"] / dur,
                    e2e=a.msgs / ((st["done_ns"] - lg["t_start_ns"]) / 1e9),
                    ok=lg["acked"] == a.msgs and st["complete"] == a.msgs
                    and st["over"] == 0 and st["noid"] == 0,
                    per_node=[t.log().count("status=queued") for t in nodes])
    finally:
        if hp is not None:
            stop(hp)
        for t in nodes:
            for problem in t.teardown():     # stops it; removes its queue
                print(problem, file=sys.stderr)
        stop(sink.proc)


def w1_setup(doc, workdir):
    """The options of a W1 script (--build --msgs --sess --reps --workdir), its
    work directory with sink and loadgen built, the binaries, a DNS server."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--build", default=str(REPO / "build"))
    ap.add_argument("--msgs", type=int, default=5000)
    ap.add_argument("--sess", type=int, default=50)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--workdir", default=workdir)
    a = ap.parse_args()
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    os.chmod(work, 0o755)
    build_tools(work)
    bins = TernBin(os.path.abspath(a.build))
    dns = TestDNSServer("127.0.0.1", free_port(udp=True)).start()
    return a, work, bins, dns


def main():
    a, work, bins, dns = w1_setup(__doc__, "/var/tmp/tern-bench-proxy")
    setups = ["direct", "haproxy-1", "haproxy-2"]
    runs = {s: [] for s in setups}
    try:
        for rep in range(a.reps):
            order = setups if rep % 2 == 0 else list(reversed(setups))
            for s in order:
                r = one_run(bins, dns, work, s, a)
                runs[s].append(r)
                print("rep %d %-9s accept %7.0f msg/s  e2e %7.0f msg/s  %s  per node %s"
                      % (rep + 1, s, r["accept"], r["e2e"], "ok" if r["ok"] else "FAILED",
                         r["per_node"]), flush=True)
    finally:
        dns.stop()
    print("\nW1 (%d x 4 KiB, 1 rcpt, %d sessions), median of %d:" % (a.msgs, a.sess, a.reps))
    print("| set-up | accept msg/s | end-to-end msg/s | all ok |")
    print("|---|---|---|---|")
    for s in setups:
        print("| %s | %.0f | %.0f | %s |" % (
            s, statistics.median(r["accept"] for r in runs[s]),
            statistics.median(r["e2e"] for r in runs[s]),
            "yes" if all(r["ok"] for r in runs[s]) else "NO"))


if __name__ == "__main__":
    main()
