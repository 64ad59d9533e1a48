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


@hookimpl
def clusterkit_reload(runtime, old, new):
    membership = runtime.components.get(COMPONENT)
    return membership.reload(new) if membership is not None else None


@hookimpl
def clusterkit_stop(runtime):
    membership = runtime.components.pop(COMPONENT, None)
    return membership.stop() if membership is not None else None


@hookimpl
def clusterkit_status(runtime):
    membership = runtime.components.get(COMPONENT)
    return {"members": membership.status()} if membership is not None else None
