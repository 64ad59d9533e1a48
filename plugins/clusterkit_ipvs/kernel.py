"""The kernel's IPVS table through pyroute2's public IPVS API (generic netlink, no ipvsadm).

Only TCP services addressed by VIP:port are read and written; firewall-mark
services and UDP services are someone else's and never touched. The calls
block (netlink round trips): the engine runs them in a thread, one at a time
(``lock``), and the socket is opened on first use, in the network namespace
the daemon runs in.
"""

from __future__ import annotations

import ipaddress
import os
import threading
from dataclasses import dataclass
from socket import IPPROTO_TCP

from clusterkit_ipvs.rules import Dest, Service

PROC = "/proc/net/ip_vs"
PERSISTENT = 0x0001  # IP_VS_SVC_F_PERSISTENT
FWD_MASK = 0x0007    # IP_VS_CONN_F_FWD_MASK: the forwarding method in a destination's flags
NO_IPVS = f"the kernel has no IPVS (ip_vs module not loaded): {PROC} missing"


class IpvsError(OSError):
    """The kernel refused a change, or has no IPVS (an OSError: ``clusterkit run`` ends with the
    message, not a traceback, when the first apply fails)."""


def canonical(address) -> str:
    """One spelling per address (the kernel's IPv6 is compressed, a definition's may not be)."""
    return ipaddress.ip_address(str(address)).compressed


def unavailable() -> str | None:
    """Why this machine's kernel cannot carry IPVS policies, or ``None``."""
    return None if os.path.exists(PROC) else NO_IPVS


@dataclass(frozen=True)
class Counters:
    """One destination as the kernel reports it."""

    weight: int
    fwd_method: int
    u_thresh: int
    active: int
    inactive: int
    conns: int
    packets_in: int
    packets_out: int
    bytes_in: int
    bytes_out: int


@dataclass(frozen=True)
class KernelService:
    scheduler: str
    persistence: int


def service_request(vip: str, port: int, s: Service | None = None):
    """The ``IPVSService`` naming VIP:port (TCP), with scheduler and persistence when ``s``."""
    from pyroute2 import IPVSService
    fields = {"addr": vip, "port": port, "protocol": IPPROTO_TCP}
    if s is not None:
        fields.update(sched_name=s.scheduler, timeout=s.persistence,
                      flags={"flags": PERSISTENT if s.persistence else 0, "mask": 0xFFFF})
    return IPVSService(**fields)


def dest_request(d: Dest, fwd_method: int = 3):
    """The ``IPVSDest`` for a destination: address, port, method, weight, upper threshold."""
    from pyroute2 import IPVSDest
    return IPVSDest(addr=d.address, port=d.port, fwd_method=fwd_method, weight=d.weight,
                    u_thresh=d.u_thresh)


def read_service(msg) -> tuple[tuple[str, int], KernelService] | None:
    """((VIP, port), service) of a dumped service message; ``None`` for a firewall-mark or
    non-TCP service."""
    svc = msg.get("IPVS_CMD_ATTR_SERVICE")
    addr = svc.get("IPVS_SVC_ATTR_ADDR") if svc is not None else None
    if not addr or svc.get("IPVS_SVC_ATTR_PROTOCOL") != IPPROTO_TCP:
        return None
    flags = (svc.get("IPVS_SVC_ATTR_FLAGS") or {}).get("flags", 0)
    persistence = (svc.get("IPVS_SVC_ATTR_TIMEOUT") or 0) if flags & PERSISTENT else 0
    return ((canonical(addr), int(svc.get("IPVS_SVC_ATTR_PORT"))),
            KernelService(str(svc.get("IPVS_SVC_ATTR_SCHED_NAME")), int(persistence)))


def read_dest(msg) -> tuple[tuple[str, int], Counters] | None:
    """((address, port), counters) of a dumped destination message."""
    d = msg.get("IPVS_CMD_ATTR_DEST")
    if d is None or not d.get("IPVS_DEST_ATTR_ADDR"):
        return None
    stats = d.get("IPVS_DEST_ATTR_STATS64") or d.get("IPVS_DEST_ATTR_STATS")

    def count(name: str) -> int:
        return int((stats.get(name) if stats is not None else 0) or 0)

    def attr(name: str) -> int:
        return int(d.get(f"IPVS_DEST_ATTR_{name}") or 0)
    return ((canonical(d.get("IPVS_DEST_ATTR_ADDR")), attr("PORT")), Counters(
        weight=attr("WEIGHT"), fwd_method=attr("FWD_METHOD") & FWD_MASK,
        u_thresh=attr("U_THRESH"), active=attr("ACTIVE_CONNS"), inactive=attr("INACT_CONNS"),
        conns=count("IPVS_STATS_ATTR_CONNS"), packets_in=count("IPVS_STATS_ATTR_INPKTS"),
        packets_out=count("IPVS_STATS_ATTR_OUTPKTS"), bytes_in=count("IPVS_STATS_ATTR_INBYTES"),
        bytes_out=count("IPVS_STATS_ATTR_OUTBYTES")))


class Kernel:
    """The IPVS table of the daemon's network namespace."""

    def __init__(self):
        self.lock = threading.Lock()
        self._socket = None

    def _ipvs(self):
        if self._socket is None:
            why = unavailable()
            if why:
                raise IpvsError(why)
            from pyroute2 import IPVS
            self._socket = IPVS()
        return self._socket

    def _call(self, fn):
        with self.lock:
            try:
                return fn(self._ipvs())
            except IpvsError:
                raise
            except Exception as exc:  # NetlinkError, OSError: the kernel said no
                raise IpvsError(f"IPVS: {exc}") from exc

    # ------------------------------------------------------------ services

    def services(self) -> dict[tuple[str, int], KernelService]:
        """Every TCP VIP:port service of the table (firewall-mark services left out)."""
        return self._call(lambda ipvs: dict(filter(None, map(read_service, ipvs.service("dump")))))

    def add_service(self, s: Service) -> None:
        self._call(lambda ipvs: ipvs.service("add", service=service_request(s.vip, s.port, s)))

    def edit_service(self, s: Service) -> None:
        self._call(lambda ipvs: ipvs.service("set", service=service_request(s.vip, s.port, s)))

    def delete_service(self, vip: str, port: int) -> None:
        self._call(lambda ipvs: ipvs.service("del", service=service_request(vip, port)))

    # ------------------------------------------------------------ destinations

    def dests(self, vip: str, port: int) -> dict[tuple[str, int], Counters]:
        return self._call(lambda ipvs: dict(filter(None, map(
            read_dest, ipvs.dest("dump", service=service_request(vip, port))))))

    def add_dest(self, s: Service, d: Dest) -> None:
        self._call(lambda ipvs: ipvs.dest("add", service=service_request(s.vip, s.port),
                                          dest=dest_request(d, s.fwd_method)))

    def edit_dest(self, s: Service, d: Dest) -> None:
        self._call(lambda ipvs: ipvs.dest("set", service=service_request(s.vip, s.port),
                                          dest=dest_request(d, s.fwd_method)))

    def delete_dest(self, vip: str, port: int, address: str, dport: int) -> None:
        self._call(lambda ipvs: ipvs.dest("del", service=service_request(vip, port),
                                          dest=dest_request(Dest("", address, dport, 0, "down"))))

    def close(self) -> None:
        with self.lock:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
