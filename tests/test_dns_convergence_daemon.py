"""The manager daemon checks DNS convergence itself: status, the summary's DNS column, an alert.

A real manager daemon (subprocess) and, at node1's address, a real DNS server
serving an older copy of the zones (its own directory: replication does not
reach it, the test "replicates" by copying). Alerts go to a real local HTTP
receiver.
"""

from __future__ import annotations

import shutil
import subprocess

import dns.name
import pytest

from clusterkit.config import build_cluster
from clusterkit.definition.tables import ConfigError
from conftest import write_cluster
from dns_support import ServerThread, free_port, write_zones
from support import LoopThread, wait_for
from sync_support import CLUSTERKIT, Daemon
from test_alerts import Receiver
from test_status_summary import rows_of

PREFIX = "127.91.20"
OLD, NEW = 2024010101, 2024010102


def status_text(config) -> str:
    return subprocess.run([*CLUSTERKIT, "status", "-c", str(config)], capture_output=True,
                          text=True, timeout=30).stdout


def convergence(daemon) -> dict:
    return daemon.query("status").get("dns_convergence") or {}


def host(daemon, name: str) -> dict:
    return (convergence(daemon).get("hosts") or {}).get(name) or {}


def dns_alerts(receiver, state: str) -> list[dict]:
    return [a for a in receiver.alerts() if a["kind"] == "dns-not-converged" and a["state"] == state]


@pytest.fixture
def receiver():
    r = Receiver(f"{PREFIX}.1")
    yield r
    r.close()


def test_a_lagging_node_is_seen_summarised_alerted_and_resolved(tmp_path, receiver):
    port = free_port(f"{PREFIX}.1")
    config = write_cluster(tmp_path / "cluster.toml", PREFIX, nodes=1, extra=(
        f'\n[dns]\nport = {port}\nzones_dir = "/zones"\nconvergence_interval = 0.5\n'
        f'\n[alerts]\ngroup_wait = 0.3\ninterval = 0.3\nstartup_grace = 0\ndns_converge = 1\n'
        f'webhook = {{ url = "{receiver.url}", timeout = 2 }}\n'))
    manager_zones = write_zones(tmp_path / "manager" / "zones")
    com = manager_zones / "example.com.zone"
    com.write_text(com.read_text().replace(str(OLD), str(NEW)))
    held = write_zones(tmp_path / "node1-held")  # node1's server: the old serial
    node1 = ServerThread(held, f"{PREFIX}.11", port).__enter__()
    try:
        with Daemon(config) as manager:
            row = wait_for(lambda: (h := host(manager, "node1")) and h, what="the first check")
            assert row["converged"] is False and row["lagging"] == 1 and row["missing"] == 0
            assert row["state"] == "lagging 1 zone" and row["answering"]
            assert host(manager, "manager")["converged"] is True
            report = convergence(manager)
            assert report["converged"] is False and report["not_converged_since"] is not None
            assert report["zones"] >= 2 and report["interval"] == 0.5

            # after three intervals it is a problem; the node's row has the DNS column
            out = wait_for(lambda: (o := status_text(config)) and "dns of node1 not converged" in o
                           and o, what="the summary's problem")
            assert rows_of(out.splitlines(), "NODE")["node1"]["DNS"] == "lagging 1 zone"
            assert "  ! dns of node1 not converged for " in out
            assert "dns of manager" not in out
            wait_for(lambda: dns_alerts(receiver, "firing"), what="the dns-not-converged alert")
            alert = dns_alerts(receiver, "firing")[0]
            assert alert["node"] == "node1" and "lagging 1 zone" in alert["text"]

            # replication lands: converged, the alert resolves, the column says so
            for f in manager_zones.glob("*.zone"):
                shutil.copy2(f, held / f.name)
            wait_for(lambda: node1.server.zones[dns.name.from_text("example.com.")].serial == NEW,
                     what="node1 to reload")
            wait_for(lambda: convergence(manager).get("converged") is True, what="convergence")
            assert convergence(manager)["not_converged_since"] is None
            wait_for(lambda: dns_alerts(receiver, "resolved"), what="the resolved alert")
            out = status_text(config)
            assert rows_of(out.splitlines(), "NODE")["node1"]["DNS"] == "converged"
            assert "dns of node1" not in out
            assert len(dns_alerts(receiver, "firing")) == 1, "fired once"

            # node1's DNS stops answering: said so, since when it changed
            converged_since = host(manager, "node1")["since"]
            node1.__exit__(None, None, None)
            node1 = None
            row = wait_for(lambda: (h := host(manager, "node1")) and not h["answering"] and h,
                           what="node1 not answering")
            assert row["state"] == "not answering" and row["error"] and row["since"] > converged_since
            out = wait_for(lambda: (o := status_text(config)) and "dns of node1 not converged" in o
                           and o, what="the summary's problem")
            assert rows_of(out.splitlines(), "NODE")["node1"]["DNS"] == "not answering"
    finally:
        if node1 is not None:
            node1.__exit__(None, None, None)


