"""ternctl and the control socket: queue, show, ping, the JSON-lines protocol, and the
read-only fallback to the queue directory when ternd is down."""

import json
import re
import smtplib
import socket
import time

import pytest

QID = re.compile(r"queued as ([0-9a-fA-F]{16})")

MSG1 = (b"From: Alice <alice@sender.test>\r\n"
        b"To: bob@example.com\r\n"
        b"Subject: first\r\n"
        b"\r\n"
        b"Hello Bob.\r\n"
        b".a line that starts with a dot\r\n"
        b"8-bit bytes: \xff\xfe\x80 and a NUL-free tail\r\n")
MSG2 = (b"From: carol@sender.test\r\n"
        b"Subject: second\r\n"
        b"\r\n" + (b"x" * 900 + b"\r\n") * 6)


def submit(t, sender, rcpts, body):
    """Send one message with smtplib; return its queue id."""
    with smtplib.SMTP(*t.addr(), timeout=10) as s:
        s.ehlo("client.test")
        code, _ = s.mail(sender)
        assert code == 250
        for r in rcpts:
            code, resp = s.rcpt(r)
            assert code == 250, resp
        code, resp = s.data(body)
        assert code == 250, resp
        m = QID.search(resp.decode())
        assert m, resp
        return m.group(1).lower()


def control_path(t):
    r = t.ternctl("ping", "--json")
    assert r.returncode == 0, r.stderr
    m = re.search(r"^control-socket\s+(\S+)", t.conf_text, re.M)
    return m.group(1) if m else str(t.queue_dir / "control.sock")


