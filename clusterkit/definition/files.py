"""Writing files safely: atomic replacement, directories only their owner enters."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def private_dir(path: str | os.PathLike) -> None:
    """Make ``path`` a directory only its owner can enter, whoever created it first.

    (``os.makedirs(..., mode=0o700)`` gives the mode only to the last component,
    and nothing to a directory that exists: a plugin making ``state/host/pki``
    first leaves ``state/host`` with the umask's 0755.)
    """
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def write_atomic(path: str | os.PathLike, data: str | bytes, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` so readers see the old file or the new, never half.

    The temp file is created with ``mode`` from the start, so a secret written
    with 0600 is never readable by others, not even for a moment.
    """
    path = Path(path)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # the umask may have narrowed it
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
