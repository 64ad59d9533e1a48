"""The cluster definition: a TOML file, parsed into frozen dataclasses.

Validation collects *every* problem, each with the file, the key path, the
line where it can be found and what is wrong, so an operator fixes a broken
file in one pass. Edits from the CLI go through :func:`edit_config`: under a
lock, validated before they replace anything, written atomically, comments
and layout of the operator's file preserved (tomlkit).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import math
import os
import posixpath
import re
import secrets
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import tomlkit
from tomlkit.exceptions import ParseError as TomlkitParseError

DEFAULT_PATH = "/etc/clusterkit/cluster.toml"
SCHEDULERS = ("rr", "wrr", "lc", "wlc", "sh")
PROXY_PROTOCOLS = ("", "v1", "v2")
ROLES = ("manager", "node")
CORE_SECTIONS = ("cluster", "manager", "node", "policy", "sync")
DEFINITION_MODE = 0o600     # the definition may hold secrets (TSIG keys)
MAX_DEFINITION = 16 << 20   # bytes: a definition is a few kilobytes; refuse to read a runaway file
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
WEEK = 7 * 86400
# Sync paths refused as a whole (a full sync with --delete would wipe the node's system),
# and trees refused with everything inside them (kernel and device views, never files).
# (``/lib*`` is every top-level directory whose name starts with ``lib``.)
SYSTEM_DIRS = ("/", "/etc", "/usr", "/bin", "/sbin", "/boot", "/run", "/var", "/root", "/home")
VIRTUAL_TREES = ("/dev", "/proc", "/sys")


def default_path() -> str:
    """``$CLUSTERKIT_CONFIG``, else ``/etc/clusterkit/cluster.toml``."""
    return os.environ.get("CLUSTERKIT_CONFIG") or DEFAULT_PATH


# ------------------------------------------------------------------- model


@dataclass(frozen=True)
class Host:
    """The manager or a node. ``root`` is the directory standing for the host's ``/``."""

    name: str
    ip: str
    role: str
    transport: str = "local"
    root: str = "/"
    public_ips: tuple[str, ...] = ()
    options: dict = field(default_factory=dict, compare=True, hash=False)

    def local_path(self, path: str) -> str:
        """Where the cluster path ``path`` lives on this host's filesystem."""
        return os.path.join(self.root, path.lstrip("/")) if self.root != "/" else path


@dataclass(frozen=True)
class Member:
    node: str
    weight: int


@dataclass(frozen=True)
class Check:
    """Health check settings with HAProxy's meanings and defaults."""

    kind: str
    inter: float = 2.0
    timeout: float = 1.0
    rise: int = 2
    fall: int = 3
    slowstart: float = 0.0
    options: dict = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Policy:
    """Public IP + port + service → members. Without a policy nothing is balanced."""

    vip: str
    port: int
    service: str
    scheduler: str
    persistence: int
    members: tuple[Member, ...]
    backend_port: int
    check: Check
    proxy_protocol: str = ""
    fallback: str = ""
    max_conn: int = 0
    member_max_conn: int = 0
    connect_timeout: float = 1.0
    idle_timeout: float = 300.0
    client_timeout: float = 300.0  # idle_timeout unless set: per side, HAProxy's meanings
    server_timeout: float = 300.0
    options: dict = field(default_factory=dict, hash=False)

    @property
    def key(self) -> str:
        return f"{self.vip}:{self.port}"


@dataclass(frozen=True)
class SyncSet:
    """A directory replicated from the manager to every node."""

    name: str
    path: str
    exclude: tuple[str, ...] = ()
    on_change: str = ""
    owner: str = "config"
    allow_mass_delete: bool = False  # a full sync may delete most of a node's copy
    key: str = field(default="", compare=False)  # where the path is written: "sync[0].path"


