"""The FTP protocol handler: the proxy side of :class:`~clusterkit_ftp.control.FtpControl`.

One :class:`FtpHandler` per balanced control connection. Data connections
go through the session's one-shot data listeners, one at a time per
direction:

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
next PASV/PORT replaces it, on ``ABOR``/``REIN``, or with the control connection: ports always
return to the range, and one session holds at most one passive port. One
client *address* holds at most ``passive_per_client`` over all its sessions
(:class:`PassiveQuota`): more PASV/EPSV get ``425``, so a few addresses
cannot take the whole range. While data moves, the proxy keeps the control
connection from idling out.
"""

from __future__ import annotations

import asyncio
import logging
import socket

from clusterkit.proxy.handler import Handler

from clusterkit_ftp.control import FtpControl, PassiveQuotaExceeded
from clusterkit_ftp.options import FtpOptions, ftp_options
from clusterkit_ftp.pipe import End, Pipes, connect_to, join

log = logging.getLogger("clusterkit.ftp")


class FtpHandler(Handler):
    """Parses and rewrites the control channel; opens and closes the data paths."""

    def __init__(self, session):
        super().__init__(session)
        self.options = ftp_options(session.policy)
        self.control = FtpControl(session.client[0], self)
        self.passive_data = None  # the session's pending DataListener of each kind
        self.active_data = None
        self.pinned: PortRangePins | None = None
        self.quota = PassiveQuota.of(session.policy_key)

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
        self.aborted()
        if self.pinned is not None:
            self.pinned.unpin(self.session.client[0], self.session.member_address[0])
            self.pinned = None

    # ------------------------------------------------------------ DataPorts

    def passive_allowed(self) -> bool:
        """The session's own pending listener does not count: a new PASV replaces it."""
        held = self.quota.held(self.session.client[0], besides=self.passive_data)
        return held < self.options.passive_per_client

    def passive(self, node_port: int) -> tuple[str, int]:
        self._close_passive()  # a new PASV replaces an unused one
        if not self.passive_allowed():  # checked at the command too, but sessions race
            raise PassiveQuotaExceeded(f"{self.session.client[0]} holds "
                                       f"{self.options.passive_per_client} passive ports")
        self.passive_data = self.session.open_data_listener(
            node_port, self.options.passive_ports, self.options.data_timeout)
        self.quota.add(self.session.client[0], self.passive_data)
        return self.passive_data.address

    def _close_passive(self) -> None:
        if self.passive_data is not None:
            self.passive_data.close()
            self.quota.discard(self.session.client[0], self.passive_data)
            self.passive_data = None

    def active(self, client_ip: str, client_port: int) -> tuple[str, int]:
        """``client_ip`` is the client's own (FtpControl checked it): the session's."""
        self.active_refused()  # a new PORT replaces an unused one
        self.active_data = self.session.open_active_listener(
            client_port, timeout=self.options.data_timeout)
        return self.active_data.address

    def active_refused(self) -> None:
        if self.active_data is not None:
            self.active_data.close()
            self.active_data = None

    def aborted(self) -> None:
        """A listener that took its connection is closed already; this frees the others."""
        self._close_passive()
        self.active_refused()

    def tls_started(self) -> None:
        self.pinned = PortRangePins.of(self.session.policy, self.options)
        self.pinned.pin(self.session.client[0], self.session.member_address[0])


class PassiveQuota:
    """The passive listeners each client address holds open, for one policy.

    A listener counts from its PASV/EPSV reply until it closes (its data
    connection arrived, ``data_timeout``, replaced, the session's end);
    closed ones are forgotten when next counted.
    """

    _by_policy: dict[str, "PassiveQuota"] = {}  # policy key -> its quota

    @classmethod
    def of(cls, key: str) -> "PassiveQuota":
        quota = cls._by_policy.get(key)
        if quota is None:
            quota = cls._by_policy[key] = cls()
        return quota

    def __init__(self):
        self.listeners: dict[str, set] = {}  # client ip -> its open passive DataListeners

    def held(self, ip: str, besides=None) -> int:
        listeners = self.listeners.get(ip)
        if not listeners:
            return 0
        listeners.difference_update([lst for lst in listeners if lst.closed])
        if not listeners:
            del self.listeners[ip]
            return 0
        return len(listeners) - (besides in listeners)

    def add(self, ip: str, listener) -> None:
        self.listeners.setdefault(ip, set()).add(listener)

    def discard(self, ip: str, listener) -> None:
        listeners = self.listeners.get(ip)
        if listeners is not None:
            listeners.discard(listener)
            if not listeners:
                del self.listeners[ip]


class PortRangePins:
    """FTPS fallback for one policy: the whole ``ftps_passive_ports`` range, pinned by client.

    Listening starts with the first pinned client and stops with the last,
    which also forgets the policy's pins: the next FTPS session starts afresh
    with the policy and range as configured then. A connection from a pinned
    client's address to VIP:port goes to its node at the same port; from
    anyone else it is refused.
    """

    _by_policy: dict[str, "PortRangePins"] = {}  # policy key -> pins while a client is pinned

    @classmethod
    def of(cls, policy, options: FtpOptions) -> "PortRangePins":
        pins = cls._by_policy.get(policy.key)
        if pins is None:
            pins = cls._by_policy[policy.key] = cls(policy, options)
        return pins

    @classmethod
    def existing(cls, key: str) -> "PortRangePins | None":
        return cls._by_policy.get(key)

    def __init__(self, policy, options: FtpOptions):
        self.key = policy.key
        self.vip = policy.vip
        self.connect_timeout = policy.connect_timeout
        self.options = options
        self.loop = asyncio.get_running_loop()
        self.clients: dict[str, dict[str, int]] = {}  # client ip -> {node ip: sessions}
        # each listening socket, and its server once serving (then the server owns it)
        self.listening: dict[socket.socket, asyncio.AbstractServer | None] = {}
        # one stuck-pipe timeout for both ends: the longer of the policy's two
        self.data = Pipes(max(policy.client_timeout, policy.server_timeout))

    def pin(self, client_ip: str, node_ip: str) -> None:
        nodes = self.clients.setdefault(client_ip, {})
        if nodes and node_ip not in nodes:
            log.warning("%s: FTPS client %s has control connections on several nodes; its "
                        "data connections go to the newest (%s). Set persistence on this "
                        "policy.", self.key, client_ip, node_ip)
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
            if self._by_policy.get(self.key) is self:
                del self._by_policy[self.key]

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
                        self.key, ", ".join(map(str, failed[:10])))

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
                        self.key, client_ip)
            client_end.abort()
            return
        node_ip = next(reversed(nodes))
        client_end.transport.pause_reading()
        self.loop.create_task(self._carry_on(client_end, (node_ip, port)))

    async def _carry_on(self, client_end: End, node: tuple[str, int]) -> None:
        node_end = self.data.new()
        try:
            await connect_to(node, node_end, self.connect_timeout)
        except (OSError, TimeoutError) as exc:
            log.info("%s: FTPS data connection to %s:%s failed: %s", self.key,
                     *node, exc or "timeout")
            self.data.discard(node_end)
            client_end.abort()
            return
        join(client_end, node_end)

    def stats(self) -> dict:
        return {"clients": len(self.clients), "listening_ports": len(self.listening),
                "data_connections": len(self.data) // 2}
