"""The dns plugin inside clusterkit: [dns] section, sync set, Runtime lifecycle, CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import dns.asyncquery
import dns.message
import dns.query
import dns.rdatatype
import dns.rcode
import pytest
from typer.testing import CliRunner

from clusterkit.cli import get_app
from clusterkit.config import SyncSet, load_cluster
from clusterkit.definition.tables import ConfigError
from clusterkit.control import request
from clusterkit.plugins import get_plugin_manager
from clusterkit.runtime import Runtime, new_event_loop
from dns_support import ZONES, free_port, write_zones

MANAGER, PUBLIC, NODES = "127.83.3.1", "127.83.3.100", {"node1": "127.83.3.11", "node2": "127.83.3.12"}


def port_free_on_all(addresses) -> int:
    import socket

    for _ in range(50):
        port = free_port(addresses[0])
        try:
            for addr in addresses[1:]:
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(socket.AF_INET, kind) as s:
                        s.bind((addr, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no common free port")


def write_cluster(tmp_path, dns_table: str) -> str:
    nodes = "".join(f'\n[[node]]\nname = "{n}"\nip = "{ip}"\nroot = "{tmp_path}/{n}"\n'
                    for n, ip in NODES.items())
    text = (f'[cluster]\nname = "t"\nstate_dir = "{tmp_path}/state"\n\n'
            f'[manager]\nname = "manager"\nip = "{MANAGER}"\npublic_ips = ["{PUBLIC}"]\n'
            f'root = "{tmp_path}/manager"\n{nodes}\n[dns]\n{dns_table}\n')
    path = tmp_path / "cluster.toml"
    path.write_text(text)
    return str(path)


async def ask(addr, port, name="www.example.com", rdtype="A", tcp=False):
    q = dns.message.make_query(name, rdtype)
    if tcp:
        return await dns.asyncquery.tcp(q, addr, port=port, timeout=2)
    return await dns.asyncquery.udp(q, addr, port=port, timeout=2)


def run(coro):
    loop = new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def test_every_host_serves_the_zones(tmp_path):
    port = port_free_on_all([MANAGER, PUBLIC, *NODES.values()])
    path = write_cluster(tmp_path, f'port = {port}\nzones_dir = "/srv/zones"')
    for host in ("manager", *NODES):
        write_zones(tmp_path / host / "srv/zones")
    pm = get_plugin_manager()

    async def scenario():
        runtimes = [Runtime(path, pm, name, watch_config=False) for name in ("manager", *NODES)]
        for rt in runtimes:
            await rt.start()
        try:
            for addr in (MANAGER, PUBLIC, *NODES.values()):
                for tcp in (False, True):
                    m = await ask(addr, port, tcp=tcp)
                    assert m.rcode() == dns.rcode.NOERROR and m.answer, (addr, tcp)
            manager, node1, node2 = runtimes
            assert manager.components["dns"] is not node1.components["dns"]
            status = node1.status()["dns"]
            assert status["zones"]["example.com."]["serial"] == 2024010101
            assert status["listen"] == [f"{NODES['node1']}:{port}"]
            assert set(manager.status()["dns"]["listen"]) == {f"{MANAGER}:{port}", f"{PUBLIC}:{port}"}
            assert status["queries"]["NOERROR"] >= 2

            # a replicated batch landed on node1: served when the hook returns
            zone = tmp_path / "node1/srv/zones/new.test.zone"
            zone.write_text("$TTL 60\n@ SOA ns h 5 1 1 1 1\n@ NS ns\nns A 192.0.2.5\n")
            sset = next(s for s in node1.cluster.sync_sets if s.owner == "dns")
            for _ in range(2):  # idempotent
                for result in node1.hook.clusterkit_applied(runtime=node1, sync_set=sset,
                                                            paths=[str(zone)]):
                    if asyncio.iscoroutine(result):
                        await result
            m = await ask(NODES["node1"], port, "ns.new.test")
            assert m.answer and m.answer[0][0].address == "192.0.2.5"
            assert (await ask(NODES["node2"], port, "ns.new.test")).rcode() == dns.rcode.REFUSED

            # the control socket's dns-reload (what `clusterkit` commands can ask for)
            (tmp_path / "node2/srv/zones/new.test.zone").write_text(zone.read_text())
            result = await asyncio.to_thread(request, node2.state_dir, "dns-reload")
            assert result["changed"] is True and result["errors"] == []
            assert (await ask(NODES["node2"], port, "ns.new.test")).answer
            status = await asyncio.to_thread(request, node2.state_dir, "status")
            assert status["dns"]["zones"]["new.test."]["serial"] == 5
        finally:
            for rt in reversed(runtimes):
                await rt.stop()
        assert all("dns" not in rt.components for rt in runtimes)

    run(scenario())


def test_reload_moves_the_port_and_can_disable(tmp_path):
    old_port = free_port(MANAGER)
    path = write_cluster(tmp_path, f'port = {old_port}\nzones_dir = "/z"\nlisten = ["{MANAGER}"]')
    write_zones(tmp_path / "manager/z")
    pm = get_plugin_manager()

    async def scenario():
        rt = Runtime(path, pm, "manager", watch_config=False)
        await rt.start()
        try:
            assert (await ask(MANAGER, old_port)).answer
            new_port = free_port(MANAGER)
            write_cluster(tmp_path, f'port = {new_port}\nzones_dir = "/z"\nlisten = ["{MANAGER}"]')
            assert (await rt.reload())["changed"]
            assert (await ask(MANAGER, new_port, tcp=True)).answer
            with pytest.raises(dns.exception.Timeout):
                await dns.asyncquery.udp(dns.message.make_query("www.example.com", "A"), MANAGER,
                                         port=old_port, timeout=0.3)
            write_cluster(tmp_path, f'port = {new_port}\nzones_dir = "/z"\nenabled = false')
            await rt.reload()
            assert "dns" not in rt.components and "dns" not in rt.status()
        finally:
            await rt.stop()

    run(scenario())


def test_section_defaults_and_sync_set(tmp_path):
    path = write_cluster(tmp_path, "")
    cluster = load_cluster(path, get_plugin_manager())
    settings = cluster.sections["dns"]
    assert (settings.enabled, settings.port, settings.zones_dir, settings.listen) == \
        (True, 53, "/var/lib/clusterkit/zones", ())
    assert SyncSet(name="dns-zones", path="/var/lib/clusterkit/zones", owner="dns") in cluster.sync_sets
    assert settings.addresses(cluster.manager) == [(MANAGER, 53), (PUBLIC, 53)]
    assert settings.addresses(cluster.host("node1")) == [(NODES["node1"], 53)]
    path = write_cluster(tmp_path, "enabled = false")
    assert not any(s.owner == "dns" for s in load_cluster(path, get_plugin_manager()).sync_sets)


def test_bad_section_values_are_all_reported(tmp_path):
    path = write_cluster(tmp_path, 'port = 70000\nzones_dir = "zones"\nlisten = ["1.2.3", 5]\n'
                                   'enabled = "yes"\ncolour = "blue"')
    with pytest.raises(ConfigError) as info:
        load_cluster(path, get_plugin_manager())
    text = str(info.value)
    for key in ("dns.port", "dns.zones_dir", "dns.listen[0]", "dns.listen[1]", "dns.enabled",
                "dns.colour"):
        assert key in text, key
    assert "70000" in text and "'1.2.3'" in text


# ----------------------------------------------------------------------- CLI


def cli(*args):
    return CliRunner().invoke(get_app(get_plugin_manager()), list(args))


def test_cli_check(tmp_path):
    directory = write_zones(tmp_path)
    result = cli("dns", "check", str(directory / "example.com.zone"))
    assert result.exit_code == 0, result.output
    assert "example.com. ok: serial 2024010101" in result.output
    result = cli("dns", "check", "--json", str(directory / "example.org.zone"))
    assert '"serial": 7' in result.output
    (directory / "broken.test.zone").write_text("$TTL 1h\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nx MX x\n")
    result = cli("dns", "check", str(directory / "broken.test.zone"))
    assert result.exit_code == 2
    assert f"{directory}/broken.test.zone:4:" in result.output


def test_an_rrset_with_mixed_ttls_loads_with_a_warning_naming_file_and_line(tmp_path):
    """NSD warns and loads; so do we, and the RRset is served with its smallest TTL
    (RFC 2181 §5.2). A record from an $INCLUDE file is named by that file."""
    (tmp_path / "more.txt").write_text("x 50 A 192.0.2.9\nx 60 A 192.0.2.10\n")
    zone = tmp_path / "mixed.test.zone"
    zone.write_text("$TTL 1h\n@ SOA ns h 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n"
                    "m 100 A 192.0.2.7\nm 200 A 192.0.2.8\n$INCLUDE more.txt\n")
    result = cli("dns", "check", str(zone))
    assert result.exit_code == 0, result.output
    assert (f"warning: {zone}:6: m.mixed.test. TTL 200 does not match the TTL 100 of the A "
            f"RRset") in result.output
    assert f"warning: {tmp_path}/more.txt:2: x.mixed.test. TTL 60" in result.output
    from clusterkit_dns.zones import load_zone

    loaded = load_zone(str(zone))
    assert loaded.nodes[(b"m", b"mixed", b"test", b"")][dns.rdatatype.A][1].ttl == 100
    assert len(loaded.warnings) == 2


def test_cli_serve_until_sigterm(tmp_path):
    directory = write_zones(tmp_path / "zones")
    addr = "127.83.4.1"
    port = free_port(addr)
    exe = os.path.join(os.path.dirname(sys.executable), "clusterkit")
    proc = subprocess.Popen([exe, "dns", "serve", "--zones", str(directory),
                             "--listen", f"{addr}:{port}"], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                m = dns.query.udp(dns.message.make_query("example.org", "SOA"), addr, port=port,
                                  timeout=0.2)
                break
            except dns.exception.Timeout:
                assert proc.poll() is None and time.monotonic() < deadline, "serve did not start"
        assert m.answer[0][0].serial == 7
        assert dns.query.tcp(dns.message.make_query("www.example.com", "A"), addr, port=port,
                             timeout=2).answer
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


def test_cli_serve_bad_listen_is_a_usage_error(tmp_path):
    result = cli("dns", "serve", "--zones", str(tmp_path), "--listen", "nowhere")
    assert result.exit_code == 2 and "ADDR:PORT" in result.output


def test_every_zone_of_the_fixture_passes_check(tmp_path):
    directory = write_zones(tmp_path)
    for name in ZONES:
        assert cli("dns", "check", str(directory / f"{name}.zone")).exit_code == 0, name


def test_registered_as_a_builtin_plugin():
    result = cli("plugins", "list", "--json")
    assert result.exit_code == 0, result.output
    import json

    (row,) = [r for r in json.loads(result.output) if r["name"] == "dns"]
    assert row["module"] == "clusterkit_dns" and row["state"] == "loaded"
    assert {"clusterkit_start", "clusterkit_applied", "clusterkit_config_sections"} <= set(row["hooks"])
