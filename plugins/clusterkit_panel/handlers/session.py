"""Operator sessions: log in (rate limited), who am I and the CSRF token, log out."""

from __future__ import annotations

import asyncio
import logging
import secrets

from aiohttp import web

from clusterkit_panel.access import reserve
from clusterkit_panel.routes import BODY, PanelError, Route, answer
from clusterkit_panel.server import SESSION_COOKIE

log = logging.getLogger("clusterkit.panel")
MAX_PASSWORD = 1024  # scrypt's cost grows with the password: no megabyte passwords


async def login(panel, request):
    body = request[BODY]
    user, password = body.get("user"), body.get("password")
    if not isinstance(user, str) or not isinstance(password, str) or not user:
        raise PanelError(400, "fields 'user' and 'password' are required strings")
    if len(user) > 64 or len(password) > MAX_PASSWORD:
        raise PanelError(400, f"'user' is at most 64 characters and 'password' {MAX_PASSWORD}")
    attempt = reserve(panel, request, "failed logins")
    if not await asyncio.to_thread(panel.accounts.check_password, user, password):
        log.warning("failed login for %r from %s", user, request.remote)
        raise PanelError(401, "wrong user name or password")
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


ROUTES = [
    Route("POST", "/api/v1/login", login, "public",
          "Operator login (rate limited per client address); sets the session cookie.",
          body={"user": {"type": "string"}, "password": {"type": "string"}}),
    Route("POST", "/api/v1/logout", logout, "operator", "End the session."),
    Route("GET", "/api/v1/session", session, "operator", "Who is logged in, and the CSRF token."),
]
