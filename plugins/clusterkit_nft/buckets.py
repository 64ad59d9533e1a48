"""The bucket table: which member each of a policy's hash buckets goes to.

Weighted rendezvous hashing (highest random weight): every bucket scores every
member with a pseudo-random number drawn from (bucket, member name) and
scaled by the member's weight, and goes to the best score. A bucket's owner
therefore changes only when the owner leaves or a member's weight changes:
a member going down moves its own buckets and nothing else, so the flows on
the other members keep their member although the data plane keeps no
per-connection state. Shares follow the weights (within about 2 % at 4,096
buckets), like Maglev's fill but with that minimal movement exactly.
"""

from __future__ import annotations

import functools
import hashlib
import math

BUCKETS = 4096


@functools.lru_cache(maxsize=256)
def _draws(node: str, buckets: int) -> tuple[float, ...]:
    """``-1/ln(u)`` per bucket, ``u`` uniform in (0, 1) from (bucket, node): a weight scales it."""
    out = []
    for bucket in range(buckets):
        digest = hashlib.blake2b(f"{bucket}/{node}".encode(), digest_size=8).digest()
        out.append(-1 / math.log((int.from_bytes(digest, "big") + 1) / (2 ** 64 + 2)))
    return tuple(out)


def fill(weights: dict[str, float], buckets: int = BUCKETS) -> list[str | None]:
    """Owner of each bucket (``None`` everywhere when no member has a weight above 0)."""
    live = {node: float(w) for node, w in weights.items() if w > 0 and math.isfinite(w)}
    if not live:
        return [None] * buckets
    scores = {node: _draws(node, buckets) for node in live}
    return [max(live, key=lambda node: (scores[node][b] * live[node], node)) for b in range(buckets)]
