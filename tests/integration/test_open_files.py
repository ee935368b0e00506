"""ternd's open-file limit: every session holds a socket, so at start ternd
raises its soft RLIMIT_NOFILE to the hard limit (a service manager often
starts it with 1024 against a far larger hard limit), and says so when the
limit still falls short of max-connections.
"""
import resource
import socket
import time

import pytest


def open_files_limits(pid):
    with open("/proc/%d/limits" % pid) as fh:
        for line in fh:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return (int(soft) if soft != "unlimited" else None,
                        int(hard) if hard != "unlimited" else None)
    raise AssertionError("no 'Max open files' in /proc/%d/limits" % pid)


def start_with_soft_limit(ternd, soft, **kw):
    """Start ternd with our soft limit lowered (it inherits it), then restore ours."""
    old = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, old[1]))
    try:
        return ternd(**kw)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, old)


def test_soft_limit_raised_to_hard(ternd):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard <= 512:
        pytest.skip("hard open-file limit too low to tell")
    t = start_with_soft_limit(ternd, 256, extra_conf="max-connections-per-ip 1000")
    soft_t, hard_t = open_files_limits(t.pid)
    assert soft_t == hard_t, (soft_t, hard_t)
    assert hard_t is None or hard_t >= 512
    # and it uses them: more sessions than the soft limit it was started with
    socks = []
    try:
        for _ in range(300):
            s = socket.create_connection(t.addr(), timeout=10)
            socks.append(s)
        deadline = time.monotonic() + 20
        greeted = 0
        for s in socks:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            if s.recv(64).startswith(b"220"):
                greeted += 1
        assert greeted == 300
    finally:
        for s in socks:
            s.close()
    assert "accept: " not in t.log()


def test_limit_short_of_max_connections_is_logged(ternd):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard + 10000 > 1000000:
        pytest.skip("hard open-file limit too high for max-connections")
    maxconn = hard + 10000
    t = start_with_soft_limit(ternd, 256, extra_conf="max-connections %d" % maxconn)
    soft_t, _ = open_files_limits(t.pid)
    if soft_t is None or soft_t >= maxconn + 1024:
        return      # root with CAP_SYS_RESOURCE raised the hard limit too: nothing to say
    t.wait_log(r"open-file limit %d is below max-connections %d \+ 1024"
               % (soft_t, maxconn))
