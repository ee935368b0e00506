"""The manuals and the systemd files agree with the code.

- tern.conf(5) has an entry for every directive of etc/tern.conf and of the
  directive table in base/conf.c;
- ternctl(8) has an entry for every command `ternctl --help` lists, and
  ternd(8) for every option `ternd` accepts;
- each page renders without a warning (man --warnings, groff -ww);
- etc/ternd.service.in, as meson generates it for prefix /usr, passes
  `systemd-analyze verify` (with the built ternd in
  place of /usr/sbin/ternd) and runs what the manuals say;
- `log-format json` (documented in ternd(8), DIAGNOSTICS) really makes ternd
  write one JSON object a line, with the key=value pairs broken out.
"""

import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import REPO, require_tool

DOC = REPO / "doc"
ETC = REPO / "etc"
PAGES = ["ternd.8", "ternctl.8", "tern.conf.5", "tern-sendmail.8"]

NAME_RE = r"[a-z][a-z0-9-]*"


def roff_plain(s):
    """Text of a roff line without font escapes and with \\- as '-'."""
    s = s.replace("\\-", "-").replace("\\%", "").replace("\\&", "")
    s = re.sub(r"\\f[BIRP]", "", s)
    return s


def tagged_entries(page):
    """First word of every .TP tag of a man page (the entry names)."""
    lines = (DOC / page).read_text().splitlines()
    names = []
    for i, line in enumerate(lines[:-1]):
        if line.strip() != ".TP":
            continue
        tag = lines[i + 1]
        m = re.match(r'^\.(?:B|BI|BR|IB|I)\s+"?([^"\s]+)', tag)
        if m:
            names.append(roff_plain(m.group(1)))
    return names


def conf_sample_names():
    """Directive names in etc/tern.conf: `name value` and `#name value`."""
    names = []
    for line in (ETC / "tern.conf").read_text().splitlines():
        m = re.match(r"^#?(%s)(\s|$)" % NAME_RE, line)
        if m:
            names.append(m.group(1))
    return names


def conf_table_names():
    """Directive names of conf_table[] in base/conf.c."""
    src = (REPO / "base" / "conf.c").read_text()
    m = re.search(r"conf_table\[\]\s*=\s*\{(.*?)\n\};", src, re.S)
    assert m, "conf_table[] not found in base/conf.c"
    return re.findall(r'(?:D_[A-Z]+\(|\{\s*)"(%s)"' % NAME_RE, m.group(1))


def test_conf_sources_are_parsed():
    # guard the parsers above: both sources give the same, non-trivial set
    sample, table = set(conf_sample_names()), set(conf_table_names())
    assert len(table) >= 30 and {"listen", "log-format", "mx-port"} <= table
    assert sample == table, ("etc/tern.conf and conf_table[] differ: "
                             "only in the sample %s, only in the table %s"
                             % (sorted(sample - table), sorted(table - sample)))


@pytest.mark.parametrize("source", ["etc/tern.conf", "base/conf.c"])
def test_every_directive_in_tern_conf_5(source):
    names = conf_sample_names() if source == "etc/tern.conf" else conf_table_names()
    entries = set(tagged_entries("tern.conf.5"))
    missing = [n for n in names if n not in entries]
    assert not missing, "tern.conf.5 has no .TP entry for: %s" % ", ".join(missing)


def test_tern_conf_5_defaults_match_the_table():
    # every directive with a fixed default in conf_table[] says so in the page
    src = (REPO / "base" / "conf.c").read_text()
    table = re.search(r"conf_table\[\]\s*=\s*\{(.*?)\n\};", src, re.S).group(1)
    defaults = dict(re.findall(
        r'D_(?:UINT|SIZE|DUR)\("(%s)",\s*"([^"]+)"' % NAME_RE, table))
    defaults.update(re.findall(r'D_WORD\("(%s)",\s*"([^"]+)"' % NAME_RE, table))
    assert len(defaults) >= 20
    text = roff_plain((DOC / "tern.conf.5").read_text())
    for name, default in defaults.items():
        # the entry runs from its tag to the next .TP/.SS/.SH
        m = re.search(r"\n\.TP\n\.B[IR]? \"?%s\b(.*?)\n\.(?:TP|SS|SH)\b" % re.escape(name),
                      text, re.S)
        assert m, "no entry for %s" % name
        body = m.group(1).replace("\n.B ", " ").replace("\n.BR ", " ")
        assert re.search(r"Default:\s*%s\b" % re.escape(default), body), \
            "tern.conf.5: %s should say Default: %s" % (name, default)


