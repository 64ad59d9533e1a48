"""The one place numbers, names, addresses and sync paths of the definition are judged.

Each function returns the value or a problem text (or raises ``ValueError``
with it); the caller adds file, line and key. The table reader
(:mod:`clusterkit.definition.tables`) and plugins' own checks use them.
"""

from __future__ import annotations

import ipaddress
import math
import posixpath
import re
from typing import Any, Callable

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
# Sync paths refused as a whole (a full sync with --delete would wipe the node's system),
# and trees refused with everything inside them (kernel and device views, never files).
# (``/lib*`` is every top-level directory whose name starts with ``lib``.)
SYSTEM_DIRS = ("/", "/etc", "/usr", "/bin", "/sbin", "/boot", "/run", "/var", "/root", "/home")
VIRTUAL_TREES = ("/dev", "/proc", "/sys")


def _bound(value) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def check_number(value, kind: type, low, high):
    """``value`` if it is a finite ``kind`` within ``low..high``, else ``ValueError``.

    ``kind`` is ``int`` (a float is refused) or ``float`` (an int is widened).
    Every number has both bounds: TOML allows ``nan`` and ``inf``, and an
    unbounded timeout or interval is a denial of service waiting for a typo.
    The message names the value and the allowed range; the caller adds file,
    line and key.
    """
    bounds = f"{_bound(low)}..{_bound(high)}"
    what = "an integer" if kind is int else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or (kind is int and not isinstance(value, int)):
        raise ValueError(f"must be {what} in {bounds}, not {shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number ({bounds})")
    if not low <= value <= high:  # before float(): a huge int does not fit in a float
        raise ValueError(f"{shown(value)} is out of range ({bounds})")
    return float(value) if kind is float else value


def shown(value) -> str:
    """``repr`` for messages, clipped: a value may be a megabyte long."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10 ** 30 else "a huge integer"
    return text if len(text) <= 70 else text[:60] + "..."


def read_number(table: dict, name: str, kind: type, default, low, high, report, key: str = ""):
    """``table[name]`` through :func:`check_number`; a bad value is reported and ``default`` returned."""
    if name not in table:
        return default
    try:
        return check_number(table[name], kind, low, high)
    except ValueError as exc:
        report(key or name, str(exc))
        return default


def problem_of(parse: Callable[[Any], Any]) -> Callable[[Any], str | None]:
    """A ``Key``'s ``check`` from a parser that raises ``ValueError`` saying what is wrong."""

    def check(value) -> str | None:
        try:
            parse(value)
        except ValueError as exc:
            return str(exc)
        return None

    return check


def name_problem(name) -> str | None:
    """Why ``name`` cannot name a host, sync set or action, or ``None`` when it can.

    Names end up in paths (state directories, rsync modules), log lines and
    commands: 1 to 63 letters, digits and ``_.-``, starting with a letter or digit.
    """
    if isinstance(name, str) and NAME.fullmatch(name):
        return None
    return f"{shown(name)} is not a valid name (1 to 63 letters, digits and _.- starting with a letter or digit)"


def ip_problem(value) -> str | None:
    """Why ``value`` is not an IP address, or ``None``."""
    return None if is_ip(value) else f"{shown(value)} is not an IP address"


def absolute_problem(value) -> str | None:
    """Why ``value`` is not an absolute path, or ``None``."""
    return None if isinstance(value, str) and value.startswith("/") \
        else f"{shown(value)} must be an absolute path"


def is_ip(value) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def sync_path_problem(path) -> str | None:
    """Why ``path`` may not be a sync set's directory, or ``None``.

    A full sync mirrors the directory with ``--delete``: a set of ``/``,
    ``/etc`` or ``/var`` would delete every file of the node the manager does
    not have. Refused: relative paths, ``..`` components, control characters,
    the system directories as a whole and anything under ``/dev``, ``/proc``,
    ``/sys``.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        return f"{shown(path)} must be an absolute path"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return f"{shown(path)} holds a control character"
    if ".." in path.split("/"):
        return f"{shown(path)} has a '..' component"
    normal = norm(path)
    if normal in SYSTEM_DIRS or re.fullmatch(r"/lib[^/]*", normal):
        return f"{shown(path)} is a system directory: a full sync would delete the node's own files there"
    if any(inside(normal, tree) for tree in VIRTUAL_TREES):
        return f"{shown(path)} is in a kernel or device tree, not files to replicate"
    return None


def norm(path: str) -> str:
    """``path`` normalised and absolute (``//a/../b`` → ``/b``)."""
    return "/" + posixpath.normpath(path).lstrip("/")


def inside(path: str, tree: str) -> bool:
    """``path`` is ``tree`` or below it (both normalised, absolute)."""
    return path == tree or path.startswith(tree.rstrip("/") + "/")


def endpoint(host: str, port) -> str:
    """``host:port``, an IPv6 address in brackets (``[fd00::1]:80``): as URLs, logs and
    ``ss`` write it, and unambiguous to read back."""
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
