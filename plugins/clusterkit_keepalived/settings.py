"""``[vrrp]``: how keepalived carries the public IPs between the manager and its standbys."""

from __future__ import annotations

from dataclasses import dataclass

from clusterkit.definition.tables import Key, Table


def _interface_problem(value: str) -> str | None:
    if value and not (len(value) <= 15 and value.replace("-", "").replace("_", "").replace(".", "")
                      .isalnum() and not value.startswith("-")):
        return f"{value!r} is not an interface name"
    return None


VRRP = Table({
    "enabled": Key(bool, default=True),
    "advert_int": Key(float, default=1.0, low=0.01, high=255),  # seconds between adverts
    "virtual_router_id": Key(int, default=51, low=1, high=255),  # one per cluster on a segment
    "interface": Key(str, default="", check=_interface_problem),  # "": the one of the host's ip
    "keepalived": Key(str, default="keepalived"),  # the program
    "poll": Key(float, default=0.2, low=0.02, high=10),  # seconds between looks at the addresses
})


@dataclass(frozen=True)
class Settings:
    enabled: bool = True
    advert_int: float = 1.0
    virtual_router_id: int = 51
    interface: str = ""
    keepalived: str = "keepalived"
    poll: float = 0.2


def parse_vrrp(values: dict, report) -> Settings:
    return Settings(**values)


def vrrp_settings(cluster) -> Settings:
    return cluster.sections.get("vrrp") or Settings()
