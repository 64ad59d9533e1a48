"""The definition's edits are one implementation: the CLI and the panel refuse with the same words.

The CLI prints ``FILE[:LINE]: key: what`` and exits 2; the panel answers the
status of the refusal's kind (400, 404, 409) with the same message. A refused
edit leaves the file as it was.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from clusterkit.cli import get_app
from clusterkit_panel import edits as panel_edits

runner = CliRunner()


@pytest.fixture
def ck(pm):
    app = get_app(pm)
    return lambda *args: runner.invoke(app, list(args))


@pytest.fixture
def cfg(ck, tmp_path):
    path = str(tmp_path / "cluster.toml")
    for args in (("init", "--name", "prod", "--manager", "mgr", "--manager-ip", "127.91.1.1",
                  "--public-ip", "127.91.1.100", "--state-dir", str(tmp_path / "st"),
                  "--root", str(tmp_path / "root")),
                 ("node", "add", "web1", "--ip", "127.91.1.11", "--root", str(tmp_path / "w1")),
                 ("policy", "add", "--vip", "127.91.1.100", "--port", "80", "--service", "http",
                  "--members", "web1=1"),
                 ("sync", "add", "www", "--path", "/srv/www")):
        result = ck(*args, "-c", path)
        assert result.exit_code == 0, result.output
    return path


def line_of(path: str, text: str) -> int:
    return next(i for i, line in enumerate(open(path).read().splitlines(), 1) if text in line)


LOCAL = "is required with transport 'local' (the directory standing for the node's /"
MEMBER = "node 'web1' is a member of 127.91.1.100:80 (--force, force=true: removed there too)"
POLICY = "a policy for 127.91.1.100:80 exists (--replace, replace=true: changed)"
SYNC_MISSING = "no sync set named 'ghost' in the definition (sets added by plugins are not removed here)"


@pytest.mark.parametrize("cli, panel, status, where, message", [
    (("node", "add", "web9", "--ip", "127.91.1.19"),
     ("add_node", {"name": "web9", "ip": "127.91.1.19", "transport": "local"}),
     400, "node[1].root", LOCAL),
    (("node", "add", "web1", "--ip", "127.91.1.19", "--transport", "ssh"),
     ("add_node", {"name": "web1", "ip": "127.91.1.19", "transport": "ssh"}),
     409, ("node[0].name", 'name = "web1"'), "a node named 'web1' exists"),
    (("node", "remove", "ghost"), ("remove_node", "ghost"), 404, "node", "no node named 'ghost'"),
    (("node", "remove", "web1"), ("remove_node", "web1"),
     409, ("policy[0].members.web1", "web1 = 1"), MEMBER),
    (("policy", "add", "--vip", "127.91.1.100", "--port", "80", "--service", "http",
      "--members", "web1=2"),
     ("add_policy", {"vip": "127.91.1.100", "port": 80, "service": "http", "members": {"web1": 2}}),
     409, ("policy[0]", "[[policy]]"), POLICY),
    (("policy", "remove", "--vip", "127.91.1.100", "--port", "81"),
     ("remove_policy", "127.91.1.100", 81), 404, "policy", "no policy for 127.91.1.100:81"),
    (("sync", "add", "www", "--path", "/srv/other"),
     ("add_sync_set", {"name": "www", "path": "/srv/other"}),
     409, ("sync[0].name", 'name = "www"'), "a sync set named 'www' exists"),
    (("sync", "remove", "ghost"), ("remove_sync_set", "ghost"), 404, "sync", SYNC_MISSING),
])
def test_cli_and_panel_refuse_an_edit_with_the_same_words(ck, cfg, pm, cli, panel, status,
                                                          where, message):
    before = open(cfg).read()
    result = ck(*cli, "-c", cfg)
    key, located = where if isinstance(where, tuple) else (where, None)
    place = f"{cfg}:{line_of(cfg, located)}" if located else cfg
    assert result.exit_code == 2, result.output
    assert f"error: {place}: {key}: {message}" in result.output
    function, *args = panel
    with pytest.raises(panel_edits.EditError) as refused:
        getattr(panel_edits, function)(cfg, pm, *args)
    assert refused.value.status == status
    expected = f"field 'root' {message}" if status == 400 else message
    assert str(refused.value).startswith(expected), str(refused.value)
    assert open(cfg).read() == before


def test_a_nodes_root_is_kept_normalised_and_must_be_absolute(ck, cfg, pm, tmp_path):
    result = ck("node", "add", "web2", "--ip", "127.91.1.12", "--root", "rel/../w2", "-c", cfg)
    assert result.exit_code == 0, result.output  # the CLI takes it from the working directory
    with pytest.raises(panel_edits.EditError, match="field 'root' 'w3' must be an absolute path"):
        panel_edits.add_node(cfg, pm, {"name": "web3", "ip": "127.91.1.13", "transport": "local",
                                       "root": "w3"})
    entry = panel_edits.add_node(cfg, pm, {"name": "web3", "ip": "127.91.1.13",
                                           "transport": "local", "root": str(tmp_path / "a/../w3")})
    assert entry["root"] == str(tmp_path / "w3")
    assert f'root = "{tmp_path / "w3"}"' in open(cfg).read()
