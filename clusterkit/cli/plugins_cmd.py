"""``clusterkit plugins list``: what is loaded, from where, implementing which hooks."""

from __future__ import annotations

import typer

from clusterkit.cli.common import JsonOpt, emit, plugin_manager, table
from clusterkit.plugins import describe_plugins

plugins_app = typer.Typer(help="Installed plugins.", no_args_is_help=True)


@plugins_app.command("list")
def plugins_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List plugins: name, version, source (builtin / third-party), hooks, state."""
    rows = describe_plugins(plugin_manager(ctx))

    def render(rows):
        return table([{**r, "hooks": ",".join(h.removeprefix("clusterkit_") for h in r["hooks"])}
                      for r in rows], ["name", "version", "source", "state", "hooks"])

    emit(rows, as_json, render)


def register(app: typer.Typer) -> None:
    app.add_typer(plugins_app, name="plugins")
