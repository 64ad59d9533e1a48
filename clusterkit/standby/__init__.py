"""A standby manager: the cluster epoch, promotion and demotion (docs/high-availability.md).

The addresses move with VRRP (the keepalived plugin); this package is what
moves with them: :mod:`~clusterkit.standby.epoch` (the number that orders
managers), :mod:`~clusterkit.standby.promotion` (the definition rewritten so
that the promoted host is ``[manager]``, the role switch) and
:mod:`~clusterkit.standby.plugin` (control commands and status).
"""
