"""Append a TSIG record (RFC 8945) to a message we rendered ourselves.

dnspython signs the messages it renders; transfers and NOTIFY are written
with our own writer (speed, uncompressed SOA for NSD), so the signature is
computed here with ``dns.tsig.sign`` over the finished bytes and appended,
ARCOUNT raised by one. ``ctx`` chains the MACs of a multi-message transfer
(RFC 8945 §5.3.1).
"""

from __future__ import annotations

import struct
import time

import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TSIG
import dns.tsig

FUDGE = 300


def sign(wire: bytes, key: dns.tsig.Key, original_id: int, request_mac: bytes = b"",
         ctx=None, multi: bool = False) -> tuple[bytes, bytes, object]:
    """(signed wire, its MAC, the context for the next message of a sequence)."""
    blank = dns.rdtypes.ANY.TSIG.TSIG(dns.rdataclass.ANY, dns.rdatatype.TSIG, key.algorithm, 0,
                                      FUDGE, b"", original_id, 0, b"")
    rdata, ctx = dns.tsig.sign(wire, key, blank, int(time.time()), request_mac or None, ctx, multi)
    rd = rdata.to_wire()
    record = key.name.to_wire() + struct.pack("!HHIH", dns.rdatatype.TSIG, dns.rdataclass.ANY, 0,
                                              len(rd)) + rd
    arcount = struct.unpack_from("!H", wire, 10)[0] + 1
    return wire[:10] + struct.pack("!H", arcount) + wire[12:] + record, rdata.mac, ctx
