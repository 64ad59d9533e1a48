"""``[[panelsync]]``: directories replicated to every node, each with a post-sync command."""

from __future__ import annotations

from dataclasses import dataclass

from clusterkit.config import SyncSet
from clusterkit.definition.tables import Key, Table, Tables
from clusterkit.definition.values import name_problem, sync_path_problem

DATA_SET = "panel-data"


@dataclass(frozen=True)
class PanelSyncEntry:
    name: str
    path: str
    post_sync: str = ""
    exclude: tuple[str, ...] = ()
    timeout: float = 60.0


PANELSYNC = Tables(Table({
    "name": Key(str, required=True, check=name_problem),
    "path": Key(str, required="an absolute directory path", check=sync_path_problem),
    "post_sync": Key(str, default=""), "exclude": Key(list, items=str, default=()),
    "timeout": Key(float, default=60.0, low=0.001, high=3600),
}))


def parse_panelsync(values: list[dict], report) -> tuple[PanelSyncEntry, ...]:
    """``parse`` of the ``[[panelsync]]`` section, given the entries :data:`PANELSYNC` let through."""
    entries: list[PanelSyncEntry] = []
    for i, entry in enumerate(values):
        if "name" not in entry or "path" not in entry:
            continue  # reported
        if entry["name"] == DATA_SET or any(e.name == entry["name"] for e in entries):
            report(f"[{i}].name", f"{entry['name']!r} is taken ({DATA_SET!r} is the panel's own data)")
            continue
        entries.append(PanelSyncEntry(**entry))
    return tuple(entries)


def entries(cluster) -> tuple[PanelSyncEntry, ...]:
    return tuple(cluster.sections.get("panelsync") or ())


def sync_sets(cluster) -> list[SyncSet]:
    """The panel's data dir (when the panel plugin is there) and every declared directory."""
    sets = []
    panel = cluster.sections.get("panel")
    if panel is not None and getattr(panel, "enabled", False):
        sets.append(SyncSet(name=DATA_SET, path=panel.data_dir, owner="panelsync",
                            key="panel.data_dir"))
    sets += [SyncSet(name=e.name, path=e.path, exclude=e.exclude, owner="panelsync",
                     key=f"panelsync[{i}].path")  # every entry is there: a bad one fails the load
             for i, e in enumerate(entries(cluster))]
    return sets
