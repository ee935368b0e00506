"""TLS end to end through the real ternd: STARTTLS (RFC 3207) and implicit TLS
(RFC 8314) with Python ssl/smtplib, openssl s_client, swaks and curl; protocol
versions (TLS 1.2+ only, RFC 8996) and cipher policy; the STARTTLS plaintext
injection (CVE-2011-0411 class); several certificate pairs (RSA + ECDSA) and SNI;
certificate reload on SIGHUP; outbound `tls-policy encrypt` to a server without
STARTTLS; and an optional testssl.sh scan (loopback only).
"""

import os
import pwd
import re
import select
import shutil
import signal
import smtplib
import socket
import ssl
import subprocess
import tempfile
import time

import pytest

from conftest import IN_CI, default_user, require_tool

MSG = b"From: <a@other.test>\r\nTo: <rcpt@example.com>\r\nSubject: tls\r\n\r\nhello\r\n"


def tls_conf(*pairs):
    return "".join("tls-cert %s\ntls-key %s\n" % (c, k) for c, k in pairs)


def start(ternd, certs, pairs=None, **kw):
    """ternd with "relay" (STARTTLS) and "tls" (implicit TLS) relay listeners."""
    kw.setdefault("listeners", [("relay", "relay starttls"), ("tls", "relay tls")])
    extra = tls_conf(*(pairs or [(certs.cert, certs.key)])) + kw.pop("extra_conf", "")
    return ternd(extra_conf=extra, **kw)


