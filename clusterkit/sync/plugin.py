"""The replication plugin: the manager replicates, nodes apply; both answer ``sync`` commands.

On the manager, a node seen up by health (``clusterkit_membership_changed``)
or named by ``clusterkit sync now`` is retried at once, whatever back-off was
pending.
"""

from __future__ import annotations

from clusterkit import hookimpl
from clusterkit.config import ConfigError, Problem
from clusterkit.sync import definition
from clusterkit.sync.applier import Applier
from clusterkit.sync.replicator import Replicator

NAME = "sync"
DEFINITION = "definition"  # runtime.components: the definition's publisher (manager) or receiver


@hookimpl
async def clusterkit_start(runtime):
    if runtime.is_manager:
        replicator = Replicator(runtime)
        await runtime.start_component(NAME, replicator)
        runtime.add_control("sync_status", replicator.status)
        runtime.add_control("sync_now", _now_command(replicator))
        runtime.add_control("sync_progress", replicator.progress)
    else:
        await runtime.start_component(NAME, Applier(runtime))
    await runtime.start_component(DEFINITION, definition.Published(runtime) if runtime.is_manager
                                  else definition.Received(runtime))


def _now_command(replicator: Replicator):
    def sync_now(nodes: list[str] | None = None, allow_delete: bool = False) -> dict:
        return _now(replicator, nodes, allow_delete)  # typed: the control socket checks it

    return sync_now


def _now(replicator: Replicator, nodes: list[str] | None, allow_delete: bool) -> dict:
    """Queue a full sync and cut the nodes' back-off short; returns at once (the CLI may poll)."""
    unknown = [n for n in nodes or () if n not in replicator.workers]
    if unknown:
        raise ValueError(f"no node named {', '.join(unknown)} (nodes: {', '.join(replicator.workers)})")
    command = f"clusterkit sync now{' --allow-delete' if allow_delete is True else ''}"
    seq = replicator.full_sync(nodes=nodes or None, allow_delete=allow_delete is True,
                               reason=f"requested ({command})")
    replicator.retry_now(nodes or None, command)
    return {"seq": seq, "nodes": nodes or list(replicator.workers)}


@hookimpl
def clusterkit_membership_changed(runtime, policy, node, service, old, new, reason):
    """A service of a node came up: the node is reachable again, catch up now."""
    replicator = runtime.components.get(NAME)
    if new == "up" and isinstance(replicator, Replicator):
        replicator.retry_now([node], f"health saw {service} up ({policy}: {old} -> up)")


@hookimpl
async def clusterkit_reload(runtime, old, new):
    await runtime.reload_component(NAME, old, new)
    await runtime.reload_component(DEFINITION, old, new)


@hookimpl
async def clusterkit_stop(runtime):
    await runtime.stop_component(DEFINITION)
    await runtime.stop_component(NAME)


@hookimpl
def clusterkit_status(runtime):
    report = {**(runtime.component_status(NAME) or {}), **(runtime.component_status(DEFINITION) or {})}
    return report or None


# ------------------------------------------- the definition travels (clusterkit.sync.definition)


@hookimpl
def clusterkit_sync_sets(cluster):
    taken = definition.reserved_problems(cluster)
    if taken:
        raise ConfigError(cluster.path, [Problem(key, f"{name!r} is reserved: names beginning "
                                                      f"{definition.RESERVED!r} are the built-in sets'")
                                         for key, name in taken])
    return [definition.sync_set(cluster)]


@hookimpl
async def clusterkit_applied(runtime, sync_set, paths):
    component = runtime.components.get(DEFINITION)
    if sync_set.name == definition.SET and isinstance(component, definition.Received):
        await component.take()


@hookimpl
def clusterkit_status_summary(report, summary):
    shown = report.get("definition")
    if not isinstance(shown, dict):
        return
    if "manager_serial" not in shown:  # the manager
        summary.line(f"definition: serial {shown.get('serial')} published to the nodes")
        return
    state = str(shown.get("state", ""))
    line = (f"definition: serial {shown.get('serial')}, the manager's "
            f"{shown.get('manager_serial')}: {state.splitlines()[0] if state else '?'}")
    if state.startswith(("refused", "older")):
        summary.problem(line)
    else:
        summary.line(line)
