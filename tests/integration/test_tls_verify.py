"""Outbound `tls-policy verify` (doc/tern.conf.5): TLS is required and the
next hop's certificate must chain to a trusted CA and be valid for the host
name ternd connects to. ternd trusts the system CA store
(SSL_CTX_set_default_verify_paths, queue/mta/tls_client.c), so every ternd here runs
with SSL_CERT_FILE = the test CA. The delivery workers load that store after
ternd has dropped root (doc/ternd.8 START-UP), so the file must be readable
by the run-time user: `ca_file` is a world-readable copy (the `certs`
directory under pytest's tmp is root-only).

Mail for verify.example goes by MX to mx.test (127.0.0.1, port mx-port),
where a STARTTLS sink listens: either with the `certs` leaf (valid for
mx.test) or with a leaf of the same CA for other.example only. The policy
is set either globally (`tls-policy verify`) or on the route
(`route verify.example mx tls-policy=verify`, global default `may`).

A certificate that does not match is a handshake failure under verify:
the attempt is deferred with 4.7.5 (queue/mta/deliver_session.c, DLV_S_HANDSHAKE),
never retried in plaintext (that is only for `may`), and the sink gets no
mail. The same sink does get the mail under `may`, so it is the policy that
holds the message back, not the sink."""

import os
import re
import smtplib
import subprocess

import pytest

from conftest import QID_RE, free_port
from sink import Sink

DOMAIN = "verify.example"
RCPT = "bob@" + DOMAIN
CONF = "retry 1h\ndelay-warning 0\nconnect-timeout 5s\ncommand-timeout 5s"
POLICIES = {
    "global": "tls-policy verify",
    "route": "route %s mx tls-policy=verify" % DOMAIN,
}


def attempt_line(t, qid, status, timeout=20):
    """The per-attempt log line (sched.c sched_log_rcpt) for RCPT."""
    return t.wait_log(r"id=%s to=<%s> relay=(\S+) dsn=(\S+) status=%s [^\n]*"
                      % (qid, re.escape(RCPT), status), timeout=timeout)


def start(ternd, dns, ca_file, port, extra, zone=None):
    dns.set_zone(zone or {DOMAIN: {"MX": [(10, "mx.test")]},
                          "mx.test": {"A": ["127.0.0.1"]}})
    return ternd(hostname="tern.test", default_route=None, relay_domains=None,
                 trusted="127.0.0.0/8", mx_port=port, extra_conf=CONF + "\n" + extra,
                 env={"SSL_CERT_FILE": ca_file})


def send(t):
    with smtplib.SMTP(*t.addr(), timeout=10) as c:
        c.ehlo("client.test")
        assert c.mail("alice@sender.test")[0] == 250
        code, resp = c.rcpt(RCPT)
        assert code == 250, resp
        code, resp = c.data(b"From: alice@sender.test\r\nSubject: verify\r\n\r\nhi\r\n")
        assert code == 250, resp
        return QID_RE.search(resp.decode()).group(1).lower()


@pytest.fixture
def other_sink(certs):
    """A STARTTLS sink whose certificate (same CA) names other.example only."""
    cert, key = certs.make_leaf("other.example", tag="-tlsverify")
    s = Sink("127.0.0.1", free_port(), tls_cert=str(cert), tls_key=str(key)).start()
    yield s
    s.stop()


@pytest.mark.parametrize("where", sorted(POLICIES))
def test_verify_delivers_to_a_valid_certificate(ternd, dns, sink, ca_file, where):
    s = sink(tls=True)
    t = start(ternd, dns, ca_file, s.port, POLICIES[where])
    qid = send(t)
    (m,) = s.wait_for(1)
    assert m.rcpt_tos == [RCPT]
    assert m.tls is True, "delivered without TLS"
    line = attempt_line(t, qid, "sent")
    assert line.group(1) == "mx.test[127.0.0.1]:%d" % s.port, line.group(0)
    assert line.group(2).startswith("2."), line.group(0)
    assert re.search(r'tls=verified cipher="TLSv1\.[23] \S+"', line.group(0)), line.group(0)


