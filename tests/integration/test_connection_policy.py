"""Who may open connections, and when they may speak.

- max-connections-per-ip does not apply to clients in trusted-networks (they
  have max-connections-per-ip-trusted, no cap by default); max-connections
  still bounds everybody. Trusted and untrusted clients are told apart by
  their loopback source address (127.0.0.x, bound before connect).
- Early talkers: on a relay listener with greet-delay, a client that sends
  before the 220 gets 554 5.5.1 and is disconnected, and
  tern_early_talkers_total counts it; an honest client waits and is served;
  submission listeners are never delayed nor checked.
"""

import smtplib
import time

import pytest

from conftest import free_port
from test_operations import scrape

TRUSTED = "127.0.0.5"
UNTRUSTED = "127.0.0.6"


def greeted(smtp_raw, port, source, n):
    conns = []
    for _ in range(n):
        c = smtp_raw(port, source=source)
        c.expect(220)
        conns.append(c)
    return conns


def test_trusted_client_exempt_from_per_ip_limit(ternd, smtp_raw):
    t = ternd(trusted=TRUSTED + "/32",
              extra_conf="max-connections-per-ip 3\nmax-connections 12")
    port = t.port()
    # an application server: 8 parallel sessions, all greeted
    app = greeted(smtp_raw, port, TRUSTED, 8)
    # an untrusted client still stops at 3
    other = greeted(smtp_raw, port, UNTRUSTED, 3)
    c = smtp_raw(port, source=UNTRUSTED)
    c.expect(421, "4.7.0")
    assert c.wait_closed(5)
    t.wait_log(r"client=%s refused reason=max-connections-per-ip" % UNTRUSTED)
    # the global cap holds for trusted clients too: 8 + 3 open, one more fits
    app += greeted(smtp_raw, port, TRUSTED, 1)
    c = smtp_raw(port, source=TRUSTED)
    r = c.expect(421, "4.7.0")
    assert "Too many connections" in r.text, r
    t.wait_log(r"client=%s refused reason=max-connections\b" % TRUSTED)
    # every one of them still works
    for s in app + other:
        s.cmd("NOOP", 250)
    app[0].ehlo()
    app[0].cmd("MAIL FROM:<app@client.test>", 250)
    app[0].cmd("RCPT TO:<someone@elsewhere.test>", 250)   # trusted: may relay


def test_trusted_per_ip_cap_when_set(ternd, smtp_raw):
    t = ternd(trusted=TRUSTED + "/32",
              extra_conf="max-connections-per-ip 3\nmax-connections-per-ip-trusted 5")
    greeted(smtp_raw, t.port(), TRUSTED, 5)
    c = smtp_raw(t.port(), source=TRUSTED)
    c.expect(421, "4.7.0")
    assert c.wait_closed(5)
    greeted(smtp_raw, t.port(), UNTRUSTED, 3)
    c = smtp_raw(t.port(), source=UNTRUSTED)
    c.expect(421, "4.7.0")


def test_early_talker_refused_on_relay(ternd, smtp_raw):
    mport = free_port()
    t = ternd(extra_conf="greet-delay 1s\nmetrics-listen 127.0.0.1:%d" % mport)
    assert scrape(mport)["tern_early_talkers_total"] == 0
    c = smtp_raw(t.port())
    c.send("EHLO bot.test\r\nMAIL FROM:<spam@bot.test>\r\n")   # before the 220
    r = c.expect(554, "5.5.1")
    assert c.wait_closed(5), "early talker not disconnected"
    assert not c.buf, "more than one reply: %r" % c.buf
    assert "before the greeting" in r.text, r
    t.wait_log(r"status=refused reason=early-talker bytes=\d+")
    assert scrape(mport)["tern_early_talkers_total"] == 1
    # a byte sent late in the pause counts just the same
    c = smtp_raw(t.port())
    time.sleep(0.5)           # talk in the middle of the 1 s pause
    c.send("Q")
    c.expect(554, "5.5.1")
    assert c.wait_closed(5)
    assert scrape(mport)["tern_early_talkers_total"] == 2


def test_honest_client_waits_and_is_served(ternd, smtp_raw):
    mport = free_port()
    t = ternd(extra_conf="greet-delay 1s\nmetrics-listen 127.0.0.1:%d" % mport)
    t0 = time.monotonic()
    c = smtp_raw(t.port())
    c.greeting()
    waited = time.monotonic() - t0
    assert 0.8 <= waited <= 4.0, "220 after %.2fs with greet-delay 1s" % waited
    c.ehlo()
    c.cmd("MAIL FROM:<alice@client.test>", 250)
    c.cmd("RCPT TO:<bob@example.com>", 250)
    c.cmd("DATA", 354)
    c.send("Subject: patient\r\n\r\nhello\r\n.\r\n")
    r = c.expect(250, "2.0.0")
    assert r.queue_id in t.queue_ids()
    # smtplib, which waits for the greeting as every real client does
    with smtplib.SMTP("127.0.0.1", t.port(), timeout=10) as s:
        s.ehlo("client.test")
        assert s.noop()[0] == 250
    assert scrape(mport)["tern_early_talkers_total"] == 0


def test_submission_listener_not_delayed_nor_checked(ternd, smtp_raw):
    t = ternd(listeners=("relay", "submission"), extra_conf="greet-delay 2s")
    t0 = time.monotonic()
    c = smtp_raw(t.port("submission"))
    c.send("EHLO early.test\r\n")          # talks first: tolerated here
    c.greeting()
    assert time.monotonic() - t0 < 1.5, "submission greeting was delayed"
    c.expect(250)
    c.cmd("NOOP", 250)
    assert "early-talker" not in t.log()
