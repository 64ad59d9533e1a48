"""``[[panelsync]]``: directories replicated to every node, each with a post-sync command."""

from __future__ import annotations

from dataclasses import dataclass

from clusterkit.config import SyncSet
from clusterkit.definition.values import name_problem, read_number, sync_path_problem

DATA_SET = "panel-data"
KEYS = ("name", "path", "post_sync", "exclude", "timeout")


@dataclass(frozen=True)
class PanelSyncEntry:
    name: str
    path: str
    post_sync: str = ""
    exclude: tuple[str, ...] = ()
    timeout: float = 60.0


def parse_panelsync(value, report) -> tuple[PanelSyncEntry, ...]:
    """``parse(value, report)`` for the ``panelsync`` section: an array of tables."""
    if value == {}:
        return ()
    if not isinstance(value, list):
        report("", "must be an array of tables: [[panelsync]]")
        return ()
    entries: list[PanelSyncEntry] = []
    for i, item in enumerate(value):
        key = f"[{i}]"
        if not isinstance(item, dict):
            report(key, "must be a table")
            continue
        for unknown in sorted(set(item) - set(KEYS)):
            report(f"{key}.{unknown}", f"unknown key (known: {', '.join(KEYS)})")
        name, path = item.get("name"), item.get("path")
        post_sync, exclude = item.get("post_sync", ""), item.get("exclude", [])
        timeout = read_number(item, "timeout", float, None, 0.001, 3600, report, f"{key}.timeout")
        ok = timeout is not None or "timeout" not in item
        if name is None:
            report(f"{key}.name", "is required")
            ok = False
        elif name_problem(name):
            report(f"{key}.name", name_problem(name))
            ok = False
        elif name == DATA_SET or any(e.name == name for e in entries):
            report(f"{key}.name", f"{name!r} is taken ({DATA_SET!r} is the panel's own data)")
            ok = False
        if not isinstance(path, str) or not path.startswith("/"):
            report(f"{key}.path", f"is required: an absolute directory path (got {path!r})")
            ok = False
        elif sync_path_problem(path):
            report(f"{key}.path", sync_path_problem(path))
            ok = False
        if not isinstance(post_sync, str):
            report(f"{key}.post_sync", f"must be a command string, not {post_sync!r}")
            ok = False
        if not isinstance(exclude, list) or not all(isinstance(x, str) for x in exclude):
            report(f"{key}.exclude", "must be a list of rsync patterns")
            ok = False
        if ok:
            entries.append(PanelSyncEntry(name, path, post_sync, tuple(exclude), timeout or 60.0))
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
