"""The standby plugin: ``manager_promote`` / ``manager_demote`` on the control socket, and status
(the epoch, the managers, and what a former manager's replication never delivered).

Promotion comes from VRRP (the keepalived plugin calls :func:`promote`) or
from ``clusterkit manager promote`` where no keepalived runs. Both control
commands answer at once: the role switch runs as a daemon task.
"""

from __future__ import annotations

import logging
import os

from clusterkit import hookimpl
from clusterkit.standby import epoch, promotion
from clusterkit.sync.store import DirtyStore

log = logging.getLogger("clusterkit.standby")
UNSENT = "standby-unsent"  # runtime.components: what this host's replication never delivered
SHOWN = 1000  # paths per set in status


class Unsent:
    """What a manager's durable dirty set still held when it came back as a standby: files
    written here that some standby or node never received. Read once at start, before the new
    manager's replication overwrites this host's trees; kept in ``status`` until a restart."""

    def __init__(self, runtime):
        self.sets: dict[str, list[str]] = {}
        path = os.path.join(runtime.state_dir, "sync.sqlite")
        if not os.path.exists(path):
            return
        store = DirtyStore(path)
        try:
            for host in runtime.cluster.replicas:
                for sset, rel in store.pending(host.name):
                    self.sets.setdefault(sset, set()).add(rel or "(the whole set)")
        finally:
            store.close()
        self.sets = {s: sorted(paths)[:SHOWN] for s, paths in sorted(self.sets.items())}
        for sset, paths in self.sets.items():
            log.warning("%d path(s) of set %s written here were not delivered to every "
                        "standby and node before this host stopped managing: %s", len(paths),
                        sset, ", ".join(paths[:20]))

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def status(self) -> dict:
        return self.sets


def request_role(runtime, role: str, why: str):
    """Promote or demote in the background (a control command or a notify must not wait);
    returns the task."""
    action = promotion.promote if role == "manager" else promotion.demote
    return runtime.spawn(action(runtime, why), f"role-{role}", lasting=True)


@hookimpl
async def clusterkit_start(runtime):
    if runtime.host.role not in ("manager", "standby"):
        return
    if not runtime.is_manager and UNSENT not in runtime.components:
        await runtime.start_component(UNSENT, Unsent(runtime))

    def manager_promote(why: str = "clusterkit manager promote") -> dict:
        request_role(runtime, "manager", why)
        return {"role": runtime.role, "requested": "manager"}

    def manager_demote(why: str = "clusterkit manager demote") -> dict:
        request_role(runtime, "standby", why)
        return {"role": runtime.role, "requested": "standby"}

    runtime.add_control("manager_promote", manager_promote)
    runtime.add_control("manager_demote", manager_demote)


@hookimpl
def clusterkit_status(runtime):
    cluster = runtime.cluster
    if not cluster.standbys:
        return None
    managers = {h.name: {"ip": h.ip, "priority": h.priority,
                         "defined_as": h.role} for h in [cluster.manager, *cluster.standbys]}
    unsent = runtime.components.get(UNSENT)
    return {"managers": {"acting": runtime.role, "epoch": epoch.read(runtime.state_dir),
                         "hosts": managers, "unsent": unsent.status() if unsent else {}}}


@hookimpl
def clusterkit_status_summary(report, summary):
    shown = report.get("managers")
    if isinstance(shown, dict):
        summary.line(f"managers: {report.get('host')} acts as {shown.get('acting')}, "
                     f"epoch {shown.get('epoch')}")
        for sset, paths in (shown.get("unsent") or {}).items():
            summary.problem(f"set {sset}: {len(paths)} path(s) written here were not delivered "
                            f"everywhere before this host stopped managing: {', '.join(paths[:5])}")
