"""nftables as a load-balancing engine in the manager's kernel (docs/load-balancing.md).

Registered as the engine ``nft``: in direct routing (``forward = "dr"``, the
default) the manager forwards each packet for VIP:port to a member's MAC
unchanged and the member answers the client itself; in NAT (``forward =
"nat"``) conntrack DNATs each connection to a member, which routes its
replies through the manager. Either way the member sees the client's own
address (no PROXY header). On the nodes the same plugin puts the DR VIPs on
``lo`` (:mod:`clusterkit_nft.node`).
"""

from __future__ import annotations

import shutil

from clusterkit import hookimpl
from clusterkit.registry import EngineKind
from clusterkit_nft.carry import check_policy, requirements
from clusterkit_nft.engine import NftEngine, NftError
from clusterkit_nft.node import NodeSide

__all__ = ["NftEngine", "NftError", "check_policy", "unavailable"]

COMPONENT = "nft-dr"


def unavailable() -> str | None:
    """Why the engine cannot run here, or ``None``."""
    if shutil.which("nft") is None:
        return "the nft engine needs nftables' `nft` program (apt install nftables)"
    return None


def create(runtime) -> NftEngine:
    return NftEngine()


@hookimpl
def clusterkit_register_engines(register):
    register(EngineKind("nft", create=create, schedulers=("rr", "wrr", "sh"), persistence=True,
                        proxy_protocols=("",), handlers=False, forwards=("dr", "nat"),
                        check_policy=check_policy, requirements=requirements,
                        unavailable=unavailable,
                        description="nftables direct routing or NAT in the manager's kernel: "
                                    "client IPs kept"))


@hookimpl
async def clusterkit_start(runtime):
    if not runtime.is_manager:
        await runtime.start_component(COMPONENT, NodeSide(runtime))


@hookimpl
async def clusterkit_reload(runtime, old, new):
    await runtime.reload_component(COMPONENT, old, new)


@hookimpl
async def clusterkit_stop(runtime):
    await runtime.stop_component(COMPONENT)


@hookimpl
def clusterkit_status(runtime):
    return runtime.component_status(COMPONENT, "direct_routing")


@hookimpl
def clusterkit_status_summary(report, summary):
    """A DR member the manager cannot forward to (no MAC, behind a router) needs an operator;
    so does a node whose daemon could not set the VIP up (its own ``status``)."""
    for key, policy in report.get("policies", {}).items():
        if not isinstance(policy, dict) or policy.get("engine") != "nft":
            continue
        for node, member in policy.get("members", {}).items():
            if isinstance(member, dict) and member.get("unresolved"):
                summary.problem(f"{key}: {node} gets no packets: {member['unresolved']}")
    for error in (report.get("direct_routing") or {}).get("errors", []):
        summary.problem(f"direct routing: {error}")
