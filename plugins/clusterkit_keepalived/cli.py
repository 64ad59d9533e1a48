"""``clusterkit manager vrrp-notify STATE`` (keepalived's notify scripts tell the daemon) and
``clusterkit manager switchover``."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from clusterkit.cli.common import ConfigOpt, UsageError, guard, valid_name
from clusterkit.control import request
from clusterkit.definition.source import daemon_state_dir

STATES = ("MASTER", "BACKUP", "FAULT", "STOP")


@guard
def vrrp_notify(state: Annotated[str, typer.Argument(help="MASTER, BACKUP, FAULT or STOP.")],
                config: ConfigOpt,
                as_: Annotated[Optional[str], typer.Option(
                    "--as", help="The host this daemon is (default: the manager).")] = None) -> None:
    """Tell this host's daemon the VRRP state keepalived entered (its notify scripts call this)."""
    if state not in STATES:
        raise UsageError(f"unknown VRRP state {state!r} (known: {', '.join(STATES)})")
    result = request(daemon_state_dir(config, valid_name(as_, "--as")), "vrrp_notify", state=state)
    typer.echo(f"{state}: acts as {result['role']}")


@guard
def switchover(config: ConfigOpt,
               as_: Annotated[Optional[str], typer.Option(
                   "--as", help="The acting manager (default: the definition's manager).")] = None) -> None:
    """Move the manager's role to a standby on purpose (maintenance): the acting manager gives
    the public IPs up, VRRP gives them to a standby, which is promoted."""
    result = request(daemon_state_dir(config, valid_name(as_, "--as")), "vrrp_give_up",
                     why="clusterkit manager switchover")
    typer.echo(f"giving the public IPs up for {result['yielding_for']:g}s; a standby takes them over")


def register(groups) -> None:
    manager = groups.group("manager")
    manager.command("vrrp-notify")(vrrp_notify)
    manager.command("switchover")(switchover)
