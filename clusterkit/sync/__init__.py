"""Replication: watcher → planner → durable per-node queue → node workers → rsync (manager);
apply hooks (nodes).

See ``docs/replication.md``. :class:`Replicator` (the planner) and its
:class:`~clusterkit.sync.worker.NodeWorker` per node run on the manager,
:class:`Applier` on nodes; both are created by :mod:`clusterkit.sync.plugin`
and kept in ``runtime.components["sync"]``.
"""

from clusterkit.sync.applier import Applier
from clusterkit.sync.replicator import Replicator, Settings

__all__ = ["Applier", "Replicator", "Settings"]
