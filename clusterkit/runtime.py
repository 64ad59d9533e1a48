"""The daemon of one host: start what its role needs, reload, stop gracefully.

One process per host, one asyncio loop (uvloop where installed). On the manager
the load-balancing engines (:mod:`clusterkit.engines`: each policy's own, as
registered by ``clusterkit_register_engines``) realise the policies first (so
plugins find ``runtime.engine``); then plugins bring their servers up in
``clusterkit_start``. SIGHUP or a
change to the definition file reloads it; a broken file is logged and the last
good definition keeps running. SIGTERM/SIGINT stop: plugins in reverse order,
each bounded by the shutdown timeout.

A cluster with a standby manager (``[[standby]]``) starts both managers in the
*standby* role: they apply what is replicated to them, like a node, until one
is promoted (``clusterkit manager promote``, or VRRP through the keepalived
plugin). :meth:`Runtime.switch_role` then stops every plugin's components and
starts them again in the new role through the same hooks
(docs/high-availability.md).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import time
from typing import Any, Awaitable, Callable

from clusterkit.config import Cluster, Host, load_cluster
from clusterkit.contracts import Component, LbEngine
from clusterkit.definition.files import private_dir
from clusterkit.definition.tables import ConfigError
from clusterkit.control import ControlServer, socket_path
from clusterkit.engines import Engines
from clusterkit.eventloop import freeze_started_heap, new_event_loop
from clusterkit.hookcalls import PluginError, call_each

log = logging.getLogger("clusterkit.runtime")
CONFIG_POLL = 0.25  # seconds between looks at the definition file (a stat): an edit is in force
                    # on the manager within this, and on the nodes a replication later


class Runtime:
    """Everything a plugin needs about the host it runs on.

    ``cluster`` is the current definition, ``host`` this host's entry,
    ``state_dir`` its private state directory, ``engine`` the load-balancing
    engine (a :class:`clusterkit.contracts.LbEngine`, manager only),
    ``registry`` the registered kinds. Plugins keep their per-host objects
    (:class:`clusterkit.contracts.Component`) in ``components[name]`` through
    :meth:`start_component`, never in module globals: the demo and the tests
    run several hosts in one process.
    """

    def __init__(self, config_path: str, pm, host_name: str | None = None,
                 shutdown_timeout: float = 10.0, watch_config: bool = True):
        self.config_path = config_path
        self.pm = pm
        self.hook = pm.hook
        self.registry = pm.registry
        self.cluster: Cluster = load_cluster(config_path, pm)
        name = host_name or self.cluster.manager.name
        self.host: Host = self.cluster.host(name)
        self.state_dir = self.cluster.host_state_dir(self.host.name)
        self.shutdown_timeout = shutdown_timeout
        self.watch_config = watch_config
        self.engine: LbEngine | None = None
        self.components: dict[str, Component] = {}
        self.started = time.time()
        self.control = ControlServer(socket_path(self.state_dir))
        # The role this daemon acts in: a manager with standbys waits to be promoted.
        self.role = ("standby" if self.host.role in ("manager", "standby") and self.cluster.standbys
                     else self.host.role)
        self.switching = False  # True while switch_role stops and starts the components
        self._tasks: set[asyncio.Task] = set()
        self._lasting: set[asyncio.Task] = set()  # tasks a role switch leaves running
        self._own_controls: dict = {}
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._config_mtime = self._mtime()

    # ------------------------------------------------------------ for plugins

    @property
    def is_manager(self) -> bool:
        """Does this daemon act as the manager (a promoted standby does, a waiting manager not)?"""
        return self.role == "manager"

    def local_path(self, path: str) -> str:
        """Where the cluster path ``path`` is on this host's filesystem."""
        return self.host.local_path(path)

    def spawn(self, coro: Awaitable, name: str, lasting: bool = False) -> asyncio.Task:
        """Run a background task owned by the daemon: logged if it dies, cancelled at stop,
        and at a role switch unless ``lasting`` (it serves every role)."""
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        if lasting:
            self._lasting.add(task)
        task.add_done_callback(self._task_done)
        return task

    # A plugin's per-host object (a :class:`clusterkit.contracts.Component`): the glue around it,
    # so that each plugin's hooks are one line.

    async def start_component(self, name: str, component: Component) -> None:
        """Keep ``component`` as ``components[name]``, then start it (a half-started one is
        still stopped at shutdown)."""
        self.components[name] = component
        await component.start()

    async def reload_component(self, name: str, old: Cluster, new: Cluster) -> None:
        """Hand the new definition to ``components[name]``, if it is running."""
        component = self.components.get(name)
        if component is not None:
            await component.reload(old, new)

    async def stop_component(self, name: str) -> None:
        """Forget ``components[name]`` and await its ``stop()``, if there is one."""
        component = self.components.pop(name, None)
        if component is not None:
            await component.stop()

    def component_status(self, name: str, section: str | None = None) -> dict | None:
        """``{section: components[name].status()}`` (``section`` defaults to the name), or
        ``None`` when it is not running: what a ``clusterkit_status`` hook returns."""
        component = self.components.get(name)
        return {section or name: component.status()} if component is not None else None

    async def announce(self, hook: str, **kwargs) -> None:
        """Tell every plugin of an event (``clusterkit_membership_changed``, ``clusterkit_applied``).

        One plugin failing is logged naming it; every other plugin still gets
        the event and its awaitable is awaited.
        """
        for error in await call_each(self.pm, hook, keep_going=True, runtime=self, **kwargs):
            log.error("%s", error, exc_info=error)

    def add_control(self, name: str, handler: Callable[..., Any]) -> None:
        """Offer a command on the control socket (``clusterkit ...`` talks to it)."""
        self.control.add(name, handler)

    def request_stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------- lifecycle

    async def run(self) -> None:
        """Start, serve until told to stop, then stop gracefully."""
        loop = asyncio.get_running_loop()
        for sig, action in ((signal.SIGTERM, self.request_stop), (signal.SIGINT, self.request_stop),
                            (signal.SIGHUP, lambda: self.spawn(self.reload(), "reload"))):
            loop.add_signal_handler(sig, action)
        try:
            await self.start()
            if self.watch_config:
                self.spawn(self._watch_config(), "config-watch", lasting=True)
            await self._stop.wait()
        finally:
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)

    async def start(self) -> None:
        private_dir(self.state_dir)
        self.add_control("status", self.status)
        self.add_control("reload", self.reload)
        self._own_controls = dict(self.control.handlers)  # a role switch keeps only these
        await self.control.start()
        log.info("starting %s %s of cluster %s", self.role, self.host.name, self.cluster.name)
        await self._start_role()
        log.info("%s %s is up", self.role, self.host.name)
        freeze_started_heap()

    async def _start_role(self) -> None:
        if self.is_manager and self.registry.engines:
            self.engine = Engines(self)
            await self.engine.apply(self.cluster)
        await call_each(self.pm, "clusterkit_start", runtime=self)

    async def _stop_role(self) -> None:
        if self.engine is not None:
            engine, self.engine = self.engine, None
            await self._bounded(engine.close(self.shutdown_timeout), "load balancer")
        for error in await call_each(self.pm, "clusterkit_stop", keep_going=True, reverse=True,
                                     timeout=self.shutdown_timeout, runtime=self):
            log.error("while stopping: %s", error)

    async def stop(self) -> None:
        """Stop accepting, let plugins finish within the timeout, cancel what remains."""
        log.info("stopping %s", self.host.name)
        await self._stop_role()
        await self._cancel_tasks(self._tasks)
        await self.control.stop()
        log.info("%s stopped", self.host.name)

    async def switch_role(self, role: str, why: str) -> bool:
        """Act as ``role`` ("manager" or "standby") from now on; ``False`` if it already does.

        Every plugin's ``clusterkit_stop`` runs with :attr:`switching` set, the
        tasks of the old role end (not ``lasting`` ones) and so do its control
        commands (``clusterkit_start`` adds them again), the definition file is
        read again (a promotion has just rewritten it), and every
        ``clusterkit_start`` runs in the new role: the same hooks as a restart,
        within one process, its control socket kept.
        """
        async with self._reload_lock:
            if role == self.role:
                return False
            log.warning("%s: %s -> %s (%s)", self.host.name, self.role, role, why)
            self.switching = True
            try:
                await self._stop_role()
                await self._cancel_tasks(self._tasks - self._lasting - {asyncio.current_task()})
                self.control.handlers = dict(self._own_controls)  # the new role's plugins add theirs
                self._config_mtime = self._mtime()
                self.cluster = await asyncio.to_thread(load_cluster, self.config_path, self.pm)
                self.host = self.cluster.host(self.host.name)
                self.role = role
                await self._start_role()
            finally:
                self.switching = False
            log.warning("%s acts as %s", self.host.name, role)
            return True

    async def _cancel_tasks(self, tasks) -> None:
        tasks = [t for t in tasks if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def reload(self) -> dict:
        """Re-read the definition; a broken one is refused and the running one kept."""
        async with self._reload_lock:
            self._config_mtime = self._mtime()
            try:
                new = await asyncio.to_thread(load_cluster, self.config_path, self.pm)
                new.host(self.host.name)
            except ConfigError as exc:
                log.error("reload refused, keeping the running definition:\n%s", exc)
                return {"reloaded": False, "error": str(exc)}
            except Exception as exc:  # a plugin's hook failing on the new file: the same refusal
                log.exception("reload refused, keeping the running definition")
                return {"reloaded": False, "error": f"{type(exc).__name__}: {exc}"}
            old, self.cluster = self.cluster, new
            self.host = new.host(self.host.name)
            if old == new:
                return {"reloaded": True, "changed": False}
            errors = []
            if self.engine is not None:
                try:
                    await self.engine.apply(new)
                except PluginError as exc:  # logged per engine; the other plugins still reload
                    errors.append(str(exc))
            try:
                await call_each(self.pm, "clusterkit_reload", runtime=self, old=old, new=new)
            except PluginError as exc:
                log.error("reload: %s", exc)
                errors.append(str(exc))
            if errors:
                return {"reloaded": True, "changed": True, "error": "; ".join(errors)}
            log.info("reloaded %s", self.config_path)
            return {"reloaded": True, "changed": True}

    def status(self) -> dict:
        report: dict[str, Any] = {
            "cluster": self.cluster.name,
            "host": self.host.name,
            "role": self.role,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 1),
        }
        if self.engine is not None:
            report["policies"] = self.engine.stats()
        for section in self.hook.clusterkit_status(runtime=self):
            report.update(section or {})
        return report

    # ------------------------------------------------------------- internals

    async def _bounded(self, result: Any, what: str) -> None:
        if not inspect.isawaitable(result):
            return
        try:
            await asyncio.wait_for(result, self.shutdown_timeout)
        except asyncio.TimeoutError:
            log.warning("%s did not stop within %ss", what, self.shutdown_timeout)
        except Exception:
            log.exception("%s failed while stopping", what)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        self._lasting.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s died", task.get_name(), exc_info=task.exception())

    def _mtime(self) -> float:
        try:
            return os.stat(self.config_path).st_mtime_ns
        except OSError:
            return 0

    async def _watch_config(self) -> None:
        """Reload when the definition file changes (CLI edits replace it atomically).

        Nothing one reload attempt does may end the watch: its failure is
        logged, the last good definition keeps running, the next edit is read.
        """
        while True:
            await asyncio.sleep(CONFIG_POLL)
            if self._mtime() != self._config_mtime:
                try:
                    await self.reload()
                except Exception:
                    log.exception("reload of %s failed; watching for the next change",
                                  self.config_path)


def run_daemon(config_path: str, pm, host_name: str | None = None) -> None:
    """Blocking entry point for ``clusterkit run``."""
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        runtime = Runtime(config_path, pm, host_name)
        loop.run_until_complete(runtime.run())
    finally:
        loop.close()
