"""Edit zone files the way a careful operator would: by lines, never re-serialised.

A zone file is the operator's document: comments, alignment, ``$ORIGIN`` and
``$TTL`` blocks, parenthesised SOAs. :class:`ZoneText` tokenises it into
logical entries (one record or directive, possibly spanning parenthesised
lines) that remember their physical lines, so an edit touches only the lines
of the records it adds or removes and the SOA serial token. Adding a record
then removing it gives back the same text apart from the serial.

Meaning is taken from dnspython (``dns.name``, ``dns.rdata``, ``dns.ttl``),
so "the same record" is decided on parsed data, not on spelling: ``www``,
``www.example.com.`` and ``WWW`` are one owner; ``10 mail`` and
``10 mail.example.com.`` one MX. Every edit is validated by the zone loader
the server uses before it replaces the file (:mod:`clusterkit_dns.zonestore`).
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.ttl

from clusterkit_dns import masterfile
from clusterkit_dns.serial import next_serial
from clusterkit_dns.zones import SUFFIX

IN = dns.rdataclass.IN
SOA = dns.rdatatype.SOA
# Lines end at "\n" only, as the reader reads them; str.splitlines() would also end
# one at \r, \f, \x85, \u2028... that a quoted string may hold.
_LINES = re.compile(r"[^\n]*\n|[^\n]+").findall


class ZoneEditError(ValueError):
    """An edit that cannot be made; the message names the zone, record or value."""


class ZoneNotFound(ZoneEditError):
    """The zone named has no file in the zones directory (the panel answers 404)."""


# ------------------------------------------------------------- zone names

_LABEL = re.compile(rb"[A-Za-z0-9_-]{1,63}")


def zone_name(text: str) -> dns.name.Name:
    """A zone name from a request, the command line or the definition, checked as a file name.

    A zone name becomes ``DIR/<zone>.zone``. The check is made on the labels
    *after* DNS unescaping (``\\047`` is ``/``, ``\\.`` a dot inside a label):
    each must be letters, digits, ``-`` or ``_``, so no label can be ``/``,
    NUL, ``..`` or anything a file name would read differently.
    """
    if not isinstance(text, str) or not text.strip():
        raise ZoneEditError("a zone name is required (e.g. example.com)")
    try:
        name = dns.name.from_text(text.strip())
    except dns.exception.DNSException as exc:
        raise ZoneEditError(f"{text!r} is not a valid zone name: {exc}") from None
    if name == dns.name.root:
        raise ZoneEditError(f"{text!r} is not a zone this server can hold (the root)")
    for label in name.labels[:-1]:
        if not _LABEL.fullmatch(label):
            shown = label.decode("ascii", "backslashreplace")
            raise ZoneEditError(f"zone name {text!r}: the label {shown!r} may hold only letters, "
                                "digits, '-' and '_' (it names a file)")
    return name


def zone_file(zones_dir: str, zone: str | dns.name.Name) -> str:
    """The file of ``zone`` in ``zones_dir``: the one way a zone name becomes a path.

    The name is checked by :func:`zone_name` (also when it is already a
    ``dns.name.Name``), and the result must lie directly in the directory.
    """
    origin = zone_name(zone.to_text()) if isinstance(zone, dns.name.Name) else zone_name(zone)
    directory = os.path.abspath(zones_dir)
    path = os.path.abspath(os.path.join(
        directory, origin.to_text(omit_final_dot=True).lower() + SUFFIX))
    if os.path.dirname(path) != directory:
        raise ZoneEditError(f"zone {origin} would be a file outside {directory}")
    return path


@dataclass
class Token:
    line: int   # index of the physical line
    start: int
    end: int
    text: str


@dataclass
class Entry:
    """One logical line: a record or a ``$`` directive, with its physical line span."""

    first: int
    last: int
    tokens: list[Token]
    blank_owner: bool  # the line starts with white space: the previous owner continues
    # filled in by the context walk, for records:
    owner: dns.name.Name | None = None
    ttl: int | None = None
    rdtype: int = 0
    rdata: dns.rdata.Rdata | None = None
    origin: dns.name.Name | None = None      # $ORIGIN in effect
    default_ttl: int | None = None           # $TTL in effect
    rdata_tokens: list[Token] = field(default_factory=list)

    @property
    def directive(self) -> str:
        first = self.tokens[0].text
        return first.upper() if first.startswith("$") else ""


def tokenize(lines: list[str]) -> list[Entry]:
    """Split master-file lines into logical entries, each token with its place.

    The lexical rules are the reader's own (:func:`clusterkit_dns.masterfile.scan`),
    so the editor splits a line as the server does.
    """
    entries: list[Entry] = []
    depth = 0
    tokens: list[Token] = []
    first = 0
    blank = False
    for index, line in enumerate(lines):
        if depth == 0:
            tokens, first, blank = [], index, line[:1] in (" ", "\t")
        words: list[str] = []
        spans: list[tuple[int, int]] = []
        try:
            depth = masterfile.scan(line, words, depth, spans)
        except masterfile.ScanError as exc:
            raise ZoneEditError(f"line {index + 1}: {exc}") from None
        tokens += [Token(index, s, e, w) for w, (s, e) in zip(words, spans)]
        if depth == 0 and tokens:
            entries.append(Entry(first, index, tokens, blank))
            tokens = []
    if depth:
        raise ZoneEditError(f"line {first + 1}: '(' is never closed")
    return entries


def _is_class(text: str) -> bool:
    try:
        dns.rdataclass.from_text(text)
    except (dns.rdataclass.UnknownRdataclass, ValueError):
        return False
    return True


def _ttl(text: str) -> int | None:
    if not text[:1].isdigit():
        return None
    try:
        return dns.ttl.from_text(text)
    except dns.ttl.BadTTL:
        return None


class ZoneText:
    """A zone file's lines plus what each record entry means; edits re-read the lines."""

    def __init__(self, origin: dns.name.Name | str, text: str):
        self.origin = dns.name.from_text(str(origin)) if isinstance(origin, str) else origin
        self.lines = _LINES(text)
        self._walk()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def _walk(self) -> None:
        """Tokenise and give each record entry its owner, TTL, type and rdata."""
        self.entries = tokenize(self.lines)
        origin, default_ttl, owner = self.origin, None, None
        for entry in self.entries:
            words = [t.text for t in entry.tokens]
            where = f"line {entry.first + 1}"
            if entry.directive == "$ORIGIN" and len(words) > 1:
                origin = dns.name.from_text(words[1], origin)
                continue
            if entry.directive == "$TTL" and len(words) > 1:
                default_ttl = _ttl(words[1])
                continue
            if entry.directive:
                continue  # $INCLUDE, $GENERATE: their records are not edited here
            pos = 0
            if not entry.blank_owner:
                owner = dns.name.from_text(words[0], origin)
                pos = 1
            if owner is None:
                raise ZoneEditError(f"{where}: a record without an owner name")
            ttl = None
            while pos < len(words):
                if ttl is None and _ttl(words[pos]) is not None:
                    ttl = _ttl(words[pos])
                elif _is_class(words[pos]) and not _is_type(words[pos]):
                    pass
                else:
                    break
                pos += 1
            if pos >= len(words):
                raise ZoneEditError(f"{where}: no record type")
            try:
                rdtype = dns.rdatatype.from_text(words[pos])
                rdata = dns.rdata.from_text(IN, rdtype, " ".join(words[pos + 1:]), origin=origin,
                                            relativize=False)
            except dns.exception.DNSException as exc:
                raise ZoneEditError(f"{where}: {exc}") from None
            entry.owner, entry.ttl, entry.rdtype, entry.rdata = owner, ttl, rdtype, rdata
            entry.origin, entry.default_ttl = origin, default_ttl
            entry.rdata_tokens = entry.tokens[pos + 1:]

    def records(self) -> list[Entry]:
        return [e for e in self.entries if e.rdata is not None]

    def find(self, owner: dns.name.Name, rdtype: int, rdata=None) -> list[Entry]:
        return [e for e in self.records() if e.owner == owner and e.rdtype == rdtype
                and (rdata is None or e.rdata == rdata)]

    # --------------------------------------------------------------- serial

    def soa(self) -> Entry:
        found = self.find(self.origin, SOA)
        if not found:
            raise ZoneEditError(f"zone {self.origin}: no SOA record at the apex in the file itself "
                                "(it cannot come from an $INCLUDE for serials to be managed)")
        return found[0]

    def bump_serial(self, today: datetime.date | None = None) -> int:
        """Replace the serial token in place (comments and layout around it kept)."""
        entry = self.soa()
        new = next_serial(entry.rdata.serial, today)
        token = entry.rdata_tokens[2]  # mname rname serial refresh retry expire minimum
        line = self.lines[token.line]
        self.lines[token.line] = line[:token.start] + str(new) + line[token.end:]
        self._walk()
        return new

    # ---------------------------------------------------------------- edits

    def add(self, owner: dns.name.Name, rdtype: int, rdata, ttl: int | None,
            fallback_ttl: int = 3600) -> int:
        """Insert one record line after the owner's last record (end of file if none).

        ``ttl`` None inherits the ``$TTL`` in effect there (``fallback_ttl``,
        written out, when there is none). Returns the TTL the record gets.
        """
        same = [e for e in self.records() if e.owner == owner]
        after = same[-1] if same else None
        ctx = after or (self.records()[-1] if self.records() else None)
        origin = self._origin_at_end() if after is None else ctx.origin
        default_ttl = self._default_ttl_at_end() if after is None else ctx.default_ttl
        name = "@" if owner == origin else owner.relativize(origin).to_text() \
            if owner.is_subdomain(origin) else owner.to_text()
        if ttl is None:
            ttl = default_ttl if default_ttl is not None else fallback_ttl
        parts = [name]
        if ttl != default_ttl:
            parts.append(str(ttl))
        parts += ["IN", dns.rdatatype.to_text(rdtype), rdata.to_text(origin=origin, relativize=True)]
        line = " ".join(parts) + "\n"
        at = after.last + 1 if after is not None else len(self.lines)
        if at > 0 and at == len(self.lines) and not self.lines[-1].endswith("\n"):
            self.lines[-1] += "\n"
        self.lines.insert(at, line)
        self._walk()
        return ttl

    def remove(self, entry: Entry) -> None:
        """Delete an entry's lines; a following blank-owner record keeps its owner."""
        index = self.entries.index(entry)
        follower = next((e for e in self.entries[index + 1:] if not e.directive), None)
        if follower is not None and follower.blank_owner and not entry.blank_owner:
            line = self.lines[follower.first]
            stripped = line.lstrip(" \t")
            owner = entry.owner.relativize(follower.origin).to_text() \
                if entry.owner.is_subdomain(follower.origin) else entry.owner.to_text()
            if entry.owner == follower.origin:
                owner = "@"
            indent = len(line) - len(stripped)
            self.lines[follower.first] = owner.ljust(max(indent - 1, len(owner))) + " " + stripped
        del self.lines[entry.first:entry.last + 1]
        self._walk()

    def _origin_at_end(self) -> dns.name.Name:
        origin = self.origin
        for e in self.entries:
            if e.directive == "$ORIGIN" and len(e.tokens) > 1:
                origin = dns.name.from_text(e.tokens[1].text, origin)
        return origin

    def _default_ttl_at_end(self) -> int | None:
        ttl = None
        for e in self.entries:
            if e.directive == "$TTL" and len(e.tokens) > 1:
                ttl = _ttl(e.tokens[1].text)
        return ttl


def _is_type(text: str) -> bool:
    try:
        dns.rdatatype.from_text(text)
    except dns.rdatatype.UnknownRdatatype:
        return False
    return True
