"""The ``clusterkit`` command: one sub-app per noun, plugins add their own."""

from __future__ import annotations

import typer

from clusterkit import __version__
from clusterkit.cli import config_cmd, daemon, hosts, managers, operator, plugins_cmd, policy, sync  # noqa: F401
from clusterkit.plugins import get_plugin_manager


def _version(value: bool) -> None:
    if value:
        typer.echo(f"clusterkit {__version__}")
        raise typer.Exit()


class CommandGroups:
    """The command groups (nouns) of one CLI build: how a plugin adds to a noun it did not add.

    ``groups.group("node")`` returns a Typer whose commands join ``clusterkit
    node``, whoever adds that noun (the core or a plugin) and in whichever
    order the plugins run; a noun no one adds is this Typer alone (with
    ``help``). It is new for every build, so building the CLI twice adds
    nothing twice and no plugin changes another module's Typer.
    """

    def __init__(self) -> None:
        self._added: dict[str, typer.Typer] = {}

    def group(self, name: str, help: str | None = None) -> typer.Typer:
        if name not in self._added:
            self._added[name] = typer.Typer(help=help, no_args_is_help=True)
        return self._added[name]

    def attach(self, app: typer.Typer) -> None:
        """After every plugin ran: each noun of ``app`` now holds its own and the added commands."""
        nouns = {info.name: info for info in app.registered_groups}
        for name, added in self._added.items():
            info = nouns.get(name)
            if info is None:
                app.add_typer(added, name=name)
                continue
            merged = typer.Typer(help=info.typer_instance.info.help, no_args_is_help=True)
            merged.add_typer(info.typer_instance)  # without a name: its commands, merged
            merged.add_typer(added)
            info.typer_instance = merged  # this build's root only: the noun's own Typer is unchanged


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
    managers.register(app)
    policy.register(app)
    sync.register(app)
    config_cmd.register(app)
    plugins_cmd.register(app)
    daemon.register(app)
    groups = CommandGroups()
    pm.hook.clusterkit_register_commands(app=app, groups=groups)
    groups.attach(app)
    return app


def main() -> None:
    get_app()(prog_name="clusterkit")
