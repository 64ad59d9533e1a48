"""The answer engine: (zones, qname, qtype) → what an authoritative server says. No I/O.

RFC 1034 §4.3.2 with the later corrections: RFC 2308 negative answers (SOA in
authority, TTL = min(SOA TTL, MINIMUM)), RFC 4592 wildcards (closest encloser,
empty non-terminals block them), RFC 6604 CNAME chains (rcode of the last
name), RFC 8482 ANY (one RRset). Where the RFCs leave a choice, we answer as
NSD does, so that the two compare equal in the equivalence test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from clusterkit_dns.zones import Zone

A, AAAA, NS, CNAME, SOA = (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.NS,
                           dns.rdatatype.CNAME, dns.rdatatype.SOA)
MX, SRV, DS, ANY = dns.rdatatype.MX, dns.rdatatype.SRV, dns.rdatatype.DS, dns.rdatatype.ANY
NOERROR, NXDOMAIN, REFUSED = dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.REFUSED
WILDCARD = b"*"
MAX_CHAIN = 12  # CNAMEs followed before giving up (NSD follows a few; loops are cut earlier)
ADDRESS_TYPES = (A, AAAA)


@dataclass
class Answer:
    """The content of a response, before rendering."""

    rcode: int = NOERROR
    aa: bool = True
    answer: list = field(default_factory=list)
    authority: list = field(default_factory=list)
    additional: list = field(default_factory=list)
    referral: bool = False


class ZoneSet:
    """The zones one server answers for; immutable, swapped whole on reload."""

    def __init__(self, zones: dict):
        self.zones: dict[dns.name.Name, Zone] = dict(zones)
        self.depth = max((len(o) for o in self.zones), default=0)

    def find(self, qname: dns.name.Name) -> Zone | None:
        """The most specific served zone containing ``qname``."""
        name = qname
        while True:
            zone = self.zones.get(name)
            if zone is not None:
                return zone
            if len(name.labels) <= 1:
                return None
            name = name.parent()


def resolve(zones: ZoneSet, qname: dns.name.Name, qtype: int) -> Answer:
    """Answer ``qname``/``qtype`` (class IN) from ``zones``."""
    zone = zones.find(qname)
    if zone is None:
        return Answer(rcode=REFUSED, aa=False)
    if qtype == DS and qname == zone.origin and len(qname.labels) > 1:
        parent = zones.find(qname.parent())  # DS lives on the parent side of the cut
        if parent is not None:
            if qname not in parent.names:  # the child's apex exists, whatever the parent says
                return Answer(authority=[parent.negative_soa])
            zone = parent
    result = Answer()
    _lookup(zones, zone, qname, qtype, result, [])
    return result


def _lookup(zones: ZoneSet, zone: Zone, qname, qtype, result: Answer, chain: list) -> None:
    cut = _find_cut(zone, qname, qtype)
    if cut is not None:
        _referral(zone, cut, result)
        return
    node = zone.nodes.get(qname)
    owner = qname
    if node is None:
        if qname in zone.names:  # an empty non-terminal: the name exists, no data
            _nodata(zone, result)
            return
        node = _wildcard(zone, qname)
        if node is None:
            result.rcode = NXDOMAIN
            result.authority.append(zone.negative_soa)
            return
    if qtype == ANY:  # RFC 8482: one RRset, as NSD does (the first one of the name)
        rrset = next(iter(node.values()))
        result.answer.append(_owned(rrset, owner))
        return
    rrset = node.get(qtype)
    if rrset is not None:
        result.answer.append(_owned(rrset, owner))
        if qtype != DS:  # NSD adds nothing to a DS answer: it belongs to the parent side
            _positive_extras(zone, result, qtype == NS and qname == zone.origin)
        return
    cname = node.get(CNAME)
    if cname is None:
        _nodata(zone, result)
        return
    result.answer.append(_owned(cname, owner))
    chain.append(qname)
    target = cname[0].target
    if target in chain or len(chain) >= MAX_CHAIN:
        return  # a loop: the chain so far, no authority (NSD's answer)
    next_zone = zones.find(target)
    if next_zone is None:
        return  # leaves what we serve: the resolver follows it
    _lookup(zones, next_zone, target, qtype, result, chain)


def _find_cut(zone: Zone, qname, qtype) -> dns.name.Name | None:
    """The delegation point at or above ``qname`` (DS at the cut itself is ours)."""
    if not zone.cuts:
        return None
    total = len(qname.labels)
    for depth in range(len(zone.origin.labels) + 1, total + 1):
        name = qname if depth == total else qname.split(depth)[1]
        if name in zone.cuts:
            if name == qname and qtype == DS:
                return None
            return name
    return None


def _wildcard(zone: Zone, qname) -> dict | None:
    """RFC 4592: the ``*`` child of the closest encloser, if any."""
    name = qname.parent()
    while name not in zone.names:
        name = name.parent()
    return zone.nodes.get(dns.name.Name((WILDCARD,) + name.labels))


def _owned(rrset: dns.rrset.RRset, owner) -> dns.rrset.RRset:
    if rrset.name == owner:
        return rrset
    copy = dns.rrset.RRset(owner, rrset.rdclass, rrset.rdtype)
    copy.update(rrset)
    return copy


def _nodata(zone: Zone, result: Answer) -> None:
    result.authority.append(zone.negative_soa)


def _referral(zone: Zone, cut, result: Answer) -> None:
    ns = zone.nodes[cut][NS]
    result.aa = False
    result.referral = True
    result.authority.append(ns)
    _add_addresses(zone, result, [r.target for r in ns], glue=True)


def _positive_extras(zone: Zone, result: Answer, apex_ns: bool) -> None:
    """NSD's additional section: addresses of NS/MX/SRV targets, the zone's NS in authority."""
    targets = []
    for rrset in result.answer:
        if rrset.rdtype in (NS, MX, SRV) and rrset.name.is_subdomain(zone.origin):
            targets += [_target(r) for r in rrset]
    if not apex_ns and zone.ns is not None:
        result.authority.append(zone.ns)
        targets += [r.target for r in zone.ns]
    _add_addresses(zone, result, targets)


def _target(rdata) -> dns.name.Name:
    return rdata.exchange if rdata.rdtype == MX else rdata.target


def _add_addresses(zone: Zone, result: Answer, targets, glue: bool = False) -> None:
    present = {(r.name, r.rdtype) for r in result.answer}
    seen = set()
    for target in targets:
        if target in seen or not target.is_subdomain(zone.origin):
            continue
        seen.add(target)
        node = zone.nodes.get(target)
        if node is None:
            if glue or target in zone.names or _find_cut(zone, target, A) is not None:
                continue
            node = _wildcard(zone, target)
            if node is None:
                continue
        elif not glue and _find_cut(zone, target, A) is not None:
            continue  # data below a cut is only glue for a referral
        for rdtype in ADDRESS_TYPES:
            rrset = node.get(rdtype)
            if rrset is not None and (target, rdtype) not in present:
                result.additional.append(_owned(rrset, target))
