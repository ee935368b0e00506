"""TLS session resumption by ticket through the real ternd, with real clients
(openssl s_client, Python ssl), and the choice between an RSA and an ECDSA
certificate.

- a ticket resumes the session (TLS 1.3 and TLS 1.2);
- the ticket keys rotate every tls-ticket-lifetime/2: a ticket sealed before
  a rotation still resumes within its lifetime (and the new ticket is sealed
  with another key: the key name at the head of the ticket changes); a
  ticket older than the lifetime gets a full handshake;
- the ticket keys outlive a reload (SIGHUP builds new TLS contexts);
- `tls-session-tickets off`: no ticket, no TLS 1.3 resumption (TLS 1.2
  session IDs still resume);
- with an RSA and an ECDSA pair (RSA written first), a client that can use
  ECDSA gets the ECDSA certificate, one that cannot the RSA one, on TLS 1.3
  (signature algorithms) and TLS 1.2 (cipher suites).
"""

import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import time

from conftest import require_tool
from test_tls import _runtime_readable_dir, _start_reloadable

QUIT_TIMEOUT = 20


def start(ternd, certs, pairs=None, extra=""):
    pairs = pairs or [(certs.cert, certs.key)]
    conf = "".join("tls-cert %s\ntls-key %s\n" % p for p in pairs) + extra
    return ternd(listeners=[("relay", "relay starttls"), ("tls", "relay tls")],
                 extra_conf=conf)


def s_client(port, *args, sess_in=None, sess_out=None, starttls=False):
    """One implicit-TLS (or STARTTLS) session that reads the greeting and
    QUITs; returns s_client's stdout+stderr."""
    cmd = [require_tool("openssl"), "s_client", "-connect", "127.0.0.1:%d" % port,
           "-servername", "localhost", "-crlf", "-ign_eof", *args]
    if starttls:
        cmd += ["-starttls", "smtp"]
    if sess_in:
        cmd += ["-sess_in", str(sess_in)]
    if sess_out:
        cmd += ["-sess_out", str(sess_out)]
    r = subprocess.run(cmd, input=b"QUIT\n", capture_output=True, timeout=QUIT_TIMEOUT)
    out = (r.stdout + r.stderr).decode(errors="replace")
    assert r.returncode == 0, out
    assert "221 2.0.0" in out, out
    return out


def reused(out):
    m = re.search(r"^(New|Reused), (TLSv1\.[23])", out, re.M)
    assert m, out
    return m.group(1) == "Reused"


def ticket_key_name(sess_file):
    """The first 16 bytes of the session's ticket (the server's key name), hex,
    or None if the session holds no ticket (or s_client saved no session:
    with TLS 1.3 it saves one when a ticket comes)."""
    if not sess_file.exists():
        return None
    out = subprocess.run([require_tool("openssl"), "sess_id", "-in", str(sess_file),
                          "-noout", "-text"], capture_output=True, check=True,
                         timeout=10).stdout.decode()
    m = re.search(r"TLS session ticket:\n\s*0000 - ((?:[0-9a-f]{2}[ -]){16})", out)
    return m.group(1).replace("-", " ").replace(" ", "") if m else None


def test_ticket_resumes_tls13_and_tls12(ternd, certs, tmp_path):
    t = start(ternd, certs)
    for ver in ("-tls1_3", "-tls1_2"):
        for port, starttls in ((t.port("tls"), False), (t.port("relay"), True)):
            f = tmp_path / ("sess%s-%d" % (ver, port))
            assert not reused(s_client(port, ver, sess_out=f, starttls=starttls))
            assert ticket_key_name(f) is not None          # a ticket came
            assert reused(s_client(port, ver, sess_in=f, starttls=starttls))
    t.wait_log(r"TLSv1\.3 \S+.*resumed=yes")
    t.wait_log(r"TLSv1\.2 \S+.*resumed=yes")


def test_python_ssl_resumes_by_ticket(ternd, certs):
    t = start(ternd, certs)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(certs.ca_cert))
    sess = None
    for i in range(3):
        raw = socket.create_connection(("127.0.0.1", t.port("tls")), timeout=10)
        s = ctx.wrap_socket(raw, server_hostname="localhost", session=sess)
        assert s.recv(4096).startswith(b"220")     # the tickets come before it
        assert s.session_reused == (i > 0)
        assert s.session.has_ticket
        assert s.session.ticket_lifetime_hint == 3600   # tls-ticket-lifetime default
        sess = s.session
        s.sendall(b"QUIT\r\n")
        s.recv(4096)
        s.close()


