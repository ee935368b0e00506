"""A small SMTP peer on loopback that counts connections, for scheduler tests.

    mx = FakeMX("127.0.0.2", port).start()
    mx.mode = "ok"        # a healthy sink: 220, EHLO (PIPELINING), MAIL, RCPT, DATA
    mx.mode = "tarpit"    # accept the connection, never send a byte (hold it open)
    mx.mode = "421"       # greet with "421 4.3.2 go away" and close
    mx.data_delay = 0.2   # "ok": seconds before the reply to the final dot
    mx.size = 100         # "ok": offer SIZE 100 in the EHLO reply
    mx.eightbit = False   # "ok": do not offer 8BITMIME
    mx.chunking = True    # "ok": offer CHUNKING and take BDAT
    mx.smtputf8 = True    # "ok": offer SMTPUTF8
    mx.data_defer = 1     # "ok": answer the next N final dots with 451
    mx.deferred           # [(MAIL FROM line, message bytes)] answered with 451
    mx.verbs              # the command verbs received, in order
    mx.data               # [(MAIL FROM line, message bytes dot-unstuffed)]
    mx.wait_messages(n, timeout)     # until n messages arrived
    mx.connections        # connections accepted so far
    mx.open_now, mx.max_open        # open at once: now, and the most ever
    mx.timeline           # [(monotonic time, open connections)] at each change
    mx.rcpts              # recipients of the messages received, in order
    mx.stop()

It is asyncio on its own thread; the mode can change at any time and applies to
connections accepted afterwards. Only what the tests need of SMTP is spoken:
every command gets one reply, in order, so a pipelining client works. No TLS.
"""

import asyncio
import threading
import time


class FakeMX:
    def __init__(self, host, port):
        self.host = host
        self.port = port
        self.mode = "ok"
        self.data_delay = 0.0
        self.size = None
        self.eightbit = True
        self.chunking = False
        self.smtputf8 = False
        self.data_defer = 0
        self.deferred = []
        self.verbs = []
        self.data = []
        self.connections = 0
        self.open_now = 0
        self.max_open = 0
        self.timeline = []
        self.rcpts = []
        self.messages = 0
        self._cond = threading.Condition()
        self._loop = None
        self._server = None
        self._thread = None
        self._writers = set()

    # ---- lifecycle
    def start(self):
        ready = threading.Event()

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._client, self.host, self.port, backlog=512))
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("FakeMX did not start")
        return self

    def stop(self):
        if self._loop is None:
            return

        async def close():
            self._server.close()
            for w in list(self._writers):
                w.close()
            await asyncio.sleep(0)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop = None

    # ---- waiting (test thread)
    def wait_messages(self, n, timeout=10.0):
        self._wait("messages", n, timeout)

    def wait_connections(self, n, timeout=10.0):
        self._wait("connections", n, timeout)

    def _wait(self, attr, n, timeout):
        deadline = time.monotonic() + timeout
        with self._cond:
            while getattr(self, attr) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("FakeMX %s: wanted %d %s within %.0fs, got %d"
                                         % (self.host, n, attr, timeout, getattr(self, attr)))
                self._cond.wait(left)

    # ---- the server (its loop)
    def _opened(self, delta):
        with self._cond:
            if delta > 0:
                self.connections += 1
            self.open_now += delta
            self.max_open = max(self.max_open, self.open_now)
            self.timeline.append((time.monotonic(), self.open_now))
            self._cond.notify_all()

    async def _client(self, reader, writer):
        self._writers.add(writer)
        self._opened(+1)
        try:
            mode = self.mode
            if mode == "tarpit":
                await reader.read()          # until the client gives up
                return
            if mode == "421":
                writer.write(b"421 4.3.2 go away\r\n")
                await writer.drain()
                return
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._opened(-1)
            self._writers.discard(writer)
            try:
                writer.close()
            except Exception:
                pass

    def _defer_one(self, mail, body, writer):
        """A final dot answered with 451 while data_defer lasts."""
        with self._cond:
            if self.data_defer <= 0:
                return False
            self.data_defer -= 1
            self.deferred.append((mail, body))
            self._cond.notify_all()
        writer.write(b"451 4.3.0 try again later\r\n")
        return True

    async def _session(self, reader, writer):
        writer.write(b"220 fakemx ESMTP\r\n")
        rcpts = []
        mail = b""
        chunks = []
        while True:
            line = await reader.readline()
            if not line:
                return
            verb = line[:4].upper()
            self.verbs.append(verb.decode(errors="replace"))
            if verb in (b"EHLO", b"HELO"):
                size = b"250-SIZE %d\r\n" % self.size if self.size else b""
                last = b"250 8BITMIME\r\n" if self.eightbit else b"250 HELP\r\n"
                chunking = b"250-CHUNKING\r\n" if self.chunking else b""
                if self.smtputf8:
                    chunking += b"250-SMTPUTF8\r\n"
                writer.write(b"250-fakemx\r\n" + size + chunking +
                             b"250-PIPELINING\r\n" + last)
            elif verb == b"MAIL":
                rcpts = []
                mail = line.rstrip(b"\r\n")
                writer.write(b"250 2.1.0 ok\r\n")
            elif verb == b"RCPT":
                addr = line.decode("utf-8", errors="replace").split(":", 1)[1].strip()
                rcpts.append(addr.split(">")[0].lstrip("<"))
                writer.write(b"250 2.1.5 ok\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                body = []
                while True:
                    d = await reader.readline()
                    if not d:
                        return
                    if d == b".\r\n":
                        break
                    body.append(d[1:] if d.startswith(b".") else d)
                if self.data_delay:
                    await asyncio.sleep(self.data_delay)
                if self._defer_one(mail, b"".join(body), writer):
                    continue
                with self._cond:
                    self.messages += 1
                    self.rcpts.extend(rcpts)
                    self.data.append((mail, b"".join(body)))
                    self._cond.notify_all()
                writer.write(b"250 2.0.0 ok\r\n")
            elif verb == b"BDAT" and self.chunking:
                args = line.split()
                n = int(args[1])
                chunk = await reader.readexactly(n)
                chunks.append(chunk)
                if len(args) > 2 and args[2].upper() == b"LAST":
                    with self._cond:
                        self.messages += 1
                        self.rcpts.extend(rcpts)
                        self.data.append((mail, b"".join(chunks)))
                        self._cond.notify_all()
                    chunks = []
                writer.write(b"250 2.0.0 ok\r\n")
            elif verb == b"RSET":
                writer.write(b"250 2.0.0 ok\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 2.0.0 bye\r\n")
                await writer.drain()
                return
            else:
                writer.write(b"502 5.5.2 what\r\n")
            await writer.drain()
