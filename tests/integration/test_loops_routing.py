"""Safety at the edges of relaying, through the real ternd:

- mail loops (RFC 5321 6.3): a message arriving with max-hops trace header
  fields (Received:, Delivered-To:) or more is refused at the end of DATA
  with 554 5.4.6 and never queued; two ternds that route everything to each
  other stop after a bounded number of hops, the bounce of the looping
  message too, and both queues drain;
- a route that points at one of ternd's own listeners is a loop (RFC 5321
  5.1 applied to addresses): bounced 5.4.6 with one log line, never sent;
- sender-specified routing (%, !, quoted @, source routes) towards a relay
  domain from an untrusted, unauthenticated client: 554 5.7.1;
- RCPT TO:<postmaster> is accepted from anyone (RFC 5321 4.5.1) and goes to
  the postmaster address; MAIL FROM:<> is allowed to an authenticated user
  on submission with sender-login checks.
"""

import re
import time

from conftest import RawSMTP

ATTEMPT_RE = re.compile(
    r"id=(?P<id>[0-9A-Fa-f]{16}) to=<(?P<to>[^>]*)> relay=(?P<relay>\S+) "
    r"dsn=(?P<dsn>[245]\.\d{1,3}\.\d{1,3}) "
    r"status=(?P<status>sent|deferred|bounced|expired)")


