"""The FTP protocol handler: the proxy side of :class:`~clusterkit_ftp.control.FtpControl`.

One :class:`FtpHandler` per balanced control connection. Data connections:

* passive (PASV/EPSV): the engine's one-shot data listener on the VIP, a port
  from ``passive_ports``, relayed to the same node (``Session.open_data_listener``);
* active (PORT/EPRT): :class:`ActiveData` listens on the manager's address as
  the node sees it, takes the node's connection and carries it on to the
  client's address;
* explicit FTPS (``AUTH TLS``): the control channel is opaque, so the client
  is pinned in :class:`PortRangePins`: every connection from its address to
  the VIP on a port of ``ftps_passive_ports`` goes to its node, same port.

Every listener closes after its one connection or ``data_timeout``, and all
of a session's are closed with it: ports always return to the range.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import weakref

from clusterkit.proxy.handler import Handler

from clusterkit_ftp.control import FtpControl, same_ip
from clusterkit_ftp.options import FtpOptions, ftp_options
from clusterkit_ftp.pipe import End, connect_to, join

log = logging.getLogger("clusterkit.ftp")

# The engine's Session does not (yet) offer these; they are read from its
# connection object in one place so the gap is easy to close.

def _listener(session):
    return session._conn.listener


def _policy(session):
    return session._conn.listener.policy


def _touch(session) -> None:
    """Data is moving: the control connection is not idle."""
    session._conn.seen = True


def _node_side_address(session) -> str:
    """The manager's address on its connection to the node (what the node can reach)."""
    return session._conn.server.transport.get_extra_info("sockname")[0]


class FtpHandler(Handler):
    """Parses and rewrites the control channel; opens and closes the data paths."""

    def __init__(self, session):
        super().__init__(session)
        self.options = ftp_options(_policy(session))
        self.control = FtpControl(session.client[0], self)
        self.active_data: ActiveData | None = None
        self.pinned: PortRangePins | None = None
        self.data_ends: set[End] = set()

    # ------------------------------------------------------------- the relay

    def from_client(self, data: bytes) -> bytes:
        to_server, to_client = self.control.from_client(data)
        if to_client:
            self.session.send_to_client(to_client)
        return to_server

    def from_server(self, data: bytes) -> bytes:
        return self.control.from_server(data)

    def closed(self) -> None:
        self.active_refused()
        if self.pinned is not None:
            self.pinned.unpin(self.session.client[0], self.session.member_address[0])
            self.pinned = None
        for end in list(self.data_ends):
            end.abort()

    # ------------------------------------------------------------ DataPorts

    def passive(self, node_port: int) -> tuple[str, int]:
        return self.session.open_data_listener(node_port, self.options.passive_ports,
                                               self.options.data_timeout)

    def active(self, client_ip: str, client_port: int) -> tuple[str, int]:
        self.active_refused()  # a new PORT replaces an unused one
        self.active_data = ActiveData(self, (client_ip, client_port))
        return self.active_data.address

    def active_refused(self) -> None:
        if self.active_data is not None:
            self.active_data.close()
            self.active_data = None

    def tls_started(self) -> None:
        self.pinned = PortRangePins.of(_listener(self.session), self.options)
        self.pinned.pin(self.session.client[0], self.session.member_address[0])