def test_verify_with_a_hashed_ca_directory(ternd, dns, sink, ca_file):
    # no bundle file (SSL_CERT_FILE empty): the trust anchors come from a
    # hashed directory, read as the chain needs them (tls_client_trust)
    d = os.path.dirname(ca_file)
    h = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", ca_file],
                       capture_output=True, check=True).stdout.decode().strip()
    os.symlink("ca.pem", os.path.join(d, h + ".0"))
    s = sink(tls=True)
    dns.set_zone({DOMAIN: {"MX": [(10, "mx.test")]}, "mx.test": {"A": ["127.0.0.1"]}})
    t = ternd(hostname="tern.test", default_route=None, relay_domains=None,
              trusted="127.0.0.0/8", mx_port=s.port,
              extra_conf=CONF + "\n" + POLICIES["global"],
              env={"SSL_CERT_FILE": "", "SSL_CERT_DIR": d})
    qid = send(t)
    (m,) = s.wait_for(1)
    assert m.rcpt_tos == [RCPT] and m.tls is True
    line = attempt_line(t, qid, "sent")
    assert "tls=verified" in line.group(0), line.group(0)


@pytest.mark.parametrize("where", sorted(POLICIES))
def test_verify_defers_on_a_certificate_for_another_name(ternd, dns, ca_file,
                                                        other_sink, where):
    s = other_sink
    t = start(ternd, dns, ca_file, s.port, POLICIES[where])
    qid = send(t)
    line = attempt_line(t, qid, "deferred")
    assert line.group(1) == "mx.test[127.0.0.1]:%d" % s.port, line.group(0)
    assert line.group(2) == "4.7.5", line.group(0)
    assert "TLS handshake with mx.test" in line.group(0), line.group(0)
    assert "certificate verify failed" in line.group(0), line.group(0)
    # the sink was reached (the handshake was tried), but got nothing, and
    # no plaintext retry followed
    assert s.sessions >= 1
    assert s.messages == []
    assert "retrying in plaintext" not in t.log()
    (q,) = t.queue()
    assert q["id"] == qid
    (r,) = q["recipients"]
    assert r["state"] == "pending" and r["status"] == "4.7.5", q


def test_verify_defers_when_the_ca_is_not_trusted(ternd, dns, sink):
    # the right name, but a CA outside the store ternd trusts (the system one):
    # the chain is checked, not only the name
    bundle = "/etc/ssl/certs/ca-certificates.crt"
    if not os.path.exists(bundle):
        pytest.skip("no system CA bundle at " + bundle)
    s = sink(tls=True)
    dns.set_zone({DOMAIN: {"MX": [(10, "mx.test")]}, "mx.test": {"A": ["127.0.0.1"]}})
    t = ternd(hostname="tern.test", default_route=None, relay_domains=None,
              trusted="127.0.0.0/8", mx_port=s.port,
              extra_conf=CONF + "\n" + POLICIES["global"],
              env={"SSL_CERT_FILE": bundle, "SSL_CERT_DIR": "/etc/ssl/certs"})
    qid = send(t)
    line = attempt_line(t, qid, "deferred")
    assert line.group(2) == "4.7.5", line.group(0)
    assert "certificate verify failed" in line.group(0), line.group(0)
    assert s.messages == []


def test_may_delivers_to_the_same_sink(ternd, dns, ca_file, other_sink):
    # the control: without verify the other.example sink takes the mail (over
    # TLS, unverified), so the deferral above is the policy's doing
    s = other_sink
    t = start(ternd, dns, ca_file, s.port, "tls-policy may")
    qid = send(t)
    (m,) = s.wait_for(1)
    assert m.rcpt_tos == [RCPT] and m.tls is True
    attempt_line(t, qid, "sent")


def test_route_policy_only_for_its_domain(ternd, dns, ca_file, other_sink):
    # `route verify.example mx tls-policy=verify` does not reach mail for a
    # domain with no route of its own: it goes by `* mx` under the global may
    s = other_sink
    t = start(ternd, dns, ca_file, s.port, POLICIES["route"],
              zone={DOMAIN: {"MX": [(10, "mx.test")]},
                    "other.example": {"MX": [(10, "mx.test")]},
                    "mx.test": {"A": ["127.0.0.1"]}})
    with smtplib.SMTP(*t.addr(), timeout=10) as c:
        c.ehlo("client.test")
        assert c.mail("alice@sender.test")[0] == 250
        assert c.rcpt("carol@other.example")[0] == 250
        code, resp = c.data(b"Subject: may\r\n\r\nhi\r\n")
        assert code == 250, resp
    (m,) = s.wait_for(1)
    assert m.rcpt_tos == ["carol@other.example"] and m.tls is True
