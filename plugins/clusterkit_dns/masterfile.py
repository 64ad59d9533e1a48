"""RFC 1035 master files (zone files) read into records, the way NSD reads them.

This module owns the file syntax: lines, comments, parentheses, quoted
strings, escapes, owner/TTL/class/type fields and the ``$ORIGIN``, ``$TTL``
and ``$INCLUDE`` directives. Each record comes out as wire format: owner
name and rdata bytes, no object. The common types' data is encoded by
:mod:`clusterkit_dns.rdatawire`; any other type, or another spelling, is read
by dnspython's public :func:`dns.rdata.from_text` (so every type dnspython
knows, and the generic ``\\# len hex`` form, is supported) and turned into
wire at once.

Where NSD and RFC 1035 differ, NSD wins: a record without a TTL in a file
without ``$TTL`` gets :data:`NO_TTL_DEFAULT`, not the last TTL stated.
``$INCLUDE`` names a file inside the zones directory (NSD's ``zonesdir``;
it is also what is replicated), and ``$ORIGIN``, ``$TTL`` and the previous
owner come back as they were when the included file ends.

Most lines of most zones are one record with no quotes, parentheses or
escapes: those are split on white space (the fast path); the rest go through
a character scanner. Data written alike under one origin (many names on one
address, one MX for all) is encoded once and its bytes shared. Errors are :class:`MasterFileError` naming the file and
the line where the record *starts*, with that line quoted (a lexical error,
such as an unterminated quoted string, names the line it is on).
"""

from __future__ import annotations

import os
import re

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.ttl

from clusterkit_dns import compact, rdatawire
from clusterkit_dns.rdatawire import ENCODERS

NO_TTL_DEFAULT = 3600  # NSD's TTL for records without one in a file without $TTL
MAX_LINE = 1 << 20     # bytes in a line, characters in a record (65535 bytes as \DDD fit)
MAX_INCLUDE_DEPTH = 16
MAX_PARSED = 4096      # record data remembered: rdata is immutable, repeats are shared
IN = dns.rdataclass.IN

_SPACE = " \t\r\n"
_SPECIAL = _SPACE + ';()"'
# A line for the scanner: quotes, parentheses, escapes, or what str.split() would
# take for white space and the scanner does not.
_NOT_PLAIN = re.compile(r'["()\\\x0b\x0c\x1c-\x1f]').search
_DIRECTIVES = ("$ORIGIN", "$TTL", "$INCLUDE")
_ESCAPE = re.compile(r"\\(\d{3}|\D)|\\", re.ASCII | re.DOTALL)  # \DDD, \X, or a bad one


class MasterFileError(ValueError):
    """``path:line: message``; ``line`` is None when the file itself cannot be read."""

    def __init__(self, path: str, line: int | None, detail: str, text: str | None = None):
        self.path, self.line = path, line
        self.message = f"{detail}: {text.strip()[:120]!r}" if text and text.strip() else detail
        super().__init__(f"{path}:{line}: {self.message}" if line else f"{path}: {self.message}")


class RecordError(ValueError):
    """Raised by the consumer (``add``) to refuse a record; reported at the record's line."""


class ScanError(ValueError):
    """A lexical error (an unterminated quoted string...); reported at the line it is on."""


def read(path: str, origin: dns.name.Name, zones_dir: str, add) -> tuple[str, ...]:
    """Read the zone ``origin`` from ``path``, calling ``add(owner, ttl, rdtype, rdata, file,
    line)`` once per record, in file order: ``owner`` and ``rdata`` in wire format (names in
    the case written, uncompressed), ``file`` the included file's path for its records.

    ``$INCLUDE`` paths are relative to ``zones_dir``. Returns the paths of the files
    included (what a change to must reload the zone). Raises :class:`MasterFileError`.
    """
    reading = _Reading(origin, zones_dir, add)
    reading.read_file(path, origin, None, reading.origin_wire)
    return tuple(dict.fromkeys(reading.included))


