"""PROXY protocol listeners (`listen ... proxy`, `proxy-networks`).

A real HAProxy (private config in the test's temp dir, run in the foreground
with -db and stopped by PID) balances a burst of mail over two ternd
instances with separate queues: every message reaches the sink exactly once,
both instances take some, and the client address in Received: and in the
logs is the client's, not HAProxy's. Raw headers written by the test cover
the edge cases: missing, malformed, cut, TLVs, LOCAL, UNKNOWN, SMTP bytes
after the header, per-address limits counted by the named client, implicit
TLS after the header, and peers outside proxy-networks.
"""

import re
import signal
import smtplib
import socket
import ssl
import struct
import subprocess
import threading
import time

import pytest

from conftest import free_port, require_tool
from test_operations import scrape

CLIENT = "127.0.0.5"          # the mail client, bound as source address
V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(src, dst, sport, dport, tlvs=b"", cmd=0x21):
    """A v2 PROXY header for IPv4 src -> dst, TCP, with optional raw TLVs."""
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(
        "!HH", sport, dport) + tlvs
    return V2_SIG + bytes([cmd, 0x11]) + struct.pack("!H", len(body)) + body


def tlv(t, value):
    return bytes([t]) + struct.pack("!H", len(value)) + value


def listening(port, host="127.0.0.1"):
    """Is something listening on host:port (TCP)? Read from /proc, no connect."""
    want = "%s:%04X" % ("".join("%02X" % b for b in reversed(socket.inet_aton(host))),
                        port)
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1] == want and fields[3] == "0A":
                return True
    return False


class HAProxy:
    """A private haproxy: config in workdir, foreground (-db), stopped by PID."""

    def __init__(self, workdir, servers, send_proxy, check=""):
        self.port = free_port()
        self.conf = workdir / "haproxy.cfg"
        lines = [
            "global",
            "    maxconn 1000",
            "defaults",
            "    mode tcp",
            "    timeout connect 5s",
            "    timeout client 30s",
            "    timeout server 30s",
            "frontend smtp",
            "    bind 127.0.0.1:%d" % self.port,
            "    default_backend tern",
            "backend tern",
            "    balance roundrobin",
        ]
        for i, port in enumerate(servers):
            lines.append("    server tern%d 127.0.0.1:%d %s %s" % (i + 1, port, send_proxy,
                                                              check))
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = workdir / "haproxy.log"
        self.proc = None

    def start(self):
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(["haproxy", "-f", str(self.conf), "-db"],
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not listening(self.port):
            assert self.proc.poll() is None, "haproxy exited: %s" % self.log.read_text()
            assert time.monotonic() < deadline, "haproxy not listening"
            time.sleep(0.05)
        return self

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def haproxy(tmp_path):
    require_tool("haproxy")
    made = []

    def make(servers, send_proxy="send-proxy-v2", check="", options=()):
        h = HAProxy(tmp_path, servers, send_proxy, check)
        if options:
            text = h.conf.read_text().replace("    balance roundrobin\n",
                                              "    balance roundrobin\n" +
                                              "".join("    %s\n" % o for o in options))
            h.conf.write_text(text)
        made.append(h)
        return h.start()

    yield make
    for h in made:
        h.stop()


def proxy_ternd(ternd, name, extra="", **kw):
    kw.setdefault("listeners", [("relay", "relay plain proxy"),
                                ("direct", "relay plain")])
    return ternd(hostname=name, extra_conf="proxy-networks 127.0.0.1\n" + extra, **kw)


def send_batch(port, conn_no, per_conn, errors):
    """One client connection from CLIENT sending per_conn messages."""
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test",
                          source_address=(CLIENT, 0), timeout=30) as s:
            for k in range(per_conn):
                n = conn_no * per_conn + k
                msg = ("From: <app@client.test>\r\nTo: <rcpt@example.com>\r\n"
                       "Subject: burst %d\r\nMessage-ID: <burst-%d@client.test>\r\n\r\n"
                       "message %d\r\n" % (n, n, n))
                s.sendmail("app@client.test", ["rcpt@example.com"], msg)
    except Exception as e:           # reported by the test thread
        errors.append("connection %d: %r" % (conn_no, e))


