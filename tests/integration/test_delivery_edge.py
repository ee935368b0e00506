"""Delivery edge cases beyond the issue's list: hangs at every stage, a
server restarted under a cached connection, SIGTERM with a delivery in
flight, byte transparency, TLS policies, MAIL refusals, greeting refusals,
mixed destinations in one message, DNS timeouts."""

import time

import pytest

from conftest import strip_received
from test_delivery import (SENDER, attempts, check_bounce_dsn, dsn_parts,  # noqa: F401
                           env)


def one_mx(env, ip="127.0.0.2"):
    env.zone_add({"example.test": {"MX": [(10, "mx1.example.test")]},
                  "mx1.example.test": {"A": [ip]}})


@pytest.mark.parametrize("stage", ["ehlo", "rcpt", "data"])
def test_hang_other_stages(env, stage):
    """Like test_hanging_server_times_out, for the other stages. A hang after
    the final dot ("data") may end in a second copy (the server got it but
    never said so): allowed; losing it is not."""
    one_mx(env)
    s = env.sink("127.0.0.2")
    s.hang = stage
    t = env.start(extra="retry 3s")
    qid = env.send("hank@example.test")
    a = env.wait_attempt(qid, "deferred", timeout=10)
    assert a[0]["dsn"].startswith("4."), a
    m = env.queued(qid)
    assert m is not None and "timeout" in (m["recipients"][0]["last_error"] or ""), m
    s.release()
    s.wait_for(1, timeout=15)
    env.wait_gone([qid])
    assert all(x.rcpt_tos == ["hank@example.test"] for x in s.messages)
    st = [x["status"] for x in attempts(t.log(), qid)]
    assert st[-1] == "sent" and st.count("sent") == 1, st


def test_server_restart_under_cached_connection(env):
    """The next hop restarts between two messages: the cached connection is
    dead; the second message still goes out at its first attempt."""
    one_mx(env)
    s = env.sink("127.0.0.2")
    t = env.start()
    q1 = env.send("a1@example.test")
    s.wait_for(1)
    env.wait_gone([q1])
    s.stop()
    s2 = env.sink("127.0.0.2")
    q2 = env.send("a2@example.test")
    s2.wait_for(1)
    env.wait_gone([q2])
    st = [x["status"] for x in attempts(t.log(), q2)]
    assert st == ["sent"], (st, t.log()[-3000:])


def test_sigterm_with_delivery_in_flight(env):
    """SIGTERM while a delivery waits for the server: ternd stops promptly
    (the fixture fails the test otherwise), the message stays queued and is
    delivered after the restart."""
    one_mx(env)
    s = env.sink("127.0.0.2")
    s.hang = "data"
    t = env.start(extra="command-timeout 60s")
    qid = env.send("sam@example.test")
    s.wait_hung("data", timeout=10)
    t0 = time.monotonic()
    t.stop()
    assert time.monotonic() - t0 < 5, "stop took %.1fs" % (time.monotonic() - t0)
    s.release()
    t.start()
    assert qid.upper() in {q.upper() for q in t.queue_ids()} or \
        any(x.rcpt_tos == ["sam@example.test"] for x in s.messages)
    s.wait_for(1, timeout=15)
    env.wait_gone([qid])


def test_body_transparency(env):
    """Dot lines, 8-bit bytes, a long line and an empty last line arrive
    byte for byte (after tern's Received header), with BODY=8BITMIME."""
    one_mx(env)
    s = env.sink("127.0.0.2")
    t = env.start()
    from conftest import RawSMTP
    body = (b"From: <alice@sender.test>\r\nTo: <x@example.test>\r\nSubject: dots\r\n\r\n"
            b".leading dot\r\n..two dots\r\n.\r\n . space dot\r\n"
            b"caf\xc3\xa9 \xe9t\xe9\r\n" + b"y" * 990 + b"\r\n\r\nend\r\n")
    c = RawSMTP(t.port(), timeout=30)
    c.greeting()
    c.ehlo()
    c.cmd("MAIL FROM:<%s> BODY=8BITMIME" % SENDER, 250)
    c.cmd("RCPT TO:<x@example.test>", 250)
    c.cmd("DATA", 354)
    stuffed = b"\r\n".join((b"." + l if l.startswith(b".") else l)
                           for l in body.split(b"\r\n"))
    c.send(stuffed + b".\r\n")
    r = c.reply(timeout=30)
    assert r.code == 250 and r.queue_id, r
    c.close()
    m = s.wait_for(1)[0]
    assert strip_received(m.data) == body
    assert "BODY=8BITMIME" in [o.upper() for o in m.mail_options], m.mail_options
    assert any(o.upper().startswith("SIZE=") for o in m.mail_options), m.mail_options
    env.wait_gone([r.queue_id])


def test_tls_may_uses_starttls(env, certs):
    one_mx(env)
    s = env._sink("127.0.0.2", env.port, tls=True)
    t = env.start()
    qid = env.send("tina@example.test")
    m = s.wait_for(1)[0]
    assert m.tls, "delivered in plaintext although STARTTLS was offered"
    env.wait_gone([qid])
    # the delivery log line names the TLS version and cipher
    t.wait_log(r"id=%s to=<tina@example.test> .*status=sent .*tls=may cipher=\"TLSv1\.[23] [A-Z0-9_-]+\"" % qid)


def test_tls_encrypt_to_plain_server_defers(env):
    one_mx(env)
    s = env.sink("127.0.0.2")
    t = env.start(extra="tls-policy encrypt")
    qid = env.send("tom@example.test")
    a = env.wait_attempt(qid, "deferred")
    assert a[0]["dsn"] == "4.7.5", a
    assert s.messages == []
    m = env.queued(qid)
    assert m is not None and "TLS" in (m["recipients"][0]["last_error"] or ""), m


