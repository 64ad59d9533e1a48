"""Run rsync for one batch of one sync set to one node, and say what its exit means.

A partial batch is a NUL-separated ``--files-from`` list with
``--delete-missing-args``: a listed path missing on the manager is deleted on
the node, unlisted siblings are untouched, and the list is read in linear time
(a filter list with one rule per path is quadratic in rsync). Directories are
listed when they must be sent whole (new, moved in, escalated); ``-r`` with
``--delete`` makes those recursive and exact. A full sync is ``-a --delete``
of the whole tree. Both keep the set's excludes: never sent, and, without
``--delete-excluded``, never deleted on nodes.

Every file lands through rsync's temp file + rename, so a node never shows a
partial file. ``--delay-updates`` also holds the renames of a batch until all
its files are in, so a small batch (a zone and its include, a config and its
template) appears at once; bulk batches and full syncs go without it (it
costs a third more time there, and a bulk upload has no such consistency).
``--timeout``/``--contimeout`` are always set: a dead node costs seconds.
A peer that trickles, or an rsync that hangs for any other reason, meets the
wall-clock cap (``Job.limit``, the ``sync_run_limit`` option): rsync runs in
a process group of its own (with its ssh), which is killed when the cap
passes; the run then ends as an I/O timeout (exit 30), the node's problem.

A full sync never deletes most of a node's copy by surprise (a set pointed at
the wrong tree, a manager with an empty disk): :func:`run_full` first runs with
``--max-delete=0``, which transfers everything, deletes nothing and counts
what it would delete (exit 25). Nothing to delete, the common case, costs
nothing more. Otherwise, unless the deletions are more than ``mass_delete``
files *and* more than half of the node's files, a second run deletes exactly
that many (``--max-delete=N``); past that the sync is refused until an
operator allows it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import contextlib
import os
import re
import signal
import subprocess
import tempfile
import threading
from dataclasses import dataclass, field
from typing import Callable

RSYNC = "rsync"
# -8: names in itemized output as bytes, not escaped; -H: hard links stay links (within a
# batch's list, or the whole tree for a full sync); --sparse: holes stay holes on the node
BASE = ["-a", "--mkpath", "-8", "-H", "--sparse"]

# rsync exit codes (rsync(1) "EXIT VALUES")
OK = 0
PARTIAL = (23, 24)          # partial transfer / vanished files: requeue the batch's paths
CONNECTION = (5, 10, 12, 30, 35, 255)  # daemon refused, socket, protocol stream, timeouts, ssh
MAX_DELETE = 25             # --max-delete stopped deletions
MASS_DELETE = 1000          # files a full sync may delete without asking, however small the node
TIMEOUT = 30                # rsync's "timeout in data send/receive": a run stopped by Job.limit too
RUN_LIMIT = 6 * 3600.0      # seconds one rsync run may take at the most (sync_run_limit)
# anything else is an error of configuration or of the node (syntax, bad paths, file I/O...)


@dataclass
class Result:
    """How an rsync run ended: ``outcome`` is ok, partial, connection or error."""

    code: int
    outcome: str
    stderr: str = ""
    files: int = 0
    seconds: float = 0.0
    items: list[bytes] = field(default_factory=list)  # itemized lines: b"%i %n" (names as bytes)
    stats: dict[str, int] = field(default_factory=dict)  # --stats: "files", "created files"...
    skipped_deletes: int = 0  # deletions --max-delete held back


def classify(code: int) -> str:
    if code == OK:
        return "ok"
    if code in PARTIAL:
        return "partial"
    if code in CONNECTION:
        return "connection"
    return "error"


@dataclass
class Job:
    """One rsync invocation: ``paths`` empty means the whole set."""

    source: str            # the set's root on the manager
    destination: str       # the rsync destination for the set's root on the node
    transport_args: list[str]
    exclude: tuple[str, ...] = ()
    paths: list[str] = field(default_factory=list)
    full: bool = False
    timeout: int = 30
    contimeout: int = 10
    limit: float = RUN_LIMIT  # wall-clock seconds before the run's process group is killed
    dry_run: bool = False
    checksum: bool = False
    progress: Callable[[int], None] | None = None
    lines: list[str] = field(default_factory=list)  # itemized output of a dry run
    delay_updates: bool = True
    ignore_times: bool = False  # send listed files even when size and mtime match
    max_delete: int | None = None  # --max-delete (and --stats, to size the node's copy)

    def argv(self) -> list[str]:
        argv = [RSYNC, *BASE, f"--timeout={self.timeout}", *self.transport_args]
        if self.delay_updates:
            argv.append("--delay-updates")
        if self.destination.startswith("rsync://"):
            argv.append(f"--contimeout={self.contimeout}")
        argv += [f"--exclude={pattern}" for pattern in self.exclude]
        if self.dry_run:
            argv += ["-n", "-i"]
        else:
            argv += ["--out-format=%i %n"]
        if self.checksum:
            argv.append("--checksum")
        if self.ignore_times:
            argv.append("--ignore-times")
        if self.progress is not None:
            argv += ["--info=progress2", "--no-inc-recursive"]
        argv.append("--delete")
        if self.max_delete is not None:
            argv += [f"--max-delete={self.max_delete}", "--stats"]
        if not self.full:
            argv += ["-r", "--files-from=-", "--from0", "--delete-missing-args"]
        return argv + [self.source.rstrip("/") + "/", self.destination.rstrip("/") + "/"]

    def stdin(self) -> bytes | None:
        if self.full:
            return None
        return b"".join(p.rstrip("/").encode("utf-8", "surrogateescape") + b"\0" for p in self.paths)


_PROGRESS = re.compile(rb"\s(\d{1,3})%\s")
_ITEM = (b">", b"<", b"c", b"*", b"h", b".")
_STAT = re.compile(rb"Number of ([a-z ]+): ([\d,]+)")
_SKIPPED = re.compile(r"Deletions stopped due to --max-delete limit \((\d+) skipped\)")


async def run_full(job: Job, mass_delete: int = MASS_DELETE, allow: bool = False) -> Result:
    """A full sync (``job.full``) that refuses to delete most of a node's copy.

    Outcome ``refused`` when the node holds more than ``mass_delete`` files the
    manager does not and they are more than half of the node's files; with
    ``allow`` it deletes them anyway.
    """
    if allow:
        return await run(job)
    first = await run(dataclasses.replace(job, max_delete=0))
    if first.code != MAX_DELETE or first.skipped_deletes <= 0:
        return first
    wanted = first.skipped_deletes
    node_files = first.stats.get("files", 0) - first.stats.get("created files", 0) + wanted
    if wanted > mass_delete and 2 * wanted > node_files:
        return Result(MAX_DELETE, "refused",
                      f"full sync refused: it would delete {wanted} of the node's {node_files} "
                      f"files (more than {mass_delete} and more than half); if that is intended: "
                      "clusterkit sync now --allow-delete, or allow_mass_delete = true in the "
                      "[[sync]] table", first.files, first.seconds, items=first.items,
                      stats=first.stats, skipped_deletes=wanted)
    second = await run(dataclasses.replace(job, max_delete=wanted, progress=None))
    second.seconds += first.seconds
    second.items = first.items + second.items
    return second


async def run(job: Job) -> Result:
    """Run ``job``; never raises for rsync's own failures (they are in the Result).

    rsync is started with :class:`subprocess.Popen` (vfork: microseconds, where
    uvloop's fork of a large daemon costs tens of milliseconds on the loop) and
    waited for on a thread of its own, so any number of nodes run in parallel.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    stdin = job.stdin()
    progress = job.progress
    stderr = tempfile.TemporaryFile() if progress is not None else subprocess.PIPE
    try:
        proc = subprocess.Popen(
            job.argv(), stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=stderr, env={**os.environ, "LC_ALL": "C"},
            process_group=0)  # rsync and its ssh: killed together
    except OSError as exc:
        return Result(127, "error", f"cannot run rsync: {exc}")

    def wait() -> tuple[bytes, bytes]:
        if progress is None:
            return proc.communicate(stdin)
        out = []
        buf = b""
        while chunk := proc.stdout.read1(65536):
            buf += chunk
            *lines, buf = re.split(rb"[\r\n]", buf)
            for line in lines:
                match = _PROGRESS.search(line)
                if match:
                    loop.call_soon_threadsafe(progress, int(match.group(1)))
                elif line.startswith(_ITEM) or line.startswith(b"Number of "):
                    out.append(line)
        proc.wait()
        stderr.seek(0)
        return b"\n".join(out), stderr.read()

    waiting = _in_thread(loop, wait)
    try:
        out, err = await asyncio.wait_for(asyncio.shield(waiting), job.limit)
    except TimeoutError:
        _kill_group(proc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiting), 10)  # the pipes close with the group
        return Result(TIMEOUT, classify(TIMEOUT),
                      f"rsync stopped after {job.limit:g}s, its wall-clock limit (sync_run_limit): "
                      "the node stalls, or the transfer is larger than the limit allows",
                      seconds=loop.time() - started)
    except asyncio.CancelledError:
        _kill_group(proc)
        raise
    finally:
        # the reading thread may outlive a cancel or a timeout: the file closes after it, and
        # what it raised then is taken here (an unretrieved one is logged at collection)
        waiting.add_done_callback(lambda done: (done.cancelled() or done.exception(),
                                                progress is not None and stderr.close()))
    lines = [line for line in out.split(b"\n") if line.startswith(_ITEM)]
    if job.dry_run:
        job.lines = [line.decode("utf-8", "replace") for line in lines]
    stderr_text = err.decode("utf-8", "replace").strip()
    skipped = _SKIPPED.search(stderr_text)
    return Result(proc.returncode, classify(proc.returncode), stderr_text[-2000:], len(lines),
                  loop.time() - started, items=lines,
                  stats={m[1].decode(): int(m[2].replace(b",", b"")) for m in _STAT.finditer(out)},
                  skipped_deletes=int(skipped.group(1)) if skipped else 0)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL rsync's process group (a stopped process dies too), while rsync is not reaped yet."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _in_thread(loop: asyncio.AbstractEventLoop, fn) -> asyncio.Future:
    """Run ``fn`` on a new thread (not a bounded pool: one per running rsync)."""
    future = loop.create_future()

    def target() -> None:
        try:
            outcome = (fn(), None)
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            outcome = (None, exc)
        try:
            loop.call_soon_threadsafe(_settle, future, *outcome)
        except RuntimeError:  # the loop closed meanwhile (the daemon stopped): nobody waits
            pass

    threading.Thread(target=target, name="rsync", daemon=True).start()
    return future


def _settle(future: asyncio.Future, result, exc) -> None:
    if future.cancelled():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
