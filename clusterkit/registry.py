"""What plugins register: service, health check, transport and engine kinds, sections, host options.

The plugin manager calls the ``clusterkit_register_*`` hooks once and keeps the
result in a :class:`Registry`; everything else (config validation, the proxy,
the health checker, the replicator) looks kinds up here by name.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from clusterkit.definition.tables import UNSET, Key, Table, Tables, section_parser
from clusterkit.hookcalls import each_plugin


class CheckFailed(Exception):
    """Raised by a health check with the reason a target is unhealthy."""


@dataclass(frozen=True)
class ServiceKind:
    """A balanced service: ``http``, ``smtp``, ``ftp``...

    ``handler`` builds the proxy's per-connection protocol handler; ``None``
    means a plain byte relay in both directions. ``persistence`` is the
    default client-affinity time in seconds (https keeps TLS sessions warm).
    ``check_options(options, report)``, when set, validates a policy's
    ``options`` table at load time, calling ``report(key, message)`` per problem.
    """

    name: str
    ports: tuple[int, ...]
    check: str = "tcp"
    handler: Any = None
    persistence: int = 0
    description: str = ""
    check_options: Callable[[dict, Callable[[str, str], None]], None] | None = None


@dataclass(frozen=True)
class CheckTarget:
    """What one health check probes: a member's address and port, with options."""

    node: str
    address: str
    port: int
    timeout: float
    service: str
    options: dict = field(default_factory=dict)
    proxy_protocol: str = ""


@dataclass(frozen=True)
class CheckKind:
    """A health check: ``run(target)`` returns a short text or raises CheckFailed."""

    name: str
    run: Callable[[CheckTarget], Awaitable[str]]
    description: str = ""


@dataclass(frozen=True)
class TransportKind:
    """How rsync reaches a node.

    ``destination(node, path)`` is the rsync target for a directory path on the
    node; ``rsync_args(node, runtime=None)`` the extra arguments (``runtime``
    is the manager daemon's :class:`~clusterkit.runtime.Runtime`, where the
    transport keeps per-daemon state such as ssh master connections in
    ``runtime.components``; ``None`` outside a daemon, e.g. ``sync verify``);
    ``local_root(node)`` the directory that stands for the node's ``/`` on
    this machine, or ``None``; ``setup(node, cluster)`` what the operator must
    do on the node (authorise a key, install a daemon config), printed by
    ``clusterkit node add``; ``rename`` (optional) a coroutine
    ``rename(node, src, dst, runtime=None)`` that renames a path on the node
    cheaply and returns whether it did (the replicator then only has to
    compare, not copy, a renamed directory). ``lab_options(manager,
    name)`` gives the options ``node add`` writes for a node when it and the
    manager both have a ``root`` (several hosts on one machine) and the
    operator did not give them: the manager's files under the manager's root.
    """

    name: str
    destination: Callable[[Any, str], str]
    rsync_args: Callable[..., list[str]] = lambda node, runtime=None: []
    local_root: Callable[[Any], str | None] = lambda node: None
    setup: Callable[[Any, Any], str] = lambda node, cluster: ""
    rename: Callable[..., Awaitable[bool]] | None = None
    description: str = ""
    lab_options: Callable[[Any, str], dict] = lambda manager, name: {}


@dataclass(frozen=True)
class HostOption:
    """A key a plugin reads from hosts' ``options`` tables (``proxy_workers``...).

    ``key`` declares its value (:class:`clusterkit.definition.tables.Key`);
    it is checked on hosts whose role is in ``roles``. ``initial``: what
    ``clusterkit init`` writes into a new definition's manager, if anything.
    """

    name: str
    key: Key
    roles: tuple[str, ...] = ("manager", "node")
    initial: Any = UNSET


