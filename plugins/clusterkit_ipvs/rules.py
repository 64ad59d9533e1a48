"""What the IPVS engine programs for a policy, as data and as ``ipvsadm -S -n`` lines (no I/O).

:func:`plan` turns a policy, the hosts and the member states into a
:class:`Service` with its :class:`Dest` list; the engine programs exactly that
through netlink (:mod:`clusterkit_ipvs.kernel`), and :func:`render` writes it
the way ``ipvsadm -S -n`` saves a table, for ``ipvsadm -R`` on a kernel the
daemon cannot drive (``clusterkit policy ipvs-rules``).

Member states: ``up`` takes new connections at its weight (scaled during
slow start); ``drain`` stays with weight 0 (its connections go on, no new
ones); ``down`` and ``maintenance`` leave the table (the engine first sets
weight 0 and removes the destination once its active connections are gone).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import clusterkit_ipvs  # its KIND (forwards: METHODS below): the policy's forward

#: Each ``forward`` as IPVS does it: (ipvsadm flag, netlink fwd_method).
METHODS = {
    "dr": ("-g", 3),   # IP_VS_CONN_F_DROUTE: direct routing, "gatewaying" (the default)
    "nat": ("-m", 0),  # IP_VS_CONN_F_MASQ
    "tun": ("-i", 2),  # IP_VS_CONN_F_TUNNEL: IP-in-IP
}
#: clusterkit's schedulers are IPVS's own (rr, wrr, lc, wlc, sh), same names, same meanings.
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "sh")
MAX_WEIGHT = 65535
KEEP = ("up", "drain")  # states whose destination stays in the table


@dataclass(frozen=True)
class Dest:
    node: str
    address: str
    port: int
    weight: int      # what the kernel gets (0: no new connections)
    state: str
    u_thresh: int = 0  # member_max_conn (ipvsadm -x)

    @property
    def kept(self) -> bool:
        """Whether the destination belongs in the table (else it leaves once idle)."""
        return self.state in KEEP


@dataclass(frozen=True)
class Service:
    key: str
    vip: str
    port: int
    scheduler: str
    persistence: int  # seconds (ipvsadm -p), 0: none
    forward: str      # dr, nat or tun (METHODS)
    dests: tuple[Dest, ...] = field(default=())

    @property
    def fwd_method(self) -> int:
        return METHODS[self.forward][1]


def weight(configured: int, state: str, factor: float = 1.0) -> int:
    """The kernel's weight: the configured one scaled by slow start, 0 unless ``up``.

    A member in slow start gets at least 1 while its factor is above 0, so the steps
    of the ramp all take connections.
    """
    if state != "up" or configured <= 0 or not factor > 0:
        return 0
    return min(MAX_WEIGHT, max(1, round(configured * min(1.0, factor))))


def plan(policy, hosts: dict, states: dict[str, tuple[str, float]], forward: str = "") -> Service:
    """The service for ``policy``; ``states``: node → (state, weight factor), ``up`` if absent;
    ``forward``: the method to render with instead of the policy's own."""
    dests = []
    for m in policy.members:
        host = hosts.get(m.node)
        if host is None:
            continue
        state, factor = states.get(m.node, ("up", 1.0))
        dests.append(Dest(m.node, host.ip, policy.backend_port, weight(m.weight, state, factor),
                          state, policy.member_max_conn))
    return Service(policy.key, policy.vip, policy.port, policy.scheduler, policy.persistence,
                   forward or clusterkit_ipvs.KIND.forward_of(policy), tuple(dests))


def endpoint(address: str, port: int) -> str:
    return f"{address}:{port}"


def render(services) -> list[str]:
    """``ipvsadm -S -n`` lines: ``-A`` per service, then ``-a`` per destination it keeps."""
    lines = []
    for s in services:
        vip = endpoint(s.vip, s.port)
        line = f"-A -t {vip} -s {s.scheduler}"
        if s.persistence:
            line += f" -p {s.persistence}"
        lines.append(line)
        flag = METHODS[s.forward][0]
        for d in s.dests:
            if not d.kept:
                continue
            line = f"-a -t {vip} -r {endpoint(d.address, d.port)} {flag} -w {d.weight}"
            if d.u_thresh:
                line += f" -x {d.u_thresh}"
            lines.append(line)
    return lines
