"""Shared fixtures: plugin managers, clusters on loopback, hosts in network namespaces."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from netns import Net, unavailable_reason  # noqa: E402

from clusterkit.plugins import get_plugin_manager  # noqa: E402


SYSTEM_PATHS = ("/var/lib/clusterkit", "/var/lib/clusterkit-panel", "/srv/www", "/etc/clusterkit")


def _newest(path: str) -> float | None:
    """The newest mtime in a tree, None when it does not exist."""
    if not os.path.exists(path):
        return None
    newest = os.lstat(path).st_mtime
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            try:
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
            except OSError:
                pass
    return newest


@pytest.fixture(scope="session", autouse=True)
def writes_stay_in_temporary_directories():
    """Tests write only under their tmp_path: the system's clusterkit paths stay as they were."""
    before = {p: _newest(p) for p in SYSTEM_PATHS}
    yield
    changed = [p for p in SYSTEM_PATHS if _newest(p) != before[p]]
    assert not changed, f"the test run wrote to {changed}: tests must write under tmp_path only"


@pytest.fixture
def pm():
    """The real plugin manager: built-ins through their entry points."""
    return get_plugin_manager()


@pytest.fixture
def netns():
    """Factory: ``net = netns(["manager", "node1"])``; skips unless root; always torn down."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    made: list[Net] = []

    def make(hosts: list[str]) -> Net:
        net = Net(hosts)
        made.append(net)
        return net

    yield make
    for net in made:
        net.close()


def write_cluster(path: Path, prefix: str, nodes: int = 3, extra: str = "",
                  name: str = "test") -> Path:
    """A cluster definition on loopback ``{prefix}.x``: manager .1 (public .100), nodes .11…

    Every host's filesystem is a directory under ``path``'s folder (transport
    local), so replication and DNS tests need no root.
    """
    base = path.parent
    text = (f'[cluster]\nname = "{name}"\nstate_dir = "{base}/state"\n\n'
            f'[manager]\nname = "manager"\nip = "{prefix}.1"\npublic_ips = ["{prefix}.100"]\n'
            f'root = "{base}/manager"\n')
    for i in range(1, nodes + 1):
        text += (f'\n[[node]]\nname = "node{i}"\nip = "{prefix}.{10 + i}"\n'
                 f'transport = "local"\nroot = "{base}/node{i}"\n')
    path.write_text(text + extra)
    return path
