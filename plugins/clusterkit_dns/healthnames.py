"""Health-aware names: A/AAAA records listing only the members of a policy that are up.

DNS round-robin for services that do not pass the load balancer. The manager
knows health (the membership component, asked through
:class:`clusterkit.contracts.MembershipQuery`); nodes and outside
secondaries do not. So the manager *writes* the answer into the zone — a
generated block in the zone file, with a short TTL — and the ordinary paths
carry it everywhere: the manager's server reloads it, replication brings it
to every node, NOTIFY brings it to the secondaries. Every server answers the
same, and ``dns status`` can prove it.

A member counts when its weight is above 0 and its state is ``up`` (not
``down``, ``drain`` or ``maintenance``). Without health information (no
membership component yet) every weighted member counts, as HAProxy starts
members up. When no member is up, every weighted member is listed: an
answer that might work beats one that certainly fails (Route 53 does the same).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from clusterkit.contracts import MEMBERSHIP, MembershipQuery
from clusterkit_dns.mgmtconfig import HealthName, Management
from clusterkit_dns.zoneedit import ZoneEditError
from clusterkit_dns.zonestore import ZoneStore

log = logging.getLogger("clusterkit.dns.health")

SETTLE = 0.1  # seconds to gather a burst of membership events into one zone write


def healthy_nodes(runtime, policy_key: str) -> tuple[list[str], str]:
    """(nodes to publish, why) for the policy ``VIP:PORT``."""
    policy = next((p for p in runtime.cluster.policies if p.key == policy_key), None)
    if policy is None:
        return [], f"no policy {policy_key}"
    weighted = [m.node for m in policy.members if m.weight > 0]
    membership: MembershipQuery | None = runtime.components.get(MEMBERSHIP)
    if membership is None:
        return weighted, "no health information yet: every weighted member"
    states = membership.states(policy.key)
    up = [n for n in weighted if states.get(n, "up") == "up"]
    if not up:
        return weighted, "no member is up: every weighted member (fail open)"
    return up, f"{len(up)} of {len(weighted)} members up"


def records_for(runtime, hn: HealthName) -> tuple[list[str], str]:
    """The zone-file lines of one health name, and why these."""
    nodes, why = healthy_nodes(runtime, hn.policy)
    overrides = dict(hn.addresses)
    lines = []
    for node in nodes:
        host = runtime.cluster.hosts.get(node)
        address = overrides.get(node) or (host.ip if host else None)
        if address is None:
            continue
        rtype = "AAAA" if ipaddress.ip_address(address).version == 6 else "A"
        lines.append(f"{hn.name} {hn.ttl} IN {rtype} {address}")
    return sorted(set(lines)), why


class HealthNames:
    """Keeps the generated blocks of the manager's zone files in line with membership."""

    def __init__(self, runtime, store: ZoneStore, management: Management):
        self.runtime = runtime
        self.store = store
        self.management = management
        self.previous: tuple = ()   # health names of the last applied configuration
        self.last: dict = {}        # name -> {"records": [...], "why": ...}
        self._task: asyncio.Task | None = None
        self._dirty = False

    def configure(self, management: Management) -> None:
        self.management = management
        self.poke()

    def poke(self) -> None:
        """Something changed (membership, policies): rewrite the blocks soon, once per burst.

        A change arriving while a write runs is not lost: the task goes round again."""
        self._dirty = True
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._apply_soon())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _apply_soon(self) -> None:
        while self._dirty:
            await asyncio.sleep(SETTLE)
            self._dirty = False
            writes = self.plan()  # membership and the definition are read on the event loop
            await asyncio.to_thread(self.write, writes)  # the zone files are written off it

    def plan(self) -> list[tuple]:
        """(zone, name, title, lines) for every configured name, and removals of dropped ones."""
        current = self.management.health_names
        writes = []
        for hn in current:
            lines, why = records_for(self.runtime, hn)
            if not lines and self.last.get(hn.name, {}).get("why") != why:
                log.error("dns: health name %s publishes nothing: %s (dns.health_name policy "
                          "must be a [[policy]]'s VIP:PORT)", hn.name, why)
            self.last[hn.name] = {"zone": hn.zone, "policy": hn.policy, "records": lines,
                                  "why": why}
            writes.append((hn.zone, hn.name, f"policy {hn.policy}", lines))
        names = {h.name for h in current}
        for old in self.previous:
            if old.name not in names:
                self.last.pop(old.name, None)
                writes.append((old.zone, old.name, "", []))
        self.previous = current
        return writes

    def write(self, writes: list[tuple]) -> None:
        for zone, name, title, lines in writes:
            self._write(zone, name, title, lines)

    def _write(self, zone: str, name: str, title: str, lines: list[str]) -> None:
        try:
            serial = self.store.set_generated(zone, name, title, lines)
        except ZoneEditError as exc:
            log.error("dns: health name %s not published: %s", name, exc)
            return
        if serial is not None:
            log.info("dns: health name %s now %s (zone %s serial %d)", name,
                     ", ".join(line.split()[-1] for line in lines) or "removed", zone, serial)

    def status(self) -> dict:
        return self.last
