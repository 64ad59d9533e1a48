"""The standby plugin: ``manager_promote`` / ``manager_demote`` on the control socket, and status.

Promotion comes from VRRP (the keepalived plugin calls :func:`promote`) or
from ``clusterkit manager promote`` where no keepalived runs. Both control
commands answer at once: the role switch runs as a daemon task.
"""

from __future__ import annotations

from clusterkit import hookimpl
from clusterkit.standby import epoch, promotion


def request_role(runtime, role: str, why: str):
    """Promote or demote in the background (a control command or a notify must not wait);
    returns the task."""
    action = promotion.promote if role == "manager" else promotion.demote
    return runtime.spawn(action(runtime, why), f"role-{role}", lasting=True)


@hookimpl
def clusterkit_start(runtime):
    if runtime.host.role not in ("manager", "standby"):
        return

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
    return {"managers": {"acting": runtime.role, "epoch": epoch.read(runtime.state_dir),
                         "hosts": managers}}


@hookimpl
def clusterkit_status_summary(report, summary):
    shown = report.get("managers")
    if isinstance(shown, dict):
        summary.line(f"managers: {report.get('host')} acts as {shown.get('acting')}, "
                     f"epoch {shown.get('epoch')}")
