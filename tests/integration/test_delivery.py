"""End-to-end delivery through the real ternd (issue "Delivery"): MX routing,
fallback, implicit and null MX, DNS failures, 4xx/5xx handling, timeouts,
DSNs (RFC 3464), the null sender, connection reuse and pipelining, and the
per-attempt log line.

Every test runs a real ternd with MX routing (default_route=None) against
the test DNS server and aiosmtpd sinks on 127.0.0.2, 127.0.0.3, ... which all
listen on the same port, given to ternd as `mx-port`. Timers are short and set
through the configuration only (retry 1s 2s, command-timeout 2s, ...).

The helpers here (DeliveryEnv, the `env` fixture, dsn_parts ...) are shared by
test_delivery_*.py.
"""

import asyncio
import email
import json
import email.policy
import re
import socket
import threading
import time

import pytest

from conftest import RawSMTP, free_port

# The per-attempt log line (doc/ternd.8, DIAGNOSTICS; written by
# sched_log_rcpt in queue/sched/sched.c).
ATTEMPT_RE = re.compile(
    r"id=(?P<id>[0-9A-Fa-f]{16}) to=<(?P<to>[^>]*)> relay=(?P<relay>\S+) "
    r"dsn=(?P<dsn>[245]\.\d{1,3}\.\d{1,3}) "
    r"status=(?P<status>sent|deferred|bounced|expired) delay=(?P<delay>\d+)s")

BASE_CONF = {
    "retry": "1s 2s",
    "command-timeout": "2s",
    "connect-timeout": "2s",
    "delay-warning": "0",
    "max-queue-lifetime": "1h",
}


def make_conf(extra):
    """BASE_CONF with the directives of extra ("name value" lines) replacing
    or adding to it."""
    conf = dict(BASE_CONF)
    more = []
    for line in extra.strip().splitlines():
        name, _, value = line.strip().partition(" ")
        if name in conf:
            conf[name] = value
        elif name:
            more.append(line.strip())
    return "\n".join(["%s %s" % kv for kv in conf.items()] + more)

SENDER = "alice@sender.test"
SENDER_MX_IP = "127.0.0.9"


def attempts(log, qid=None, to=None):
    """Parsed per-attempt lines of log, optionally for one id / recipient."""
    out = []
    for m in ATTEMPT_RE.finditer(log):
        if qid is not None and m.group("id").upper() != qid.upper():
            continue
        if to is not None and m.group("to") != to:
            continue
        out.append(m.groupdict())
    return out


