"""The plugin host: a factory for the pluggy manager, never an import-time global."""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass

import pluggy

from clusterkit import hookspecs

GROUP = "clusterkit"


@dataclass
class FailedPlugin:
    """An entry point that could not be loaded: shown by ``plugins list``, not fatal."""

    name: str
    value: str
    error: str


def disabled_plugins() -> set[str]:
    """Names in ``CLUSTERKIT_DISABLE_PLUGINS`` (comma-separated)."""
    raw = os.environ.get("CLUSTERKIT_DISABLE_PLUGINS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def get_plugin_manager(load_entrypoints: bool = True) -> pluggy.PluginManager:
    """Build a plugin manager: hookspecs, then entry points, then ``check_pending``.

    A plugin that fails to import is recorded in ``pm.failed`` (name and error)
    instead of taking the whole program down. Tests call this with
    ``load_entrypoints=False`` and register what they need.
    """
    pm = pluggy.PluginManager(GROUP)
    pm.add_hookspecs(hookspecs)
    pm.failed = []
    pm.dists = {}
    if load_entrypoints:
        blocked = disabled_plugins()
        for name in blocked:
            pm.set_blocked(name)
        for ep in importlib.metadata.entry_points(group=GROUP):
            if ep.name in blocked or pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not break the CLI
                pm.failed.append(FailedPlugin(ep.name, ep.value, f"{type(exc).__name__}: {exc}"))
                continue
            pm.register(plugin, name=ep.name)
            pm.dists[ep.name] = ep.dist
    pm.check_pending()
    return pm


def describe_plugins(pm: pluggy.PluginManager) -> list[dict]:
    """One dict per plugin for ``clusterkit plugins list``: name, version, source, hooks, state."""
    rows = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        dist = getattr(pm, "dists", {}).get(name)
        module = getattr(plugin, "__name__", type(plugin).__name__)
        hooks = sorted(h.name for h in pm.get_hookcallers(plugin) or [])
        builtin = dist is not None and dist.metadata["Name"] == "clusterkit"
        rows.append({
            "name": name,
            "module": module,
            "version": dist.version if dist is not None else "",
            "source": "builtin" if builtin else "third-party",
            "hooks": hooks,
            "state": "loaded",
        })
    for name in sorted(disabled_plugins()):
        rows.append({"name": name, "module": "", "version": "", "source": "",
                     "hooks": [], "state": "disabled"})
    for failed in pm.failed:
        rows.append({"name": failed.name, "module": failed.value, "version": "",
                     "source": "", "hooks": [], "state": f"failed: {failed.error}"})
    return sorted(rows, key=lambda row: row["name"])
