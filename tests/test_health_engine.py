"""Membership driving the real proxy engine on loopback: what clients see.

Drain: no new connection reaches the node, an established one goes on.
Maintenance: the same, with checks paused. Enable: traffic reaches it again.
A node whose server stops is skipped by new connections once it is down.
"""

from __future__ import annotations

import http.client
from collections import Counter

import pytest

from clusterkit.control import request
from clusterkit.plugins import get_plugin_manager

import health_cluster as hc
import health_servers as hs


@pytest.fixture
def live(tmp_path):
    if get_plugin_manager().get_plugin("proxy") is None:
        pytest.skip("no load-balancing engine (the proxy plugin) is installed")
    port = hc.common_port()
    vip_port = hs.free_port(hc.VIP)
    servers = {n: hc.NodeServer(ip, port, n) for n, ip in hc.NODES.items()}
    for server in servers.values():
        server.start()
    path = str(tmp_path / "cluster.toml")
    hc.write_config(path, str(tmp_path / "state"), port,
                    {"kind": "http", "path": "/ok", "inter": 0.3, "timeout": 0.3}, vip_port=vip_port)
    daemon = hc.Daemon(path)  # the engine comes from the installed proxy plugin
    assert daemon.runtime.engine is not None
    yield daemon, vip_port, servers, str(tmp_path / "state" / "manager")
    daemon.stop()
    for server in servers.values():
        server.stop()


def ask(conn: http.client.HTTPConnection) -> str:
    conn.request("GET", "/name")
    response = conn.getresponse()
    assert response.status == 200
    return response.read().decode()


def spread(vip_port: int, count: int = 30) -> Counter:
    """Which nodes ``count`` new connections reach."""
    seen = Counter()
    for _ in range(count):
        conn = http.client.HTTPConnection(hc.VIP, vip_port, timeout=5)
        seen[ask(conn)] += 1
        conn.close()
    return seen


def kept_connection_to(node: str, vip_port: int) -> http.client.HTTPConnection:
    for _ in range(30):
        conn = http.client.HTTPConnection(hc.VIP, vip_port, timeout=5)
        if ask(conn) == node:
            return conn
        conn.close()
    raise AssertionError(f"no connection reached {node}")


@pytest.mark.parametrize("action", ["drain", "maintenance"])
def test_established_connections_finish_new_ones_go_elsewhere(live, action):
    daemon, vip_port, _, state_dir = live
    assert set(spread(vip_port)) == set(hc.NODES)
    kept = kept_connection_to("node1", vip_port)
    request(state_dir, "operator", node="node1", action=action)
    assert set(spread(vip_port)) == {"node2", "node3"}
    assert ask(kept) == "node1", "the established connection keeps working"
    kept.close()
    request(state_dir, "operator", node="node1", action="enable")
    hc_wait(lambda: states(state_dir, vip_port)["node1"] == "up")
    assert set(spread(vip_port)) == set(hc.NODES)


def test_a_down_member_gets_no_new_connections(live):
    daemon, vip_port, servers, state_dir = live
    servers["node2"].stop()
    hc_wait(lambda: states(state_dir, vip_port)["node2"] == "down")
    seen = spread(vip_port)
    assert set(seen) == {"node1", "node3"}
    stats = request(state_dir, "status")["policies"][f"{hc.VIP}:{vip_port}"]["members"]["node2"]
    assert stats["state"] == "down"


def test_with_every_member_down_a_client_is_answered_at_once_never_left_hanging(live):
    daemon, vip_port, servers, state_dir = live
    for server in servers.values():
        server.stop()
    hc_wait(lambda: set(states(state_dir, vip_port).values()) == {"down"})
    conn = http.client.HTTPConnection(hc.VIP, vip_port, timeout=5)
    with pytest.raises((ConnectionError, http.client.RemoteDisconnected)):
        ask(conn)  # refused or closed: an error at once, not a 5 s timeout
    stats = request(state_dir, "status")["policies"][f"{hc.VIP}:{vip_port}"]
    assert stats["refused"] >= 1


def states(state_dir: str, vip_port: int) -> dict[str, str]:
    members = request(state_dir, "status")["members"][f"{hc.VIP}:{vip_port}"]["nodes"]
    return {node: m["state"] for node, m in members.items()}


def hc_wait(predicate, seconds: float = 5.0) -> None:
    import time
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)
