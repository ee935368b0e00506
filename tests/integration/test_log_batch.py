"""A session loop's log lines, gathered and written once per turn of its
loop (base/log_loop.c): each line still whole and on time, none lost at a
clean stop, in the text and the JSON format."""
import json
import re
import smtplib
import threading
import time

import pytest

TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z ternd\[\d+\]: \S")


def _send_many(port, n, tag, qids, errors):
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=20) as c:
            c.ehlo("client.test")
            for i in range(n):
                msg = "Subject: %s %d\r\n\r\nbody %d\r\n" % (tag, i, i)
                c.mail("a@client.test")
                c.rcpt("b%d@example.com" % i)
                code, text = c.data(msg)
                assert code == 250, (code, text)
                qids.append(text.decode().split()[-1])
    except Exception as e:      # reported by the test thread
        errors.append(e)


def _check_lines(t, json_format):
    for line in t.log().splitlines():
        if json_format:
            obj = json.loads(line)              # one whole object a line
            assert obj["prog"] == "ternd"
        else:
            assert TEXT_LINE.match(line), "spoilt log line %r" % line


@pytest.mark.parametrize("json_format", [False, True])
def test_session_lines_whole_on_time_and_kept_at_stop(ternd, smtp_raw, json_format):
    t = ternd(trusted="127.0.0.0/8",
              extra_conf="log-format json" if json_format else "")
    qids, errors = [], []
    threads = [threading.Thread(target=_send_many, args=(t.port(), 25, "s%d" % k,
                                                         qids, errors))
               for k in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    assert len(qids) == 100
    # written by the end of the turn that made them, not held until later
    last = qids[-1]
    t.wait_log(r"id=%s .*status=queued" % re.escape(last), timeout=5)
    log = t.log()
    for q in qids:
        assert log.count("id=%s from=" % q) == 1, q
    # a session still open at a clean stop: its lines are all there after
    c = smtp_raw(t.port())
    c.greeting()
    c.ehlo()
    c.cmd("MAIL FROM:<a@client.test>", 250)
    t.stop()
    log = t.log()
    _check_lines(t, json_format)
    assert re.search(r"session=[0-9a-f]+ disconnect client=127\.0\.0\.1 messages=0", log)
    assert log.count(" disconnect client=") == 5
    assert log.count("status=queued") == 100
    last_line = log.splitlines()[-1]
    assert (json.loads(last_line)["msg"] if json_format else last_line).endswith("stopped")
