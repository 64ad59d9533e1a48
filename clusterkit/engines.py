"""The manager's engines: every policy is realised by the engine it names.

A policy names its engine (``[[policy]] engine``), else the cluster's default
(``[manager] engine``, ``"native"`` unless set). :class:`Engines` is the one
:class:`~clusterkit.contracts.LbEngine` the runtime and membership talk to: it
starts each engine the first time a policy needs it, hands it only its
policies, routes member states to the engine that owns the policy, and shows
every engine's counters side by side in ``status`` (each policy says its
``engine``).

Moving a policy between engines keeps its address: the engine losing it
applies first (its listener closes), then the one gaining it, which was told
the member states beforehand, so a down member never takes a connection there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import logging

from clusterkit.contracts import LbEngine
from clusterkit.hookcalls import PluginError

log = logging.getLogger("clusterkit.engines")


class Engines:
    def __init__(self, runtime):
        self.runtime = runtime
        self.running: dict[str, LbEngine] = {}
        self.owner: dict[str, str] = {}  # policy key -> engine name
        self.states: dict[tuple[str, str], tuple[str, float]] = {}  # (policy, node) -> last state

    async def apply(self, cluster) -> None:
        """Hand each engine its policies; one engine failing does not stop the others being
        applied, and the failures end as one :class:`PluginError` naming each engine."""
        failures: list[str] = []

        async def each(name: str, step) -> None:
            try:
                await step
            except Exception as exc:  # an engine plugin's fault, whatever its type
                log.error("engine %s: %s", name, exc, exc_info=not isinstance(exc, OSError))
                failures.append(f"engine {name}: {exc}")

        wanted: dict[str, list] = {}
        for policy in cluster.policies:
            wanted.setdefault(policy.engine, []).append(policy)
        moved = {p.key for p in cluster.policies if self.owner.get(p.key, p.engine) != p.engine}
        # first what engines give up (a moved policy's address is free before another binds it)
        for name, engine in self.running.items():
            keep = [p for p in wanted.get(name, []) if self.owner.get(p.key) == name]
            if len(keep) < sum(1 for owner in self.owner.values() if owner == name):
                await each(name, engine.apply(dataclasses.replace(cluster, policies=tuple(keep))))
        for name, policies in wanted.items():
            engine = self.running.get(name)
            if engine is None:
                engine = self.running[name] = self.runtime.registry.engines[name].create(self.runtime)
                log.info("engine %s started for %s", name, ", ".join(p.key for p in policies))
            for (key, node), (state, factor) in self.states.items():
                if any(p.key == key for p in policies) and (key in moved or key not in self.owner):
                    await _maybe(engine.set_member_state(key, node, state, factor))
            await each(name, engine.apply(dataclasses.replace(cluster, policies=tuple(policies))))
        self.owner = {p.key: p.engine for p in cluster.policies}
        for name in [n for n in self.running if n not in wanted]:  # no policy left: stop it
            engine = self.running.pop(name)
            log.info("engine %s has no policy left: stopping it", name)
            self.runtime.spawn(engine.close(self.runtime.shutdown_timeout), f"engine-{name}-close")
        if failures:
            raise PluginError("; ".join(failures))

    def set_member_state(self, policy_key: str, node: str, state: str, weight_factor: float = 1.0):
        self.states[(policy_key, node)] = (state, weight_factor)
        engine = self.running.get(self.owner.get(policy_key, ""))
        if engine is None:  # not applied yet: told when its engine starts
            return None
        return engine.set_member_state(policy_key, node, state, weight_factor)

    def stats(self) -> dict:
        out = {}
        for name, engine in self.running.items():
            for key, stats in engine.stats().items():
                if self.owner.get(key) == name:
                    out[key] = {"engine": name, **stats}
        return out

    async def close(self, timeout: float) -> None:
        engines, self.running = list(self.running.values()), {}
        await asyncio.gather(*(engine.close(timeout) for engine in engines))


async def _maybe(result) -> None:
    if inspect.isawaitable(result):
        await result
