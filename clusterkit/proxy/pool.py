"""Members and schedulers: which member takes the next connection (no I/O here).

A :class:`Pool` holds the members of one policy and answers ``pick(client_ip)``.
The schedulers have IPVS's names and meanings:

``rr``  round robin over the members that can take a connection (weights only
        say in or out: 0 is out);
``wrr`` smooth weighted round robin (nginx's algorithm: exact proportions,
        no bursts to the heaviest member);
``lc``  least active connections;
``wlc`` least active connections per unit of weight;
``sh``  source hash: weighted rendezvous hashing of the client address, so
        removing a member only moves the clients it had.

``persistence`` (seconds) pins a client address to the member it got, with
any scheduler (IPVS ``-p``): each new connection refreshes the pin, and a pin
to a member that cannot take connections any more is dropped.

A member is *eligible* when its state is ``up``, its weight is above 0 and
it is below its connection limit. A member whose connect just failed is
avoided for :data:`PENALTY` seconds while another eligible member exists, so
a dead port costs the clients one fast retry, not one per connection.
"""

from __future__ import annotations

import hashlib
import math

from clusterkit.definition.values import endpoint

PENALTY = 2.0  # seconds a member that failed a connect is passed over


class RealServer:
    """One (policy, node) member as the balancer sees it (IPVS's word): address, state, counters.

    The object lives as long as the member stays in the policy, across
    reloads; connections keep a reference, so a removed member's
    connections run to their end.
    """

    __slots__ = ("node", "address", "weight", "state", "factor", "max_conn",
                 "active", "total", "bytes_in", "bytes_out", "connect_failures",
                 "penalty_until", "current", "source")

    def __init__(self, node: str, address: tuple[str, int], weight: int = 1,
                 state: str = "up", factor: float = 1.0, max_conn: int = 0):
        self.node = node
        self.address = address
        self.weight = weight
        self.state = state
        self.factor = factor
        self.max_conn = max_conn
        self.active = 0
        self.total = 0
        self.bytes_in = 0    # from the client, sent to this member
        self.bytes_out = 0   # from this member, sent to the client
        self.connect_failures = 0
        self.penalty_until = 0.0
        self.current = 0.0   # smooth wrr state
        self.source = None   # local (ip, port) to connect from; None: the kernel chooses

    @property
    def effective_weight(self) -> float:
        """Weight for new connections: 0 unless ``up``; slow start scales it."""
        return self.weight * self.factor if self.state == "up" else 0.0

    def can_take(self) -> bool:
        return (self.state == "up" and self.weight > 0
                and (not self.max_conn or self.active < self.max_conn))

    def stats(self) -> dict:
        return {"address": endpoint(*self.address[:2]), "state": self.state,
                "weight": self.weight, "weight_factor": self.factor, "active": self.active,
                "total": self.total, "bytes_in": self.bytes_in, "bytes_out": self.bytes_out,
                "connect_failures": self.connect_failures}


class Pool:
    """The members of one policy and the scheduler that chooses among them."""

    def __init__(self, scheduler: str = "wrr", persistence: int = 0):
        self.scheduler = scheduler
        self.persistence = persistence
        self.members: dict[str, RealServer] = {}
        self.pins: dict[str, tuple[RealServer, float]] = {}
        self._order: list[RealServer] = []
        self._next = 0

    def configure(self, scheduler: str, persistence: int) -> None:
        if persistence != self.persistence or scheduler != self.scheduler:
            self.pins.clear()
        self.scheduler = scheduler
        self.persistence = persistence

    def set_members(self, members: list[RealServer]) -> None:
        self.members = {m.node: m for m in members}
        self._order = list(members)
        self._next %= max(1, len(self._order))
        for m in self._order:
            m.current = 0.0

    # ---------------------------------------------------------------- pick

    def pick(self, client_ip: str | None, now: float, exclude=()) -> RealServer | None:
        """The member for a new connection from ``client_ip``, or ``None``.

        ``exclude`` holds members already tried for this connection.
        """
        if self.persistence and client_ip is not None:
            pin = self.pins.get(client_ip)
            if pin is not None:
                member = pin[0]
                if (pin[1] > now and member.can_take() and member not in exclude
                        and self.members.get(member.node) is member):
                    self.pins[client_ip] = (member, now + self.persistence)
                    return member
        candidates = [m for m in self._order if m not in exclude and m.can_take()]
        if not candidates:
            return None
        if len(candidates) > 1:
            fresh = [m for m in candidates if m.penalty_until <= now]
            if fresh:
                candidates = fresh
        member = self._choose(candidates, client_ip)
        if self.persistence and client_ip is not None:
            self.pins[client_ip] = (member, now + self.persistence)
        return member

    def _choose(self, candidates: list[RealServer], client_ip: str | None) -> RealServer:
        scheduler = self.scheduler
        if len(candidates) == 1:
            return candidates[0]
        if scheduler == "wrr":
            total = 0.0
            best = None
            for m in candidates:
                w = m.effective_weight
                m.current += w
                total += w
                if best is None or m.current > best.current:
                    best = m
            best.current -= total
            return best
        if scheduler == "sh" and client_ip is not None:
            return max(candidates, key=lambda m: _rendezvous(client_ip, m))
        if scheduler in ("lc", "wlc"):
            # ties go round robin, starting after the last one chosen
            start = self._next % len(candidates)
            rotated = candidates[start:] + candidates[:start]
            if scheduler == "lc":
                best = min(rotated, key=lambda m: m.active)
            else:
                best = min(rotated, key=_wlc_load)
            self._next += 1
            return best
        # rr (and sh without a client address)
        member = candidates[self._next % len(candidates)]
        self._next += 1
        return member

    # ------------------------------------------------------------ upkeep

    def expire_pins(self, now: float) -> None:
        """Drop pins whose time ran out (called about once a second)."""
        if self.pins:
            for ip in [ip for ip, (_, until) in self.pins.items() if until <= now]:
                del self.pins[ip]

    def refresh_pin(self, client_ip: str, member: RealServer, now: float) -> None:
        """A pinned client's connection ended: its pin runs from now (IPVS templates)."""
        pin = self.pins.get(client_ip)
        if pin is not None and pin[0] is member:
            self.pins[client_ip] = (member, now + self.persistence)


def _wlc_load(member: RealServer) -> float:
    weight = member.effective_weight
    return (member.active + 1) / weight if weight > 0 else math.inf


def _rendezvous(client_ip: str, member: RealServer) -> float:
    """Weighted rendezvous score: the highest wins; stable when others come and go."""
    digest = hashlib.blake2b(f"{client_ip}|{member.node}".encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 1) / (2 ** 64 + 2)
    return -member.effective_weight / math.log(u)