def ctl_raw(path, data, timeout=5.0):
    """Send raw bytes to the control socket; return the response lines until EOF
    or timeout (parsed as JSON)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall(data)
    buf = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            if buf.count(b"\n") >= data.count(b"\n") and data.endswith(b"\n"):
                break
    except socket.timeout:
        pass
    finally:
        s.close()
    return [json.loads(l) for l in buf.split(b"\n") if l]


@pytest.fixture
def two_messages(ternd):
    t = ternd()
    t0 = int(time.time())
    id1 = submit(t, "alice@sender.test", ["bob@example.com", "dave@example.com"], MSG1)
    id2 = submit(t, "carol@sender.test", ["erin@example.com"], MSG2)
    return t, t0, id1, id2


def test_queue_json_and_human(two_messages):
    t, t0, id1, id2 = two_messages
    msgs = {m["id"]: m for m in t.queue()}
    assert set(msgs) >= {id1, id2}
    m1, m2 = msgs[id1], msgs[id2]
    assert m1["sender"] == "alice@sender.test"
    assert [r["address"] for r in m1["recipients"]] == ["bob@example.com",
                                                        "dave@example.com"]
    assert m2["sender"] == "carol@sender.test"
    assert [r["address"] for r in m2["recipients"]] == ["erin@example.com"]
    for m in (m1, m2):
        assert t0 - 5 <= m["arrival"] <= time.time() + 5
        assert m["held"] is False and m["corrupt"] is False
        assert m["client"] == "127.0.0.1"
        assert m["helo"] == "client.test"
        assert isinstance(m["attempts"], int) and isinstance(m["next_attempt"], int)
        for r in m["recipients"]:
            assert r["state"] in ("pending", "sent", "bounced", "expired", "deleted")
            assert set(r) == {"address", "state", "status", "last_error", "relay",
                              "updated"}
    # size is the stored body (our Received header + the message)
    assert m1["size"] == len(t.show_body(id1))
    assert m2["size"] == len(t.show_body(id2))
    assert m2["size"] > len(MSG2)

    r = t.ternctl("queue")
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert id1 in out and id2 in out
    assert "<alice@sender.test>" in out and "bob@example.com" in out
    assert "erin@example.com" in out
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", out)

    # --json may come first; the output is one JSON document, printed as it
    # streams: one message a line between the opening and the closing line
    r1 = t.ternctl("--json", "queue")
    r2 = t.ternctl("queue", "--json")
    assert r1.returncode == 0
    lines = r1.stdout.split(b"\n")
    assert lines[0] == b'{"ok":true,"messages":[' and lines[-1] == b""
    assert lines[-2].startswith(b'],"count":')
    assert {json.loads(l.rstrip(b","))["id"] for l in lines[1:-2]} >= {id1, id2}
    doc = json.loads(r1.stdout)
    assert doc["ok"] is True and doc["count"] == len(doc["messages"])
    assert doc["next_after"] is None
    assert doc["messages"] == json.loads(r2.stdout)["messages"]


def test_show(two_messages):
    t, _, id1, id2 = two_messages
    r = t.ternctl("show", id1, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and "body" not in doc
    m = doc["message"]
    assert m["id"] == id1 and m["sender"] == "alice@sender.test"
    assert [x["address"] for x in m["recipients"]] == ["bob@example.com",
                                                       "dave@example.com"]

    r = t.ternctl("show", id1)
    assert r.returncode == 0, r.stderr
    out = r.stdout.decode()
    assert "id: %s" % id1 in out
    assert "sender: <alice@sender.test>" in out
    assert "recipient: bob@example.com" in out and "recipient: dave@example.com" in out
    assert re.search(r"^  state: (pending|sent|bounced|expired|deleted)$", out, re.M)

    # the body, byte-exact (dot-unstuffed, 8-bit bytes kept)
    assert t.show_message(id1) == MSG1
    assert t.show_message(id2) == MSG2
    r = t.ternctl("show", id1, "--body", "--json")
    assert r.returncode == 0
    import base64
    assert base64.b64decode(json.loads(r.stdout)["body"]) == t.show_body(id1)


def test_errors_and_exit_codes(two_messages):
    t, _, id1, _ = two_messages
    r = t.ternctl("show", "00000000000000ff")
    assert r.returncode == 1
    assert b"no such message" in r.stderr
    r = t.ternctl("show", "00000000000000ff", "--json")
    assert r.returncode == 1
    assert json.loads(r.stdout) == {"ok": False, "error": "no such message", "code": 1}
    for args in (["show"], ["show", "xyz"], ["show", id1, "extra"], ["frobnicate"],
                 ["queue", "--body"], [], ["--no-such-option", "queue"]):
        r = t.ternctl(*args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
    r = t.ternctl("ping")
    assert r.returncode == 0 and b"ternd is running" in r.stdout
    # a socket nobody listens on: ping cannot fall back
    r = t.ternctl("-s", str(t.workdir / "nothing.sock"), "ping")
    assert r.returncode == 3
    assert re.search(rb"ternctl: cannot connect to \S+nothing\.sock: No such file or "
                     rb"directory \(is ternd running\?\)", r.stderr), r.stderr


def test_protocol(two_messages):
    t, _, id1, _ = two_messages
    path = control_path(t)
    # several requests in one write: answered in order
    reqs = [{"v": 1, "cmd": "ping"},
            {"v": 3, "cmd": "ping"},
            {"cmd": "ping"},
            {"v": 1, "cmd": "nope"},
            {"v": 1, "cmd": "hold", "id": id1},
            {"v": 1, "cmd": "show", "id": "123"},
            {"v": 1, "cmd": "show", "id": id1.upper()}]
    data = b"".join(json.dumps(q).encode() + b"\n" for q in reqs) + b"[1,2]\n{oops\n"
    got = ctl_raw(path, data)
    assert len(got) == len(reqs) + 2, got
    assert got[0]["ok"] is True and got[0]["version"] == 2 and got[0]["pid"] == t.pid
    assert got[1] == {"ok": False, "error": "unsupported protocol version", "code": 3}
    assert got[2]["code"] == 3
    assert got[3] == {"ok": False, "error": "unknown command", "code": 4}
    # hold goes through the scheduler thread, yet its answer keeps its place
    assert got[4] == {"ok": True, "ids": [id1], "skipped": []}
    assert got[5]["ok"] is False and got[5]["code"] == 2
    assert got[6]["ok"] is True and got[6]["message"]["id"] == id1
    assert got[7]["code"] == 2 and got[8]["code"] == 2

    # an over-long line: one error, then the server closes
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    try:
        s.sendall(b"x" * (70 * 1024))
    except BrokenPipeError:
        pass
    buf = b""
    while True:
        try:
            chunk = s.recv(4096)
        except ConnectionResetError:
            break
        if not chunk:
            break
        buf += chunk
    s.close()
    assert json.loads(buf.split(b"\n")[0]) == {"ok": False,
                                               "error": "request line too long",
                                               "code": 7}
    # the daemon is still fine
    assert t.ternctl("ping").returncode == 0


def test_fallback_to_queue_dir(two_messages):
    t, _, id1, id2 = two_messages
    # The first delivery attempt (to a refusing port) rewrites each recipient's
    # status; wait for it so the snapshot is stable (the next retry is minutes away).
    deadline = time.monotonic() + 20
    while True:
        live = {m["id"]: m for m in t.queue()}
        if all(live[i]["attempts"] >= 1 for i in (id1, id2)):
            break
        assert time.monotonic() < deadline, live
        time.sleep(0.1)
    body1 = t.show_body(id1)
    t.stop()

    r = t.ternctl("queue", "--json")
    assert r.returncode == 0, r.stderr
    assert b"queue directory" in r.stderr
    doc = json.loads(r.stdout)
    dead = {m["id"]: m for m in doc["messages"]}
    assert set(dead) >= {id1, id2}
    for i in (id1, id2):
        for k in ("sender", "recipients", "size", "arrival"):
            assert dead[i][k] == live[i][k], k

    r = t.ternctl("queue")
    assert r.returncode == 0 and id1 in r.stdout.decode() and id2 in r.stdout.decode()
    r = t.ternctl("show", id1, "--body")
    assert r.returncode == 0 and r.stdout == body1
    r = t.ternctl("show", "00000000000000ff")
    assert r.returncode == 1

    # a command that needs the daemon: exit 3 and the documented message
    r = t.ternctl("ping")
    assert r.returncode == 3
    assert re.search(rb"^ternctl: cannot connect to \S+: \S.* \(is ternd running\?\)$",
                     r.stderr, re.M), r.stderr


def loaded_libraries(binary):
    """The shared objects the dynamic loader maps for binary (what ldd prints),
    without running it."""
    import os
    import subprocess
    r = subprocess.run([str(binary)], env=dict(os.environ, LD_TRACE_LOADED_OBJECTS="1"),
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0, r.stderr
    return [line.split()[0] for line in r.stdout.splitlines() if line.strip()]


def test_socket_client_alone_and_ternctl_local(ternd, tmp_path):
    """ternctl is only the socket's client: it maps neither OpenSSL nor Berkeley DB nor
    libcrypt (their start-up is most of a process start here); ternctl-local, beside it,
    has them and does the work on files. A ternctl without ternctl-local still answers
    what ternd answers, and says what is missing when it needs the files."""
    import shutil
    import subprocess
    t = ternd()
    lean = loaded_libraries(t.bins.ternctl)
    full = loaded_libraries(t.bins.ternctl.parent / "ternctl-local")
    heavy = ("libcrypto", "libssl", "libdb", "libcrypt.")
    assert not [l for l in lean if l.startswith(heavy)], lean
    for h in ("libcrypto", "libdb", "libcrypt."):
        assert any(l.startswith(h) for l in full), (h, full)

    alone = tmp_path / "bin" / "ternctl"
    alone.parent.mkdir()
    shutil.copy2(t.bins.ternctl, alone)

    def run(*args):
        return subprocess.run([str(alone), "-c", str(t.conf_path), *args],
                              capture_output=True, timeout=30, env=t.env)

    r = run("ping")
    assert r.returncode == 0, r.stderr
    r = run("stats", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["ok"] is True, r.stderr
    r = run("user", "list")
    assert r.returncode == 4, r.stderr
    assert b"cannot run " + str(alone.parent / "ternctl-local").encode() in r.stderr
    t.stop()
    r = run("queue")
    assert r.returncode == 3, r.stderr
    assert b"ternctl-local" in r.stderr and b"is ternd running?" in r.stderr, r.stderr
    # the real pair, daemon down: answered by ternctl-local from the queue directory
    r = t.ternctl("queue", "--json")
    assert r.returncode == 0 and b"queue directory" in r.stderr, r.stderr
