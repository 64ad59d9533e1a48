"""The cluster definition's model: frozen dataclasses, built from the TOML file.

:func:`build_cluster` reads the core tables (``[cluster]``, ``[manager]``,
``[[standby]]``, ``[[node]]``, ``[[policy]]``, ``[[sync]]``) through the declared table reader
(:mod:`clusterkit.definition.tables`), hands every plugin its section and
collects *every* problem, each with the file, the key path, the line and what
is wrong, so an operator fixes a broken file in one pass. Reading the file is
:mod:`clusterkit.definition.source`; editing it :mod:`clusterkit.definition.edits`.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field

from clusterkit.definition.source import read_definition
from clusterkit.definition.tables import ConfigError, Key, Locator, Problem, Table, Tables, read
from clusterkit.definition.values import (absolute_problem, check_number, endpoint, inside, ip_problem, is_ip,
                                          name_problem, norm, read_number, shown, sync_path_problem)

SCHEDULERS = ("rr", "wrr", "lc", "wlc", "sh")
PROXY_PROTOCOLS = ("", "v1", "v2")
FORWARDS = ("dr", "nat", "tun")  # a kernel engine's forwarding method (EngineKind.forwards)
ROLES = ("manager", "standby", "node")
CORE_SECTIONS = ("cluster", "manager", "standby", "node", "policy", "sync")
PRIORITY = {"manager": 254, "standby": 250}  # VRRP priorities unless set: high, so that the
# master-down skew, (256 - priority) / 256 of an advert, is ~0 (docs/high-availability.md)
WEEK = 7 * 86400


# ------------------------------------------------------------------- model


@dataclass(frozen=True)
class Host:
    """The manager, a standby manager or a node. ``root`` is the directory standing for the
    host's ``/``; ``priority`` is a manager's or standby's VRRP priority (docs/high-availability.md)."""

    name: str
    ip: str
    role: str
    transport: str = "local"
    root: str = "/"
    public_ips: tuple[str, ...] = ()
    options: dict = field(default_factory=dict, compare=True, hash=False)
    priority: int = 0

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
    engine: str = "native"  # which load-balancing engine realises it (clusterkit.engines)
    fallback: str = ""
    forward: str = ""  # a kernel engine's forwarding method, "" for the engine's own default
    max_conn: int = 0
    member_max_conn: int = 0
    connect_timeout: float = 1.0
    idle_timeout: float = 300.0
    client_timeout: float = 300.0  # idle_timeout unless set: per side, HAProxy's meanings
    server_timeout: float = 300.0
    options: dict = field(default_factory=dict, hash=False)

    @property
    def key(self) -> str:
        """``vip:port``, an IPv6 address in brackets as URLs write it (``[fd00::100]:80``)."""
        return endpoint(self.vip, self.port)


@dataclass(frozen=True)
class SyncSet:
    """A directory replicated from the manager to every node."""

    name: str
    path: str
    exclude: tuple[str, ...] = ()
    on_change: str = ""
    owner: str = "config"
    allow_mass_delete: bool = False  # a full sync may delete most of a node's copy
    roles: tuple[str, ...] = ()  # the replicas' roles it goes to ("standby",); empty: every replica
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

    @property
    def standbys(self) -> list[Host]:
        """The standby managers: they receive what the nodes do and take over the addresses."""
        return [h for h in self.hosts.values() if h.role == "standby"]

    @property
    def replicas(self) -> list[Host]:
        """Where the manager replicates to: the standbys first, then the nodes."""
        return self.standbys + self.nodes

    def host(self, name: str) -> Host:
        if name not in self.hosts:
            raise ConfigError(self.path, [Problem("", f"no host named {name!r} (hosts: "
                                                  f"{', '.join(self.hosts)})")])
        return self.hosts[name]

    def host_state_dir(self, name: str) -> str:
        """Each host keeps its own state (several hosts may share a machine in tests)."""
        return os.path.join(self.state_dir, name)

    def sets_for(self, host: Host) -> tuple[SyncSet, ...]:
        """The sync sets that replicate to ``host`` (a built-in set may go to standbys only)."""
        return tuple(s for s in self.sync_sets if not s.roles or host.role in s.roles)

    def policy(self, vip: str, port: int) -> Policy | None:
        return next((p for p in self.policies if p.vip == vip and p.port == port), None)


