"""``clusterkit node drain|maintenance|enable`` and ``status``: with and without a running daemon."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from clusterkit.cli import get_app
from clusterkit.membership.operator import OperatorStates
from clusterkit.plugins import get_plugin_manager

import health_cluster as hc


@pytest.fixture
def setup(tmp_path):
    port = hc.common_port()
    servers = [hc.NodeServer(ip, port) for ip in hc.NODES.values()]
    for server in servers:
        server.start()
    path = str(tmp_path / "cluster.toml")
    hc.write_config(path, str(tmp_path / "state"), port,
                    {"kind": "tcp", "inter": 0.2, "timeout": 0.2, "rise": 1, "fall": 1})
    daemons = []
    yield path, str(tmp_path / "state" / "manager"), daemons
    for daemon in daemons:
        daemon.stop()
    for server in servers:
        server.stop()


def cli(path, *args):
    result = CliRunner().invoke(get_app(get_plugin_manager()), [*args, "-c", path])
    return result.exit_code, result.stdout if result.exit_code == 0 else result.output


def test_without_a_daemon_the_state_is_recorded_and_applies_at_start(setup):
    path, state_dir, daemons = setup
    code, out = cli(path, "node", "drain", "node1")
    assert code == 0, out
    assert "node1 is draining" in out and "127.82.2.100:80" in out
    assert "no daemon is running: recorded, it applies when the daemon starts" in out
    assert OperatorStates(state_dir).state("node1") == "drain"
    recorder = hc.Recorder()
    daemons.append(hc.Daemon(path, recorder))
    assert recorder.engine.state("node1") == "drain"
    assert recorder.engine.state("node2") == "up"


def test_with_a_daemon_states_apply_at_once(setup):
    path, state_dir, daemons = setup
    recorder = hc.Recorder()
    daemons.append(hc.Daemon(path, recorder))
    code, out = cli(path, "node", "maintenance", "node2", "on")
    assert code == 0, out
    assert "node2 is in maintenance" in out and "applied to the running daemon" in out
    assert recorder.engine.state("node2") == "maintenance"

    code, out = cli(path, "status", "--json")
    assert code == 0, out
    nodes = json.loads(out)["members"]["127.82.2.100:80"]["nodes"]
    assert nodes["node2"]["state"] == "maintenance" and nodes["node2"]["checks"] == "paused"

    code, out = cli(path, "node", "maintenance", "node2", "off", "--json")
    assert code == 0, out
    assert json.loads(out) == {"node": "node2", "operator": "enabled", "applied": "now",
                               "policies": ["127.82.2.100:80"]}
    recorder.engine.wait("node2", "up", seconds=3)

    assert cli(path, "node", "drain", "node3")[0] == 0
    assert recorder.engine.state("node3") == "drain"
    code, out = cli(path, "node", "enable", "node3")
    assert code == 0 and "node3 is enabled" in out
    assert recorder.engine.state("node3") == "up"
    assert OperatorStates(state_dir).load() == {}

    code, out = cli(path, "status")
    assert code == 0 and "node3 up" in out and ": no problems" in out.splitlines()[0]
    code, out = cli(path, "status", "-v")
    assert code == 0 and "members:" in out and "node3:" in out and "state: up" in out


def test_unknown_node_is_a_usage_error(setup):
    path, _, _ = setup
    code, out = cli(path, "node", "drain", "node9")
    assert code == 2 and "no host named 'node9'" in out
    code, out = cli(path, "node", "maintenance", "node1", "sideways")
    assert code == 2


def test_a_member_of_no_policy_is_said_so(setup):
    path, _, _ = setup
    code, out = cli(path, "node", "drain", "manager")
    assert code == 0 and "member of no policy" in out