def ctx_for(certs, minv=None, maxv=None, ciphers=None, verify=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_verify_locations(cafile=str(certs.ca_cert))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if ciphers:
        ctx.set_ciphers(ciphers)
    if minv:
        ctx.minimum_version = minv
    if maxv:
        ctx.maximum_version = maxv
    return ctx


def der_of(pem_path):
    text = open(pem_path).read()
    first = text[:text.index("-----END CERTIFICATE-----") + 25]
    return ssl.PEM_cert_to_DER_cert(first)


def raw_starttls(smtp_raw, port, ctx, sni="localhost"):
    r = smtp_raw(port)
    r.greeting()
    assert "STARTTLS" in r.ehlo()
    r.cmd("STARTTLS", 220, "2.0.0")
    r.sock = ctx.wrap_socket(r.sock, server_hostname=sni)
    return r


def starttls_handshake(port, ctx, sni="localhost"):
    """Plain socket, EHLO, STARTTLS, handshake: the SSLSocket (caller closes)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = s.makefile("rb")
    assert f.readline().startswith(b"220")
    s.sendall(b"EHLO client.test\r\n")
    while True:
        line = f.readline()
        assert line.startswith(b"250"), line
        if line[3:4] == b" ":
            break
    s.sendall(b"STARTTLS\r\n")
    assert f.readline().startswith(b"220")
    f.close()
    return ctx.wrap_socket(s, server_hostname=sni)


def implicit_handshake(port, ctx, sni="localhost"):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(s, server_hostname=sni)


# ---------------------------------------------------------------- clients

def test_starttls_smtplib_and_implicit_tls(ternd, certs):
    t = start(ternd, certs)
    with smtplib.SMTP("127.0.0.1", t.port("relay"), timeout=10) as s:
        s.ehlo("client.test")
        assert s.has_extn("starttls")
        code, _ = s.starttls(context=ctx_for(certs))
        assert code == 220
        assert s.sock.version() in ("TLSv1.2", "TLSv1.3")
        # EHLO again after TLS (smtplib does it): STARTTLS no longer offered
        s.ehlo("client.test")
        assert not s.has_extn("starttls")
        s.sendmail("a@other.test", ["rcpt@example.com"], MSG)
    with smtplib.SMTP_SSL("127.0.0.1", t.port("tls"), timeout=10,
                          context=ctx_for(certs)) as s:
        s.ehlo("client.test")
        assert not s.has_extn("starttls")       # already TLS
        s.sendmail("a@other.test", ["rcpt@example.com"], MSG)
    assert len(t.queue()) == 2
    # the Received header says ESMTPS (RFC 3848)
    for m in t.queue():
        assert b"with ESMTPS id" in t.show_body(m["id"])
    t.wait_log(r'tls="TLSv1\.[23] ')


def test_starttls_openssl_s_client(ternd, certs):
    openssl = require_tool("openssl")
    t = start(ternd, certs)
    r = subprocess.run([openssl, "s_client", "-connect", "127.0.0.1:%d" % t.port("relay"),
                        "-starttls", "smtp", "-name", "client.test",
                        "-servername", "localhost", "-CAfile", str(certs.ca_cert),
                        "-verify_return_error", "-crlf", "-ign_eof"],
                       input=b"EHLO client.test\nMAIL FROM:<a@other.test>\n"
                             b"RCPT TO:<rcpt@example.com>\nQUIT\n",
                       capture_output=True, timeout=30)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out + r.stderr.decode(errors="replace")
    assert "Verify return code: 0 (ok)" in out, out
    assert re.search(r"New, TLSv1\.3, Cipher is TLS_", out), out
    assert "250 2.1.0 Ok" in out and "250 2.1.5 Ok" in out and "221 2.0.0" in out, out
    # implicit TLS with s_client
    r = subprocess.run([openssl, "s_client", "-connect", "127.0.0.1:%d" % t.port("tls"),
                        "-servername", "localhost", "-CAfile", str(certs.ca_cert),
                        "-verify_return_error", "-crlf", "-ign_eof"],
                       input=b"EHLO client.test\nQUIT\n", capture_output=True, timeout=30)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0 and "220 mx.test ESMTP" in out and "250-mx.test" in out, out


def test_swaks_tls_and_tlsc(ternd, certs):
    swaks = require_tool("swaks")
    t = start(ternd, certs)
    for flag, port in (("--tls", t.port("relay")), ("--tlsc", t.port("tls"))):
        r = subprocess.run([swaks, "--server", "127.0.0.1", "--port", str(port), flag,
                            "--tls-ca-path", str(certs.ca_cert), "--tls-verify",
                            "--tls-sni", "localhost",
                            "--from", "a@other.test", "--to", "rcpt@example.com",
                            "--helo", "client.test", "--timeout", "20"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert re.search(r"TLS started with cipher TLSv1\.[23]", r.stdout), r.stdout
        assert re.search(r"<~ +250 2\.0\.0 Ok: queued as", r.stdout), r.stdout
    assert len(t.queue()) == 2


def test_curl_smtp_ssl_reqd_and_smtps(ternd, certs, tmp_path):
    curl = require_tool("curl")
    t = start(ternd, certs)
    mail = tmp_path / "m.eml"
    mail.write_bytes(MSG)
    for url in ("smtp://127.0.0.1:%d" % t.port("relay"),
                "smtps://127.0.0.1:%d" % t.port("tls")):
        r = subprocess.run([curl, "-sS", "-v", "--ssl-reqd", "--cacert", str(certs.ca_cert),
                            "--url", url, "--mail-from", "a@other.test",
                            "--mail-rcpt", "rcpt@example.com", "--upload-file", str(mail),
                            "--max-time", "30"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (url, r.stderr)
        assert re.search(r"SSL connection using TLSv1\.[23]", r.stderr), r.stderr
    assert len(t.queue()) == 2
    # --ssl-reqd against a listener without STARTTLS: curl refuses to go on
    t2 = ternd(listeners=[("plain", "relay plain")])
    r = subprocess.run([curl, "-sS", "--ssl-reqd", "--url",
                        "smtp://127.0.0.1:%d" % t2.port("plain"),
                        "--mail-from", "a@other.test", "--mail-rcpt", "rcpt@example.com",
                        "--upload-file", str(mail), "--max-time", "30"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 64, (r.returncode, r.stderr)     # CURLE_USE_SSL_FAILED
    assert t2.queue() == []


# ---------------------------------------------------------------- injection

def test_starttls_pipelined_plaintext_is_discarded(ternd, certs, smtp_raw):
    t = start(ternd, certs)
    r = smtp_raw(t.port("relay"))
    r.greeting()
    r.ehlo()
    # one write: STARTTLS and a command injected in clear after it
    r.send(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<rcpt@example.com>\r\n")
    r.expect(220, "2.0.0")
    # the injected commands must not have been answered in clear: nothing
    # came after the 220 (in its read) nor arrives later
    assert r.buf == b"", r.buf
    assert select.select([r.sock], [], [], 0.3)[0] == [], "clear-text reply"
    r.sock = ctx_for(certs).wrap_socket(r.sock, server_hostname="localhost")
    # not executed: no transaction, and EHLO is needed again
    r.cmd("MAIL FROM:<a@other.test>", 503, "5.5.1")
    r.cmd("RCPT TO:<rcpt@example.com>", 503, "5.5.1")
    r.ehlo()
    r.cmd("RCPT TO:<rcpt@example.com>", 503, "5.5.1")     # still no MAIL
    r.cmd("MAIL FROM:<a@other.test>", 250)
    r.cmd("QUIT", 221)
    t.wait_log(r"discarded 53 bytes pipelined after STARTTLS")
    assert "evil@x.test" not in t.log()
    assert t.queue() == []


def test_starttls_twice_and_on_implicit_tls(ternd, certs, smtp_raw):
    t = start(ternd, certs)
    r = raw_starttls(smtp_raw, t.port("relay"), ctx_for(certs))
    assert "STARTTLS" not in r.ehlo()
    r.cmd("STARTTLS", 503, "5.5.1")
    r.cmd("NOOP", 250)


def _quit_tls(s):
    """QUIT over an established TLS socket; read to the server's close."""
    s.sendall(b"QUIT\r\n")
    data = b""
    while True:
        chunk = s.recv(4096)       # SSLEOFError here would mean no close_notify
        if not chunk:
            break
        data += chunk
    assert b"221 2.0.0" in data, data


@pytest.mark.parametrize("listener", ["relay", "tls"])
def test_clean_close_and_session_resumption(ternd, certs, listener):
    """After QUIT the server sends close_notify (a clean TLS close), so the
    session stays in its cache and can be resumed: by session ID (TLS 1.2, no
    tickets) and by ticket (TLS 1.3)."""
    t = start(ternd, certs)
    port = t.port(listener)
    hs = starttls_handshake if listener == "relay" else implicit_handshake
    ctx12 = ctx_for(certs, maxv=ssl.TLSVersion.TLSv1_2)
    ctx12.options |= ssl.OP_NO_TICKET
    for ctx in (ctx12, ctx_for(certs, minv=ssl.TLSVersion.TLSv1_3)):
        s = hs(port, ctx)
        if listener == "tls":
            assert s.recv(4096).startswith(b"220")
        _quit_tls(s)
        sess = s.session
        s.close()
        assert sess is not None
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        if listener == "relay":
            f = raw.makefile("rb")
            assert f.readline().startswith(b"220")
            raw.sendall(b"EHLO client.test\r\n")
            while f.readline()[3:4] != b" ":
                pass
            raw.sendall(b"STARTTLS\r\n")
            assert f.readline().startswith(b"220")
            f.close()
        s = ctx.wrap_socket(raw, server_hostname="localhost", session=sess)
        if listener == "tls":
            assert s.recv(4096).startswith(b"220")
        assert s.session_reused, ctx
        _quit_tls(s)
        s.close()
    t.wait_log(r"resumed=yes")


# ---------------------------------------------------------------- versions, ciphers

def _refused(fn):
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)) as ei:
        s = fn()
        s.close()
    return str(ei.value)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("listener", ["relay", "tls"])