class DeliveryEnv:
    """One test's world: DNS, sinks on 127.0.0.N:port, a ternd."""

    def __init__(self, ternd, dns, sink):
        self._ternd = ternd
        self.dns = dns
        self._sink = sink
        self.port = self._pick_port()
        self.sinks = {}
        self.t = None
        self.zone = {}
        # the sender's domain has its own MX (a sink), where DSNs arrive
        self.zone_add({"sender.test": {"MX": [(10, "mx.sender.test")]},
                       "mx.sender.test": {"A": [SENDER_MX_IP]}})

    @staticmethod
    def _pick_port():
        """A port free on 127.0.0.2 .. 127.0.0.12 (sinks and dead MX)."""
        for _ in range(50):
            port = free_port("127.0.0.2")
            ok = True
            for n in range(2, 13):
                s = socket.socket()
                try:
                    s.bind(("127.0.0.%d" % n, port))
                except OSError:
                    ok = False
                finally:
                    s.close()
                if not ok:
                    break
            if ok:
                return port
        raise RuntimeError("no port free on 127.0.0.2-12")

    def zone_add(self, z):
        self.zone.update(z)
        self.dns.set_zone(self.zone)

    def sink(self, ip):
        s = self._sink(ip, self.port)
        self.sinks[ip] = s
        return s

    @property
    def dsn_sink(self):
        if SENDER_MX_IP not in self.sinks:
            self.sink(SENDER_MX_IP)
        return self.sinks[SENDER_MX_IP]

    def start(self, extra="", **kw):
        kw.setdefault("default_route", None)
        kw.setdefault("trusted", "127.0.0.0/8")
        kw.setdefault("relay_domains", None)
        self.t = self._ternd(mx_port=self.port, extra_conf=make_conf(extra), **kw)
        return self.t

    def send(self, rcpts, sender=SENDER, subject="test", body=None, c=None):
        """Submit one message on the relay listener; returns its queue id."""
        if isinstance(rcpts, str):
            rcpts = [rcpts]
        own = c is None
        if own:
            c = RawSMTP(self.t.port(), timeout=30)
            c.greeting()
            c.ehlo()
        c.cmd("MAIL FROM:<%s>" % sender, 250)
        for r in rcpts:
            c.cmd("RCPT TO:<%s>" % r, 250)
        c.cmd("DATA", 354)
        if body is None:
            body = "hello %s\r\n" % ",".join(rcpts)
        msg = ("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nMessage-ID: <%s@client.test>\r\n\r\n%s"
               % (sender or "nobody@client.test", rcpts[0], subject,
                  "%s.%f" % (subject.replace(" ", "."), time.time()), body))
        c.send(msg.encode() + b".\r\n")
        r = c.reply(timeout=30)
        assert r.code == 250 and r.queue_id, "message not queued: %r" % r
        if own:
            c.cmd("QUIT", 221)
            c.close()
        return r.queue_id

    def wait_gone(self, qids, timeout=15):
        """Wait until none of qids is in the queue."""
        qids = {q.upper() for q in qids}
        deadline = time.monotonic() + timeout
        while True:
            left = qids & {q.upper() for q in self.t.queue_ids()}
            if not left:
                return
            if time.monotonic() > deadline:
                raise AssertionError("still queued after %.0fs: %r\nqueue: %r\nlog:\n%s"
                                     % (timeout, left, self.t.queue(), self.t.log()[-4000:]))
            time.sleep(0.1)

    def wait_drained(self, timeout=15):
        """Wait until the whole queue is empty. Then nothing more can be
        delivered or bounced: a DSN is queued before the message it
        reports on is removed, and a message is removed only after its
        peer's 250 (so the sinks already hold every copy)."""
        deadline = time.monotonic() + timeout
        while self.t.queue_ids():
            if time.monotonic() > deadline:
                raise AssertionError("queue not empty after %.0fs: %r\nlog:\n%s"
                                     % (timeout, self.t.queue(), self.t.log()[-4000:]))
            time.sleep(0.1)

    def queued(self, qid):
        for m in self.t.queue():
            if m["id"].upper() == qid.upper():
                return m
        return None

    def wait_attempt(self, qid, status, to=None, n=1, timeout=15):
        """Wait for n per-attempt log lines of qid with this status."""
        deadline = time.monotonic() + timeout
        while True:
            got = [a for a in attempts(self.t.log(), qid, to) if a["status"] == status]
            if len(got) >= n:
                return got
            if time.monotonic() > deadline:
                raise AssertionError("no %d %r attempt lines for %s within %.0fs; log:\n%s"
                                     % (n, status, qid, timeout, self.t.log()[-4000:]))
            time.sleep(0.05)


@pytest.fixture
def env(ternd, dns, sink):
    return DeliveryEnv(ternd, dns, sink)


