"""proxy_workers: SO_REUSEPORT worker processes behind one engine, through a real Runtime."""

from __future__ import annotations

import http.client
import os
import socket
import time

import pytest

from clusterkit.runtime import Runtime
from proxy_support import (HTTPBackend, cluster_text, common_port, free_port, plugin_manager,
                           wait_for)
from support import LoopThread

NET = "127.81.5"
VIP = f"{NET}.100"


@pytest.fixture
def cluster(tmp_path):
    ips = [f"{NET}.11", f"{NET}.12"]
    port = common_port(ips)
    vports = [free_port(VIP), free_port(VIP)]
    backends = [HTTPBackend((ip, port), f"node{i}") for i, ip in enumerate(ips, 1)]
    path = tmp_path / "cluster.toml"

    def write(*, sticky: bool = True, shared: bool = True) -> None:
        policies = ""
        if shared:
            policies += (f'[[policy]]\nvip = "{VIP}"\nport = {vports[0]}\nservice = "http"\n'
                         f'scheduler = "rr"\nbackend_port = {port}\nmembers = {{ node1 = 1, node2 = 1 }}\n')
        if sticky:
            policies += (f'[[policy]]\nvip = "{VIP}"\nport = {vports[1]}\nservice = "http"\n'
                         f'persistence = 60\nbackend_port = {port}\nmembers = {{ node1 = 1, node2 = 1 }}\n')
        text = cluster_text(NET, 2, policies, str(tmp_path / "state"))
        path.write_text(text.replace('public_ips = ', 'options = { proxy_workers = 2 }\npublic_ips = '))

    write()
    looper = LoopThread()
    call = looper.call

    async def make():
        return Runtime(str(path), plugin_manager(), watch_config=False, shutdown_timeout=2)

    runtime = call(make())
    call(runtime.start())
    env = type("Env", (), {})()
    env.runtime, env.call, env.write, env.vports = runtime, call, write, vports
    env.engine = runtime.engine.running["native"]  # the native proxy, under the engines

    async def stats():
        return runtime.engine.stats()

    env.stats = lambda: call(stats())
    try:
        yield env
    finally:
        call(runtime.stop())
        looper.close()
        for b in backends:
            b.stop()


def get(port: int) -> str:
    conn = http.client.HTTPConnection(VIP, port, timeout=5)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        return conn.getresponse().read().decode()
    finally:
        conn.close()


def test_connections_spread_over_processes_and_counters_add_up(cluster):
    pids = cluster.engine.workers.pids()
    assert len(pids) == 1 and all(os.path.exists(f"/proc/{pid}") for pid in pids)
    key = f"{VIP}:{cluster.vports[0]}"
    worker = cluster.engine.workers.workers[0]
    wait_for(lambda: key in worker.stats, timeout=20)  # the worker is up and listening
    answers = [get(cluster.vports[0]) for _ in range(200)]
    assert set(answers) == {"node1", "node2"}
    wait_for(lambda: cluster.stats()[key]["total"] == 200)
    assert 0 < worker.stats[key]["total"] < 200  # the kernel gave both processes a share
    total = cluster.stats()[key]["members"]
    assert total["node1"]["total"] + total["node2"]["total"] == 200


def test_persistent_policies_stay_in_one_process(cluster):
    key = f"{VIP}:{cluster.vports[1]}"
    assert len({get(cluster.vports[1]) for _ in range(20)}) == 1
    wait_for(lambda: cluster.engine.workers.workers[0].stats)
    assert key not in cluster.engine.workers.workers[0].stats
    assert cluster.stats()[key]["total"] == 20


def test_member_states_and_reloads_reach_the_workers(cluster):
    key = f"{VIP}:{cluster.vports[0]}"

    async def drain():
        cluster.engine.set_member_state(key, "node1", "drain")

    cluster.call(drain())
    wait_for(lambda: {get(cluster.vports[0]) for _ in range(40)} == {"node2"})
    cluster.write(shared=False)
    assert cluster.call(cluster.runtime.reload())["changed"]

    def refused_everywhere():
        for _ in range(20):
            try:
                get(cluster.vports[0])
                return False
            except ConnectionRefusedError:
                pass
        return True

    wait_for(refused_everywhere)


def test_stop_ends_the_workers(cluster):
    pids = cluster.engine.workers.pids()
    cluster.call(cluster.runtime.engine.close(1.0))
    for pid in pids:
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
                 open(f"/proc/{pid}/stat").read().split()[2] == "Z")


def test_a_worker_that_dies_is_restarted_with_the_current_policies(cluster):
    worker = cluster.engine.workers.workers[0]
    key = f"{VIP}:{cluster.vports[0]}"
    wait_for(lambda: key in worker.stats, timeout=20)
    old = worker.proc.pid
    os.kill(old, 9)
    wait_for(lambda: worker.proc.pid != old and key in worker.stats, timeout=20)
    assert {get(cluster.vports[0]) for _ in range(20)} == {"node1", "node2"}


def test_connection_limits_hold_for_all_processes_together(tmp_path):
    """member_max_conn = 2 on two members: at most 4 connections reach the nodes, however
    the kernel spreads the 20 clients over the two processes (each takes half a limit)."""
    net = "127.93.5"
    ips = [f"{net}.11", f"{net}.12"]
    port = common_port(ips)
    vport = free_port(f"{net}.100")
    nodes = [socket.create_server((ip, port)) for ip in ips]
    policy = (f'[[policy]]\nvip = "{net}.100"\nport = {vport}\nservice = "http"\n'
              f'scheduler = "rr"\nbackend_port = {port}\nmember_max_conn = 2\n'
              f'members = {{ node1 = 1, node2 = 1 }}\n')
    text = cluster_text(net, 2, policy, str(tmp_path / "state"))
    path = tmp_path / "cluster.toml"
    path.write_text(text.replace("public_ips = ", "options = { proxy_workers = 2 }\npublic_ips = "))
    looper = LoopThread()

    async def make():
        return Runtime(str(path), plugin_manager(), watch_config=False, shutdown_timeout=1)

    runtime = looper.call(make())
    looper.call(runtime.start())
    clients, accepted = [], []
    try:
        worker = runtime.engine.running["native"].workers.workers[0]
        wait_for(lambda: f"{net}.100:{vport}" in worker.stats, timeout=20)
        for _ in range(20):
            try:  # a client beyond the limits is reset, maybe before its connect returns
                clients.append(socket.create_connection((f"{net}.100", vport), timeout=5))
            except ConnectionResetError:
                pass
        time.sleep(1)  # every client has been accepted and its member connect tried
        for node in nodes:
            node.setblocking(False)
            while True:
                try:
                    accepted.append(node.accept()[0])
                except BlockingIOError:
                    break
        assert 2 <= len(accepted) <= 4
    finally:
        for s in clients + accepted + nodes:
            s.close()
        looper.call(runtime.stop())
        looper.close()
