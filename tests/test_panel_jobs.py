"""Remote actions: run over mutual TLS, queued durably while a node is down, in order when it returns."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from clusterkit.cli import get_app
from test_panel_fixtures import PanelCluster, wait_for


@pytest.fixture
def cluster(tmp_path):
    log = tmp_path / "actions.log"
    c = PanelCluster(tmp_path, "127.86.3", panel=(
        "[panel.actions]\n"
        f'record = "echo $CLUSTERKIT_HOST-$CLUSTERKIT_ACTION >> {log}"\n'
        f'second = "echo $CLUSTERKIT_HOST-$CLUSTERKIT_ACTION >> {log}"\n'
        'fails = "echo broken; exit 3"\n'))
    c.log = log
    try:
        c.start("manager")
        c.add_user()
        c.join("node1")
        c.join("node2")
        c.start("node1")
        c.start("node2")
        yield c
    finally:
        c.close()


def jobs(admin, node=None):
    return admin.get("/api/v1/jobs" + (f"?node={node}" if node else ""))[1]


def finished(admin, count):
    rows = jobs(admin)
    return rows if len(rows) >= count and all(j["state"] in ("done", "failed") for j in rows) else None


def test_an_action_runs_on_the_node_and_its_result_is_kept(cluster):
    admin = cluster.login()
    status, body = admin.post("/api/v1/nodes/node1/actions/record")
    assert status == 202 and body["state"] == "queued"
    assert admin.post("/api/v1/nodes/node2/actions/fails")[0] == 202
    rows = {j["node"]: j for j in wait_for(lambda: finished(admin, 2), what="both jobs")}
    assert rows["node1"]["state"] == "done" and rows["node1"]["exit_code"] == 0
    assert rows["node2"]["state"] == "failed" and rows["node2"]["exit_code"] == 3
    assert "broken" in rows["node2"]["output"]
    assert cluster.log.read_text() == "node1-record\n"
    assert admin.post("/api/v1/nodes/node1/actions/nonesuch")[0] == 404
    assert admin.post("/api/v1/nodes/ghost/actions/record")[0] == 404


def test_a_queued_action_runs_in_order_when_its_node_comes_back(cluster):
    admin = cluster.login()
    cluster.stop("node1")
    for action in ("record", "second", "record"):
        assert admin.post(f"/api/v1/nodes/node1/actions/{action}")[0] == 202
    assert admin.post("/api/v1/nodes/node2/actions/record")[0] == 202
    wait_for(lambda: any(j["node"] == "node2" and j["state"] == "done" for j in jobs(admin)),
             what="node2's job (a down node delays no other)")
    waiting = jobs(admin, "node1")
    assert [j["state"] for j in waiting] == ["queued"] * 3
    assert all("unreachable" in (j["error"] or "") for j in waiting[:1])
    overview = admin.get("/api/v1/overview")[1]
    assert {n["name"]: n["queued_jobs"] for n in overview["nodes"]}["node1"] == 3
    cluster.start("node1")
    wait_for(lambda: finished(admin, 4), what="node1's queued jobs after it came back")
    assert cluster.log.read_text().splitlines() == ["node2-record", "node1-record", "node1-second",
                                                    "node1-record"]


def test_the_queue_survives_a_manager_restart(cluster):
    admin = cluster.login()
    cluster.stop("node2")
    assert admin.post("/api/v1/nodes/node2/actions/record")[0] == 202
    cluster.stop("manager")
    cluster.start("node2")
    cluster.start("manager")
    admin = cluster.login()
    wait_for(lambda: finished(admin, 1), what="the job queued before the restart")
    assert cluster.log.read_text() == "node2-record\n"


def test_a_retried_job_returns_the_first_result_instead_of_running_again(cluster):
    client = cluster.client("node1", cluster.host_context("manager"))
    first = client.post("/control/v1/actions/record", {"job": "k-1"})[1]
    again = client.post("/control/v1/actions/record", {"job": "k-1"})[1]
    assert first["exit_code"] == 0 and first["repeated"] is False and again["repeated"] is True
    assert cluster.log.read_text() == "node1-record\n"
    assert client.post("/control/v1/actions/nonesuch", {"job": "k-2"})[0] == 404


def test_node_jobs_and_node_action_on_the_command_line(cluster):
    runner = CliRunner()
    app = get_app(cluster.pm)
    result = runner.invoke(app, ["node", "action", "node2", "second", "-c", str(cluster.config)])
    assert result.exit_code == 0, result.output
    assert "queued job 1: second on node2" in result.output
    admin = cluster.login()
    wait_for(lambda: finished(admin, 1), what="the job queued by the CLI")
    result = runner.invoke(app, ["node", "jobs", "--json", "-c", str(cluster.config)])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert rows[0]["action"] == "second" and rows[0]["state"] == "done" and rows[0]["requested_by"] == "cli"
    result = runner.invoke(app, ["node", "jobs", "-c", str(cluster.config)])
    assert "second" in result.output and "done" in result.output
    result = runner.invoke(app, ["node", "action", "node2", "nonesuch", "-c", str(cluster.config)])
    assert result.exit_code == 2 and "no action named 'nonesuch'" in result.output


def test_removing_a_node_fails_its_queued_jobs(cluster):
    admin = cluster.login()
    cluster.stop("node2")
    assert admin.post("/api/v1/nodes/node2/actions/record")[0] == 202
    assert admin.delete("/api/v1/nodes/node2")[0] == 200
    (job,) = jobs(admin, "node2")
    assert job["state"] == "failed" and "no longer a node" in job["error"]


def test_the_panel_follows_enabled_on_reload(cluster):
    runtime = cluster.hosts["node1"]
    text = cluster.config.read_text()
    cluster.config.write_text(text.replace("[panel]\n", "[panel]\nenabled = false\n"))
    cluster.loop.run(runtime.reload())
    assert "panel" not in runtime.components
    with pytest.raises(OSError):
        cluster.client("node1").get("/healthz")
    cluster.config.write_text(text)
    cluster.loop.run(runtime.reload())
    assert cluster.client("node1").get("/healthz")[0] == 200
    assert runtime.status()["panel"]["url"] == cluster.url("node1")
