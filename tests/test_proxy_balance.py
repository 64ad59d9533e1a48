"""Balancing through real sockets: schedulers, persistence, drain, failed members, fallback, limits."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections import Counter

import pytest

from proxy_support import (EngineThread, TCPBackend, common_port, free_port, make_cluster,
                           recv_all, wait_for)

NET = "127.81.1"
VIP = f"{NET}.100"


def say_name(sock, server):
    """A member that speaks first: its name, then it closes."""
    sock.sendall(server.name.encode())


def hold_then_name(sock, server):
    """A member that answers its name only when the client sends something (lc tests)."""
    sock.recv(10)
    sock.sendall(server.name.encode())


@pytest.fixture
def env(tmp_path):
    """Three member servers, an engine, and ``env.policy(...)`` to (re)apply a policy."""
    ips = [f"{NET}.{10 + i}" for i in (1, 2, 3)]
    port = common_port(ips + [f"{NET}.1"])
    vport = free_port(VIP)
    engine = EngineThread()

    class Env:
        backends = {}
        backend_port = port
        vip_port = vport

        def start(self, handle=say_name, nodes=(1, 2, 3)):
            for i in nodes:
                self.backends[f"node{i}"] = TCPBackend((ips[i - 1], port), handle, f"node{i}")

        def start_manager(self):
            self.backends["manager"] = TCPBackend((f"{NET}.1", port), say_name, "manager")

        def policy(self, members: str, **options):
            extra = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in options.items())
            text = (f'[[policy]]\nvip = "{VIP}"\nport = {vport}\nservice = "http"\n'
                    f'backend_port = {port}\nmembers = {{ {members} }}\n{extra}')
            engine.apply(make_cluster(tmp_path, NET, 3, text))

        def ask(self, source: str | None = None) -> str:
            with socket.create_connection((VIP, vport), 5,
                                          source_address=(source, 0) if source else None) as s:
                return recv_all(s).decode()

        def count(self, n: int, source=None) -> Counter:
            return Counter(self.ask(source) for _ in range(n))

        def refused(self):
            """The proxy resets the connection at once (in connect or in the first read)."""
            with pytest.raises(ConnectionResetError):
                with socket.create_connection((VIP, vport), 5) as s:
                    s.settimeout(5)
                    s.recv(10)

        def stats(self):
            return engine.stats()[f"{VIP}:{vport}"]

    e = Env()
    e.engine = engine
    yield e
    engine.stop()
    for b in e.backends.values():
        b.stop()


@contextlib.contextmanager
def blackhole(ip: str, port: int):
    """A member whose connects never complete: a listener with a full backlog, never accepting."""
    listener = socket.socket()
    listener.bind((ip, port))
    listener.listen(0)
    fillers = []
    try:
        for _ in range(8):
            f = socket.socket()
            f.setblocking(False)
            f.connect_ex((ip, port))
            fillers.append(f)
        yield
    finally:
        for f in fillers:
            f.close()
        listener.close()


def test_wrr_proportions_over_many_connections(env):
    env.start()
    env.policy("node1 = 5, node2 = 3, node3 = 2", scheduler="wrr")
    got = env.count(600)
    for node, share in (("node1", 0.5), ("node2", 0.3), ("node3", 0.2)):
        assert abs(got[node] / 600 - share) < 0.03, got


def test_rr_alternates_regardless_of_weight(env):
    env.start()
    env.policy("node1 = 9, node2 = 1, node3 = 1", scheduler="rr")
    assert env.count(90) == {"node1": 30, "node2": 30, "node3": 30}


def test_lc_sends_new_connections_to_the_least_busy(env):
    env.start(hold_then_name)
    env.policy("node1 = 1, node2 = 1, node3 = 1", scheduler="lc")
    held = [socket.create_connection((VIP, env.vip_port), 5) for _ in range(3)]
    try:
        wait_for(lambda: all(m["active"] == 1 for m in env.stats()["members"].values()))
        held[0].sendall(b"x")
        busy = recv_all(held[0]).decode()
        held[0].close()  # that member now has no connection
        wait_for(lambda: env.stats()["members"][busy]["active"] == 0)
        with socket.create_connection((VIP, env.vip_port), 5) as s:
            s.sendall(b"x")
            assert recv_all(s).decode() == busy
    finally:
        for s in held:
            s.close()


def test_wlc_weighs_active_connections(env):
    env.start(hold_then_name, nodes=(1, 2))
    env.policy("node1 = 3, node2 = 1", scheduler="wlc")
    held = [socket.create_connection((VIP, env.vip_port), 5) for _ in range(8)]
    try:
        wait_for(lambda: sum(m["active"] for m in env.stats()["members"].values()) == 8)
        members = env.stats()["members"]
        assert (members["node1"]["active"], members["node2"]["active"]) == (6, 2)
    finally:
        for s in held:
            s.close()


def test_sh_keeps_a_client_address_on_one_member(env):
    env.start()
    env.policy("node1 = 1, node2 = 1, node3 = 1", scheduler="sh")
    sources = [f"{NET}.{200 + i}" for i in range(12)]
    chosen = {src: env.ask(src) for src in sources}
    assert all(env.count(5, src) == {chosen[src]: 5} for src in sources[:4])
    assert len(set(chosen.values())) > 1  # different clients do spread


def test_persistence_pins_a_client_with_round_robin(env):
    env.start()
    env.policy("node1 = 1, node2 = 1, node3 = 1", scheduler="rr", persistence=60)
    a, b = f"{NET}.201", f"{NET}.202"
    first_a = env.ask(a)
    assert env.count(6, a) == {first_a: 6}
    assert env.ask(b) != first_a  # round robin moved on for the next client
    env.engine.sync(env.engine.engine.set_member_state, f"{VIP}:{env.vip_port}", first_a, "down")
    moved = env.ask(a)
    assert moved != first_a and env.count(3, a) == {moved: 3}


def test_weight_zero_drains_but_established_connections_finish(env):
    env.start(hold_then_name, nodes=(1, 2))
    env.policy("node1 = 1, node2 = 1", scheduler="rr")
    held = [socket.create_connection((VIP, env.vip_port), 5) for _ in range(2)]
    wait_for(lambda: env.stats()["members"]["node1"]["active"] == 1)
    env.policy("node1 = 0, node2 = 1", scheduler="rr")
    for _ in range(4):
        with socket.create_connection((VIP, env.vip_port), 5) as s:
            s.sendall(b"x")
            assert recv_all(s) == b"node2"
    answers = set()
    for s in held:
        s.sendall(b"x")
        answers.add(recv_all(s).decode())
        s.close()
    assert answers == {"node1", "node2"}  # the drained member's connection ran to its end


def test_drain_state_from_health(env):
    env.start(nodes=(1, 2))
    env.policy("node1 = 1, node2 = 1", scheduler="wrr")
    env.engine.sync(env.engine.engine.set_member_state, f"{VIP}:{env.vip_port}", "node1", "drain")
    assert env.count(10) == {"node2": 10}
    assert env.stats()["members"]["node1"]["state"] == "drain"
    env.engine.sync(env.engine.engine.set_member_state, f"{VIP}:{env.vip_port}", "node1", "up")
    assert env.count(10) == {"node1": 5, "node2": 5}


def test_a_member_with_a_closed_port_costs_clients_nothing(env):
    env.start(nodes=(1, 2))  # node3 is a member, but nothing listens there
    env.policy("node1 = 1, node2 = 1, node3 = 1", scheduler="rr")
    errors, answers = [], Counter()
    lock = threading.Lock()

    def client():
        for _ in range(40):
            try:
                name = env.ask()
            except OSError as exc:
                name = None
                errors.append(exc)
            with lock:
                answers[name] += 1

    threads = [threading.Thread(target=client) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and set(answers) == {"node1", "node2"}
    assert sum(answers.values()) == 200
    assert env.stats()["members"]["node3"]["connect_failures"] >= 1


def test_all_members_down_refuses_at_once(env):
    env.start(nodes=(1,))
    env.policy("node1 = 1", scheduler="rr")
    env.engine.sync(env.engine.engine.set_member_state, f"{VIP}:{env.vip_port}", "node1", "down")
    start = time.monotonic()
    env.refused()
    assert time.monotonic() - start < 2  # not a hanging connection (the bound is generous)
    assert env.stats()["refused"] == 1


def test_fallback_takes_the_connection_when_no_member_can(env):
    env.start(nodes=(1, 3))
    fallback = f"{NET}.13:{env.backend_port}"
    env.policy("node2 = 1", scheduler="rr", fallback=fallback)  # node2 is not listening
    assert env.ask() == "node3"
    st = env.stats()
    assert st["fallback"] == 1 and st["members"]["node2"]["connect_failures"] == 1
    env.policy("node2 = 1", scheduler="rr", fallback="node1")  # a host name: its ip, backend port
    env.engine.sync(env.engine.engine.set_member_state, f"{VIP}:{env.vip_port}", "node2", "maintenance")
    assert env.ask() == "node1"


def test_unreachable_member_times_out_and_the_next_one_answers(env):
    env.start(nodes=(1,))
    # node2 ip answers nothing: a listening socket with a full backlog never completes connects
    with blackhole(f"{NET}.12", env.backend_port):
        env.policy("node1 = 1, node2 = 1", scheduler="rr", connect_timeout=0.3)
        assert env.count(4) == {"node1": 4}
        assert env.stats()["members"]["node2"]["connect_failures"] == 1  # then passed over


def test_connection_limit_per_member(env):
    """Full members are no members (the listener's own limit: test_proxy_limits.py)."""
    env.start(hold_then_name, nodes=(1, 2))
    env.policy("node1 = 1, node2 = 1", scheduler="rr", member_max_conn=1, max_conn=3)
    held = [socket.create_connection((VIP, env.vip_port), 5) for _ in range(2)]
    try:
        wait_for(lambda: env.stats()["active"] == 2)
        env.refused()  # both members are full
        assert env.stats()["refused"] == 1
    finally:
        for s in held:
            s.close()


def test_the_manager_with_weight_zero_is_the_backup(env):
    env.start(nodes=(1,))
    env.start_manager()
    env.policy("node1 = 1, manager = 0", scheduler="wrr")
    assert env.count(5) == {"node1": 5}
    key = f"{VIP}:{env.vip_port}"
    env.engine.sync(env.engine.engine.set_member_state, key, "node1", "down")
    assert env.count(3) == {"manager": 3}
    assert env.stats()["fallback"] == 3 and env.stats()["members"]["manager"]["total"] == 3
    env.engine.sync(env.engine.engine.set_member_state, key, "manager", "maintenance")
    env.refused()


def test_bytes_sent_while_connecting_arrive_whole_after_a_retry(env):
    import hashlib

    def digest(sock, server):
        data = recv_all(sock)
        sock.sendall(f"{server.name} {len(data)} {hashlib.sha256(data).hexdigest()}".encode())

    env.start(digest, nodes=(2,))
    with blackhole(f"{NET}.11", env.backend_port):  # node1: connects to it never complete
        env.policy("node1 = 1, node2 = 1", scheduler="rr", connect_timeout=0.5)
        payload = bytes(range(256)) * 4096 * 2  # 2 MiB: more than the proxy holds
        with socket.create_connection((VIP, env.vip_port), 5) as s:
            s.sendall(payload)        # blocks once the proxy holds its share and pauses
            s.shutdown(socket.SHUT_WR)
            answer = recv_all(s).decode()
        assert answer == f"node2 {len(payload)} {hashlib.sha256(payload).hexdigest()}"
        assert env.stats()["members"]["node1"]["connect_failures"] == 1


def test_a_client_leaving_during_the_connect_leaves_no_trace(env):
    with blackhole(f"{NET}.11", env.backend_port):
        env.policy("node1 = 1", connect_timeout=2.0)
        for _ in range(5):
            s = socket.create_connection((VIP, env.vip_port), 5)
            s.sendall(b"hello")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # a reset: gone for good (a FIN would only half-close)
        wait_for(lambda: env.stats()["active"] == 0, timeout=1.5)  # before the connect timeout
        st = env.stats()
        assert st["total"] == 5 and st["members"]["node1"]["active"] == 0
        assert st["members"]["node1"]["connect_failures"] == 0  # abandoned, not failed


def test_a_member_that_resets_mid_stream_closes_the_client_cleanly(env):
    def reset_after_hello(sock, server):
        sock.sendall(b"partial")
        sock.recv(10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()

    env.start(reset_after_hello, nodes=(1,))
    env.policy("node1 = 1")
    with socket.create_connection((VIP, env.vip_port), 5) as s:
        s.settimeout(5)
        assert s.recv(7) == b"partial"
        s.sendall(b"go")
        try:
            assert s.recv(10) == b""
        except ConnectionResetError:
            pass
    wait_for(lambda: env.stats()["active"] == 0)
    assert env.stats()["members"]["node1"]["active"] == 0
