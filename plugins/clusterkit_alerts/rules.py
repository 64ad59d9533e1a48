"""What is wrong right now, read from the manager's status report.

Every rule returns conditions keyed by a stable string: a condition that
appears fires an alert, one that disappears resolves it. Working from the
report (what ``clusterkit status`` shows) keeps the alerts and the operator's
view telling the same story, and lets the set of firing alerts be rebuilt
after a restart without sending anything twice.
"""

from __future__ import annotations

import datetime
import math
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Condition:
    key: str
    kind: str
    node: str  # the node it concerns ("" for the cluster): silenced while it is in maintenance
    text: str


KINDS = {
    "member-down": "a balanced service of a node fails its health check",
    "node-unreachable": "the manager cannot reach a node's panel (mutual TLS)",
    "replication-stalled": "replication to a node has been failing for `stalled` seconds",
    "replication-lagging": "a node's copy is more than `lag` seconds behind",
    "watcher-failing": "a sync set's file watcher does not deliver events",
    "dns-zone-broken": "a zone file on the manager does not load",
    "dns-not-converged": "a host's DNS has not served the manager's zones for `dns_converge` seconds",
    "certificate-expiring": "a host's certificate of the cluster CA expires within `cert_days` days",
    "action-failed": "a remote action (post-sync command, node action) failed",
}


def conditions(report: dict, settings, started: float, now: float | None = None) -> dict[str, Condition]:
    now = time.time() if now is None else now
    found: dict[str, Condition] = {}
    for rule in (_members, _panel, _replication, _watch, _dns, _dns_convergence, _certificates,
                 _actions):
        for c in rule(report, settings, started, now):
            found[c.key] = c
    return found


def in_maintenance(report: dict) -> set[str]:
    """Nodes an operator has put in maintenance (on any policy): their alerts are silenced."""
    return {node for policy in (report.get("members") or {}).values()
            for node, member in (policy.get("nodes") or {}).items()
            if member.get("operator") == "maintenance" or member.get("state") == "maintenance"}


def _members(report, settings, started, now):
    for key, policy in (report.get("members") or {}).items():
        for node, member in (policy.get("nodes") or {}).items():
            if member.get("state") == "down":
                yield Condition(f"member-down:{key}:{node}", "member-down", node,
                                f"{node} is down for {policy.get('service', '?')} on {key}: "
                                f"{member.get('output') or 'no answer'}")


def _panel(report, settings, started, now):
    for node, seen in ((report.get("panel") or {}).get("nodes") or {}).items():
        if seen.get("reachable") is False:
            yield Condition(f"node-unreachable:{node}", "node-unreachable", node,
                            f"{node} is unreachable: {seen.get('error') or 'no answer'}")


def _replication(report, settings, started, now):
    sync = report.get("sync") or {}
    for node, state in (sync.get("nodes") or {}).items():
        last_ok = state.get("last_success") or started
        if state.get("last_error") and now - last_ok >= settings.stalled:
            yield Condition(f"replication-stalled:{node}", "replication-stalled", node,
                            f"replication to {node} has failed for {int(now - last_ok)}s: "
                            f"{state['last_error']}")
        elif (state.get("lag") or 0) >= settings.lag:
            yield Condition(f"replication-lagging:{node}", "replication-lagging", node,
                            f"replication to {node} lags {int(state['lag'])}s behind "
                            f"({state.get('pending', 0)} changes pending)")


def _watch(report, settings, started, now):
    for name, watch in ((report.get("sync") or {}).get("watch") or {}).items():
        if isinstance(watch, dict) and watch.get("state") in ("deaf", "partial"):
            yield Condition(f"watcher-failing:{name}", "watcher-failing", "",
                            f"the watcher of sync set {name} is {watch['state']}: {watch.get('reason', '')}"
                            " (full syncs cover it meanwhile)")


def _dns(report, settings, started, now):
    for error in (report.get("dns") or {}).get("errors") or []:
        where = str(error).split(":", 1)[0]
        yield Condition(f"dns-zone-broken:{where}", "dns-zone-broken", "", f"zone not loaded: {error}")


def _dns_convergence(report, settings, started, now):
    hosts = (report.get("dns_convergence") or {}).get("hosts") or {}
    for name, host in hosts.items():
        since = host.get("since")
        if host.get("converged") is False and _number(since) and now - since >= settings.dns_converge:
            error = f" ({host['error']})" if host.get("error") else ""
            yield Condition(f"dns-not-converged:{name}", "dns-not-converged", name,
                            f"the DNS of {name} has not converged for {int(now - since)}s: "
                            f"{host.get('state', '?')}{error}")


def _certificates(report, settings, started, now):
    """The manager's own certificate, and each node's as its panel last told the manager."""
    panel = report.get("panel") or {}
    hosts = {report.get("host", ""): panel.get("cert_expires"),
             **{name: seen.get("cert_expires") for name, seen in (panel.get("nodes") or {}).items()}}
    for name, expires in hosts.items():
        if not _number(expires) or expires - now > settings.cert_days * 86400:
            continue
        days = (expires - now) / 86400
        when = datetime.datetime.fromtimestamp(expires, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        text = (f"the certificate of {name} expires in {days:.1f} days ({when})" if days > 0
                else f"the certificate of {name} expired on {when}")
        yield Condition(f"certificate-expiring:{name}", "certificate-expiring", name, text)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _actions(report, settings, started, now):
    failed = ((report.get("panel") or {}).get("jobs") or {}).get("failed", 0)
    if failed:
        yield Condition(f"action-failed:{failed}", "action-failed", "",
                        f"{failed} remote action(s) failed (clusterkit node jobs shows them)")
