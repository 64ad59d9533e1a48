"""The cluster epoch: how many promotions the cluster has seen, persisted per host.

A manager takes ``highest seen + 1`` when it is promoted and writes it into
every definition view it publishes; every host keeps the highest epoch it has
seen in ``STATE_DIR/HOST/epoch`` and refuses views of a lower one, so a
manager that comes back from before a failover gives no orders.
"""

from __future__ import annotations

import os

FILE = "epoch"
MAX = 10**18 - 1  # the view header's 18 digits


def path(state_dir: str) -> str:
    return os.path.join(state_dir, FILE)


def read(state_dir: str) -> int:
    """The highest epoch this host has seen (0: none); a damaged file reads as 0 and is logged
    by the caller through what it then refuses or takes."""
    try:
        with open(path(state_dir)) as f:
            text = f.read(32).strip()
    except FileNotFoundError:
        return 0
    return int(text) if text.isdigit() and len(text) <= 18 else 0


def raise_to(state_dir: str, epoch: int) -> int:
    """Record ``epoch`` if it is higher than the one kept; returns the highest."""
    if not 0 <= epoch <= MAX:
        raise ValueError(f"epoch {epoch} out of range 0..{MAX}")
    from clusterkit.definition.files import write_atomic  # read() stays stdlib-only (fence.py)

    current = read(state_dir)
    if epoch > current:
        write_atomic(path(state_dir), f"{epoch}\n", 0o600)
        return epoch
    return current
