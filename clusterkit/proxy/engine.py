"""The native L4 engine: realises the cluster's policies as listeners.

The runtime drives it (see :mod:`clusterkit.runtime`): ``apply(cluster)`` at
start and after every successful reload, ``set_member_state`` from the health
component, ``stats()`` for ``clusterkit status``, ``close(timeout)`` at stop.
Everything runs on the daemon's event loop; nothing here blocks.
"""

from __future__ import annotations

import asyncio
import logging

from clusterkit.contracts import MemberStates
from clusterkit.proxy.listener import Listener, ProxyError
from clusterkit.proxy.supervisor import WorkerPool, merge_stats, shareable

log = logging.getLogger("clusterkit.proxy")

TICK_MAX = 1.0    # seconds between idle sweeps, at most
TICK_MIN = 0.05
FIRST_DATA_TIMEOUT = 5.0  # a full listener closes connections where nothing was said by then


class Engine:
    """Listeners by policy key, member states, and the upkeep tick.

    ``registry`` (the runtime's) gives each service's protocol handler;
    ``None`` relays every service as plain bytes. ``workers > 1`` adds
    ``SO_REUSEPORT`` worker processes (:mod:`clusterkit.proxy.supervisor`);
    with 1, everything runs in this process. ``processes`` is how many
    processes serve each shared listener (a worker's engine is told; the
    daemon's counts itself and its workers). ``first_data_timeout``: while a
    listener is full, a connection on which neither side has said anything
    this many seconds after it was made is closed (see :mod:`clusterkit.proxy.idle`).
    """

    def __init__(self, registry=None, reuse_port: bool = False, workers: int = 1,
                 processes: int | None = None, first_data_timeout: float = FIRST_DATA_TIMEOUT):
        self.registry = registry
        self.first_data_timeout = first_data_timeout
        self.processes = processes or workers
        self.reuse_port = reuse_port or workers > 1
        self.workers = WorkerPool(workers, registry) if workers > 1 else None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.listeners: dict[str, Listener] = {}
        self.retired: set = set()
        self.states = MemberStates()
        self.failed: dict[str, str] = {}   # policy key -> why its listener is not open
        self.applied = False
        self._tick: asyncio.TimerHandle | None = None
        self._interval = TICK_MAX

    def per_process(self, policy, limit: int) -> int:
        """This process's share of a connection limit (0: none). The kernel spreads a
        shared listener's connections evenly over the processes, so each takes its part
        and the policy's limit holds for the whole manager."""
        if not limit or self.processes == 1 or not shareable(policy, self.registry):
            return limit
        return -(-limit // self.processes)

    def handler_for(self, service: str):
        """The service kind's handler factory, or ``None`` for a plain relay."""
        kind = self.registry.services.get(service) if self.registry is not None else None
        return kind.handler if kind is not None else None

    async def apply(self, cluster) -> None:
        """Make the listeners match ``cluster.policies``; established connections stay.

        New policies get a listener, removed ones retire (stop accepting, their
        connections run to the end), the others are updated in place. A
        listener that cannot be opened (address in use) is retried at the next
        apply and shown in ``stats()``; at the first apply it raises
        :class:`ProxyError` after the rest is applied (the daemon does not
        start half-configured), later it is logged, so one bad policy never
        blocks a reload of the others.
        """
        self.loop = asyncio.get_running_loop()
        wanted = {p.key: p for p in cluster.policies}
        for key in [k for k in self.listeners if k not in wanted]:
            listener = self.listeners.pop(key)
            listener.retire()
            if listener.conns:
                self.retired.add(listener)
            log.info("policy %s removed: listener closed, %d connection(s) finishing",
                     key, len(listener.conns))
        errors = []
        for key, policy in wanted.items():
            listener = self.listeners.get(key)
            if listener is not None:
                listener.update(policy, cluster)
                continue
            listener = Listener(self, policy, cluster)
            try:
                await listener.start(self.reuse_port)
            except ProxyError as exc:
                errors.append(str(exc))
                self.failed[key] = str(exc)
                continue
            self.failed.pop(key, None)
            self.listeners[key] = listener
            log.info("policy %s: listening, %s to %s", key, policy.scheduler,
                     ", ".join(f"{m.node}={m.weight}" for m in policy.members))
        self._schedule()
        for key in [k for k in self.failed if k not in wanted]:
            del self.failed[key]
        if self.workers is not None:
            await self.workers.apply(cluster, self.states)
        first, self.applied = not self.applied, True
        if errors and first:
            raise ProxyError("; ".join(errors))
        for error in errors:
            log.error("%s (retried at the next reload)", error)

    def set_member_state(self, policy_key: str, node: str, state: str,
                         weight_factor: float = 1.0) -> None:
        """Health or the operator says how a member takes new connections.

        ``up`` takes them (``weight_factor`` in [0, 1] scales its weight during
        slow start); ``drain`` takes none but keeps its connections;
        ``down``/``maintenance`` are out of rotation, connections continue.
        Remembered across ``apply`` and for members not (yet) in a policy.
        """
        self.states.record(policy_key, node, state, weight_factor)
        state, weight_factor = self.states.of(policy_key, node)  # the factor clamped to [0, 1]
        if self.workers is not None:
            self.workers.set_member_state(policy_key, node, state, weight_factor)
        listener = self.listeners.get(policy_key)
        if listener is not None:
            member = listener.pool.members.get(node)
            if member is not None:
                member.state, member.factor = state, weight_factor

    def stats(self) -> dict:
        """Per policy and member: state, weight, active, total, bytes, connect failures."""
        mine = {key: listener.stats() for key, listener in self.listeners.items()}
        for key, error in self.failed.items():
            mine[key] = {"listening": False, "error": error}
        if self.workers is not None:
            merge_stats(mine, self.workers.stats())
        return mine

    async def close(self, timeout: float) -> None:
        """Stop listening, let connections finish up to ``timeout``, then close the rest."""
        if self.workers is not None:
            await asyncio.gather(self._close(timeout), self.workers.close(timeout))
        else:
            await self._close(timeout)

    async def _close(self, timeout: float) -> None:
        for listener in (*self.listeners.values(), *self.retired):
            listener.retire()
            self.retired.add(listener)
        self.listeners.clear()
        try:
            deadline = self.loop.time() + timeout if self.loop else 0
            while any(listener.conns for listener in self.retired):
                if self.loop.time() >= deadline:
                    break
                await asyncio.sleep(0.05)
        finally:
            for listener in list(self.retired):
                for conn in list(listener.conns):
                    conn.abort()
            self.retired.clear()
            if self._tick is not None:
                self._tick.cancel()
                self._tick = None

    # ------------------------------------------------------------- upkeep

    def _schedule(self) -> None:
        shortest = min((min(lst.client_timeout, lst.server_timeout)
                        for lst in self.listeners.values()), default=TICK_MAX * 4)
        self._interval = max(TICK_MIN, min(TICK_MAX, shortest / 4))
        if self._tick is None:
            self._tick = self.loop.call_later(self._interval, self._upkeep)

    def _upkeep(self) -> None:
        interval = self._interval
        for listener in (*self.listeners.values(), *self.retired):
            try:
                listener.sweep(interval)
            except Exception:
                log.exception("%s: upkeep failed", listener.key)
        self._tick = self.loop.call_later(interval, self._upkeep)
