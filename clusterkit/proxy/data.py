"""The one-shot listener a service handler opens for a data connection (FTP).

It is pinned to the node of the control connection that opened it: passive
mode relays the client's connection to that node, active mode the node's
connection to the client. It lives in the engine's ``retired`` set (swept
for idle time, closed at shutdown) until it and its connection are done.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import logging
import random
import socket

from clusterkit.proxy.idle import sweep_idle
from clusterkit.proxy.listener import Listener, ProxyError, listen_socket
from clusterkit.proxy.pool import RealServer
from clusterkit.proxy.relay import ClientSide, reset

log = logging.getLogger("clusterkit.proxy")


class DataListener:
    """A one-shot listener for a handler's data connection, pinned to one node.

    It accepts one connection from ``allowed_ip`` on ``bind_ip`` (a port of
    ``ports`` from a random start, else an ephemeral one) and relays it to
    ``target``. Passive mode: the client connects on the public address,
    the target is the node. Active mode (``reverse``): the node connects on
    the manager's address, the target is the client, reached from
    ``source`` (the public address the client knows). Bytes count toward
    ``member`` in the client's direction either way, and the policy's client
    and server timeouts apply to the client's and the node's side. While
    bytes move, ``keepalive`` is called at each idle sweep (the control
    connection is not idle during a long transfer).

    ``address`` is where it listens; :meth:`close` stops listening (a
    connection already accepted runs to its end). It closes by itself after
    its connection or ``timeout`` seconds.
    """

    def __init__(self, parent: Listener, member: RealServer, bind_ip: str, ports: range | None,
                 allowed_ip: str, target: tuple[str, int], timeout: float, reverse: bool = False,
                 source: tuple[str, int] | None = None, keepalive=None):
        self.parent = parent
        self.engine = parent.engine
        self.loop = parent.loop
        self.key = f"{parent.key} data"
        self.member = member
        self.target = RealServer(member.node, target)
        self.target.source = source
        self.allowed_ip = ipaddress.ip_address(allowed_ip)
        self.reverse = reverse
        self.keepalive = keepalive
        self.connect_timeout = parent.connect_timeout
        self.proxy_protocol = ""
        self.handler_factory = None
        self.fallback = None
        self.refused = self.fallbacks = 0
        self.conns: set[ClientSide] = set()
        self.retiring = True
        self.closed = False
        self.sock = self._bind(bind_ip, ports)
        self.address: tuple[str, int] = self.sock.getsockname()[:2]
        self.server = None
        self.engine.retired.add(self)
        self._task = self.loop.create_task(self._serve())
        self._expiry = self.loop.call_later(timeout, self.close)

    @staticmethod
    def _bind(ip: str, ports: range | None) -> socket.socket:
        """A random start spreads the ports over the range and makes them hard to guess."""
        if ports:
            first = random.randrange(len(ports))
            candidates = itertools.chain(ports[first:], ports[:first])
        else:
            candidates = (0,)
        for port in candidates:
            try:
                return listen_socket(ip, port)
            except ProxyError:
                continue
        raise OSError(errno.EADDRINUSE, f"no free port on {ip} in {ports.start}-{ports.stop - 1}"
                      if ports else f"cannot listen on {ip}")

    async def _serve(self) -> None:
        self.server = await self.loop.create_server(lambda: ClientSide(self), sock=self.sock)

    def close(self) -> None:
        """Stop listening: the port is free again."""
        self.closed = True
        self._expiry.cancel()
        if self.server is not None:
            self.server.close()
        else:
            self._task.cancel()
            self.sock.close()
        if not self.conns:
            self.engine.retired.discard(self)

    retire = close

    def accepted(self, conn: ClientSide) -> None:
        conn.client_addr = conn.transport.get_extra_info("peername")
        self.conns.add(conn)
        if self.closed or ipaddress.ip_address(conn.client_addr[0]) != self.allowed_ip:
            log.warning("%s: data connection from %s refused (expected %s)",
                        self.key, conn.client_addr[0], self.allowed_ip)
            reset(conn.transport)
            return
        self.close()
        conn.connect(conn.client_addr[0])

    def pick(self, client_ip, tried) -> RealServer | None:
        return None if tried else self.target

    def finished(self, conn: ClientSide) -> None:
        self.conns.discard(conn)
        if conn.member is not None:
            conn.member.active -= 1
            sent, received = self.target.bytes_in, self.target.bytes_out
            if self.reverse:
                sent, received = received, sent
            self.member.bytes_in += sent
            self.member.bytes_out += received
            self.target.bytes_in = self.target.bytes_out = 0
        if not self.conns and self.closed:
            self.engine.retired.discard(self)

    def sweep(self, interval: float) -> None:
        client, server = self.parent.client_timeout, self.parent.server_timeout
        if self.reverse:  # the accepted side is the node
            client, server = server, client
        if sweep_idle(self.conns, interval, client, server)[1] and self.keepalive is not None:
            self.keepalive()
