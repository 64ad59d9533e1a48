"""The replication plugin: the manager replicates, nodes apply; both answer ``sync`` commands."""

from __future__ import annotations

from clusterkit import hookimpl
from clusterkit.sync.applier import Applier
from clusterkit.sync.replicator import Replicator

NAME = "sync"


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


def _now_command(replicator: Replicator):
    def sync_now(nodes: list[str] | None = None, allow_delete: bool = False) -> dict:
        return _now(replicator, nodes, allow_delete)  # typed: the control socket checks it

    return sync_now


def _now(replicator: Replicator, nodes: list[str] | None, allow_delete: bool) -> dict:
    unknown = [n for n in nodes or () if n not in replicator.workers]
    if unknown:
        raise ValueError(f"no node named {', '.join(unknown)} (nodes: {', '.join(replicator.workers)})")
    seq = replicator.full_sync(nodes=nodes or None, allow_delete=allow_delete is True,
                               reason="requested (clusterkit sync now"
                                      f"{' --allow-delete' if allow_delete is True else ''})")
    return {"seq": seq, "nodes": nodes or list(replicator.workers)}


@hookimpl
async def clusterkit_reload(runtime, old, new):
    await runtime.reload_component(NAME, old, new)


@hookimpl
async def clusterkit_stop(runtime):
    await runtime.stop_component(NAME)


@hookimpl
def clusterkit_status(runtime):
    return runtime.component_status(NAME)
