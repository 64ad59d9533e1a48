"""Replication to one node: its queue, its rsync runs, and the back-off of each of its sets.

The planner (:mod:`clusterkit.sync.replicator`) records changes and hands them
to the node's :class:`NodeWorker`, which sends what is pending, set by set, one
batch at a time. A failure is judged where it belongs:

- **a set fails** (rsync exit 3 "daemon has excluded destination", a path the
  node cannot write, exit 23...): that set backs off on its own schedule —
  exponential from ``backoff_min`` to ``backoff_max``, ±50 % jitter — with its
  error and retry time; its entries wait while the node's other sets keep
  going out at once;
- **the node cannot be reached** (rsync exit 10, 12, 30, 35, 255: socket,
  stream, timeouts, ssh): the node backs off as a whole, since every other set
  would only wait for the same timeout again.

Every wait is interruptible: :meth:`NodeWorker.retry_now` (health saw the node
up, ``clusterkit sync now``) cuts any back-off short.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import clusterkit.standby.fence as fence
from clusterkit.sync import rsync
from clusterkit.sync.paths import ancestors, transfer_list
from clusterkit.sync.store import FULL
from clusterkit.sync.watcher import PROBE_EXCLUDE

if TYPE_CHECKING:
    from clusterkit.sync.replicator import Replicator

log = logging.getLogger("clusterkit.sync")

UNREACHABLE = (10, 12, 30, 35, 255)  # the node, not a set (5, a daemon's refusal, is per set)
AUDITED = ("periodic", "watcher failing")  # full syncs that only find what the watcher missed

Entries = dict[str, tuple[int, float]]  # path -> (seq, since)


@dataclass
class Backoff:
    """Failures in a row of a node, or of one set on it, and when to try again."""

    failures: int = 0
    error: str = ""
    error_at: float | None = None  # wall clock
    due: float = 0.0               # time.monotonic() of the next try (past: now)

    def failed(self, error: str, settings, now: float) -> float:
        """Count a failure; returns the delay before the next try."""
        self.failures += 1
        step = settings.backoff_min * 2.0 ** min(self.failures - 1, 60)
        delay = min(settings.backoff_max, step) * random.uniform(0.5, 1.5)
        self.error, self.error_at, self.due = error, time.time(), now + delay
        return delay

    def report(self, now: float) -> dict:
        return {"failures": self.failures, "error": self.error, "error_at": self.error_at,
                "retry_at": time.time() + self.due - now if self.due > now else None}


class NodeWorker:
    """Everything about replicating to one node: its queue, its rsync runs, its back-offs."""

    def __init__(self, replicator: Replicator, node):
        self.r = replicator
        self.node = node
        self.name = node.name
        self.pending: dict[str, Entries] = {}   # set -> entries not yet taken
        self.inflight: dict[str, Entries] = {}  # set -> entries of the batch being sent
        self.per_dir: dict[str, Counter] = {}   # set -> pending entries per parent directory
        self.wake = asyncio.Event()
        self.last_change = 0.0
        self.state = "idle"
        self.node_backoff = Backoff()              # the node unreachable: every set waits
        self.set_backoff: dict[str, Backoff] = {}  # a failing set: only its entries wait
        self.vanished: Counter = Counter()         # set -> exit 24 in a row
        self.progress: int | None = None
        self.full_done: dict[str, int] = {}    # set -> seq of the last full sync that landed
        self.full_failed: dict[str, int] = {}  # set -> seq of the last full sync that failed
        self.renames: list[tuple[str, str, str]] = []  # (set, src, dst) to apply on the node first
        self.taken_renames: list[tuple[str, str, str]] = []
        self.task: asyncio.Task | None = None
        self.full_reason: dict[str, str] = {}  # set -> why its pending full sync was queued
        self.audited: set[str] = set()  # sets of the batch in flight whose full sync audits
        self.allow_delete: set[str] = set()    # sets whose next full sync may delete en masse
        self.refused: dict[str, int] = {}      # set -> seq of a full sync the guard refused

    # ----------------------------------------------------------- queueing

    def covered(self, sset: str, path: str) -> bool:
        """Already pending (not in flight) through itself or a pending parent directory?"""
        p = self.pending.get(sset)
        if not p:
            return False
        if FULL in p or path in p:
            return True
        return any(a + "/" in p for a in ancestors(path))

    def add(self, sset: str, path: str, seq: int, since: float) -> None:
        entries = self.pending.setdefault(sset, {})
        if path in entries:
            entries[path] = (seq, entries[path][1])
        else:
            entries[path] = (seq, since)
            self.per_dir.setdefault(sset, Counter())[parent_of(path)] += 1
        self.last_change = asyncio.get_running_loop().time()
        self.wake.set()

    def note_rename(self, sset: str, src: str, dst: str) -> None:
        """A move the node may replay as a rename (not while the node or the set fails)."""
        if not self.node_backoff.failures and sset not in self.set_backoff:
            self.renames.append((sset, src, dst))

    def escalate(self, sset: str, path: str) -> None:
        """Replace many pending entries by their directory, or the whole set."""
        s = self.r.settings
        entries = self.pending.get(sset, {})
        if len(entries) > s.set_threshold and FULL not in entries:
            self._replace(sset, lambda p: True, FULL)
            return
        parent = parent_of(path)
        if parent and self.per_dir.get(sset, Counter())[parent] > s.dir_threshold:
            prefix = parent.rstrip("/") + "/"
            self._replace(sset, lambda p: p.startswith(prefix) and p != prefix, prefix)

    def _replace(self, sset: str, match, entry: str) -> None:
        entries = self.pending[sset]
        drop = [p for p in entries if match(p)]
        since = min((entries[p][1] for p in drop), default=time.time())
        seq = self.r.store.replace(self.name, sset, drop, entry)
        per_dir = self.per_dir[sset]
        for p in drop:
            del entries[p]
            per_dir[parent_of(p)] -= 1
        log.info("%s: %d pending entries of %s become %s", self.name, len(drop), sset,
                 entry or "a full sync")
        self.add(sset, entry, seq, since)

    def take(self, sets) -> dict[str, dict[str, int]]:
        """Move the pending entries of ``sets`` in flight: ``{set: {path: seq}}``."""
        batch: dict[str, dict[str, int]] = {}
        for sset in sets:
            entries = self.pending.pop(sset, {})
            self.per_dir.pop(sset, None)
            if entries:
                batch[sset] = {path: seq for path, (seq, since) in entries.items()}
                self.inflight.setdefault(sset, {}).update(entries)
        self.taken_renames = [r for r in self.renames if r[0] in batch]
        self.renames = [r for r in self.renames if r[0] not in batch]
        self.audited = {s for s in batch
                        if FULL in batch[s] and self.full_reason.pop(s, "") in AUDITED}
        return batch

    def requeue(self, sset: str, sent: dict[str, int]) -> None:
        inflight = self.inflight.get(sset, {})
        for path in sent:
            seq, since = inflight.pop(path, (sent[path], time.time()))
            if path not in self.pending.get(sset, ()):
                self.add(sset, path, seq, since)

    def landed(self, sset: str, sent: dict[str, int]) -> None:
        self._out_of_flight(sset, sent)
        if FULL in sent:
            self.full_done[sset] = max(self.full_done.get(sset, 0), sent[FULL])

    def _out_of_flight(self, sset: str, sent: dict[str, int]) -> None:
        inflight = self.inflight.get(sset, {})
        for path in sent:
            inflight.pop(path, None)

    def forget(self, sset: str) -> None:
        """The set left the cluster: nothing of it is sent or shown any more."""
        self.pending.pop(sset, None)
        self.per_dir.pop(sset, None)
        self.renames = [r for r in self.renames if r[0] != sset]
        if self.set_backoff.pop(sset, None) and not self.set_backoff and not self.node_backoff.failures:
            self.r.store.recovered(self.name)  # its error was the node's last one

    def retry_now(self, reason: str) -> None:
        """Cut every back-off short (the node was seen up, an operator asked)."""
        now = time.monotonic()
        waiting = [b for b in (self.node_backoff, *self.set_backoff.values()) if b.due > now]
        for b in waiting:
            b.due = 0.0
        if waiting:
            log.info("%s: %s: back-off cut short, retrying now", self.name, reason)
        self.wake.set()

    # ------------------------------------------------------------- sending

    def ready(self, now: float) -> list[str]:
        """Sets with pending entries that may go now."""
        if self.node_backoff.due > now:
            return []
        return [s for s, entries in self.pending.items()
                if entries and not (s in self.set_backoff and self.set_backoff[s].due > now)]

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        busy = False
        while True:
            self.wake.clear()
            if not self.ready(time.monotonic()):
                busy = False
                self.state = "backoff" if self.node_backoff.due > time.monotonic() else "idle"
                await self._wait()
                continue
            if not busy:
                await self._settle(loop)
            stale = self.r.stale()
            if stale:  # never a push from a stale manager: the batch waits for the demotion
                self._node_failed(f"not sent: {stale}")
                continue
            batch = self.take(self.ready(time.monotonic()))
            self.state = "sending"
            try:
                await self._send(batch)
            except Exception:  # a bug must not silence this node for good: retry later
                log.exception("%s: sending a batch failed", self.name)
                for sset, sent in batch.items():
                    inflight = self.inflight.get(sset, {})
                    self.requeue(sset, {p: q for p, q in sent.items() if p in inflight})
                self._node_failed("internal error while sending (see the daemon's log)")
            busy = True

    async def _wait(self) -> None:
        """Until something is added, a back-off ends, or :meth:`retry_now`."""
        now = time.monotonic()
        dues = [b.due for s, b in self.set_backoff.items() if self.pending.get(s)]
        if self.pending:
            dues.append(self.node_backoff.due)
        dues = [d for d in dues if d > now]
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.wake.wait(), min(dues) - now if dues else None)

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

    async def _send(self, batch: dict[str, dict[str, int]]) -> None:
        """Send one batch, set by set, full syncs first; judge each failure (set or node)."""
        order = sorted(batch, key=lambda name: FULL not in batch[name])
        for index, name in enumerate(order):
            sent = batch[name]
            sset = self.r.sets.get(name)
            if sset is None:  # the set was removed meanwhile
                self.landed(name, sent)
                continue
            result = await self._fenced(sset, sent)
            if result.outcome in ("fenced", "early exec"):  # nothing more goes to this node
                for other in order[index:]:
                    self.requeue(other, batch[other])
                if result.outcome == "fenced":  # it named a higher epoch: stop everything
                    self.r.refused(f"{self.name} refused the push: {last_line(result.stderr)}")
                    self._node_failed(f"refused by the node's epoch check: {last_line(result.stderr)}")
                else:
                    self._node_failed(
                        f"refused by the node's rsync daemon before the transfer "
                        f"({last_line(result.stderr)}): its epoch check says a newer manager "
                        "exists, or the check cannot run there (its daemon's log tells)")
                return
            if result.outcome == "ok":
                self._landed_ok(name, sent, result)
                continue
            if result.outcome == "refused":  # files were sent, deletions held: an operator decides
                self.r.store.done(self.name, name, sent)
                self._out_of_flight(name, sent)
                self.refused[name] = sent.get(FULL, 0)
                self.r.store.record(self.name, False, f"set {name}: {result.stderr}")
                log.error("%s: set %s: %s", self.name, name, result.stderr)
                continue
            self.requeue(name, sent)
            if result.code == 24:
                # Files vanished while sending: normal under churn, their deletions are
                # queued already. Retry at once, unless it keeps happening.
                self.vanished[name] += 1
                if self.vanished[name] < 3:
                    continue
            message = self._describe(name, result)
            if result.code in UNREACHABLE:
                rest = order[index + 1:]
                for other in rest:
                    self.requeue(other, batch[other])
                self._node_failed(message, logging.WARNING)
                return
            self._set_failed(name, message, result)

    def _describe(self, sset: str, result: rsync.Result) -> str:
        message = f"rsync exit {result.code} ({result.outcome}): {last_line(result.stderr)}"
        if self.node.transport == "rsyncd" and result.code in (3, 5):
            message += (f"; if the node's rsync daemon does not offer {sset}'s path yet: "
                        f"clusterkit sync rsyncd-conf {self.name}, then install it on the node")
        return message

    def _landed_ok(self, name: str, sent: dict[str, int], result: rsync.Result) -> None:
        self.vanished.pop(name, None)
        if name in self.audited:
            self._missed(name, sent, result)
        self.r.store.done(self.name, name, sent)
        self.landed(name, sent)
        self.refused.pop(name, None)
        self.r.store.record(self.name, True, files=result.files)
        was_set = self.set_backoff.pop(name, None)
        if was_set is not None:
            log.info("%s: set %s replicates again after %d failed attempts", self.name, name,
                     was_set.failures)
        was_node = self.node_backoff
        if was_node.failures:
            log.info("%s: replication works again after %d failed batches", self.name,
                     was_node.failures)
            self.node_backoff = Backoff()
        if (was_set is not None or was_node.failures) and not self.set_backoff:
            self.r.store.recovered(self.name)

    def _mark_full_failed(self, sets) -> None:
        """The full syncs queued for ``sets`` failed this time (``sync now --wait`` reports it)."""
        for sset in sets:
            seq = self.pending.get(sset, {}).get(FULL, (0, 0.0))[0]
            if seq:
                self.full_failed[sset] = max(self.full_failed.get(sset, 0), seq)

    def _set_failed(self, name: str, message: str, result: rsync.Result) -> None:
        self._mark_full_failed([name])
        delay = self.set_backoff.setdefault(name, Backoff()).failed(message, self.r.settings,
                                                                     time.monotonic())
        self.renames = [r for r in self.renames if r[0] != name]
        self.r.store.record(self.name, False, f"set {name}: {message}")
        level = logging.ERROR if result.outcome == "error" else logging.WARNING
        log.log(level, "%s: set %s: %s; %d paths wait, retry in %.1fs (the node's other sets "
                "go on)", self.name, name, message, len(self.pending.get(name, ())), delay)

    def _node_failed(self, message: str, level: int = logging.ERROR) -> None:
        self._mark_full_failed(self.pending)
        delay = self.node_backoff.failed(message, self.r.settings, time.monotonic())
        self.renames.clear()
        self.r.store.record(self.name, False, message)
        log.log(level, "%s: %s; every set waits (%d paths), retry in %.1fs", self.name, message,
                sum(len(e) for e in self.pending.values()), delay)

    def _missed(self, sset: str, sent: dict[str, int], result: rsync.Result) -> None:
        """Count what a periodic or covering full sync sent that no event had announced."""
        announced = set(sent) | set(self.pending.get(sset, ())) | set(self.inflight.get(sset, ()))
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

    async def _fenced(self, sset, sent: dict[str, int]) -> rsync.Result:
        """:meth:`_rsync`, unless the node refuses this manager's epoch: outcome "fenced"
        when the refusal names the epochs (a local node's epoch file is read here, an ssh
        node's forced command says), "early exec" when an rsync daemon's check refused
        without a word (:mod:`clusterkit.standby.fence`)."""
        if self.node.transport == "local":
            why = fence.refusal(self.r.runtime.cluster.host_state_dir(self.name), self.r.epoch)
            if why is not None:
                return rsync.Result(1, "fenced", why)
        result = await self._rsync(sset, sent)
        if result.outcome != "ok" and fence.REFUSED in result.stderr:
            return dataclasses.replace(result, outcome="fenced")
        if result.outcome != "ok" and "@ERROR: early exec failed" in result.stderr:
            return dataclasses.replace(result, outcome="early exec")
        return result

    async def _rsync(self, sset, sent: dict[str, int]) -> rsync.Result:
        r = self.r
        kind = r.registry.transports[self.node.transport]
        source = r.runtime.local_path(sset.path)
        full = FULL in sent
        if not full and kind.rename is not None:
            await self._renames(kind, sset)

        def job(**kw) -> rsync.Job:
            return rsync.Job(source=source, destination=kind.destination(self.node, sset.path),
                             transport_args=list(kind.rsync_args(self.node, r.runtime)),
                             exclude=(*sset.exclude, PROBE_EXCLUDE),
                             timeout=r.settings.timeout, contimeout=r.settings.contimeout,
                             limit=r.settings.run_limit, **kw)

        jobs = []
        if full:
            self.progress = 0
            jobs.append(job(full=True, delay_updates=False,
                            progress=lambda pct: setattr(self, "progress", pct)))
        # Paths recorded as changed go by name even beside a full sync (whose quick check
        # would miss a change of the same size and mtime: a queue a promoted standby took
        # over from the manager holds such paths). Changed files are sent even when size and
        # mtime match (two writes within one tick of the filesystem clock look identical to
        # rsync's quick check); directories sent whole are compared as usual. One file is
        # atomic by itself, and whole directories can hold any number of files:
        # --delay-updates for the rest.
        listed = transfer_list(source, [p for p in sent if p != FULL])
        singles = [p for p in listed if not p.endswith("/")]
        wholes = [p for p in listed if p.endswith("/")]
        if singles:
            jobs.append(job(paths=singles, ignore_times=True,
                            delay_updates=1 < len(singles) <= r.settings.atomic_batch))
        if wholes and not full:
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

        Only while the node and the set are healthy: a rename is an optimisation
        (rsync sends what moved anyway), never worth a stall.
        """
        if self.node_backoff.failures or sset.name in self.set_backoff:
            return
        for name, src, dst in self.taken_renames:
            if name != sset.name:
                continue
            try:
                done = await kind.rename(self.node, os.path.join(sset.path, src),
                                         os.path.join(sset.path, dst), self.r.runtime)
            except Exception as exc:
                log.debug("%s: rename %s -> %s on the node failed: %s", self.name, src, dst, exc)
                return
            log.debug("%s: %s %s -> %s on the node", self.name, "renamed" if done else "did not rename",
                      src, dst)

    # ------------------------------------------------------------- reports

    def last_error(self) -> tuple[str | None, float | None]:
        """What is failing now, the latest first; else the stored error (a refusal...)."""
        now = [(b.error_at, b.error) for b in (self.node_backoff,) if b.failures]
        now += [(b.error_at, f"set {s}: {b.error}") for s, b in self.set_backoff.items()]
        if now:
            at, error = max(now)
            return error, at
        stored = self.r.store.state(self.name)
        return stored["last_error"], stored["last_error_at"]

    def retry_at(self) -> float | None:
        """When the node (or, else, its first failing set) is tried again: wall clock."""
        now = time.monotonic()
        dues = [b.due for b in (self.node_backoff, *self.set_backoff.values()) if b.due > now]
        return time.time() + min(dues) - now if dues else None

    def status(self) -> dict:
        now = time.monotonic()
        entries = [e for group in (self.pending, self.inflight) for es in group.values()
                   for e in es.values()]
        oldest = min((since for _, since in entries), default=None)
        stored = self.r.store.state(self.name)
        error, error_at = self.last_error()
        return {
            "transport": self.node.transport,
            "state": self.state,
            "pending": len(entries),
            "full_sync_pending": sorted({s for group in (self.pending, self.inflight)
                                         for s, es in group.items() if FULL in es}),
            "lag": round(time.time() - oldest, 3) if oldest else 0.0,
            "last_success": stored["last_success"],
            "last_error": error,
            "last_error_at": error_at,
            "retry_at": self.node_backoff.report(now)["retry_at"],
            "failing_sets": {s: {**b.report(now), "pending": len(self.pending.get(s, ()))}
                             for s, b in sorted(self.set_backoff.items())},
            "progress": self.progress,
            "runs": stored["runs"] or 0,
            "refused": sorted(self.refused),
        }


def parent_of(path: str) -> str:
    stripped = path.rstrip("/")
    return stripped.rsplit("/", 1)[0] + "/" if "/" in stripped else ""


def last_line(text: str) -> str:
    """The line that says what went wrong (rsync ends with a generic "rsync error: ... code N").

    A full disk on the node often ends as a broken pipe on our side: said plainly."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    full = next((line for line in lines if "No space left on device" in line), None)
    if full is not None:
        return f"the node's disk is full (ENOSPC): {full}"
    useful = [line for line in lines if not line.startswith("rsync error:")]
    return (useful or lines or ["(no message)"])[-1]