def test_mail_refused_bounces_all(env):
    """550 to MAIL: every recipient of the message bounces, in one DSN."""
    one_mx(env)
    s = env.sink("127.0.0.2")
    d = env.dsn_sink
    s.mail_reply = "550 5.7.1 sender rejected"
    t = env.start()
    qid = env.send(["u1@example.test", "u2@example.test"], subject="refused")
    dsns = d.wait_for(1)
    env.wait_gone([qid])
    time.sleep(0.5)
    assert len(d.messages) == 1
    _, _, rc, _ = dsn_parts(dsns[0].data)
    assert sorted(r["final-recipient"].split(";")[1].strip() for r in rc) == \
        ["u1@example.test", "u2@example.test"], rc
    assert all(r["status"].strip() == "5.7.1" and r["action"].strip() == "failed" for r in rc), rc
    assert s.messages == []


@pytest.mark.parametrize("how", ["421-at-mail", "hang-at-mail", "hang-at-greeting"])
def test_first_mx_fails_in_session_falls_back(env, how):
    """The first MX connects but then goes away before any data was sent
    (421 to MAIL, or no answer within command-timeout): the next MX gets the
    message in the same attempt, as when the connect itself fails."""
    env.zone_add({"example.test": {"MX": [(10, "mx1.example.test"), (20, "mx2.example.test")]},
                  "mx1.example.test": {"A": ["127.0.0.2"]},
                  "mx2.example.test": {"A": ["127.0.0.3"]}})
    s1 = env.sink("127.0.0.2")
    s2 = env.sink("127.0.0.3")
    if how == "421-at-mail":
        s1.mail_reply = "421 4.3.2 closing"
    else:
        s1.hang = how.split("-")[-1]
    t = env.start(extra="retry 30s")           # a retry would be too late
    qid = env.send("vic@example.test")
    s2.wait_for(1)
    env.wait_gone([qid])
    assert s1.messages == []
    assert s1.sessions >= 1
    a = attempts(t.log(), qid)
    assert [x["status"] for x in a] == ["sent"], a
    assert "[127.0.0.3]" in a[0]["relay"], a


def test_mixed_destinations_one_message(env):
    """One message, three domains: one delivered, one NXDOMAIN (bounced),
    one deferred by SERVFAIL then delivered; exactly one DSN."""
    env.zone_add({"ok.test": {"MX": [(10, "mx.ok.test")]}, "mx.ok.test": {"A": ["127.0.0.2"]},
                  "flaky.test": {"MX": [(10, "mx.flaky.test")]},
                  "mx.flaky.test": {"A": ["127.0.0.3"]}})
    env.dns.servfail("flaky.test", "MX")
    s1 = env.sink("127.0.0.2")
    s2 = env.sink("127.0.0.3")
    d = env.dsn_sink
    t = env.start()
    qid = env.send(["w@ok.test", "w@gone.test", "w@flaky.test"], subject="mixed")
    s1.wait_for(1)
    dsns = d.wait_for(1)
    env.wait_attempt(qid, "deferred", to="w@flaky.test")
    env.dns.clear_faults()
    s2.wait_for(1, timeout=15)
    env.wait_gone([qid])
    time.sleep(0.5)
    assert len(d.messages) == 1, d.messages
    check_bounce_dsn(dsns[0], qid, "w@gone.test", "5.1.2", "mixed")
    assert [m.rcpt_tos for m in s1.messages] == [["w@ok.test"]]
    assert [m.rcpt_tos for m in s2.messages] == [["w@flaky.test"]]


def test_dns_timeout_defers(env):
    one_mx(env)
    env.dns.timeout("example.test", "MX")
    s = env.sink("127.0.0.2")
    t = env.start()
    qid = env.send("xena@example.test")
    a = env.wait_attempt(qid, "deferred", timeout=20)
    assert a[0]["dsn"] == "4.4.3", a
    env.dns.clear_faults()
    s.wait_for(1, timeout=20)
    env.wait_gone([qid])


def test_ipv6_only_mx(env):
    """An exchanger with only an AAAA record (::1) is reached over IPv6."""
    import socket
    probe = socket.socket(socket.AF_INET6)
    try:
        probe.bind(("::1", env.port))
    except OSError as e:
        pytest.skip("cannot bind [::1]:%d: %s" % (env.port, e))
    finally:
        probe.close()
    env.zone_add({"v6.test": {"MX": [(10, "mx6.v6.test")]}, "mx6.v6.test": {"AAAA": ["::1"]}})
    s = env.sink("::1")
    t = env.start()
    qid = env.send("yan@v6.test")
    m = s.wait_for(1)[0]
    assert m.rcpt_tos == ["yan@v6.test"]
    env.wait_gone([qid])
    a = attempts(t.log(), qid)
    assert a[0]["relay"] == "mx6.v6.test[::1]:%d" % env.port, a


def test_mx_without_address_bounces(env):
    """The only MX host does not exist (NXDOMAIN for its A and AAAA):
    permanent, 5.4.4, one DSN."""
    env.zone_add({"noaddr.test": {"MX": [(10, "ghost.noaddr-hosts.test")]}})
    d = env.dsn_sink
    t = env.start()
    qid = env.send("zed@noaddr.test", subject="ghost")
    dsns = d.wait_for(1)
    check_bounce_dsn(dsns[0], qid, "zed@noaddr.test", "5.4.4", "ghost")
    env.wait_gone([qid])
