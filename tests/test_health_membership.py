"""The membership state machine, alone and driving an engine from a running manager daemon."""

from __future__ import annotations

import json
import os
import time

import pytest

from clusterkit.config import Check
from clusterkit.control import ControlError, request
from clusterkit.membership.health import Health, effective_state, intervals
from clusterkit.membership.operator import OperatorStates, next_operator_state

import health_cluster as hc

# ------------------------------------------------------------- pure logic


def test_health_starts_up_one_failure_from_down():
    h = Health(rise=2, fall=3)
    assert h.up and h.changing
    assert h.record(False) is True and not h.up  # HAProxy: a dead server at start goes at once


def test_fall_failures_in_a_row_take_a_healthy_member_down():
    h = Health(rise=2, fall=3)
    h.record(True)
    assert h.up and not h.changing
    assert [h.record(False) for _ in range(3)] == [False, False, True]
    assert not h.up and not h.changing


def test_a_pass_between_failures_restores_full_health():
    h = Health(rise=2, fall=3)
    h.record(True)
    h.record(False)
    h.record(False)
    h.record(True)
    assert [h.record(False) for _ in range(3)] == [False, False, True]


def test_rise_passes_in_a_row_bring_it_back():
    h = Health(rise=2, fall=3, up=False)
    assert h.record(True) is False and h.changing
    assert h.record(False) is False and not h.changing  # a failure starts rising again from 0
    assert [h.record(True) for _ in range(2)] == [False, True]
    assert h.up and h.count == h.top


def test_effective_state_order():
    assert effective_state(True, "") == "up"
    assert effective_state(False, "") == "down"
    assert effective_state(True, "drain") == "drain"
    assert effective_state(False, "drain") == "down"
    assert effective_state(False, "maintenance") == "maintenance"


def test_intervals_defaults_and_options():
    assert intervals(Check("tcp")) == (2.0, 0.5, 2.0)
    assert intervals(Check("tcp", inter=1.0, options={"fastinter": "0.1", "downinter": 5})) == (1.0, 0.1, 5.0)
    assert intervals(Check("tcp", inter=1.0, options={"fastinter": 3}))[1] == 1.0  # never slower
    with pytest.raises(ValueError, match="fastinter='soon'"):
        intervals(Check("tcp", options={"fastinter": "soon"}))


def test_operator_transitions():
    assert next_operator_state("", "drain") == "drain"
    assert next_operator_state("drain", "maintenance") == "maintenance"
    assert next_operator_state("maintenance", "maintenance-off") == ""
    assert next_operator_state("drain", "maintenance-off") == "drain"
    assert next_operator_state("maintenance", "enable") == ""


def test_operator_states_file(tmp_path):
    store = OperatorStates(str(tmp_path / "manager"))
    assert store.load() == {}
    assert store.apply("node1", "drain") == "drain"
    assert store.apply("node2", "maintenance") == "maintenance"
    assert store.apply("node2", "maintenance-off") == ""
    data = json.loads((tmp_path / "manager" / "operator-states.json").read_text())
    assert list(data["nodes"]) == ["node1"] and data["nodes"]["node1"]["state"] == "drain"
    assert oct(os.stat(store.path).st_mode & 0o777) == "0o600"
    with pytest.raises(ValueError, match="unknown operator action 'nap'"):
        store.apply("node1", "nap")
    (tmp_path / "manager" / "operator-states.json").write_text('{"nodes": {"node1": {"state": "asleep"}}}')
    with pytest.raises(ValueError, match="malformed operator states"):
        store.load()


# ---------------------------------------------------------- with a daemon

INTER, TIMEOUT, RISE, FALL = 0.3, 0.2, 2, 3


@pytest.fixture
def cluster(tmp_path):
    """Three node HTTP servers, a definition, a manager daemon with a recording engine."""
    port = hc.common_port()
    servers = {n: hc.NodeServer(ip, port) for n, ip in hc.NODES.items()}
    for server in servers.values():
        server.start()
    path = str(tmp_path / "cluster.toml")
    check = {"kind": "http", "path": "/ok", "inter": INTER, "timeout": TIMEOUT, "rise": RISE,
             "fall": FALL}
    hc.write_config(path, str(tmp_path / "state"), port, check)
    recorder = hc.Recorder()
    daemons = []

    def start():
        daemons.append(hc.Daemon(path, recorder))
        return daemons[-1]

    class Cluster:
        pass

    c = Cluster()
    c.path, c.port, c.servers, c.recorder, c.engine, c.start = path, port, servers, recorder, \
        recorder.engine, start
    c.state_dir = str(tmp_path / "state" / "manager")
    c.daemon = start()
    yield c
    for daemon in daemons:
        if daemon.thread.is_alive():
            daemon.stop()
    for server in servers.values():
        server.stop()


