"""``clusterkit policy ipvs-rules``: the IPVS table the engine would program, as ``ipvsadm -S -n``
lines, for ``ipvsadm -R`` on a kernel the daemon cannot drive (or to read what it drives)."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import typer

from clusterkit.cli.common import ConfigOpt, UsageError, guard, plugin_manager
from clusterkit.config import parse_cluster, registry_of
from clusterkit.control import request
from clusterkit.definition.source import daemon_state_dir, read_definition
from clusterkit_ipvs.rules import METHODS, cannot_carry, plan, render

MODES = {mode: name for name, (_, _, mode) in METHODS.items()}


def load(config: str, pm):
    """The definition, judged as everywhere but for this kernel's IPVS: rendering needs none."""
    registry = registry_of(pm)
    engines = {name: dataclasses.replace(kind, unavailable=lambda: None) if name in METHODS else kind
               for name, kind in registry.engines.items()}
    return parse_cluster(read_definition(config), str(config),
                         dataclasses.replace(registry, engines=engines))


def live_states(config: str) -> dict[str, dict[str, tuple[str, float]]]:
    """policy key → node → (state, weight factor), from the running daemon's ``status``."""
    report = request(daemon_state_dir(config), "status", timeout=10)
    out = {}
    for key, policy in (report.get("policies") or {}).items():
        members = policy.get("members") if isinstance(policy, dict) else None
        for node, m in (members or {}).items():
            if isinstance(m, dict) and m.get("state") in ("up", "down", "drain", "maintenance"):
                factor = m.get("weight_factor", 1.0)
                factor = float(factor) if isinstance(factor, (int, float)) else 1.0
                out.setdefault(key, {})[node] = (m["state"], min(1.0, max(0.0, factor)))
    return out


@guard
def ipvs_rules(
    ctx: typer.Context, config: ConfigOpt,
    all_: Annotated[bool, typer.Option(
        "--all", help="Every policy, not only those naming an ipvs engine.")] = False,
    mode: Annotated[str, typer.Option(
        help="Forwarding for policies of other engines with --all: dr, nat or tun.")] = "dr",
    live: Annotated[bool, typer.Option(
        help="Member states from the running manager's daemon (default: every member up).")] = False,
) -> None:
    """Print the IPVS rules of the policies as `ipvsadm -S -n` lines (apply: `ipvsadm -R`)."""
    if mode not in MODES:
        raise UsageError(f"--mode {mode!r}: one of {', '.join(MODES)}")
    pm = plugin_manager(ctx)
    cluster = load(config, pm)
    states = live_states(config) if live else {}
    services, refused = [], []
    for policy in cluster.policies:
        method = policy.engine if policy.engine in METHODS else MODES[mode] if all_ else None
        if method is None:
            continue
        kind = registry_of(pm).services.get(policy.service)
        why = cannot_carry(policy, method, kind is not None and kind.handler is not None)
        if why:
            refused.append(f"policy {policy.key}: {why}")
            continue
        services.append(plan(policy, cluster.hosts, states.get(policy.key, {}), method))
    for line in render(services):
        typer.echo(line)
    if refused:
        raise UsageError("\n".join(refused))


def register(groups) -> None:
    groups.group("policy").command("ipvs-rules")(ipvs_rules)