@pytest.mark.parametrize("send_proxy", ["send-proxy", "send-proxy-v2"])
def test_burst_through_haproxy_to_two_nodes(ternd, sink, haproxy, send_proxy):
    snk = sink(port=free_port())
    route = "smtp:[127.0.0.1]:%d" % snk.port
    t1 = proxy_ternd(ternd, "mx1.test", default_route=route)
    t2 = proxy_ternd(ternd, "mx2.test", default_route=route)
    assert t1.queue_dir != t2.queue_dir
    hp = haproxy([t1.port("relay"), t2.port("relay")], send_proxy)

    nconn, per_conn = 10, 20
    errors, threads = [], []
    for c in range(nconn):
        th = threading.Thread(target=send_batch, args=(hp.port, c, per_conn, errors))
        th.start()
        threads.append(th)
    for th in threads:
        th.join(60)
    assert not errors, errors

    total = nconn * per_conn
    msgs = snk.wait_for(total, timeout=60)
    # both queues drain, so nothing more can arrive: then count exactly
    deadline = time.monotonic() + 30
    while t1.queue() or t2.queue():
        assert time.monotonic() < deadline, "queues did not drain"
        time.sleep(0.1)
    msgs = list(snk.messages)
    subjects = [re.search(rb"Subject: burst (\d+)", m.data).group(1) for m in msgs]
    assert sorted(int(s) for s in subjects) == list(range(total)), \
        "not every message exactly once"

    by_node = {"mx1.test": 0, "mx2.test": 0}
    for m in msgs:
        first = m.data.split(b"\r\n\r\n", 1)[0]
        # the sink's own trace field is not added; tern's is the first one
        rec = re.search(rb"Received: from (\S+) \(\[([^\]]+)\]\)\r\n(?:\t\(.*\r\n)?"
                        rb"\tby (\S+) \(tern\)", first)
        assert rec, first
        assert rec.group(2).decode() == CLIENT, rec.group(0)
        by_node[rec.group(3).decode()] += 1
    assert by_node["mx1.test"] > 0 and by_node["mx2.test"] > 0, by_node
    # roundrobin over connections: 10 connections split 5/5
    assert by_node["mx1.test"] == by_node["mx2.test"] == total // 2, by_node

    for t in (t1, t2):
        t.wait_log(r"connect client=%s via=127\.0\.0\.1 listener=127\.0\.0\.1:%d"
                   % (re.escape(CLIENT), t.port("relay")))
        t.wait_log(r"from=<app@client\.test> .*client=%s" % re.escape(CLIENT))
        assert "client=127.0.0.1 listener" not in t.log()


def test_trusted_networks_use_the_named_client(ternd, sink, haproxy):
    """Relaying is decided on the client HAProxy names, not on HAProxy."""
    snk = sink(port=free_port())
    t = proxy_ternd(ternd, "mx1.test", trusted=CLIENT,
                    default_route="smtp:[127.0.0.1]:%d" % snk.port)
    hp = haproxy([t.port("relay")])
    with smtplib.SMTP("127.0.0.1", hp.port, source_address=(CLIENT, 0),
                      timeout=10) as s:
        s.sendmail("app@client.test", ["someone@other.test"], "Subject: out\r\n\r\nx\r\n")
    with smtplib.SMTP("127.0.0.1", hp.port, source_address=("127.0.0.6", 0),
                      timeout=10) as s:
        s.ehlo("client.test")
        s.mail("app@client.test")
        code, text = s.rcpt("someone@other.test")
        assert code == 554 and b"5.7.1" in text, (code, text)
    m = snk.wait_for(1)[0]
    assert m.rcpt_tos == ["someone@other.test"]
    t.wait_log(r"client=127\.0\.0\.6 .*554")


