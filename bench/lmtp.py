#!/usr/bin/python3
"""bench/lmtp.py - LMTP delivery rate into a private Dovecot (messages/s).

    /usr/bin/python3 bench/lmtp.py --build build [-n 2000] [--unix]
        [--no-fsync] [--direct]

On loopback with the integration tests' helpers (tests/integration: the Ternd
harness, the test DNS server, dovecot.py's private Dovecot): a ternd with
`route bench.test lmtp:[127.0.0.1]:PORT` (or `lmtp:unix:PATH` with --unix)
and `max-dest-connections 1`, so every message goes over one LMTP connection
at a time, reused for up to 100 messages (DLV_CONN_MSG_MAX) before a new one.
Delivery is paused while N small one-recipient messages (test_fair_delivery's
submit_many) are queued over the relay listener; the clock runs from `ternctl resume` until the
log has N `status=sent` lines. Then the script checks that the user's INBOX
holds exactly N messages (over IMAP) and counts the LMTP connections Dovecot
logged. Dovecot fsyncs each message it saves, which bounds the rate on a
slow disk: --direct prints what Python's smtplib.LMTP gets straight into the
same Dovecot (after tern's run, so that INBOX check comes first), and
--no-fsync gives Dovecot `mail_fsync = never` to show tern's side. Needs root or the right to run dovecot (as the tests do), Debian
dovecot-lmtpd and dovecot-imapd. Not part of the test suite.
"""

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from conftest import Ternd, TernBin, free_port  # noqa: E402
from dnsserver import TestDNSServer  # noqa: E402
from dovecot import Dovecot  # noqa: E402
from test_fair_delivery import submit_many  # noqa: E402

BASE = ("retry 5s\ncommand-timeout 30s\ndelay-warning 0\nmax-queue-lifetime 1h\n"
        "max-dest-connections 1\n")


def direct_rate(d, n):
    """Dovecot's own ceiling: smtplib.LMTP, one connection, n messages."""
    import smtplib
    body = b"Subject: direct\r\n\r\nhello\r\n"
    s = smtplib.LMTP("127.0.0.1", d.lmtp_port)
    s.ehlo("bench.client")
    t0 = time.monotonic()
    for _ in range(n):
        s.sendmail("bench@client.test", ["bob@bench.test"], body)
    took = time.monotonic() - t0
    s.quit()
    return n / took


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=str(REPO / "build"))
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--unix", action="store_true", help="LMTP over the unix socket")
    ap.add_argument("--limit", type=float, default=300.0)
    ap.add_argument("--no-fsync", action="store_true",
                    help="Dovecot with mail_fsync = never (its fsync is the floor)")
    ap.add_argument("--direct", action="store_true",
                    help="also time Python's smtplib.LMTP straight into Dovecot")
    a = ap.parse_args()

    dns = TestDNSServer("127.0.0.1", free_port(udp=True)).start()
    d = Dovecot(["bob"], fsync=not a.no_fsync).start()
    work = tempfile.mkdtemp(prefix="tern-lmtp-bench-")
    target = ("lmtp:unix:%s" % d.lmtp_socket if a.unix
              else "lmtp:[127.0.0.1]:%d" % d.lmtp_port)
    t = Ternd(TernBin(a.build), dns, work, default_route=None, relay_domains=None,
              trusted="127.0.0.0/8",
              extra_conf=BASE + "route bench.test %s\n" % target)
    try:
        t.start()
        r = t.ternctl("pause")
        assert r.returncode == 0, r.stderr
        submit_many(t.port(), ["bob@bench.test"] * a.n, conns=2)
        sent_re = re.compile(r" relay=lmtp:\S+ dsn=2\.\d+\.\d+ status=sent ")
        t0 = time.monotonic()
        r = t.ternctl("resume")
        assert r.returncode == 0, r.stderr
        while True:
            n = len(sent_re.findall(t.log()))
            took = time.monotonic() - t0
            if n >= a.n or took > a.limit:
                break
            time.sleep(0.02)
        conns = d.log().count("Connect from")
        got = len(d.fetch_all("bob"))
        print("lmtp %s: %d messages in %.2f s = %.0f messages/s; "
              "%d LMTP connection(s); INBOX holds %d"
              % ("unix socket" if a.unix else "tcp", n, took,
                 n / took if took else 0, conns, got))
        if a.direct:
            print("direct smtplib.LMTP, one connection: %.0f messages/s"
                  % direct_rate(d, a.n))
        if n < a.n or got != a.n:
            print("INCOMPLETE or DUPLICATED: sent=%d inbox=%d want=%d" % (n, got, a.n))
            return 1
        return 0
    finally:
        t.teardown()
        d.cleanup()
        dns.stop()


if __name__ == "__main__":
    sys.exit(main())
