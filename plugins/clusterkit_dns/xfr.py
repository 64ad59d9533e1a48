"""Zone transfers to outside secondaries: AXFR (RFC 5936), IXFR (RFC 1995).

The TCP listener hands every AXFR/IXFR query to :meth:`Transfers.answer`
with the peer's address. A transfer is allowed when a ``[[dns.secondary]]``
lists the zone (or every zone), the peer's address, and — if it names a key
— the query is signed with that key (TSIG, RFC 8945). Everyone else gets
REFUSED; a bad signature, unknown key or skewed clock gets NOTAUTH with the
TSIG error (BADSIG, BADKEY unsigned; BADTIME signed, RFC 8945 §5.2).

An IXFR from a serial the zone's history reaches
(:mod:`clusterkit_dns.journal`, kept by the server) is answered with the
increments in the condensed form (new SOA; per version the old SOA, the
records deleted, the newer SOA, the records added; new SOA); from any other
older serial with the whole zone (RFC 1995 §4), from the current one with the
SOA alone. Over UDP, as NSD does, the answer is the first message of what TCP
would send, filled up to the UDP size (the SOA alone, or the increments when
they fit); no UDP IXFR is refused that TCP would allow, nor the reverse.

The zone sent is the :class:`~clusterkit_dns.zones.Zone` being served at that
moment (immutable), so a reload during a transfer cannot mix two versions.
Messages are written with the server's own compressing writer
(:class:`clusterkit_dns.compiler.Writer`), packed up to :data:`MESSAGE_SIZE`,
each signed with the MAC chained from the previous one (RFC 8945 §5.3.1), and
streamed by a task that yields to the event loop between batches and waits
while the client is slow to read: a large transfer never stalls the answers.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import weakref

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rrset
import dns.rdatatype
import dns.tsig

from clusterkit_dns import compact, tsig
from clusterkit_dns.mgmtconfig import Management
from clusterkit_dns.serial import serial_lt
from clusterkit_dns.compiler import TooBig, Writer

log = logging.getLogger("clusterkit.dns.xfr")

AXFR, IXFR, SOA = dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.SOA
MESSAGE_SIZE = 16 * 1024  # bytes of records per message: many records per message (RFC 5936 §2.2)
LIMIT = 65535 - 512       # a message's hard limit, room left for the TSIG record
BATCH = 16                # messages written between two turns of the event loop
BUFFER_HIGH = 1 << 20     # bytes queued for a slow reader before the stream waits
UDP_EDNS = 1232           # the most sent over UDP (responder.EDNS_SIZE, NSD's default)


def xfr_type(wire: bytes) -> int:
    """AXFR or IXFR when ``wire`` is a standard query for one, else 0 (cheap: no parsing)."""
    if len(wire) < 17 or wire[2] & 0xF8 or wire[4:6] != b"\x00\x01":
        return 0
    pos, end = 12, len(wire)
    while pos < end:
        length = wire[pos]
        if length == 0:
            break
        if length > 63:
            return 0
        pos += length + 1
    if pos + 3 > end:
        return 0
    qtype = (wire[pos + 1] << 8) | wire[pos + 2]
    return qtype if qtype in (AXFR, IXFR) else 0


def frame(wire: bytes) -> bytes:
    return struct.pack("!H", len(wire)) + wire


class Transfers:
    """Answers transfer queries for one DNS server, per the ``[dns]`` management settings."""

    def __init__(self, server, management: Management):
        self.server = server
        self.configure(management)
        self.stats = {"allowed": 0, "refused": 0, "notauth": 0, "incremental": 0}
        self.tasks: set[asyncio.Task] = set()
        self._bodies = weakref.WeakKeyDictionary()  # Zone -> {(qname wire, qtype): bodies}

    def configure(self, management: Management) -> None:
        self.management = management
        self.keyring = {dns.name.from_text(k.name): k.key() for k in management.keys}

    def wants(self, wire: bytes) -> bool:
        return xfr_type(wire) != 0

    def answer(self, wire: bytes, protocol) -> list[bytes]:
        """Answer one AXFR/IXFR query read by the TCP ``protocol``.

        Refusals come back at once as length-framed messages; an allowed
        transfer is streamed onto the connection by a task, and [] returned.
        """
        peer = protocol.transport.get_extra_info("peername")
        query, zone, refusal = self._admit(wire, peer[0] if peer else "")
        if zone is None:
            return [frame(refusal)] if refusal else []
        pairs = self._content(query, zone, peer[0] if peer else "")
        if pairs is not None and len(pairs) == 1:  # RFC 1995 §2: current, the SOA alone
            return [frame(m) for m in render_messages(query, render_bodies(query.question[0],
                                                                           pairs))]
        task = asyncio.ensure_future(self._stream(query, zone, protocol, pairs))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return []

    def answer_udp(self, wire: bytes, address: str) -> bytes | None:
        """An IXFR over UDP from ``address``: what NSD sends, the first message of the
        transfer filled up to the UDP size (the client's EDNS size up to ours, else 512)."""
        query, zone, refusal = self._admit(wire, address)
        if zone is None:
            return refusal or None
        pairs = self._content(query, zone, address)
        edns = None if query.edns < 0 else max(512, min(UDP_EDNS, query.payload))
        size = 512 if edns is None else edns
        room = size - 12 - (11 if edns is not None else 0) - (
            _tsig_room(query.keyring) if query.had_tsig else 0)
        writer, count = Writer(12 + room), 0
        writer.question(query.question[0].name.to_wire(), query.question[0].rdtype)
        for pair in pairs if pairs is not None else _zone_pairs(zone):
            try:
                count += writer.rrset(pair)
            except TooBig:
                break
        wire = _header(query, count, 0 if edns is None else 1) + bytes(writer.buf[12:])
        if edns is not None:
            wire += b"\x00\x00\x29" + struct.pack("!H", edns) + bytes(6)
        if query.had_tsig:
            wire, _ = _sign(wire, query, query.keyring, None)
        return wire

    def _admit(self, wire: bytes, address: str) -> tuple:
        """(query, zone, None) for an allowed transfer, else (query, None, the refusal:
        b"" when nothing is to be sent)."""
        try:
            query, tsig_error = self._parse(wire)
        except dns.exception.DNSException:
            return None, None, wire[:2] + bytes((0x80 | (wire[2] & 0x79), dns.rcode.FORMERR)) \
                + bytes(8)
        if query is None:
            return None, None, b""
        if tsig_error:
            self.stats["notauth"] += 1
            log.warning("dns: transfer from %s refused: TSIG %s", address,
                        dns.rcode.to_text(tsig_error))
            return query, None, self._tsig_error(query, tsig_error)
        qname, qtype = query.question[0].name, query.question[0].rdtype
        zone = self.server.zones.get(qname)
        if zone is None or query.question[0].rdclass != dns.rdataclass.IN \
                or not self._allowed(qname, address, query):
            self.stats["refused"] += 1
            log.info("dns: %s of %s refused to %s%s", dns.rdatatype.to_text(qtype), qname, address,
                     f" (key {query.keyname})" if query.had_tsig else "")
            return query, None, self._simple(query, dns.rcode.REFUSED)
        self.stats["allowed"] += 1
        return query, zone, None

    def _content(self, query, zone, address: str) -> list | None:
        """The RRsets an allowed IXFR gets: [SOA] when the client is current, the
        increments when the history reaches its serial; None: the whole zone."""
        serial = _client_serial(query) if query.question[0].rdtype == IXFR else None
        kind = dns.rdatatype.to_text(query.question[0].rdtype)
        if serial is not None:
            if not serial_lt(serial, zone.serial):
                return [zone.soa]
            history = self.server.history
            chain = history.chain(zone, serial) if history is not None else None
            if chain and sum(diff.records for diff in chain) < zone.records:
                self.stats["incremental"] += 1
                log.info("dns: IXFR of %s serial %d to %d (%d versions) to %s", zone.origin,
                         serial, zone.serial, len(chain), address)
                return [zone.soa, *(pair for diff in chain for pair in diff.pairs()), zone.soa]
        log.info("dns: %s of %s serial %d to %s", kind, zone.origin, zone.serial, address)
        return None

    async def _stream(self, query, zone, protocol, pairs=None) -> None:
        """Write the transfer: ``pairs`` (increments), else the whole zone, whose bodies are
        rendered once per version and question."""
        transport = protocol.transport
        question = query.question[0]
        slot = (question.name.to_wire(), question.rdtype)
        versions = self._bodies.setdefault(zone, {})
        bodies = versions.get(slot) if pairs is None else None
        fresh = [] if bodies is None and pairs is None else None
        source = bodies if bodies is not None else render_bodies(
            question, _zone_pairs(zone) if pairs is None else pairs)
        key = query.keyring if query.had_tsig else None
        ctx = None
        for count, (body, records) in enumerate(source, 1):
            if fresh is not None:
                fresh.append((body, records))
            if transport.is_closing():
                return
            wire = _header(query, records) + body
            if key is not None:
                wire, ctx = _sign(wire, query, key, ctx)
            transport.write(frame(wire))
            if count % BATCH == 0:
                await asyncio.sleep(0)
                while transport.get_write_buffer_size() > BUFFER_HIGH and not transport.is_closing():
                    await asyncio.sleep(0.005)
                rearm = getattr(protocol, "_arm", None)  # the idle timer: a transfer is not idle
                if rearm is not None:
                    rearm()
        if fresh is not None:
            versions[slot] = fresh

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # ------------------------------------------------------------ internals

    def _parse(self, wire: bytes):
        """(query, tsig error): validated against the keyring; unknown keys are BADKEY."""
        def lookup(message, name):
            return self.keyring.get(name) or False  # False: parse, but do not validate

        try:
            query = dns.message.from_wire(wire, keyring=lookup)
        except dns.message.UnknownTSIGKey:
            return dns.message.from_wire(wire, keyring=lambda m, n: False), dns.rcode.BADKEY
        except dns.tsig.BadSignature:
            return dns.message.from_wire(wire, keyring=lambda m, n: False), dns.rcode.BADSIG
        except dns.tsig.BadAlgorithm:
            return dns.message.from_wire(wire, keyring=lambda m, n: False), dns.rcode.BADKEY
        except dns.tsig.BadTime:
            query = dns.message.from_wire(wire, keyring=lambda m, n: False)
            query.keyring = self.keyring[query.keyname]
            return query, dns.rcode.BADTIME
        if query.flags & dns.flags.QR or len(query.question) != 1:
            return None, 0
        if query.had_tsig and query.keyname not in self.keyring:
            return query, dns.rcode.BADKEY
        return query, 0

    def _allowed(self, zone: dns.name.Name, address: str, query) -> bool:
        signed = query.keyname.to_text().lower() if query.had_tsig else None
        for sec in self.management.secondaries_for(zone):
            if not sec.allows(address):
                continue
            if not sec.key:
                return True
            if signed and dns.name.from_text(sec.key).to_text().lower() == signed:
                return True
        return False

    def _simple(self, query, rcode: int) -> bytes:
        response = dns.message.make_response(query)
        response.set_rcode(rcode)
        return response.to_wire()

    def _tsig_error(self, query, error: int) -> bytes:
        """NOTAUTH with the TSIG error: unsigned for BADKEY/BADSIG, signed for BADTIME."""
        response = dns.message.Message(query.id)
        response.flags = dns.flags.QR | (query.flags & dns.flags.RD)
        response.set_opcode(dns.opcode.QUERY)
        response.question = list(query.question)
        response.set_rcode(dns.rcode.NOTAUTH)
        tsig = query.tsig[0]
        if error == dns.rcode.BADTIME:
            response.use_tsig(query.keyring, tsig_error=error, original_id=tsig.original_id,
                              other_data=struct.pack("!HI", 0, int(time.time())))
            response.request_mac = query.mac
        else:
            response.tsig = dns.rrset.from_rdata(query.keyname, 0, tsig.replace(
                mac=b"", error=error, other=b""))
            response.want_tsig_sign = False
        return response.to_wire()


def _client_serial(query) -> int | None:
    for rrset in query.authority:
        if rrset.rdtype == SOA and len(rrset):
            return rrset[0].serial
    return None


def _zone_pairs(zone):
    """SOA, every other RRset (:class:`~clusterkit_dns.compact.RRset`), SOA again."""
    yield zone.soa
    for key, node in zone.names.items():
        for rdtype, rrset in compact.decode_node(key, node).items():
            if rdtype != SOA or key != zone.key:
                yield rrset
    yield zone.soa


def render_bodies(question, pairs):
    """``(body, answer count)`` of each message carrying ``pairs``: the bytes after the header.

    Many RRsets per message up to :data:`MESSAGE_SIZE`; an RRset too big for a
    message of its own goes one record per RRset. The bodies depend only on
    the question and the zone, so a zone version's bodies serve every transfer.
    """
    writer, count = _writer(question), 0
    for pair in pairs:
        for part in (pair,) if _fits(pair) else _single_records(pair):
            try:
                count += writer.rrset(part)
            except TooBig:
                yield bytes(writer.buf[12:]), count
                writer, count = _writer(question), 0
                count += writer.rrset(part)
            if len(writer.buf) >= MESSAGE_SIZE:
                yield bytes(writer.buf[12:]), count
                writer, count = _writer(question), 0
    if count:
        yield bytes(writer.buf[12:]), count


def render_messages(query, bodies):
    """Complete messages: our header on each body, TSIG-signed in a chain when the query was."""
    key = query.keyring if query.had_tsig else None
    ctx = None
    for body, count in bodies:
        wire = _header(query, count) + body
        if key is not None:
            wire, ctx = _sign(wire, query, key, ctx)
        yield wire


def _header(query, count: int, additional: int = 0) -> bytes:
    flags = 0x8400 | (query.flags & dns.flags.RD)  # QR AA, opcode QUERY, RD echoed
    return struct.pack("!HHHHHH", query.id, flags, 1, count, 0, additional)


def _tsig_room(key) -> int:
    """Bytes a TSIG record signed with ``key`` takes (the algorithm's MAC at most 64)."""
    return len(key.name.to_wire()) + 10 + len(key.algorithm.to_wire()) + 16 + 64 + 6


def _writer(question) -> Writer:
    writer = Writer(LIMIT)
    writer.question(question.name.to_wire(), question.rdtype)
    return writer


def _sign(wire: bytes, query, key, ctx) -> tuple[bytes, object]:
    """The first message answers the query's MAC; the next ones chain (RFC 8945 §5.3.1)."""
    signed, _, ctx = tsig.sign(wire, key, query.id, query.mac if ctx is None else b"", ctx, True)
    return signed, ctx


def _fits(rrset) -> bool:
    return len(rrset.rdatas) < 64 or sum(map(len, rrset.rdatas)) < MESSAGE_SIZE


def _single_records(rrset):
    for rdata in rrset.rdatas:
        yield rrset._replace(rdatas=(rdata,))
