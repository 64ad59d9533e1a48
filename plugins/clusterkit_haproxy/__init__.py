"""HAProxy as a load-balancing engine driven by clusterkit (see docs/load-balancing.md).

The engine is registered under the name ``haproxy``
(``clusterkit_register_engines``, with what it can carry): a policy with
``engine = "haproxy"`` (or every policy, with ``[manager] engine =
"haproxy"``) goes through it. ``haproxy_binary`` in the manager's options
names another binary than ``haproxy`` on the PATH.
"""

import os

from clusterkit import hookimpl
from clusterkit_haproxy.config import BALANCE, SUPPORTS, cannot_carry
from clusterkit_haproxy.engine import HAProxyEngine
from clusterkit_haproxy.process import HAProxyError, check_binary

__all__ = ["HAProxyEngine", "HAProxyError", "SUPPORTS", "cannot_carry", "check_binary",
           "create", "unavailable"]


def create(runtime) -> HAProxyEngine:
    """The engine for this manager: HAProxy's files under ``STATE_DIR/HOST/haproxy``."""
    binary = runtime.host.options.get("haproxy_binary", "haproxy")
    problem = binary_problem(binary)
    if problem:
        raise ValueError(f"{runtime.config_path}: manager.options.haproxy_binary: {problem}")
    return HAProxyEngine(os.path.join(runtime.state_dir, "haproxy"), binary=binary,
                         registry=runtime.registry)


def unavailable(binary: str = "haproxy") -> str | None:
    """Why HAProxy cannot run here (missing, too old), or ``None``."""
    try:
        check_binary(binary)
    except HAProxyError as exc:
        return str(exc)
    return None


def binary_problem(value) -> str | None:
    if not isinstance(value, str) or not value or "\n" in value or "\0" in value:
        return f"must be a command name or path, not {value!r}"
    return None


@hookimpl
def clusterkit_register_engines(register):
    from clusterkit.registry import EngineKind

    register(EngineKind("haproxy", create=create, schedulers=tuple(BALANCE), persistence=True,
                        proxy_protocols=tuple(sorted(SUPPORTS["proxy_protocol"])), handlers=False,
                        unavailable=unavailable,
                        description="HAProxy 2.2+ (master-worker, seamless reloads) driven by clusterkit"))


@hookimpl
def clusterkit_host_options(register):
    from clusterkit.definition.tables import Key

    register("haproxy_binary", Key(str, check=binary_problem), roles=("manager",))
