"""The table reader: declared keys in, validated values and precise problems out.

A table's keys are declared once (:class:`Key`, :class:`Table`,
:class:`Tables`) and :func:`read` checks a parsed TOML value against them,
reporting every problem as ``report(key_path, message)``. The caller
(:func:`clusterkit.config.parse_cluster`) turns key paths into
``FILE:LINE: key.path: what`` with :class:`Locator`, so the core tables and
every plugin's section get the same checks and the same messages::

    PANEL = Table({"https_port": Key(int, low=1, high=65535),
                   "listen": Key(str, check=ip_problem),
                   "actions": Key(dict)})
    register("panel", parse_panel, shape=PANEL)   # parse_panel(values, report)
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from clusterkit.definition.values import check_number, shown


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # no default: an absent key is absent from what read() returns

KIND_WORDS = {str: "a string", bool: "true or false", list: "a list", dict: "a table",
              int: "an integer", float: "a number"}


@dataclass(frozen=True)
class Key:
    """One key: its TOML type and what its value must be.

    ``kind``: ``str``, ``bool``, ``int``, ``float`` (an int is widened),
    ``list`` or ``dict``, or a tuple of them (``object``: any, ``check``
    judges it). ``int`` and ``float`` need
    ``low`` and ``high`` (every number is finite and bounded). ``items``: the
    type of every element of a list. ``choices``: the values allowed.
    ``check(value)``: a further problem text or ``None`` (for a list, called
    per element). ``required``: ``True``, or a text saying what is expected.
    ``default``: what an absent key reads as (:data:`UNSET`: left out).
    """

    kind: type | tuple[type, ...]
    default: Any = UNSET
    required: bool | str = False
    low: Any = None
    high: Any = None
    choices: tuple = ()
    items: type | None = None
    check: Callable[[Any], str | None] | None = None

    def __post_init__(self):
        if self.kind in (int, float) and (self.low is None or self.high is None):
            raise TypeError("a number Key needs low and high")


@dataclass(frozen=True)
class Table:
    """A table's declared keys (each a :class:`Key`, :class:`Table` or :class:`Tables`).

    Undeclared keys are refused as unknown unless ``extra``: ``True`` returns
    them as written (free-form options); a shape reads each of them through it
    (keys the operator names: ``[dns.tsig."NAME"]`` tables, ``{node1 = "IP"}``).
    """

    keys: dict = field(default_factory=dict)
    extra: bool | Key | Table = False


@dataclass(frozen=True)
class Tables:
    """An array of tables (``[[name]]``), each read as ``table``."""

    table: Table


def read(value: Any, shape: Key | Table | Tables, report, key: str = "") -> Any:
    """``value`` checked against ``shape``; every problem goes to ``report(key, message)``.

    A table gives a dict of its valid keys (absent ones at their default), an
    array of tables a list of such dicts (the bad entries too: the caller
    decides), a key its value or :data:`UNSET` when it is not usable.
    """
    if isinstance(shape, Table):
        return _read_table(value, shape, report, key)
    if isinstance(shape, Tables):
        if not isinstance(value, list):
            report(key, f"must be an array of tables ([[...]]), not {_kind_of(value)}")
            return []
        return [_read_table(item, shape.table, report, f"{key}[{i}]") for i, item in enumerate(value)]
    return _read_key(value, shape, report, key)


def _read_table(data, shape: Table, report, key: str) -> dict:
    if not isinstance(data, dict):
        report(key, f"must be a table, not {_kind_of(data)}")
        data = {}
    values = {}
    for name, spec in shape.keys.items():
        path = f"{key}.{name}" if key else name
        if name not in data:
            if isinstance(spec, Key):
                if spec.required:
                    report(path, "is required" + (f": {spec.required}"
                                                  if isinstance(spec.required, str) else ""))
                if spec.default is not UNSET:
                    values[name] = _fresh(spec.default)
            elif isinstance(spec, Table):
                values[name] = _read_table({}, spec, report, path)
            else:
                values[name] = []
            continue
        value = read(data[name], spec, report, path)
        if value is not UNSET:
            values[name] = value
        elif spec.default is not UNSET:
            values[name] = _fresh(spec.default)
    for name in data:
        if name in shape.keys:
            continue
        if isinstance(shape.extra, (Key, Table)):
            value = read(data[name], shape.extra, report, f"{key}.{name}" if key else name)
            if value is not UNSET:
                values[name] = value
        elif shape.extra:
            values[name] = data[name]
        else:
            known = ", ".join(shape.keys) or "none"
            report(f"{key}.{name}" if key else name, f"unknown key (known: {known})")
    return values


def _fresh(default):
    """A mutable default copied, so no two readings share (and mutate) one dict."""
    return type(default)(default) if isinstance(default, (dict, list)) else default


def _read_key(value, spec: Key, report, key: str) -> Any:
    try:
        value = _typed(value, spec)
    except ValueError as exc:
        report(key, str(exc))
        return UNSET
    if spec.choices and value not in spec.choices:
        known = ", ".join(str(c) if c != "" else '""' for c in spec.choices)
        report(key, f"unknown {key.rpartition('.')[2]} {shown(value)} (known: {known})")
        return UNSET
    if isinstance(value, list) and spec.items is not None:
        good = []
        for i, item in enumerate(value):
            problem = (f"must be {KIND_WORDS.get(spec.items, spec.items.__name__)}, not {shown(item)}"
                       if not _is(item, spec.items) else spec.check(item) if spec.check else None)
            if problem:
                report(f"{key}[{i}]", problem)
            else:
                good.append(item)
        return tuple(good)
    problem = spec.check(value) if spec.check is not None else None
    if problem:
        report(key, problem)
        return UNSET
    return value


def _typed(value, spec: Key):
    """``value`` if it has one of the key's kinds (numbers checked and widened), else ``ValueError``."""
    kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
    for kind in kinds:
        if kind in (int, float) and spec.low is not None and _is(value, kind):
            return check_number(value, kind, spec.low, spec.high)
        if _is(value, kind):
            return value
    if kinds in ((int,), (float,)):
        check_number(value, kinds[0], spec.low, spec.high)  # raises, naming the range
    words = [f"a list of {_plural(spec.items)}" if k is list and spec.items else
             KIND_WORDS.get(k, k.__name__) for k in kinds]
    raise ValueError(f"must be {' or '.join(words)}, not {shown(value)}")


