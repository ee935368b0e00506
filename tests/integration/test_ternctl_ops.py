"""ternctl operator commands against a real ternd (issue "Operating tern", part 1):
queue filters, show history, hold/release, retry, delete, bounce, pause/resume,
stats, and the exit codes, each in human and --json form.

Every ternd here routes all mail (`route * smtp:[127.0.0.1]:P`) to one aiosmtpd
sink the test controls: it answers 451 to MAIL while messages must stay queued
and 250 once they may go. `retry 1h` keeps a deferred message idle, so only an
operator command (retry, release, resume) can make it go again within a test.
DSNs go to the same sink (MAIL FROM:<>).
"""

import json
import re
import smtplib
import time

import pytest

QID = re.compile(r"queued as ([0-9a-fA-F]{16})")
TEMPFAIL = "451 4.3.0 not now"


def submit(t, sender, rcpts, subject="test"):
    body = ("From: %s\r\nSubject: %s\r\n\r\nhello\r\n" % (sender, subject)).encode()
    with smtplib.SMTP(*t.addr(), timeout=10) as s:
        s.ehlo("client.test")
        assert s.mail(sender)[0] == 250
        for r in rcpts:
            code, resp = s.rcpt(r)
            assert code == 250, resp
        code, resp = s.data(body)
        assert code == 250, resp
        return QID.search(resp.decode()).group(1).lower()


def ctl(t, *args):
    return t.ternctl(*args)


def ctlj(t, *args, rc=0):
    """Run ternctl --json; check the exit code; return the parsed object."""
    r = t.ternctl(*(args + ("--json",)))
    assert r.returncode == rc, (args, r.returncode, r.stdout, r.stderr)
    doc = json.loads(r.stdout)
    assert doc["ok"] is (rc == 0), doc
    return doc


