"""The IPVS engine: policies realised as virtual services of the manager's kernel.

``apply`` plans every policy (:func:`clusterkit_ipvs.rules.plan`) and makes
the kernel's table match: services added or changed in place (scheduler,
persistence), destinations added, re-weighted, or made to leave. A service
at a policy's VIP:port is the policy's (a daemon restarted after a crash
finds its own); every other service of the table is left alone, and
``close`` removes only the services this engine holds.

A member that goes down, into maintenance, or out of the policy leaves as
kube-proxy's graceful termination does: weight 0 at once (no new
connections), removal when the kernel counts no active connection on it
(polled every ``poll`` seconds). A drained member keeps weight 0 and its
place. Slow start re-weights the destination at each step.

The policies come judged by the engine kind's ``check_policy``
(:mod:`clusterkit_ipvs.carry`): what IPVS cannot carry never reaches
``apply``. A kernel without IPVS, or one refusing a change, is an error with
the reason in the log and in the policy's ``stats()`` (a refused service is
left out, the others carried); at the first apply it raises, like the other
engines.
"""

from __future__ import annotations

import asyncio
import logging
import time

from clusterkit.contracts import MemberStates
from clusterkit_ipvs.kernel import Counters, IpvsError, Kernel, KernelService, canonical
from clusterkit_ipvs.rules import Dest, Service, endpoint, plan

log = logging.getLogger("clusterkit.ipvs")

STATS_TTL = 0.2
POLL = 1.0


