"""MTA-STS (RFC 8461) on outbound delivery (doc/tern.conf.5, mta-sts;
queue/mta/mta_sts.c, the policy hooks in queue/mta/deliver_session.c).

Real parts on loopback: the test DNS server serves sts.example's MX
(mx.test = 127.0.0.1), the TXT record _mta-sts.sts.example and the address
of mta-sts.sts.example; a Python https server (http.server + ssl, in a
thread) with a certificate for mta-sts.sts.example from the test CA serves
/.well-known/mta-sts.txt; the aiosmtpd sink is the MX, with STARTTLS and
the `certs` leaf (valid for mx.test) unless a case says otherwise. ternd
trusts the test CA for the policy fetch (mta-sts-ca-file) and for the MX
certificate (SSL_CERT_FILE, as in test_tls_verify.py), and fetches the
policy from the server's port (mta-sts-port).

Each case checks the delivery line (sched.c: status, dsn, tls=MODE), what
the sink got, and the TLS-RPT record (tlsrpt.c logs each at debug level,
hence -v)."""

import http.server
import re
import smtplib
import ssl
import threading
import time

import pytest

import dnsserver
from conftest import QID_RE, free_port
from sink import Sink

DOMAIN = "sts.example"
RCPT = "bob@" + DOMAIN
POLICY_HOST = "mta-sts." + DOMAIN
CONF = "retry 1h\ndelay-warning 0\nconnect-timeout 5s\ncommand-timeout 5s"


def tls_mode(line):
    """The delivery line's tls=MODE word (tls=MODE cipher="..." or tls=none)."""
    m = re.search(r" tls=([a-z-]+)", line)
    return m.group(1) if m else None


def policy(mode="enforce", mx=("mx.test",), max_age=86400):
    lines = ["version: STSv1", "mode: " + mode]
    lines += ["mx: " + m for m in mx]
    lines.append("max_age: %d" % max_age)
    return "\r\n".join(lines) + "\r\n"


class PolicyServer:
    """HTTPS on 127.0.0.1:port. Set .status, .body (bytes), .ctype,
    .location and .delay (seconds before answering) at any time; .requests
    counts the GETs of the policy path."""

    def __init__(self, cert, key):
        self.status, self.ctype, self.location = 200, "text/plain", None
        self.delay = 0
        self.body = policy().encode()
        self.requests = 0
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path == "/.well-known/mta-sts.txt":
                    srv.requests += 1
                if srv.delay:
                    time.sleep(srv.delay)
                body = srv.body
                self.send_response(srv.status)
                self.send_header("Content-Type", srv.ctype)
                self.send_header("Content-Length", str(len(body)))
                if srv.location:
                    self.send_header("Location", srv.location)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        if self.httpd is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join(timeout=5)
            self.httpd = None


@pytest.fixture
def https(certs):
    cert, key = certs.make_leaf(POLICY_HOST, tag="-sts")
    s = PolicyServer(cert, key)
    yield s
    s.stop()


@pytest.fixture
def other_sink(certs):
    """A STARTTLS sink whose certificate (same CA) names other.example only."""
    cert, key = certs.make_leaf("other.example", tag="-sts")
    s = Sink("127.0.0.1", free_port(), tls_cert=str(cert), tls_key=str(key)).start()
    yield s
    s.stop()


def zone(txt="v=STSv1; id=20261206a;"):
    z = {DOMAIN: {"MX": [(10, "mx.test")]},
         "mx.test": {"A": ["127.0.0.1"]},
         POLICY_HOST: {"A": ["127.0.0.1"]}}
    if txt is not None:
        z["_mta-sts." + DOMAIN] = {"TXT": [txt, "v=spf1 -all"]}
    return z


def start(ternd, dns, ca_file, https, sink_port, txt="v=STSv1; id=20261206a;", extra=""):
    dns.set_zone(zone(txt))
    return ternd(hostname="tern.test", default_route=None, relay_domains=None,
                 trusted="127.0.0.0/8", mx_port=sink_port, verbose=True,
                 extra_conf="\n".join([CONF, "mta-sts-port %d" % https.port,
                                       "mta-sts-ca-file " + ca_file, extra]),
                 env={"SSL_CERT_FILE": ca_file})


