"""keepalived's track script: is this host's clusterkit daemon healthy? (exit 0 yes, 1 no)

``python -m clusterkit_keepalived.check STATE_DIR``: one control request,
nothing else imported, so it costs milliseconds every advert interval.
"""

from __future__ import annotations

import sys

from clusterkit.control import ControlError, request


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m clusterkit_keepalived.check STATE_DIR", file=sys.stderr)
        return 2
    try:
        health = request(argv[0], "vrrp_health", timeout=2.0)
    except (ControlError, OSError, ValueError) as exc:
        print(f"clusterkit daemon unhealthy: {exc}", file=sys.stderr)
        return 1
    return 0 if isinstance(health, dict) and health.get("ok") is True else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
