"""``haproxy.cfg`` from the policies: one ``listen`` section per policy, named by its key.

Scheduler mapping (clusterkit's IPVS names to HAProxy's ``balance``):

``rr``   ``static-rr``, every member weight 1 (weights only say in or out, as in IPVS);
``wrr``  ``roundrobin`` with the members' weights (dynamic: slow start scales them);
``lc``   ``leastconn``, every member weight 1 (fewest active connections);
``wlc``  ``leastconn`` with the members' weights (HAProxy's leastconn is weighted);
``sh``   ``source`` with ``hash-type consistent`` (adding or removing a member only moves
         the clients it had, like clusterkit's rendezvous hash).

``persistence`` is a stick table on the client address with that expiry;
``proxy_protocol`` is ``send-proxy``/``send-proxy-v2`` on every server; the
policy's timeouts, ``max_conn`` and ``member_max_conn`` become ``timeout
connect|client|server`` and ``maxconn``. HAProxy's own health checks are
never enabled: health is clusterkit's state machine, pushed through the
Runtime API. A member down or in maintenance is written ``disabled`` so a
restarted HAProxy never sends it a connection before the states are pushed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BALANCE = {"rr": ("static-rr", False), "wrr": ("roundrobin", True), "lc": ("leastconn", False),
           "wlc": ("leastconn", True), "sh": ("source", True)}  # name -> (algorithm, weighted)
FALLBACK = "_fallback"   # server name of policy.fallback (node names start with a letter or digit)
STICK_SIZE = "1m"        # client addresses a persistence table holds
MAX_RETRIES = 8

# What this engine can carry; the core matches policies against it.
SUPPORTS = {
    "services": "relay",              # plain byte relays only: no protocol handler (FTP PASV...)
    "handlers": frozenset(),
    "schedulers": frozenset(BALANCE),
    "persistence": True,
    "proxy_protocol": frozenset({"", "v1", "v2"}),
    "fallback": True,
    "max_conn": True,
    "member_max_conn": True,
}


def cannot_carry(policy, registry=None) -> str | None:
    """Why HAProxy cannot carry ``policy``, or ``None`` when it can."""
    kind = registry.services.get(policy.service) if registry is not None else None
    if kind is not None and kind.handler is not None:
        return (f"service {policy.service!r} needs clusterkit's protocol handler "
                f"({getattr(kind.handler, '__name__', 'handler')}); HAProxy only relays bytes")
    if policy.scheduler not in BALANCE:
        return f"scheduler {policy.scheduler!r} has no HAProxy algorithm (known: {', '.join(BALANCE)})"
    if policy.proxy_protocol not in SUPPORTS["proxy_protocol"]:
        return f"PROXY protocol {policy.proxy_protocol!r} is not v1 or v2"
    return None


def base_weight(policy, weight: int) -> int:
    """The configured HAProxy weight of a member: its own, or 1/0 for unweighted schedulers."""
    return weight if BALANCE[policy.scheduler][1] else int(weight > 0)


def runtime_weight(base: int, factor: float) -> int:
    """Weight during slow start: scaled, at least 1 while the factor is above 0 (0 takes nothing)."""
    if base <= 0 or factor <= 0:
        return 0
    return max(1, min(base, round(base * factor)))


def address(ip: str, port: int) -> str:
    return f"ipv6@{ip}:{port}" if ":" in ip else f"ipv4@{ip}:{port}"


def millis(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


@dataclass
class Server:
    name: str          # HAProxy's server name: the node, or FALLBACK
    node: str          # the stats key: the node, or "fallback"
    ip: str
    port: int
    id: int
    weight: int
    backup: bool = False


@dataclass
class Rendered:
    """The config text and what the engine needs to drive it."""

    text: str
    servers: dict = field(default_factory=dict)   # policy key -> {stats node: Server}
    lines: list = field(default_factory=list)     # (first line, last line, policy key)

    def policy_at(self, line: int) -> str | None:
        return next((key for first, last, key in self.lines if first <= line <= last), None)


def servers_of(policy, cluster, ids) -> dict[str, Server]:
    """The servers of a policy by stats name. ``ids(node)`` gives a stable server id.

    The manager as a weight-0 member, without ``fallback``, is a backup server
    (the native proxy uses it when no member can take a connection).
    """
    manager = cluster.manager.name
    servers = {}
    for spec in policy.members:
        backup = spec.weight == 0 and spec.node == manager and not policy.fallback
        weight = 1 if backup else base_weight(policy, spec.weight)
        servers[spec.node] = Server(spec.node, spec.node, cluster.hosts[spec.node].ip,
                                    policy.backend_port, ids(spec.node), weight, backup)
    if policy.fallback:
        if policy.fallback in cluster.hosts:
            ip, port = cluster.hosts[policy.fallback].ip, policy.backend_port
        else:
            host, _, port = policy.fallback.rpartition(":")
            ip, port = host.strip("[]"), int(port)
        servers["fallback"] = Server(FALLBACK, "fallback", ip, port, ids(FALLBACK), 1, True)
    return servers


def render(policies, cluster, directory: str, states: dict, ids) -> Rendered:
    """The whole ``haproxy.cfg`` for ``policies``; ``states[(key, node)] = (state, factor)``.

    ``directory`` holds the sockets and the server-state file (absolute paths).
    """
    out = [
        "# Written by clusterkit from the cluster definition: edits are overwritten.",
        "global",
        f"  stats socket {directory}/admin.sock mode 600 level admin expose-fd listeners",
        f"  server-state-file {directory}/servers.state",
        "  stats timeout 10s",
        "",
        "defaults",
        "  mode tcp",
        "  load-server-state-from-file global",
        "  option redispatch 1",
        "",
    ]
    rendered = Rendered("")
    for policy in policies:
        first = len(out) + 1
        servers = servers_of(policy, cluster, lambda node, k=policy.key: ids(k, node))
        rendered.servers[policy.key] = servers
        algorithm = BALANCE[policy.scheduler][0]
        out += [f"listen {policy.key}",
                f"  bind {address(policy.vip, policy.port)}",
                f"  balance {algorithm}"]
        if policy.scheduler == "sh":
            out.append("  hash-type consistent")
        if policy.max_conn:
            out.append(f"  maxconn {policy.max_conn}")
        out += [f"  timeout connect {millis(policy.connect_timeout)}",
                f"  timeout queue {millis(policy.connect_timeout)}",
                f"  timeout client {millis(policy.client_timeout)}",
                f"  timeout server {millis(policy.server_timeout)}",
                f"  retries {min(MAX_RETRIES, max(1, len(servers)))}"]
        if policy.persistence:
            kind = "ipv6" if ":" in policy.vip else "ip"
            out += [f"  stick-table type {kind} size {STICK_SIZE} expire {policy.persistence}s",
                    "  stick on src"]
        for server in servers.values():
            line = (f"  server {server.name} {address(server.ip, server.port)} id {server.id}"
                    f" weight {server.weight}")
            if policy.member_max_conn and server.name != FALLBACK:
                line += f" maxconn {policy.member_max_conn}"
            if policy.proxy_protocol:
                line += " send-proxy" if policy.proxy_protocol == "v1" else " send-proxy-v2"
            if server.backup:
                line += " backup"
            if states.get((policy.key, server.node), ("up", 1.0))[0] in ("down", "maintenance"):
                line += " disabled"
            out.append(line)
        rendered.lines.append((first, len(out), policy.key))
        out.append("")
    rendered.text = "\n".join(out) + "\n"
    return rendered
