"""Small helpers every kind of test uses: waiting for a condition, finding free ports."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

from clusterkit.runtime import new_event_loop


def wait_for(predicate, timeout: float = 15.0, what: str = "condition", step: float = 0.05):
    """Poll ``predicate`` until it returns a true value (returned), else fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def common_port(ips: list[str]) -> int:
    """A TCP port free on every one of ``ips`` (the members of a policy share one port)."""
    for _ in range(50):
        port = free_port(ips[0])
        socks = []
        try:
            for ip in ips:
                s = socket.socket()
                socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((ip, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no common free port on {ips}")


class LoopThread:
    """The daemon's kind of event loop, running in a thread, so a test can stay synchronous.

    ``call(coro)`` runs a coroutine on that loop and returns its result.
    """

    def __init__(self):
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


def tcp_server(ip: str, port: int, greeting: bytes = b"") -> socket.socket:
    """A TCP server that answers every connection with ``greeting`` and closes it (enough
    for a tcp health check, or to tell which member took a connection). Close it to stop."""
    sock = socket.create_server((ip, port))

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                if greeting:
                    conn.sendall(greeting)

    threading.Thread(target=serve, daemon=True).start()
    return sock
