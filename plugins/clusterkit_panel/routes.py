"""The panel's route contract: what a plugin's ``clusterkit_panel_routes`` hook returns.

A :class:`Route` names a method, a path, an ``async def handler(panel, request)``,
who may call it and a summary for the OpenAPI document. The panel applies the
access rules before the handler runs (:mod:`clusterkit_panel.access`), so a
handler only reads its input and answers. A handler answers with
:func:`answer` and refuses with :class:`PanelError`, never with a response
object of its own making, so every error has the same JSON shape. This module
is the panel's public API for plugins (docs/hooks.md); everything else in the
package is the panel's own.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

from clusterkit.hookcalls import each_plugin
from clusterkit_panel.responses import BODY, STATUS, USER, answer

__all__ = ["AUTH", "BODY", "METHODS", "USER", "PanelError", "Route", "RouteError", "answer",
           "collect"]

AUTH = ("public", "operator", "host", "metrics")
WHERE = ("any", "manager", "node")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Route:
    """One endpoint: ``auth`` is who may call it, ``where`` which role of host serves it.

    ``changes``: it changes the cluster (a node answers 403: changes are made
    on the manager). ``body``: the JSON schema properties of the request
    body, for the OpenAPI document. ``name``: the OpenAPI operation id
    (default: the handler's name and the method).
    """

    method: str
    path: str
    handler: Callable
    auth: str
    summary: str
    changes: bool = False
    where: str = "any"
    body: dict = field(default_factory=dict, hash=False)
    name: str = ""

    @property
    def operation(self) -> str:
        return self.name or f"{self.handler.__name__}_{self.method.lower()}"


class PanelError(Exception):
    """A refusal a handler raises: the client gets ``status`` and ``{"error": message}``.

    ``problems`` (a list of texts) and ``headers`` travel with it. ``status``
    is one the panel answers with (400, 401, 403, 404, 409, 429, 501, ...).
    """

    def __init__(self, status: int, message: str, problems: list[str] | None = None,
                 headers: dict | None = None):
        if status not in STATUS:
            raise ValueError(f"PanelError status {status} is not one of {sorted(STATUS)}")
        super().__init__(message)
        self.status, self.message = status, message
        self.problems, self.headers = problems, headers


class RouteError(ValueError):
    """A route a plugin contributes that the panel cannot serve; the message names the plugin."""


def _check(plugin: str, route) -> None:
    if not isinstance(route, Route):
        raise RouteError(f"plugin {plugin!r}: clusterkit_panel_routes returned {type(route).__name__}, "
                         f"not a clusterkit_panel.routes.Route")
    where = f"plugin {plugin!r}: route {route.method} {route.path}"
    if route.method not in METHODS:
        raise RouteError(f"{where}: the method must be one of {', '.join(METHODS)}")
    if not isinstance(route.path, str) or not route.path.startswith("/"):
        raise RouteError(f"{where}: the path must start with '/'")
    if route.auth not in AUTH:
        raise RouteError(f"{where}: auth must be one of {', '.join(AUTH)}")
    if route.where not in WHERE:
        raise RouteError(f"{where}: where must be one of {', '.join(WHERE)}")
    if not inspect.iscoroutinefunction(route.handler):
        raise RouteError(f"{where}: the handler must be an async function (panel, request)")


def collect(builtin: list[Route], pm) -> list[Route]:
    """The built-in routes, then every plugin's, checked: a taken path or name is an error
    naming both owners (a plugin never shadows the panel's access rules or another plugin)."""
    owners: dict = {}
    routes: list[Route] = []

    def add(owner: str, route: Route) -> None:
        for key in ((route.method, route.path), route.operation):
            if key in owners:
                shown = " ".join(key) if isinstance(key, tuple) else f"operation {key!r}"
                raise RouteError(f"{owner}: {shown} is already served by {owners[key]}")
            owners[key] = owner
        routes.append(route)

    for route in builtin:
        add("the panel", route)
    for plugin, call in each_plugin(pm, "clusterkit_panel_routes"):  # per plugin, to name it
        for route in next(iter(call()), None) or []:
            _check(plugin, route)
            add(f"plugin {plugin!r}", route)
    return routes
