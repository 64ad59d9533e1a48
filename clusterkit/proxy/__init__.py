"""The native L4 load balancer: policies become listeners relaying to members.

``Engine`` (:mod:`clusterkit.proxy.engine`) is what the runtime drives;
:mod:`~clusterkit.proxy.listener` accepts (and stops at ``max_conn``),
:mod:`~clusterkit.proxy.pool` chooses members, :mod:`~clusterkit.proxy.relay`
moves the bytes, :mod:`~clusterkit.proxy.idle` times out silent sides,
:mod:`~clusterkit.proxy.proxyproto` writes PROXY headers and
:mod:`~clusterkit.proxy.handler` is the interface for protocol-aware services
(their data connections: :mod:`~clusterkit.proxy.data`).
"""

from clusterkit.proxy.engine import Engine
from clusterkit.proxy.handler import Handler, Session
from clusterkit.proxy.listener import ProxyError

__all__ = ["Engine", "Handler", "Session", "ProxyError"]
