"""The responder: query bytes in, response bytes out, from the compiled templates.

On the way out only the ID, the RD bit, the question as received (its letter
case: compression pointers into it stay valid because its length is the
same) and the OPT record are patched into a template of
:mod:`clusterkit_dns.compiler`. A query whose template is not there yet
(the first for its name and type since the last reload), and everything
else (truncation, EDNS errors, other classes, malformed packets), takes the
general path, which renders the template the next such query finds.
"""

from __future__ import annotations

import logging
import struct
from dataclasses import dataclass

import dns.rcode
import dns.rdataclass
import dns.rdatatype

from clusterkit_dns.compact import to_name
from clusterkit_dns.compiler import TCP_MAX, State, compile_answer, render
from clusterkit_dns.engine import ZoneSet, resolve

log = logging.getLogger("clusterkit.dns")

IN, CH, ANY_CLASS = dns.rdataclass.IN, dns.rdataclass.CH, dns.rdataclass.ANY
OPT, ANY = dns.rdatatype.OPT, dns.rdatatype.ANY
AXFR, IXFR = dns.rdatatype.AXFR, dns.rdatatype.IXFR
FORMERR, SERVFAIL, NOTIMP, REFUSED = (dns.rcode.FORMERR, dns.rcode.SERVFAIL,
                                      dns.rcode.NOTIMP, dns.rcode.REFUSED)
BADVERS = 16
NOTIFY = 4
UDP_PLAIN = 512        # without EDNS (RFC 1035)
EDNS_SIZE = 1232       # what we advertise and the most we send over UDP (DNS flag day 2020)
_OPT_RR = (b"\x00\x00\x29" + struct.pack("!H", EDNS_SIZE) + b"\x00\x00\x00\x00\x00\x00",
           b"\x00\x00\x29" + struct.pack("!H", EDNS_SIZE) + b"\x00\x00\x80\x00\x00\x00")
_EDNS_IN = b"\x00\x00\x29"  # root owner, type OPT
_QUERY_COUNTS = b"\x00\x01\x00\x00\x00\x00"  # QD=1 AN=0 NS=0 (AR follows)
_IN_CLASS = b"\x00\x01"
_join = b"".join  # one allocation for the response, not one per piece
CACHE_MAX = 50_000
PACKETS_MAX = 16_384  # UDP responses remembered by query bytes (most ~100 bytes: ~3 MB at most)


class FormatError(Exception):
    """The query is malformed: FORMERR."""


@dataclass
class Query:
    """A parsed query: only what answering needs."""

    id: bytes
    rd: int
    qname: bytes             # lower-cased wire name
    key: bytes               # lower-cased wire name + qtype
    question: bytes          # the question as received (name, type, class)
    qtype: int
    qclass: int
    edns: tuple | None       # (payload, version, do) when the query has an OPT record


# RFC 4892 and the BIND names every server answers (NSD's set): CH TXT -> what it reports.
_CHAOS_NAMES = {b"\x07version\x06server\x00": "version", b"\x07version\x04bind\x00": "version",
                b"\x02id\x06server\x00": "identity", b"\x08hostname\x04bind\x00": "identity"}
_TXT, _CH_ANSWER = dns.rdatatype.TXT, struct.pack("!HHHI", 0xC00C, dns.rdatatype.TXT, CH, 0)


