"""tern-sendmail and the local-submission socket (doc/local-submission.md).

Every test runs the real ternd with `local-socket` and the real tern-sendmail
of the build, the way cron or PHP's mail() call /usr/sbin/sendmail: the
message on stdin, options on the command line. Delivery goes to an aiosmtpd
sink (route * to it) or stays queued (the default dead route), so the tests
see what ternd made of the message: envelope sender, recipients, the header
fields it added.

The socket, a copy of the configuration and the mailq/newaliases links live
in a world-readable directory under /tmp: the tests run as root, and one of
them runs tern-sendmail as the unprivileged user `nobody` (setuid in the
child), who must reach both.
"""

import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

NOBODY = "nobody"


class Local:
    """A ternd with local-socket, and tern-sendmail pointed at it."""

    def __init__(self, ternd, tern_bin, sink=None, extra_conf=""):
        self.dir = Path(tempfile.mkdtemp(prefix="ternl-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.socket = self.dir / "run" / "local.sock"
        route = {}
        if sink is not None:
            route["default_route"] = "smtp:[127.0.0.1]:%d" % sink.port
        self.t = ternd(start=False, extra_conf="local-socket %s\n%s" % (
            self.socket, extra_conf), **route)
        self.conf = self.dir / "tern.conf"
        shutil.copy(self.t.conf_path, self.conf)
        os.chmod(self.conf, 0o644)
        self.bin = tern_bin.build_dir / "tern-sendmail"
        self.env = dict(self.t.env)

    def start(self):
        self.t.start()
        self.t.wait_log(r"ready listeners=.*local-socket=")
        return self

    def run(self, *args, input=b"", user=None, argv0=None, timeout=30):
        """tern-sendmail -C CONF ARGS (as `user` if given)."""
        pre = None
        if user is not None:
            pw = pwd.getpwnam(user)

            def pre():
                os.setgroups([])
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)
        exe = str(argv0 or self.bin)
        return subprocess.run([exe, "-C", str(self.conf)] + list(args),
                              input=input, capture_output=True, timeout=timeout,
                              preexec_fn=pre, env=self.env, cwd=str(self.dir))

    def link(self, name):
        """A symlink `name` to tern-sendmail (as the package installs mailq)."""
        p = self.dir / name
        p.symlink_to(self.bin)
        return p

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def local(ternd, tern_bin):
    made = []

    def make(sink=None, extra_conf="", start=True):
        bin_ = tern_bin.build_dir / "tern-sendmail"
        if not bin_.is_file():
            pytest.fail("%s not built" % bin_)
        loc = Local(ternd, tern_bin, sink, extra_conf)
        made.append(loc)
        return loc.start() if start else loc

    yield make
    for loc in made:
        loc.close()


def ok(r):
    assert r.returncode == 0, "tern-sendmail exited %d: %s" % (
        r.returncode, r.stderr.decode(errors="replace"))
    return r


def headers(data):
    head = data.split(b"\r\n\r\n", 1)[0]
    return head.decode(errors="replace").replace("\r\n", "\n")


def test_cron_style_t_delivered_to_sink(local, sink):
    """`echo body | sendmail -t` as cron runs it: recipients from To:, the
    sender the calling user (root here), Received:, Date:, Message-ID: and
    From: added, exit 0 once queued, delivered to the sink."""
    s = sink()
    loc = local(sink=s)
    ok(loc.run("-t", input=b"To: ops@example.org\nSubject: cron job\n\n"
               b"output of the job\n"))
    s.wait_for(1)
    m = s.messages[0]
    assert m.mail_from == "root@mx.test"
    assert m.rcpt_tos == ["ops@example.org"]
    h = headers(m.data)
    assert h.startswith("Received: from local (uid 0, root)"), h
    assert re.search(r"^Date: ", h, re.M), h
    assert re.search(r"^Message-ID: <[0-9a-f]{16}\.[0-9a-f]+@mx\.test>$", h, re.M), h
    assert re.search(r"^From: .*<root@mx\.test>$", h, re.M), h
    assert m.data.endswith(b"\r\n\r\noutput of the job\r\n")
    loc.t.wait_log(r"from=<root@mx\.test> .*client=local:root .*listener=local "
                   r"status=queued")


def test_t_takes_to_cc_bcc_and_removes_bcc(local, sink):
    s = sink()
    loc = local(sink=s)
    msg = (b"From: Ops <ops@example.org>\n"
           b"To: \"Smith, A\" <a@example.org>,\n b@example.org (bee)\n"
           b"Cc: team: c@example.org, d@example.org;\n"
           b"Bcc: hidden@example.org\n"
           b"Subject: t\n\nbody\n")
    ok(loc.run("-t", "-i", input=msg))
    s.wait_for(1)
    m = s.messages[0]
    assert sorted(m.rcpt_tos) == ["a@example.org", "b@example.org",
                                  "c@example.org", "d@example.org",
                                  "hidden@example.org"]
    assert b"hidden@example.org" not in m.data
    assert b"\nBcc:" not in m.data
    h = headers(m.data)
    assert "From: Ops <ops@example.org>" in h     # not replaced
    assert h.count("From:") == 1


def test_body_without_headers(local, sink):
    """`echo text | sendmail addr`: the text is the body, after the header
    fields tern-sendmail and ternd add, not a header line."""
    s = sink()
    loc = local(sink=s)
    ok(loc.run("x@example.org", input=b"disk almost full\n"))
    s.wait_for(1)
    data = s.messages[0].data
    head, body = data.split(b"\r\n\r\n", 1)
    assert body == b"disk almost full\r\n", data
    assert b"\r\nFrom: " in b"\r\n" + head and b"Message-ID:" in head


def test_f_and_F_for_root(local, sink):
    s = sink()
    loc = local(sink=s)
    ok(loc.run("-f", "boss@example.org", "-F", "The Boss", "x@example.org",
               input=b"Subject: hi\n\nbody\n"))
    s.wait_for(1)
    m = s.messages[0]
    assert m.mail_from == "boss@example.org"
    assert m.rcpt_tos == ["x@example.org"]
    assert 'From: "The Boss" <boss@example.org>' in headers(m.data)


def test_non_root_sender_forced_to_its_user(local, sink):
    """A non-root caller cannot choose its envelope sender: ternd knows its
    uid from the kernel (SO_PEERCRED) and uses user@hostname."""
    s = sink()
    loc = local(sink=s)
    uid = pwd.getpwnam(NOBODY).pw_uid
    ok(loc.run("-f", "boss@example.org", "x@example.org",
               input=b"Subject: spoof?\n\nbody\n", user=NOBODY))
    s.wait_for(1)
    m = s.messages[0]
    assert m.mail_from == "nobody@mx.test"
    assert headers(m.data).startswith(
        "Received: from local (uid %d, nobody)" % uid)
    loc.t.wait_log(r"client=local:nobody from=<boss@example\.org> "
                   r"rewritten=<nobody@mx\.test> reason=local-sender")


def test_local_senders_allows_listed_sender(local, sink):
    s = sink()
    loc = local(sink=s, extra_conf="local-senders nobody @example.org")
    ok(loc.run("-f", "alerts@example.org", "x@example.org",
               input=b"Subject: a\n\nbody\n", user=NOBODY))
    ok(loc.run("-f", "alerts@elsewhere.test", "x@example.org",
               input=b"Subject: b\n\nbody\n", user=NOBODY))
    s.wait_for(2)
    assert sorted(m.mail_from for m in s.messages) == [
        "alerts@example.org", "nobody@mx.test"]


def test_dot_line_ends_message_unless_i(local, ternd):
    loc = local()
    ok(loc.run("x@example.org", input=b"Subject: d\n\nbefore\n.\nafter\n"))
    ok(loc.run("-oi", "x@example.org", input=b"Subject: i\n\nbefore\n.\nafter\n"))
    deadline = time.monotonic() + 10
    while len(loc.t.queue_ids()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    bodies = [loc.t.show_body(q) for q in loc.t.queue_ids()]
    assert len(bodies) == 2
    cut = [b for b in bodies if b"Subject: d" in b][0]
    full = [b for b in bodies if b"Subject: i" in b][0]
    assert b"after" not in cut
    assert full.endswith(b"before\r\n..\r\nafter\r\n") or \
        full.endswith(b"before\r\n.\r\nafter\r\n")


def test_bs_smtp_dialogue(local, sink):
    s = sink()
    loc = local(sink=s)
    script = (b"EHLO client\r\nMAIL FROM:<root@mx.test>\r\n"
              b"RCPT TO:<bs@example.org>\r\nDATA\r\n"
              b"Subject: bs\r\n\r\nvia -bs\r\n.\r\nQUIT\r\n")
    r = ok(loc.run("-bs", input=script))
    out = r.stdout.decode()
    assert out.startswith("220 mx.test"), out
    assert re.search(r"^250 2\.0\.0 Ok: queued as [0-9a-f]{16}\r$", out, re.M), out
    assert out.rstrip().endswith("221 2.0.0 Bye"), out
    s.wait_for(1)
    assert s.messages[0].rcpt_tos == ["bs@example.org"]


def test_ternd_down_exits_75(local):
    loc = local(start=False)
    r = loc.run("x@example.org", input=b"Subject: x\n\nbody\n")
    assert r.returncode == 75, r
    err = r.stderr.decode()
    assert "cannot reach ternd at %s" % loc.socket in err
    assert "is ternd running?" in err and "not sent" in err


def test_bp_q_mailq_newaliases(local):
    loc = local()
    ok(loc.run("x@example.org", input=b"Subject: q\n\nbody\n"))
    deadline = time.monotonic() + 10
    while not loc.t.queue_ids() and time.monotonic() < deadline:
        time.sleep(0.1)
    (qid,) = loc.t.queue_ids()
    r = ok(loc.run("-bp"))
    assert qid in r.stdout.decode() and "x@example.org" in r.stdout.decode()
    r = ok(loc.run(argv0=loc.link("mailq")))
    assert qid in r.stdout.decode()
    r = ok(loc.run("-q"))                 # = ternctl retry all
    assert "-- 1 message retrying" in r.stdout.decode(), r.stdout
    r = ok(loc.run(argv0=loc.link("newaliases")))
    assert "no aliases" in r.stderr.decode()


def test_unknown_option_is_usage_error(local):
    loc = local(start=False)
    r = loc.run("-Z")
    assert r.returncode == 64
    assert "unknown option -Z" in r.stderr.decode()
