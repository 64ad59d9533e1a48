"""Zone files → immutable :class:`Zone` objects, the data the answer engine reads.

``DIR/<zone>.zone`` is the zone ``<zone>.`` in RFC 1035 master-file syntax,
read by :mod:`clusterkit_dns.masterfile` as NSD reads it (``$INCLUDE`` paths
relative to the zones directory, as NSD resolves them from its ``zonesdir``);
dnspython parses each record's data. :class:`_Collector` makes NSD's checks
on the records. A broken file raises :class:`ZoneError` naming the file and
the line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.node
import dns.rdataset
import dns.rdatatype

from clusterkit_dns import masterfile
from clusterkit_dns.pacing import unpaced

SUFFIX = ".zone"
SOA, NS, CNAME = dns.rdatatype.SOA, dns.rdatatype.NS, dns.rdatatype.CNAME


class ZoneError(Exception):
    """A zone file that cannot be served: ``path:line: message``."""

    def __init__(self, path: str, message: str, line: int | None = None):
        self.path, self.line, self.message = path, line, message
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")


@dataclass(eq=False)
class Zone:
    """One loaded zone. Never mutated once built: a reload builds a new one."""

    origin: dns.name.Name
    key: tuple  # the origin's lower-cased labels (see engine.key_of)
    path: str
    signature: tuple  # (mtime_ns, size, inode) of the file when it was read
    nodes: dict  # name key -> {rdtype: (owner, rdataset)}, in file order
    names: frozenset  # keys of every owner name and every empty non-terminal
    cuts: frozenset  # keys of the delegation points below the apex
    soa: tuple  # (owner, rdataset): the engine's RRset form, see engine.py
    ns: tuple | None
    negative_soa: tuple  # the SOA with TTL = min(TTL, MINIMUM) (RFC 2308)
    records: int
    warnings: tuple = ()  # "path:line: what": served, but not as written (see _Collector)
    compiled: dict = field(default_factory=dict)  # cache of compiled responses, see compiler.py
    includes: tuple = ()  # paths of the $INCLUDE files read: a change to one reloads the zone

    @property
    def serial(self) -> int:
        return self.soa[1][0].serial


def zone_origin(filename: str) -> dns.name.Name | None:
    """``example.com.zone`` → ``example.com.``; None for files that are not zones."""
    base = os.path.basename(filename)
    if not base.endswith(SUFFIX) or base.startswith(".") or base == SUFFIX:
        return None
    try:
        return dns.name.from_text(base[: -len(SUFFIX)])
    except dns.exception.DNSException:
        return None


class _Collector:
    """Where the reader puts the records: per owner, per type, in file order.

    It makes NSD's checks: a CNAME with other data, two CNAMEs (or SOAs) at a
    name (dnspython's zone would keep the last one). Records of one RRset with
    different TTLs load with a warning, as in NSD; the RRset is served with the
    smallest TTL (RFC 2181 §5.2: one TTL per RRset, and the smallest is what a
    resolver must use).
    """

    def __init__(self, pace=unpaced):
        self.pace = pace
        self.warnings: list[str] = []
        self.nodes: dict = {}   # key -> (owner Name, {(rdtype, covers): Rdataset})
        self._labels: dict = {}  # one bytes object per distinct label (most repeat)

    def add(self, name: dns.name.Name, ttl: int, rd, path: str, line: int) -> None:
        self.pace()
        labels = self._labels
        key = tuple(labels.setdefault(low, low) for low in (label.lower() for label in name.labels))
        entry = self.nodes.get(key)
        if entry is None:
            entry = self.nodes[key] = (name, {})
        rdatasets = entry[1]
        covers = rd.covers()
        rdataset = rdatasets.get((rd.rdtype, covers))
        if rdataset is None:
            kind = dns.node.NodeKind.classify(rd.rdtype, covers)
            if kind != dns.node.NodeKind.NEUTRAL and any(
                    dns.node.NodeKind.classify(t, c) not in (kind, dns.node.NodeKind.NEUTRAL)
                    for t, c in rdatasets):
                raise masterfile.RecordError("CNAME and other data at the same name")
            rdataset = rdatasets[(rd.rdtype, covers)] = dns.rdataset.Rdataset(
                rd.rdclass, rd.rdtype, covers)
        elif dns.rdatatype.is_singleton(rd.rdtype) and rd not in rdataset:
            raise masterfile.RecordError(
                f"multiple {dns.rdatatype.to_text(rd.rdtype)} records at the same name")
        elif ttl != rdataset.ttl:
            self.warnings.append(
                f"{path}:{line}: {name} TTL {ttl} does not match the TTL "
                f"{rdataset.ttl} of the {dns.rdatatype.to_text(rd.rdtype)} RRset "
                f"(served with the smallest)")
        rdataset.add(rd, ttl)


def file_signature(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def load_zone(path: str, origin: dns.name.Name | None = None, zones_dir: str | None = None,
              pace=unpaced) -> Zone:
    """Parse ``path`` into a :class:`Zone`; :class:`ZoneError` with file and line on failure.

    ``pace`` is called once per record (see :mod:`clusterkit_dns.pacing`)."""
    origin = origin or zone_origin(path)
    if origin is None:
        raise ZoneError(path, f"cannot tell the zone name from the file name (expected NAME{SUFFIX})")
    zones_dir = zones_dir or os.path.dirname(os.path.abspath(path))
    signature = file_signature(path)
    parsed = _Collector(pace)
    try:
        includes = masterfile.read(path, origin, zones_dir, parsed.add)
    except masterfile.MasterFileError as exc:
        raise ZoneError(exc.path, exc.message, exc.line) from None
    return build_zone(origin, path, signature, parsed, includes)


def build_zone(origin: dns.name.Name, path: str, signature, parsed: _Collector,
               includes: tuple = ()) -> Zone:
    """Index the records: RRsets per owner, empty non-terminals, zone cuts, negative SOA."""
    okey = tuple(label.lower() for label in origin.labels)
    depth = len(okey)
    nodes: dict = {}
    names: set = set()
    cuts: set = set()
    records = 0
    for key, (name, rdatasets) in parsed.nodes.items():
        rrsets = {}
        for (rdtype, _), rdataset in rdatasets.items():
            rrsets[rdtype] = (name, rdataset)
            records += len(rdataset)
        nodes[key] = rrsets
        if NS in rrsets and key != okey:
            cuts.add(key)
        while key not in names:
            names.add(key)
            if len(key) == depth:
                break
            key = key[1:]
    apex = nodes.get(okey, {})
    if SOA not in apex:
        raise ZoneError(path, f"no SOA record at the zone apex {origin}")
    if NS not in apex:
        raise ZoneError(path, f"no NS records at the zone apex {origin}")
    soa = apex[SOA]
    negative = soa[1].copy()
    negative.ttl = min(negative.ttl, negative[0].minimum)
    negative = (soa[0], negative)
    return Zone(origin=origin, key=okey, path=path, signature=signature, nodes=nodes,
                names=frozenset(names), cuts=frozenset(cuts), soa=soa, ns=apex[NS],
                negative_soa=negative, records=records, warnings=tuple(parsed.warnings),
                includes=includes)
