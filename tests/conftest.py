"""Shared fixtures: plugin managers, clusters on loopback, hosts in network namespaces."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from netns import Net, unavailable_reason  # noqa: E402

from clusterkit.plugins import get_plugin_manager  # noqa: E402


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
