"""Operating a running ternd: /metrics, reload, graceful stop under load.

- /metrics parses as Prometheus text (exposition format 0.0.4) and its counters
  match what the test did (sessions, accepted and refused messages, deliveries,
  commit batches, queue gauges).
- A reload (SIGHUP or `ternctl reload`) that changes relay-domains takes effect
  for new sessions without dropping a session that is already open; a reload
  with a broken config is refused and the running one kept.
- SIGTERM while clients are sending: ternd exits 0 within its bound, idle
  sessions get 421 4.3.2, and every message that got a 250 is in the queue
  after a restart.
"""
import os
import re
import signal
import smtplib
import socket
import threading
import time
import urllib.request

import pytest

from conftest import free_port

LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{([a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*"'
                  r'(,[a-zA-Z_][a-zA-Z0-9_]*="[^"\\]*")*)?\})? (-?[0-9.e+Inf]+|NaN)$')


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram"), line
            types[name] = kind
            continue
        m = LINE.match(line)
        assert m, "not Prometheus text: %r" % line
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(5))
    # every sample belongs to a declared family; counters end in _total
    for key in samples:
        base = key.split("{")[0]
        fam = re.sub(r"_(bucket|sum|count)$", "", base)
        assert base in types or fam in types, key
    for name, kind in types.items():
        assert name.startswith("tern_"), name
        if kind == "counter":
            assert name.endswith("_total"), name
    return samples


def send(t, rcpts, name="relay", sender="a@sender.test", body=None):
    body = body or b"Subject: ops\r\n\r\nhello\r\n"
    with smtplib.SMTP(*t.addr(name), timeout=10) as s:
        s.ehlo("client.test")
        return s.sendmail(sender, rcpts, body)


def wait_for(fn, timeout=10.0, what="condition"):
    end = time.time() + timeout
    while time.time() < end:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    pytest.fail("timed out waiting for " + what)


def test_metrics_match_traffic(ternd, sink):
    k = sink()
    mport = free_port()
    t = ternd(extra_conf="metrics-listen 127.0.0.1:%d\nroute example.com smtp:[127.0.0.1]:%d\n"
              % (mport, k.port))
    before = scrape(mport)
    assert before["tern_messages_accepted_total"] == 0
    for i in range(3):
        send(t, ["user%d@example.com" % i])
    with pytest.raises(smtplib.SMTPRecipientsRefused):
        send(t, ["x@elsewhere.test"])          # relay denied, untrusted client
    k.wait_for(3)
    s = wait_for(lambda: (lambda m: m if m['tern_deliveries_total{result="sent"}'] >= 3
                          else None)(scrape(mport)), what="3 deliveries in /metrics")
    assert s["tern_messages_accepted_total"] == 3
    assert s['tern_messages_refused_total{reason="relay_denied"}'] == 1
    assert s['tern_sessions_total{listener="relay"}'] == 4
    assert s['tern_deliveries_total{result="sent"}'] == 3
    assert s['tern_deliveries_total{result="bounced"}'] == 0
    assert s["tern_accepted_bytes_total"] > 3 * len(b"Subject: ops\r\n\r\nhello\r\n")
    # group commit: 3 messages took at least 1 and at most 3 batches
    assert 1 <= s["tern_commit_batch_size_count"] <= 3
    assert s["tern_commit_batch_size_sum"] == 3
    assert s['tern_commit_batch_size_bucket{le="+Inf"}'] == s["tern_commit_batch_size_count"]
    assert s["tern_commit_duration_seconds_count"] == 3
    assert s["tern_outbound_connections_total"] >= 1
    # delivered messages leave the queue
    wait_for(lambda: scrape(mport)['tern_queue_messages{state="active"}'] == 0,
             what="empty queue gauge")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen("http://127.0.0.1:%d/other" % mport, timeout=5)
    assert e.value.code == 404


def _let_runtime_user_read(path):
    """ternd re-reads its config after dropping root: let it reach the file."""
    p = os.path.dirname(path)
    while p not in ("/", "/tmp"):
        os.chmod(p, os.stat(p).st_mode | 0o001)
        p = os.path.dirname(p)
    os.chmod(path, 0o644)


def test_reload_changes_relay_domains_keeps_open_session(ternd, smtp_raw):
    t = ternd()
    _let_runtime_user_read(t.conf_path)
    old = smtp_raw(t.port("relay"))
    old.greeting()
    old.cmd("EHLO old.test", 250)
    old.cmd("MAIL FROM:<a@sender.test>", 250)
    old.cmd("RCPT TO:<u@example.com>", 250)
    old.cmd("RCPT TO:<u@other.test>", 554, "5.7.1")

    conf = open(t.conf_path).read()
    conf = re.sub(r"(?m)^relay-domains .*$", "relay-domains example.com other.test", conf)
    with open(t.conf_path, "w") as f:
        f.write(conf)
    r = t.ternctl("reload")
    assert r.returncode == 0, r.stderr
    t.wait_log(r"reload done")

    # the open session is not dropped: it completes its transaction
    old.cmd("DATA", 354)
    old.send(b"Subject: before reload\r\n\r\nstill here\r\n.\r\n")
    r = old.expect(250, "2.0.0")
    assert "queued as" in r.text, r
    old.cmd("QUIT", 221)
    # a new session sees the new relay-domains
    new = smtp_raw(t.port("relay"))
    new.greeting()
    new.cmd("EHLO new.test", 250)
    new.cmd("MAIL FROM:<a@sender.test>", 250)
    new.cmd("RCPT TO:<u@other.test>", 250, "2.1.5")
    new.cmd("QUIT", 221)


def test_reload_with_broken_config_keeps_running_one(ternd, smtp_raw):
    t = ternd()
    _let_runtime_user_read(t.conf_path)
    good = open(t.conf_path).read()
    with open(t.conf_path, "w") as f:
        f.write(good + "relay-domains other.test\nno-such-directive 1\n")
    os.kill(t.pid, signal.SIGHUP)
    t.wait_log(r"reload failed: keeping the running configuration")
    t.wait_log(r"no-such-directive")
    r = t.ternctl("reload")
    assert r.returncode != 0
    s = smtp_raw(t.port("relay"))
    s.greeting()
    s.cmd("EHLO c.test", 250)
    s.cmd("MAIL FROM:<a@sender.test>", 250)
    s.cmd("RCPT TO:<u@other.test>", 554, "5.7.1")   # the new line did not apply
    s.cmd("RCPT TO:<u@example.com>", 250)
    s.cmd("QUIT", 221)
    assert t.running


def test_sigterm_under_load_loses_no_acknowledged_message(ternd):
    t = ternd(extra_conf="max-connections-per-ip 100\n")
    acked, lock, stop = [], threading.Lock(), threading.Event()
    errors = []

    def client(n):
        i = 0
        while not stop.is_set() and i < 200:
            i += 1
            try:
                with smtplib.SMTP(*t.addr("relay"), timeout=10) as s:
                    s.ehlo("load.test")
                    s.mail("a@sender.test")
                    s.rcpt("c%d-%d@example.com" % (n, i))
                    code, resp = s.data(b"Subject: load %d %d\r\n\r\nbody\r\n" % (n, i))
                    if code == 250:
                        m = re.search(rb"queued as ([0-9a-f]{16})", resp)
                        with lock:
                            acked.append(m.group(1).decode())
            except (smtplib.SMTPException, OSError) as e:
                errors.append(e)      # refused or cut off by the shutdown: fine
                return

    # an idle session open across the stop
    idle = socket.create_connection(t.addr("relay"), timeout=10)
    idle_f = idle.makefile("rb")
    assert idle_f.readline().startswith(b"220 ")
    idle.sendall(b"EHLO idle.test\r\n")
    while not idle_f.readline().startswith(b"250 "):
        pass

    threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    wait_for(lambda: len(acked) >= 40, timeout=30, what="40 acknowledged messages")
    t0 = time.time()
    os.kill(t.pid, signal.SIGTERM)
    rc = t.proc.wait(timeout=15)
    stop.set()
    for th in threads:
        th.join(timeout=15)
    assert rc == 0, t.log()
    assert time.time() - t0 < 12
    # the idle session was told, not just cut off
    rest = idle_f.read()
    assert b"421 4.3.2" in rest, rest
    idle.close()

    t.start()
    queued = t.queue_ids()
    missing = [i for i in acked if i not in queued]
    assert not missing, "acknowledged but lost: %s" % missing[:10]
    assert len(acked) >= 40


def test_spool_memory_total_bounds_bodies_in_data(ternd, smtp_raw):
    """spool-memory-total caps the memory of all bodies being received: with
    three sessions each 60 KiB into DATA and a 100 KiB budget, the bodies that
    do not fit go to files, and every message is still queued byte for byte."""
    mport = free_port()
    t = ternd(extra_conf="metrics-listen 127.0.0.1:%d\nspool-memory 64K\n"
                         "spool-memory-total 100K" % mport)
    s0 = scrape(mport)
    assert s0["tern_spool_memory_bytes"] == 0 and s0["tern_spool_spills_total"] == 0
    bodies, conns = [], []
    for i in range(3):
        c = smtp_raw(t.port())
        c.greeting()
        c.ehlo()
        c.cmd("MAIL FROM:<a%d@sender.test>" % i, 250)
        c.cmd("RCPT TO:<u%d@example.com>" % i, 250)
        c.cmd("DATA", 354)
        body = b"Subject: part %d\r\n\r\n" % i + \
            b"".join(b"%d-%05d " % (i, n) + b"x" * 90 + b"\r\n" for n in range(600))
        assert 55 * 1024 < len(body) < 62 * 1024
        c.send(body)
        bodies.append(body)
        conns.append(c)
        # in memory while it fits, spilled once the budget is spent
        want_spills = max(0, i)
        wait_for(lambda: (lambda m: m["tern_spool_spills_total"] >= want_spills and
                          m["tern_spool_memory_bytes"] >= 60 * 1024)(scrape(mport)),
                 what="body %d received" % i)
    m = scrape(mport)
    assert m["tern_spool_spills_total"] == 2, m
    assert 60 * 1024 <= m["tern_spool_memory_bytes"] <= 100 * 1024, m
    ids = []
    for c in conns:
        c.send(b".\r\n")
        r = c.expect(250)
        ids.append(re.search(r"queued as ([0-9A-Fa-f]{16})", r.text).group(1).lower())
        c.cmd("QUIT", 221)
    for qid, body in zip(ids, bodies):
        assert t.show_message(qid) == body
    wait_for(lambda: scrape(mport)["tern_spool_memory_bytes"] == 0,
             what="spool memory returned")
