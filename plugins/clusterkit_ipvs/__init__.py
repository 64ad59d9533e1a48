"""The kernel's IPVS (LVS) as load-balancing engines, driven through netlink (docs/load-balancing.md).

Three engine kinds, one per forwarding method: ``ipvs`` (direct routing: the
node answers the client itself and sees its address), ``ipvs-nat``
(masquerading: the nodes route their replies through the manager) and
``ipvs-tun`` (IP-in-IP to nodes on other segments). The nodes' side of DR and
TUN (the VIP on ``lo``, ARP kept quiet) is the one the nft plugin keeps
(:mod:`clusterkit_nft.node`). ``clusterkit policy ipvs-rules`` prints the
table as ``ipvsadm -S -n`` lines.
"""

from __future__ import annotations

from clusterkit import hookimpl
from clusterkit_ipvs.engine import IpvsEngine
from clusterkit_ipvs.kernel import IpvsError, unavailable
from clusterkit_ipvs.rules import METHODS, SCHEDULERS, cannot_carry, plan, render

__all__ = ["IpvsEngine", "IpvsError", "cannot_carry", "plan", "render", "unavailable"]

DESCRIPTIONS = {
    "dr": "the kernel's IPVS, direct routing: nodes answer clients themselves, client IPs kept",
    "nat": "the kernel's IPVS, NAT: nodes route replies through the manager, client IPs kept",
    "tun": "the kernel's IPVS, IP-in-IP tunnels to the nodes: client IPs kept, any segment",
}


def _creator(name: str):
    def create(runtime) -> IpvsEngine:
        return IpvsEngine(name, registry=runtime.registry)
    return create


@hookimpl
def clusterkit_register_engines(register):
    from clusterkit.registry import EngineKind

    for name, (_, _, mode) in METHODS.items():
        register(EngineKind(name, create=_creator(name), schedulers=SCHEDULERS, persistence=True,
                            proxy_protocols=("",), handlers=False, unavailable=unavailable,
                            description=DESCRIPTIONS[mode]))


@hookimpl
def clusterkit_register_commands(app, groups):
    from clusterkit_ipvs.cli import register

    register(groups)


@hookimpl
def clusterkit_status_summary(report, summary):
    """A policy IPVS does not carry (the kernel has no IPVS, refused a change, or the policy asks
    what IPVS cannot do) says why in ``clusterkit status``, not only "not listening"."""
    for key, policy in report.get("policies", {}).items():
        if isinstance(policy, dict) and policy.get("engine") in METHODS and policy.get("error"):
            summary.problem(f"{key}: {policy['error']}")
