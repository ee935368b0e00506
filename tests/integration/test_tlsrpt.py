"""SMTP TLS Reporting (RFC 8460; `tlsrpt` in doc/tern.conf.5): ternd counts
each outbound session's TLS outcome per recipient domain and report period
and, when the period closes, mails the gzip-compressed JSON report to the
rua=mailto: addresses of the domain's "_smtp._tls" TXT record, through its
own queue (queue/mta/tlsrpt_send.c).

The zone: good.example and none.example have their MX at 127.0.0.2, a
STARTTLS sink (certificate for *.test); bad.example has its MX at 127.0.0.3,
a sink without STARTTLS, and a route with tls-policy verify, so its session
fails with starttls-not-supported and the mail is deferred. good.example and
bad.example publish TLSRPT records pointing at reports@reports.example,
whose MX (127.0.0.4, a plain sink) collects the reports; reports.example
publishes one too, so a report about the delivery of reports would show up
there. none.example publishes none and gets no report. All sinks share one
port (mx-port) on their own loopback addresses.

The certificate failures under tls-policy verify (a certificate of the
trusted test CA for another name, a self-signed one, an expired one) go to
sinks on 127.0.0.5, .6 and .7; the last test checks that the counts of a
day-long period are saved at stop and read back at start
(<queue>/tlsrpt.state).
"""

import email
import email.policy
import gzip
import ipaddress
import json
import re
import smtplib
import socket
import subprocess
import time
from datetime import datetime, timedelta, timezone

from conftest import free_port
from sink import Sink

ORG = "tern-test.example"
FROM = "tlsrpt@tern.test"
RUA = "reports@reports.example"
INTERVAL = 2


def zone():
    rec = "v=TLSRPTv1; rua=mailto:" + RUA
    return {
        "good.example": {"MX": [(10, "mx-good.test")]},
        "none.example": {"MX": [(10, "mx-good.test")]},
        "bad.example": {"MX": [(10, "mx-bad.test")]},
        "reports.example": {"MX": [(10, "mx-rpt.test")]},
        "mx-good.test": {"A": ["127.0.0.2"]},
        "mx-bad.test": {"A": ["127.0.0.3"]},
        "mx-rpt.test": {"A": ["127.0.0.4"]},
        "_smtp._tls.good.example": {"TXT": [rec]},
        # an https: URI is ignored (and logged); the mailto: one is used
        "_smtp._tls.bad.example": {"TXT": [
            "v=TLSRPTv1;rua=mailto:%s,https://reports.example/tlsrpt" % RUA]},
        "_smtp._tls.reports.example": {"TXT": [rec]},
        # not a TLSRPT record: discarded (RFC 8460 3)
        "_smtp._tls.none.example": {"TXT": ["v=spf1 -all"]},
    }


def conf(interval=INTERVAL):
    return "\n".join([
        "tlsrpt on",
        "tlsrpt-interval %d" % interval,
        "tlsrpt-org " + ORG,
        "tlsrpt-from " + FROM,
        "route bad.example mx tls-policy=verify",
        "retry 1h",
        "delay-warning 0",
        "connect-timeout 5s",
        "command-timeout 5s",
    ])


def shared_port(hosts=("127.0.0.2", "127.0.0.3", "127.0.0.4")):
    """A port free on every one of hosts (the sinks)."""
    for _ in range(50):
        port = free_port(hosts[0])
        try:
            for host in hosts[1:]:
                with socket.socket() as s:
                    s.bind((host, port))
        except OSError:
            continue
        return port
    raise AssertionError("no port free on %s" % (hosts,))


def start_all(ternd, dns, sink, interval=INTERVAL):
    port = shared_port()
    good = sink(host="127.0.0.2", port=port, tls=True)
    bad = sink(host="127.0.0.3", port=port)
    rpt = sink(host="127.0.0.4", port=port)
    dns.set_zone(zone())
    t = ternd(hostname="tern.test", default_route=None, relay_domains=None,
              trusted="127.0.0.0/8", mx_port=port, extra_conf=conf(interval))
    return t, good, bad, rpt


def send(t, rcpts):
    with smtplib.SMTP(*t.addr(), timeout=10) as c:
        c.ehlo("client.test")
        refused = c.sendmail("alice@sender.test", rcpts,
                             b"From: alice@sender.test\r\nSubject: hi\r\n\r\nhi\r\n")
        assert refused == {}


def rfc3339(s):
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", s), s
    return int(datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ")
               .replace(tzinfo=timezone.utc).timestamp())


