"""The last hour of the manager's own numbers, for the panel's graphs.

Every ``step`` seconds the status report is sampled: counters (connections,
bytes, DNS answers) become rates over the step, gauges (replication lag and
pending, check latency) are kept as they are. Each series is a fixed-size
ring (``span / step`` points, aligned on one time axis): memory is bounded
whatever the uptime, and a series that disappears (a removed node) ages out.
"""

from __future__ import annotations

import math
from collections import deque

# chart -> (title, unit): the order the overview draws them in
CHARTS = {
    "connections": ("New connections per second, per member", "conn/s"),
    "traffic": ("Traffic per member", "bytes/s"),
    "lag": ("Replication lag per node", "s"),
    "pending": ("Replication changes pending per node", "changes"),
    "dns": ("DNS answers per second, per rcode", "answers/s"),
    "latency": ("Health check latency per member", "ms"),
}


class History:
    def __init__(self, step: float = 5.0, span: float = 3600.0):
        self.step = step
        self.size = max(2, int(span // step))
        self.times: deque[float] = deque(maxlen=self.size)
        self.series: dict[tuple[str, str], deque] = {}
        self._last: dict[tuple[str, str], float] = {}  # counters at the previous sample
        self._last_time: float | None = None

    def sample(self, report: dict, now: float, dns: dict[str, dict] | None = None) -> None:
        """Add one point to every series from the status ``report`` taken at ``now``.

        ``dns`` maps host names to their DNS answer counters by rcode (the
        manager's own and what its nodes reported); default: this host's.
        """
        counters, gauges = _read(report, dns)
        elapsed = now - self._last_time if self._last_time is not None else None
        values: dict[tuple[str, str], float | None] = {}
        for key, value in counters.items():
            before = self._last.get(key)
            if elapsed and before is not None and value >= before:
                values[key] = round((value - before) / elapsed, 3)
            else:
                values[key] = None  # first sight, or a counter reset (restart): no rate yet
        values.update(gauges)
        self._last, self._last_time = counters, now
        self.times.append(round(now, 3))
        for key in values.keys() - self.series.keys():
            self.series[key] = deque([None] * (len(self.times) - 1), maxlen=self.size)
        for key, ring in list(self.series.items()):
            ring.append(values.get(key))
            if key not in values and all(v is None for v in ring):
                del self.series[key]

    def snapshot(self, since: float | None = None) -> dict:
        """``{"step", "t": [...], "charts": {name: {title, unit, series: {label: [...]}}}}``."""
        start = 0 if since is None else next((i for i, t in enumerate(self.times) if t > since),
                                             len(self.times))
        charts = {name: {"title": title, "unit": unit, "series": {}} for name, (title, unit) in CHARTS.items()}
        for (chart, label), ring in sorted(self.series.items()):
            charts[chart]["series"][label] = list(ring)[start:]
        return {"step": self.step, "t": list(self.times)[start:], "charts": charts}


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _read(report: dict, dns: dict[str, dict] | None) -> tuple[dict, dict]:
    """Counters and gauges of one status report, keyed ``(chart, series label)``."""
    counters: dict[tuple[str, str], float] = {}
    gauges: dict[tuple[str, str], float] = {}

    def put(table, key, value):
        number = _number(value)
        if number is not None:
            table[key] = number

    for policy, stats in (report.get("policies") or {}).items():
        for node, member in ((stats or {}).get("members") or {}).items():
            label = f"{node} {policy}"
            put(counters, ("connections", label), member.get("total"))
            put(counters, ("traffic", label), (_number(member.get("bytes_in")) or 0)
                + (_number(member.get("bytes_out")) or 0))
    for policy, seen in (report.get("members") or {}).items():
        for node, member in ((seen or {}).get("nodes") or {}).items():
            put(gauges, ("latency", f"{node} {policy}"), member.get("latency_ms"))
    for node, state in (((report.get("sync") or {}).get("nodes")) or {}).items():
        put(gauges, ("lag", node), state.get("lag"))
        put(gauges, ("pending", node), state.get("pending"))
    if dns is None:
        dns = {report.get("host", ""): ((report.get("dns") or {}).get("queries")) or {}}
    for host, queries in dns.items():
        for rcode, count in (queries or {}).items():
            put(counters, ("dns", f"{host} {rcode}"), count)
    return counters, gauges
