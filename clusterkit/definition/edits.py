"""Changing the definition: under a lock, validated first, its layout kept.

The CLI and the panel edit a tomlkit document inside :func:`edit_config`;
before the file is replaced the document is tidied so that edits keep the
operator's file in shape: an array of tables emptied by a removal is left
out (never ``sync = []``, which the next ``add`` would turn into one long
inline array above the header comment), and a table added by the edit gets
one blank line before its header. Comments, order and the operator's own
spacing are kept.

The edits themselves (add or remove a node, a policy, a sync set) are here
once, for the CLI and the panel alike: what they refuse before validation
(a name taken, a name unknown, a node still a policy's member, a ``local``
node without its root) is an :class:`EditError`, a :class:`ConfigError` with
``FILE:LINE: key: what`` problems that also says which kind of refusal it
is, so the panel answers 400, 404 or 409 with the same words the CLI prints.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

import tomlkit
from tomlkit.container import Container
from tomlkit.exceptions import ParseError as TomlkitParseError
from tomlkit.items import AoT, Array, Table, Whitespace

from clusterkit.config import build_cluster
from clusterkit.definition.files import write_atomic
from clusterkit.definition.source import DEFINITION_MODE, read_definition
from clusterkit.definition.tables import ConfigError, Locator, Problem
from clusterkit.definition.values import absolute_problem


@contextlib.contextmanager
def edit_config(path: str | os.PathLike, pm, create: bool = False) -> Iterator[tomlkit.TOMLDocument]:
    """Edit the definition under a lock; the result is validated before it replaces the file.

    Yields a tomlkit document (comments and layout survive). On a clean exit
    the new text is tidied (see the module), parsed and validated; a
    :class:`ConfigError` leaves the file untouched. The write is a temp file
    + fsync + rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(f"{path}.lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, DEFINITION_MODE)
    with open(lock_fd, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if path.exists():
            try:
                doc = tomlkit.parse(read_definition(path))
            except TomlkitParseError as exc:
                raise ConfigError(str(path), [Problem("", f"not valid TOML: {exc}",
                                                      getattr(exc, "line", None))]) from None
        elif create:
            doc = tomlkit.document()
        else:
            raise ConfigError(str(path), [Problem("", "no such file (clusterkit init creates one)")])
        for key in [k for k, v in doc.items() if isinstance(v, Array) and not v]:
            del doc[key]  # `sync = []` left by an older version: the add below makes [[sync]]
        before = {id(t) for t in _tables(doc)}
        yield doc
        tidy(doc, before)
        text = tomlkit.dumps(doc)
        build_cluster(text, str(path), pm)
        write_atomic(path, text, DEFINITION_MODE)


def tidy(container: Container | Table, kept: set[int]) -> None:
    """Drop emptied arrays of tables; one blank line before each table not in ``kept`` (ids)."""
    body = container.value.body if isinstance(container, Table) else container.body
    for key in [k for k, item in body if isinstance(item, AoT) and not len(item)]:
        del container[key.key]
    body = container.value.body if isinstance(container, Table) else container.body
    previous = None
    for _, item in body:
        if isinstance(item, AoT):
            for table in item:
                if id(table) not in kept and previous is not None:
                    _blank_line_before(table, previous)
                tidy(table, kept)
                previous = table
        elif isinstance(item, Table) and not item.is_super_table():
            if id(item) not in kept and previous is not None:
                _blank_line_before(item, previous)
            tidy(item, kept)
            previous = item
        elif isinstance(item, Table):
            tidy(item, kept)
            previous = item
        else:
            previous = item


def _blank_line_before(table: Table, previous) -> None:
    text = previous.as_string()
    ends_blank = text.endswith("\n\n") or (isinstance(previous, Whitespace) and "\n" in text)
    if not ends_blank and not table.trivia.indent.startswith("\n"):
        table.trivia.indent = "\n" + table.trivia.indent


def _tables(container) -> Iterator[Table]:
    """Every table of a document, in arrays of tables and nested ones too."""
    for _, item in container.items():
        if isinstance(item, AoT):
            for table in item:
                yield table
                yield from _tables(table)
        elif isinstance(item, Table):
            yield item
            yield from _tables(item)


# ------------------------------------------------------------------ the edits


class EditError(ConfigError):
    """An edit refused before validation; ``kind``: ``invalid``, ``missing`` or ``conflict``."""

    def __init__(self, path: str, kind: str, problem: Problem):
        super().__init__(path, [problem])
        self.kind = kind
        self.problem = problem


def _refuse(path, doc, kind: str, key: str, message: str, line_of: str | None = None):
    """An :class:`EditError` for ``key``, at the line of ``line_of`` (a key of the file as it is)."""
    line = Locator(doc.as_string())(line_of) if line_of else None
    return EditError(str(path), kind, Problem(key, message, line))


def _index(tables, field: str, value) -> int | None:
    return next((i for i, t in enumerate(tables) if t.get(field) == value), None)


def add_node(path, pm, entry: dict) -> dict:
    """Append ``[[node]]`` ``entry`` (name, ip, transport, root?, options?).

    A ``local`` node needs its root: without one the node's / would be this
    manager's own /. The root is kept normalised.
    """
    with edit_config(path, pm) as doc:
        nodes = doc.get("node", [])
        key = f"node[{len(nodes)}]"
        if entry.get("transport") == "local" and not entry.get("root"):
            raise _refuse(path, doc, "invalid", f"{key}.root",
                          "is required with transport 'local' (the directory standing for the "
                          "node's /; without it the node would be this manager's own /)")
        if "root" in entry:
            problem = absolute_problem(entry["root"])
            if problem:
                raise _refuse(path, doc, "invalid", f"{key}.root", problem)
            entry = {**entry, "root": os.path.normpath(entry["root"])}
        taken = _index(nodes, "name", entry.get("name"))
        if taken is not None:
            raise _refuse(path, doc, "conflict", f"node[{taken}].name",
                          f"a node named {entry['name']!r} exists", f"node[{taken}].name")
        doc.setdefault("node", tomlkit.aot()).append(entry)
    return entry


def remove_node(path, pm, name: str, force: bool = False) -> None:
    """Remove node ``name``; while a policy names it, only when ``force`` (then from those too)."""
    with edit_config(path, pm) as doc:
        nodes = doc.get("node", [])
        index = _index(nodes, "name", name)
        if index is None:
            raise _refuse(path, doc, "missing", "node", f"no node named {name!r}")
        policies = list(doc.get("policy", []))
        users = [i for i, p in enumerate(policies) if name in p.get("members", {})]
        if users and not force:
            keys = ", ".join(f"{policies[i]['vip']}:{policies[i]['port']}" for i in users)
            member = f"policy[{users[0]}].members.{name}"
            raise _refuse(path, doc, "conflict", member, f"node {name!r} is a member of {keys} "
                          "(--force, force=true: removed there too)", member)
        for i in users:
            del policies[i]["members"][name]
        del nodes[index]


def add_policy(path, pm, entry: dict, replace: bool = False) -> dict:
    """Append ``[[policy]]`` ``entry``; one for the same vip:port only when ``replace``."""
    with edit_config(path, pm) as doc:
        policies = doc.setdefault("policy", tomlkit.aot())
        index = _find_policy(policies, entry.get("vip"), entry.get("port"))
        if index is not None and not replace:
            raise _refuse(path, doc, "conflict", f"policy[{index}]",
                          f"a policy for {entry['vip']}:{entry['port']} exists "
                          "(--replace, replace=true: changed)", f"policy[{index}]")
        if index is not None:
            policies[index] = entry
        else:
            policies.append(entry)
    return entry


def remove_policy(path, pm, vip: str, port: int) -> None:
    with edit_config(path, pm) as doc:
        policies = doc.get("policy", [])
        index = _find_policy(policies, vip, port)
        if index is None:
            raise _refuse(path, doc, "missing", "policy", f"no policy for {vip}:{port}")
        del policies[index]


def _find_policy(policies, vip, port) -> int | None:
    return next((i for i, p in enumerate(policies) if p.get("vip") == vip and p.get("port") == port),
                None)


def add_sync_set(path, pm, entry: dict) -> dict:
    """Append ``[[sync]]`` ``entry`` (name, path, exclude?, on_change?)."""
    with edit_config(path, pm) as doc:
        sets = doc.setdefault("sync", tomlkit.aot())
        taken = _index(sets, "name", entry.get("name"))
        if taken is not None:
            raise _refuse(path, doc, "conflict", f"sync[{taken}].name",
                          f"a sync set named {entry['name']!r} exists", f"sync[{taken}].name")
        sets.append(entry)
    return entry


def remove_sync_set(path, pm, name: str) -> None:
    with edit_config(path, pm) as doc:
        sets = doc.get("sync", [])
        index = _index(sets, "name", name)
        if index is None:
            raise _refuse(path, doc, "missing", "sync", f"no sync set named {name!r} in the "
                          "definition (sets added by plugins are not removed here)")
        del sets[index]
