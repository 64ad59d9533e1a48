"""What the nft engine can carry, and what direct routing asks of the network.

:func:`check_policy` is the engine kind's ``check_policy``: ``clusterkit
config check`` (and every daemon loading the definition) reports its answer
as ``FILE:LINE: policy[i].KEY: message (engines that can carry this
policy: ...)``, and the engine's ``apply`` leaves out a policy it refuses.

Direct routing (``forward = "dr"``, the default) rewrites only the Ethernet
addresses: the members must be on the manager's own L2 segment (on the
manager, a member's address must be in a subnet of one of its interfaces),
serve the VIP's own port, and run clusterkit's node daemon, which puts the
VIP on their ``lo``. NAT (``forward = "nat"``) has none of these needs: the
nodes only route their replies through the manager.

FTP needs no protocol handler in direct routing when the client address
alone picks the member (``persistence``, or ``sh``: control and data
connections then reach the same node) and the nodes' passive port range is
declared (``options.passive_ports``): the nodes announce the VIP in their
``PASV`` replies and the engine forwards that range like the control port.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time

from clusterkit.registry import forwarding_problem

_ADDRESSES: tuple[float, list] = (0.0, [])
ADDRESSES_TTL = 2.0


def forward_of(policy) -> str:
    """``"dr"`` or ``"nat"``: the policy's forwarding method (direct routing unless set)."""
    return policy.forward or "dr"


def by_client(policy) -> bool:
    """The client address alone picks the member (``sh``, persistence)."""
    return policy.scheduler == "sh" or policy.persistence > 0


def passive_range(policy) -> tuple[int, int] | None:
    """An FTP policy's declared ``options.passive_ports`` as (first, last), else ``None``."""
    if policy.service != "ftp" or "passive_ports" not in policy.options:
        return None
    from clusterkit_ftp.options import parse_range  # the ftp plugin's own reading of the key

    try:
        ports = parse_range(policy.options["passive_ports"])
    except ValueError:
        return None  # the ftp plugin reports it
    return ports.start, ports.stop - 1


def check_policy(policy, service, hosts: dict,
                 addresses: list[ipaddress.IPv4Interface] | None = None) -> tuple[str, str] | None:
    """Why the nft engine cannot carry ``policy``, as (key under the policy, message), or ``None``.

    ``addresses``: this machine's interface addresses (read with ``ip -j addr`` when
    ``None``); the segment check runs only where the manager's ip is one of them.
    """
    why = forwarding_problem(policy, "nft", forward_of(policy))
    nat = forward_of(policy) == "nat"
    if not why and service is not None and service.handler is not None:
        why = _without_handler(policy, service, nat)
    if why or nat:
        return why
    return _off_segment(policy, hosts, addresses)


def _without_handler(policy, service, nat: bool) -> tuple[str, str] | None:
    if service.name != "ftp":
        return "engine", (f"the {service.name} service needs its protocol handler, which engine "
                          "'nft' cannot run")
    if nat:
        return "forward", ("FTP through the nft engine needs direct routing (forward = \"dr\"): "
                           "NAT mode would need the PASV rewriting of a protocol handler")
    if not by_client(policy):
        return "persistence", ("FTP through direct routing needs persistence (or scheduler "
                               "\"sh\"): the client address alone must pick the node, so that "
                               "its data connections reach the node of its control connection")
    if passive_range(policy) is None:
        return "options.passive_ports", (
            "FTP through direct routing needs the nodes' passive port range declared "
            "(options.passive_ports = \"30000-30100\", the range the FTP servers on the nodes "
            "use, with the VIP as the address they announce): the engine forwards it too")
    return None


def _off_segment(policy, hosts: dict, addresses) -> tuple[str, str] | None:
    """A member outside the manager's connected subnets, checked on the manager only."""
    manager = next((h for h in hosts.values() if h.role == "manager"), None)
    if manager is None:
        return None
    if addresses is None:
        addresses = local_addresses()
    if not any(str(a.ip) == manager.ip for a in addresses):
        return None  # not the manager: its interfaces are not known here
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
        for a in link.get("addr_info", []) if isinstance(link, dict) else []:
            try:
                found.append(ipaddress.IPv4Interface(f"{a.get('local')}/{a.get('prefixlen')}"))
            except ValueError:
                continue
    _ADDRESSES = (time.monotonic(), found)
    return found


def requirements(policy) -> str:
    """What the network and the nodes must give, said by ``config check`` for each nft policy."""
    if forward_of(policy) == "nat":
        return ("NAT: the nodes must route their replies to clients through the manager (their "
                "default route via the manager's address on their segment); the manager forwards "
                "(net.ipv4.ip_forward=1, set by the engine)")
    ftp = passive_range(policy)
    return ("direct routing: the members must be on the manager's L2 segment, serve the VIP's "
            "port, and run clusterkit's node daemon, which puts the VIP on their lo with "
            "arp_ignore=1/arp_announce=2"
            + (f"; the FTP servers on the nodes must announce the VIP in PASV replies and use "
               f"passive ports {ftp[0]}-{ftp[1]}" if ftp else ""))
