"""``clusterkit status``'s summary on a real daemon: a down member, a lagging node, problems first."""

from __future__ import annotations

import json
import re
import subprocess

from support import common_port, tcp_server, wait_for
from sync_support import CLUSTERKIT, Daemon, source, sync_cluster, target

PREFIX = "127.88.4"
# the nodes run no daemon here: their DNS would rightly be "not converged" after a while
NO_DNS = "\n[dns]\nenabled = false\n"


def status(config, *args) -> subprocess.CompletedProcess:
    return subprocess.run([*CLUSTERKIT, "status", "-c", str(config), *args],
                          capture_output=True, text=True, timeout=30)


def rows_of(lines: list[str], first: str) -> dict[str, dict[str, str]]:
    """The table whose header starts with ``first``, cut at its header's column positions."""
    start = next(i for i, line in enumerate(lines) if line.startswith(first + " "))
    header = lines[start]
    cuts = [m.start() for m in re.finditer(r"\S+", header)] + [None]
    names = header.split()
    rows = {}
    for line in lines[start + 1:]:
        if not line.strip():
            break
        cells = [line[a:b].strip() for a, b in zip(cuts, cuts[1:])]
        rows[cells[0]] = dict(zip(names, cells))
    return rows


def test_summary_puts_problems_first_and_one_line_per_policy_and_node(tmp_path):
    port = common_port([f"{PREFIX}.11", f"{PREFIX}.12", f"{PREFIX}.100"])
    config = sync_cluster(tmp_path, nodes=2, prefix=PREFIX,
                          options="options = { sync_backoff_max = 1.0 }")
    config.write_text(config.read_text() + NO_DNS + (
        f'\n[[policy]]\nvip = "{PREFIX}.100"\nport = {port}\nservice = "http"\n'
        'members = {node1 = 1, node2 = 1}\ncheck = {kind = "tcp", inter = 0.2, fall = 1, rise = 1}\n'))
    backend = tcp_server(f"{PREFIX}.11", port)
    # node2 cannot receive: where its copy of the set belongs there is a file
    (tmp_path / "node2").mkdir()
    (tmp_path / "node2" / "srv").write_text("not a directory")
    try:
        with Daemon(config):
            (source(tmp_path) / "index.html").write_text("hello")
            wait_for(lambda: (target(tmp_path, "node1") / "index.html").exists(), what="node1 copy")

            def settled():
                out = status(config).stdout
                return out if "node2 down" in out and "to node2: rsync exit" in out else None

            out = wait_for(settled, what="the summary to show the down member and failing node")
            lines = out.splitlines()
            assert re.match(r"manager manager of cluster test, up \S+: \d+ problem\(s\)$", lines[0])
            problems = [line for line in lines if line.startswith("  ! ")]
            assert problems == lines[2:2 + len(problems)], "problems come first"
            assert any(f"{PREFIX}.100:{port} http: node2 down" in p for p in problems)
            assert any(p.startswith("  ! replication of set data to node2: rsync exit") for p in problems)
            # the nodes run no daemon here, so their panels are unreachable: said, and nothing else
            assert [p for p in problems if "node1" in p] == [
                p for p in problems if p.startswith("  ! panel of node1 unreachable")]

            policy = rows_of(lines, "POLICY")[f"{PREFIX}.100:{port}"]
            assert (policy["SERVICE"], policy["ENGINE"], policy["UP"]) == ("http", "native", "1/2")
            assert policy["MEMBERS"] == "node1 up, node2 down"
            nodes = rows_of(lines, "NODE")
            node1, node2 = nodes["node1"], nodes["node2"]
            assert node1["HEALTH"] == "1/1" and node2["HEALTH"] == "0/1"
            assert node1["PENDING"] == "0" and int(node2["PENDING"]) >= 1
            assert node2["SYNC"] in ("backoff", "sending", "idle")
            assert re.fullmatch(r"[\d.]+[smhd]", node2["LAG"])
            assert re.fullmatch(r"[\d.]+[smhd] ago", node1["SYNCED"])
            assert "epoch" not in out and not re.search(r"\b1[6-9]\d{8}\.", out), "times are ages"

            verbose = status(config, "-v").stdout
            assert "last_success:" in verbose and len(verbose.splitlines()) > len(lines)
            report = json.loads(status(config, "--json").stdout)
            assert report["members"][f"{PREFIX}.100:{port}"]["nodes"]["node2"]["state"] == "down"
    finally:
        backend.close()


def test_summary_of_a_healthy_cluster_says_no_problems(tmp_path):
    config = sync_cluster(tmp_path, nodes=1, prefix=PREFIX.replace(".4", ".5"))
    config.write_text(config.read_text() + NO_DNS)
    with Daemon(config):
        (source(tmp_path) / "a").write_text("a")
        wait_for(lambda: (target(tmp_path, "node1") / "a").exists(), what="the copy")
        out = wait_for(lambda: (o := status(config).stdout) and "SYNCED" in o and o, what="summary")
        problems = [line for line in out.splitlines() if line.startswith("  ! ")]
        assert all(p.startswith("  ! panel of node1 unreachable") for p in problems), out
        watch = subprocess.Popen([*CLUSTERKIT, "status", "-c", str(config), "--watch", "0.2"],
                                 stdout=subprocess.PIPE, text=True)
        try:
            heads = []
            for line in watch.stdout:
                if line.startswith("manager manager of cluster"):
                    heads.append(line)
                    if len(heads) == 3:
                        break
            assert len(heads) == 3, "--watch redraws"
        finally:
            watch.terminate()
            watch.wait(10)
