"""``clusterkit manager add-standby|promote|demote``: the cluster's managers (docs/high-availability.md)."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import tomlkit
import typer

from clusterkit.cli.common import ConfigOpt, UsageError, guard, parse_pairs, plugin_manager, valid_name
from clusterkit.config import PRIORITY, load_cluster
from clusterkit.control import request
from clusterkit.definition.edits import edit_config

manager_app = typer.Typer(help="The managers: add a standby, promote, demote.", no_args_is_help=True)


@manager_app.command("add-standby")
@guard
def add_standby(ctx: typer.Context, name: str, config: ConfigOpt,
                ip: Annotated[str, typer.Option(help="The standby's cluster IP.")],
                priority: Annotated[int, typer.Option(
                    min=1, max=254, help="Its VRRP priority (the manager's is 254 unless set).")] = PRIORITY["standby"],
                transport: Annotated[str, typer.Option(
                    help="How the active manager's files reach it: local, ssh, rsyncd.")] = "local",
                root: Annotated[Optional[str], typer.Option(
                    help="The directory standing for its / on this machine (a lab; see docs/lab.md).")] = None,
                option: Annotated[Optional[list[str]], typer.Option(
                    help="Option KEY=VALUE (transport options, sync_* tunables...).")] = None) -> None:
    """Add a standby manager: it receives everything the manager replicates and takes over
    the public IPs when the manager fails."""
    valid_name(name)
    entry = {"name": name, "ip": ip, "transport": transport, "priority": priority}
    if root:
        entry["root"] = os.path.abspath(root)
    options = parse_pairs(option or [], "--option")
    if options:
        entry["options"] = options
    with edit_config(config, plugin_manager(ctx)) as doc:
        doc.setdefault("standby", tomlkit.aot()).append(entry)
    typer.echo(f"added standby manager {name} ({ip}, priority {priority}, transport {transport})")
    cluster = load_cluster(config, plugin_manager(ctx))
    hint = plugin_manager(ctx).registry.transports[transport].setup(cluster.host(name), cluster)
    if hint:
        typer.echo(hint)


def _ask(ctx: typer.Context, config: str, name: str | None, cmd: str, why: str) -> None:
    cluster = load_cluster(config, plugin_manager(ctx))
    host = cluster.host(name) if name else cluster.manager
    if host.role not in ("manager", "standby"):
        raise UsageError(f"{host.name} is a {host.role}, not a manager")
    result = request(cluster.host_state_dir(host.name), cmd, why=why)
    typer.echo(f"{host.name} acts as {result['role']}; {result['requested']} requested")


@manager_app.command("promote")
@guard
def promote(ctx: typer.Context, config: ConfigOpt,
            name: Annotated[Optional[str], typer.Argument(help="The host (default: the manager).")] = None) -> None:
    """Make a manager or standby act as the manager now, under a new epoch (where no keepalived
    decides; with keepalived, VRRP does)."""
    _ask(ctx, config, valid_name(name), "manager_promote", "clusterkit manager promote")


@manager_app.command("demote")
@guard
def demote(ctx: typer.Context, config: ConfigOpt,
           name: Annotated[Optional[str], typer.Argument(help="The host (default: the manager).")] = None) -> None:
    """Make the acting manager wait as a standby."""
    _ask(ctx, config, valid_name(name), "manager_demote", "clusterkit manager demote")


def register(app: typer.Typer) -> None:
    app.add_typer(manager_app, name="manager")