def test_ticket_from_before_a_rotation_resumes_then_expires(ternd, certs, tmp_path):
    """tls-ticket-lifetime 6s: a new key every 3 s; a session resumes for 6 s.
    The waits count from the end of the s_client run that got the ticket (it
    was sealed before then), so a slow machine makes them longer, not wrong."""
    t = start(ternd, certs, extra="tls-ticket-lifetime 6s\n")
    port = t.port("tls")
    a, b = tmp_path / "a.pem", tmp_path / "b.pem"
    t0 = time.monotonic()
    assert not reused(s_client(port, "-tls1_3", sess_out=a))
    ta = time.monotonic()
    name_a = ticket_key_name(a)
    # the key that sealed a is due for rotation 3 s after it was made
    while time.monotonic() < ta + 3.1:
        time.sleep(0.1)
    assert time.monotonic() - t0 < 5.5, "too slow to test within the lifetime"
    assert reused(s_client(port, "-tls1_3", sess_in=a, sess_out=b))
    tb = time.monotonic()
    name_b = ticket_key_name(b)
    assert name_a and name_b and name_a != name_b, (name_a, name_b)
    # b is good for 6 s (whole seconds: up to 7); after 7.5 s it is not resumed
    while time.monotonic() < tb + 7.5:
        time.sleep(0.1)
    assert not reused(s_client(port, "-tls1_3", sess_in=b))
    assert not reused(s_client(port, "-tls1_3", sess_in=a))
    # the server is fine and resumes new tickets again
    assert not reused(s_client(port, "-tls1_3", sess_out=a))
    assert reused(s_client(port, "-tls1_3", sess_in=a))


def test_ticket_resumes_after_a_reload(ternd, certs, tmp_path):
    d = _runtime_readable_dir()
    try:
        t = _start_reloadable(ternd, certs, d)[0]
        f = tmp_path / "s.pem"
        for ver in ("-tls1_3", "-tls1_2"):
            assert not reused(s_client(t.port("tls"), ver, sess_out=f))
            os.kill(t.pid, signal.SIGHUP)
            t.wait_log(r"reload done" + r"(.|\n)*reload done" * (ver == "-tls1_2"))
            assert reused(s_client(t.port("tls"), ver, sess_in=f)), ver
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_tickets_off(ternd, certs, tmp_path):
    t = start(ternd, certs, extra="tls-session-tickets off\n")
    port = t.port("tls")
    f = tmp_path / "s.pem"
    # TLS 1.3: no ticket, so nothing to resume with
    assert not reused(s_client(port, "-tls1_3", sess_out=f))
    assert ticket_key_name(f) is None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(certs.ca_cert))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    assert s.recv(4096).startswith(b"220")
    assert not s.session.has_ticket
    s.close()
    # TLS 1.2: no ticket either, but the session ID still resumes
    assert not reused(s_client(port, "-tls1_2", sess_out=f))
    assert ticket_key_name(f) is None
    assert reused(s_client(port, "-tls1_2", sess_in=f))


def test_ecdsa_preferred_rsa_otherwise(ternd, certs):
    rsa = certs.make_leaf("localhost", ["DNS:localhost", "IP:127.0.0.1"],
                          key_type="rsa", tag="-pref-rsa")
    ec = certs.make_leaf("localhost", ["DNS:localhost", "IP:127.0.0.1"],
                         key_type="ec", tag="-pref-ec")
    t = start(ternd, certs, pairs=[rsa, ec])        # RSA written first
    cases = [
        # (client options, expected key)
        (["-tls1_3"], "ec"),
        (["-tls1_2"], "ec"),
        (["-tls1_3", "-sigalgs", "ecdsa_secp256r1_sha256:rsa_pss_rsae_sha256"], "ec"),
        # the server's preference, not the client's order
        (["-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256:ecdsa_secp256r1_sha256"], "ec"),
        (["-tls1_3", "-sigalgs", "rsa_pss_rsae_sha256:rsa_pss_rsae_sha384"], "rsa"),
        (["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"], "rsa"),
        (["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256:"
          "ECDHE-ECDSA-AES128-GCM-SHA256"], "ec"),
    ]
    for starttls, port in ((False, t.port("tls")), (True, t.port("relay"))):
        for opts, want in cases:
            out = s_client(port, *opts, starttls=starttls)
            m = re.search(r"Server public key is (\d+) bit", out)
            assert m, out
            bits = int(m.group(1))
            assert bits == (256 if want == "ec" else 2048), (opts, out)
            sig = re.search(r"Peer signature type: (\S+)", out)
            assert sig and (sig.group(1) == "ECDSA") == (want == "ec"), (opts, out)