# ------------------------------------------------------------ core tables

CLUSTER = Table({"name": Key(str, required=True),
                 "state_dir": Key(str, default="/var/lib/clusterkit")})
NODE = Table({"name": Key(str, required=True, check=name_problem),
              "ip": Key(str, required=True, check=ip_problem),
              "transport": Key(str, default="local"),
              "root": Key(str, default="/", check=absolute_problem),
              "options": Key(dict, default={})})
MANAGER = Table({**NODE.keys, "public_ips": Key(list, items=str, default=(), check=ip_problem),
                 "engine": Key(str, default="native"),  # the policies' engine unless they name one
                 "priority": Key(int, default=PRIORITY["manager"], low=1, high=254)})
STANDBY = Table({**NODE.keys, "priority": Key(int, default=PRIORITY["standby"], low=1, high=254)})
CHECK = Table({"kind": Key(str), "inter": Key(float, default=2.0, low=0.05, high=3600),
               "timeout": Key(float, default=1.0, low=0.01, high=600),
               "rise": Key(int, default=2, low=1, high=100), "fall": Key(int, default=3, low=1, high=100),
               "slowstart": Key(float, default=0.0, low=0, high=3600)},
              extra=True)  # the other keys are the check kind's own options
POLICY = Table({
    "vip": Key(str, required=True, check=ip_problem),
    "port": Key(int, required=True, low=1, high=65535),
    "service": Key(str, required=True),
    "scheduler": Key(str, default="wrr", choices=SCHEDULERS),
    "persistence": Key(int, low=0, high=WEEK),
    "members": Key(dict, default={}, required="at least one member"),
    "backend_port": Key(int, low=1, high=65535),
    "proxy_protocol": Key(str, default="", choices=PROXY_PROTOCOLS),
    "fallback": Key(str, default=""),
    "max_conn": Key(int, default=0, low=0, high=1_000_000),
    "member_max_conn": Key(int, default=0, low=0, high=1_000_000),
    "connect_timeout": Key(float, default=1.0, low=0.01, high=60),
    "idle_timeout": Key(float, default=300.0, low=0.1, high=WEEK),
    "client_timeout": Key(float, low=0.1, high=WEEK),  # idle_timeout unless set
    "server_timeout": Key(float, low=0.1, high=WEEK),
    "check": CHECK,
    "engine": Key(str),  # the manager's engine unless set
    "forward": Key(str, default="", choices=FORWARDS),
    "options": Key(dict, default={}),
})
SYNC = Table({"name": Key(str, required=True, check=name_problem), "path": Key(str, required=True),
              "exclude": Key(list, items=str, default=()), "on_change": Key(str, default=""),
              "allow_mass_delete": Key(bool, default=False)})
TOP = Table({"cluster": CLUSTER, "manager": MANAGER, "standby": Tables(STANDBY), "node": Tables(NODE), "policy": Tables(POLICY),
             "sync": Tables(SYNC)}, extra=True)  # the other tables are plugins' sections
# Numeric options any check kind may be given (the health checker reads them).
CHECK_NUMBERS = {"fastinter": (float, 0.05, 3600), "downinter": (float, 0.05, 3600),
                 "port": (int, 1, 65535)}


