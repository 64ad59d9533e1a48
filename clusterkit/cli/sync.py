"""``clusterkit sync add|remove|list``: directories replicated from the manager to every node."""

from __future__ import annotations

from typing import Annotated, Optional

import tomlkit
import typer

from clusterkit.cli.common import ConfigOpt, JsonOpt, UsageError, emit, guard, plugin_manager, table
from clusterkit.config import edit_config, load_cluster

sync_app = typer.Typer(help="Replicated directories (sync sets).", no_args_is_help=True)


@sync_app.command("add")
@guard
def sync_add(ctx: typer.Context, name: str, config: ConfigOpt,
             path: Annotated[str, typer.Option(help="Absolute directory path, the same on every host.")],
             exclude: Annotated[Optional[list[str]], typer.Option(
                 help="rsync pattern never sent nor deleted on nodes (repeat).")] = None,
             on_change: Annotated[str, typer.Option(
                 help="Command a node runs after a batch of this set lands.")] = "") -> None:
    """Add a sync set."""
    entry = {"name": name, "path": path}
    if exclude:
        entry["exclude"] = list(exclude)
    if on_change:
        entry["on_change"] = on_change
    with edit_config(config, plugin_manager(ctx)) as doc:
        sets = doc.setdefault("sync", tomlkit.aot())
        if any(s.get("name") == name for s in sets):
            raise UsageError(f"a sync set named {name!r} exists")
        sets.append(entry)
    typer.echo(f"added sync set {name} ({path})")


@sync_app.command("remove")
@guard
def sync_remove(ctx: typer.Context, name: str, config: ConfigOpt) -> None:
    """Remove a sync set (files already on nodes stay)."""
    with edit_config(config, plugin_manager(ctx)) as doc:
        sets = doc.get("sync", [])
        index = next((i for i, s in enumerate(sets) if s.get("name") == name), None)
        if index is None:
            raise UsageError(f"no sync set named {name!r} in {config}")
        del sets[index]
    typer.echo(f"removed sync set {name}")


@sync_app.command("list")
@guard
def sync_list(ctx: typer.Context, config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """List sync sets, those of the definition and those plugins add."""
    cluster = load_cluster(config, plugin_manager(ctx))
    rows = [{"name": s.name, "path": s.path, "exclude": list(s.exclude), "on_change": s.on_change,
             "owner": s.owner} for s in cluster.sync_sets]
    emit(rows, as_json, lambda r: table(r, ["name", "path", "owner", "on_change"]))


def register(app: typer.Typer) -> None:
    app.add_typer(sync_app, name="sync")
