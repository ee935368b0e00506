"""DKIM signing (RFC 6376, RFC 8463) through the real ternd, checked by an
independent verifier: Debian's python3-dkim (dkimpy), given the TXT record that
`ternctl dkim keygen` printed. Mail is submitted with real clients (smtplib,
the raw line client for BDAT), delivered by ternd to the aiosmtpd sink, and
what the sink received is verified; then altered, and verified again.
"""
import os
import re
import smtplib
import ssl
import subprocess

import pytest

from test_auth import PASSWORD, USER, start

dkim = pytest.importorskip("dkim")

DOMAIN = "example.com"


def keygen(t, tmp_path, selector, ktype="rsa", bits=None, domain=DOMAIN):
    """ternctl dkim keygen: (key path, TXT record as DNS would return it)."""
    out = tmp_path / ("%s.%s.key" % (domain, selector))
    args = ["dkim", "keygen", domain, selector, "--type", ktype, "--out", str(out)]
    if bits:
        args += ["--bits", str(bits)]
    r = t.ternctl(*args)
    assert r.returncode == 0, r.stderr
    line = r.stdout.decode().strip()
    m = re.fullmatch(r'(\S+)\. IN TXT ((?:"[^"]*" ?)+)', line)
    assert m and m.group(1) == "%s._domainkey.%s" % (selector, domain), line
    parts = re.findall(r'"([^"]*)"', m.group(2))
    assert all(len(p) <= 255 for p in parts), parts
    assert (out.stat().st_mode & 0o777) == 0o600
    return out, "".join(parts).encode()


class Keys:
    """Records by DNS name, for dkimpy's dnsfunc."""

    def __init__(self):
        self.txt = {}

    def add(self, selector, txt, domain=DOMAIN):
        self.txt[("%s._domainkey.%s." % (selector, domain)).encode()] = txt

    def dnsfunc(self, name, timeout=5):
        return self.txt.get(name if name.endswith(b".") else name + b".")


def signer(ternd, certs, sink, tmp_path, kinds=(("rsa1", "rsa"),), extra=""):
    """A ternd with a key per (selector, type) for example.com, delivering
    everything to a sink; first started without keys to run ternctl."""
    s = sink()
    keys = Keys()
    t = start(ternd, certs, default_route="smtp:[127.0.0.1]:%d" % s.port)
    lines = []
    for sel, ktype in kinds:
        path, txt = keygen(t, tmp_path, sel, ktype)
        keys.add(sel, txt)
        lines.append("dkim-sign %s %s %s" % (DOMAIN, sel, path))
    t.stop()
    with open(t.conf_path, "a") as f:
        f.write("\n".join(lines) + "\n" + extra)
    t.start()
    t.wait_log(r"dkim-sign: %d keys? read" % len(kinds))
    return t, s, keys


def submit(t, certs, msg, sender=USER, rcpt="someone@example.net", **kw):
    ctx = ssl.create_default_context(cafile=str(certs.ca_cert))
    ctx.check_hostname = False
    with smtplib.SMTP(*t.addr("sub"), timeout=10) as c:
        c.starttls(context=ctx)
        c.login(USER, PASSWORD)
        c.sendmail(sender, [rcpt], msg, **kw)


def received(s, n=1):
    s.wait_for(n)
    return s.messages[n - 1].data


def sigs(data):
    head = data.split(b"\r\n\r\n", 1)[0]
    return re.findall(rb"^DKIM-Signature:.*?(?=\r\n\S)", head, re.M | re.S)


def verify(data, keys, idx=0):
    """dkimpy's verdict on signature idx (it raises on a body hash mismatch)."""
    try:
        return dkim.DKIM(data).verify(idx=idx, dnsfunc=keys.dnsfunc)
    except dkim.ValidationError:
        return False


MSG = (b"From: Alice <alice@example.com>\r\nTo: someone@example.net\r\n"
       b"Subject: signed\r\nDate: Sun, 06 Dec 2026 08:00:00 +0000\r\n"
       b"Message-ID: <m1@example.com>\r\n\r\nHello,\r\n\r\n  a  line with   spaces  \r\n"
       b"bye\r\n\r\n\r\n")


def test_rsa_signed_and_verified(ternd, certs, sink, tmp_path):
    t, s, keys = signer(ternd, certs, sink, tmp_path)
    submit(t, certs, MSG)
    data = received(s)
    [sig] = sigs(data)
    assert data.startswith(b"DKIM-Signature: ")       # above tern's Received:
    assert b"a=rsa-sha256;" in sig and b"c=relaxed/relaxed;" in sig, sig
    assert b"d=example.com;" in sig and b"s=rsa1;" in sig, sig
    # From: oversigned, every present field listed, no l=
    assert re.search(rb"h=from:from:to:subject:date:\s*message-id;", sig), sig
    assert b"l=" not in sig and re.search(rb"t=\d{10};", sig)
    assert verify(data, keys)
    t.wait_log(r"dkim=signed domain=example.com selectors=rsa1:rsa-sha256")