def parse_cluster(text: str, path: str, registry) -> Cluster:
    """Parse and validate a definition; raise :class:`ConfigError` with every problem."""
    problems: list[Problem] = []
    locate = Locator(text)

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

    top = read(raw, TOP, report)
    state_dir = top["cluster"]["state_dir"]
    hosts: dict[str, Host] = {}
    ip_owner: dict[str, str] = {}
    if "manager" not in raw:
        report("manager", "is required: the manager's name and ip")
    entries = [("manager", top["manager"], "manager")]
    entries += [(f"standby[{i}]", item, "standby") for i, item in enumerate(top["standby"])]
    entries += [(f"node[{i}]", item, "node") for i, item in enumerate(top["node"])]
    for key, values, role in entries:
        host = _host(values, key, role, registry, report)
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
    engine = top["manager"]["engine"]
    if registry.engines and engine not in registry.engines and "engine" in raw.get("manager", {}):
        report("manager.engine", f"unknown engine {engine!r} (known: {', '.join(sorted(registry.engines))})")
    for i, values in enumerate(top["policy"]):
        policy = _policy({"engine": engine, **values}, f"policy[{i}]", hosts, manager, registry, report)
        if any(p.key == policy.key for p in policies):
            report(f"policy[{i}]", f"a policy for {policy.key} already exists")
        policies.append(policy)

    sync_sets: list[SyncSet] = []
    for i, values in enumerate(top["sync"]):
        sset = SyncSet(name=values.get("name", ""), path=values.get("path", ""),
                       exclude=values["exclude"], on_change=values["on_change"],
                       allow_mass_delete=values["allow_mass_delete"], key=f"sync[{i}].path")
        if sset.name and any(s.name == sset.name for s in sync_sets):
            report(f"sync[{i}].name", f"duplicate sync set {sset.name!r}")
        sync_sets.append(sset)
    _check_sync_sets(sync_sets, 0, state_dir, hosts, report)

    sections = {}
    for section, parse in registry.sections.items():
        sections[section] = parse(raw.get(section, {}), lambda key, msg, s=section: report(
            f"{s}{key}" if key.startswith("[") else f"{s}.{key}" if key else s, msg))
    _non_finite(raw, "", {p.key for p in problems}, report)
    for key in raw:
        if key not in CORE_SECTIONS and key not in registry.sections:
            report(key, "unknown section (no core table and no plugin claims it)")

    if problems:
        raise ConfigError(path, problems)
    return Cluster(name=top["cluster"].get("name", ""), state_dir=state_dir, hosts=hosts,
                   policies=tuple(policies), sync_sets=tuple(sync_sets), sections=sections,
                   path=path)


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
        if not s.path and s.owner == "config":
            continue  # reported as required
        problem = sync_path_problem(s.path)
        if problem:
            report(key, problem)
            continue
        here = norm(s.path)
        for host in hosts.values():
            local = norm(os.path.abspath(host.local_path(here)))
            own = norm(os.path.join(state_dir, host.name))
            if inside(local, own) or inside(own, local) or inside(state_dir, local):
                report(key, f"{shown(s.path)} is or holds {host.name}'s state directory "
                            f"({own}): a sync must never touch it")
                break
        for other in sets[:i]:
            if sync_path_problem(other.path):
                continue
            there = norm(other.path)
            if there == here:
                report(key, f"{shown(s.path)} is already the path of sync set {other.name!r}")
            elif inside(here, there) or inside(there, here):
                report(key, f"{shown(s.path)} overlaps sync set {other.name!r} ({other.path}): "
                            "one tree, one set")


def _host(values: dict, key: str, role: str, registry, report) -> Host:
    transport = values["transport"]
    if transport not in registry.transports:
        known = ", ".join(sorted(registry.transports)) or "none registered"
        report(f"{key}.transport", f"unknown transport {transport!r} (known: {known})")
    options = dict(values["options"])
    acts_as = "manager" if role == "standby" else role  # a standby is a manager in waiting
    for name, option in registry.host_options.items():  # the plugins' own options
        if acts_as in option.roles and name in options:
            read(options[name], option.key, report, f"{key}.options.{name}")
    if acts_as == "manager":
        from clusterkit.sync.replicator import Settings  # the replicator's own tunables

        Settings.from_options(options, lambda name, msg: report(f"{key}.options.{name}", msg))
    return Host(name=values.get("name", ""), ip=values.get("ip", ""), role=role,
                transport=transport, root=values["root"],
                public_ips=values.get("public_ips", ()), options=options,
                priority=values.get("priority", 0))