def decode_report(m):
    """Check the report mail's structure; return (header fields, JSON)."""
    assert m.mail_from == "<>" or m.mail_from == "", m.mail_from
    assert m.rcpt_tos == [RUA]
    msg = email.message_from_bytes(m.data, policy=email.policy.compat32)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "tlsrpt"
    assert msg["From"] == "<%s>" % FROM
    assert msg["To"] == "<%s>" % RUA
    assert msg["Date"] and msg["Message-ID"]
    domain = msg["TLS-Report-Domain"]
    assert msg["TLS-Report-Submission"] == ORG
    subj = re.fullmatch(r"Report Domain: (\S+) Submitter: (\S+) "
                        r"Report-ID: <([^>]+)>", msg["Subject"])
    assert subj, msg["Subject"]
    assert subj.group(1) == domain and subj.group(2) == ORG
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "application/tlsrpt+gzip"]
    att = parts[1]
    assert att["Content-Transfer-Encoding"] == "base64"
    fn = re.fullmatch(r"(\S+)!(\S+)!(\d+)!(\d+)\.json\.gz", att.get_filename())
    assert fn, att.get_filename()
    assert fn.group(1) == ORG and fn.group(2) == domain
    report = json.loads(gzip.decompress(att.get_payload(decode=True)))
    assert set(report) == {"organization-name", "date-range", "contact-info",
                           "report-id", "policies"}
    assert report["organization-name"] == ORG
    assert report["contact-info"] == FROM
    assert report["report-id"] == subj.group(3)
    dr = report["date-range"]
    assert set(dr) == {"start-datetime", "end-datetime"}
    start, end = rfc3339(dr["start-datetime"]), rfc3339(dr["end-datetime"])
    assert (start, end) == (int(fn.group(3)), int(fn.group(4)))
    assert start % INTERVAL == 0 and end == start + INTERVAL - 1
    return domain, report


def one_policy(report, domain, mx):
    (p,) = report["policies"]
    assert set(p) == {"policy", "summary", "failure-details"}
    assert p["policy"] == {"policy-type": "no-policy-found", "policy-string": [],
                           "policy-domain": domain, "mx-host": [mx]}
    assert set(p["summary"]) == {"total-successful-session-count",
                                 "total-failure-session-count"}
    return p


def test_tlsrpt_reports_success_and_failure(ternd, dns, sink):
    t, good, bad, rpt = start_all(ternd, dns, sink)
    send(t, ["bob@good.example", "carol@bad.example", "dave@none.example"])
    (m,) = [x for x in good.wait_for(2) if x.rcpt_tos == ["bob@good.example"]]
    assert m.tls is True
    t.wait_log(r"to=<carol@bad\.example> .*status=deferred")

    reports = dict(decode_report(x) for x in rpt.wait_for(2, timeout=20))
    assert set(reports) == {"good.example", "bad.example"}

    p = one_policy(reports["good.example"], "good.example", "mx-good.test")
    assert p["summary"] == {"total-successful-session-count": 1,
                            "total-failure-session-count": 0}
    assert p["failure-details"] == []

    p = one_policy(reports["bad.example"], "bad.example", "mx-bad.test")
    assert p["summary"] == {"total-successful-session-count": 0,
                            "total-failure-session-count": 1}
    (d,) = p["failure-details"]
    sip = d.pop("sending-mta-ip")
    assert ipaddress.ip_address(sip).is_loopback, sip
    assert d == {"result-type": "starttls-not-supported",
                 "receiving-mx-hostname": "mx-bad.test",
                 "receiving-ip": "127.0.0.3", "failed-session-count": 1}

    t.wait_log(r"tlsrpt: domain=none\.example no report: no TLSRPT record")
    t.wait_log(r"tlsrpt: domain=bad\.example 1 https: report URI\(s\) ignored")
    t.wait_log(r"id=\w+ tlsrpt report queued domain=good\.example "
               r"report_id=\S+ policies=1")

    # the reports' own deliveries (to reports.example, which publishes a
    # TLSRPT record and offers no STARTTLS) are not recorded: three more
    # periods bring no report about them, nor a second one about anything
    t.wait_log(r"to=<%s> .*status=sent" % re.escape(RUA))
    deadline = time.monotonic() + 3 * INTERVAL + 1
    while time.monotonic() < deadline:
        assert len(rpt.messages) == 2, rpt.messages
        time.sleep(0.2)
    assert "domain=reports.example" not in t.log()


