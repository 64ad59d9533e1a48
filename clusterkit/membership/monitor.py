"""The manager's members: a checker loop per member, transitions, events, operator actions.

Each member of each policy has a checker loop running its check kind and a
:class:`~clusterkit.membership.health.Health` counter. A change of the effective
state is pushed to the engine, logged and announced to the plugins
(``clusterkit_membership_changed``). Slow start: after recovering, a member's
weight ramps from a few percent to full over ``slowstart`` seconds, pushed to
the engine as ``weight_factor``. Nothing here is a module global: several
hosts run in one process, each keeps its :class:`Membership` in
``runtime.components["membership"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from clusterkit.config import Check, Cluster, Policy
from clusterkit.membership.health import Health, effective_state, intervals
from clusterkit.membership.operator import OperatorStates
from clusterkit.registry import CheckFailed, CheckTarget

log = logging.getLogger("clusterkit.membership")


@dataclass
class CheckedMember:
    """One (policy, node): its check settings, health, operator state and last result."""

    policy_key: str
    node: str
    service: str
    check: Check
    target: CheckTarget
    health: Health
    operator: str = ""
    state: str = "up"
    since: float = field(default_factory=time.time)
    weight_factor: float = 1.0
    last: dict = field(default_factory=dict)
    leaving_maintenance: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task | None = None
    ramp: asyncio.Task | None = None

    def interval(self) -> float:
        inter, fast, down = intervals(self.check)
        if self.health.changing:
            return fast
        return inter if self.health.up else down

    def report(self) -> dict:
        return {
            "state": self.state,
            "since": _iso(self.since),
            "for_s": round(time.time() - self.since, 1),
            "health": self.health.describe(),
            "operator": self.operator or "-",
            "check": self.check.kind,
            "checks": "paused" if self.operator == "maintenance" else "running",
            "last": self.last.get("result", "none yet"),
            "output": self.last.get("output", ""),
            "latency_ms": self.last.get("latency_ms"),
            "weight_factor": round(self.weight_factor, 3),
        }


def check_target(cluster: Cluster, policy: Policy, node: str) -> CheckTarget:
    """What a member's check probes: the node's cluster IP, the backend port (or ``port``)."""
    options = policy.check.options
    try:
        port = int(options.get("port") or policy.backend_port)
    except (TypeError, ValueError):
        raise ValueError(f"policy {policy.key}: check option port={options['port']!r} "
                         "is not a port number") from None
    return CheckTarget(node=node, address=cluster.hosts[node].ip, port=port,
                       timeout=policy.check.timeout, service=policy.service,
                       options=dict(options),
                       proxy_protocol=str(options.get("proxy_protocol", policy.proxy_protocol)))


class Membership:
    """The manager's members: checker loops, transitions, events, operator states, status."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.members: dict[tuple[str, str], CheckedMember] = {}
        self.operator = OperatorStates(runtime.state_dir)
        self.node_states: dict[str, str] = {}  # node -> operator state, as recorded
        self._closed = False

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        try:
            states = self.operator.load()
        except ValueError as exc:
            log.error("%s; starting with every node enabled", exc)
            states = {}
        for node, entry in states.items():
            log.info("node %s is in operator state %s (since %s)", node, entry["state"],
                     time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(entry.get("since", 0))))
        self.node_states = {n: e["state"] for n, e in states.items()}
        await self._sync(self.runtime.cluster)

    async def reload(self, old: Cluster, new: Cluster) -> None:
        await self._sync(new)

    async def stop(self) -> None:
        self._closed = True
        tasks = [t for m in self.members.values() for t in (m.task, m.ramp) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _sync(self, cluster: Cluster) -> None:
        """Make the members match the policies: add, update in place, remove."""
        wanted = {(p.key, m.node): p for p in cluster.policies for m in p.members}
        # every option is checked before anything changes: a bad reload leaves all as it was
        targets = {key: check_target(cluster, policy, key[1]) for key, policy in wanted.items()}
        for policy in cluster.policies:
            try:
                intervals(policy.check)
            except ValueError as exc:
                raise ValueError(f"policy {policy.key}: {exc}") from None
        for key in [k for k in self.members if k not in wanted]:
            member = self.members.pop(key)
            for task in (member.task, member.ramp):
                if task is not None:
                    task.cancel()
            log.info("%s %s: no longer a member, checks stopped", *key)
        for (pkey, node), policy in wanted.items():
            target = targets[(pkey, node)]
            member = self.members.get((pkey, node))
            if member is not None:
                if (member.check, member.target) != (policy.check, target):
                    member.check, member.target = policy.check, target
                    member.health.configure(policy.check.rise, policy.check.fall)
                    member.wake.set()
                member.service = policy.service
                continue
            member = CheckedMember(policy_key=pkey, node=node, service=policy.service,
                                   check=policy.check, target=target,
                                   health=Health(policy.check.rise, policy.check.fall),
                                   operator=self.node_states.get(node, ""))
            member.state = effective_state(True, member.operator)
            self.members[(pkey, node)] = member
            await self._push(member)
            member.task = self.runtime.spawn(self._loop(member), f"check {pkey} {node}")

    # ---------------------------------------------------------- checking

    async def _loop(self, member: CheckedMember) -> None:
        # spread the first checks so members are not probed in one burst
        await self._wait(member, random.uniform(0, intervals(member.check)[1]))
        while True:
            if member.operator == "maintenance":
                await member.wake.wait()
                member.wake.clear()
                continue
            started = time.monotonic()
            ok, output, latency = await self.probe(member)
            await self._record(member, ok, output, latency)
            await self._wait(member, started + member.interval() - time.monotonic())

    async def _wait(self, member: CheckedMember, delay: float) -> None:
        if delay > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(member.wake.wait(), delay)
        member.wake.clear()

    async def probe(self, member: CheckedMember) -> tuple[bool, str, float]:
        """Run the member's check once: (passed, output, latency in ms)."""
        kind = self.runtime.registry.checks.get(member.check.kind)
        started = time.monotonic()
        if kind is None:
            return False, f"unknown check kind {member.check.kind!r}", 0.0
        try:
            # the kinds bound themselves by the timeout; this only guards a kind that does not
            output = await asyncio.wait_for(kind.run(member.target), member.target.timeout + 0.25)
            ok = True
        except CheckFailed as exc:
            ok, output = False, str(exc)
        except asyncio.TimeoutError:
            ok, output = False, f"{member.check.kind} check timed out after {member.target.timeout}s"
        except Exception as exc:  # a broken check kind is a failed check, never a dead loop
            log.exception("%s check of %s crashed", member.check.kind, member.node)
            ok, output = False, f"{member.check.kind} check crashed: {type(exc).__name__}: {exc}"
        return ok, output, round((time.monotonic() - started) * 1000, 2)

    async def _record(self, member: CheckedMember, ok: bool, output: str, latency: float) -> None:
        member.last = {"result": "passed" if ok else "failed", "output": output,
                       "latency_ms": latency, "at": time.time()}
        if member.leaving_maintenance:
            member.leaving_maintenance = False
            member.health.reset(ok)
            await self._transition(member, f"maintenance off, check {member.last['result']}: {output}")
            return
        if member.health.record(ok):
            await self._transition(member, output)
        elif not ok:
            log.debug("%s %s: check failed (%s): %s", member.policy_key, member.node,
                      member.health.describe(), output)

    # -------------------------------------------------------- transitions

    async def _transition(self, member: CheckedMember, reason: str) -> None:
        """Recompute the effective state; on a change tell the engine, the log and the plugins."""
        old, new = member.state, effective_state(member.health.up, member.operator)
        if old == new:
            return
        member.state, member.since = new, time.time()
        if member.ramp is not None:
            member.ramp.cancel()
            member.ramp = None
        slowstart = member.check.slowstart
        member.weight_factor = 1.0
        if new == "up" and old in ("down", "maintenance") and slowstart > 0:
            member.weight_factor = min(1.0, _ramp_step(slowstart) / slowstart)
            member.ramp = self.runtime.spawn(self._slowstart(member), f"slowstart {member.node}")
        level = logging.WARNING if new == "down" else logging.INFO
        log.log(level, "%s %s (%s): %s -> %s: %s", member.policy_key, member.node, member.service,
                old, new, reason)
        await self._push(member)
        await self.runtime.announce("clusterkit_membership_changed", policy=member.policy_key,
                                    node=member.node, service=member.service, old=old, new=new,
                                    reason=reason)

    async def _slowstart(self, member: CheckedMember) -> None:
        """Raise the weight factor step by step until full; stops if the state changes."""
        slowstart, step = member.check.slowstart, _ramp_step(member.check.slowstart)
        began = time.monotonic()
        while member.state == "up":
            await asyncio.sleep(step)
            if member.state != "up":
                return
            member.weight_factor = min(1.0, max(time.monotonic() - began, step) / slowstart)
            await self._push(member)
            if member.weight_factor >= 1.0:
                member.ramp = None
                return

    async def _push(self, member: CheckedMember) -> None:
        engine = self.runtime.engine
        if engine is None or self._closed:
            return
        try:
            result = engine.set_member_state(member.policy_key, member.node, member.state,
                                             weight_factor=member.weight_factor)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("engine refused state %s for %s %s", member.state, member.policy_key,
                          member.node)

    # ----------------------------------------------------------- operator

    async def set_operator(self, node: str, action: str) -> dict:
        """Control command ``operator``: record the action, apply it to the node's members now."""
        self.runtime.cluster.host(node)  # an unknown name is an error naming the hosts
        state = await asyncio.to_thread(self.operator.apply, node, action)
        self.node_states[node] = state
        reason = f"operator: {action}"
        affected = []
        for member in self.members.values():
            if member.node != node:
                continue
            affected.append(member.policy_key)
            was = member.operator
            member.operator = state
            if was == "maintenance" and state != "maintenance":
                member.leaving_maintenance = True  # a check decides: back up, or down
                member.wake.set()
                continue
            if state == "maintenance" and was != "maintenance":
                member.leaving_maintenance = False
            await self._transition(member, reason)
        log.info("node %s: operator %s -> state %s (%d members)", node, action, state or "enabled",
                 len(affected))
        return {"node": node, "operator": state or "enabled", "policies": sorted(affected)}

    # ------------------------------------------------------------- status

    def states(self, policy_key: str) -> dict[str, str]:
        """:class:`clusterkit.contracts.MembershipQuery`: ``{node: state}`` of one policy."""
        return {node: member.state for (pkey, node), member in self.members.items()
                if pkey == policy_key}

    def status(self) -> dict:
        """``{policy_key: {"service": ..., "nodes": {node: {"state": ...}}}}`` for ``clusterkit status``.

        With an engine, each member also shows its ``active`` connections
        (from ``engine.stats()``: ``{policy_key: {"members": {node: {"active": n}}}}``).
        A report for people and the panel; other plugins ask :meth:`states`.
        """
        stats = self.runtime.engine.stats() if self.runtime.engine is not None else {}
        out: dict[str, Any] = {}
        for (pkey, node), member in sorted(self.members.items()):
            report = member.report()
            engine_member = (stats.get(pkey) or {}).get("members", {}).get(node)
            if isinstance(engine_member, dict) and "active" in engine_member:
                report["active"] = engine_member["active"]
            entry = out.setdefault(pkey, {"service": member.service, "nodes": {}})
            entry["nodes"][node] = report
        return out


def _iso(epoch: float) -> str:
    """UTC with milliseconds: detection times are read from it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch * 1000) % 1000:03d}Z"


def _ramp_step(slowstart: float) -> float:
    """Push a new weight factor about 20 times over the ramp, at most once a second."""
    return max(0.1, min(1.0, slowstart / 20))
