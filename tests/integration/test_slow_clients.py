"""Per-request deadline on inbound sessions (command-deadline, data-min-rate).

idle-timeout is reset by every byte, so without a deadline a client that
drips one byte just inside idle-timeout holds its connection slot until
session-timeout. Each command line must now arrive within command-deadline
(default twice idle-timeout) of the session starting to wait for it, and the
DATA phase within command-deadline plus one second per data-min-rate bytes:
the dripper gets 421 4.4.2, an honest slow transfer still goes through.
Timeouts are configured short so that every test takes seconds.
"""

import select
import time

import pytest

from test_limits import open_tx


def drip(c, data, every, limit):
    """Send data one byte per `every` seconds until the server answers (or
    closes) or `limit` seconds pass. Returns (reply or None, seconds)."""
    t0 = time.monotonic()
    for b in data:
        if time.monotonic() - t0 > limit:
            break
        try:
            c.send(bytes([b]))
        except OSError:
            break
        readable, _, _ = select.select([c.sock], [], [], every)
        if readable:
            return c.reply(timeout=5), time.monotonic() - t0
    return None, time.monotonic() - t0


@pytest.mark.parametrize("conf,deadline", [
    ("idle-timeout 2s", 4.0),                        # default: 2 x idle-timeout
    ("idle-timeout 30s\ncommand-deadline 3s", 3.0),
], ids=["default", "explicit"])
def test_dripping_command_is_cut_at_the_deadline(ternd, smtp_raw, conf, deadline):
    t = ternd(extra_conf=conf + "\nsession-timeout 60s")
    c = smtp_raw(t.port())
    c.greeting()
    c.ehlo()                  # an honest command first: the clock restarts
    rep, held = drip(c, b"MAIL FROM:<slow@client.test>" * 10, 0.5, 20)
    assert rep is not None, "dripping client still connected after %.1fs" % held
    assert (rep.code, rep.enh) == (421, "4.4.2"), rep
    assert deadline - 1 <= held <= deadline + 2.5, \
        "cut after %.1fs, command-deadline %.0fs" % (held, deadline)
    assert c.wait_closed(5)
    t.wait_log(r"command deadline exceeded in state READY")


def test_dripping_before_helo_is_cut(ternd, smtp_raw):
    t = ternd(extra_conf="idle-timeout 2s\nsession-timeout 60s")
    c = smtp_raw(t.port())
    c.greeting()
    rep, held = drip(c, b"EHLO " + b"x" * 100, 0.5, 20)
    assert rep is not None and (rep.code, rep.enh) == (421, "4.4.2"), (rep, held)
    assert held <= 6.5, held
    assert c.wait_closed(5)


def test_dripping_data_is_cut(ternd, smtp_raw):
    t = ternd(extra_conf="idle-timeout 2s\nsession-timeout 60s")
    c = smtp_raw(t.port())
    open_tx(c)
    c.cmd("DATA", 354)
    rep, held = drip(c, b"Subject: drip\r\n\r\n" + b"y" * 200, 0.5, 20)
    assert rep is not None and (rep.code, rep.enh) == (421, "4.4.2"), (rep, held)
    assert held <= 6.5, held
    assert c.wait_closed(5)
    t.wait_log(r"command deadline exceeded in state DATA")
    assert t.queue() == []


def test_data_below_min_rate_is_cut(ternd, smtp_raw):
    # 2 KB/s against data-min-rate 10K: allowed 2 s + 0.2 s per second of
    # sending, so the transfer is cut after about 2.5 s
    t = ternd(extra_conf="idle-timeout 2s\ncommand-deadline 2s\n"
                         "data-min-rate 10K\nsession-timeout 60s")
    c = smtp_raw(t.port())
    open_tx(c)
    c.cmd("DATA", 354)
    c.send(b"Subject: slow\r\n\r\n")
    t0 = time.monotonic()
    rep = None
    while time.monotonic() - t0 < 15:
        try:
            c.send(b"z" * 78 + b"\r\n" + b"z" * 118 + b"\r\n")   # 200 bytes
        except OSError:
            break
        readable, _, _ = select.select([c.sock], [], [], 0.1)
        if readable:
            rep = c.reply(timeout=5)
            break
    held = time.monotonic() - t0
    assert rep is not None and (rep.code, rep.enh) == (421, "4.4.2"), (rep, held)
    assert 1.5 <= held <= 5.5, held
    assert t.queue() == []


@pytest.mark.parametrize("rate_conf", ["", "data-min-rate 20K\n"],
                         ids=["default-rate", "rate-20K"])
def test_honest_slow_data_still_succeeds(ternd, smtp_raw, rate_conf):
    # 320 KB at about 40 KB/s: 8 s of DATA, twice the 4 s floor, well above
    # the minimum rate; every byte within idle-timeout of the last
    t = ternd(extra_conf="idle-timeout 2s\nsession-timeout 60s\n" + rate_conf)
    c = smtp_raw(t.port())
    open_tx(c)
    c.cmd("DATA", 354)
    c.send(b"Subject: slow but honest\r\n\r\n")
    line = b"0123456789" * 7 + b"abcdefgh\r\n"            # 80 bytes
    chunk = line * 128                                     # 10 KB
    t0 = time.monotonic()
    for i in range(32):
        c.send(chunk)
        # pace to 4 chunks a second, whatever the send took
        left = t0 + (i + 1) * 0.25 - time.monotonic()
        if left > 0:
            readable, _, _ = select.select([c.sock], [], [], left)
            assert not readable, "server spoke during DATA: %r" % c.reply(timeout=5)
    c.send(b".\r\n")
    took = time.monotonic() - t0
    r = c.expect(250, "2.0.0", timeout=15)
    assert took > 6.0, "sent too fast (%.1fs) to prove anything" % took
    assert r.queue_id in t.queue_ids()
    c.cmd("QUIT", 221)


def test_deadline_is_per_command_not_per_session(ternd, smtp_raw):
    # each NOOP is quick; together they take well over command-deadline
    t = ternd(extra_conf="idle-timeout 3s\ncommand-deadline 2s\nsession-timeout 60s")
    c = smtp_raw(t.port())
    c.greeting()
    t0 = time.monotonic()
    for _ in range(5):
        readable, _, _ = select.select([c.sock], [], [], 1.0)   # pacing, 1 s
        assert not readable, c.reply(timeout=5)
        c.cmd("NOOP", 250)
    assert time.monotonic() - t0 >= 4.5
    c.cmd("QUIT", 221)
