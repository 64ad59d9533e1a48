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

from clusterkit_dns.zones import Zone

A, AAAA, NS, CNAME = dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.NS, dns.rdatatype.CNAME
MX, SRV, DS, ANY = dns.rdatatype.MX, dns.rdatatype.SRV, dns.rdatatype.DS, dns.rdatatype.ANY
NOERROR, NXDOMAIN, REFUSED = dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.REFUSED
WILDCARD = b"*"
MAX_CHAIN = 12  # CNAMEs followed before giving up (NSD follows a few; loops are cut earlier)
ADDRESS_TYPES = (A, AAAA)
ANY_PREFERRED = frozenset((A, AAAA, dns.rdatatype.SOA, MX, dns.rdatatype.PTR))
ANY_UNPOPULAR = frozenset((dns.rdatatype.DNSKEY, dns.rdatatype.RRSIG, dns.rdatatype.NSEC))


@dataclass
class Answer:
    """The content of a response, before rendering.

    Sections are lists of RRsets as ``(owner, rdataset)`` pairs: the zone's own
    rdatasets, shared, never copied (a wildcard answer pairs them with the
    query name).
    """

    rcode: int = NOERROR
    aa: bool = True
    answer: list = field(default_factory=list)
    authority: list = field(default_factory=list)
    additional: list = field(default_factory=list)
    referral: bool = False


def key_of(name: dns.name.Name) -> tuple:
    """A name as a tuple of lower-cased labels (root label included): hashed and compared
    by C code, unlike dnspython's case-insensitive Name, which is what the engine needs."""
    return tuple(label.lower() for label in name.labels)


class ZoneSet:
    """The zones one server answers for; immutable, swapped whole on reload."""

    def __init__(self, zones: dict):
        self.zones: dict[tuple, Zone] = {zone.key: zone for zone in zones.values()}

    def find(self, qkey: tuple) -> Zone | None:
        """The most specific served zone containing the name ``qkey``."""
        zones = self.zones
        for i in range(len(qkey)):
            zone = zones.get(qkey[i:])
            if zone is not None:
                return zone
        return None


def resolve(zones: ZoneSet, qname: dns.name.Name, qtype: int) -> Answer:
    """Answer ``qname``/``qtype`` (class IN) from ``zones``."""
    qkey = key_of(qname)
    zone = zones.find(qkey)
    if zone is None:
        return Answer(rcode=REFUSED, aa=False)
    if qtype == DS and qkey == zone.key and len(qkey) > 1:
        parent = zones.find(qkey[1:])  # DS lives on the parent side of the cut
        if parent is not None:
            if qkey not in parent.names:  # the child's apex exists, whatever the parent says
                return Answer(authority=[parent.negative_soa])
            zone = parent
    result = Answer()
    _lookup(zones, zone, qname, qkey, qtype, result, [])
    return result


def _lookup(zones: ZoneSet, zone: Zone, qname, qkey, qtype, result: Answer, chain: list) -> None:
    cut = _find_cut(zone, qkey, qtype)
    if cut is not None:
        _referral(zone, cut, result)
        return
    node = zone.nodes.get(qkey)
    synthesized = node is None
    if node is None:
        if qkey in zone.names:  # an empty non-terminal: the name exists, no data
            _nodata(zone, result)
            return
        node = _wildcard(zone, qkey)
        if node is None:
            result.rcode = NXDOMAIN
            result.authority.append(zone.negative_soa)
            return
    if qtype == ANY:  # its targets' addresses, but no NS in authority (NSD)
        result.answer.append(_owned(_any_choice(node), qname, synthesized))
        _positive_extras(zone, result, authority=False)
        return
    rrset = node.get(qtype)
    if rrset is not None:
        result.answer.append(_owned(rrset, qname, synthesized))
        if qtype != DS:  # NSD adds nothing to a DS answer: it belongs to the parent side
            _positive_extras(zone, result, authority=not (qtype == NS and qkey == zone.key))
        return
    cname = node.get(CNAME)
    if cname is None:
        _nodata(zone, result)
        return
    result.answer.append(_owned(cname, qname, synthesized))
    chain.append(qkey)
    target = cname[1][0].target
    tkey = key_of(target)
    if tkey in chain or len(chain) >= MAX_CHAIN:
        return  # a loop: the chain so far, no authority (NSD's answer)
    next_zone = zones.find(tkey)
    if next_zone is None:
        return  # leaves what we serve: the resolver follows it
    _lookup(zones, next_zone, target, tkey, qtype, result, chain)


