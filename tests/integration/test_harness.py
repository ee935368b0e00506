"""Self-tests of the integration fixtures (no ternd needed): the DNS server, the
sink, the raw client, certificates, config generation."""

import smtplib
import socket
import ssl
import subprocess
import threading

import pytest

from conftest import RawSMTP, Ternd, TernBin, free_port, strip_received
from dnsserver import query
from dnslib import QTYPE, RCODE


def test_free_port_range_and_unique():
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(20000 <= p <= 60000 for p in ports)


def test_dns_records(dns):
    dns.set_zone({
        "Example.TEST.": {"MX": [(10, "mx1.example.test"), (20, "mx2.example.test")]},
        "mx1.example.test": {"A": ["127.0.0.2"], "AAAA": ["::1"]},
        "nullmx.test": {"MX": [(0, ".")]},
        "alias.test": {"CNAME": ["mx1.example.test"]},
    })
    srv = ("127.0.0.1", dns.port)
    r = query(srv, "example.test", "MX")
    assert r.header.rcode == RCODE.NOERROR
    assert sorted((rr.rdata.preference, str(rr.rdata.label)) for rr in r.rr) == \
        [(10, "mx1.example.test."), (20, "mx2.example.test.")]
    r = query(srv, "MX1.example.test", "A")
    assert [str(rr.rdata) for rr in r.rr] == ["127.0.0.2"]
    r = query(srv, "mx1.example.test", "AAAA", proto="tcp")
    assert [str(rr.rdata) for rr in r.rr] == ["::1"]
    r = query(srv, "nullmx.test", "MX")
    assert [(rr.rdata.preference, str(rr.rdata.label)) for rr in r.rr] == [(0, ".")]
    # NODATA: name exists, type does not
    r = query(srv, "example.test", "A")
    assert r.header.rcode == RCODE.NOERROR and r.rr == []
    # NXDOMAIN for anything undeclared
    r = query(srv, "nothere.test", "A")
    assert r.header.rcode == RCODE.NXDOMAIN and r.rr == []
    r = query(srv, "alias.test", "A")
    assert [QTYPE.get(rr.rtype) for rr in r.rr] == ["CNAME", "A"]
    assert ("example.test", "MX", "udp") in dns.queries
    assert ("mx1.example.test", "AAAA", "tcp") in dns.queries


def test_dns_faults(dns):
    dns.set_zone({"ok.test": {"A": ["127.0.0.3"]}, "bad.test": {"A": ["127.0.0.4"]}})
    srv = ("127.0.0.1", dns.port)
    dns.servfail("bad.test")
    assert query(srv, "bad.test", "A").header.rcode == RCODE.SERVFAIL
    dns.timeout("ok.test", "MX")
    with pytest.raises(socket.timeout):
        query(srv, "ok.test", "MX", timeout=0.5)
    assert [str(rr.rdata) for rr in query(srv, "ok.test", "A").rr] == ["127.0.0.3"]
    dns.clear_faults()
    assert query(srv, "bad.test", "A").header.rcode == RCODE.NOERROR


def test_sink_records_smtplib(sink):
    s = sink("127.0.0.2")
    body = b"Subject: hi\r\n\r\n.dot line\r\n8bit \xc3\xa9\r\nlast\r\n"
    with smtplib.SMTP("127.0.0.2", s.port, timeout=10) as c:
        c.ehlo("client.test")
        c.mail("a@example.org", ["BODY=8BITMIME"])
        c.rcpt("b@example.test")
        code, _ = c.data(body)
        assert code == 250
    m = s.wait_for(1)[0]
    assert m.mail_from == "a@example.org"
    assert m.rcpt_tos == ["b@example.test"]
    assert m.data == body
    assert "BODY=8BITMIME" in m.mail_options
    assert m.ehlo == "client.test"
    assert s.sessions == 1


def test_sink_per_recipient_replies(sink):
    s = sink()
    s.rcpt_reply["bad@x.test"] = "550 5.1.1 no such user"
    s.rcpt_reply["busy@x.test"] = "450 4.2.1 later"
    with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
        refused = c.sendmail("a@x.test", ["ok@x.test", "bad@x.test", "busy@x.test"],
                             b"Subject: x\r\n\r\nhi\r\n")
    assert refused == {"bad@x.test": (550, b"5.1.1 no such user"),
                       "busy@x.test": (450, b"4.2.1 later")}
    m = s.wait_for(1)[0]
    assert m.rcpt_tos == ["ok@x.test"]
    s.data_reply = "451 4.3.0 try later"
    with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
        with pytest.raises(smtplib.SMTPDataError) as ei:
            c.sendmail("a@x.test", ["ok@x.test"], b"\r\nx\r\n")
        assert ei.value.smtp_code == 451
    assert len(s.messages) == 1


