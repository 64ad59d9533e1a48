"""A stale manager's pushes are refused: the receiving host's epoch check.

The definition view carries the epoch, but an ordinary sync set is plain
rsync: without a check on the receiving side, a manager from before a
failover could still mirror its old trees (``--delete``) onto the nodes. Each
transport has the receiver compare the pusher's epoch with the highest the
host has seen (``STATE_DIR/HOST/epoch``, :mod:`clusterkit.standby.epoch`):

- **rsyncd**: the manager's rsync sends its epoch file as ``--early-input``;
  the module's ``early exec`` runs this file, ``python -E -s -S .../fence.py
  STATE_DIR`` (by path and with the standard library only: a few
  milliseconds per connection), which reads it on stdin and fails (rsync
  aborts the transfer before anything is written: the client sees only
  ``@ERROR: early exec failed``) when it is lower;
- **ssh**: the manager prefixes every remote command with
  ``CLUSTERKIT_EPOCH=N``; a node whose ``authorized_keys`` entry has
  ``command="python3 -E -s -S .../fence.py --ssh STATE_DIR"`` checks
  it, then runs the command (a node without the forced command runs it as
  before: the variable is only set);
- **local** (labs): the manager's worker reads the node's epoch file itself.

A push that says no epoch (``clusterkit sync verify``'s dry runs, a cluster
that never failed over) is let through. On a refusal that names the epochs
(local, ssh) the manager stops pushing at once and stands down
(:mod:`clusterkit.sync.worker`); rsync's bare "early exec failed" could also
be a node whose check cannot run, so it only stops the pushes to that node.
"""

from __future__ import annotations

import os
import re
import sys

if __package__:
    import clusterkit.standby.epoch as epoch
else:  # run by path (rsyncd's early exec): no package import
    import epoch  # type: ignore[no-redef]

REFUSED = "clusterkit epoch check refused"  # in the message a refused pusher sees
SCRIPT = os.path.abspath(__file__)
VARIABLE = "CLUSTERKIT_EPOCH"
PREFIX = re.compile(rf"{VARIABLE}=([0-9]{{1,18}}) ")
EARLY_INPUT_MAX = 5 * 1024  # what rsync sends as --early-input at most
SEEN = re.compile(rf"{REFUSED}: the push carries epoch [0-9]{{1,18}}, this host has seen ([0-9]{{1,18}})")


def parse(text: str) -> int | None:
    """The epoch a pusher sent (its epoch file: digits and a newline); ``None`` when none."""
    text = text.strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > 18:
        raise ValueError(f"not an epoch: {text[:40]!r}")
    return int(text)


def refusal(state_dir: str, pushed: int | None) -> str | None:
    """Why a push carrying ``pushed`` must be refused here; ``None``: it may go on."""
    seen = epoch.read(state_dir)
    if pushed is None or pushed >= seen:
        return None
    return (f"{REFUSED}: the push carries epoch {pushed}, this host has seen {seen}: "
            "a stale manager's (docs/high-availability.md)")


def seen_in(message: str) -> int | None:
    """The epoch a refusal says the receiver has seen (the refused manager takes it as seen)."""
    match = SEEN.search(message)
    return int(match.group(1)) if match else None


def ssh_command(command: str, state_dir: str) -> tuple[str | None, str]:
    """For the ssh forced command: (why refused or None, the command to run)."""
    match = PREFIX.match(command)
    pushed = int(match.group(1)) if match else None
    return refusal(state_dir, pushed), command


def main(argv: list[str]) -> int:
    ssh = argv[:1] == ["--ssh"]
    args = argv[1:] if ssh else argv
    if len(args) != 1 or not os.path.isabs(args[0]):
        print("usage: python fence.py [--ssh] STATE_DIR", file=sys.stderr)
        return 2
    state_dir = args[0]
    if ssh:
        command = os.environ.get("SSH_ORIGINAL_COMMAND", "")
        why, command = ssh_command(command, state_dir)
        if why is not None:
            print(why, file=sys.stderr)
            return 1
        shell = ["/bin/sh", "-c", command] if command else ["/bin/sh", "-l"]
        os.execv(shell[0], shell)
    try:
        pushed = parse(sys.stdin.read(EARLY_INPUT_MAX))
    except (ValueError, UnicodeDecodeError) as exc:
        print(f"{REFUSED}: {exc}", file=sys.stderr)
        return 1
    why = refusal(state_dir, pushed)
    if why is not None:
        print(why, file=sys.stderr)  # to the rsync daemon's log
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