def test_one_ticket_and_aes128_sha256_first(ternd, certs):
    """A full TLS 1.3 handshake gets one ticket (not OpenSSL's default two:
    each costs ternd a session encoding and a sealing), and the server's
    order puts AES-128-GCM with SHA-256 first on TLS 1.3 and TLS 1.2; a client
    that offers only the other suites still gets one of them."""
    t = start(ternd, certs)
    port = t.port("tls")
    out = s_client(port, "-tls1_3")
    assert out.count("Post-Handshake New Session Ticket arrived") == 1, out
    assert re.search(r"^New, TLSv1\.3, Cipher is TLS_AES_128_GCM_SHA256$", out, re.M), out
    out = s_client(port, "-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384")
    assert re.search(r"^New, TLSv1\.3, Cipher is TLS_AES_256_GCM_SHA384$", out, re.M), out
    out = s_client(port, "-tls1_2")
    assert re.search(r"^New, TLSv1\.2, Cipher is ECDHE-\w+-AES128-GCM-SHA256$", out, re.M), out
    out = s_client(port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384:"
                   "ECDHE-RSA-AES256-GCM-SHA384")
    assert re.search(r"^New, TLSv1\.2, Cipher is ECDHE-\w+-AES256-GCM-SHA384$", out, re.M), out


def _tls_records(raw):
    """(complete records' content types, the bytes of an unfinished one)."""
    types = []
    while len(raw) >= 5:
        n = int.from_bytes(raw[3:5], "big")
        if len(raw) < 5 + n:
            break
        types.append(raw[0])
        raw = raw[5 + n:]
    return types, raw


def _to_starttls(sock):
    """Greeting, EHLO and STARTTLS in clear on sock; a client context that
    takes the test certificate."""
    f = sock.makefile("rb")
    assert f.readline().startswith(b"220")
    sock.sendall(b"EHLO client.test\r\n")
    while not f.readline().startswith(b"250 "):
        pass
    sock.sendall(b"STARTTLS\r\n")
    assert f.readline().startswith(b"220")
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_pipelined_replies_in_one_tls_record(ternd, certs):
    """Over STARTTLS, the replies to commands that arrived together go out
    as one TLS record (libevent's filter sealed each reply on its own: four
    records for four commands). Counted on the wire, under Python's TLS."""
    t = start(ternd, certs)
    sock = socket.create_connection(("127.0.0.1", t.port("relay")), timeout=10)
    try:
        ctx = _to_starttls(sock)
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = ctx.wrap_bio(inc, out, server_hostname="mx.test")
        pending = b""                       # raw bytes not yet in a record

        def pump(want_lines):
            """Read until want_lines reply lines; the records that carried
            them (content types), counted from the raw stream."""
            nonlocal pending
            types, text = [], b""
            deadline = time.monotonic() + 10
            while text.count(b"\r\n") < want_lines:
                assert time.monotonic() < deadline, text
                try:
                    text += tls.read(65536)
                    continue
                except ssl.SSLWantReadError:
                    pass
                if out.pending:
                    sock.sendall(out.read())
                raw = sock.recv(65536)
                assert raw, "connection closed"
                got, pending = _tls_records(pending + raw)
                types += got
                inc.write(raw)
            return types, text

        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if out.pending:
                    sock.sendall(out.read())
                raw = sock.recv(65536)
                assert raw, "closed during the handshake"
                _, pending = _tls_records(pending + raw)
                inc.write(raw)
        sock.sendall(out.read() if out.pending else b"")
        tls.write(b"EHLO client.test\r\n")
        sock.sendall(out.read())
        _, text = pump(1)
        while not re.search(rb"^250 ", text, re.M):
            _, more = pump(1)
            text += more
        assert b"STARTTLS" not in text
        # four commands in one record: four replies in one record
        tls.write(b"MAIL FROM:<a@client.test>\r\nRSET\r\nNOOP\r\nNOOP\r\n")
        sock.sendall(out.read())
        types, text = pump(4)
        assert text.count(b"\r\n") == 4 and text.startswith(b"250"), text
        assert types == [23], (types, text)    # one application-data record
        tls.write(b"QUIT\r\n")
        sock.sendall(out.read())
    finally:
        sock.close()


