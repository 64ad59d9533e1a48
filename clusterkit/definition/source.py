"""Reading the definition file: bounded, UTF-8, and lenient queries for a broken file."""

from __future__ import annotations

import os
import re
import stat
import tomllib

from clusterkit.definition.tables import ConfigError, Problem
from clusterkit.definition.values import name_problem, shown

DEFAULT_PATH = "/etc/clusterkit/cluster.toml"
DEFINITION_MODE = 0o600     # the definition may hold secrets (TSIG keys)
MAX_DEFINITION = 16 << 20   # bytes: a definition is a few kilobytes; refuse to read a runaway file


def default_path() -> str:
    """``$CLUSTERKIT_CONFIG``, else ``/etc/clusterkit/cluster.toml``."""
    return os.environ.get("CLUSTERKIT_CONFIG") or DEFAULT_PATH


def read_definition(path: str | os.PathLike) -> str:
    """The definition's text; unreadable or undecodable is a :class:`ConfigError` with the line."""
    path = str(path)
    data = _read_bounded(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(path, [Problem("", f"not UTF-8: byte 0x{data[exc.start]:02x} at column "
                                             f"{column} (TOML files are UTF-8)", line)]) from None


def _read_bounded(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_DEFINITION + 1)
    except FileNotFoundError:
        raise ConfigError(path, [Problem("", "no such file (clusterkit init creates one)")]) from None
    except OSError as exc:
        raise ConfigError(path, [Problem("", f"cannot read: {exc.strerror}")]) from None
    if len(data) > MAX_DEFINITION:
        raise ConfigError(path, [Problem("", f"is larger than {MAX_DEFINITION >> 20} MiB: "
                                             "not a cluster definition")])
    return data


def definition_warnings(path: str | os.PathLike) -> list[str]:
    """What ``config check`` warns about without refusing: secrets readable by others."""
    try:
        mode = os.stat(path).st_mode
        raw = tomllib.loads(read_definition(path))
    except (OSError, ConfigError, ValueError, RecursionError):
        return []
    secrets_at = _secret_keys(raw, "")
    if not secrets_at or not mode & (stat.S_IRGRP | stat.S_IROTH):
        return []
    return [f"{path}: is readable by others (mode {stat.S_IMODE(mode):04o}) and holds secrets "
            f"({', '.join(secrets_at[:3])}): chmod 600 {path}"]


def _secret_keys(value, key: str) -> list[str]:
    """Key paths of inline secrets (``secret``, ``password``, ``token``; not ``*_file``)."""
    found = []
    if isinstance(value, dict):
        for name, item in value.items():
            path = f"{key}.{name}" if key else name
            if isinstance(item, str) and item and re.search(r"(secret|password|token)$", name):
                found.append(path)
            found += _secret_keys(item, path)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _secret_keys(item, f"{key}[{i}]")
    return found


def daemon_state_dir(path: str | os.PathLike, host: str | None = None) -> str:
    """The state directory of a host's daemon, read leniently.

    ``status`` and other queries to a running daemon must work while the file
    is broken (that is when operators need them), so only ``cluster.state_dir``
    and the host names are read here, without full validation.
    """
    try:  # a bad byte elsewhere (that is when a reload was refused) must not hide the daemon
        raw = tomllib.loads(_read_bounded(str(path)).decode("utf-8", "replace"))
        state_dir = raw.get("cluster", {}).get("state_dir", "/var/lib/clusterkit")
        names = [raw["manager"]["name"]] + [n.get("name") for table in ("standby", "node")
                                            for n in raw.get(table, [])]
    except (tomllib.TOMLDecodeError, ValueError, RecursionError, KeyError, TypeError,
            AttributeError) as exc:
        raise ConfigError(str(path), [Problem("", f"cannot find the daemon's state: {exc}")]) from None
    name = host or names[0]
    if name not in names or name_problem(name) or not isinstance(state_dir, str):
        raise ConfigError(str(path), [Problem("", f"no host named {shown(name)} "
                                                  f"(hosts: {', '.join(map(str, names))})")])
    return os.path.join(state_dir, name)