def send(t, n=1):
    qids = []
    with smtplib.SMTP(*t.addr(), timeout=10) as c:
        for i in range(n):
            c.ehlo("client.test")
            assert c.mail("alice@sender.test")[0] == 250
            code, resp = c.rcpt(RCPT)
            assert code == 250, resp
            code, resp = c.data(b"From: alice@sender.test\r\nSubject: sts %d\r\n\r\nhi\r\n" % i)
            assert code == 250, resp
            qids.append(QID_RE.search(resp.decode()).group(1).lower())
    return qids


def attempt_line(t, qid, status, timeout=20):
    """The per-attempt log line (sched.c sched_log_rcpt)."""
    return t.wait_log(r"id=%s to=<%s> relay=(\S+) dsn=(\S+) status=%s [^\n]*"
                      % (qid, re.escape(RCPT), status), timeout=timeout)


def tlsrpt_line(t, result, timeout=10):
    return t.wait_log(r"tlsrpt: domain=%s policy=sts mx=\S+ ip=\S+ result=%s[^\n]*"
                      % (re.escape(DOMAIN), re.escape(result)), timeout=timeout)


def test_enforce_matching_mx_delivers_verified_one_fetch(ternd, dns, sink, ca_file, https):
    # a slow policy server: the three deliveries start while the one fetch
    # runs, and wait for it
    https.delay = 1.0
    s = sink(tls=True)
    t = start(ternd, dns, ca_file, https, s.port)
    qids = send(t, 3)
    msgs = s.wait_for(3)
    assert all(m.tls for m in msgs), "delivered without TLS"
    for q in qids:
        line = attempt_line(t, q, "sent")
        assert tls_mode(line.group(0)) == "sts-verified", line.group(0)
    # one fetch for the domain, not one per message
    assert https.requests == 1, https.requests
    assert len(re.findall(r"mta-sts: domain=sts\.example id=20261206a "
                          r"mode=enforce max_age=86400 mx=1 policy fetched", t.log())) == 1
    line = tlsrpt_line(t, "success")
    assert "mx=mx.test ip=127.0.0.1" in line.group(0), line.group(0)


def test_enforce_mx_not_matching_defers(ternd, dns, sink, ca_file, https):
    https.body = policy(mx=("mail.sts.example", "*.other.example")).encode()
    s = sink(tls=True)
    t = start(ternd, dns, ca_file, https, s.port)
    (qid,) = send(t)
    line = attempt_line(t, qid, "deferred")
    assert line.group(2) == "4.7.5", line.group(0)
    assert "no MX host matches its mx patterns" in line.group(0), line.group(0)
    tlsrpt_line(t, "validation-failure")
    assert s.sessions == 0 and s.messages == []
    (q,) = t.queue()
    assert q["recipients"][0]["state"] == "pending", q


@pytest.mark.parametrize("peer", ["no-starttls", "wrong-name"])
def test_enforce_tls_failure_defers(ternd, dns, sink, other_sink, ca_file, https, peer):
    s = sink(tls=False) if peer == "no-starttls" else other_sink
    t = start(ternd, dns, ca_file, https, s.port)
    (qid,) = send(t)
    line = attempt_line(t, qid, "deferred")
    assert line.group(2) == "4.7.5", line.group(0)
    tlsrpt_line(t, "starttls-not-supported" if peer == "no-starttls"
                else "certificate-host-mismatch")
    assert s.messages == []
    assert "retrying in plaintext" not in t.log()


def test_testing_mode_delivers_and_logs_the_failure(ternd, dns, ca_file, https, other_sink):
    https.body = policy(mode="testing").encode()
    s = other_sink
    t = start(ternd, dns, ca_file, https, s.port)
    (qid,) = send(t)
    (m,) = s.wait_for(1)
    assert m.rcpt_tos == [RCPT]
    line = attempt_line(t, qid, "sent")
    assert tls_mode(line.group(0)) == "sts-testing", line.group(0)
    t.wait_log(r"id=%s mta-sts testing: domain=sts\.example mx=mx\.test "
               r"result=certificate-host-mismatch: .*\(testing: going on\)" % qid)
    tlsrpt_line(t, "certificate-host-mismatch")


def test_policy_cached_across_restart(ternd, dns, sink, ca_file, https):
    s = sink(tls=True)
    t = start(ternd, dns, ca_file, https, s.port)
    (q1,) = send(t)
    assert tls_mode(attempt_line(t, q1, "sent").group(0)) == "sts-verified"
    assert https.requests == 1
    https.stop()                    # the policy server is gone
    t.restart()
    t.wait_log(r"mta-sts: 1 cached policies loaded from \S+mta-sts\.cache")
    (q2,) = send(t)
    line = attempt_line(t, q2, "sent")
    # still enforced from the cache (without it: tls=may)
    assert tls_mode(line.group(0)) == "sts-verified", line.group(0)
    assert "policy fetch failed" not in t.log()
    assert len(s.wait_for(2)) == 2


