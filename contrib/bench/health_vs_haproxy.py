#!/usr/bin/env python3
"""A node dies under load: detection time and failed client requests, clusterkit vs HAProxy.

Same scenario for both, on loopback 127.82.5.0/24: three node HTTP servers
(``python -m http.server`` processes), a balancer on 127.82.5.100:8080 with
checks ``inter 0.5 s, timeout 0.5 s, fall 3, rise 2``; a bounded client load
(threads, one request per connection); after a warm-up node2's server is
killed (SIGKILL: connections refused), later restarted.

HAProxy 2.6: ``mode tcp``, ``option httpchk GET /``, ``inter 500 fall 3 rise 2``,
``retries 3``, ``option redispatch`` (the anchor), and the same with
``fastinter 125`` (clusterkit's default pace while a state changes, for a like
for like comparison). clusterkit: ``clusterkit run``
with the same check settings (``kind = "http"``); without a load-balancing
engine installed only its detection is measured.

Detection is read the same way for both: the balancer's own status (HAProxy's
stats socket, clusterkit's control socket) polled every 10 ms from the moment
of the kill. Prints one row per system and the ratios against HAProxy.

Usage: .venv/bin/python contrib/bench/health_vs_haproxy.py [--load-seconds 8] [--clients 4]
(the Python that has clusterkit installed; root is not needed; haproxy must be installed).
Requests in flight on the killed server fail for both balancers: an L4 balancer
cannot replay a request it has already forwarded.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BASE = "127.82.5"
VIP, PORT, BACKEND = f"{BASE}.100", 8080, 8081
NODES = {"node1": f"{BASE}.11", "node2": f"{BASE}.12", "node3": f"{BASE}.13"}
INTER, TIMEOUT, FALL, RISE = 0.5, 0.5, 3, 2
CLUSTERKIT = os.path.join(os.path.dirname(sys.executable), "clusterkit")


def wait_port(ip: str, port: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((ip, port)) == 0:
                return True
        time.sleep(0.05)
    return False


class Nodes:
    def __init__(self, directory: str):
        self.procs: dict[str, subprocess.Popen] = {}
        self.dir = directory

    def start(self, name: str) -> None:
        root = os.path.join(self.dir, name)
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, "index.html"), "w") as f:
            f.write(f"{name}\n")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "http.server", "--bind", NODES[name], str(BACKEND), "-d", root],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_port(NODES[name], BACKEND):
            raise RuntimeError(f"{name}'s server did not start")

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def close(self) -> None:
        for name in list(self.procs):
            self.kill(name)


class Load:
    """``clients`` threads sending GET / on a new connection each, until stopped."""

    def __init__(self, clients: int):
        self.ok = self.failed = 0
        self.errors: dict[str, int] = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                conn = http.client.HTTPConnection(VIP, PORT, timeout=5)
                conn.request("GET", "/")
                response = conn.getresponse()
                response.read()
                conn.close()
                good = response.status == 200
                error = f"HTTP {response.status}"
            except OSError as exc:
                good, error = False, type(exc).__name__
            with self.lock:
                if good:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.errors[error] = self.errors.get(error, 0) + 1

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(10)


# ---------------------------------------------------------------- balancers


class HAProxy:
    name = "haproxy"
    extra = ""

    def __init__(self, directory: str):
        self.sock = os.path.join(directory, "haproxy.sock")
        conf = os.path.join(directory, "haproxy.cfg")
        servers = "".join(f"  server {n} {ip}:{BACKEND} check inter {int(INTER * 1000)} "
                          f"fall {FALL} rise {RISE}{self.extra}\n" for n, ip in NODES.items())
        with open(conf, "w") as f:
            f.write(f"""global
  stats socket {self.sock} mode 600 level admin
  maxconn 2000
defaults
  mode tcp
  timeout connect 1s
  timeout client 10s
  timeout server 10s
  timeout check {int(TIMEOUT * 1000)}
  retries 3
  option redispatch
listen web
  bind {VIP}:{PORT}
  balance roundrobin
  option httpchk GET /
{servers}""")
        self.proc = subprocess.Popen(["haproxy", "-f", conf, "-db"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not wait_port(VIP, PORT) or self.proc.poll() is not None:
            self.close()
            raise RuntimeError(f"haproxy did not start (is {VIP}:{PORT} taken?)")

    def states(self) -> dict[str, str]:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(self.sock)
            s.sendall(b"show servers state web\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        out = {}
        for line in data.decode().splitlines():
            fields = line.split()
            if len(fields) > 5 and fields[3] in NODES:
                out[fields[3]] = "up" if fields[5] == "2" else "down"
        return out

    def serves(self) -> bool:
        return True

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
        self.proc.wait(10)


class HAProxyFast(HAProxy):
    """HAProxy given clusterkit's default pace while a state changes (fastinter = inter / 4)."""

    name = "haproxy-fastinter"
    extra = f" fastinter {int(INTER * 250)}"


