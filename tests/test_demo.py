"""``clusterkit demo``: the embedded cluster shows every capability and exits 0."""

from __future__ import annotations

import os
import re
import subprocess
import sys

CLUSTERKIT = os.path.join(os.path.dirname(sys.executable), "clusterkit")


def test_demo_shows_balancing_failover_replication_dns_and_exits_cleanly():
    result = subprocess.run([CLUSTERKIT, "demo", "--duration", "5"], capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for host in ("manager", "node1", "node2", "node3"):
        assert f" {host} up on " in out
    spread = re.findall(r"(\d+) x 'hello from (node\d)'", out)
    assert sorted(node for _, node in spread) == ["node1", "node2", "node3"]
    assert sum(int(count) for count, _ in spread) == 30
    assert re.search(r"node2 marked down after [\d.]+s; \d+ requests sent meanwhile, 0 failed", out)
    assert "'hello from node2'" not in out.split("now answering:")[1].splitlines()[0]
    assert "node2's web server is back: state up" in out
    assert "on all 3 nodes after" in out
    assert "every host answers the new address" in out
    assert "PANEL: https://127.80.0.1:2443/" in out
    assert out.rstrip().endswith("all hosts stopped cleanly")
