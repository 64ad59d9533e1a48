"""The panel's HTTP API: one route table drives the router, the access rules and OpenAPI.

The table is the built-in handlers' (:mod:`clusterkit_panel.handlers`, one
module per resource) followed by what plugins contribute through the
``clusterkit_panel_routes`` hook (:mod:`clusterkit_panel.routes`). Every
route passes the access rules of :mod:`clusterkit_panel.access` first.
"""

from __future__ import annotations

import logging

from aiohttp import web

from clusterkit_panel import routes
from clusterkit_panel.access import guarded
from clusterkit_panel.handlers import certs, control, definition, nodes, public, session, status
from clusterkit_panel.responses import APP_ROUTES, MAX_BODY, PANEL, fail

log = logging.getLogger("clusterkit.panel")

ROUTES: list[routes.Route] = [*public.ROUTES, *certs.ROUTES, *session.ROUTES, *status.ROUTES,
                              *nodes.ROUTES, *definition.ROUTES, *control.ROUTES]
"""The built-in routes; a running panel serves these and the plugins' (``app[APP_ROUTES]``)."""


@web.middleware
async def security_headers(request: web.Request, handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    except Exception:  # a bug: logged here, and the client reads no Python internals
        log.exception("panel: %s %s failed", request.method, request.path)
        response = fail(500, "internal error (the panel's log on this host has the details)")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("Content-Security-Policy",
                                "default-src 'self'; frame-ancestors 'none'; form-action 'self'")
    if request.secure:
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    if isinstance(response, web.HTTPException):
        raise response
    return response


def build_app(panel) -> web.Application:
    app = web.Application(middlewares=[security_headers], client_max_size=MAX_BODY)
    app[PANEL] = panel
    app[APP_ROUTES] = routes.collect(ROUTES, panel.runtime.pm)
    for route in app[APP_ROUTES]:
        app.router.add_route(route.method, route.path, guarded(panel, route), name=route.operation)
    return app


def build_redirect_app(panel) -> web.Application:
    """Port 2080: nothing but a redirect to the HTTPS panel (no secret ever travels in clear).

    The target is this host's configured address, never the request's Host
    header (an open redirect, and a way to put text into our headers).
    """

    async def redirect(request: web.Request) -> web.StreamResponse:
        host = panel.settings.address(panel.runtime.host)
        if ":" in host:
            host = f"[{host}]"
        raise web.HTTPPermanentRedirect(f"https://{host}:{panel.settings.https_port}"
                                        f"{request.rel_url.raw_path_qs}")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", redirect)
    return app
