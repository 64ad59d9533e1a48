"""The membership core plugin: health checks and operator states on the manager.

Registered through the ``clusterkit`` entry points like any plugin. It keeps
its :class:`clusterkit.membership.Membership` in
``runtime.components["membership"]`` and offers the control command
``operator`` (``node``, ``action``) that ``clusterkit node drain|maintenance|enable``
sends to a running daemon.
"""

from __future__ import annotations

from clusterkit import hookimpl
from clusterkit.membership import Membership

COMPONENT = "membership"


@hookimpl
def clusterkit_start(runtime):
    if not runtime.is_manager:
        return None
    membership = Membership(runtime)
    runtime.components[COMPONENT] = membership
    runtime.add_control("operator", membership.set_operator)
    return membership.start()


def _mine(runtime) -> Membership | None:
    """This plugin's component (a test may have put a stand-in under the name)."""
    membership = runtime.components.get(COMPONENT)
    return membership if isinstance(membership, Membership) else None


@hookimpl
def clusterkit_reload(runtime, old, new):
    membership = _mine(runtime)
    return membership.reload(new) if membership is not None else None


@hookimpl
def clusterkit_stop(runtime):
    membership = _mine(runtime)
    if membership is None:
        return None
    del runtime.components[COMPONENT]
    return membership.stop()


@hookimpl
def clusterkit_status(runtime):
    membership = _mine(runtime)
    return {"members": membership.status()} if membership is not None else None
