"""NOTIFY (RFC 1996) from the manager to the outside secondaries when a zone's serial changes.

The manager's DNS server swaps its zone dict whenever a reload changed
something; the notifier looks at that reference every :data:`POLL` seconds
(cheap: an identity test) and, for every zone whose serial moved, sends
NOTIFY to every ``notify`` target of the secondaries that carry the zone,
signed with their TSIG key. A target that does not answer is asked again with
exponential back-off (1 s doubling to :data:`BACKOFF_MAX`) until it
acknowledges; a newer serial replaces the pending one. At start every zone is
announced once, so secondaries catch up with changes made while the manager
was down.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import time

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.renderer

from clusterkit_dns import tsig, zoneview
from clusterkit_dns.mgmtconfig import Management

log = logging.getLogger("clusterkit.dns.notify")

POLL = 0.2
TIMEOUT = 2.0
BACKOFF_MAX = 60.0
ATTEMPTS = 30  # ~25 minutes of asking; the secondary's SOA refresh timer covers the rest


class Notifier:
    """Sends NOTIFY for one DNS server; keeps one pending task per (zone, target)."""

    def __init__(self, server, management: Management, sources: list[str] = ()):
        self.server = server
        self.management = management
        self.sources = list(sources)
        self.serials: dict = {}      # origin -> serial last announced
        self.pending: dict = {}      # (origin, (ip, port)) -> task
        self.acked: dict = {}        # (origin, (ip, port)) -> (serial, unix time)
        self._seen = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._watch())

    async def stop(self) -> None:
        tasks = [t for t in [self._task, *self.pending.values()] if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.pending.clear()

    def configure(self, management: Management) -> None:
        """New secondaries or keys: announce every zone again to the new set."""
        if management != self.management:
            self.management = management
            self.serials.clear()
            self._seen = None

    async def _watch(self) -> None:
        while True:
            zones = self.server.zones
            if zones is not self._seen:
                self._seen = zones
                self._changed(zones)
            await asyncio.sleep(POLL)

    def _changed(self, zones: dict) -> None:
        for origin, zone in zones.items():
            if self.serials.get(origin) == zone.serial:
                continue
            self.serials[origin] = zone.serial
            for sec in self.management.secondaries_for(origin):
                key = self.management.key(sec.key) if sec.key else None
                for target in sec.notify:
                    slot = (origin, target)
                    old = self.pending.pop(slot, None)
                    if old is not None:
                        old.cancel()
                    task = asyncio.ensure_future(
                        self._notify(origin, zoneview.soa(zone), target, key))
                    self.pending[slot] = task
                    task.add_done_callback(lambda t, s=slot: self._done(s, t))

    def _done(self, slot, task) -> None:
        if self.pending.get(slot) is task:
            del self.pending[slot]

    async def _notify(self, origin: dns.name.Name, soa, target, key) -> None:
        """Ask until acknowledged (a response with our ID, TSIG-verified when signed)."""
        serial = soa[0].serial
        delay = 1.0
        for attempt in range(1, ATTEMPTS + 1):
            wire, mac, qid = notify_message(origin, soa, key)
            try:
                data = await _exchange(wire, target, self._source(target[0]), qid, TIMEOUT)
                response = dns.message.from_wire(data, keyring=key.key() if key else None,
                                                 request_mac=mac)
            except (dns.exception.DNSException, OSError, asyncio.TimeoutError) as exc:
                level = logging.INFO if isinstance(exc, asyncio.TimeoutError) else logging.WARNING
                log.log(level, "dns: NOTIFY %s serial %d to %s:%d, attempt %d: %s", origin,
                        serial, *target, attempt, exc or type(exc).__name__)
            else:
                rcode = dns.rcode.to_text(response.rcode())
                if response.rcode() != dns.rcode.NOERROR:
                    log.warning("dns: NOTIFY %s to %s:%d answered %s (check its allow-notify)",
                                origin, *target, rcode)
                else:
                    log.info("dns: NOTIFY %s serial %d acknowledged by %s:%d", origin, serial,
                             *target)
                self.acked[(origin, target)] = (serial, time.time())
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX)
        log.error("dns: NOTIFY %s serial %d to %s:%d never acknowledged after %d attempts",
                  origin, serial, *target, ATTEMPTS)

    def _source(self, ip: str) -> str | None:
        """Send from our own listen address of the target's family (allow-notify checks it)."""
        family = ipaddress.ip_address(ip).version
        return next((s for s in self.sources if ipaddress.ip_address(s).version == family), None)

    def status(self) -> dict:
        return {
            "pending": sorted(f"{o.to_text(omit_final_dot=True)} -> {t[0]}:{t[1]}"
                              for o, t in self.pending),
            "acknowledged": {f"{o.to_text(omit_final_dot=True)} -> {t[0]}:{t[1]}": serial
                             for (o, t), (serial, _) in sorted(self.acked.items())},
        }


def notify_message(origin: dns.name.Name, soa, key) -> tuple[bytes, bytes, int]:
    """(wire, request MAC, id) of a NOTIFY carrying the SOA, its names uncompressed.

    RFC 1996 §3.7: the SOA in the answer section tells the secondary the new
    serial. NSD 4.6 answers FORMERR when those names are compressed (what
    dnspython's renderer would do), so the record is written by hand.
    """
    qid = secrets.randbelow(0x10000)  # unpredictable: a NOTIFY answer cannot be forged blind
    r = dns.renderer.Renderer(qid, dns.flags.AA | (dns.opcode.NOTIFY << 11), 65535)
    r.add_question(origin, dns.rdatatype.SOA, dns.rdataclass.IN)
    r.section = dns.renderer.ANSWER
    r.counts[dns.renderer.ANSWER] += soa.to_wire(r.output, None)
    r.write_header()
    if key is None:
        return r.get_wire(), b"", qid
    wire, mac, _ = tsig.sign(r.get_wire(), key.key(), qid)
    return wire, mac, qid


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, qid: int):
        self.qid = qid
        self.done = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr) -> None:
        if len(data) >= 12 and int.from_bytes(data[:2], "big") == self.qid and data[2] & 0x80 \
                and not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


async def _exchange(wire: bytes, target, source: str | None, qid: int, timeout: float) -> bytes:
    loop = asyncio.get_running_loop()
    transport, proto = await loop.create_datagram_endpoint(
        lambda: _Reply(qid), local_addr=(source, 0) if source else None, remote_addr=target)
    try:
        transport.sendto(wire)
        return await asyncio.wait_for(proto.done, timeout)
    finally:
        transport.close()
