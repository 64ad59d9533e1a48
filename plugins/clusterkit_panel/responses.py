"""What every panel handler shares: request keys, JSON answers and errors, body parsing.

Request bodies are hostile until parsed here: at most ``MAX_BODY`` bytes,
read within ``BODY_TIMEOUT`` seconds, JSON objects nested at most
``MAX_DEPTH`` levels, numbers finite and within TOML's 64-bit integer range
(``NaN``, ``Infinity`` and ``1e400`` are refused: Python's json would take
them), or an urlencoded form (plain strings; multipart is not taken). Every refusal is a ``400``
with a message in plain words.
"""

from __future__ import annotations

import asyncio
import json
import math
import re

from aiohttp import web

MAX_BODY = 64 * 1024
MAX_DEPTH = 16
BODY_TIMEOUT = 10.0
INT_RANGE = (-2 ** 63, 2 ** 63 - 1)  # TOML integers, where most numbers end up
PANEL = web.AppKey("panel", object)
APP_ROUTES = web.AppKey("routes", list)  # every route the app serves: built-in and the plugins'
BODY = web.RequestKey("body", dict)
USER = web.RequestKey("user", str)

STATUS = {400: web.HTTPBadRequest, 401: web.HTTPUnauthorized, 403: web.HTTPForbidden,
          404: web.HTTPNotFound, 408: web.HTTPRequestTimeout, 409: web.HTTPConflict,
          413: web.HTTPRequestEntityTooLarge, 429: web.HTTPTooManyRequests,
          500: web.HTTPInternalServerError, 501: web.HTTPNotImplemented}
_REPR = re.compile(r"<[^<>]*? at 0x[0-9a-fA-F]+>|<class '([\w.]+)'>")


def clean(message: str) -> str:
    """No Python object reprs in what a client reads (``<x object at 0x..>``, ``<class 'y'>``)."""
    return _REPR.sub(lambda m: (m.group(1) or "a value").rpartition(".")[2], message)


def fail(status: int, message: str, headers: dict | None = None, **extra) -> web.HTTPException:
    """A JSON error answer (raise it)."""
    if "problems" in extra:
        extra["problems"] = [clean(p) for p in extra["problems"]]
    body = {"error": clean(message), **extra}
    kwargs = {"text": json.dumps(body), "content_type": "application/json", "headers": headers}
    if status == 413:  # this class also wants the sizes (for its default text)
        return web.HTTPRequestEntityTooLarge(MAX_BODY, 0, **kwargs)
    return STATUS[status](**kwargs)


def answer(data, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))


class BadBody(ValueError):
    """A request body that is not what the API takes; the message says why."""


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadBody(f"the number {text} is out of range (numbers must be finite)")
    return value


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > 19:
        raise BadBody(f"the number {text[:24]}... is out of range (64-bit integers)")
    value = int(text)
    if not INT_RANGE[0] <= value <= INT_RANGE[1]:
        raise BadBody(f"the number {text} is out of range (64-bit integers)")
    return value


def _constant(text: str):
    raise BadBody(f"{text} is not a number JSON allows (numbers must be finite)")


def _depth(value) -> int:
    """How deeply lists and objects nest in an already parsed value (iterative)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level > MAX_DEPTH:
                break
            stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def parse_json(raw: bytes) -> dict:
    """A request body: one JSON object, strict numbers, bounded nesting (else BadBody)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadBody("the request body is not UTF-8") from None
    try:
        body = json.loads(text, parse_float=_finite, parse_int=_integer, parse_constant=_constant)
    except BadBody:
        raise
    except RecursionError:
        raise BadBody(f"the request body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise BadBody(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadBody("the request body must be a JSON object")
    if _depth(body) > MAX_DEPTH:
        raise BadBody(f"the request body nests deeper than {MAX_DEPTH} levels")
    return body


async def read_body(request: web.Request) -> dict:
    if not request.can_read_body:
        return {}
    if request.content_length and request.content_length > MAX_BODY:
        raise fail(413, f"the request body is over {MAX_BODY} bytes")
    try:
        async with asyncio.timeout(BODY_TIMEOUT):
            if request.content_type == "application/x-www-form-urlencoded":
                return {k: str(v) for k, v in (await request.post()).items()}
            raw = await request.read()
    except TimeoutError:
        raise fail(408, f"the request body did not arrive within {BODY_TIMEOUT:g}s") from None
    except web.HTTPRequestEntityTooLarge:
        raise fail(413, f"the request body is over {MAX_BODY} bytes") from None
    if not raw:
        return {}
    try:
        return parse_json(raw)
    except BadBody as exc:
        raise fail(400, str(exc)) from None
