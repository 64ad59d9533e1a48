"""Listeners: a policy's listening socket, its member pool and its connections.

:class:`Listener` realises one policy (VIP:port). It is updated in place by
the engine on every reload, so members keep their state and counters and
established connections never notice. A removed policy's listener *retires*:
it stops accepting and lives until its last connection ends.

At ``max_conn`` a listener stops accepting (HAProxy's ``maxconn``): new
connections wait in the kernel's accept queue, and each slot that frees
takes the oldest of them. While it is full, connections on which nothing
has been said for ``first_data_timeout`` give their slot up
(:func:`~clusterkit.proxy.idle.close_silent`). The loop's own server (its C accept path) runs
on a duplicate of the listening socket, so closing it pauses accepting
while the socket, and its queue, stay; while paused, freed slots are filled
by accepting one connection at a time from that queue.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket

from clusterkit.definition.values import endpoint
from clusterkit.proxy.idle import close_silent, sweep_idle
from clusterkit.proxy.pool import RealServer, Pool
from clusterkit.proxy.relay import ClientSide

log = logging.getLogger("clusterkit.proxy")

BACKLOG = 4096
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)


class ProxyError(Exception):
    """A listener could not be opened; the message says which and why."""


def listen_socket(ip: str, port: int, reuse_port: bool = False) -> socket.socket:
    """A bound, listening, non-blocking TCP socket.

    ``IP_FREEBIND`` lets a listener come up before its VIP is assigned to an
    interface (a VIP that moves between managers). ``reuse_port`` is for
    worker processes sharing one address.
    """
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET:
            try:
                sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            except OSError:
                pass
        sock.bind((ip, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        hint = ""
        if exc.errno == errno.EADDRINUSE:
            hint = (f" (is a local service listening on 0.0.0.0:{port} or {endpoint(ip, port)}? bind the "
                    f"manager's own services to its cluster ip; see docs/load-balancing.md)")
        raise ProxyError(f"cannot listen on {endpoint(ip, port)}: {exc.strerror or exc}{hint}") from None
    return sock


class Listener:
    """One policy: listening socket, member pool, live connections, counters."""

    def __init__(self, engine, policy, cluster):
        self.engine = engine
        self.loop = engine.loop
        self.key = policy.key
        self.pool = Pool(policy.scheduler, policy.persistence)
        self.conns: set[ClientSide] = set()
        self.sock: socket.socket | None = None  # listening; the server accepts on a duplicate
        self.server: asyncio.AbstractServer | None = None
        self.paused = False  # at max_conn: no server, connections wait in the kernel's queue
        self._resuming: asyncio.Task | None = None
        # accepted beyond max_conn (the loop accepts in bursts): client ip to connect with
        self.waiting: dict[ClientSide, str | None] = {}
        self.adopting: set[ClientSide] = set()  # taken from the queue, transport being made
        self.retiring = False
        self.fallback: RealServer | None = None
        self.active = self.total = self.refused = self.fallbacks = 0
        self.over_limit = self.idle_closed = self.silent_closed = 0
        self.update(policy, cluster)

    def update(self, policy, cluster) -> None:
        """Take a (possibly changed) policy: members, weights, scheduler, options."""
        self.policy = policy
        self.pool.configure(policy.scheduler, policy.persistence)
        members = []
        for spec in policy.members:
            address = (cluster.hosts[spec.node].ip, policy.backend_port)
            member = self.pool.members.get(spec.node) or RealServer(spec.node, address)
            member.address = address
            member.weight = spec.weight
            member.max_conn = self.engine.per_process(policy, policy.member_max_conn)
            member.state, member.factor = self.engine.states.get((self.key, spec.node), ("up", 1.0))
            members.append(member)
        self.pool.set_members(members)
        self.fallback = self._fallback(policy, cluster)
        self.connect_timeout = policy.connect_timeout
        self.client_timeout = policy.client_timeout
        self.server_timeout = policy.server_timeout
        self.max_conn = self.engine.per_process(policy, policy.max_conn)
        self.proxy_protocol = policy.proxy_protocol
        self.handler_factory = self.engine.handler_for(policy.service)
        self.need_peer = bool(policy.persistence or policy.scheduler == "sh"
                              or policy.proxy_protocol or self.handler_factory)
        if self.sock is not None and (self.waiting or self.paused):
            self._fill()  # max_conn may have grown

    def _fallback(self, policy, cluster) -> RealServer | None:
        """``policy.fallback``; without one, the manager as a weight-0 member (a backup)."""
        if not policy.fallback:
            manager = getattr(cluster, "manager", None)
            member = self.pool.members.get(manager.name) if manager is not None else None
            return member if member is not None and member.weight == 0 else None
        if policy.fallback in cluster.hosts:
            address = (cluster.hosts[policy.fallback].ip, policy.backend_port)
        else:
            host, _, port = policy.fallback.rpartition(":")
            address = (host.strip("[]"), int(port))
        if self.fallback is not None and self._own_fallback() and self.fallback.address == address:
            return self.fallback  # keeps its counters
        return RealServer("fallback", address)

    def _own_fallback(self) -> bool:
        """The fallback is ``policy.fallback``, not a member standing in as backup."""
        return self.pool.members.get(self.fallback.node) is not self.fallback

    async def start(self, reuse_port: bool = False) -> None:
        self.sock = listen_socket(self.policy.vip, self.policy.port, reuse_port)
        await self._serve()

    def retire(self) -> None:
        """Stop accepting; established connections run to their end (those still
        in the kernel's queue are reset when the socket closes)."""
        self.retiring = True
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.sock is not None:
            self.sock.close()

    # ------------------------------------------------ accepting, max_conn

    async def _serve(self) -> None:
        """Accept through the loop's server, on a duplicate descriptor: closing
        that server pauses accepting and leaves ``self.sock`` listening."""
        try:
            if self.retiring:  # retired before this resume ran: the socket is closed
                return
            server = await self.loop.create_server(
                lambda: ClientSide(self), sock=self.sock.dup(), backlog=BACKLOG)
        finally:
            self._resuming = None
        if self.paused or self.retiring:  # full again, or retired, while it started
            server.close()
        else:
            self.server = server

    def _pause(self) -> None:
        self.paused = True
        if self.server is not None:
            self.server.close()
            self.server = None

    def _resume(self) -> None:
        self.paused = False
        if self._resuming is None and self.server is None:
            self._resuming = self.loop.create_task(self._serve())

    def _room(self) -> int | float:
        """Free slots: ``max_conn`` less the connections relayed or being adopted."""
        if not self.max_conn:
            return float("inf")
        return self.max_conn - (self.active - len(self.waiting)) - len(self.adopting)

    def _fill(self) -> None:
        """Slots are free: connections waiting here take them first, then the
        kernel's queue, one accept per slot; an empty queue resumes accepting."""
        while self.waiting and self._room() > 0:
            conn = next(iter(self.waiting))
            client_ip = self.waiting.pop(conn)
            conn.transport.resume_reading()
            conn.connect(client_ip)
        if not self.paused or self.retiring:
            return
        room = self._room()
        while room > 0:
            try:
                sock, _ = self.sock.accept()
            except BlockingIOError:
                break
            except OSError as exc:  # EMFILE and the like: the loop's server will retry
                log.warning("%s: accept failed: %s", self.key, exc)
                break
            conn = ClientSide(self)
            self.adopting.add(conn)
            self.over_limit += 1
            self.loop.create_task(self._adopt(conn, sock))
            room -= 1
        else:
            return  # every slot is taken: stay paused
        self._resume()

    async def _adopt(self, conn: ClientSide, sock: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(lambda: conn, sock)
        except OSError as exc:
            log.warning("%s: accepted connection lost: %s", self.key, exc)
            sock.close()
            self.adopting.discard(conn)
            self._fill()

    # ------------------------------------------------- called by the relay

    def accepted(self, conn: ClientSide) -> None:
        self.active += 1
        self.total += 1
        self.conns.add(conn)
        client_ip = None
        if self.need_peer:
            conn.client_addr = conn.transport.get_extra_info("peername")
            client_ip = conn.client_addr[0]
        if self.max_conn:
            self.adopting.discard(conn)
            used = self.active - len(self.waiting)
            if used >= self.max_conn:
                self._pause()
                if used > self.max_conn:  # accepted in the burst that took the last slot
                    self.over_limit += 1
                    self.waiting[conn] = client_ip
                    conn.transport.pause_reading()
                    return
        conn.connect(client_ip)

    def pick(self, client_ip, tried) -> RealServer | None:
        return self.pool.pick(client_ip, self.loop.time(), tried)

    def finished(self, conn: ClientSide) -> None:
        self.active -= 1
        self.conns.discard(conn)
        member = conn.member
        if member is not None:
            member.active -= 1
            if self.pool.persistence and conn.client_addr is not None:
                self.pool.refresh_pin(conn.client_addr[0], member, self.loop.time())
        if self.waiting and conn in self.waiting:  # left before it had a slot
            del self.waiting[conn]
        elif self.waiting or self.paused:
            self._fill()
        if self.retiring and not self.conns:
            self.engine.retired.discard(self)

    # --------------------------------------------------------------- upkeep

    def sweep(self, interval: float) -> None:
        """Close connections idle on one side past its timeout; expire pins."""
        self.pool.expire_pins(self.loop.time())
        self.idle_closed += sweep_idle(self.conns, interval, self.client_timeout,
                                       self.server_timeout)[0]
        if self.paused and not self.retiring:  # full: silent connections give their slot up
            self.silent_closed += close_silent(self.conns, self.engine.first_data_timeout)

    def stats(self) -> dict:
        members = {m.node: m.stats() for m in self.pool.members.values()}
        if self.fallback is not None and self._own_fallback():
            members["fallback"] = self.fallback.stats()
        p = self.policy
        return {"service": p.service, "scheduler": p.scheduler, "persistence": p.persistence,
                "proxy_protocol": p.proxy_protocol or "none", "listening": not self.retiring,
                "full": self.paused, "active": self.active, "total": self.total, "refused": self.refused,
                "fallback": self.fallbacks, "over_limit": self.over_limit,
                "idle_closed": self.idle_closed, "silent_closed": self.silent_closed,
                "members": members}
