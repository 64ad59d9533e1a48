"""The ``[dns]`` table of the cluster definition."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from clusterkit.definition.tables import Key, Table
from clusterkit.definition.values import absolute_problem, ip_problem
from clusterkit_dns import mgmtconfig

DEFAULT_ZONES_DIR = "/var/lib/clusterkit/zones"
TCP_PER_CLIENT = 16
CONVERGENCE_INTERVAL = 10.0


@dataclass(frozen=True)
class DnsSettings:
    """``listen`` empty means: the host's ip, plus the manager's public_ips on the manager.

    ``identity`` and ``version`` are what ``CH TXT id.server`` and
    ``version.server`` answer (``None``: the host's name, clusterkit's
    version; ``""``: refused). ``tcp_per_client``: concurrent TCP connections
    one address may hold (NSD bounds them overall with tcp-count).
    ``convergence_interval``: seconds between the manager daemon's checks that
    every host serves its zones (:mod:`clusterkit_dns.convergence_watch`).
    """

    enabled: bool = True
    port: int = 53
    zones_dir: str = DEFAULT_ZONES_DIR
    listen: tuple[str, ...] = ()
    identity: str | None = None
    version: str | None = None
    tcp_per_client: int = TCP_PER_CLIENT
    convergence_interval: float = CONVERGENCE_INTERVAL
    management: mgmtconfig.Management = field(default_factory=mgmtconfig.Management)

    def addresses(self, host) -> list[tuple[str, int]]:
        """Where ``host`` serves DNS: ``(ip, port)`` pairs, without duplicates."""
        ips = list(self.listen) or [host.ip, *(host.public_ips if host.role == "manager" else ())]
        return [(ip, self.port) for ip in dict.fromkeys(ips)]


def _text_problem(value: str) -> str | None:
    if len(value.encode()) > 255:
        return "must be a string of at most 255 bytes (\"\" refuses the query)"
    return None


DNS = Table({
    "enabled": Key(bool), "port": Key(int, low=1, high=65535),
    "zones_dir": Key(str, check=absolute_problem),
    "listen": Key(list, items=str, check=ip_problem),
    "identity": Key(str, check=_text_problem), "version": Key(str, check=_text_problem),
    "tcp_per_client": Key(int, low=1, high=65535),
    "convergence_interval": Key(float, low=0.5, high=3600),
    # the management keys: mgmtconfig.parse_management reads them
    **{key: Key(object) for key in mgmtconfig.KEYS},
})


def parse_settings(values: dict, report) -> DnsSettings:
    """``parse`` of the ``[dns]`` section, given the values :data:`DNS` let through."""
    management = mgmtconfig.parse_management(values, report)
    server = {k: v for k, v in values.items() if k not in mgmtconfig.KEYS}
    server["listen"] = tuple(str(ipaddress.ip_address(ip)) for ip in values.get("listen", ()))
    return DnsSettings(**server, management=management)


def settings_of(cluster) -> DnsSettings:
    return cluster.sections.get("dns") or DnsSettings()
