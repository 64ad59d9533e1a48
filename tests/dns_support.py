"""Shared by the DNS tests: the test zones, a free-port finder, a real NSD, a query helper."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype

ADDR = "127.83.0.1"

EXAMPLE_COM = r"""; the main test zone: every parser case and every answer rule
$TTL 1h
$ORIGIN example.com.
@   IN SOA ns1 hostmaster ( 2024010101 ; serial
        2h    ; refresh
        15m   ; retry
        2w    ; expire
        5m )  ; minimum
    IN NS ns1
    IN NS ns2.example.net.
    MX 10 mail
    MX 20 mail.example.net.
    TXT "v=spf1 -all"
    A 192.0.2.1
    AAAA 2001:db8::1
    CAA 0 issue "letsencrypt.org"
    CAA 128 iodef "mailto:security@example.com"
ns1 A 192.0.2.53
mail 300 IN A 192.0.2.25
mail in 300 AAAA 2001:db8::25
lower 3600 in a 192.0.2.9
ttlunits 1d12h A 192.0.2.12
      1w IN TXT "blank owner continues ttlunits"
www CNAME @
alias CNAME www
chain1 CNAME chain2
chain2 CNAME chain3
chain3 A 192.0.2.3
loop1 CNAME loop2
loop2 CNAME loop1
dangling CNAME nothere
external CNAME www.example.net.
crossed CNAME www.example.org.
todeleg CNAME host.deleg
*.wild A 192.0.2.100
*.wild TXT "wild"
sub.wild A 192.0.2.101
*.cwild CNAME www
a.b.c.ent A 192.0.2.4
deleg NS ns.deleg
deleg NS ns.outside.net.
deleg DS 12345 8 2 49FD46E6C4B45C55D4AC69CBD3CD34AC1AFE51DE6EDC8C5C5E1B5A8C8E1F2A3B
ns.deleg A 192.0.2.200
ns.deleg AAAA 2001:db8::200
_sip._tcp SRV 10 60 5060 sip
sip A 192.0.2.60
naptr NAPTR 100 10 "u" "E2U+sip" "!^.*$!sip:info@example.com!" .
txt2 TXT "hello world" "second string" "with \"quotes\""
esc TXT "semi\;colon" "back\\slash" "\065\066"
generic TYPE65534 \# 4 0A000001
generic2 TYPE1 \# 4 C0000205
ptrname PTR www
MixedCase A 192.0.2.77
big TXT "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big TXT "1123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big TXT "2123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big TXT "3123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big TXT "4123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
big TXT "5123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"
$INCLUDE example.com.inc
$ORIGIN rel.example.com.
host A 192.0.2.78
$ORIGIN example.com.
$TTL 300
after-ttl A 192.0.2.79
"""

EXAMPLE_COM_INC = """; included relative to the zones directory
inc1 A 192.0.2.81
inc2 IN 600 TXT "from the include"
"""

EXAMPLE_ORG = """$TTL 600
@ SOA ns1.example.org. admin.example.org. 7 3600 900 604800 60
@ NS ns1.example.org.
ns1 A 198.51.100.53
www A 198.51.100.80
back CNAME chain1.example.com.
$INCLUDE parts/org-hosts.txt hosts.example.org.
after-include A 198.51.100.99
"""

CHILD = """$TTL 300
child.example.com. 600 IN SOA ns.child.example.com. admin.child.example.com. 1 3600 900 604800 120
child.example.com. IN NS ns.child.example.com.
ns.child.example.com. A 192.0.2.210
www.child.example.com. A 192.0.2.211
"""

REVERSE = """$TTL 86400
@ SOA ns1.example.com. hostmaster.example.com. 3 3600 900 604800 3600
  NS ns1.example.com.
