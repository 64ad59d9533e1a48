"""The plugin host: clusterkit's plugin manager, built by a factory, never an import-time global."""

from __future__ import annotations

import importlib.metadata
import os
from dataclasses import dataclass

import pluggy

from clusterkit import hookspecs
from clusterkit.registry import Registry

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


class ClusterkitPluginManager(pluggy.PluginManager):
    """pluggy's manager with what clusterkit keeps about its plugins (as pytest's does).

    ``failed``: entry points that did not load; ``dists``: the distribution of
    each plugin loaded from an entry point; ``disabled``: the names blocked by
    ``CLUSTERKIT_DISABLE_PLUGINS``; ``registry``: the kinds the plugins
    registered, collected the first time it is asked for (after every plugin
    is registered).
    """

    def __init__(self) -> None:
        super().__init__(GROUP)
        self.add_hookspecs(hookspecs)
        self.failed: list[FailedPlugin] = []
        self.dists: dict[str, importlib.metadata.Distribution] = {}
        self.disabled: set[str] = set()
        self._registry: Registry | None = None

    @property
    def registry(self) -> Registry:
        """The registered kinds; a kind registered twice raises :class:`RegistryError` each time."""
        if self._registry is None:
            self._registry = Registry.collect(self)
        return self._registry

    def load_entrypoints(self) -> None:
        """Register every plugin of the ``clusterkit`` entry-point group not disabled.

        Not pluggy's ``load_setuptools_entrypoints``: that one lets the first
        plugin that fails to import end the loading (and with it every
        command, ``plugins list`` included). Here a failing plugin is recorded
        in ``failed`` with its error and the others still load.
        """
        self.disabled = disabled_plugins()
        for name in self.disabled:
            self.set_blocked(name)
        for ep in importlib.metadata.entry_points(group=GROUP):
            if self.is_blocked(ep.name) or self.has_plugin(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not break the CLI
                self.failed.append(FailedPlugin(ep.name, ep.value, f"{type(exc).__name__}: {exc}"))
                continue
            self.register(plugin, name=ep.name)
            self.dists[ep.name] = ep.dist


def get_plugin_manager(load_entrypoints: bool = True) -> ClusterkitPluginManager:
    """Build a plugin manager: hookspecs, then entry points, then ``check_pending``.

    Tests call this with ``load_entrypoints=False`` and register what they need.
    """
    pm = ClusterkitPluginManager()
    if load_entrypoints:
        pm.load_entrypoints()
    pm.check_pending()
    return pm


def describe_plugins(pm: ClusterkitPluginManager) -> list[dict]:
    """One dict per plugin for ``clusterkit plugins list``: name, version, source, hooks, state."""
    rows = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:
            continue
        dist = pm.dists.get(name)
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
    for name in sorted(pm.disabled):
        rows.append({"name": name, "module": "", "version": "", "source": "",
                     "hooks": [], "state": "disabled"})
    for failed in pm.failed:
        rows.append({"name": failed.name, "module": failed.value, "version": "",
                     "source": "", "hooks": [], "state": f"failed: {failed.error}"})
    return sorted(rows, key=lambda row: row["name"])
