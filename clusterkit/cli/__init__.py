"""The ``clusterkit`` command: one sub-app per noun, plugins add their own."""

from __future__ import annotations

import typer

from clusterkit import __version__
from clusterkit.cli import config_cmd, daemon, hosts, operator, plugins_cmd, policy, sync  # noqa: F401
from clusterkit.plugins import get_plugin_manager


def _version(value: bool) -> None:
    if value:
        typer.echo(f"clusterkit {__version__}")
        raise typer.Exit()


def get_app(pm=None) -> typer.Typer:
    """Build the CLI for a plugin manager (the entry points' by default)."""
    pm = pm if pm is not None else get_plugin_manager()
    app = typer.Typer(
        name="clusterkit", no_args_is_help=True, add_completion=True,
        help="Turn a group of hosting servers into one cluster: L4 load balancing, "
             "health checks, replication and authoritative DNS.",
        context_settings={"help_option_names": ["-h", "--help"]})

    @app.callback()
    def root(ctx: typer.Context,
             version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")) -> None:
        ctx.obj = pm

    hosts.register(app)
    policy.register(app)
    sync.register(app)
    config_cmd.register(app)
    plugins_cmd.register(app)
    daemon.register(app)
    pm.hook.clusterkit_register_commands(app=app)
    return app


def main() -> None:
    get_app()(prog_name="clusterkit")
