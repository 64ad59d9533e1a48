"""``clusterkit alert test``: one alert of each kind, through every configured sender."""

from __future__ import annotations

import asyncio
import time

import typer

from clusterkit.cli.common import ConfigOpt, UsageError, guard, plugin_manager
from clusterkit.config import load_cluster
from clusterkit.runtime import new_event_loop
from clusterkit_alerts import rules
from clusterkit_alerts.settings import settings_of

app = typer.Typer(help="Alerts: webhook and e-mail notifications of what breaks.",
                  no_args_is_help=True)


@app.command("test")
@guard
def test(ctx: typer.Context, config: ConfigOpt) -> None:
    """Send one message with one alert of each kind to every configured sender (exit 1 if one fails)."""
    from clusterkit_alerts import senders  # aiohttp: ~0.1 s, paid only by this command

    cluster = load_cluster(config, plugin_manager(ctx))
    settings = settings_of(cluster)
    if settings is None or not settings.senders:
        raise UsageError(f"{config}: no [alerts] table with a webhook or email: nothing to test")
    now = round(time.time(), 3)
    message = {"cluster": cluster.name, "host": cluster.manager.name, "sent_at": now, "test": True,
               "alerts": [{"state": "firing", "key": f"test:{kind}", "kind": kind, "node": "",
                           "text": f"TEST {kind}: {meaning}", "at": now}
                          for kind, meaning in rules.KINDS.items()]}
    failed = False
    loop = new_event_loop()
    try:
        for sender in settings.senders:
            try:
                loop.run_until_complete(senders.send(settings, sender, message))
                typer.echo(f"{sender}: sent {len(message['alerts'])} test alerts")
            except senders.DeliveryError as exc:
                typer.echo(f"error: {exc}", err=True)
                failed = True
    finally:
        loop.close()
    if failed:
        raise typer.Exit(1)