def test_ed25519_verified(ternd, certs, sink, tmp_path):
    t, s, keys = signer(ternd, certs, sink, tmp_path, kinds=(("ed1", "ed25519"),))
    submit(t, certs, MSG)
    data = received(s)
    [sig] = sigs(data)
    assert b"a=ed25519-sha256;" in sig, sig
    assert verify(data, keys)


def test_dual_signing_both_verify(ternd, certs, sink, tmp_path):
    t, s, keys = signer(ternd, certs, sink, tmp_path,
                        kinds=(("rsa1", "rsa"), ("ed1", "ed25519")))
    submit(t, certs, MSG)
    data = received(s)
    found = sigs(data)
    assert len(found) == 2 and b"s=rsa1;" in found[0] and b"s=ed1;" in found[1]
    assert verify(data, keys, 0) and verify(data, keys, 1)


def test_tampering_detected(ternd, certs, sink, tmp_path):
    t, s, keys = signer(ternd, certs, sink, tmp_path,
                        kinds=(("rsa1", "rsa"), ("ed1", "ed25519")))
    submit(t, certs, MSG)
    data = received(s)
    assert verify(data, keys, 0) and verify(data, keys, 1)
    body = data.replace(b"bye\r\n", b"Bye\r\n")
    subject = data.replace(b"Subject: signed", b"Subject: signet")
    second_from = data.replace(b"\r\n\r\nHello", b"\r\nFrom: eve@example.com\r\n\r\nHello")
    for bad in (body, subject, second_from):
        assert bad != data
        assert not verify(bad, keys, 0) and not verify(bad, keys, 1)
    # what relaxed canonicalisation allows still verifies
    ws = data.replace(b"Subject: signed", b"Subject:   signed ")
    assert verify(ws, keys, 0) and verify(ws, keys, 1)


def test_relay_mail_not_signed(ternd, certs, sink, tmp_path):
    t, s, keys = signer(ternd, certs, sink, tmp_path)
    with smtplib.SMTP(*t.addr("relay"), timeout=10) as c:
        c.sendmail("alice@example.com", ["x@example.com"], MSG)
    assert sigs(received(s)) == []


def test_trusted_signed_only_with_dkim_sign_trusted(ternd, certs, sink, tmp_path):
    t, s, keys = signer(ternd, certs, sink, tmp_path,
                        extra="trusted-networks 127.0.0.0/8\n")
    with smtplib.SMTP(*t.addr("relay"), timeout=10) as c:
        c.sendmail("alice@example.com", ["x@example.net"], MSG)
    assert sigs(received(s)) == []
    t.stop()
    with open(t.conf_path, "a") as f:
        f.write("dkim-sign-trusted on\n")
    t.start()
    with smtplib.SMTP(*t.addr("relay"), timeout=10) as c:
        c.sendmail("alice@example.com", ["x@example.net"], MSG)
    data = received(s, 2)
    assert len(sigs(data)) == 1 and verify(data, keys)


def test_from_domain_without_key_not_signed(ternd, certs, sink, tmp_path):
    t, s, keys = signer(ternd, certs, sink, tmp_path)
    other = MSG.replace(b"alice@example.com>", b"alice@other.test>")
    submit(t, certs, other)
    assert sigs(received(s)) == []
    # nor two From: fields, even of the signing domain
    two = MSG.replace(b"To:", b"From: bob@example.com\r\nTo:")
    submit(t, certs, two)
    assert sigs(received(s, 2)) == []


def test_bdat_no_final_crlf_and_8bit(ternd, certs, sink, tmp_path, smtp_raw):
    t, s, keys = signer(ternd, certs, sink, tmp_path,
                        kinds=(("rsa1", "rsa"), ("ed1", "ed25519")),
                        extra="trusted-networks 127.0.0.0/8\ndkim-sign-trusted on\n")
    body = (MSG.split(b"\r\n\r\n", 1)[0] + b"\r\nMIME-Version: 1.0\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: 8bit\r\n\r\n"
            b"caf\xc3\xa9 cr\xc3\xa8me\r\n.leading dot\r\n..two dots\r\nno final CRLF")
    r = smtp_raw(t.port("relay"))
    r.greeting()
    r.ehlo()
    r.cmd("MAIL FROM:<alice@example.com> BODY=8BITMIME", 250)
    r.cmd("RCPT TO:<x@example.net>", 250)
    half = len(body) // 2
    r.send(b"BDAT %d\r\n" % half + body[:half])
    r.expect(250)
    r.send(b"BDAT %d LAST\r\n" % (len(body) - half) + body[half:])
    r.expect(250)
    data = received(s)
    assert b"\r\n.leading dot\r\n..two dots\r\n" in data
    assert len(sigs(data)) == 2
    assert verify(data, keys, 0) and verify(data, keys, 1)