def expired_leaf(certs, tmp_path, name):
    """A leaf of the test CA for name whose validity ended yesterday."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_key = serialization.load_pem_private_key(certs.ca_key.read_bytes(), None)
    ca = x509.load_pem_x509_certificate(certs.ca_cert.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=10))
            .not_valid_after(now - timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), False)
            .sign(ca_key, hashes.SHA256()))
    cpath, kpath = tmp_path / "expired.pem", tmp_path / "expired.key"
    cpath.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    kpath.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                        serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()))
    return cpath, kpath


def test_tlsrpt_certificate_failures_under_verify(ternd, dns, sink, certs,
                                                  ca_file, tmp_path):  # noqa: F811
    """tls-policy verify: a certificate of the trusted CA for another name
    (certificate-host-mismatch), a self-signed one (not-trusted) and an
    expired one of the trusted CA (certificate-expired)."""
    hosts = ("127.0.0.4", "127.0.0.5", "127.0.0.6", "127.0.0.7")
    port = shared_port(hosts)
    rpt = sink(host="127.0.0.4", port=port)
    cert, key = certs.make_leaf("other.example", tag="-tlsrpt")
    selfc, selfk = tmp_path / "self.pem", tmp_path / "self.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(selfk),
                    "-out", str(selfc), "-days", "30", "-subj", "/CN=mx-unt.test",
                    "-addext", "subjectAltName=DNS:mx-unt.test"],
                   check=True, capture_output=True)
    sinks = [Sink("127.0.0.5", port, tls_cert=str(cert), tls_key=str(key)).start(),
             Sink("127.0.0.6", port, tls_cert=str(selfc), tls_key=str(selfk)).start()]
    expc, expk = expired_leaf(certs, tmp_path, "mx-exp.test")
    sinks.append(Sink("127.0.0.7", port, tls_cert=str(expc), tls_key=str(expk)).start())
    try:
        rec = "v=TLSRPTv1; rua=mailto:" + RUA
        dns.set_zone({
            "mismatch.example": {"MX": [(10, "mx-mis.test")]},
            "untrusted.example": {"MX": [(10, "mx-unt.test")]},
            "expired.example": {"MX": [(10, "mx-exp.test")]},
            "mx-exp.test": {"A": ["127.0.0.7"]},
            "_smtp._tls.expired.example": {"TXT": [rec]},
            "reports.example": {"MX": [(10, "mx-rpt.test")]},
            "mx-mis.test": {"A": ["127.0.0.5"]},
            "mx-unt.test": {"A": ["127.0.0.6"]},
            "mx-rpt.test": {"A": ["127.0.0.4"]},
            "_smtp._tls.mismatch.example": {"TXT": [rec]},
            "_smtp._tls.untrusted.example": {"TXT": [rec]},
        })
        t = ternd(hostname="tern.test", default_route=None, relay_domains=None,
                  trusted="127.0.0.0/8", mx_port=port,
                  extra_conf=conf() + "\nroute mismatch.example mx tls-policy=verify"
                  "\nroute untrusted.example mx tls-policy=verify"
                  "\nroute expired.example mx tls-policy=verify",
                  env={"SSL_CERT_FILE": ca_file})
        send(t, ["a@mismatch.example", "b@untrusted.example", "c@expired.example"])
        reports = dict(decode_report(x) for x in rpt.wait_for(3, timeout=20))
        assert set(reports) == {"mismatch.example", "untrusted.example",
                                "expired.example"}
        for dom, mx, ip, why in (
                ("mismatch.example", "mx-mis.test", "127.0.0.5",
                 "certificate-host-mismatch"),
                ("untrusted.example", "mx-unt.test", "127.0.0.6",
                 "certificate-not-trusted"),
                ("expired.example", "mx-exp.test", "127.0.0.7",
                 "certificate-expired")):
            p = one_policy(reports[dom], dom, mx)
            assert p["summary"] == {"total-successful-session-count": 0,
                                    "total-failure-session-count": 1}
            (d,) = p["failure-details"]
            d.pop("sending-mta-ip")
            assert d == {"result-type": why, "receiving-mx-hostname": mx,
                         "receiving-ip": ip, "failed-session-count": 1}
        assert all(s.messages == [] for s in sinks)
    finally:
        for s in sinks:
            s.stop()


def test_tlsrpt_counts_survive_a_restart(ternd, dns, sink):
    """A day-long period: the counts are saved at stop and read back."""
    t, good, bad, rpt = start_all(ternd, dns, sink, interval=86400)
    send(t, ["bob@good.example"])
    good.wait_for(1)
    t.wait_log(r"to=<bob@good\.example> .*status=sent")
    t.stop()
    state = json.loads(open("%s/tlsrpt.state" % t.queue_dir).read())
    (e,) = state["entries"]
    assert (e["domain"], e["policy"], e["ok"], e["failed"]) == \
        ("good.example", "no-policy-found", 1, 0)
    assert e["end"] - e["start"] == 86400 and e["start"] % 86400 == 0
    t.start()
    send(t, ["eve@good.example"])
    t.wait_log(r"to=<eve@good\.example> .*status=sent")
    t.stop()
    state = json.loads(open("%s/tlsrpt.state" % t.queue_dir).read())
    (e,) = state["entries"]
    assert (e["ok"], e["failed"]) == (2, 0)
    assert rpt.messages == []
