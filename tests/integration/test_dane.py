"""Outbound DANE (RFC 7672, `tls-policy dane`) and REQUIRETLS (RFC 8689)
through the real ternd, the test DNS server (which sets the AD bit as a
validating resolver would, and serves TLSA) and STARTTLS sinks holding the
`certs` leaf (valid for mx.test).

Mail for dane.example goes by MX to mx.test (127.0.0.1, port mx-port = the
sink's port), so its TLSA name is _PORT._tcp.mx.test. The TLSA data are
computed here from the sink's certificate with the openssl CLI: 3 1 1 is
the SHA-256 of the leaf's SubjectPublicKeyInfo, 2 0 1 the SHA-256 of the
test CA's certificate (the sink then sends leaf + CA).

Bounces of REQUIRETLS mail go to the sender's domain, routed to a plain
second sink, where the DSN is checked: status 5.7.30, no body."""

import hashlib
import re
import smtplib
import ssl
import subprocess

import pytest

from conftest import QID_RE, free_port, require_tool
from sink import Sink

DOMAIN = "dane.example"
RCPT = "bob@" + DOMAIN
SENDER = "alice@sender.test"
MX = "mx.test"
BODY_MARK = b"SECRET-BODY-LINE-7c1e"
CONF = ("retry 1h\ndelay-warning 0\nconnect-timeout 5s\ncommand-timeout 5s\n"
        "tls-policy dane")


def der_of(pem_path):
    text = open(pem_path).read()
    first = text[:text.index("-----END CERTIFICATE-----") + 25]
    return ssl.PEM_cert_to_DER_cert(first)


def spki_sha256(cert_path):
    openssl = require_tool("openssl")
    pub = subprocess.run([openssl, "x509", "-in", str(cert_path), "-pubkey", "-noout"],
                         check=True, capture_output=True).stdout
    der = subprocess.run([openssl, "pkey", "-pubin", "-outform", "DER"], input=pub,
                         check=True, capture_output=True).stdout
    return hashlib.sha256(der).hexdigest()


def tlsa_name(port):
    return "_%d._tcp.%s" % (port, MX)


def set_zone(dns, port, tlsa=None, secure_mx=True):
    zone = {DOMAIN: {"MX": [(10, MX)]}, MX: {"A": ["127.0.0.1"]}}
    if tlsa:
        zone[tlsa_name(port)] = {"TLSA": list(tlsa)}
    dns.set_zone(zone)
    dns.ad = True
    if not secure_mx:
        dns.insecure(DOMAIN)


def start(ternd, dns, port, extra="", bounce_port=None, **kw):
    conf = CONF + ("\n" + extra if extra else "")
    if bounce_port:
        conf += "\nroute sender.test smtp:[127.0.0.1]:%d tls-policy=none" % bounce_port
    return ternd(hostname="tern.test", default_route=None, relay_domains=None,
                 trusted="127.0.0.0/8", mx_port=port, extra_conf=conf, **kw)


def message(extra_hdr=b""):
    return (b"From: " + SENDER.encode() + b"\r\nTo: " + RCPT.encode() +
            b"\r\nSubject: dane\r\n" + extra_hdr + b"\r\n" + BODY_MARK + b"\r\n")


def send(t, msg=None, requiretls=False, listener="relay"):
    with smtplib.SMTP(*t.addr(listener), timeout=10) as c:
        c.ehlo("client.test")
        opts = []
        if requiretls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            c.starttls(context=ctx)
            c.ehlo("client.test")
            assert c.has_extn("requiretls"), c.esmtp_features
            opts = ["REQUIRETLS"]
        code, resp = c.mail(SENDER, opts)
        assert code == 250, resp
        code, resp = c.rcpt(RCPT)
        assert code == 250, resp
        code, resp = c.data(msg or message())
        assert code == 250, resp
        return QID_RE.search(resp.decode()).group(1).lower()


def result_line(t, qid, status, timeout=20):
    return t.wait_log(r"id=%s to=<%s> relay=\S+ dsn=(\S+) status=%s [^\n]*"
                      % (qid, re.escape(RCPT), status), timeout=timeout)


@pytest.fixture
def tls_sink(sink):
    return sink(tls=True)


@pytest.fixture
def chain_sink(certs, tmp_path):
    """A STARTTLS sink that sends its chain: the leaf and the test CA."""
    chain = tmp_path / "chain.pem"
    chain.write_text(open(certs.cert).read() + open(certs.ca_cert).read())
    s = Sink("127.0.0.1", free_port(), tls_cert=str(chain), tls_key=str(certs.key)).start()
    yield s
    s.stop()


@pytest.fixture
def bounce_sink(sink):
    return sink()


# ---------------------------------------------------------------- DANE

