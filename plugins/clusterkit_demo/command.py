"""An embedded cluster on loopback: the manager and three nodes in one process.

Each host is a real :class:`~clusterkit.runtime.Runtime` with its own
addresses (127.80.0.x: Linux routes all of 127/8 to ``lo``, no root needed)
and its own directory standing for its filesystem. The demo shows, in plain
words, each capability the installed plugins provide: balancing, failover,
replication and DNS.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections import Counter
from typing import Annotated

import typer

from clusterkit.cli.common import plugin_manager
from clusterkit.config import registry_of
from clusterkit.runtime import Runtime, new_event_loop
from clusterkit_demo.backends import http_get, start_backend

MANAGER_IP = "127.80.0.1"
PUBLIC_IP = "127.80.0.100"
NODES = {"node1": "127.80.0.11", "node2": "127.80.0.12", "node3": "127.80.0.13"}
WEB_PORT = 8080
DNS_PORT = 10053
ZONE = "demo.test"


def write_definition(base: str, pm) -> str:
    """The demo cluster: local-directory nodes under ``base``, all on 127.80.0.0/24."""
    nodes = "".join(
        f'\n[[node]]\nname = "{name}"\nip = "{ip}"\ntransport = "local"\nroot = "{base}/{name}"\n'
        for name, ip in NODES.items())
    members = ", ".join(f"{name} = 1" for name in NODES)
    text = (f'[cluster]\nname = "demo"\nstate_dir = "{base}/state"\n\n'
            f'[manager]\nname = "manager"\nip = "{MANAGER_IP}"\npublic_ips = ["{PUBLIC_IP}"]\n'
            f'root = "{base}/manager"\n{nodes}')
    if "http" in registry_of(pm).services:
        text += (f'\n[[policy]]\nvip = "{PUBLIC_IP}"\nport = {WEB_PORT}\nservice = "http"\n'
                 f'members = {{{members}}}\ncheck = {{inter = 0.3, timeout = 0.3, rise = 2, '
                 f'fall = 2}}\n')
    text += '\n[[sync]]\nname = "www"\npath = "/srv/www"\n'
    if _has_plugin(pm, "dns"):
        text += f'\n[dns]\nport = {DNS_PORT}\nzones_dir = "/srv/zones"\n'
    path = f"{base}/cluster.toml"
    with open(path, "w") as f:
        f.write(text)
    return path


def _has_plugin(pm, name: str) -> bool:
    return pm.get_plugin(name) is not None


def zone_text(serial: int, address: str) -> str:
    return (f"$ORIGIN {ZONE}.\n$TTL 60\n"
            f"@ IN SOA ns1 hostmaster {serial} 3600 600 86400 60\n"
            f"@ IN NS ns1\nns1 IN A {MANAGER_IP}\nwww IN A {address}\n")


async def wait_until(predicate, timeout: float, step: float = 0.02):
    """Poll ``predicate`` (sync or async) until it returns a true value or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value or time.monotonic() > deadline:
            return value
        await asyncio.sleep(step)


async def show_balancing(manager: Runtime, problems: list[str]) -> None:
    say(f"BALANCING: 30 requests to http://{PUBLIC_IP}:{WEB_PORT}/ (the public IP) ...")
    answers = Counter([await http_get(PUBLIC_IP, WEB_PORT) for _ in range(30)])
    for body, count in sorted(answers.items()):
        say(f"  {count:2d} x {body!r}")
    silent = [name for name in NODES if f"hello from {name}" not in answers]
    if silent:
        problems.append(f"balancing: no answer from {', '.join(silent)}")


async def show_failover(manager: Runtime, backends: dict, problems: list[str]) -> None:
    say("FAILOVER: node2's web server stops while a client keeps sending requests ...")
    backends["node2"].close()
    await backends["node2"].wait_closed()
    failed = sent = 0
    started = time.monotonic()

    def node2_state():
        policy = manager.status().get("members", {}).get(f"{PUBLIC_IP}:{WEB_PORT}", {})
        return policy.get("nodes", {}).get("node2", {}).get("state")

    while node2_state() != "down" and time.monotonic() - started < 10:
        sent += 1
        try:
            await http_get(PUBLIC_IP, WEB_PORT)
        except (OSError, asyncio.TimeoutError, ConnectionError):
            failed += 1
    say(f"  node2 marked {node2_state()} after {time.monotonic() - started:.2f}s; "
        f"{sent} requests sent meanwhile, {failed} failed")
    answers = Counter([await http_get(PUBLIC_IP, WEB_PORT) for _ in range(12)])
    say(f"  now answering: {dict(answers)}")
    if failed or "hello from node2" in answers:
        problems.append(f"failover: {failed} of {sent} requests failed while node2 went down, "
                        f"node2 {node2_state()}")
    backends["node2"] = await start_backend(NODES["node2"], WEB_PORT, "node2")
    await wait_until(lambda: node2_state() == "up", 10)
    say(f"  node2's web server is back: state {node2_state()}")
    if node2_state() != "up":
        problems.append(f"failover: node2 did not come back (state {node2_state()})")


async def show_replication(manager: Runtime, problems: list[str]) -> None:
    cluster = manager.cluster
    say("REPLICATION: a file written on the manager appears on every node ...")
    source = manager.local_path("/srv/www/index.html")
    os.makedirs(os.path.dirname(source), exist_ok=True)
    started = time.monotonic()
    with open(source, "w") as f:
        f.write("<h1>written on the manager</h1>\n")
    targets = [node.local_path("/srv/www/index.html") for node in cluster.nodes]
    arrived = await wait_until(lambda: all(os.path.exists(t) for t in targets), 10, 0.002)
    elapsed = (time.monotonic() - started) * 1000
    say(f"  {'on all 3 nodes' if arrived else 'NOT on every node'} after {elapsed:.0f} ms")
    if not arrived:
        problems.append(f"replication: the file did not reach every node in {elapsed:.0f} ms")
    watch = manager.status().get("sync", {}).get("watch", {})
    failing = {name: w["reason"] for name, w in watch.items() if w["state"] in ("deaf", "partial")}
    if failing:
        problems.append(f"replication: the file watcher is failing: {failing}")