def dsn_parts(data):
    """Parse a DSN (RFC 3464) and check its structure. Returns
    (message, per-message fields, [per-recipient fields], headers part text)."""
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status", msg["Content-Type"]
    parts = msg.get_payload()
    assert isinstance(parts, list) and len(parts) >= 2, parts
    assert parts[0].get_content_type() == "text/plain", [p.get_content_type() for p in parts]
    ds = [p for p in parts if p.get_content_type() == "message/delivery-status"]
    assert len(ds) == 1, [p.get_content_type() for p in parts]
    # compat32 parses message/delivery-status into a list of header blocks
    blocks = ds[0].get_payload()
    assert isinstance(blocks, list) and len(blocks) >= 2, blocks
    per_msg = dict((k.lower(), v) for k, v in blocks[0].items())
    per_rcpt = [dict((k.lower(), v) for k, v in b.items()) for b in blocks[1:]]
    hdr = [p for p in parts if p.get_content_type() in ("text/rfc822-headers", "message/rfc822")]
    assert len(hdr) == 1, "no original headers part: %r" % [p.get_content_type() for p in parts]
    htext = hdr[0].get_payload()
    if isinstance(htext, list):
        htext = str(htext[0])
    return msg, per_msg, per_rcpt, htext


def slow_data(s, delay, stamps=None):
    """Make sink s take `delay` seconds before answering each DATA; stamps
    (a list) gets (time, rcpts) when each 250 is about to go out.
    delay is a one-element list so a test can change it at run time."""
    h = s._controller.handler
    orig = h.handle_DATA

    async def handle_DATA(server, session, envelope):
        await asyncio.sleep(delay[0])
        r = await orig(server, session, envelope)
        if stamps is not None:
            stamps.append((time.time(), list(envelope.rcpt_tos)))
        return r

    h.handle_DATA = handle_DATA


# ---------------------------------------------------------------- MX routing

def test_mx_preference_order(env):
    """Both exchangers up: everything goes to the lower preference."""
    env.zone_add({"example.test": {"MX": [(20, "mx2.example.test"), (10, "mx1.example.test")]},
                  "mx1.example.test": {"A": ["127.0.0.2"]},
                  "mx2.example.test": {"A": ["127.0.0.3"]}})
    s1, s2 = env.sink("127.0.0.2"), env.sink("127.0.0.3")
    t = env.start()
    qids = [env.send("bob%d@example.test" % i) for i in range(3)]
    msgs = s1.wait_for(3)
    env.wait_gone(qids)
    assert sorted(r for m in msgs for r in m.rcpt_tos) == \
        ["bob0@example.test", "bob1@example.test", "bob2@example.test"]
    assert s2.messages == [] and s2.sessions == 0
    for q in qids:
        a = attempts(t.log(), q)
        assert [x["status"] for x in a] == ["sent"], a
        assert a[0]["relay"] == "mx1.example.test[127.0.0.2]:%d" % env.port, a
        assert a[0]["dsn"].startswith("2."), a


def test_mx_fallback_when_first_down(env):
    """MX 10 has nothing listening: the message goes to MX 20 at once."""
    env.zone_add({"example.test": {"MX": [(10, "mx1.example.test"), (20, "mx2.example.test")]},
                  "mx1.example.test": {"A": ["127.0.0.4"]},     # no sink there
                  "mx2.example.test": {"A": ["127.0.0.3"]}})
    s2 = env.sink("127.0.0.3")
    t = env.start()
    qid = env.send("bob@example.test")
    msgs = s2.wait_for(1)
    assert msgs[0].rcpt_tos == ["bob@example.test"]
    assert msgs[0].mail_from == SENDER
    env.wait_gone([qid])
    a = attempts(t.log(), qid)
    assert [x["status"] for x in a] == ["sent"], a   # one attempt, not a retry
    assert a[0]["relay"] == "mx2.example.test[127.0.0.3]:%d" % env.port


def test_implicit_mx(env):
    """No MX record: the domain's own A record is the exchanger."""
    env.zone_add({"implicit.test": {"A": ["127.0.0.3"]}})
    s = env.sink("127.0.0.3")
    t = env.start()
    qid = env.send("carol@implicit.test")
    msgs = s.wait_for(1)
    assert msgs[0].rcpt_tos == ["carol@implicit.test"]
    env.wait_gone([qid])
    a = attempts(t.log(), qid)
    assert a and a[0]["status"] == "sent" and "[127.0.0.3]" in a[0]["relay"], a
    assert ("implicit.test", "MX", "udp") in env.dns.queries
    assert ("implicit.test", "A", "udp") in env.dns.queries


