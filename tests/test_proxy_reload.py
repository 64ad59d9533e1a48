"""Live changes through apply(), counters, shutdown, and the engine inside a real Runtime."""

from __future__ import annotations

import asyncio
import http.client
import importlib.metadata
import json
import socket

import pytest

from clusterkit.proxy import ProxyError
from clusterkit.runtime import Runtime
from proxy_support import (EngineThread, HTTPBackend, TCPBackend, cluster_text, common_port,
                           echo_named, free_port, line, make_cluster, plugin_manager, wait_for)
from support import LoopThread

NET = "127.81.3"
VIP = f"{NET}.100"


@pytest.fixture
def env(tmp_path):
    ips = [f"{NET}.{10 + i}" for i in (1, 2, 3)]
    port = common_port(ips)
    backends = [TCPBackend((ip, port), echo_named, f"node{i}") for i, ip in enumerate(ips, 1)]
    engine = EngineThread()
    ports = [free_port(VIP), free_port(VIP)]

    def apply(*policies):
        text = "".join(f'[[policy]]\nvip = "{VIP}"\nport = {ports[i]}\nservice = "http"\n'
                       f'backend_port = {port}\n{body}\n' for i, body in policies)
        engine.apply(make_cluster(tmp_path, NET, 3, text))

    engine.apply_policies = apply
    engine.ports = ports
    yield engine
    engine.stop()
    for b in backends:
        b.stop()


def test_established_connection_survives_every_kind_of_policy_change(env):
    env.apply_policies((0, 'members = { node1 = 1 }\nscheduler = "rr"'))
    s = socket.create_connection((VIP, env.ports[0]), 5)
    try:
        assert line(s, "a") == "node1:a"
        env.apply_policies((0, 'members = { node2 = 3, node3 = 1 }\nscheduler = "wlc"\n'
                               'persistence = 30\nproxy_protocol = ""\nidle_timeout = 60.0'))
        assert line(s, "b") == "node1:b"  # its member left the policy; it carries on
        with socket.create_connection((VIP, env.ports[0]), 5) as n:
            assert line(n, "c").split(":")[0] in ("node2", "node3")
        env.apply_policies((1, 'members = { node3 = 1 }'))  # policy 0 removed, 1 added
        assert line(s, "d") == "node1:d"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((VIP, env.ports[0]), 5)
        with socket.create_connection((VIP, env.ports[1]), 5) as n:
            assert line(n, "e") == "node3:e"
        assert list(env.stats()) == [f"{VIP}:{env.ports[1]}"]
        assert line(s, "f") == "node1:f"
    finally:
        s.close()
    wait_for(lambda: not env.engine.retired)  # the retired listener goes with its last connection


def test_member_state_and_counters_persist_across_apply(env):
    key = f"{VIP}:{env.ports[0]}"
    env.sync(env.engine.set_member_state, key, "node2", "maintenance")  # before the policy exists
    env.apply_policies((0, 'members = { node1 = 1, node2 = 1 }'))
    with socket.create_connection((VIP, env.ports[0]), 5) as s:
        assert line(s, "x") == "node1:x"
    env.apply_policies((0, 'members = { node1 = 2, node2 = 1 }\nscheduler = "rr"'))
    members = env.stats()[key]["members"]
    assert members["node2"]["state"] == "maintenance"
    assert members["node1"]["total"] == 1 and members["node1"]["weight"] == 2


def test_stats_count_connections_and_bytes(env):
    env.apply_policies((0, 'members = { node1 = 1 }'))
    key = f"{VIP}:{env.ports[0]}"
    with socket.create_connection((VIP, env.ports[0]), 5) as s:
        assert line(s, "hello") == "node1:hello"
        st = env.stats()[key]
        assert st["active"] == 1 and st["members"]["node1"]["active"] == 1
    for _ in range(2):
        with socket.create_connection((VIP, env.ports[0]), 5) as s:
            line(s, "hello")
    wait_for(lambda: env.stats()[key]["active"] == 0)
    st = env.stats()[key]
    node1 = st["members"]["node1"]
    assert st["total"] == 3 and node1["total"] == 3 and node1["active"] == 0
    assert node1["bytes_in"] == 3 * len(b"hello\n")
    assert node1["bytes_out"] == 3 * len(b"node1:hello\n")
    assert node1["connect_failures"] == 0 and node1["state"] == "up"


