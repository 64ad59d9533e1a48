"""``clusterkit config check``: validate a definition without touching anything."""

from __future__ import annotations

import typer

from clusterkit.cli.common import ConfigOpt, guard, plugin_manager
from clusterkit.config import load_cluster
from clusterkit.definition.source import definition_warnings

config_app = typer.Typer(help="The cluster definition file.", no_args_is_help=True)


@config_app.command("check")
@guard
def check(ctx: typer.Context, config: ConfigOpt) -> None:
    """Validate the definition: every problem with its key and line; exit 2 if any.

    Warns (exit 0) when the file holds secrets and others may read it; notes what
    each policy's engine needs from the network (a kernel engine's requirements).
    """
    pm = plugin_manager(ctx)
    cluster = load_cluster(config, pm)
    for warning in definition_warnings(config):
        typer.echo(f"warning: {warning}", err=True)
    for policy in cluster.policies:
        kind = pm.registry.engines.get(policy.engine)
        if kind is not None and kind.requirements is not None:
            typer.echo(f"note: policy {policy.key} (engine {kind.name}): {kind.requirements(policy)}")
    typer.echo(f"{config}: OK: cluster {cluster.name!r}, {len(cluster.nodes)} nodes, "
               f"{len(cluster.policies)} policies, {len(cluster.sync_sets)} sync sets")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")
