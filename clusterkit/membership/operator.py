"""Operator states, per node, persisted so they survive a restart.

``drain`` (weight 0, established connections finish, checks go on) and
``maintenance`` (out of rotation, checks paused). Leaving maintenance runs a
check at once: the member is back when it passes, down when it fails.
"""

from __future__ import annotations

import fcntl
import json
import os
import time

from clusterkit.definition.files import write_atomic

OPERATOR_ACTIONS = ("drain", "maintenance", "maintenance-off", "enable")
OPERATOR_FILE = "operator-states.json"


class OperatorStates:
    """Per-node operator states in the manager's state dir: a JSON file, replaced atomically.

    Written by the daemon when it runs (it owns the file then) and by the CLI
    when it does not; a lock file serialises both.
    """

    def __init__(self, state_dir: str):
        self.path = os.path.join(state_dir, OPERATOR_FILE)

    def load(self) -> dict[str, dict]:
        """``{node: {"state": "drain"|"maintenance", "since": epoch}}``; a broken file is an error."""
        try:
            with open(self.path) as f:
                data = json.load(f)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.path}: unreadable operator states: {exc}") from None
        nodes = data.get("nodes") if isinstance(data, dict) else None
        if not isinstance(nodes, dict) or any(
                not isinstance(v, dict) or v.get("state") not in ("drain", "maintenance")
                for v in nodes.values()):
            raise ValueError(f"{self.path}: malformed operator states (expected "
                             '{"nodes": {NAME: {"state": "drain"|"maintenance"}}})')
        return nodes

    def state(self, node: str) -> str:
        return self.load().get(node, {}).get("state", "")

    def apply(self, node: str, action: str) -> str:
        """Record ``action`` for ``node``; return the node's new operator state ("" = enabled)."""
        if action not in OPERATOR_ACTIONS:
            raise ValueError(f"unknown operator action {action!r} (known: {', '.join(OPERATOR_ACTIONS)})")
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        with open(self.path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            nodes = self.load()
            current = nodes.get(node, {}).get("state", "")
            new = next_operator_state(current, action)
            if new != current:
                if new:
                    nodes[node] = {"state": new, "since": round(time.time(), 3)}
                else:
                    nodes.pop(node, None)
                write_atomic(self.path, json.dumps({"nodes": nodes}, indent=2, sort_keys=True) + "\n",
                             mode=0o600)
            return new


def next_operator_state(current: str, action: str) -> str:
    """``maintenance-off`` only leaves maintenance (a drained node stays drained)."""
    if action == "enable":
        return ""
    if action == "maintenance-off":
        return "" if current == "maintenance" else current
    return action
