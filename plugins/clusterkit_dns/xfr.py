"""Zone transfers to outside secondaries: AXFR (RFC 5936), IXFR as a full transfer (RFC 1995 §4).

The TCP listener hands every AXFR/IXFR query to :meth:`Transfers.answer`
with the peer's address. A transfer is allowed when a ``[[dns.secondary]]``
lists the zone (or every zone), the peer's address, and — if it names a key
— the query is signed with that key (TSIG, RFC 8945). Everyone else gets
REFUSED; a bad signature, unknown key or skewed clock gets NOTAUTH with the
TSIG error (BADSIG, BADKEY unsigned; BADTIME signed, RFC 8945 §5.2).

The zone sent is the :class:`~clusterkit_dns.zones.Zone` being served at that
moment (immutable), so a reload during a transfer cannot mix two versions.
Messages are packed up to :data:`MESSAGE_SIZE` and each is signed, chaining
the MACs (RFC 8945 §5.3.1).
"""

from __future__ import annotations

import logging
import struct
import time

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tsig

from clusterkit_dns import zoneview
from clusterkit_dns.mgmtconfig import Management
from clusterkit_dns.serial import serial_lt

log = logging.getLogger("clusterkit.dns.xfr")

AXFR, IXFR, SOA = dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.SOA
MESSAGE_SIZE = 16 * 1024  # bytes of records per message: many records per message (RFC 5936 §2.2)


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
        self.stats = {"allowed": 0, "refused": 0, "notauth": 0}

    def configure(self, management: Management) -> None:
        self.management = management
        self.keyring = {dns.name.from_text(k.name): k.key() for k in management.keys}

    def wants(self, wire: bytes) -> bool:
        return xfr_type(wire) != 0

    def answer(self, wire: bytes, peer) -> list[bytes]:
        """The length-framed messages answering one AXFR/IXFR query from ``peer``."""
        address = peer[0] if peer else ""
        try:
            query, tsig_error = self._parse(wire)
        except dns.exception.DNSException:
            return [frame(wire[:2] + bytes((0x80 | (wire[2] & 0x79), dns.rcode.FORMERR))
                          + bytes(8))]
        if query is None:
            return []
        if tsig_error:
            self.stats["notauth"] += 1
            log.warning("dns: transfer from %s refused: TSIG %s", address,
                        dns.rcode.to_text(tsig_error))
            return [frame(self._tsig_error(query, tsig_error))]
        qname, qtype = query.question[0].name, query.question[0].rdtype
        zone = self.server.zones.get(qname)
        if zone is None or query.question[0].rdclass != dns.rdataclass.IN \
                or not self._allowed(qname, address, query):
            self.stats["refused"] += 1
            log.info("dns: %s of %s refused to %s%s", dns.rdatatype.to_text(qtype), qname, address,
                     f" (key {query.keyname})" if query.had_tsig else "")
            return [frame(self._simple(query, dns.rcode.REFUSED))]
        self.stats["allowed"] += 1
        if qtype == IXFR and _client_serial(query) is not None \
                and not serial_lt(_client_serial(query), zone.serial):
            return [frame(self._messages(query, [zoneview.soa(zone)])[0])]  # RFC 1995 §2: up to date
        log.info("dns: %s of %s serial %d to %s", dns.rdatatype.to_text(qtype), qname, zone.serial,
                 address)
        return [frame(m) for m in self._messages(query, _zone_rrsets(zone))]

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

    def _messages(self, query, rrsets: list) -> list[bytes]:
        """Pack ``rrsets`` into responses of about MESSAGE_SIZE, each signed in a chain."""
        out, batch, size, ctx = [], [], 0, None
        for rrset in rrsets + [None]:
            weight = _size(rrset) if rrset is not None else 0
            if batch and (rrset is None or size + weight > MESSAGE_SIZE):
                response = dns.message.make_response(query)
                response.flags |= dns.flags.AA
                response.answer = batch
                out.append(response.to_wire(max_size=65535, multi=True, tsig_ctx=ctx))
                ctx = response.tsig_ctx
                batch, size = [], 0
            if rrset is not None:
                batch.append(rrset)
                size += weight
        return out


def _client_serial(query) -> int | None:
    for rrset in query.authority:
        if rrset.rdtype == SOA and len(rrset):
            return rrset[0].serial
    return None


def _zone_rrsets(zone) -> list:
    """SOA, every other RRset (one record each when an RRset alone is huge), SOA again."""
    soa = zoneview.soa(zone)
    rrsets = [soa]
    for rrset in zoneview.rrsets(zone):
        if rrset.rdtype == SOA and rrset.name == zone.origin:
            continue
        if _size(rrset) > MESSAGE_SIZE:
            for rdata in rrset:
                rrsets.append(dns.rrset.from_rdata(rrset.name, rrset.ttl, rdata))
        else:
            rrsets.append(rrset)
    rrsets.append(soa)
    return rrsets


def _size(rrset) -> int:
    """An upper bound of the RRset's wire size (no name compression counted)."""
    return sum(len(rrset.name.to_wire()) + 10 + len(rdata.to_wire()) for rdata in rrset)
