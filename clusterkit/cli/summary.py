"""``clusterkit status``'s default view: the cluster at a glance.

The daemon's report (``status --json``, ``status -v``) has every field of
every component; an operator first wants what is wrong, then one line per
policy and per node (HAProxy's stats page, ``ipvsadm -Ln``). The core
summarises its own components (the proxy's policies, membership, replication);
each plugin adds its columns and problems through the
``clusterkit_status_summary`` hook, so the core knows no plugin's section.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import typer

from clusterkit.cli.common import table


@dataclass
class Summary:
    """What the hook implementations fill in: problems, cells of two tables, lines."""

    report: dict
    now: float = field(default_factory=time.time)
    problems: list[str] = field(default_factory=list)
    policies: dict[str, dict[str, str]] = field(default_factory=dict)
    nodes: dict[str, dict[str, str]] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        """Something an operator must act on: listed first, in red on a terminal."""
        self.problems.append(text)

    def policy(self, key: str, **cells) -> None:
        """Cells of the policy ``key``'s row (``vip:port``); columns appear in call order."""
        self.policies.setdefault(key, {}).update({k: str(v) for k, v in cells.items()})

    def node(self, name: str, **cells) -> None:
        """Cells of node ``name``'s row."""
        self.nodes.setdefault(name, {}).update({k: str(v) for k, v in cells.items()})

    def line(self, text: str) -> None:
        """A one-line fact about this host that fits neither table (zones served, …)."""
        self.lines.append(text)

    def age(self, when: float | None) -> str:
        """``12s ago``, ``3m ago``; ``never`` for none."""
        return "never" if not when else f"{duration(self.now - when)} ago"


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 10:
        return f"{seconds:.1f}s".replace(".0s", "s")
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def summarize(pm, report: dict) -> Summary:
    summary = Summary(report)
    _policies(summary)
    _replication(summary)
    pm.hook.clusterkit_status_summary(report=report, summary=summary)
    return summary


def render(summary: Summary, colour: bool = False) -> str:
    r = summary.report
    head = (f"{r.get('role', '?')} {r.get('host', '?')} of cluster {r.get('cluster', '?')}, "
            f"up {duration(float(r.get('uptime') or 0))}: ")
    head += f"{len(summary.problems)} problem(s)" if summary.problems else "no problems"
    out = [head]
    if summary.problems:
        out.append("")
        for text in summary.problems:
            line = f"  ! {text}"
            out.append(typer.style(line, fg="red", bold=True) if colour else line)
    for title, rows, first in (("policies", summary.policies, "policy"),
                               ("nodes", summary.nodes, "node")):
        if not rows:
            continue
        columns = [first] + list(dict.fromkeys(c for cells in rows.values() for c in cells))
        out += ["", table([{first: key, **cells} for key, cells in rows.items()], columns)]
    if summary.lines:
        out += [""] + summary.lines
    return "\n".join(out)


# ------------------------------------------------ the core's own components


def _policies(summary: Summary) -> None:
    """One row per policy: service, connections, members with their state."""
    report = summary.report
    members = report.get("members", {})
    for key, policy in report.get("policies", {}).items():
        health = members.get(key, {}).get("nodes", {})
        states = []
        for name, member in policy.get("members", {}).items():
            state = health.get(name, {}).get("state") or member.get("state", "?")
            states.append(f"{name} {state}")
            if state == "down":
                seen = health.get(name, {})
                why = seen.get("output") or "no answer"
                summary.problem(f"{key} {policy.get('service', '')}: {name} down "
                                f"for {duration(float(seen.get('for_s') or 0))} ({why})")
        if policy.get("listening") is False:
            summary.problem(f"{key}: not listening")
        up = sum(1 for s in states if s.endswith(" up"))
        summary.policy(key, service=policy.get("service", ""), engine=policy.get("engine", "native"),
                       up=f"{up}/{len(states)}",
                       conns=f"{policy.get('active', 0)}/{policy.get('total', 0)}",
                       members=", ".join(states) or "-")
    for key, seen in members.items():  # a policy only membership knows (no proxy section)
        if key not in report.get("policies", {}):
            states = [f"{n} {m.get('state', '?')}" for n, m in seen.get("nodes", {}).items()]
            summary.policy(key, service=seen.get("service", ""), members=", ".join(states) or "-")
    for key in summary.policies:
        for name in members.get(key, {}).get("nodes", {}):
            state = members[key]["nodes"][name].get("state", "?")
            cells = summary.nodes.setdefault(name, {})
            up, total = (int(x) for x in cells.get("health", "0/0").split("/"))
            cells["health"] = f"{up + (state == 'up')}/{total + 1}"


def _replication(summary: Summary) -> None:
    """Per node: the replication state, lag, pending entries, last success; errors are problems."""
    sync = summary.report.get("sync")
    if not isinstance(sync, dict):
        return
    for name, node in sync.get("nodes", {}).items():
        summary.node(name, sync=node.get("state", "?"), lag=duration(float(node.get("lag") or 0)),
                     pending=node.get("pending", 0), synced=summary.age(node.get("last_success")))
        failing = node.get("failing_sets") or {}
        for sset, state in failing.items():
            summary.problem(f"replication of set {sset} to {name}: {state.get('error')} "
                            f"({summary.age(state.get('error_at'))}{_retry(summary, state)})")
        if node.get("last_error") and (node.get("retry_at") or not failing):
            summary.problem(f"replication to {name}: {node['last_error']} "
                            f"({summary.age(node.get('last_error_at'))}{_retry(summary, node)})")
    for sset, watch in sync.get("watch", {}).items():
        if watch.get("state") in ("deaf", "partial"):
            summary.problem(f"sync set {sset}: watcher {watch.get('state')}: {watch.get('reason', '')}")
    missed = sync.get("missed_changes") or {}
    if missed:
        summary.line("replication: the watcher missed " + ", ".join(
            f"{n} changes in {s}" for s, n in sorted(missed.items())))


def _retry(summary: Summary, state: dict) -> str:
    due = state.get("retry_at")
    return f"; retry in {duration(due - summary.now)}" if due else ""