def test_data_dot_stuffing_and_8bit(ternd, certs, sink, tmp_path):
    t, s, keys = signer(ternd, certs, sink, tmp_path, kinds=(("ed1", "ed25519"),))
    msg = (b"From: alice@example.com\r\nSubject: dots\r\n\r\n"
           b".\r\n..\r\n.starts with a dot\r\nna\xc3\xafve \xe2\x82\xac\r\n")
    # smtplib dot-stuffs; ternd unstuffs, delivery stuffs again
    submit(t, certs, msg, mail_options=["BODY=8BITMIME"])
    data = received(s)
    assert data.endswith(b"\r\n\r\n.\r\n..\r\n.starts with a dot\r\nna\xc3\xafve \xe2\x82\xac\r\n")
    # the submission fix-up added Message-ID: and Date:, and they are signed
    [sig] = sigs(data)
    assert re.search(rb"h=from:from:subject:date:\s*message-id;", sig), sig
    assert verify(data, keys)


def test_local_socket_mail_signed(ternd, certs, sink, tmp_path, tern_bin):
    t, s, keys = signer(ternd, certs, sink, tmp_path, kinds=(("ed1", "ed25519"),),
                        extra="local-socket %s\n" % (tmp_path / "local.sock"))
    conf = t.conf_path
    r = subprocess.run([str(tern_bin.build_dir / "tern-sendmail"), "-C", str(conf),
                        "-f", "root@mx.test", "x@example.net"],
                       input=MSG, capture_output=True, timeout=20)
    assert r.returncode == 0, r.stderr
    data = received(s)
    assert len(sigs(data)) == 1 and verify(data, keys)


def test_bad_keys_are_config_errors(ternd, certs, tmp_path):
    t = start(ternd, certs)
    ec = tmp_path / "ec.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", str(ec)], check=True,
                   capture_output=True)
    small = tmp_path / "small.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:512", "-out", str(small)], check=True,
                   capture_output=True)
    small.chmod(0o600)
    ec.chmod(0o600)
    good, _ = keygen(t, tmp_path, "ok", "ed25519")
    open_key = tmp_path / "open.key"
    open_key.write_bytes(good.read_bytes())
    open_key.chmod(0o644)
    t.stop()
    base = open(t.conf_path).read()
    cases = [(ec, "not an RSA or Ed25519 key"), (small, "RSA key of 512 bits"),
             (tmp_path / "missing.key", "No such file"),
             (open_key, "others may read")]
    for path, why in cases:
        with open(t.conf_path, "w") as f:
            f.write(base + "dkim-sign example.com sel %s\n" % path)
        nline = (base + "x").count("\n") + 1
        r = t.check_config()
        err = r.stderr if isinstance(r.stderr, str) else r.stderr.decode()
        assert r.returncode != 0, err
        assert re.search(r"%s:%d: dkim-sign example.com sel: %s: .*%s" % (
            re.escape(str(t.conf_path)), nline, re.escape(str(path)), why), err), err
    with open(t.conf_path, "w") as f:
        f.write(base + "dkim-sign example.com sel %s\n" % good)
    assert t.check_config().returncode == 0


def test_reload_reads_new_keys(ternd, certs, sink, tmp_path):
    """A reload reads the keys again, as root, through the privileged helper
    (the key files are root's, 0600: ternd's user could not read them)."""
    t, s, keys = signer(ternd, certs, sink, tmp_path, kinds=(("ed1", "ed25519"),))
    p = os.path.dirname(t.conf_path)   # ternd's user re-reads tern.conf, not the keys
    while p not in ("/", "/tmp"):
        os.chmod(p, os.stat(p).st_mode | 0o001)
        p = os.path.dirname(p)
    path, txt = keygen(t, tmp_path, "ed2", "ed25519")
    keys.add("ed2", txt)
    conf = open(t.conf_path).read().replace("ed1 ", "ed2 ").replace(
        "example.com.ed1.key", "example.com.ed2.key")
    with open(t.conf_path, "w") as f:
        f.write(conf)
    assert t.ternctl("reload").returncode == 0, t.log()
    t.wait_log(r"dkim-sign: 1 key read by the privileged helper")
    t.wait_log(r"reload done")
    submit(t, certs, MSG)
    data = received(s)
    [sig] = sigs(data)
    assert b"s=ed2;" in sig and verify(data, keys)
