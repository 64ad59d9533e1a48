"""The native proxy as the default ``clusterkit_lb_engine`` (``trylast``: others may override)."""

from clusterkit import hookimpl
from clusterkit.proxy.engine import Engine


@hookimpl(trylast=True)
def clusterkit_lb_engine(runtime):
    return Engine(registry=runtime.registry)