def test_a_listener_that_cannot_bind_is_reported_and_the_rest_apply(env):
    blocker = socket.socket()
    blocker.bind((VIP, env.ports[1]))
    blocker.listen(1)
    try:
        with pytest.raises(ProxyError, match=f"cannot listen on {VIP}:{env.ports[1]}"):
            env.apply_policies((0, 'members = { node1 = 1 }'), (1, 'members = { node2 = 1 }'))
        with socket.create_connection((VIP, env.ports[0]), 5) as s:
            assert line(s, "ok") == "node1:ok"
        # at a reload it is logged and shown, not raised: the other policies still reload
        env.apply_policies((0, 'members = { node2 = 1 }'), (1, 'members = { node2 = 1 }'))
        failed = env.stats()[f"{VIP}:{env.ports[1]}"]
        assert failed["listening"] is False and "Address already in use" in failed["error"]
        with socket.create_connection((VIP, env.ports[0]), 5) as s:
            assert line(s, "ok") == "node2:ok"
    finally:
        blocker.close()
    env.apply_policies((0, 'members = { node2 = 1 }'), (1, 'members = { node2 = 1 }'))
    with socket.create_connection((VIP, env.ports[1]), 5) as s:  # retried, now open
        assert line(s, "ok") == "node2:ok"


def test_close_lets_connections_finish_then_closes_the_rest(env):
    env.apply_policies((0, 'members = { node1 = 1 }'))
    s = socket.create_connection((VIP, env.ports[0]), 5)
    try:
        assert line(s, "a") == "node1:a"
        fut = asyncio.run_coroutine_threadsafe(env.engine.close(0.5), env.loop)

        def refused() -> bool:
            try:
                socket.create_connection((VIP, env.ports[0]), 5).close()
            except ConnectionResetError:  # queued in the instant the listener closed: reset
                pass
            return False

        with pytest.raises(ConnectionRefusedError):
            wait_for(refused, timeout=0.2)
        assert line(s, "b") == "node1:b"  # still served while closing
        fut.result(5)
        s.settimeout(5)
        try:
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass
    finally:
        s.close()


def test_the_proxy_plugin_is_registered_as_an_entry_point():
    eps = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="clusterkit")}
    assert eps.get("proxy") == "clusterkit.proxy.plugin"


def test_end_to_end_through_the_runtime(tmp_path):
    net = "127.81.4"
    ips = [f"{net}.11", f"{net}.12"]
    port = common_port(ips)
    vport = free_port(f"{net}.100")
    backends = [HTTPBackend((ip, port), f"node{i}") for i, ip in enumerate(ips, 1)]
    path = tmp_path / "cluster.toml"

    def write(members: str) -> None:
        policy = (f'[[policy]]\nvip = "{net}.100"\nport = {vport}\nservice = "http"\n'
                  f'scheduler = "rr"\nbackend_port = {port}\nmembers = {{ {members} }}\n')
        path.write_text(cluster_text(net, 2, policy, str(tmp_path / "state")))

    def get() -> str:
        conn = http.client.HTTPConnection(f"{net}.100", vport, timeout=5)
        try:
            conn.request("GET", "/")
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    write("node1 = 1, node2 = 1")
    looper = LoopThread()
    call = looper.call

    async def make():
        return Runtime(str(path), plugin_manager(), watch_config=False, shutdown_timeout=2)

    runtime = call(make())
    try:
        call(runtime.start())
        assert sorted(get() for _ in range(4)) == ["node1", "node1", "node2", "node2"]
        write("node2 = 1")
        assert call(runtime.reload()) == {"reloaded": True, "changed": True}
        assert {get() for _ in range(3)} == {"node2"}

        async def status():
            return runtime.status()

        report = call(status())
        json.dumps(report)  # what `clusterkit status --json` prints
        policy = report["policies"][f"{net}.100:{vport}"]
        assert policy["total"] == 7 and list(policy["members"]) == ["node2"]

        # and what the operator sees, through the control socket
        from typer.testing import CliRunner

        from clusterkit.cli import get_app

        app = get_app(plugin_manager())
        result = CliRunner().invoke(app, ["status", "-c", str(path), "--json"])
        assert result.exit_code == 0, result.output
        shown = json.loads(result.output)["policies"][f"{net}.100:{vport}"]
        assert shown["members"]["node2"]["total"] == policy["members"]["node2"]["total"]
        result = CliRunner().invoke(app, ["status", "-c", str(path), "-v"])
        assert result.exit_code == 0 and "connect_failures: 0" in result.output
        result = CliRunner().invoke(app, ["status", "-c", str(path)])  # the summary
        assert result.exit_code == 0 and f"{net}.100:{vport}" in result.output
    finally:
        call(runtime.stop())
        looper.close()
        for b in backends:
            b.stop()
