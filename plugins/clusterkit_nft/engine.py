"""The nftables engine: policies realised in the manager's kernel, by direct routing or NAT.

``apply`` finds, for each member of a direct-routing policy, the interface it
is reached on and its MAC (the neighbour table, after a ping when the entry
is missing); a NAT policy's members need only a route. It fills each
policy's bucket table from the weights and member states
(:mod:`clusterkit_nft.buckets`) and installs both tables in one ``nft -f``
transaction (:mod:`clusterkit_nft.ruleset`). ``set_member_state`` refills and
installs at once. A policy the engine cannot carry
(:func:`clusterkit_nft.carry.check_policy`) is left out with the reason in
``stats()``; at the first apply that raises, like the other engines.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import time

import clusterkit_nft  # its KIND: each policy's forward
from clusterkit.contracts import MemberStates
from clusterkit_nft.buckets import BUCKETS, fill
from clusterkit_nft.carry import by_client, check_policy, passive_range
from clusterkit_nft.ruleset import FAMILIES, TABLE, Member, PolicyPlan, removal, render

log = logging.getLogger("clusterkit.nft")

MAC = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
DEVICE = re.compile(r"[A-Za-z0-9_.:-]{1,15}")
STATS_TTL = 0.2
MAX_FRESH_TIMEOUT = 3600


class NftError(Exception):
    """nft refused the table, or a policy cannot be carried."""


class NftEngine:
    """Direct routing and NAT by nftables; ``prefix`` runs its commands elsewhere (``ip netns exec NS``)."""

    name = "nft"

    def __init__(self, prefix: tuple[str, ...] = (), buckets: int = BUCKETS):
        self.prefix = tuple(prefix)
        self.buckets = buckets
        self.cluster = None
        self.carried: dict[str, object] = {}          # policy key -> Policy
        self.failed: dict[str, str] = {}               # policy key -> why it is not carried
        self.index: dict[str, int] = {}                # policy key -> N in the table's names
        self.member_ids: dict[str, dict[str, int]] = {}  # policy key -> node -> J (mN_J)
        self._next = 0                                 # N is never reused: counters stay theirs
        self.declared: dict[str, str] | None = None    # what the kernel's table has
        self.links: dict[str, tuple[str, str] | str] = {}  # node ip -> (device, mac) or why not
        self.macs: dict[str, str] = {}                 # device -> the manager's MAC
        self.states = MemberStates()  # as told
        self.applied: dict[tuple[str, str], tuple[str, float]] = {}  # as the kernel has them
        self.owners: dict[str, list[str | None]] = {}  # policy key -> bucket -> node (new flows)
        self.counts: dict[str, tuple[int, int]] = {}
        self.installed = False
        self._lock = asyncio.Lock()
        self._stats_at = 0.0

    # ------------------------------------------------------------ commands

    async def _run(self, *argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            *self.prefix, *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        return proc.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")

    async def _json(self, *argv: str) -> list[dict]:
        """``ip -j ...``'s answer: its objects, nothing else."""
        code, out, _ = await self._run(*argv)
        return objects(out) if code == 0 else []

    async def _nft(self, *argv: str) -> list[dict]:
        """``nft -j ...``'s answer: the objects of its ``nftables`` list."""
        code, out, _ = await self._run("nft", "-j", *argv)
        return nft_objects(out) if code == 0 else []

    async def _link(self, ip: str) -> tuple[str, str] | str:
        """(device, MAC) of a member, or why direct routing cannot reach it."""
        routes = await self._json("ip", "-j", "route", "get", ip)
        route = routes[0] if routes else {}
        device = route.get("dev")
        if not isinstance(device, str) or not DEVICE.fullmatch(device):
            return f"no route to {ip}"
        if route.get("gateway"):
            return (f"{ip} is reached through the gateway {route['gateway']}: direct routing "
                    "needs the node on the manager's own segment (forward = \"nat\" does not)")
        if device == "lo":
            return f"{ip} is an address of the manager itself"
        for attempt in range(2):
            for entry in await self._json("ip", "-j", "neigh", "show", "to", ip, "dev", device):
                mac = str(entry.get("lladdr", "")).lower()
                if MAC.fullmatch(mac) and "FAILED" not in (entry.get("state") or []):
                    return device, mac
            if attempt == 0:  # ask the neighbour table to learn it
                await self._run("ping", "-c", "1", "-W", "1", "-I", device, ip)
        return f"no MAC for {ip} on {device} (unresolved: it did not answer ARP)"

    async def _manager_mac(self, device: str) -> str | None:
        links = await self._json("ip", "-j", "link", "show", "dev", device)
        mac = str(links[0].get("address", "")).lower() if links else ""
        return mac if MAC.fullmatch(mac) else None

    # ------------------------------------------------------------ apply

    async def apply(self, cluster) -> None:
        """Carry ``cluster.policies`` (all of them this engine's), in one transaction."""
        async with self._lock:
            first = not self.installed
            self.cluster = cluster
            hosts = cluster.hosts
            self.failed, self.carried = {}, {}
            for policy in cluster.policies:
                why = check_policy(policy, None, hosts, addresses=[])
                if why:
                    self.failed[policy.key] = f"policy {policy.key}: {why[0]}: {why[1]}"
                else:
                    self.carried[policy.key] = policy
            if any(clusterkit_nft.KIND.forward_of(p) == "nat" for p in self.carried.values()):
                await self._forwarding()
            ips = sorted({hosts[m.node].ip for p in self.carried.values() for m in p.members
                          if m.node in hosts and clusterkit_nft.KIND.forward_of(p) == "dr"})
            self.links = dict(zip(ips, await asyncio.gather(*(self._link(ip) for ip in ips))))
            for device in {link[0] for link in self.links.values() if isinstance(link, tuple)}:
                if device not in self.macs:
                    self.macs[device] = await self._manager_mac(device) or ""
            for key in list(self.index):
                if key not in self.carried:
                    del self.index[key], self.member_ids[key]
                    self.owners.pop(key, None)
            for key in sorted(self.carried):
                if key not in self.index:
                    self.index[key], self._next = self._next, self._next + 1
                    self.member_ids[key] = {}
            await self._install()
        if self.failed and first:
            raise NftError("; ".join(self.failed.values()))
        for error in self.failed.values():
            log.error("%s", error)

    def _plan(self, policy) -> PolicyPlan | None:
        n = self.index[policy.key]
        nat = clusterkit_nft.KIND.forward_of(policy) == "nat"
        members, weights, old_weights, devices = [], {}, {}, set()
        for m in policy.members:
            host = self.cluster.hosts.get(m.node)
            chain = f"m{n}_{self._member_id(policy.key, m.node)}"
            if nat and host is not None:
                members.append(Member(chain, m.node, address=f"{host.ip}:{policy.backend_port}"))
            else:
                link = self.links.get(host.ip) if host else None
                if not isinstance(link, tuple) or not self.macs.get(link[0]):
                    continue
                members.append(Member(chain, m.node, link[1], link[0]))
                devices.add(link[0])
            state, factor = self.states.of(policy.key, m.node)
            weight = m.weight * factor
            if state == "up":
                weights[m.node] = weight
            if state in ("up", "drain"):
                old_weights[m.node] = weight if state == "up" else m.weight
        if not members:
            self.owners[policy.key] = []
            return None
        device = sorted(devices)[0] if devices else ""
        members = [m for m in members if m.device == device]  # one segment per DR policy
        chains = {m.node: m.chain for m in members}
        new = fill({k: w for k, w in weights.items() if k in chains}, self.buckets)
        self.owners[policy.key] = new
        plan = PolicyPlan(n, policy.key, policy.vip, policy.port, by_client=by_client(policy),
                          device=device, members=members, new=[chains.get(node) for node in new],
                          nat=nat, ports=passive_range(policy))
        # a drain in NAT needs nothing more: only new connections pass the nat hook
        if not nat and old_weights.keys() - weights.keys():  # its flows stay on it
            old = fill({k: w for k, w in old_weights.items() if k in chains}, self.buckets)
            plan.old = [chains.get(node) for node in old]
            plan.fresh_timeout = int(min(MAX_FRESH_TIMEOUT, max(1, policy.client_timeout)))
        return plan

    def _member_id(self, key: str, node: str) -> int:
        """J of a member's chain and counters, stable while the policy exists."""
        ids = self.member_ids[key]
        if node not in ids:
            ids[node] = max(ids.values(), default=-1) + 1
        return ids[node]

    async def _install(self) -> None:
        """Render the table and swap it in, one transaction (a whole new table if the kernel's
        is not the one we last wrote)."""
        states = dict(self.states)
        plans = [p for p in (self._plan(self.carried[k]) for k in sorted(self.carried)) if p]
        for previous in ((self.declared, None) if self.declared is not None else (None,)):
            text, declared = render(plans, self.macs, previous)
            code, _, err = await self._run("nft", "-f", "-", stdin=text)
            if code == 0:
                break
        else:
            self.declared = None
            raise NftError(f"nft refused the table: {err.strip()[:2000]}")
        self.installed, self.declared, self.applied = True, declared, states

    async def _forwarding(self) -> None:
        """NAT needs the manager to forward: ``net.ipv4.ip_forward=1`` (said in the log once)."""
        code, out, _ = await self._run("sysctl", "-n", "net.ipv4.ip_forward")
        if code == 0 and out.strip() == "1":
            return
        code, _, err = await self._run("sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        if code:
            raise NftError(f"NAT needs net.ipv4.ip_forward=1 and it cannot be set: {err.strip()}")
        log.info("NAT: net.ipv4.ip_forward set to 1 (the manager routes the nodes' replies)")

    def _take_counters(self, items: list[dict]) -> None:
        counts = {}
        for item in items:
            c = item.get("counter")
            if isinstance(c, dict) and isinstance(c.get("name"), str) \
                    and c.get("table") == TABLE and c.get("family") in FAMILIES:
                counts[c["name"]] = (_count(c.get("packets")), _count(c.get("bytes")))
        self.counts = counts

    # ------------------------------------------------------- member states

    def set_member_state(self, policy_key: str, node: str, state: str,
                         weight_factor: float = 1.0):
        """Refill the policy's buckets and swap the table in at once (returns the awaitable)."""
        if not self.states.record(policy_key, node, state, weight_factor):
            return None
        if not self.installed or policy_key not in self.carried:
            return None
        return self._reinstall(policy_key, node, state)

    async def _reinstall(self, policy_key: str, node: str, state: str) -> None:
        async with self._lock:
            host = self.cluster.hosts.get(node)
            policy = self.carried.get(policy_key)
            if state == "up" and host is not None and policy is not None \
                    and clusterkit_nft.KIND.forward_of(policy) == "dr" \
                    and not isinstance(self.links.get(host.ip), tuple):
                self.links[host.ip] = await self._link(host.ip)  # it answers: learn its MAC now
            await self._install()

    # ------------------------------------------------------------ stats

    def stats(self) -> dict:
        """Per policy and member: packets and bytes from client to member, connections (SYNs)."""
        now = time.monotonic()
        if self.installed and now - self._stats_at > STATS_TTL:
            try:
                done = subprocess.run([*self.prefix, "nft", "-j", "list", "counters"],
                                      capture_output=True, text=True, timeout=2)
                if done.returncode == 0:
                    self._take_counters(nft_objects(done.stdout))
                self._stats_at = now
            except (OSError, subprocess.TimeoutExpired) as exc:
                log.warning("nft counters: %s", exc)
        out = {key: {"engine": self.name, "listening": False, "error": error}
               for key, error in self.failed.items()}
        for key, policy in self.carried.items():
            out[key] = self._policy_stats(key, policy)
        return out

    def _policy_stats(self, key: str, policy) -> dict:
        n = self.index[key]
        owners = self.owners.get(key, [])
        nat = clusterkit_nft.KIND.forward_of(policy) == "nat"
        members = {}
        for m in policy.members:
            j = self.member_ids[key].get(m.node)
            host = self.cluster.hosts.get(m.node)
            link = self.links.get(host.ip) if host else None
            state, factor = self.applied.get((key, m.node), ("up", 1.0))
            packets, octets = self.counts.get(f"c{n}_{j}", (0, 0))
            entry = {"address": f"{host.ip if host else '?'}:{policy.backend_port}", "state": state,
                     "weight": m.weight, "weight_factor": factor,
                     "total": self.counts.get(f"s{n}_{j}", (0, 0))[0],
                     "packets_in": packets, "bytes_in": octets,
                     "buckets": sum(1 for o in owners if o == m.node)}
            if isinstance(link, tuple):
                entry.update(device=link[0], mac=link[1])
            elif not nat:
                entry["unresolved"] = link or "not looked up yet"
            members[m.node] = entry
        ports = passive_range(policy)
        return {"engine": self.name, "mode": "nat" if nat else "dr", "service": policy.service,
                **({"passive_ports": f"{ports[0]}-{ports[1]}"} if ports else {}),
                "scheduler": policy.scheduler, "persistence": policy.persistence,
                "proxy_protocol": "none", "listening": self.installed and any(owners),
                "total": sum(e["total"] for e in members.values()),
                "refused": self.counts.get(f"x{n}", (0, 0))[0], "buckets": len(owners),
                "members": members}

    # ------------------------------------------------------------ close

    async def close(self, timeout: float) -> None:
        """Take the tables away: packets for the VIPs go to the manager's own stack again."""
        async with self._lock:
            if self.installed:
                code, _, err = await self._run("nft", "-f", "-", stdin=removal())
                if code != 0:
                    log.error("nft could not remove table %s: %s", TABLE, err.strip())
                self.installed, self.declared = False, None


def _count(value) -> int:
    return value if isinstance(value, int) and value >= 0 else 0


def objects(text: str) -> list[dict]:
    """The JSON objects of a list (what ``ip -j`` prints); anything else is no answer."""
    try:
        data = json.loads(text or "[]")
    except ValueError:
        return []
    return [d for d in data if isinstance(d, dict)] if isinstance(data, list) else []


def nft_objects(text: str) -> list[dict]:
    """The objects of ``{"nftables": [...]}`` (what ``nft -j`` prints)."""
    try:
        data = json.loads(text or "{}")
    except ValueError:
        return []
    items = data.get("nftables") if isinstance(data, dict) else None
    return [d for d in items if isinstance(d, dict)] if isinstance(items, list) else []