def test_dane_ee_match_is_verified(ternd, dns, tls_sink, certs):
    set_zone(dns, tls_sink.port, [(3, 1, 1, spki_sha256(certs.cert))])
    t = start(ternd, dns, tls_sink.port)
    qid = send(t)
    (m,) = tls_sink.wait_for(1)
    assert m.tls is True
    line = result_line(t, qid, "sent")
    assert " tls=dane-verified cipher=\"TLSv1." in line.group(0), line.group(0)
    t.wait_log(r"id=%s relay=\S+ dane-verified: TLSA 3 1 1 depth=0" % qid)
    assert (tlsa_name(tls_sink.port), "TLSA", "udp") in dns.queries


def test_dane_mismatch_defers_and_sends_nothing(ternd, dns, tls_sink, ca_file):
    # the sink's certificate is valid for mx.test under the CA store given
    # (SSL_CERT_FILE): no PKIX fallback when usable TLSA exist
    set_zone(dns, tls_sink.port, [(3, 1, 1, "00" * 32)])
    t = start(ternd, dns, tls_sink.port, env={"SSL_CERT_FILE": ca_file})
    qid = send(t)
    line = result_line(t, qid, "deferred")
    assert line.group(1) == "4.7.5", line.group(0)
    assert "DANE authentication failed" in line.group(0), line.group(0)
    assert tls_sink.messages == []
    assert "plaintext" not in t.log()            # no fallback for DANE


def test_dane_ta_with_the_sinks_ca(ternd, dns, chain_sink, certs):
    ca = hashlib.sha256(der_of(certs.ca_cert)).hexdigest()
    set_zone(dns, chain_sink.port, [(2, 0, 1, ca)])
    t = start(ternd, dns, chain_sink.port)
    qid = send(t)
    (m,) = chain_sink.wait_for(1)
    assert m.tls is True
    assert "tls=dane-verified" in result_line(t, qid, "sent").group(0)
    t.wait_log(r"id=%s relay=\S+ dane-verified: TLSA 2 0 1 depth=1" % qid)


def test_insecure_mx_is_opportunistic(ternd, dns, tls_sink):
    # a TLSA that would not match: never asked, the MX answer has no AD
    set_zone(dns, tls_sink.port, [(3, 1, 1, "00" * 32)], secure_mx=False)
    t = start(ternd, dns, tls_sink.port)
    qid = send(t)
    tls_sink.wait_for(1)
    assert " tls=may cipher=" in result_line(t, qid, "sent").group(0)
    assert not [q for q in dns.queries if q[1] == "TLSA"]


def test_secure_no_tlsa_is_opportunistic(ternd, dns, tls_sink):
    set_zone(dns, tls_sink.port)                   # secure NXDOMAIN for TLSA
    t = start(ternd, dns, tls_sink.port)
    qid = send(t)
    tls_sink.wait_for(1)
    assert " tls=may cipher=" in result_line(t, qid, "sent").group(0)
    assert (tlsa_name(tls_sink.port), "TLSA", "udp") in dns.queries


def test_tlsa_servfail_defers(ternd, dns, tls_sink):
    set_zone(dns, tls_sink.port, [(3, 1, 1, "00" * 32)])
    dns.servfail(tlsa_name(tls_sink.port), "TLSA")
    t = start(ternd, dns, tls_sink.port)
    qid = send(t)
    line = result_line(t, qid, "deferred")
    assert line.group(1) == "4.7.5", line.group(0)
    assert "TLSA lookup failed" in line.group(0), line.group(0)
    assert tls_sink.sessions == 0                   # not even connected


def test_unusable_tlsa_encrypts_without_authentication(ternd, dns, tls_sink, sink):
    # PKIX-EE only (RFC 7672 3.1.3): TLS required, not authenticated
    set_zone(dns, tls_sink.port, [(1, 1, 1, "00" * 32)])
    t = start(ternd, dns, tls_sink.port)
    qid = send(t)
    tls_sink.wait_for(1)
    assert " tls=encrypt cipher=" in result_line(t, qid, "sent").group(0)


def test_dane_requires_starttls(ternd, dns, sink, certs):
    plain = sink()
    set_zone(dns, plain.port, [(3, 1, 1, spki_sha256(certs.cert))])
    t = start(ternd, dns, plain.port)
    qid = send(t)
    line = result_line(t, qid, "deferred")
    assert line.group(1) == "4.7.5", line.group(0)
    assert "TLS required but not offered" in line.group(0)
    assert plain.messages == []


def test_warm_cache_asks_once(ternd, dns, tls_sink, certs):
    # two domains on the same MX: two connections (the connection cache is
    # per destination), one TLSA query (the resolver's cache)
    set_zone(dns, tls_sink.port, [(3, 1, 1, spki_sha256(certs.cert))])
    dns.add("dane2.example", "MX", (10, MX))
    t = start(ternd, dns, tls_sink.port, extra="delivery-threads 1")
    send(t)
    tls_sink.wait_for(1)
    with smtplib.SMTP(*t.addr(), timeout=10) as c:
        c.sendmail(SENDER, ["carol@dane2.example"], message())
    (m1, m2) = tls_sink.wait_for(2)
    assert m2.rcpt_tos == ["carol@dane2.example"]
    t.wait_log(r"to=<carol@dane2\.example> [^\n]*status=sent [^\n]*tls=dane-verified")
    assert tls_sink.sessions == 2
    asked = [q for q in dns.queries if q[1] == "TLSA"]
    assert len(asked) == 1, asked