class Responder:
    """Turns query bytes into response bytes for one server; counts answers by rcode.

    ``identity`` and ``version`` answer ``CH TXT id.server``/``hostname.bind``
    and ``version.server``/``version.bind`` as NSD does (TTL 0, not
    authoritative); an empty string refuses the query, like NSD's
    ``hide-identity``/``hide-version``.
    """

    def __init__(self, identity: str = "", version: str = ""):
        self.identity, self.version = identity, version
        self.state = State(ZoneSet({}))
        self.rcodes = [0] * 24
        self.dropped = 0
        self.send_errors = 0

    def install(self, state: State) -> None:
        self.state = state  # one reference: a query sees the old zones or the new, never half

    def handle(self, data: bytes, tcp: bool = False) -> bytes | None:
        """The response to ``data``, or None when nothing must be sent (a response, a runt)."""
        st = self.state
        z = data.find(0, 12)
        if z > 0 and not data[2] & 0xF8 and data[4:10] == _QUERY_COUNTS \
                and data[z + 3:z + 5] == _IN_CLASS:
            t = st.cache.get(data[12:z + 1].lower() + data[z + 1:z + 3])
            if t is not None:
                out = None
                if data[10:12] == b"\x00\x00":
                    if tcp or z + t.size <= UDP_PLAIN:
                        out = _join((data[:2], t.flags[data[2] & 1], t.counts, data[12:z + 5],
                                     t.body))
                elif data[10:12] == b"\x00\x01" and len(data) >= z + 16 \
                        and data[z + 5:z + 8] == _EDNS_IN and data[z + 11] == 0:
                    if tcp or z + t.size + 11 <= max(UDP_PLAIN, min(
                            EDNS_SIZE, (data[z + 8] << 8) | data[z + 9])):
                        out = _join((data[:2], t.flags[data[2] & 1], t.counts_opt,
                                     data[12:z + 5], t.body, _OPT_RR[data[z + 12] >> 7]))
                if out is not None:
                    self.rcodes[t.rcode] += 1
                    if not tcp:
                        packets = st.packets
                        if len(packets) >= PACKETS_MAX:
                            packets.clear()
                        packets[data[2:]] = (out[2:], t.rcode)
                    return out
        return self.general(data, tcp)

    # --------------------------------------------------------------- general

    def general(self, data: bytes, tcp: bool) -> bytes | None:
        if len(data) < 12 or data[2] & 0x80:
            self.dropped += 1  # too short for a header, or a response: never answer those
            return None
        opcode = (data[2] >> 3) & 0x0F
        rd = data[2] & 1
        if opcode != 0:
            return self._header_only(data, opcode, REFUSED if opcode == NOTIFY else NOTIMP)
        try:
            query = parse_query(data)
        except FormatError:
            return self._header_only(data, 0, FORMERR)
        try:
            return self._answer(query, tcp)
        except Exception:  # a bug must cost one SERVFAIL, never the server
            self.rcodes[SERVFAIL] += 1
            if self.rcodes[SERVFAIL] % 1000 == 1:
                log.exception("internal error answering %s/%s", to_name(query.qname),
                              dns.rdatatype.to_text(query.qtype))
            flags = bytes((0x80 | rd, SERVFAIL))
            opt = _OPT_RR[query.edns[2]] if query.edns else b""
            return (query.id + flags + struct.pack("!HHHH", 1, 0, 0, 1 if opt else 0)
                    + query.question + opt)

    def _header_only(self, data: bytes, opcode: int, rcode: int) -> bytes:
        self.rcodes[rcode] += 1
        return data[:2] + bytes((0x80 | (opcode << 3) | (data[2] & 1), rcode)) + bytes(8)

    def _answer(self, q: Query, tcp: bool) -> bytes:
        opt = b""
        limit = TCP_MAX if tcp else UDP_PLAIN
        if q.edns is not None:
            payload, version, do = q.edns
            if version != 0:  # RFC 6891 §6.1.3: BADVERS, upper rcode bits in the OPT TTL
                self.rcodes[BADVERS] += 1
                return (q.id + bytes((0x80 | q.rd, 0)) + struct.pack("!HHHH", 1, 0, 0, 1)
                        + q.question + _OPT_RR[0][:5] + b"\x01\x00" + _OPT_RR[do][7:])
            opt = _OPT_RR[do]
            if not tcp:
                limit = max(UDP_PLAIN, min(EDNS_SIZE, payload))
        if q.qclass == CH:
            return self._chaos(q, opt)
        if q.qclass == ANY_CLASS:
            return self._class_any(q, opt, limit)
        if q.qclass != IN:
            return self._simple(q, REFUSED, opt)
        if q.qtype in (AXFR, IXFR):  # no zone transfers (yet): NSD's answers without provide-xfr
            return self._simple(q, NOTIMP if q.qtype == AXFR and not tcp else REFUSED, opt)
        st = self.state
        t = st.cache.get(q.key)
        if t is None:
            t = compile_answer(resolve(st.zones, q.qname, q.qtype), q.qname, q.qtype)
            if len(st.cache) >= CACHE_MAX:
                st.cache.clear()
            st.cache[q.key] = t
        self.rcodes[t.rcode] += 1
        counts, body = (t.counts_opt if opt else t.counts), t.body
        flags = t.flags[q.rd]
        if len(q.question) + 12 + len(body) + len(opt) > limit:
            answer = resolve(st.zones, q.qname, q.qtype)
            body, (an, ns, ar), tc = render(answer, q.qname, q.qtype, limit - len(opt))
            counts = struct.pack("!HHHH", 1, an, ns, ar + (1 if opt else 0))
            if tc:
                flags = bytes((flags[0] | 0x02, flags[1]))
        return q.id + flags + counts + q.question + body + opt

    def _class_any(self, q: Query, opt: bytes, limit: int) -> bytes:
        """QCLASS * (RFC 1035 §3.2.5): the IN data, as NSD gives it: not authoritative, and
        no authority or additional records except a referral's."""
        answer = resolve(self.state.zones, q.qname, q.qtype)
        answer.aa = False
        if not answer.referral:
            answer.authority, answer.additional = [], []
        body, (an, ns, ar), tc = render(answer, q.qname, q.qtype, limit - len(opt))
        self.rcodes[answer.rcode] += 1
        return (q.id + bytes((0x80 | q.rd | (0x02 if tc else 0), answer.rcode))
                + struct.pack("!HHHH", 1, an, ns, ar + (1 if opt else 0)) + q.question + body + opt)

    def _chaos(self, q: Query, opt: bytes) -> bytes:
        what = _CHAOS_NAMES.get(q.key[:-2]) if q.qtype in (_TXT, ANY) else None
        text = getattr(self, what).encode()[:255] if what else b""
        if not text:
            return self._simple(q, REFUSED, opt)
        self.rcodes[0] += 1
        rdata = bytes((len(text),)) + text
        return (q.id + bytes((0x80 | q.rd, 0)) + struct.pack("!HHHH", 1, 1, 0, 1 if opt else 0)
                + q.question + _CH_ANSWER + struct.pack("!H", len(rdata)) + rdata + opt)

    def _simple(self, q: Query, rcode: int, opt: bytes) -> bytes:
        self.rcodes[rcode] += 1
        return (q.id + bytes((0x80 | q.rd, rcode)) + struct.pack("!HHHH", 1, 0, 0, 1 if opt else 0)
                + q.question + opt)


