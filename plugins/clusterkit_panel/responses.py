"""What every panel handler shares: request keys, JSON answers and errors, body parsing."""

from __future__ import annotations

import json

from aiohttp import web

MAX_BODY = 256 * 1024
PANEL = web.AppKey("panel", object)
BODY = web.RequestKey("body", dict)
USER = web.RequestKey("user", str)


def fail(status: int, message: str, headers: dict | None = None, **extra) -> web.HTTPException:
    """A JSON error answer (raise it)."""
    cls = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden,
           404: web.HTTPNotFound, 409: web.HTTPConflict, 429: web.HTTPTooManyRequests,
           501: web.HTTPNotImplemented}[status]
    return cls(text=json.dumps({"error": message, **extra}), content_type="application/json",
               headers=headers)


def answer(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


async def read_body(request: web.Request) -> dict:
    if not request.can_read_body:
        return {}
    if request.content_length and request.content_length > MAX_BODY:
        raise fail(400, f"request body over {MAX_BODY} bytes")
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return dict(await request.post())
    raw = await request.read()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise fail(400, f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise fail(400, "the request body must be a JSON object")
    return body