def test_haproxy_health_check_is_local(ternd, haproxy):
    """HAProxy's SMTP health check over send-proxy-v2 is a LOCAL header:
    the session is the balancer's own, and it gets a normal greeting."""
    t = proxy_ternd(ternd, "mx1.test")
    haproxy([t.port("relay")], "send-proxy-v2", check="check inter 300ms",
            options=["option smtpchk HELO check.test"])
    t.wait_log(r"connect client=127\.0\.0\.1 via=127\.0\.0\.1 listener")
    t.wait_log(r"disconnect client=127\.0\.0\.1 ")
    assert "reason=proxy-header" not in t.log()


# ---- raw headers, straight to a ternd proxy listener

def raw(port, source=None, timeout=5):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                    source_address=(source, 0) if source else None)


def read_until_closed(sock, timeout=5):
    """All bytes the server sends before closing (asserts it does close)."""
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    raise AssertionError("server did not close; got %r" % data)


def read_reply(sock, timeout=5):
    sock.settimeout(timeout)
    data = b""
    while not re.search(rb"(^|\n)\d{3} [^\n]*\n", data):
        chunk = sock.recv(4096)
        assert chunk, "closed after %r" % data
        data += chunk
    return data


def smtp_one(sock, rcpt="rcpt@example.com"):
    """Greeting, one message, QUIT over a raw socket; returns the queue id."""
    assert read_reply(sock).startswith(b"220 ")
    for line, code in ((b"EHLO client.test", b"250"),
                       (b"MAIL FROM:<app@client.test>", b"250"),
                       (("RCPT TO:<%s>" % rcpt).encode(), b"250"),
                       (b"DATA", b"354")):
        sock.sendall(line + b"\r\n")
        r = read_reply(sock)
        assert r.startswith(code), (line, r)
    sock.sendall(b"Subject: raw\r\n\r\nbody\r\n.\r\n")
    r = read_reply(sock)
    assert r.startswith(b"250"), r
    sock.sendall(b"QUIT\r\n")
    read_reply(sock)
    return re.search(rb"queued as ([0-9A-Fa-f]{16})", r).group(1).decode()


@pytest.fixture
def pt(ternd):
    return proxy_ternd(ternd, "mx1.test", "proxy-timeout 1s\n")


