"""Who may call what: the access rules every route passes before its handler runs.

Access kinds: ``public``; ``operator`` (a session cookie, with a CSRF token
on every state-changing call, or ``Authorization: Bearer`` API token);
``host`` (mutual TLS with a current cluster certificate); ``metrics``
(operator unless ``[panel] metrics_public``). A route that ``changes`` the
cluster answers 403 on a node: the manager is where the definition changes.
A :class:`~clusterkit_panel.routes.PanelError` from the rules or the handler
becomes the JSON error answer here, the one place that turns it into HTTP.
"""

from __future__ import annotations

import logging

from aiohttp import web

from clusterkit_panel.ratelimit import Attempt, RateLimited
from clusterkit_panel.responses import BODY, USER, fail, read_body
from clusterkit_panel.routes import PanelError, Route
from clusterkit_panel.server import CHANGING

log = logging.getLogger("clusterkit.panel")


def check(panel, route: Route, request: web.Request) -> None:
    """Raise PanelError unless this request may reach ``route`` on this host."""
    auth = route.auth
    if auth == "metrics":
        auth = "public" if panel.settings.metrics_public else "operator"
    if auth == "host":
        refusal = panel.host_refusal(request)
        if refusal:
            log.warning("refused %s %s from %s: %s", request.method, request.path,
                        request.remote, refusal)
            raise PanelError(403, refusal)
    elif auth == "operator":
        who = panel.operator(request)
        if who is None:
            raise PanelError(401, "log in first (session) or send Authorization: Bearer <API token>")
        user, via, csrf = who
        if via == "session" and request.method in CHANGING and \
                not panel.check_csrf(request, csrf, request[BODY]):
            raise PanelError(403, "missing or wrong CSRF token (send X-CSRF-Token from "
                                  "/api/v1/session)")
        request[USER] = user
    if route.where == "manager" and not panel.is_manager:
        raise PanelError(403, f"{panel.name} is a node: this is served by the manager "
                              f"({panel.runtime.cluster.manager.name})")
    if route.where == "node" and panel.is_manager:
        raise PanelError(403, "this endpoint is served by nodes only")
    if route.changes and not panel.is_manager:
        raise PanelError(403, f"{panel.name} is a node: its panel is read-only; cluster changes "
                              f"are made on the manager "
                              f"({panel.url_of(panel.runtime.cluster.manager)})")


def guarded(panel, route: Route):
    """The aiohttp handler of one route: its body, the access rules, then its handler."""

    async def handle(request: web.Request) -> web.StreamResponse:
        request[BODY] = await read_body(request) if request.method in CHANGING else {}
        try:
            check(panel, route, request)
            return await route.handler(panel, request)
        except PanelError as exc:
            extra = {} if exc.problems is None else {"problems": exc.problems}
            raise fail(exc.status, exc.message, headers=exc.headers, **extra) from None

    handle.__name__ = route.handler.__name__
    return handle


def reserve(panel, request: web.Request, what: str) -> Attempt:
    """Count this attempt before checking it; over the limit: 429 at once (no check runs)."""
    ip = request.remote or "?"
    try:
        return panel.reserve_attempt(ip)
    except RateLimited as exc:
        wait = int(exc.wait) + 1
        raise PanelError(429, f"too many {what} from {ip}; try again in {wait}s",
                         headers={"Retry-After": str(wait)}) from None