@dataclass(frozen=True)
class Cluster:
    name: str
    state_dir: str
    hosts: dict  # name -> Host, the manager first
    policies: tuple[Policy, ...]
    sync_sets: tuple[SyncSet, ...]
    sections: dict = field(default_factory=dict)
    path: str = ""

    @property
    def manager(self) -> Host:
        return next(h for h in self.hosts.values() if h.role == "manager")

    @property
    def nodes(self) -> list[Host]:
        return [h for h in self.hosts.values() if h.role == "node"]

    def host(self, name: str) -> Host:
        if name not in self.hosts:
            raise ConfigError(self.path, [Problem("", f"no host named {name!r} (hosts: "
                                                  f"{', '.join(self.hosts)})")])
        return self.hosts[name]

    def host_state_dir(self, name: str) -> str:
        """Each host keeps its own state (several hosts may share a machine in tests)."""
        return os.path.join(self.state_dir, name)

    def policy(self, vip: str, port: int) -> Policy | None:
        return next((p for p in self.policies if p.vip == vip and p.port == port), None)


# ------------------------------------------------------------------ errors


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


# ------------------------------------------------------------------ values
#
# The one place numbers, names and sync paths of the definition are judged;
# the core tables and every plugin's section use these (a plugin's
# ``parse(table, report)`` calls :func:`read_number` and :func:`name_problem`).


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
        raise ValueError(f"must be {what} in {bounds}, not {_shown(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number ({bounds})")
    if not low <= value <= high:  # before float(): a huge int does not fit in a float
        raise ValueError(f"{_shown(value)} is out of range ({bounds})")
    return float(value) if kind is float else value


def _shown(value) -> str:
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


def name_problem(name) -> str | None:
    """Why ``name`` cannot name a host, sync set or action, or ``None`` when it can.

    Names end up in paths (state directories, rsync modules), log lines and
    commands: 1 to 63 letters, digits and ``_.-``, starting with a letter or digit.
    """
    if isinstance(name, str) and NAME.fullmatch(name):
        return None
    return f"{_shown(name)} is not a valid name (1 to 63 letters, digits and _.- starting with a letter or digit)"