# ---------------------------------------------------------------- DNS failures

def check_bounce_dsn(dsn_msg, qid, rcpt, status, orig_subject):
    """The DSN for one failed recipient of qid, as the sender's MX got it."""
    assert dsn_msg.mail_from in ("", "<>"), dsn_msg.mail_from
    assert dsn_msg.rcpt_tos == [SENDER]
    msg, per_msg, per_rcpt, htext = dsn_parts(dsn_msg.data)
    assert msg["To"] and SENDER in msg["To"], msg["To"]
    assert "reporting-mta" in per_msg, per_msg
    assert len(per_rcpt) == 1, per_rcpt
    r = per_rcpt[0]
    assert r["final-recipient"].replace(" ", "").lower() == "rfc822;" + rcpt, r
    assert r["action"].strip().lower() == "failed", r
    assert r["status"].strip() == status, r
    assert "Subject: %s" % orig_subject in htext, htext
    return msg, per_msg, r


def test_null_mx_bounces(env):
    env.zone_add({"nullmx.test": {"MX": [(0, ".")]}})
    d = env.dsn_sink
    t = env.start()
    qid = env.send("dave@nullmx.test", subject="to a null MX")
    msgs = d.wait_for(1)
    check_bounce_dsn(msgs[0], qid, "dave@nullmx.test", "5.1.10", "to a null MX")
    env.wait_gone([qid])
    a = attempts(t.log(), qid)
    assert [x["status"] for x in a] == ["bounced"], a
    assert a[0]["dsn"] == "5.1.10"
    # the DSN itself was delivered (to the sender's MX) and logged as sent
    assert re.search(r"to=<%s> relay=mx\.sender\.test\[127\.0\.0\.9\]:\d+ dsn=2\.\d+\.\d+ "
                     r"status=sent" % re.escape(SENDER), t.log()), t.log()


def test_mx_pointing_at_ourselves_bounces_as_a_loop(env):
    """RFC 5321 5.1: ternd (hostname mx.test) drops itself and every MX not
    preferred to it; a better MX still gets the mail, none left is 5.4.6."""
    env.zone_add({"loop.test": {"MX": [(10, "mx.test.")]},
                  "mx.test": {"A": ["127.0.0.4"]},
                  "backup.test": {"MX": [(5, "mx1.backup.test"), (10, "mx.test"),
                                         (20, "mx3.backup.test")]},
                  "mx1.backup.test": {"A": ["127.0.0.3"]},
                  "mx3.backup.test": {"A": ["127.0.0.5"]}})
    ours = env.sink("127.0.0.4")         # would receive the looping mail
    good = env.sink("127.0.0.3")
    after = env.sink("127.0.0.5")
    d = env.dsn_sink
    t = env.start()
    assert "hostname mx.test" in t.conf_text
    q1 = env.send("erin@loop.test", subject="loops")
    (bounce,) = d.wait_for(1)
    check_bounce_dsn(bounce, q1, "erin@loop.test", "5.4.6", "loops")
    assert "loops back to myself" in bounce.data.decode(errors="replace")
    q2 = env.send("fay@backup.test", subject="backup")
    good.wait_for(1)
    env.wait_gone([q1, q2])
    assert ours.messages == [] and after.messages == []
    assert [x["dsn"] for x in attempts(t.log(), q1)] == ["5.4.6"]


def test_address_literal_is_delivered_to_that_address(env):
    """user@[127.0.0.3] names its host: no MX lookup of "[127.0.0.3]"."""
    s = env.sink("127.0.0.3")
    t = env.start()
    qid = env.send("gus@[127.0.0.3]", subject="literal")
    (m,) = s.wait_for(1)
    assert m.rcpt_tos == ["gus@[127.0.0.3]"]
    env.wait_gone([qid])
    a = attempts(t.log(), qid)
    assert [x["status"] for x in a] == ["sent"], a
    assert not [q for q in env.dns.queries if "[" in q[0]], env.dns.queries


