"""Authoritative DNS on every host: the ``[dns]`` section, the server's lifecycle, ``clusterkit dns``.

Every host (manager and nodes) serves the zones of ``[dns] zones_dir``, which
replicates from the manager like any other directory (the ``dns-zones`` sync
set). The server object of a host lives in ``runtime.components["dns"]``; on
the manager, ``components["dns-convergence"]`` checks every
``convergence_interval`` that every host serves its zones.
"""

from __future__ import annotations

import logging

from clusterkit import hookimpl
from clusterkit.config import SyncSet
from clusterkit_dns.settings import DNS, parse_settings, settings_of

log = logging.getLogger("clusterkit.dns")
COMPONENT = "dns"
CONVERGENCE = "dns-convergence"
SYNC_SET = "dns-zones"


@hookimpl
def clusterkit_config_sections(register):
    register("dns", parse_settings, shape=DNS)


@hookimpl
def clusterkit_sync_sets(cluster):
    settings = settings_of(cluster)
    if not settings.enabled:
        return []
    return [SyncSet(name=SYNC_SET, path=settings.zones_dir, owner="dns", key="dns.zones_dir")]


@hookimpl
def clusterkit_register_commands(app):
    from clusterkit_dns.cli import app as dns_app

    app.add_typer(dns_app, name="dns")


@hookimpl
def clusterkit_panel_routes():
    """The zones and records API of the panel (called by the panel only)."""
    from clusterkit_dns.panelroutes import routes

    return routes()


@hookimpl
async def clusterkit_start(runtime):
    await _start(runtime)


async def _start(runtime) -> None:
    from clusterkit_dns.server import DnsServer

    settings = settings_of(runtime.cluster)
    if not settings.enabled:
        return
    server = DnsServer(runtime.local_path(settings.zones_dir), settings.addresses(runtime.host),
                       identity=runtime.host.name if settings.identity is None else settings.identity,
                       version=settings.version, tcp_per_client=settings.tcp_per_client)
    await server.start()
    runtime.components[COMPONENT] = server
    runtime.add_control("dns-reload", lambda: _reload_zones(runtime))
    if runtime.is_manager and CONVERGENCE not in runtime.components:
        from clusterkit_dns.convergence_watch import ConvergenceWatch

        await runtime.start_component(CONVERGENCE, ConvergenceWatch(runtime))


async def _reload_zones(runtime) -> dict:
    server = runtime.components.get(COMPONENT)
    if server is None:
        return {"enabled": False}
    return await server.reload_zones()


@hookimpl
async def clusterkit_stop(runtime):
    await runtime.stop_component(CONVERGENCE)
    await runtime.stop_component(COMPONENT)


@hookimpl
async def clusterkit_reload(runtime, old, new):
    """Listen addresses change in place; a new zones directory or enabling/disabling restarts
    the server (the convergence watch keeps its history unless DNS is disabled)."""
    before, after = settings_of(old), settings_of(new)
    server = runtime.components.get(COMPONENT)
    if not after.enabled:
        await clusterkit_stop(runtime)
        return
    await runtime.reload_component(CONVERGENCE, old, new)
    if server is None or before.zones_dir != after.zones_dir \
            or (before.identity, before.version) != (after.identity, after.version):
        await runtime.stop_component(COMPONENT)
        await _start(runtime)
        return
    server.tcp_per_client = after.tcp_per_client  # connections already open stay
    await server.rebind(after.addresses(runtime.host))


@hookimpl
async def clusterkit_applied(runtime, sync_set, paths):
    """Replicated zone files landed: rescan now (unchanged files cost a stat each)."""
    if sync_set.owner != "dns":
        return
    server = runtime.components.get(COMPONENT)
    if server is not None:
        await server.reload_zones()


@hookimpl
def clusterkit_status(runtime):
    server = runtime.components.get(COMPONENT)
    if server is None:
        return None
    return {"dns": server.status(), **(runtime.component_status(CONVERGENCE, "dns_convergence") or {})}


@hookimpl
def clusterkit_status_summary(report, summary):
    dns = report.get("dns")
    if not isinstance(dns, dict):
        return
    zones = dns.get("zones") or {}
    records = sum(z.get("records", 0) for z in zones.values())
    answered = sum((dns.get("queries") or {}).values())
    summary.line(f"dns: {len(zones)} zones ({records} records) on {', '.join(dns.get('listen', []))}; "
                 f"{answered} answers, {dns.get('dropped', 0)} dropped")
    for error in dns.get("errors") or []:
        summary.problem(f"dns: zone not loaded: {error}")
    _convergence(report, summary)


def _convergence(report, summary) -> None:
    """The DNS column of the nodes; a host not converged for three checks is a problem."""
    from clusterkit.cli.summary import duration

    watch = report.get("dns_convergence")
    if not isinstance(watch, dict) or not isinstance(watch.get("hosts"), dict):
        return
    patience = 3 * float(watch.get("interval") or 0)
    for name, host in watch["hosts"].items():
        if name != report.get("host"):  # the manager has no row of its own
            summary.node(name, dns=host.get("state", "?"))
        stuck = summary.now - float(host.get("since") or summary.now)
        if host.get("converged") is False and stuck > patience:
            summary.problem(f"dns of {name} not converged for {duration(stuck)}: "
                            f"{host.get('state')}{'; ' + host['error'] if host.get('error') else ''}")
