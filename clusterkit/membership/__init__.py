"""Membership: which (policy, node) pairs take new connections, and why (manager only).

HAProxy's meanings, one job per module:

* :mod:`~clusterkit.membership.health`: the health counter (rise/fall), the
  check intervals and the effective state: pure logic;
* :mod:`~clusterkit.membership.operator`: the operator's per-node ``drain`` and
  ``maintenance``, kept in a file that outlives the daemon;
* :mod:`~clusterkit.membership.monitor`: the checker loops, the transitions
  pushed to the engine and announced to plugins, slow start, status;
* :mod:`~clusterkit.membership.plugin`: the core plugin that runs it.

Other plugins ask it through :class:`clusterkit.contracts.MembershipQuery`.
"""
