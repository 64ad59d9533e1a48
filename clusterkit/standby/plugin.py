"""The standby plugin: ``manager_promote`` / ``manager_demote`` on the control socket, and status
(the epoch, the managers, and what a former manager's replication never delivered).

Promotion comes from VRRP (the keepalived plugin calls :func:`promote`) or
from ``clusterkit manager promote`` where no keepalived runs. Both control
commands answer at once: the role switch runs as a daemon task.
"""

from __future__ import annotations

import asyncio
import logging
import os

from clusterkit import hookimpl
from clusterkit.standby import epoch, promotion, state
from clusterkit.sync.definition import RESERVED as BUILT_IN
from clusterkit.sync.store import DirtyStore

log = logging.getLogger("clusterkit.standby")
UNSENT = "standby-unsent"  # runtime.components: what this host's replication never delivered
STATE = "manager-state"    # runtime.components: the acting manager's snapshot for the standbys
SHOWN = 1000  # paths per set in status


class Unsent:
    """What a manager's durable dirty set still held when it came back as a standby: files
    written here that some standby or node never received. Read once at start, before the new
    manager's replication overwrites this host's trees; kept in ``status`` until a restart."""

    def __init__(self, runtime):
        self.sets: dict[str, list[str]] = {}
        self.stood_down = ""  # why this host last stopped acting for a newer manager
        path = os.path.join(runtime.state_dir, "sync.sqlite")
        if not os.path.exists(path):
            return
        store = DirtyStore(path)
        try:
            for host in runtime.cluster.replicas:
                for sset, rel in store.pending(host.name):
                    if sset.startswith(BUILT_IN):  # the definition, the manager's state: the
                        continue                   # new manager's replace them
                    self.sets.setdefault(sset, set()).add(rel or "(the whole set)")
        finally:
            store.close()
        self.sets = {s: sorted(paths)[:SHOWN] for s, paths in sorted(self.sets.items())}
        for sset, paths in self.sets.items():
            log.warning("%d path(s) of set %s written here were not delivered to every "
                        "standby and node before this host stopped managing: %s", len(paths),
                        sset, ", ".join(paths[:20]))

    @classmethod
    def empty(cls) -> "Unsent":
        unsent = cls.__new__(cls)
        unsent.sets, unsent.stood_down = {}, ""
        return unsent

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
def clusterkit_outranked(runtime, reason: str) -> None:
    """Stop acting as the manager because a newer one exists: with keepalived, give the
    addresses up (its poll then demotes, and VRRP does not hand them straight back);
    otherwise demote."""
    unsent = runtime.components.get(UNSENT)
    if unsent is not None:
        unsent.stood_down = reason
    give_up = runtime.control.handlers.get("vrrp_give_up")
    if give_up is not None:
        give_up(why=reason)
    else:
        request_role(runtime, "standby", reason)


@hookimpl
def clusterkit_sync_sets(cluster):
    """The manager's own state (CA, panel, queues) goes to the standbys (:mod:`.state`)."""
    return [state.sync_set(cluster)] if cluster.standbys else []


@hookimpl(tryfirst=True)  # the manager's state is in place before any plugin opens it
async def clusterkit_start(runtime):
    if runtime.host.role not in ("manager", "standby"):
        return
    if runtime.is_manager and runtime.switching:  # promoted: the manager's state becomes ours
        await asyncio.to_thread(state.install, runtime)
    if runtime.is_manager and runtime.cluster.standbys:
        await runtime.start_component(STATE, state.Snapshots(runtime))
    if UNSENT not in runtime.components:  # read once: a manager that starts acting reads none
        await runtime.start_component(UNSENT, Unsent(runtime) if not runtime.is_manager
                                      else Unsent.empty())

    def manager_promote(why: str = "clusterkit manager promote") -> dict:
        request_role(runtime, "manager", why)
        return {"role": runtime.role, "requested": "manager"}

    def manager_demote(why: str = "clusterkit manager demote") -> dict:
        request_role(runtime, "standby", why)
        return {"role": runtime.role, "requested": "standby"}

    runtime.add_control("manager_promote", manager_promote)
    runtime.add_control("manager_demote", manager_demote)


@hookimpl
async def clusterkit_stop(runtime):
    await runtime.stop_component(STATE)


@hookimpl
def clusterkit_status(runtime):
    cluster = runtime.cluster
    if not cluster.standbys:
        return None
    managers = {h.name: {"ip": h.ip, "priority": h.priority,
                         "defined_as": h.role} for h in [cluster.manager, *cluster.standbys]}
    unsent = runtime.components.get(UNSENT)
    snapshots = runtime.components.get(STATE)
    if runtime.host.role not in ("manager", "standby"):
        copy = None
    else:
        copy = snapshots.status() if snapshots is not None else state.received(runtime)
    return {"managers": {"acting": runtime.role, "epoch": epoch.read(runtime.state_dir),
                         "hosts": managers, "unsent": unsent.status() if unsent else {},
                         "stood_down": unsent.stood_down if unsent else "",
                         "state": copy}}


@hookimpl
def clusterkit_status_summary(report, summary):
    shown = report.get("managers")
    if isinstance(shown, dict):
        summary.line(f"managers: {report.get('host')} acts as {shown.get('acting')}, "
                     f"epoch {shown.get('epoch')}")
        _state_summary(shown.get("state"), summary)
        for sset, paths in (shown.get("unsent") or {}).items():
            summary.problem(f"set {sset}: {len(paths)} path(s) written here were not delivered "
                            f"everywhere before this host stopped managing: {', '.join(paths[:5])}")


def _state_summary(copy, summary) -> None:
    """One line on the manager's state: its copy's lag per standby, or a standby's copy's age."""
    if not isinstance(copy, dict):
        return
    if copy.get("role") == "source":
        lags = ", ".join(f"{name} lag {seen.get('lag')}s" for name, seen in
                         (copy.get("standbys") or {}).items())
        summary.line(f"manager state (CA, panel, queues) to the standbys: {lags or 'none'}")
        if copy.get("error"):
            summary.problem(f"manager state not copied for the standbys: {copy['error']}")
    elif copy.get("from"):
        summary.line(f"manager state: a copy from {copy['from']} (epoch {copy.get('epoch')}), "
                     f"{copy.get('age')}s old")
    else:
        summary.line("manager state: no copy received yet")
