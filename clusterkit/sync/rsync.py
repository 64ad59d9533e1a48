"""Run rsync for one batch of one sync set to one node, and say what its exit means.

A partial batch is a NUL-separated ``--files-from`` list with
``--delete-missing-args``: a listed path missing on the manager is deleted on
the node, unlisted siblings are untouched, and the list is read in linear time
(a filter list with one rule per path is quadratic in rsync). Directories are
listed when they must be sent whole (new, moved in, escalated); ``-r`` with
``--delete`` makes those recursive and exact. A full sync is ``-a --delete``
of the whole tree. Both keep the set's excludes: never sent, and, without
``--delete-excluded``, never deleted on nodes.

Every file lands through rsync's temp file + rename; ``--delay-updates``
holds the renames of a batch until all its files are in, so a node never
shows a partial file nor (for small batches) a half-applied batch.
``--timeout``/``--contimeout`` are always set: a dead node costs seconds.
"""

from __future__ import annotations

import asyncio
import os
import re
from dataclasses import dataclass, field
from typing import Callable

RSYNC = "rsync"
BASE = ["-a", "--delay-updates", "--mkpath"]

# rsync exit codes (rsync(1) "EXIT VALUES")
OK = 0
PARTIAL = (23, 24)          # partial transfer / vanished files: requeue the batch's paths
CONNECTION = (5, 10, 12, 30, 35, 255)  # daemon refused, socket, protocol stream, timeouts, ssh
CONFIG = (1, 2, 3, 4, 6, 11, 13, 14)   # syntax, unsupported, bad paths, file I/O on the node...


@dataclass
class Result:
    """How an rsync run ended: ``outcome`` is ok, partial, connection or error."""

    code: int
    outcome: str
    stderr: str = ""
    files: int = 0
    seconds: float = 0.0


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
    dry_run: bool = False
    checksum: bool = False
    progress: Callable[[int], None] | None = None
    lines: list[str] = field(default_factory=list)  # itemized output of a dry run

    def argv(self) -> list[str]:
        argv = [RSYNC, *BASE, f"--timeout={self.timeout}", *self.transport_args]
        if self.destination.startswith("rsync://"):
            argv.append(f"--contimeout={self.contimeout}")
        argv += [f"--exclude={pattern}" for pattern in self.exclude]
        if self.dry_run:
            argv += ["-n", "-i"]
        else:
            argv += ["--out-format=%i %n"]
        if self.checksum:
            argv.append("--checksum")
        if self.progress is not None:
            argv += ["--info=progress2", "--no-inc-recursive"]
        argv.append("--delete")
        if not self.full:
            argv += ["-r", "--files-from=-", "--from0", "--delete-missing-args"]
        return argv + [self.source.rstrip("/") + "/", self.destination.rstrip("/") + "/"]

    def stdin(self) -> bytes | None:
        if self.full:
            return None
        return b"".join(p.rstrip("/").encode("utf-8", "surrogateescape") + b"\0" for p in self.paths)


_PROGRESS = re.compile(rb"\s(\d{1,3})%\s")


async def run(job: Job) -> Result:
    """Run ``job``; never raises for rsync's own failures (they are in the Result)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    stdin = job.stdin()
    try:
        proc = await asyncio.create_subprocess_exec(
            *job.argv(), stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "LC_ALL": "C"})
    except OSError as exc:
        return Result(127, "error", f"cannot run rsync: {exc}")
    files = 0

    async def feed() -> None:
        if stdin is not None:
            try:
                proc.stdin.write(stdin)
                await proc.stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                proc.stdin.close()

    async def read_out() -> None:
        nonlocal files
        buf = b""
        while chunk := await proc.stdout.read(65536):
            buf += chunk
            *lines, buf = re.split(rb"[\r\n]", buf)
            for line in lines:
                match = _PROGRESS.search(line) if job.progress is not None else None
                if match:
                    job.progress(int(match.group(1)))
                elif line[:1] in (b">", b"<", b"c", b"*", b"h", b"."):
                    files += 1
                    if job.dry_run:
                        job.lines.append(line.decode("utf-8", "replace"))

    try:
        _, _, err = await asyncio.gather(feed(), read_out(), proc.stderr.read())
        code = await proc.wait()
    except asyncio.CancelledError:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return Result(code, classify(code), err.decode("utf-8", "replace").strip()[-2000:],
                  files, loop.time() - started)