@dataclass(frozen=True)
class EngineKind:
    """A load-balancing engine: how policies become a running balancer.

    ``create(runtime)`` returns a :class:`clusterkit.contracts.LbEngine` that
    the manager hands the policies naming this engine. What it can carry:
    ``schedulers``, ``persistence`` (client affinity), ``proxy_protocols``
    (``""`` is none), ``handlers`` (whether it runs a service's protocol
    handler, as FTP's PASV/PORT rewriting needs) and ``forwards`` (a kernel
    engine's forwarding methods, a policy's ``forward``, the first one the
    default: :meth:`forward_of`; none for a proxy).
    ``check_policy(policy, service, hosts)``, when set, is asked first: the
    engine's own refusal as ``(key under the policy, message)``, or ``None``;
    for a service with a handler, ``None`` means the engine carries the
    policy without it (FTP in direct routing with persistence and the
    nodes' passive range). ``requirements(policy)``, when set, says what the
    engine needs from the network and the nodes for it (``config check``
    prints it). ``unavailable()`` says why it cannot run on this
    machine (a missing binary), or ``None``; it is asked only when a policy
    uses the engine.
    """

    name: str
    create: Callable[[Any], Any]
    schedulers: tuple[str, ...] = ("rr", "wrr", "lc", "wlc", "sh")
    persistence: bool = True
    proxy_protocols: tuple[str, ...] = ("", "v1", "v2")
    handlers: bool = False
    forwards: tuple[str, ...] = ()
    check_policy: Callable[[Any, Any, dict], tuple[str, str] | None] | None = None
    requirements: Callable[[Any], str] | None = None
    unavailable: Callable[[], str | None] = lambda: None
    description: str = ""

    def forward_of(self, policy) -> str:
        """The policy's effective forwarding method: its own ``forward``, else this engine's
        first declared one (``""`` for a proxy)."""
        return policy.forward or (self.forwards[0] if self.forwards else "")

    def problem(self, policy, service: ServiceKind | None,
                hosts: dict | None = None) -> tuple[str, str] | None:
        """Why this engine cannot carry ``policy``: ``(key under the policy, message)``, or ``None``."""
        if policy.forward and policy.forward not in self.forwards:
            how = f"forwards by {', '.join(self.forwards)} only" if self.forwards else "is a proxy"
            return "forward", f"engine {self.name!r} {how}: it has no forward = {policy.forward!r}"
        own = self.check_policy(policy, service, hosts or {}) if self.check_policy else None
        if own:
            return own
        if service is not None and service.handler is not None and not self.handlers \
                and self.check_policy is None:
            return "engine", (f"the {service.name} service needs its protocol handler, which "
                              f"engine {self.name!r} cannot run")
        if policy.scheduler not in self.schedulers:
            return "engine", f"engine {self.name!r} has no scheduler {policy.scheduler!r}"
        if policy.persistence and not self.persistence:
            return "engine", f"engine {self.name!r} cannot keep a client on one member (persistence)"
        if policy.proxy_protocol not in self.proxy_protocols:
            return "engine", f"engine {self.name!r} cannot send PROXY protocol {policy.proxy_protocol}"
        return None


#: A kernel engine's forwarding methods (``forward``) as messages name them.
FORWARD_NAMES = {"dr": "direct routing", "nat": "NAT", "tun": "IP-in-IP tunnelling"}


def forwarding_problem(policy, engine: str, forward: str, hosts: dict, member_limits: bool = False,
                       addresses: list[ipaddress.IPv4Interface] | None = None
                       ) -> tuple[str, str] | None:
    """What no kernel forwarding engine carries, as ``(key under the policy, message)``, or ``None``.

    For an engine's ``check_policy``: an IPv4 VIP only, no ``max_conn`` (nor
    ``member_max_conn`` unless the engine counts connections per member:
    ``member_limits``), no fallback (a proxy's), and in ``forward`` dr or tun
    the members serve the VIP's own port (the packet reaches them unchanged;
    only NAT rewrites it). In dr, checked where the definition is read on the
    manager, each member must be on one of its subnets (:func:`off_segment`).
    """
    try:
        if ipaddress.ip_address(policy.vip).version != 4:
            return "vip", f"the {engine} engine balances IPv4 VIPs only"
    except ValueError:
        return "vip", f"VIP {policy.vip!r} is not an IP address"
    if policy.max_conn or (policy.member_max_conn and not member_limits):
        if member_limits:
            return "max_conn", (f"the {engine} engine limits connections per member only "
                                "(member_max_conn): max_conn cannot be enforced")
        return ("max_conn" if policy.max_conn else "member_max_conn",
                f"the {engine} engine keeps no connection state: max_conn/member_max_conn "
                "cannot be enforced")
    if policy.fallback:
        return "fallback", f"the {engine} engine has no fallback: a fallback needs a proxy"
    if forward != "nat" and policy.backend_port != policy.port:
        return "backend_port", (
            f"{FORWARD_NAMES.get(forward, forward)} cannot change the port: the members must "
            f"serve {policy.port}, the VIP's port, not backend_port {policy.backend_port} "
            f"(forward = \"nat\", the {engine} engine's NAT mode, can)")
    if forward == "dr":
        return off_segment(policy, hosts, addresses)
    return None


