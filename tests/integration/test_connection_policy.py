"""Who may open connections.

- max-connections-per-ip does not apply to clients in trusted-networks (they
  have max-connections-per-ip-trusted, no cap by default); max-connections
  still bounds everybody. Trusted and untrusted clients are told apart by
  their loopback source address (127.0.0.x, bound before connect).
"""


TRUSTED = "127.0.0.5"
UNTRUSTED = "127.0.0.6"


def greeted(smtp_raw, port, source, n):
    conns = []
    for _ in range(n):
        c = smtp_raw(port, source=source)
        c.expect(220)
        conns.append(c)
    return conns


def test_trusted_client_exempt_from_per_ip_limit(ternd, smtp_raw):
    t = ternd(trusted=TRUSTED + "/32",
              extra_conf="max-connections-per-ip 3\nmax-connections 12")
    port = t.port()
    # an application server: 8 parallel sessions, all greeted
    app = greeted(smtp_raw, port, TRUSTED, 8)
    # an untrusted client still stops at 3
    other = greeted(smtp_raw, port, UNTRUSTED, 3)
    c = smtp_raw(port, source=UNTRUSTED)
    c.expect(421, "4.7.0")
    assert c.wait_closed(5)
    t.wait_log(r"client=%s refused reason=max-connections-per-ip" % UNTRUSTED)
    # the global cap holds for trusted clients too: 8 + 3 open, one more fits
    app += greeted(smtp_raw, port, TRUSTED, 1)
    c = smtp_raw(port, source=TRUSTED)
    r = c.expect(421, "4.7.0")
    assert "Too many connections" in r.text, r
    t.wait_log(r"client=%s refused reason=max-connections\b" % TRUSTED)
    # every one of them still works
    for s in app + other:
        s.cmd("NOOP", 250)
    app[0].ehlo()
    app[0].cmd("MAIL FROM:<app@client.test>", 250)
    app[0].cmd("RCPT TO:<someone@elsewhere.test>", 250)   # trusted: may relay


def test_trusted_per_ip_cap_when_set(ternd, smtp_raw):
    t = ternd(trusted=TRUSTED + "/32",
              extra_conf="max-connections-per-ip 3\nmax-connections-per-ip-trusted 5")
    greeted(smtp_raw, t.port(), TRUSTED, 5)
    c = smtp_raw(t.port(), source=TRUSTED)
    c.expect(421, "4.7.0")
    assert c.wait_closed(5)
    greeted(smtp_raw, t.port(), UNTRUSTED, 3)
    c = smtp_raw(t.port(), source=UNTRUSTED)
    c.expect(421, "4.7.0")
