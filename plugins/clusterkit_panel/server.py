"""One panel per host: the HTTPS server (and the HTTP redirect) in the daemon's loop.

The :class:`Panel` lives in ``runtime.components["panel"]``. It owns the
aiohttp runner and its listeners (:mod:`clusterkit_panel.listener`: deadlines
and a per-address cap), the host's :class:`~clusterkit_panel.store.Store`,
the mutual-TLS client used to reach other hosts and, on the manager, the CA,
the poller that fetches every node's status and the remote-action queue.
Who may call what is decided for every route of the route table
(:mod:`clusterkit_panel.api`) in one place, :mod:`clusterkit_panel.access`:
public, operator (session or API token; CSRF on state changes from a
session) or host (a cluster certificate that is current and not revoked).
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import os
import ssl
import time

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from clusterkit.definition.values import endpoint
from clusterkit_panel import pki
from clusterkit_panel.accounts import Accounts
from clusterkit_panel.history import History
from clusterkit_panel.listener import HEAD_TIMEOUT, Listener
from clusterkit_panel.ratelimit import Attempt, AttemptLimiter
from clusterkit_panel.settings import panel_settings
from clusterkit_panel.store import Store

log = logging.getLogger("clusterkit.panel")

SESSION_COOKIE = "ck_session"
CHANGING = ("POST", "PUT", "PATCH", "DELETE")
HOST = web.RequestKey("host", str)  # the calling host's name, once its certificate is accepted


def _runner(app: web.Application) -> web.AppRunner:
    """A kept-alive connection's next request head is due within HEAD_TIMEOUT too."""
    return web.AppRunner(app, access_log=None, handle_signals=False, keepalive_timeout=HEAD_TIMEOUT)


