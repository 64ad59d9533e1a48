"""Hosts in network namespaces the test creates itself: real links that can be cut.

Topology: one "switch" namespace holding a bridge; every host is a namespace
joined to it by a veth pair, with its own address in a private /24 that exists
only inside these namespaces (nothing is routed to or from the machine's own
network). Everything — processes, namespaces — is torn down by :meth:`Net.close`,
also when the test fails.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time


def unavailable_reason() -> str | None:
    """Why namespace tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "network-namespace tests need root (CI runs them as root)"
    if shutil.which("ip") is None:
        return "network-namespace tests need iproute2's `ip` (contrib/setup.sh installs it)"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


class Net:
    """Namespaces ``<tag>-<host>`` on a bridge; ``ip(host)`` is each host's address."""

    def __init__(self, hosts: list[str]):
        self.tag = f"ck{os.getpid() % 10000}{random.randrange(100, 999)}"
        self.subnet = f"10.{random.randrange(200, 250)}.{random.randrange(1, 250)}"
        self.switch = f"{self.tag}-sw"
        self.hosts = list(hosts)
        self.addresses = {h: f"{self.subnet}.{i + 10}" for i, h in enumerate(self.hosts)}
        self.procs: list[subprocess.Popen] = []
        self._made: list[str] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        _ip("netns", "add", self.switch)
        self._made.append(self.switch)
        sw = ["netns", "exec", self.switch, "ip"]
        _ip(*sw, "link", "add", "br0", "type", "bridge")
        _ip(*sw, "link", "set", "br0", "up")
        for index, host in enumerate(self.hosts):
            ns = self.ns(host)
            _ip("netns", "add", ns)
            self._made.append(ns)
            outer, inner = f"{self.tag}s{index}", f"{self.tag}h{index}"
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", outer, "netns", self.switch)
            _ip("link", "set", inner, "netns", ns)
            _ip(*sw, "link", "set", outer, "master", "br0")
            _ip(*sw, "link", "set", outer, "up")
            h = ["netns", "exec", ns, "ip"]
            _ip(*h, "link", "set", inner, "name", "eth0")
            _ip(*h, "addr", "add", f"{self.addresses[host]}/24", "dev", "eth0")
            _ip(*h, "link", "set", "eth0", "up")
            _ip(*h, "link", "set", "lo", "up")

    # --------------------------------------------------------------- queries

    def ip(self, host: str) -> str:
        return self.addresses[host]

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def _argv(self, host: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns(host), *argv]

    # --------------------------------------------------------------- actions

    def popen(self, host: str, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start a process inside ``host``; it is killed at teardown."""
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(self._argv(host, argv), **kwargs)
        self.procs.append(proc)
        return proc

    def run(self, host: str, argv: list[str], **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 120)
        return subprocess.run(self._argv(host, argv), **kwargs)

    def add_address(self, host: str, address: str) -> None:
        """Give ``host`` another address in the subnet (a VIP, say)."""
        _ip("netns", "exec", self.ns(host), "ip", "addr", "add", f"{address}/24", "dev", "eth0")

    def cut(self, host: str) -> None:
        """Take ``host``'s link down: it vanishes from the network, its processes live on."""
        index = self.hosts.index(host)
        _ip("netns", "exec", self.switch, "ip", "link", "set", f"{self.tag}s{index}", "down")

    def restore(self, host: str) -> None:
        index = self.hosts.index(host)
        _ip("netns", "exec", self.switch, "ip", "link", "set", f"{self.tag}s{index}", "up")

    def wait_port(self, host: str, address: str, port: int, timeout: float = 10.0) -> None:
        """Wait until something listens on address:port, probed from inside ``host``."""
        deadline = time.monotonic() + timeout
        probe = ["bash", "-c", f"exec 3<>/dev/tcp/{address}/{port}"]
        while time.monotonic() < deadline:
            if self.run(host, probe, timeout=5).returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"nothing listens on {address}:{port} (seen from {host})")

    def close(self) -> None:
        """Kill what we started (whole process groups), then delete the namespaces."""
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        for ns in self._made:
            for pid in _ip("netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for ns in reversed(self._made):
            _ip("netns", "del", ns, check=False)
        self._made.clear()
