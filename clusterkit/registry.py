"""What plugins register: service, health check and transport kinds, sections and host options.

The plugin manager calls the ``clusterkit_register_*`` hooks once and keeps the
result in a :class:`Registry`; everything else (config validation, the proxy,
the health checker, the replicator) looks kinds up here by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from clusterkit.definition.tables import UNSET, Key, Table, Tables, section_parser


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
    node; ``rsync_args(node)`` the extra arguments; ``local_root(node)`` the
    directory that stands for the node's ``/`` on this machine, or ``None``;
    ``setup(node, cluster)`` what the operator must do on the node (authorise
    a key, install a daemon config), printed by ``clusterkit node add``;
    ``rename`` (optional) a coroutine ``rename(node, src, dst)`` that renames a
    path on the node cheaply and returns whether it did (the replicator then
    only has to compare, not copy, a renamed directory).
    """

    name: str
    destination: Callable[[Any, str], str]
    rsync_args: Callable[[Any], list[str]] = lambda node: []
    local_root: Callable[[Any], str | None] = lambda node: None
    setup: Callable[[Any, Any], str] = lambda node, cluster: ""
    rename: Callable[[Any, str, str], Awaitable[bool]] | None = None
    description: str = ""


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

    @classmethod
    def collect(cls, hook) -> "Registry":
        reg = cls()
        for hookname, table, kind in (
            ("clusterkit_register_services", reg.services, ServiceKind),
            ("clusterkit_register_health_checks", reg.checks, CheckKind),
            ("clusterkit_register_transports", reg.transports, TransportKind),
        ):
            getattr(hook, hookname)(register=_registrar(table, kind, hookname))

        def add_section(name: str, parse: Callable, shape: Table | Tables | None = None) -> None:
            if name in reg.sections:
                raise RegistryError(f"config section [{name}] is claimed twice")
            reg.sections[name] = section_parser(parse, shape)

        def add_host_option(name: str, key: Key, roles=("manager", "node"), initial=UNSET) -> None:
            if name in reg.host_options:
                raise RegistryError(f"host option {name!r} is declared twice")
            reg.host_options[name] = HostOption(name, key, tuple(roles), initial)

        hook.clusterkit_config_sections(register=add_section)
        hook.clusterkit_host_options(register=add_host_option)
        return reg


def _registrar(table: dict, kind: type, hookname: str) -> Callable:
    def register(item) -> None:
        if not isinstance(item, kind):
            raise RegistryError(f"{hookname}: expected {kind.__name__}, got {item!r}")
        if item.name in table:
            raise RegistryError(f"{hookname}: {kind.__name__} {item.name!r} registered twice")
        table[item.name] = item

    return register