def test_nxdomain_bounces(env):
    d = env.dsn_sink
    t = env.start()
    qid = env.send("erin@nowhere.test", subject="to nowhere")
    msgs = d.wait_for(1)
    check_bounce_dsn(msgs[0], qid, "erin@nowhere.test", "5.1.2", "to nowhere")
    env.wait_gone([qid])
    a = attempts(t.log(), qid)
    assert [x["status"] for x in a] == ["bounced"] and a[0]["dsn"] == "5.1.2", a


def test_servfail_defers_then_delivers(env):
    env.zone_add({"example.test": {"MX": [(10, "mx1.example.test")]},
                  "mx1.example.test": {"A": ["127.0.0.2"]}})
    env.dns.servfail("example.test", "MX")
    s = env.sink("127.0.0.2")
    d = env.dsn_sink
    t = env.start()
    qid = env.send("frank@example.test")
    env.wait_attempt(qid, "deferred")
    m = env.queued(qid)
    assert m is not None, "deferred message left the queue"
    assert m["attempts"] >= 1, m
    rc = m["recipients"][0]
    assert rc["state"].lower() == "pending", m
    assert rc["status"] == "4.4.3", m
    assert "SERVFAIL" in (rc["last_error"] or ""), m
    assert s.messages == []
    env.dns.clear_faults()                  # DNS recovers
    msgs = s.wait_for(1, timeout=15)
    assert msgs[0].rcpt_tos == ["frank@example.test"]
    env.wait_gone([qid])
    assert d.messages == [], "a DSN was sent for a temporary DNS failure"
    st = [x["status"] for x in attempts(t.log(), qid)]
    assert st[-1] == "sent" and set(st[:-1]) == {"deferred"} and len(st) >= 2, st


# ---------------------------------------------------------------- SMTP replies

def test_4xx_defers_then_delivers(env):
    env.zone_add({"example.test": {"MX": [(10, "mx1.example.test")]},
                  "mx1.example.test": {"A": ["127.0.0.2"]}})
    s = env.sink("127.0.0.2")
    d = env.dsn_sink
    s.data_reply = "451 4.3.0 not now"
    t = env.start()
    qid = env.send("gina@example.test")
    a = env.wait_attempt(qid, "deferred")
    s.data_reply = None                      # the next attempt succeeds
    assert a[0]["dsn"] == "4.3.0", a
    assert len(s.refused_data) >= 1
    m = env.queued(qid)
    assert m is not None and m["attempts"] >= 1, m
    assert "451" in (m["recipients"][0]["last_error"] or ""), m
    msgs = s.wait_for(1, timeout=15)
    assert msgs[0].rcpt_tos == ["gina@example.test"]
    env.wait_gone([qid])
    assert d.messages == []
    st = [x["status"] for x in attempts(t.log(), qid)]
    assert st[0] == "deferred" and st[-1] == "sent", st


def test_5xx_one_of_three_recipients(env):
    env.zone_add({"example.test": {"MX": [(10, "mx1.example.test")]},
                  "mx1.example.test": {"A": ["127.0.0.2"]}})
    s = env.sink("127.0.0.2")
    d = env.dsn_sink
    s.rcpt_reply["bad@example.test"] = "550 5.1.1 no such user"
    t = env.start()
    rcpts = ["good1@example.test", "bad@example.test", "good2@example.test"]
    qid = env.send(rcpts, subject="three rcpts")
    dsns = d.wait_for(1)
    msgs = s.wait_for(1)
    env.wait_gone([qid])
    env.wait_drained()                       # nothing more may arrive
    assert len(s.messages) == 1, s.messages  # one DATA ...
    assert s.messages[0].rcpt_tos == ["good1@example.test", "good2@example.test"]  # two RCPTs
    assert [a for a, _ in s.messages[0].refused] == ["bad@example.test"]
    assert len(d.messages) == 1, d.messages  # one DSN
    check_bounce_dsn(dsns[0], qid, "bad@example.test", "5.1.1", "three rcpts")
    assert "no such user" in dsns[0].data.decode(errors="replace")
    a = attempts(t.log(), qid)
    by = {x["to"]: x for x in a}
    assert by["good1@example.test"]["status"] == "sent"
    assert by["good2@example.test"]["status"] == "sent"
    assert by["bad@example.test"]["status"] == "bounced"
    assert by["bad@example.test"]["dsn"] == "5.1.1"
    assert len(a) == 3, a


