"""CHUNKING inbound (RFC 3030): BDAT <size> [LAST] through the real ternd
to an aiosmtpd sink. Chunks are taken as they are (no dot-stuffing), may be
pipelined, the last one is answered only after the commit, a refused chunk
is still read (its bytes never run as commands), and max-message-size and
the bare-newline policy hold across chunks as for DATA."""

import pytest

from conftest import RawSMTP

MSG = (b"From: a@client.test\r\nTo: b@example.com\r\nSubject: chunks\r\n\r\n"
       b".a line that starts with a dot\r\n..two dots\r\n.\r\nlast line\r\n")


@pytest.fixture
def world(ternd, sink):
    s = sink()
    t = ternd(default_route="smtp:[127.0.0.1]:%d" % s.port, trusted="127.0.0.0/8",
              extra_conf="max-message-size 4000")
    return t, s


def session(t):
    c = RawSMTP(t.port(), timeout=15)
    c.greeting()
    assert "CHUNKING" in c.ehlo()
    c.cmd("MAIL FROM:<a@client.test>", 250)
    c.cmd("RCPT TO:<b@example.com>", 250)
    return c


def delivered(t, s, qid):
    (m,) = s.wait_for(1, timeout=15)
    assert qid.upper() in m.data.decode(errors="replace").upper()
    return m.data


def strip_received(data):
    lines = data.split(b"\r\n")
    assert lines[0].startswith(b"Received: ")
    i = 1
    while lines[i][:1] in (b" ", b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


def test_chunks_arrive_byte_exact(world):
    t, s = world
    c = session(t)
    a, b = MSG[:50], MSG[50:]
    c.send(b"BDAT %d\r\n" % len(a) + a)
    c.expect(250, "2.0.0")
    c.send(b"BDAT %d LAST\r\n" % len(b) + b)
    r = c.expect(250, "2.0.0")
    assert r.queue_id
    c.cmd("QUIT", 221)
    assert strip_received(delivered(t, s, r.queue_id)) == MSG


def test_pipelined_chunks_and_empty_last(world):
    """MAIL, RCPT, three chunks and BDAT 0 LAST in one write: one reply
    each, in order; the last after the commit."""
    t, s = world
    c = RawSMTP(t.port(), timeout=15)
    c.greeting()
    c.ehlo()
    parts = [MSG[:10], MSG[10:11], MSG[11:]]
    wire = b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@example.com>\r\n"
    for p in parts:
        wire += b"BDAT %d\r\n" % len(p) + p
    wire += b"BDAT 0 LAST\r\nNOOP\r\n"
    c.send(wire)
    c.expect(250)
    c.expect(250)
    for p in parts:
        r = c.expect(250, "2.0.0")
        assert "2.0.0 %d octets received" % len(p) == r.text, r
    r = c.expect(250, "2.0.0")
    assert r.queue_id, r
    c.expect(250)                       # NOOP: framing kept
    assert strip_received(delivered(t, s, r.queue_id)) == MSG


def test_bdat_0_last_alone_is_an_empty_message(world):
    t, s = world
    c = session(t)
    r = c.cmd("BDAT 0 LAST", 250, "2.0.0")
    assert r.queue_id
    assert strip_received(delivered(t, s, r.queue_id)) == b""


def test_data_after_bdat_is_refused(world):
    t, s = world
    c = session(t)
    c.send(b"BDAT 5\r\nhello")
    c.expect(250)
    c.cmd("DATA", 503, "5.5.1")
    c.cmd("RCPT TO:<c@example.com>", 503, "5.5.1")
    c.send(b"BDAT 2 LAST\r\n\r\n")
    r = c.expect(250, "2.0.0")
    assert strip_received(delivered(t, s, r.queue_id)) == b"hello\r\n"


def test_refused_chunk_is_read_not_run(world):
    """BDAT without a transaction: 503, and its bytes ("QUIT\\r\\n") are
    dropped, never taken as a command."""
    t, s = world
    c = RawSMTP(t.port(), timeout=15)
    c.greeting()
    c.ehlo()
    c.send(b"BDAT 6\r\nQUIT\r\nNOOP\r\n")
    c.expect(503, "5.5.1")
    c.expect(250)                       # the NOOP, not a 221
    c.cmd("QUIT", 221)


def test_size_limit_across_chunks(world):
    t, s = world
    c = session(t)
    # announced over the limit: refused before a byte is read, then dropped
    c.send(b"BDAT 5000 LAST\r\n" + b"x" * 4998 + b"\r\n")
    c.expect(552, "5.3.4")
    c.cmd("NOOP", 250)
    # two chunks that only together pass the limit
    c.cmd("MAIL FROM:<a@client.test>", 250)
    c.cmd("RCPT TO:<b@example.com>", 250)
    c.send(b"BDAT 2500\r\n" + (b"y" * 98 + b"\r\n") * 25)
    c.expect(250)
    c.send(b"BDAT 2500 LAST\r\n" + (b"z" * 98 + b"\r\n") * 25)
    c.expect(552, "5.3.4")
    c.cmd("NOOP", 250)
    c.cmd("QUIT", 221)
    assert s.messages == []
    assert not t.queue_ids()


def test_bare_lf_in_a_chunk_is_refused(world):
    t, s = world
    c = session(t)
    data = b"Subject: x\nTo: y\r\n\r\nbody\r\n"
    c.send(b"BDAT %d LAST\r\n" % len(data) + data)
    c.expect(550, "5.6.0")
    c.cmd("NOOP", 250)
    assert not t.queue_ids()


def test_bdat_syntax_error_closes(world):
    t, s = world
    c = session(t)
    c.send(b"BDAT ten\r\n")
    c.expect(421, "4.5.4")
    c.wait_closed()


# ---------------------------------------------------------------- outbound

def test_outbound_bdat_to_a_peer_with_chunking(ternd, dns, tmp_path):
    """A next hop that offers CHUNKING gets the body as one BDAT LAST
    chunk, not dot-stuffed: byte for byte what was queued."""
    from conftest import free_port
    from fakemx import FakeMX
    port = free_port()
    mx = FakeMX("127.0.0.1", port)
    mx.chunking = True
    mx.start()
    try:
        t = ternd(default_route="smtp:[127.0.0.1]:%d" % port, trusted="127.0.0.0/8")
        c = session(t)
        c.send(b"BDAT %d LAST\r\n" % len(MSG) + MSG)
        r = c.expect(250, "2.0.0")
        mx.wait_messages(1, timeout=15)
    finally:
        mx.stop()
    assert "BDAT" in mx.verbs and "DATA" not in mx.verbs, mx.verbs
    mail, data = mx.data[0]
    assert strip_received(data) == MSG
    assert r.queue_id.upper() in data.decode().upper()


def test_tern_to_tern_over_bdat(ternd, sink):
    """ternd A relays to ternd B, which offers CHUNKING: the message
    crosses as BDAT and reaches B's sink byte-exact (dots included)."""
    s = sink()
    b = ternd(default_route="smtp:[127.0.0.1]:%d" % s.port, trusted="127.0.0.0/8")
    a = ternd(default_route="smtp:[127.0.0.1]:%d" % b.port(), trusted="127.0.0.0/8")
    c = session(a)
    c.send(b"BDAT %d LAST\r\n" % len(MSG) + MSG)
    c.expect(250, "2.0.0")
    (m,) = s.wait_for(1, timeout=20)
    assert strip_received(strip_received(m.data)) == MSG
