"""Cluster-changing actions of the panel: the core's edits (:mod:`clusterkit.definition.edits`),
the very ones the CLI makes.

The definition stays the one source of truth: every change is validated by
:mod:`clusterkit.config` before it replaces the file (a :class:`ConfigError`
names every problem), then the daemon reloads it. Request bodies are checked
here for unknown fields and JSON types first, so nothing but TOML scalars,
lists and tables reaches the document; what the core refuses comes back as
an :class:`EditError` with the HTTP status of its kind and the core's words.
"""

from __future__ import annotations

import functools

from clusterkit.definition import edits


class EditError(Exception):
    """A request the panel refuses before touching the file: ``status`` is the HTTP code."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


STATUS = {"invalid": 400, "missing": 404, "conflict": 409}


def _answered(edit):
    """The core's refusal as an :class:`EditError`: ``field 'root' is required ...`` for a bad
    field of the request, else the core's message (the definition's file stays unnamed)."""

    @functools.wraps(edit)
    def call(*args, **kwargs):
        try:
            return edit(*args, **kwargs)
        except edits.EditError as exc:
            message = exc.problem.message
            if exc.kind == "invalid":
                message = f"field {exc.problem.key.rpartition('.')[2]!r} {message}"
            raise EditError(STATUS[exc.kind], message) from None

    return call


SCALARS = (str, int, float, bool)


def json_kind(value) -> str:
    """What a JSON value is, in words (messages name the kind, never a Python repr)."""
    for kind, name in ((bool, "true/false"), (str, "text"), ((int, float), "a number"),
                       (dict, "an object"), (list, "a list")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else "a value"


def _fields(body, allowed: dict, required: tuple) -> dict:
    if not isinstance(body, dict):
        raise EditError(400, "the request body must be a JSON object")
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise EditError(400, f"unknown field {unknown[0]!r} (known: {', '.join(sorted(allowed))})")
    missing = [k for k in required if body.get(k) in (None, "")]
    if missing:
        raise EditError(400, f"field {missing[0]!r} is required")
    for key, value in body.items():
        kind = allowed[key]
        if value is None:
            continue
        if kind == "scalar-table":
            if not isinstance(value, dict) or not all(
                    isinstance(k, str) and isinstance(v, SCALARS) for k, v in value.items()):
                raise EditError(400, f"field {key!r} must be an object of plain values")
        elif kind == "strings":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise EditError(400, f"field {key!r} must be a list of strings")
        elif kind == "scalar":
            if not isinstance(value, SCALARS):
                raise EditError(400, f"field {key!r} must be text, a number or true/false, "
                                     f"not {json_kind(value)}")
    return {k: v for k, v in body.items() if v is not None and v != ""}


NODE_FIELDS = {"name": "scalar", "ip": "scalar", "transport": "scalar", "root": "scalar",
               "options": "scalar-table"}


@_answered
def add_node(config: str, pm, body) -> dict:
    return edits.add_node(config, pm, _fields(body, NODE_FIELDS, ("name", "ip", "transport")))


remove_node = _answered(edits.remove_node)


POLICY_FIELDS = {"vip": "scalar", "port": "scalar", "service": "scalar", "members": "scalar-table",
                 "scheduler": "scalar", "persistence": "scalar", "backend_port": "scalar",
                 "proxy_protocol": "scalar", "fallback": "scalar", "max_conn": "scalar",
                 "member_max_conn": "scalar", "connect_timeout": "scalar", "idle_timeout": "scalar",
                 "client_timeout": "scalar", "server_timeout": "scalar", "engine": "scalar",
                 "check": "scalar-table", "replace": "scalar"}


@_answered
def add_policy(config: str, pm, body) -> dict:
    entry = _fields(body, POLICY_FIELDS, ("vip", "port", "service", "members"))
    replace = bool(entry.pop("replace", False))
    return edits.add_policy(config, pm, entry, replace)


remove_policy = _answered(edits.remove_policy)

SYNC_FIELDS = {"name": "scalar", "path": "scalar", "exclude": "strings", "on_change": "scalar"}


@_answered
def add_sync_set(config: str, pm, body) -> dict:
    return edits.add_sync_set(config, pm, _fields(body, SYNC_FIELDS, ("name", "path")))


remove_sync_set = _answered(edits.remove_sync_set)
