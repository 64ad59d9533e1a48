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
from clusterkit_ipvs.rules import METHODS, plan, render

ENGINE = "ipvs"


def load(config: str, pm):
    """The definition, judged as everywhere but for this kernel's IPVS: rendering needs none."""
    registry = registry_of(pm)
    engines = {name: dataclasses.replace(kind, unavailable=lambda: None) if name == ENGINE else kind
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
        "--all", help="Every policy, not only those naming the ipvs engine.")] = False,
    mode: Annotated[str, typer.Option(
        help="The forward for policies of other engines with --all: dr, nat or tun.")] = "dr",
    live: Annotated[bool, typer.Option(
        help="Member states from the running manager's daemon (default: every member up).")] = False,
) -> None:
    """Print the IPVS rules of the policies as `ipvsadm -S -n` lines (apply: `ipvsadm -R`)."""
    if mode not in METHODS:
        raise UsageError(f"--mode {mode!r}: one of {', '.join(METHODS)}")
    pm = plugin_manager(ctx)
    cluster = load(config, pm)
    registry = registry_of(pm)
    states = live_states(config) if live else {}
    services, refused = [], []
    for policy in cluster.policies:
        if policy.engine != ENGINE:  # judged as IPVS would carry it with --mode
            if not all_:
                continue
            policy = dataclasses.replace(policy, forward=mode)
            why = registry.engines[ENGINE].problem(policy, registry.services.get(policy.service),
                                                   cluster.hosts)
            if why:
                refused.append(f"policy {policy.key}: {why[0]}: {why[1]}")
                continue
        services.append(plan(policy, cluster.hosts, states.get(policy.key, {})))
    for line in render(services):
        typer.echo(line)
    if refused:
        raise UsageError("\n".join(refused))


def register(groups) -> None:
    groups.group("policy").command("ipvs-rules")(ipvs_rules)
