"""What IPVS can carry, and what each forwarding method asks of the network.

:func:`check_policy` is the engine kind's ``check_policy``: ``clusterkit
config check`` (and every daemon loading the definition) reports its answer
as ``FILE:LINE: policy[i].KEY: message (engines that can carry this
policy: ...)``, so the engine only ever gets policies it can program; what
the kernel itself refuses is known at apply time (the engine leaves that
policy out and says why).

The refusals every kernel engine shares (an IPv4 VIP, no ``max_conn`` nor
fallback, the VIP's own port in DR and TUN, and in DR, judged on the
manager, every member on one of its directly connected subnets) are the core's
:func:`clusterkit.registry.forwarding_problem` (for IPVS, IPv4 because
pyroute2's ``IPVSService`` sends no netmask for an IPv6 one); IPVS enforces
``member_max_conn`` (ipvsadm ``-x``). A service needing its protocol handler
(FTP) is refused: IPVS does not rewrite ``PASV`` replies.
"""

from __future__ import annotations

import ipaddress

import clusterkit_ipvs  # its KIND (built from check_policy below): the policy's forward
from clusterkit.registry import forwarding_problem


def check_policy(policy, service, hosts: dict,
                 addresses: list[ipaddress.IPv4Interface] | None = None) -> tuple[str, str] | None:
    """Why IPVS cannot carry ``policy``, as (key under the policy, message), or ``None``.

    ``addresses``: this machine's interface addresses, for the check that a direct-routing
    member is on one of the manager's subnets (:func:`clusterkit.registry.off_segment`).
    """
    why = forwarding_problem(policy, "ipvs", clusterkit_ipvs.KIND.forward_of(policy), hosts,
                             member_limits=True, addresses=addresses)
    if why is None and service is not None and service.handler is not None:
        why = "engine", (f"the {service.name} service needs its protocol handler, which IPVS "
                         "does not run")
        if service.name == "ftp":
            why = "engine", (
                f"{why[1]} (FTP's PASV/PORT rewriting); the LVS way (persistence on a firewall "
                "mark covering port 21 and the nodes' passive range) is not programmed by "
                "clusterkit: use the native engine, or nft's direct routing, for FTP")
    return why


def requirements(policy) -> str:
    """What the network and the nodes must give, said by ``config check`` for each ipvs policy."""
    forward = clusterkit_ipvs.KIND.forward_of(policy)
    if forward == "nat":
        return ("NAT (ipvsadm -m): the nodes must route their replies to clients through the "
                "manager (their default route via the manager's address on their segment); the "
                "manager must forward (net.ipv4.ip_forward=1, the operator's part)")
    lo = ("run clusterkit's node daemon, which puts the VIP on their lo with "
          "arp_ignore=1/arp_announce=2")
    if forward == "tun":
        return (f"IP-in-IP (ipvsadm -i): the members may be on any routed segment, serve the "
                f"VIP's port and {lo}; on each, tunl0 up (modprobe ipip) with rp_filter off on it "
                "(the operator's part)")
    return (f"direct routing (ipvsadm -g): the members must be on the manager's L2 segment, "
            f"serve the VIP's port, and {lo}")
