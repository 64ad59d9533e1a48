"""The ``[panel]`` table of the cluster definition, parsed with precise errors."""

from __future__ import annotations

from dataclasses import dataclass, field

from clusterkit.definition.tables import Key, Table
from clusterkit.definition.values import absolute_problem, ip_problem, name_problem

DEFAULT_DATA_DIR = "/var/lib/clusterkit-panel"
JOIN_TOKEN_TTL = (60, 86400 * 30)  # seconds: [panel] join_token_ttl and `node token --ttl`


@dataclass(frozen=True)
class PanelSettings:
    """Cluster-wide panel settings; every host serves on its own ``listen`` address.

    ``data_dir`` is a cluster path (the same on every host, replicated by
    panelsync): operator accounts, API tokens and the revocation list.
    ``actions`` are the named commands the manager may run on a node.
    """

    enabled: bool = True
    https_port: int = 2443
    http_port: int = 2080
    listen: str = ""
    data_dir: str = DEFAULT_DATA_DIR
    session_ttl: int = 12 * 3600
    login_attempts: int = 5
    login_window: int = 60
    join_token_ttl: int = 3600
    action_timeout: float = 60.0
    retry_max: float = 10.0
    poll_interval: float = 5.0
    metrics_public: bool = False
    connections_per_address: int = 32
    actions: dict = field(default_factory=dict, hash=False)

    def address(self, host) -> str:
        """Where ``host`` listens: ``listen`` when set, else the host's cluster IP."""
        return self.listen or host.ip


PANEL = Table({
    "enabled": Key(bool), "https_port": Key(int, low=1, high=65535),
    "http_port": Key(int, low=0, high=65535), "listen": Key(str, check=lambda v: v and ip_problem(v)),
    "data_dir": Key(str, check=absolute_problem), "session_ttl": Key(int, low=60, high=86400 * 90),
    "login_attempts": Key(int, low=1, high=1000), "login_window": Key(int, low=1, high=86400),
    "join_token_ttl": Key(int, low=JOIN_TOKEN_TTL[0], high=JOIN_TOKEN_TTL[1]),
    "action_timeout": Key(float, low=0.1, high=86400), "retry_max": Key(float, low=0.1, high=3600),
    "poll_interval": Key(float, low=0.1, high=3600), "metrics_public": Key(bool),
    "connections_per_address": Key(int, low=1, high=10000),
    "actions": Key(dict, default={}),  # NAME = "command"
})


def parse_panel(values: dict, report) -> PanelSettings:
    """``parse`` of the ``[panel]`` section, given the values :data:`PANEL` let through."""
    if values.get("http_port") and values["http_port"] == values.get("https_port", 2443):
        report("http_port", "must differ from https_port")
    actions = {}
    for name, command in values["actions"].items():
        if name_problem(name):
            report(f"actions.{name}", name_problem(name))
        elif not isinstance(command, str) or not command.strip():
            report(f"actions.{name}", f"must be a non-empty command string, not {command!r}")
        else:
            actions[name] = command
    return PanelSettings(**{**values, "actions": actions})


def panel_settings(cluster) -> PanelSettings:
    """The cluster's panel settings (the defaults when the panel plugin is not loaded)."""
    value = cluster.sections.get("panel")
    return value if isinstance(value, PanelSettings) else PanelSettings()


def named_actions(cluster) -> dict[str, str]:
    """The commands a manager may run on a node by name: ``[panel.actions]`` and the
    post-sync commands of ``[[panelsync]]`` sets (read without importing panelsync)."""
    actions = dict(panel_settings(cluster).actions)
    for entry in cluster.sections.get("panelsync") or ():
        command = getattr(entry, "post_sync", "")
        if command:
            actions.setdefault(entry.name, command)
    return actions