@pytest.mark.parametrize("stage", ["greeting", "mail"])
def test_hanging_server_times_out(env, stage):
    """A server that stops answering is timed out by command-timeout (2 s);
    the message is deferred, not lost, and delivered once the server works."""
    env.zone_add({"example.test": {"MX": [(10, "mx1.example.test")]},
                  "mx1.example.test": {"A": ["127.0.0.2"]}})
    s = env.sink("127.0.0.2")
    s.hang = stage
    t = env.start(extra="retry 3s")
    t0 = time.monotonic()
    qid = env.send("hank@example.test")
    a = env.wait_attempt(qid, "deferred", timeout=10)
    took = time.monotonic() - t0
    assert 1.5 <= took <= 6, "deferred after %.1fs (command-timeout 2s)" % took
    assert a[0]["dsn"].startswith("4."), a
    m = env.queued(qid)
    assert m is not None, "timed-out message left the queue"
    assert "timeout" in (m["recipients"][0]["last_error"] or ""), m
    assert stage in s.hung
    s.release()
    msgs = s.wait_for(1, timeout=15)
    assert msgs[-1].rcpt_tos == ["hank@example.test"]
    env.wait_gone([qid])


# ---------------------------------------------------------------- DSN timers

def test_delay_warning_then_expiry(env):
    """delay-warning 2s with a server that keeps deferring: exactly one
    "delayed" DSN; max-queue-lifetime 6s: then one "failed" DSN and the
    message is gone."""
    env.zone_add({"example.test": {"MX": [(10, "mx1.example.test")]},
                  "mx1.example.test": {"A": ["127.0.0.2"]}})
    s = env.sink("127.0.0.2")
    d = env.dsn_sink
    s.rcpt_reply["ivan@example.test"] = "450 4.2.1 mailbox busy"
    t = env.start(extra="delay-warning 2s\nmax-queue-lifetime 6s")
    qid = env.send("ivan@example.test", subject="slowly")
    dsns = d.wait_for(2, timeout=20)
    env.wait_gone([qid], timeout=5)
    env.wait_drained()                       # the expiry DSN is out too
    dsns = list(d.messages)
    assert len(dsns) == 2, dsns
    _, _, rc = dsn_parts(dsns[0].data)[:3]
    assert len(rc) == 1 and rc[0]["action"].strip().lower() == "delayed", rc
    assert rc[0]["status"].strip().startswith("4."), rc
    msg0 = email.message_from_bytes(dsns[0].data)
    assert "Delayed" in msg0["Subject"], msg0["Subject"]
    msg, per_msg, r = check_bounce_dsn(dsns[1], qid, "ivan@example.test", "4.4.7", "slowly")
    assert "mailbox busy" in dsns[1].data.decode(errors="replace")
    assert re.search(r"id=%s delay warning sent" % qid, t.log())
    a = attempts(t.log(), qid)
    assert a[-1]["status"] == "expired", a
    assert all(x["status"] == "deferred" for x in a[:-1]), a
    # ternctl stats counts the expiry as such, and the DSNs apart from
    # what clients sent (their deliveries are deliveries)
    r = t.ternctl("stats", "--json")
    assert r.returncode == 0, r.stderr
    c = json.loads(r.stdout)["counters"]
    assert c == {"accepted": 1, "delivered": 2, "deferred": len(a) - 1,
                 "bounced": 0, "expired": 1, "dsn": 2}, (c, a)