def sync_path_problem(path) -> str | None:
    """Why ``path`` may not be a sync set's directory, or ``None``.

    A full sync mirrors the directory with ``--delete``: a set of ``/``,
    ``/etc`` or ``/var`` would delete every file of the node the manager does
    not have. Refused: relative paths, ``..`` components, control characters,
    the system directories as a whole and anything under ``/dev``, ``/proc``,
    ``/sys``.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        return f"{_shown(path)} must be an absolute path"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return f"{_shown(path)} holds a control character"
    if ".." in path.split("/"):
        return f"{_shown(path)} has a '..' component"
    norm = _norm(path)
    if norm in SYSTEM_DIRS or re.fullmatch(r"/lib[^/]*", norm):
        return f"{_shown(path)} is a system directory: a full sync would delete the node's own files there"
    if any(_inside(norm, tree) for tree in VIRTUAL_TREES):
        return f"{_shown(path)} is in a kernel or device tree, not files to replicate"
    return None


def _norm(path: str) -> str:
    return "/" + posixpath.normpath(path).lstrip("/")


def _inside(path: str, tree: str) -> bool:
    """``path`` is ``tree`` or below it (both normalised, absolute)."""
    return path == tree or path.startswith(tree.rstrip("/") + "/")


# ----------------------------------------------------------------- parsing


class _Table:
    """Typed reads from one TOML table; every mistake is reported, unread keys too."""

    def __init__(self, data: Any, key: str, report):
        self.key = key
        self.report = report
        if not isinstance(data, dict):
            report(key, f"must be a table, not {type(data).__name__}")
            data = {}
        self.data = data
        self.read: set[str] = set()

    def _path(self, name: str) -> str:
        return f"{self.key}.{name}" if self.key else name

    def get(self, name: str, kind: type | tuple, default: Any = None, required: bool = False):
        self.read.add(name)
        if name not in self.data:
            if required:
                self.report(self._path(name), "is required")
            return default
        value = self.data[name]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            self.report(self._path(name), f"must be {names}, not {value!r}")
            return default
        return value

    def text(self, name: str, default: str = "", required: bool = False) -> str:
        return self.get(name, str, default, required)

    def number(self, name: str, kind: type, default, low, high, required=False):
        """A number through :func:`check_number` (finite, typed, within ``low..high``)."""
        self.read.add(name)
        if required and name not in self.data:
            self.report(self._path(name), "is required")
        return read_number(self.data, name, kind, default, low, high, self.report, self._path(name))

    def port(self, name: str, default=None, required=False) -> int:
        return self.number(name, int, default, 1, 65535, required)

    def ip(self, name: str, default: str = "", required: bool = False) -> str:
        value = self.text(name, default, required)
        if value and not _is_ip(value):
            self.report(self._path(name), f"{value!r} is not an IP address")
        return value

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.get(name, list, [])
        bad = [v for v in value if not isinstance(v, str)]
        if bad:
            self.report(self._path(name), f"must be a list of strings, found {bad[0]!r}")
            return ()
        return tuple(value)

    def table(self, name: str) -> dict:
        return self.get(name, dict, {})

    def finish(self) -> None:
        for name in self.data:
            if name not in self.read:
                self.report(self._path(name), "unknown key")


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def parse_cluster(text: str, path: str, registry) -> Cluster:
    """Parse and validate a definition; raise :class:`ConfigError` with every problem."""
    problems: list[Problem] = []
    locate = _Locator(text)

    def report(key: str, message: str) -> None:
        problems.append(Problem(key, message, locate(key)))

    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise ConfigError(path, [Problem("", f"not valid TOML: {exc}",
                                         int(match.group(1)) if match else None)]) from None
    except (ValueError, RecursionError) as exc:  # a 5000-digit integer, arrays nested 10^5 deep
        raise ConfigError(path, [Problem("", f"not a usable TOML file: {type(exc).__name__}: "
                                             f"{str(exc)[:200]}")]) from None

    top = _Table(raw, "", report)
    cl = _Table(top.table("cluster"), "cluster", report)
    name = cl.text("name", required=True)
    state_dir = cl.text("state_dir", "/var/lib/clusterkit")
    cl.finish()

    hosts: dict[str, Host] = {}
    ip_owner: dict[str, str] = {}
    if "manager" not in raw:
        report("manager", "is required: the manager's name and ip")
    entries = [("manager", top.table("manager"), "manager")]
    entries += [(f"node[{i}]", item, "node") for i, item in enumerate(top.get("node", list, []))]
    for key, item, role in entries:
        host = _parse_host(item, key, role, registry, report)
        if host.name in hosts:
            report(f"{key}.name", f"duplicate host name {host.name!r}")
            continue
        if host.ip in ip_owner:
            report(f"{key}.ip", f"{host.ip} is already the ip of {ip_owner[host.ip]!r}")
        if host.name:
            hosts[host.name] = host
            ip_owner.setdefault(host.ip, host.name)
    manager = next((h for h in hosts.values() if h.role == "manager"), None)

    policies: list[Policy] = []
    seen: set[str] = set()
    for i, item in enumerate(top.get("policy", list, [])):
        policy = _parse_policy(item, f"policy[{i}]", hosts, manager, registry, report)
        if policy is None:
            continue
        if policy.key in seen:
            report(f"policy[{i}]", f"a policy for {policy.key} already exists")
        seen.add(policy.key)
        policies.append(policy)

    sync_sets: list[SyncSet] = []
    for i, item in enumerate(top.get("sync", list, [])):
        t = _Table(item, f"sync[{i}]", report)
        sset = SyncSet(name=t.text("name", required=True), path=t.text("path", required=True),
                       exclude=t.strings("exclude"), on_change=t.text("on_change"),
                       allow_mass_delete=t.get("allow_mass_delete", bool, False),
                       key=f"sync[{i}].path")
        t.finish()
        if sset.name and name_problem(sset.name):
            report(f"sync[{i}].name", name_problem(sset.name))
        if any(s.name == sset.name for s in sync_sets):
            report(f"sync[{i}].name", f"duplicate sync set {sset.name!r}")
        sync_sets.append(sset)
    _check_sync_sets(sync_sets, 0, state_dir, hosts, report)

    sections = {}
    for section, parse in registry.sections.items():
        top.read.add(section)
        sections[section] = parse(raw.get(section, {}), lambda key, msg, s=section: report(
            f"{s}{key}" if key.startswith("[") else f"{s}.{key}" if key else s, msg))
    _non_finite(raw, "", {p.key for p in problems}, report)
    for key in raw:
        if key not in CORE_SECTIONS and key not in registry.sections:
            top.read.add(key)
            report(key, "unknown section (no core table and no plugin claims it)")
    top.finish()

    if problems:
        raise ConfigError(path, problems)
    return Cluster(name=name, state_dir=state_dir, hosts=hosts, policies=tuple(policies),
                   sync_sets=tuple(sync_sets), sections=sections, path=path)


def _non_finite(value, key: str, reported: set[str], report) -> None:
    """Refuse ``nan``/``inf`` anywhere, free-form option tables too (no key means them).

    A key whose own check already said so is not reported twice.
    """
    if isinstance(value, dict):
        for name, item in value.items():
            _non_finite(item, f"{key}.{name}" if key else name, reported, report)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _non_finite(item, f"{key}[{i}]", reported, report)
    elif isinstance(value, float) and not math.isfinite(value) and key not in reported:
        report(key, f"{value!r} is not a finite number")


def _check_sync_sets(sets: list[SyncSet], first: int, state_dir: str, hosts: dict, report) -> None:
    """Refuse dangerous sync paths: see :func:`sync_path_problem`, plus the state
    directories and sets sharing a tree (two sets mirroring one directory
    with ``--delete`` and different excludes delete each other's files)."""
    state_dir = os.path.abspath(state_dir)
    for i in range(first, len(sets)):
        s = sets[i]
        key = s.key or f"sync set {s.name!r} ({s.owner})"
        if s.owner != "config":  # the core's own sets had their names checked where parsed
            problem = name_problem(s.name)
            if problem:
                report(key, f"sync set name {problem}")
            if any(o.name == s.name for o in sets[:i]):
                report(key, f"duplicate sync set {s.name!r}")
        problem = sync_path_problem(s.path)
        if problem:
            report(key, problem)
            continue
        norm = _norm(s.path)
        for host in hosts.values():
            local = _norm(os.path.abspath(host.local_path(norm)))
            own = _norm(os.path.join(state_dir, host.name))
            if _inside(local, own) or _inside(own, local) or _inside(state_dir, local):
                report(key, f"{_shown(s.path)} is or holds {host.name}'s state directory "
                            f"({own}): a sync must never touch it")
                break
        for other in sets[:i]:
            if sync_path_problem(other.path):
                continue
            there = _norm(other.path)
            if there == norm:
                report(key, f"{_shown(s.path)} is already the path of sync set {other.name!r}")
            elif _inside(norm, there) or _inside(there, norm):
                report(key, f"{_shown(s.path)} overlaps sync set {other.name!r} ({other.path}): "
                            "one tree, one set")


def _parse_host(data, key: str, role: str, registry, report) -> Host:
    t = _Table(data, key, report)
    name = t.text("name", required=True)
    if name and name_problem(name):
        report(f"{key}.name", name_problem(name))
    ip = t.ip("ip", required=True)
    public_ips = t.strings("public_ips") if role == "manager" else ()
    for j, pip in enumerate(public_ips):
        if not _is_ip(pip):
            report(f"{key}.public_ips[{j}]", f"{pip!r} is not an IP address")
    transport = t.text("transport", "local")
    if transport not in registry.transports:
        known = ", ".join(sorted(registry.transports)) or "none registered"
        report(f"{key}.transport", f"unknown transport {transport!r} (known: {known})")
    root = t.text("root", "/")
    if not root.startswith("/"):
        report(f"{key}.root", f"{root!r} must be an absolute path")
    options = t.table("options")
    read_number(options, "port", int, None, 1, 65535, report, f"{key}.options.port")  # transports'
    if role == "manager" and "proxy_workers" in options:
        from clusterkit.proxy.supervisor import process_count  # the balancer's own check

        try:
            process_count(options["proxy_workers"])
        except ValueError as exc:
            report(f"{key}.options.proxy_workers", str(exc))
    if role == "manager":
        from clusterkit.sync.replicator import Settings  # the replicator's own tunables

        Settings.from_options(options, lambda name, msg: report(f"{key}.options.{name}", msg))
    t.finish()
    return Host(name=name, ip=ip, role=role, transport=transport, root=root,
                public_ips=public_ips, options=options)


def _parse_policy(data, key, hosts, manager, registry, report) -> Policy | None:
    t = _Table(data, key, report)
    vip = t.ip("vip", required=True)
    port = t.port("port", required=True)
    service_name = t.text("service", required=True)
    service = registry.services.get(service_name)
    if service_name and service is None:
        known = ", ".join(sorted(registry.services)) or "none registered"
        report(f"{key}.service", f"unknown service {service_name!r} (known: {known})")
    if vip and manager and vip not in manager.public_ips and vip != manager.ip:
        report(f"{key}.vip", f"{vip} is not one of the manager's public_ips")
    scheduler = t.text("scheduler", "wrr")
    if scheduler not in SCHEDULERS:
        report(f"{key}.scheduler", f"unknown scheduler {scheduler!r} (known: {', '.join(SCHEDULERS)})")
    default_persist = service.persistence if service else 0
    persistence = t.number("persistence", int, default_persist, 0, WEEK)
    members = []
    for node, weight in t.table("members").items():
        mkey = f"{key}.members.{node}"
        if node not in hosts:
            report(mkey, f"unknown member {_shown(node)} (no such node)")
        try:
            members.append(Member(node, check_number(weight, int, 0, 256)))
        except ValueError as exc:
            report(mkey, f"weight {exc}")
    if "members" not in t.data:
        report(f"{key}.members", "is required: at least one member")
    backend_port = t.port("backend_port", port)
    proxy_protocol = t.text("proxy_protocol", "")
    if proxy_protocol not in PROXY_PROTOCOLS:
        report(f"{key}.proxy_protocol", f"{proxy_protocol!r} must be v1, v2 or empty")
    fallback = t.text("fallback", "")
    if fallback and not _is_endpoint(fallback) and fallback not in hosts:
        report(f"{key}.fallback", f"{fallback!r} must be IP:PORT or a host name")
    idle_timeout = t.number("idle_timeout", float, 300.0, 0.1, WEEK)
    policy = Policy(
        vip=vip, port=port, service=service_name, scheduler=scheduler,
        persistence=persistence, members=tuple(members), backend_port=backend_port,
        check=_parse_check(t.table("check"), f"{key}.check",
                           service.check if service else "tcp", registry, report),
        proxy_protocol=proxy_protocol, fallback=fallback,
        max_conn=t.number("max_conn", int, 0, 0, 1_000_000),
        member_max_conn=t.number("member_max_conn", int, 0, 0, 1_000_000),
        connect_timeout=t.number("connect_timeout", float, 1.0, 0.01, 60),
        idle_timeout=idle_timeout,
        client_timeout=t.number("client_timeout", float, idle_timeout, 0.1, WEEK),
        server_timeout=t.number("server_timeout", float, idle_timeout, 0.1, WEEK),
        options=t.table("options"),
    )
    if service is not None and service.check_options is not None:
        service.check_options(policy.options,
                              lambda name, msg: report(f"{key}.options.{name}", msg))
    t.finish()
    return policy


def _parse_check(data, key, default_kind, registry, report) -> Check:
    t = _Table(data, key, report)
    kind = t.text("kind", default_kind)
    if kind not in registry.checks:
        known = ", ".join(sorted(registry.checks)) or "none registered"
        report(f"{key}.kind", f"unknown check {kind!r} (known: {known})")
    check = Check(kind=kind, inter=t.number("inter", float, 2.0, 0.05, 3600),
                  timeout=t.number("timeout", float, 1.0, 0.01, 600),
                  rise=t.number("rise", int, 2, 1, 100), fall=t.number("fall", int, 3, 1, 100),
                  slowstart=t.number("slowstart", float, 0.0, 0, 3600),
                  options={k: v for k, v in t.data.items()
                           if k not in ("kind", "inter", "timeout", "rise", "fall", "slowstart")})
    t.read.update(t.data)  # the remaining keys are the check kind's own options
    for name, (kind_, low, high) in CHECK_NUMBERS.items():
        if name in check.options:
            value = _numeric_text(check.options[name])
            read_number({name: value}, name, kind_, None, low, high, report, f"{key}.{name}")
    return check


# Numeric options any check kind may be given (the health checker reads them).
CHECK_NUMBERS = {"fastinter": (float, 0.05, 3600), "downinter": (float, 0.05, 3600),
                 "port": (int, 1, 65535)}


def _numeric_text(value):
    """``--check-option fastinter=0.5`` writes a string: judge the number it spells."""
    if not isinstance(value, str):
        return value
    with contextlib.suppress(ValueError):
        return int(value)
    with contextlib.suppress(ValueError):
        return float(value)
    return value


def _is_endpoint(value: str) -> bool:
    host, _, port = value.rpartition(":")
    return _is_ip(host.strip("[]")) and port.isdigit() and 0 < int(port) < 65536


class _Locator:
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


# -------------------------------------------------------------- load/edit


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


def load_cluster(path: str | os.PathLike, pm) -> Cluster:
    """Read, validate and complete a definition (plugins add their sync sets)."""
    return build_cluster(read_definition(path), str(path), pm)


def build_cluster(text: str, path: str, pm) -> Cluster:
    """Parse and validate ``text``, add the plugins' sync sets and check them with the rest."""
    cluster = parse_cluster(text, path, registry_of(pm))
    extra = [s for sets in pm.hook.clusterkit_sync_sets(cluster=cluster) for s in sets or ()]
    if not extra:
        return cluster
    problems: list[Problem] = []
    locate = _Locator(text)
    sets = list(cluster.sync_sets) + extra
    _check_sync_sets(sets, len(cluster.sync_sets), cluster.state_dir, cluster.hosts,
                     lambda key, msg: problems.append(Problem(key, msg, locate(key))))
    if problems:
        raise ConfigError(path, problems)
    return Cluster(**{**cluster.__dict__, "sync_sets": tuple(sets)})


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
        names = [raw["manager"]["name"]] + [n.get("name") for n in raw.get("node", [])]
    except (tomllib.TOMLDecodeError, ValueError, RecursionError, KeyError, TypeError,
            AttributeError) as exc:
        raise ConfigError(str(path), [Problem("", f"cannot find the daemon's state: {exc}")]) from None
    name = host or names[0]
    if name not in names or name_problem(name) or not isinstance(state_dir, str):
        raise ConfigError(str(path), [Problem("", f"no host named {_shown(name)} "
                                                  f"(hosts: {', '.join(map(str, names))})")])
    return os.path.join(state_dir, name)


def registry_of(pm):
    """The plugin manager's kinds (:attr:`clusterkit.plugins.ClusterkitPluginManager.registry`)."""
    return pm.registry


@contextlib.contextmanager
def edit_config(path: str | os.PathLike, pm, create: bool = False) -> Iterator[tomlkit.TOMLDocument]:
    """Edit the definition under a lock; the result is validated before it replaces the file.

    Yields a tomlkit document (comments and layout survive). On a clean exit
    the new text is parsed and validated; a :class:`ConfigError` leaves the
    file untouched. The write is a temp file + fsync + rename.
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
        yield doc
        text = tomlkit.dumps(doc)
        build_cluster(text, str(path), pm)
        write_atomic(path, text, DEFINITION_MODE)


def private_dir(path: str | os.PathLike) -> None:
    """Make ``path`` a directory only its owner can enter, whoever created it first.

    (``os.makedirs(..., mode=0o700)`` gives the mode only to the last component,
    and nothing to a directory that exists: a plugin making ``state/host/pki``
    first leaves ``state/host`` with the umask's 0755.)
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def write_atomic(path: str | os.PathLike, data: str | bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so readers see the old file or the new, never half.

    The temp file is created with ``mode`` from the start, so a secret written
    with 0600 is never readable by others, not even for a moment.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
