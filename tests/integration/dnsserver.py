"""A small authoritative DNS server for the integration tests.

Serves the zones a test declares, on 127.0.0.1 (UDP and TCP, same port), from
two daemon threads. Everything not declared is NXDOMAIN, so no query made by
ternd under test can ever need (or reach) a real resolver.

Zones are a dict: name -> {rtype: [records]}:

    dns.set_zone({
        "example.test":      {"MX": [(10, "mx1.example.test"), (20, "mx2.example.test")]},
        "mx1.example.test":  {"A": ["127.0.0.2"], "AAAA": ["::1"]},
        "nullmx.test":       {"MX": [(0, ".")]},           # RFC 7505 null MX
        "alias.test":        {"CNAME": ["mx1.example.test"]},
        "txt.test":          {"TXT": ["v=spf1 -all"]},
    })

A name that exists but lacks the asked type answers NOERROR with no answer
(NODATA). Names are case-insensitive; a trailing dot is optional.

Failure injection per name (any type, or one type):

    dns.servfail("broken.test")            # rcode SERVFAIL
    dns.timeout("slow.test", "MX")         # no answer at all (client times out)
    dns.clear_faults()

DNSSEC, as a validating resolver reports it (RFC 4035 3.2.3), for DANE:

    dns.ad = True                          # set the AD bit on every answer
    dns.insecure("example.test")           # ... except this name's (any type)
    dns.add("_25._tcp.mx.example.test", "TLSA", (3, 1, 1, "ab12..."))
        # TLSA: (usage, selector, matching type, hex or bytes)

Every query is recorded in dns.queries as (name, type, proto) tuples, e.g.
("example.test", "MX", "udp"), so a test can assert what was (not) asked.
"""

import socket
import socketserver
import struct
import threading

from dnslib import AAAA, CNAME, MX, QTYPE, RCODE, RR, TLSA, TXT, A, DNSRecord

TTL = 60


def _norm(name):
    name = str(name).lower()
    return name[:-1] if name.endswith(".") and name != "." else name


