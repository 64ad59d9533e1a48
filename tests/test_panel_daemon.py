"""The deployment path with real processes: `clusterkit run`, `node token`, `join`, actions, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys

import pytest

from clusterkit.plugins import get_plugin_manager
from clusterkit_panel import pki
from conftest import write_cluster
from test_panel_fixtures import Client, free_ports, wait_for

CLUSTERKIT = os.path.join(os.path.dirname(sys.executable), "clusterkit")
PREFIX = "127.86.7"


def ck(*args, **kw):
    return subprocess.run([CLUSTERKIT, *map(str, args)], capture_output=True, text=True, timeout=60, **kw)


@pytest.fixture
def daemons(tmp_path):
    ips = [f"{PREFIX}.1", f"{PREFIX}.11"]
    https, http, dns = free_ports(ips + [f"{PREFIX}.100"], 3)
    log = tmp_path / "actions.log"
    dns_table = f"[dns]\nport = {dns}\n" if get_plugin_manager().get_plugin("dns") is not None else ""
    cfg = write_cluster(tmp_path / "cluster.toml", PREFIX, nodes=1, extra=(
        f"\n[panel]\nhttps_port = {https}\nhttp_port = {http}\npoll_interval = 0.3\nretry_max = 0.3\n"
        f'[panel.actions]\ntouch = "echo $CLUSTERKIT_HOST >> {log}"\n{dns_table}'))
    procs: list[subprocess.Popen] = []

    def run(host: str) -> subprocess.Popen:
        proc = subprocess.Popen([CLUSTERKIT, "run", "-c", str(cfg), "--as", host, "--log-format", "json"],
                                stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        return proc

    try:
        yield cfg, https, log, run
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)


def test_init_ca_join_and_a_remote_action_between_real_daemons(daemons, tmp_path):
    cfg, https, log, run = daemons
    assert ck("panel", "init-ca", "-c", cfg).returncode == 0
    manager = run("manager")
    ca = str(tmp_path / "state/manager/pki/ca.crt")
    client = Client(f"{PREFIX}.1", https, ssl.create_default_context(cafile=ca))
    wait_for(lambda: _up(client), what="the manager's panel")

    token = json.loads(ck("node", "token", "node1", "--json", "-c", cfg).stdout)["token"]
    joined = ck("join", f"https://{PREFIX}.1:{https}", "--token", token, "--as", "node1", "-c", cfg)
    assert joined.returncode == 0, joined.stderr
    node = run("node1")
    status = wait_for(lambda: _status(cfg), what="the manager reaching node1")
    assert status["panel"]["nodes"]["node1"]["reachable"] is True

    queued = ck("node", "action", "node1", "touch", "-c", cfg)
    assert queued.returncode == 0 and "queued job 1" in queued.stdout
    wait_for(lambda: log.exists() and log.read_text() == "node1\n", what="the action on node1")
    jobs = json.loads(ck("node", "jobs", "--json", "-c", cfg).stdout)
    assert jobs[0]["state"] == "done" and jobs[0]["exit_code"] == 0

    paths = pki.Paths.of(str(tmp_path / "state/node1"))
    assert oct(os.stat(paths.key).st_mode & 0o777) == "0o600"
    for proc in (node, manager):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


def _up(client) -> bool:
    try:
        return client.get("/healthz")[0] == 200
    except OSError:
        return False


def _status(cfg):
    result = ck("status", "--json", "-c", cfg)
    if result.returncode != 0:
        return None
    report = json.loads(result.stdout)
    return report if report.get("panel", {}).get("nodes", {}).get("node1", {}).get("reachable") else None