# ---------------------------------------------------------------- REQUIRETLS

def start_rt(ternd, dns, certs, port, bounce_port=None):
    tls = "tls-cert %s\ntls-key %s" % (certs.cert, certs.key)
    return start(ternd, dns, port, extra=tls, bounce_port=bounce_port,
                 listeners=[("relay", "relay starttls")])


def test_requiretls_advertised_only_over_tls(ternd, dns, certs, smtp_raw):
    t = start_rt(ternd, dns, certs, free_port())
    r = smtp_raw(t.port())
    r.greeting()
    assert "REQUIRETLS" not in r.ehlo()
    r.cmd("MAIL FROM:<%s> REQUIRETLS" % SENDER, 530, "5.7.10")
    with smtplib.SMTP(*t.addr(), timeout=10) as c:
        c.ehlo("client.test")
        assert not c.has_extn("requiretls")
        ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
        c.starttls(context=ctx)
        c.ehlo("client.test")
        assert c.has_extn("requiretls")


def test_requiretls_to_dane_peer_with_requiretls(ternd, dns, tls_sink, certs):
    tls_sink.requiretls = True
    set_zone(dns, tls_sink.port, [(3, 1, 1, spki_sha256(certs.cert))])
    t = start_rt(ternd, dns, certs, tls_sink.port)
    qid = send(t, requiretls=True)
    (m,) = tls_sink.wait_for(1)
    assert m.requiretls is True, m.mail_options
    assert "tls=dane-verified" in result_line(t, qid, "sent").group(0)


def test_requiretls_shown_and_kept_in_the_queue(ternd, dns, certs):
    dead = free_port()                       # nothing listens: stays queued
    set_zone(dns, dead, [(3, 1, 1, spki_sha256(certs.cert))])
    t = start_rt(ternd, dns, certs, dead)
    qid = send(t, requiretls=True)
    out = t.ternctl("show", qid).stdout.decode()
    assert "requiretls: yes" in out, out
    t.restart()
    out = t.ternctl("show", qid).stdout.decode()
    assert "requiretls: yes" in out, out


def bounced_5730(t, tls_sink, bounce_sink, why):
    """Send with REQUIRETLS: the recipient bounces 5.7.30 for why, nothing
    reaches tls_sink, and the DSN (RFC 8689 5) holds the header, no body,
    and came without REQUIRETLS."""
    qid = send(t, requiretls=True)
    line = result_line(t, qid, "bounced")
    assert line.group(1) == "5.7.30", line.group(0)
    assert why in line.group(0), line.group(0)
    (b,) = bounce_sink.wait_for(1)
    assert b.mail_from in ("", "<>")
    assert b.requiretls is False
    assert b"5.7.30" in b.data, b.data
    assert b"REQUIRETLS" in b.data
    assert BODY_MARK not in b.data, b.data          # RFC 8689 5: no body
    assert b"text/rfc822-headers" in b.data
    assert tls_sink.messages == []


def test_requiretls_peer_without_requiretls_bounces(ternd, dns, tls_sink, bounce_sink, certs):
    set_zone(dns, tls_sink.port, [(3, 1, 1, spki_sha256(certs.cert))])
    t = start_rt(ternd, dns, certs, tls_sink.port, bounce_port=bounce_sink.port)
    bounced_5730(t, tls_sink, bounce_sink, "REQUIRETLS not offered")


def test_requiretls_peer_without_dane_bounces(ternd, dns, tls_sink, bounce_sink, certs):
    tls_sink.requiretls = True
    set_zone(dns, tls_sink.port, secure_mx=False)
    t = start_rt(ternd, dns, certs, tls_sink.port, bounce_port=bounce_sink.port)
    bounced_5730(t, tls_sink, bounce_sink, "not authenticated by DANE or MTA-STS")


def test_tls_required_no_goes_in_plaintext(ternd, dns, sink, certs):
    # usable TLSA, but the peer offers no STARTTLS: deferred without the
    # header (test_dane_requires_starttls), delivered with it
    plain = sink()
    set_zone(dns, plain.port, [(3, 1, 1, spki_sha256(certs.cert))])
    t = start(ternd, dns, plain.port)
    qid = send(t, msg=message(b"TLS-Required: No\r\n"))
    (m,) = plain.wait_for(1)
    assert m.tls is False
    assert b"TLS-Required: No" in m.data            # the field is kept
    assert " tls=none" in result_line(t, qid, "sent").group(0)
