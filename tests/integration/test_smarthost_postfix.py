"""A real smarthost: ternd relays through a private Postfix whose submission
needs STARTTLS and SASL AUTH, with Dovecot's auth service behind it (Postfix's
`smtpd_sasl_type = dovecot`, a private Dovecot as in test_lmtp.py). The route
is `smtp:[mx.test]:PORT tls-policy=verify` with a route-auth line, as in
test_smarthost_auth.py, which covers the same client against aiosmtpd.

What must hold: the right credentials deliver through Postfix to the sink
(Postfix logs the SASL login tern used); a wrong password is refused by
Postfix (535) and ternd defers the mail with 4.7.8, nothing reaches the sink;
Postfix relays nothing for an unauthenticated client."""

import os
import shutil
import smtplib

import pytest

from conftest import require_tool
from dovecot import PASSWORD, Dovecot
from test_real_clients import postfix  # noqa: F401 (fixture)
from test_smarthost_auth import RCPT, attempt_line, send, start, write_auth

USER = "relayuser"


@pytest.fixture
def dovecot():
    require_tool("/usr/sbin/dovecot")
    d = Dovecot([USER]).start()
    yield d
    d.cleanup()


def postfix_sasl(postfix, certs, dovecot, sink_port):
    """A private Postfix: STARTTLS with the test CA's mx.test certificate,
    AUTH through Dovecot, relay only for authenticated clients, on to the
    sink."""
    d = dovecot.dir
    cert, key = os.path.join(d, "pf-cert.pem"), os.path.join(d, "pf-key.pem")
    shutil.copyfile(str(certs.cert), cert)
    shutil.copyfile(str(certs.key), key)
    os.chmod(key, 0o600)
    extra = "\n".join([
        "smtpd_tls_security_level = may",
        "smtpd_tls_cert_file = %s" % cert,
        "smtpd_tls_key_file = %s" % key,
        "smtpd_tls_auth_only = yes",
        "smtpd_sasl_auth_enable = yes",
        "smtpd_sasl_type = dovecot",
        "smtpd_sasl_path = %s" % dovecot.auth_socket,
        "smtpd_sasl_security_options = noanonymous",
        "smtpd_relay_restrictions = permit_sasl_authenticated, reject",
        "mynetworks = 127.0.0.2/32",
    ]) + "\n"
    return postfix(sink_port, extra)


def test_ternd_relays_through_postfix_with_sasl(ternd, dns, ca_file, certs, postfix,
                                                dovecot, sink, tmp_path):
    """One Postfix instance for the three steps (starting a second one in the
    same run is slow on a loaded machine): no relay without AUTH, a wrong
    password deferred 4.7.8, then the right one (after a reload) delivers."""
    s = sink()
    pf = postfix_sasl(postfix, certs, dovecot, s.port)
    # Postfix refuses to relay for a client that did not authenticate
    with smtplib.SMTP("127.0.0.1", pf.port, timeout=10) as c:
        c.ehlo("client.test")
        assert c.mail("alice@sender.test")[0] == 250
        code, _ = c.rcpt(RCPT)
        assert code == 554, code
    f = write_auth(tmp_path / "route-auth", "[mx.test]:%d %s %s\n" % (pf.port, USER, "wrong"))
    t = start(ternd, dns, ca_file, pf.port, f)
    p = os.path.dirname(t.conf_path)   # ternd's user re-reads tern.conf at reload
    while p not in ("/", "/tmp"):
        os.chmod(p, os.stat(p).st_mode | 0o001)
        p = os.path.dirname(p)
    qid = send(t, "through postfix")
    line = attempt_line(t, qid, "deferred")
    assert line.group(2) == "4.7.8", line.group(0)
    pf.wait_log(r"SASL PLAIN authentication failed")
    assert s.messages == []
    # the right password: reload, retry, delivered through Postfix
    write_auth(f, "[mx.test]:%d %s %s\n" % (pf.port, USER, PASSWORD))
    r = t.ternctl("reload")
    assert r.returncode == 0, r
    assert t.ternctl("retry", qid).returncode == 0
    attempt_line(t, qid, "sent", timeout=30)
    (m,) = s.wait_for(1, timeout=30)
    assert b"Subject: through postfix" in m.data
    pf.wait_log(r"sasl_method=PLAIN, sasl_username=%s" % USER)
