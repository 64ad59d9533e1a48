"""The kernel's IPVS (LVS) as a load-balancing engine, driven through netlink (docs/load-balancing.md).

Registered as the engine ``ipvs``, with the policy's ``forward`` as IPVS's
forwarding method: ``"dr"`` (the default; direct routing: the node answers
the client itself and sees its address), ``"nat"`` (masquerading: the nodes
route their replies through the manager) or ``"tun"`` (IP-in-IP to nodes on
other segments). The nodes' side of DR and TUN (the VIP on ``lo``, ARP kept
quiet) is the ``directroute`` plugin's, kept for every engine declaring
forwards (:mod:`clusterkit_directroute`). ``clusterkit policy ipvs-rules``
prints the table as ``ipvsadm -S -n`` lines.
"""

from __future__ import annotations

from clusterkit import hookimpl
from clusterkit.registry import EngineKind
from clusterkit_ipvs.carry import check_policy, requirements
from clusterkit_ipvs.engine import IpvsEngine
from clusterkit_ipvs.kernel import IpvsError, unavailable
from clusterkit_ipvs.rules import METHODS, SCHEDULERS, plan, render

__all__ = ["KIND", "IpvsEngine", "IpvsError", "check_policy", "plan", "render", "unavailable"]

NAME = "ipvs"


def create(runtime) -> IpvsEngine:
    return IpvsEngine()


KIND = EngineKind(NAME, create=create, schedulers=SCHEDULERS, persistence=True,
                  proxy_protocols=("",), handlers=False, forwards=tuple(METHODS),
                  check_policy=check_policy, requirements=requirements, unavailable=unavailable,
                  description="the kernel's IPVS: direct routing, NAT or IP-in-IP tunnels "
                              "(forward = dr, nat, tun), client IPs kept")


@hookimpl
def clusterkit_register_engines(register):
    register(KIND)


@hookimpl
def clusterkit_register_commands(app, groups):
    from clusterkit_ipvs.cli import register

    register(groups)


@hookimpl
def clusterkit_status_summary(report, summary):
    """A policy IPVS does not carry (the kernel has no IPVS or refused a change) says why in
    ``clusterkit status``, not only "not listening"."""
    for key, policy in report.get("policies", {}).items():
        if isinstance(policy, dict) and policy.get("engine") == NAME and policy.get("error"):
            summary.problem(f"{key}: {policy['error']}")
