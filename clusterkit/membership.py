"""Membership: which (policy, node) pairs take new connections, and why.

Each member of each policy has a checker loop and a state machine with
HAProxy's meanings:

* a health counter from 0 to ``rise + fall - 1``; the member is healthy while
  it is ``>= rise``. A failure while healthy counts down, ``fall`` failures in a
  row from full health take the member down (the counter drops to 0); ``rise``
  passes in a row bring it back (the counter jumps to the top).
* at daemon start members are healthy at the bottom of the healthy range, as
  in HAProxy: traffic flows at once and a single failed check takes a dead
  member out.
* checks start every ``inter`` seconds (start to start, never overlapping), every
  ``fastinter`` while the state is changing (the counter neither full nor 0) and
  every ``downinter`` while down.
* slow start: after recovering, a member's weight ramps from a few percent to
  full over ``slowstart`` seconds, pushed to the engine as ``weight_factor``.
* operator states, per node, persisted so they survive a restart: ``drain``
  (weight 0, established connections finish, checks go on) and
  ``maintenance`` (out of rotation, checks paused). Leaving maintenance runs a
  check at once: the member is back when it passes, down when it fails.

The effective state given to the engine and to ``clusterkit_membership_changed``
is one of ``up``, ``down``, ``drain``, ``maintenance``. Nothing here is a module
global: several hosts run in one process, each keeps its :class:`Membership`
in ``runtime.components["membership"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import inspect
import json
import logging
import os
import random
import time
from dataclasses import dataclass, field
from typing import Any

from clusterkit.config import Check, Cluster, Policy, write_atomic
from clusterkit.registry import CheckFailed, CheckTarget

log = logging.getLogger("clusterkit.membership")

STATES = ("up", "down", "drain", "maintenance")
OPERATOR_ACTIONS = ("drain", "maintenance", "maintenance-off", "enable")
OPERATOR_FILE = "operator-states.json"


# ------------------------------------------------------------ state machine


class Health:
    """HAProxy's health counter for one member: pure logic, no I/O."""

    def __init__(self, rise: int, fall: int, up: bool = True):
        self.rise, self.fall = rise, fall
        self.up = up
        self.count = rise if up else 0  # start healthy, one failure from down

    @property
    def top(self) -> int:
        return self.rise + self.fall - 1

    @property
    def changing(self) -> bool:
        """Between full health and down: checks run at ``fastinter``."""
        return self.count < self.top if self.up else self.count > 0

    def record(self, ok: bool) -> bool:
        """Count one check result; True when the member went up or down."""
        if ok:
            if self.up:
                self.count = self.top
                return False
            self.count += 1
            if self.count < self.rise:
                return False
            self.up, self.count = True, self.top
            return True
        if not self.up:
            self.count = 0
            return False
        if self.count > self.rise:
            self.count -= 1
            return False
        self.up, self.count = False, 0
        return True

    def reset(self, up: bool, full: bool = True) -> None:
        """Force a state: full (or one failure from down when ``full`` is False)."""
        self.up = up
        self.count = (self.top if full else self.rise) if up else 0

    def configure(self, rise: int, fall: int) -> None:
        """New rise/fall on reload: keep up/down, start the counter again from its end."""
        if (rise, fall) != (self.rise, self.fall):
            self.rise, self.fall = rise, fall
            self.reset(self.up)

    def describe(self) -> str:
        return f"{'up' if self.up else 'down'} {self.count}/{self.top}"


def effective_state(healthy: bool, operator: str) -> str:
    """What the engine is told: maintenance wins, then health, then drain."""
    if operator == "maintenance":
        return "maintenance"
    if not healthy:
        return "down"
    if operator == "drain":
        return "drain"
    return "up"


def intervals(check: Check) -> tuple[float, float, float]:
    """(inter, fastinter, downinter) in seconds.

    ``fastinter`` defaults to a quarter of ``inter`` (HAProxy's own default is
    ``inter``: the issue asks for a faster pace while a state changes);
    ``downinter`` defaults to ``inter``. Both may be set as check options.
    """
    inter = check.inter
    fast = _seconds(check.options, "fastinter", max(0.05, inter / 4))
    down = _seconds(check.options, "downinter", inter)
    return inter, min(fast, inter), down


def _seconds(options: dict, name: str, default: float) -> float:
    value = options.get(name)
    if value in (None, ""):
        return default
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"check option {name}={value!r} is not a number of seconds") from None
    if seconds <= 0:
        raise ValueError(f"check option {name}={value!r} must be > 0")
    return seconds


# ---------------------------------------------------------- operator states


class OperatorStates:
    """Per-node operator states in the manager's state dir: a JSON file, replaced atomically.

    Written by the daemon when it runs (it owns the file then) and by the CLI
    when it does not; a lock file serialises both.
    """

    def __init__(self, state_dir: str):
        self.path = os.path.join(state_dir, OPERATOR_FILE)

    def load(self) -> dict[str, dict]:
        """``{node: {"state": "drain"|"maintenance", "since": epoch}}``; a broken file is an error."""
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.path}: unreadable operator states: {exc}") from None
        nodes = data.get("nodes") if isinstance(data, dict) else None
        if not isinstance(nodes, dict) or any(
                not isinstance(v, dict) or v.get("state") not in ("drain", "maintenance")
                for v in nodes.values()):
            raise ValueError(f"{self.path}: malformed operator states (expected "
                             '{"nodes": {NAME: {"state": "drain"|"maintenance"}}})')
        return nodes

    def state(self, node: str) -> str:
        return self.load().get(node, {}).get("state", "")

    def apply(self, node: str, action: str) -> str:
        """Record ``action`` for ``node``; return the node's new operator state ("" = enabled)."""
        if action not in OPERATOR_ACTIONS:
            raise ValueError(f"unknown operator action {action!r} (known: {', '.join(OPERATOR_ACTIONS)})")
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            nodes = self.load()
            current = nodes.get(node, {}).get("state", "")
            new = next_operator_state(current, action)
            if new != current:
                if new:
                    nodes[node] = {"state": new, "since": round(time.time(), 3)}
                else:
                    nodes.pop(node, None)
                write_atomic(self.path, json.dumps({"nodes": nodes}, indent=2, sort_keys=True) + "\n",
                             mode=0o600)
            return new


def next_operator_state(current: str, action: str) -> str:
    """``maintenance-off`` only leaves maintenance (a drained node stays drained)."""
    if action == "enable":
        return ""
    if action == "maintenance-off":
        return "" if current == "maintenance" else current
    return action


# ------------------------------------------------------------------ members


@dataclass
class Member:
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
        self.members: dict[tuple[str, str], Member] = {}
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
            member = Member(policy_key=pkey, node=node, service=policy.service, check=policy.check,
                            target=target, health=Health(policy.check.rise, policy.check.fall),
                            operator=self.node_states.get(node, ""))
            member.state = effective_state(True, member.operator)
            self.members[(pkey, node)] = member
            await self._push(member)
            member.task = self.runtime.spawn(self._loop(member), f"check {pkey} {node}")

    # ---------------------------------------------------------- checking

    async def _loop(self, member: Member) -> None:
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

    async def _wait(self, member: Member, delay: float) -> None:
        if delay > 0:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(member.wake.wait(), delay)
        member.wake.clear()

    async def probe(self, member: Member) -> tuple[bool, str, float]:
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

    async def _record(self, member: Member, ok: bool, output: str, latency: float) -> None:
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

    async def _transition(self, member: Member, reason: str) -> None:
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

    async def _slowstart(self, member: Member) -> None:
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

    async def _push(self, member: Member) -> None:
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
