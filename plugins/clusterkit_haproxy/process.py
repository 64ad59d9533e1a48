"""HAProxy as a child of the daemon: the binary, the master process and its two sockets.

HAProxy runs in master-worker mode (``-W``) with a master CLI socket (``-S``)
and a Runtime API socket with ``expose-fd listeners``: on a reload (SIGUSR2
to the master) the new worker takes the listening sockets from the old one,
so no connection is refused, and the old worker serves its connections to
their end. ``PR_SET_PDEATHSIG`` makes the kernel stop the master if the
daemon dies without stopping it, so no orphan keeps the VIPs bound.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import logging
import os
import re
import shutil
import signal
import socket
import subprocess

log = logging.getLogger("clusterkit.haproxy")

MIN_VERSION = (2, 2)   # master CLI, expose-fd listeners, server-state-file as used here
MAX_REPLY = 32 << 20   # bytes: `show stat` of thousands of servers stays well below
SUN_PATH = 107         # longest unix socket path (sockaddr_un.sun_path less the NUL)
PR_SET_PDEATHSIG = 1
ALERT = re.compile(r"^\[ALERT\]\s*\(\d+\)\s*:\s*")
VERSION = re.compile(r"HA-?Proxy version (\d+)\.(\d+)(\S*)")


class HAProxyError(Exception):
    """HAProxy is missing, too old, refused a configuration or could not be started."""


def check_binary(binary: str = "haproxy") -> tuple[str, str]:
    """``(path, version)`` of a usable HAProxy, else :class:`HAProxyError` saying why.

    For ``config check`` and the engine's start: missing or older than 2.2 is refused.
    """
    path = shutil.which(binary)
    if path is None:
        raise HAProxyError(f"{binary}: not found (install the haproxy package, "
                           f"{MIN_VERSION[0]}.{MIN_VERSION[1]} or newer)")
    try:
        out = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise HAProxyError(f"{path}: cannot run it: {exc}") from None
    match = VERSION.search(out)
    if match is None:
        raise HAProxyError(f"{path}: `-v` does not say an HAProxy version: {out[:100]!r}")
    version = (int(match.group(1)), int(match.group(2)))
    text = f"{version[0]}.{version[1]}{match.group(3)}"
    if version < MIN_VERSION:
        raise HAProxyError(f"{path}: HAProxy {text} is too old "
                           f"({MIN_VERSION[0]}.{MIN_VERSION[1]} or newer is needed)")
    return path, text


def query_sync(path: str, command: str, timeout: float = 1.0) -> str:
    """One command on an HAProxy CLI socket, blocking at most about ``timeout`` seconds."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sock.sendall(command.encode() + b"\n")
        sock.shutdown(socket.SHUT_WR)
        chunks, size = [], 0
        while data := sock.recv(65536):
            size += len(data)
            if size > MAX_REPLY:
                raise HAProxyError(f"{command.split()[0]}: reply larger than {MAX_REPLY} bytes")
            chunks.append(data)
    return b"".join(chunks).decode("utf-8", "replace")


async def query(path: str, command: str, timeout: float = 5.0) -> str:
    """One command on an HAProxy CLI socket, on the event loop."""
    async def run() -> str:
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            writer.write(command.encode() + b"\n")
            writer.write_eof()
            data = await reader.read(MAX_REPLY + 1)
            while chunk := await reader.read(MAX_REPLY + 1 - len(data)):
                data += chunk
                if len(data) > MAX_REPLY:
                    raise HAProxyError(f"{command.split()[0]}: reply larger than {MAX_REPLY} bytes")
            return data.decode("utf-8", "replace")
        finally:
            writer.close()
    return await asyncio.wait_for(run(), timeout)


