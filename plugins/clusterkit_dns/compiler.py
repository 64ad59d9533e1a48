"""The zone compiler: every (owner name, type) of a zone, rendered once into wire format.

At load time every (owner name, type) of a zone is resolved and rendered once
into a :class:`Template`: the response with the question lower-cased and
without what depends on the query (ID, RD, the question's letter case, OPT),
which the responder (:mod:`clusterkit_dns.responder`) patches in. The
:class:`Writer` also writes zone transfers (:mod:`clusterkit_dns.xfr`).

The answer for a query depends only on (name, type) once the header, class
and EDNS are checked, which is what makes this sound.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import dns.name
import dns.rdataclass
import dns.rdatatype

from clusterkit_dns.engine import Answer, ZoneSet, resolve
from clusterkit_dns.pacing import unpaced
from clusterkit_dns.zones import Zone

IN = dns.rdataclass.IN
TCP_MAX = 65535
_PROBES = (dns.rdatatype.NULL, dns.rdatatype.HINFO)  # types standing for "any type absent here"


_SHARED: dict = {}  # immutable header pieces, one copy each (a zone has few distinct ones)


def _shared(value: bytes | tuple):
    return _SHARED.setdefault(value, value)


class Template:
    """A rendered response minus what depends on the query (ID, RD, question case, OPT).

    Kept small (a 100,000-record zone has about twice as many): the header
    pieces are shared, and the answer it came from is not kept; the rare
    response that must be truncated is resolved again.
    """

    __slots__ = ("flags", "counts", "counts_opt", "body", "size", "rcode")

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


class TooBig(Exception):
    """The record set does not fit in the size limit (it was rolled back)."""


_NAME_RDATA = frozenset((dns.rdatatype.NS, dns.rdatatype.CNAME, dns.rdatatype.PTR))
_MX, _SOA = dns.rdatatype.MX, dns.rdatatype.SOA
_RR_HEAD = struct.Struct("!HHIH")
_SOA_TAIL = struct.Struct("!IIIII")


class Writer:
    """A DNS message being written: name compression (RFC 1035 §4.1.4), RRset rollback.

    dnspython's renderer builds a Name object per suffix per write; keys here
    are tuples of lower-cased labels, which makes compiling a 100,000-record
    zone several times faster. Names inside RDATA are compressed only for the
    RFC 1035 types (NS, CNAME, PTR, MX, SOA), as RFC 3597 §4 requires.
    """

    __slots__ = ("buf", "table", "limit", "lows")

    def __init__(self, limit: int = TCP_MAX, lows: dict | None = None):
        self.buf = bytearray(12)  # the header is patched in later; offsets count from 0
        self.table: dict = {}
        self.limit = limit
        self.lows = {} if lows is None else lows  # labels -> lower-cased (shared per zone)

    def name(self, name: dns.name.Name) -> None:
        labels = name.labels
        n = len(labels) - 1
        low = self.lows.get(labels)
        if low is None:
            low = self.lows[labels] = tuple(label.lower() for label in labels[:n])
        buf, table = self.buf, self.table
        for i in range(n):
            offset = table.get(low[i:])
            if offset is not None:
                buf += (0xC000 | offset).to_bytes(2, "big")
                return
            if len(buf) < 0x4000:
                table[low[i:]] = len(buf)
            buf.append(len(labels[i]))
            buf += labels[i]
        buf.append(0)

    def question(self, qname: dns.name.Name, qtype: int) -> None:
        self.name(qname)
        self.buf += struct.pack("!HH", qtype, IN)

    def rrset(self, rrset: tuple) -> int:
        """Write every record of ``(owner, rdataset)``; :class:`TooBig` (nothing written) past
        the limit."""
        buf = self.buf
        start = len(buf)
        owner, rdataset = rrset
        rdtype, rdclass, ttl = rdataset.rdtype, rdataset.rdclass, rdataset.ttl
        for rd in rdataset:
            self.name(owner)
            buf += _RR_HEAD.pack(rdtype, rdclass, ttl, 0)
            at = len(buf)
            if rdtype in _NAME_RDATA:
                self.name(rd.target)
            elif rdtype == _MX:
                buf += rd.preference.to_bytes(2, "big")
                self.name(rd.exchange)
            elif rdtype == _SOA:
                self.name(rd.mname)
                self.name(rd.rname)
                buf += _SOA_TAIL.pack(rd.serial, rd.refresh, rd.retry, rd.expire, rd.minimum)
            else:
                buf += rd.to_wire()
            buf[at - 2:at] = (len(buf) - at).to_bytes(2, "big")
        if len(buf) > self.limit:
            del buf[start:]
            self.table = {k: v for k, v in self.table.items() if v < start}
            raise TooBig
        return len(rdataset)


def render(answer: Answer, qname: dns.name.Name, qtype: int, limit: int = TCP_MAX,
           lows: dict | None = None) -> tuple:
    """Render ``answer`` into (body after the question, counts, truncated) within ``limit``.

    Records go in file order (NSD does not shuffle either). When the answer or
    authority section does not fit, the response is the question alone with
    TC (NSD's choice); additional records that do not fit are left out, and
    that sets TC only for a referral, whose glue is needed (RFC 9471).
    """
    w = Writer(limit, lows)
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


def compile_answer(answer: Answer, qname: dns.name.Name, qtype: int,
                   lows: dict | None = None) -> Template:
    body, counts, _ = render(answer, qname, qtype, lows=lows)
    return Template(answer, body, counts)


class Compiled(NamedTuple):
    """One zone's templates: by (wire name, type), by wire name (its default), and the
    bytes they keep (keys and bodies; the shared header pieces are a few per server)."""

    exact: dict
    default: dict
    wire_bytes: int


def compile_zone(zone: Zone, inner: tuple, pace=unpaced) -> Compiled:
    """Templates for every (name, type) of ``zone``, and each name's default (NODATA/referral).

    Names inside a more specific served zone (``inner``, keys) are left to it.
    CNAME owners get no default: the answer follows the chain, per type,
    possibly into other zones, so it goes through the general path (and its
    cache).
    """
    cached = zone.compiled.get(inner)
    if cached is not None:
        return cached
    alone = ZoneSet({zone.origin: zone})
    exact: dict = {}
    default: dict = {}
    same: dict = {}  # identical responses share one Template (most NODATA ones are alike)
    lows: dict = {}  # each name's lower-cased labels, for every answer's writer

    def compiled(name, rdtype) -> Template:
        t = compile_answer(resolve(alone, name, rdtype), name, rdtype, lows)
        return same.setdefault((t.flags, t.counts, t.body), t)

    for key in zone.names:
        pace()
        if inner and any(key[len(key) - len(o):] == o for o in inner if len(o) <= len(key)):
            continue
        name = dns.name.Name(key)
        wire_name = name.to_wire()
        node = zone.nodes.get(key, {})
        for rdtype in node:
            exact[wire_name + struct.pack("!H", rdtype)] = compiled(name, rdtype)
        if dns.rdatatype.CNAME not in node:
            default[wire_name] = compiled(name, next(t for t in _PROBES if t not in node))
    bodies = {id(t): len(t.body) for t in (*exact.values(), *default.values())}
    size = sum(map(len, exact)) + sum(map(len, default)) + sum(bodies.values())
    zone.compiled[inner] = Compiled(exact, default, size)
    return zone.compiled[inner]


class State:
    """Everything the hot path reads, swapped as one reference on reload.

    ``packets`` is a packet cache, as PowerDNS keeps one: a UDP query's bytes
    after its ID map to the response's bytes after its ID and the rcode. The
    template path's answer depends on nothing else, so a repeated query (the
    usual case: resolvers ask the same few names) costs one dict lookup and
    one concatenation. It dies with the state, so a reload can't serve stale
    answers; it is emptied when full, so random names can't make it grow.
    ``parts`` maps each zone's key to its own :class:`Compiled`, merged into
    ``exact`` and ``default``: what :func:`patch_state` takes out again.
    """

    __slots__ = ("zones", "exact", "default", "cache", "packets", "parts", "inner")

    def __init__(self, zones: ZoneSet, exact: dict, default: dict, parts: dict,
                 inner: dict | None = None):
        self.zones, self.exact, self.default, self.parts = zones, exact, default, parts
        self.inner = inner if inner is not None else inner_zones(zones.zones)  # see inner_zones
        self.cache: dict = {}
        self.packets: dict = {}


def inner_zones(keys) -> dict:
    """Zone key -> the sorted keys of the served zones below it (a walk up each name: no
    pairwise comparison, 10,000 zones cost 10,000 short walks)."""
    served = set(keys)
    inner: dict = {key: [] for key in served}
    for key in served:
        for i in range(1, len(key)):
            if key[i:] in served:
                inner[key[i:]].append(key)
    return {key: tuple(sorted(below)) for key, below in inner.items()}


def build_state(zones: ZoneSet, pace=unpaced) -> State:
    """Compile (or reuse) each zone's templates and merge them: run it off the event loop,
    with a :class:`~clusterkit_dns.pacing.Pacer`."""
    exact: dict = {}
    default: dict = {}
    parts: dict = {}
    inner = inner_zones(zones.zones)
    for key, zone in zones.zones.items():
        pace()
        e, d, _ = parts[key] = compile_zone(zone, inner[key], pace)
        exact.update(e)
        default.update(d)
    return State(zones, exact, default, parts, inner)


def compile_changes(zones: ZoneSet, state: State, pace=unpaced) -> tuple[dict, dict]:
    """(key -> :class:`Compiled` of every zone whose templates differ from ``state``'s,
    the nesting of ``zones``): the zones new or replaced, and the served zones above a zone
    added or removed (their names below it change hands). Run it off the event loop."""
    old = state.zones.zones
    moved = set(zones.zones).symmetric_difference(old)
    inner = inner_zones(zones.zones) if moved else state.inner
    above = {m[i:] for m in moved for i in range(1, len(m))}
    return {key: compile_zone(zone, inner[key], pace) for key, zone in zones.zones.items()
            if old.get(key) is not zone or key in above}, inner


def patch_state(state: State, zones: ZoneSet, changed: dict, inner: dict) -> State:
    """The state for ``zones``: ``state``'s merged dicts with the zones gone or changed
    taken out and ``changed`` put in. It mutates them, so call it on the event loop (one
    synchronous step: a query sees the old zone or the new, never half), and install the
    result at once. Costs the size of the zones changed, not of all the zones."""
    exact, default, parts = state.exact, state.default, dict(state.parts)
    for key in [k for k in parts if k not in zones.zones or k in changed]:
        e, d, _ = parts.pop(key)
        for merged, own in ((exact, e), (default, d)):
            for k, template in own.items():
                if merged.get(k) is template:  # a key is one zone's (inner names are left out)
                    del merged[k]
    for key, part in changed.items():
        parts[key] = part
        exact.update(part.exact)
        default.update(part.default)
    return State(zones, exact, default, parts, inner)
