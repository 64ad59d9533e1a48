"""The ``[dns]`` table of the cluster definition."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from clusterkit.definition.values import read_number
from clusterkit_dns import mgmtconfig

DEFAULT_ZONES_DIR = "/var/lib/clusterkit/zones"
KEYS = ("enabled", "port", "zones_dir", "listen", "identity", "version",
        "tcp_per_client") + mgmtconfig.KEYS
TCP_PER_CLIENT = 16


@dataclass(frozen=True)
class DnsSettings:
    """``listen`` empty means: the host's ip, plus the manager's public_ips on the manager.

    ``identity`` and ``version`` are what ``CH TXT id.server`` and
    ``version.server`` answer (``None``: the host's name, clusterkit's
    version; ``""``: refused). ``tcp_per_client``: concurrent TCP connections
    one address may hold (NSD bounds them overall with tcp-count).
    """

    enabled: bool = True
    port: int = 53
    zones_dir: str = DEFAULT_ZONES_DIR
    listen: tuple[str, ...] = ()
    identity: str | None = None
    version: str | None = None
    tcp_per_client: int = TCP_PER_CLIENT
    management: mgmtconfig.Management = field(default_factory=mgmtconfig.Management)

    def addresses(self, host) -> list[tuple[str, int]]:
        """Where ``host`` serves DNS: ``(ip, port)`` pairs, without duplicates."""
        ips = list(self.listen) or [host.ip, *(host.public_ips if host.role == "manager" else ())]
        return [(ip, self.port) for ip in dict.fromkeys(ips)]


def parse_settings(table, report) -> DnsSettings:
    """Validate ``[dns]``; every problem goes to ``report(key, message)``."""
    if not isinstance(table, dict):
        report("", f"must be a table, not {type(table).__name__}")
        return DnsSettings()
    for key in table:
        if key not in KEYS:
            report(key, f"unknown key (known: {', '.join(KEYS)})")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        report("enabled", f"must be true or false, not {enabled!r}")
        enabled = True
    port = read_number(table, "port", int, 53, 1, 65535, report)
    zones_dir = table.get("zones_dir", DEFAULT_ZONES_DIR)
    if not isinstance(zones_dir, str) or not zones_dir.startswith("/"):
        report("zones_dir", f"{zones_dir!r} must be an absolute path")
        zones_dir = DEFAULT_ZONES_DIR
    listen = table.get("listen", [])
    if not isinstance(listen, list):
        report("listen", f"must be a list of IP addresses, not {listen!r}")
        listen = []
    good = []
    for i, ip in enumerate(listen):
        try:
            if not isinstance(ip, str):
                raise TypeError
            good.append(str(ipaddress.ip_address(ip)))
        except (ValueError, TypeError):
            report(f"listen[{i}]", f"{ip!r} is not an IP address")
    texts = {}
    for key in ("identity", "version"):
        value = table.get(key)
        if value is not None and (not isinstance(value, str) or len(value.encode()) > 255):
            report(key, f"must be a string of at most 255 bytes (\"\" refuses the query), "
                        f"not {value!r}")
            value = None
        texts[key] = value
    per_client = table.get("tcp_per_client", TCP_PER_CLIENT)
    if isinstance(per_client, bool) or not isinstance(per_client, int) \
            or not 1 <= per_client <= 65535:
        report("tcp_per_client", f"{per_client!r} must be a whole number in 1..65535")
        per_client = TCP_PER_CLIENT
    return DnsSettings(enabled=enabled, port=port, zones_dir=zones_dir, listen=tuple(good),
                       tcp_per_client=per_client,
                       management=mgmtconfig.parse_management(table, report), **texts)


def settings_of(cluster) -> DnsSettings:
    return cluster.sections.get("dns") or DnsSettings()
