"""``clusterkit node drain|maintenance|enable``: operator states of a node.

The state reaches a running manager daemon at once through its control
socket; the daemon records it in its state directory so it survives a
restart. With no daemon running the command records it there itself and it
applies when the daemon starts.
"""

from __future__ import annotations

import enum
from typing import Annotated

import typer

from clusterkit.cli.common import (ConfigOpt, JsonOpt, UsageError, emit, guard, plugin_manager,
                                   valid_name)
from clusterkit.cli.hosts import node_app
from clusterkit.config import load_cluster
from clusterkit.control import ControlError, request
from clusterkit.membership.operator import OperatorStates

NameArg = Annotated[str, typer.Argument(help="The node (or the manager, when it is a member).")]

MEANING = {
    "drain": "draining: weight 0, no new connections, established ones finish, checks go on",
    "maintenance": "in maintenance: out of rotation, checks paused",
    "enabled": "enabled: in rotation while its checks pass",
}


class Switch(str, enum.Enum):
    on = "on"
    off = "off"


@node_app.command("drain")
@guard
def drain(ctx: typer.Context, name: NameArg, config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """Drain a node: no new connections (weight 0); established ones finish."""
    _operate(ctx, config, name, "drain", as_json)


@node_app.command("maintenance")
@guard
def maintenance(ctx: typer.Context, name: NameArg,
                switch: Annotated[Switch, typer.Argument(help="on: take it out, off: bring it back.")],
                config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """Put a node in maintenance (out of rotation, checks paused) or take it out.

    "off" runs a check at once: the node is back when it passes. A drained
    node stays drained.
    """
    _operate(ctx, config, name, "maintenance" if switch is Switch.on else "maintenance-off", as_json)


@node_app.command("enable")
@guard
def enable(ctx: typer.Context, name: NameArg, config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """Clear drain and maintenance: the node takes connections while its checks pass."""
    _operate(ctx, config, name, "enable", as_json)


def _operate(ctx: typer.Context, config: str, name: str, action: str, as_json: bool) -> None:
    valid_name(name)
    cluster = load_cluster(config, plugin_manager(ctx))
    if name not in cluster.hosts:
        raise UsageError(f"no host named {name!r} in {config} (hosts: {', '.join(cluster.hosts)})")
    state_dir = cluster.host_state_dir(cluster.manager.name)
    try:
        result = request(state_dir, "operator", node=name, action=action)
        result["applied"] = "now"
    except ControlError as exc:
        if "no daemon is running" not in str(exc):
            raise
        try:
            state = OperatorStates(state_dir).apply(name, action)
        except ValueError as bad:
            raise ControlError(str(bad)) from None
        result = {"node": name, "operator": state or "enabled", "applied": "at start",
                  "policies": sorted(p.key for p in cluster.policies
                                     if any(m.node == name for m in p.members))}
    emit(result, as_json, _render)


def _render(result: dict) -> str:
    text = f"{result['node']} is {MEANING[result['operator']]}"
    if result["policies"]:
        text += f" ({', '.join(result['policies'])})"
    else:
        text += " (it is a member of no policy)"
    if result["applied"] == "now":
        return text + "; applied to the running daemon"
    return text + "; no daemon is running: recorded, it applies when the daemon starts"