def test_broken_cache_file_is_ignored(ternd, dns, sink, ca_file, https):
    s = sink(tls=True)
    t = start(ternd, dns, ca_file, https, s.port)
    t.stop()
    cache = t.queue_dir / "mta-sts.cache"
    cache.write_bytes(b"tern-mta-sts 1\nsts.example 20261206a 0 99999999999 999999\nxx")
    t.start()
    t.wait_log(r"mta-sts: \S+mta-sts\.cache: broken entry at byte 15: the rest is ignored")
    (qid,) = send(t)
    assert tls_mode(attempt_line(t, qid, "sent").group(0)) == "sts-verified"
    assert https.requests == 1
    assert cache.read_bytes().startswith(b"tern-mta-sts 1\nsts.example 20261206a ")


def test_cached_policy_survives_a_failed_refresh(ternd, dns, sink, ca_file, https,
                                                 monkeypatch):
    # a new id makes ternd fetch again; the fetch fails: the cached
    # (unexpired) enforce policy stays in force (RFC 8461 5.1)
    monkeypatch.setattr(dnsserver, "TTL", 0)    # ternd's resolver caches nothing
    https.body = policy(mx=("mail.sts.example",)).encode()
    s = sink(tls=True)
    t = start(ternd, dns, ca_file, https, s.port)
    (q1,) = send(t)
    assert attempt_line(t, q1, "deferred").group(2) == "4.7.5"
    dns.set_zone(zone("v=STSv1; id=20261206b;"))
    https.status, https.body = 500, b"oops"
    (q2,) = send(t)
    line = attempt_line(t, q2, "deferred")
    assert line.group(2) == "4.7.5", line.group(0)
    assert "no MX host matches" in line.group(0), line.group(0)
    t.wait_log(r"mta-sts: domain=sts\.example id=20261206b "
               r"result=sts-policy-fetch-error policy fetch failed: HTTP status 500")
    assert https.requests == 2
    assert s.messages == []


@pytest.mark.parametrize("bad", ["redirect", "oversized", "media-type", "invalid"])
def test_bad_policy_fetch_is_no_policy(ternd, dns, sink, ca_file, https, bad):
    # each would defer if its policy were used (mx does not match)
    body = policy(mx=("mail.sts.example",))
    if bad == "redirect":
        https.status, https.location = 301, "https://%s:%d/p.txt" % (POLICY_HOST, https.port)
    elif bad == "oversized":
        body += "x-pad: %s\r\n" % ("a" * 70000)
    elif bad == "media-type":
        https.ctype = "text/html"
    else:
        body = body.replace("version: STSv1", "version: STSv2")
    https.body = body.encode()
    s = sink(tls=True)
    t = start(ternd, dns, ca_file, https, s.port)
    (qid,) = send(t)
    (m,) = s.wait_for(1)
    line = attempt_line(t, qid, "sent")
    assert tls_mode(line.group(0)) == "may", line.group(0)
    want = "sts-policy-invalid" if bad == "invalid" else "sts-policy-fetch-error"
    t.wait_log(r"mta-sts: domain=sts\.example id=20261206a result=%s policy "
               r"fetch failed: " % want)
    tlsrpt_line(t, want)


def test_no_txt_record_no_policy_no_fetch(ternd, dns, sink, ca_file, https):
    s = sink(tls=True)
    t = start(ternd, dns, ca_file, https, s.port, txt=None)
    (qid,) = send(t)
    s.wait_for(1)
    assert tls_mode(attempt_line(t, qid, "sent").group(0)) == "may"
    assert https.requests == 0
    assert ("_mta-sts." + DOMAIN, "TXT", "udp") in dns.queries


def test_mta_sts_off_never_looks(ternd, dns, sink, ca_file, https):
    https.body = policy(mx=("mail.sts.example",)).encode()
    s = sink(tls=True)
    t = start(ternd, dns, ca_file, https, s.port, extra="mta-sts off")
    (qid,) = send(t)
    s.wait_for(1)
    assert tls_mode(attempt_line(t, qid, "sent").group(0)) == "may"
    assert https.requests == 0
    assert not any(q[0].startswith("_mta-sts.") for q in dns.queries)