def test_sink_hang_data_and_release(sink, smtp_raw):
    s = sink()
    s.hang = "data"
    c = smtp_raw(s.port)
    c.greeting()
    c.ehlo()
    c.cmd("MAIL FROM:<a@x.test>", 250)
    c.cmd("RCPT TO:<b@x.test>", 250)
    c.cmd("DATA", 354)
    c.send("Subject: x\r\n\r\nbody\r\n.\r\n")
    s.wait_hung("data")
    with pytest.raises(AssertionError, match="timeout"):
        c.reply(timeout=1.0)
    s.release()
    c.expect(250)
    assert len(s.wait_for(1)) == 1


def test_sink_hang_greeting(sink):
    s = sink()
    s.hang = "greeting"
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=5)
    sock.settimeout(1.0)
    with pytest.raises(socket.timeout):
        sock.recv(100)
    s.release()
    sock.settimeout(5)
    assert sock.recv(100).startswith(b"220 ")
    sock.close()


def test_sink_starttls(sink, certs):
    s = sink(tls=True)
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    with smtplib.SMTP("127.0.0.1", s.port, timeout=10) as c:
        c.ehlo("client.test")
        assert c.has_extn("starttls")
        c.starttls(context=ctx)
        c.ehlo("client.test")
        c.sendmail("a@x.test", ["b@x.test"], b"\r\nsecret\r\n")
    m = s.wait_for(1)[0]
    assert m.tls is True


def test_certs_verify(certs):
    r = subprocess.run(["openssl", "verify", "-CAfile", str(certs.ca_cert), str(certs.cert)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    text = subprocess.run(["openssl", "x509", "-noout", "-text", "-in", str(certs.cert)],
                          capture_output=True, text=True).stdout
    assert "DNS:mx.test" in text and "IP Address:127.0.0.1" in text


def test_raw_client_multiline_and_close(sink):
    # aiosmtpd as the peer: checks Reply parsing of multi-line EHLO and of enhanced codes
    s = sink()
    c = RawSMTP(s.port)
    try:
        c.greeting()
        kws = c.ehlo()
        assert "8BITMIME" in kws and "SIZE" in kws
        r = c.cmd("RCPT TO:<a@b.test>", 503)
        assert r.enh is None            # aiosmtpd: "503 Error: need MAIL command"
        s.mail_reply = "550 5.7.1 not you"
        r = c.cmd("MAIL FROM:<a@b.test>", 550, "5.7.1")
        assert r.text == "5.7.1 not you"
        c.cmd("QUIT", 221)
        assert c.wait_closed(5)
    finally:
        c.close()


def test_strip_received():
    raw = b"Received: from x\r\n\tby y; date\r\nSubject: s\r\n\r\nbody\r\n"
    assert strip_received(raw) == b"Subject: s\r\n\r\nbody\r\n"
    with pytest.raises(AssertionError):
        strip_received(b"Subject: s\r\n\r\n")


def test_config_generation(dns, tmp_path):
    bins = TernBin(tmp_path)   # no binaries needed: start=False
    t = Ternd(bins, dns, tmp_path, listeners=["relay", ("subtls", "submission tls")],
              trusted="127.0.0.0/8 ::1", extra_conf="max-recipients 5\nidle-timeout 3s\n")
    try:
        lines = t.conf_path.read_text().splitlines()
        assert "listen 127.0.0.1:%d relay plain" % t.port("relay") in lines
        assert "listen 127.0.0.1:%d submission tls" % t.port("subtls") in lines
        assert "resolver %s" % dns.addr in lines
        assert "trusted-networks 127.0.0.0/8 ::1" in lines
        assert "relay-domains example.com" in lines
        assert lines.index("max-recipients 5") < len(lines) - 1
        assert lines[-1].startswith("route * smtp:[127.0.0.1]:")
        # the dead route refuses connections
        dead = int(lines[-1].rsplit(":", 1)[1])
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", dead), timeout=2)
        assert len(str(t.queue_dir / "control.sock")) < 100
    finally:
        assert t.teardown() == []
    assert not t.queue_dir.exists()