def parse_proc(text: str) -> dict:
    """The master CLI's ``show proc``: the master's reload counts, current and old workers."""
    master = re.search(r"^(\d+)\s+master\s+(\d+)\s+\[failed:\s*(\d+)\]", text, re.M)
    if master is None:
        raise HAProxyError(f"unexpected `show proc` reply: {text[:200]!r}")
    workers, old, section = [], [], None
    for line in text.splitlines():
        if line.startswith("#"):
            section = line.strip("# ").split()[0] if line.strip("# ") else None
            if line.startswith("#<PID>"):
                section = None
            continue
        fields = line.split()
        if len(fields) >= 2 and fields[1] == "worker" and fields[0].isdigit():
            (workers if section == "workers" else old).append(int(fields[0]))
    # the "# old workers" header's first word is "old"
    return {"master": int(master.group(1)), "reloads": int(master.group(2)),
            "failed": int(master.group(3)), "workers": workers, "old": old}


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends SIGTERM when the daemon's thread dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Master:
    """One HAProxy master process, its sockets under ``directory``, its stderr in the log."""

    def __init__(self, binary: str, directory: str):
        self.binary = binary
        self.directory = directory
        self.config = os.path.join(directory, "haproxy.cfg")
        self.master_sock = os.path.join(directory, "master.sock")
        self.admin_sock = os.path.join(directory, "admin.sock")
        self.state_file = os.path.join(directory, "servers.state")
        for path in (self.master_sock, self.admin_sock):
            if len(path.encode()) > SUN_PATH:
                raise HAProxyError(f"{path}: longer than {SUN_PATH} bytes, too long for a unix "
                                   "socket (choose a shorter cluster.state_dir)")
        self.proc: asyncio.subprocess.Process | None = None
        self.said: collections.deque = collections.deque(maxlen=200)  # (sequence, recent stderr line)
        self.said_total = 0
        self._reader: asyncio.Task | None = None  # the current master's
        self.readers: set[asyncio.Task] = set()     # every master's, until it is done

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, timeout: float = 15.0) -> None:
        """Start the master and wait for its first worker; a failure says HAProxy's alerts."""
        mark = self.said_total
        self.proc = await asyncio.create_subprocess_exec(
            self.binary, "-W", "-S", f"{self.master_sock},mode,600", "-f", self.config,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            cwd=self.directory, start_new_session=True, preexec_fn=_die_with_parent)
        self._reader = asyncio.ensure_future(self._read_stderr(self.proc))
        self.readers.add(self._reader)
        self._reader.add_done_callback(self.readers.discard)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if not self.alive():
                await asyncio.wait_for(self._reader, 5)
                raise HAProxyError("; ".join(self.alerts(mark)) or f"exited with code {self.proc.returncode}")
            with _quiet():
                if parse_proc(await query(self.master_sock, "show proc", 2))["workers"]:
                    await self.wait_worker()
                    return
            await asyncio.sleep(0.02)
        raise HAProxyError(f"did not start within {timeout:g}s")

    async def wait_worker(self, timeout: float = 10.0) -> int:
        """Wait until the Runtime API socket answers from the current worker; its pid."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with _quiet():
                current = parse_proc(await query(self.master_sock, "show proc", 2))["workers"]
                info = await query(self.admin_sock, "show info", 2)
                pid = re.search(r"^Pid: (\d+)", info, re.M)
                if pid and current and int(pid.group(1)) == current[0]:
                    return current[0]
            if loop.time() >= deadline:
                raise HAProxyError(f"the Runtime API did not answer within {timeout:g}s")
            await asyncio.sleep(0.02)

    async def proc_info(self) -> dict:
        return parse_proc(await query(self.master_sock, "show proc"))

    async def reload(self, timeout: float = 30.0) -> None:
        """Seamless reload (SIGUSR2): the new worker takes the listeners over; the old one
        serves its connections to the end. A refused reload raises with HAProxy's alerts;
        the old worker then keeps serving."""
        before = await self.proc_info()
        mark = self.said_total
        self.proc.send_signal(signal.SIGUSR2)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if not self.alive():
                raise HAProxyError("the master exited during a reload: " + "; ".join(self.alerts(mark)))
            now = None
            with _quiet():
                now = await self.proc_info()
            if now is not None and now["reloads"] > before["reloads"]:
                if now["failed"] > before["failed"]:
                    await asyncio.sleep(0.05)  # the alerts reach our reader
                    raise HAProxyError("; ".join(self.alerts(mark)) or "reload failed")
                if now["workers"] and now["workers"] != before["workers"]:
                    await self.wait_worker()
                    return
            await asyncio.sleep(0.02)
        raise HAProxyError(f"reload did not finish within {timeout:g}s")

    def alerts(self, mark: int = 0) -> list[str]:
        """HAProxy's ALERT lines said since ``mark`` (a value of ``said_total``), unprefixed."""
        return [ALERT.sub("", text) for seq, text in self.said if seq >= mark and ALERT.match(text)]

    async def _read_stderr(self, proc) -> None:
        """HAProxy's messages into the daemon's log (bounded lines), the recent ones kept."""
        while True:
            try:
                line = await proc.stderr.readline()
            except ValueError:  # a line beyond the reader's limit: skip to its end
                continue
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()[:2000]
            if not text:
                continue
            self.said.append((self.said_total, text))
            self.said_total += 1
            level = (logging.ERROR if "[ALERT]" in text else
                     logging.WARNING if "[WARNING]" in text else logging.INFO)
            log.log(level, "haproxy: %s", text)

    async def stop(self, timeout: float) -> None:
        """Soft stop (SIGUSR1: stop listening, finish connections) up to ``timeout``,
        then SIGTERM, then SIGKILL."""
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGUSR1, timeout), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
            if not self.alive():
                break
            with _quiet():
                self.proc.send_signal(sig)
            try:
                await asyncio.wait_for(self.proc.wait(), max(0.0, wait))
            except asyncio.TimeoutError:
                continue
        await self._end_readers(2.0)

    async def _end_readers(self, timeout: float) -> None:
        """Let every reader drain to its end (workers of an earlier master may still hold
        their stderr), up to ``timeout``; cancel and await those still reading."""
        readers = list(self.readers)
        if not readers:
            return
        _, reading = await asyncio.wait(readers, timeout=timeout)
        for reader in reading:
            reader.cancel()
        await asyncio.gather(*reading, return_exceptions=True)


class _quiet:
    """Ignore a socket or process error while polling (the master re-executes on reload)."""

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        return kind is not None and issubclass(kind, (OSError, asyncio.TimeoutError,
                                                      ProcessLookupError, HAProxyError))
