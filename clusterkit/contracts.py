"""What plugins hand each other, as typed contracts (``typing.Protocol``).

A plugin that offers one of these only has to have the methods (no base class
to inherit); one that uses one relies on nothing else. The hooks that carry
them are in :mod:`clusterkit.hookspecs`; ``docs/hooks.md`` says who offers and
who uses each. This module imports nothing of clusterkit: every layer may use it.
"""

from __future__ import annotations

from typing import Any, Awaitable, Protocol, runtime_checkable

#: A member's effective state, as membership decides it and the engine applies it.
MEMBER_STATES = ("up", "down", "drain", "maintenance")

class MemberStates(dict):
    """What an engine was told of each member: ``(policy key, node) -> (state, weight factor)``.

    Every engine validates and remembers states the same way (a state for a
    policy not applied yet is kept for when it is); :meth:`record` is that
    one step.
    """

    def record(self, policy_key: str, node: str, state: str, weight_factor: float = 1.0) -> bool:
        """Remember a state (``weight_factor`` clamped to [0, 1]); ``False`` when it is the one
        already held. An unknown state is a ``ValueError``."""
        if state not in MEMBER_STATES:
            raise ValueError(f"member state {state!r} is not one of {', '.join(MEMBER_STATES)}")
        told = (state, min(1.0, max(0.0, float(weight_factor))))
        if self.get((policy_key, node)) == told:
            return False
        self[(policy_key, node)] = told
        return True

    def of(self, policy_key: str, node: str) -> tuple[str, float]:
        """The member's state and factor, ``("up", 1.0)`` until told otherwise."""
        return self.get((policy_key, node), ("up", 1.0))


#: The name under which the membership component is kept in ``runtime.components``.
MEMBERSHIP = "membership"


@runtime_checkable
class LbEngine(Protocol):
    """A load balancer the manager drives (:mod:`clusterkit.engines`), made by an engine kind's
    ``create(runtime)`` (``clusterkit_register_engines``).

    The native proxy (:class:`clusterkit.proxy.engine.Engine`) is one; a plugin
    driving HAProxy or IPVS offers the same four methods. It is handed only the
    policies naming it; member states it is told for a policy it has not
    applied yet are remembered for when it does.
    """

    async def apply(self, cluster: Any) -> None:
        """Make the balancer match ``cluster.policies`` (at start and after every good reload);
        established connections stay. Raising at the first apply stops the daemon."""

    def set_member_state(self, policy_key: str, node: str, state: str,
                         weight_factor: float = 1.0) -> Awaitable[None] | None:
        """Membership says how a member takes new connections: ``state`` is one of
        :data:`MEMBER_STATES`, ``weight_factor`` in [0, 1] scales its weight (slow start).
        May return an awaitable."""

    def stats(self) -> dict:
        """``{policy_key: {"members": {node: {"state", "active", ...}}, ...}}`` for status."""

    async def close(self, timeout: float) -> None:
        """Stop accepting, let connections finish for up to ``timeout`` seconds, close the rest."""


class Component(Protocol):
    """A plugin's per-host object, kept in ``runtime.components[name]``.

    The runtime's ``start_component``, ``reload_component``, ``stop_component``
    and ``component_status`` do the glue around it, so a plugin's hooks are one
    line each. A class may inherit from this to get the methods it does not
    need as no-ops.
    """

    async def start(self) -> None:
        """Bring up what it serves; called once, after it is kept under its name."""

    async def reload(self, old: Any, new: Any) -> None:
        """The definition changed from ``old`` to ``new`` (``runtime.cluster`` is ``new``)."""

    async def stop(self) -> None:
        """Stop gracefully; called once it is no longer kept."""

    def status(self) -> dict:
        """Its part of ``clusterkit status`` (JSON-serialisable)."""
        return {}


class MembershipQuery(Protocol):
    """What the membership component (``runtime.components[MEMBERSHIP]``) answers others.

    Only on the manager, once the daemon runs; absent elsewhere: a user then
    has no health information and says so.
    """

    def states(self, policy_key: str) -> dict[str, str]:
        """``{node: state}`` for the members of the policy ``VIP:PORT`` being checked (state: one
        of :data:`MEMBER_STATES`); empty for a policy it does not know."""
