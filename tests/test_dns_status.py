"""``clusterkit dns status``: every host's DNS server asked over DNS, lag and catch-up reported.

Each host runs a real DNS server on its own loopback address (same port, as
in production) serving its own copy of the zones directory; "replication" is
a file copy the test makes, or holds back.
"""

from __future__ import annotations

import json
import shutil
import time

import dns.name
import pytest
from typer.testing import CliRunner

from clusterkit.cli import get_app
from conftest import write_cluster
from dns_support import ServerThread, free_port, write_zones
from support import LoopThread, wait_for

PREFIX = "127.87.2"
runner = CliRunner()



@pytest.fixture
def hosts(tmp_path, pm):
    port = free_port(f"{PREFIX}.1")
    cfg = write_cluster(tmp_path / "cluster.toml", PREFIX, nodes=2,
                        extra=f'\n[dns]\nport = {port}\nzones_dir = "/zones"\n')
    dirs = {name: tmp_path / name / "zones" for name in ("manager", "node1", "node2")}
    for d in dirs.values():
        write_zones(d)
    addrs = {"manager": f"{PREFIX}.1", "node1": f"{PREFIX}.11", "node2": f"{PREFIX}.12"}
    servers = {n: ServerThread(dirs[n], addrs[n], port) for n in dirs}
    for s in servers.values():
        s.__enter__()
    try:
        yield {"cfg": cfg, "dirs": dirs, "servers": servers, "port": port, "app": get_app(pm)}
    finally:
        for s in servers.values():
            s.__exit__(None, None, None)


def status(h, cfg=None):
    result = runner.invoke(h["app"], ["dns", "status", "--json", "-c", str(cfg or h["cfg"])])
    return result.exit_code, json.loads(result.stdout)


def replicate(h, node: str) -> None:
    for f in h["dirs"]["manager"].glob("*.zone"):
        shutil.copy2(f, h["dirs"][node] / f.name)


def serial(h, host: str, zone: str = "example.com.") -> int:
    return h["servers"][host].server.zones[dns.name.from_text(zone)].serial


def test_a_lagging_host_is_reported_until_it_catches_up(hosts):
    code, report = status(hosts)
    assert code == 0 and report["converged"], report
    assert {r["host"] for r in report["hosts"]} == {"manager", "node1", "node2"}

    added = runner.invoke(hosts["app"], ["dns", "record", "add", "example.com", "lag", "A",
                                         "192.0.2.44", "-c", str(hosts["cfg"]), "--json"])
    assert added.exit_code == 0, added.output
    new = json.loads(added.stdout)["serial"]
    replicate(hosts, "node1")  # node2's copy is held back
    wait_for(lambda: serial(hosts, "manager") == new and serial(hosts, "node1") == new,
             what="manager and node1 to reload")

    code, report = status(hosts)
    assert code == 1 and not report["converged"]
    rows = {r["host"]: r for r in report["hosts"]}
    assert rows["manager"]["converged"] and rows["node1"]["converged"]
    assert rows["node2"]["lagging"] == ["example.com"]
    assert rows["node2"]["zones"]["example.com"] == 2024010101 and report["zones"]["example.com"] == new
    human = runner.invoke(hosts["app"], ["dns", "status", "-c", str(hosts["cfg"])])
    assert human.exit_code == 1
    assert f"lagging example.com (serial 2024010101 < {new})" in human.stdout
    assert "NOT converged" in human.stdout

    replicate(hosts, "node2")
    wait_for(lambda: serial(hosts, "node2") == new, what="node2 to catch up")
    code, report = status(hosts)
    assert code == 0 and report["converged"], report


def test_a_missing_zone_and_a_silent_host_are_reported(hosts, tmp_path):
    (hosts["dirs"]["node1"] / "example.org.zone").unlink()
    wait_for(lambda: not any(str(o) == "example.org." for o in hosts["servers"]["node1"].server.zones),
             what="node1 to drop example.org")
    cfg = tmp_path / "with-node3.toml"
    cfg.write_text(hosts["cfg"].read_text().replace(
        "\n[dns]", f'\n[[node]]\nname = "node3"\nip = "{PREFIX}.13"\ntransport = "local"\n'
                   f'root = "{tmp_path}/node3"\n\n[dns]'))
    code, report = status(hosts, cfg)
    assert code == 1
    rows = {r["host"]: r for r in report["hosts"]}
    assert rows["node1"]["missing"] == ["example.org"] and rows["node1"]["answering"]
    assert not rows["node3"]["answering"] and not rows["node3"]["converged"]
    assert rows["node2"]["converged"]


def test_an_extra_zone_is_found_through_the_local_control_sockets(tmp_path, pm):
    """Daemons of this machine tell which zones they serve: one deleted on the manager shows."""
    from clusterkit.runtime import Runtime

    port = free_port(f"{PREFIX}.1")
    cfg = write_cluster(tmp_path / "cluster.toml", PREFIX, nodes=2,
                        extra=f'\n[dns]\nport = {port}\nzones_dir = "/zones"\n')
    for name in ("manager", "node1", "node2"):
        write_zones(tmp_path / name / "zones")
    looper = LoopThread()
    call = looper.call

    runtimes = [Runtime(str(cfg), pm, name, watch_config=False)
                for name in ("manager", "node1", "node2")]
    try:
        for rt in runtimes:
            call(rt.start())
        # The manager's first full sync would delete a zone it does not have: plant the extra
        # zone on node1 once that sync is done (only the hourly safety net would remove it).
        sync = runtimes[0].components.get("sync")
        deadline = time.monotonic() + 20
        while sync is not None and time.monotonic() < deadline and any(
                n["runs"] == 0 or n["pending"] for n in sync.status()["nodes"].values()):
            time.sleep(0.05)
        (tmp_path / "node1" / "zones" / "gone.example.zone").write_text(
            "$TTL 60\n@ SOA ns hm 1 1 1 1 1\n@ NS ns\nns A 192.0.2.1\n")
        while time.monotonic() < deadline and "gone.example." not in \
                call(_zones_of(runtimes[1])):
            time.sleep(0.05)
        result = runner.invoke(get_app(pm), ["dns", "status", "--json", "-c", str(cfg)])
        report = json.loads(result.stdout)
        rows = {r["host"]: r for r in report["hosts"]}
        assert result.exit_code == 1
        assert rows["node1"]["extra"] == ["gone.example"] and not rows["node1"]["converged"]
        assert all(r["zone_set_checked"] for r in rows.values())
        assert rows["manager"]["converged"] and rows["node2"]["converged"]
        human = runner.invoke(get_app(pm), ["dns", "status", "-c", str(cfg)])
        assert "extra gone.example (not on the manager)" in human.stdout
    finally:
        for rt in reversed(runtimes):
            call(rt.stop())
        looper.close()


async def _zones_of(runtime) -> dict:
    return runtime.status()["dns"]["zones"]


def test_a_wildcard_listen_is_asked_at_the_host_ip():
    from clusterkit.config import Host
    from clusterkit_dns.convergence import dns_address
    from clusterkit_dns.settings import DnsSettings

    host = Host(name="node1", ip="10.0.0.11", role="node")
    assert dns_address(DnsSettings(port=5353, listen=("0.0.0.0",)), host) == ("10.0.0.11", 5353)
    assert dns_address(DnsSettings(port=53, listen=("::", "10.9.9.9")), host) == ("10.9.9.9", 53)
    assert dns_address(DnsSettings(), host) == ("10.0.0.11", 53)
