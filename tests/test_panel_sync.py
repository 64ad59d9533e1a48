"""Panel sync: declared directories and the panel's data as sync sets; post-sync results on nodes."""

from __future__ import annotations

import os

import pytest

from clusterkit.config import load_cluster
from clusterkit.definition.tables import ConfigError
from clusterkit.plugins import get_plugin_manager
from clusterkit_panelsync.settings import DATA_SET
from conftest import write_cluster
from test_panel_fixtures import PanelCluster, wait_for


def panelsync(out) -> str:
    return ("[[panelsync]]\n" 'name = "vhosts"\npath = "/etc/nginx/sites-enabled"\n'
            f'post_sync = "echo reloaded $CLUSTERKIT_SYNC_SET $CLUSTERKIT_HOST >> {out}; '
            f'echo \\"$CLUSTERKIT_SYNC_PATHS\\" > {out}.paths"\n'
            'exclude = ["*.swp"]\n\n'
            "[[panelsync]]\n" 'name = "maps"\npath = "/etc/postfix/maps"\npost_sync = "echo bad map; exit 4"\n')


def test_declared_directories_and_the_panel_data_are_sync_sets(tmp_path):
    cfg = write_cluster(tmp_path / "cluster.toml", "127.86.5", nodes=1, extra=panelsync(tmp_path / "o"))
    cluster = load_cluster(cfg, get_plugin_manager())
    sets = {s.name: s for s in cluster.sync_sets}
    assert sets[DATA_SET].path == "/var/lib/clusterkit-panel" and sets[DATA_SET].owner == "panelsync"
    assert sets["vhosts"].path == "/etc/nginx/sites-enabled" and sets["vhosts"].exclude == ("*.swp",)
    assert sets["maps"].owner == "panelsync"
    assert not sets["vhosts"].on_change, "the post-sync command is panelsync's, not run twice"


def test_bad_panelsync_tables_are_reported_every_one(tmp_path):
    cfg = write_cluster(tmp_path / "cluster.toml", "127.86.5", nodes=1, extra=(
        '[[panelsync]]\nname = "a b"\npath = "relative"\ncolour = 1\n\n'
        f'[[panelsync]]\nname = "{DATA_SET}"\npath = "/x"\ntimeout = 0\n'))
    with pytest.raises(ConfigError) as err:
        load_cluster(cfg, get_plugin_manager())
    text = str(err.value)
    for expected in ("panelsync[0].name", "panelsync[0].path: 'relative' must be an absolute path",
                     "panelsync[0].colour: unknown key", f"'{DATA_SET}' is taken",
                     "panelsync[1].timeout: 0 is out of range (0.001..3600)"):
        assert expected in text, (expected, text)
    assert f"{cfg}:19: panelsync[0].colour: unknown key" in text, "each problem has its line"


def test_a_bad_panel_table_is_reported(tmp_path):
    cfg = write_cluster(tmp_path / "cluster.toml", "127.86.5", nodes=1, extra=(
        '[panel]\nhttps_port = 70000\nlisten = "nowhere"\ndata_dir = "rel"\ncolour = 1\n'
        '[panel.actions]\n"bad name" = "x"\nempty = ""\n'))
    with pytest.raises(ConfigError) as err:
        load_cluster(cfg, get_plugin_manager())
    text = str(err.value)
    for expected in ("panel.https_port: 70000 is out of range", "panel.listen: 'nowhere' is not an IP",
                     "panel.data_dir: 'rel' must be an absolute path", "panel.colour: unknown key",
                     "panel.actions.bad name", "panel.actions.empty: must be a non-empty command"):
        assert expected in text, (expected, text)


@pytest.fixture
def cluster(tmp_path):
    c = PanelCluster(tmp_path, "127.86.5", extra=panelsync(tmp_path / "post.log"))
    c.out = tmp_path / "post.log"
    try:
        c.start("manager")
        c.add_user()
        c.join("node1")
        c.start("node1")
        yield c
    finally:
        c.close()


async def applied(runtime, name, paths):
    sset = next(s for s in runtime.cluster.sync_sets if s.name == name)
    for result in runtime.hook.clusterkit_applied(runtime=runtime, sync_set=sset, paths=paths):
        if result is not None:
            await result


def test_post_sync_runs_on_the_node_and_the_manager_sees_the_result(cluster):
    node = cluster.hosts["node1"]
    cluster.loop.run(applied(node, "vhosts", [node.local_path("/etc/nginx/sites-enabled/a.conf")]))
    cluster.loop.run(applied(node, "maps", []))
    assert cluster.out.read_text() == "reloaded vhosts node1\n"
    assert open(f"{cluster.out}.paths").read().strip().endswith("/etc/nginx/sites-enabled/a.conf")
    results = node.status()["panelsync"]["results"]
    assert results["vhosts"]["exit_code"] == 0 and results["vhosts"]["changed"] == 1
    assert results["maps"]["exit_code"] == 4 and "bad map" in results["maps"]["output"]
    admin = cluster.login()

    def seen():
        nodes = {n["name"]: n for n in admin.get("/api/v1/overview")[1]["nodes"]}
        results = (nodes["node1"]["panelsync"] or {}).get("results", {})
        return results if {"vhosts", "maps"} <= set(results) else None

    results = wait_for(seen, what="the manager fetching node1's post-sync results")
    assert results["vhosts"]["ok"] is True and results["maps"]["ok"] is False


def test_results_survive_a_node_restart_and_the_manager_runs_no_post_sync(cluster):
    node = cluster.hosts["node1"]
    cluster.loop.run(applied(node, "vhosts", []))
    cluster.stop("node1")
    node = cluster.start("node1")
    assert node.status()["panelsync"]["results"]["vhosts"]["runs"] == 1
    cluster.loop.run(applied(cluster.hosts["manager"], "vhosts", []))
    assert cluster.out.read_text() == "reloaded vhosts node1\n"
    assert "panelsync" not in cluster.hosts["manager"].status()


def test_post_sync_commands_are_also_named_actions(cluster):
    admin = cluster.login()
    assert admin.post("/api/v1/nodes/node1/actions/vhosts")[0] == 202
    wait_for(lambda: [j for j in admin.get("/api/v1/jobs")[1] if j["state"] == "done"],
             what="the post-sync command run as an action")
    assert cluster.out.read_text().startswith("reloaded")


def test_a_replicated_batch_runs_post_sync_on_the_node(cluster):
    """The whole path with the replication plugin: a file changes on the manager, rsync ships it,
    the node's applier calls clusterkit_applied, post_sync runs, the manager reads the result."""
    if cluster.pm.get_plugin("sync") is None:
        pytest.skip("no replication plugin installed")
    source = cluster.hosts["manager"].local_path("/etc/nginx/sites-enabled")
    os.makedirs(source, exist_ok=True)
    with open(os.path.join(source, "shop.conf"), "w") as f:
        f.write("server { listen 80; }\n")
    landed = cluster.hosts["node1"].local_path("/etc/nginx/sites-enabled/shop.conf")
    wait_for(lambda: os.path.exists(landed), timeout=30, what="shop.conf replicated to node1")
    wait_for(lambda: cluster.out.exists() and "reloaded vhosts node1" in cluster.out.read_text(),
             timeout=30, what="the post-sync command on node1")
    admin = cluster.login()

    def seen():
        nodes = {n["name"]: n for n in admin.get("/api/v1/overview")[1]["nodes"]}
        return ((nodes["node1"]["panelsync"] or {}).get("results") or {}).get("vhosts")

    assert wait_for(seen, what="the manager reading the result")["exit_code"] == 0