class Panel:
    def __init__(self, runtime):
        self.runtime = runtime
        self.settings = panel_settings(runtime.cluster)
        self.paths = pki.Paths.of(runtime.state_dir)
        self.store = Store(runtime.state_dir)
        self.accounts = Accounts(runtime.local_path(self.settings.data_dir))
        self.limiter = AttemptLimiter(self.settings.login_attempts, self.settings.login_window)
        self.node_status: dict[str, dict] = {}
        self.history = History(step=min(5.0, self.settings.poll_interval))
        self.runner: web.AppRunner | None = None
        self.redirect_runner: web.AppRunner | None = None
        self.sites: list[Listener] = []
        self.https_ready = asyncio.Event()
        self.client: aiohttp.ClientSession | None = None
        self.jobs = None
        self._poll_wake = asyncio.Event()
        self._poller: asyncio.Task | None = None
        self.action_lock = asyncio.Lock()
        self.tasks: set[asyncio.Task] = set()

    @property
    def name(self) -> str:
        return self.runtime.host.name

    @property
    def is_manager(self) -> bool:
        return self.runtime.is_manager

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        from clusterkit_panel.api import build_app

        os.makedirs(self.accounts.dir, mode=0o700, exist_ok=True)
        if self.is_manager:
            self._ensure_ca()
            from clusterkit_panel.jobs import Jobs

            self.jobs = Jobs(self)
            self.runtime.add_control("panel_jobs_wake", self._wake_jobs)
        self.runner = _runner(build_app(self))
        await self.runner.setup()
        await self._start_redirect()
        if self.paths.has_host_cert():
            await self._start_https()
        else:
            log.warning("%s has no cluster certificate yet: the panel's HTTPS waits for "
                        "`clusterkit join` (%s)", self.name, self.paths.dir)
            self.spawn(self._wait_for_cert(), "wait-cert")

    def spawn(self, coro, what: str) -> asyncio.Task:
        """A task of this panel: owned by the daemon, and cancelled when the panel stops."""
        task = self.runtime.spawn(coro, f"panel-{what}-{self.name}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        self.runtime.control.handlers.pop("panel_jobs_wake", None)
        if self.jobs is not None:
            self.jobs.stop()
        await self._stop_sites()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        if self.client is not None:
            await self.client.close()
            self.client = None
        self.store.close()

    async def reload(self, old, new) -> None:
        settings = panel_settings(new)
        if self.is_manager:
            for name in set(old.hosts) - set(new.hosts):
                self.revoke(name)
            if self.jobs is not None:
                self.jobs.sync_workers()
        if settings != self.settings:
            moved = (settings.address(self.runtime.host), settings.https_port, settings.http_port) != \
                (self.settings.address(self.runtime.host), self.settings.https_port, self.settings.http_port)
            self.settings = settings
            self.accounts = Accounts(self.runtime.local_path(settings.data_dir))
            for site in self.sites:
                site.per_address = settings.connections_per_address
            if moved and self.runner is not None:
                await self._stop_sites()
                await self._start_redirect()
                if self.paths.has_host_cert():
                    await self._start_https()

    def _ensure_ca(self) -> None:
        """The manager always has a CA and its own certificate (init creates them; else here)."""
        state = self.runtime.state_dir
        if not os.path.exists(self.paths.ca_key):
            pki.create_ca(state, self.runtime.cluster.name)  # the manager's cert follows below
            log.warning("created the cluster CA in %s (clusterkit panel init-ca does this at init)",
                        self.paths.dir)
        if not os.path.exists(self.paths.cert) or not self._own_cert_current():
            cert = pki.issue_own(state, self.name, self.runtime.host.ip)
            self.store.add_cert(pki.serial_hex(cert), self.name)
            self.store.revoke_others(self.name, pki.serial_hex(cert))
            log.info("issued the manager's certificate %s", pki.serial_hex(cert))

    def _own_cert_current(self) -> bool:
        """The manager's certificate is from this CA, for this name and address, not revoked."""
        try:
            cert, ca = pki.load_cert(self.paths.cert), pki.load_cert(self.paths.ca_cert)
            cert.verify_directly_issued_by(ca)
            ips = cert.extensions.get_extension_for_class(
                x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
        except (pki.PKIError, ValueError, TypeError, x509.ExtensionNotFound,
                InvalidSignature, OSError):
            return False
        row = self.store.cert(pki.serial_hex(cert))
        return (row is not None and row["name"] == self.name and row["revoked_at"] is None
                and ipaddress.ip_address(self.runtime.host.ip) in ips)

    async def _start_https(self) -> None:
        ctx = pki.server_context(self.paths)
        address = self.settings.address(self.runtime.host)
        site = Listener(self.runner.server, address, self.settings.https_port, ssl_context=ctx,
                        per_address=self.settings.connections_per_address)
        try:
            await site.start()
        except OSError as exc:
            raise RuntimeError(f"panel: cannot listen on https://{endpoint(address, self.settings.https_port)}"
                               f" ({exc.strerror}); set [panel] https_port") from None
        self.sites.append(site)
        self.https_ready.set()
        log.info("panel of %s on https://%s:%d", self.name, address, self.settings.https_port)
        if not self.is_manager:
            self.spawn(self._hello(), "hello")
        elif self._poller is None:
            self._poller = self.spawn(self._poll_nodes(), "poll")
            self.spawn(self._sample(), "history")
            self.jobs.sync_workers()

    async def _start_redirect(self) -> None:
        if not self.settings.http_port:
            return
        from clusterkit_panel.api import build_redirect_app

        runner = _runner(build_redirect_app(self))
        await runner.setup()
        address = self.settings.address(self.runtime.host)
        site = Listener(runner.server, address, self.settings.http_port,
                        per_address=self.settings.connections_per_address)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise RuntimeError(f"panel: cannot listen on http://{endpoint(address, self.settings.http_port)}"
                               f" ({exc.strerror}); set [panel] http_port (0 disables it)") from None
        self.sites.append(site)
        self.redirect_runner = runner

    async def _stop_sites(self) -> None:
        for site in self.sites:
            await site.stop()
        self.sites.clear()
        self.https_ready.clear()
        if self.redirect_runner is not None:
            await self.redirect_runner.cleanup()
            self.redirect_runner = None

    async def _wait_for_cert(self) -> None:
        while not self.paths.has_host_cert():
            await asyncio.sleep(1.0)
        log.info("%s joined the cluster: starting the panel's HTTPS", self.name)
        await self._start_https()

    # ---------------------------------------------------------- identities

    def operator(self, request: web.Request) -> tuple[str, str, str | None] | None:
        """(user, via, csrf) of an operator request: API token or session; ``None`` if neither."""
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            name = self.accounts.token_name(header[7:].strip())
            return (f"token:{name}", "token", None) if name else None
        sid = request.cookies.get(SESSION_COOKIE)
        if sid:
            row = self.store.session(sid)
            if row is not None and row["user"] in self.accounts.users():
                return (row["user"], "session", row["csrf"])
            if row is not None:  # the operator was removed: their sessions end now
                self.store.drop_user_sessions(row["user"])
        return None

    def host_refusal(self, request: web.Request) -> str | None:
        """Why a host request is refused, or ``None`` when its certificate is acceptable.

        TLS already verified the chain against the cluster CA (a foreign CA
        never gets here). On the manager the caller must be a host of the
        current definition holding its current, unrevoked certificate; on a
        node only the manager may call.
        """
        ssl_object = request.transport.get_extra_info("ssl_object") if request.transport else None
        if ssl_object is None:
            return "the control API is HTTPS only"
        identity = pki.peer_identity(ssl_object.getpeercert())
        if identity is None:
            return "a cluster certificate is required (mutual TLS)"
        name, serial = identity
        if serial in self.accounts.revoked():
            return f"certificate {serial} of {name!r} is revoked"
        cluster = self.runtime.cluster
        if self.is_manager:
            if name not in cluster.hosts:
                return f"{name!r} is not a host of cluster {cluster.name!r}"
            row = self.store.cert(serial)
            if row is None or row["name"] != name:
                return f"certificate {serial} was not issued to {name!r} by this manager"
            if row["revoked_at"] is not None:
                return f"certificate {serial} of {name!r} is revoked"
        elif name != cluster.manager.name:
            return f"only the manager ({cluster.manager.name}) may call a node, not {name!r}"
        request[HOST] = name
        return None

    def check_csrf(self, request: web.Request, expected: str, form: dict | None) -> bool:
        got = request.headers.get("X-CSRF-Token") or (form or {}).get("csrf_token", "")
        return bool(got) and hmac.compare_digest(str(got), expected)

    # ---------------------------------------------------------- rate limit

    def reserve_attempt(self, ip: str) -> Attempt:
        """Count a login or join attempt from ``ip`` before checking it (see ratelimit)."""
        self.limiter.configure(self.settings.login_attempts, self.settings.login_window)
        return self.limiter.reserve(ip)

    # ------------------------------------------------------ revocation, CA

    def revoke(self, name: str) -> list[str]:
        """A host left the cluster: its certificates are refused from now on, everywhere."""
        serials = self.store.revoke_name(name)
        self.accounts.write_revoked(self.store.revoked())
        if serials:
            log.info("revoked the certificates of %s: %s", name, ", ".join(serials))
        return serials

    # ------------------------------------------------------- host-to-host

    def url_of(self, host) -> str:
        return f"https://{endpoint(host.ip, self.settings.https_port)}"

    def _client(self) -> aiohttp.ClientSession:
        if self.client is None or self.client.closed:
            connector = aiohttp.TCPConnector(ssl=pki.client_context(self.paths), limit=32)
            self.client = aiohttp.ClientSession(connector=connector)
        return self.client

    async def call(self, host_name: str, method: str, path: str, body=None,
                   timeout: float = 5.0) -> tuple[int, dict]:
        """A mutual-TLS request to another host of the cluster: (status, JSON answer)."""
        host = self.runtime.cluster.host(host_name)
        async with self._client().request(method, self.url_of(host) + path, json=body,
                                          timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                data = {"error": (await resp.text())[:500]}
            return resp.status, data if isinstance(data, dict) else {"result": data}

    async def _hello(self) -> None:
        """A node that (re)starts tells the manager, which runs the node's queued actions now."""
        manager = self.runtime.cluster.manager.name
        for attempt in range(5):
            try:
                status, answer = await self.call(manager, "POST", "/control/v1/hello", {})
                if status == 200:
                    return
                log.warning("the manager refused %s's hello: %s", self.name, answer.get("error"))
                return
            except (OSError, aiohttp.ClientError, asyncio.TimeoutError, ssl.SSLError) as exc:
                log.debug("hello to the manager failed (%s), retrying", exc)
            await asyncio.sleep(min(10.0, 0.5 * 2 ** attempt))

    def _wake_jobs(self, node: str | None = None) -> dict:
        """Control command: the CLI queued a job; start it now rather than at the next retry."""
        self.jobs.sync_workers()
        for name in [node] if node else list(self.jobs.events):
            self.jobs.wake(name)
        return {"woken": node or "all"}

    def node_hello(self, name: str) -> None:
        self.node_status.setdefault(name, {})["hello"] = time.time()
        if self.jobs is not None:
            self.jobs.wake(name)
        self._poll_wake.set()

    async def _poll_nodes(self) -> None:
        """The manager's view of every node: its status over mutual TLS, every poll_interval."""
        while True:
            nodes = [h.name for h in self.runtime.cluster.nodes]
            await asyncio.gather(*(self._poll_one(n) for n in nodes))
            for gone in set(self.node_status) - set(nodes):
                self.node_status.pop(gone, None)
            self._poll_wake.clear()
            try:
                await asyncio.wait_for(self._poll_wake.wait(), self.settings.poll_interval)
            except asyncio.TimeoutError:
                pass

    async def _sample(self) -> None:
        """Feed the graphs: the manager's status, and each node's DNS answers as last polled."""
        while True:
            report = self.runtime.status()
            dns = {self.name: (report.get("dns") or {}).get("queries") or {}}
            for node, seen in self.node_status.items():
                queries = ((seen.get("status") or {}).get("dns") or {}).get("queries")
                if seen.get("reachable") and isinstance(queries, dict):
                    dns[node] = queries
            self.history.sample(report, time.time(), dns)
            await asyncio.sleep(self.history.step)

    async def _poll_one(self, name: str) -> None:
        entry = self.node_status.setdefault(name, {})
        was = entry.get("reachable")
        try:
            status, answer = await self.call(name, "GET", "/control/v1/status", timeout=3.0)
        except (OSError, aiohttp.ClientError, asyncio.TimeoutError, ssl.SSLError) as exc:
            entry.update(reachable=False, error=str(exc) or type(exc).__name__, checked=time.time())
            return
        if status != 200:
            entry.update(reachable=False, error=answer.get("error", f"HTTP {status}"),
                         checked=time.time())
            return
        entry.update(reachable=True, error=None, checked=time.time(), last_seen=time.time(),
                     status=answer)
        if not was and self.jobs is not None:
            self.jobs.wake(name)
