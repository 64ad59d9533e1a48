"""The ``local`` transport: the node's filesystem is a directory on the manager's machine (demo, tests)."""

from __future__ import annotations

import os

from clusterkit.registry import TransportKind


def _destination(node, path: str) -> str:
    return node.local_path(path)


async def _rename(node, src: str, dst: str, runtime=None) -> bool:
    """Rename on the node's directory when the source is there and the target is not."""
    a, b = node.local_path(src), node.local_path(dst)
    if not os.path.lexists(a) or os.path.lexists(b) or not os.path.isdir(os.path.dirname(b)):
        return False
    os.rename(a, b)
    return True


KIND = TransportKind("local", _destination, local_root=lambda node: node.root, rename=_rename,
                     description="the node's filesystem is a directory on this machine")
