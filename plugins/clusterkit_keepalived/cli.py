"""``clusterkit manager vrrp-notify STATE``: keepalived's notify scripts tell the daemon."""

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


def register(groups) -> None:
    groups.group("manager").command("vrrp-notify")(vrrp_notify)
