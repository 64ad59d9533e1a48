"""The FTP control channel without I/O: split lines, pair replies, rewrite data addresses.

The proxy feeds :class:`FtpControl` the bytes of each direction; it returns
what to forward. Everything is passed through byte for byte (multi-line
replies, unknown commands, odd line endings) except:

* ``227`` replies (PASV): the node's ``h1,h2,h3,h4,p1,p2`` becomes the
  address the manager listens on for that data connection;
* ``229`` replies (EPSV): the port between the delimiters, likewise;
* ``PORT``/``EPRT`` commands: the client's data address becomes one the
  manager listens on for the node's data connection (which the manager then
  carries on to the client); a client may only name its own address and an
  unprivileged port (no FTP bounce through the cluster, RFC 2577);
* ``LPRT``/``LPSV``: refused here with ``502`` (their addresses would need a
  rewrite nobody uses);
* ``PASV``/``EPSV`` over the client address's passive quota: ``425`` here;
* a ``234`` reply to ``AUTH``: the channel turns to TLS, every later byte
  passes untouched and :meth:`DataPorts.tls_started` is called.

Commands are recognised the way the most lenient server would read them
(Telnet IAC sequences dropped, leading blanks skipped, any case), but a
``PORT``/``EPRT`` is only accepted in its exact form: ``PORT`` SP six fields
of 1-3 ASCII digits, each <= 255; ``EPRT`` SP as in RFC 2428. Anything else
that a server could take for one (``+99``, ``9_9``, full-width digits,
spaces, a tab, missing or extra fields) is answered ``501`` here and never
forwarded: the node's own parser (Python's ``int()`` in pyftpdlib) would
accept it and connect where the client said. A client line with a bare CR
inside (some servers end a command there) or longer than :data:`MAX_LINE`
is not forwarded either: ``500``.

The I/O — opening listeners — is behind :class:`DataPorts`, which the
proxy handler implements and the unit tests replace with a plain object.
"""

from __future__ import annotations

import ipaddress
import re
from collections import deque
from typing import Protocol

#: a control line longer than this is not parsed (no legitimate line is near
#: it): the node's is passed on, the client's refused; nothing buffers more
MAX_LINE = 8192
MAX_PENDING = 1024

_PASV = re.compile(rb"(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3}),(\d{1,3})")
_EPSV = re.compile(rb"\(([\x21-\x7e])\1\1(\d{1,5})\1\)")
# the strict forms of the arguments the balancer acts on (ASCII digits only)
_PORT_ARG = re.compile(rb"([0-9]{1,3}),([0-9]{1,3}),([0-9]{1,3}),([0-9]{1,3}),([0-9]{1,3}),"
                       rb"([0-9]{1,3})")
_EPRT_AF = re.compile(rb"([\x21-\x7e])([0-9]+)\1")
# EPRT delimiters that could be part of an address or a port (RFC 2428: "unless it
# coincides with a character needed to encode the network address")
_NOT_DELIMITERS = b"0123456789abcdefABCDEF.:%"
# a verb as a lenient server finds it: after blanks and control characters
_VERB = re.compile(rb"[\x00-\x20]*([A-Za-z]+)")
# Telnet commands (IAC ...) some servers drop from a line before reading it
_TELNET = re.compile(rb"\xff(?:[\xfb-\xfe][\x00-\xff]?|[\x00-\xfe]|\xff)")


class PassiveQuotaExceeded(OSError):
    """The client's address already holds as many passive listeners as it may."""


class DataPorts(Protocol):
    """What the control channel asks of the I/O side."""

    def passive_allowed(self) -> bool:
        """Whether one more passive listener is within the client address's quota."""

    def passive(self, node_port: int) -> tuple[str, int]:
        """Listen for the client's data connection, relayed to the node's ``node_port``.

        Returns the public (ip, port) to announce; raises ``OSError`` when no
        port is free (:class:`PassiveQuotaExceeded` when over the quota).
        """

    def active(self, client_ip: str, client_port: int) -> tuple[str, int]:
        """Listen for the node's data connection, carried on to the client's address.

        Returns the (ip, port) to give the node; raises ``OSError`` on failure.
        """

    def active_refused(self) -> None:
        """The node refused the last PORT/EPRT: its listener is not needed."""

    def tls_started(self) -> None:
        """``AUTH`` succeeded: the control channel is encrypted from here on."""

    def aborted(self) -> None:
        """``ABOR`` or ``REIN``: a data listener not yet connected will not be used."""


