"""A zone kept as bytes: one entry per owner name, its RRsets in wire format.

A zone's ``nodes`` map each name (the lower-cased wire name) to a *node*:
the owner as first written (its letter case), then each RRset, in file
order, as ``type (2) TTL (4) length (4)`` and its records, each
``rdlength (2) rdata``; names inside the rdata are uncompressed, in the case
written. An empty non-terminal is the empty node. A 100,000-record zone is
then ~100,000 keys and as many small bytes objects: no per-record Python
object, nothing the garbage collector walks (bytes hold no references).

The engine decodes a node into :class:`RRset` tuples when it needs one;
:func:`to_rdataset` turns one into dnspython's form for the tools that want
structure (listing, editing, the IXFR journal's text).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdataset

IN = dns.rdataclass.IN
_HEAD = struct.Struct("!HIL")  # type, TTL, length of the records
_SOA_NUMBERS = struct.Struct("!IIIII")


class RRset(NamedTuple):
    """One RRset: owner (wire, its case), type, TTL, and each record's rdata (wire)."""

    owner: bytes
    rdtype: int
    ttl: int
    rdatas: tuple


def encode_node(owner: bytes, rrsets) -> bytes:
    """``owner`` and ``(rdtype, ttl, [rdata, ...])`` for each RRset → one node."""
    parts = [owner]
    for rdtype, ttl, rdatas in rrsets:
        records = b"".join(len(rd).to_bytes(2, "big") + rd for rd in rdatas)
        parts.append(_HEAD.pack(rdtype, ttl, len(records)))
        parts.append(records)
    return b"".join(parts)


def encode_single(owner: bytes, rdtype: int, ttl: int, rdata: bytes) -> bytes:
    """The node of a name with one record (most names): :func:`encode_node`, faster."""
    return b"".join((owner, _HEAD.pack(rdtype, ttl, len(rdata) + 2),
                     len(rdata).to_bytes(2, "big"), rdata))


def decode_node(key: bytes, node: bytes) -> dict:
    """A node → ``{rdtype: RRset}``, in file order (``key``: its lower-cased name)."""
    out: dict = {}
    if not node:
        return out
    at = len(key)
    owner = node[:at]
    end = len(node)
    while at < end:
        rdtype, ttl, size = _HEAD.unpack_from(node, at)
        at += 10
        stop = at + size
        rdatas = []
        while at < stop:
            length = (node[at] << 8) | node[at + 1]
            rdatas.append(node[at + 2:at + 2 + length])
            at += 2 + length
        out[rdtype] = RRset(owner, rdtype, ttl, tuple(rdatas))
    return out


def find(key: bytes, node: bytes, wanted: int) -> RRset | None:
    """The RRset of type ``wanted`` in a node, or None (decodes that RRset only)."""
    at, end = len(key), len(node)
    while at < end:
        rdtype, ttl, size = _HEAD.unpack_from(node, at)
        if rdtype == wanted:
            return decode_node(key, node[:len(key)] + node[at:at + 10 + size])[rdtype]
        at += 10 + size
    return None


# ---------------------------------------------------------------- names

def parent(name: bytes) -> bytes:
    """``www.example.com.`` → ``example.com.`` (wire); the root is its own parent."""
    return name[name[0] + 1:] if name[0] else name


def is_below(name: bytes, origin: bytes) -> bool:
    """``name`` is ``origin`` or below it (both lower-cased wire names)."""
    cut = len(name) - len(origin)
    if cut < 0 or not name.endswith(origin):
        return False
    at = 0
    while at < cut:
        at += name[at] + 1
    return at == cut


def name_end(wire: bytes, at: int = 0) -> int:
    """The offset after the uncompressed wire name starting at ``at``."""
    while wire[at]:
        at += wire[at] + 1
    return at + 1


def to_name(wire: bytes) -> dns.name.Name:
    return dns.name.from_wire(wire, 0)[0]


def label_key(wire: bytes) -> tuple:
    """The lower-cased labels of a wire name, root label included (dnspython's order)."""
    labels, at = [], 0
    while wire[at]:
        labels.append(wire[at + 1:at + 1 + wire[at]].lower())
        at += wire[at] + 1
    labels.append(b"")
    return tuple(labels)


# ------------------------------------------------------------ dnspython

def to_rdataset(rrset: RRset) -> dns.rdataset.Rdataset:
    rdatas = [dns.rdata.from_wire(IN, rrset.rdtype, rd, 0, len(rd)) for rd in rrset.rdatas]
    return dns.rdataset.from_rdata_list(rrset.ttl, rdatas)


def soa_serial(rrset: RRset) -> int:
    rdata = rrset.rdatas[0]
    return _SOA_NUMBERS.unpack_from(rdata, name_end(rdata, name_end(rdata)))[0]


def soa_minimum(rrset: RRset) -> int:
    rdata = rrset.rdatas[0]
    return _SOA_NUMBERS.unpack_from(rdata, name_end(rdata, name_end(rdata)))[4]
