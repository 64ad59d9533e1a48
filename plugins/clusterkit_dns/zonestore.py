"""The manager's zone directory as a library: create, remove, list zones; add, remove, list records.

The CLI (``clusterkit dns zone|record ...``) and later the panel call these
functions. Every change happens under one lock per directory, is made by
lines (:mod:`clusterkit_dns.zoneedit`), bumps the SOA serial, is validated by
the same loader the server uses (:func:`clusterkit_dns.zones.load_zone`,
``$INCLUDE`` resolved from the zones directory) and replaces the file
atomically, so the server, rsync and secondaries see the old zone or the new.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import os
import tempfile
from typing import Iterator

import dns.exception
import dns.name
import dns.rdata
import dns.rdatatype

from clusterkit.definition.files import write_atomic
from clusterkit_dns import zoneview
from clusterkit_dns.serial import next_serial
from clusterkit_dns.zoneedit import (IN, SOA, ZoneEditError, ZoneNotFound, ZoneText, zone_file,
                                     zone_name)
from clusterkit_dns.zones import Zone, ZoneError, load_zone, zone_origin

TEXT_TYPES = (dns.rdatatype.TXT, dns.rdatatype.SPF)

DEFAULT_TEMPLATE = """\
; {zone} -- created by clusterkit dns zone add on {date}
$TTL 3600
@   IN SOA {ns} {email} (
        {serial} ; serial (YYYYMMDDnn, bumped by every clusterkit edit)
        3600       ; refresh
        900        ; retry
        1209600    ; expire
        300 )      ; minimum: negative-answer TTL
{ns_records}
"""


def email_to_rname(email: str, origin: dns.name.Name) -> str:
    """``john.doe@example.com`` → ``john\\.doe.example.com.`` (RFC 1035 §8 RNAME)."""
    if "@" not in email:
        return dns.name.from_text(email, origin).to_text()
    local, _, domain = email.rpartition("@")
    if not local or not domain:
        raise ZoneEditError(f"--email {email!r} is not an address")
    local = local.replace("\\", "\\\\").replace(".", "\\.")
    try:
        return dns.name.from_text(f"{local}.{domain.rstrip('.')}.").to_text()
    except dns.exception.DNSException as exc:
        raise ZoneEditError(f"--email {email!r}: {exc}") from None


class ZoneStore:
    """One zones directory (``DIR/<zone>.zone``)."""

    def __init__(self, zones_dir: str):
        self.zones_dir = os.path.abspath(zones_dir)

    def path(self, zone: str | dns.name.Name) -> str:
        return zone_file(self.zones_dir, zone)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise edits from several CLI calls (and the panel) on this directory."""
        os.makedirs(self.zones_dir, exist_ok=True)
        lock_path = os.path.join(os.path.dirname(self.zones_dir),
                                 f".{os.path.basename(self.zones_dir)}.lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    # ---------------------------------------------------------------- zones

    def zones(self) -> list[dict]:
        """Every zone file: name, serial, record count, or the error that keeps it from loading."""
        rows = []
        if not os.path.isdir(self.zones_dir):
            return rows
        for filename in sorted(os.listdir(self.zones_dir)):
            origin = zone_origin(filename)
            if origin is None:
                continue
            path = os.path.join(self.zones_dir, filename)
            row = {"zone": origin.to_text(omit_final_dot=True), "file": path}
            try:
                zone = load_zone(path, origin, self.zones_dir)
                row.update(serial=zone.serial, records=zone.records, error="")
            except ZoneError as exc:
                row.update(serial=None, records=None, error=str(exc))
            rows.append(row)
        return rows

    def create(self, zone: str, ns: list[str] | None = None, email: str | None = None,
               template: str | None = None, today: datetime.date | None = None) -> dict:
        """Write a new zone from ``template`` (text with ``{zone}``, ``{serial}``, ``{ns}``...)."""
        origin = zone_name(zone)
        path = self.path(origin)
        nameservers = [_ns_name(n, origin) for n in (ns or [f"ns1.{origin}"])]
        rname = email_to_rname(email or f"hostmaster@{origin.to_text(omit_final_dot=True)}", origin)
        values = {
            "zone": origin.to_text(), "date": (today or datetime.date.today()).isoformat(),
            "serial": str(next_serial(0, today)), "ns": nameservers[0].to_text(), "email": rname,
            "ns_records": "\n".join(f"    IN NS {n}" for n in nameservers),
        }
        text = template if template is not None else DEFAULT_TEMPLATE
        for key, value in values.items():
            text = text.replace("{" + key + "}", value)
        with self.locked():
            if os.path.exists(path):
                raise ZoneEditError(f"zone {origin} already exists ({path})")
            loaded = self._validate(origin, path, text)
            write_atomic(path, text)
        return {"zone": origin.to_text(omit_final_dot=True), "file": path,
                "serial": loaded.serial}

    def delete(self, zone: str) -> str:
        origin = zone_name(zone)
        path = self.path(origin)
        with self.locked():
            try:
                os.unlink(path)
            except FileNotFoundError:
                raise ZoneNotFound(f"no zone {origin} in {self.zones_dir}") from None
        return path

    # -------------------------------------------------------------- records

    def records(self, zone: str) -> list[dict]:
        """Every record the server would load (``$INCLUDE`` files too), in file order."""
        origin = zone_name(zone)
        loaded = self._load(origin)
        rows = []
        for rrset in zoneview.rrsets(loaded):
            for rdata in rrset:
                rows.append({"name": _relative(rrset.name, origin), "ttl": rrset.ttl,
                             "type": dns.rdatatype.to_text(rrset.rdtype),
                             "value": rdata.to_text(origin=origin, relativize=True)})
        return rows

    def add_record(self, zone: str, name: str, rtype: str, value: str, ttl: int | None = None,
                   today: datetime.date | None = None) -> dict:
        """Add one record; the RRset's TTL is kept (RFC 2181 §5.2: one TTL per RRset)."""
        origin = zone_name(zone)
        owner, rdtype, rdata = self._parse_record(origin, name, rtype, value)
        if rdtype == SOA:
            raise ZoneEditError("the SOA is managed by clusterkit (serials); edit the file for "
                                "its other fields")
        with self.locked():
            path, text = self._read(origin)
            loaded = self._load(origin)
            existing = zoneview.find(loaded, owner, rdtype)
            if existing is not None and rdata in existing:
                raise ZoneEditError(f"{owner} {dns.rdatatype.to_text(rdtype)} {value} already "
                                    f"exists in zone {origin}")
            if existing is not None and ttl is not None and ttl != existing.ttl:
                raise ZoneEditError(f"--ttl {ttl} differs from the TTL {existing.ttl} of the "
                                    f"existing {owner} {dns.rdatatype.to_text(rdtype)} records "
                                    "(RFC 2181 §5.2: one TTL per RRset)")
            if ttl is None and existing is not None:
                ttl = existing.ttl
            edit = ZoneText(origin, text)
            ttl = edit.add(owner, rdtype, rdata, ttl, fallback_ttl=zoneview.soa(loaded).ttl)
            serial = edit.bump_serial(today)
            result = self._validate(origin, path, edit.text)
            _same_but(loaded, result, added={(owner, rdtype, ttl, rdata)})
            write_atomic(path, edit.text)
        return {"zone": origin.to_text(omit_final_dot=True), "name": _relative(owner, origin),
                "type": dns.rdatatype.to_text(rdtype), "ttl": ttl,
                "value": rdata.to_text(origin=origin, relativize=True), "serial": serial}

    def remove_record(self, zone: str, name: str, rtype: str, value: str | None = None,
                      today: datetime.date | None = None) -> dict:
        """Remove the records of (name, type), or only the one with ``value``."""
        origin = zone_name(zone)
        owner, rdtype, rdata = self._parse_record(origin, name, rtype, value)
        if rdtype == SOA:
            raise ZoneEditError("the SOA cannot be removed (remove the zone instead)")
        with self.locked():
            path, text = self._read(origin)
            loaded = self._load(origin)
            edit = ZoneText(origin, text)
            found = edit.find(owner, rdtype, rdata)
            if not found:
                what = f"{owner} {dns.rdatatype.to_text(rdtype)}" + (f" {value}" if value else "")
                raise ZoneEditError(f"no record {what} in {path} (records of $INCLUDE files are "
                                    "edited in those files)")
            for _ in found:
                edit.remove(edit.find(owner, rdtype, rdata)[0])
            serial = edit.bump_serial(today)
            result = self._validate(origin, path, edit.text)
            gone = {r for r in _records(loaded) if r[:2] == (owner, rdtype)
                    and (rdata is None or r[3] == rdata)}
            _same_but(loaded, result, removed=gone)
            write_atomic(path, edit.text)
        return {"zone": origin.to_text(omit_final_dot=True), "name": _relative(owner, origin),
                "type": dns.rdatatype.to_text(rdtype), "removed": len(found), "serial": serial}

    def bump(self, zone: str, today: datetime.date | None = None) -> int:
        """Bump the serial alone (after an edit by hand, to make secondaries pull)."""
        origin = zone_name(zone)
        with self.locked():
            path, text = self._read(origin)
            edit = ZoneText(origin, text)
            serial = edit.bump_serial(today)
            self._validate(origin, path, edit.text)
            write_atomic(path, edit.text)
        return serial

    def set_generated(self, zone: str, owner: str, title: str, lines: list[str],
                      today: datetime.date | None = None) -> int | None:
        """Replace the generated block of ``owner`` with ``lines`` (none: remove the block).

        The block sits between marker comments, with absolute owners and
        explicit TTLs so no ``$ORIGIN``/``$TTL`` around it matters. The serial
        moves only when the block's content changes; returns it then, else None.
        """
        origin = zone_name(zone)
        begin = f"; clusterkit {owner} begin"
        end = f"; clusterkit {owner} end\n"
        with self.locked():
            path, text = self._read(origin)
            current = text.splitlines(keepends=True)
            start = next((i for i, line in enumerate(current) if line.startswith(begin)), None)
            stop = next((i for i in range(start, len(current)) if current[i] == end), None) \
                if start is not None else None
            if start is not None and stop is None:
                raise ZoneEditError(f"{path}: '{begin}' without '{end.strip()}'")
            block = [f"{begin}: {title} (generated, do not edit)\n", *(f"{x}\n" for x in lines),
                     end] if lines else []
            if start is not None:
                if current[start:stop + 1] == block:
                    return None
                current[start:stop + 1] = block
            elif block:
                if current and not current[-1].endswith("\n"):
                    current[-1] += "\n"
                current += block
            else:
                return None
            edit = ZoneText(origin, "".join(current))
            serial = edit.bump_serial(today)
            self._validate(origin, path, edit.text)
            write_atomic(path, edit.text)
        return serial

    # ------------------------------------------------------------ internals

    def _read(self, origin: dns.name.Name) -> tuple[str, str]:
        path = self.path(origin)
        try:
            with open(path, encoding="utf-8") as f:
                return path, f.read()
        except FileNotFoundError:
            raise ZoneNotFound(f"no zone {origin} in {self.zones_dir} "
                               "(clusterkit dns zone add creates it)") from None

    def _load(self, origin: dns.name.Name) -> Zone:
        path = self.path(origin)
        if not os.path.exists(path):
            raise ZoneNotFound(f"no zone {origin} in {self.zones_dir} "
                               "(clusterkit dns zone add creates it)")
        try:
            return load_zone(path, origin, self.zones_dir)
        except ZoneError as exc:
            raise ZoneEditError(f"the zone does not load, fix it first: {exc}") from None

    def _validate(self, origin: dns.name.Name, path: str, text: str) -> Zone:
        """Load ``text`` as the server would, from a hidden file beside the zone."""
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=self.zones_dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            return load_zone(tmp, origin, self.zones_dir)
        except ZoneError as exc:
            raise ZoneEditError(f"refused, the result would not load: "
                                f"{str(exc).replace(tmp, path)}") from None
        finally:
            os.unlink(tmp)

    @staticmethod
    def _parse_record(origin, name: str, rtype: str, value: str | None):
        try:
            owner = _owner(name, origin)
        except dns.exception.DNSException as exc:
            raise ZoneEditError(f"name {name!r}: {exc}") from None
        if not owner.is_subdomain(origin):
            raise ZoneEditError(f"name {owner} is not inside zone {origin}")
        try:
            rdtype = dns.rdatatype.from_text(rtype)
        except dns.rdatatype.UnknownRdatatype:
            raise ZoneEditError(f"unknown record type {rtype!r}") from None
        if dns.rdatatype.is_metatype(rdtype):
            raise ZoneEditError(f"{rtype} is not a record type a zone holds")
        rdata = None
        if value is not None:
            if rdtype in TEXT_TYPES and not value.lstrip().startswith('"'):
                value = _quoted(value)
            try:
                rdata = dns.rdata.from_text(IN, rdtype, value, origin=origin, relativize=False)
            except (dns.exception.DNSException, ValueError) as exc:
                raise ZoneEditError(f"{rtype.upper()} value {value!r}: {exc}") from None
        return owner, rdtype, rdata


def _relative(name: dns.name.Name, origin: dns.name.Name) -> str:
    return "@" if name == origin else name.relativize(origin).to_text()


def _ns_name(text: str, origin: dns.name.Name) -> dns.name.Name:
    """``--ns``: a name with a dot is absolute (``ns1.example.net``); a bare label is in the zone."""
    try:
        return dns.name.from_text(text, origin if "." not in text.rstrip(".") else dns.name.root)
    except dns.exception.DNSException as exc:
        raise ZoneEditError(f"--ns {text!r}: {exc}") from None


def _records(zone: Zone) -> set:
    """(owner, type, TTL, rdata) of every record but the SOA."""
    return {(rrset.name, rrset.rdtype, rrset.ttl, rdata) for rrset in zoneview.rrsets(zone)
            if rrset.rdtype != SOA for rdata in rrset}


def _same_but(before: Zone, after: Zone, added: set = frozenset(), removed: set = frozenset()):
    """Refuse an edit that changed more than it meant to.

    A line's meaning can hang on the lines before it: without ``$TTL``, an
    omitted TTL is the previous record's. Removing or inserting a line there
    could silently change another record; the loaded zones must differ by
    exactly the records asked for.
    """
    expected = (_records(before) - removed) | added
    got = _records(after)
    if got != expected:
        other = sorted(f"{n} {dns.rdatatype.to_text(t)} TTL {ttl}"
                       for n, t, ttl, _ in got ^ expected)[:3]
        raise ZoneEditError("refused: this edit would also change " + ", ".join(other)
                            + " (TTL inherited from the line before, without $TTL?); "
                            "edit the file by hand or add a $TTL")


def _owner(name: str, origin: dns.name.Name) -> dns.name.Name:
    """A record's owner from the command line: zone-file rules, plus the forgiving one panels use.

    ``@`` is the apex, ``www`` is ``www.<zone>``, ``www.example.com.`` is
    absolute, and ``www.example.com`` — the zone's own name without the final
    dot, the usual slip — is taken as absolute rather than as
    ``www.example.com.example.com.``.
    """
    text = name.strip()
    zone = origin.to_text(omit_final_dot=True).lower()
    if not text.endswith(".") and (text.lower() == zone or text.lower().endswith("." + zone)):
        return dns.name.from_text(text + ".")
    return dns.name.from_text(text, origin)


def _quoted(text: str) -> str:
    """Plain text for a TXT record → quoted strings of at most 255 bytes (RFC 1035 §3.3.14):
    quote and backslash escaped, bytes outside printable ASCII as ``\\DDD``."""
    data = text.encode()
    chunks = [data[i:i + 255] for i in range(0, len(data), 255)] or [b""]
    return " ".join('"' + "".join(_CHAR.get(b) or chr(b) if 0x20 <= b < 0x7F else f"\\{b:03d}"
                                  for b in chunk) + '"' for chunk in chunks)


_CHAR = {0x22: '\\"', 0x5C: "\\\\"}
