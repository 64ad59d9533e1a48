"""The daemon: starts, answers on its control socket, reloads, refuses broken files, stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from clusterkit.control import socket_path
from conftest import write_cluster
from support import wait_for

CLUSTERKIT = os.path.join(os.path.dirname(sys.executable), "clusterkit")



def status(cfg) -> dict | None:
    result = subprocess.run([CLUSTERKIT, "status", "--json", "-c", str(cfg)],
                            capture_output=True, text=True, timeout=30)
    return json.loads(result.stdout) if result.returncode == 0 else None


@pytest.fixture
def daemon(tmp_path):
    cfg = write_cluster(tmp_path / "cluster.toml", "127.91.2", nodes=2)
    proc = subprocess.Popen([CLUSTERKIT, "run", "-c", str(cfg), "--log-format", "json"],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: status(cfg), what="the daemon's control socket")
        yield cfg, proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def test_status_over_the_control_socket(daemon):
    cfg, proc = daemon
    report = status(cfg)
    assert report["host"] == "manager" and report["role"] == "manager"
    assert report["pid"] == proc.pid
    sock = socket_path(os.path.join(cfg.parent, "state", "manager"))
    assert oct(os.stat(sock).st_mode & 0o777) == "0o600", "control socket is owner-only"


def test_a_broken_file_is_refused_and_the_running_definition_kept(daemon):
    cfg, proc = daemon
    good = cfg.read_text()
    cfg.write_text(good.replace('name = "node2"', 'name = "node1"'))
    os.kill(proc.pid, signal.SIGHUP)
    time.sleep(1.5)
    assert proc.poll() is None, "a broken definition must not stop the daemon"
    assert status(cfg)["cluster"] == "test"
    cfg.write_text(good.replace('name = "test"', 'name = "renamed"'))
    wait_for(lambda: (status(cfg) or {}).get("cluster") == "renamed", what="the file-change reload")


def test_sigterm_stops_gracefully(daemon):
    cfg, proc = daemon
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=15) == 0
    logs = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
    messages = [entry["msg"] for entry in logs]
    assert any("stopped" in m for m in messages), messages
    assert not os.path.exists(socket_path(os.path.join(cfg.parent, "state", "manager")))


def test_a_second_daemon_for_the_same_host_is_refused(daemon):
    cfg, _ = daemon
    second = subprocess.run([CLUSTERKIT, "run", "-c", str(cfg)], capture_output=True, text=True,
                            timeout=30)
    assert second.returncode == 1
    assert "already running" in second.stderr


def test_reload_reports_the_refusal_over_the_control_socket(daemon):
    from clusterkit.control import request

    cfg, _ = daemon
    state = os.path.join(cfg.parent, "state", "manager")
    cfg.write_text(cfg.read_text() + "\n[[policy]]\nport = 80\n")
    answer = request(state, "reload")
    assert answer["reloaded"] is False
    assert "policy[0].vip: is required" in answer["error"]


def test_a_plugin_failing_to_start_is_named_and_the_daemon_exits_1(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "failing_start.py").write_text(
        "from clusterkit import hookimpl\n\n@hookimpl\ndef clusterkit_start(runtime):\n"
        "    raise OSError('port 53 is taken')\n")
    from test_plugins import fake_install

    fake_install(site, "failing-start", "1.0", {"failing": "failing_start"})
    cfg = write_cluster(tmp_path / "cluster.toml", "127.91.3", nodes=1)
    env = {**os.environ, "PYTHONPATH": str(site)}
    result = subprocess.run([CLUSTERKIT, "run", "-c", str(cfg)], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 1
    assert "plugin 'failing' failed in clusterkit_start: OSError: port 53 is taken" in result.stderr
    assert not os.path.exists(socket_path(os.path.join(tmp_path, "state", "manager")))


def test_a_byte_that_is_not_utf8_neither_stops_the_daemon_nor_its_config_watch(daemon):
    cfg, proc = daemon
    good = cfg.read_text()
    cfg.write_bytes(good.encode() + b"# \xff\n")
    lines = good.count("\n") + 1
    wait_for(lambda: any(f"{cfg}:{lines}: not UTF-8: byte 0xff" in line for line in _log(proc)),
             what="the refusal in the log")
    assert proc.poll() is None and status(cfg)["cluster"] == "test"
    cfg.write_text(good.replace('name = "test"', 'name = "renamed"'))
    wait_for(lambda: (status(cfg) or {}).get("cluster") == "renamed",
             what="the next edit, applied without SIGHUP")
    assert not any("died" in line for line in _log(proc))


def test_a_number_that_is_not_finite_is_refused_on_reload_and_the_old_definition_kept(daemon):
    from clusterkit.control import request

    cfg, proc = daemon
    state = os.path.join(cfg.parent, "state", "manager")
    good = cfg.read_text()
    cfg.write_text(good.replace('name = "test"', 'name = "renamed"') +
                   '\n[[policy]]\nvip = "127.91.2.100"\nport = 8080\nservice = "http"\n'
                   'members = {node1 = 1}\ncheck = {kind = "tcp", inter = nan}\n')
    answer = request(state, "reload")
    line = cfg.read_text().splitlines().index('check = {kind = "tcp", inter = nan}') + 1
    assert answer["reloaded"] is False
    assert answer["error"] == f"{cfg}:{line}: policy[0].check.inter: nan is not a finite number (0.05..3600)"
    report = status(cfg)
    assert report["cluster"] == "test" and report["policies"] == {}
    assert proc.poll() is None


def test_the_state_directory_and_the_sync_queue_are_owner_only(tmp_path):
    state = tmp_path / "state" / "manager"
    state.mkdir(parents=True, mode=0o755)  # as another writer (a plugin's init) leaves it
    state.chmod(0o755)
    cfg = write_cluster(tmp_path / "cluster.toml", "127.91.4", nodes=1)
    proc = subprocess.Popen([CLUSTERKIT, "run", "-c", str(cfg)], stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: status(cfg), what="the daemon's control socket")
        assert oct(state.stat().st_mode & 0o777) == "0o700"
        queue = wait_for(lambda: [p for p in state.iterdir() if p.name.startswith("sync.sqlite")],
                         what="the sync queue")
        for path in queue:
            assert oct(path.stat().st_mode & 0o777) == "0o600", path
    finally:
        proc.kill()
        proc.wait(timeout=10)


def _log(proc) -> list[str]:
    """The daemon's log lines so far (a thread drains its stderr)."""
    import threading

    if not hasattr(proc, "lines"):
        proc.lines = []
        threading.Thread(target=lambda: proc.lines.extend(iter(proc.stderr.readline, "")),
                         daemon=True).start()
    return list(proc.lines)


