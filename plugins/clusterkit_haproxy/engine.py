"""The HAProxy engine: the runtime's engine interface, realised by an HAProxy child process.

``apply(cluster)`` writes ``haproxy.cfg`` (:mod:`clusterkit_haproxy.config`),
has ``haproxy -c`` judge it, then starts HAProxy or reloads it seamlessly.
A policy HAProxy refuses (a line of the config, a VIP it cannot bind) is
left out and the others are applied, like the native engine; the error names
it and shows in ``stats()``. ``set_member_state`` goes to the Runtime API at
once; the states are also written into the config (down/maintenance as
``disabled``) and, before each reload, into the server-state file, so the
new worker starts with them. A master that dies is restarted, with an ERROR
in the log and ``engine_error`` in every policy's stats.

Nothing of the engine outlives :meth:`HAProxyEngine.close`: an apply under
way finishes first and none starts after, its tasks are ended and awaited,
its blocking calls' threads (its own pool) have exited, and every stderr
reader of every master it started is done.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

from clusterkit.contracts import MemberStates
from clusterkit.definition.files import private_dir, write_atomic
from clusterkit_haproxy.config import SUPPORTS, Rendered, cannot_carry, render, runtime_weight
from clusterkit_haproxy.process import (HAProxyError, Master, check_binary, parse_proc, query,
                                        query_sync)
from clusterkit_haproxy.stats import Counters, parse_stat

log = logging.getLogger("clusterkit.haproxy")

SAFE_PATH = re.compile(r"/[A-Za-z0-9_./+-]*")  # written unquoted into haproxy.cfg
LINE = re.compile(r"\[[^\]\s]*:(\d+)\]")       # HAProxy's "[file:line]" in an alert
STATS_TTL = 0.2       # seconds HAProxy's counters are reused (one status asks twice)
RESTART_DELAYS = (0.5, 1, 2, 5, 10, 30)


class HAProxyEngine:
    """Policies realised by one HAProxy (master-worker) under ``directory``."""

    name = "haproxy"
    supports = SUPPORTS

    def __init__(self, directory: str, binary: str = "haproxy", registry=None):
        if not SAFE_PATH.fullmatch(directory):
            raise HAProxyError(f"{directory!r}: HAProxy's state directory must be an absolute "
                               "path of letters, digits and _./+-")
        self.directory = directory
        self.binary = binary
        self.registry = registry
        self.master: Master | None = None
        self.cluster = None
        self.rendered: Rendered | None = None      # what the running HAProxy was given
        self.states = MemberStates()
        self.failed: dict[str, str] = {}           # policy key -> why HAProxy does not carry it
        self.counters = Counters()
        self.restarts = 0
        self.error = ""                            # the last death of the master
        self._ids: dict[str, dict[str, int]] = {}
        self._lock = asyncio.Lock()
        self._pending: set[tuple[str, str]] = set()
        self._flusher: asyncio.Task | None = None
        self._watcher: asyncio.Task | None = None
        self._closing = False
        self._stats_at = 0.0
        self._threads = ThreadPoolExecutor(1, thread_name_prefix="haproxy-engine")  # close ends it

    @staticmethod
    def check_binary(binary: str = "haproxy") -> tuple[str, str]:
        return check_binary(binary)

    def cannot_carry(self, policy) -> str | None:
        return cannot_carry(policy, self.registry)

    # ------------------------------------------------------------------ apply

    async def apply(self, cluster) -> None:
        """Make HAProxy match ``cluster.policies``; established connections stay.

        At the first apply a missing or too old binary, or a policy refused,
        raises :class:`HAProxyError` (after the rest is running); later a
        refused policy is logged and retried at the next apply.
        """
        async with self._lock:
            if self._closing:
                raise HAProxyError("the HAProxy engine is closed")
            first = self.master is None
            if first:
                path, version = await self._in_thread(check_binary, self.binary)
                self.binary = path
                private_dir(self.directory)
                self.master = Master(path, self.directory)
                write_atomic(self.master.state_file, "1\n", 0o600)  # no states yet (format 1)
                log.info("HAProxy %s at %s", version, path)
            self.cluster = cluster
            failed = {}
            wanted = []
            for policy in cluster.policies:
                why = cannot_carry(policy, self.registry)
                if why:
                    failed[policy.key] = f"policy {policy.key}: {why}"
                else:
                    wanted.append(policy)
            for _ in range(len(wanted) + 1):  # each refusal leaves the policies it names out
                rendered = render(wanted, cluster, self.directory, self.states, self._id)
                try:
                    await self._validate(rendered)
                    await self._install(rendered)
                    break
                except HAProxyError as exc:
                    blamed = self._blame(exc, rendered)
                    if not blamed.keys() & {p.key for p in wanted}:
                        raise
                    failed.update(blamed)
                    wanted = [p for p in wanted if p.key not in blamed]
            self.failed = failed
            for key in list(self._ids):
                if not any(p.key == key for p in cluster.policies):
                    del self._ids[key]
        if failed and first:
            raise HAProxyError("; ".join(failed.values()))
        for error in failed.values():
            log.error("%s (retried at the next reload)", error)

    async def _in_thread(self, fn, *args):
        """A blocking call on the engine's own thread (awaited, so close finds it idle)."""
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)

    def _id(self, key: str, server: str) -> int:
        """A server id stable for as long as the policy exists (stick tables store it)."""
        ids = self._ids.setdefault(key, {})
        if server not in ids:
            ids[server] = max(ids.values(), default=0) + 1
        return ids[server]

    async def _validate(self, rendered: Rendered) -> None:
        """``haproxy -c`` on the new text; a refusal raises with HAProxy's alerts."""
        path = os.path.join(self.directory, "haproxy.cfg.new")
        write_atomic(path, rendered.text, 0o600)
        proc = await asyncio.create_subprocess_exec(
            self.binary, "-c", "-q", "-f", path, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            alerts = [line for line in out.decode("utf-8", "replace").splitlines()
                      if "[ALERT]" in line]
            raise HAProxyError("; ".join(a.split(" : ", 1)[-1] for a in alerts)
                               or f"haproxy -c exited with {proc.returncode}")

    def _blame(self, exc: HAProxyError, rendered: Rendered) -> dict[str, str]:
        """The policies HAProxy's alerts point at (by config line or proxy name)."""
        blamed = {}
        for alert in str(exc).split("; "):
            line = LINE.search(alert)
            key = rendered.policy_at(int(line.group(1))) if line else None
            key = key or next((k for k in rendered.servers if f"proxy {k}:" in alert
                               or f"'{k}'" in alert), None)
            if key is not None:
                blamed[key] = f"policy {key}: HAProxy refused it: {alert}"
        return blamed

    async def _install(self, rendered: Rendered) -> None:
        """Start HAProxy with ``rendered``, or reload it; a refusal restores the running file."""
        master = self.master
        running = self.rendered
        if master.alive() and running is not None and running.text == rendered.text:
            self.rendered = rendered
            return
        if master.alive():
            await self._save_server_states(rendered)
        write_atomic(master.config, rendered.text, 0o600)
        try:
            if master.alive():
                await self._in_thread(self._refresh_counters)
                await master.reload()
            else:
                await master.start()
                self._watch()
        except HAProxyError:
            if running is not None:
                write_atomic(master.config, running.text, 0o600)
            raise
        self.rendered = rendered
        self._pending.update((key, node) for key, servers in rendered.servers.items()
                             for node in servers)
        await self._flush()

    async def _save_server_states(self, rendered: Rendered) -> None:
        """``show servers state`` of the running worker into the server-state file, for the
        servers the new config keeps at the same address (a moved server starts afresh)."""
        try:
            text = await query(self.master.admin_sock, "show servers state")
        except (OSError, asyncio.TimeoutError, HAProxyError) as exc:
            log.warning("could not save HAProxy's server states before the reload: %s", exc)
            return
        same = {(key, s.name, s.ip, str(s.port)) for key, servers in rendered.servers.items()
                for s in servers.values()}
        keep = []
        for line in text.splitlines():
            fields = line.split()
            if line.startswith("#") or len(fields) < 2:
                keep.append(line)
            elif len(fields) > 18 and (fields[1], fields[3], fields[4], fields[18]) in same:
                keep.append(line)
        write_atomic(self.master.state_file, "\n".join(keep) + "\n", 0o600)

    # -------------------------------------------------------- member states

    def set_member_state(self, policy_key: str, node: str, state: str,
                         weight_factor: float = 1.0) -> None:
        """Health or the operator says how a member takes new connections (see the native
        engine); sent to HAProxy's Runtime API at once, remembered across reloads."""
        self.states.record(policy_key, node, state, weight_factor)
        if self.rendered is not None and node in self.rendered.servers.get(policy_key, {}) \
                and not self._closing:
            self._pending.add((policy_key, node))
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.ensure_future(self._flush_locked())

    async def _flush_locked(self) -> None:
        while self._pending:  # states set while a request was on its way go in the next
            async with self._lock:
                await self._flush()

    async def _flush(self) -> None:
        """Send the pending members' states in one Runtime API request."""
        if self.rendered is None or not self.master.alive():
            self._pending.clear()  # (re)start and reload send every state
            return
        commands = []
        for key, node in sorted(self._pending):
            commands += self._commands(key, node)
        self._pending.clear()
        if not commands:
            return
        try:
            reply = await query(self.master.admin_sock, "; ".join(commands))
        except (OSError, asyncio.TimeoutError, HAProxyError) as exc:
            log.error("HAProxy Runtime API: %s (states are sent again at the next reload)", exc)
            return
        if reply.strip():
            log.warning("HAProxy Runtime API answered: %s", " ".join(reply.split())[:500])

    def _commands(self, key: str, node: str) -> list[str]:
        server = self.rendered.servers.get(key, {}).get(node)
        if server is None:
            return []
        name = f"{key}/{server.name}"
        state, factor = self.states.of(key, node)
        if state == "up":
            return [f"set server {name} state ready",
                    f"set weight {name} {runtime_weight(server.weight, factor)}"]
        out = [f"set server {name} state {'drain' if state == 'drain' else 'maint'}"]
        policy = self._policy(key)
        if policy is not None and policy.persistence:  # its pinned clients choose again
            out.append(f"clear table {key} data.server_id eq {server.id}")
        return out

    def _policy(self, key: str):
        return next((p for p in self.cluster.policies if p.key == key), None) if self.cluster else None

    # ---------------------------------------------------------- the master

    def _watch(self) -> None:
        self._watcher = asyncio.ensure_future(self._supervise(self.master.proc))

    async def _supervise(self, proc) -> None:
        """Restart a master that died (not one we stopped), loudly."""
        code = await proc.wait()
        if self._closing or self.master.proc is not proc:
            return
        self.restarts += 1
        stamp = time.strftime("%Y-%m-%d %H:%M:%S")
        self.error = f"HAProxy master (pid {proc.pid}) died with code {code} at {stamp}"
        log.error("%s: restarting it", self.error)
        self.counters.retire_all()
        attempt = 0
        while True:
            await asyncio.sleep(RESTART_DELAYS[min(attempt, len(RESTART_DELAYS) - 1)])
            attempt += 1
            async with self._lock:
                if self._closing or self.master.alive():  # stopped, or an apply started it
                    return
                try:
                    await self.master.start()
                except HAProxyError as exc:
                    log.error("HAProxy did not restart: %s (trying again in a while)", exc)
                    continue
                self.error += f"; restarted ({self.restarts} time(s))"
                log.error("HAProxy restarted (pid %s)", self.master.pid)
                self._pending.update((key, node) for key, servers in self.rendered.servers.items()
                                     for node in servers)
                await self._flush()
                self._watch()
                return

    # ------------------------------------------------------------------ stats

    def _refresh_counters(self) -> None:
        """Every live worker's ``show stat`` (through the master CLI), blocking briefly."""
        sock = self.master.master_sock
        info = parse_proc(query_sync(sock, "show proc", 0.5))
        figures = {}
        for pid in info["workers"] + info["old"]:
            try:
                figures[pid] = parse_stat(query_sync(sock, f"@!{pid} show stat", 0.5))
            except OSError:  # a worker finishing: its last figures stand
                if pid in self.counters.alive:
                    figures[pid] = self.counters.alive[pid]
        self.counters.update(figures)

    def stats(self) -> dict:
        """Per policy and member, the native proxy's keys from HAProxy's counters."""
        now = time.monotonic()
        if self.master is not None and self.master.alive() and now - self._stats_at > STATS_TTL:
            try:
                self._refresh_counters()
                self._stats_at = now
            except (OSError, HAProxyError) as exc:
                log.warning("HAProxy counters: %s", exc)
        out = {}
        for key, servers in (self.rendered.servers if self.rendered else {}).items():
            out[key] = self._policy_stats(key, servers)
        for key, error in self.failed.items():
            out[key] = {"engine": self.name, "listening": False, "error": error}
        return out

    def _policy_stats(self, key: str, servers: dict) -> dict:
        policy = self._policy(key)
        weights = {m.node: m.weight for m in policy.members} if policy else {}
        front, back = self.counters.row(key, "FRONTEND"), self.counters.row(key, "BACKEND")
        members = {}
        for node, server in servers.items():
            row = self.counters.row(key, server.name)
            state, factor = self.states.of(key, node)
            members[node] = {
                "address": f"{server.ip}:{server.port}", "state": state,
                "weight": weights.get(node, server.weight), "weight_factor": factor,
                "active": row["scur"], "total": row["stot"], "bytes_in": row["bin"],
                "bytes_out": row["bout"],
                # a failed connect is retried elsewhere (wredis), again (wretr), or final (econ)
                "connect_failures": row["econ"] + row["wretr"] + row["wredis"],
                "haproxy_status": row["status"], "haproxy_weight": row["weight"]}
        alive = self.master is not None and self.master.alive()
        report = {
            "engine": self.name, "service": policy.service if policy else "",
            "scheduler": policy.scheduler if policy else "",
            "persistence": policy.persistence if policy else 0,
            "proxy_protocol": (policy.proxy_protocol if policy else "") or "none",
            "listening": alive and front["status"] == "OPEN",
            "full": bool(policy and policy.max_conn and front["scur"] >= policy.max_conn),
            "active": front["scur"], "total": front["stot"], "refused": back["econ"],
            "fallback": members["fallback"]["total"] if "fallback" in members else 0,
            "members": members}
        if self.error:
            report.update(engine_error=self.error, engine_restarts=self.restarts)
        return report

    # ------------------------------------------------------------------ close

    async def close(self, timeout: float) -> None:
        """Soft-stop HAProxy: listeners close, connections finish up to ``timeout``."""
        self._closing = True
        tasks = [t for t in (self._flusher, self._watcher) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        async with self._lock:  # an apply under way ends first; none starts after
            if self.master is not None:
                await self.master.stop(timeout)  # its stderr readers end with it
        self._threads.shutdown(wait=True)  # idle: every call on it was awaited under the lock