def wait_until(fn, timeout=10.0, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def wait_attempted(t, ids):
    """Until each message has had one (failed) attempt and is idle again."""
    def done():
        q = {m["id"]: m for m in t.queue()}
        return all(i in q and q[i]["attempts"] >= 1 for i in ids)
    wait_until(done, what="first attempts of %s" % ids)


def delivered_to(sink):
    return [r for m in sink.messages if m.mail_from not in ("", "<>") for r in m.rcpt_tos]


@pytest.fixture
def world(ternd, sink):
    """A ternd routing everything to a sink that starts with 451."""
    s = sink()
    s.mail_reply = TEMPFAIL
    t = ternd(default_route="smtp:[127.0.0.1]:%d" % s.port, trusted="127.0.0.0/8",
              extra_conf="retry 1h\ndelay-warning 0")
    return t, s


def test_queue_filters_both_forms_and_offline(world):
    t, s = world
    t0 = time.time()
    m1 = submit(t, "alice@sender.test", ["bob@example.com"])
    m2 = submit(t, "carol@sender.test", ["erin@example.org"])
    m3 = submit(t, "Alice@Sender.test", ["x@example.org", "y@example.com"])
    wait_attempted(t, [m1, m2, m3])

    def ids(*args):
        doc = ctlj(t, "queue", *args)
        return [m["id"] for m in doc["messages"]]

    assert sorted(ids()) == sorted([m1, m2, m3])
    assert sorted(ids("--from", "alice")) == sorted([m1, m3])   # case-insensitive
    assert ids("--to", "erin@") == [m2]
    assert sorted(ids("--domain", "example.org")) == sorted([m2, m3])
    assert sorted(ids("--domain", "EXAMPLE.COM")) == sorted([m1, m3])
    assert ids("--from", "alice", "--domain", "example.org") == [m3]
    assert ids("--held") == []
    assert ids("--older-than", "1h") == []
    time.sleep(max(0, t0 + 2.1 - time.time()))
    assert sorted(ids("--older-than", "2s")) == sorted([m1, m2, m3])

    # the JSON of one message, field by field
    doc = ctlj(t, "queue", "--to", "erin")
    (m,) = doc["messages"]
    assert m["id"] == m2 and m["sender"] == "carol@sender.test"
    assert m["held"] is False and m["corrupt"] is False
    assert m["attempts"] >= 1 and m["next_attempt"] > time.time() + 1800
    (rc,) = m["recipients"]
    assert rc["address"] == "erin@example.org" and rc["state"] == "pending"
    assert rc["status"].startswith("4.") and "not now" in rc["last_error"]
    assert rc["relay"] and rc["updated"] >= int(t0)

    # human form
    out = ctl(t, "queue", "--from", "alice").stdout.decode()
    assert m1 in out and m3 in out and m2 not in out
    assert "-- 2 messages" in out

    # show: the history there is (attempts, per-recipient status/reply/relay/time)
    r = ctl(t, "show", m3)
    assert r.returncode == 0
    out = r.stdout.decode()
    assert re.search(r"^attempts: [1-9]", out, re.M)
    assert out.count("last_error: 451") == 2 and out.count("updated: 20") == 2

    # the daemon down: the fallback filters the same way
    t.stop()
    r = t.ternctl("queue", "--domain", "example.org", "--json")
    assert r.returncode == 0, r.stderr
    assert sorted(m["id"] for m in json.loads(r.stdout)["messages"]) == sorted([m2, m3])
    r = t.ternctl("queue", "--from", "carol")
    assert r.returncode == 0 and m2 in r.stdout.decode() and m1 not in r.stdout.decode()


def test_hold_release(world):
    t, s = world
    m = submit(t, "alice@sender.test", ["bob@example.com"])
    wait_attempted(t, [m])
    doc = ctlj(t, "hold", m)
    assert doc == {"ok": True, "ids": [m], "skipped": []}
    assert ctlj(t, "show", m)["message"]["held"] is True
    assert [x["id"] for x in ctlj(t, "queue", "--held")["messages"]] == [m]
    assert re.search(r"id=%s status=held by=operator" % m, t.log(), re.I)

    s.mail_reply = None
    # retry does not release: a held message is refused, code 9
    doc = ctlj(t, "retry", m, rc=4)
    assert doc["code"] == 9 and "held" in doc["error"]
    doc = ctlj(t, "retry", "all")
    assert doc["ids"] == [] and doc["skipped"] == [{"id": m, "reason": "held"}]
    time.sleep(2)
    assert delivered_to(s) == []

    r = ctl(t, "release", m)
    assert r.returncode == 0 and r.stdout.decode() == "released %s\n" % m
    s.wait_for(1)
    assert delivered_to(s) == ["bob@example.com"]
    wait_until(lambda: t.queue() == [], what="empty queue")


def test_show_history(world):
    """show keeps one entry per recipient per attempt: result, status, relay,
    reply; the same from the queue directory with ternd stopped."""
    t, s = world
    s.mail_reply = None
    s.rcpt_reply["later@example.com"] = "450 4.2.1 mailbox busy"
    t0 = int(time.time())
    m = submit(t, "alice@sender.test", ["ok@example.com", "later@example.com"])
    s.wait_for(1)
    wait_attempted(t, [m])
    assert ctlj(t, "retry", m) == {"ok": True, "ids": [m], "skipped": []}
    wait_until(lambda: ctlj(t, "show", m)["message"]["attempts"] >= 2,
               what="second attempt")
    doc = ctlj(t, "show", m)["message"]
    hist = doc["history"]
    assert doc["history_dropped"] == 0
    assert [(h["recipient"], h["result"]) for h in hist] == [
        ("ok@example.com", "sent"), ("later@example.com", "deferred"),
        ("later@example.com", "deferred")], hist
    assert hist[0]["status"].startswith("2.")
    for h in hist:
        assert set(h) == {"time", "recipient", "result", "status", "relay",
                          "reply", "tls"}
        assert t0 <= h["time"] <= time.time() + 1
        assert h["relay"] == "127.0.0.1[127.0.0.1]:%d" % s.port, h
        assert h["tls"] is None
    assert hist[0]["time"] <= hist[1]["time"] <= hist[2]["time"]
    for h in hist[1:]:
        assert h["status"] == "4.2.1" and "mailbox busy" in h["reply"], h
    # the queue listing stays lean: no history there
    (q,) = [x for x in t.queue() if x["id"] == m]
    assert "history" not in q

    out = ctl(t, "show", m).stdout.decode()
    lines = out[out.index("history:"):].splitlines()
    assert lines[0] == "history:"
    assert re.match(r"  \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ sent <ok@example.com> "
                    r"status=2\.\d\.\d relay=127\.0\.0\.1\[127\.0\.0\.1\]:%d$" % s.port,
                    lines[1]), lines
    assert " deferred <later@example.com> status=4.2.1 " in lines[3], lines
    assert "mailbox busy" in lines[4] and lines[4].startswith("    ")
    assert len([l for l in lines if " deferred <" in l]) == 2

    c = ctlj(t, "stats")["counters"]
    assert c == {"accepted": 1, "delivered": 1, "deferred": 2, "bounced": 0,
                 "expired": 0, "dsn": 0}, c

    # with ternd stopped, show reads the same history from the queue directory
    t.stop()
    r = t.ternctl("show", m, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["message"]["history"] == hist


def test_history_has_a_bounce_once_it_is_bounced(world):
    """A 5xx enters the history as "bounced" when the recipient is bounced
    (its DSN queued), after the attempt's other results."""
    t, s = world
    s.mail_reply = None
    s.rcpt_reply["gone@example.com"] = "550 5.1.1 no such user"
    s.rcpt_reply["later@example.com"] = "450 4.2.1 mailbox busy"
    m = submit(t, "alice@sender.test", ["gone@example.com", "later@example.com"])
    wait_until(lambda: [x for x in s.messages if x.mail_from in ("", "<>")],
               what="the bounce")
    wait_until(lambda: ctlj(t, "show", m)["message"]["recipients"][0]["state"]
               == "bounced", what="gone@ bounced")
    hist = ctlj(t, "show", m)["message"]["history"]
    assert [(h["recipient"], h["result"]) for h in hist] == [
        ("later@example.com", "deferred"), ("gone@example.com", "bounced")], hist
    assert hist[1]["status"] == "5.1.1" and "no such user" in hist[1]["reply"]
    assert hist[1]["relay"] == "127.0.0.1[127.0.0.1]:%d" % s.port


def test_retry_now_despite_long_schedule(world):
    t, s = world
    m1 = submit(t, "alice@sender.test", ["bob@example.com"])
    m2 = submit(t, "alice@sender.test", ["erin@example.org"])
    wait_attempted(t, [m1, m2])
    s.mail_reply = None
    doc = ctlj(t, "retry", "--domain", "example.org")
    assert doc == {"ok": True, "ids": [m2], "skipped": []}
    s.wait_for(1)
    assert delivered_to(s) == ["erin@example.org"]
    time.sleep(1)
    assert [x["id"] for x in t.queue()] == [m1]

    r = ctl(t, "retry", "all")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "retrying %s" % m1 in out and "-- 1 message retrying, 0 skipped" in out
    s.wait_for(2)
    assert sorted(delivered_to(s)) == ["bob@example.com", "erin@example.org"]

    # retry of one id, both forms
    m3 = submit(t, "alice@sender.test", ["z@example.com"])
    s.wait_for(3)
    wait_until(lambda: t.queue() == [], what="empty queue")
    ctlj(t, "retry", m3, rc=1)


def test_delete(world):
    t, s = world
    m1 = submit(t, "alice@sender.test", ["bob@example.com"])
    m2 = submit(t, "carol@sender.test", ["erin@example.org", "f@example.org"])
    m3 = submit(t, "alice@sender.test", ["dave@example.com"])
    wait_attempted(t, [m1, m2, m3])

    assert ctlj(t, "delete", m1) == {"ok": True, "ids": [m1], "skipped": []}
    r = ctl(t, "delete", "--all-matching", "--from", "carol")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode() == "deleted %s\n-- 1 message deleted, 0 skipped\n" % m2
    assert [x["id"] for x in t.queue()] == [m3]
    log = t.log()
    for m in (m1, m2):
        assert re.search(r"id=%s status=deleted by=operator" % m, log, re.I), log
    assert ctl(t, "show", m1).returncode == 1
    ctlj(t, "delete", m1, rc=1)

    s.mail_reply = None
    ctlj(t, "retry", "all")
    s.wait_for(1)
    time.sleep(1)
    assert delivered_to(s) == ["dave@example.com"]
    # deleted messages do not come back after a restart
    t.restart()
    assert t.queue() == []


def test_bounce_sends_dsn(world):
    t, s = world
    m = submit(t, "alice@sender.test", ["bob@example.com", "dave@example.com"])
    wait_attempted(t, [m])
    s.mail_reply = None
    doc = ctlj(t, "bounce", m)
    assert doc == {"ok": True, "ids": [m], "skipped": []}
    (dsn,) = s.wait_for(1)
    assert dsn.mail_from in ("", "<>") and dsn.rcpt_tos == ["alice@sender.test"]
    text = dsn.data.decode(errors="replace")
    assert "multipart/report" in text and "report-type=delivery-status" in text
    assert text.count("Status: 5.0.0") == 2
    assert "bounced by the operator" in text
    assert "Final-Recipient: rfc822;bob@example.com" in text.replace("; ", ";")
    wait_until(lambda: m not in {x["id"] for x in t.queue()}, what="bounced gone")
    assert delivered_to(s) == []
    c = ctlj(t, "stats")["counters"]
    # the DSN is counted as a DSN, not as an accepted message
    assert (c["bounced"], c["dsn"], c["accepted"], c["expired"]) == (2, 1, 1, 0), c
    ctlj(t, "bounce", m, rc=1)


def test_pause_resume(ternd, sink):
    s = sink()
    t = ternd(default_route="smtp:[127.0.0.1]:%d" % s.port, trusted="127.0.0.0/8",
              extra_conf="retry 1h")
    doc = ctlj(t, "pause")
    assert doc == {"ok": True, "paused_all": True, "paused_domains": []}
    m = submit(t, "alice@sender.test", ["bob@example.com"])
    time.sleep(2)
    assert s.messages == []
    assert [x["id"] for x in t.queue()] == [m]
    assert ctlj(t, "stats")["paused_all"] is True
    # a paused (not started) message can still be held and released
    ctlj(t, "hold", m)
    ctlj(t, "release", m)
    time.sleep(1)
    assert s.messages == []
    r = ctl(t, "resume")
    assert r.returncode == 0 and r.stdout.decode() == "delivery: running\n"
    s.wait_for(1)

    # one domain only
    r = ctl(t, "pause", "--domain", "Example.ORG")
    assert r.returncode == 0
    assert r.stdout.decode() == "delivery: paused for example.org\n"
    m2 = submit(t, "alice@sender.test", ["erin@example.org"])
    m3 = submit(t, "alice@sender.test", ["dave@example.com"])
    s.wait_for(2)
    time.sleep(1.5)
    assert delivered_to(s) == ["bob@example.com", "dave@example.com"]
    assert [x["id"] for x in t.queue()] == [m2]
    # it was m3 that went out (to its example.com recipient) during the
    # example.org pause, and m2 had no attempt at all, not even a deferral
    log = t.log()
    assert re.search(r"id=%s to=<dave@example\.com> .*status=sent" % m3, log, re.I), \
        log[-2000:]
    assert not re.search(r"id=%s to=\S+ relay=\S+ dsn=\S+ status=" % m2, log, re.I), \
        log[-2000:]
    assert ctlj(t, "stats")["paused_domains"] == ["example.org"]
    doc = ctlj(t, "resume", "--domain", "example.org")
    assert doc == {"ok": True, "paused_all": False, "paused_domains": []}
    s.wait_for(3)
    assert delivered_to(s)[-1] == "erin@example.org"
    wait_until(lambda: t.queue() == [], what="m2 delivered after resume")
    # m3 went out once, before the resume; it is not sent again
    assert delivered_to(s).count("dave@example.com") == 1
    assert len(re.findall(r"id=%s to=<dave@example\.com> .*status=sent" % m3,
                          t.log(), re.I)) == 1


def test_stats_numbers(ternd, sink):
    s = sink()
    t = ternd(default_route="smtp:[127.0.0.1]:%d" % s.port, trusted="127.0.0.0/8",
              extra_conf="retry 1h")
    submit(t, "alice@sender.test", ["a@example.com", "b@example.org"])
    submit(t, "alice@sender.test", ["c@example.com"])
    s.wait_for(2)
    wait_until(lambda: t.queue() == [], what="delivered")
    s.mail_reply = TEMPFAIL
    m = submit(t, "alice@sender.test", ["d@example.net", "e@example.net"])
    # domains are counted case-insensitively, messages once per domain
    m2 = submit(t, "alice@sender.test", ["f@Example.NET", "g@example.org"])
    wait_attempted(t, [m, m2])
    ctlj(t, "hold", m)
    doc = ctlj(t, "stats")
    assert doc["running"] is True and doc["uptime"] >= 0
    assert doc["counters"] == {"accepted": 4, "delivered": 3, "deferred": 4,
                               "bounced": 0, "expired": 0, "dsn": 0}
    assert doc["paused_all"] is False and doc["paused_domains"] == []
    disk = {k: doc["queue"].pop(k) for k in ("segments_bytes", "index_bytes",
                                             "bytes", "oldest_arrival")}
    assert all(isinstance(v, int) and v > 0 for v in disk.values()), disk
    # from the counters: m is held, m2 deferred; 4 pending recipients
    assert doc["queue"].pop("deferred") == 1
    assert doc["queue"].pop("recipients") == 4
    assert doc["queue"].pop("domains_total") == 2
    assert doc["queue"] == {"messages": 2, "pending": 1, "held": 1, "corrupt": 0,
                            "domains": [{"domain": "example.net", "messages": 2,
                                         "recipients": 3},
                                        {"domain": "example.org", "messages": 1,
                                         "recipients": 1}]}
    out = ctl(t, "stats").stdout.decode()
    for line in ("accepted: 4", "delivered: 3", "deferred: 4", "bounced: 0",
                 "expired: 0", "dsn: 0",
                 "queue: 2 messages (1 pending, 1 held, 0 corrupt)"):
        assert line in out, out
    assert re.search(r"example\.net\s+2 messages\s+3 recipients", out)
    assert re.search(r"example\.org\s+1 messages\s+1 recipients", out)

    t.stop()
    doc = ctlj(t, "stats")
    assert doc["running"] is False and doc["counters"] is None
    assert doc["queue"]["held"] == 1 and doc["queue"]["messages"] == 2
    assert doc["queue"]["domains"][0] == {"domain": "example.net", "messages": 2,
                                          "recipients": 3}
    assert "not running" in ctl(t, "stats").stdout.decode()


def test_in_flight_is_refused(ternd, sink):
    s = sink()
    s.hang = "data"
    t = ternd(default_route="smtp:[127.0.0.1]:%d" % s.port, trusted="127.0.0.0/8",
              extra_conf="retry 1h\ncommand-timeout 30s")
    m = submit(t, "alice@sender.test", ["bob@example.com"])
    s.wait_hung("data")
    for cmd in ("hold", "delete", "bounce"):
        doc = ctlj(t, cmd, m, rc=4)
        assert doc["code"] == 9 and "being delivered" in doc["error"], doc
    doc = ctlj(t, "delete", "all")
    assert doc["ids"] == [] and doc["skipped"] == [{"id": m, "reason": "in flight"}]
    s.hang = None
    s.release()
    s.wait_for(1)
    wait_until(lambda: t.queue() == [], what="delivered")


def test_exit_codes(world):
    t, s = world
    m = submit(t, "alice@sender.test", ["bob@example.com"])
    wait_attempted(t, [m])
    unknown = "0123456789abcdef"
    for cmd in ("show", "hold", "release", "delete", "retry", "bounce"):
        r = ctl(t, cmd, unknown)
        assert r.returncode == 1, (cmd, r.stderr)
        assert b"no such message" in r.stderr
    for args in (("hold",), ("hold", "xyz"), ("delete",), ("queue", "--older-than", "5x"),
                 ("pause", "--from", "a"), ("queue", "--all-matching"),
                 ("delete", m, "--from", "a"), ("stats", "extra"), ("frobnicate",),
                 ("retry",)):
        r = ctl(t, *args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
    r = ctl(t, "--help")
    assert r.returncode == 0 and b"paused_domains" in r.stdout and b"--older-than" in r.stdout

    t.stop()
    sock = re.search(r"^control-socket\s+(\S+)", t.conf_text, re.M)
    for args in (("hold", m), ("release", m), ("delete", m), ("retry", "all"),
                 ("bounce", m), ("pause",), ("resume",), ("reload",)):
        r = ctl(t, *args)
        assert r.returncode == 3, (args, r.returncode, r.stderr)
        assert b"cannot connect to " in r.stderr
        if sock:
            assert sock.group(1).encode() in r.stderr
    for args in (("queue",), ("show", m), ("stats",)):
        r = ctl(t, *args)
        assert r.returncode == 0, (args, r.stderr)
    assert ctl(t, "show", unknown).returncode == 1


def test_bulk_request_done_in_slices(world):
    """A request naming more messages than the scheduler does per turn of its loop
    (256) is done in slices, with other requests and deliveries served in between:
    the answer still names every message exactly once, and each is acted on."""
    t, s = world
    n = 600
    ids = []
    with smtplib.SMTP(*t.addr(), timeout=30) as c:
        c.ehlo("client.test")
        for i in range(n):
            code, resp = c.mail("bulk@sender.test")[0], None
            assert code == 250
            assert c.rcpt("r%d@bulk.example" % i)[0] == 250
            code, resp = c.data(b"Subject: bulk %d\r\n\r\nhello\r\n" % i)
            assert code == 250, resp
            ids.append(QID.search(resp.decode()).group(1).lower())
    other = submit(t, "alice@sender.test", ["bob@example.com"])
    wait_until(lambda: all(m["attempts"] >= 1 for m in t.queue()), timeout=60,
               what="first attempts of %d messages" % (n + 1))

    listed = ctlj(t, "queue", "--domain", "bulk.example")["messages"]
    assert sorted(m["id"] for m in listed) == sorted(ids)

    # a stats request sent while a delete of all 600 is under way is answered too
    import subprocess
    bulk = subprocess.Popen([str(t.bins.ternctl), "-c", str(t.conf_path), "--json",
                             "delete", "--all-matching", "--domain", "bulk.example"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=t.env)
    assert ctlj(t, "stats")["ok"] is True
    out, err = bulk.communicate(timeout=60)
    assert bulk.returncode == 0, err
    doc = json.loads(out)
    assert sorted(doc["ids"]) == sorted(ids) and doc["skipped"] == []
    assert [m["id"] for m in t.queue()] == [other]
    log = t.log()
    assert len(re.findall(r"status=deleted by=operator", log)) == n
