"""Relay policy end to end (RFC 5321 3.6, 7.1; RFC 2505): an untrusted,
unauthenticated client on a relay listener may send only to relay-domains.

Every address trick below either is refused at RCPT (554 5.7.1, or 501/553 for
syntax) with nothing queued, or, when the real domain IS a relay domain, is
accepted and then delivered to that domain's route, never to the domain hidden
in the local part. Sender-specified routing towards a relay domain (%, !,
quoted @, source routes) is refused from such a client too: the next hop
might follow it. (<postmaster> is accepted from anyone, RFC 5321 4.5.1: see
test_loops_routing.py.) Two sinks stand for example.com (the relay domain) and
other.test (a third party); the default route is dead.
"""

import re
import time

import pytest

RELAY = "example.com"

# (RCPT argument, what the real destination is) -- refused ones
REFUSED = [
    "<user@other.test>",
    "<USER@OTHER.TEST>",
    "<user@other.test.>",                      # trailing dot
    "<user@Other.Test.>",
    "<user@[127.0.0.1]>",                      # address literal (our own address)
    "<user@[IPv6:::1]>",
    "<user@127.0.0.1>",                        # bare IP as a domain
    "<user@[other.test]>",
    "<user@other.test@example.com>",           # two @
    "<@example.com:user@other.test>",          # source route: real domain other.test
    "<@example.com,@mx.test:user@other.test>",
    "<user@sub.example.com>",                  # relay-domains is exact
    "<user@example.com.other.test>",
    "<user@other.test%example.com>",
    "<user@example.com%other.test>",
    "<user@other.test!example.com>",
    "<user%other.test>",                       # no domain at all
    "<other.test!user>",
    "<\"user@other.test\">",                   # quoted, no domain
    "<postmaster@other.test>",
    "<user@other.test> <x@example.com>",       # trailing junk
    "user@other.test",                         # no angle brackets
    " <user@other.test>",
    "<user@other.test>\x00<x@example.com>",
    "<user@other.test\x00.example.com>",
    "<user@xn--other.test>",
    "<user@other.test:25>",
    # sender-specified routing towards the relay domain (554 5.7.1)
    "<user%other.test@example.com>",
    "<other.test!user@example.com>",
    "<\"user@other.test\"@example.com>",
    "<@other.test:user@example.com>",
]

# accepted: the real domain is the relay domain; must be delivered there
ACCEPTED = [
    "<User@EXAMPLE.COM>",
    "<\"user.quoted\"@example.com>",
    "<user@example.com.>",                     # trailing dot: refuse, or example.com
]


def _start(ternd, sink):
    a = sink()      # example.com
    b = sink()      # other.test and everything else that could leak
    t = ternd(listeners=[("relay", "relay plain")], relay_domains=RELAY, trusted=None,
              extra_conf="route example.com smtp:[127.0.0.1]:%d\n"
                         "route other.test smtp:[127.0.0.1]:%d\n"
                         "route .other.test smtp:[127.0.0.1]:%d\n"
                         "route 127.0.0.1 smtp:[127.0.0.1]:%d\n"
                         "retry 1h\n" % (a.port, b.port, b.port, b.port))
    return t, a, b


@pytest.mark.parametrize("rcpt", REFUSED, ids=[repr(x) for x in REFUSED])
def test_open_relay_attempt_refused(ternd, sink, smtp_raw, rcpt):
    t, a, b = _start(ternd, sink)
    r = smtp_raw(t.port("relay"))
    r.greeting()
    r.ehlo("attacker.test")
    r.cmd("MAIL FROM:<spammer@other.test>", 250)
    r.send(b"RCPT TO:" + rcpt.encode("latin-1") + b"\r\n")
    rep = r.reply()
    assert rep.code in (501, 550, 553, 554, 555, 500), (rcpt, rep)
    if rep.code == 554:
        assert rep.enh == "5.7.1", rep
    # no recipient: DATA is refused, nothing is queued
    rep = r.cmd("DATA")
    assert rep.code in (503, 554), rep
    r.cmd("QUIT", 221)
    assert t.queue() == [], (rcpt, t.queue())
    assert a.messages == [] and b.messages == []
    assert b.sessions == 0


def test_relay_denied_is_logged_and_session_survives(ternd, sink, smtp_raw):
    t, a, b = _start(ternd, sink)
    r = smtp_raw(t.port("relay"))
    r.greeting()
    r.ehlo()
    r.cmd("MAIL FROM:<spammer@other.test>", 250)
    r.cmd("RCPT TO:<victim@other.test>", 554, "5.7.1")
    t.wait_log(r"to=<victim@other.test> status=refused reason=relay-denied")
    # a good recipient in the same transaction still works, and only it is queued
    rep = r.cmd("RCPT TO:<user@example.com>", 250)
    r.cmd("DATA", 354)
    r.send(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    rep = r.expect(250)
    msgs = a.wait_for(1, timeout=20)
    assert [m.rcpt_tos for m in msgs] == [["user@example.com"]]
    assert b.messages == [] and b.sessions == 0


def test_tricky_addresses_for_relay_domain_go_to_relay_domain(ternd, sink, smtp_raw):
    t, a, b = _start(ternd, sink)
    accepted = []
    for rcpt in ACCEPTED:
        r = smtp_raw(t.port("relay"))
        r.greeting()
        r.ehlo("attacker.test")
        r.cmd("MAIL FROM:<spammer@other.test>", 250)
        rep = r.cmd("RCPT TO:" + rcpt)
        if rep.code != 250:
            # refusing is fine too
            assert rep.code in (501, 553, 554), (rcpt, rep)
            r.cmd("QUIT", 221)
            continue
        r.cmd("DATA", 354)
        r.send(b"Subject: trick\r\n\r\nbody\r\n.\r\n")
        rep = r.expect(250)
        accepted.append((rcpt, rep.queue_id))
        r.cmd("QUIT", 221)
    assert accepted, "expected at least the plain relay-domain address to be accepted"
    # each accepted message is delivered to example.com's route, and only there
    msgs = a.wait_for(len(accepted), timeout=30)
    deadline = time.monotonic() + 10
    while t.queue() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert t.queue() == [], t.queue()
    assert b.messages == [] and b.sessions == 0, b.messages
    got = sorted(rc for m in msgs for rc in m.rcpt_tos)
    assert len(got) == len(accepted)
    for rc in got:
        dom = rc.rsplit("@", 1)[1]
        assert dom.lower() == RELAY, got
    # the relay decision and the routing agree: logs name example.com's relay
    assert not re.search(r"relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d" % b.port, t.log())


def test_trusted_and_authenticated_may_relay(ternd, sink, smtp_raw):
    """The positive side, so the refusals above mean something: a trusted
    network relays anywhere."""
    a = sink()
    b = sink()
    t = ternd(listeners=[("relay", "relay plain")], relay_domains=RELAY,
              trusted="127.0.0.0/8",
              extra_conf="route example.com smtp:[127.0.0.1]:%d\n"
                         "route other.test smtp:[127.0.0.1]:%d\n" % (a.port, b.port))
    r = smtp_raw(t.port("relay"))
    r.greeting()
    r.ehlo()
    r.cmd("MAIL FROM:<me@example.com>", 250)
    r.cmd("RCPT TO:<user@other.test>", 250)
    r.cmd("RCPT TO:<user@[127.0.0.1]>", 250)
    r.cmd("DATA", 354)
    r.send(b"Subject: ok\r\n\r\nbody\r\n.\r\n")
    r.expect(250)
    msgs = b.wait_for(1, timeout=20)
    assert "user@other.test" in msgs[0].rcpt_tos
