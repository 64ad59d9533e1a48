"""What a host reports: its status, the overview (the manager's of the cluster), metrics."""

from __future__ import annotations

import math

from aiohttp import web

from clusterkit_panel import views
from clusterkit_panel.routes import PanelError, Route, answer


async def status(panel, request):
    return answer(panel.runtime.status())


async def overview(panel, request):
    if panel.is_manager:
        return answer(views.manager_overview(panel))
    return answer(await views.node_overview(panel))


async def history(panel, request):
    raw = request.query.get("since", "")
    try:
        since = float(raw) if raw else None
        if since is not None and not math.isfinite(since):
            raise ValueError
    except ValueError:
        raise PanelError(400, f"since: {raw[:40]!r} is not a Unix time") from None
    return answer(panel.history.snapshot(since))


async def metrics(panel, request):
    from clusterkit_panel.metrics import render

    return web.Response(text=render(panel), content_type="text/plain",
                        headers={"X-Prometheus-Format": "0.0.4"}, charset="utf-8")


ROUTES = [
    Route("GET", "/api/v1/status", status, "operator", "This host's status (every plugin's section)."),
    Route("GET", "/api/v1/overview", overview, "operator",
          "Manager: nodes and health, policies with counters, replication lag, DNS convergence. "
          "Node: its own status, the manager's view of it, the cluster read-only."),
    Route("GET", "/api/v1/history", history, "operator",
          "Manager: the last hour of connections/s, traffic, replication lag and pending, DNS "
          "answers/s and check latency, every few seconds (``since``: only later points)."),
    Route("GET", "/metrics", metrics, "metrics", "Prometheus metrics of this host."),
]
