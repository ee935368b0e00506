"""Runs every tests/integration/dialogs/*.dlg against a fresh ternd (format in
dialogs/README)."""

import fnmatch
import re
from pathlib import Path

import pytest

DIR = Path(__file__).resolve().parent / "dialogs"
DIALOGS = sorted(DIR.glob("*.dlg"))


def unescape(s):
    out = bytearray()
    i = 0
    while i < len(s):
        ch = s[i]
        if ch == "\\" and i + 1 < len(s):
            n = s[i + 1]
            if n == "x":
                out.append(int(s[i + 2:i + 4], 16))
                i += 4
                continue
            out += {"r": b"\r", "n": b"\n", "t": b"\t", "\\": b"\\"}[n]
            i += 2
            continue
        out += ch.encode("utf-8")
        i += 1
    return bytes(out)


def parse(path):
    conf, steps = [], []
    for no, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        m = re.match(r"^(CONF|C|C!|S): ?(.*)$", line)
        if line.strip() == "CLOSED":
            steps.append((no, "CLOSED", None))
        elif m and m.group(1) == "CONF":
            assert not steps, "%s:%d: CONF after the dialog started" % (path.name, no)
            conf.append(m.group(2))
        elif m:
            steps.append((no, m.group(1), m.group(2)))
        else:
            raise AssertionError("%s:%d: bad dialog line %r" % (path.name, no, line))
    return conf, steps


@pytest.mark.parametrize("path", DIALOGS, ids=[p.stem for p in DIALOGS])
def test_dialog(ternd, smtp_raw, path):
    conf, steps = parse(path)
    t = ternd(extra_conf="\n".join(conf))
    c = smtp_raw(t.port())
    queued = False
    for no, kind, arg in steps:
        where = "%s:%d" % (path.name, no)
        if kind == "C":
            c.send(arg.encode("utf-8") + b"\r\n")
        elif kind == "C!":
            c.send(unescape(arg))
        elif kind == "S":
            try:
                r = c.reply(timeout=15)
            except AssertionError as e:
                raise AssertionError("%s: expected %r: %s" % (where, arg, e))
            got = "%d %s" % (r.code, r.lines[-1])
            assert fnmatch.fnmatchcase(got, arg), "%s: expected %r, got %r (full: %r)" % (
                where, arg, got, r)
            queued = queued or r.queue_id is not None
        elif kind == "CLOSED":
            assert c.wait_closed(5), "%s: server did not close the connection" % where
            assert c.buf == b"", "%s: unexpected bytes before close: %r" % (where, c.buf)
    expect = path.with_suffix(".expect")
    q = t.queue()
    if expect.exists():
        assert len(q) == 1, "%s: want one queued message, have %r" % (path.name, q)
        want = expect.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        assert t.show_message(q[0]["id"]) == want
    elif not queued:
        assert q == [], "%s: nothing should be queued, have %r" % (path.name, q)
