"""A member's health as HAProxy counts it: pure logic, no I/O.

* a health counter from 0 to ``rise + fall - 1``; the member is healthy while
  it is ``>= rise``. A failure while healthy counts down, ``fall`` failures in a
  row from full health take the member down (the counter drops to 0); ``rise``
  passes in a row bring it back (the counter jumps to the top).
* at daemon start members are healthy at the bottom of the healthy range, as
  in HAProxy: traffic flows at once and a single failed check takes a dead
  member out.
* checks start every ``inter`` seconds (start to start, never overlapping), every
  ``fastinter`` while the state is changing (the counter neither full nor 0) and
  every ``downinter`` while down.

The effective state given to the engine and to ``clusterkit_membership_changed``
is one of :data:`clusterkit.contracts.MEMBER_STATES`.
"""

from __future__ import annotations

from clusterkit.config import Check


class Health:
    """HAProxy's health counter for one member: pure logic, no I/O."""

    def __init__(self, rise: int, fall: int, up: bool = True):
        self.rise, self.fall = rise, fall
        self.up = up
        self.count = rise if up else 0  # start healthy, one failure from down

    @property
    def top(self) -> int:
        return self.rise + self.fall - 1

    @property
    def changing(self) -> bool:
        """Between full health and down: checks run at ``fastinter``."""
        return self.count < self.top if self.up else self.count > 0

    def record(self, ok: bool) -> bool:
        """Count one check result; True when the member went up or down."""
        if ok:
            if self.up:
                self.count = self.top
                return False
            self.count += 1
            if self.count < self.rise:
                return False
            self.up, self.count = True, self.top
            return True
        if not self.up:
            self.count = 0
            return False
        if self.count > self.rise:
            self.count -= 1
            return False
        self.up, self.count = False, 0
        return True

    def reset(self, up: bool, full: bool = True) -> None:
        """Force a state: full (or one failure from down when ``full`` is False)."""
        self.up = up
        self.count = (self.top if full else self.rise) if up else 0

    def configure(self, rise: int, fall: int) -> None:
        """New rise/fall on reload: keep up/down, start the counter again from its end."""
        if (rise, fall) != (self.rise, self.fall):
            self.rise, self.fall = rise, fall
            self.reset(self.up)

    def describe(self) -> str:
        return f"{'up' if self.up else 'down'} {self.count}/{self.top}"


def effective_state(healthy: bool, operator: str) -> str:
    """What the engine is told: maintenance wins, then health, then drain."""
    if operator == "maintenance":
        return "maintenance"
    if not healthy:
        return "down"
    if operator == "drain":
        return "drain"
    return "up"


def intervals(check: Check) -> tuple[float, float, float]:
    """(inter, fastinter, downinter) in seconds.

    ``fastinter`` defaults to a quarter of ``inter`` (HAProxy's own default is
    ``inter``: the issue asks for a faster pace while a state changes);
    ``downinter`` defaults to ``inter``. Both may be set as check options.
    """
    inter = check.inter
    fast = _seconds(check.options, "fastinter", max(0.05, inter / 4))
    down = _seconds(check.options, "downinter", inter)
    return inter, min(fast, inter), down


def _seconds(options: dict, name: str, default: float) -> float:
    value = options.get(name)
    if value in (None, ""):
        return default
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"check option {name}={value!r} is not a number of seconds") from None
    if seconds <= 0:
        raise ValueError(f"check option {name}={value!r} must be > 0")
    return seconds
