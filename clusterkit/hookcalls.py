"""Calling hooks whose implementations may be async: one helper, every failure named.

pluggy is synchronous: an ``async def`` implementation only hands back its
coroutine. :func:`call_each` calls each plugin's implementation on its own
(through pluggy, in pluggy's order), so a result or an error always belongs to
one named plugin and one plugin raising never keeps pluggy from calling the
next; then it awaits the coroutines in that order.
"""

from __future__ import annotations

import asyncio
import inspect


class PluginError(Exception):
    """A plugin failed in a hook; the message names it (``plugin``: its name)."""

    plugin: str | None = None


def each_plugin(pm, name: str) -> list[tuple[str, object]]:
    """(plugin name, a caller of only that plugin's implementation of ``name``), in call order.

    pluggy calls the implementations last-registered first (``tryfirst`` and
    ``trylast`` aside): the reverse of ``get_hookimpls()``.
    """
    impls = getattr(pm.hook, name).get_hookimpls()
    return [(impl.plugin_name,
             pm.subset_hook_caller(name, remove_plugins=[i.plugin for i in impls if i is not impl]))
            for impl in reversed(impls)]


async def call_each(pm, name: str, *, keep_going: bool = False, timeout: float | None = None,
                    reverse: bool = False, **kwargs) -> list[PluginError]:
    """Call the hook ``name`` plugin by plugin; then await each async result in call order.

    Every implementation is called first (the synchronous ones do their work
    then, the async ones hand back their coroutine), then the coroutines run
    one after the other, each within ``timeout``. ``keep_going=False``
    (starting, reloading) raises the first failure as :class:`PluginError` and
    closes the coroutines not awaited; ``keep_going=True`` (stopping, events)
    returns the failures and lets every other plugin run. ``reverse`` awaits
    the results last first (stopping undoes starting).
    """
    pending: list[tuple[str, object]] = []
    errors: list[PluginError] = []

    def failed(plugin: str, exc: Exception) -> None:
        error = _plugin_error(plugin, name, exc)
        if not keep_going:
            for _, left in pending:  # never awaited: close them quietly
                getattr(left, "close", lambda: None)()
            raise error from exc
        errors.append(error)

    for plugin, caller in each_plugin(pm, name):
        try:
            pending.extend((plugin, result) for result in caller(**kwargs))
        except Exception as exc:
            failed(plugin, exc)
    if reverse:
        pending.reverse()
    while pending:
        plugin, result = pending.pop(0)
        if not inspect.isawaitable(result):
            continue
        try:
            await asyncio.wait_for(result, timeout)
        except Exception as exc:
            if isinstance(exc, asyncio.TimeoutError):
                exc = TimeoutError(f"did not finish within {timeout:g}s")
            failed(plugin, exc)
    return errors


def _plugin_error(plugin: str, hook: str, exc: Exception) -> PluginError:
    error = PluginError(f"plugin {plugin!r} failed in {hook}: {type(exc).__name__}: {exc}")
    error.plugin = plugin
    error.__cause__ = exc  # its traceback, when the error is logged rather than raised
    return error
