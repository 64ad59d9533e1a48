"""nftables as a load-balancing engine in the manager's kernel (docs/load-balancing.md).

Registered as the engine ``nft``: in direct routing (``forward = "dr"``, the
default) the manager forwards each packet for VIP:port to a member's MAC
unchanged and the member answers the client itself; in NAT (``forward =
"nat"``) conntrack DNATs each connection to a member, which routes its
replies through the manager. Either way the member sees the client's own
address (no PROXY header). The nodes' side of direct routing (the VIP on
``lo``) is the ``directroute`` plugin's, shared with every kernel engine.
"""

from __future__ import annotations

import shutil

from clusterkit import hookimpl
from clusterkit.registry import EngineKind
from clusterkit_nft.carry import check_policy, requirements
from clusterkit_nft.engine import NftEngine, NftError

__all__ = ["KIND", "NftEngine", "NftError", "check_policy", "unavailable"]


def unavailable() -> str | None:
    """Why the engine cannot run here, or ``None``."""
    if shutil.which("nft") is None:
        return "the nft engine needs nftables' `nft` program (apt install nftables)"
    return None


def create(runtime) -> NftEngine:
    return NftEngine()


KIND = EngineKind("nft", create=create, schedulers=("rr", "wrr", "sh"), persistence=True,
                  proxy_protocols=("",), handlers=False, forwards=("dr", "nat"),
                  check_policy=check_policy, requirements=requirements, unavailable=unavailable,
                  description="nftables direct routing or NAT in the manager's kernel: "
                              "client IPs kept")


@hookimpl
def clusterkit_register_engines(register):
    register(KIND)


@hookimpl
def clusterkit_status_summary(report, summary):
    """A DR member the manager cannot forward to (no MAC, behind a router) needs an operator."""
    for key, policy in report.get("policies", {}).items():
        if not isinstance(policy, dict) or policy.get("engine") != "nft":
            continue
        for node, member in policy.get("members", {}).items():
            if isinstance(member, dict) and member.get("unresolved"):
                summary.problem(f"{key}: {node} gets no packets: {member['unresolved']}")
