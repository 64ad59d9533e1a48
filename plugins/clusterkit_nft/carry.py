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

import clusterkit_nft  # its KIND (built from check_policy below): the policy's forward
from clusterkit.registry import forwarding_problem


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

    ``addresses``: this machine's interface addresses, for the check that a direct-routing
    member is on one of the manager's subnets (:func:`clusterkit.registry.off_segment`:
    read with ``ip -j addr`` when ``None``, and only where the manager's ip is one of them).
    """
    forward = clusterkit_nft.KIND.forward_of(policy)
    why = forwarding_problem(policy, "nft", forward, hosts, addresses=addresses)
    if not why and service is not None and service.handler is not None:
        why = _without_handler(policy, service, forward == "nat")
    return why


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


def requirements(policy) -> str:
    """What the network and the nodes must give, said by ``config check`` for each nft policy."""
    if clusterkit_nft.KIND.forward_of(policy) == "nat":
        return ("NAT: the nodes must route their replies to clients through the manager (their "
                "default route via the manager's address on their segment); the manager forwards "
                "(net.ipv4.ip_forward=1, set by the engine)")
    ftp = passive_range(policy)
    return ("direct routing: the members must be on the manager's L2 segment, serve the VIP's "
            "port, and run clusterkit's node daemon, which puts the VIP on their lo with "
            "arp_ignore=1/arp_announce=2"
            + (f"; the FTP servers on the nodes must announce the VIP in PASV replies and use "
               f"passive ports {ftp[0]}-{ftp[1]}" if ftp else ""))