def parse_query(data: bytes) -> Query:
    """Header, one question, at most one OPT in additional; anything else is FORMERR.

    Trailing bytes after the records are ignored, as NSD does.
    """
    qd, an, ns, ar = struct.unpack_from("!HHHH", data, 4)
    if qd != 1 or an or ns:
        raise FormatError
    pos = 12
    total = 1
    while True:
        if pos >= len(data):
            raise FormatError
        length = data[pos]
        if length == 0:
            pos += 1
            break
        if length > 63:  # compression pointers have nothing to point at in a question
            raise FormatError
        total += length + 1
        if total > 255 or pos + 1 + length > len(data):
            raise FormatError
        pos += 1 + length
    if pos + 4 > len(data):
        raise FormatError
    qtype, qclass = struct.unpack_from("!HH", data, pos)
    question = data[12:pos + 4]
    pos += 4
    edns = None
    for _ in range(ar):
        end = _skip_name(data, pos)
        if end + 10 > len(data):
            raise FormatError
        rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", data, end)
        if end + 10 + rdlen > len(data):
            raise FormatError
        if rtype == OPT:
            if edns is not None or end != pos + 1:  # one OPT, owned by the root
                raise FormatError
            edns = (rclass, (ttl >> 16) & 0xFF, (ttl >> 15) & 1)
        pos = end + 10 + rdlen
    qname = question[:-4].lower()
    return Query(id=data[:2], rd=data[2] & 1, qname=qname, key=qname + question[-4:-2],
                 question=question,
                 qtype=qtype, qclass=qclass, edns=edns)


def _skip_name(data: bytes, pos: int) -> int:
    """The offset after a (possibly compressed) name in a record."""
    while True:
        if pos >= len(data):
            raise FormatError
        length = data[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0 == 0xC0:
            return pos + 2
        if length > 63:
            raise FormatError
        pos += 1 + length
