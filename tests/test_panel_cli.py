"""The panel's commands: init-ca, users, API tokens, join tokens and `clusterkit join`."""

from __future__ import annotations

import json
import os
import stat

import pytest
from typer.testing import CliRunner

from clusterkit.cli import get_app
from clusterkit.sync import definition
from clusterkit_panel import pki
from clusterkit_panel.accounts import Accounts, verify_password
from conftest import write_cluster
from test_panel_fixtures import PASSWORD, PanelCluster


@pytest.fixture
def ck(pm):
    runner = CliRunner()
    app = get_app(pm)

    def invoke(*args, input=None):
        return runner.invoke(app, [str(a) for a in args], input=input)

    return invoke


@pytest.fixture
def cfg(tmp_path):
    return str(write_cluster(tmp_path / "cluster.toml", "127.86.4", nodes=2))


def test_init_ca_creates_the_ca_and_the_managers_certificate(ck, cfg, tmp_path):
    result = ck("panel", "init-ca", "-c", cfg)
    assert result.exit_code == 0, result.output
    paths = pki.Paths.of(str(tmp_path / "state" / "manager"))
    for path in (paths.ca_key, paths.key):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    cert = pki.load_cert(paths.cert)
    cert.verify_directly_issued_by(pki.load_cert(paths.ca_cert))
    assert pki.fingerprint(pki.load_cert(paths.ca_cert)) in result.output
    again = ck("panel", "init-ca", "-c", cfg)
    assert again.exit_code == 2 and "already exists" in again.output
    assert ck("panel", "init-ca", "--force", "-c", cfg).exit_code == 0