class _Reading:
    """One read of a zone: the zone, where includes start, the files open."""

    def __init__(self, origin: dns.name.Name, zones_dir: str, add):
        self.zone = origin
        self.origin_wire = origin.to_wire()
        self.zone_wire = self.origin_wire.lower()
        self.zones_dir = zones_dir
        self.add = add
        self.reading: list[str] = []  # paths of the files open, outermost first
        self.included: list[str] = []  # every $INCLUDE path, as opened

    def read_file(self, path: str, origin: dns.name.Name, default_ttl: int | None,
                  owner_wire: bytes, include_line: tuple | None = None) -> None:
        """One file: ``origin``, ``$TTL`` (None: not stated) and the previous owner
        are those in effect where it starts; they end with it."""
        try:
            f = open(path, "rb")
        except OSError as exc:
            if include_line is None:
                raise MasterFileError(path, None, exc.strerror or str(exc)) from None
            raise MasterFileError(*include_line[:2], f"cannot open $INCLUDE file {path}: "
                                  f"{exc.strerror or exc}", include_line[2]) from None
        self.reading.append(path)
        zone, add = self.zone, self.add
        zone_wire = self.zone_wire
        origin_wire = self.origin_wire if origin is zone else origin.to_wire()
        owner_text = None  # spelling of the previous owner, when it had one
        inside = compact.is_below(origin_wire.lower(), zone_wire)
        parsed: dict = {}  # (type, data as written) -> rdata (wire), under this origin
        with f:
            for line, text, tokens, blank in _entries(f, path):
                first = tokens[0]
                try:
                    if first[0] == "$" and not blank:
                        origin, default_ttl = self._directive(
                            tokens, origin, default_ttl, owner_wire, (path, line, text))
                        origin_wire = origin.to_wire()
                        owner_text = None
                        inside = compact.is_below(origin_wire.lower(), zone_wire)
                        parsed = {}
                        continue
                    i = 0
                    if not blank:
                        i = 1
                        if first != owner_text:
                            owner_wire = rdatawire.name(first, origin_wire) \
                                or _name(first, origin).to_wire()
                            owner_text = first
                            # a relative name under an origin in the zone is in the zone
                            if (first[-1] == "." or not inside) \
                                    and not compact.is_below(owner_wire.lower(), zone_wire):
                                raise RecordError(f"out of zone data: {compact.to_name(owner_wire)}"
                                                  f" is outside the zone {zone}")
                    ttl, i = _ttl_and_class(tokens, i)
                    if i >= len(tokens):
                        raise RecordError("no record type")
                    rdtype = _rdtype(tokens[i])
                    data = " ".join(tokens[i + 1:])
                    rdata = parsed.get((rdtype, data))
                    if rdata is None:
                        encode = ENCODERS.get(rdtype)
                        rdata = encode and encode(tokens[i + 1:], origin_wire)
                        if rdata is None:
                            rdata = _rdata(rdtype, data, origin)
                        if len(parsed) >= MAX_PARSED:
                            parsed.clear()
                        parsed[(rdtype, data)] = rdata
                    if ttl is None:
                        ttl = NO_TTL_DEFAULT if default_ttl is None else default_ttl
                    add(owner_wire, ttl, rdtype, rdata, path, line)
                except RecordError as exc:
                    raise MasterFileError(path, line, str(exc), text) from None
        self.reading.pop()

    def _directive(self, tokens, origin, default_ttl, owner, where):
        """``$ORIGIN``, ``$TTL``, ``$INCLUDE``: the new (origin, default TTL)."""
        word, args = tokens[0].upper(), tokens[1:]
        if word not in _DIRECTIVES:
            raise RecordError(f"unknown directive {tokens[0]} (NSD reads $ORIGIN, $TTL "
                              f"and $INCLUDE)")
        if word == "$INCLUDE":
            if len(args) not in (1, 2):
                raise RecordError("$INCLUDE takes a file name and an optional origin")
            path = self._include_path(_unquote(args[0]))
            new_origin = _name(args[1], origin) if len(args) == 2 else origin
            self.included.append(path)
            self.read_file(path, new_origin, default_ttl, owner, where)
            return origin, default_ttl
        if len(args) != 1:
            raise RecordError(f"{word} takes one {'TTL' if word == '$TTL' else 'name'}")
        if word == "$TTL":
            return origin, _ttl(args[0])
        return _name(args[0], origin), default_ttl

    def _include_path(self, name: str) -> str:
        if not name or "\0" in name or len(name) > 4096:
            raise RecordError(f"$INCLUDE needs a file name, not {name[:120]!r}")
        if len(self.reading) > MAX_INCLUDE_DEPTH:
            raise RecordError(f"$INCLUDE nested more than {MAX_INCLUDE_DEPTH} deep")
        path = os.path.normpath(os.path.join(self.zones_dir, name))
        real = os.path.realpath(path)
        zones_real = os.path.realpath(self.zones_dir)  # resolved here: most zones include nothing
        if os.path.commonpath([real, zones_real]) != zones_real:
            raise RecordError(f"$INCLUDE {name[:120]} is outside the zones directory "
                              f"{self.zones_dir}")
        if real in map(os.path.realpath, self.reading):
            raise RecordError(f"$INCLUDE loop: {path} is already being read")
        return path


