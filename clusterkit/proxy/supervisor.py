"""The engine's side of the SO_REUSEPORT worker processes: more than one core for accept/connect.

One Python process tops out around one core; the cost of a short connection
is mostly the accept/connect/close system calls, which a second process runs
in parallel. With ``proxy_workers = N`` in the manager's ``options`` the
engine starts ``N - 1`` worker processes (``python -m clusterkit.proxy.child``);
each opens the same listeners with ``SO_REUSEPORT`` and the kernel spreads
new connections over the processes. The engine's process stays one of them
and remains the only one the runtime talks to:

* ``apply``/``set_member_state``/``close`` are forwarded to every worker over
  its stdin (length-prefixed pickles: the parent is the only writer);
* workers report their counters every half second on stdout and ``stats()``
  adds them up;
* a worker that dies is restarted (its connections are lost with it).

Only policies without persistence and without a service handler are shared:
pins and FTP data listeners live in one process's memory, so those policies
stay in the engine's process. ``lc``/``wlc`` then see each process's own
connections, and each process takes its share of ``max_conn`` and
``member_max_conn`` (the limit divided by the processes, rounded up).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import struct
import sys
from types import SimpleNamespace

log = logging.getLogger("clusterkit.proxy")

HEADER = struct.Struct("!I")
REPORT_EVERY = 0.5
RESTART_DELAY = 1.0


def process_count(value) -> int:
    """``proxy_workers``: ``"auto"`` (one per CPU this process may run on) or 1..64;
    ``ValueError`` saying what is wrong."""
    if value == "auto":
        return min(64, len(os.sched_getaffinity(0)))
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 64:
        raise ValueError(f"{value!r} must be \"auto\" or an integer 1..64")
    return value


def shareable(policy, registry) -> bool:
    """Whether a policy can be served by several processes at once."""
    kind = registry.services.get(policy.service) if registry is not None else None
    return not policy.persistence and (kind is None or kind.handler is None)


def worker_view(cluster, registry) -> SimpleNamespace:
    """What a worker needs of the cluster: the shareable policies and host addresses."""
    return SimpleNamespace(
        policies=tuple(p for p in cluster.policies if shareable(p, registry)),
        hosts={name: SimpleNamespace(ip=host.ip) for name, host in cluster.hosts.items()},
        manager=SimpleNamespace(name=cluster.manager.name, ip=cluster.manager.ip))


def frame(message) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader):
    size = HEADER.unpack(await reader.readexactly(HEADER.size))[0]
    return pickle.loads(await reader.readexactly(size))


class Worker:
    """One worker process as seen from the engine."""

    def __init__(self, pool: "WorkerPool", number: int):
        self.pool = pool
        self.number = number
        self.proc: asyncio.subprocess.Process | None = None
        self.stats: dict = {}
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "clusterkit.proxy.child",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "CLUSTERKIT_PROXY_WORKER": str(self.number),
                 "CLUSTERKIT_PROXY_PROCESSES": str(len(self.pool.workers) + 1)})
        self.task = asyncio.ensure_future(self._listen())

    def send(self, message) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.stdin.write(frame(message))
            except (ConnectionError, RuntimeError):
                pass

    async def _listen(self) -> None:
        try:
            while True:
                kind, body = await read_frame(self.proc.stdout)
                if kind == "stats":
                    self.stats = body
                elif kind == "error":
                    log.error("proxy worker %d: %s", self.number, body)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        code = await self.proc.wait()
        self.stats = {}
        if not self.pool.closing:
            log.error("proxy worker %d (pid %d) exited with %s; restarting", self.number,
                      self.proc.pid, code)
            await asyncio.sleep(RESTART_DELAY)
            if not self.pool.closing:
                await self.start()
                self.pool.sync(self)

    async def close(self, timeout: float) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.send(("close", timeout))
        try:
            await asyncio.wait_for(self.proc.wait(), timeout + 2)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            self.proc.kill()  # past its deadline, or the runtime's own deadline passed
            await asyncio.shield(self.proc.wait())
        finally:
            if self.task is not None:
                self.task.cancel()


class WorkerPool:
    """The engine's worker processes: start, forward, collect counters, stop."""

    def __init__(self, count: int, registry):
        self.registry = registry
        self.workers = [Worker(self, n) for n in range(1, count)]
        self.view = None
        self.states: dict = {}
        self.closing = False
        self.started = False

    async def apply(self, cluster, states: dict) -> None:
        self.view = worker_view(cluster, self.registry)
        self.states = states
        if not self.started:
            self.started = True
            for worker in self.workers:
                await worker.start()
            log.info("proxy workers started: pids %s", ", ".join(map(str, self.pids())))
        for worker in self.workers:
            self.sync(worker)

    def sync(self, worker: Worker) -> None:
        if self.view is not None:
            worker.send(("apply", (self.view, dict(self.states))))

    def set_member_state(self, *args) -> None:
        for worker in self.workers:
            worker.send(("state", args))

    def stats(self) -> list[dict]:
        return [w.stats for w in self.workers if w.stats]

    async def close(self, timeout: float) -> None:
        self.closing = True
        await asyncio.gather(*(w.close(timeout) for w in self.workers))

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.workers if w.proc is not None]


COUNTERS = ("active", "total", "refused", "fallback", "over_limit", "idle_closed",
            "silent_closed")
MEMBER_COUNTERS = ("active", "total", "bytes_in", "bytes_out", "connect_failures")


def merge_stats(mine: dict, others: list[dict]) -> dict:
    """Add the workers' counters to the engine's own (states and settings are the engine's)."""
    for other in others:
        for key, theirs in other.items():
            policy = mine.get(key)
            if policy is None or "error" in policy:
                continue
            for name in COUNTERS:
                policy[name] += theirs.get(name, 0)
            for node, member in theirs.get("members", {}).items():
                target = policy["members"].get(node)
                if target is not None:
                    for name in MEMBER_COUNTERS:
                        target[name] += member.get(name, 0)
    return mine
