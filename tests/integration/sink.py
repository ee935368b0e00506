"""An SMTP sink (aiosmtpd) that records what it is sent and misbehaves on demand.

    s = Sink("127.0.0.2", port).start()
    ...                                       # ternd delivers to it
    msgs = s.wait_for(1, timeout=10)          # list of SinkMessage
    msgs[0].mail_from, msgs[0].rcpt_tos, msgs[0].data (raw bytes as received,
        after dot-unstuffing, CRLF line ends), msgs[0].mail_options, .peer, .tls
    s.stop()

Behaviour knobs (set any time, from the test thread):

    s.rcpt_reply["bad@example.test"] = "550 5.1.1 no such user"   # per recipient
    s.rcpt_reply["busy@example.test"] = "450 4.2.1 try later"
    s.mail_reply = "421 4.3.2 go away"      # answer to every MAIL (None = 250)
    s.data_reply = "451 4.3.0 later"        # answer after the data (None = 250)
    s.hang = "greeting" | "ehlo" | "mail" | "rcpt" | "data" | None
        # stop answering at that point (for "data": after the whole message
        # and the final dot were received). s.release() lets hung sessions go
        # on; stop() cancels them.

    s.requiretls = True   # offer REQUIRETLS (RFC 8689) in EHLO over TLS and
        # take the MAIL parameter: msgs[0].requiretls says whether it came
    s.dsn = True      # offer DSN (RFC 3461) in EHLO and take its parameters:
        # msgs[0].dsn_mail lists MAIL's RET=/ENVID= as sent, msgs[0].dsn_rcpt
        # one list per accepted recipient of its NOTIFY=/ORCPT= as sent

Only recipients accepted with 250 are recorded in rcpt_tos; refused ones are
in SinkMessage.refused. s.sessions counts connections; s.ehlo_names lists the
EHLO/HELO names in order.
"""

import asyncio
import ssl
import threading
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


class SinkMessage:
    def __init__(self, mail_from, rcpt_tos, data, mail_options, rcpt_options, refused,
                 peer, tls, ehlo):
        self.mail_from = mail_from
        self.rcpt_tos = rcpt_tos
        self.data = data
        self.mail_options = mail_options
        self.rcpt_options = rcpt_options
        self.refused = refused
        self.peer = peer
        self.tls = tls
        self.ehlo = ehlo
        self.dsn_mail = []
        self.dsn_rcpt = []
        self.requiretls = False

    def __repr__(self):
        return "<SinkMessage from=%r to=%r %d bytes>" % (self.mail_from, self.rcpt_tos,
                                                         len(self.data))


class _Handler:
    def __init__(self, sink):
        self.sink = sink

    async def _maybe_hang(self, stage):
        if self.sink.hang == stage:
            self.sink._note_hung(stage)
            ev = self.sink._release_event
            try:
                await asyncio.wait_for(ev.wait(), timeout=self.sink.hang_limit)
            except asyncio.TimeoutError:
                pass

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.sink._note_ehlo(hostname)
        await self._maybe_hang("ehlo")
        session.host_name = hostname
        if self.sink.dsn:
            responses.insert(len(responses) - 1, "250-DSN")
        if self.sink.requiretls and session.ssl is not None:
            responses.insert(len(responses) - 1, "250-REQUIRETLS")
        return responses

    async def handle_HELO(self, server, session, envelope, hostname):
        self.sink._note_ehlo(hostname)
        await self._maybe_hang("ehlo")
        session.host_name = hostname
        return "250 %s" % server.hostname

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        await self._maybe_hang("mail")
        if self.sink.mail_reply:
            return self.sink.mail_reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        envelope.refused = []
        envelope.rcpt_opts = []
        return "250 2.1.0 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        await self._maybe_hang("rcpt")
        reply = self.sink.rcpt_reply.get(address) or self.sink.rcpt_reply.get(address.lower())
        if reply and not reply.startswith("2"):
            if not hasattr(envelope, "refused"):
                envelope.refused = []
            envelope.refused.append((address, reply))
            return reply
        envelope.rcpt_tos.append(address)
        if not hasattr(envelope, "rcpt_opts"):
            envelope.rcpt_opts = []
        envelope.rcpt_opts.append(rcpt_options)
        if not hasattr(envelope, "dsn_rcpt"):
            envelope.dsn_rcpt = []
        envelope.dsn_rcpt.append(server.dsn_pending_rcpt)
        return reply or "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        await self._maybe_hang("data")
        reply = self.sink.data_reply
        if reply and not reply.startswith("2"):
            self.sink._note_refused_data(envelope, reply)
            return reply
        data = envelope.original_content
        if data is None:
            data = envelope.content
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        msg = SinkMessage(
            mail_from=envelope.mail_from,
            rcpt_tos=list(envelope.rcpt_tos),
            data=bytes(data),
            mail_options=list(envelope.mail_options),
            rcpt_options=list(getattr(envelope, "rcpt_opts", [])),
            refused=list(getattr(envelope, "refused", [])),
            peer=session.peer,
            tls=session.ssl is not None,
            ehlo=session.host_name,
        )
        msg.dsn_mail = list(getattr(envelope, "dsn_mail", []))
        msg.requiretls = getattr(envelope, "requiretls", False)
        msg.dsn_rcpt = list(getattr(envelope, "dsn_rcpt", []))
        self.sink._add(msg)
        return reply or "250 2.0.0 OK: received"


