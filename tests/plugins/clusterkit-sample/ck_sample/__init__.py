"""A tiny third-party plugin: a `gopher` service kind and a `hello` command."""

import typer

from clusterkit import hookimpl
from clusterkit.registry import ServiceKind


@hookimpl
def clusterkit_register_services(register):
    register(ServiceKind("gopher", (70,), check="tcp", description="Gopher, relayed at L4"))


@hookimpl
def clusterkit_register_commands(app):
    @app.command("hello")
    def hello(name: str = "cluster") -> None:
        """Say hello (from a third-party plugin)."""
        typer.echo(f"hello, {name}, from ck_sample")
