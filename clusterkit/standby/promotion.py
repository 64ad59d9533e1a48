"""Promotion and demotion of a manager: the epoch, the definition rewritten, the role switch.

A promoted standby rewrites its own definition file so that it is
``[manager]`` (with the cluster's ``public_ips`` and ``engine``) and the
manager it replaces one of the ``[[standby]]``, each keeping its own name, ip,
root, transport, options and priority. The file is then what any manager
runs from: the view it publishes tells every node and the old manager who
manages now, under the new epoch.
"""

from __future__ import annotations

import asyncio
import logging
import os

import tomlkit

from clusterkit.config import PRIORITY, build_cluster
from clusterkit.definition.files import write_atomic
from clusterkit.definition.source import DEFINITION_MODE, read_definition
from clusterkit.standby import epoch, state
from clusterkit.sync import definition

log = logging.getLogger("clusterkit.standby")

CLUSTER_WIDE = ("public_ips", "engine")  # [manager] keys that belong to whoever manages


def swap(text: str, standby: str) -> str:
    """The definition ``text`` with ``standby`` as ``[manager]`` and the manager a standby."""
    doc = tomlkit.parse(text)
    manager = doc["manager"]
    standbys = doc.get("standby", [])
    index = next((i for i, s in enumerate(standbys) if s.get("name") == standby), None)
    if index is None:
        raise ValueError(f"{standby!r} is not a [[standby]] of this definition")
    entry = standbys[index]
    promoted, demoted = tomlkit.table(), tomlkit.table()
    for key, value in entry.items():
        promoted[key] = value
    for key in CLUSTER_WIDE:
        if key in manager:
            promoted[key] = manager[key]
    for key, value in manager.items():
        if key not in CLUSTER_WIDE:
            demoted[key] = value
    # priorities follow their hosts, not the role (the defaults differ by role)
    promoted["priority"] = entry.get("priority", PRIORITY["standby"])
    demoted["priority"] = manager.get("priority", PRIORITY["manager"])
    doc["manager"] = promoted
    standbys[index] = demoted
    return tomlkit.dumps(doc)


def restore_manager_only(text: str, options: dict[str, dict]) -> str:
    """``text`` with each node's options the view left out put back (from the manager's file)."""
    if not options:
        return text
    doc = tomlkit.parse(text)
    for entry in doc.get("node", []):
        missing = {k: v for k, v in options.get(entry.get("name"), {}).items()
                   if k not in entry.get("options", {})}
        if missing:
            entry.setdefault("options", tomlkit.inline_table()).update(missing)
    return tomlkit.dumps(doc)


def _rewrite(runtime) -> None:
    """Make this host ``[manager]`` in its own definition file (checked before it is written)."""
    path = os.path.realpath(runtime.config_path)
    text = read_definition(path)
    if definition.HEADER.match(text):  # a received view: its header and notice no longer hold
        text = text.split("\n", 1)[1].removeprefix(definition.NOTICE)
    text = restore_manager_only(swap(text, runtime.host.name), state.manager_only_options(runtime))
    build_cluster(text, runtime.config_path, runtime.pm)
    write_atomic(path, text, DEFINITION_MODE)


def received_epoch(runtime) -> int:
    """The epoch of the view in this host's inbox (0: none or unreadable)."""
    try:
        view = definition.read_view(definition.view_path(runtime))
    except ValueError:
        return 0
    return view.epoch if view is not None else 0


async def promote(runtime, why: str) -> dict:
    """Act as the manager under a new epoch; ``promoted`` is false when it already does."""
    if runtime.is_manager:
        return {"promoted": False, "epoch": epoch.read(runtime.state_dir)}
    seen = max(epoch.read(runtime.state_dir), received_epoch(runtime))
    new = await asyncio.to_thread(epoch.raise_to, runtime.state_dir, seen + 1)
    if runtime.host.role == "standby":
        await asyncio.to_thread(_rewrite, runtime)
    log.warning("%s promoted to manager, epoch %d: %s", runtime.host.name, new, why)
    await runtime.switch_role("manager", f"promoted, epoch {new}: {why}")
    return {"promoted": True, "epoch": new}


async def demote(runtime, why: str) -> dict:
    """Stop acting as the manager (the definition is left to the new manager's view)."""
    changed = await runtime.switch_role("standby", f"demoted: {why}")
    return {"demoted": changed, "epoch": epoch.read(runtime.state_dir)}
