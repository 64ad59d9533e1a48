"""The nodes: list, add, remove, drain/maintenance/enable, their named actions and jobs."""

from __future__ import annotations

import asyncio
import logging

from clusterkit_panel import edits, views
from clusterkit_panel.handlers.definition import OBJ, apply_edit
from clusterkit_panel.routes import BODY, USER, PanelError, Route, answer
from clusterkit_panel.settings import named_actions

log = logging.getLogger("clusterkit.panel")


async def nodes_list(panel, request):
    return answer([views.host_row(h) for h in panel.runtime.cluster.hosts.values()])


async def nodes_add(panel, request):
    entry = await apply_edit(panel, edits.add_node, request[BODY])
    log.info("%s added node %s", request[USER], entry["name"])
    return answer({"added": entry}, 201)


async def nodes_remove(panel, request):
    name = request.match_info["name"]
    force = request.query.get("force", "") in ("1", "true", "yes")
    current = [c["serial"] for c in panel.store.certs() if c["name"] == name and not c["revoked_at"]]
    await apply_edit(panel, edits.remove_node, name, force)
    panel.revoke(name)  # the reload revoked them already; this makes sure of it
    log.info("%s removed node %s", request[USER], name)
    return answer({"removed": name, "revoked": current})


async def nodes_operator(panel, request):
    name = request.match_info["name"]
    action = request[BODY].get("action")
    if not isinstance(action, str) or action not in ("drain", "maintenance", "enable"):
        raise PanelError(400, "field 'action' must be drain, maintenance or enable")
    if name not in panel.runtime.cluster.hosts:
        raise PanelError(404, f"no node named {name!r}")
    handler = panel.runtime.control.handlers.get("operator")
    if handler is None:
        raise PanelError(501, "drain/maintenance/enable is not available: no plugin on this "
                              "manager offers the 'operator' control command (the membership plugin)")
    result = handler(node=name, action=action)
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        result = await result
    return answer(result)


async def node_action(panel, request):
    name, action = request.match_info["name"], request.match_info["action"]
    host = panel.runtime.cluster.hosts.get(name)
    if host is None or host.role != "node":
        raise PanelError(404, f"no node named {name!r}")
    if action not in named_actions(panel.runtime.cluster):
        known = ", ".join(sorted(named_actions(panel.runtime.cluster))) or "none defined"
        raise PanelError(404, f"no action named {action!r} (known: {known}; [panel.actions])")
    job = panel.jobs.submit(name, action, request[USER])
    return answer({"job": job, "node": name, "action": action, "state": "queued"}, 202)


async def jobs_list(panel, request):
    node = request.query.get("node") or None
    return answer(panel.store.jobs(node))


ROUTES = [
    Route("GET", "/api/v1/nodes", nodes_list, "operator", "The manager and the nodes."),
    Route("POST", "/api/v1/nodes", nodes_add, "operator", "Add a node.", changes=True,
          body={"name": {"type": "string"}, "ip": {"type": "string"}, "transport": {"type": "string"},
                "root": {"type": "string"}, "options": OBJ}),
    Route("DELETE", "/api/v1/nodes/{name}", nodes_remove, "operator",
          "Remove a node (?force=true also from policies) and revoke its certificates.", changes=True),
    Route("POST", "/api/v1/nodes/{name}/operator", nodes_operator, "operator",
          "Drain, maintenance or enable a node.", changes=True,
          body={"action": {"type": "string", "enum": ["drain", "maintenance", "enable"]}}),
    Route("POST", "/api/v1/nodes/{name}/actions/{action}", node_action, "operator",
          "Queue a node's named action (run over mutual TLS, in order, when the node is up).",
          changes=True),
    Route("GET", "/api/v1/jobs", jobs_list, "operator", "Remote actions and their results (?node=)."),
]
