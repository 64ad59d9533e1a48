"""The native proxy as the engine ``native`` (every policy's unless it names another).

``options = { proxy_workers = N }`` on the ``[manager]`` table runs the proxy in
N processes sharing the listeners (``SO_REUSEPORT``); ``"auto"`` is one per
CPU this process may run on, like HAProxy's default ``nbthread``. The
default is one; ``clusterkit init`` writes ``"auto"``. The option is declared
here (``clusterkit_host_options``), so the definition checks it with its line.
"""

from clusterkit import hookimpl
from clusterkit.registry import EngineKind
from clusterkit.definition.tables import Key
from clusterkit.definition.values import problem_of
from clusterkit.proxy.engine import Engine
from clusterkit.proxy.supervisor import process_count


@hookimpl
def clusterkit_host_options(register):
    register("proxy_workers", Key(object, check=problem_of(process_count)), roles=("manager",),
             initial="auto")


@hookimpl
def clusterkit_register_engines(register):
    register(EngineKind("native", create=native_engine, handlers=True,
                        description="clusterkit's own asyncio L4 proxy: FTP-aware, nothing to install"))


def native_engine(runtime) -> Engine:
    try:
        workers = process_count(runtime.host.options.get("proxy_workers", 1))
    except ValueError as exc:  # the definition's check says it first, with the line
        raise ValueError(f"{runtime.config_path}: manager.options.proxy_workers: {exc}") from None
    return Engine(registry=runtime.registry, workers=workers)
