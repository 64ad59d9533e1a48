"""Replication: watcher → coalescer → durable per-node queue → rsync (manager); apply hooks (nodes).

See ``docs/replication.md``. :class:`Replicator` runs on the manager,
:class:`Applier` on nodes; both are created by :mod:`clusterkit.sync.plugin`
and kept in ``runtime.components["sync"]``.
"""

from clusterkit.sync.applier import Applier
from clusterkit.sync.replicator import Replicator, Settings

__all__ = ["Applier", "Replicator", "Settings"]
