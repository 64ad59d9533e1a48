"""Policies and sync sets: the definition's tables, edited on the manager then reloaded."""

from __future__ import annotations

import asyncio
import logging

from clusterkit.definition.tables import ConfigError
from clusterkit.definition.values import endpoint
from clusterkit_panel import edits, views
from clusterkit_panel.routes import BODY, USER, PanelError, Route, answer

log = logging.getLogger("clusterkit.panel")
OBJ = {"type": "object"}


async def apply_edit(panel, fn, *args):
    """Run an edit of the definition off the loop (it takes a file lock), then reload."""
    runtime = panel.runtime
    try:
        result = await asyncio.to_thread(fn, runtime.config_path, runtime.pm, *args)
    except edits.EditError as exc:
        raise PanelError(exc.status, str(exc)) from None
    except ConfigError as exc:
        raise PanelError(400, "the change was refused: the definition would be invalid",
                         problems=[p.format(exc.path) for p in exc.problems]) from None
    reloaded = await runtime.reload()
    if not reloaded.get("reloaded"):
        raise PanelError(409, f"saved, but the running definition was kept: {reloaded.get('error')}")
    return result


async def policies_list(panel, request):
    return answer([views.policy_row(p) for p in panel.runtime.cluster.policies])


async def policies_add(panel, request):
    entry = await apply_edit(panel, edits.add_policy, request[BODY])
    log.info("%s set policy %s:%s", request[USER], entry["vip"], entry["port"])
    return answer({"added": entry}, 201)


async def policies_remove(panel, request):
    vip, port = request.match_info["vip"], request.match_info["port"]
    if not port.isdigit():
        raise PanelError(400, f"port {port!r} is not a number")
    await apply_edit(panel, edits.remove_policy, vip, int(port))
    return answer({"removed": endpoint(vip, port)})


async def sync_list(panel, request):
    return answer([views.sync_row(s) for s in panel.runtime.cluster.sync_sets])


async def sync_add(panel, request):
    entry = await apply_edit(panel, edits.add_sync_set, request[BODY])
    return answer({"added": entry}, 201)


async def sync_remove(panel, request):
    name = request.match_info["name"]
    await apply_edit(panel, edits.remove_sync_set, name)
    return answer({"removed": name})


ROUTES = [
    Route("GET", "/api/v1/policies", policies_list, "operator", "The policies."),
    Route("POST", "/api/v1/policies", policies_add, "operator", "Add (replace=true: change) a policy.",
          changes=True, body={"vip": {"type": "string"}, "port": {"type": "integer"},
                              "service": {"type": "string"}, "members": OBJ,
                              "scheduler": {"type": "string"}, "persistence": {"type": "integer"},
                              "backend_port": {"type": "integer"}, "check": OBJ,
                              "replace": {"type": "boolean"}}),
    Route("DELETE", "/api/v1/policies/{vip}/{port}", policies_remove, "operator", "Remove a policy.",
          changes=True),
    Route("GET", "/api/v1/sync-sets", sync_list, "operator", "Sync sets (the definition's and plugins')."),
    Route("POST", "/api/v1/sync-sets", sync_add, "operator", "Add a sync set.", changes=True,
          body={"name": {"type": "string"}, "path": {"type": "string"},
                "exclude": {"type": "array", "items": {"type": "string"}},
                "on_change": {"type": "string"}}),
    Route("DELETE", "/api/v1/sync-sets/{name}", sync_remove, "operator", "Remove a sync set.",
          changes=True),
]
