"""CommandGroups: plugins add commands to nouns they did not add, without touching others' Typers."""

from __future__ import annotations

import typer
from typer.testing import CliRunner

from clusterkit import hookimpl
from clusterkit.cli import get_app
from clusterkit.cli.hosts import node_app
from clusterkit.plugins import get_plugin_manager

runner = CliRunner()


class Late:
    """Adds to ``thing`` (a noun of the plugin registered after it) and to the core's ``node``."""

    @hookimpl
    def clusterkit_register_commands(self, groups):
        @groups.group("thing").command("poke")
        def poke() -> None:
            typer.echo("poked")

        @groups.group("node").command("wave")
        def wave(name: str) -> None:
            typer.echo(f"wave {name}")

        @groups.group("orphan", help="Nobody else adds this noun.").command("alone")
        def alone() -> None:
            typer.echo("alone")


class Owner:
    """Adds the ``thing`` noun itself."""

    thing = typer.Typer(help="A plugin's own noun.", no_args_is_help=True)

    @thing.command("look")
    def look() -> None:
        typer.echo("looked")

    @hookimpl
    def clusterkit_register_commands(self, app):
        app.add_typer(self.thing, name="thing")


def _app():
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(Late(), name="late")
    pm.register(Owner(), name="owner")  # pluggy calls the last registered first
    return get_app(pm)


def test_commands_join_nouns_of_the_core_and_of_other_plugins_in_any_order():
    before = list(node_app.registered_commands), list(Owner.thing.registered_commands)
    app = _app()
    assert runner.invoke(app, ["thing", "look"]).output == "looked\n"
    assert runner.invoke(app, ["thing", "poke"]).output == "poked\n"
    assert runner.invoke(app, ["node", "wave", "x"]).output == "wave x\n"
    assert runner.invoke(app, ["orphan", "alone"]).output == "alone\n"
    assert "Nobody else adds this noun." in runner.invoke(app, ["--help"]).output
    node_help = runner.invoke(app, ["node", "--help"]).output
    assert "The cluster's nodes" in node_help and "add" in node_help and "wave" in node_help
    # the nouns' own Typers are unchanged: a second build adds nothing twice
    assert (list(node_app.registered_commands), list(Owner.thing.registered_commands)) == before
    again = _app()
    assert runner.invoke(again, ["thing", "poke"]).output == "poked\n"
    assert runner.invoke(get_app(get_plugin_manager(load_entrypoints=False)),
                         ["node", "wave", "x"]).exit_code == 2  # not left in the core's node


def test_the_built_in_plugins_commands_keep_their_names():
    app = get_app(get_plugin_manager())
    for argv, name in ((["node", "--help"], "token"), (["node", "--help"], "jobs"),
                       (["node", "--help"], "action"), (["dns", "--help"], "zone"),
                       (["dns", "--help"], "record"), (["dns", "--help"], "status"),
                       (["dns", "zone", "--help"], "bump")):
        result = runner.invoke(app, argv)
        assert result.exit_code == 0 and f" {name} " in result.output, (argv, name)