def _any_choice(node: dict) -> tuple:
    """RFC 8482 §4.1: one RRset. NSD's choice: the first small, popular one (A, AAAA, SOA,
    MX, PTR) in file order, else the last other one, big DNSSEC types last of all."""
    normal = unpopular = None
    for rdtype, rrset in node.items():
        if rdtype in ANY_PREFERRED:
            return rrset
        if rdtype in ANY_UNPOPULAR:
            unpopular = rrset
        else:
            normal = rrset
    return normal or unpopular


def _find_cut(zone: Zone, qkey: tuple, qtype) -> tuple | None:
    """The delegation point at or above ``qkey`` (DS at the cut itself is ours)."""
    if not zone.cuts:
        return None
    total = len(qkey)
    for depth in range(len(zone.key) + 1, total + 1):
        name = qkey[total - depth:]
        if name in zone.cuts:
            if depth == total and qtype == DS:
                return None
            return name
    return None


def _wildcard(zone: Zone, qkey: tuple) -> dict | None:
    """RFC 4592: the ``*`` child of the closest encloser, if any."""
    name = qkey[1:]
    while name not in zone.names:
        name = name[1:]
    return zone.nodes.get((WILDCARD,) + name)


def _owned(rrset: tuple, owner: dns.name.Name, synthesized: bool) -> tuple:
    """``rrset`` itself, or, synthesized from a wildcard, the same data owned by ``owner``."""
    return (owner, rrset[1]) if synthesized else rrset


def _nodata(zone: Zone, result: Answer) -> None:
    result.authority.append(zone.negative_soa)


def _referral(zone: Zone, cut: tuple, result: Answer) -> None:
    ns = zone.nodes[cut][NS]
    if not result.answer:  # after a CNAME of ours the answer stays authoritative (NSD)
        result.aa = False
    result.referral = True
    result.authority.append(ns)
    _add_addresses(zone, result, [r.target for r in ns[1]], glue=True)


def _positive_extras(zone: Zone, result: Answer, authority: bool) -> None:
    """NSD's additional section: addresses of NS/MX/SRV targets, the zone's NS in authority."""
    targets = []
    for owner, rdataset in result.answer:
        if rdataset.rdtype in (NS, MX, SRV) and _inside(key_of(owner), zone.key):
            targets += [_target(r) for r in rdataset]
    if authority and zone.ns is not None:
        result.authority.append(zone.ns)
        targets += [r.target for r in zone.ns[1]]
    _add_addresses(zone, result, targets)


def _inside(key: tuple, origin: tuple) -> bool:
    return len(key) >= len(origin) and key[len(key) - len(origin):] == origin


def _target(rdata) -> dns.name.Name:
    return rdata.exchange if rdata.rdtype == MX else rdata.target


def _add_addresses(zone: Zone, result: Answer, targets, glue: bool = False) -> None:
    present = {(key_of(owner), rdataset.rdtype) for owner, rdataset in result.answer}
    seen = set()
    for target in targets:
        tkey = key_of(target)
        if tkey in seen or not _inside(tkey, zone.key):
            continue
        seen.add(tkey)
        node = zone.nodes.get(tkey)
        synthesized = node is None
        if node is None:
            if glue or tkey in zone.names or _find_cut(zone, tkey, A) is not None:
                continue
            node = _wildcard(zone, tkey)
            if node is None:
                continue
        elif not glue and _find_cut(zone, tkey, A) is not None:
            continue  # data below a cut is only glue for a referral
        for rdtype in ADDRESS_TYPES:
            rrset = node.get(rdtype)
            if rrset is not None and (tkey, rdtype) not in present:
                result.additional.append(_owned(rrset, target, synthesized))