def _entries(f, path: str):
    """(first line number, first line, tokens, starts with white space) per record or
    directive. Tokens keep their spelling (quotes, escapes) for dnspython to read."""
    depth = 0
    tokens: list[str] = []
    start, first, blank, size = 0, "", False, 0
    number = 0
    while raw := f.readline(MAX_LINE + 1):
        number += 1
        if len(raw) > MAX_LINE:
            raise MasterFileError(path, number, f"line longer than {MAX_LINE} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MasterFileError(path, number, f"not UTF-8 text: {exc.reason} "
                                  f"at byte {exc.start + 1} of the line") from None
        if not depth:
            if text.isascii() and not _NOT_PLAIN(text):  # the fast path
                plain = text.split(";", 1)[0].split()
                if plain:
                    yield number, text, plain, text[0] in " \t"
                continue
            tokens, start, first, blank, size = [], number, text, text[0] in " \t", 0
        try:
            depth = scan(text, tokens, depth)
        except ScanError as exc:
            raise MasterFileError(path, number, str(exc), text) from None
        size += len(text)
        if depth and size > MAX_LINE:
            raise MasterFileError(path, start, f"record longer than {MAX_LINE} characters "
                                  "(is a '(' never closed?)", first)
        if not depth and tokens:
            yield start, first, tokens, blank
            tokens = []
    if depth:
        raise MasterFileError(path, start, "'(' is never closed", first)


def scan(text: str, tokens: list, depth: int = 0, spans: list | None = None) -> int:
    """Append the tokens of one physical line to ``tokens``, spelled as written; return the
    parenthesis depth after it. With ``spans``, each token's ``(start, end)`` offsets in
    ``text`` are appended there too (the zone editor's: it rewrites tokens in place).

    The one scanner of the master-file syntax, for the reader and the editor
    (:mod:`clusterkit_dns.zoneedit`); raises :class:`ScanError`.
    """
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in _SPACE:
            i += 1
        elif c == ";":
            break
        elif c == "(":
            depth += 1
            i += 1
        elif c == ")":
            if not depth:
                raise ScanError("')' without '('")
            depth -= 1
            i += 1
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                raise ScanError("unterminated quoted string")
            tokens.append(text[i:j + 1])
            if spans is not None:
                spans.append((i, j + 1))
            i = j + 1
        else:
            j = i
            while j < n and text[j] not in _SPECIAL:
                if text[j] == "\\":
                    if j + 1 >= n or text[j + 1] in "\r\n":
                        raise ScanError("'\\' at the end of a line")
                    j += 1
                j += 1
            tokens.append(text[i:j])
            if spans is not None:
                spans.append((i, j))
            i = j
    return depth


