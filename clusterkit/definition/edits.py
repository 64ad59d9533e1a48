"""Changing the definition: under a lock, validated first, its layout kept.

The CLI and the panel edit a tomlkit document inside :func:`edit_config`;
before the file is replaced the document is tidied so that edits keep the
operator's file in shape: an array of tables emptied by a removal is left
out (never ``sync = []``, which the next ``add`` would turn into one long
inline array above the header comment), and a table added by the edit gets
one blank line before its header. Comments, order and the operator's own
spacing are kept.
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
from clusterkit.definition.tables import ConfigError, Problem


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