def _is(value, kind: type) -> bool:
    """``isinstance`` with TOML's sense: a bool is no number, an int is a float."""
    if kind is object:
        return True
    if isinstance(value, bool):
        return kind is bool
    return isinstance(value, (int, float) if kind is float else kind)


def _kind_of(value) -> str:
    return next((w for k, w in KIND_WORDS.items() if _is(value, k)), type(value).__name__)


def _plural(kind: type) -> str:
    return {str: "strings", int: "integers", float: "numbers", dict: "tables"}.get(kind, kind.__name__)


def from_text(spec: Key, text: str) -> Any:
    """The value a command-line ``KEY=VALUE`` text stands for, by the key's declared kind."""
    kinds = spec.kind if isinstance(spec.kind, tuple) else (spec.kind,)
    if object in kinds:
        kinds = (int, float, bool, str)
    if int in kinds and re.fullmatch(r"-?\d+", text):
        return int(text)
    if float in kinds:
        try:
            return float(text)
        except ValueError:
            pass
    if bool in kinds and text in ("true", "false"):
        return text == "true"
    return text


def section_parser(parse: Callable, shape: Table | Tables | None) -> Callable:
    """``parse(table, report)`` for a plugin's section: read through ``shape`` first, when declared."""
    if shape is None:
        return parse

    def parse_declared(raw, report):
        if isinstance(shape, Tables) and raw == {}:
            raw = []  # an absent [[section]]
        return parse(read(raw, shape, report), report)

    return parse_declared


# ------------------------------------------------------------------ problems


@dataclass(frozen=True)
class Problem:
    key: str
    message: str
    line: int | None = None

    def format(self, path: str) -> str:
        where = f"{path}:{self.line}" if self.line else path
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class ConfigError(Exception):
    """The definition is invalid; ``problems`` says where and why, every one of them."""

    def __init__(self, path: str, problems: list[Problem]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join(p.format(path) for p in problems))


class Locator:
    """Finds the line of a key path (``policy[1].members.web9``) in TOML text."""

    HEADER = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    KEY = re.compile(r"^\s*([A-Za-z0-9_\-.\"' ]+?)\s*=")

    def __init__(self, text: str):
        self.lines: list[tuple[str, int]] = []
        counts: dict[str, int] = {}
        prefix = ""
        for number, line in enumerate(text.splitlines(), 1):
            header = self.HEADER.match(line)
            if header:
                name = _dotted(header.group(2))
                if header.group(1) == "[[":
                    counts[name] = counts.get(name, -1) + 1
                    prefix = f"{name}[{counts[name]}]"
                else:
                    parent, _, last = name.rpartition(".")
                    prefix = f"{parent}[{counts[parent]}].{last}" if parent in counts else name
                self.lines.append((prefix, number))
                continue
            key = self.KEY.match(line)
            if key:
                path = f"{prefix}.{_dotted(key.group(1))}" if prefix else _dotted(key.group(1))
                self.lines.append((path, number))

    def __call__(self, key: str) -> int | None:
        best, best_len = None, -1
        for path, number in self.lines:
            if (key == path or key.startswith(path + ".") or key.startswith(path + "[")) \
                    and len(path) > best_len:
                best, best_len = number, len(path)
        return best


def _dotted(name: str) -> str:
    return ".".join(part.strip().strip("\"'") for part in name.split("."))
