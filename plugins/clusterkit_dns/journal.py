"""IXFR history (RFC 1995): the last differences of each zone, in memory and on disk.

When a zone's new version replaces the old one with a greater serial, the
difference of their RRsets is recorded (:func:`difference`), and the last
``depth`` of them are kept per zone (a difference bigger than the zone is
not: the zone itself would be sent, so a journal is at most ``depth`` zones). An IXFR from a serial the history
reaches is answered with the increments (:meth:`History.chain`); otherwise
the transfer is the whole zone (RFC 1995 §4).

Each zone's history is also a file under the journal directory, written in
master-file syntax in the order IXFR sends it — old SOA, deleted records,
new SOA, added records, per version — and read back with our own reader
(:mod:`clusterkit_dns.masterfile`), so a restart keeps it. A history that
does not end at the serial being served (the file changed while we were
down), or that cannot be read, is dropped: those clients get the full zone.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from dataclasses import dataclass

import dns.name
import dns.rdatatype

from clusterkit_dns import compact, masterfile
from clusterkit_dns.compact import RRset
from clusterkit_dns.pacing import unpaced
from clusterkit_dns.serial import serial_lt

log = logging.getLogger("clusterkit.dns.xfr")

SOA = dns.rdatatype.SOA
DEPTH = 10               # differences kept per zone unless [dns] ixfr_history says otherwise
MAX_DEPTH = 1000
SUFFIX = ".ixfr"
_PLAIN = re.compile(r"[a-z0-9_-][a-z0-9._-]*\Z")


@dataclass(frozen=True)
class Difference:
    """From one version of a zone to the next, as :class:`~clusterkit_dns.compact.RRset`."""

    old_soa: RRset
    deleted: tuple
    new_soa: RRset
    added: tuple

    @property
    def old_serial(self) -> int:
        return compact.soa_serial(self.old_soa)

    @property
    def new_serial(self) -> int:
        return compact.soa_serial(self.new_soa)

    @property
    def records(self) -> int:
        return 2 + sum(len(rrset.rdatas) for rrset in self.deleted + self.added)

    def pairs(self):
        """The RRsets in IXFR order: old SOA, deleted, new SOA, added."""
        yield self.old_soa
        yield from self.deleted
        yield self.new_soa
        yield from self.added


def difference(old, new, pace=unpaced) -> Difference | None:
    """What changed from the zone ``old`` to ``new`` (both :class:`~clusterkit_dns.zones.Zone`);
    None unless the serial went up. A changed TTL is the old RRset deleted, the new added.
    Names whose node is the same bytes in both are passed over without decoding."""
    if not serial_lt(old.serial, new.serial):
        return None
    return Difference(old.soa, _only_in(old, new, pace), new.soa, _only_in(new, old, pace))


def _only_in(zone, other, pace) -> tuple:
    """The records of ``zone`` that ``other`` lacks, as RRsets (the apex SOA left out)."""
    found = []
    for key, node in zone.names.items():
        pace()
        theirs = other.names.get(key, b"")
        if node == theirs:
            continue
        theirs = compact.decode_node(key, theirs)
        for rdtype, rrset in compact.decode_node(key, node).items():
            if rdtype == SOA and key == zone.key:
                continue
            twin = theirs.get(rdtype)
            if twin is None or twin.ttl != rrset.ttl:
                found.append(rrset)
                continue
            only = tuple(rd for rd in rrset.rdatas if rd not in twin.rdatas)
            if only:
                found.append(rrset._replace(rdatas=only))
    return tuple(found)


class History:
    """The differences of every zone, bounded per zone; thread-safe (the loader records,
    the event loop reads)."""

    def __init__(self, directory: str | None, depth: int = DEPTH):
        self.directory = directory
        self.depth = depth
        self._lock = threading.Lock()
        self._zones: dict = {}  # origin -> tuple of Difference, oldest first
        self._read: set = set()  # origins whose file was looked at

    def record(self, old, new, pace=unpaced) -> None:
        """``new`` replaced ``old`` (same origin): remember the difference, persist it."""
        found = difference(old, new, pace) if self.depth else None
        with self._lock:
            kept = self._history(old.origin, old.serial)
            if found is None or found.records >= new.records:  # never sent: the zone is smaller
                kept = ()
            elif kept and kept[-1].new_serial != found.old_serial:
                kept = (found,)
            else:
                kept = (kept + (found,))[-self.depth:]
            self._zones[old.origin] = kept
        self._write(old.origin, kept)

    def chain(self, zone, serial: int) -> list[Difference] | None:
        """The differences from ``serial`` to ``zone``'s serial, or None when the history
        does not reach back to ``serial`` (or not up to the zone served)."""
        with self._lock:
            kept = self._history(zone.origin, zone.serial)
        for i, diff in enumerate(kept):
            if diff.old_serial == serial:
                return list(kept[i:])
        return None

    def forget(self, origin: dns.name.Name) -> None:
        with self._lock:
            self._zones[origin] = ()
            self._read.add(origin)
        self._write(origin, ())

    def sizes(self) -> dict:
        with self._lock:
            return {o: len(k) for o, k in self._zones.items() if k}

    # ------------------------------------------------------------ on disk

    def _history(self, origin, serial: int) -> tuple:
        """The history of ``origin`` if it ends at ``serial`` (read from disk the first
        time), else (); call with the lock held."""
        if origin not in self._read:
            self._read.add(origin)
            self._zones[origin] = self._load(origin)
        kept = self._zones.get(origin, ())
        if kept and kept[-1].new_serial != serial:  # the zone moved on without us
            kept = self._zones[origin] = ()
            self._write(origin, ())
        return kept

    def _path(self, origin: dns.name.Name) -> str | None:
        if self.directory is None:
            return None
        text = origin.to_text(omit_final_dot=True).lower()  # example.com.ixfr; odd names in hex
        name = text if _PLAIN.match(text) else origin.to_wire().hex()
        return os.path.join(self.directory, name + SUFFIX)

    def _write(self, origin, kept: tuple) -> None:
        path = self._path(origin)
        if path is None:
            return
        try:
            if not kept:
                if os.path.exists(path):
                    os.unlink(path)
                return
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                for diff in kept:
                    for rrset in diff.pairs():
                        f.write(compact.to_rdataset(rrset).to_text(
                            compact.to_name(rrset.owner), relativize=False) + "\n")
            os.replace(path + ".tmp", path)
        except OSError as exc:
            log.warning("dns: cannot keep the IXFR history of %s in %s: %s", origin, path, exc)

    def _load(self, origin) -> tuple:
        path = self._path(origin)
        if path is None or not os.path.exists(path):
            return ()
        records: list = []
        try:
            masterfile.read(path, origin, self.directory,
                            lambda owner, ttl, rdtype, rd, *where: records.append(
                                (owner, ttl, rdtype, rd)))
            kept = _parse(origin, records)
        except (masterfile.MasterFileError, ValueError) as exc:
            log.warning("dns: IXFR history of %s dropped (%s)", origin, exc)
            return ()
        return kept[-self.depth:] if self.depth else ()


def _parse(origin, records: list) -> tuple:
    """Records in IXFR order (SOA, deleted, SOA, added, ...) back into differences."""
    apex = origin.to_wire().lower()
    diffs, part, soas = [], [[], []], []
    for owner, ttl, rdtype, rd in records:
        if rdtype == SOA and owner.lower() == apex:
            soas.append(RRset(owner, SOA, ttl, (rd,)))
            if len(soas) == 3:
                diffs.append(_difference(soas[0], part[0], soas[1], part[1]))
                soas, part = soas[2:], [[], []]
            continue
        if not soas:
            raise ValueError(f"{compact.to_name(owner)} before the first SOA")
        part[len(soas) - 1].append((owner, ttl, rdtype, rd))
    if len(soas) != 2:
        raise ValueError("the last version is incomplete")
    diffs.append(_difference(soas[0], part[0], soas[1], part[1]))
    for a, b in zip(diffs, diffs[1:]):
        if a.new_serial != b.old_serial:
            raise ValueError(f"serial {a.new_serial} is followed by {b.old_serial}")
    return tuple(diffs)


def _difference(old_soa, deleted: list, new_soa, added: list) -> Difference:
    return Difference(old_soa, _rrsets(deleted), new_soa, _rrsets(added))


def _rrsets(records: list) -> tuple:
    grouped: dict = {}
    for owner, ttl, rdtype, rd in records:
        grouped.setdefault((owner.lower(), rdtype, ttl), (owner, []))[1].append(rd)
    return tuple(RRset(owner, rdtype, ttl, tuple(rds))
                 for (_, rdtype, ttl), (owner, rds) in grouped.items())
