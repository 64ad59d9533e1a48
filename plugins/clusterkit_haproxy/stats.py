"""HAProxy's ``show stat`` counters, summed over its workers, in the native proxy's keys.

After a reload the old worker keeps serving its connections with its own
counters, and the new one starts from zero: :class:`Counters` keeps each
worker's last figures and, once a worker is gone, adds them to what departed
workers counted, so totals only grow, like the native proxy's.
"""

from __future__ import annotations

import csv

FIELDS = ("scur", "stot", "bin", "bout", "econ", "wretr", "wredis")  # summed over workers; scur only while alive
MAX_ROWS = 200_000


def parse_stat(text: str) -> dict[tuple[str, str], dict]:
    """``{(pxname, svname): {"scur": n, ..., "status": text, "slim": n, "weight": n}}``."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    rows = {}
    for row in csv.DictReader([lines[0][2:]] + lines[1:MAX_ROWS]):
        name, server = row.get("pxname"), row.get("svname")
        if not name or not server:
            continue
        entry = {f: _int(row.get(f)) for f in FIELDS}
        entry.update(status=row.get("status") or "", slim=_int(row.get("slim")),
                     weight=_int(row.get("weight")))
        rows[(name, server)] = entry
    return rows


def _int(value) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


class Counters:
    """Every worker's last ``show stat``, and the sums of workers that are gone."""

    def __init__(self):
        self.alive: dict[int, dict] = {}    # worker pid -> parse_stat()
        self.departed: dict[tuple[str, str], dict] = {}
        self.current: int | None = None    # the worker that takes new connections

    def update(self, figures: dict[int, dict]) -> None:
        """``figures``: the workers alive now, by pid (the current one first)."""
        for pid in [p for p in self.alive if p not in figures]:
            self.retire(pid)
        self.alive.update(figures)
        self.current = next(iter(figures), None)

    def retire(self, pid: int) -> None:
        for key, entry in self.alive.pop(pid).items():
            total = self.departed.setdefault(key, dict.fromkeys(FIELDS, 0))
            for f in FIELDS[1:]:
                total[f] += entry[f]

    def retire_all(self) -> None:
        """The master died: its workers with it."""
        for pid in list(self.alive):
            self.retire(pid)
        self.current = None

    def row(self, name: str, server: str) -> dict:
        """Summed counters of one row; ``status``/``slim``/``weight`` from the current worker."""
        out = dict.fromkeys(FIELDS, 0)
        for f in FIELDS[1:]:
            out[f] = self.departed.get((name, server), {}).get(f, 0)
        for entry in (w.get((name, server)) for w in self.alive.values()):
            if entry is not None:
                for f in FIELDS:
                    out[f] += entry[f]
        now = self.alive.get(self.current, {}).get((name, server), {})
        out.update(status=now.get("status", ""), slim=now.get("slim", 0), weight=now.get("weight"))
        return out