def members(c):
    return request(c.state_dir, "status")["members"][f"{hc.VIP}:80"]["nodes"]


def wait_for(predicate, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_members_are_up_at_start_and_checked(cluster):
    key = f"{hc.VIP}:80"
    assert {(c[1], c[2], c[3]) for c in cluster.engine.calls} == {(key, n, "up") for n in hc.NODES}
    wait_for(lambda: all(m["last"] == "passed" for m in members(cluster).values()))
    m = members(cluster)["node1"]
    assert m["state"] == "up" and m["health"] == "up 4/4" and m["output"].startswith("HTTP 200")
    assert m["latency_ms"] > 0 and m["check"] == "http"


def test_a_dead_member_goes_down_in_time_and_comes_back_after_rise(cluster):
    wait_for(lambda: all(m["health"] == "up 4/4" for m in members(cluster).values()))
    cluster.servers["node2"].stop()
    stopped = time.monotonic()
    down_at = cluster.engine.wait("node2", "down", seconds=5)
    # HAProxy's bound: the next check starts within inter, then fall failures
    assert down_at - stopped <= INTER * FALL + TIMEOUT
    down = [e for e in cluster.recorder.events if e["new"] == "down"]
    policy_key = [call[1] for call in cluster.engine.calls if call[2] == "node2"][-1]
    assert down == [{"policy": policy_key, "node": "node2", "service": "http", "old": "up",
                     "new": "down",
                     "host": "manager", "reason": down[0]["reason"]}]
    assert "Connection refused" in down[0]["reason"]
    assert cluster.engine.state("node1") == cluster.engine.state("node3") == "up"
    cluster.servers["node2"].start()
    cluster.engine.wait("node2", "up", seconds=5, after=down_at)
    assert cluster.recorder.events[-1]["old"] == "down" and \
        cluster.recorder.events[-1]["reason"].startswith("HTTP 200")
    assert members(cluster)["node2"]["health"] == "up 4/4"


def test_rise_needs_consecutive_passes(cluster, tmp_path):
    """A check that passes and fails alternately never brings a member back with rise 2."""
    wait_for(lambda: all(m["health"] == "up 4/4" for m in members(cluster).values()))
    counters = tmp_path / "counters"
    counters.mkdir()
    flip = (f'f={counters}/$CK_NODE; n=$(cat $f 2>/dev/null || echo 0); echo $((n+1)) > $f; '
            f'[ $n -ge 3 ] && [ $((n % 2)) -eq 1 ]')  # 3 failures, then pass, fail, pass...
    hc.write_config(cluster.path, os.path.dirname(cluster.state_dir), cluster.port,
                    {"kind": "command", "command": flip, "inter": 0.1, "timeout": 1.0,
                     "rise": 2, "fall": 3})
    cluster.daemon.call(cluster.daemon.runtime.reload())
    cluster.engine.wait("node1", "down", seconds=5)
    wait_for(lambda: int((counters / "node1").read_text().strip() or 0) >= 10)  # "or 0": mid-write
    assert {cluster.engine.state(n) for n in hc.NODES} == {"down"}
    assert not [e for e in cluster.recorder.events if e["new"] == "up"]


def test_drain_and_maintenance_reach_the_running_daemon(cluster):
    wait_for(lambda: all(m["last"] == "passed" for m in members(cluster).values()))
    result = request(cluster.state_dir, "operator", node="node1", action="drain")
    assert result == {"node": "node1", "operator": "drain", "policies": [f"{hc.VIP}:80"]}
    assert cluster.engine.state("node1") == "drain"
    assert cluster.recorder.events[-1]["reason"] == "operator: drain"
    assert members(cluster)["node1"]["state"] == "drain"

    request(cluster.state_dir, "operator", node="node1", action="maintenance")
    assert cluster.engine.state("node1") == "maintenance"
    paused = members(cluster)["node1"]
    time.sleep(INTER * 3)
    assert members(cluster)["node1"]["output"] == paused["output"]  # no check ran meanwhile
    assert members(cluster)["node1"]["latency_ms"] == paused["latency_ms"]

    # leaving maintenance with the server dead: one check, and it is down, not up
    cluster.servers["node1"].stop()
    request(cluster.state_dir, "operator", node="node1", action="enable")
    cluster.engine.wait("node1", "down", seconds=3)
    assert cluster.recorder.events[-1]["old"] == "maintenance"
    assert "maintenance off, check failed" in cluster.recorder.events[-1]["reason"]
    cluster.servers["node1"].start()
    cluster.engine.wait("node1", "up", seconds=5)


def test_operator_state_survives_a_restart(cluster):
    request(cluster.state_dir, "operator", node="node2", action="maintenance")
    cluster.daemon.stop()
    cluster.engine.calls.clear()
    cluster.start()
    assert cluster.engine.state("node2") == "maintenance"
    assert cluster.engine.state("node1") == "up"
    assert members(cluster)["node2"]["checks"] == "paused"


def test_unknown_node_and_action_are_refused(cluster):
    with pytest.raises(ControlError, match="no host named 'node9'"):
        request(cluster.state_dir, "operator", node="node9", action="drain")
    with pytest.raises(ControlError, match="unknown operator action 'nap'"):
        request(cluster.state_dir, "operator", node="node1", action="nap")


def test_reload_adds_removes_and_retunes_members(cluster):
    wait_for(lambda: all(m["last"] == "passed" for m in members(cluster).values()))
    hc.write_config(cluster.path, os.path.dirname(cluster.state_dir), cluster.port,
                    {"kind": "tcp", "inter": INTER, "timeout": TIMEOUT, "rise": 1, "fall": 1},
                    nodes=("node1", "node2"))
    assert cluster.daemon.call(cluster.daemon.runtime.reload())["changed"]
    assert set(members(cluster)) == {"node1", "node2"}
    wait_for(lambda: members(cluster)["node1"]["check"] == "tcp"
             and members(cluster)["node1"]["output"].startswith("connected"))
    assert members(cluster)["node1"]["health"] == "up 1/1"
    cluster.servers["node1"].stop()
    cluster.engine.wait("node1", "down", seconds=3)  # fall 1: the first failure


def test_slow_start_ramps_the_weight_after_recovery(cluster, tmp_path):
    hc.write_config(cluster.path, os.path.dirname(cluster.state_dir), cluster.port,
                    {"kind": "tcp", "inter": INTER, "timeout": TIMEOUT, "rise": 1, "fall": 1,
                     "slowstart": 1.0})
    cluster.daemon.call(cluster.daemon.runtime.reload())
    cluster.servers["node3"].stop()
    down_at = cluster.engine.wait("node3", "down", seconds=3)
    cluster.servers["node3"].start()
    up_at = cluster.engine.wait("node3", "up", seconds=3, after=down_at)
    wait_for(lambda: cluster.engine.calls[-1][2:] == ("node3", "up", 1.0) or
             members(cluster)["node3"]["weight_factor"] == 1.0, seconds=3)
    factors = [c[4] for c in cluster.engine.calls if c[2] == "node3" and c[0] >= up_at]
    assert factors[0] < 0.2 and factors[-1] == 1.0
    assert factors == sorted(factors) and len(factors) >= 3  # a ramp, not a jump


def test_a_bad_check_option_on_reload_keeps_the_running_members(cluster):
    wait_for(lambda: all(m["last"] == "passed" for m in members(cluster).values()))
    hc.write_config(cluster.path, os.path.dirname(cluster.state_dir), cluster.port,
                    {"kind": "tcp", "inter": INTER, "timeout": TIMEOUT, "fastinter": "soon"},
                    nodes=("node1",))
    result = cluster.daemon.call(cluster.daemon.runtime.reload())
    assert result["reloaded"] is False, "the definition's own check refuses it, before any plugin"
    assert "policy[0].check.fastinter: must be a number in 0.05..3600, not 'soon'" in result["error"]
    assert set(members(cluster)) == {"node1", "node2", "node3"}
    assert members(cluster)["node1"]["check"] == "http"


def test_a_drained_node_joining_a_policy_on_reload_stays_drained(cluster):
    hc.write_config(cluster.path, os.path.dirname(cluster.state_dir), cluster.port,
                    {"kind": "tcp", "inter": INTER, "timeout": TIMEOUT}, nodes=("node1", "node2"))
    cluster.daemon.call(cluster.daemon.runtime.reload())
    request(cluster.state_dir, "operator", node="node3", action="drain")
    assert set(members(cluster)) == {"node1", "node2"}
    hc.write_config(cluster.path, os.path.dirname(cluster.state_dir), cluster.port,
                    {"kind": "tcp", "inter": INTER, "timeout": TIMEOUT})
    cluster.daemon.call(cluster.daemon.runtime.reload())
    assert members(cluster)["node3"]["state"] == "drain"
    assert cluster.engine.state("node3") == "drain"