class LineSplitter:
    """Bytes in, complete lines out; the partial line is kept for the next chunk.

    ``feed`` returns ``(chunk, is_line)`` pairs: ``is_line`` is true for a
    whole line (ending in ``\\n``) that may be parsed, false for pieces of an
    over-long line, which are passed on as they come.
    """

    def __init__(self, limit: int = MAX_LINE):
        self.limit = limit
        self.partial = b""
        self.overlong = False

    def feed(self, data: bytes) -> list[tuple[bytes, bool]]:
        out: list[tuple[bytes, bool]] = []
        buf = self.partial + data if self.partial else data
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            line = buf[start:end + 1]
            out.append((line, not self.overlong))
            self.overlong = False
            start = end + 1
        rest = buf[start:]
        if len(rest) > self.limit or (self.overlong and rest):
            out.append((rest, False))
            self.overlong = True
            rest = b""
        self.partial = rest
        return out

    def drain(self) -> bytes:
        """Whatever is held (the channel stopped being line-based)."""
        rest, self.partial = self.partial, b""
        return rest


def line_ending(line: bytes) -> bytes:
    return b"\r\n" if line.endswith(b"\r\n") else b"\n"


# ------------------------------------------------------------- address codecs


def parse_pasv(line: bytes) -> tuple[str, int] | None:
    """The address of a ``227`` reply, or None when it has none."""
    m = _PASV.search(line, 4)
    if not m:
        return None
    numbers = [int(x) for x in m.groups()]
    if any(n > 255 for n in numbers):
        return None
    return ".".join(map(str, numbers[:4])), numbers[4] * 256 + numbers[5]


def rewrite_pasv(line: bytes, ip: str, port: int) -> bytes:
    """``line`` with its ``h1,…,p2`` replaced by ``ip``/``port``, the rest untouched."""
    m = _PASV.search(line, 4)
    value = ",".join(ip.split(".") + [str(port >> 8), str(port & 255)]).encode()
    return line[:m.start()] + value + line[m.end():]


def parse_epsv(line: bytes) -> int | None:
    """The port of a ``229`` reply (``(|||port|)``), or None."""
    m = _EPSV.search(line, 4)
    if not m:
        return None
    port = int(m.group(2))
    return port if 0 < port < 65536 else None


def rewrite_epsv(line: bytes, port: int) -> bytes:
    m = _EPSV.search(line, 4)
    return line[:m.start(2)] + str(port).encode() + line[m.end(2):]


def parse_port_arg(arg: bytes) -> tuple[str, int] | None:
    """``h1,h2,h3,h4,p1,p2`` (RFC 959) → (ip, port), or None unless exactly that:
    six fields of 1-3 ASCII digits, each <= 255, nothing before or after."""
    m = _PORT_ARG.fullmatch(arg)
    if not m:
        return None
    numbers = [int(x) for x in m.groups()]
    if any(n > 255 for n in numbers):
        return None
    return ".".join(map(str, numbers[:4])), numbers[4] * 256 + numbers[5]


def format_port(ip: str, port: int) -> bytes:
    return ",".join(ip.split(".") + [str(port >> 8), str(port & 255)]).encode()


def parse_eprt_arg(arg: bytes) -> tuple[str, int] | None:
    """``<d>af<d>addr<d>port<d>`` (RFC 2428) → (ip, port), or None unless exactly that.

    ``d`` is one printable ASCII character that cannot be part of an address
    or a port; ``af`` is 1 (a dotted quad, no leading zeros) or 2 (IPv6, no
    zone); the port is 1-5 ASCII digits in 1..65535; nothing before or after.
    """
    if len(arg) < 7 or not 0x21 <= arg[0] <= 0x7e or arg[0] in _NOT_DELIMITERS:
        return None
    fields = arg.split(arg[:1])
    if len(fields) != 5 or fields[0] or fields[4]:
        return None
    af, addr, port = fields[1:4]
    if af not in (b"1", b"2") or not addr.isascii() or not re.fullmatch(rb"[0-9]{1,5}", port):
        return None
    try:  # strict: IPv4Address refuses leading zeros, octal, short forms
        ip = (ipaddress.IPv4Address if af == b"1" else ipaddress.IPv6Address)(addr.decode())
    except ValueError:
        return None
    if getattr(ip, "scope_id", None):
        return None
    port_n = int(port)
    return (str(ip), port_n) if 0 < port_n < 65536 else None


