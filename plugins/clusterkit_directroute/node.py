"""The node side of direct routing: the VIP on ``lo``, ARP kept quiet about it.

The manager (whichever kernel engine: nft, ipvs) forwards a DR or TUN
policy's packets to the node with the VIP still as their destination: the
node must take them as its own (the VIP on ``lo``, /32, labelled ``lo:ck`` so
that clusterkit knows which addresses it added) and must not answer ARP for
the VIP, else clients would reach it past the manager (``arp_ignore=1``,
``arp_announce=2``, for ``all`` and the node's interface). A VIP no DR or
TUN policy of this node uses any more is removed. The ARP settings
stay: they only make the node stricter about which addresses it announces.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import re

from clusterkit.contracts import Component

log = logging.getLogger("clusterkit.directroute")

LABEL = "lo:ck"
ARP = {"arp_ignore": "1", "arp_announce": "2"}
# an interface name as a path component under /proc/sys/net/ipv4/conf (never "." nor "..")
INTERFACE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.:-]{0,14}")


def dr_vips(cluster, node: str, engines: dict) -> list[str]:
    """The IPv4 VIPs of the policies with ``node`` as member that a kernel engine forwards to it
    with the VIP still as destination: direct routing or tunnelling (``engines``: the registry's
    engine kinds; a kernel engine declares ``forwards``, its first one the default). A NAT node
    gets its connections addressed to itself: no VIP on its ``lo``."""
    vips = set()
    for policy in cluster.policies:
        kind = engines.get(policy.engine)
        if kind is None or not kind.forwards:
            continue
        if kind.forward_of(policy) in ("dr", "tun") \
                and any(m.node == node for m in policy.members):
            try:
                if ipaddress.ip_address(policy.vip).version == 4:
                    vips.add(policy.vip)
            except ValueError:
                continue
    return sorted(vips)


async def _ip_json(*argv: str):
    proc = await asyncio.create_subprocess_exec("ip", "-j", *argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL)
    out, _ = await proc.communicate()
    try:
        return json.loads(out or b"[]")
    except ValueError:
        return []


async def _ip(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec("ip", *argv, stdout=asyncio.subprocess.DEVNULL,
                                                stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    return err.decode("utf-8", "replace").strip() if proc.returncode else ""


class NodeSide(Component):
    """Keeps this node's DR VIPs on ``lo`` and the ARP settings that go with them."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.vips: list[str] = []
        self.interface = ""
        self.arp: dict[str, dict[str, str]] = {}
        self.errors: list[str] = []

    async def start(self) -> None:
        await self.sync()

    async def reload(self, old, new) -> None:
        await self.sync()

    async def sync(self) -> None:
        wanted = dr_vips(self.runtime.cluster, self.runtime.host.name, self.runtime.registry.engines)
        errors = []
        present = set()
        for link in await _ip_json("addr", "show", "dev", "lo"):
            for a in link.get("addr_info", []) if isinstance(link, dict) else []:
                if a.get("label") == LABEL and a.get("family") == "inet":
                    present.add(a.get("local"))
        if wanted:
            errors += await self._arp()
        for vip in wanted:
            if vip not in present:
                error = await _ip("addr", "add", f"{vip}/32", "dev", "lo", "label", LABEL)
                errors += [f"cannot put {vip} on lo: {error}"] if error else []
                log.info("direct routing: %s on lo", vip)
        for vip in sorted(present - set(wanted)):
            error = await _ip("addr", "del", f"{vip}/32", "dev", "lo")
            errors += [f"cannot remove {vip} from lo: {error}"] if error else []
            log.info("direct routing: %s removed from lo (no DR policy uses it)", vip)
        self.vips, self.errors = wanted, errors
        for error in errors:
            log.error("direct routing: %s", error)

    async def _arp(self) -> list[str]:
        """``arp_ignore``/``arp_announce`` for ``all`` and the interface holding the node's ip."""
        self.interface = ""
        for link in await _ip_json("addr", "show"):
            if any(a.get("local") == self.runtime.host.ip for a in link.get("addr_info", [])):
                self.interface = str(link.get("ifname", ""))
        errors = []
        for conf in ["all"] + ([self.interface] if INTERFACE.fullmatch(self.interface) else []):
            for key, value in ARP.items():
                path = os.path.join("/proc/sys/net/ipv4/conf", conf, key)
                try:
                    with open(path, "w") as f:
                        f.write(value)
                    self.arp.setdefault(conf, {})[key] = value
                except OSError as exc:
                    errors.append(f"cannot set {path}: {exc.strerror}")
        return errors

    def status(self) -> dict:
        return {"vips_on_lo": self.vips, "interface": self.interface, "arp": self.arp,
                "errors": self.errors}
