"""What every CLI module shares: the config option, output, and error → exit code."""

from __future__ import annotations

import functools
import json
from typing import Annotated, Any, Callable

import typer

from clusterkit.definition.source import default_path
from clusterkit.definition.tables import ConfigError
from clusterkit.definition.values import name_problem
from clusterkit.control import ControlError
from clusterkit.hookcalls import PluginError

ConfigOpt = Annotated[str, typer.Option(
    "--config", "-c", envvar="CLUSTERKIT_CONFIG", show_envvar=True,
    help="The cluster definition (TOML).", default_factory=default_path)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]



def valid_name(value: str | None, what: str = "NAME") -> str | None:
    """A host or set name from the command line, held to the definition's rule (UsageError)."""
    if value is not None and name_problem(value):
        raise UsageError(f"{what}: {name_problem(value)}")
    return value


EXIT_FAILURE = 1  # a runtime failure
EXIT_USAGE = 2    # a usage or configuration error


class UsageError(Exception):
    """A bad value on the command line: exit 2, the message names it."""


def guard(fn: Callable) -> Callable:
    """Turn our errors into a message on stderr and click's exit codes (1 runtime, 2 usage)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (ConfigError, UsageError) as exc:
            _error(exc)
            raise typer.Exit(EXIT_USAGE) from None
        except (ControlError, PluginError, OSError) as exc:
            _error(exc)
            raise typer.Exit(EXIT_FAILURE) from None

    return wrapper


def _error(exc: Exception) -> None:
    for line in str(exc).splitlines() or [type(exc).__name__]:
        typer.echo(f"error: {line}", err=True)


def plugin_manager(ctx: typer.Context):
    """The plugin manager the app was built with (tests pass their own)."""
    return ctx.find_root().obj


def emit(data: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    """Print ``data`` as JSON when asked, else as the human rendering."""
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    else:
        text = render(data)
        if text:
            typer.echo(text)


def table(rows: list[dict], columns: list[str]) -> str:
    """A plain aligned text table (no colours: output is often piped)."""
    if not rows:
        return "(none)"
    cells = [[str(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def parse_pairs(values: list[str], what: str, convert: Callable = str) -> dict:
    """``["a=1", "b=2"]`` or ``["a=1,b=2"]`` → ``{"a": 1, "b": 2}``, naming a bad item."""
    out = {}
    for value in values:
        for item in filter(None, value.split(",")):
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise UsageError(f"{what}: {item!r} is not NAME=VALUE")
            try:
                out[key.strip()] = convert(raw.strip())
            except ValueError:
                raise UsageError(f"{what}: {item!r}: {raw!r} is not a valid value") from None
    return out

