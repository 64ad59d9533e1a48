"""The native proxy as the default ``clusterkit_lb_engine`` (``trylast``: others may override).

``options = { proxy_workers = N }`` on the ``[manager]`` table runs the proxy in
N processes sharing the listeners (``SO_REUSEPORT``); ``"auto"`` is one per
CPU this process may run on, like HAProxy's default ``nbthread``. The
default is one.
"""

from clusterkit import hookimpl
from clusterkit.proxy.engine import Engine
from clusterkit.proxy.supervisor import process_count


@hookimpl(trylast=True)
def clusterkit_lb_engine(runtime):
    try:
        workers = process_count(runtime.host.options.get("proxy_workers", 1))
    except ValueError as exc:  # the definition's check says it first, with the line
        raise ValueError(f"{runtime.config_path}: manager.options.proxy_workers: {exc}") from None
    return Engine(registry=runtime.registry, workers=workers)
