"""CLI and panel edits keep the definition's shape (issue #19 item 5).

An emptied array of tables disappears instead of becoming ``sync = []`` (which
the next ``add`` turned into one long inline array above the header comment);
added tables are written as ``[[table]]`` after the last one, one blank line
before each; the operator's comments and order stay. Each cycle compares the
text and checks the file still reads as the same model.
"""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from clusterkit.cli import get_app
from clusterkit.config import load_cluster

HEADER = "# clusterkit cluster definition: see docs/configuration.md"
runner = CliRunner()


@pytest.fixture
def ck(pm):
    app = get_app(pm)

    def invoke(*args: str) -> str:
        result = runner.invoke(app, list(args))
        assert result.exit_code == 0, result.output
        return result.output

    return invoke


@pytest.fixture
def cfg(ck, tmp_path):
    path = tmp_path / "cluster.toml"
    ck("init", "-c", str(path), "--name", "prod", "--manager", "mgr", "--manager-ip", "127.93.0.1",
       "--public-ip", "127.93.0.100", "--state-dir", str(tmp_path / "st"),
       "--root", str(tmp_path / "root"))
    return path


def assert_in_shape(text: str) -> None:
    """Header comment first, no empty or inline arrays of tables, a blank line before every table."""
    lines = text.splitlines()
    assert lines[0] == HEADER, text
    assert not re.search(r"^\w+ = \[\]", text, re.M), text
    assert not re.search(r"= \[\s*\{", text), "an array of tables written inline:\n" + text
    for i, line in enumerate(lines):
        if line.startswith("[") and i > 1:
            assert lines[i - 1] == "", f"no blank line before {line!r}:\n{text}"
    assert "\n\n\n" not in text, text


def headers(text: str, name: str) -> int:
    return len(re.findall(rf"^\[\[{name}\]\]$", text, re.M))


def model(path, pm):
    cluster = load_cluster(path, pm)
    return cluster.hosts, cluster.policies, [s for s in cluster.sync_sets if s.owner == "config"]


def test_a_new_definition_has_a_blank_line_between_tables(cfg):
    text = cfg.read_text()
    assert_in_shape(text)
    assert text.index("[cluster]") < text.index("[manager]") < text.index("[manager.options]")


def test_sync_sets_removed_and_added_again_stay_tables(ck, cfg, pm):
    c = ("-c", str(cfg))
    ck("sync", "add", "www", "--path", "/srv/www", *c)
    first = cfg.read_text()
    before = model(cfg, pm)
    ck("sync", "remove", "www", *c)
    emptied = cfg.read_text()
    assert "[[sync]]" not in emptied and emptied.rstrip("\n") == first.split("\n[[sync]]")[0].rstrip("\n")
    assert_in_shape(emptied)
    ck("sync", "add", "www", "--path", "/srv/www", *c)
    assert cfg.read_text() == first, "add/remove/add gives back the same text"
    assert model(cfg, pm) == before
    ck("sync", "add", "mail", "--path", "/srv/mail", "--exclude", "*.tmp", *c)
    ck("sync", "remove", "www", *c)
    ck("sync", "add", "www", "--path", "/srv/www", *c)
    text = cfg.read_text()
    assert_in_shape(text)
    assert headers(text, "sync") == 2 and text.index('"mail"') < text.index('"www"')


