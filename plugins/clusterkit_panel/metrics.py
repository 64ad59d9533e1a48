"""``/metrics`` in the Prometheus text format (0.0.4), from ``runtime.status()``.

Written directly (a few dozen lines) rather than through prometheus-client:
every value is read fresh from the status sections at scrape time, there is
no state to register or keep per host.
"""

from __future__ import annotations

import math

from clusterkit.contracts import MEMBER_STATES
from clusterkit_panel.views import policy_members


def _escape(value) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class Writer:
    """Samples grouped by family (a family's samples must be contiguous in the format)."""

    def __init__(self):
        self.families: dict[str, list[str]] = {}

    def add(self, name: str, kind: str, help_: str, value, **labels) -> None:
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, (int, float)) or (isinstance(value, float) and math.isnan(value)):
            return
        family = self.families.setdefault(name, [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"])
        label = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        family.append(f"{name}{{{label}}} {value}" if label else f"{name} {value}")

    def text(self) -> str:
        return "\n".join(line for lines in self.families.values() for line in lines) + "\n"


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


CURRENT = ("current", "the manager's own file")  # clusterkit.sync.definition's states
CHECK_RESULT = {"passed": 1, "ok": 1, "up": 1, "failed": 0, "down": 0}  # else: no check yet


def render(panel) -> str:
    runtime = panel.runtime
    status = runtime.status()
    w = Writer()
    w.add("clusterkit_host_info", "gauge", "This host: cluster, name and role.", 1,
          cluster=runtime.cluster.name, host=runtime.host.name, role=runtime.host.role)
    w.add("clusterkit_uptime_seconds", "gauge", "Seconds since the daemon started.",
          status.get("uptime"))
    for key, p in _dict(status.get("policies")).items():
        p = _dict(p)
        labels = {"policy": key, "service": p.get("service", "")}
        w.add("clusterkit_policy_connections_active", "gauge", "Open connections of a policy.",
              p.get("active"), **labels)
        w.add("clusterkit_policy_connections_total", "counter", "Connections accepted by a policy.",
              p.get("total"), **labels)
        w.add("clusterkit_policy_refused_total", "counter",
              "Connections refused (no member could take them).",
              p.get("refused"), **labels)
        for node, m in _dict(p.get("members")).items():
            m = _dict(m)
            ml = {"policy": key, "node": node}
            w.add("clusterkit_member_weight", "gauge", "Configured weight of a member.",
                  m.get("weight"), **ml)
            w.add("clusterkit_member_connections_active", "gauge", "Open connections to a member.",
                  m.get("active"), **ml)
            w.add("clusterkit_member_connections_total", "counter", "Connections sent to a member.",
                  m.get("total"), **ml)
            w.add("clusterkit_member_bytes_in_total", "counter", "Bytes from clients to a member.",
                  m.get("bytes_in"), **ml)
            w.add("clusterkit_member_bytes_out_total", "counter", "Bytes from a member to clients.",
                  m.get("bytes_out"), **ml)
            w.add("clusterkit_member_connect_failures_total", "counter", "Failed connects to a member.",
                  m.get("connect_failures"), **ml)
    for key, entry in _dict(status.get("members")).items():
        for node, report in policy_members(entry).items():
            report = _dict(report)
            state = report.get("state")
            for s in MEMBER_STATES:
                w.add("clusterkit_member_state", "gauge", "1 for the member's current state.",
                      int(state == s), policy=key, node=node, state=s)
            w.add("clusterkit_check_up", "gauge", "1 when the member's last health check passed.",
                  CHECK_RESULT.get(report.get("last")),
                  policy=key, node=node, check=report.get("check", ""))
            latency = report.get("latency_ms")
            if isinstance(latency, (int, float)):
                w.add("clusterkit_check_latency_seconds", "gauge", "Duration of the last health check.",
                      latency / 1000.0, policy=key, node=node, check=report.get("check", ""))
    for node, sync in _dict(_dict(status.get("sync")).get("nodes")).items():
        sync = _dict(sync)
        w.add("clusterkit_replication_lag_seconds", "gauge",
              "Age of the oldest change not yet on the node.", sync.get("lag"), node=node)
        w.add("clusterkit_replication_pending", "gauge", "Changed paths waiting for the node.",
              sync.get("pending"), node=node)
        w.add("clusterkit_replication_runs_total", "counter", "rsync batches sent to the node.",
              sync.get("runs"), node=node)
        w.add("clusterkit_replication_unreachable", "gauge",
              "1 while the node is unreachable and every set waits out its back-off.",
              int(sync.get("state") == "backoff"), node=node)
        failing = _dict(sync.get("failing_sets"))
        for name in _dict(_dict(status.get("sync")).get("sets")) or failing:
            w.add("clusterkit_replication_set_failures", "gauge",
                  "Failed attempts in a row of a set on the node (0: it replicates).",
                  _dict(failing.get(name)).get("failures", 0), node=node, set=name)
    sync = _dict(status.get("sync"))
    w.add("clusterkit_sync_watcher_events_total", "counter",
          "File events the watcher delivered (all sets).", sync.get("events"))
    for name, watch in _dict(sync.get("watch")).items():
        watch = _dict(watch)
        w.add("clusterkit_sync_watch_ok", "gauge",
              "1 while the set's file watch is proved to deliver events (0: deaf, partial or "
              "not proved yet).", int(watch.get("state") == "ok"), set=name,
              state=watch.get("state", ""))
        w.add("clusterkit_sync_watch_failures_total", "counter",
              "Times the set's file watch was found deaf or partial.", watch.get("failures"),
              set=name)
    for name, count in _dict(sync.get("missed_changes")).items():
        w.add("clusterkit_sync_missed_changes_total", "counter",
              "Changes a periodic or covering full sync sent that no file event announced.",
              count, set=name)
    definition = _dict(status.get("definition"))
    w.add("clusterkit_definition_serial", "gauge", "Serial of the definition this host runs "
          "(on the manager: the one it published to the nodes).", definition.get("serial"))
    if "manager_serial" in definition:  # a node
        w.add("clusterkit_definition_manager_serial", "gauge",
              "Serial of the manager's definition last received.", definition.get("manager_serial"))
        w.add("clusterkit_definition_current", "gauge", "1 when this node runs the manager's "
              "definition (0: older or refused).", int(definition.get("state") in CURRENT))
    dns = _dict(status.get("dns"))
    for rcode, count in _dict(dns.get("queries")).items():
        w.add("clusterkit_dns_queries_total", "counter", "DNS answers by response code.", count,
              rcode=rcode)
    for zone, info in _dict(dns.get("zones")).items():
        w.add("clusterkit_dns_zone_serial", "gauge", "SOA serial of a zone served here.",
              _dict(info).get("serial"), zone=zone)
    if panel.is_manager:
        for name, seen in panel.node_status.items():
            w.add("clusterkit_node_panel_reachable", "gauge",
                  "1 when the manager reached the node's panel over mutual TLS.",
                  int(bool(seen.get("reachable"))), node=name)
        counts = panel.store.job_counts()
        for state in ("queued", "running", "done", "failed"):
            w.add("clusterkit_panel_jobs", "gauge", "Remote actions by state.", counts.get(state, 0),
                  state=state)
    return w.text()
