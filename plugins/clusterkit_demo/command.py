"""An embedded cluster on loopback: the manager and three nodes in one process."""

from __future__ import annotations

import asyncio
import tempfile
from typing import Annotated

import typer

from clusterkit.cli.common import plugin_manager
from clusterkit.runtime import Runtime, new_event_loop

MANAGER_IP = "127.80.0.1"
PUBLIC_IP = "127.80.0.100"
NODES = {"node1": "127.80.0.11", "node2": "127.80.0.12", "node3": "127.80.0.13"}


def write_definition(base: str) -> str:
    """The demo cluster: local-directory nodes under ``base``, all on 127.80.0.0/24."""
    nodes = "".join(
        f'\n[[node]]\nname = "{name}"\nip = "{ip}"\ntransport = "local"\nroot = "{base}/{name}"\n'
        for name, ip in NODES.items())
    text = (f'[cluster]\nname = "demo"\nstate_dir = "{base}/state"\n\n'
            f'[manager]\nname = "manager"\nip = "{MANAGER_IP}"\npublic_ips = ["{PUBLIC_IP}"]\n'
            f'root = "{base}/manager"\n{nodes}')
    path = f"{base}/cluster.toml"
    with open(path, "w") as f:
        f.write(text)
    return path


async def run_demo(pm, base: str, duration: float) -> None:
    path = write_definition(base)
    say(f"cluster definition: {path}")
    hosts = [Runtime(path, pm, name, watch_config=False)
             for name in ("manager", *NODES)]
    for runtime in hosts:
        await runtime.start()
        say(f"{runtime.host.role} {runtime.host.name} up on {runtime.host.ip}")
    try:
        await asyncio.sleep(duration)
    finally:
        for runtime in reversed(hosts):
            await runtime.stop()
    say("all hosts stopped cleanly")


def say(text: str) -> None:
    typer.echo(f"[demo] {text}")


def demo(ctx: typer.Context,
         duration: Annotated[float, typer.Option(help="Seconds to keep the cluster up.")] = 10.0) -> None:
    """Run an embedded cluster on loopback (manager + 3 nodes) and show what it does."""
    pm = plugin_manager(ctx)
    loop = new_event_loop()
    try:
        with tempfile.TemporaryDirectory(prefix="clusterkit-demo-") as base:
            loop.run_until_complete(run_demo(pm, base, duration))
    finally:
        loop.close()