def _split_params(arg, names):
    """arg without the parameters named (as sent), and those parameters."""
    keep, taken = [], []
    for word in arg.split(" "):
        (taken if word.split("=", 1)[0].upper() in names else keep).append(word)
    return " ".join(keep), taken


class _SinkSMTP(SMTP):
    dsn_pending_rcpt = []

    # aiosmtpd refuses parameters it does not know (555): with s.dsn the
    # DSN ones are taken out first and recorded as sent (case kept)
    async def smtp_MAIL(self, arg):
        if self.event_handler.sink.dsn and arg:
            arg, taken = _split_params(arg, ("RET", "ENVID"))
            self.envelope.dsn_mail = taken
        if self.event_handler.sink.requiretls and arg:
            arg, taken = _split_params(arg, ("REQUIRETLS",))
            self.envelope.requiretls = bool(taken)
        return await super().smtp_MAIL(arg)

    async def smtp_RCPT(self, arg):
        self.dsn_pending_rcpt = []
        if self.event_handler.sink.dsn and arg:
            arg, self.dsn_pending_rcpt = _split_params(arg, ("NOTIFY", "ORCPT"))
        return await super().smtp_RCPT(arg)

    async def _handle_client(self):
        sink = self.event_handler.sink
        sink._note_session()
        if sink.hang == "greeting":
            sink._note_hung("greeting")
            try:
                await asyncio.wait_for(sink._release_event.wait(), timeout=sink.hang_limit)
            except asyncio.TimeoutError:
                pass
        return await super()._handle_client()


class _SinkController(Controller):
    def __init__(self, sink, host, port, tls_context):
        self._sink = sink
        self._tls_context = tls_context
        super().__init__(_Handler(sink), hostname=host, port=port,
                         ready_timeout=10)

    def factory(self):
        return _SinkSMTP(self.handler, data_size_limit=64 * 1024 * 1024,
                         enable_SMTPUTF8=True, decode_data=False,
                         hostname="sink.test", tls_context=self._tls_context,
                         require_starttls=False, timeout=60)


class Sink:
    """See the module docstring."""

    def __init__(self, host="127.0.0.1", port=None, tls_cert=None, tls_key=None):
        if port is None:
            raise ValueError("Sink needs a port (use conftest.free_port())")
        self.host = host
        self.port = port
        self.rcpt_reply = {}
        self.mail_reply = None
        self.data_reply = None
        self.hang = None
        self.hang_limit = 120.0
        self.dsn = False
        self.requiretls = False
        self.messages = []
        self.refused_data = []
        self.sessions = 0
        self.ehlo_names = []
        self.hung = []                 # stages at which a session hung, in order
        self._cond = threading.Condition()
        self._loop = None
        self._release_event = None
        ctx = None
        if tls_cert:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(tls_cert, tls_key)
        self._controller = _SinkController(self, host, port, ctx)

    # called on the sink's loop thread
    def _add(self, msg):
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def _note_refused_data(self, envelope, reply):
        with self._cond:
            self.refused_data.append((envelope.mail_from, list(envelope.rcpt_tos), reply))
            self._cond.notify_all()

    def _note_session(self):
        with self._cond:
            self.sessions += 1
            self._cond.notify_all()

    def _note_ehlo(self, name):
        with self._cond:
            self.ehlo_names.append(name)

    def _note_hung(self, stage):
        with self._cond:
            self.hung.append(stage)
            self._cond.notify_all()

    def start(self):
        self._controller.start()
        self._loop = self._controller.loop
        fut = asyncio.run_coroutine_threadsafe(self._make_event(), self._loop)
        self._release_event = fut.result(5)
        # the controller's own start-up probe counted as a session
        with self._cond:
            self.sessions = 0
            self.ehlo_names.clear()
        return self

    async def _make_event(self):
        return asyncio.Event()

    def release(self):
        """Let sessions hung by `hang` go on (and stop hanging new ones)."""
        self.hang = None
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._release_event.set)

    def stop(self):
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._release_event.set)
        try:
            self._controller.stop()
        except AssertionError:
            pass  # never started
        self._loop = None

    def wait_for(self, n, timeout=10.0):
        """Wait until at least n messages arrived; return the list (a copy).
        Raises AssertionError with what did arrive on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("sink %s:%d: wanted %d messages within %.0fs, got %d: %r"
                                         % (self.host, self.port, n, timeout,
                                            len(self.messages), self.messages))
                self._cond.wait(left)
            return list(self.messages)

    def wait_hung(self, stage, timeout=10.0):
        """Wait until some session hung at `stage`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while stage not in self.hung:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("sink: no session hung at %r within %.0fs" % (stage, timeout))
                self._cond.wait(left)
