"""The CLI contract: commands, options, --json, exit codes and error messages."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from clusterkit.cli import get_app
from clusterkit.plugins import get_plugin_manager

runner = CliRunner()


@pytest.fixture
def ck():
    app = get_app(get_plugin_manager())

    def invoke(*args: str):
        return runner.invoke(app, list(args))

    return invoke


@pytest.fixture
def cfg(ck, tmp_path):
    path = str(tmp_path / "cluster.toml")
    result = ck("init", "-c", path, "--name", "prod", "--manager", "mgr", "--manager-ip",
                "127.91.0.1", "--public-ip", "127.91.0.100", "--state-dir", str(tmp_path / "st"),
                "--root", str(tmp_path / "root"))
    assert result.exit_code == 0, result.output
    return path


def test_version(ck):
    result = ck("--version")
    assert result.exit_code == 0 and result.output.startswith("clusterkit ")


def test_nodes_policies_and_sync_sets_round_trip(ck, cfg, tmp_path):
    assert ck("node", "add", "web1", "--ip", "127.91.0.11", "--root", str(tmp_path / "w1"),
              "-c", cfg).exit_code == 0
    assert ck("node", "add", "web2", "--ip", "127.91.0.12", "--transport", "ssh",
              "--option", "user=deploy", "-c", cfg).exit_code == 0
    result = ck("policy", "add", "-c", cfg, "--vip", "127.91.0.100", "--port", "80",
                "--service", "http", "--members", "web1=3,web2=1", "--scheduler", "wlc",
                "--persistence", "60", "--check", "tcp", "--inter", "0.5", "--fall", "2")
    assert result.exit_code == 0, result.output
    assert ck("sync", "add", "www", "--path", "/var/www", "--exclude", "*.log",
              "--on-change", "true", "-c", cfg).exit_code == 0

    nodes = json.loads(ck("node", "list", "--json", "-c", cfg).output)
    assert [(n["name"], n["role"]) for n in nodes] == [("mgr", "manager"), ("web1", "node"),
                                                      ("web2", "node")]
    assert nodes[2]["options"] == {"user": "deploy"}
    (policy,) = json.loads(ck("policy", "list", "--json", "-c", cfg).output)
    assert policy["members"] == {"web1": 3, "web2": 1}
    assert (policy["scheduler"], policy["persistence"]) == ("wlc", 60)
    assert (policy["check"]["inter"], policy["check"]["fall"]) == (0.5, 2)
    (sset,) = [s for s in json.loads(ck("sync", "list", "--json", "-c", cfg).output)
               if s["owner"] == "config"]  # plugins (panelsync, dns) add their own sets
    assert sset["exclude"] == ["*.log"] and sset["on_change"] == "true"
    assert "127.91.0.100" in ck("policy", "list", "-c", cfg).output

    assert ck("node", "remove", "web1", "-c", cfg).exit_code == 2, "still a policy member"
    assert ck("node", "remove", "web1", "--force", "-c", cfg).exit_code == 0
    (policy,) = json.loads(ck("policy", "list", "--json", "-c", cfg).output)
    assert policy["members"] == {"web2": 1}
    assert ck("policy", "remove", "--vip", "127.91.0.100", "--port", "80", "-c", cfg).exit_code == 0
    assert json.loads(ck("policy", "list", "--json", "-c", cfg).output) == []


@pytest.mark.parametrize("args, message", [
    (("node", "add", "n", "--ip", "300.1.1.1", "--transport", "ssh"),
     "node[0].ip: '300.1.1.1' is not an IP address"),
    (("node", "add", "mgr", "--ip", "127.91.0.5", "--transport", "ssh"),
     "node[0].name: duplicate host name 'mgr'"),
    (("node", "add", "n", "--ip", "127.91.0.5"),
     "node[0].root: is required with transport 'local' (the directory standing for the node's /"),
    (("node", "add", "n", "--ip", "127.91.0.5", "--transport", "ftp"), "unknown transport 'ftp'"),
    (("policy", "add", "--vip", "127.91.0.100", "--port", "80", "--service", "http",
      "--members", "ghost=1"), "unknown member 'ghost'"),
    (("policy", "add", "--vip", "127.91.0.100", "--port", "0", "--service", "http",
      "--members", "mgr=1"), "policy[0].port: 0 is out of range"),
    (("policy", "add", "--vip", "127.91.0.100", "--port", "80", "--service", "nntp",
      "--members", "mgr=1"), "unknown service 'nntp'"),
    (("policy", "add", "--vip", "127.91.0.100", "--port", "80", "--service", "http",
      "--members", "mgr=1", "--scheduler", "fastest"), "unknown scheduler 'fastest'"),
])
def test_bad_values_exit_2_naming_file_and_key(ck, cfg, args, message):
    before = open(cfg).read()
    result = ck(*args, "-c", cfg)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert cfg in result.output
    assert open(cfg).read() == before, "a refused edit changes nothing"


def test_bad_command_line_value_exits_2_naming_the_option(ck, cfg):
    result = ck("policy", "add", "--vip", "127.91.0.100", "--port", "80", "--service", "http",
                "--members", "mgr", "-c", cfg)
    assert result.exit_code == 2 and "--members: 'mgr' is not NAME=VALUE" in result.output


def test_config_check(ck, cfg):
    result = ck("config", "check", "-c", cfg)
    assert result.exit_code == 0 and "OK" in result.output
    with open(cfg, "a") as f:
        f.write('\n[[policy]]\nvip = "127.91.0.100"\nport = 80\nservice = "http"\n'
                'members = {nobody = 1}\n')
    result = ck("config", "check", "-c", cfg)
    assert result.exit_code == 2
    assert f"{cfg}:" in result.output and "policy[0].members.nobody" in result.output


def test_missing_file_and_default_path_from_environment(ck, tmp_path, monkeypatch):
    missing = str(tmp_path / "nope.toml")
    result = ck("node", "list", "-c", missing)
    assert result.exit_code == 2 and f"{missing}: no such file" in result.output
    monkeypatch.setenv("CLUSTERKIT_CONFIG", missing)
    result = runner.invoke(get_app(get_plugin_manager()), ["node", "list"])
    assert result.exit_code == 2 and missing in result.output


def test_init_runs_one_balancer_process_per_cpu_unless_told(ck, cfg, tmp_path):
    import tomllib

    with open(cfg, "rb") as f:
        assert tomllib.load(f)["manager"]["options"] == {"proxy_workers": "auto"}
    other = str(tmp_path / "two.toml")
    args = ("init", "-c", other, "--name", "x", "--manager", "m", "--manager-ip", "127.0.0.1",
            "--state-dir", str(tmp_path / "st2"), "--root", str(tmp_path / "root2"))
    refused = ck(*args, "--option", "proxy_workers=many")  # the proxy plugin's declared check
    assert refused.exit_code == 2 and "manager.options.proxy_workers: 'many' must be" in refused.output
    assert not (tmp_path / "two.toml").exists()
    assert ck(*args, "--option", "proxy_workers=2").exit_code == 0
    with open(other, "rb") as f:
        assert tomllib.load(f)["manager"]["options"] == {"proxy_workers": 2}


def test_init_refuses_to_overwrite(ck, cfg):
    result = ck("init", "-c", cfg, "--name", "x", "--manager", "m", "--manager-ip", "127.0.0.1")
    assert result.exit_code == 2 and "already exists" in result.output


def test_status_without_daemon_is_a_runtime_failure(ck, cfg):
    result = ck("status", "-c", cfg)
    assert result.exit_code == 1 and "no daemon is running" in result.output


def test_run_as_unknown_host_is_a_usage_error(ck, cfg):
    result = ck("run", "-c", cfg, "--as", "ghost")
    assert result.exit_code == 2 and "no host named 'ghost'" in result.output


def test_init_prepares_the_cluster_through_plugins(ck, cfg, tmp_path):
    """The panel plugin's clusterkit_init gives a new cluster its CA (keys owner-only)."""
    import os

    pki_dir = tmp_path / "st" / "mgr" / "pki"
    assert any(p.suffix == ".key" for p in pki_dir.iterdir()), list(pki_dir.iterdir())
    for key in pki_dir.glob("*.key"):
        assert oct(os.stat(key).st_mode & 0o777) == "0o600"
    again = ck("init", "-c", cfg, "--force", "--name", "prod", "--manager", "mgr",
               "--manager-ip", "127.91.0.1", "--state-dir", str(tmp_path / "st"))
    assert again.exit_code == 0 and "keeping the cluster CA" in again.output