class ActiveData:
    """PORT/EPRT: one connection from the node, carried on to the client's data port."""

    def __init__(self, handler: FtpHandler, client: tuple[str, int]):
        session = handler.session
        self.handler = handler
        self.client = client
        self.node_ip = session.member_address[0]
        self.loop = asyncio.get_running_loop()
        ip = _node_side_address(session)
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            self.sock.bind((ip, 0))
            self.sock.listen(8)
            self.sock.setblocking(False)
        except OSError:
            self.sock.close()
            raise
        self.address = self.sock.getsockname()[:2]
        self.server: asyncio.AbstractServer | None = None
        self.closed = False
        self._task = self.loop.create_task(self._serve())
        self._expiry = self.loop.call_later(handler.options.data_timeout, self.close)

    async def _serve(self) -> None:
        self.server = await self.loop.create_server(self._accept, sock=self.sock)

    def _accept(self) -> End:
        session = self.handler.session
        end = End(on_data=lambda: _touch(session), on_made=self._accepted)
        end.on_lost = lambda: self.handler.data_ends.discard(end)
        self.handler.data_ends.add(end)
        return end

    def _accepted(self, node_end: End) -> None:
        peer = node_end.transport.get_extra_info("peername")
        if self.closed or not same_ip(peer[0], self.node_ip):
            log.warning("%s: active data connection from %s refused (expected the node %s)",
                        _listener(self.handler.session).key, peer[0], self.node_ip)
            node_end.abort()
            return
        self.close()
        node_end.transport.pause_reading()
        self.loop.create_task(self._carry_on(node_end))

    async def _carry_on(self, node_end: End) -> None:
        handler = self.handler
        client_end = End(on_data=lambda: _touch(handler.session))
        client_end.on_lost = lambda: handler.data_ends.discard(client_end)
        handler.data_ends.add(client_end)
        try:
            await connect_to(self.client, client_end, _policy(handler.session).connect_timeout,
                             source=handler.session.local[0])
        except (OSError, TimeoutError) as exc:
            log.info("active data connection to the client %s:%s failed: %s",
                     *self.client, exc or "timeout")
            handler.data_ends.discard(client_end)
            node_end.abort()
            return
        join(node_end, client_end)

    def close(self) -> None:
        """Stop listening (after the one connection, a timeout, or the session's end)."""
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

    def __init__(self, listener, options: FtpOptions):
        self.listener = listener
        self.options = options
        self.vip = listener.policy.vip
        self.loop = asyncio.get_running_loop()
        self.clients: dict[str, dict[str, int]] = {}  # client ip -> {node ip: sessions}
        self.servers: list[asyncio.AbstractServer] = []
        self.socks: list[socket.socket] = []
        self.ends: set[End] = set()

    def pin(self, client_ip: str, node_ip: str) -> None:
        nodes = self.clients.setdefault(client_ip, {})
        if nodes and node_ip not in nodes:
            log.warning("%s: FTPS client %s has control connections on several nodes; its "
                        "data connections go to the newest (%s). Set persistence on this "
                        "policy.", self.listener.key, client_ip, node_ip)
        nodes[node_ip] = nodes.pop(node_ip, 0) + 1  # newest last
        if not self.socks:
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
            self.socks.append(sock)
            self.loop.create_task(self._serve(sock, port))
        if failed:
            log.warning("%s: FTPS passive ports in use, not forwarded: %s",
                        self.listener.key, ", ".join(map(str, failed[:10])))

    async def _serve(self, sock: socket.socket, port: int) -> None:
        if sock not in self.socks:
            return  # stopped before it started
        self.servers.append(await self.loop.create_server(lambda: self._accept(port), sock=sock))

    def _stop(self) -> None:
        served = set()
        for server in self.servers:
            served.update(s.fileno() for s in server.sockets)
            server.close()  # closes its socket: never close that descriptor twice
        for sock in self.socks:
            if sock.fileno() not in served:
                sock.close()
        self.servers.clear()
        self.socks.clear()

    def _accept(self, port: int) -> End:
        end = End(on_made=lambda made: self._accepted(made, port))
        end.on_lost = lambda: self.ends.discard(end)
        self.ends.add(end)
        return end

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
        node_end = End()
        node_end.on_lost = lambda: self.ends.discard(node_end)
        self.ends.add(node_end)
        try:
            await connect_to(node, node_end, self.listener.policy.connect_timeout)
        except (OSError, TimeoutError) as exc:
            log.info("%s: FTPS data connection to %s:%s failed: %s", self.listener.key,
                     *node, exc or "timeout")
            self.ends.discard(node_end)
            client_end.abort()
            return
        join(client_end, node_end)

    def stats(self) -> dict:
        return {"clients": len(self.clients), "listening_ports": len(self.socks),
                "data_connections": len(self.ends) // 2}
