"""The manager's replication planner: watcher → durable per-node dirty set → node workers.

This module decides *what* each node needs: it takes the watcher's changes,
applies excludes, records them for every node in the durable dirty set
(:mod:`clusterkit.sync.store`) before anything is sent, coalesces them, queues
full syncs and reports status. *Sending* — rsync runs, and the back-off of a
failing set or an unreachable node — is the per-node worker's job
(:mod:`clusterkit.sync.worker`).

Coalescing, per node: while its worker is idle, a change goes out once the
stream has been quiet for ``settle`` (a few ms) or ``max_wait`` after the
first pending change, whichever comes first; while an rsync to that node is
running, changes gather and go as one batch the moment it ends. When the
pending entries of one directory pass ``dir_threshold`` they become that
directory, recursively; past ``set_threshold`` for a set, a full sync of it.

Standby managers ([[standby]]) are replication targets like the nodes.

A full sync of every set is queued for every node at start, for a node that
joins, for a set after an inotify overflow, and every ``full_interval``; a set
whose watcher fails its self-check (:mod:`clusterkit.sync.watchcheck`) is
scanned every few seconds until it works again. A periodic or covering full
sync that sends changes no event announced says so ("the watcher missed N
changes") in the log, ``status`` and ``/metrics``. A node seen up again
(:meth:`Replicator.node_seen`) or ``clusterkit sync now`` cuts its back-off
short.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass

from clusterkit.definition.values import check_number
import clusterkit.standby.epoch as epochs
import clusterkit.standby.fence as fence
from clusterkit.sync import rsync
from clusterkit.sync.paths import excluded
from clusterkit.sync.store import FULL, DirtyStore
from clusterkit.sync.watchcheck import Watching
from clusterkit.sync.watcher import Change
from clusterkit.sync.worker import NodeWorker, parent_of

log = logging.getLogger("clusterkit.sync")


@dataclass(frozen=True)
class Settings:
    """Tunables, from the ``[sync]``-free defaults or a host's ``sync_*`` options."""

    settle: float = 0.002
    max_wait: float = 0.1
    dir_threshold: int = 2000
    set_threshold: int = 100_000
    full_interval: float = 3600.0
    timeout: int = 30
    contimeout: int = 10
    run_limit: float = rsync.RUN_LIMIT  # wall-clock seconds one rsync run may take
    backoff_min: float = 0.5
    backoff_max: float = 60.0
    atomic_batch: int = 1000   # batches up to this many paths appear at once (--delay-updates)
    watch_quiet: float = 30.0  # a set quiet this long has its watch probed (watchcheck)
    watch_timeout: float = 2.0  # a probe's event must arrive within this
    watch_audit: float = 300.0  # the kernel's watch list is compared with the tree this often
    watch_scan_min: float = 2.0  # a failing watch's set is scanned this often at the most
    mass_delete: int = rsync.MASS_DELETE  # a full sync deleting more (and most of a node) is refused

    @classmethod
    def from_options(cls, options: dict, report=None) -> "Settings":
        """The ``sync_*`` options, each a finite number within :data:`RANGES`.

        The definition's validation passes ``report(key, message)``; the
        replicator reads options already validated (a bad one raises).
        """
        values = {}
        for key, value in options.items():
            if not key.startswith("sync_"):
                continue
            name = key[len("sync_"):]
            try:
                if name not in RANGES:
                    raise ValueError("unknown sync option (known: "
                                     f"{', '.join('sync_' + n for n in RANGES)})")
                values[name] = check_number(value, type(getattr(cls, name)), *RANGES[name])
            except ValueError as exc:
                if report is None:
                    raise
                report(key, str(exc))
        return cls(**values)


RANGES = {"settle": (0, 10), "max_wait": (0, 60), "dir_threshold": (1, 10**8),
          "set_threshold": (1, 10**9), "full_interval": (0.1, 7 * 86400), "timeout": (1, 86400),
          "contimeout": (1, 3600), "run_limit": (1, 7 * 86400), "backoff_min": (0.01, 3600), "backoff_max": (0.01, 86400),
          "atomic_batch": (0, 10**6), "mass_delete": (0, 10**9), "watch_quiet": (0.1, 86400),
          "watch_timeout": (0.05, 60), "watch_audit": (1, 86400), "watch_scan_min": (0.1, 3600)}


