"""A manager daemon in a thread with a recording engine, and node servers to stop and start.

The recording engine is a test double of the load-balancer engine's interface
(``apply``, ``set_member_state``, ``stats``, ``close``): it keeps every call so
tests can assert what membership told it and when.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time

from clusterkit import hookimpl
from clusterkit.plugins import get_plugin_manager
from clusterkit.runtime import Runtime

import health_servers as hs

MANAGER = "127.82.2.1"
VIP = "127.82.2.100"
NODES = {"node1": "127.82.2.11", "node2": "127.82.2.12", "node3": "127.82.2.13"}
UNRELATED_PLUGINS = ("dns", "sync", "panel", "panelsync", "dns-management")
DAEMON_ENV = {**os.environ, "CLUSTERKIT_DISABLE_PLUGINS": ",".join(UNRELATED_PLUGINS)}


class RecordingEngine:
    def __init__(self):
        self.calls: list[tuple] = []  # (monotonic, policy_key, node, state, weight_factor)
        self.lock = threading.Lock()

    async def apply(self, cluster):
        self.cluster = cluster

    def set_member_state(self, policy_key, node, state, weight_factor=1.0):
        with self.lock:
            self.calls.append((time.monotonic(), policy_key, node, state, weight_factor))

    def stats(self):
        return {}

    async def close(self, timeout):
        pass

    def state(self, node, policy_key=None):
        with self.lock:
            for call in reversed(self.calls):
                if call[2] == node and (policy_key is None or call[1] == policy_key):
                    return call[3]
        return None

    def wait(self, node, state, seconds=10.0, after=0.0):
        """Wait until ``node``'s last pushed state is ``state``; return when it was pushed."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with self.lock:
                last = next((c for c in reversed(self.calls) if c[2] == node), None)
            if last and last[3] == state and last[0] >= after:
                return last[0]
            time.sleep(0.01)
        raise AssertionError(f"{node} not {state} after {seconds}s; calls: {self.calls[-6:]}")


class Recorder:
    """A plugin: the engine for the manager, and every membership event (awaited)."""

    def __init__(self):
        self.engine = RecordingEngine()
        self.events: list[dict] = []

    @hookimpl
    def clusterkit_register_engines(self, register):
        from clusterkit.registry import EngineKind

        # in place of the native proxy (unregistered where a Recorder is used): the definition
        # stays the one the CLI reads
        register(EngineKind("native", create=lambda runtime: self.engine))

    @hookimpl
    def clusterkit_membership_changed(self, runtime, policy, node, service, old, new, reason):
        async def record():
            self.events.append({"policy": policy, "node": node, "service": service,
                                "old": old, "new": new,
                                "reason": reason, "host": runtime.host.name})
        return record()


def write_config(path, state_dir, port, check: dict, nodes=NODES, extra_policy: str = "",
                 vip_port: int = 80) -> None:
    members = ", ".join(f"{n} = 1" for n in nodes)
    check_lines = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in check.items())
    text = (f'[cluster]\nname = "health"\nstate_dir = "{state_dir}"\n\n'
            f'[manager]\nname = "manager"\nip = "{MANAGER}"\npublic_ips = ["{VIP}"]\n'
            + "".join(f'\n[[node]]\nname = "{n}"\nip = "{ip}"\n' for n, ip in NODES.items())
            + f'\n[[policy]]\nvip = "{VIP}"\nport = {vip_port}\nservice = "http"\nbackend_port = {port}\n'
            f'members = {{ {members} }}\n\n[policy.check]\n{check_lines}' + extra_policy)
    with open(path, "w") as f:
        f.write(text)


def common_port() -> int:
    """A port free on every node address (policies use one backend port for all members)."""
    for _ in range(50):
        port = hs.free_port(NODES["node1"])
        try:
            for ip in NODES.values():
                with socket.socket() as s:
                    s.bind((ip, port))
            return port
        except OSError:
            continue
    raise RuntimeError("no common free port")


class NodeServer:
    """A node's HTTP server on (ip, port) that a test stops and starts again."""

    def __init__(self, ip: str, port: int, name: str = ""):
        self.ip, self.port, self.name, self._cm = ip, port, name, None

    def start(self) -> None:
        server = hs.HTTPServer((self.ip, self.port), hs.Handler)
        server.name = self.name
        self._cm = hs.serving(server)
        self._cm.__enter__()

    def stop(self) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
            self._cm = None


class Daemon:
    """A host's Runtime running in its own event loop thread (as ``clusterkit run`` would)."""

    def __init__(self, config_path: str, recorder: Recorder | None = None, host: str = "manager"):
        self.pm = get_plugin_manager()
        for name in UNRELATED_PLUGINS:  # only balancing and health: no DNS, panel or replication
            if self.pm.get_plugin(name) is not None:
                self.pm.unregister(name=name)
        if recorder is not None:
            self.pm.unregister(name="proxy")
            self.pm.register(recorder, name="recorder")
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runtime = self.call(self._make(config_path, host))
        self.call(self.runtime.start())

    async def _make(self, config_path, host):
        return Runtime(config_path, self.pm, host, watch_config=False)

    def call(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        try:
            self.call(self.runtime.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()