class IpvsEngine:
    """The policies naming the ``ipvs`` engine, each with its ``forward``, in the kernel."""

    name = "ipvs"

    def __init__(self, kernel: Kernel | None = None, poll: float = POLL):
        self.kernel = kernel or Kernel()
        self.poll = poll
        self.cluster = None
        self.policies: dict[str, object] = {}       # policy key -> Policy carried
        self.services: dict[str, Service] = {}      # policy key -> what the kernel should have
        self.failed: dict[str, str] = {}            # policy key -> why it is not carried
        self.held: dict[str, tuple[str, int]] = {}  # policy key -> (vip, port) in the kernel
        self.leaving: dict[str, dict[tuple[str, int], str]] = {}  # key -> dest -> node
        self.states = MemberStates()
        self.counters: dict[str, dict[tuple[str, int], Counters]] = {}
        self.error = ""                             # the kernel's last refusal
        self.applied = False
        self._lock = asyncio.Lock()
        self._poller: asyncio.Task | None = None
        self._stats_at = 0.0

    # ------------------------------------------------------------ apply

    async def apply(self, cluster) -> None:
        """Make the kernel's table carry ``cluster.policies`` (all of them this engine's)."""
        async with self._lock:
            first, self.applied = not self.applied, True
            self.cluster = cluster
            self.policies = {policy.key: policy for policy in cluster.policies}
            self.failed = {}
            self._plan_all()
            try:
                refused = await asyncio.to_thread(self._sync)
                self.error = ""
                for key, why in refused.items():  # the kernel said no to this one: left out
                    self.failed[key] = f"policy {key}: {why}"
                    del self.policies[key], self.services[key]
            except IpvsError as exc:
                self.error = str(exc)
                if first:
                    raise
                log.error("%s", exc)
        if self.failed and first:
            raise IpvsError("; ".join(self.failed.values()))
        if self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll_leaving())
        for error in self.failed.values():
            log.error("%s", error)

    def _plan_all(self) -> None:
        self.services = {}
        for key, policy in self.policies.items():
            states = {node: s for (k, node), s in self.states.items() if k == key}
            self.services[key] = plan(policy, self.cluster.hosts, states)

    def rules(self) -> list[Service]:
        """What the kernel should have now, in policy order (``clusterkit policy ipvs-rules``)."""
        return [self.services[k] for k in sorted(self.services)]

    def _sync(self) -> dict[str, str]:
        """(In a thread.) Services this engine no longer carries go; the others match their plan.

        Returns the policies whose service the kernel refused, with its reason.
        """
        table = self.kernel.services()
        for key in [k for k in self.held if k not in self.services]:
            vip, port = self.held.pop(key)
            self.leaving.pop(key, None)
            self.counters.pop(key, None)
            if (vip, port) in table:
                self.kernel.delete_service(vip, port)
                log.info("ipvs: service %s removed", key)
        refused = {}
        for key, service in self.services.items():
            try:
                self._sync_service(service, table.get((canonical(service.vip), service.port)))
            except IpvsError as exc:
                refused[key] = str(exc)
        return refused

    def _sync_service(self, s: Service, present: KernelService | None) -> None:
        if present is None:
            self.kernel.add_service(s)
            log.info("ipvs: service %s added (%s, %s)", s.key, s.forward, s.scheduler)
        else:
            if s.key not in self.held:
                log.warning("ipvs: %s was already in the kernel's table: the policy takes it over",
                            s.key)
            if present != KernelService(s.scheduler, s.persistence):
                self.kernel.edit_service(s)
        self.held[s.key] = (canonical(s.vip), s.port)
        self._sync_dests(s)

    def _sync_dests(self, s: Service) -> None:
        """Destinations of one service: kept ones added or re-weighted, the others leave."""
        vip = canonical(s.vip)
        have = self.kernel.dests(vip, s.port)
        wanted = {(canonical(d.address), d.port): d for d in s.dests}
        leaving = self.leaving.setdefault(s.key, {})
        for addr, d in wanted.items():
            now = have.get(addr)
            if d.kept:
                leaving.pop(addr, None)
                if now is None:
                    self.kernel.add_dest(s, d)
                elif (now.weight, now.fwd_method, now.u_thresh) != (d.weight, s.fwd_method, d.u_thresh):
                    self.kernel.edit_dest(s, d)
            elif now is not None:
                self._leave(s, addr, d, now, leaving)
        for addr in have.keys() - wanted.keys():  # out of the policy (or its address changed)
            node = leaving.get(addr, "")
            self._leave(s, addr, Dest(node, addr[0], addr[1], 0, "down", 0), have[addr], leaving)
        for addr in list(leaving):
            if addr not in have:
                del leaving[addr]

    def _leave(self, s: Service, addr, d: Dest, now: Counters, leaving: dict) -> None:
        """Weight 0 first; out of the table once no connection is active on it."""
        if now.active == 0:
            self.kernel.delete_dest(canonical(s.vip), s.port, *addr)
            leaving.pop(addr, None)
            log.info("ipvs: %s: %s left (no active connection)", s.key, endpoint(*addr))
            return
        if now.weight != 0 or now.fwd_method != s.fwd_method:
            self.kernel.edit_dest(s, Dest(d.node, addr[0], addr[1], 0, d.state, d.u_thresh))
        leaving[addr] = d.node

    async def _poll_leaving(self) -> None:
        while True:
            await asyncio.sleep(self.poll)
            if not any(self.leaving.values()):
                continue
            async with self._lock:
                keys = [k for k, v in self.leaving.items() if v and k in self.services]
                try:
                    await asyncio.to_thread(lambda: [self._sync_dests(self.services[k]) for k in keys])
                except IpvsError as exc:
                    log.error("ipvs: %s", exc)

    # ------------------------------------------------------- member states

    def set_member_state(self, policy_key: str, node: str, state: str,
                         weight_factor: float = 1.0):
        """Re-plan the policy and change its destination at once (returns the awaitable)."""
        if not self.states.record(policy_key, node, state, weight_factor):
            return None
        if policy_key not in self.policies:
            return None  # remembered for when it is applied
        return self._update(policy_key)

    async def _update(self, key: str) -> None:
        async with self._lock:
            policy = self.policies.get(key)
            if policy is None:
                return
            states = {node: s for (k, node), s in self.states.items() if k == key}
            service = self.services[key] = plan(policy, self.cluster.hosts, states)
            try:
                await asyncio.to_thread(self._sync_dests, service)
            except IpvsError as exc:
                self.error = str(exc)
                log.error("ipvs: %s", exc)

    # ------------------------------------------------------------ stats

    def _refresh(self) -> None:
        now = time.monotonic()
        if not self.held or now - self._stats_at < STATS_TTL:
            return
        self._stats_at = now
        try:
            for key, (vip, port) in self.held.copy().items():  # a thread may be changing it
                self.counters[key] = self.kernel.dests(vip, port)
        except IpvsError as exc:
            self.error = str(exc)
            log.warning("ipvs counters: %s", exc)

    def stats(self) -> dict:
        """Per policy and member: the kernel's weight, connections, packets and bytes.

        In DR and TUN mode the replies bypass the manager: ``packets_out``/``bytes_out`` stay 0.
        """
        self._refresh()
        out = {key: {"engine": self.name, "listening": False, "error": error}
               for key, error in self.failed.items()}
        for key, s in self.services.items():
            policy = self.policies[key]
            counters = self.counters.get(key, {})
            leaving = self.leaving.get(key, {}).copy()  # a thread may be changing it
            members = {}
            for d in s.dests:
                addr = (canonical(d.address), d.port)
                c = counters.get(addr)
                state, factor = self.states.of(key, d.node)
                weight = next((m.weight for m in policy.members if m.node == d.node), 0)
                members[d.node] = {
                    "address": endpoint(d.address, d.port), "state": state, "weight": weight,
                    "weight_factor": factor, "ipvs_weight": c.weight if c else None,
                    "in_table": c is not None, "leaving": addr in leaving,
                    "active": c.active if c else 0, "inactive": c.inactive if c else 0,
                    "total": c.conns if c else 0,
                    "packets_in": c.packets_in if c else 0, "packets_out": c.packets_out if c else 0,
                    "bytes_in": c.bytes_in if c else 0, "bytes_out": c.bytes_out if c else 0}
            entry = {"engine": self.name, "mode": s.forward, "service": policy.service,
                     "scheduler": s.scheduler, "persistence": s.persistence,
                     "proxy_protocol": "none", "listening": key in self.held and not self.error,
                     "leaving": sorted(endpoint(*addr) for addr in leaving),
                     "active": sum(m["active"] for m in members.values()),
                     "total": sum(m["total"] for m in members.values()), "members": members}
            if self.error:
                entry["error"] = self.error
            out[key] = entry
        return out

    # ------------------------------------------------------------ close

    async def close(self, timeout: float) -> None:
        """Quiesce this engine's services (weight 0), let their connections finish for up to
        ``timeout`` seconds, then remove them: only those, never the rest of the table."""
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        async with self._lock:
            try:
                await asyncio.to_thread(self._quiesce)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and await asyncio.to_thread(self._active):
                    await asyncio.sleep(min(self.poll, max(0.0, deadline - time.monotonic())))
                await asyncio.to_thread(self._remove_held)
            except IpvsError as exc:
                log.error("ipvs: while closing: %s", exc)
            finally:
                self.kernel.close()

    def _quiesce(self) -> None:
        for key, (vip, port) in self.held.items():
            s = self.services.get(key)
            for addr, c in self.kernel.dests(vip, port).items():
                if c.weight and s is not None:
                    self.kernel.edit_dest(s, Dest("", addr[0], addr[1], 0, "drain", c.u_thresh))

    def _active(self) -> int:
        return sum(c.active for vip, port in self.held.values()
                   for c in self.kernel.dests(vip, port).values())

    def _remove_held(self) -> None:
        table = self.kernel.services()
        for key, (vip, port) in list(self.held.items()):
            if (vip, port) in table:
                self.kernel.delete_service(vip, port)
                log.info("ipvs: service %s removed", key)
            del self.held[key]
