"""Read a loaded :class:`~clusterkit_dns.zones.Zone` as dnspython RRsets.

The server's ``Zone`` is shaped for its answer engine (label-tuple keys,
``(owner, rdataset)`` pairs) and may change shape for speed; the management
code (listing, transfers, NOTIFY) reads it only through these functions.
"""

from __future__ import annotations

from typing import Iterator

import dns.name
import dns.rrset

from clusterkit_dns.engine import key_of


def _rrset(pair) -> dns.rrset.RRset:
    owner, rdataset = pair
    rrset = dns.rrset.RRset(owner, rdataset.rdclass, rdataset.rdtype)
    rrset.update(rdataset)
    return rrset


def rrsets(zone) -> Iterator[dns.rrset.RRset]:
    """Every RRset of the zone, in file order of owners."""
    for node in zone.nodes.values():
        for pair in node.values():
            yield _rrset(pair)


def find(zone, owner: dns.name.Name, rdtype: int) -> dns.rrset.RRset | None:
    pair = zone.nodes.get(key_of(owner), {}).get(rdtype)
    return _rrset(pair) if pair is not None else None


def soa(zone) -> dns.rrset.RRset:
    return _rrset(zone.soa)
