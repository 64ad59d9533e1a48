"""The keepalived plugin without a network: its configuration, ``[vrrp]``, and its commands.

The failover itself (keepalived running, addresses moving) is
tests/test_standby_netns.py.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from clusterkit.config import load_cluster, parse_cluster, registry_of
from clusterkit.definition.tables import ConfigError
from clusterkit_keepalived import conf
from clusterkit_keepalived.settings import vrrp_settings
from conftest import write_cluster
from sync_support import CLUSTERKIT

STANDBY = '\n[[standby]]\nname = "mgr2"\nip = "{prefix}.2"\npriority = 120\n'


def cluster_with_standby(pm, tmp_path, prefix="127.87.1", vrrp=""):
    path = write_cluster(tmp_path / "c.toml", prefix, nodes=1,
                         extra=STANDBY.format(prefix=prefix) + vrrp)
    return path, load_cluster(path, pm)


def test_the_configuration_pairs_the_managers_for_the_public_ips(pm, tmp_path):
    path, cluster = cluster_with_standby(pm, tmp_path, vrrp="\n[vrrp]\nadvert_int = 0.1\n"
                                                            "virtual_router_id = 7\n")
    text = conf.render(cluster, cluster.host("mgr2"), vrrp_settings(cluster), "eth1", str(path),
                       "/state/mgr2/keepalived/check")
    assert "state BACKUP\n    nopreempt\n" in text
    assert "interface eth1\n" in text and "virtual_router_id 7\n" in text
    assert "priority 120\n" in text and "advert_int 0.1\n" in text and "vrrp_version 3" in text
    assert "unicast_src_ip 127.87.1.2\n    unicast_peer {\n        127.87.1.1\n    }" in text
    assert "127.87.1.100/32 dev eth1" in text  # the manager's public IP, not a host's own ip
    assert 'script "/state/mgr2/keepalived/check"' in text
    assert f"vrrp-notify MASTER -c {path} --as mgr2" in text
    mine = conf.render(cluster, cluster.manager, vrrp_settings(cluster), "eth1", str(path), "/c")
    assert "priority 254\n" in mine and "unicast_peer {\n        127.87.1.2\n    }" in mine
    if shutil.which("keepalived"):  # keepalived's own check of the syntax (the interface aside)
        (tmp_path / "k.conf").write_text(mine)
        checked = subprocess.run(["keepalived", "-t", "-P", "-f", str(tmp_path / "k.conf")],
                                 capture_output=True, text=True, timeout=30)
        assert "unknown keyword" not in checked.stderr.lower(), checked.stderr


def test_a_host_ip_is_never_a_vrrp_address_and_quotes_cannot_be_broken_out_of(pm, tmp_path):
    path = write_cluster(tmp_path / "c.toml", "127.87.2", nodes=1,
                         extra=STANDBY.format(prefix="127.87.2"))
    path.write_text(path.read_text().replace('public_ips = ["127.87.2.100"]',
                                             'public_ips = ["127.87.2.100", "127.87.2.1"]'))
    assert conf.vips(load_cluster(path, pm)) == ["127.87.2.100"]
    with pytest.raises(ValueError, match="cannot be written"):
        conf.check_script('/state/x"\nvrrp_script evil {')
    with pytest.raises(ValueError, match="cannot be a word"):
        conf.command("/etc/my cluster.toml", "mgr2", "vrrp-notify", "MASTER")
    # A state directory is data to the track script, never shell code.
    hostile = str(tmp_path / "$(touch pwned)`touch pwned2`'q")
    script = tmp_path / "check"
    script.write_text(conf.check_script(hostile))
    script.chmod(0o700)
    ran = subprocess.run([str(script)], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert ran.returncode == 1 and "no daemon is running" in ran.stderr
    assert hostile in ran.stderr
    assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()


def test_bad_vrrp_settings_are_refused_with_their_lines(pm, tmp_path):
    text = write_cluster(tmp_path / "c.toml", "127.87.3", nodes=1).read_text()
    text += ('\n[vrrp]\nadvert_int = 0\nvirtual_router_id = 256\ninterface = "eth0; rm"\n'
             'preempt = true\n')
    with pytest.raises(ConfigError) as info:
        parse_cluster(text, "/etc/ck.toml", registry_of(pm))
    found = "\n".join(p.format("/etc/ck.toml") for p in info.value.problems)
    for key in ("vrrp.advert_int", "vrrp.virtual_router_id", "vrrp.interface", "vrrp.preempt"):
        assert f": {key}:" in found, found
    assert all(p.line for p in info.value.problems)


def test_vrrp_notify_and_switchover_need_a_state_and_a_daemon(tmp_path):
    path = write_cluster(tmp_path / "c.toml", "127.87.4", nodes=1,
                         extra=STANDBY.format(prefix="127.87.4"))
    run = lambda *a: subprocess.run([*CLUSTERKIT, "manager", *a, "-c", str(path)],  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    bad = run("vrrp-notify", "PROMOTED", "--as", "mgr2")
    assert bad.returncode == 2 and "unknown VRRP state 'PROMOTED'" in bad.stderr
    down = run("vrrp-notify", "MASTER", "--as", "mgr2")
    assert down.returncode == 1 and "no daemon is running" in down.stderr
    assert run("switchover").returncode == 1
    assert run("vrrp-notify", "MASTER", "--as", "../x").returncode == 2
