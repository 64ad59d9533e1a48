"""The cluster definition: every problem reported with file, key and line; edits atomic."""

from __future__ import annotations

import os
import threading

import pytest

from clusterkit.config import ConfigError, edit_config, load_cluster, parse_cluster, registry_of
from conftest import write_cluster


def problems(pm, text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_cluster(text, "/etc/ck.toml", registry_of(pm))
    return [p.format("/etc/ck.toml") for p in info.value.problems]


BASE = '''[cluster]
name = "c"

[manager]
name = "mgr"
ip = "127.90.0.1"
public_ips = ["127.90.0.100"]

[[node]]
name = "web1"
ip = "127.90.0.11"

[[node]]
name = "web2"
ip = "127.90.0.12"
'''


def test_valid_definition_parses(pm, tmp_path):
    path = write_cluster(tmp_path / "c.toml", "127.90.0", nodes=2, extra='''
[[policy]]
vip = "127.90.0.100"
port = 443
service = "https"
members = {node1 = 2, node2 = 1}
check = {kind = "tcp", inter = 0.5, fall = 2}

[[sync]]
name = "www"
path = "/var/www"
exclude = ["*.tmp"]
''')
    cluster = load_cluster(path, pm)
    assert cluster.manager.name == "manager"
    assert [n.name for n in cluster.nodes] == ["node1", "node2"]
    policy = cluster.policy("127.90.0.100", 443)
    assert policy.persistence == 300, "https defaults to persistence"
    assert policy.backend_port == 443 and policy.scheduler == "wrr"
    assert {(m.node, m.weight) for m in policy.members} == {("node1", 2), ("node2", 1)}
    assert (policy.check.inter, policy.check.fall, policy.check.rise) == (0.5, 2, 2)
    assert cluster.sync_sets[0].exclude == ("*.tmp",)
    assert cluster.host("node1").local_path("/var/www") == f"{tmp_path}/node1/var/www"


def test_duplicate_names_bad_ips_and_ports_are_refused_with_lines(pm):
    text = BASE + '''
[[node]]
name = "web1"
ip = "not-an-ip"

[[policy]]
vip = "127.90.0.100"
port = 70000
service = "http"
members = {web1 = 1}
'''
    found = problems(pm, text)
    assert "/etc/ck.toml:18: node[2].name: duplicate host name 'web1'" in found
    assert "/etc/ck.toml:19: node[2].ip: 'not-an-ip' is not an IP address" in found
    assert "/etc/ck.toml:23: policy[0].port: 70000 is out of range (1..65535)" in found


def test_unknown_members_schedulers_services_are_refused(pm):
    text = BASE + '''
[[policy]]
vip = "127.90.0.100"
port = 80
service = "gopher"
scheduler = "random"
members = {web1 = 1, web9 = 1}
'''
    found = "\n".join(problems(pm, text))
    assert "policy[0].service: unknown service 'gopher'" in found
    assert "policy[0].scheduler: unknown scheduler 'random'" in found
    assert "policy[0].members.web9: unknown member 'web9'" in found


def test_every_problem_is_reported_at_once(pm):
    text = '[cluster]\nnam = "typo"\n[manager]\nname = "m"\nip = "1.2.3"\n[bogus]\nx = 1\n'
    found = "\n".join(problems(pm, text))
    assert "cluster.name: is required" in found
    assert "cluster.nam: unknown key" in found
    assert "manager.ip: '1.2.3' is not an IP address" in found
    assert "bogus: unknown section" in found


def test_vip_must_belong_to_the_manager_and_weights_are_bounded(pm):
    text = BASE + '''
[[policy]]
vip = "192.0.2.1"
port = 80
service = "http"
members = {web1 = -1}
'''
    found = "\n".join(problems(pm, text))
    assert "policy[0].vip: 192.0.2.1 is not one of the manager's public_ips" in found
    assert "policy[0].members.web1: weight -1 is out of range (0..256)" in found


def test_idle_timeout_sets_both_sides_and_each_side_can_override_it(pm):
    text = BASE + '''
[[policy]]
vip = "127.90.0.100"
port = 80
service = "http"
members = {web1 = 1}
idle_timeout = 30
server_timeout = 90
'''
    policy = parse_cluster(text, "/etc/ck.toml", registry_of(pm)).policies[0]
    assert (policy.client_timeout, policy.server_timeout) == (30, 90)
    found = problems(pm, text + "client_timeout = 0\n")
    assert "/etc/ck.toml:24: policy[0].client_timeout: 0 is out of range (0.1..604800)" in found


@pytest.mark.parametrize("value, good", [('"auto"', True), ("4", True), ('"lots"', False),
                                         ("0", False), ("true", False)])
def test_proxy_workers_is_checked_with_the_definition(pm, value, good):
    text = BASE.replace('public_ips = ["127.90.0.100"]',
                        f'public_ips = ["127.90.0.100"]\noptions = {{ proxy_workers = {value} }}')
    if good:
        parse_cluster(text, "/etc/ck.toml", registry_of(pm))
    else:
        (problem,) = problems(pm, text)
        assert problem.startswith("/etc/ck.toml:8: manager.options.proxy_workers: ")
        assert problem.endswith(' must be "auto" or an integer 1..64')


def test_toml_syntax_error_names_the_line(pm):
    found = problems(pm, '[cluster]\nname = "x"\nbroken = \n')
    assert found[0].startswith("/etc/ck.toml:3: not valid TOML")


def test_edit_keeps_comments_and_refuses_invalid_results(pm, tmp_path):
    path = write_cluster(tmp_path / "c.toml", "127.90.0", nodes=1)
    path.write_text("# operators' comment\n" + path.read_text())
    with edit_config(path, pm) as doc:
        doc["node"][0]["ip"] = "127.90.0.50"
    assert path.read_text().startswith("# operators' comment\n")
    assert load_cluster(path, pm).host("node1").ip == "127.90.0.50"
    before = path.read_text()
    with pytest.raises(ConfigError, match="node\\[0\\].ip"):
        with edit_config(path, pm) as doc:
            doc["node"][0]["ip"] = "999.1.1.1"
    assert path.read_text() == before, "an invalid edit must leave the file untouched"
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".c.toml.")], "no temp file left"


def test_concurrent_edits_do_not_lose_updates(pm, tmp_path):
    path = write_cluster(tmp_path / "c.toml", "127.90.0", nodes=0)

    def add(i: int) -> None:
        with edit_config(path, pm) as doc:
            doc.setdefault("node", []).append({"name": f"n{i}", "ip": f"127.90.1.{i}"})

    threads = [threading.Thread(target=add, args=(i,)) for i in range(1, 11)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {n.name for n in load_cluster(path, pm).nodes} == {f"n{i}" for i in range(1, 11)}
