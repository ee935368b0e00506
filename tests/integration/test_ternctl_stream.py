"""Queue listings that stream (control protocol 2), pages (--limit/--after),
the summary (--summary, from the queue's counters), and the control server's
threads: a listing whose reader has stopped reading holds neither ternd's
memory nor `show`/`ping` from another client.

Queues are filled with pipelined raw SMTP sessions while delivery is paused
(`ternctl pause`), so nothing changes under the listings but what the test
does (hold). Routes point to a closed port anyway.
"""

import json
import os
import re
import socket
import threading
import time

from conftest import RawSMTP

QID = re.compile(r"queued as ([0-9A-Fa-f]{16})")


def fill(t, n, rcpts, sessions=4):
    """Queue n messages over `sessions` parallel pipelined sessions;
    rcpts(i) gives message i's recipients. Returns the set of queue ids."""
    ids, errors = set(), []
    lock = threading.Lock()

    def one(first, count):
        try:
            c = RawSMTP(t.port(), timeout=30)
            c.greeting()
            c.ehlo()
            for i in range(first, first + count):
                rs = rcpts(i)
                c.send("MAIL FROM:<s%d@client.test>\r\n" % i
                       + "".join("RCPT TO:<%s>\r\n" % r for r in rs) + "DATA\r\n")
                for _ in range(len(rs) + 1):
                    c.expect(250)
                c.expect(354)
                c.send(b"Subject: stream %d\r\n\r\nbody\r\n.\r\n" % i)
                r = c.reply(timeout=30)
                m = QID.search(r.lines[-1]) if r.code == 250 else None
                assert m, "message %d not queued: %r" % (i, r)
                with lock:
                    ids.add(m.group(1).lower())
            c.close()
        except Exception as e:  # reported by the caller
            errors.append(e)

    per = (n + sessions - 1) // sessions
    th = [threading.Thread(target=one, args=(k * per, min(per, n - k * per)))
          for k in range(sessions) if k * per < n]
    for x in th:
        x.start()
    for x in th:
        x.join(120)
    assert not errors, errors
    assert len(ids) == n
    return ids


def paused_ternd(ternd):
    t = ternd(trusted="127.0.0.0/8", extra_conf="retry 1h\nmax-recipients 1000")
    r = t.ternctl("pause")
    assert r.returncode == 0, r.stderr
    return t


def slow(t):
    """How much slower a sanitizer build runs (its offline open alone takes
    seconds)."""
    return 10 if t.bins.asan else 1


def listing(t, *args):
    """ternctl queue --json [args]: the parsed document (checked to parse)."""
    r = t.ternctl("queue", "--json", *args, timeout=60 * slow(t))
    assert r.returncode == 0, (r.returncode, r.stderr)
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["count"] == len(doc["messages"])
    return doc


def pages(t, limit, *args):
    """Every page of --limit limit, following next_after: the ids in order."""
    ids, after = [], None
    for _ in range(1000):
        doc = listing(t, "--limit", str(limit), *args,
                      *(("--after", after) if after else ()))
        assert len(doc["messages"]) <= limit
        ids += [m["id"] for m in doc["messages"]]
        if doc["next_after"] is None:
            return ids
        assert len(doc["messages"]) == limit
        assert doc["next_after"] == doc["messages"][-1]["id"]
        after = doc["next_after"]
    raise AssertionError("pages never ended")


def domains_of(i):
    return ["u%d@dom%d.test" % (i, i % 7)] + (
        ["v%d@dom%d.test" % (i, (i + 1) % 7)] if i % 3 == 0 else [])


