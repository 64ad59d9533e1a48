"""Zone files → immutable :class:`Zone` objects, the data the answer engine reads.

``DIR/<zone>.zone`` is the zone ``<zone>.`` in RFC 1035 master-file syntax,
read by :mod:`clusterkit_dns.masterfile` as NSD reads it (``$INCLUDE`` paths
relative to the zones directory, as NSD resolves them from its ``zonesdir``)
into wire format. :class:`_Collector` makes NSD's checks on the records. A broken file raises :class:`ZoneError` naming the file and
the line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdatatype
from dns.node import NodeKind

from clusterkit_dns import compact, masterfile
from clusterkit_dns.pacing import unpaced

SUFFIX = ".zone"
SOA, NS, RRSIG = dns.rdatatype.SOA, dns.rdatatype.NS, dns.rdatatype.RRSIG
_NS_TYPE = NS.to_bytes(2, "big")
_NO_CUTS: frozenset = frozenset()  # one for every zone without delegations


class ZoneError(Exception):
    """A zone file that cannot be served: ``path:line: message``."""

    def __init__(self, path: str, message: str, line: int | None = None):
        self.path, self.line, self.message = path, line, message
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")


@dataclass(eq=False, slots=True, weakref_slot=True)
class Zone:
    """One loaded zone, kept as bytes (see :mod:`clusterkit_dns.compact`). Never mutated
    once built: a reload builds a new one."""

    origin: dns.name.Name
    key: bytes  # the origin as a lower-cased wire name (the engine's names are such)
    path: str
    signature: tuple  # (mtime_ns, size, inode) of the file when it was read
    names: dict  # lower-cased wire name -> node bytes (b"": an empty non-terminal), file order
    cuts: frozenset  # the delegation points below the apex
    soa: compact.RRset
    ns: compact.RRset | None
    negative_soa: compact.RRset  # the SOA with TTL = min(TTL, MINIMUM) (RFC 2308)
    records: int
    wire_bytes: int  # the bytes of ``names``: keys and nodes (what the zone costs, less dicts)
    warnings: tuple = ()  # "path:line: what": served, but not as written (see _Collector)
    includes: tuple = ()  # paths of the $INCLUDE files read: a change to one reloads the zone

    @property
    def serial(self) -> int:
        return compact.soa_serial(self.soa)

    @property
    def nodes(self) -> dict:
        """A structured view built on each call, for tools and tests (the server never asks):
        lower-cased labels (:func:`~clusterkit_dns.compact.label_key`) -> {rdtype: (owner,
        Rdataset)}."""
        view = {}
        for key, node in self.names.items():
            if node:
                view[compact.label_key(key)] = {
                    rdtype: (compact.to_name(rrset.owner), compact.to_rdataset(rrset))
                    for rdtype, rrset in compact.decode_node(key, node).items()}
        return view


def zone_origin(filename: str) -> dns.name.Name | None:
    """``example.com.zone`` → ``example.com.``; None for files that are not zones."""
    base = os.path.basename(filename)
    if not base.endswith(SUFFIX) or base.startswith(".") or base == SUFFIX:
        return None
    text = base[: -len(SUFFIX)]
    try:
        if text.isascii() and "\\" not in text and text[-1] != "." and text != "@":
            return dns.name.Name(tuple(text.encode().split(b".")) + (b"",))  # from_text, faster
        return dns.name.from_text(text)
    except (dns.exception.DNSException, ValueError):
        return None


class _Collector:
    """Where the reader puts the records: per owner, per type, in file order.

    It makes NSD's checks: a CNAME with other data, two CNAMEs (or SOAs) at a
    name. Records of one RRset with different TTLs load with a warning, as in
    NSD; the RRset is served with the smallest TTL (RFC 2181 §5.2: one TTL per
    RRset, and the smallest is what a resolver must use). A record written
    twice is kept once (names in its data compared without case, as dnspython
    and NSD compare them).
    """

    def __init__(self, pace=unpaced):
        self.pace = pace
        self.warnings: list[str] = []
        # lower-cased wire name -> its node (compact.encode_single) while the name has one
        # record (most names: the bytes kept, nothing left behind to free), then
        # [owner, {rdtype: [ttl, [rdata], set | None]}, the (type, covered type) pairs seen
        # and their kinds but NEUTRAL, for the CNAME check]
        self.nodes: dict = {}

    def add(self, owner: bytes, ttl: int, rdtype: int, rdata: bytes, path: str,
            line: int) -> None:
        self.pace()
        key = owner.lower()
        entry = self.nodes.get(key)
        if entry is None:
            self.nodes[key] = compact.encode_single(owner, rdtype, ttl, rdata)
            return
        if type(entry) is bytes:
            (first, rrset), = compact.decode_node(key, entry).items()
            covered = int.from_bytes(rrset.rdatas[0][:2], "big") if first == RRSIG else 0
            pair = (first, covered)
            entry = self.nodes[key] = [rrset.owner, {first: [rrset.ttl, list(rrset.rdatas), None]},
                                       {pair}, {_kind(pair)} - {NodeKind.NEUTRAL}]
        rrsets = entry[1]
        rrset = rrsets.get(rdtype)
        covers = int.from_bytes(rdata[:2], "big") if rdtype == RRSIG else 0
        pair = (rdtype, covers)
        if pair not in entry[2]:
            kind = _kind(pair)
            if kind != NodeKind.NEUTRAL:
                if entry[3] and kind not in entry[3]:
                    raise masterfile.RecordError("CNAME and other data at the same name")
                entry[3].add(kind)
            entry[2].add(pair)
        if rrset is None:
            rrsets[rdtype] = [ttl, [rdata], None]
            return
        seen = rrset[2]
        if seen is None:
            seen = rrset[2] = {_canonical(rdtype, rd) for rd in rrset[1]}
        canonical = _canonical(rdtype, rdata)
        if dns.rdatatype.is_singleton(rdtype) and canonical not in seen:
            raise masterfile.RecordError(
                f"multiple {dns.rdatatype.to_text(rdtype)} records at the same name")
        if ttl != rrset[0]:
            self.warnings.append(
                f"{path}:{line}: {compact.to_name(owner)} TTL {ttl} does not match the TTL "
                f"{rrset[0]} of the {dns.rdatatype.to_text(rdtype)} RRset "
                f"(served with the smallest)")
            rrset[0] = min(rrset[0], ttl)
        if canonical not in seen:
            seen.add(canonical)
            rrset[1].append(rdata)


_KINDS: dict = {}  # (type, covered type) -> NodeKind: CNAME, NEUTRAL or REGULAR


def _kind(pair: tuple) -> NodeKind:
    kind = _KINDS.get(pair)
    if kind is None:
        kind = NodeKind.classify(*pair)
        if len(_KINDS) < 4096:  # covered types are the file's: bounded
            _KINDS[pair] = kind
    return kind


_NAME_AT = {dns.rdatatype.NS: 0, dns.rdatatype.CNAME: 0, dns.rdatatype.PTR: 0,
            dns.rdatatype.DNAME: 0, dns.rdatatype.MX: 2, dns.rdatatype.SRV: 6}


def _canonical(rdtype: int, rdata: bytes) -> bytes:
    """``rdata`` with the names in it lower-cased (what makes two records the same)."""
    at = _NAME_AT.get(rdtype)
    if at is not None:
        return rdata[:at] + rdata[at:].lower()
    if rdtype == SOA:
        names = compact.name_end(rdata, compact.name_end(rdata))
        return rdata[:names].lower() + rdata[names:]
    return rdata


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
    """Encode the records: one node per owner, empty non-terminals, zone cuts, negative SOA."""
    okey = origin.to_wire().lower()
    cuts: set = set()
    records = 0
    names = parsed.nodes  # encoded in place: the zone is never twice in memory
    for key, entry in names.items():
        if type(entry) is bytes:  # one record, encoded as it was read
            records += 1
            at = len(key)
            if entry[at:at + 2] == _NS_TYPE and key != okey:
                cuts.add(key)
            continue
        owner, types = entry[:2]
        names[key] = compact.encode_node(
            owner, ((rdtype, ttl, rdatas) for rdtype, (ttl, rdatas, _) in types.items()))
        records += sum(len(rrset[1]) for rrset in types.values())
        if NS in types and key != okey:
            cuts.add(key)
    for key in list(names):
        while key != okey:  # every name is at or below the apex (the reader checks)
            key = compact.parent(key)
            if key in names:
                break
            names[key] = b""
    apex = compact.decode_node(okey, names.get(okey, b""))
    if SOA not in apex:
        raise ZoneError(path, f"no SOA record at the zone apex {origin}")
    if NS not in apex:
        raise ZoneError(path, f"no NS records at the zone apex {origin}")
    soa = apex[SOA]
    negative = soa._replace(ttl=min(soa.ttl, compact.soa_minimum(soa)))
    return Zone(origin=origin, key=okey, path=path, signature=signature, names=names,
                cuts=frozenset(cuts) if cuts else _NO_CUTS, soa=soa, ns=apex[NS], negative_soa=negative,
                records=records, wire_bytes=sum(len(k) + len(v) for k, v in names.items()),
                warnings=tuple(parsed.warnings), includes=includes)
