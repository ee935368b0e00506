"""The receiving session's own reading of a plain socket (smtpd/session.c,
smtpd_session_rcb): input held back while the session cannot take it.

The session reads commands with its own read event rather than libevent's
bufferevent reading, and stops reading while 256 KiB of input waits (a client
that does not read its replies, or pipelines behind a message being
committed), then resumes once that input is taken. These tests push a client
past that limit and check that every pipelined command is answered, once, in
order, and that the session goes on working afterwards.
"""
import socket
import threading
import time

import pytest


def _connect(port, rcvbuf=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        # a small receive window: replies back up in ternd, not in our kernel
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
    s.settimeout(30)
    s.connect(("127.0.0.1", port))
    return s


class _Lines:
    """Reply lines from a plain socket, with a deadline per call."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def line(self, deadline):
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            assert left > 0, "timed out waiting for a reply; pending %r" % self.buf[-200:]
            self.sock.settimeout(left)
            chunk = self.sock.recv(65536)
            assert chunk, "connection closed; pending %r" % self.buf[-200:]
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def count(self, prefix, n, deadline):
        """Read n lines, each starting with prefix (in bulk: n may be large)."""
        got = 0
        while got < n:
            if b"\n" not in self.buf:
                left = deadline - time.monotonic()
                assert left > 0, "reply %d of %d: timed out" % (got + 1, n)
                self.sock.settimeout(left)
                try:
                    chunk = self.sock.recv(262144)
                except OSError as e:
                    raise AssertionError("reply %d of %d: %s" % (got + 1, n, e))
                assert chunk, "reply %d of %d: connection closed" % (got + 1, n)
                self.buf += chunk
                continue
            lines = self.buf.split(b"\n")
            self.buf = lines.pop()
            if got + len(lines) > n:        # lines past the n-th stay unread
                self.buf = b"\n".join(lines[n - got:] + [self.buf])
                lines = lines[:n - got]
            for i, line in enumerate(lines):
                assert line.startswith(prefix) and line.endswith(b"\r"), \
                    "reply %d of %d: %r" % (got + i + 1, n, line)
            got += len(lines)


class _Sender(threading.Thread):
    """Writes data in 16 KiB pieces; .sent says how far it got."""

    def __init__(self, sock, data):
        super().__init__(daemon=True)
        self.sock, self.data, self.sent, self.error = sock, data, 0, None

    def run(self):
        try:
            while self.sent < len(self.data):
                self.sock.sendall(self.data[self.sent:self.sent + 16384])
                self.sent = min(len(self.data), self.sent + 16384)
        except OSError as e:
            self.error = e


def _wait_stalled(sender, limit=10.0, quiet=0.5):
    """Wait until the sender stops making progress (ternd stopped reading)
    or has sent everything; bounded by limit seconds."""
    end = time.monotonic() + limit
    last, since = -1, time.monotonic()
    while time.monotonic() < end and sender.sent < len(sender.data):
        if sender.sent != last:
            last, since = sender.sent, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return True
        time.sleep(0.05)
    return False


def test_pipelined_flood_past_input_limit(ternd):
    """A client pipelines 6 MB of NOOPs without reading a reply: ternd
    stops reading (its replies wait, then its input), the client's writes
    stall; once the client reads, every NOOP gets exactly one 250, in order,
    and the session still works."""
    t = ternd()
    s = _connect(t.port(), rcvbuf=4096)
    r = _Lines(s)
    deadline = time.monotonic() + 30
    assert r.line(deadline).startswith(b"220 ")
    n = 1000000
    sender = _Sender(s, b"NOOP\r\n" * n)
    sender.start()
    assert _wait_stalled(sender), "ternd read everything: the limit was never reached"
    assert sender.sent < n * 6
    r.count(b"250 2.0.0", n, deadline)
    sender.join(10)
    assert not sender.is_alive() and sender.error is None
    s.sendall(b"EHLO client.test\r\n")
    line = r.line(deadline)
    while line.startswith(b"250-"):
        line = r.line(deadline)
    assert line.startswith(b"250 ")
    s.sendall(b"QUIT\r\n")
    assert r.line(deadline).startswith(b"221 ")
    s.close()
    assert "line too long" not in t.log()


def test_commands_pipelined_behind_a_message(ternd):
    """A message's end of data followed at once by ~330 KB of pipelined RSETs
    and a second message: they wait in ternd while the first message is
    committed (more than ternd buffers, so its reading stops), then every
    command is answered in order and both messages are queued once."""
    t = ternd(trusted="127.0.0.0/8")
    s = _connect(t.port())
    r = _Lines(s)
    deadline = time.monotonic() + 20
    assert r.line(deadline).startswith(b"220 ")
    s.sendall(b"EHLO client.test\r\n")
    line = r.line(deadline)
    while line.startswith(b"250-"):
        line = r.line(deadline)
    s.sendall(b"MAIL FROM:<a@client.test>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
    assert r.line(deadline).startswith(b"250 ")
    assert r.line(deadline).startswith(b"250 ")
    assert r.line(deadline).startswith(b"354 ")
    body = b"Subject: first\r\n\r\n" + b"x" * 70 + b"\r\n"
    n = 55000
    tail = (b"RSET\r\n" * n +
            b"MAIL FROM:<a@client.test>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n")
    sender = _Sender(s, body + b".\r\n" + tail)
    sender.start()
    q1 = r.line(deadline)
    assert q1.startswith(b"250 2.0.0 Ok: queued as"), q1
    r.count(b"250 2.0.0", n, deadline)
    assert r.line(deadline).startswith(b"250 ")
    assert r.line(deadline).startswith(b"250 ")
    assert r.line(deadline).startswith(b"354 ")
    sender.join(10)
    assert not sender.is_alive() and sender.error is None
    s.sendall(b"Subject: second\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    q2 = r.line(deadline)
    assert q2.startswith(b"250 2.0.0 Ok: queued as"), q2
    assert r.line(deadline).startswith(b"221 ")
    s.close()
    end = time.monotonic() + 10
    while len(t.queue_ids()) < 2 and time.monotonic() < end:
        time.sleep(0.1)
    assert len(t.queue_ids()) == 2
    assert t.log().count("status=queued") == 2


@pytest.mark.parametrize("split", [1, 7, 4096])
def test_command_split_across_reads(ternd, split):
    """Commands arriving a few bytes at a time (each piece its own read) are
    put together exactly as before."""
    t = ternd()
    s = _connect(t.port())
    r = _Lines(s)
    deadline = time.monotonic() + 30
    assert r.line(deadline).startswith(b"220 ")
    data = b"EHLO client.test\r\nNOOP\r\nHELP\r\nRSET\r\n"
    for i in range(0, len(data), split):
        s.sendall(data[i:i + split])
        if split < 10:
            time.sleep(0.002)     # separate segments, not an assertion
    line = r.line(deadline)
    while line.startswith(b"250-"):
        line = r.line(deadline)
    assert line.startswith(b"250 ")
    assert r.line(deadline).startswith(b"250 2.0.0")
    assert r.line(deadline).startswith(b"214 ")
    assert r.line(deadline).startswith(b"250 2.0.0")
    s.sendall(b"QUIT\r\n")
    assert r.line(deadline).startswith(b"221 ")
    s.close()
