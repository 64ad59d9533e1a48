"""The control API between hosts (mutual TLS): status, the manager's view, hello, actions."""

from __future__ import annotations

from clusterkit_panel import views
from clusterkit_panel.routes import BODY, PanelError, Route, answer
from clusterkit_panel.server import HOST
from clusterkit_panel.settings import named_actions


async def control_status(panel, request):
    return answer(panel.runtime.status())


async def control_view(panel, request):
    return answer(views.view_of_node(panel, request[HOST]))


async def control_hello(panel, request):
    panel.node_hello(request[HOST])
    return answer({"hello": request[HOST], "manager": panel.name})


async def control_action(panel, request):
    from clusterkit_panel.jobs import run_action

    name = request.match_info["name"]
    key = str(request[BODY].get("job", ""))
    command = named_actions(panel.runtime.cluster).get(name)
    if command is None:
        raise PanelError(404, f"{panel.name} has no action named {name!r}")
    return answer(await run_action(panel, name, command, key))


ROUTES = [
    Route("GET", "/control/v1/status", control_status, "host",
          "A node's status, for the manager (mutual TLS).", where="node"),
    Route("POST", "/control/v1/actions/{name}", control_action, "host",
          "Run a named action on a node, for the manager (mutual TLS; idempotent per job).",
          where="node", body={"job": {"type": "string"}}),
    Route("GET", "/control/v1/view", control_view, "host",
          "What the manager sees of the calling node: checks, replication (mutual TLS).",
          where="manager"),
    Route("POST", "/control/v1/hello", control_hello, "host",
          "A node announces it is up: its queued actions run now (mutual TLS).", where="manager"),
]
