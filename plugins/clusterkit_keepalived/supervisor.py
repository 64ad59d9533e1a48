"""keepalived as a child of the daemon, and the daemon's role following the addresses.

:class:`Vrrp` writes keepalived.conf into the host's state directory, runs
``keepalived -n -l -P -f FILE`` (pid files beside it), restarts it when it
dies (bounded back-off) and stops it with the daemon. The role follows
the addresses on the interface, looked at every ``[vrrp] poll`` seconds and
at once on every ``notify_*`` (``clusterkit manager vrrp-notify STATE``), so
a lost or late notify cannot leave this host acting as manager without the
addresses (two managers acting), or holding them without acting. Addresses a killed
keepalived left on the interface are removed before keepalived starts
(again), so an address seen while it runs is one VRRP gave this host.

To give the addresses up on purpose (``clusterkit manager switchover``), or
when another manager's push shows a higher epoch than this acting one's,
:meth:`Vrrp.give_up` stops keepalived (its priority-0 advert hands the
addresses over at once) and starts it again, as BACKUP, a few advert
intervals later.

It serves every role: a role switch leaves it running (``runtime.switching``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time

from clusterkit.contracts import Component
from clusterkit.definition.files import private_dir, write_atomic
from clusterkit.standby import epoch
from clusterkit.standby.plugin import request_role
from clusterkit.sync import definition
from clusterkit_keepalived import conf
from clusterkit_keepalived.settings import vrrp_settings

log = logging.getLogger("clusterkit.keepalived")

RESTART_MIN, RESTART_MAX = 0.2, 10.0  # seconds before keepalived is started again
STATES = ("MASTER", "BACKUP", "FAULT", "STOP")


class Vrrp(Component):
    def __init__(self, runtime):
        self.runtime = runtime
        self.dir = os.path.join(runtime.state_dir, "keepalived")
        self.conf_path = os.path.join(self.dir, "keepalived.conf")
        self.proc: asyncio.subprocess.Process | None = None
        self.interface = ""
        self.state = "INIT"         # the last notify
        self.holds = False          # the addresses are on our interface (the last poll)
        self.notified_at: float | None = None
        self.restarts = 0
        self.last_exit: int | None = None
        self._stopping = False
        self._pending: asyncio.Task | None = None
        self._wake = asyncio.Event()  # a notify: poll now
        self._view_mtime = 0
        self.yield_until = 0.0      # time.monotonic() until which the track script fails
        self._tasks: list[asyncio.Task] = []

    # --------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        private_dir(self.dir)
        settings = vrrp_settings(self.runtime.cluster)
        self.interface = settings.interface or await asyncio.to_thread(conf.interface_of,
                                                                       self.runtime.host.ip)
        await asyncio.to_thread(self._write)
        await self._release()
        self._tasks = [self.runtime.spawn(self._keep_running(), "keepalived", lasting=True),
                       self.runtime.spawn(self._poll(), "vrrp-poll", lasting=True)]

    async def reload(self, old, new) -> None:
        await asyncio.to_thread(self._write)
        if self.running():
            self.proc.send_signal(signal.SIGHUP)  # keepalived reloads its configuration

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._terminate()

    def _write(self) -> None:
        rt = self.runtime
        check = os.path.join(self.dir, "check")
        write_atomic(check, conf.check_script(rt.state_dir), 0o700)
        text = conf.render(rt.cluster, rt.host, vrrp_settings(rt.cluster), self.interface,
                           rt.config_path, check)
        write_atomic(self.conf_path, text, 0o600)

    def argv(self) -> list[str]:
        pid = lambda name: os.path.join(self.dir, f"{name}.pid")  # noqa: E731
        return [vrrp_settings(self.runtime.cluster).keepalived, "-n", "-l", "-P",
                "-f", self.conf_path, "-p", pid("keepalived"), "-r", pid("vrrp"),
                "-c", pid("checkers")]

    async def _keep_running(self) -> None:
        delay = RESTART_MIN
        while not self._stopping:
            started = time.monotonic()
            if self.restarts or self.yield_until:
                await self._release()
            log_file = open(os.path.join(self.dir, "keepalived.log"), "ab")
            try:
                self.proc = await asyncio.create_subprocess_exec(
                    *self.argv(), stdin=asyncio.subprocess.DEVNULL, stdout=log_file,
                    stderr=log_file, start_new_session=True)
            except OSError as exc:
                log.error("keepalived could not start: %s", exc)
            else:
                log.info("keepalived started (pid %d) on %s", self.proc.pid, self.interface)
                self.last_exit = await self.proc.wait()
                if self.yielding():  # given up on purpose: back as BACKUP once the yield is over
                    await asyncio.sleep(self.yield_until - time.monotonic())
                    continue
                log.error("keepalived exited with %s; started again", self.last_exit)
                self.restarts += 1
            finally:
                log_file.close()
            delay = RESTART_MIN if time.monotonic() - started > 30 else min(2 * delay, RESTART_MAX)
            await asyncio.sleep(delay)

    async def _release(self) -> None:
        """keepalived starts BACKUP: an address a killed one left on the interface is not
        this host's (and would make it look like the holder)."""
        stale = await asyncio.to_thread(conf.release, self.interface, conf.vips(self.runtime.cluster))
        if stale:
            log.warning("removed %s from %s, left by a keepalived that died", ", ".join(stale),
                        self.interface)

    async def _terminate(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()  # keepalived gives the addresses up on SIGTERM
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()

    # ------------------------------------------------------------ the role

    def notified(self, state: str) -> dict:
        """``clusterkit manager vrrp-notify STATE``: look at the addresses at once.

        keepalived runs its notify scripts without waiting for them, so two can
        arrive out of order (a BACKUP from before a MASTER): the addresses on the
        interface decide, the notify only says when to look.
        """
        self.state, self.notified_at = state, time.time()
        log.warning("VRRP %s", state)
        self._wake.set()
        return {"state": state, "role": self.runtime.role}

    async def _poll(self) -> None:
        settings = vrrp_settings(self.runtime.cluster)
        wanted = set(conf.vips(self.runtime.cluster))
        while True:
            try:
                here = await asyncio.to_thread(conf.addresses, self.interface)
            except Exception as exc:  # noqa: BLE001 - the next poll tries again
                log.error("cannot read the addresses of %s: %s", self.interface, exc)
            else:
                self.holds = bool(wanted) and wanted <= here
                if self.runtime.is_manager:
                    await asyncio.to_thread(self._stale)
                if not self.holds or self.running():  # addresses only our keepalived adds
                    self._follow(self.holds, f"the public IPs are {'' if self.holds else 'not '}"
                                             f"on {self.interface} (VRRP {self.state})")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), settings.poll)
            self._wake.clear()
            wanted = set(conf.vips(self.runtime.cluster))

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def _follow(self, master: bool, why: str) -> None:
        rt = self.runtime
        if rt.switching or (self._pending is not None and not self._pending.done()):
            return  # one role change at a time (each promotion takes a new epoch)
        if master and not rt.is_manager and not self.yielding():
            self._pending = request_role(rt, "manager", why)
        elif not master and rt.is_manager:
            self._pending = request_role(rt, "standby", why)

    def _stale(self) -> None:
        """Acting, but another manager published a higher epoch into this host's copy of the
        definition set (its push reached us): that one manages; give the addresses up."""
        rt = self.runtime
        path = definition.view_path(rt)
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            return
        if mtime == self._view_mtime:
            return
        self._view_mtime = mtime
        try:
            view = definition.read_view(path)
        except ValueError:
            return
        mine = epoch.read(rt.state_dir)
        if view is not None and view.manager != rt.host.name and view.epoch > mine:
            self.give_up(f"{view.manager} manages under epoch {view.epoch}, this host's is {mine}")

    def give_up(self, why: str) -> dict:
        """Fail the track script for a while: keepalived leaves MASTER (a priority-0 advert
        lets the peer take over at once), the poll demotes, then this host waits as BACKUP."""
        seconds = max(5.0, 6 * vrrp_settings(self.runtime.cluster).advert_int)
        self.yield_until = time.monotonic() + seconds
        log.warning("giving the public IPs up for %.1fs: %s", seconds, why)
        if self.running():
            self.proc.terminate()  # its priority-0 advert: a standby takes over at once
        return {"yielding_for": seconds, "role": self.runtime.role}

    def yielding(self) -> bool:
        return time.monotonic() < self.yield_until

    def health(self) -> dict:
        return {"ok": not self.yielding(), "role": self.runtime.role}

    def status(self) -> dict:
        return {"state": self.state, "notified_at": self.notified_at, "holds_addresses": self.holds,
                "interface": self.interface, "conf": self.conf_path,
                "pid": self.proc.pid if self.running() else None,
                "restarts": self.restarts, "last_exit": self.last_exit, "yielding": self.yielding(),
                "epoch": epoch.read(self.runtime.state_dir)}
