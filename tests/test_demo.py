"""``clusterkit demo``: the embedded cluster starts, shows itself and exits 0."""

from __future__ import annotations

import os
import subprocess
import sys

CLUSTERKIT = os.path.join(os.path.dirname(sys.executable), "clusterkit")


def test_demo_runs_and_exits_cleanly():
    result = subprocess.run([CLUSTERKIT, "demo", "--duration", "5"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for host in ("manager", "node1", "node2", "node3"):
        assert f" {host} up on " in out
    assert "all hosts stopped cleanly" in out