class Clusterkit:
    name = "clusterkit"

    def __init__(self, directory: str):
        from clusterkit.control import request

        self.request = request
        self.state_dir = os.path.join(directory, "state", "manager")
        conf = os.path.join(directory, "cluster.toml")
        nodes = "".join(f'\n[[node]]\nname = "{n}"\nip = "{ip}"\n' for n, ip in NODES.items())
        with open(conf, "w") as f:
            f.write(f'[cluster]\nname = "bench"\nstate_dir = "{directory}/state"\n\n'
                    f'[manager]\nname = "manager"\nip = "{BASE}.1"\npublic_ips = ["{VIP}"]\n{nodes}\n'
                    f'[[policy]]\nvip = "{VIP}"\nport = {PORT}\nservice = "http"\n'
                    f'backend_port = {BACKEND}\nmembers = {{ node1 = 1, node2 = 1, node3 = 1 }}\n'
                    f'[policy.check]\nkind = "http"\ninter = {INTER}\ntimeout = {TIMEOUT}\n'
                    f'fall = {FALL}\nrise = {RISE}\n')
        self.log = open(os.path.join(directory, "clusterkit.log"), "w")
        # balancing and health only: no DNS, panel or replication beside them
        env = {**os.environ, "CLUSTERKIT_DISABLE_PLUGINS": "dns,sync,panel,panelsync,dns-management"}
        self.proc = subprocess.Popen([CLUSTERKIT, "run", "-c", conf], stdout=self.log, stderr=self.log,
                                     env=env)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                self.report = request(self.state_dir, "status", timeout=2)
                if len(self.states()) == 3:
                    break
            except Exception:
                pass
            time.sleep(0.05)
        else:
            self.close()
            with open(self.log.name) as f:
                raise RuntimeError(f"clusterkit did not start:\n{f.read()[-2000:]}")

    def states(self) -> dict[str, str]:
        members = self.request(self.state_dir, "status", timeout=2).get("members", {})
        nodes = members.get(f"{VIP}:{PORT}", {}).get("nodes", {})
        return {n: m["state"] for n, m in nodes.items()}

    def serves(self) -> bool:
        return "policies" in self.report and wait_port(VIP, PORT, 2)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(15)
        self.log.close()


# ----------------------------------------------------------------- scenario


def scenario(kind, directory: str, load_seconds: float, clients: int) -> dict:
    nodes = Nodes(directory)
    balancer = None
    try:
        for name in NODES:
            nodes.start(name)
        balancer = kind(directory)
        deadline = time.monotonic() + 10
        while set(balancer.states().values()) != {"up"}:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind.name}: members not all up: {balancer.states()}")
            time.sleep(0.05)
        time.sleep(1.2)  # every member at full health
        load = Load(clients) if balancer.serves() else None
        with load or _Null():
            time.sleep(load_seconds * 0.25)
            killed = time.monotonic()
            nodes.kill("node2")
            while balancer.states().get("node2") != "down":
                if time.monotonic() - killed > 15:
                    raise RuntimeError(f"{kind.name}: node2 never marked down")
                time.sleep(0.01)
            detected = time.monotonic() - killed
            time.sleep(max(0.0, load_seconds * 0.5 - detected))
            nodes.start("node2")
            restarted = time.monotonic()
            while balancer.states().get("node2") != "up":
                if time.monotonic() - restarted > 15:
                    raise RuntimeError(f"{kind.name}: node2 never came back")
                time.sleep(0.01)
            back = time.monotonic() - restarted
            time.sleep(load_seconds * 0.25)
        return {"system": kind.name, "detect_s": round(detected, 3), "back_s": round(back, 3),
                "requests": (load.ok + load.failed) if load else None,
                "failed": load.failed if load else None, "errors": load.errors if load else None}
    finally:
        if balancer is not None:
            balancer.close()
        nodes.close()


class _Null:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--load-seconds", type=float, default=8.0, help="Length of the load phase.")
    parser.add_argument("--clients", type=int, default=4, help="Concurrent client threads.")
    parser.add_argument("--json", action="store_true", help="Print the rows as JSON.")
    args = parser.parse_args()
    if not shutil.which("haproxy"):
        sys.exit("haproxy is not installed (it is the anchor of this benchmark)")
    rows = []
    for kind in (HAProxy, HAProxyFast, Clusterkit):
        with tempfile.TemporaryDirectory(prefix=f"bench-{kind.name}-") as directory:
            rows.append(scenario(kind, directory, args.load_seconds, min(args.clients, 16)))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"scenario: node2 killed under load; checks inter {INTER}s timeout {TIMEOUT}s "
          f"fall {FALL} rise {RISE}; bound inter*fall+timeout = {INTER * FALL + TIMEOUT}s")
    print(f"{'system':<18} {'detect_s':>9} {'back_s':>7} {'requests':>9} {'failed':>7}  errors")
    for r in rows:
        print(f"{r['system']:<18} {r['detect_s']:>9} {r['back_s']:>7} {str(r['requests']):>9} "
              f"{str(r['failed']):>7}  {r['errors'] or ''}")
    anchor, fast, ours = rows
    print(f"detection time ratio clusterkit/haproxy-fastinter: {ours['detect_s'] / fast['detect_s']:.2f}")
    print(f"detection time ratio clusterkit/haproxy: {ours['detect_s'] / anchor['detect_s']:.2f}")
    print(f"back-in-rotation time ratio clusterkit/haproxy: {ours['back_s'] / anchor['back_s']:.2f}")
    if ours["failed"] is None:
        print("clusterkit failed requests: not measured (no load-balancing engine installed)")
    else:
        print(f"failed requests: clusterkit {ours['failed']} / {ours['requests']}, "
              f"haproxy {anchor['failed']} / {anchor['requests']}")


if __name__ == "__main__":
    main()
