"""Zone files → immutable :class:`Zone` objects, the data the answer engine reads.

``DIR/<zone>.zone`` is the zone ``<zone>.`` in RFC 1035 master-file syntax,
parsed by dnspython (a well-kept parser: ``@`` in rdata, relative ``$ORIGIN``,
TTL units and inheritance, generic ``TYPEnnn``, escapes). ``$INCLUDE`` paths are
relative to the zones directory, as NSD resolves them from its ``zonesdir``.
A broken file raises :class:`ZoneError` naming the file and the line.
"""

from __future__ import annotations

import builtins
import os
import re
import threading
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rdataclass
import dns.node
import dns.rdataset
import dns.tokenizer
import dns.rdatatype
import dns.zonefile

from clusterkit_dns.pacing import unpaced

SUFFIX = ".zone"
NO_TTL_DEFAULT = 3600  # NSD's TTL for records without one in a file without $TTL
SOA, NS, CNAME = dns.rdatatype.SOA, dns.rdatatype.NS, dns.rdatatype.CNAME
_LOCATED = re.compile(r"^(?P<file>.*?):(?P<line>\d+): (?P<message>.*)$", re.S)
_GENERIC = re.compile(r"^(caught exception <class '[\w.]+'>: )")


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
    compiled: dict = field(default_factory=dict)  # cache of compiled responses, see wire.py

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


# dnspython opens $INCLUDE files relative to the process's working directory;
# we need the zones directory (NSD's behaviour), per load, with several hosts
# in one process. Its zonefile module looks ``open`` up in its own globals
# first, so a per-thread base directory, set only while we load, is enough.
_include_base = threading.local()


def _open_relative(path, *args, **kwargs):
    base = getattr(_include_base, "dir", None)
    if base and isinstance(path, str) and not os.path.isabs(path):
        path = os.path.join(base, path)
    return builtins.open(path, *args, **kwargs)


dns.zonefile.open = _open_relative


class _RecordError(dns.exception.SyntaxError):
    """Carries the line a failing record started on: dnspython reports the line after it."""

    def __init__(self, line: int, detail):
        self.line = line
        self.detail = detail
        super().__init__(str(detail))


class _Reader(dns.zonefile.Reader):
    """dnspython's master-file reader with NSD's readings where they differ (and
    :class:`_Collector` for a transaction).

    - Without ``$TTL``, a record with no TTL gets 3600 (RFC 1035 says: the
      last TTL stated; NSD does not follow it).
    - A record outside the zone is an error (dnspython skips it silently).
    - Errors name the line the record starts on (dnspython's is the next one).
    """

    def __init__(self, tok, txn):
        super().__init__(tok, dns.rdataclass.IN, txn, allow_include=True,
                         default_ttl=NO_TTL_DEFAULT)

    def _rr_line(self):
        start = self.tok.line_number
        where = self.tok.filename  # an $INCLUDE file has its own name and lines
        if not os.path.isabs(where) and getattr(_include_base, "dir", None):
            where = os.path.join(_include_base.dir, where)
        self.txn.where = f"{where}:{start}"
        try:
            return super()._rr_line()
        except dns.exception.DNSException as exc:  # bad rdata, CNAME and other data...
            raise _RecordError(start, exc) from None

    def _eat_line(self):  # only called for a record whose owner is outside the zone
        raise dns.exception.SyntaxError(
            f"out of zone data: {self.last_name} is outside the zone {self.zone_origin}")


class _Collector:
    """Where the reader puts the records: per owner, per type, in file order.

    It stands in for dnspython's zone transaction, which keeps versions we do
    not need and was 40% of a load, and makes NSD's checks: a CNAME with other
    data, two CNAMEs (or SOAs) at a name (dnspython would keep the last one).
    Records of one RRset with different TTLs load with a warning, as in NSD;
    the RRset is served with the smallest TTL (RFC 2181 §5.2: one TTL per
    RRset, and the smallest is what a resolver must use).
    """

    def __init__(self, origin: dns.name.Name, pace=unpaced):
        self.origin = origin
        self.pace = pace
        self.where = ""  # file:line of the record being added (set by the reader)
        self.warnings: list[str] = []
        self.manager = self
        self.nodes: dict = {}   # key -> (owner Name, {(rdtype, covers): Rdataset})
        self._labels: dict = {}  # one bytes object per distinct label (most repeat)

    def origin_information(self):  # the reader asks its transaction's manager
        return self.origin, False, self.origin

    def check_put_rdataset(self, check) -> None:  # our own checks are in add()
        pass

    def _set_origin(self, origin) -> None:
        pass

    def add_unicode(self, value) -> None:
        pass

    def add(self, name: dns.name.Name, ttl: int, rd) -> None:
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
                raise dns.exception.SyntaxError("CNAME and other data at the same name")
            rdataset = rdatasets[(rd.rdtype, covers)] = dns.rdataset.Rdataset(
                rd.rdclass, rd.rdtype, covers)
        elif dns.rdatatype.is_singleton(rd.rdtype) and rd not in rdataset:
            raise dns.exception.SyntaxError(
                f"multiple {dns.rdatatype.to_text(rd.rdtype)} records at the same name")
        elif ttl != rdataset.ttl:
            self.warnings.append(
                f"{self.where}: {name} TTL {ttl} does not match the TTL "
                f"{rdataset.ttl} of the {dns.rdatatype.to_text(rd.rdtype)} RRset "
                f"(served with the smallest)")
        rdataset.add(rd, ttl)


def _parse(f, origin: dns.name.Name, path: str, pace) -> _Collector:
    records = _Collector(origin, pace)
    _Reader(dns.tokenizer.Tokenizer(f, path), records).read()
    return records


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
    _include_base.dir = zones_dir
    try:
        with open(path, encoding="utf-8") as f:
            parsed = _parse(f, origin, path, pace)
    except dns.exception.SyntaxError as exc:
        raise _located(str(exc), path, zones_dir, exc.__context__) from None
    except UnicodeDecodeError as exc:
        raise ZoneError(path, f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except OSError as exc:
        raise ZoneError(exc.filename or path, exc.strerror or str(exc)) from None
    except dns.exception.DNSException as exc:
        raise _located(str(exc), path, zones_dir) from None
    finally:
        _include_base.dir = None
    return build_zone(origin, path, signature, parsed)


def _located(text: str, path: str, zones_dir: str, cause=None) -> ZoneError:
    """dnspython's ``file:line: detail`` → ZoneError naming the record's first line and text."""
    match = _LOCATED.match(text)
    if not match:
        return ZoneError(path, text)
    where = match.group("file") or path
    if not os.path.isabs(where) and where != path:
        where = os.path.join(zones_dir, where)
    line = int(match.group("line"))
    detail = match.group("message")
    if isinstance(cause, _RecordError):
        line, detail = cause.line, str(cause.detail)
    detail = _GENERIC.sub("", detail)
    if detail in ("", "Text input is malformed."):
        detail = "malformed record"
    elif "CNAME" in detail and "compatible" in detail:
        detail = "CNAME and other data at the same name"
    try:
        with open(where, encoding="utf-8", errors="replace") as f:
            for number, text_line in enumerate(f, 1):
                if number == line:
                    detail = f"{detail}: {text_line.strip()[:120]!r}"
                    break
    except OSError:
        pass
    return ZoneError(where, detail, line)


def build_zone(origin: dns.name.Name, path: str, signature, parsed: _Collector) -> Zone:
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
                negative_soa=negative, records=records, warnings=tuple(parsed.warnings))
