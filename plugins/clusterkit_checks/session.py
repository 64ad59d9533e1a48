"""One check connection: PROXY header first, optional TLS, bounded reads, clear reasons.

Every check kind built on :func:`bounded` runs inside the target's timeout and
reports *where* it failed (connect, TLS, greeting, status line...), so the
reason logged with a transition tells the operator what broke.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
import ssl
import time
from typing import Awaitable, Callable

from clusterkit.definition.values import endpoint
from clusterkit.registry import CheckFailed, CheckTarget

MAX_LINE = 8192
PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def proxy_header(version: str, local: tuple, peer: tuple) -> bytes:
    """The PROXY header a check sends first, as HAProxy's ``check-send-proxy`` does.

    v1 carries the check connection's own addresses; v2 uses the LOCAL command
    (no addresses), which the spec reserves for health checks and which every
    receiver must accept.
    """
    if version == "v1":
        family = "TCP6" if ipaddress.ip_address(local[0]).version == 6 else "TCP4"
        return f"PROXY {family} {local[0]} {peer[0]} {local[1]} {peer[1]}\r\n".encode()
    if version == "v2":
        return PROXY_V2_SIGNATURE + bytes([0x20, 0x00, 0x00, 0x00])
    raise CheckFailed(f"proxy_protocol {version!r} must be v1, v2 or empty")


def tls_context(options: dict) -> ssl.SSLContext:
    """Client TLS: the node's certificate is not verified unless ``verify`` is true.

    Nodes usually present the public name's certificate on a private address,
    so verification would fail for the wrong reason; ``verify = true`` (and
    ``ca`` for a private CA file) turn it on.
    """
    ctx = ssl.create_default_context(cafile=options.get("ca") or None)
    if not option_bool(options, "verify", False):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def option_bool(options: dict, name: str, default: bool) -> bool:
    value = options.get(name, default)
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise CheckFailed(f"check option {name}={value!r} must be true or false")


def _os_reason(exc: OSError) -> str:
    """``Connection refused`` rather than asyncio's ``Connect call failed (...)``."""
    return os.strerror(exc.errno) if exc.errno else str(exc)


class Session:
    """A check's connection; ``stage`` names what it is waiting for."""

    def __init__(self, target: CheckTarget):
        self.target = target
        self.stage = "connecting"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @property
    def where(self) -> str:
        return endpoint(self.target.address, self.target.port)

    async def open(self, tls: ssl.SSLContext | None = None, server_hostname: str | None = None) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.target.address, self.target.port)
        if self.target.proxy_protocol:
            sock = self.writer.get_extra_info("socket")
            self.writer.write(proxy_header(self.target.proxy_protocol,
                                           self.writer.get_extra_info("sockname"),
                                           self.writer.get_extra_info("peername")))
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            self.stage = "the TLS handshake"
            await self.writer.start_tls(tls, server_hostname=server_hostname)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def line(self, what: str) -> str:
        """One CRLF/LF-terminated line; EOF is a failure naming what was awaited."""
        self.stage = what
        try:
            raw = await self.reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            got = f" after {exc.partial[:80]!r}" if exc.partial else ""
            raise CheckFailed(f"connection closed while waiting for {what}{got}") from None
        except asyncio.LimitOverrunError:
            raise CheckFailed(f"{what}: line longer than the reader's limit") from None
        return raw.decode("utf-8", "replace").rstrip("\r\n")

    async def reply(self, what: str) -> tuple[int, str]:
        """An SMTP/FTP reply: ``ddd-`` lines continue it, ``ddd `` ends it."""
        first = await self.line(what)
        code = first[:3]
        if not code.isdigit():
            raise CheckFailed(f"{what}: not a reply: {first[:120]!r}")
        lines = [first]
        while lines[-1][3:4] == "-" or not lines[-1].startswith(code):
            if len(lines) > 100:
                raise CheckFailed(f"{what}: reply longer than 100 lines")
            lines.append(await self.line(what))
        return int(code), " / ".join(line[4:].strip() for line in lines)[:200]

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def bounded(name: str, probe: Callable[[Session], Awaitable[str]]) -> Callable[[CheckTarget], Awaitable[str]]:
    """Make a check kind's ``run``: the probe inside the timeout, errors turned into reasons."""

    async def run(target: CheckTarget) -> str:
        session = Session(target)
        started = time.monotonic()
        try:
            async with asyncio.timeout(target.timeout):
                text = await probe(session)
        except TimeoutError:
            raise CheckFailed(f"{name} {session.where}: no answer within {target.timeout}s "
                              f"({session.stage})") from None
        except ssl.SSLError as exc:
            raise CheckFailed(f"{name} {session.where}: TLS failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise CheckFailed(f"{name} {session.where}: {session.stage}: {_os_reason(exc)}") from None
        except CheckFailed as exc:
            raise CheckFailed(f"{name} {session.where}: {exc}") from None
        finally:
            session.close()
        return f"{text} in {(time.monotonic() - started) * 1000:.1f} ms"

    return run
