"""The panel's HTTP API: one route table drives the router, the access rules and OpenAPI.

Access kinds: ``public``; ``operator`` (a session cookie, with a CSRF token
on every state-changing call, or ``Authorization: Bearer`` API token);
``host`` (mutual TLS with a current cluster certificate); ``metrics``
(operator unless ``[panel] metrics_public``). A route that ``changes`` the
cluster answers 403 on a node: the manager is where the definition changes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import Callable

from aiohttp import web

from clusterkit.definition.tables import ConfigError
from clusterkit_panel import dnsapi, edits, pki, views
from clusterkit_panel.ratelimit import Attempt, RateLimited
from clusterkit_panel.responses import BODY, MAX_BODY, PANEL, USER, answer, fail, read_body
from clusterkit_panel.server import CHANGING, HOST, SESSION_COOKIE
from clusterkit_panel.settings import named_actions
from clusterkit_panel.store import TokenRefused

log = logging.getLogger("clusterkit.panel")
MAX_PASSWORD = 1024  # scrypt's cost grows with the password: no megabyte passwords

@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: Callable
    auth: str
    summary: str
    changes: bool = False
    where: str = "any"          # any | manager | node
    body: dict = field(default_factory=dict, hash=False)   # JSON schema properties


def wrap(panel, route: Route):
    """The access rules of one route, then its handler."""

    async def handle(request: web.Request) -> web.StreamResponse:
        request[BODY] = await read_body(request) if request.method in CHANGING else {}
        auth = route.auth
        if auth == "metrics":
            auth = "public" if panel.settings.metrics_public else "operator"
        if auth == "host":
            refusal = panel.host_refusal(request)
            if refusal:
                log.warning("refused %s %s from %s: %s", request.method, request.path,
                            request.remote, refusal)
                raise fail(403, refusal)
        elif auth == "operator":
            who = panel.operator(request)
            if who is None:
                raise fail(401, "log in first (session) or send Authorization: Bearer <API token>")
            user, via, csrf = who
            if via == "session" and request.method in CHANGING and \
                    not panel.check_csrf(request, csrf, request[BODY]):
                raise fail(403, "missing or wrong CSRF token (send X-CSRF-Token from /api/v1/session)")
            request[USER] = user
        if route.where == "manager" and not panel.is_manager:
            raise fail(403, f"{panel.name} is a node: this is served by the manager "
                            f"({panel.runtime.cluster.manager.name})")
        if route.where == "node" and panel.is_manager:
            raise fail(403, "this endpoint is served by nodes only")
        if route.changes and not panel.is_manager:
            raise fail(403, f"{panel.name} is a node: its panel is read-only; cluster changes "
                            f"are made on the manager ({panel.url_of(panel.runtime.cluster.manager)})")
        return await route.handler(panel, request)

    handle.__name__ = route.handler.__name__
    return handle


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
    for route in ROUTES:
        app.router.add_route(route.method, route.path, wrap(panel, route), name=route.handler.__name__
                             + "_" + route.method.lower())
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


# ----------------------------------------------------------------- public


async def healthz(panel, request):
    return answer({"ok": True, "host": panel.name, "role": panel.runtime.host.role})


async def openapi(panel, request):
    from clusterkit_panel.openapi import spec

    return answer(spec(ROUTES, panel))


async def ca_cert(panel, request):
    try:
        return web.Response(body=open(panel.paths.ca_cert, "rb").read(),
                            content_type="application/x-pem-file")
    except FileNotFoundError:
        raise fail(404, "this host has no cluster CA certificate yet") from None


async def join(panel, request):
    body = request[BODY]
    node, token, csr = body.get("node"), body.get("token"), body.get("csr")
    if not all(isinstance(v, str) and v for v in (node, token, csr)):
        raise fail(400, "node, token and csr are required strings")
    attempt = _reserve(panel, request, "failed joins")
    cluster = panel.runtime.cluster
    host = cluster.hosts.get(node)
    if host is None or host.role != "node":
        raise fail(404, f"no node named {node!r} in the cluster definition (add it first)")
    secret = token.rpartition(".")[2]
    try:
        panel.store.use_join_token(secret, node)
    except TokenRefused as exc:
        raise fail(403, str(exc)) from None
    attempt.succeeded()
    try:
        cert = pki.sign_host(panel.runtime.state_dir, csr.encode(), node, host.ip)
    except pki.PKIError as exc:
        raise fail(400, str(exc)) from None
    serial = pki.serial_hex(cert)
    panel.store.add_cert(serial, node)
    panel.store.revoke_others(node, serial)
    panel.accounts.write_revoked(panel.store.revoked())
    log.info("node %s joined (certificate %s)", node, serial)
    with open(cluster.path) as f:
        definition = f.read()
    return answer({"certificate": pki.cert_pem(cert).decode(),
                   "ca": open(panel.paths.ca_cert).read(), "serial": serial,
                   "cluster": cluster.name, "manager": cluster.manager.name,
                   "definition": definition})


def _reserve(panel, request, what: str) -> Attempt:
    """Count this attempt before checking it; over the limit: 429 at once (no check runs)."""
    ip = request.remote or "?"
    try:
        return panel.reserve_attempt(ip)
    except RateLimited as exc:
        wait = int(exc.wait) + 1
        raise fail(429, f"too many {what} from {ip}; try again in {wait}s",
                   headers={"Retry-After": str(wait)}) from None


async def login(panel, request):
    body = request[BODY]
    user, password = body.get("user"), body.get("password")
    if not isinstance(user, str) or not isinstance(password, str) or not user:
        raise fail(400, "fields 'user' and 'password' are required strings")
    if len(user) > 64 or len(password) > MAX_PASSWORD:
        raise fail(400, f"'user' is at most 64 characters and 'password' {MAX_PASSWORD}")
    attempt = _reserve(panel, request, "failed logins")
    if not await asyncio.to_thread(panel.accounts.check_password, user, password):
        log.warning("failed login for %r from %s", user, request.remote)
        raise fail(401, "wrong user name or password")
    attempt.succeeded()
    sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    panel.store.add_session(sid, user, csrf, panel.settings.session_ttl)
    form = request.content_type == "application/x-www-form-urlencoded"
    response = web.HTTPSeeOther("/") if form else answer({"user": user, "csrf": csrf})
    response.set_cookie(SESSION_COOKIE, sid, secure=True, httponly=True, samesite="Strict",
                        path="/", max_age=panel.settings.session_ttl)
    if form:
        raise response
    return response


async def page(panel, request):
    from clusterkit_panel.web import PAGE

    return web.Response(text=PAGE, content_type="text/html")


async def static(panel, request):
    from clusterkit_panel.web import STATIC

    name = request.match_info["name"]
    if name not in STATIC:
        raise fail(404, f"no static file {name!r}")
    text, kind = STATIC[name]
    return web.Response(text=text, content_type=kind)


# --------------------------------------------------------------- operator


async def logout(panel, request):
    sid = request.cookies.get(SESSION_COOKIE)
    if sid:
        panel.store.drop_session(sid)
    response = answer({"logged_out": True})
    response.del_cookie(SESSION_COOKIE, path="/")
    return response


async def session(panel, request):
    who = panel.operator(request)
    user, via, csrf = who
    return answer({"user": user, "via": via, "csrf": csrf, "host": panel.name,
                   "role": panel.runtime.host.role, "cluster": panel.runtime.cluster.name})


async def status(panel, request):
    return answer(panel.runtime.status())


async def overview(panel, request):
    if panel.is_manager:
        return answer(views.manager_overview(panel))
    return answer(await views.node_overview(panel))


async def nodes_list(panel, request):
    return answer([views.host_row(h) for h in panel.runtime.cluster.hosts.values()])


async def _edit(panel, fn, *args):
    """Run an edit of the definition off the loop (it takes a file lock), then reload."""
    runtime = panel.runtime
    try:
        result = await asyncio.to_thread(fn, runtime.config_path, runtime.pm, *args)
    except edits.EditError as exc:
        raise fail(exc.status, str(exc)) from None
    except ConfigError as exc:
        raise fail(400, "the change was refused: the definition would be invalid",
                   problems=[p.format(exc.path) for p in exc.problems]) from None
    reloaded = await runtime.reload()
    if not reloaded.get("reloaded"):
        raise fail(409, f"saved, but the running definition was kept: {reloaded.get('error')}")
    return result


async def nodes_add(panel, request):
    entry = await _edit(panel, edits.add_node, request[BODY])
    log.info("%s added node %s", request[USER], entry["name"])
    return answer({"added": entry}, 201)


async def nodes_remove(panel, request):
    name = request.match_info["name"]
    force = request.query.get("force", "") in ("1", "true", "yes")
    current = [c["serial"] for c in panel.store.certs() if c["name"] == name and not c["revoked_at"]]
    await _edit(panel, edits.remove_node, name, force)
    panel.revoke(name)  # the reload revoked them already; this makes sure of it
    revoked = current
    log.info("%s removed node %s", request[USER], name)
    return answer({"removed": name, "revoked": revoked})


async def nodes_operator(panel, request):
    name = request.match_info["name"]
    action = request[BODY].get("action")
    if not isinstance(action, str) or action not in ("drain", "maintenance", "enable"):
        raise fail(400, "field 'action' must be drain, maintenance or enable")
    if name not in panel.runtime.cluster.hosts:
        raise fail(404, f"no node named {name!r}")
    handler = panel.runtime.control.handlers.get("operator")
    if handler is None:
        raise fail(501, "drain/maintenance/enable is not available: no plugin on this manager "
                        "offers the 'operator' control command (the membership plugin)")
    result = handler(node=name, action=action)
    if asyncio.iscoroutine(result) or isinstance(result, asyncio.Future):
        result = await result
    return answer(result)


async def node_action(panel, request):
    name, action = request.match_info["name"], request.match_info["action"]
    host = panel.runtime.cluster.hosts.get(name)
    if host is None or host.role != "node":
        raise fail(404, f"no node named {name!r}")
    if action not in named_actions(panel.runtime.cluster):
        known = ", ".join(sorted(named_actions(panel.runtime.cluster))) or "none defined"
        raise fail(404, f"no action named {action!r} (known: {known}; [panel.actions])")
    job = panel.jobs.submit(name, action, request[USER])
    return answer({"job": job, "node": name, "action": action, "state": "queued"}, 202)


async def jobs_list(panel, request):
    node = request.query.get("node") or None
    return answer(panel.store.jobs(node))


async def policies_list(panel, request):
    return answer([views.policy_row(p) for p in panel.runtime.cluster.policies])


async def policies_add(panel, request):
    entry = await _edit(panel, edits.add_policy, request[BODY])
    log.info("%s set policy %s:%s", request[USER], entry["vip"], entry["port"])
    return answer({"added": entry}, 201)


async def policies_remove(panel, request):
    vip, port = request.match_info["vip"], request.match_info["port"]
    if not port.isdigit():
        raise fail(400, f"port {port!r} is not a number")
    await _edit(panel, edits.remove_policy, vip, int(port))
    return answer({"removed": f"{vip}:{port}"})


async def sync_list(panel, request):
    return answer([views.sync_row(s) for s in panel.runtime.cluster.sync_sets])


async def sync_add(panel, request):
    entry = await _edit(panel, edits.add_sync_set, request[BODY])
    return answer({"added": entry}, 201)


async def sync_remove(panel, request):
    name = request.match_info["name"]
    await _edit(panel, edits.remove_sync_set, name)
    return answer({"removed": name})


async def metrics(panel, request):
    from clusterkit_panel.metrics import render

    return web.Response(text=render(panel), content_type="text/plain",
                        headers={"X-Prometheus-Format": "0.0.4"}, charset="utf-8")


# ------------------------------------------------------------------ hosts


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
        raise fail(404, f"{panel.name} has no action named {name!r}")
    return answer(await run_action(panel, name, command, key))


OBJ = {"type": "object"}
ROUTES: list[Route] = [
    Route("GET", "/", page, "public", "The panel's web page (login, overview, forms)."),
    Route("GET", "/static/{name}", static, "public", "The page's script and style sheet."),
    Route("GET", "/healthz", healthz, "public", "Liveness: this host's name and role."),
    Route("GET", "/api/openapi.json", openapi, "public", "This API's OpenAPI description."),
    Route("GET", "/api/v1/ca", ca_cert, "public", "The cluster CA certificate (PEM); a join pins it."),
    Route("POST", "/api/v1/join", join, "public",
          "Join with a one-time token: the manager signs the node's CSR.", where="manager",
          body={"node": {"type": "string"}, "token": {"type": "string"}, "csr": {"type": "string"}}),
    Route("POST", "/api/v1/login", login, "public",
          "Operator login (rate limited per client address); sets the session cookie.",
          body={"user": {"type": "string"}, "password": {"type": "string"}}),
    Route("POST", "/api/v1/logout", logout, "operator", "End the session."),
    Route("GET", "/api/v1/session", session, "operator", "Who is logged in, and the CSRF token."),
    Route("GET", "/api/v1/status", status, "operator", "This host's status (every plugin's section)."),
    Route("GET", "/api/v1/overview", overview, "operator",
          "Manager: nodes and health, policies with counters, replication lag, DNS convergence. "
          "Node: its own status, the manager's view of it, the cluster read-only."),
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
    Route("GET", "/api/v1/dns/zones", dnsapi.zones_list, "operator",
          "The manager's zones with serial and record count (the dns plugin's zone store).",
          where="manager"),
    Route("POST", "/api/v1/dns/zones", dnsapi.zones_add, "operator", "Create a zone.", changes=True,
          body={"zone": {"type": "string"}, "ns": {"type": "array", "items": {"type": "string"}},
                "email": {"type": "string"}}),
    Route("DELETE", "/api/v1/dns/zones/{zone}", dnsapi.zones_remove, "operator", "Remove a zone.",
          changes=True),
    Route("GET", "/api/v1/dns/zones/{zone}/records", dnsapi.records_list, "operator", "A zone's records.",
          where="manager"),
    Route("POST", "/api/v1/dns/zones/{zone}/records", dnsapi.records_add, "operator",
          "Add a record (the serial follows).", changes=True,
          body={"name": {"type": "string"}, "type": {"type": "string"}, "value": {"type": "string"},
                "ttl": {"type": "integer"}}),
    Route("DELETE", "/api/v1/dns/zones/{zone}/records", dnsapi.records_remove, "operator",
          "Remove records (?name=&type=[&value=]); the serial follows.", changes=True),
    Route("GET", "/metrics", metrics, "metrics", "Prometheus metrics of this host."),
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