def off_segment(policy, hosts: dict,
                addresses: list[ipaddress.IPv4Interface] | None = None) -> tuple[str, str] | None:
    """A member outside the manager's directly connected subnets: direct routing rewrites only
    the Ethernet addresses, so it cannot reach a node behind a router.

    ``addresses``: this machine's interface addresses (:func:`local_addresses` when ``None``);
    the check runs only where the manager's ip is one of them (elsewhere the manager's
    interfaces are not known).
    """
    manager = next((h for h in hosts.values() if h.role == "manager"), None)
    if manager is None:
        return None
    if addresses is None:
        addresses = local_addresses()
    if not any(str(a.ip) == manager.ip for a in addresses):
        return None
    subnets = [a.network for a in addresses if not a.ip.is_loopback]
    for member in policy.members:
        host = hosts.get(member.node)
        if host is None:
            continue
        try:
            ip = ipaddress.ip_address(host.ip)
        except ValueError:
            continue
        if not any(ip in net for net in subnets):
            shown = ", ".join(str(n) for n in subnets) or "none"
            return f"members.{member.node}", (
                f"{member.node} ({host.ip}) is not on a subnet of the manager's interfaces "
                f"({shown}): direct routing needs the node on the manager's L2 segment "
                "(forward = \"nat\" for nodes behind a router)")
    return None


_ADDRESSES: tuple[float, list] = (0.0, [])
ADDRESSES_TTL = 2.0


def local_addresses() -> list[ipaddress.IPv4Interface]:
    """This machine's IPv4 interface addresses (``ip -j addr``), read at most every 2 s."""
    global _ADDRESSES
    at, cached = _ADDRESSES
    if time.monotonic() - at < ADDRESSES_TTL:
        return cached
    try:
        done = subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True,
                              timeout=2)
        links = json.loads(done.stdout or "[]") if done.returncode == 0 else []
    except (OSError, ValueError, subprocess.TimeoutExpired):
        links = []
    found = []
    for link in links if isinstance(links, list) else []:
        infos = link.get("addr_info") if isinstance(link, dict) else None
        for a in infos if isinstance(infos, list) else []:
            try:
                found.append(ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}"))
            except (TypeError, KeyError, ValueError):
                continue
    _ADDRESSES = (time.monotonic(), found)
    return found


class RegistryError(Exception):
    """A kind was registered twice or is malformed."""


@dataclass
class Registry:
    """Kinds by name, filled by the ``clusterkit_register_*`` hooks."""

    services: dict[str, ServiceKind] = field(default_factory=dict)
    checks: dict[str, CheckKind] = field(default_factory=dict)
    transports: dict[str, TransportKind] = field(default_factory=dict)
    sections: dict[str, Callable] = field(default_factory=dict)
    host_options: dict[str, HostOption] = field(default_factory=dict)
    engines: dict[str, EngineKind] = field(default_factory=dict)

    @classmethod
    def collect(cls, pm) -> "Registry":
        """Call the ``clusterkit_register_*`` and ``clusterkit_config_sections`` hooks plugin by
        plugin, so that a name claimed twice is an error naming both plugins."""
        reg = cls()
        for hookname, table, kind in (
            ("clusterkit_register_services", reg.services, ServiceKind),
            ("clusterkit_register_health_checks", reg.checks, CheckKind),
            ("clusterkit_register_transports", reg.transports, TransportKind),
            ("clusterkit_register_engines", reg.engines, EngineKind),
        ):
            owners: dict[str, str] = {}
            for plugin, call in each_plugin(pm, hookname):
                call(register=_registrar(table, kind, hookname, plugin, owners))
        owners = {}
        for plugin, call in each_plugin(pm, "clusterkit_config_sections"):
            call(register=_section_registrar(reg.sections, plugin, owners))
        owners = {}
        for plugin, call in each_plugin(pm, "clusterkit_host_options"):
            call(register=_option_registrar(reg.host_options, plugin, owners))
        return reg


def _claim(owners: dict[str, str], name: str, plugin: str, what: str) -> None:
    if name in owners:
        raise RegistryError(f"{what} registered twice: by plugin {owners[name]!r} "
                            f"and by plugin {plugin!r}")
    owners[name] = plugin


def _registrar(table: dict, kind: type, hookname: str, plugin: str,
               owners: dict[str, str]) -> Callable:
    def register(item) -> None:
        if not isinstance(item, kind):
            raise RegistryError(f"{hookname}: plugin {plugin!r}: expected {kind.__name__}, "
                                f"got {item!r}")
        _claim(owners, item.name, plugin, f"{hookname}: {kind.__name__} {item.name!r}")
        table[item.name] = item

    return register


def _section_registrar(sections: dict, plugin: str, owners: dict[str, str]) -> Callable:
    def register(name: str, parse: Callable, shape: Table | Tables | None = None) -> None:
        _claim(owners, name, plugin, f"config section [{name}]")
        sections[name] = section_parser(parse, shape)

    return register


def _option_registrar(options: dict, plugin: str, owners: dict[str, str]) -> Callable:
    def register(name: str, key: Key, roles=("manager", "node"), initial=UNSET) -> None:
        _claim(owners, name, plugin, f"host option {name!r}")
        options[name] = HostOption(name, key, tuple(roles), initial)

    return register