def test_null_sender_never_gets_a_dsn(env):
    env.zone_add({"example.test": {"MX": [(10, "mx1.example.test")]},
                  "mx1.example.test": {"A": ["127.0.0.2"]}})
    s = env.sink("127.0.0.2")
    d = env.dsn_sink
    s.rcpt_reply["nope@example.test"] = "550 5.1.1 no such user"
    t = env.start()
    q1 = env.send("judy@nowhere.test", sender="")           # NXDOMAIN
    q2 = env.send("nope@example.test", sender="")           # 5xx
    env.wait_gone([q1, q2])
    env.wait_drained()                       # no DSN was queued either
    log = t.log()
    for q in (q1, q2):
        lines = [l for l in log.splitlines() if "id=%s" % q in l and "status=bounced" in l]
        assert len(lines) == 1, log
        assert "dsn not sent: null sender" in lines[0], lines[0]
    assert d.messages == [] and d.sessions == 0, d.messages
    assert s.messages == []


# ---------------------------------------------------------------- connections

def test_connection_reuse(env):
    env.zone_add({"example.test": {"MX": [(10, "mx1.example.test")]},
                  "mx1.example.test": {"A": ["127.0.0.2"]}})
    s = env.sink("127.0.0.2")
    t = env.start(extra="max-dest-connections 2")
    c = RawSMTP(t.port(), timeout=30)
    c.greeting()
    c.ehlo()
    qids = [env.send("kim%d@example.test" % i, c=c) for i in range(10)]
    c.close()
    s.wait_for(10)
    env.wait_gone(qids)
    assert sorted(r for m in s.messages for r in m.rcpt_tos) == \
        sorted("kim%d@example.test" % i for i in range(10))
    assert 1 <= s.sessions < 10, "10 messages over %d connections" % s.sessions
    assert s.sessions <= 2, "max-dest-connections 2, got %d sessions" % s.sessions


class PipelineSink:
    """A raw SMTP server that offers PIPELINING and answers nothing of a
    transaction until it has read DATA: a client that waits for the MAIL
    reply before sending RCPT never gets one (and times out)."""

    def __init__(self, host, port):
        self.ls = socket.socket()
        self.ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.ls.bind((host, port))
        self.ls.listen(8)
        self.ls.settimeout(0.2)
        self.batches = []          # commands read before the first reply
        self.delivered = []
        self.stop_ev = threading.Event()
        self.th = threading.Thread(target=self.run, daemon=True)
        self.th.start()

    def run(self):
        while not self.stop_ev.is_set():
            try:
                conn, _ = self.ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self.session, args=(conn,), daemon=True).start()

    def session(self, conn):
        conn.settimeout(10)
        f = conn.makefile("rb")
        try:
            conn.sendall(b"220 pipe.test ESMTP\r\n")
            line = f.readline()
            if not line.upper().startswith(b"EHLO"):
                return
            conn.sendall(b"250-pipe.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n")
            while True:
                cmds = []
                while True:
                    line = f.readline()
                    if not line:
                        return
                    cmds.append(line.rstrip(b"\r\n").decode())
                    u = cmds[-1].upper()
                    if u == "DATA" or u == "QUIT" or u == "RSET":
                        break
                if cmds[-1].upper() == "QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                if cmds[-1].upper() == "RSET":
                    conn.sendall(b"250 ok\r\n")
                    continue
                self.batches.append(cmds)
                conn.sendall(b"250 ok\r\n" * (len(cmds) - 1) + b"354 go\r\n")
                data = b""
                while not data.endswith(b"\r\n.\r\n"):
                    chunk = f.readline()
                    if not chunk:
                        return
                    data += chunk
                self.delivered.append((cmds, data))
                conn.sendall(b"250 2.0.0 ok\r\n")
        except OSError:
            return
        finally:
            f.close()
            conn.close()

    def stop(self):
        self.stop_ev.set()
        self.ls.close()


