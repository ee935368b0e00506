"""ternd start-up checks (doc/ternd.8 START-UP, smtpd/main.c): the
configuration check of `ternd -n -c FILE`, and the refusal to run as root
without a `user` directive.

Each configuration is the one the `ternd` fixture writes (start=False), with
one bad line added through extra_conf; the expected line number is found in
the written text, so the check is on the exact FILE:LINE prefix. Every
process is run with a timeout."""

import os
import re
import subprocess

import pytest

RUN_TIMEOUT = 20


def line_of(t, text):
    """1-based line number of the line `text` in t's configuration."""
    lines = t.conf_text.splitlines()
    assert text in lines, t.conf_text
    return lines.index(text) + 1


def run_ternd(t, *args):
    try:
        return subprocess.run([str(t.bins.ternd)] + list(args), capture_output=True,
                              text=True, timeout=RUN_TIMEOUT, env=t.env)
    except subprocess.TimeoutExpired as e:      # subprocess.run killed it
        pytest.fail("ternd %s still running after %ds (it should have exited): %s"
                    % (" ".join(args), RUN_TIMEOUT, e.stderr))


def test_check_good_config(ternd):
    t = ternd(start=False)
    r = t.check_config()
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ternd: configuration %s is valid\n" % t.conf_path
    assert r.stderr == ""


BAD = [
    # (id, extra lines, the line reported, message after "FILE:LINE: ")
    ("unknown-directive", ["frobnicate yes"], "frobnicate yes",
     'unknown directive "frobnicate"'),
    ("bad-address", ["listen 256.1.2.3:25 relay"], "listen 256.1.2.3:25 relay",
     'listen: bad address "256.1.2.3:25"'),
    ("bad-size", ["max-message-size 12Q"], "max-message-size 12Q",
     'max-message-size: bad size "12Q"'),
    ("missing-cert", ["tls-cert /nonexistent/tern-test/cert.pem",
                      "tls-key /nonexistent/tern-test/key.pem"],
     "tls-cert /nonexistent/tern-test/cert.pem",
     "tls-cert /nonexistent/tern-test/cert.pem: No such file or directory"),
]


@pytest.mark.parametrize("extra,bad_line,message", [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_check_bad_config(ternd, extra, bad_line, message):
    t = ternd(start=False, extra_conf="\n".join(extra))
    r = t.check_config()
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "is valid" not in r.stdout
    want = "%s:%d: %s" % (t.conf_path, line_of(t, bad_line), message)
    assert any(l.startswith(want) for l in r.stderr.splitlines()), (want, r.stderr)
    assert "ternd: %s: configuration has errors" % t.conf_path in r.stderr


def test_check_reports_every_error(ternd):
    # not only the first: each bad line with its own number, in file order
    t = ternd(start=False, extra_conf="frobnicate yes\nmax-recipients 0\nbare-newline maybe")
    r = t.check_config()
    assert r.returncode != 0
    got = [int(m.group(1)) for m in
           re.finditer(r"^%s:(\d+): " % re.escape(str(t.conf_path)), r.stderr, re.M)]
    assert got == [line_of(t, "frobnicate yes"), line_of(t, "max-recipients 0"),
                   line_of(t, "bare-newline maybe")], r.stderr


def test_root_without_user_refuses_to_start(ternd, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root: ternd refuses only when started as root")
    qdir = tmp_path / "queue-never-made"
    t = ternd(start=False, user=None, queue_dir=str(qdir))
    assert not re.search(r"^user ", t.conf_text, re.M)
    # the configuration itself is valid: the refusal is the start-up's
    r = t.check_config()
    assert r.returncode == 0, r.stderr
    r = run_ternd(t, "-c", str(t.conf_path))
    assert r.returncode != 0, r.stderr
    assert "%s: refusing to run as root: set the `user` directive" % t.conf_path \
        in r.stderr, r.stderr
    assert "ready" not in r.stderr
    # refused before anything is done as root (START-UP step 2 comes before
    # binding the listeners and creating the queue directory)
    assert not qdir.exists()
