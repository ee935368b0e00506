"""Overlong lines during SMTP AUTH (RFC 4954 section 4): a line over the AUTH
line limit (12288 octets with CRLF) ends the exchange with
`500 5.5.6 Authentication Exchange line is too long`, whatever its length and
however it arrives, and the next line is read as a command again, never as a
SASL response (before the fix the exchange stayed open: a following `NOOP`
counted as a failed attempt and a bare credential line got 235).

Same set-up as test_auth.py: STARTTLS submission listener, raw client in TLS.
"""

import socket
import time

import pytest

from test_auth import PASSWORD, USER, b64, raw_tls, start

LINE_MAX = 12288                       # SASL_LINE_MAX, CRLF included
CREDS = b64("\0%s\0%s" % (USER, PASSWORD))


def overlong(n):
    """n base64-looking characters (no CRLF)."""
    return ("QUFB" * (n // 4 + 1))[:n]


def tls_session(ternd, certs, smtp_raw):
    """A ternd with users (test_auth.start) and a raw client after STARTTLS."""
    t = start(ternd, certs)
    return t, raw_tls(smtp_raw, certs, t.port("sub"))


def send_split(r, data, chunk, pause=0.005):
    """Send data in many small TCP segments (Nagle off), pacing the writes."""
    r.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(0, len(data), chunk):
        r.send(data[i:i + chunk])
        time.sleep(pause)


def after_exchange_is_a_command(t, r):
    """The line after the 5.5.6 is a command: a bare credential line is an
    unknown command (not 235), NOOP is 250 (not 535), and a fresh AUTH works."""
    r.cmd(CREDS, 500, "5.5.1")
    r.cmd("NOOP", 250)
    r.cmd("AUTH PLAIN " + CREDS, 235, "2.7.0")
    r.cmd("MAIL FROM:<%s>" % USER, 250)
    assert "auth=aborted reason=line-too-long" in t.log()
    assert PASSWORD not in t.log()


@pytest.mark.parametrize("length", [LINE_MAX - 1, LINE_MAX + 100, 70 * 1024,
                                    300 * 1024],
                         ids=["just-over", "over", "over-64k", "far-over"])
def test_overlong_plain_response_ends_exchange(ternd, certs, smtp_raw, length):
    # LINE_MAX - 1 characters + CRLF is one octet over the limit
    t, r = tls_session(ternd, certs, smtp_raw)
    r.cmd("AUTH PLAIN", 334)
    r.send(overlong(length) + "\r\n")
    rep = r.expect(500, "5.5.6")
    assert "Authentication Exchange line is too long" in rep.text, rep
    after_exchange_is_a_command(t, r)


def test_longest_response_is_still_read_as_a_response(ternd, certs, smtp_raw):
    # at the limit (the longest base64 that fits): the SASL layer itself
    # answers (decoded too long), and the exchange is over as well
    t, r = tls_session(ternd, certs, smtp_raw)
    r.cmd("AUTH PLAIN", 334)
    r.send(overlong((LINE_MAX - 2) // 4 * 4) + "\r\n")
    r.expect(500, "5.5.6")
    r.cmd("NOOP", 250)
    r.cmd("AUTH PLAIN " + CREDS, 235)


@pytest.mark.parametrize("chunk", [700, 4096])
def test_overlong_response_split_over_many_reads(ternd, certs, smtp_raw, chunk):
    t, r = tls_session(ternd, certs, smtp_raw)
    r.cmd("AUTH PLAIN", 334)
    send_split(r, (overlong(3 * LINE_MAX) + "\r\n").encode(), chunk)
    r.expect(500, "5.5.6")
    after_exchange_is_a_command(t, r)


def test_overlong_login_password_ends_exchange(ternd, certs, smtp_raw):
    t, r = tls_session(ternd, certs, smtp_raw)
    r.cmd("AUTH LOGIN", 334)
    r.cmd(b64(USER), 334)
    r.send(overlong(2 * LINE_MAX) + "\r\n")
    r.expect(500, "5.5.6")
    # a password line now is not taken as the password
    r.cmd(b64(PASSWORD), 500, "5.5.1")
    after_exchange_is_a_command(t, r)


def test_overlong_auth_command_line(ternd, certs, smtp_raw):
    # the AUTH command with an initial response over the limit: the same answer
    t, r = tls_session(ternd, certs, smtp_raw)
    r.send("AUTH PLAIN " + overlong(LINE_MAX) + "\r\n")
    r.expect(500, "5.5.6")
    after_exchange_is_a_command(t, r)


def test_pipelined_line_after_overlong_response(ternd, certs, smtp_raw):
    # the next command arrives in the same TCP segment as the overlong tail
    t, r = tls_session(ternd, certs, smtp_raw)
    r.cmd("AUTH PLAIN", 334)
    r.send(overlong(LINE_MAX + 10) + "\r\nNOOP\r\n")
    r.expect(500, "5.5.6")
    r.expect(250)
    r.cmd("AUTH PLAIN " + CREDS, 235)