def test_policies_and_nodes_in_cycles(ck, cfg, pm, tmp_path):
    c = ("-c", str(cfg))
    for name, ip in (("web1", "127.93.0.11"), ("web2", "127.93.0.12")):
        ck("node", "add", name, "--ip", ip, "--root", str(tmp_path / name), *c)
    policy = ("policy", "add", *c, "--vip", "127.93.0.100", "--port", "80", "--service", "http",
              "--members", "web1=1,web2=1")
    ck(*policy)
    ck("sync", "add", "www", "--path", "/srv/www", *c)
    before, text_before = model(cfg, pm), cfg.read_text()
    assert_in_shape(text_before)
    for _ in range(2):
        ck("policy", "remove", *c, "--vip", "127.93.0.100", "--port", "80")
        ck("node", "remove", "web2", *c)
        ck("node", "remove", "web1", *c)
        ck("sync", "remove", "www", *c)
        emptied = cfg.read_text()
        assert_in_shape(emptied)
        assert "[[" not in emptied and not re.search(r"^(node|policy|sync) =", emptied, re.M)
        for name, ip in (("web1", "127.93.0.11"), ("web2", "127.93.0.12")):
            ck("node", "add", name, "--ip", ip, "--root", str(tmp_path / name), *c)
        ck(*policy)
        ck("sync", "add", "www", "--path", "/srv/www", *c)
        text = cfg.read_text()
        assert_in_shape(text)
        assert (headers(text, "node"), headers(text, "policy"), headers(text, "sync")) == (2, 1, 1)
        assert model(cfg, pm) == before
    assert cfg.read_text() == text_before, "the same edits give the same text every round"


OPERATOR = f'''{HEADER}
# Production cluster: ask ops before changing anything.

[cluster]
name = "prod"   # the cluster's name
state_dir = "STATE"

[manager]
name = "mgr"
ip = "127.93.0.1"
public_ips = ["127.93.0.100"]
root = "ROOT"

# web content, replicated everywhere
[[sync]]
name = "www"
path = "/srv/www"  # the document roots
# mail spools
[[sync]]
name = "mail"
path = "/srv/mail"
'''


def test_the_operators_comments_and_spacing_stay(ck, cfg, pm, tmp_path):
    cfg.write_text(OPERATOR.replace("STATE", str(tmp_path / "st")).replace("ROOT", str(tmp_path / "r")))
    c = ("-c", str(cfg))
    ck("sync", "remove", "mail", *c)
    ck("sync", "add", "logs", "--path", "/srv/logs", *c)
    text = cfg.read_text()
    for kept in ("# Production cluster: ask ops before changing anything.\n", '"prod"   # the cluster',
                 "# web content, replicated everywhere\n[[sync]]", '"/srv/www"  # the document roots'):
        assert kept in text, (kept, text)
    assert text.startswith(HEADER + "\n")
    assert text.index('"www"') < text.index('"logs"') and '\n\n[[sync]]\nname = "logs"' in text
    assert headers(text, "sync") == 2 and not re.search(r"^sync = \[", text, re.M)
    assert [s.name for s in model(cfg, pm)[2]] == ["www", "logs"]


def test_an_empty_array_left_by_an_older_version_becomes_tables_again(ck, cfg, pm):
    damaged = "sync = []\n" + cfg.read_text()
    cfg.write_text(damaged)
    ck("sync", "add", "www", "--path", "/srv/www", "-c", str(cfg))
    text = cfg.read_text()
    assert_in_shape(text)
    assert headers(text, "sync") == 1 and [s.name for s in model(cfg, pm)[2]] == ["www"]


def test_panel_edits_keep_the_shape_too(cfg, pm):
    from clusterkit_panel import edits

    edits.add_sync_set(str(cfg), pm, {"name": "www", "path": "/srv/www"})
    first = cfg.read_text()
    edits.remove_sync_set(str(cfg), pm, "www")
    assert_in_shape(cfg.read_text())
    edits.add_sync_set(str(cfg), pm, {"name": "www", "path": "/srv/www"})
    assert cfg.read_text() == first
    assert_in_shape(first)


def test_a_refused_edit_leaves_the_file_as_it_was(cfg, pm):
    from clusterkit.definition.edits import edit_config
    from clusterkit.definition.tables import ConfigError

    before = cfg.read_text()
    with pytest.raises(ConfigError):
        with edit_config(cfg, pm) as doc:
            doc["manager"]["ip"] = "not-an-ip"
    assert cfg.read_text() == before