def test_tls_versions(ternd, certs, listener):
    t = start(ternd, certs)
    hs = starttls_handshake if listener == "relay" else implicit_handshake
    port = t.port(listener)
    for v, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        s = hs(port, ctx_for(certs, minv=v, maxv=v))
        assert s.version() == name
        if v == ssl.TLSVersion.TLSv1_2:
            c = s.cipher()[0]
            assert c.startswith(("ECDHE-", "DHE-")) and ("GCM" in c or "CHACHA" in c), c
        s.close()
    # TLS 1.0 / 1.1: the client really offers them (security level 0), the
    # server answers with a protocol_version alert
    for v in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        err = _refused(lambda: hs(port, ctx_for(certs, minv=ssl.TLSVersion.TLSv1, maxv=v,
                                               ciphers="DEFAULT@SECLEVEL=0")))
        assert "PROTOCOL_VERSION" in err.upper() or "UNSUPPORTED_PROTOCOL" in err.upper(), err
    # TLS 1.2 with only non-forward-secret or non-AEAD suites: no shared cipher
    for ciphers in ("AES128-GCM-SHA256:AES256-SHA256", "ECDHE-RSA-AES128-SHA:"
                    "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384"):
        err = _refused(lambda: hs(port, ctx_for(certs, maxv=ssl.TLSVersion.TLSv1_2,
                                               ciphers=ciphers + ":@SECLEVEL=0")))
        assert "HANDSHAKE_FAILURE" in err.upper() or "NO_SHARED_CIPHER" in err.upper(), err
    # the daemon is fine afterwards
    s = hs(port, ctx_for(certs))
    s.close()


