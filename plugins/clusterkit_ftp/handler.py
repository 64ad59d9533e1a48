"""The FTP protocol handler: the proxy side of :class:`~clusterkit_ftp.control.FtpControl`.

One :class:`FtpHandler` per balanced control connection. Data connections
go through a :class:`OneShot` listener, one at a time per direction:

* passive (PASV/EPSV): on the VIP, a port from ``passive_ports``, only from
  the client's address, relayed to the same node at the port it named;
* active (PORT/EPRT): on the manager's address as the node sees it (the
  control connection's local address: FTP servers refuse a PORT naming
  another address than their control peer), only from the node, carried on
  to the client's data port from the VIP;
* explicit FTPS (``AUTH TLS``): the control channel is opaque, so the client
  is pinned in :class:`PortRangePins`: every connection from its address to
  the VIP on a port of ``ftps_passive_ports`` goes to its node, same port.

A listener closes after its one connection, after ``data_timeout``, when the
next PASV/PORT replaces it, or with the control connection: ports always
return to the range, and one client can hold at most one passive port.
Data moving keeps the control connection from being closed as idle.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import weakref

from clusterkit.proxy.handler import Handler

from clusterkit_ftp.control import FtpControl, same_ip
from clusterkit_ftp.options import FtpOptions, ftp_options
from clusterkit_ftp.pipe import End, Pipes, connect_to, join

log = logging.getLogger("clusterkit.ftp")


# The engine's Session does not (yet) offer these; they are read from its
# connection object in one place so the gap is easy to close.

def _listener(session):
    return session._conn.listener


def _touch(session) -> None:
    """Data is moving: the control connection is not idle."""
    session._conn.seen = True


def _node_side_address(session) -> str:
    """The manager's address on its connection to the node (what the node sees as its peer)."""
    return session._conn.server.transport.get_extra_info("sockname")[0]


class FtpHandler(Handler):
    """Parses and rewrites the control channel; opens and closes the data paths."""

    def __init__(self, session):
        super().__init__(session)
        self.policy = _listener(session).policy
        self.options = ftp_options(self.policy)
        self.control = FtpControl(session.client[0], self)
        self.passive_data: OneShot | None = None
        self.active_data: OneShot | None = None
        self.pinned: PortRangePins | None = None
        self.done = False
        self.data = Pipes(self.policy.idle_timeout, on_progress=self._data_moved)

    # ------------------------------------------------------------- the relay

    def from_client(self, data: bytes) -> bytes:
        to_server, to_client = self.control.from_client(data)
        if to_client:
            self.session.send_to_client(to_client)
        return to_server

    def from_server(self, data: bytes) -> bytes:
        return self.control.from_server(data)

    def closed(self) -> None:
        """Pending listeners close now; a transfer under way may finish (its
        tail can still be draining to the client after the 226 and a QUIT)."""
        self.done = True
        for pending in (self.passive_data, self.active_data):
            if pending is not None:
                pending.close()
        self.passive_data = self.active_data = None
        if self.pinned is not None:
            self.pinned.unpin(self.session.client[0], self.session.member_address[0])
            self.pinned = None

    # ------------------------------------------------------------ DataPorts

    def passive(self, node_port: int) -> tuple[str, int]:
        if self.passive_data is not None:
            self.passive_data.close()  # a new PASV replaces an unused one
            self.passive_data = None
        self.passive_data = OneShot(self, self.session.local[0], self.options.passive_ports,
                                    allowed=self.session.client[0],
                                    target=(self.session.member_address[0], node_port))
        return self.passive_data.address

    def active(self, client_ip: str, client_port: int) -> tuple[str, int]:
        self.active_refused()  # a new PORT replaces an unused one
        self.active_data = OneShot(self, _node_side_address(self.session), None,
                                   allowed=self.session.member_address[0],
                                   target=(client_ip, client_port), source=self.session.local[0])
        return self.active_data.address

    def active_refused(self) -> None:
        if self.active_data is not None:
            self.active_data.close()
            self.active_data = None

    def tls_started(self) -> None:
        self.pinned = PortRangePins.of(_listener(self.session), self.options)
        self.pinned.pin(self.session.client[0], self.session.member_address[0])

    # ------------------------------------------------------------ data pipes

    def _data_moved(self) -> None:
        """A transfer may outlast ``idle_timeout`` with not a byte on the control
        connection: while its data moves, the control is not idle."""
        if not self.done:
            _touch(self.session)


