"""SOA serials: ``YYYYMMDDnn`` that never go backwards (RFC 1982 serial arithmetic).

Secondaries (and our own convergence check) only pull a zone whose serial is
*greater* in RFC 1982's sense, a comparison modulo 2^32. A serial that went
"backwards" would leave every secondary on the old data until it expired, so
the next serial is today's ``YYYYMMDD00`` only when that is ahead of the
current one, else the current one plus one (mod 2^32, which RFC 1982 allows
as long as the step is below 2^31).
"""

from __future__ import annotations

import datetime

SERIAL_BITS = 32
MODULUS = 1 << SERIAL_BITS
HALF = 1 << (SERIAL_BITS - 1)


def serial_gt(a: int, b: int) -> bool:
    """``a > b`` in RFC 1982 §3.2 arithmetic (undefined at distance 2^31: False)."""
    return (a < b and b - a > HALF) or (a > b and a - b < HALF)


def serial_lt(a: int, b: int) -> bool:
    return serial_gt(b, a)


def serial_add(a: int, n: int) -> int:
    """RFC 1982 §3.1: add ``n`` (0 <= n < 2^31) modulo 2^32."""
    if not 0 <= n < HALF:
        raise ValueError(f"serial increment {n} outside 0..2^31-1")
    return (a + n) % MODULUS


def next_serial(current: int, today: datetime.date | None = None) -> int:
    """The serial to write after ``current``: ``YYYYMMDD00`` if ahead, else ``current + 1``."""
    today = today or datetime.datetime.now(datetime.timezone.utc).date()
    dated = int(today.strftime("%Y%m%d")) * 100
    return dated if serial_gt(dated, current) else serial_add(current, 1)
