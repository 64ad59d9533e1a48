"""The ftp policy's ``options`` table, parsed and checked.

```toml
[[policy]]
vip = "203.0.113.10"
port = 21
service = "ftp"
members = {web1 = 1, web2 = 1}
options = {passive_ports = "50000-50999", ftps_passive_ports = "51000-51999", data_timeout = 30,
           passive_per_client = 8}
```

:func:`check_options` runs when the definition is loaded (``clusterkit config
check`` shows its problems with file, line and key); the proxy then reads
the options with :func:`ftp_options`. The keys are declared (:data:`OPTIONS`)
and read by the core's table reader, like every other table of the definition.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Callable

from clusterkit.definition.tables import Key, Table, read
from clusterkit.definition.values import problem_of, shown

DEFAULT_PASSIVE = range(50000, 51000)
DEFAULT_FTPS_PASSIVE = range(51000, 52000)
DEFAULT_DATA_TIMEOUT = 30.0
DEFAULT_PASSIVE_PER_CLIENT = 8


@dataclass(frozen=True)
class FtpOptions:
    """``passive_ports``: the manager's own range for rewritten PASV/EPSV replies.
    ``ftps_passive_ports``: the range forwarded as-is to the node of an FTPS
    client (the nodes must announce the VIP and this range themselves).
    ``data_timeout``: seconds a data listener waits for its connection.
    ``passive_per_client``: passive listeners one client address may hold at
    once, over all its sessions (a listener is held from the PASV reply until
    its data connection arrives: milliseconds for a real client), so that one
    address cannot take the whole ``passive_ports`` range.
    """

    passive_ports: range = DEFAULT_PASSIVE
    ftps_passive_ports: range = DEFAULT_FTPS_PASSIVE
    data_timeout: float = DEFAULT_DATA_TIMEOUT
    passive_per_client: int = DEFAULT_PASSIVE_PER_CLIENT


def parse_range(text) -> range:
    """``"50000-50999"`` → ``range(50000, 51000)``; ValueError says what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f'must be a string like "50000-50999", not {text!r}')
    match = re.fullmatch(r"\s*([0-9]{1,5})\s*-\s*([0-9]{1,5})\s*", text)
    if match is None:
        raise ValueError(f'{shown(text)} is not a port range like "50000-50999"')
    lo, hi = int(match[1]), int(match[2])
    if not 1024 <= lo <= hi <= 65535:
        raise ValueError(f"{shown(text)} must satisfy 1024 <= first <= last <= 65535")
    return range(lo, hi + 1)


OPTIONS = Table({
    "passive_ports": Key(str, check=problem_of(parse_range)),
    "ftps_passive_ports": Key(str, check=problem_of(parse_range)),
    "data_timeout": Key(float, default=DEFAULT_DATA_TIMEOUT, low=0.1, high=3600),
    "passive_per_client": Key(int, default=DEFAULT_PASSIVE_PER_CLIENT, low=1, high=65535),
})


def parse(raw: dict, report: Callable[[str, str], None]) -> FtpOptions:
    """The options, with the default for every value that is wrong (each one reported)."""
    values = read(raw, OPTIONS, report)
    passive = parse_range(values["passive_ports"]) if "passive_ports" in values else DEFAULT_PASSIVE
    ftps = parse_range(values["ftps_passive_ports"]) if "ftps_passive_ports" in values \
        else DEFAULT_FTPS_PASSIVE
    if passive.start < ftps.stop and ftps.start < passive.stop:
        report("ftps_passive_ports", f"{ftps.start}-{ftps.stop - 1} overlaps passive_ports "
                                     f"{passive.start}-{passive.stop - 1}")
    return FtpOptions(passive, ftps, values["data_timeout"], values["passive_per_client"])


def check_options(raw: dict, report: Callable[[str, str], None]) -> None:
    """``ServiceKind.check_options`` for ftp: report every bad option at load time."""
    parse(raw, report)


@functools.lru_cache(maxsize=256)
def ftp_options(policy) -> FtpOptions:
    """The options of a (validated) ftp policy; cached per policy."""
    return parse(policy.options, lambda key, message: None)
