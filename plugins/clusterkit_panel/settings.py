"""The ``[panel]`` table of the cluster definition, parsed with precise errors."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from clusterkit.definition.values import name_problem, read_number

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


def parse_panel(table, report) -> PanelSettings:
    """``parse(table, report)`` for ``clusterkit_config_sections``: every problem reported."""
    if not isinstance(table, dict):
        report("", f"must be a table, not {type(table).__name__}")
        return PanelSettings()
    defaults = PanelSettings()
    values: dict = {}
    spec = {
        "enabled": (bool, None, None), "https_port": (int, 1, 65535), "http_port": (int, 0, 65535),
        "listen": (str, None, None), "data_dir": (str, None, None),
        "session_ttl": (int, 60, 86400 * 90), "login_attempts": (int, 1, 1000),
        "login_window": (int, 1, 86400), "join_token_ttl": (int, *JOIN_TOKEN_TTL),
        "action_timeout": (float, 0.1, 86400), "retry_max": (float, 0.1, 3600),
        "poll_interval": (float, 0.1, 3600), "metrics_public": (bool, None, None),
        "connections_per_address": (int, 1, 10000),
    }
    for key, raw in table.items():
        if key == "actions":
            continue
        if key not in spec:
            report(key, f"unknown key (known: {', '.join(sorted(spec))}, actions)")
            continue
        kind, low, high = spec[key]
        if low is not None:
            values[key] = read_number(table, key, kind, getattr(defaults, key), low, high, report)
        elif not isinstance(raw, kind):
            report(key, f"must be {kind.__name__}, not {raw!r}")
        else:
            values[key] = raw
    if values.get("listen"):
        try:
            ipaddress.ip_address(values["listen"])
        except ValueError:
            report("listen", f"{values['listen']!r} is not an IP address")
    if not values.get("data_dir", defaults.data_dir).startswith("/"):
        report("data_dir", f"{values['data_dir']!r} must be an absolute path")
    if values.get("http_port") and values.get("http_port") == values.get("https_port", 2443):
        report("http_port", "must differ from https_port")
    actions = table.get("actions", {})
    if not isinstance(actions, dict):
        report("actions", "must be a table of NAME = \"command\"")
        actions = {}
    for name, command in actions.items():
        if name_problem(name):
            report(f"actions.{name}", name_problem(name))
        elif not isinstance(command, str) or not command.strip():
            report(f"actions.{name}", f"must be a non-empty command string, not {command!r}")
    values["actions"] = {k: v for k, v in actions.items() if isinstance(v, str)}
    return PanelSettings(**values)


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
