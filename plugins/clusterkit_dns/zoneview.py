"""Read a loaded :class:`~clusterkit_dns.zones.Zone` as dnspython RRsets.

The server keeps a zone as bytes (:mod:`clusterkit_dns.compact`), shaped for
its answer engine; the management code (listing, editing, NOTIFY) reads it
only through these functions, which build dnspython objects on demand.
"""

from __future__ import annotations

from typing import Iterator

import dns.name
import dns.rrset

from clusterkit_dns import compact


def _rrset(rrset: compact.RRset) -> dns.rrset.RRset:
    out = dns.rrset.RRset(compact.to_name(rrset.owner), compact.IN, rrset.rdtype)
    out.update(compact.to_rdataset(rrset))
    return out


def rrsets(zone) -> Iterator[dns.rrset.RRset]:
    """Every RRset of the zone, in file order of owners."""
    for key, node in zone.names.items():
        for rrset in compact.decode_node(key, node).values():
            yield _rrset(rrset)


def find(zone, owner: dns.name.Name, rdtype: int) -> dns.rrset.RRset | None:
    key = owner.to_wire().lower()
    rrset = compact.find(key, zone.names.get(key, b""), rdtype)
    return _rrset(rrset) if rrset is not None else None


def soa(zone) -> dns.rrset.RRset:
    return _rrset(zone.soa)