def test_the_config_watch_outlives_a_reload_that_raises(tmp_path):
    """An engine failing to apply one definition: logged, and the next edit still applies."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "picky_engine.py").write_text(
        "from clusterkit import hookimpl\n\n"
        "class Engine:\n"
        "    async def apply(self, cluster):\n"
        "        if cluster.name == 'boom':\n"
        "            raise RuntimeError('cannot apply boom')\n"
        "    def set_member_state(self, *args, **kwargs):\n        pass\n"
        "    def stats(self):\n        return {}\n"
        "    async def close(self, timeout):\n        pass\n\n"
        "@hookimpl\ndef clusterkit_register_engines(register):\n"
        "    from clusterkit.registry import EngineKind\n"
        "    register(EngineKind('picky', create=lambda runtime: Engine()))\n")
    from test_plugins import fake_install

    fake_install(site, "picky-engine", "1.0", {"picky": "picky_engine"})
    cfg = write_cluster(tmp_path / "cluster.toml", "127.91.5", nodes=1)
    cfg.write_text(cfg.read_text().replace("[manager]\n", '[manager]\nengine = "picky"\n', 1)
                   + '\n[[policy]]\nvip = "127.91.5.100"\nport = 80\nservice = "http"\n'
                     'members = { node1 = 1 }\n')
    good = cfg.read_text()
    proc = subprocess.Popen([CLUSTERKIT, "run", "-c", str(cfg)], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(site)})
    try:
        wait_for(lambda: status(cfg), what="the daemon's control socket")
        cfg.write_text(good.replace('name = "test"', 'name = "boom"'))
        wait_for(lambda: any("engine picky: cannot apply boom" in line for line in _log(proc)),
                 what="the failed apply in the log")
        cfg.write_text(good.replace('name = "test"', 'name = "renamed"'))
        wait_for(lambda: (status(cfg) or {}).get("cluster") == "renamed", what="the next edit")
        assert not any("config-watch died" in line for line in _log(proc))
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_the_started_heap_is_frozen_once_per_process():
    """A second host starting in the same process (the demo) freezes nothing more: what a
    freeze holds is never collected if it dies inside a cycle, so it must not grow."""
    script = ("import gc, sys\nfrom clusterkit.eventloop import freeze_started_heap\n"
              "freeze_started_heap()\nfirst = gc.get_freeze_count()\n"
              "later = [[i] for i in range(10000)]\nfreeze_started_heap()\n"
              "print(first > 0, gc.get_freeze_count() == first)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["True", "True"], done.stderr