def _name(text: str, origin: dns.name.Name) -> dns.name.Name:
    if text[0] == '"':
        raise RecordError(f"a name cannot be a quoted string: {text[:40]}")
    try:
        if text.isascii() and "\\" not in text and text[-1] != "." and text != "@":
            # what from_text does with such text, without its loop over the characters
            return dns.name.Name(tuple(text.encode().split(b".")) + origin.labels)
        return dns.name.from_text(text, origin)
    except (dns.exception.DNSException, ValueError) as exc:
        raise RecordError(f"bad name: {exc}") from None


def _ttl(text: str) -> int:
    try:
        if len(text) > 40 or not "0" <= text[0] <= "9":
            raise ValueError("not a number")
        return dns.ttl.from_text(text)
    except (dns.exception.DNSException, ValueError) as exc:
        raise RecordError(f"bad TTL {text[:40]}: {exc}") from None


def _ttl_and_class(tokens: list, i: int) -> tuple[int | None, int]:
    """TTL and class, both optional, in either order, from ``tokens[i:]``."""
    ttl = None
    klass = False
    for _ in range(2):
        if i >= len(tokens):
            break
        text = tokens[i]
        if text in _TYPES:
            break
        if ttl is None and "0" <= text[0] <= "9":
            ttl = _ttl(text)
        elif not klass and _is_class(text):
            klass = True
        else:
            break
        i += 1
    return ttl, i


def _is_class(text: str) -> bool:
    """True for IN; False for what is not a class; an error for another class."""
    name = text.upper()
    if name == "IN":
        return True
    if name not in dns.rdataclass.RdataClass.__members__ and not name.startswith("CLASS"):
        return False  # most often a type: tell without an exception, this is per record
    try:
        rdclass = dns.rdataclass.from_text(name)
    except (dns.exception.DNSException, ValueError):
        return False
    if rdclass != IN:
        raise RecordError(f"class {dns.rdataclass.to_text(rdclass)} is not the zone's class IN")
    return True


_TYPES: dict = {}  # a type as spelled -> its number, for the spellings that are no class
_TYPES_MAX = 1024


def _rdtype(text: str) -> int:
    rdtype = _TYPES.get(text)
    if rdtype is not None:
        return rdtype
    try:
        rdtype = dns.rdatatype.from_text(text)
    except (dns.exception.DNSException, ValueError):
        raise RecordError(f"unknown record type {text[:40]!r}") from None
    if dns.rdatatype.is_metatype(rdtype):
        raise RecordError(f"{dns.rdatatype.to_text(rdtype)} is not a type of record a zone holds")
    upper = text.upper()
    if len(_TYPES) < _TYPES_MAX and upper not in dns.rdataclass.RdataClass.__members__ \
            and not upper.startswith("CLASS"):
        _TYPES[text] = rdtype
    return rdtype


def _rdata(rdtype: int, text: str, origin: dns.name.Name) -> bytes:
    """A rarer type, or a spelling :mod:`~clusterkit_dns.rdatawire` leaves alone: dnspython
    reads it (the object is dropped at once)."""
    try:
        return dns.rdata.from_text(IN, rdtype, text, origin=origin,
                                   relativize=False).to_wire()
    except dns.exception.DNSException as exc:
        detail, kind = str(exc)[:200], dns.rdatatype.to_text(rdtype)
        if detail in ("", "Text input is malformed."):
            raise RecordError(f"malformed {kind} record") from None
        raise RecordError(f"bad {kind} record: {detail}") from None


def _unquote(text: str) -> str:
    """A file name as written: quotes removed, ``\\DDD`` and ``\\X`` escapes read."""
    if text[0] == '"':
        text = text[1:-1]

    def unescape(match) -> str:
        code = match.group(1)
        if code is None or len(code) == 3 and int(code) > 255:
            raise RecordError(f"bad escape in {text[:120]}")
        return chr(int(code)) if len(code) == 3 else code

    return _ESCAPE.sub(unescape, text)