def message(n_received=0, n_delivered_to=0, subject="hops"):
    """A message whose header section holds that many trace fields."""
    lines = []
    for i in range(n_received):
        lines.append("Received: from hop%d.test by hop%d.test; "
                     "Sat, 5 Dec 2026 10:00:00 +0000" % (i, i + 1))
    for i in range(n_delivered_to):
        lines.append("Delivered-To: user%d@example.com" % i)
    lines += ["From: <a@client.test>", "To: <b@example.com>",
              "Subject: %s" % subject, "Message-ID: <%s.%f@client.test>" % (subject, time.time())]
    return ("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode()


def send_data(r, data):
    """DATA with data (ending in CRLF); returns the reply to the final dot."""
    r.cmd("DATA", 354)
    r.send(data + b".\r\n")
    return r.reply(timeout=30)


def send_one(port, sender, rcpt, subject):
    """One message from sender to rcpt on port; returns the 250 reply."""
    c = RawSMTP(port, timeout=30)
    c.greeting()
    c.ehlo()
    c.cmd("MAIL FROM:<%s>" % sender, 250)
    c.cmd("RCPT TO:<%s>" % rcpt, 250)
    rep = send_data(c, message(0, subject=subject))
    assert rep.code == 250 and rep.queue_id, rep
    c.cmd("QUIT", 221)
    return rep


def route_everything_to(t, port):
    """Append `route * smtp:[127.0.0.1]:port` to a ternd not yet started."""
    t.conf_text += "route * smtp:[127.0.0.1]:%d\n" % port
    t.conf_path.write_text(t.conf_text)


def session(smtp_raw, port):
    """A raw client after the greeting and EHLO."""
    r = smtp_raw(port)
    r.greeting()
    r.ehlo()
    return r


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(0.1)


# ---------------------------------------------------------------- hop count

def test_too_many_hops_refused_at_end_of_data(ternd, smtp_raw):
    t = ternd()                          # untrusted client, relay-domains example.com
    r = session(smtp_raw, t.port())
    # 49 trace fields: under the default limit of 50, queued
    r.cmd("MAIL FROM:<a@client.test>", 250)
    r.cmd("RCPT TO:<b@example.com>", 250)
    ok = send_data(r, message(49))
    assert ok.code == 250 and ok.queue_id, ok
    # 50: refused, not queued
    r.cmd("MAIL FROM:<a@client.test>", 250)
    r.cmd("RCPT TO:<b@example.com>", 250)
    no = send_data(r, message(50))
    assert (no.code, no.enh) == (554, "5.4.6"), no
    assert "Too many hops" in no.text
    # Delivered-To: counts as a hop too
    r.cmd("MAIL FROM:<a@client.test>", 250)
    r.cmd("RCPT TO:<b@example.com>", 250)
    no = send_data(r, message(30, 20))
    assert (no.code, no.enh) == (554, "5.4.6"), no
    # a bounce (null sender) over the limit is refused the same way
    r.cmd("MAIL FROM:<>", 250)
    r.cmd("RCPT TO:<b@example.com>", 250)
    no = send_data(r, message(60))
    assert (no.code, no.enh) == (554, "5.4.6"), no
    # the session goes on
    r.cmd("NOOP", 250)
    r.cmd("QUIT", 221)
    t.wait_log(r"from=<> status=refused reason=too-many-hops hops=60 max-hops=50")
    assert len(re.findall(r"reason=too-many-hops hops=50 ", t.log())) == 2, t.log()
    assert t.queue_ids() == {ok.queue_id}


def test_max_hops_directive(ternd, smtp_raw):
    t = ternd(extra_conf="max-hops 3")
    r = session(smtp_raw, t.port())
    r.cmd("MAIL FROM:<a@client.test>", 250)
    r.cmd("RCPT TO:<b@example.com>", 250)
    assert send_data(r, message(2)).code == 250
    r.cmd("MAIL FROM:<a@client.test>", 250)
    r.cmd("RCPT TO:<b@example.com>", 250)
    no = send_data(r, message(3))
    assert (no.code, no.enh) == (554, "5.4.6"), no
    t.wait_log(r"reason=too-many-hops hops=3 max-hops=3")


def _count(log, pattern):
    return len(re.findall(pattern, log))


def test_two_ternds_routing_to_each_other_stop(ternd, sink):
    """A routes everything to B and B to A (a classic MX/route loop between
    two servers). The message goes round max-hops times, is refused with
    5.4.6, bounces; the bounce goes round too, is refused, and is not bounced
    again: a bounded number of hops, then both queues are empty."""
    common = "retry 1s\ndelay-warning 0\n"
    a = ternd(start=False, hostname="a.test", trusted="127.0.0.0/8",
              relay_domains=None, default_route=None, extra_conf=common)
    b = ternd(start=False, hostname="b.test", trusted="127.0.0.0/8",
              relay_domains=None, default_route=None, extra_conf=common)
    route_everything_to(a, b.port())
    route_everything_to(b, a.port())
    a.start()
    b.start()
    send_one(a.port(), "alice@sender.test", "bob@far.test", "pingpong")

    def both_logs():
        return a.log() + b.log()

    # the end: the bounce refused too, then "dsn not sent: null sender"
    wait_until(lambda: "dsn not sent: null sender" in both_logs(), 60,
               "the bounce of the looping message to stop")
    wait_until(lambda: not a.queue_ids() and not b.queue_ids(), 20, "empty queues")
    logs = both_logs()
    assert _count(logs, r"reason=too-many-hops hops=50 max-hops=50") == 2, logs[-4000:]
    queued = _count(logs, r"status=queued")
    # the message: 1 from the client + 49 relayed hops; the bounce: 1 made
    # + 49 relayed (hop 50 of each is refused): about 100, never unbounded
    assert 90 <= queued <= 110, queued
    # both queues empty means nothing is in flight either: a message leaves
    # a queue only after the next server has queued it (its 250), so the
    # loop is over, not paused


# ---------------------------------------------------------------- route to ourselves

def test_route_to_own_listener_bounces_as_a_loop(ternd, sink):
    s = sink()                           # the sender's domain: where the bounce goes
    t = ternd(start=False, trusted="127.0.0.0/8", relay_domains=None,
              default_route=None, extra_conf="route sender.test smtp:[127.0.0.1]:%d"
              % s.port)
    route_everything_to(t, t.port())
    t.start()
    qid = send_one(t.port(), "alice@sender.test", "bob@far.test", "self").queue_id
    (bounce,) = s.wait_for(1, timeout=15)
    text = bounce.data.decode(errors="replace")
    assert "5.4.6" in text and "loops back to myself" in text, text
    assert bounce.mail_from in ("", "<>")
    line = t.wait_log(r"id=%s status=loop dsn=5\.4\.6 .*" % qid).group(0)
    assert "127.0.0.1:%d" % t.port() in line, line
    wait_until(lambda: not t.queue_ids(), 15, "an empty queue")
    log = t.log()
    # only the client's message was received: ternd never connected to itself
    assert _count(log, r"status=queued") == 1, log
    assert _count(log, r" connect client=") == 1, log
    got = [m.groupdict() for m in ATTEMPT_RE.finditer(log) if m.group("id") == qid]
    assert [(x["status"], x["dsn"]) for x in got] == [("bounced", "5.4.6")], got


# ---------------------------------------------------------------- sender-specified routing

ROUTING_FORMS = [
    "<x%elsewhere.test@example.com>",
    "<elsewhere.test!x@example.com>",
    '<"x@elsewhere.test"@example.com>',
    '<"x%elsewhere.test"@example.com>',
    "<@example.com:x@example.com>",
    "<@a.test,@example.com:x@example.com>",
]


def test_sender_routing_refused_for_untrusted(ternd, smtp_raw):
    t = ternd()                          # relay-domains example.com, untrusted
    r = session(smtp_raw, t.port())
    r.cmd("MAIL FROM:<a@client.test>", 250)
    for form in ROUTING_FORMS:
        rep = r.cmd("RCPT TO:%s" % form)
        assert (rep.code, rep.enh) == (554, "5.7.1"), (form, rep)
        assert "sender-specified routing" in rep.text
    r.cmd('RCPT TO:<"plain quoted"@example.com>', 250)
    r.cmd("RCPT TO:<x.y+tag@example.com>", 250)
    rep = send_data(r, message(0))
    assert rep.code == 250
    r.cmd("QUIT", 221)
    assert _count(t.log(), r"status=refused reason=sender-routing") == len(ROUTING_FORMS)
    (m,) = t.queue()
    assert sorted(x["address"] for x in m["recipients"]) == \
        sorted(['"plain quoted"@example.com', "x.y+tag@example.com"]), m


def test_sender_routing_allowed_when_trusted_or_configured(ternd, smtp_raw):
    trusted = ternd(trusted="127.0.0.0/8")
    relaxed = ternd(extra_conf="allow-untrusted-routing yes")
    for t in (trusted, relaxed):
        r = session(smtp_raw, t.port())
        r.cmd("MAIL FROM:<a@client.test>", 250)
        for form in ROUTING_FORMS:
            r.cmd("RCPT TO:%s" % form, 250)
        r.cmd("QUIT", 221)
        assert "reason=sender-routing" not in t.log()
    # relay access is still decided on the real domain
    r = session(smtp_raw, relaxed.port())
    r.cmd("MAIL FROM:<a@client.test>", 250)
    r.cmd("RCPT TO:<x%example.com@elsewhere.test>", 554, "5.7.1")


def test_sender_routing_allowed_when_authenticated(ternd, certs, smtp_raw):
    from test_auth import PASSWORD, USER, auth_plain, raw_tls, start
    t = start(ternd, certs)
    r = raw_tls(smtp_raw, certs, t.port("sub"))
    auth_plain(r, "", USER, PASSWORD)
    r.cmd("MAIL FROM:<%s>" % USER, 250)
    for form in ROUTING_FORMS:
        r.cmd("RCPT TO:%s" % form, 250)
    r.cmd("QUIT", 221)


# ---------------------------------------------------------------- postmaster, null sender

def test_postmaster_accepted_from_anyone_and_delivered(ternd, sink, smtp_raw):
    s = sink()
    t = ternd(extra_conf="postmaster hostmaster@pm.test\n"
                         "route pm.test smtp:[127.0.0.1]:%d" % s.port)
    r = session(smtp_raw, t.port())      # untrusted; pm.test is no relay domain
    r.cmd("MAIL FROM:<a@client.test>", 250)
    r.cmd("RCPT TO:<x@pm.test>", 554, "5.7.1")
    r.cmd("RCPT TO:<PostMaster>", 250, "2.1.5")
    rep = send_data(r, message(0, subject="to postmaster"))
    assert rep.code == 250, rep
    r.cmd("QUIT", 221)
    (m,) = s.wait_for(1, timeout=15)
    assert m.rcpt_tos == ["hostmaster@pm.test"]
    assert b"Subject: to postmaster" in m.data
    t.wait_log(r"to=<postmaster> rewritten=<hostmaster@pm\.test>")


def test_postmaster_default_is_postmaster_at_hostname(ternd, smtp_raw):
    t = ternd(hostname="mx.test")        # default route: dead, so it stays queued
    r = session(smtp_raw, t.port())
    r.cmd("MAIL FROM:<a@client.test>", 250)
    r.cmd("RCPT TO:<postmaster>", 250)
    rep = send_data(r, message(0))
    assert rep.code == 250
    r.cmd("QUIT", 221)
    (m,) = t.queue()
    assert [x["address"] for x in m["recipients"]] == ["postmaster@mx.test"], m


def test_null_sender_allowed_on_submission_with_sender_login(ternd, certs, smtp_raw):
    from test_auth import PASSWORD, USER, auth_plain, raw_tls, start
    t = start(ternd, certs, extra="sender-login bob bob@example.net\n")
    for user, pw in ((USER, PASSWORD), ("bob", "bobs-password")):
        r = raw_tls(smtp_raw, certs, t.port("sub"))
        auth_plain(r, "", user, pw)
        r.cmd("MAIL FROM:<mallory@example.com>", 553, "5.7.1")   # still checked
        r.cmd("MAIL FROM:<>", 250, "2.1.0")
        r.cmd("RCPT TO:<someone@example.org>", 250)
        rep = send_data(r, message(0, subject="vacation reply"))
        assert rep.code == 250 and rep.queue_id, rep
        r.cmd("QUIT", 221)
    senders = [m["sender"] for m in t.queue()]
    assert senders == ["", ""], t.queue()
    # without AUTH, still no mail at all on submission
    r = raw_tls(smtp_raw, certs, t.port("sub"))
    r.cmd("MAIL FROM:<>", 530, "5.7.0")