# ------------------------------------------------------- hostile input

@pytest.mark.parametrize("args", [
    ("node", "add", "a\nb", "--ip", "127.91.0.5"),
    ("node", "add", "n" * 5000, "--ip", "127.91.0.5"),
    ("sync", "add", "../x", "--path", "/srv/x"),
    ("sync", "remove", "a\nb"),
    ("node", "drain", "../mgr"),
    ("sync", "now", "a/b"),
])
def test_names_on_the_command_line_follow_the_definitions_rule(ck, cfg, args):
    before = open(cfg).read()
    result = ck(*args, "-c", cfg)
    assert result.exit_code == 2, result.output
    assert "is not a valid name (1 to 63 letters, digits and _.- starting with a letter or digit)\n" \
        in result.output
    assert open(cfg).read() == before


@pytest.mark.parametrize("option, value", [("--inter", "nan"), ("--timeout", "inf"),
                                           ("--slowstart", "-1"), ("--fall", "1000")])
def test_a_policy_with_a_number_out_of_its_range_is_not_written(ck, cfg, option, value):
    before = open(cfg).read()
    result = ck("policy", "add", "-c", cfg, "--vip", "127.91.0.100", "--port", "80",
                "--service", "http", "--members", "mgr=1", option, value)
    assert result.exit_code == 2, result.output
    assert f"{cfg}:" in result.output and f"policy[0].check.{option[2:]}: " in result.output
    assert open(cfg).read() == before