def eprt_family_unsupported(arg: bytes) -> bool:
    """An EPRT naming a network protocol other than 1 or 2 (RFC 2428: answer ``522``)."""
    m = _EPRT_AF.match(arg)
    return bool(m) and m.group(1) not in _NOT_DELIMITERS and m.group(2) not in (b"1", b"2")


def command_verb(line: bytes) -> bytes:
    """The verb of a client line as the most lenient server would read it, upper-cased.

    Telnet IAC sequences are dropped and leading blanks and control
    characters skipped; ``b""`` when the line starts with no letters.
    """
    if b"\xff" in line:
        line = _TELNET.sub(lambda m: b"\xff" if m.group() == b"\xff\xff" else b"", line)
    m = _VERB.match(line)
    return m.group(1).upper() if m else b""


def exact_argument(text: bytes, verb: bytes) -> bytes | None:
    """The argument of ``text`` (a line without its end) when it is exactly
    ``verb`` SP argument (any case, nothing before); else None."""
    n = len(verb)
    if text[:n].upper() != verb or text[n:n + 1] != b" ":
        return None
    return text[n + 1:]


def format_eprt(ip: str, port: int) -> bytes:
    af = b"2" if ":" in ip else b"1"
    return b"|" + af + b"|" + ip.encode() + b"|" + str(port).encode() + b"|"


def same_ip(a: str, b: str) -> bool:
    """Equal addresses, also across IPv4 and IPv4-mapped IPv6 forms."""
    try:
        x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
    except ValueError:
        return False
    x = getattr(x, "ipv4_mapped", None) or x
    y = getattr(y, "ipv4_mapped", None) or y
    return x == y


# ------------------------------------------------------------------ the channel

TOO_MANY_PASSIVE = b"425 Too many passive data connections pending from your address."


