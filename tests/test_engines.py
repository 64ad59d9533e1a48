"""Engines per policy: two engines at once in one daemon, a policy moved between them, refusals."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess

import pytest

from clusterkit.config import build_cluster
from clusterkit.definition.tables import ConfigError
from clusterkit.plugins import get_plugin_manager
from clusterkit.registry import EngineKind
from support import common_port, tcp_server, wait_for
from sync_support import CLUSTERKIT, Daemon
from test_plugins import fake_install

PREFIX = "127.88.7"

SECOND = '''
from clusterkit import hookimpl
from clusterkit.proxy.engine import Engine
from clusterkit.registry import EngineKind


@hookimpl
def clusterkit_register_engines(register):
    # a second engine of the same code, without protocol handlers: enough to run two at once
    register(EngineKind("second", create=lambda runtime: Engine(registry=runtime.registry),
                        schedulers=("rr", "wrr")))
'''


def ask(port: int) -> str:
    with socket.create_connection((f"{PREFIX}.100", port), timeout=5) as s:
        return s.recv(100).decode()


def definition(tmp_path, ports, second_engine: str = 'engine = "second"\n', state=None) -> str:
    text = (f'[cluster]\nname = "engines"\nstate_dir = "{state or tmp_path / "state"}"\n\n'
            f'[manager]\nname = "manager"\nip = "{PREFIX}.1"\npublic_ips = ["{PREFIX}.100"]\n'
            f'root = "{tmp_path}/manager"\n')
    for i in (1, 2):
        text += (f'\n[[node]]\nname = "node{i}"\nip = "{PREFIX}.1{i}"\ntransport = "local"\n'
                 f'root = "{tmp_path}/node{i}"\n')
    for port, engine in ((ports[0], ""), (ports[1], second_engine)):
        text += (f'\n[[policy]]\nvip = "{PREFIX}.100"\nport = {port}\nservice = "http"\nscheduler = "rr"\n'
                 f'members = {{ node1 = 1, node2 = 1 }}\n{engine}'
                 'check = { kind = "tcp", inter = 0.2, rise = 1, fall = 1 }\n')
    return text


@pytest.fixture
def site(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "second_engine.py").write_text(SECOND)
    fake_install(site, "second-engine", "1.0", {"second": "second_engine"})
    return site


def test_two_engines_side_by_side_and_a_policy_moved_between_them(tmp_path, site):
    ips = [f"{PREFIX}.11", f"{PREFIX}.12", f"{PREFIX}.100"]
    ports = [common_port(ips), common_port(ips)]
    servers = [tcp_server(f"{PREFIX}.1{i}", port, f"node{i}".encode()) for i in (1, 2) for port in ports]
    config = tmp_path / "cluster.toml"
    config.write_text(definition(tmp_path, ports))
    env = {"PYTHONPATH": str(site)}
    try:
        with Daemon(config, env=env) as daemon:
            policies = daemon.query("status")["policies"]
            assert policies[f"{PREFIX}.100:{ports[0]}"]["engine"] == "native"
            assert policies[f"{PREFIX}.100:{ports[1]}"]["engine"] == "second"
            for port in ports:  # both engines balance over both members
                assert {ask(port) for _ in range(6)} == {"node1", "node2"}
            summary = subprocess.run([*CLUSTERKIT, "status", "-c", str(config)], capture_output=True,
                                     text=True, timeout=30, env={**os.environ, **env})
            assert "native" in summary.stdout and "second" in summary.stdout

            done = subprocess.run([*CLUSTERKIT, "node", "maintenance", "node2", "on", "-c", str(config),
                                   "--json"], capture_output=True, text=True, timeout=30,
                                  env={**os.environ, **env})
            assert done.returncode == 0, done.stderr
            wait_for(lambda: {ask(ports[1]) for _ in range(4)} == {"node1"}, what="node2 out")

            config.write_text(definition(tmp_path, ports, second_engine=""))  # both on native now
            key = f"{PREFIX}.100:{ports[1]}"
            wait_for(lambda: daemon.query("status")["policies"].get(key, {}).get("engine") == "native",
                     what="the policy on the native engine")
            # the same address answers, and the member in maintenance stayed out
            assert {ask(ports[1]) for _ in range(6)} == {"node1"}
            wait_for(lambda: "engine second has no policy left" in daemon.log.read_text(),
                     what="the idle engine stopped")
    finally:
        for s in servers:
            s.close()


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_native_and_haproxy_side_by_side(tmp_path, tmp_path_factory):
    ips = [f"{PREFIX}.11", f"{PREFIX}.12", f"{PREFIX}.100"]
    ports = [common_port(ips), common_port(ips)]
    servers = [tcp_server(f"{PREFIX}.1{i}", port, f"node{i}".encode()) for i in (1, 2) for port in ports]
    config = tmp_path / "cluster.toml"
    state = tmp_path_factory.mktemp("eh")  # HAProxy's sockets: a short path
    config.write_text(definition(tmp_path, ports, second_engine='engine = "haproxy"\n', state=state))
    env = {"CLUSTERKIT_DISABLE_PLUGINS": "dns,dns-management,panel,panelsync,alerts"}
    try:
        with Daemon(config, env=env) as daemon:
            key = f"{PREFIX}.100:{ports[1]}"
            wait_for(lambda: (daemon.query("status")["policies"].get(key) or {}).get("listening"),
                     what="HAProxy listening")
            policies = daemon.query("status")["policies"]
            assert policies[f"{PREFIX}.100:{ports[0]}"]["engine"] == "native"
            assert policies[key]["engine"] == "haproxy"
            for port in ports:
                assert {ask(port) for _ in range(6)} == {"node1", "node2"}
            summary = subprocess.run([*CLUSTERKIT, "status", "-c", str(config)], capture_output=True,
                                     text=True, timeout=30, env={**os.environ, **env}).stdout
            rows = [line.split() for line in summary.splitlines() if line.startswith(f"{PREFIX}.100:")]
            assert sorted(row[2] for row in rows) == ["haproxy", "native"], summary
    finally:
        for s in servers:
            s.close()


def test_a_policy_its_engine_cannot_carry_is_refused_naming_the_engines_that_can(tmp_path):
    pm = get_plugin_manager()

    class Limited:
        from clusterkit import hookimpl

        @hookimpl
        def clusterkit_register_engines(self, register):
            register(EngineKind("limited", create=lambda runtime: None, schedulers=("rr",),
                                persistence=False, proxy_protocols=("",)))

    pm.register(Limited(), name="limited")
    base = definition(tmp_path, [8080, 8081], second_engine="")
    ftp = base.replace('port = 8081\nservice = "http"', 'port = 8081\nservice = "ftp"') \
        .replace("[manager]\n", '[manager]\nengine = "limited"\n')
    with pytest.raises(ConfigError) as err:
        build_cluster(ftp, "cluster.toml", pm)
    text = str(err.value)
    assert "policy[1].engine: the ftp service needs its protocol handler, which engine 'limited' " \
           "cannot run (engines that can carry this policy: native)" in text
    unknown = base.replace('scheduler = "rr"\n', 'scheduler = "rr"\nengine = "nginx"\n', 1)
    with pytest.raises(ConfigError, match=r"policy\[0\]\.engine: unknown engine 'nginx' \(known: "):
        build_cluster(unknown, "cluster.toml", pm)
    lc = base.replace('scheduler = "rr"\n', 'scheduler = "lc"\nengine = "limited"\n', 1)
    with pytest.raises(ConfigError, match=r"cluster.toml:\d+: policy\[0\]\.engine: engine 'limited' "
                                          r"has no scheduler 'lc'"):
        build_cluster(lc, "cluster.toml", pm)
    cluster = build_cluster(base.replace('scheduler = "rr"\n', 'scheduler = "rr"\nengine = "limited"\n', 1),
                            "cluster.toml", pm)
    assert [p.engine for p in cluster.policies] == ["limited", "native"]


def test_policy_add_writes_the_engine(tmp_path):
    config = tmp_path / "cluster.toml"
    config.write_text(definition(tmp_path, [8080, 8081], second_engine=""))
    done = subprocess.run([*CLUSTERKIT, "policy", "add", "-c", str(config), "--vip", f"{PREFIX}.100",
                           "--port", "8082", "--service", "http", "--members", "node1=1",
                           "--engine", "native"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    listed = subprocess.run([*CLUSTERKIT, "policy", "list", "-c", str(config), "--json"],
                            capture_output=True, text=True, timeout=30)
    assert [p["engine"] for p in json.loads(listed.stdout)] == ["native", "native", "native"]
    assert 'engine = "native"' in config.read_text()
    bad = subprocess.run([*CLUSTERKIT, "policy", "add", "-c", str(config), "--vip", f"{PREFIX}.100",
                          "--port", "8083", "--service", "http", "--members", "node1=1",
                          "--engine", "nope"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "unknown engine 'nope'" in bad.stderr


BROKEN = '''
from clusterkit import hookimpl
from clusterkit.registry import EngineKind


class Broken:
    """An engine whose apply fails with an error that is not an OSError."""

    async def apply(self, cluster):
        if cluster.policies:
            raise RuntimeError("the engine's table is full")

    def set_member_state(self, policy_key, node, state, weight_factor=1.0):
        return None

    def stats(self):
        return {}

    async def close(self, timeout):
        return None


@hookimpl
def clusterkit_register_engines(register):
    register(EngineKind("broken", create=lambda runtime: Broken(), schedulers=("rr",)))
'''


@pytest.fixture
def broken_site(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "broken_engine.py").write_text(BROKEN)
    fake_install(site, "broken-engine", "1.0", {"broken": "broken_engine"})
    return site


def test_an_engine_failing_at_start_ends_run_with_its_name_not_a_traceback(tmp_path, broken_site):
    ports = [common_port([f"{PREFIX}.100"]), common_port([f"{PREFIX}.100"])]
    config = tmp_path / "cluster.toml"
    config.write_text(definition(tmp_path, ports, second_engine='engine = "broken"\n'))
    done = subprocess.run([*CLUSTERKIT, "run", "-c", str(config)], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "PYTHONPATH": str(broken_site)})
    assert done.returncode == 1
    assert "error: engine broken: the engine's table is full" in done.stderr
    assert "Traceback" not in done.stderr.split("error: engine broken")[-1]


def test_an_engine_failing_at_reload_is_reported_and_the_others_keep_serving(tmp_path, broken_site):
    ips = [f"{PREFIX}.11", f"{PREFIX}.12", f"{PREFIX}.100"]
    ports = [common_port(ips), common_port(ips)]
    servers = [tcp_server(f"{PREFIX}.1{i}", port, f"node{i}".encode()) for i in (1, 2) for port in ports]
    config = tmp_path / "cluster.toml"
    config.write_text(definition(tmp_path, ports, second_engine=""))
    try:
        with Daemon(config, env={"PYTHONPATH": str(broken_site)}) as daemon:
            config.write_text(definition(tmp_path, ports, second_engine='engine = "broken"\n'))
            answer = daemon.query("reload")
            assert answer["reloaded"] and "engine broken: the engine's table is full" in answer["error"]
            assert {ask(ports[0]) for _ in range(6)} == {"node1", "node2"}  # native still serves
            assert "ERROR" in daemon.log.read_text()
    finally:
        for s in servers:
            s.close()
