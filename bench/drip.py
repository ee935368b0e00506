#!/usr/bin/python3
"""drip.py - how long does a byte-dripping client hold an SMTP session?

    bench/drip.py HOST PORT [--every SECONDS] [--limit SECONDS]

Connects, reads the greeting, then sends "EHLO xxxx..." one byte every
--every seconds (default 1, keep it below the server's idle-timeout) until the
server answers or closes, and prints how long the session was held and the
reply. Against ternd with `idle-timeout 2s` and `session-timeout 60s`: before
command-deadline existed, 60 s (session-timeout); with it, 4 s (twice
idle-timeout). Nothing is sent but the one unfinished command line.
"""
import argparse
import select
import socket
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("--every", type=float, default=1.0)
    ap.add_argument("--limit", type=float, default=7200.0)
    a = ap.parse_args()
    s = socket.create_connection((a.host, a.port), timeout=30)
    print("greeting: %r" % s.recv(1000).strip())
    t0 = time.monotonic()
    sent = 0
    while time.monotonic() - t0 < a.limit:
        try:
            s.send(b"EHLO "[sent:sent + 1] if sent < 5 else b"x")
        except OSError:
            break
        sent += 1
        readable, _, _ = select.select([s], [], [], a.every)
        if readable:
            reply = s.recv(1000)
            print("held %.1f s, %d bytes sent, reply %r"
                  % (time.monotonic() - t0, sent, reply.strip()))
            return
    print("still held after %.1f s (%d bytes sent)" % (time.monotonic() - t0, sent))


if __name__ == "__main__":
    main()
