"""``clusterkit run`` (the daemon of one host) and ``clusterkit status`` (ask it)."""

from __future__ import annotations

import enum
from typing import Annotated, Optional

import typer

from clusterkit.cli.common import ConfigOpt, JsonOpt, emit, guard, plugin_manager, valid_name
from clusterkit.config import load_cluster
from clusterkit.definition.source import daemon_state_dir
from clusterkit.control import request
from clusterkit.logs import setup_logging
from clusterkit.runtime import run_daemon


class LogFormat(str, enum.Enum):
    human = "human"
    json = "json"


AsOpt = Annotated[Optional[str], typer.Option(
    "--as", help="The host this daemon is (default: the manager).")]


@guard
def run(ctx: typer.Context, config: ConfigOpt, as_: AsOpt = None,
        log_format: Annotated[LogFormat, typer.Option(help="Log lines on stderr.")] = LogFormat.human,
        verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    """Run the daemon for one host: what its role needs, until SIGTERM/SIGINT.

    SIGHUP, or a change to the definition file, reloads it without dropping
    established connections; a broken file is refused and the running
    definition kept.
    """
    valid_name(as_, "--as")
    setup_logging(log_format.value, verbose)
    pm = plugin_manager(ctx)
    if as_:
        load_cluster(config, pm).host(as_)  # an unknown host is a usage error, before any start
    run_daemon(config, pm, as_)


@guard
def status(config: ConfigOpt, as_: AsOpt = None, as_json: JsonOpt = False) -> None:
    """Ask a running daemon for its state (exit 1 when it is not running)."""
    valid_name(as_, "--as")
    report = request(daemon_state_dir(config, as_), "status")
    emit(report, as_json, render_status)


def render_status(report: dict) -> str:
    lines = [f"{report['role']} {report['host']} of cluster {report['cluster']} "
             f"(pid {report['pid']}, up {report['uptime']}s)"]
    for key, value in report.items():
        if key in ("role", "host", "cluster", "pid", "uptime"):
            continue
        lines.append(f"{key}:")
        lines += _render(value, "  ")
    return "\n".join(lines)


def _render(value, indent: str) -> list[str]:
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                out.append(f"{indent}{k}:")
                out += _render(v, indent + "  ")
            else:
                out.append(f"{indent}{k}: {v}")
        return out
    if isinstance(value, list):
        return [line for item in value for line in _render(item, indent)]
    return [f"{indent}{value}"]


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("status")(status)
