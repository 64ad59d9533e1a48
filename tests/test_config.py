"""The cluster definition: every problem reported with file, key and line; edits atomic."""

from __future__ import annotations

import os
import threading

import pytest

from clusterkit.config import load_cluster, parse_cluster, registry_of
from clusterkit.definition.edits import edit_config
from clusterkit.definition.tables import ConfigError
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


# ------------------------------------------------------- hostile definitions

POLICY = '\n[[policy]]\nvip = "127.90.0.100"\nport = 80\nservice = "http"\nmembers = {web1 = 1}\n'
FTP = '\n[[policy]]\nvip = "127.90.0.100"\nport = 21\nservice = "ftp"\nmembers = {web1 = 1}\n'
MANAGER_OPTIONS = 'public_ips = ["127.90.0.100"]\noptions = {{ {} }}'

# One key of each class: (definition with {v} where the value goes, key path, kind, allowed range)
NUMBERS = [
    (BASE + POLICY + "idle_timeout = {v}\n", "policy[0].idle_timeout", float, "0.1..604800"),
    (BASE + POLICY + "connect_timeout = {v}\n", "policy[0].connect_timeout", float, "0.01..60"),
    (BASE + POLICY + "max_conn = {v}\n", "policy[0].max_conn", int, "0..1000000"),
    (BASE + POLICY + "[policy.check]\ninter = {v}\n", "policy[0].check.inter", float, "0.05..3600"),
    (BASE + POLICY + "[policy.check]\ntimeout = {v}\n", "policy[0].check.timeout", float, "0.01..600"),
    (BASE + POLICY + "[policy.check]\nslowstart = {v}\n", "policy[0].check.slowstart", float, "0..3600"),
    (BASE + POLICY + "[policy.check]\nrise = {v}\n", "policy[0].check.rise", int, "1..100"),
    (BASE + POLICY + "[policy.check]\nfastinter = {v}\n", "policy[0].check.fastinter", float,
     "0.05..3600"),
    (BASE + FTP + "options = {{ data_timeout = {v} }}\n", "policy[0].options.data_timeout", float,
     "0.1..3600"),
    (BASE.replace('public_ips = ["127.90.0.100"]', MANAGER_OPTIONS.format("sync_full_interval = {v}")),
     "manager.options.sync_full_interval", float, "0.1..604800"),
    (BASE.replace('public_ips = ["127.90.0.100"]', MANAGER_OPTIONS.format("sync_timeout = {v}")),
     "manager.options.sync_timeout", int, "1..86400"),
    (BASE + '\n[[node]]\nname = "web3"\nip = "127.90.0.13"\noptions = {{ port = {v} }}\n',
     "node[2].options.port", int, "1..65535"),
    (BASE + "\n[dns]\nport = {v}\n", "dns.port", int, "1..65535"),
    (BASE + "\n[panel]\naction_timeout = {v}\n", "panel.action_timeout", float, "0.1..86400"),
    (BASE + '\n[[panelsync]]\nname = "x"\npath = "/srv/x"\ntimeout = {v}\n', "panelsync[0].timeout",
     float, "0.001..3600"),
]


def expected_number_problem(value: str, kind: type, bounds: str) -> str:
    if kind is int and not value.lstrip("-").isdigit():
        return f"must be an integer in {bounds}, not {float(value)!r}"
    if value in ("nan", "-inf"):
        return f"{value} is not a finite number ({bounds})"
    return f"{float(value) if 'e' in value else int(value)!r} is out of range ({bounds})"


@pytest.mark.parametrize("value", ["nan", "-inf", "-1", "1e300", "100000000000000000000"])
@pytest.mark.parametrize("template, key, kind, bounds", NUMBERS, ids=[n[1] for n in NUMBERS])
def test_a_number_that_is_not_finite_or_in_its_range_exits_2_with_file_and_line(
        pm, tmp_path, template, key, kind, bounds, value):
    from typer.testing import CliRunner

    from clusterkit.cli import get_app

    text = template.replace("{v}", value).replace("{{", "{").replace("}}", "}")
    path = tmp_path / "ck.toml"
    path.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if value in row)
    result = CliRunner().invoke(get_app(pm), ["config", "check", "-c", str(path)])
    assert result.exit_code == 2, result.output
    assert result.output == (f"error: {path}:{line}: {key}: "
                             f"{expected_number_problem(value, kind, bounds)}\n")


def test_nan_is_refused_even_where_no_key_is_declared(pm):
    found = problems(pm, BASE + POLICY + '[policy.check]\nkind = "http"\nexpect = nan\n')
    assert found == ["/etc/ck.toml:24: policy[0].check.expect: nan is not a finite number"]


def test_a_check_option_written_by_the_cli_as_text_is_judged_as_the_number_it_spells(pm):
    text = BASE + POLICY + '[policy.check]\nfastinter = "0.5"\ndowninter = "nan"\n'
    assert problems(pm, text) == [
        "/etc/ck.toml:24: policy[0].check.downinter: nan is not a finite number (0.05..3600)"]


