"""The DNS management plugin: transfers, NOTIFY, health-aware names, ``dns zone|record|status``.

Registered beside the ``dns`` plugin (entry point ``dns-management``). It
attaches to the DNS server of each host (``runtime.components["dns"]``), so
its start runs after that server's (``trylast``) and its stop before
(``tryfirst``). On every host it answers AXFR/IXFR from the configured
secondaries; on the manager it also sends NOTIFY and writes health-aware names.
"""

from __future__ import annotations

import os

from clusterkit import hookimpl
from clusterkit_dns.journal import History
from clusterkit_dns.healthnames import HealthNames
from clusterkit_dns.notify import Notifier
from clusterkit_dns.settings import settings_of
from clusterkit_dns.xfr import Transfers
from clusterkit_dns.zonestore import ZoneStore

COMPONENT = "dns-management"
HISTORY_DIR = "dns-ixfr"  # under the host's state directory: one file per zone


@hookimpl
def clusterkit_register_commands(groups):
    """``dns zone|record|status`` join the ``dns`` noun of the DNS plugin."""
    from clusterkit_dns.cli_zones import register

    register(groups.group("dns"))


class Management:
    """What this plugin keeps per host, attached to one DNS server object."""

    def __init__(self, runtime, server):
        self.runtime = runtime
        self.server = server
        settings = settings_of(runtime.cluster)
        mgmt = settings.management
        self.transfers = Transfers(server, mgmt)
        self.history = History(os.path.join(runtime.state_dir, HISTORY_DIR), mgmt.ixfr_history)
        self._route(mgmt)
        self.notifier = self.health = None
        if runtime.is_manager:
            self.notifier = Notifier(server, mgmt, [ip for ip, _ in settings.addresses(runtime.host)])
            self.notifier.start()
            store = ZoneStore(runtime.local_path(settings.zones_dir))
            self.health = HealthNames(runtime, store, mgmt)
            self.health.poke()

    def configure(self) -> None:
        mgmt = settings_of(self.runtime.cluster).management
        self.transfers.configure(mgmt)
        self._route(mgmt)
        if self.notifier is not None:
            self.notifier.configure(mgmt)
            self.health.configure(mgmt)

    def _route(self, mgmt) -> None:
        """Transfers go through us only when some secondary may pull: the TCP hot path skips
        even the query-type test otherwise (the server then refuses AXFR itself). The IXFR
        history is kept only then too."""
        self.history.depth = mgmt.ixfr_history
        self.server.transfers = self.transfers if mgmt.secondaries else None
        self.server.history = self.history if mgmt.secondaries and mgmt.ixfr_history else None

    async def stop(self) -> None:
        if self.server.transfers is self.transfers:
            self.server.transfers = None
        if self.server.history is self.history:
            self.server.history = None
        await self.transfers.stop()
        if self.notifier is not None:
            await self.notifier.stop()
            await self.health.stop()

    def status(self) -> dict:
        report = {"transfers": self.transfers.stats}
        if self.notifier is not None:
            report["notify"] = self.notifier.status()
            report["health_names"] = self.health.status()
        return report


@hookimpl(trylast=True)
async def clusterkit_start(runtime):
    """Async like the DNS plugin's start: the runtime awaits results in call order, so this
    runs once that server exists."""
    server = runtime.components.get("dns")
    if server is not None:
        runtime.components[COMPONENT] = Management(runtime, server)


@hookimpl(trylast=True)
async def clusterkit_reload(runtime, old, new):
    """Follow the DNS plugin: a restarted server gets a fresh attachment, else reconfigure."""
    current = runtime.components.get(COMPONENT)
    server = runtime.components.get("dns")
    if current is not None and current.server is server:
        current.configure()
        return
    if current is not None:
        await runtime.stop_component(COMPONENT)
    if server is not None:
        runtime.components[COMPONENT] = Management(runtime, server)


@hookimpl(tryfirst=True)
async def clusterkit_stop(runtime):
    await runtime.stop_component(COMPONENT)


@hookimpl
def clusterkit_membership_changed(runtime, node, service, old, new, reason):
    current = runtime.components.get(COMPONENT)
    if current is not None and current.health is not None:
        current.health.poke()


@hookimpl
def clusterkit_status(runtime):
    current = runtime.components.get(COMPONENT)
    return {"dns_management": current.status()} if current is not None else None