1 PTR example.com.
25 PTR mail.example.com.
"""

# RFC 4592 §2.2.1, the wildcard examples, verbatim apart from the SOA/SRV data.
RFC4592 = """$ORIGIN example.
example.                 3600 IN  SOA   ns.example.com. hostmaster.example. 1 3600 900 604800 300
example.                 3600     NS    ns.example.com.
example.                 3600     NS    ns.example.net.
*.example.               3600     TXT   "this is a wildcard"
*.example.               3600     MX    10 host1.example.
sub.*.example.           3600     TXT   "this is not a wildcard"
host1.example.           3600     A     192.0.2.1
_ssh._tcp.host1.example. 3600     SRV   0 0 22 host1.example.
_ssh._tcp.host2.example. 3600     SRV   0 0 22 host2.example.
subdel.example.          3600     NS    ns.example.com.
subdel.example.          3600     NS    ns.example.net.
"""

# No $TTL: every record without a TTL takes the last one given (RFC 1035 §5.1).
NO_TTL = """nottl.test. 7200 IN SOA ns.nottl.test. h.nottl.test. 1 3600 900 604800 60
nottl.test. NS ns.nottl.test.
ns A 192.0.2.1
a 60 A 192.0.2.2
b A 192.0.2.3
c IN 120 TXT "c"
d TXT "d"
"""

# Windows line ends, escaped owner names, more record types.
MORE = ("$TTL 1h\r\n@ SOA ns h 1 2 3 4 5\r\n@ NS ns\r\nns A 192.0.2.1\r\n"
        "xn--bcher-kva A 192.0.2.2\r\n\\046dot A 192.0.2.3\r\nsp\\032ace A 192.0.2.4\r\n"
        'x HINFO "a cpu" "an os"\r\n'
        "x SSHFP 1 1 123456789abcdef67890123456789abcdef67890\r\n"
        "x TLSA 3 1 1 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n"
        "x LOC 52 22 23.000 N 4 53 32.000 E -2.00m 0.00m 10000m 10m\r\n"
        "x HTTPS 1 . alpn=h2\r\n"
        "x RP mbox.more.test. txt.more.test.\r\n")

ZONES = {
    "more.test": MORE,
    "example": RFC4592,
    "nottl.test": NO_TTL,
    "example.com": EXAMPLE_COM,
    "example.org": EXAMPLE_ORG,
    "child.example.com": CHILD,
    "2.0.192.in-addr.arpa": REVERSE,
}
EXTRA_FILES = {"example.com.inc": EXAMPLE_COM_INC,
               # in a subdirectory, with its own origin; a relative name, an @
               "parts/org-hosts.txt": "a A 198.51.100.1\n@ TXT \"hosts\"\nb 120 IN A 198.51.100.2\n"}


def write_zones(directory: Path, zones: dict = ZONES, extra: dict = EXTRA_FILES) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in zones.items():
        (directory / f"{name}.zone").write_text(text)
    for name, text in extra.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(text)
    return directory


def free_port(addr: str = ADDR) -> int:
    """A port free for both UDP and TCP on ``addr``."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_STREAM) as t:
            t.bind((addr, 0))
            port = t.getsockname()[1]
            with socket.socket(family, socket.SOCK_DGRAM) as u:
                try:
                    u.bind((addr, port))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"no free port on {addr}")


def nsd_available() -> bool:
    return shutil.which("nsd") is not None or os.path.exists("/usr/sbin/nsd")


@contextlib.contextmanager
def run_nsd(workdir: Path, zonesdir: Path, zones: list[str], addr: str, port: int,
            extra: str = ""):
    """Run a real NSD (one server process, no rate limit) in the foreground; yield when it answers."""
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "nsd.conf"
    lines = [
        "server:",
        f"  ip-address: {addr}@{port}",
        "  server-count: 1",
        '  username: ""',
        f'  zonesdir: "{zonesdir}"',
        f'  pidfile: "{workdir}/nsd.pid"',
        '  database: ""',
        f'  xfrdfile: "{workdir}/xfrd.state"',
        f'  xfrdir: "{workdir}"',
        f'  zonelistfile: "{workdir}/zone.list"',
        "  rrl-ratelimit: 0",
        "  verbosity: 0",
        "  tcp-count: 200",
        extra,
        "remote-control:",
        "  control-enable: no",
    ]
    for zone in zones:
        lines += ["zone:", f"  name: {zone}.", f"  zonefile: {zone}.zone"]
    conf.write_text("\n".join(lines) + "\n")
    nsd = shutil.which("nsd") or "/usr/sbin/nsd"
    proc = subprocess.Popen([nsd, "-d", "-c", str(conf)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                dns.query.udp(dns.message.make_query("example.invalid.", "SOA"), addr,
                              port=port, timeout=0.2)
                break
            except Exception:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode(errors="replace") if proc.poll() is not None else ""
                    raise RuntimeError(f"nsd did not start: {out}")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ask(qname: str, qtype: str, addr: str, port: int, tcp: bool = False, **kw) -> dns.message.Message:
    query = dns.message.make_query(qname, qtype, **kw)
    if tcp:
        return dns.query.tcp(query, addr, port=port, timeout=2)
    return dns.query.udp(query, addr, port=port, timeout=2, ignore_trailing=True)


def summary(msg: dns.message.Message) -> dict:
    """What the equivalence tests compare: rcode, flags, sections as sets."""
    def section(rrsets):
        return {(str(r.name).lower(), r.rdtype, r.ttl, tuple(sorted(x.to_text() for x in r)))
                for r in rrsets}

    return {
        "rcode": msg.rcode(),
        "flags": dns.flags.to_text(msg.flags),
        "edns": msg.edns,
        "question": [(str(q.name), q.rdtype) for q in msg.question],
        "answer": section(msg.answer),
        "authority": section(msg.authority),
        "additional": section(msg.additional),
    }


class ServerThread:
    """A real :class:`DnsServer` on its own event loop in a thread, for synchronous tests."""

    def __init__(self, zones_dir, addr: str = ADDR, port: int | None = None, **kwargs):
        import threading

        from clusterkit.runtime import new_event_loop
        from clusterkit_dns.server import DnsServer

        self.addr = addr
        self.port = port or free_port(addr)
        self.loop = new_event_loop()
        self.server = DnsServer(str(zones_dir), [(addr, self.port)], **kwargs)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def call(self, coro, timeout: float = 30):
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        self.call(self.server.start())
        return self

    def __exit__(self, *exc) -> None:
        self.call(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