def ternctl_help_commands(tern_bin):
    r = subprocess.run([str(tern_bin.ternctl), "--help"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(l.startswith("usage: ternctl") for l in lines), r.stdout
    start = lines.index("commands:") + 1
    cmds = []
    for l in lines[start:]:
        if not l.startswith(" "):
            break                                 # "filters:", "exit:" ...
        m = re.match(r"^\s+(%s)\b" % NAME_RE, l)
        if m and m.group(1) not in cmds:
            cmds.append(m.group(1))
    return cmds


def test_every_ternctl_command_in_ternctl_8(tern_bin):
    cmds = ternctl_help_commands(tern_bin)
    assert {"queue", "show", "ping", "user"} <= set(cmds), cmds
    entries = set(tagged_entries("ternctl.8"))
    missing = [c for c in cmds if c not in entries]
    assert not missing, "ternctl.8 has no .TP entry for: %s" % ", ".join(missing)


def test_ternd_options_in_ternd_8(tern_bin):
    r = subprocess.run([str(tern_bin.ternd), "-h"], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 2                      # usage, as EXIT STATUS says
    opts = re.findall(r"^\s+(-[a-z])\b", r.stderr, re.M)
    assert set(opts) >= {"-c", "-n", "-v"}, r.stderr
    entries = set(tagged_entries("ternd.8"))
    missing = [o for o in opts if o not in entries]
    assert not missing, "ternd.8 has no .TP entry for: %s" % ", ".join(missing)


@pytest.mark.parametrize("page", ["ternd.8", "ternctl.8"])
def test_exit_status_sections(page):
    text = (DOC / page).read_text()
    sect = text.split(".SH EXIT STATUS", 1)[1].split("\n.SH ", 1)[0]
    codes = re.findall(r"^\.TP\n\.B (\d+)$", sect, re.M)
    want = ["0", "1", "2"] if page == "ternd.8" else ["0", "1", "2", "3", "4"]
    assert codes == want


@pytest.mark.parametrize("page", PAGES)
def test_page_has_the_sections(page):
    text = (DOC / page).read_text()
    heads = re.findall(r"^\.SH (.+)$", text, re.M)
    for h in ["NAME", "SYNOPSIS", "DESCRIPTION", "FILES", "SEE ALSO"]:
        assert h in heads, "%s lacks .SH %s" % (page, h)
    if page == "ternd.8":
        for h in ["OPTIONS", "SIGNALS", "DIAGNOSTICS", "SECURITY", "EXIT STATUS"]:
            assert h in heads, "%s lacks .SH %s" % (page, h)


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_warnings(page):
    man = require_tool("man")
    groff = require_tool("groff")
    env = dict(os.environ, MANWIDTH="80", LC_ALL="C.UTF-8")
    r = subprocess.run([man, "--warnings", "-l", str(DOC / page)], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "SEE ALSO" in r.stdout
    r = subprocess.run([groff, "-man", "-ww", "-z", str(DOC / page)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr


def unit_text():
    """etc/ternd.service.in as meson makes it for the package layout
    (prefix /usr, sysconfdir /etc)."""
    return ((ETC / "ternd.service.in").read_text()
            .replace("@SBINDIR@", "/usr/sbin").replace("@SYSCONFDIR@", "/etc"))


def unit_settings():
    settings = {}
    for line in unit_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            settings.setdefault(k, []).append(v)
    return settings


def test_unit_runs_what_the_manuals_say():
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["RuntimeDirectory"] == ["tern"]
    assert s["ExecStart"] == ["/usr/sbin/ternd -c /etc/tern/tern.conf"]
    assert s["ExecStartPre"] == ["/usr/sbin/ternd -n -c /etc/tern/tern.conf"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["KillSignal"] == ["SIGTERM"]
    caps = set(s["CapabilityBoundingSet"][0].split())
    assert caps == {"CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID", "CAP_CHOWN",
                    "CAP_SETPCAP"}
    assert s["ReadWritePaths"] == ["/var/spool/tern"]
    # the sandbox ternd(8) PRIVILEGES describes
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"),
                       ("PrivateTmp", "yes"), ("ProtectHome", "yes"),
                       ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX")):
        assert s[key] == [value], key
    # the queue directory of the unit, tmpfiles.d and sysusers.d is the default
    assert "d /var/spool/tern 0750 tern tern -" in (ETC / "tern.tmpfiles").read_text()
    assert re.search(r'^u tern - "[^"]+" /var/spool/tern$',
                     (ETC / "tern.sysusers").read_text(), re.M)
    assert re.search(r"^#?queue /var/spool/tern$", (ETC / "tern.conf").read_text(), re.M)


def test_unit_verifies(tern_bin, tmp_path):
    tool = require_tool("systemd-analyze")
    unit = tmp_path / "ternd.service"
    unit.write_text(unit_text().replace("/usr/sbin/ternd", str(tern_bin.ternd)))
    r = subprocess.run([tool, "verify", "--man=no", str(unit)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_log_format_json(ternd):
    """ternd with log-format json: every line of its stderr is one JSON object."""
    t = ternd(extra_conf="log-format json", start=False)
    log_path = t.workdir / "json.log"
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen([str(t.bins.ternd), "-c", str(t.conf_path)],
                                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                env=t.env, cwd=str(t.workdir))
    try:
        deadline = time.monotonic() + 15
        while "ready listeners=" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, "ternd exited: %s" % log_path.read_text()
            assert time.monotonic() < deadline, "no ready line: %s" % log_path.read_text()
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            pytest.fail("ternd did not stop on SIGTERM")
    assert rc == 0
    lines = log_path.read_text().splitlines()
    assert lines
    if not lines[0].startswith("{"):
        pytest.fail("log-format json is not applied: add "
                    "log_set_json(conf->log_json) after conf_load() in "
                    "smtpd/main.c\n" + "\n".join(lines[:5]))
    ready = None
    for line in lines:
        obj = json.loads(line)                    # every line: one object
        assert {"ts", "level", "prog", "pid", "msg"} <= set(obj), line
        assert obj["prog"] == "ternd" and obj["pid"] == proc.pid
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", obj["ts"])
        if obj["msg"].startswith("ready "):
            ready = obj
    assert ready is not None, lines
    assert ready["level"] == "info"
    assert ready["threads"] >= 1 and isinstance(ready["threads"], int)
    assert ready["listeners"] == "127.0.0.1:%d/relay" % t.port("relay")
    assert json.loads(lines[-1])["msg"] == "stopped"
