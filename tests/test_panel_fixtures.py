"""Shared by the panel tests: a manager and two nodes on 127.86.x in one event loop, real HTTPS clients.

The hosts' Runtimes run in an asyncio loop on a background thread (as in
the daemon); tests talk to them from the main thread with http.client and
ssl, exactly as a browser, a script or another host would.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import random
import socket
import ssl
import threading
import time
from http.cookies import SimpleCookie
from pathlib import Path

from clusterkit.plugins import get_plugin_manager
from clusterkit.runtime import Runtime, new_event_loop
from clusterkit_panel import pki
from clusterkit_panel.accounts import Accounts
from clusterkit_panel.join import join as do_join, make_token
from clusterkit_panel.store import Store
from clusterkit.definition.source import daemon_state_dir
from conftest import write_cluster
from support import wait_for  # noqa: F401 (the panel tests import it from here)

PASSWORD = "correct horse battery"


def free_ports(ips: list[str], count: int = 2) -> list[int]:
    """Ports free on every one of ``ips`` (hosts share the panel ports, each on its own IP)."""
    for _ in range(200):
        ports = random.sample(range(20000, 60000), count)
        socks = []
        try:
            for ip in ips:
                for port in ports:
                    s = socket.socket()
                    socks.append(s)
                    s.bind((ip, port))
            return ports
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


class LoopThread:
    def __init__(self):
        self.loop = new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class PanelCluster:
    """manager (prefix.1) and node1, node2 (prefix.11, .12), with the panel on free ports."""

    def __init__(self, tmp_path: Path, prefix: str, extra: str = "", panel: str = "",
                 attempts: int = 3):
        self.prefix = prefix
        self.ips = {"manager": f"{prefix}.1", "node1": f"{prefix}.11", "node2": f"{prefix}.12"}
        self.https_port, self.http_port, self.dns_port = free_ports(
            list(self.ips.values()) + [f"{prefix}.100"], 3)
        self.tmp = tmp_path
        self.pm = get_plugin_manager()
        # the DNS plugin, where installed, answers on every host: on a free port, not 53
        dns = f"\n[dns]\nport = {self.dns_port}\n" if self.pm.get_plugin("dns") is not None else ""
        self.config = write_cluster(
            tmp_path / "cluster.toml", prefix, nodes=2,
            extra=f"\n[panel]\nhttps_port = {self.https_port}\nhttp_port = {self.http_port}\n"
                  f"poll_interval = 0.3\nretry_max = 0.3\nlogin_attempts = {attempts}\n{panel}\n"
                  f"{dns}{extra}")
        self.loop = LoopThread()
        self.hosts: dict[str, Runtime] = {}

    # ---------------------------------------------------------- lifecycle

    def start(self, name: str) -> Runtime:
        async def go():
            runtime = Runtime(str(self.config), self.pm, name, watch_config=False)
            await runtime.start()
            return runtime

        self.hosts[name] = self.loop.run(go())
        return self.hosts[name]

    def stop(self, name: str) -> None:
        runtime = self.hosts.pop(name)
        self.loop.run(runtime.stop())

    def close(self) -> None:
        for name in reversed(list(self.hosts)):
            try:
                self.stop(name)
            except Exception:
                pass
        self.loop.close()

    @classmethod
    @contextlib.contextmanager
    def manager_only(cls, *args, **kwargs):
        """A cluster whose manager alone runs, with the operator ``admin``; closed on exit."""
        c = cls(*args, **kwargs)
        try:
            c.start("manager")
            c.add_user()
            yield c
        finally:
            c.close()

    def state(self, name: str) -> str:
        return daemon_state_dir(self.config, name)

    def panel(self, name: str):
        return self.hosts[name].components["panel"]

    # --------------------------------------------------------------- join

    def join_token(self, name: str, ttl: int = 600) -> str:
        secret = pki.random_token()
        store = Store(self.state("manager"))
        try:
            store.add_join_token(secret, name, ttl)
        finally:
            store.close()
        ca = pki.load_cert(pki.Paths.of(self.state("manager")).ca_cert)
        return make_token(pki.fingerprint(ca), secret)

    def join(self, name: str, token: str | None = None) -> dict:
        return do_join(self.url("manager"), token or self.join_token(name), name, daemon_state_dir,
                       str(self.config))

    # ------------------------------------------------------------ clients

    def url(self, name: str) -> str:
        return f"https://{self.ips[name]}:{self.https_port}"

    def ca_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=pki.Paths.of(self.state("manager")).ca_cert)

    def host_context(self, name: str) -> ssl.SSLContext:
        return pki.client_context(pki.Paths.of(self.state(name)))

    def client(self, name: str = "manager", context: ssl.SSLContext | None = None,
               source: str | None = None) -> "Client":
        return Client(self.ips[name], self.https_port, context or self.ca_context(), source)

    def add_user(self, user: str = "admin", password: str = PASSWORD, host: str = "manager") -> None:
        data = self.hosts[host].local_path(self.panel(host).settings.data_dir)
        Accounts(data).add_user(user, password, replace=True)

    def login(self, name: str = "manager", user: str = "admin", password: str = PASSWORD) -> "Client":
        client = self.client(name)
        status, body = client.post("/api/v1/login", {"user": user, "password": password})
        assert status == 200, body
        client.csrf = body["csrf"]
        return client


class Client:
    """A blocking HTTPS client with a cookie store and the session's CSRF token."""

    def __init__(self, ip: str, port: int, context: ssl.SSLContext, source: str | None = None):
        self.ip, self.port, self.context = ip, port, context
        self.source = (source, 0) if source else None
        self.cookies: dict[str, str] = {}
        self.csrf: str | None = None
        self.set_cookies: list[str] = []
        self.headers: dict[str, str] = {}

    def request(self, method: str, path: str, body=None, headers: dict | None = None,
                csrf: bool = True, raw: bool = False, timeout: float = 15.0):
        conn = http.client.HTTPSConnection(self.ip, self.port, context=self.context, timeout=timeout,
                                           source_address=self.source)
        try:
            hdrs = {**self.headers, **(headers or {})}
            if self.cookies:
                hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            if csrf and self.csrf and method != "GET":
                hdrs["X-CSRF-Token"] = self.csrf
            data = None
            if body is not None:
                data = body if isinstance(body, (bytes, str)) else json.dumps(body)
                hdrs.setdefault("Content-Type", "application/json")
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            content = resp.read()
            self.last = resp
            for value in resp.headers.get_all("Set-Cookie") or []:
                self.set_cookies.append(value)
                for key, morsel in SimpleCookie(value).items():
                    if morsel.value:
                        self.cookies[key] = morsel.value
                    else:
                        self.cookies.pop(key, None)
        finally:
            conn.close()
        if raw:
            return resp.status, content
        try:
            return resp.status, json.loads(content) if content else None
        except ValueError:
            return resp.status, content.decode(errors="replace")

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def post(self, path: str, body=None, **kw):
        return self.request("POST", path, body if body is not None else {}, **kw)

    def delete(self, path: str, **kw):
        return self.request("DELETE", path, **kw)