async def show_dns(hosts: list[Runtime], problems: list[str]) -> None:
    import dns.asyncquery
    import dns.message

    async def answers() -> dict[str, str]:
        out = {}
        for runtime in hosts:
            query = dns.message.make_query(f"www.{ZONE}", "A")
            try:
                reply = await dns.asyncquery.udp(query, runtime.host.ip, port=DNS_PORT, timeout=1)
                out[runtime.host.name] = ",".join(r.address for rr in reply.answer for r in rr)
            except Exception as exc:  # shown to the user as is
                out[runtime.host.name] = f"error: {exc}"
        return out

    say(f"DNS: every host answers www.{ZONE} on its own address, port {DNS_PORT} ...")

    async def everyone_answers():
        current = await answers()
        return current if all(v and not v.startswith("error") for v in current.values()) else None

    first = await wait_until(everyone_answers, 10, 0.05) or await answers()
    for name, value in first.items():
        say(f"  {name}: {value}")
        if value != "127.80.0.100":
            problems.append(f"dns: {name} answered {value!r}")
    say("  the zone is changed on the manager (serial 2, www -> 127.80.0.200) ...")
    started = time.monotonic()
    zone = hosts[0].local_path(f"/srv/zones/{ZONE}.zone")
    with open(zone + ".tmp", "w") as f:
        f.write(zone_text(2, "127.80.0.200"))
    os.replace(zone + ".tmp", zone)

    async def converged():
        return all(v == "127.80.0.200" for v in (await answers()).values())

    ok = await wait_until(converged, 10, 0.05)
    elapsed = (time.monotonic() - started) * 1000
    say(f"  {'every host answers the new address' if ok else 'NOT converged'} after {elapsed:.0f} ms")
    if not ok:
        problems.append(f"dns: the hosts did not converge on the changed zone in {elapsed:.0f} ms")


async def run_demo(pm, base: str, duration: float) -> list[str]:
    """Run the show; returns what failed (nothing, when every capability worked)."""
    problems: list[str] = []
    path = write_definition(base, pm)
    say(f"cluster definition: {path}")
    backends = {name: await start_backend(ip, WEB_PORT, name) for name, ip in NODES.items()}
    if _has_plugin(pm, "dns"):
        zones = f"{base}/manager/srv/zones"
        os.makedirs(zones, exist_ok=True)
        with open(f"{zones}/{ZONE}.zone", "w") as f:
            f.write(zone_text(1, "127.80.0.100"))
    if _has_plugin(pm, "panel"):
        enroll_everyone(path, pm)
    hosts = [Runtime(path, pm, name, watch_config=False) for name in ("manager", *NODES)]
    manager, started = hosts[0], []
    try:
        for runtime in hosts:
            await runtime.start()
            started.append(runtime)
            say(f"{runtime.host.role} {runtime.host.name} up on {runtime.host.ip}")
        if manager.engine is not None and manager.cluster.policies:
            await show_balancing(manager, problems)
            if "membership" in manager.components:
                await show_failover(manager, backends, problems)
        if "sync" in manager.components:
            await show_replication(manager, problems)
        if "dns" in manager.components:
            await show_dns(hosts, problems)
        if "panel" in manager.components:
            from clusterkit_panel.settings import panel_settings

            port = panel_settings(manager.cluster).https_port
            say(f"PANEL: https://{MANAGER_IP}:{port}/ on the manager (full), "
                f"https://{NODES['node1']}:{port}/ on a node (read-only); hosts talk over "
                "mutual TLS with certificates of the cluster CA")
        say(f"the cluster stays up for {duration:.0f}s more (clusterkit demo --duration N) ...")
        await asyncio.sleep(duration)
    finally:
        for runtime in reversed(started):
            await runtime.stop()
        for server in backends.values():
            server.close()
    say("all hosts stopped cleanly")
    return problems


def enroll_everyone(path: str, pm) -> None:
    """The cluster CA and each node's certificate, as ``init`` and ``join`` would make them.

    The demo's hosts share one machine, so nodes are enrolled directly instead
    of with join tokens.
    """
    from clusterkit.config import load_cluster
    from clusterkit_panel import pki

    cluster = load_cluster(path, pm)
    pki.init_cluster_ca(cluster)
    for node in cluster.nodes:
        pki.enroll_local(cluster, node.name)


def say(text: str) -> None:
    typer.echo(f"[demo] {text}")


def demo(ctx: typer.Context,
         duration: Annotated[float, typer.Option(
             help="Seconds to keep the cluster up after the show.")] = 5.0) -> None:
    """Run an embedded cluster on loopback (manager + 3 nodes) and show what it does.

    Exits 1, naming what failed, when any capability it shows does not work:
    the README's first command is itself a check of the machine.
    """
    pm = plugin_manager(ctx)
    loop = new_event_loop()
    try:
        with tempfile.TemporaryDirectory(prefix="clusterkit-demo-") as base:
            problems = loop.run_until_complete(run_demo(pm, base, duration))
    finally:
        loop.close()
    if problems:
        for problem in problems:
            typer.echo(f"[demo] FAILED: {problem}", err=True)
        raise typer.Exit(1)
