"""The typed contracts plugins exchange: the engine, a component's glue, membership queries."""

from __future__ import annotations

import asyncio
import inspect

from clusterkit import hookimpl
from clusterkit.contracts import MEMBERSHIP, Component, LbEngine, MembershipQuery
from clusterkit.membership.monitor import Membership
from clusterkit.plugins import get_plugin_manager
from clusterkit.proxy.engine import Engine
from clusterkit.runtime import Runtime
from conftest import write_cluster

POLICY = ('\n[[policy]]\nvip = "127.91.8.100"\nport = 8080\nservice = "http"\n'
          'members = {node1 = 1, node2 = 1}\ncheck = {kind = "tcp", inter = 3600}\n')


def public_methods(cls) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in vars(cls).items()
            if not name.startswith("_") and callable(fn)}


def test_the_native_proxy_offers_exactly_the_engine_contract():
    contract = public_methods(LbEngine)
    assert set(contract) == {"apply", "set_member_state", "stats", "close"}
    assert isinstance(Engine(), LbEngine)
    for name, signature in contract.items():
        offered = inspect.signature(getattr(Engine, name))
        assert list(offered.parameters) == list(signature.parameters), name
        assert inspect.iscoroutinefunction(getattr(Engine, name)) == \
            inspect.iscoroutinefunction(getattr(LbEngine, name)), name


def test_membership_answers_the_query_contract(tmp_path):
    cfg = write_cluster(tmp_path / "cluster.toml", "127.91.8", nodes=2, extra=POLICY)
    runtime = Runtime(str(cfg), get_plugin_manager(), watch_config=False)
    assert set(public_methods(MembershipQuery)) == {"states"}

    async def scenario():
        membership: MembershipQuery = Membership(runtime)
        await membership.start()
        try:
            before = membership.states("127.91.8.100:8080")
            await membership.set_operator("node2", "maintenance")
            return before, membership.states("127.91.8.100:8080"), membership.states("1.2.3.4:80")
        finally:
            await membership.stop()

    before, after, unknown = asyncio.run(scenario())
    assert before == {"node1": "up", "node2": "up"}
    assert after == {"node1": "up", "node2": "maintenance"}
    assert unknown == {}


class Counter(Component):
    """A component that only counts: start/stop inherited from the contract are no-ops here."""

    def __init__(self):
        self.reloads: list[tuple[str, str]] = []

    async def reload(self, old, new):
        self.reloads.append((old.name, new.name))

    def status(self):
        return {"reloads": len(self.reloads)}


class CounterPlugin:
    """A third-party plugin around one component: each hook is one line of the runtime's glue."""

    def __init__(self):
        self.made: list[Counter] = []

    @hookimpl
    async def clusterkit_start(self, runtime):
        self.made.append(Counter())
        await runtime.start_component("counter", self.made[-1])

    @hookimpl
    async def clusterkit_reload(self, runtime, old, new):
        await runtime.reload_component("counter", old, new)

    @hookimpl
    async def clusterkit_stop(self, runtime):
        await runtime.stop_component("counter")

    @hookimpl
    def clusterkit_status(self, runtime):
        return runtime.component_status("counter", "counting")


def test_a_component_is_started_reloaded_reported_and_stopped_by_the_runtimes_glue(tmp_path):
    cfg = write_cluster(tmp_path / "cluster.toml", "127.91.9", nodes=1)
    pm = get_plugin_manager()
    plugin = CounterPlugin()
    pm.register(plugin, name="counter")
    runtime = Runtime(str(cfg), pm, "node1", watch_config=False)

    async def scenario():
        await runtime.start()
        try:
            assert runtime.components["counter"] is plugin.made[0]
            cfg.write_text(cfg.read_text().replace('name = "test"', 'name = "renamed"'))
            assert (await runtime.reload())["changed"]
            return runtime.status()
        finally:
            await runtime.stop()

    report = asyncio.run(scenario())
    assert report["counting"] == {"reloads": 1}
    assert plugin.made[0].reloads == [("test", "renamed")]
    assert "counter" not in runtime.components
    assert runtime.component_status("counter") is None
