"""The transports plugin without a network: its options, its lab paths, its command, its fallbacks."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clusterkit.cli import get_app
from clusterkit.config import ConfigError, Host, load_cluster
from clusterkit_transports.ssh import ssh_command
from clusterkit_transports.sshmaster import Masters
from conftest import write_cluster
from support import free_port

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def ck(pm):
    app = get_app(pm)
    return lambda *args: CliRunner().invoke(app, [str(a) for a in args])


def test_core_imports_no_transport():
    """#18: the core knows no plugin; rsyncd-conf comes from the transports plugin's hook."""
    users = [str(p.relative_to(REPO)) for p in (REPO / "clusterkit").rglob("*.py")
             if "clusterkit_transports" in p.read_text()]
    assert users == []


def test_rsyncd_conf_is_the_plugins_command(ck, tmp_path):
    help_text = ck("sync", "--help").output
    assert "rsyncd-conf" in help_text
    assert ck("sync", "rsyncd-conf", "--help").exit_code == 0


def test_options_are_checked_by_their_transport(pm, tmp_path):
    config = write_cluster(tmp_path / "cluster.toml", "127.86.20", nodes=0, extra=(
        '\n[[node]]\nname = "web1"\nip = "127.86.20.11"\ntransport = "ssh"\n'
        'options = { user = "-oProxyCommand=touch /tmp/owned", known_hosts = "/a b", key = "k" }\n'
        '\n[[node]]\nname = "web2"\nip = "127.86.20.12"\ntransport = "rsyncd"\n'
        'options = { module = "../up", rsyncd_conf = "etc/rsyncd.conf", '
        'rsyncd_secrets = "/etc/x/", password_file = 7 }\n'))
    with pytest.raises(ConfigError) as err:
        load_cluster(config, pm)
    text = str(err.value)
    lines = {line.split(": ", 2)[1]: line for line in text.splitlines()}
    assert set(lines) == {"node[0].options.user", "node[0].options.known_hosts",
                          "node[0].options.key", "node[1].options.module",
                          "node[1].options.rsyncd_conf", "node[1].options.rsyncd_secrets",
                          "node[1].options.password_file"}, text
    line = next(i for i, t in enumerate(config.read_text().splitlines(), 1) if "ProxyCommand" in t)
    assert lines["node[0].options.user"].startswith(f"{config}:{line}: ")
    assert "is not a user name" in lines["node[0].options.user"]
    assert "spaces or '%'" in lines["node[0].options.known_hosts"]
    assert "must be an absolute path" in lines["node[1].options.rsyncd_conf"]
    assert "names a directory" in lines["node[1].options.rsyncd_secrets"]


def test_lab_paths_on_node_add(ck, tmp_path):
    """With roots on the manager and the node, the manager's files for it stay in the lab."""
    cfg = tmp_path / "cluster.toml"
    lab = tmp_path / "lab"
    assert ck("init", "-c", cfg, "--name", "lab", "--manager", "m", "--manager-ip", "127.86.21.1",
              "--state-dir", tmp_path / "st", "--root", lab / "m").exit_code == 0
    ssh = ck("node", "add", "web1", "-c", cfg, "--ip", "127.86.21.11", "--transport", "ssh",
             "--root", lab / "web1")
    assert ssh.exit_code == 0, ssh.output
    assert f"ssh-keygen -t ed25519 -N '' -f {lab}/m/etc/clusterkit/id_ed25519" in ssh.output
    rsyncd = ck("node", "add", "web2", "-c", cfg, "--ip", "127.86.21.12", "--transport", "rsyncd",
                "--root", lab / "web2")
    assert rsyncd.exit_code == 0, rsyncd.output
    given = ck("node", "add", "web3", "-c", cfg, "--ip", "127.86.21.13", "--transport", "ssh",
               "--root", lab / "web3", "--option", "key=/keys/web3")
    plain = ck("node", "add", "web4", "-c", cfg, "--ip", "127.86.21.14", "--transport", "ssh")
    assert given.exit_code == plain.exit_code == 0
    nodes = {n["name"]: n["options"] for n in json.loads(ck("node", "list", "--json", "-c", cfg).output)}
    assert nodes["web1"] == {"key": f"{lab}/m/etc/clusterkit/id_ed25519",
                             "known_hosts": f"{lab}/m/etc/clusterkit/known_hosts"}
    assert nodes["web2"] == {"password_file": f"{lab}/m/etc/clusterkit/rsyncd-web2.password"}
    assert nodes["web3"] == {"key": "/keys/web3", "known_hosts": f"{lab}/m/etc/clusterkit/known_hosts"}
    assert nodes["web4"] == {}  # no root on the node: not a lab host, the defaults stay implicit

    out = tmp_path / "out"
    conf = ck("sync", "rsyncd-conf", "web2", "-c", cfg, "--output", out)
    assert conf.exit_code == 0, conf.output
    assert f"secrets file = {lab}/web2/etc/rsyncd.clusterkit.secrets" in (out / "rsyncd.conf").read_text()
    password = (lab / "m/etc/clusterkit/rsyncd-web2.password").read_text().strip()
    assert (out / "rsyncd.secrets").read_text() == f"clusterkit:{password}\n"


