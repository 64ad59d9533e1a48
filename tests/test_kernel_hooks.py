"""Calling hooks: one helper, every call site; a failing plugin is named and skips no other."""

from __future__ import annotations

import asyncio
import logging
import warnings

import pytest

from clusterkit import hookimpl
from clusterkit.config import SyncSet
from clusterkit.membership.monitor import Membership
from clusterkit.plugins import get_plugin_manager
from clusterkit.hookcalls import PluginError, call_each
from clusterkit.runtime import Runtime
from clusterkit.sync.applier import Applier
from conftest import write_cluster

POLICY = ('\n[[policy]]\nvip = "127.91.7.100"\nport = 8080\nservice = "http"\n'
          'members = {node1 = 1}\ncheck = {kind = "tcp", inter = 3600}\n')


class Recorder:
    """Plugin B: an async implementation of every hook the call sites use."""

    def __init__(self):
        self.calls: list[tuple] = []

    @hookimpl
    async def clusterkit_start(self, runtime):
        self.calls.append(("start",))

    @hookimpl
    async def clusterkit_reload(self, runtime, old, new):
        self.calls.append(("reload",))

    @hookimpl
    async def clusterkit_membership_changed(self, runtime, policy, node, old, new):
        await asyncio.sleep(0)
        self.calls.append(("changed", node, old, new))

    @hookimpl
    async def clusterkit_applied(self, runtime, sync_set, paths):
        await asyncio.sleep(0)
        self.calls.append(("applied", sync_set.name, tuple(paths)))


class RaisesAtOnce:
    """Plugin A: raises before it returns anything (pluggy stops calling the rest there)."""

    @hookimpl
    def clusterkit_membership_changed(self, runtime, node):
        raise ValueError(f"no {node}")

    @hookimpl
    def clusterkit_applied(self, runtime, sync_set):
        raise ValueError(f"no {sync_set.name}")


class RaisesAwaited:
    """Plugin C: its coroutine raises once awaited."""

    @hookimpl
    async def clusterkit_start(self, runtime):
        raise OSError("port taken")

    @hookimpl
    async def clusterkit_reload(self, runtime, old, new):
        raise OSError("cannot rebind")

    @hookimpl
    async def clusterkit_membership_changed(self, runtime, node):
        raise OSError("zone not writable")

    @hookimpl
    async def clusterkit_applied(self, runtime, paths):
        raise OSError("reload failed")


def manager_with(*plugins) -> tuple:
    """The real plugins plus ``plugins`` (registered last, so pluggy calls them first)."""
    pm = get_plugin_manager()
    for name, plugin in plugins:
        pm.register(plugin, name=name)
    return pm


def runtime_of(tmp_path, pm, host: str = "manager") -> Runtime:
    cfg = write_cluster(tmp_path / "cluster.toml", "127.91.7", nodes=1, extra=POLICY)
    return Runtime(str(cfg), pm, host, watch_config=False)


def errors_logged(caplog) -> list[str]:
    return sorted(r.getMessage() for r in caplog.records
                  if r.name == "clusterkit.runtime" and r.levelno == logging.ERROR)


def test_membership_events_reach_every_plugin_when_others_raise(tmp_path, caplog):
    recorder = Recorder()
    pm = manager_with(("b", recorder), ("a", RaisesAtOnce()), ("c", RaisesAwaited()))
    runtime = runtime_of(tmp_path, pm)

    async def scenario():
        membership = Membership(runtime)
        await membership.start()
        try:
            return await membership.set_operator("node1", "drain")
        finally:
            await membership.stop()

    assert asyncio.run(scenario())["operator"] == "drain"
    assert ("changed", "node1", "up", "drain") in recorder.calls
    assert errors_logged(caplog) == [
        "plugin 'a' failed in clusterkit_membership_changed: ValueError: no node1",
        "plugin 'c' failed in clusterkit_membership_changed: OSError: zone not writable"]


def test_applied_events_reach_every_plugin_when_others_raise(tmp_path, caplog):
    recorder = Recorder()
    pm = manager_with(("b", recorder), ("a", RaisesAtOnce()), ("c", RaisesAwaited()))
    runtime = runtime_of(tmp_path, pm, "node1")
    applier = Applier(runtime)
    asyncio.run(applier.apply(SyncSet(name="www", path="/srv/www"), ["/srv/www/index.html"]))
    assert recorder.calls == [("applied", "www", ("/srv/www/index.html",))]
    assert applier.applied == 1
    assert errors_logged(caplog) == [
        "plugin 'a' failed in clusterkit_applied: ValueError: no www",
        "plugin 'c' failed in clusterkit_applied: OSError: reload failed"]


@pytest.mark.parametrize("hook, kwargs, message", [
    ("clusterkit_start", {}, "plugin 'c' failed in clusterkit_start: OSError: port taken"),
    ("clusterkit_reload", {"old": None, "new": None},
     "plugin 'c' failed in clusterkit_reload: OSError: cannot rebind"),
])
def test_starting_and_reloading_stop_at_a_failure_naming_it_and_leave_no_coroutine_behind(
        hook, kwargs, message):
    """A plugin failing to start stops the daemon: the coroutines not awaited are closed."""
    recorder = Recorder()
    pm = get_plugin_manager(load_entrypoints=False)
    pm.register(recorder, name="b")
    pm.register(RaisesAwaited(), name="c")  # registered last: pluggy calls it first
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "coroutine ... was never awaited" would be one
        with pytest.raises(PluginError) as raised:
            asyncio.run(call_each(pm, hook, runtime=None, **kwargs))
    assert str(raised.value) == message and raised.value.plugin == "c"
    assert recorder.calls == []


def test_a_failure_logged_keeps_its_traceback(tmp_path, caplog):
    pm = manager_with(("c", RaisesAwaited()))
    runtime = runtime_of(tmp_path, pm, "node1")
    asyncio.run(runtime.announce("clusterkit_applied", sync_set=SyncSet("www", "/srv/www"),
                                 paths=[]))
    [record] = [r for r in caplog.records if r.name == "clusterkit.runtime"]
    assert isinstance(record.exc_info[1].__cause__, OSError)


def test_plugins_are_called_in_pluggys_own_order():
    """``call_each`` calls plugin by plugin: in the order pluggy calls them itself."""
    seen = []

    def plugin(name, **opts):
        class P:
            @hookimpl(**opts)
            def clusterkit_stop(self, runtime):
                seen.append(name)

        return P()

    pm = get_plugin_manager(load_entrypoints=False)
    for name, opts in (("a", {}), ("late", {"trylast": True}), ("b", {}),
                       ("early", {"tryfirst": True}), ("c", {})):
        pm.register(plugin(name, **opts), name=name)
    pm.hook.clusterkit_stop(runtime=None)
    pluggys, seen[:] = list(seen), []
    assert asyncio.run(call_each(pm, "clusterkit_stop", runtime=None)) == []
    assert seen == pluggys == ["early", "c", "b", "a", "late"]