def test_pages_and_summary(ternd):
    t = paused_ternd(ternd)
    n = 3000
    ids = fill(t, n, domains_of)
    held = sorted(ids)[::500]
    for i in held:
        assert t.ternctl("hold", i).returncode == 0

    t0 = time.monotonic()
    full = listing(t)
    elapsed = time.monotonic() - t0
    got = [m["id"] for m in full["messages"]]
    assert got == sorted(ids), "listing is every message once, in id order"
    assert full["next_after"] is None
    assert elapsed < 20 * slow(t)

    # pages join to exactly the full list: no duplicate, no gap
    assert pages(t, 700) == got
    first = listing(t, "--limit", "3")
    assert [m["id"] for m in first["messages"]] == got[:3]
    assert first["next_after"] == got[2]
    last = listing(t, "--after", got[-2])
    assert [m["id"] for m in last["messages"]] == got[-1:]
    assert last["next_after"] is None
    # a page that ends the listing exactly still names where to go on
    end = listing(t, "--after", got[-3], "--limit", "2")
    assert end["next_after"] == got[-1]
    assert listing(t, "--after", got[-1])["messages"] == []
    # filters page too
    held_pages = pages(t, 2, "--held")
    assert held_pages == sorted(held)

    # the human table streams the same rows and names the next page
    r = t.ternctl("queue", "--limit", "5")
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    assert all(i in out for i in got[:5]) and got[5] not in out
    assert "-- 5 messages" in out
    assert "-- more: ternctl queue --after %s" % got[4] in out

    # the summary agrees with counts made from the full listing
    msgs = full["messages"]
    want_dom = {}
    for m in msgs:
        seen = set()
        for rc in m["recipients"]:
            if rc["state"] != "pending":
                continue
            d = rc["address"].split("@")[1].lower()
            e = want_dom.setdefault(d, [0, 0])
            e[1] += 1
            if d not in seen:
                e[0] += 1
                seen.add(d)
    r = t.ternctl("queue", "--summary", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    st = s["states"]
    assert st["messages"] == len(msgs) == n
    assert st["held"] == sum(m["held"] for m in msgs) == len(held)
    assert st["corrupt"] == sum(m["corrupt"] for m in msgs) == 0
    assert st["deferred"] == sum(1 for m in msgs
                                 if not m["held"] and m["attempts"] > 0)
    assert st["new"] == n - st["held"] - st["deferred"]
    assert s["recipients"] == sum(e[1] for e in want_dom.values())
    assert s["oldest_arrival"] == min(m["arrival"] for m in msgs)
    got_dom = {d["domain"]: [d["messages"], d["recipients"]] for d in s["domains"]}
    assert got_dom == want_dom            # 7 domains: all within the top 20
    assert [d["recipients"] for d in s["domains"]] == sorted(
        (e[1] for e in want_dom.values()), reverse=True)
    top = json.loads(t.ternctl("queue", "--summary", "--top", "2",
                               "--json").stdout)
    assert top["domains"] == s["domains"][:2]
    r = t.ternctl("queue", "--summary")
    assert r.returncode == 0 and b"held" in r.stdout and b"dom3.test" in r.stdout
    for bad in (("queue", "--summary", "--held"), ("queue", "--top", "3"),
                ("queue", "--limit", "0"), ("queue", "--after", "xyz"),
                ("show", got[0], "--limit", "3")):
        assert t.ternctl(*bad).returncode == 2, bad

    # retry all: more ids than one op to the scheduler carries, answered as one
    r = t.ternctl("retry", "all", "--json", timeout=60 * slow(t))
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["ok"] is True
    assert sorted(res["ids"]) == sorted(set(got) - set(held))
    assert sorted(x["id"] for x in res["skipped"]) == sorted(held)
    assert {x["reason"] for x in res["skipped"]} == {"held"}

    # offline (ternd stopped): the same stream from the queue directory
    t.stop()
    doc = listing(t)
    assert [m["id"] for m in doc["messages"]] == got
    assert pages(t, 1100 * slow(t)) == got
    s2 = json.loads(t.ternctl("queue", "--summary", "--json").stdout)
    assert s2["states"] == st and s2["domains"] == s["domains"]


def vmrss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def stalled_listing(path):
    """A client that asks for the whole listing and reads nothing."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(path)
    s.sendall(b'{"v":2,"cmd":"queue"}\n')
    return s


def test_stalled_reader_blocks_nothing(ternd):
    t = paused_ternd(ternd)
    # 600 messages of 200 long recipients: a listing of ~30 MB
    pad = "x" * 40
    ids = sorted(fill(t, 600, lambda i: ["%s%d.%d@wide%d.test" % (pad, i, k, k % 9)
                                         for k in range(200)]))
    path = str(t.queue_dir / "control.sock")
    m = re.search(r"^control-socket\s+(\S+)", t.conf_text, re.M)
    if m:
        path = m.group(1)
    # a listing by key writes the query keys of the new messages now (else
    # housekeeping does, a second later: index pages, not the listing)
    r = t.ternctl("queue", "--domain", "wide0.test", "--limit", "1")
    assert r.returncode == 0, r.stderr
    rss0 = vmrss_kb(t.pid)
    # more stalled listings than the server has workers
    stalled = [stalled_listing(path) for _ in range(4)]
    try:
        time.sleep(0.5)    # let the server write what the sockets take
        worst = 0.0
        peak = rss0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            for args in (("show", ids[len(ids) // 2]), ("ping",),
                         ("queue", "--limit", "2")):
                t0 = time.monotonic()
                r = t.ternctl(*args)
                worst = max(worst, time.monotonic() - t0)
                assert r.returncode == 0, (args, r.stderr)
            peak = max(peak, vmrss_kb(t.pid))
        assert worst < 1.0 * slow(t), \
            "a request waited %.2fs behind stalled listings" % worst
        # four stalled 30 MB listings: each holds about one page and the
        # output low-water mark, not the listing (ASan's quarantine keeps
        # freed memory resident: no bound there)
        if not t.bins.asan:
            assert peak - rss0 < 16 * 1024, (rss0, peak)
        # a stalled reader that starts reading gets the whole listing
        s = stalled[0]
        s.settimeout(30)
        buf = bytearray()
        while not buf.endswith(b"\n") or b'"end":true' not in buf[-200:]:
            chunk = s.recv(1 << 20)
            assert chunk, "server closed mid-listing"
            buf += chunk
        lines = bytes(buf).split(b"\n")[:-1]
        assert json.loads(lines[0]) == {"ok": True, "stream": "messages"}
        trailer = json.loads(lines[-1])
        assert trailer == {"end": True, "ok": True, "count": len(ids),
                           "next_after": None}
        assert [json.loads(x)["id"] for x in lines[1:-1]] == ids
    finally:
        for s in stalled:
            s.close()
    assert t.ternctl("ping").returncode == 0


def test_v1_listing_refused(ternd):
    """A protocol 1 client asking for a listing gets an error, not a stream
    it cannot read; other v1 requests are still answered."""
    t = ternd()
    path = str(t.queue_dir / "control.sock")
    m = re.search(r"^control-socket\s+(\S+)", t.conf_text, re.M)
    if m:
        path = m.group(1)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    s.sendall(b'{"v":1,"cmd":"queue"}\n{"v":1,"cmd":"ping"}\n'
              b'{"v":2,"cmd":"queue","limit":0}\n{"v":2,"cmd":"queue","after":"x"}\n'
              b'{"v":2,"cmd":"queue"}\n')
    buf = b""
    while buf.count(b"\n") < 6:
        chunk = s.recv(65536)
        assert chunk
        buf += chunk
    s.close()
    got = [json.loads(x) for x in buf.split(b"\n")[:6]]
    assert got[0]["ok"] is False and got[0]["code"] == 3
    assert got[1]["ok"] is True and got[1]["version"] == 2
    assert got[2]["code"] == 2 and got[3]["code"] == 2
    assert got[4] == {"ok": True, "stream": "messages"}
    assert got[5] == {"end": True, "ok": True, "count": 0, "next_after": None}