def test_node_add_root_help_names_labs(pm):
    wide = CliRunner().invoke(get_app(pm), ["node", "add", "--help"], env={"COLUMNS": "500"})
    text = " ".join(wide.output.split())
    assert "a lab of several hosts on one machine" in text and "with --transport local" not in text


class FakeRuntime:
    """What the masters use of a runtime: a state directory, components, spawn."""

    def __init__(self, state_dir: Path):
        self.state_dir = str(state_dir)
        self.components: dict = {}
        self.tasks: list[asyncio.Task] = []

    def spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task


def ssh_node(tmp_path: Path, port: int) -> Host:
    return Host(name="web1", ip="127.86.22.11", role="node", transport="ssh",
                options={"port": port, "key": str(tmp_path / "nokey"),
                         "known_hosts": str(tmp_path / "known_hosts")})


def test_master_that_cannot_be_created_falls_back_to_direct(tmp_path):
    node = ssh_node(tmp_path, free_port("127.86.22.11"))  # nothing listens there
    runtime = FakeRuntime(tmp_path / "st")

    async def scenario():
        masters = Masters.of(runtime)
        command = ssh_command(node)
        assert masters.options(node, command, "root@127.86.22.11") == []  # direct, master starting
        await asyncio.gather(*runtime.tasks)
        status = masters.status()["web1"]
        assert status["master"] == "direct" and "Connection refused" in status["reason"], status
        assert masters.options(node, command, "root@127.86.22.11") == []
        assert len(runtime.tasks) == 1  # backing off: no new attempt at once
        await masters.stop()
        assert masters.options(node, command, "root@127.86.22.11") == []
        assert len(runtime.tasks) == 1  # stopped: never again

    asyncio.run(scenario())


def test_master_socket_path_too_long_goes_direct(tmp_path):
    runtime = FakeRuntime(tmp_path / ("d" * 90))
    node = ssh_node(tmp_path, 22)

    async def scenario():
        masters = Masters.of(runtime)
        assert masters.options(node, ssh_command(node), "root@127.86.22.11") == []
        assert runtime.tasks == []
        status = masters.status()["web1"]
        assert status["master"] == "direct" and "use a shorter state_dir" in status["reason"]

    asyncio.run(scenario())


def test_ipv6_nodes_are_written_with_brackets_where_rsync_needs_them(pm):
    """``user@fd00::11:/srv`` would read as host ``fd00`` and path ``:11:/srv``."""
    node = Host(name="web1", ip="fd00::11", role="node", transport="ssh",
                options={"user": "sync", "port": 2222})
    assert pm.registry.transports["ssh"].destination(node, "/srv/www") == "sync@[fd00::11]:/srv/www"
    rsyncd = Host(name="web1", ip="fd00::11", role="node", transport="rsyncd", options={"port": 8873})
    assert pm.registry.transports["rsyncd"].destination(rsyncd, "/srv/www").startswith(
        "rsync://clusterkit@[fd00::11]:8873/")
    v4 = Host(name="web1", ip="10.0.0.11", role="node", transport="ssh")
    assert pm.registry.transports["ssh"].destination(v4, "/srv/www") == "root@10.0.0.11:/srv/www"
