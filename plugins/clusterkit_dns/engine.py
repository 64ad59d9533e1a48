"""The answer engine: (zones, qname, qtype) → what an authoritative server says. No I/O.

RFC 1034 §4.3.2 with the later corrections: RFC 2308 negative answers (SOA in
authority, TTL = min(SOA TTL, MINIMUM)), RFC 4592 wildcards (closest encloser,
empty non-terminals block them), RFC 6604 CNAME chains (rcode of the last
name), RFC 8482 ANY (one RRset). Where the RFCs leave a choice, we answer as
NSD does, so that the two compare equal in the equivalence test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dns.rcode
import dns.rdatatype

from clusterkit_dns import compact
from clusterkit_dns.zones import Zone

A, AAAA, NS, CNAME = dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.NS, dns.rdatatype.CNAME
MX, SRV, DS, ANY = dns.rdatatype.MX, dns.rdatatype.SRV, dns.rdatatype.DS, dns.rdatatype.ANY
NOERROR, NXDOMAIN, REFUSED = dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.REFUSED
WILDCARD = b"\x01*"
MAX_CHAIN = 12  # CNAMEs followed before giving up (NSD follows a few; loops are cut earlier)
ADDRESS_TYPES = (A, AAAA)
ANY_PREFERRED = frozenset((A, AAAA, dns.rdatatype.SOA, MX, dns.rdatatype.PTR))
ANY_UNPOPULAR = frozenset((dns.rdatatype.DNSKEY, dns.rdatatype.RRSIG, dns.rdatatype.NSEC))


@dataclass
class Answer:
    """The content of a response, before rendering.

    Sections are lists of :class:`~clusterkit_dns.compact.RRset`, decoded from
    the zone's nodes (a wildcard answer's owner is the query name).
    """

    rcode: int = NOERROR
    aa: bool = True
    answer: list = field(default_factory=list)
    authority: list = field(default_factory=list)
    additional: list = field(default_factory=list)
    referral: bool = False
    zone: Zone | None = None  # the one zone the answer depends on, when there is one


class ZoneSet:
    """The zones one server answers for; immutable, swapped whole on reload."""

    def __init__(self, zones: dict):
        self.zones: dict[bytes, Zone] = {zone.key: zone for zone in zones.values()}

    def find(self, qkey: bytes) -> Zone | None:
        """The most specific served zone containing the name ``qkey`` (lower-cased wire)."""
        zones = self.zones
        at = 0
        while True:
            zone = zones.get(qkey[at:] if at else qkey)
            if zone is not None:
                return zone
            if not qkey[at]:
                return None
            at += qkey[at] + 1


def resolve(zones: ZoneSet, qname: bytes, qtype: int) -> Answer:
    """Answer ``qname`` (a wire name) / ``qtype`` (class IN) from ``zones``."""
    qkey = qname.lower()
    zone = zones.find(qkey)
    if zone is None:
        return Answer(rcode=REFUSED, aa=False)
    alone = True
    if qtype == DS and qkey == zone.key and len(qkey) > 1:
        parent = zones.find(compact.parent(qkey))  # DS lives on the parent side of the cut
        if parent is not None:
            if qkey not in parent.names:  # the child's apex exists, whatever the parent says
                return Answer(authority=[parent.negative_soa])
            zone, alone = parent, False
    result = Answer()
    chain: list = []
    _lookup(zones, zone, qname, qkey, qtype, result, chain)
    if alone and not chain:  # no CNAME followed: the answer is this zone's alone
        result.zone = zone
    return result


def _lookup(zones: ZoneSet, zone: Zone, qname, qkey, qtype, result: Answer, chain: list) -> None:
    cut = _find_cut(zone, qkey, qtype)
    if cut is not None:
        _referral(zone, cut, result)
        return
    node = zone.names.get(qkey)
    synthesized = node is None
    if node is None:
        node = _wildcard(zone, qkey)
        if node is None:
            result.rcode = NXDOMAIN
            result.authority.append(zone.negative_soa)
            return
    elif not node:  # an empty non-terminal: the name exists, no data
        _nodata(zone, result)
        return
    rrsets = compact.decode_node(node[0], node[1]) if synthesized else \
        compact.decode_node(qkey, node)
    if qtype == ANY:  # its targets' addresses, but no NS in authority (NSD)
        result.answer.append(_owned(_any_choice(rrsets), qname, synthesized))
        _positive_extras(zone, result, authority=False)
        return
    rrset = rrsets.get(qtype)
    if rrset is not None:
        result.answer.append(_owned(rrset, qname, synthesized))
        if qtype != DS:  # NSD adds nothing to a DS answer: it belongs to the parent side
            _positive_extras(zone, result, authority=not (qtype == NS and qkey == zone.key))
        return
    cname = rrsets.get(CNAME)
    if cname is None:
        _nodata(zone, result)
        return
    result.answer.append(_owned(cname, qname, synthesized))
    chain.append(qkey)
    target = cname.rdatas[0]
    tkey = target.lower()
    if tkey in chain or len(chain) >= MAX_CHAIN:
        return  # a loop: the chain so far, no authority (NSD's answer)
    next_zone = zones.find(tkey)
    if next_zone is None:
        return  # leaves what we serve: the resolver follows it
    _lookup(zones, next_zone, target, tkey, qtype, result, chain)


def _any_choice(rrsets: dict) -> compact.RRset:
    """RFC 8482 §4.1: one RRset. NSD's choice: the first small, popular one (A, AAAA, SOA,
    MX, PTR) in file order, else the last other one, big DNSSEC types last of all."""
    normal = unpopular = None
    for rdtype, rrset in rrsets.items():
        if rdtype in ANY_PREFERRED:
            return rrset
        if rdtype in ANY_UNPOPULAR:
            unpopular = rrset
        else:
            normal = rrset
    return normal or unpopular


def _find_cut(zone: Zone, qkey: bytes, qtype) -> bytes | None:
    """The delegation point at or above ``qkey`` (DS at the cut itself is ours)."""
    cuts = zone.cuts
    if not cuts:
        return None
    found = None
    name, top = qkey, len(zone.key)
    if qtype == DS:  # skip the name itself
        name = compact.parent(name)
    while len(name) > top:  # from the name up: the highest cut is the one that counts
        if name in cuts:
            found = name
        name = compact.parent(name)
    return found


def _wildcard(zone: Zone, qkey: bytes) -> tuple | None:
    """RFC 4592: the ``*`` child of the closest encloser, if any: (its key, its node)."""
    name = compact.parent(qkey)
    while name not in zone.names:
        name = compact.parent(name)
    key = WILDCARD + name
    node = zone.names.get(key)
    return (key, node) if node else None


def _owned(rrset: compact.RRset, owner: bytes, synthesized: bool) -> compact.RRset:
    """``rrset`` itself, or, synthesized from a wildcard, the same data owned by ``owner``."""
    return rrset._replace(owner=owner) if synthesized else rrset


def _nodata(zone: Zone, result: Answer) -> None:
    result.authority.append(zone.negative_soa)


def _referral(zone: Zone, cut: bytes, result: Answer) -> None:
    ns = compact.find(cut, zone.names[cut], NS)
    if not result.answer:  # after a CNAME of ours the answer stays authoritative (NSD)
        result.aa = False
    result.referral = True
    result.authority.append(ns)
    _add_addresses(zone, result, ns.rdatas, glue=True)


def _positive_extras(zone: Zone, result: Answer, authority: bool) -> None:
    """NSD's additional section: addresses of NS/MX/SRV targets, the zone's NS in authority."""
    targets = []
    for rrset in result.answer:
        at = _TARGET_AT.get(rrset.rdtype)
        if at is not None and compact.is_below(rrset.owner.lower(), zone.key):
            targets += [rd[at:] for rd in rrset.rdatas]
    if authority and zone.ns is not None:
        result.authority.append(zone.ns)
        targets += zone.ns.rdatas
    _add_addresses(zone, result, targets)


_TARGET_AT = {NS: 0, MX: 2, SRV: 6}  # where the target name starts in the rdata


def _add_addresses(zone: Zone, result: Answer, targets, glue: bool = False) -> None:
    present = {(rrset.owner.lower(), rrset.rdtype) for rrset in result.answer}
    seen = set()
    for target in targets:
        tkey = target.lower()
        if tkey in seen or not compact.is_below(tkey, zone.key):
            continue
        seen.add(tkey)
        node = zone.names.get(tkey)
        synthesized = node is None
        if node is None:
            if glue or _find_cut(zone, tkey, A) is not None:
                continue
            found = _wildcard(zone, tkey)
            if found is None:
                continue
            rrsets = compact.decode_node(*found)
        elif not node:
            continue  # an empty non-terminal
        elif not glue and _find_cut(zone, tkey, A) is not None:
            continue  # data below a cut is only glue for a referral
        else:
            rrsets = compact.decode_node(tkey, node)
        for rdtype in ADDRESS_TYPES:
            rrset = rrsets.get(rdtype)
            if rrset is not None and (tkey, rdtype) not in present:
                result.additional.append(_owned(rrset, target, synthesized))
