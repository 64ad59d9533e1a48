"""What plugins register: service, health check and transport kinds, sections and host options.

The plugin manager calls the ``clusterkit_register_*`` hooks once and keeps the
result in a :class:`Registry`; everything else (config validation, the proxy,
the health checker, the replicator) looks kinds up here by name.
"""

from __future__ import annotations

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
    def collect(cls, pm) -> "Registry":
        """Call the ``clusterkit_register_*`` and ``clusterkit_config_sections`` hooks plugin by
        plugin, so that a name claimed twice is an error naming both plugins."""
        reg = cls()
        for hookname, table, kind in (
            ("clusterkit_register_services", reg.services, ServiceKind),
            ("clusterkit_register_health_checks", reg.checks, CheckKind),
            ("clusterkit_register_transports", reg.transports, TransportKind),
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