def test_tls11_refused_openssl_cli(ternd, certs):
    openssl = require_tool("openssl")
    t = start(ternd, certs)
    for proto in ("-tls1", "-tls1_1"):
        r = subprocess.run([openssl, "s_client", "-connect",
                            "127.0.0.1:%d" % t.port("relay"), "-starttls", "smtp", proto,
                            "-cipher", "DEFAULT@SECLEVEL=0"],
                           input=b"QUIT\n", capture_output=True, timeout=30)
        out = (r.stdout + r.stderr).decode(errors="replace")
        assert r.returncode != 0, out
        # the failure comes from the server's alert, not from the client refusing
        assert re.search(r"alert protocol version|unsupported protocol", out, re.I), out
        assert "Cipher is" not in out or "Cipher is (NONE)" in out, out
    r = subprocess.run([openssl, "s_client", "-connect", "127.0.0.1:%d" % t.port("relay"),
                        "-starttls", "smtp", "-tls1_2"], input=b"QUIT\n",
                       capture_output=True, timeout=30)
    assert r.returncode == 0 and b"TLSv1.2" in r.stdout, r.stdout


# ---------------------------------------------------------------- certificates

def test_rsa_and_ecdsa_pairs_and_sni(ternd, certs):
    rsa = certs.make_leaf("mx.test", ["DNS:mx.test", "DNS:localhost", "DNS:*.test",
                                      "IP:127.0.0.1"], key_type="rsa", tag="-rsa")
    other = certs.make_leaf("other.example", ["DNS:other.example", "DNS:*.other.example"])
    t = start(ternd, certs, pairs=[(certs.cert, certs.key), rsa, other])
    ec_der, rsa_der, other_der = der_of(certs.cert), der_of(rsa[0]), der_of(other[0])
    for hs, port in ((starttls_handshake, t.port("relay")),
                     (implicit_handshake, t.port("tls"))):
        # key type by what the client can use (TLS 1.2 suites name it)
        s = hs(port, ctx_for(certs, maxv=ssl.TLSVersion.TLSv1_2,
                             ciphers="ECDHE-RSA-AES128-GCM-SHA256"))
        assert s.getpeercert(binary_form=True) == rsa_der
        s.close()
        s = hs(port, ctx_for(certs, maxv=ssl.TLSVersion.TLSv1_2,
                             ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"))
        assert s.getpeercert(binary_form=True) == ec_der
        s.close()
        # SNI picks between two names with the same key type (ECDSA)
        s = hs(port, ctx_for(certs), sni="other.example")
        assert s.getpeercert(binary_form=True) == other_der
        s.close()
        s = hs(port, ctx_for(certs), sni="www.other.example")
        assert s.getpeercert(binary_form=True) == other_der
        s.close()
        s = hs(port, ctx_for(certs), sni="mx.test")
        assert s.getpeercert(binary_form=True) in (ec_der, rsa_der)
        s.close()
        # unknown name, or no SNI at all: the default (first) pair
        s = hs(port, ctx_for(certs, verify=False), sni="unknown.invalid")
        assert s.getpeercert(binary_form=True) in (ec_der, rsa_der)
        s.close()
        s = hs(port, ctx_for(certs, verify=False), sni=None)
        assert s.getpeercert(binary_form=True) in (ec_der, rsa_der)
        s.close()


def _runtime_readable_dir():
    """A directory the daemon can still read after it dropped privileges."""
    d = tempfile.mkdtemp(prefix="terntls-", dir="/tmp")
    os.chmod(d, 0o755)
    return d


def _start_reloadable(ternd, certs, d, extra_pairs=()):
    """A ternd whose key (copied into d) and conf its run-time user can read
    again on SIGHUP; returns (t, cert, key, user, pw)."""
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    shutil.copy(certs.cert, cert)
    shutil.copy(certs.key, key)
    user, pw = default_user(), None
    if user:
        pw = pwd.getpwnam(user)
        os.chown(key, pw.pw_uid, pw.pw_gid)
    os.chmod(key, 0o600)
    t = start(ternd, certs, pairs=[(cert, key)] + list(extra_pairs))
    # ternd re-reads its conf as the run-time user: let it reach the file
    p = os.path.dirname(t.conf_path)
    while p not in ("/", "/tmp"):
        os.chmod(p, os.stat(p).st_mode | 0o001)
        p = os.path.dirname(p)
    return t, cert, key, user, pw


def test_handshake_begun_before_a_reload_finishes_after_it(ternd, certs):
    """A TLS connection accepted before SIGHUP whose ClientHello (with SNI)
    arrives after the reload dropped the old contexts: the handshake still
    picks among the certificates it started with."""
    d = _runtime_readable_dir()
    try:
        leaf = certs.make_leaf("other.example", ["DNS:other.example"])
        other = (os.path.join(d, "other.pem"), os.path.join(d, "other.key"))
        for src, dst in zip(leaf, other):
            shutil.copy(src, dst)
            os.chmod(dst, 0o644)        # the run-time user reads it on reload
        t, _, _, _, _ = _start_reloadable(ternd, certs, d, extra_pairs=[other])
        pending = [socket.create_connection(("127.0.0.1", t.port("tls")), timeout=10)
                   for _ in range(2)]
        time.sleep(0.3)                 # accepted: their SSL objects exist
        os.kill(t.pid, signal.SIGHUP)
        t.wait_log(r"reload done")
        os.kill(t.pid, signal.SIGHUP)   # and the contexts after that one too
        t.wait_log(r"reload done(.|\n)*reload done")
        for s, sni, der in ((pending[0], "other.example", der_of(other[0])),
                            (pending[1], "localhost", der_of(certs.cert))):
            tls = ctx_for(certs).wrap_socket(s, server_hostname=sni)
            assert tls.getpeercert(binary_form=True) == der
            tls.sendall(b"EHLO client.test\r\n")
            assert tls.recv(4096).startswith(b"220")
            tls.close()
        assert t.pid and os.kill(t.pid, 0) is None      # still running
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_sigterm_does_not_wait_for_a_handshake_that_never_starts(ternd, certs):
    """Connections that never send their ClientHello (implicit TLS, and
    after STARTTLS's 220) do not hold a SIGTERM: no reply can reach them."""
    t = start(ternd, certs)
    silent = socket.create_connection(("127.0.0.1", t.port("tls")), timeout=10)
    s = socket.create_connection(("127.0.0.1", t.port("relay")), timeout=10)
    f = s.makefile("rb")
    assert f.readline().startswith(b"220")
    s.sendall(b"EHLO client.test\r\nSTARTTLS\r\n")
    while not f.readline().startswith(b"220 "):
        pass
    t.wait_log(r"session=\S+ connect client=127\.0\.0\.1 listener=127\.0\.0\.1:%d"
               % t.port("tls"))
    t0 = time.monotonic()
    t.stop()
    assert time.monotonic() - t0 < 3, "SIGTERM waited for silent TLS clients"
    silent.close()
    s.close()


def test_certificate_reload_on_sighup(ternd, certs, smtp_raw):
    d = _runtime_readable_dir()
    try:
        t, cert, key, user, pw = _start_reloadable(ternd, certs, d)
        old_der = der_of(certs.cert)

        # a session opened before the reload, in the middle of a transaction
        a = raw_starttls(smtp_raw, t.port("relay"), ctx_for(certs))
        assert a.sock.getpeercert(binary_form=True) == old_der
        a.ehlo()
        a.cmd("MAIL FROM:<a@other.test>", 250)
        a.cmd("RCPT TO:<rcpt@example.com>", 250)

        new_cert, new_key = certs.make_leaf("mx.test", ["DNS:mx.test", "DNS:localhost",
                                                        "IP:127.0.0.1"], tag="-new")
        # replace the files (atomically, as an ACME client would)
        for src, dst in ((new_cert, cert), (new_key, key)):
            tmp = dst + ".tmp"
            shutil.copy(src, tmp)
            if user and dst == key:
                os.chown(tmp, pw.pw_uid, pw.pw_gid)
            os.chmod(tmp, 0o600 if dst == key else 0o644)
            os.rename(tmp, dst)
        new_der = der_of(new_cert)
        assert new_der != old_der
        os.kill(t.pid, signal.SIGHUP)
        t.wait_log(r"reload done")
        assert "reload failed" not in t.log()

        for hs, port in ((starttls_handshake, t.port("relay")),
                         (implicit_handshake, t.port("tls"))):
            s = hs(port, ctx_for(certs))
            assert s.getpeercert(binary_form=True) == new_der
            s.close()

        # the old session goes on with its transaction
        a.cmd("DATA", 354)
        a.send(MSG + b".\r\n")
        rep = a.expect(250, "2.0.0")
        assert rep.queue_id in t.queue_ids()
        a.cmd("QUIT", 221)

        # a broken pair on reload: the running certificate stays
        with open(key, "w") as f:
            f.write("not a key\n")
        os.kill(t.pid, signal.SIGHUP)
        t.wait_log(r"reload failed")
        s = starttls_handshake(t.port("relay"), ctx_for(certs))
        assert s.getpeercert(binary_form=True) == new_der
        s.close()
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------- outbound

def test_outbound_tls_policy_encrypt_defers_without_starttls(ternd, certs, sink):
    snk = sink()            # no STARTTLS offered
    t = start(ternd, certs, trusted="127.0.0.0/8",
              extra_conf="route other.test smtp:[127.0.0.1]:%d tls-policy=encrypt\n"
              "retry 1h\n" % snk.port)
    with smtplib.SMTP("127.0.0.1", t.port("relay"), timeout=10) as s:
        s.sendmail("a@example.com", ["user@other.test"], MSG)
    deadline = time.monotonic() + 20
    while True:
        msgs = t.queue()
        assert len(msgs) == 1, msgs
        rc = msgs[0]["recipients"][0]
        if rc.get("status"):
            break
        assert time.monotonic() < deadline, "no 4.7.x deferral: %r\n%s" % (msgs, t.log())
        time.sleep(0.2)
    assert rc["state"] == "pending", rc                 # deferred, not bounced
    assert re.fullmatch(r"4\.7\.\d+", rc["status"]), rc
    assert "TLS" in rc["last_error"], rc
    t.wait_log(r"dsn=4\.7\.\d+ status=deferred")
    assert snk.messages == []       # never sent in clear
    # the connection was made, and left before MAIL
    assert not re.search(r"MAIL FROM", t.log())


# ---------------------------------------------------------------- testssl.sh

def test_testssl_scan(ternd, certs, tmp_path):
    path = shutil.which("testssl.sh") or shutil.which("testssl")
    if path is None:
        pytest.skip("testssl.sh not installed (optional, even under CI)")
    t = start(ternd, certs)
    results = {}
    for name, args in (("starttls", ["-t", "smtp", "127.0.0.1:%d" % t.port("relay")]),
                       ("implicit", ["127.0.0.1:%d" % t.port("tls")])):
        out = tmp_path / ("testssl-%s.txt" % name)
        r = subprocess.run([path, "--quiet", "--color", "0", "--warnings", "off",
                            "--ip", "127.0.0.1", "--nodns", "none", "-p", "-s", "-f", "-S",
                            "-U", "--logfile", str(out)] + args,
                           capture_output=True, text=True, timeout=900,
                           stdin=subprocess.DEVNULL)
        results[name] = r.stdout
        print("==== testssl.sh %s (exit %d) ====\n%s" % (name, r.returncode, r.stdout))
        text = r.stdout
        # protocols: only TLS 1.2 and 1.3 offered
        for proto in ("SSLv2", "SSLv3", "TLS 1 ", "TLS 1.1"):
            m = re.search(r"^\s*%s\s+(.*)$" % re.escape(proto), text, re.M)
            assert m is None or "not offered" in m.group(1), (proto, m and m.group(0))
        assert re.search(r"^\s*TLS 1\.2\s+offered", text, re.M), text
        assert re.search(r"^\s*TLS 1\.3\s+offered", text, re.M), text