def _starttls(port, rcvbuf=None):
    """A STARTTLS session past its second EHLO: (TLS socket, reader)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", port))
    tls = _to_starttls(sock).wrap_socket(sock, server_hostname="mx.test")
    r = tls.makefile("rb")
    tls.sendall(b"EHLO client.test\r\n")
    while not r.readline().startswith(b"250 "):
        pass
    return tls, r


def _socket_fd(pid, local_port, server_port):
    """ternd's descriptor for the loopback connection from local_port."""
    inode = None
    with open("/proc/net/tcp") as fh:
        for line in fh.readlines()[1:]:
            f = line.split()
            loc, rem = f[1].split(":"), f[2].split(":")
            if int(loc[1], 16) == server_port and int(rem[1], 16) == local_port:
                inode = f[9]
    assert inode, "server side of port %d not found" % local_port
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == "socket:[%s]" % inode:
                return int(fd)
        except OSError:
            pass
    raise AssertionError("no descriptor of ternd holds socket:[%s]" % inode)


def test_starttls_replies_written_without_epoll_ctl(ternd, certs, tmp_path):
    """Over STARTTLS the session writes the socket itself: a reply costs a
    writev, not libevent's arming and disarming of the socket's write event
    (an epoll_ctl each, two per reply with libevent 2.1's filter). Counted
    with strace on the session's descriptor over 20 request/reply turns."""
    strace = require_tool("strace")
    t = start(ternd, certs)
    port = t.port("relay")
    tls, r = _starttls(port)
    try:
        fd = _socket_fd(t.pid, tls.getsockname()[1], port)
        log = tmp_path / "strace.log"
        tasks = len(os.listdir("/proc/%d/task" % t.pid))
        st = subprocess.Popen([strace, "-f", "-e", "trace=epoll_ctl,writev",
                               "-o", str(log), "-p", str(t.pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            # wait until strace holds every thread (it says so on stderr:
            # "attached with N threads", or a line per thread)
            seen, deadline = b"", time.monotonic() + 20
            while b"attached with" not in seen and seen.count(b"attached") < tasks:
                left = deadline - time.monotonic()
                assert left > 0 and select.select([st.stderr], [], [], left)[0], seen
                chunk = os.read(st.stderr.fileno(), 4096)
                assert chunk, seen
                seen += chunk
            for _ in range(20):
                tls.sendall(b"NOOP\r\n")
                assert r.readline().startswith(b"250"), "NOOP"
        finally:
            st.terminate()
            st.communicate(timeout=20)
        calls = log.read_text().splitlines()
        on_fd = lambda name: [c for c in calls if re.search(
            r"%s\((\d+, )?%d[,)]" % (name, fd) if name == "writev" else
            r"epoll_ctl\(\d+, EPOLL_CTL_\w+, %d," % fd, c)]
        writes, ctls = on_fd("writev"), on_fd("epoll_ctl")
        assert len(writes) >= 20, (fd, calls[-40:])   # strace saw the replies
        assert len(ctls) <= 2, ctls
        tls.sendall(b"QUIT\r\n")
        assert r.readline().startswith(b"221")
    finally:
        tls.close()


def test_starttls_replies_to_a_client_that_reads_late(ternd, certs):
    """A client with a small receive window pipelines thousands of commands
    over STARTTLS and reads nothing for a while: the socket fills, the
    session hands the rest to libevent's write event and stops reading once
    64 KiB of replies wait; when the client reads, every reply arrives, in
    order, and the session goes on."""
    t = start(ternd, certs)
    tls, r = _starttls(t.port("relay"), rcvbuf=4096)
    try:
        n = 6000                              # ~84 KB of replies
        tls.sendall(b"NOOP\r\n" * n)
        time.sleep(1.0)                       # the server meets a full socket
        got = 0
        while got < n:
            line = r.readline()
            assert line.startswith(b"250 2.0.0"), (got, line)
            got += 1
        tls.sendall(b"MAIL FROM:<a@client.test>\r\nRSET\r\nQUIT\r\n")
        assert r.readline().startswith(b"250")
        assert r.readline().startswith(b"250")
        assert r.readline().startswith(b"221")
    finally:
        tls.close()
