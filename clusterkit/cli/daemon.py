"""``clusterkit run`` (the daemon of one host) and ``clusterkit status`` (ask it)."""

from __future__ import annotations

import enum
import sys
import time
from typing import Annotated, Optional

import typer

from clusterkit.cli.summary import render as render_summary
from clusterkit.cli.summary import summarize
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
def status(ctx: typer.Context, config: ConfigOpt, as_: AsOpt = None, as_json: JsonOpt = False,
           verbose: Annotated[bool, typer.Option(
               "--verbose", "-v", help="Every field of every section, not the summary.")] = False,
           watch: Annotated[Optional[float], typer.Option(
               "--watch", "-w", min=0.2, max=3600,
               help="Redraw every SECONDS until Ctrl-C.")] = None) -> None:
    """Ask a running daemon for its state (exit 1 when it is not running).

    By default a summary: problems first, one line per policy and per node.
    """
    valid_name(as_, "--as")
    pm = plugin_manager(ctx)

    def render(report: dict) -> str:
        if verbose:
            return render_status(report)
        return render_summary(summarize(pm, report), colour=sys.stdout.isatty())

    state_dir = daemon_state_dir(config, as_)
    if watch is None or as_json:
        emit(request(state_dir, "status"), as_json, render)
        return
    try:
        while True:  # clear the screen, home the cursor, draw; a stopped daemon ends it (exit 1)
            text = render(request(state_dir, "status"))
            typer.echo("\x1b[H\x1b[2J" + text if sys.stdout.isatty() else text + "\n")
            time.sleep(watch)
    except KeyboardInterrupt:
        pass


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
