"""What the panel shows: rows of the definition, and overviews merged from ``runtime.status()``.

Status sections come from other plugins (``policies`` from the engine,
``members`` from membership, ``sync`` from replication, ``dns`` from the DNS
server); every one is optional and read defensively, so the panel works
with whichever plugins a host runs.
"""

from __future__ import annotations

import asyncio
import ssl
import time

import aiohttp

from clusterkit_panel.settings import named_actions


def host_row(h) -> dict:
    return {"name": h.name, "role": h.role, "ip": h.ip, "transport": h.transport, "root": h.root,
            "public_ips": list(h.public_ips), "options": dict(h.options)}


def policy_row(p) -> dict:
    return {"key": p.key, "vip": p.vip, "port": p.port, "service": p.service,
            "scheduler": p.scheduler, "persistence": p.persistence, "backend_port": p.backend_port,
            "members": {m.node: m.weight for m in p.members}, "proxy_protocol": p.proxy_protocol,
            "fallback": p.fallback,
            "check": {"kind": p.check.kind, "inter": p.check.inter, "timeout": p.check.timeout,
                      "rise": p.check.rise, "fall": p.check.fall, **p.check.options}}


def sync_row(s) -> dict:
    return {"name": s.name, "path": s.path, "exclude": list(s.exclude), "on_change": s.on_change,
            "owner": s.owner}


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def policy_members(entry) -> dict:
    """``{node: report}`` of one policy in the membership section.

    Read both as ``{node: report}`` and as ``{"service": ..., "nodes": {node: report}}``.
    """
    entry = _dict(entry)
    if isinstance(entry.get("nodes"), dict):
        return entry["nodes"]
    return {node: report for node, report in entry.items() if isinstance(report, dict)}


def member_reports(status: dict, node: str) -> dict:
    """``{policy_key: report}`` of one node from the membership section."""
    out = {}
    for pkey, entry in _dict(status.get("members")).items():
        report = policy_members(entry).get(node)
        if report is not None:
            out[pkey] = report
    return out


def dns_serials(status: dict | None) -> dict:
    zones = _dict(_dict(_dict(status).get("dns")).get("zones"))
    return {zone: _dict(info).get("serial") for zone, info in zones.items()}


def manager_overview(panel) -> dict:
    runtime = panel.runtime
    cluster = runtime.cluster
    status = runtime.status()
    sync_nodes = _dict(_dict(status.get("sync")).get("nodes"))
    queued = {}
    for job in panel.store.jobs():
        if job["state"] in ("queued", "running"):
            queued[job["node"]] = queued.get(job["node"], 0) + 1
    nodes = []
    for host in cluster.nodes:
        seen = panel.node_status.get(host.name, {})
        reports = member_reports(status, host.name)
        states = {r.get("state") for r in reports.values()}
        operators = {r.get("operator") for r in reports.values()} - {"-", None}
        nodes.append({
            "name": host.name, "ip": host.ip, "transport": host.transport,
            "panel": {"reachable": seen.get("reachable"), "error": seen.get("error"),
                      "last_seen": seen.get("last_seen")},
            "health": "down" if "down" in states else ("up" if states == {"up"} else
                                                       ",".join(sorted(s for s in states if s)) or None),
            "checks": reports,
            "operator": ",".join(sorted(operators)) or None,
            "replication": sync_nodes.get(host.name),
            "panelsync": _dict(seen.get("status")).get("panelsync"),
            "queued_jobs": queued.get(host.name, 0),
        })
    policies = [live_policy(p, status) for p in cluster.policies]
    return {"cluster": cluster.name, "host": runtime.host.name, "role": "manager",
            "nodes": nodes, "policies": policies,
            "sync_sets": [sync_row(s) for s in cluster.sync_sets],
            "dns": dns_convergence(status, panel.node_status, [h.name for h in cluster.nodes]),
            "actions": sorted(named_actions(cluster)),
            "jobs": panel.store.jobs(limit=20), "time": time.time()}


def live_policy(policy, status: dict) -> dict:
    """A policy's row with live counters (engine) and member states (membership, else engine)."""
    row = policy_row(policy)
    stats = _dict(_dict(status.get("policies")).get(policy.key))
    engine_members = _dict(stats.get("members"))
    health = policy_members(_dict(status.get("members")).get(policy.key))
    members = {}
    for node, weight in row["members"].items():
        counters = _dict(engine_members.get(node))
        members[node] = {"weight": weight,
                         "state": _dict(health.get(node)).get("state") or counters.get("state"),
                         "active": counters.get("active"), "total": counters.get("total")}
    row["live"] = {"active": stats.get("active"), "total": stats.get("total"), "members": members}
    return row


def dns_convergence(status: dict, node_status: dict, nodes: list[str]) -> dict | None:
    """Does every host serve the manager's SOA serial of every zone? ``None`` without DNS."""
    manager = dns_serials(status)
    if not manager and not any(dns_serials(node_status.get(n, {}).get("status")) for n in nodes):
        return None
    zones = {}
    for zone, serial in manager.items():
        seen = {n: dns_serials(node_status.get(n, {}).get("status")).get(zone) for n in nodes}
        zones[zone] = {"serial": serial, "nodes": seen,
                       "converged": all(s == serial for s in seen.values())}
    return {"zones": zones, "converged": all(z["converged"] for z in zones.values())}


def view_of_node(panel, node: str) -> dict:
    """What the manager knows of one node: its checks and its replication state."""
    status = panel.runtime.status()
    return {"node": node, "checks": member_reports(status, node),
            "replication": _dict(_dict(status.get("sync")).get("nodes")).get(node),
            "jobs": panel.store.jobs(node, limit=20)}


async def node_overview(panel) -> dict:
    runtime = panel.runtime
    cluster = runtime.cluster
    try:
        code, view = await panel.call(cluster.manager.name, "GET", "/control/v1/view", timeout=2.0)
        if code != 200:
            view = {"error": view.get("error", f"HTTP {code}")}
    except (OSError, aiohttp.ClientError, asyncio.TimeoutError, ssl.SSLError) as exc:
        view = {"error": f"the manager is not reachable: {exc or type(exc).__name__}"}
    return {"cluster": cluster.name, "host": runtime.host.name, "role": "node", "read_only": True,
            "status": runtime.status(), "manager_view": view,
            "definition": {"hosts": [host_row(h) for h in cluster.hosts.values()],
                           "policies": [policy_row(p) for p in cluster.policies],
                           "sync_sets": [sync_row(s) for s in cluster.sync_sets]},
            "time": time.time()}
