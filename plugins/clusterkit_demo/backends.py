"""Tiny HTTP backends for the demo: each answers with the name of its node."""

from __future__ import annotations

import asyncio


class _Hello(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, just enough for the demo's client: every request gets the body."""

    def __init__(self, body: bytes):
        self.body = body
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            close = b"connection: close" in head.lower()
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                 b"Content-Length: %d\r\n%s\r\n%s" % (
                                     len(self.body), b"Connection: close\r\n" if close else b"",
                                     self.body))
            if close:
                self.transport.close()
                return


async def start_backend(host: str, port: int, name: str) -> asyncio.AbstractServer:
    """Serve ``hello from NAME`` on host:port until the returned server is closed."""
    loop = asyncio.get_running_loop()
    body = f"hello from {name}\n".encode()
    return await loop.create_server(lambda: _Hello(body), host, port, reuse_address=True)


async def http_get(host: str, port: int, timeout: float = 2.0) -> str:
    """One ``GET /`` on a fresh connection; returns the body (raises on failure)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: demo\r\nConnection: close\r\n\r\n")
        response = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"unexpected answer {head[:40]!r}")
    return body.decode().strip()