def test_a_dangerous_sync_path_is_not_written(ck, cfg):
    result = ck("sync", "add", "root", "--path", "/", "-c", cfg)
    assert result.exit_code == 2
    assert "sync[0].path: '/' is a system directory" in result.output


def test_a_definition_that_is_not_utf8_exits_2_with_its_line(ck, cfg):
    with open(cfg, "ab") as f:
        f.write(b"\n# \xff\n")
    lines = open(cfg, "rb").read().count(b"\n")
    for args in (("config", "check"), ("node", "add", "n", "--ip", "127.91.0.5")):
        result = ck(*args, "-c", cfg)
        assert result.exit_code == 2, (args, result.output)
        assert f"error: {cfg}:{lines}: not UTF-8: byte 0xff at column 3" in result.output, args
    result = ck("status", "-c", cfg)  # finds the daemon's state all the same
    assert result.exit_code == 1 and "no daemon is running" in result.output


def test_the_definition_and_the_managers_state_are_owner_only(ck, cfg, tmp_path):
    import os

    assert oct(os.stat(cfg).st_mode & 0o777) == "0o600"
    assert oct(os.stat(tmp_path / "st" / "mgr").st_mode & 0o777) == "0o700"
    assert ck("node", "add", "web1", "--ip", "127.91.0.11", "--root", str(tmp_path / "w1"),
              "-c", cfg).exit_code == 0
    assert oct(os.stat(cfg).st_mode & 0o777) == "0o600", "an edit keeps it owner-only"


def test_config_check_warns_when_others_may_read_a_secret(ck, cfg):
    import os

    with open(cfg, "a") as f:
        f.write('\n[dns.tsig."xfr.example.com"]\nsecret = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"\n')
    assert "warning" not in ck("config", "check", "-c", cfg).output
    os.chmod(cfg, 0o644)
    result = ck("config", "check", "-c", cfg)
    assert result.exit_code == 0, result.output
    assert (f"warning: {cfg}: is readable by others (mode 0644) and holds secrets "
            f'(dns.tsig.xfr.example.com.secret): chmod 600 {cfg}') in result.output