class FtpControl:
    """One control connection's state: commands awaiting replies, reply framing, TLS.

    ``from_client(data)`` returns ``(to_server, to_client)`` (the second for
    commands answered here); ``from_server(data)`` returns the bytes for the
    client. ``tls`` is true once ``AUTH`` succeeded.
    """

    def __init__(self, client_ip: str, ports: DataPorts, limit: int = MAX_LINE):
        self.client_ip = client_ip
        self.ports = ports
        self.tls = False
        self._client = LineSplitter(limit)
        self._server = LineSplitter(limit)
        # commands sent and not yet answered with a final (>= 200) reply; the
        # greeting answers nothing we sent, hence its placeholder. Bounded: a
        # client pipelining thousands of commands only confuses its own pairing
        self._pending: deque[bytes] = deque([b""], maxlen=MAX_PENDING)
        self._multi: bytes | None = None  # code of the multi-line reply being read

    # ------------------------------------------------------- client → server

    def from_client(self, data: bytes) -> tuple[bytes, bytes]:
        if self.tls:
            return data, b""
        to_server: list[bytes] = []
        to_client: list[bytes] = []
        limit = self._client.limit
        for chunk, is_line in self._client.feed(data):
            if not is_line or len(chunk) > limit:  # over-long: dropped, answered at its end
                if chunk.endswith(b"\n"):
                    to_client.append(b"500 Command line too long." + line_ending(chunk))
                continue
            forward, answer = self._command(chunk)
            if forward:
                to_server.append(forward)
            if answer:
                to_client.append(answer)
        return b"".join(to_server), b"".join(to_client)

    def _command(self, line: bytes) -> tuple[bytes, bytes]:
        eol = line_ending(line)
        text = line[:-len(eol)]
        if b"\r" in text:
            return b"", b"500 Command line with a bare CR refused." + eol
        verb = command_verb(text)
        if verb in (b"PORT", b"EPRT"):
            arg = exact_argument(text, verb)
            parse = parse_port_arg if verb == b"PORT" else parse_eprt_arg
            address = parse(arg) if arg is not None else None
            if address is None:  # never forwarded: a lenient server might read it
                if verb == b"EPRT" and arg is not None and eprt_family_unsupported(arg):
                    return b"", b"522 Network protocol not supported, use (1,2)." + eol
                return b"", (b"501 Syntax error in the " + verb + b" argument (" + verb
                             + (b" h1,h2,h3,h4,p1,p2" if verb == b"PORT" else b" |af|addr|port|")
                             + b" expected)." + eol)
            ip, port = address
            if not same_ip(ip, self.client_ip) or port < 1024:
                return b"", (b"501 Rejected data connection to " + ip.encode() + b":"
                             + str(port).encode() + b" (not your address, or a privileged port)."
                             + eol)
            try:
                local_ip, local_port = self.ports.active(ip, port)
            except OSError:
                return b"", b"425 Cannot prepare the data connection on the load balancer." + eol
            self._pending.append(b"PORT")
            if verb == b"PORT" and ":" not in local_ip:
                return b"PORT " + format_port(local_ip, local_port) + eol, b""
            return b"EPRT " + format_eprt(local_ip, local_port) + eol, b""
        if verb in (b"LPRT", b"LPSV"):
            return b"", b"502 " + verb + b" is not supported here; use PASV, EPSV, PORT or EPRT." + eol
        if verb in (b"PASV", b"EPSV") and (exact_argument(text, verb) or b"").upper() != b"ALL" \
                and not self.ports.passive_allowed():
            return b"", TOO_MANY_PASSIVE + eol
        if verb in (b"ABOR", b"REIN"):
            self.ports.aborted()
        self._pending.append(verb)
        return line, b""

    # ------------------------------------------------------- server → client

    def from_server(self, data: bytes) -> bytes:
        if self.tls:
            return data
        out: list[bytes] = []
        pieces = self._server.feed(data)
        for index, (chunk, is_line) in enumerate(pieces):
            if not is_line:
                out.append(chunk)
                continue
            out.append(self._reply_line(chunk))
            if self.tls:  # everything after the 234 line is TLS
                out.extend(c for c, _ in pieces[index + 1:])
                out.append(self._server.drain())
                break
        return b"".join(out)

    def _reply_line(self, line: bytes) -> bytes:
        code = line[:3]
        if self._multi is not None:
            if code == self._multi and line[3:4] == b" ":
                self._multi = None
                return self._final(code, line)
            return line
        if not code.isdigit() or len(code) != 3:
            return line
        sep = line[3:4]
        if sep == b"-":
            self._multi = code
            return line
        if sep in (b" ", b"\r", b"\n"):
            return self._final(code, line)
        return line

    def _final(self, code: bytes, line: bytes) -> bytes:
        """The last line of a reply: pair it with its command and act on it."""
        if code[:1] == b"1":
            return line  # preliminary: the final reply is still to come
        command = self._pending.popleft() if self._pending else b""
        eol = line_ending(line)
        if code == b"227":
            address = parse_pasv(line)
            if address is not None:
                try:
                    ip, port = self.ports.passive(address[1])
                except PassiveQuotaExceeded:
                    return TOO_MANY_PASSIVE + eol
                except OSError:
                    return b"425 No free passive port on the load balancer." + eol
                if ":" in ip:
                    return b"425 Use EPSV: the load balancer's address is IPv6." + eol
                return rewrite_pasv(line, ip, port)
        elif code == b"229":
            node_port = parse_epsv(line)
            if node_port is not None:
                try:
                    _, port = self.ports.passive(node_port)
                except PassiveQuotaExceeded:
                    return TOO_MANY_PASSIVE + eol
                except OSError:
                    return b"425 No free passive port on the load balancer." + eol
                return rewrite_epsv(line, port)
        elif command == b"PORT" and code[:1] != b"2":
            self.ports.active_refused()
        elif command == b"AUTH" and code == b"234":
            self.tls = True
            self.ports.tls_started()
        return line
