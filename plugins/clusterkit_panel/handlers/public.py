"""What anyone may fetch: the page, its static files, liveness, the OpenAPI document."""

from __future__ import annotations

import functools

from aiohttp import web

from clusterkit_panel.responses import APP_ROUTES
from clusterkit_panel.routes import PanelError, Route, answer


async def page(panel, request):
    from clusterkit_panel.web import PAGE

    return web.Response(text=PAGE, content_type="text/html")


# The graphs' library: Chart.js as Debian packages it (libjs-chart.js, in contrib/apt-packages.txt),
# served from here: no CDN, and the Content-Security-Policy stays 'self'.
CHART_JS = "/usr/share/javascript/chart.js/chart.min.js"


@functools.lru_cache(maxsize=1)
def _chart_js() -> bytes | None:
    try:
        with open(CHART_JS, "rb") as f:
            return f.read(8 << 20)
    except OSError:
        return None


async def static(panel, request):
    from clusterkit_panel.web import STATIC

    name = request.match_info["name"]
    if name == "chart.js":
        body = _chart_js()
        if body is None:
            raise PanelError(404, f"the graphs need Chart.js at {CHART_JS} "
                                  "(apt-get install libjs-chart.js)")
        return web.Response(body=body, content_type="application/javascript",
                            headers={"Cache-Control": "max-age=86400"})
    if name not in STATIC:
        raise PanelError(404, f"no static file {name!r}")
    text, kind = STATIC[name]
    return web.Response(text=text, content_type=kind)


async def healthz(panel, request):
    return answer({"ok": True, "host": panel.name, "role": panel.runtime.host.role})


async def openapi(panel, request):
    from clusterkit_panel.openapi import spec

    return answer(spec(request.app[APP_ROUTES], panel))


ROUTES = [
    Route("GET", "/", page, "public", "The panel's web page (login, overview, forms)."),
    Route("GET", "/static/{name}", static, "public", "The page's script, style sheet and charting library."),
    Route("GET", "/healthz", healthz, "public", "Liveness: this host's name and role."),
    Route("GET", "/api/openapi.json", openapi, "public", "This API's OpenAPI description."),
]
