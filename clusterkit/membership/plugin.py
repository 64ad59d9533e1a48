"""The membership core plugin: health checks and operator states on the manager.

Registered through the ``clusterkit`` entry points like any plugin. It keeps
its :class:`clusterkit.membership.monitor.Membership` in
``runtime.components["membership"]`` (:data:`clusterkit.contracts.MEMBERSHIP`:
other plugins ask it through :class:`clusterkit.contracts.MembershipQuery`) and
offers the control command ``operator`` (``node``, ``action``) that
``clusterkit node drain|maintenance|enable`` sends to a running daemon.
"""

from __future__ import annotations

from clusterkit import hookimpl
from clusterkit.contracts import MEMBERSHIP
from clusterkit.membership.monitor import Membership


@hookimpl
async def clusterkit_start(runtime):
    if runtime.is_manager:
        membership = Membership(runtime)
        runtime.add_control("operator", membership.set_operator)
        await runtime.start_component(MEMBERSHIP, membership)


@hookimpl
async def clusterkit_reload(runtime, old, new):
    await runtime.reload_component(MEMBERSHIP, old, new)


@hookimpl
async def clusterkit_stop(runtime):
    await runtime.stop_component(MEMBERSHIP)


@hookimpl
def clusterkit_status(runtime):
    return runtime.component_status(MEMBERSHIP, "members")
