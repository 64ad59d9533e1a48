"""The answer compiler: an (owner name, type)'s response, rendered once into wire format.

The first query for an (owner name, type) is resolved from the zones' wire
RRsets and rendered into a :class:`Template`: the response with the question
lower-cased and without what depends on the query (ID, RD, the question's
letter case, OPT), which the responder (:mod:`clusterkit_dns.responder`)
patches in, and which answers that (name, type) until the next reload. The
:class:`Writer` also writes zone transfers (:mod:`clusterkit_dns.xfr`).

The answer for a query depends only on (name, type) once the header, class
and EDNS are checked, which is what makes this sound.
"""

from __future__ import annotations

import struct

import dns.rdataclass
import dns.rdatatype

from clusterkit_dns.compact import RRset, name_end
from clusterkit_dns.engine import Answer, ZoneSet
from clusterkit_dns.pacing import unpaced

IN = dns.rdataclass.IN
TCP_MAX = 65535


_SHARED: dict = {}  # immutable header pieces, one copy each (a zone has few distinct ones)


def _shared(value: bytes | tuple):
    return _SHARED.setdefault(value, value)


class Template:
    """A rendered response minus what depends on the query (ID, RD, question case, OPT).

    Kept small: the header pieces are shared, and the answer it came from is
    not kept; the rare response that must be truncated is resolved again.
    """

    __slots__ = ("flags", "counts", "counts_opt", "body", "size", "rcode", "zone")

    def __init__(self, answer: Answer, body: bytes, counts: tuple[int, int, int]):
        aa = 0x04 if answer.aa else 0
        self.flags = _shared((_shared(bytes((0x80 | aa, answer.rcode))),
                              _shared(bytes((0x81 | aa, answer.rcode)))))
        an, ns, ar = counts
        self.counts = _shared(struct.pack("!HHHH", 1, an, ns, ar))
        self.counts_opt = _shared(struct.pack("!HHHH", 1, an, ns, ar + 1))
        self.body = body
        self.size = len(body) + 5  # + the zero byte's offset z = the response's length
        self.rcode = answer.rcode
        self.zone = answer.zone  # what a reload checks to keep the template (see carry_over)


class TooBig(Exception):
    """The record set does not fit in the size limit (it was rolled back)."""


_NAME_RDATA = frozenset((dns.rdatatype.NS, dns.rdatatype.CNAME, dns.rdatatype.PTR))
_MX, _SOA = dns.rdatatype.MX, dns.rdatatype.SOA
_RR_HEAD = struct.Struct("!HHIH")


class Writer:
    """A DNS message being written: name compression (RFC 1035 §4.1.4), RRset rollback.

    Names are wire bytes; the compression table is keyed by each lower-cased
    suffix. Names inside RDATA are compressed only for the RFC 1035 types
    (NS, CNAME, PTR, MX, SOA), as RFC 3597 §4 requires; other rdata is copied
    as stored.
    """

    __slots__ = ("buf", "table", "limit")

    def __init__(self, limit: int = TCP_MAX):
        self.buf = bytearray(12)  # the header is patched in later; offsets count from 0
        self.table: dict = {}
        self.limit = limit

    def name(self, wire: bytes) -> None:
        low = wire.lower()
        buf, table = self.buf, self.table
        at = 0
        while wire[at]:
            offset = table.get(low[at:])
            if offset is not None:
                buf += (0xC000 | offset).to_bytes(2, "big")
                return
            if len(buf) < 0x4000:
                table[low[at:]] = len(buf)
            end = at + wire[at] + 1
            buf += wire[at:end]
            at = end
        buf.append(0)

    def question(self, qname: bytes, qtype: int) -> None:
        self.name(qname)
        self.buf += struct.pack("!HH", qtype, IN)

    def rrset(self, rrset: RRset) -> int:
        """Write every record of ``rrset``; :class:`TooBig` (nothing written) past the limit."""
        buf = self.buf
        start = len(buf)
        owner, rdtype, ttl, rdatas = rrset
        compressed = rdtype in _NAME_RDATA or rdtype == _MX or rdtype == _SOA
        for rd in rdatas:
            self.name(owner)
            if not compressed:
                buf += _RR_HEAD.pack(rdtype, IN, ttl, len(rd))
                buf += rd
                continue
            buf += _RR_HEAD.pack(rdtype, IN, ttl, 0)
            at = len(buf)
            if rdtype == _MX:
                buf += rd[:2]
                self.name(rd[2:])
            elif rdtype == _SOA:
                mname = name_end(rd)
                rname = name_end(rd, mname)
                self.name(rd[:mname])
                self.name(rd[mname:rname])
                buf += rd[rname:]
            else:
                self.name(rd)
            buf[at - 2:at] = (len(buf) - at).to_bytes(2, "big")
        if len(buf) > self.limit:
            del buf[start:]
            self.table = {k: v for k, v in self.table.items() if v < start}
            raise TooBig
        return len(rdatas)


