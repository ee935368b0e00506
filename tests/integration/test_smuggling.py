"""SMTP smuggling (CVE-2023-51764/51765/51766 class): only CRLF.CRLF ends DATA.

For each non-standard end-of-data sequence, a client puts a whole second
transaction after it, inside the first message's DATA. The server must never
answer the smuggled commands, never queue a second message, and:
  bare-newline reject    -> one 550 5.6.0 at the real end of data, nothing queued
  bare-newline normalize -> exactly one message, holding the smuggled text as body
"""

import time

import pytest

from test_smtp_basic import QID

SEQUENCES = {
    "lf-dot-lf": b"\n.\n",
    "lf-dot-crlf": b"\n.\r\n",
    "cr-dot-cr": b"\r.\r",
    "crlf-dot-lf": b"\r\n.\n",
    "crlf-dot-cr": b"\r\n.\r",
    "lf-dot-cr": b"\n.\r",
    "cr-dot-lf": b"\r.\n",
    "cr-dot-crlf": b"\r.\r\n",
}

FIRST = b"From: alice@client.test\r\nSubject: carrier\r\n\r\nfirst part"
SMUGGLED = (b"MAIL FROM:<evil@client.test>\r\n"
            b"RCPT TO:<victim@example.com>\r\n"
            b"DATA\r\n"
            b"From: ceo@example.com\r\nSubject: smuggled\r\n\r\nsmuggled body\r\n")


def run(t, smtp_raw, seq, split):
    c = smtp_raw(t.port())
    c.greeting()
    c.ehlo()
    c.cmd("MAIL FROM:<alice@client.test>", 250)
    c.cmd("RCPT TO:<bob@example.com>", 250)
    c.cmd("DATA", 354)
    if split:
        # the dangerous bytes one per write, so a filter that only looks inside
        # one read buffer is caught too
        c.send(FIRST)
        for b in seq:
            time.sleep(0.02)
            c.send(bytes([b]))
        time.sleep(0.02)
        c.send(SMUGGLED + b".\r\nQUIT\r\n")
    else:
        c.send(FIRST + seq + SMUGGLED + b".\r\nQUIT\r\n")
    replies = []
    while True:
        r = c.reply(timeout=15)
        replies.append(r)
        if r.code == 221 or len(replies) > 10:
            break
    assert c.wait_closed(5), "no close after QUIT; replies %r" % replies
    return replies


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "byte-writes"])
@pytest.mark.parametrize("name", list(SEQUENCES))
def test_smuggling_reject(ternd, smtp_raw, name, split):
    t = ternd(extra_conf="bare-newline reject")
    replies = run(t, smtp_raw, SEQUENCES[name], split)
    assert [(r.code, r.enh) for r in replies] == [(550, "5.6.0"), (221, "2.0.0")], replies
    assert t.queue() == []


@pytest.mark.parametrize("split", [False, True], ids=["one-write", "byte-writes"])
@pytest.mark.parametrize("name", list(SEQUENCES))
def test_smuggling_normalize(ternd, smtp_raw, name, split):
    t = ternd(extra_conf="bare-newline normalize")
    replies = run(t, smtp_raw, SEQUENCES[name], split)
    assert [r.code for r in replies] == [250, 221], replies
    m = QID.match(replies[0].lines[-1])
    assert m, replies[0]
    q = t.queue()
    assert [x["id"] for x in q] == [m.group(1)]
    assert [r["address"] for r in q[0]["recipients"]] == ["bob@example.com"]
    assert q[0]["sender"] == "alice@client.test"
    body = t.show_message(m.group(1))
    assert body.startswith(b"From: alice@client.test\r\nSubject: carrier\r\n\r\nfirst part")
    assert b"MAIL FROM:<evil@client.test>" in body
    assert b"smuggled body" in body
    # normalized: no bare CR or LF survives into the queue
    assert b"\r" not in body.replace(b"\r\n", b""), body
    assert b"\n" not in body.replace(b"\r\n", b""), body


def test_lf_dot_lf_only_terminates_nothing(ternd, smtp_raw):
    # a client that ends DATA with LF.LF only must time out, not be queued
    t = ternd(extra_conf="bare-newline normalize\nidle-timeout 3s")
    c = smtp_raw(t.port())
    c.greeting()
    c.ehlo()
    c.cmd("MAIL FROM:<alice@client.test>", 250)
    c.cmd("RCPT TO:<bob@example.com>", 250)
    c.cmd("DATA", 354)
    c.send(b"Subject: lf\n\nbody\n.\n")
    r = c.reply(timeout=10)
    assert (r.code, r.enh) == (421, "4.4.2"), r
    assert t.queue() == []