@pytest.mark.parametrize("value", ["0", "nan", "1e9", '"10"'])
def test_the_interval_is_a_checked_number(tmp_path, pm, value):
    config = write_cluster(tmp_path / "cluster.toml", PREFIX, nodes=1,
                           extra=f"\n[dns]\nconvergence_interval = {value}\n")
    with pytest.raises(ConfigError) as err:
        build_cluster(config.read_text(), str(config), pm)
    line = len(config.read_text().splitlines())
    assert f"cluster.toml:{line}: dns.convergence_interval" in str(err.value)


def test_only_the_manager_watches_and_a_reload_keeps_the_history(tmp_path, pm):
    """A restarted DNS server keeps the watch (and its "since"); disabling DNS stops it."""
    from clusterkit.runtime import Runtime

    port = free_port(f"{PREFIX}.1")

    def define(dns_table: str):
        return write_cluster(tmp_path / "cluster.toml", PREFIX, nodes=1,
                             extra=f"\n[dns]\nport = {port}\n{dns_table}\n")

    config = define('zones_dir = "/z"\nconvergence_interval = 0.5')
    for name in ("manager", "node1"):
        write_zones(tmp_path / name / "z")
        write_zones(tmp_path / name / "z2")
    looper = LoopThread()
    manager = looper.call(_started(Runtime(str(config), pm, "manager", watch_config=False)))
    node = looper.call(_started(Runtime(str(config), pm, "node1", watch_config=False)))
    try:
        assert "dns-convergence" not in node.components and "dns_convergence" not in node.status()
        watch = manager.components["dns-convergence"]
        report = wait_for(lambda: (r := looper.call(_status(manager))["dns_convergence"])
                          and r["converged"] and r, what="the first converged check")
        assert set(report["hosts"]) == {"manager", "node1"} and report["not_converged_since"] is None
        since = report["hosts"]["node1"]["since"]

        define('zones_dir = "/z2"\nconvergence_interval = 30')  # the server restarts
        assert looper.call(manager.reload())["changed"]
        assert manager.components["dns-convergence"] is watch
        report = looper.call(_status(manager))["dns_convergence"]
        assert report["interval"] == 30 and report["hosts"]["node1"]["since"] == since

        define('zones_dir = "/z2"\nenabled = false')
        looper.call(manager.reload())
        assert "dns-convergence" not in manager.components
        assert "dns_convergence" not in looper.call(_status(manager))
        define('zones_dir = "/z2"')
        looper.call(manager.reload())
        assert manager.components["dns-convergence"] is not watch
        assert looper.call(_status(manager))["dns_convergence"]["interval"] == 10
    finally:
        for runtime in (node, manager):
            looper.call(runtime.stop())
        looper.close()


async def _started(runtime):
    await runtime.start()
    return runtime


async def _status(runtime) -> dict:
    return runtime.status()
