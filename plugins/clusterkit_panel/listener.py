"""The panel's listening sockets: deadlines and a per-address cap in front of aiohttp.

aiohttp's ``TCPSite`` has no deadline for the TLS handshake or for a request
head and no per-client limit: a few hundred clients that open connections
and then trickle bytes held the panel's connections for as long as they
liked. A :class:`Listener` accepts each TCP connection itself and

- counts it against its client address: at most ``per_address`` (``[panel]
  connections_per_address``, 32) open at once; the next one is closed at
  once, before any TLS work;
- runs the TLS handshake with a deadline (``loop.connect_accepted_socket``
  with ``ssl_handshake_timeout=HANDSHAKE_TIMEOUT``);
- gives the first request head ``HEAD_TIMEOUT`` seconds after the handshake
  (later heads on a kept-alive connection are bounded by aiohttp's
  ``keepalive_timeout``, which the panel sets to the same value);

then hands the connection to the runner's ``web.Server`` (aiohttp's
documented low-level protocol factory), forwarding the asyncio protocol
callbacks. The HTTP redirect port uses the same listener without TLS.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import Callable

log = logging.getLogger("clusterkit.panel")

HANDSHAKE_TIMEOUT = 5.0
HEAD_TIMEOUT = 5.0
_HEAD_ENDS = (b"\r\n\r\n", b"\n\n")


class Listener:
    """One listening address: ``await start()`` (OSError if it cannot bind), ``await stop()``."""

    def __init__(self, factory: Callable[[], asyncio.Protocol], host: str, port: int,
                 ssl_context: ssl.SSLContext | None = None, per_address: int = 32):
        self.factory, self.host, self.port, self.ssl = factory, host, port, ssl_context
        self.per_address = per_address
        self.open: dict[str, int] = {}   # client address -> open connections (handshakes too)
        self.refused = 0
        self._sock: socket.socket | None = None
        self._accepting: asyncio.Task | None = None
        self._handshakes: set[asyncio.Task] = set()
        self._heading: set[_Guarded] = set()  # waiting for their first request head

    async def start(self) -> None:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._accepting = asyncio.get_running_loop().create_task(self._accept())

    async def stop(self) -> None:
        """Stop accepting; connections still in their handshake or first head are closed."""
        if self._accepting is not None:
            self._accepting.cancel()
            self._accepting = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for task in list(self._handshakes):
            task.cancel()
        for conn in list(self._heading):
            conn.abort()

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, peer = await loop.sock_accept(self._sock)
            except OSError as exc:  # out of descriptors...: wait, do not spin
                log.warning("panel: accept on %s:%d failed: %s", self.host, self.port, exc)
                await asyncio.sleep(0.5)
                continue
            address = str(peer[0])
            if self.open.get(address, 0) >= self.per_address:
                self.refused += 1
                log.debug("panel: closed a connection from %s at once (%d open)", address,
                          self.per_address)
                conn.close()
                continue
            self.open[address] = self.open.get(address, 0) + 1
            task = loop.create_task(self._handshake(conn, address))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(self, conn: socket.socket, address: str) -> None:
        loop = asyncio.get_running_loop()
        guarded = _Guarded(self, address)
        kwargs = {"ssl": self.ssl, "ssl_handshake_timeout": HANDSHAKE_TIMEOUT} if self.ssl else {}
        try:
            await loop.connect_accepted_socket(lambda: guarded, conn, **kwargs)
        except BaseException as exc:  # a failed or slow handshake (or stop): this client only
            conn.close()
            if guarded.transport is None:
                guarded.uncount()
            if not isinstance(exc, Exception):
                raise
            log.debug("panel: TLS handshake with %s failed: %s", address, exc)

    def release(self, address: str) -> None:
        left = self.open.get(address, 0) - 1
        if left > 0:
            self.open[address] = left
        else:
            self.open.pop(address, None)


class _Guarded(asyncio.Protocol):
    """One client connection after its handshake: its first head in time, then aiohttp's."""

    def __init__(self, listener: Listener, address: str):
        self.listener, self.address = listener, address
        self.counted = True
        self.transport: asyncio.BaseTransport | None = None
        self.inner: asyncio.Protocol | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(HEAD_TIMEOUT, self._late)
        self.listener._heading.add(self)
        self.inner = self.listener.factory()
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.timer is not None:
            seen = self.tail + data
            self.tail = seen[-3:]
            if any(end in seen for end in _HEAD_ENDS):
                self._stop_timer()
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.inner is not None else None

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timer()
        self.uncount()
        if self.inner is not None:
            inner, self.inner = self.inner, None
            inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.inner is not None:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.inner is not None:
            self.inner.resume_writing()

    def uncount(self) -> None:
        if self.counted:
            self.counted = False
            self.listener.release(self.address)

    def _late(self) -> None:
        self.timer = None
        log.debug("panel: closed the connection of %s: no complete request head within %gs",
                  self.address, HEAD_TIMEOUT)
        self.abort()

    def abort(self) -> None:
        self._stop_timer()
        if self.transport is not None:
            self.transport.abort()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.listener._heading.discard(self)
