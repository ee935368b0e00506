"""A private Dovecot (LMTP + IMAP) for tests and bench/lmtp.py.

Everything lives in one fresh directory under /tmp (mode 0755, so that
ternd's unprivileged run-time user reaches the LMTP unix socket): its own
dovecot.conf (base_dir, state_dir, log file, `ssl = no`), a passwd-file with
the users (password "secret" each; a recipient "user@any.domain" is the user
"user"), Maildirs, an LMTP listener on 127.0.0.1:<free port>, an LMTP unix
socket and an IMAP listener on 127.0.0.1:<free port>. It runs as
`dovecot -F -c CONF`, a child process stopped by its PID. The system instance
(/etc/dovecot) is never used nor touched.

    d = Dovecot(["bob", "carol"], quota={"carol": "1"}).start()
    d.lmtp_port, d.lmtp_socket, d.imap_port
    d.fetch_all("bob") -> [raw message bytes] of bob's INBOX, over IMAP
    d.auth_socket            Dovecot's auth-client socket (mode 0666), for a
                             Postfix smtpd with smtpd_sasl_type = dovecot
    d.stop(); d.start()      (same ports, same mail)
    d.cleanup()              (stop and remove the directory)

fsync=False: `mail_fsync = never` (bench/lmtp.py, to see tern's side alone).
quota: user -> storage limit in KiB (Dovecot's quota plugin, maildir
backend): mail over it is refused after the end of data with a per-recipient
552 5.2.2 (452 4.2.2 with quota_tempfail=True).
"""

import imaplib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from conftest import free_port

PASSWORD = "secret"
DOVECOT = "/usr/sbin/dovecot"


def _ids():
    """(uid, gid, internal user, login user) for the mail and the services."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        return os.geteuid(), os.getegid(), me, me
    d = pwd.getpwnam("dovecot")
    login = "dovenull"
    try:
        pwd.getpwnam(login)
    except KeyError:
        login = "nobody"
    return d.pw_uid, d.pw_gid, "dovecot", login


class Dovecot:
    def __init__(self, users, quota=None, quota_tempfail=False, fsync=True):
        self.dir = tempfile.mkdtemp(prefix="terndc-", dir="/tmp")
        os.chmod(self.dir, 0o755)
        self.conf = os.path.join(self.dir, "dovecot.conf")
        self.log_path = os.path.join(self.dir, "dovecot.log")
        self.lmtp_port = free_port()
        self.imap_port = free_port()
        self.lmtp_socket = os.path.join(self.dir, "lmtp")
        self.auth_socket = os.path.join(self.dir, "run", "auth-client")
        self.proc = None
        uid, gid, internal, login = _ids()
        mail = os.path.join(self.dir, "mail")
        os.mkdir(mail)
        os.chown(mail, uid, gid)
        quota = quota or {}
        with open(os.path.join(self.dir, "users"), "w") as f:
            for u in users:
                extra = ("userdb_quota_rule=*:storage=%s" % quota[u]) if u in quota else ""
                f.write("%s:{PLAIN}%s:%d:%d::%s/%s::%s\n"
                        % (u, PASSWORD, uid, gid, mail, u, extra))
        plugins = ""
        if quota:
            plugins = ("mail_plugins = $mail_plugins quota\n"
                       "quota_full_tempfail = %s\n"
                       "plugin {\n  quota = maildir:User quota\n}\n"
                       % ("yes" if quota_tempfail else "no"))
        if not fsync:
            plugins += "mail_fsync = never\n"
        with open(self.conf, "w") as f:
            f.write("""# private test instance (tests/integration/dovecot.py)
base_dir = {d}/run
state_dir = {d}/state
instance_name = terntest-{lp}
log_path = {d}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %Ln
protocols = lmtp imap
listen = 127.0.0.1
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = {uid}
last_valid_uid = {uid}
mail_location = maildir:~/Maildir
{plugins}passdb {{
  driver = passwd-file
  args = {d}/users
}}
userdb {{
  driver = passwd-file
  args = {d}/users
}}
service lmtp {{
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {lp}
  }}
  unix_listener {sock} {{
    mode = 0666
  }}
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {ip}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service auth {{
  unix_listener auth-client {{
    mode = 0666
  }}
}}
protocol lmtp {{
  postmaster_address = postmaster@example.com
}}
""".format(d=self.dir, lp=self.lmtp_port, ip=self.imap_port, sock=self.lmtp_socket,
           internal=internal, login=login, uid=uid, plugins=plugins))

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def start(self, timeout=15.0):
        assert not self.running
        self.proc = subprocess.Popen([DOVECOT, "-F", "-c", self.conf],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "stderr"), "ab"))
        deadline = time.monotonic() + timeout
        while True:
            # the master binds every listener before it starts a service:
            # the socket file and an IMAP connection tell it is ready (no
            # probe on LMTP, so its log counts tern's connections only)
            ok = os.path.exists(self.lmtp_socket)
            try:
                socket.create_connection(("127.0.0.1", self.imap_port), timeout=1).close()
            except OSError:
                ok = False
            if ok:
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("dovecot did not start; log:\n%s\n%s"
                                   % (self.log(), open(os.path.join(self.dir, "stderr"),
                                                       errors="replace").read()))
            time.sleep(0.05)

    def stop(self, timeout=10.0):
        """SIGTERM by PID, then SIGKILL after timeout (its children follow the
        master: they exit when it closes their pipes)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None
        # the old listeners are gone once nothing answers on them
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.lmtp_port), timeout=1).close()
            except OSError:
                break
            time.sleep(0.05)
        try:
            os.unlink(self.lmtp_socket)
        except OSError:
            pass

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- reading mail back over IMAP
    def imap(self, user):
        m = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=10)
        m.login(user, PASSWORD)
        return m

    def fetch_all(self, user, mailbox="INBOX"):
        """Every message of user's mailbox, raw bytes, in order."""
        m = self.imap(user)
        try:
            typ, _ = m.select(mailbox, readonly=True)
            assert typ == "OK", typ
            typ, data = m.search(None, "ALL")
            assert typ == "OK", data
            out = []
            for num in data[0].split():
                typ, d = m.fetch(num, "(BODY.PEEK[])")
                assert typ == "OK", d
                out.append(d[0][1])
            return out
        finally:
            m.logout()

    def wait_count(self, user, n, timeout=15.0):
        """Poll user's INBOX until it holds at least n messages; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            msgs = self.fetch_all(user)
            if len(msgs) >= n:
                return msgs
            if time.monotonic() > deadline:
                raise AssertionError("%s has %d message(s), expected %d; dovecot log:\n%s"
                                     % (user, len(msgs), n, self.log()[-3000:]))
            time.sleep(0.1)