def test_pipelining(env):
    env.zone_add({"example.test": {"MX": [(10, "mx1.example.test")]},
                  "mx1.example.test": {"A": ["127.0.0.2"]}})
    p = PipelineSink("127.0.0.2", env.port)
    try:
        t = env.start()
        qid = env.send(["lee@example.test", "lou@example.test"])
        deadline = time.monotonic() + 10
        while not p.delivered and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.delivered, "no delivery through a PIPELINING server; log:\n%s" % t.log()[-3000:]
        cmds = p.batches[0]
        assert [c.split(":")[0].upper() for c in cmds] == \
            ["MAIL FROM", "RCPT TO", "RCPT TO", "DATA"], cmds
        env.wait_gone([qid])
    finally:
        p.stop()


# ---------------------------------------------------------------- logging

def test_attempt_log_lines(env):
    """One line per recipient and attempt: id= to= relay= dsn= status= delay=."""
    env.zone_add({"example.test": {"MX": [(10, "mx1.example.test")]},
                  "mx1.example.test": {"A": ["127.0.0.2"]}})
    s = env.sink("127.0.0.2")
    env.dsn_sink
    s.rcpt_reply["later@example.test"] = "451 4.2.0 later"
    s.rcpt_reply["never@example.test"] = "550 5.1.1 never"
    t = env.start()
    qid = env.send(["now@example.test", "later@example.test", "never@example.test"])
    env.wait_attempt(qid, "deferred", to="later@example.test", n=2)
    s.rcpt_reply.pop("later@example.test")
    env.wait_gone([qid])
    log = t.log()
    a = attempts(log, qid)
    seq = {}
    for x in a:
        seq.setdefault(x["to"], []).append(x["status"])
    assert seq["now@example.test"] == ["sent"], seq
    assert seq["never@example.test"] == ["bounced"], seq
    later = seq["later@example.test"]
    assert later[-1] == "sent" and later[:-1] == ["deferred"] * (len(later) - 1), seq
    assert len(later) >= 3, seq
    relay = "mx1.example.test[127.0.0.2]:%d" % env.port
    for x in a:
        assert x["relay"] == relay, x
    dsns = {x["to"]: x["dsn"] for x in a if x["status"] != "deferred"}
    assert dsns["never@example.test"] == "5.1.1"
    assert dsns["now@example.test"].startswith("2.")
    assert [x["dsn"] for x in a if x["status"] == "deferred"] == ["4.2.0"] * (len(later) - 1)
    # exactly one line per recipient and attempt: no line without its fields
    n = sum(1 for l in log.splitlines() if "id=%s to=" % qid in l)
    assert n == len(a), [l for l in log.splitlines() if "id=%s" % qid in l]


def test_double_bounce_stops(env):
    """The sender's own domain does not exist: the bounce bounces, and that
    second failure (null sender) is only logged: no loop, the queue drains."""
    t = env.start()
    qid = env.send("kate@nowhere.test", sender="liz@alsonowhere.test")
    m = re.search(r"id=%s to=<kate@nowhere\.test> .*status=bounced.* dsn_id=([0-9A-Fa-f]{16})"
                  % qid, t.wait_log(r"id=%s to=.*status=bounced" % qid).string)
    assert m, t.log()
    dsn_id = m.group(1)
    line = t.wait_log(r"id=%s to=<liz@alsonowhere\.test> .*status=bounced.*" % dsn_id).group(0)
    assert "dsn not sent: null sender" in line, line
    env.wait_gone([qid, dsn_id])
    env.wait_drained()                       # no third bounce was queued
    assert len(re.findall(r"status=bounced", t.log())) == 2, t.log()
