"""Cluster-changing actions of the panel: the same ``edit_config`` edits the CLI makes.

The definition stays the one source of truth: every change is validated by
:mod:`clusterkit.config` before it replaces the file (a :class:`ConfigError`
names every problem), then the daemon reloads it. Request bodies are checked
for unknown fields and JSON types first, so nothing but TOML scalars, lists
and tables reaches the document.
"""

from __future__ import annotations

import os

import tomlkit

from clusterkit.definition.edits import edit_config


class EditError(Exception):
    """A request the panel refuses before touching the file: ``status`` is the HTTP code."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


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


def add_node(config: str, pm, body) -> dict:
    """A node needs its transport said: a ``local`` node without ``root`` would be the manager's /."""
    entry = _fields(body, NODE_FIELDS, ("name", "ip", "transport"))
    if entry["transport"] == "local" and "root" not in entry:
        raise EditError(400, "field 'root' is required with transport 'local' (the directory "
                             "standing for the node's /; without it the node would be this "
                             "manager's own /)")
    if "root" in entry:
        if not isinstance(entry["root"], str) or not entry["root"].startswith("/"):
            raise EditError(400, "field 'root' must be an absolute path")
        entry["root"] = os.path.normpath(entry["root"])
    with edit_config(config, pm) as doc:
        if any(n.get("name") == entry["name"] for n in doc.get("node", [])):
            raise EditError(409, f"a node named {entry['name']!r} exists")
        doc.setdefault("node", tomlkit.aot()).append(entry)
    return entry


def remove_node(config: str, pm, name: str, force: bool = False) -> None:
    with edit_config(config, pm) as doc:
        nodes = doc.get("node", [])
        index = next((i for i, n in enumerate(nodes) if n.get("name") == name), None)
        if index is None:
            raise EditError(404, f"no node named {name!r}")
        users = [p for p in doc.get("policy", []) if name in p.get("members", {})]
        if users and not force:
            keys = ", ".join(f"{p['vip']}:{p['port']}" for p in users)
            raise EditError(409, f"node {name!r} is a member of {keys} (force=true removes it there too)")
        for p in users:
            del p["members"][name]
        del nodes[index]


POLICY_FIELDS = {"vip": "scalar", "port": "scalar", "service": "scalar", "members": "scalar-table",
                 "scheduler": "scalar", "persistence": "scalar", "backend_port": "scalar",
                 "proxy_protocol": "scalar", "fallback": "scalar", "max_conn": "scalar",
                 "member_max_conn": "scalar", "connect_timeout": "scalar", "idle_timeout": "scalar",
                 "client_timeout": "scalar", "server_timeout": "scalar", "engine": "scalar",
                 "check": "scalar-table", "replace": "scalar"}


def add_policy(config: str, pm, body) -> dict:
    entry = _fields(body, POLICY_FIELDS, ("vip", "port", "service", "members"))
    replace = bool(entry.pop("replace", False))
    with edit_config(config, pm) as doc:
        policies = doc.setdefault("policy", tomlkit.aot())
        index = _find_policy(policies, entry["vip"], entry["port"])
        if index is not None and not replace:
            raise EditError(409, f"a policy for {entry['vip']}:{entry['port']} exists "
                                 "(replace=true changes it)")
        if index is not None:
            policies[index] = entry
        else:
            policies.append(entry)
    return entry


def remove_policy(config: str, pm, vip: str, port: int) -> None:
    with edit_config(config, pm) as doc:
        policies = doc.get("policy", [])
        index = _find_policy(policies, vip, port)
        if index is None:
            raise EditError(404, f"no policy for {vip}:{port}")
        del policies[index]


def _find_policy(policies, vip, port) -> int | None:
    return next((i for i, p in enumerate(policies) if p.get("vip") == vip and p.get("port") == port),
                None)


SYNC_FIELDS = {"name": "scalar", "path": "scalar", "exclude": "strings", "on_change": "scalar"}


def add_sync_set(config: str, pm, body) -> dict:
    entry = _fields(body, SYNC_FIELDS, ("name", "path"))
    with edit_config(config, pm) as doc:
        sets = doc.setdefault("sync", tomlkit.aot())
        if any(s.get("name") == entry["name"] for s in sets):
            raise EditError(409, f"a sync set named {entry['name']!r} exists")
        sets.append(entry)
    return entry


def remove_sync_set(config: str, pm, name: str) -> None:
    with edit_config(config, pm) as doc:
        sets = doc.get("sync", [])
        index = next((i for i, s in enumerate(sets) if s.get("name") == name), None)
        if index is None:
            raise EditError(404, f"no sync set named {name!r} in the definition "
                                 "(sets added by plugins are not removed here)")
        del sets[index]