@pytest.mark.parametrize("name, shown", [
    ('"a\\nb"', "'a\\nb'"), ('"../x"', "'../x'"), ('"-x"', "'-x'"), ('"a b"', "'a b'"),
    (f'"{"n" * 64}"', f"'{'n' * 64}'"), (f'"{"n" * 5000}"', f"'{'n' * 59}..."),
])
def test_names_are_one_rule_for_hosts_and_sync_sets(pm, name, shown):
    rule = "is not a valid name (1 to 63 letters, digits and _.- starting with a letter or digit)"
    text = BASE + f'\n[[node]]\nname = {name}\nip = "127.90.0.13"\n' \
                  f'\n[[sync]]\nname = {name}\npath = "/srv/www"\n'
    assert problems(pm, text) == [f"/etc/ck.toml:18: node[2].name: {shown} {rule}",
                                  f"/etc/ck.toml:22: sync[0].name: {shown} {rule}"]


def test_upper_case_and_63_characters_are_still_names(pm):
    text = BASE + f'\n[[node]]\nname = "Web-3.eu_{"x" * 54}"\nip = "127.90.0.13"\n'
    assert len(parse_cluster(text, "/etc/ck.toml", registry_of(pm)).nodes[2].name) == 63


@pytest.mark.parametrize("path, message", [
    ("/", "'/' is a system directory: a full sync would delete the node's own files there"),
    ("/etc/", "'/etc/' is a system directory: a full sync would delete the node's own files there"),
    ("/lib64", "'/lib64' is a system directory: a full sync would delete the node's own files there"),
    ("/home", "'/home' is a system directory: a full sync would delete the node's own files there"),
    ("/srv/./../usr", "'/srv/./../usr' has a '..' component"),
    ("/proc/self", "'/proc/self' is in a kernel or device tree, not files to replicate"),
    ("srv/www", "'srv/www' must be an absolute path"),
    ("/var/lib", "'/var/lib' is or holds mgr's state directory (/var/lib/clusterkit/mgr): "
                 "a sync must never touch it"),
    ("/var/lib/clusterkit/web1/x", "'/var/lib/clusterkit/web1/x' is or holds web1's state directory "
                                   "(/var/lib/clusterkit/web1): a sync must never touch it"),
])
def test_dangerous_sync_paths_are_refused(pm, path, message):
    text = BASE + f'\n[[sync]]\nname = "s"\npath = "{path}"\n'
    assert problems(pm, text) == [f"/etc/ck.toml:19: sync[0].path: {message}"]


def test_sync_sets_may_not_share_a_tree(pm):
    text = BASE + ('\n[[sync]]\nname = "www"\npath = "/srv/www"\n'
                   '\n[[sync]]\nname = "shop"\npath = "/srv/www/shop"\n'
                   '\n[[sync]]\nname = "again"\npath = "/srv//www/"\n')
    assert problems(pm, text) == [
        "/etc/ck.toml:23: sync[1].path: '/srv/www/shop' overlaps sync set 'www' (/srv/www): "
        "one tree, one set",
        "/etc/ck.toml:27: sync[2].path: '/srv//www/' is already the path of sync set 'www'",
        "/etc/ck.toml:27: sync[2].path: '/srv//www/' overlaps sync set 'shop' (/srv/www/shop): "
        "one tree, one set"]


def test_plugin_sync_sets_are_held_to_the_same_rules(pm, tmp_path):
    path = tmp_path / "ck.toml"
    path.write_text(BASE + '\n[dns]\nzones_dir = "/"\n')
    with pytest.raises(ConfigError) as info:
        load_cluster(path, pm)
    assert str(info.value) == (f"{path}:18: dns.zones_dir: '/' is a system directory: "
                               "a full sync would delete the node's own files there")
    path.write_text(BASE + '\n[[sync]]\nname = "www"\npath = "/srv/www"\n'
                           '\n[[panelsync]]\nname = "vhosts"\npath = "/srv/www/vhosts"\n')
    with pytest.raises(ConfigError) as info:
        load_cluster(path, pm)
    assert str(info.value) == (f"{path}:23: panelsync[0].path: '/srv/www/vhosts' overlaps sync set "
                               "'www' (/srv/www): one tree, one set")


def test_a_byte_that_is_not_utf8_is_a_config_error_with_its_line(pm, tmp_path):
    path = tmp_path / "ck.toml"
    path.write_bytes(b'[cluster]\nname = "c"\n# caf\xe9 \xff\n')
    with pytest.raises(ConfigError) as info:
        load_cluster(path, pm)
    assert str(info.value) == f"{path}:3: not UTF-8: byte 0xe9 at column 6 (TOML files are UTF-8)"


def test_runaway_toml_is_a_config_error(pm):
    assert problems(pm, "a = " + "[" * 100_000 + "]" * 100_000)[0].startswith(
        "/etc/ck.toml: not a usable TOML file: RecursionError")
    assert problems(pm, "a = " + "9" * 5000)[0].startswith(
        "/etc/ck.toml: not a usable TOML file: ValueError: Exceeds the limit")


def test_edits_write_the_definition_owner_only(pm, tmp_path):
    path = write_cluster(tmp_path / "c.toml", "127.90.0", nodes=1)
    os.chmod(path, 0o644)
    with edit_config(path, pm) as doc:
        doc["cluster"]["name"] = "edited"
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(f"{path}.lock").st_mode & 0o077 == 0