class TestDNSServer:
    """dnslib-based authoritative server; see the module docstring."""

    def __init__(self, host="127.0.0.1", port=0):
        self.host = host
        self._lock = threading.Lock()
        self._zones = {}
        self._faults = {}          # (name, type or None) -> "servfail"|"timeout"
        self.ad = False            # AD bit on answers (see the docstring)
        self._insecure = set()     # names answered without it
        self.queries = []
        self._udp = None
        self._tcp = None
        self._threads = []
        self.port = port

    # ---- zone management -------------------------------------------------

    def set_zone(self, zones):
        """Replace all records with `zones` (see module docstring)."""
        parsed = {}
        for name, rrsets in zones.items():
            parsed[_norm(name)] = {t.upper(): list(v) for t, v in rrsets.items()}
        with self._lock:
            self._zones = parsed

    def add(self, name, rtype, *records):
        """Add records to one name (creating it)."""
        with self._lock:
            self._zones.setdefault(_norm(name), {}).setdefault(rtype.upper(), []).extend(records)

    def servfail(self, name, rtype=None):
        with self._lock:
            self._faults[(_norm(name), rtype.upper() if rtype else None)] = "servfail"

    def timeout(self, name, rtype=None):
        with self._lock:
            self._faults[(_norm(name), rtype.upper() if rtype else None)] = "timeout"

    def insecure(self, name):
        with self._lock:
            self._insecure.add(_norm(name))

    def clear_faults(self):
        with self._lock:
            self._faults.clear()

    def reset(self):
        with self._lock:
            self._zones = {}
            self._faults.clear()
            self.queries.clear()
            self._insecure.clear()
            self.ad = False

    # ---- answering -------------------------------------------------------

    def _rr(self, qname, rtype, rec):
        if rtype == "A":
            return RR(qname, QTYPE.A, rdata=A(rec), ttl=TTL)
        if rtype == "AAAA":
            return RR(qname, QTYPE.AAAA, rdata=AAAA(rec), ttl=TTL)
        if rtype == "MX":
            pref, host = rec
            return RR(qname, QTYPE.MX, rdata=MX(host, pref), ttl=TTL)
        if rtype == "CNAME":
            return RR(qname, QTYPE.CNAME, rdata=CNAME(rec), ttl=TTL)
        if rtype == "TXT":
            return RR(qname, QTYPE.TXT, rdata=TXT(rec), ttl=TTL)
        if rtype == "TLSA":
            usage, selector, mtype, data = rec
            if isinstance(data, str):
                data = bytes.fromhex(data)
            return RR(qname, QTYPE.TLSA, rdata=TLSA(usage, selector, mtype, data), ttl=TTL)
        raise ValueError("unsupported record type %s" % rtype)

    def answer(self, data, proto):
        """Return the reply bytes for request `data`, or None to stay silent."""
        try:
            req = DNSRecord.parse(data)
        except Exception:
            return None
        reply = req.reply()  # sets QR, AA, RD copied
        reply.header.ra = 0
        reply.header.ad = 0  # copied from the query too: only dns.ad sets it
        reply.header.cd = 0
        if not req.questions:
            reply.header.rcode = RCODE.FORMERR
            return reply.pack()
        q = req.questions[0]
        name = _norm(q.qname)
        qtype = QTYPE.get(q.qtype, str(q.qtype))
        with self._lock:
            self.queries.append((name, qtype, proto))
            fault = self._faults.get((name, qtype)) or self._faults.get((name, None))
            zones = self._zones
            if fault == "timeout":
                return None
            if fault == "servfail":
                reply.header.rcode = RCODE.SERVFAIL
                return reply.pack()
            if self.ad and name not in self._insecure:
                reply.header.ad = 1
            # follow CNAMEs inside our own data (bounded)
            cur = name
            for _ in range(8):
                node = zones.get(cur)
                if node is None:
                    if cur == name:
                        reply.header.rcode = RCODE.NXDOMAIN
                    break
                if qtype != "CNAME" and "CNAME" in node:
                    target = node["CNAME"][0]
                    reply.add_answer(self._rr(cur, "CNAME", target))
                    cur = _norm(target)
                    continue
                if qtype == "ANY":
                    for t, recs in node.items():
                        for r in recs:
                            reply.add_answer(self._rr(cur, t, r))
                else:
                    for r in node.get(qtype, []):
                        reply.add_answer(self._rr(cur, qtype, r))
                break
        out = reply.pack()
        if proto == "udp" and len(out) > 512 and not req.ar:
            out = reply.truncate().pack()
        return out

    # ---- server plumbing -------------------------------------------------

    def start(self):
        owner = self

        class UDPHandler(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                out = owner.answer(data, "udp")
                if out is not None:
                    sock.sendto(out, self.client_address)

        class TCPHandler(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.settimeout(10)
                try:
                    while True:
                        hdr = self._recvn(2)
                        if hdr is None:
                            return
                        (n,) = struct.unpack("!H", hdr)
                        data = self._recvn(n)
                        if data is None:
                            return
                        out = owner.answer(data, "tcp")
                        if out is None:
                            continue  # stay silent; client times out
                        self.request.sendall(struct.pack("!H", len(out)) + out)
                except OSError:
                    return

            def _recvn(self, n):
                buf = b""
                while len(buf) < n:
                    chunk = self.request.recv(n - len(buf))
                    if not chunk:
                        return None
                    buf += chunk
                return buf

        class UDPServer(socketserver.ThreadingUDPServer):
            daemon_threads = True
            allow_reuse_address = False

        class TCPServer(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        if self.port:
            self._udp = UDPServer((self.host, self.port), UDPHandler)
            self._tcp = TCPServer((self.host, self.port), TCPHandler)
        else:
            raise ValueError("TestDNSServer needs a port (use conftest.free_port(udp=True))")
        for srv in (self._udp, self._tcp):
            t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                                 daemon=True, name="testdns")
            t.start()
            self._threads.append(t)
        return self

    def stop(self):
        for srv in (self._udp, self._tcp):
            if srv is not None:
                srv.shutdown()
                srv.server_close()
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []

    @property
    def addr(self):
        """'127.0.0.1:PORT', as the `resolver` directive wants it."""
        return "%s:%d" % (self.host, self.port)


def query(server_addr, name, rtype="A", proto="udp", timeout=2.0):
    """Tiny client for self-tests: returns the parsed DNSRecord or raises
    socket.timeout."""
    host, port = server_addr
    q = DNSRecord.question(name, rtype)
    data = q.pack()
    if proto == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(data, (host, port))
            out, _ = s.recvfrom(65535)
    else:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(struct.pack("!H", len(data)) + data)
            hdr = s.recv(2)
            (n,) = struct.unpack("!H", hdr)
            out = b""
            while len(out) < n:
                out += s.recv(n - len(out))
    return DNSRecord.parse(out)
