"""Shared pieces of the proxy tests: an engine on its own loop, real backends, clusters.

The engine runs on a uvloop loop in a thread (as in the daemon); the tests
use ordinary blocking clients (http.client, ssl, raw sockets) against it and
real threaded servers as members, all on 127.81.0.0/16.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import socket
import socketserver
import threading
from pathlib import Path

from clusterkit.config import parse_cluster, registry_of
from clusterkit.plugins import get_plugin_manager
from clusterkit.proxy import Engine
from clusterkit.runtime import new_event_loop
from support import common_port, free_port, wait_for  # noqa: F401 (re-exported)


def plugin_manager(*extra):
    """A plugin manager with the built-ins the proxy needs (no entry points)."""
    import clusterkit.proxy.plugin
    import clusterkit_checks
    import clusterkit_http
    import clusterkit_transports

    pm = get_plugin_manager(load_entrypoints=False)
    for plugin in (clusterkit_checks, clusterkit_http, clusterkit_transports,
                   clusterkit.proxy.plugin, *extra):
        pm.register(plugin)
    return pm


def line_of(lines: list[str], start: str) -> int:
    """The 1-based number of the first line beginning ``start`` (where config check points)."""
    return next(i for i, line in enumerate(lines, 1) if line.startswith(start))


def cluster_text(net: str, nodes: int, policies: str, state_dir: str) -> str:
    """A definition: manager at {net}.1 (public {net}.100), nodes node1.. at {net}.11.."""
    hosts = "".join(f'\n[[node]]\nname = "node{i}"\nip = "{net}.{10 + i}"\n'
                    for i in range(1, nodes + 1))
    return (f'[cluster]\nname = "t"\nstate_dir = "{state_dir}"\n\n'
            f'[manager]\nname = "manager"\nip = "{net}.1"\npublic_ips = ["{net}.100"]\n'
            f'{hosts}\n{policies}')


def make_cluster(tmp_path: Path, net: str, nodes: int, policies: str, pm=None):
    pm = pm or plugin_manager()
    text = cluster_text(net, nodes, policies, str(tmp_path / "state"))
    return parse_cluster(text, str(tmp_path / "cluster.toml"), registry_of(pm))


class EngineThread:
    """An :class:`Engine` on a uvloop loop in a thread; ``call`` runs a coroutine there."""

    def __init__(self, registry=None, loop=None):
        self.loop = loop or new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.engine = Engine(registry=registry)

    def call(self, coro, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def sync(self, fn, *args, **kwargs):
        """Run a plain function on the loop thread (the engine is not thread-safe)."""
        async def run():
            return fn(*args, **kwargs)
        return self.call(run())

    def apply(self, cluster) -> None:
        self.call(self.engine.apply(cluster))

    def stats(self) -> dict:
        return self.sync(self.engine.stats)

    def stop(self) -> None:
        try:
            self.call(self.engine.close(2.0))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


@contextlib.contextmanager
def one_member_proxy(tmp_path: Path, net: str, loop=None):
    """``proxy(handle, **policy)``: node1's server and a one-member policy on ``net``.

    ``handle(sock, server)`` serves each connection on node1 (or ``backend``
    makes the server); the keyword arguments are policy keys. Returns the
    VIP address; ``proxy.key``, ``proxy.backend``, ``proxy.engine`` are set,
    and ``proxy.reload(**policy)`` applies the same policy with other keys.
    ``loop``: another event loop than the daemon's kind.
    """
    started = []
    engine = EngineThread(loop=loop)
    vip, node1 = f"{net}.100", f"{net}.11"

    def make(handle=None, service="http", pm=None, backend=None, **options):
        port = common_port([node1])
        vport = free_port(vip)
        if backend is not None:
            started.append(backend((node1, port)))
        else:
            started.append(TCPBackend((node1, port), handle, "node1"))

        def reload(**options):
            extra = "".join(f'{k} = {v!r}\n'.replace("'", '"') for k, v in options.items())
            text = (f'[[policy]]\nvip = "{vip}"\nport = {vport}\nservice = "{service}"\n'
                    f'backend_port = {port}\nmembers = {{ node1 = 1 }}\n{extra}')
            engine.apply(make_cluster(tmp_path, net, 1, text, pm))

        reload(**options)
        make.reload = reload
        make.key = f"{vip}:{vport}"
        make.backend = started[-1]
        make.backend_port = port
        return vip, vport

    make.engine = engine
    try:
        yield make
    finally:
        engine.stop()
        for server in started:
            server.stop()


# ------------------------------------------------------------------ backends


class InThread:
    """A socketserver serving from its own thread until ``stop()``."""

    def serve_in_thread(self) -> None:
        self.thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class TCPBackend(InThread, socketserver.ThreadingTCPServer):
    """A threaded TCP server calling ``handle(sock, server)`` per connection."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handle, name=""):
        self.name = name
        self.handle_fn = handle
        self.connections = 0
        self.received: list[bytes] = []
        self.lock = threading.Lock()

        class Handler(socketserver.BaseRequestHandler):
            def handle(inner):
                with self.lock:
                    self.connections += 1
                handle(inner.request, self)

        super().__init__(address, Handler)
        self.serve_in_thread()


class HTTPBackend(InThread, http.server.ThreadingHTTPServer):
    """An HTTP/1.1 server answering ``GET /...`` with its name (keep-alive capable)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, name: str, ssl_context=None):
        self.name = name
        self.requests = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                with outer.lock:
                    outer.requests += 1
                size = int(self.path.rsplit("size=", 1)[1]) if "size=" in self.path else 0
                body = outer.name.encode() if not size else b"x" * size
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("X-Node", outer.name)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        super().__init__(address, Handler)
        if ssl_context is not None:
            self.socket = ssl_context.wrap_socket(self.socket, server_side=True)
        self.serve_in_thread()


def echo_named(sock, server):
    """Echo with the member's name in front of every line: ``node1:hello``."""
    buf = b""
    while data := sock.recv(4096):
        buf += data
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            sock.sendall(server.name.encode() + b":" + line + b"\n")


def line(sock, text: str) -> str:
    sock.sendall(text.encode() + b"\n")
    out = b""
    while not out.endswith(b"\n"):
        chunk = sock.recv(100)
        assert chunk, "connection closed"
        out += chunk
    return out.decode().strip()


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)