def test_users_from_standard_input(ck, cfg, tmp_path):
    result = ck("panel", "user", "add", "alice", "-c", cfg, input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    data_dir = tmp_path / "manager" / "var/lib/clusterkit-panel"
    accounts = Accounts(str(data_dir))
    assert verify_password(PASSWORD, accounts.users()["alice"]["hash"])
    assert stat.S_IMODE(os.stat(data_dir / "users.json").st_mode) == 0o600
    assert ck("panel", "user", "add", "alice", "-c", cfg, input=PASSWORD + "\n").exit_code == 2
    assert ck("panel", "user", "add", "alice", "--replace", "-c", cfg, input="another one\n").exit_code == 0
    assert accounts.check_password("alice", "another one")
    short = ck("panel", "user", "add", "bob", "-c", cfg, input="short\n")
    assert short.exit_code == 2 and "at least 8" in short.output
    assert ck("panel", "user", "add", "bad name", "-c", cfg, input=PASSWORD + "\n").exit_code == 2
    rows = json.loads(ck("panel", "user", "list", "--json", "-c", cfg).output)
    assert [r["name"] for r in rows] == ["alice"] and "hash" not in rows[0]
    assert ck("panel", "user", "remove", "alice", "-c", cfg).exit_code == 0
    assert ck("panel", "user", "remove", "alice", "-c", cfg).exit_code == 2


def test_api_tokens(ck, cfg, tmp_path):
    result = ck("panel", "token", "create", "backup", "-c", cfg)
    assert result.exit_code == 0
    token = result.output.strip()
    assert token.startswith("ckp_")
    accounts = Accounts(str(tmp_path / "manager" / "var/lib/clusterkit-panel"))
    assert accounts.token_name(token) == "backup"
    assert token not in (tmp_path / "manager/var/lib/clusterkit-panel/tokens.json").read_text()
    assert ck("panel", "token", "create", "backup", "-c", cfg).exit_code == 2
    assert json.loads(ck("panel", "token", "list", "--json", "-c", cfg).output)[0]["name"] == "backup"
    assert ck("panel", "token", "revoke", "backup", "-c", cfg).exit_code == 0
    assert accounts.token_name(token) is None
    assert ck("panel", "token", "revoke", "backup", "-c", cfg).exit_code == 2


def test_node_token_needs_the_ca_and_a_defined_node(ck, cfg):
    result = ck("node", "token", "node1", "-c", cfg)
    assert result.exit_code == 2 and "init-ca" in result.output
    ck("panel", "init-ca", "-c", cfg)
    result = ck("node", "token", "node9", "-c", cfg)
    assert result.exit_code == 2 and "no node named 'node9'" in result.output
    result = ck("node", "token", "node1", "--json", "-c", cfg)
    data = json.loads(result.output)
    assert data["token"].startswith("ck1.") and data["node"] == "node1"
    text = ck("node", "token", "node1", "-c", cfg).output
    assert "clusterkit join https://127.86.4.1:2443 --token ck1." in text and "--as node1" in text


@pytest.mark.parametrize("ttl", ["0", "-5", "59", "2592001", "nan", "inf", "1e9", "3600.5"])
def test_node_token_ttl_must_be_sane_seconds(ck, cfg, ttl):
    """--ttl 0 used to give a one-hour token, and --ttl -5 one born expired."""
    ck("panel", "init-ca", "-c", cfg)
    result = ck("node", "token", "node1", "--ttl", ttl, "-c", cfg)
    assert result.exit_code == 2, result.output
    assert "--ttl" in result.output and "ck1." not in result.output


def test_node_token_ttl_sets_the_expiry(ck, cfg):
    import datetime

    ck("panel", "init-ca", "-c", cfg)
    data = json.loads(ck("node", "token", "node1", "--ttl", "60", "--json", "-c", cfg).output)
    expires = datetime.datetime.strptime(data["expires"], "%Y-%m-%d %H:%M:%SZ").replace(
        tzinfo=datetime.timezone.utc)
    left = (expires - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    assert 0 < left <= 60


def test_join_on_the_command_line(ck, tmp_path):
    cluster = PanelCluster(tmp_path, "127.86.4")
    try:
        cluster.start("manager")
        config = str(cluster.config)
        token = json.loads(ck("node", "token", "node1", "--json", "-c", config).output)["token"]
        fresh = tmp_path / "fresh" / "cluster.toml"  # a node with no definition yet gets the view
        result = ck("join", cluster.url("manager"), "--token", token, "--as", "node1", "-c", fresh)
        assert result.exit_code == 0, result.output
        assert "joined cluster test as node1" in result.output
        got = definition.parse_view(fresh.read_text())  # as nodes receive it: with its serial
        assert got.body == definition.NOTICE + definition.node_view(cluster.config.read_text())
        assert stat.S_IMODE(os.stat(fresh).st_mode) == 0o600, "the definition may hold secrets"
        assert os.listdir(fresh.parent) == ["cluster.toml"], "no temp file left beside it"
        assert pki.Paths.of(str(tmp_path / "state" / "node1")).has_host_cert()
        again = ck("join", cluster.url("manager"), "--token", token, "--as", "node1", "-c", config)
        assert again.exit_code == 1 and "used already" in again.output
        plain = ck("join", f"http://{cluster.ips['manager']}:{cluster.https_port}", "--token", token,
                   "--as", "node1", "-c", config)
        assert plain.exit_code == 1 and "must be https://" in plain.output
    finally:
        cluster.close()


def test_enroll_local_gives_a_node_on_the_same_machine_its_certificate(ck, cfg, pm, tmp_path):
    from clusterkit.config import load_cluster

    ck("panel", "init-ca", "-c", cfg)
    cluster = load_cluster(cfg, pm)
    cert = pki.enroll_local(cluster, "node2")
    paths = pki.Paths.of(str(tmp_path / "state" / "node2"))
    assert paths.has_host_cert() and stat.S_IMODE(os.stat(paths.key).st_mode) == 0o600
    assert pki.load_cert(paths.cert) == cert
    cert.verify_directly_issued_by(pki.load_cert(paths.ca_cert))


def test_a_corrupt_account_file_refuses_everyone_instead_of_failing(tmp_path):
    accounts = Accounts(str(tmp_path))
    accounts.add_user("dave", PASSWORD)
    (tmp_path / "users.json").write_text("{ not json")
    assert accounts.check_password("dave", PASSWORD) is False
    assert accounts.users() == {}