@pytest.mark.parametrize("header,client", [
    (b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 25\r\n", "203.0.113.9"),
    (b"PROXY TCP6 2001:db8::9 ::1 40000 25\r\n", "2001:db8::9"),
    (v2_header("203.0.113.10", "127.0.0.1", 40000, 25), "203.0.113.10"),
    (v2_header("203.0.113.11", "127.0.0.1", 40000, 25,
               tlv(0x04, b"noop") + tlv(0x05, b"uniqueid") + tlv(0xE0, b"")),
     "203.0.113.11"),
    # LOCAL (a health check) and UNKNOWN: the TCP peer stays the client
    (V2_SIG + b"\x20\x00\x00\x00", "127.0.0.1"),
    (b"PROXY UNKNOWN\r\n", "127.0.0.1"),
], ids=["v1-tcp4", "v1-tcp6", "v2-inet", "v2-tlvs", "v2-local", "v1-unknown"])
def test_header_names_the_client(pt, header, client):
    with raw(pt.port("relay")) as s:
        s.sendall(header)
        qid = smtp_one(s)
    body = pt.show_body(qid)
    assert body.startswith(("Received: from client.test ([%s])" % client).encode()), body[:120]
    pt.wait_log(r"connect client=%s via=127\.0\.0\.1 " % re.escape(client))
    q = [m for m in pt.queue() if m.get("id") == qid]
    assert q and q[0]["client"] == client, q     # the envelope's client_addr


def test_header_in_pieces(pt):
    """A header that arrives a few bytes at a time is still read whole."""
    header = v2_header("198.51.100.20", "127.0.0.1", 1234, 25, tlv(0x04, b"x" * 300))
    with raw(pt.port("relay")) as s:
        for i in range(0, len(header), 7):
            s.sendall(header[i:i + 7])
            time.sleep(0.002)
        qid = smtp_one(s)
    assert b"([198.51.100.20])" in pt.show_body(qid).split(b"\r\n")[0]


@pytest.mark.parametrize("data,error", [
    (b"EHLO client.test\r\n", "bad-signature"),
    (b"PROXY TCP4 203.0.113.999 127.0.0.1 1 25\r\n", "v1-address"),
    (b"PROXY TCP4 203.0.113.9 127.0.0.1 1 70000\r\n", "v1-port"),
    (b"PROXY TCP9 a b c d\r\n", "v1-syntax"),
    (b"PROXY UNKNOWN " + b"x" * 120, "v1-too-long"),
    (V2_SIG + b"\x21\x11\x00\x0f" + bytes(12) + b"\x04\xff\xff", "v2-tlv"),
    (V2_SIG + b"\x31\x11\x00\x0c" + bytes(12), "v2-version"),
    (V2_SIG + b"\x21\x11\x00\x08" + bytes(8), "v2-length"),
    (V2_SIG + b"\x21\x12\x00\x0c" + bytes(12), "v2-family"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_header_closes_without_reply(pt, data, error):
    with raw(pt.port("relay")) as s:
        s.sendall(data)
        assert read_until_closed(s) == b""
    pt.wait_log(r"connect client=127\.0\.0\.1 listener=127\.0\.0\.1:%d refused "
                r"reason=proxy-header error=%s" % (pt.port("relay"), error))
    assert "via=" not in pt.log()


def test_missing_header_times_out(pt):
    with raw(pt.port("relay")) as s:
        t0 = time.monotonic()
        assert read_until_closed(s, timeout=5) == b""
        assert 0.5 < time.monotonic() - t0 < 4
    pt.wait_log(r"refused reason=proxy-timeout")


def test_cut_header_is_closed(pt):
    """The balancer goes away in the middle of a header."""
    with raw(pt.port("relay")) as s:
        s.sendall(b"PROXY TCP4 203.0.113.9 ")
        s.shutdown(socket.SHUT_WR)
        assert read_until_closed(s) == b""
    pt.wait_log(r"refused reason=proxy-header error=eof")


def test_peer_outside_proxy_networks(pt):
    with raw(pt.port("relay"), source=CLIENT) as s:
        s.sendall(b"PROXY TCP4 203.0.113.9 127.0.0.1 1 25\r\n")
        assert read_until_closed(s) == b""
    pt.wait_log(r"connect client=%s listener=127\.0\.0\.1:%d refused "
                r"reason=not-in-proxy-networks" % (re.escape(CLIENT), pt.port("relay")))
    # the plain listener next to it is not affected
    with raw(pt.port("direct"), source=CLIENT) as s:
        assert read_reply(s).startswith(b"220 ")


def test_smtp_after_header_is_early_talk(pt):
    """Bytes after the header are SMTP; sent before the 220 they are early
    talk, answered to (and logged for) the named client."""
    with raw(pt.port("relay")) as s:
        s.sendall(b"PROXY TCP4 203.0.113.30 127.0.0.1 1 25\r\nEHLO early.test\r\n")
        r = read_until_closed(s)
    assert r.startswith(b"554 5.5.1"), r
    pt.wait_log(r"client=203\.0\.113\.30 status=refused reason=early-talker")


def test_per_ip_limit_counts_the_named_client(ternd):
    t = proxy_ternd(ternd, "mx1.test", "max-connections-per-ip 2\n")
    socks = []
    try:
        for _ in range(2):
            s = raw(t.port("relay"))
            socks.append(s)
            s.sendall(b"PROXY TCP4 198.51.100.1 127.0.0.1 1 25\r\n")
            assert read_reply(s).startswith(b"220 ")
        s = raw(t.port("relay"))
        socks.append(s)
        s.sendall(b"PROXY TCP4 198.51.100.1 127.0.0.1 1 25\r\n")
        assert read_until_closed(s).startswith(b"421 4.7.0")
        t.wait_log(r"connect client=198\.51\.100\.1 via=127\.0\.0\.1 refused "
                   r"reason=max-connections-per-ip")
        # another client behind the same balancer is not affected
        s = raw(t.port("relay"))
        socks.append(s)
        s.sendall(b"PROXY TCP4 198.51.100.2 127.0.0.1 1 25\r\n")
        assert read_reply(s).startswith(b"220 ")
    finally:
        for s in socks:
            s.close()


def test_implicit_tls_after_header(ternd, certs):
    t = ternd(hostname="mx1.test",
              listeners=[("smtps", "relay tls proxy")],
              extra_conf="tls-cert %s\ntls-key %s\nproxy-networks 127.0.0.1\n"
                         % (certs.cert, certs.key))
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    with raw(t.port("smtps")) as s:
        s.sendall(b"PROXY TCP4 203.0.113.40 127.0.0.1 1 465\r\n")
        with ctx.wrap_socket(s, server_hostname="mx.test") as ts:
            qid = smtp_one(ts)
    assert b"([203.0.113.40])" in t.show_body(qid).split(b"\r\n")[0]
    t.wait_log(r"client=203\.0\.113\.40 tls=")


def test_stop_while_a_header_is_awaited(ternd):
    """SIGTERM with a balancer connection still in its header: ternd closes
    it and stops cleanly (no leak under the sanitizers)."""
    t = proxy_ternd(ternd, "mx1.test")
    with raw(t.port("relay")) as s:
        s.sendall(b"PROXY TCP4 203.0.113.9")
        t0 = time.monotonic()
        t.stop()
        assert time.monotonic() - t0 < 5
        assert read_until_closed(s) == b""


def test_implicit_tls_refusal_is_a_bare_close_and_counted(ternd, certs):
    """Behind an implicit-TLS proxy listener the client speaks TLS first: a
    connection over the per-address limit is closed without a plaintext
    421 (which would be garbage to its handshake), and every refusal is
    counted in tern_connections_refused_total by reason."""
    mport = free_port()
    t = ternd(hostname="mx1.test",
              listeners=[("smtps", "relay tls proxy")],
              extra_conf="tls-cert %s\ntls-key %s\nproxy-networks 127.0.0.1\n"
                         "max-connections-per-ip 1\nmetrics-listen 127.0.0.1:%d\n"
                         % (certs.cert, certs.key, mport))
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    hdr = b"PROXY TCP4 203.0.113.50 127.0.0.1 1 465\r\n"
    with raw(t.port("smtps")) as s1:
        s1.sendall(hdr)
        with ctx.wrap_socket(s1, server_hostname="mx.test") as ts:
            assert read_reply(ts).startswith(b"220 ")
            with raw(t.port("smtps")) as s2:
                s2.sendall(hdr)
                assert read_until_closed(s2) == b""
            t.wait_log(r"connect client=203\.0\.113\.50 via=127\.0\.0\.1 refused "
                       r"reason=max-connections-per-ip")
    with raw(t.port("smtps")) as s3:
        s3.sendall(b"PROXY BOGUS\r\n")
        assert read_until_closed(s3) == b""
    t.wait_log(r"refused reason=proxy-header")
    m = scrape(mport)
    assert m['tern_connections_refused_total{reason="max-connections-per-ip"}'] == 1, m
    assert m['tern_connections_refused_total{reason="proxy"}'] == 1, m
    assert m['tern_connections_refused_total{reason="max-connections"}'] == 0, m
