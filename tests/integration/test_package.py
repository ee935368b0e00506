"""The Debian package, built from this tree and run as installed.

One test, slow (a release build with debhelper: minutes): it copies the tree
to a temporary directory (dpkg-buildpackage writes its .deb next to the
tree), runs `dpkg-buildpackage -us -uc -b`, checks the package with lintian
(no error) and its control fields (an MTA: Provides, Conflicts, Replaces
mail-transport-agent), unpacks it with `dpkg-deb -x` into a temporary root
and runs what it installed: the packaged ternd with the packaged default
/etc/tern/tern.conf (paths rebased into the root, the loopback port moved
to a free one, the test's DNS server and a dead route added), then the
packaged /usr/sbin/sendmail -t, and sees the message queued with the
packaged mailq, and once ternd is stopped with the packaged ternctl (its
ternctl-local answers from the queue directory). Installing it with dpkg -i is not done: on a host whose
tests also need Postfix the two conflict, as MTAs do.

Run once: under ASan (TERN_SANITIZED) it is skipped, the package does not
depend on the sanitizer build. It is skipped when the build dependencies
are missing, except in CI (.ci/run installs them from etc/debian-packages).
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import IN_CI, REPO, default_user, free_port

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("TERN_SANITIZED")),
    reason="the package is built once, by the plain integration run")


def need(ok, why):
    if not ok:
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)


def copy_tree(dst):
    """The files of the tree (tracked, and new ones not ignored), no builds."""
    r = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z", "-co",
                        "--exclude-standard"], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for name in r.stdout.decode().split("\0"):
        if not name or name.startswith(("build", "obj-")):
            continue
        src = REPO / name
        if not src.is_file():
            continue            # deleted in the work tree
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / name)


def rebase_conf(text, root, port, dns_addr, dead_port):
    """The packaged tern.conf with its paths under root and test-only lines."""
    out = []
    for line in text.splitlines():
        line = line.replace("/var/spool/tern", str(root / "var/spool/tern"))
        line = line.replace("/run/tern", str(root / "run/tern"))
        line = line.replace("listen 127.0.0.1:25 ", "listen 127.0.0.1:%d " % port)
        if line.startswith("user "):
            user = default_user()
            line = "user %s" % user if user else "# " + line
        out.append(line)
    out += ["hostname pkg.test", "resolver %s" % dns_addr,
            "route * smtp:[127.0.0.1]:%d" % dead_port]
    return "\n".join(out) + "\n"


def test_deb_builds_installs_and_takes_mail(dns):
    need(shutil.which("dpkg-buildpackage") and shutil.which("dh"),
         "dpkg-buildpackage or debhelper not installed (etc/debian-packages)")
    work = Path(tempfile.mkdtemp(prefix="ternpkg-", dir="/tmp"))
    os.chmod(work, 0o755)        # the unpacked ternd runs as its user
    proc = None
    try:
        src = work / "src" / "tern-0.1.0"
        src.mkdir(parents=True)
        copy_tree(src)
        r = subprocess.run(["dpkg-checkbuilddeps"], cwd=src, capture_output=True,
                           text=True, timeout=60)
        need(r.returncode == 0, "build dependencies missing: %s" % r.stderr.strip())

        env = dict(os.environ, DEB_BUILD_OPTIONS="nocheck parallel=2")
        r = subprocess.run(["dpkg-buildpackage", "-us", "-uc", "-b"], cwd=src,
                           env=env, capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, "dpkg-buildpackage failed:\n" + \
            (r.stdout + r.stderr)[-4000:]
        deb = work / "src" / "tern_0.1.0_amd64.deb"
        if not deb.exists():
            (deb,) = (work / "src").glob("tern_*.deb")

        fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Provides", "Conflicts",
                                 "Replaces"], capture_output=True, text=True,
                                timeout=60).stdout
        for f in ("Provides", "Conflicts", "Replaces"):
            assert "%s: mail-transport-agent" % f in fields, fields

        if shutil.which("lintian"):
            r = subprocess.run(["lintian", "--fail-on", "error", str(deb)],
                               capture_output=True, text=True, timeout=600)
            errors = [l for l in r.stdout.splitlines() if l.startswith("E:")]
            assert r.returncode == 0 and not errors, r.stdout + r.stderr
        else:
            need(False, "lintian not installed (etc/debian-packages)")

        root = work / "root"
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=60)
        for p in ("usr/sbin/ternd", "usr/sbin/ternctl", "usr/sbin/ternctl-local",
                  "usr/share/man/man8/ternctl-local.8.gz", "usr/sbin/tern-sendmail",
                  "usr/sbin/sendmail", "usr/bin/mailq", "usr/bin/newaliases",
                  "usr/lib/sendmail", "usr/lib/sysusers.d/tern.conf",
                  "usr/lib/tmpfiles.d/tern.conf", "etc/tern/tern.conf",
                  "usr/share/man/man8/tern-sendmail.8.gz"):
            assert (root / p).exists(), p
        unit = (root / "lib/systemd/system/ternd.service").read_text()
        assert "\nExecStart=/usr/sbin/ternd -c /etc/tern/tern.conf\n" in unit
        assert "\nType=notify\n" in unit
        assert "@SBINDIR@" not in unit and "@SYSCONFDIR@" not in unit

        conf = root / "etc/tern/tern.conf"
        r = subprocess.run([str(root / "usr/sbin/ternd"), "-n", "-c", str(conf)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr            # valid as shipped
        port = free_port()
        dead = free_port()
        conf.write_text(rebase_conf(conf.read_text(), root, port, dns.addr, dead))
        (root / "var/spool").mkdir(parents=True)
        (root / "run").mkdir()
        os.chmod(root, 0o755)

        t0 = time.monotonic()
        log = work / "ternd.log"
        with open(log, "wb") as logf:
            proc = subprocess.Popen([str(root / "usr/sbin/ternd"), "-c", str(conf)],
                                    stdin=subprocess.DEVNULL, stdout=logf,
                                    stderr=logf, cwd=str(work))
        deadline = time.monotonic() + 30
        while "ready listeners=" not in log.read_text(errors="replace"):
            assert proc.poll() is None, "ternd exited: " + log.read_text()
            assert time.monotonic() < deadline, "not ready: " + log.read_text()
            time.sleep(0.02)
        r = subprocess.run([str(root / "usr/sbin/sendmail"), "-C", str(conf), "-t"],
                           input=b"To: ops@example.org\nSubject: from the package\n\n"
                                 b"hello\n", capture_output=True, timeout=30)
        accepted = time.monotonic() - t0
        assert r.returncode == 0, r.stderr.decode() + log.read_text()
        print("package: start to first accepted message %.3f s" % accepted)

        r = subprocess.run([str(root / "usr/bin/mailq"), "-C", str(conf)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert "<root@pkg.test>" in r.stdout and "ops@example.org" in r.stdout, r.stdout
        assert "status=queued" in log.read_text()

        # ternd stopped: the packaged ternctl answers from the queue
        # directory through the packaged ternctl-local beside it
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=15)
        r = subprocess.run([str(root / "usr/sbin/ternctl"), "-c", str(conf), "queue"],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        assert "answered from the queue directory" in r.stderr, r.stderr
        assert "ops@example.org" in r.stdout, r.stdout
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)