def _policy(values: dict, key: str, hosts: dict, manager, registry, report) -> Policy:
    vip, port, service_name = values.get("vip", ""), values.get("port"), values.get("service", "")
    service = registry.services.get(service_name)
    if service_name and service is None:
        known = ", ".join(sorted(registry.services)) or "none registered"
        report(f"{key}.service", f"unknown service {service_name!r} (known: {known})")
    if vip and manager and vip not in manager.public_ips and vip != manager.ip:
        report(f"{key}.vip", f"{vip} is not one of the manager's public_ips")
    members = []
    for node, weight in values["members"].items():
        mkey = f"{key}.members.{node}"
        if node not in hosts:
            report(mkey, f"unknown member {shown(node)} (no such node)")
        try:
            members.append(Member(node, check_number(weight, int, 0, 256)))
        except ValueError as exc:
            report(mkey, f"weight {exc}")
    fallback = values["fallback"]
    if fallback and not _is_endpoint(fallback) and fallback not in hosts:
        report(f"{key}.fallback", f"{fallback!r} must be IP:PORT or a host name")
    idle_timeout = values["idle_timeout"]
    policy = Policy(
        vip=vip, port=port, service=service_name, scheduler=values["scheduler"],
        persistence=values.get("persistence", service.persistence if service else 0),
        members=tuple(members), backend_port=values.get("backend_port", port),
        check=_check(values["check"], f"{key}.check", service.check if service else "tcp",
                     registry, report),
        proxy_protocol=values["proxy_protocol"], engine=values["engine"], fallback=fallback,
        forward=values["forward"],
        max_conn=values["max_conn"], member_max_conn=values["member_max_conn"],
        connect_timeout=values["connect_timeout"], idle_timeout=idle_timeout,
        client_timeout=values.get("client_timeout", idle_timeout),
        server_timeout=values.get("server_timeout", idle_timeout),
        options=dict(values["options"]),
    )
    if service is not None and service.check_options is not None:
        service.check_options(policy.options,
                              lambda name, msg: report(f"{key}.options.{name}", msg))
    _check_engine(policy, key, service, registry, report, hosts)
    return policy


def _check_engine(policy: Policy, key: str, service, registry, report, hosts: dict) -> None:
    """The policy's engine exists, runs here, and can carry it; else say which engines can."""
    engines = registry.engines
    if not engines:  # no engine plugin at all: nothing is balanced (the daemon says so)
        return
    kind = engines.get(policy.engine)
    if kind is None:
        report(f"{key}.engine", f"unknown engine {policy.engine!r} (known: {', '.join(sorted(engines))})")
        return
    where, refusal = kind.problem(policy, service, hosts) or ("engine", kind.unavailable())
    if refusal:
        able = [n for n, k in sorted(engines.items()) if not k.problem(policy, service, hosts)]
        report(f"{key}.{where}", f"{refusal} (engines that can carry this policy: "
                                f"{', '.join(able) or 'none'})")


def _check(values: dict, key: str, default_kind: str, registry, report) -> Check:
    kind = values.get("kind", default_kind)
    if kind not in registry.checks:
        known = ", ".join(sorted(registry.checks)) or "none registered"
        report(f"{key}.kind", f"unknown check {kind!r} (known: {known})")
    options = {k: v for k, v in values.items() if k not in CHECK.keys}
    for name, (kind_, low, high) in CHECK_NUMBERS.items():
        if name in options:
            value = _numeric_text(options[name])
            read_number({name: value}, name, kind_, None, low, high, report, f"{key}.{name}")
    return Check(kind=kind, inter=values["inter"], timeout=values["timeout"], rise=values["rise"],
                 fall=values["fall"], slowstart=values["slowstart"], options=options)


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
    return is_ip(host.strip("[]")) and port.isdigit() and 0 < int(port) < 65536


# ------------------------------------------------------------------ loading


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
    locate = Locator(text)
    sets = list(cluster.sync_sets) + extra
    _check_sync_sets(sets, len(cluster.sync_sets), cluster.state_dir, cluster.hosts,
                     lambda key, msg: problems.append(Problem(key, msg, locate(key))))
    if problems:
        raise ConfigError(path, problems)
    return Cluster(**{**cluster.__dict__, "sync_sets": tuple(sets)})


def registry_of(pm):
    """The plugin manager's kinds (:attr:`clusterkit.plugins.ClusterkitPluginManager.registry`)."""
    return pm.registry