class Replicator:
    """The manager side: one per manager Runtime, kept in ``runtime.components["sync"]``."""

    def __init__(self, runtime, settings: Settings | None = None):
        self.runtime = runtime
        self.registry = runtime.registry
        self.settings = settings or Settings.from_options(runtime.host.options)
        self.store = DirtyStore(os.path.join(runtime.state_dir, "sync.sqlite"))
        self.sets: dict = {}
        self.workers: dict[str, NodeWorker] = {}
        self.watching: Watching | None = None
        self.runs = 0
        self.overflows = 0
        self.missed_changes: Counter = Counter()  # set -> changes full syncs found unannounced
        self.full_seconds: Counter = Counter()  # set -> how long its last full sync took
        self.epoch = epochs.read(runtime.state_dir)  # this manager's, taken when it started
        self.stale_reason = ""  # set once a receiver refused this manager's epoch

    # ------------------------------------------------------------ the epoch

    def stale(self) -> str:
        """Why this manager must not push (a higher epoch exists), or ``""``: checked before
        every batch."""
        if not self.stale_reason:
            seen = epochs.read(self.runtime.state_dir)
            if seen > self.epoch:
                self.refused(f"this manager's epoch {self.epoch} is lower than the highest "
                             f"seen, {seen}")
        return self.stale_reason

    def refused(self, why: str) -> None:
        """A receiver refused this manager's epoch: stop pushing at once and stand down."""
        if self.stale_reason:
            return
        self.stale_reason = why
        seen = fence.seen_in(why)
        if seen is not None:  # so that its next promotion takes an epoch above it
            epochs.raise_to(self.runtime.state_dir, seen)
        log.error("a newer manager exists: this one stops replicating and stands down: %s", why)
        self.runtime.spawn(self.runtime.announce("clusterkit_outranked", reason=f"stale epoch: {why}"),
                           "outranked", lasting=True)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._watch(self.runtime.cluster.sync_sets)
        for node in self.runtime.cluster.replicas:  # standby managers receive it all too
            self._add_worker(node)
        self.full_sync(reason="start")
        self.runtime.spawn(self._periodic(), "sync-periodic")

    async def stop(self) -> None:
        if self.watching is not None:
            await self.watching.stop()
        for worker in self.workers.values():
            if worker.task:
                worker.task.cancel()
        await asyncio.gather(*(w.task for w in self.workers.values() if w.task),
                             return_exceptions=True)
        self.store.close()

    async def reload(self, old, new) -> None:
        self.settings = Settings.from_options(self.runtime.host.options)
        if old.sync_sets != new.sync_sets:
            gone = {s.name for s in old.sync_sets} - {s.name for s in new.sync_sets}
            await self.watching.stop()
            self._watch(new.sync_sets)
            for worker in self.workers.values():
                for name in gone:
                    self.store.forget(worker.name, name)
                    worker.forget(name)
            changed = [s.name for s in new.sync_sets if s not in old.sync_sets]
            if changed:
                self.full_sync(sets=changed, reason="sync sets changed")
        old_nodes = {n.name: n for n in old.replicas}
        new_nodes = {n.name: n for n in new.replicas}
        for name in old_nodes.keys() - new_nodes.keys():
            worker = self.workers.pop(name)
            worker.task.cancel()
            self.store.forget(name)
        for name, node in new_nodes.items():
            if name not in self.workers:
                self._add_worker(node)
                self.full_sync(nodes=[name], reason="node joined")
            elif node != old_nodes.get(name):
                self.workers[name].node = node
                self.full_sync(nodes=[name], reason="node changed")
                self.retry_now([name], "its definition changed")

    def _watch(self, sync_sets) -> None:
        self.sets = {s.name: s for s in sync_sets}
        st = self.settings
        self.watching = Watching(
            self.runtime, sync_sets, self.changed, self.overflowed, st,
            cover=lambda name: self.full_sync(sets=[name], reason="watcher failing"),
            cover_interval=lambda name: max(st.watch_scan_min, 5 * self.full_seconds[name]))

    def _add_worker(self, node) -> None:
        worker = NodeWorker(self, node)
        for (sset, path), (seq, since) in self.store.pending(node.name).items():
            worker.add(sset, path, seq, since)
        self.workers[node.name] = worker
        worker.task = self.runtime.spawn(worker.run(), f"sync-{node.name}")

    async def _periodic(self) -> None:
        while True:
            await asyncio.sleep(self.settings.full_interval)
            self.full_sync(reason="periodic")

    def goes_to(self, worker: NodeWorker, sset: str) -> bool:
        """Does set ``sset`` replicate to this worker's host (a set may be for standbys only)?"""
        s = self.sets.get(sset)
        return s is None or not s.roles or worker.node.role in s.roles

    # -------------------------------------------------------------- intake

    def changed(self, changes: list[Change]) -> None:
        """From the watcher: record for every node first, then wake the workers."""
        wanted: list[tuple[str, str, str | None]] = []
        for sset, rel, is_dir, moved_to in changes:
            s = self.sets.get(sset)
            if s is None or excluded(rel, s.exclude):
                continue
            if moved_to and excluded(moved_to, s.exclude):
                moved_to = None
            wanted.append((sset, FULL if not rel else (rel + "/" if is_dir else rel), moved_to))
        per_node: dict[str, list[tuple[str, str]]] = {}
        for worker in self.workers.values():
            entries = per_node.setdefault(worker.name, [])
            seen = set()
            can_rename = self.registry.transports[worker.node.transport].rename is not None
            for sset, path, moved_to in wanted:
                if not self.goes_to(worker, sset):
                    continue
                if moved_to and can_rename:
                    worker.note_rename(sset, path.rstrip("/"), moved_to)
                if (sset, path) in seen or worker.covered(sset, path):
                    continue
                seen.add((sset, path))
                entries.append((sset, path))
        self._record(per_node)

    def _record(self, per_node: dict[str, list[tuple[str, str]]]) -> None:
        rows = {n: e for n, e in per_node.items() if e}
        if not rows:
            return
        seq = self.store.mark(rows)
        now = time.time()
        for node, entries in rows.items():
            worker = self.workers[node]
            for sset, path in entries:
                worker.add(sset, path, seq, now)
            for sset, path in entries[-1:] + _distinct_dirs(entries):
                worker.escalate(sset, path)

    def full_sync(self, nodes: list[str] | None = None, sets: list[str] | None = None,
                  reason: str = "", allow_delete: bool = False) -> int:
        """Queue a full sync; returns its seq (``sync now`` waits for it).

        ``allow_delete`` lets it delete more than the mass-delete guard allows.
        """
        names = nodes if nodes is not None else list(self.workers)
        targets = sets if sets is not None else list(self.sets)
        if allow_delete:
            for name in names:
                if name in self.workers:
                    self.workers[name].allow_delete.update(targets)
        if reason:
            log.info("full sync of %s to %s: %s", ", ".join(targets) or "no set",
                     ", ".join(names) or "no node", reason)
        per_node = {n: [(s, FULL) for s in targets if self.goes_to(self.workers[n], s)]
                    for n in names if n in self.workers}
        for n in per_node:
            reasons = self.workers[n].full_reason
            for s, _ in per_node[n]:  # one full sync for two reasons: it audits only if both do
                known = reasons.get(s)
                reasons[s] = reason if known is None or known == reason else "mixed"
        self._record(per_node)
        return self.store.seq

    def retry_now(self, nodes: list[str] | None, reason: str) -> None:
        """Cut the back-off of ``nodes`` (default: every node) short: they try again now."""
        for name in nodes if nodes is not None else list(self.workers):
            if name in self.workers:
                self.workers[name].retry_now(reason)

    def overflowed(self, sset: str) -> None:
        self.overflows += 1
        log.warning("inotify queue overflow on sync set %s: events were lost, full sync", sset)
        self.full_sync(sets=[sset], reason="inotify overflow")

    # -------------------------------------------------------------- reports

    def status(self) -> dict:
        return {
            "sets": {name: {"path": s.path, "source": self.runtime.local_path(s.path),
                            "exclude": list(s.exclude), "owner": s.owner}
                     for name, s in self.sets.items()},
            "nodes": {name: w.status() for name, w in self.workers.items()},
            "rsync_runs": self.runs,
            "overflows": self.overflows,
            **self.watching.status(),
            "epoch": self.epoch,
            "stale": self.stale_reason or None,
            "missed_changes": dict(self.missed_changes),
        }

    def progress(self, seq: int, nodes: list[str] | None = None) -> dict:
        """How far a full sync queued as ``seq`` has come, per node.

        ``failed`` lists the sets whose attempt at it failed (the node
        unreachable, or the set's own error): ``sync now --wait`` stops there.
        """
        out = {}
        for name, w in self.workers.items():
            if nodes and name not in nodes:
                continue
            mine = [s for s in self.sets if self.goes_to(w, s)]
            done = all(w.full_done.get(s, 0) >= seq for s in mine)
            error, error_at = w.last_error()
            out[name] = {"done": done, "progress": 100 if done else w.progress,
                         "state": w.state, "last_error": error, "last_error_at": error_at,
                         "retry_at": w.retry_at(),
                         "failed": sorted(s for s in mine if w.full_done.get(s, 0) < seq
                                          <= w.full_failed.get(s, 0)),
                         "refused": sorted(s for s, q in w.refused.items() if q >= seq)}
        return out


def _distinct_dirs(entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One representative entry per (set, parent directory), to test escalation cheaply."""
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    for sset, path in entries:
        seen.setdefault((sset, parent_of(path)), (sset, path))
    return list(seen.values())
