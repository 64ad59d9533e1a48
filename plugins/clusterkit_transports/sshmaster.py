"""One persistent ssh connection per node (OpenSSH ``ControlMaster``), shared by every rsync and rename.

Why: an ssh connection costs a TCP and key exchange, an authentication and a
round trip per step (about 300 ms between two namespaces of one machine); a
session on an open master costs one round trip. Without a master every batch
over ssh paid the handshake, four times what a batch over rsyncd costs.

How: the master is ``ssh -N`` with ``ControlMaster=yes`` and
``ControlPersist``, which backgrounds itself once authenticated, its socket in
``STATE/ssh/HASH`` (16 characters: the path must fit a unix socket; 0700 directory: the socket is a logged-in session for
whoever can connect). The hash covers user, address, port, key and
known_hosts, so a changed node gets a new master. Batches use it with
``ControlMaster=no``: should the socket be gone or dead, ssh itself falls back
to a direct connection, so a failing master never stalls replication; it
only costs the handshake again.

When: started on a node's first batch (that batch goes direct, the master
comes up beside it); before each later batch its process is looked at (a
``/proc`` read, no subprocess) and a dead one is started again, with back-off
while it cannot be created. Closed with ``ssh -O exit`` when the daemon stops
or the node is removed or changed. ``ControlPersist`` ends a master left
behind by a killed daemon after ``PERSIST`` idle seconds; a daemon that finds
a live one on its socket (``ssh -O check``) adopts it.

Every state change is logged and shown under ``ssh`` in ``clusterkit status``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import re
import signal
import tempfile
import time

from clusterkit.definition.files import private_dir

log = logging.getLogger("clusterkit.transports.ssh")

NAME = "ssh-masters"  # runtime.components key
PERSIST = 600         # seconds an idle master outlives its last client (a killed daemon's orphan)
START_TIMEOUT = 20.0  # ConnectTimeout (5 s) plus authentication, with room
MAX_PATH = 90         # sun_path is 108 bytes; ssh first binds PATH.<16 random chars>, then renames
SAFE_PATH = re.compile(r"[A-Za-z0-9/._+-]+")  # no spaces, quotes or ssh %-tokens
BACKOFF_MAX = 60.0


class Master:
    """The master connection to one node: its socket, its process and what happened to it."""

    def __init__(self, node_name: str, command: list[str], target: str, path: str):
        self.node = node_name
        self.command = command  # ssh and the node's options, without a control path
        self.target = target
        self.path = path
        self.state = "new"      # new, starting, up, direct (not usable now), closed
        self.pid: int | None = None
        self.reason = ""
        self.since = time.time()
        self.starts = 0
        self.failures = 0
        self.retry_at = 0.0     # monotonic: no start attempt before

    def usable(self) -> bool:
        """The master process is there (a ``/proc`` read: cheap enough for every batch)."""
        return self.state == "up" and self.pid is not None and _is_master(self.pid, self.path)

    def client_options(self) -> list[str]:
        return ["-o", "ControlMaster=no", "-o", f"ControlPath={self.path}"]

    def _set(self, state: str, reason: str = "") -> None:
        self.state, self.reason, self.since = state, reason, time.time()

    async def start(self) -> None:
        """Create the master (or adopt a live one on our socket); on failure say why and back off."""
        self._set("starting")
        self.starts += 1
        private_dir(os.path.dirname(self.path))
        if os.path.lexists(self.path):
            pid = await self.check()
            if pid is None:
                os.unlink(self.path)  # a dead master's socket: ssh would refuse to bind
            else:
                return self._up(pid, "adopted the master already running on its socket")
        argv = [*self.command, "-o", "ControlMaster=yes", "-o", f"ControlPath={self.path}",
                "-o", f"ControlPersist={PERSIST}", "-N", self.target]
        with tempfile.TemporaryFile() as err:  # a file, not a pipe: the master may keep it open
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=err, start_new_session=True)
            try:
                code = await asyncio.wait_for(proc.wait(), START_TIMEOUT)
            except (asyncio.TimeoutError, asyncio.CancelledError) as exc:
                proc.kill()
                await proc.wait()
                if isinstance(exc, asyncio.CancelledError):
                    raise
                code = None
            err.seek(0)
            text = err.read(4096).decode("utf-8", "replace")
        lines = [line for line in text.splitlines()
                 if line.strip() and not line.startswith("Warning: Permanently added")]
        if code != 0:
            why = "timed out" if code is None else f"exit {code}"
            return self._failed(f"ssh {why}: {lines[-1] if lines else 'no message'}")
        pid = await self.check()
        if pid is None:
            return self._failed("the master started but `ssh -O check` does not answer")
        self._up(pid, "")

    def _up(self, pid: int, note: str) -> None:
        if self.state == "closed":  # closed while it was starting: do not leave it behind
            _terminate(pid, self.path)
            return
        self.pid, self.failures = pid, 0
        self._set("up", note)
        log.info("ssh master to %s is up (pid %d, %s)%s", self.node, pid, self.path,
                 f": {note}" if note else "")

    def _failed(self, reason: str) -> None:
        if self.state == "closed":
            return
        self.failures += 1
        delay = min(BACKOFF_MAX, 2.0 ** (self.failures - 1))
        self.retry_at = time.monotonic() + delay
        self._set("direct", reason)
        log.warning("ssh master to %s cannot be created (%s): batches use direct connections "
                    "(a handshake each); next try in %.0fs", self.node, reason, delay)

    def died(self) -> None:
        log.warning("ssh master to %s (pid %s) is gone: this batch connects directly, "
                    "a new master is being started", self.node, self.pid)
        self.pid = None
        self._set("direct", "the master connection died; restarting it")

    async def check(self) -> int | None:
        """``ssh -O check``: the pid of the master listening on our socket, or None."""
        proc = await asyncio.create_subprocess_exec(
            *self.command, "-o", f"ControlPath={self.path}", "-O", "check", self.target,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE)
        try:
            _, err = await asyncio.wait_for(proc.communicate(), 5)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return None
        match = re.search(rb"pid=(\d+)", err)
        return int(match.group(1)) if proc.returncode == 0 and match else None

    async def close(self) -> None:
        """``ssh -O exit``; the process is ended by pid if it does not go."""
        was_up, pid = self.state == "up", self.pid
        self._set("closed")
        if not was_up or pid is None:
            return
        if os.path.exists(self.path):
            proc = await asyncio.create_subprocess_exec(
                *self.command, "-o", f"ControlPath={self.path}", "-O", "exit", self.target,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL)
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        for _ in range(20):
            if not _is_master(pid, self.path):
                break
            await asyncio.sleep(0.05)
        else:
            _terminate(pid, self.path)
        log.info("ssh master to %s closed", self.node)

    def status(self) -> dict:
        return {"master": self.state, "pid": self.pid, "since": round(self.since, 3),
                "starts": self.starts, "reason": self.reason, "socket": self.path}


class Masters:
    """The manager daemon's masters, one per ssh node, in ``runtime.components[NAME]``."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.dir = os.path.join(runtime.state_dir, "ssh")
        self.masters: dict[str, Master] = {}
        self.closed = False

    @classmethod
    def of(cls, runtime) -> "Masters":
        masters = runtime.components.get(NAME)
        if masters is None:
            masters = runtime.components[NAME] = cls(runtime)
        return masters

    def options(self, node, command: list[str], target: str) -> list[str]:
        """ssh options that send this connection through the node's master, or ``[]`` (direct).

        Called for every rsync and rename (synchronously: no subprocess here). A
        missing or dead master is (re)started in the background.
        """
        if self.closed:
            return []
        master = self._master(node, command, target)
        if master.usable():
            return master.client_options()
        if master.state == "up":
            master.died()
        if master.state in ("new", "direct") and time.monotonic() >= master.retry_at:
            master.state = "starting"
            self.runtime.spawn(self._start(master), f"ssh-master-{node.name}")
        return []

    def _master(self, node, command: list[str], target: str) -> Master:
        identity = "\0".join([*command, target])
        digest = hashlib.sha256(identity.encode()).digest()[:12]  # 96 bits: never two nodes' socket
        path = os.path.join(self.dir, base64.urlsafe_b64encode(digest).decode())
        master = self.masters.get(node.name)
        if master is not None and master.path == path:
            return master
        if master is not None:  # the node's address, user or key changed
            self.runtime.spawn(master.close(), f"ssh-master-close-{node.name}")
        master = self.masters[node.name] = Master(node.name, command, target, path)
        problem = _path_problem(path)
        if problem:
            master.retry_at = float("inf")
            master._set("direct", problem)
            log.warning("ssh to %s goes without a master connection (a handshake per batch): %s",
                        node.name, problem)
        return master

    async def _start(self, master: Master) -> None:
        try:
            await master.start()
        except OSError as exc:
            master._failed(f"{type(exc).__name__}: {exc}")

    async def forget(self, names) -> None:
        """Close the masters of nodes that were removed (or no longer use ssh)."""
        gone = [self.masters.pop(name) for name in list(names) if name in self.masters]
        await asyncio.gather(*(m.close() for m in gone), return_exceptions=True)

    async def stop(self) -> None:
        self.closed = True
        await self.forget(list(self.masters))

    def status(self) -> dict:
        return {name: m.status() for name, m in sorted(self.masters.items())}


def _path_problem(path: str) -> str | None:
    if len(os.fsencode(path)) > MAX_PATH:
        return (f"the control socket path {path} is {len(os.fsencode(path))} bytes, more than "
                f"{MAX_PATH} (unix sockets take 108): use a shorter state_dir")
    if not SAFE_PATH.fullmatch(path):
        return f"the control socket path {path!r} has characters ssh's ControlPath cannot take"
    return None


def _is_master(pid: int, path: str) -> bool:
    """``pid`` is a live ssh master of ``path`` (it names its socket in its title; a zombie has none)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return os.fsencode(path) in f.read(4096)
    except OSError:
        return False


def _terminate(pid: int, path: str) -> None:
    if _is_master(pid, path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
