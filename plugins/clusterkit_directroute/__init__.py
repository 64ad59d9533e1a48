"""The nodes' side of direct routing and tunnelling for every kernel engine (docs/load-balancing.md).

On a node, the daemon puts on ``lo`` the VIP of each policy that a kernel
engine (one declaring ``forwards``: nft, ipvs) forwards to it with the VIP
still as destination (``dr``, ``tun``), with the ARP settings that keep the
node quiet about it (:mod:`clusterkit_directroute.node`), and says so in
``status`` under ``direct_routing``. A plugin of its own, so that any kernel
engine's nodes have it whichever engine plugins are loaded.
"""

from __future__ import annotations

from clusterkit import hookimpl
from clusterkit_directroute.node import NodeSide, dr_vips

__all__ = ["NodeSide", "dr_vips"]

COMPONENT = "directroute"


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
    """A node whose daemon could not set the VIP up (its own ``status``) needs an operator."""
    for error in (report.get("direct_routing") or {}).get("errors", []):
        summary.problem(f"direct routing: {error}")
