"""HAProxy as a load-balancing engine driven by clusterkit (see docs/load-balancing.md).

``options = { engine = "haproxy" }`` on the ``[manager]`` table makes this
plugin's :class:`~clusterkit_haproxy.engine.HAProxyEngine` the manager's
engine; ``haproxy_binary`` names another binary than ``haproxy`` on the PATH.
Without the option it returns ``None`` and the native proxy is used.
"""

import os

from clusterkit import hookimpl
from clusterkit_haproxy.config import SUPPORTS, cannot_carry
from clusterkit_haproxy.engine import HAProxyEngine
from clusterkit_haproxy.process import HAProxyError, check_binary

__all__ = ["HAProxyEngine", "HAProxyError", "SUPPORTS", "cannot_carry", "check_binary"]


@hookimpl
def clusterkit_lb_engine(runtime):
    options = runtime.host.options
    if options.get("engine") != "haproxy":
        return None
    binary = options.get("haproxy_binary", "haproxy")
    if not isinstance(binary, str) or not binary:
        raise ValueError(f"{runtime.config_path}: manager.options.haproxy_binary: "
                         f"must be a command name or path, not {binary!r}")
    return HAProxyEngine(os.path.join(runtime.state_dir, "haproxy"), binary=binary,
                         registry=runtime.registry)
