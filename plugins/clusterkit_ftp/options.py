"""The ftp policy's ``options`` table, parsed and checked.

```toml
[[policy]]
vip = "203.0.113.10"
port = 21
service = "ftp"
members = {web1 = 1, web2 = 1}
options = {passive_ports = "50000-50999", ftps_passive_ports = "51000-51999", data_timeout = 30}
```
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

DEFAULT_PASSIVE = "50000-50999"
DEFAULT_FTPS_PASSIVE = "51000-51999"
DEFAULT_DATA_TIMEOUT = 30.0
KNOWN = ("passive_ports", "ftps_passive_ports", "data_timeout")


@dataclass(frozen=True)
class FtpOptions:
    """``passive_ports``: the manager's own range for rewritten PASV/EPSV replies.
    ``ftps_passive_ports``: the range forwarded as-is to the node of an FTPS
    client (the nodes must announce the VIP and this range themselves).
    ``data_timeout``: seconds a data listener waits for its connection.
    """

    passive_ports: range
    ftps_passive_ports: range
    data_timeout: float


def parse_range(text, key: str) -> range:
    if not isinstance(text, str):
        raise ValueError(f"options.{key} must be a string like \"50000-50999\", not {text!r}")
    low, sep, high = text.partition("-")
    if not sep or not low.strip().isdigit() or not high.strip().isdigit():
        raise ValueError(f"options.{key} = {text!r} is not a port range like \"50000-50999\"")
    lo, hi = int(low), int(high)
    if not 1024 <= lo <= hi <= 65535:
        raise ValueError(f"options.{key} = {text!r} must satisfy 1024 <= first <= last <= 65535")
    return range(lo, hi + 1)


@functools.lru_cache(maxsize=256)
def ftp_options(policy) -> FtpOptions:
    """The options of an ftp policy; raises ValueError naming the policy, key and value."""
    raw = policy.options
    try:
        unknown = sorted(set(raw) - set(KNOWN))
        if unknown:
            raise ValueError(f"options.{unknown[0]}: unknown key (known: {', '.join(KNOWN)})")
        passive = parse_range(raw.get("passive_ports", DEFAULT_PASSIVE), "passive_ports")
        ftps = parse_range(raw.get("ftps_passive_ports", DEFAULT_FTPS_PASSIVE), "ftps_passive_ports")
        if set(passive) & set(ftps):
            raise ValueError("options.passive_ports and options.ftps_passive_ports overlap")
        timeout = raw.get("data_timeout", DEFAULT_DATA_TIMEOUT)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) \
                or not 0.1 <= timeout <= 3600:
            raise ValueError(f"options.data_timeout = {timeout!r} must be a number of "
                             "seconds in 0.1..3600")
    except ValueError as exc:
        raise ValueError(f"policy {policy.key} (ftp): {exc}") from None
    return FtpOptions(passive, ftps, float(timeout))