def render(answer: Answer, qname: bytes, qtype: int, limit: int = TCP_MAX) -> tuple:
    """Render ``answer`` into (body after the question, counts, truncated) within ``limit``.

    Records go in file order (NSD does not shuffle either). When the answer or
    authority section does not fit, the response is the question alone with
    TC (NSD's choice); additional records that do not fit are left out, and
    that sets TC only for a referral, whose glue is needed (RFC 9471).
    """
    w = Writer(limit)
    w.question(qname, qtype)
    start = len(w.buf)
    counts = [0, 0, 0]
    try:
        for rrset in answer.answer:
            counts[0] += w.rrset(rrset)
        for rrset in answer.authority:
            counts[1] += w.rrset(rrset)
    except TooBig:
        return b"", (0, 0, 0), True
    truncated = False
    for rrset in answer.additional:
        try:
            counts[2] += w.rrset(rrset)
        except TooBig:
            truncated = answer.referral
            break
    return bytes(w.buf[start:]), tuple(counts), truncated


def compile_answer(answer: Answer, qname: bytes, qtype: int) -> Template:
    body, counts, _ = render(answer, qname, qtype)
    return Template(answer, body, counts)


class State:
    """Everything the hot path reads, swapped as one reference on reload.

    ``cache`` maps a query's (lower-cased wire name, type) to its
    :class:`Template`, rendered from the zones the first time it is asked
    (the zones are bytes, not answers: a name never asked costs no template);
    it is emptied when full, so random names can't make it grow. ``packets``
    is a packet cache, as PowerDNS keeps one: a UDP query's bytes after its
    ID map to the response's bytes after its ID and the rcode, so a repeated
    query (the usual case: resolvers ask the same few names) costs one dict
    lookup and one concatenation. The packet cache dies with the state; of
    the templates a reload keeps only those :func:`carry_over` finds still
    true, so a reload can't serve stale answers.
    """

    __slots__ = ("zones", "cache", "packets")

    def __init__(self, zones: ZoneSet, cache: dict | None = None):
        self.zones = zones
        self.cache: dict = {} if cache is None else cache
        self.packets: dict = {}


def carry_over(old: State, zones: ZoneSet, pace=unpaced) -> dict:
    """The templates of ``old`` still true for ``zones``: those that depend on one zone,
    still served as the same object and still the one holding the name. A reload of one
    zone among many then re-renders only that zone's answers. Run it off the event loop:
    it reads a copy of the cache (one C call, atomic under the interpreter lock)."""
    kept = {}
    served = zones.zones
    moved = served.keys() != old.zones.zones.keys()  # else every name stays in its zone
    for key, template in old.cache.copy().items():
        pace()
        zone = template.zone
        if zone is not None and served.get(zone.key) is zone \
                and (not moved or zones.find(key[:-2]) is zone):
            kept[key] = template
    return kept
