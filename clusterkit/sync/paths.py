"""Path arithmetic for batches: exclusion, ancestors, and the list rsync gets.

Exclude patterns are matched here too (an approximation of rsync's rules:
``*``/``?``/``[]`` within one component, a leading ``/`` anchors at the set
root, a trailing ``/`` means a directory, a pattern without ``/`` matches any
component). Doing it here keeps excluded churn out of the queue and, above
all, keeps a deleted excluded path from ever becoming a deletion request:
rsync cannot tell a missing ``cache`` was a directory matching ``cache/``.
"""

from __future__ import annotations

import fnmatch
import os
import stat


def excluded(rel: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``rel`` (relative to the set root) or one of its parents matches a pattern."""
    if not patterns or not rel:
        return False
    parts = rel.strip("/").split("/")
    for pattern in patterns:
        anchored = pattern.startswith("/")
        body = pattern.strip("/")
        if not body:
            continue
        if "/" not in body and not anchored:
            if any(fnmatch.fnmatchcase(part, body) for part in parts):
                return True
            continue
        want = body.split("/")
        n = len(want)
        starts = [0] if anchored else range(0, len(parts) - n + 1)
        for start in starts:
            chunk = parts[start:start + n]
            if len(chunk) == n and all(fnmatch.fnmatchcase(p, w) for p, w in zip(chunk, want)):
                return True
    return False


def ancestors(rel: str):
    """``a/b/c`` → ``a/b``, ``a`` (nearest first)."""
    rel = rel.rstrip("/")
    while "/" in rel:
        rel = rel.rsplit("/", 1)[0]
        yield rel


def transfer_list(root: str, paths: list[str]) -> list[str]:
    """The ``--files-from`` list for a batch: each entry once, none under another.

    A path missing on the manager is replaced by its highest missing parent:
    listing ``x/y/f`` when ``x`` is gone makes rsync report a vanished
    implied directory (exit 24) on every retry; listing ``x`` deletes the lot.
    With ``-r`` a listed directory is sent whole, so entries below another
    listed entry are redundant and dropped. A directory entry without the
    trailing ``/`` (a fresh ``mkdir``: its content comes as entries of its
    own) is listed only while empty; otherwise those entries create it.
    Entries sent whole keep their trailing ``/`` (rsync gets them without).
    """
    chosen: dict[str, bool] = {}  # path -> sent whole
    for path in paths:
        whole = path.endswith("/")
        path = path_in = path.strip("/")
        if not path:
            continue
        full = os.path.join(root, path)
        try:
            mode = os.lstat(full).st_mode
        except FileNotFoundError:
            for parent in ancestors(path):
                if os.path.lexists(os.path.join(root, parent)):
                    break
                path = parent
        except NotADirectoryError:  # a parent became a file: list the path, rsync deletes it
            pass
        else:
            if not whole and stat.S_ISDIR(mode) and _has_entries(full):
                continue
        chosen[path] = chosen.get(path, False) or (whole and path == path_in)
    return sorted(p + "/" if whole else p for p, whole in chosen.items()
                  if not any(a in chosen for a in ancestors(p)))


def _has_entries(directory: str) -> bool:
    try:
        with os.scandir(directory) as it:
            return next(it, None) is not None
    except OSError:
        return False
