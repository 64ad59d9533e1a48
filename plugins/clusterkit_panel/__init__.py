"""The panel and control API on every host: HTTPS (2443) and a redirect (2080).

Full on the manager (cluster overview, forms, the API that edits the
definition, remote actions), limited and read-only on a node. Hosts talk to
each other over mutual TLS with certificates of the cluster CA
(:mod:`clusterkit_panel.pki`). See docs/panel.md.
"""

import math
import os

from clusterkit import hookimpl

COMPONENT = "panel"


@hookimpl
def clusterkit_config_sections(register):
    from clusterkit_panel.settings import PANEL, parse_panel

    register("panel", parse_panel, shape=PANEL)


@hookimpl
def clusterkit_register_commands(app, groups):
    from clusterkit_panel.cli import register

    register(app, groups)


@hookimpl
def clusterkit_init(cluster):
    """A new cluster gets its CA at ``clusterkit init``; an existing CA is kept."""
    import typer

    from clusterkit_panel import pki

    paths = pki.Paths.of(cluster.host_state_dir(cluster.manager.name))
    if os.path.exists(paths.ca_key):
        typer.echo(f"keeping the cluster CA in {paths.dir}")
        return
    ca = pki.init_cluster_ca(cluster)
    typer.echo(f"created the cluster CA in {paths.dir} (fingerprint {pki.fingerprint(ca)})")


@hookimpl
async def clusterkit_start(runtime):
    from clusterkit_panel.server import Panel
    from clusterkit_panel.settings import panel_settings

    if not panel_settings(runtime.cluster).enabled:
        return
    panel = Panel(runtime)
    runtime.components[COMPONENT] = panel
    await panel.start()


@hookimpl
async def clusterkit_reload(runtime, old, new):
    from clusterkit_panel.settings import panel_settings

    panel = runtime.components.get(COMPONENT)
    enabled = panel_settings(new).enabled
    if panel is not None and not enabled:
        await runtime.stop_component(COMPONENT)
    elif panel is not None:
        await panel.reload(old, new)
    elif enabled:
        await clusterkit_start(runtime)


@hookimpl
async def clusterkit_stop(runtime):
    await runtime.stop_component(COMPONENT)


@hookimpl
def clusterkit_status(runtime):
    panel = runtime.components.get(COMPONENT)
    if panel is None:
        return None
    from clusterkit_panel.pki import expires

    settings = panel.settings
    report = {"url": panel.url_of(runtime.host) if panel.https_ready.is_set() else None,
              "joined": panel.paths.has_host_cert(), "cert_expires": expires(panel.paths.cert)}
    if panel.is_manager:
        report["nodes"] = {name: {"reachable": seen.get("reachable"), "error": seen.get("error"),
                                  "cert_expires": _cert_expires(seen.get("status")),
                                  "definition": _definition(seen.get("status"))}
                           for name, seen in panel.node_status.items()}
        report["jobs"] = panel.store.job_counts()
    report["http_redirect"] = settings.http_port or None
    report["connections_refused"] = sum(site.refused for site in panel.sites)  # over the cap
    return {"panel": report}


def _cert_expires(status) -> float | None:
    """A node's certificate expiry, from the status it last answered (a finite number or None)."""
    panel = status.get("panel") if isinstance(status, dict) else None
    value = panel.get("cert_expires") if isinstance(panel, dict) else None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _definition(status) -> str | None:
    """Whether a node runs the manager's definition (its ``definition`` status section's state)."""
    shown = status.get("definition") if isinstance(status, dict) else None
    state = shown.get("state") if isinstance(shown, dict) else None
    return state[:200] if isinstance(state, str) else None


@hookimpl
def clusterkit_status_summary(report, summary):
    panel = report.get("panel")
    if not isinstance(panel, dict):
        return
    for name, seen in (panel.get("nodes") or {}).items():
        summary.node(name, panel="reachable" if seen.get("reachable") else "unreachable")
        if seen.get("definition"):  # as the node last said: current, older, refused: why
            summary.node(name, definition=seen["definition"].split(":")[0])
        if not seen.get("reachable"):
            summary.problem(f"panel of {name} unreachable: {seen.get('error') or 'no answer yet'}")
    if panel.get("url") is None:
        summary.problem("panel: not serving HTTPS (see the log)")
