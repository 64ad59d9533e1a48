"""The manager's replicator: watcher → durable per-node dirty set → one worker per node → rsync.

Coalescing, per node: while its worker is idle, a change goes out once the
stream has been quiet for ``settle`` (a few ms) or ``max_wait`` after the
first pending change, whichever comes first; while an rsync to that node is
running, changes gather and go as one batch the moment it ends. When the
pending entries of one directory pass ``dir_threshold`` they become that
directory, recursively; past ``set_threshold`` for a set, a full sync of it.

A full sync of every set is queued for every node at start, for a node that
joins, for a set after an inotify overflow, and every ``full_interval``; a set
whose watcher fails its self-check (:mod:`clusterkit.sync.watchcheck`) is
scanned every few seconds until it works again. A periodic or covering full
sync that sends changes no event announced says so ("the watcher missed N
changes") in the log, ``status`` and ``/metrics``.
One node's trouble (down, slow, misconfigured) only ever backs off that
node's worker, with jitter; the daemon never dies of it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import Counter
from dataclasses import dataclass

from clusterkit.definition.values import check_number
from clusterkit.sync import rsync
from clusterkit.sync.paths import ancestors, excluded, transfer_list
from clusterkit.sync.store import FULL, DirtyStore
from clusterkit.sync.watchcheck import Watching
from clusterkit.sync.watcher import PROBE_EXCLUDE, Change

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
          "contimeout": (1, 3600), "backoff_min": (0.01, 3600), "backoff_max": (0.01, 86400),
          "atomic_batch": (0, 10**6), "mass_delete": (0, 10**9), "watch_quiet": (0.1, 86400),
          "watch_timeout": (0.05, 60), "watch_audit": (1, 86400), "watch_scan_min": (0.1, 3600)}


Key = tuple[str, str]  # (set name, path)
AUDITED = ("periodic", "watcher failing")  # full syncs that only find what the watcher missed


class NodeWorker:
    """Everything about replicating to one node: its queue, its rsync runs, its back-off."""

    def __init__(self, replicator: "Replicator", node):
        self.r = replicator
        self.node = node
        self.name = node.name
        self.pending: dict[Key, tuple[int, float]] = {}
        self.inflight: dict[Key, tuple[int, float]] = {}
        self.per_dir: Counter = Counter()
        self.per_set: Counter = Counter()
        self.wake = asyncio.Event()
        self.last_change = 0.0
        self.state = "idle"
        self.failures = 0
        self.vanished = 0
        self.retry_at = 0.0
        self.progress: int | None = None
        self.full_done: dict[str, int] = {}   # set -> seq of the last full sync that landed
        self.renames: list[tuple[str, str, str]] = []  # (set, src, dst) to apply on the node first
        self.task: asyncio.Task | None = None
        self.taken_renames: list[tuple[str, str, str]] = []
        self.full_reason: dict[str, str] = {}  # set -> why its pending full sync was queued
        self.audited: set[str] = set()  # sets of the batch in flight whose full sync audits
        self.allow_delete: set[str] = set()    # sets whose next full sync may delete en masse
        self.refused: dict[str, int] = {}      # set -> seq of a full sync the guard refused

    # ----------------------------------------------------------- queueing

    def covered(self, sset: str, path: str) -> bool:
        """Already pending (not in flight) through itself or a pending parent directory?"""
        p = self.pending
        if (sset, FULL) in p or (sset, path) in p:
            return True
        return any((sset, a + "/") in p for a in ancestors(path))

    def add(self, sset: str, path: str, seq: int, since: float) -> None:
        key = (sset, path)
        if key in self.pending:
            self.pending[key] = (seq, self.pending[key][1])
        else:
            self.pending[key] = (seq, since)
            self.per_set[sset] += 1
            self.per_dir[(sset, _parent(path))] += 1
        self.last_change = asyncio.get_running_loop().time()
        self.wake.set()

    def escalate(self, sset: str, path: str) -> None:
        """Replace many pending entries by their directory, or the whole set."""
        s = self.r.settings
        if self.per_set[sset] > s.set_threshold and (sset, FULL) not in self.pending:
            self._replace(sset, lambda p: True, FULL)
            return
        parent = _parent(path)
        if parent and self.per_dir[(sset, parent)] > s.dir_threshold:
            prefix = parent.rstrip("/") + "/"
            self._replace(sset, lambda p: p.startswith(prefix) and p != prefix, prefix)

    def _replace(self, sset: str, match, entry: str) -> None:
        drop = [p for (s, p) in self.pending if s == sset and match(p)]
        since = min((self.pending[(sset, p)][1] for p in drop), default=time.time())
        seq = self.r.store.replace(self.name, sset, drop, entry)
        for p in drop:
            del self.pending[(sset, p)]
            self.per_set[sset] -= 1
            self.per_dir[(sset, _parent(p))] -= 1
        log.info("%s: %d pending entries of %s become %s", self.name, len(drop), sset,
                 entry or "a full sync")
        self.add(sset, entry, seq, since)

    def take(self) -> dict[str, dict[str, int]]:
        """Move everything pending in flight: ``{set: {path: seq}}``."""
        batch: dict[str, dict[str, int]] = {}
        for (sset, path), (seq, since) in self.pending.items():
            batch.setdefault(sset, {})[path] = seq
        self.inflight.update(self.pending)
        self.taken_renames, self.renames = self.renames, []
        self.audited = {s for s in batch if FULL in batch[s] and self.full_reason.pop(s, "") in AUDITED}
        self.pending.clear()
        self.per_dir.clear()
        self.per_set.clear()
        self.wake.clear()
        return batch

    def requeue(self, sset: str, sent: dict[str, int]) -> None:
        for path in sent:
            key = (sset, path)
            seq, since = self.inflight.pop(key, (sent[path], time.time()))
            if key not in self.pending:
                self.add(sset, path, seq, since)

    def landed(self, sset: str, sent: dict[str, int]) -> None:
        for path in sent:
            self.inflight.pop((sset, path), None)
        if FULL in sent:
            self.full_done[sset] = max(self.full_done.get(sset, 0), sent[FULL])

    # ------------------------------------------------------------- sending

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        busy = False
        while True:
            if not self.pending:
                busy = False
                self.state = "idle"
                await self.wake.wait()
            if not busy:
                await self._settle(loop)
            batch = self.take()
            self.state = "sending"
            try:
                ok = await self._send(batch)
            except Exception:  # a bug must not silence this node for good: retry later
                log.exception("%s: sending a batch failed", self.name)
                for sset_name, sent in batch.items():
                    self.requeue(sset_name, {p: q for p, q in sent.items() if (sset_name, p) in self.inflight})
                ok = False
            busy = True
            if not ok:
                self.failures += 1
                delay = min(self.r.settings.backoff_max,
                            self.r.settings.backoff_min * 2 ** (self.failures - 1))
                delay *= random.uniform(0.5, 1.5)
                self.state = "backoff"
                self.retry_at = time.time() + delay
                await asyncio.sleep(delay)
                self.retry_at = 0.0
            else:
                if self.failures:
                    log.info("%s: replication works again after %d failed batches", self.name,
                             self.failures)
                    self.r.store.recovered(self.name)
                self.failures = 0

    async def _settle(self, loop) -> None:
        """Idle: wait for a few quiet milliseconds, never beyond max_wait."""
        s = self.r.settings
        deadline = loop.time() + s.max_wait
        while True:
            now = loop.time()
            quiet_at = self.last_change + s.settle
            if now >= quiet_at or now >= deadline:
                return
            await asyncio.sleep(min(quiet_at, deadline) - now)

    async def _send(self, batch: dict[str, dict[str, int]]) -> bool:
        """Send one batch, set by set; False when the node needs a back-off."""
        all_ok = True
        for sset_name, sent in sorted(batch.items(), key=lambda kv: FULL not in kv[1]):
            sset = self.r.sets.get(sset_name)
            if sset is None:  # the set was removed meanwhile
                self.landed(sset_name, sent)
                continue
            result = await self._rsync(sset, sent)
            if result.outcome == "ok":
                self.vanished = 0
                if sset_name in self.audited:
                    self._missed(sset_name, sent, result)
                self.r.store.done(self.name, sset_name, sent)
                self.landed(sset_name, sent)
                self.refused.pop(sset_name, None)
                self.r.store.record(self.name, True, files=result.files)
                continue
            if result.outcome == "refused":  # files were sent, deletions held: an operator decides
                self.r.store.done(self.name, sset_name, sent)
                for path in sent:
                    self.inflight.pop((sset_name, path), None)
                self.refused[sset_name] = sent.get(FULL, 0)
                self.r.store.record(self.name, False, f"set {sset_name}: {result.stderr}")
                log.error("%s: set %s: %s", self.name, sset_name, result.stderr)
                continue
            self.requeue(sset_name, sent)
            if result.code == 24:
                # Files vanished while sending: normal under churn, their deletions are
                # queued already. Retry at once, unless it keeps happening.
                self.vanished += 1
                if self.vanished < 3:
                    continue
            all_ok = False
            message = f"rsync exit {result.code} ({result.outcome}): {_last_line(result.stderr)}"
            if self.node.transport == "rsyncd" and result.code in (3, 5):
                message += (f"; if the node's rsync daemon does not offer {sset_name}'s path yet: "
                            f"clusterkit sync rsyncd-conf {self.name}, then install it on the node")
            self.r.store.record(self.name, False, message)
            level = logging.ERROR if result.outcome == "error" else logging.WARNING
            log.log(level, "%s: set %s: %s; %d paths requeued", self.name, sset_name, message,
                    len(sent))
        return all_ok

    def _missed(self, sset: str, sent: dict[str, int], result: rsync.Result) -> None:
        """Count what a periodic or covering full sync sent that no event had announced."""
        announced = set(sent) | {p for s, p in list(self.pending) + list(self.inflight) if s == sset}
        missed = 0
        for item in result.items:
            code, _, name = item.partition(b" ")
            if not code[:1] in (b">", b"c"):
                continue  # attributes only, or a deletion (a node's own drift as much as a miss)
            rel = os.fsdecode(name)
            if rel.rstrip("/") in announced or rel in announced or any(
                    a + "/" in announced for a in ancestors(rel.rstrip("/"))):
                continue
            missed += 1
        if missed:
            self.r.missed_changes[sset] += missed
            log.warning("the watcher missed %d changes in %s (found by a full sync to %s)",
                        missed, sset, self.name)

    async def _rsync(self, sset, sent: dict[str, int]) -> rsync.Result:
        r = self.r
        kind = r.registry.transports[self.node.transport]
        source = r.runtime.local_path(sset.path)
        full = FULL in sent
        if not full and kind.rename is not None:
            await self._renames(kind, sset)

        def job(**kw) -> rsync.Job:
            return rsync.Job(source=source, destination=kind.destination(self.node, sset.path),
                             transport_args=list(kind.rsync_args(self.node)),
                             exclude=(*sset.exclude, PROBE_EXCLUDE),
                             timeout=r.settings.timeout, contimeout=r.settings.contimeout, **kw)

        if full:
            self.progress = 0
            jobs = [job(full=True, delay_updates=False,
                        progress=lambda pct: setattr(self, "progress", pct))]
        else:
            listed = transfer_list(source, list(sent))
            singles = [p for p in listed if not p.endswith("/")]
            wholes = [p for p in listed if p.endswith("/")]
            # Changed files are sent even when size and mtime match (two writes within one
            # tick of the filesystem clock look identical to rsync's quick check); directories
            # sent whole are compared as usual. One file is atomic by itself, and whole
            # directories can hold any number of files: --delay-updates for the rest.
            jobs = [job(paths=singles, ignore_times=True,
                        delay_updates=1 < len(singles) <= r.settings.atomic_batch)] if singles else []
            if wholes:
                jobs.append(job(paths=wholes, delay_updates=False))
        result = rsync.Result(0, "ok")
        allowed = sset.name in self.allow_delete
        try:
            for one in jobs:
                result = await (rsync.run_full(one, r.settings.mass_delete,
                                               allowed or sset.allow_mass_delete)
                                if one.full else rsync.run(one))
                if one.full and allowed and result.outcome == "ok":
                    self.allow_delete.discard(sset.name)
                r.runs += 1
                if full and result.outcome == "ok":
                    r.full_seconds[sset.name] = max(result.seconds, r.full_seconds[sset.name] * 0.5)
                log.debug("%s: %s %s: %d items in %.3fs, exit %d", self.name, sset.name,
                          "full" if full else f"{len(one.paths)} paths", result.files, result.seconds,
                          result.code)
                if result.outcome != "ok":
                    break
        finally:
            self.progress = None
        return result

    async def _renames(self, kind, sset) -> None:
        """Apply the batch's renames on the node, so rsync only compares what moved.

        Only while the node is healthy, and not past the first failure: a rename is
        an optimisation (rsync sends what moved anyway), never worth a stall.
        """
        if self.failures:
            return
        for name, src, dst in self.taken_renames:
            if name != sset.name:
                continue
            try:
                done = await kind.rename(self.node, os.path.join(sset.path, src),
                                         os.path.join(sset.path, dst))
            except Exception as exc:
                log.debug("%s: rename %s -> %s on the node failed: %s", self.name, src, dst, exc)
                return
            log.debug("%s: %s %s -> %s on the node", self.name, "renamed" if done else "did not rename",
                      src, dst)

    def status(self) -> dict:
        entries = list(self.pending.values()) + list(self.inflight.values())
        oldest = min((since for _, since in entries), default=None)
        stored = self.r.store.state(self.name)
        return {
            "transport": self.node.transport,
            "state": self.state,
            "pending": len(entries),
            "full_sync_pending": sorted({s for (s, p) in list(self.pending) + list(self.inflight)
                                         if p == FULL}),
            "lag": round(time.time() - oldest, 3) if oldest else 0.0,
            "last_success": stored["last_success"],
            "last_error": stored["last_error"],
            "last_error_at": stored["last_error_at"],
            "retry_at": self.retry_at or None,
            "progress": self.progress,
            "runs": stored["runs"] or 0,
            "refused": sorted(self.refused),
        }


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

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._watch(self.runtime.cluster.sync_sets)
        for node in self.runtime.cluster.nodes:
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
            changed = [s.name for s in new.sync_sets if s not in old.sync_sets]
            if changed:
                self.full_sync(sets=changed, reason="sync sets changed")
        old_nodes = {n.name: n for n in old.nodes}
        new_nodes = {n.name: n for n in new.nodes}
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
                if moved_to and can_rename:
                    worker.renames.append((sset, path.rstrip("/"), moved_to))
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
        per_node = {n: [(s, FULL) for s in targets] for n in names if n in self.workers}
        for n in per_node:
            reasons = self.workers[n].full_reason
            for s in targets:  # one full sync for two reasons: it audits only if both do
                known = reasons.get(s)
                reasons[s] = reason if known is None or known == reason else "mixed"
        self._record(per_node)
        return self.store.seq

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
            "missed_changes": dict(self.missed_changes),
        }

    def progress(self, seq: int, nodes: list[str] | None = None) -> dict:
        """How far a full sync queued as ``seq`` has come, per node."""
        out = {}
        for name, w in self.workers.items():
            if nodes and name not in nodes:
                continue
            done = all(w.full_done.get(s, 0) >= seq for s in self.sets)
            out[name] = {"done": done, "progress": 100 if done else w.progress,
                         "state": w.state, "last_error": self.store.state(name)["last_error"],
                         "retry_at": w.retry_at or None,
                         "refused": sorted(s for s, q in w.refused.items() if q >= seq)}
        return out


def _parent(path: str) -> str:
    stripped = path.rstrip("/")
    return stripped.rsplit("/", 1)[0] + "/" if "/" in stripped else ""


def _distinct_dirs(entries: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """One representative entry per (set, parent directory), to test escalation cheaply."""
    seen: dict[tuple[str, str], tuple[str, str]] = {}
    for sset, path in entries:
        seen.setdefault((sset, _parent(path)), (sset, path))
    return list(seen.values())


def _last_line(text: str) -> str:
    """The line that says what went wrong (rsync ends with a generic "rsync error: ... code N").

    A full disk on the node often ends as a broken pipe on our side: said plainly."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    full = next((line for line in lines if "No space left on device" in line), None)
    if full is not None:
        return f"the node's disk is full (ENOSPC): {full}"
    useful = [line for line in lines if not line.startswith("rsync error:")]
    return (useful or lines or ["(no message)"])[-1]
