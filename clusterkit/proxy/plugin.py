"""The native proxy as the default ``clusterkit_lb_engine`` (``trylast``: others may override).

``options = { proxy_workers = N }`` on the ``[manager]`` table runs the proxy in
N processes sharing the listeners (``SO_REUSEPORT``); ``"auto"`` is one per
CPU this process may run on, like HAProxy's default ``nbthread``. The
default is one.
"""

import os

from clusterkit import hookimpl
from clusterkit.proxy.engine import Engine


@hookimpl(trylast=True)
def clusterkit_lb_engine(runtime):
    workers = runtime.host.options.get("proxy_workers", 1)
    if workers == "auto":
        workers = min(64, len(os.sched_getaffinity(0)))
    if not isinstance(workers, int) or isinstance(workers, bool) or not 1 <= workers <= 64:
        raise ValueError(f"{runtime.config_path}: manager.options.proxy_workers: "
                         f"{workers!r} must be \"auto\" or an integer 1..64")
    return Engine(registry=runtime.registry, workers=workers)