def bind_listener(ip: str, ports: range | None) -> socket.socket:
    """A listening socket on ``ip``: a free port of ``ports`` (from a random
    start, so ports are spread and not guessable), or any port when None."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    if ports:
        first = random.randrange(len(ports))
        candidates = [*ports[first:], *ports[:first]]
    else:
        candidates = [0]
    for port in candidates:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((ip, port))
            sock.listen(8)
            sock.setblocking(False)
        except OSError:
            sock.close()
            continue
        return sock
    raise OSError(f"no free port on {ip} in {ports.start}-{ports.stop - 1}" if ports
                  else f"cannot listen on {ip}")


class OneShot:
    """Listen for one data connection from ``allowed`` and relay it to ``target``.

    Anyone else who connects is reset; the listener closes after the one
    connection, ``data_timeout``, or :meth:`close` (a newer PASV/PORT, the
    control connection's end).
    """

    def __init__(self, handler: FtpHandler, ip: str, ports: range | None, allowed: str,
                 target: tuple[str, int], source: str | None = None):
        self.handler = handler
        self.allowed = allowed
        self.target = target
        self.source = source
        self.loop = asyncio.get_running_loop()
        self.sock = bind_listener(ip, ports)
        self.address = self.sock.getsockname()[:2]
        self.server: asyncio.AbstractServer | None = None
        self.closed = False
        self._task = self.loop.create_task(self._serve())
        self._expiry = self.loop.call_later(handler.options.data_timeout, self.close)

    async def _serve(self) -> None:
        self.server = await self.loop.create_server(
            lambda: self.handler.data.new(on_made=self._accepted), sock=self.sock)

    def _accepted(self, end: End) -> None:
        peer = end.transport.get_extra_info("peername")
        if self.closed or not same_ip(peer[0], self.allowed):
            log.warning("%s: data connection from %s refused (expected %s)",
                        self.handler.policy.key, peer[0], self.allowed)
            end.transport.abort()
            return
        self.close()
        end.transport.pause_reading()
        self.loop.create_task(self._carry_on(end))

    async def _carry_on(self, first: End) -> None:
        handler = self.handler
        second = handler.data.new()
        try:
            await connect_to(self.target, second, handler.policy.connect_timeout, self.source)
        except (OSError, TimeoutError) as exc:
            log.info("%s: data connection to %s:%s failed: %s", handler.policy.key,
                     *self.target, exc or "timeout")
            handler.data.discard(second)
            first.abort()
            return
        join(first, second)

    def close(self) -> None:
        """Stop listening; the port is free again."""
        if self.closed:
            return
        self.closed = True
        self._expiry.cancel()
        if self.server is not None:
            self.server.close()  # closes the socket: it owns the descriptor now
        else:
            self._task.cancel()
            self.sock.close()


class PortRangePins:
    """FTPS fallback for one policy: the whole ``ftps_passive_ports`` range, pinned by client.

    Listening starts with the first pinned client and stops with the last.
    A connection from a pinned client's address to VIP:port goes to its
    node at the same port; from anyone else it is refused.
    """

    _by_listener: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, listener, options: FtpOptions) -> "PortRangePins":
        pins = cls._by_listener.get(listener)
        if pins is None:
            pins = cls._by_listener[listener] = cls(listener, options)
        elif not pins.clients:
            pins.options = options  # idle: a reloaded range applies from now on
        return pins

    @classmethod
    def existing(cls, listener) -> "PortRangePins | None":
        return cls._by_listener.get(listener)

    def __init__(self, listener, options: FtpOptions):
        self.listener = listener
        self.options = options
        self.vip = listener.policy.vip
        self.loop = asyncio.get_running_loop()
        self.clients: dict[str, dict[str, int]] = {}  # client ip -> {node ip: sessions}
        # each listening socket, and its server once serving (then the server owns it)
        self.listening: dict[socket.socket, asyncio.AbstractServer | None] = {}
        self.data = Pipes(listener.policy.idle_timeout)

    def pin(self, client_ip: str, node_ip: str) -> None:
        nodes = self.clients.setdefault(client_ip, {})
        if nodes and node_ip not in nodes:
            log.warning("%s: FTPS client %s has control connections on several nodes; its "
                        "data connections go to the newest (%s). Set persistence on this "
                        "policy.", self.listener.key, client_ip, node_ip)
        nodes[node_ip] = nodes.pop(node_ip, 0) + 1  # newest last
        if not self.listening:
            self._listen()

    def unpin(self, client_ip: str, node_ip: str) -> None:
        nodes = self.clients.get(client_ip, {})
        if node_ip in nodes:
            nodes[node_ip] -= 1
            if not nodes[node_ip]:
                del nodes[node_ip]
        if not nodes:
            self.clients.pop(client_ip, None)
        if not self.clients:
            self._stop()

    def _listen(self) -> None:
        family = socket.AF_INET6 if ":" in self.vip else socket.AF_INET
        failed = []
        for port in self.options.ftps_passive_ports:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.vip, port))
                sock.listen(64)
                sock.setblocking(False)
            except OSError:
                sock.close()
                failed.append(port)
                continue
            self.listening[sock] = None
            self.loop.create_task(self._serve(sock, port))
        if failed:
            log.warning("%s: FTPS passive ports in use, not forwarded: %s",
                        self.listener.key, ", ".join(map(str, failed[:10])))

    async def _serve(self, sock: socket.socket, port: int) -> None:
        if sock not in self.listening:
            return  # stopped before it started
        self.listening[sock] = await self.loop.create_server(lambda: self._accept(port), sock=sock)

    def _stop(self) -> None:
        for sock, server in self.listening.items():
            if server is not None:
                server.close()  # closes its socket: never close that descriptor twice
            else:
                sock.close()
        self.listening.clear()

    def _accept(self, port: int) -> End:
        return self.data.new(on_made=lambda made: self._accepted(made, port))

    def _accepted(self, client_end: End, port: int) -> None:
        client_ip = client_end.transport.get_extra_info("peername")[0]
        nodes = self.clients.get(client_ip)
        if not nodes:
            log.warning("%s: FTPS data connection from %s, which has no FTPS session: refused",
                        self.listener.key, client_ip)
            client_end.abort()
            return
        node_ip = next(reversed(nodes))
        client_end.transport.pause_reading()
        self.loop.create_task(self._carry_on(client_end, (node_ip, port)))

    async def _carry_on(self, client_end: End, node: tuple[str, int]) -> None:
        node_end = self.data.new()
        try:
            await connect_to(node, node_end, self.listener.policy.connect_timeout)
        except (OSError, TimeoutError) as exc:
            log.info("%s: FTPS data connection to %s:%s failed: %s", self.listener.key,
                     *node, exc or "timeout")
            self.data.discard(node_end)
            client_end.abort()
            return
        join(client_end, node_end)

    def stats(self) -> dict:
        return {"clients": len(self.clients), "listening_ports": len(self.listening),
                "data_connections": len(self.data) // 2}
