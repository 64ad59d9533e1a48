"""The node options the transports read, declared with their checks, and the lab defaults ``node add`` writes.

Options become ssh and rsync arguments and file paths: a user name starting
with ``-`` would be read as an option, a ``%`` in a path is expanded by ssh, a
known_hosts path with a space is two files to ssh. Each is refused when the
definition is loaded, with the key that holds it.
"""

from __future__ import annotations

import os
import re

from clusterkit.definition.tables import Key
from clusterkit.definition.values import name_problem

USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")
LAB_ETC = "/etc/clusterkit"  # the manager's files for its nodes, under its root in a lab


def user_problem(user: str) -> str | None:
    if USER.fullmatch(user):
        return None
    return f"{user!r} is not a user name (1 to 32 letters, digits and _.- starting with a letter, digit or _)"


def path_problem(path: str) -> str | None:
    """An absolute path to a file, without control characters."""
    if not path.startswith("/"):
        return f"{path!r} must be an absolute path"
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        return f"{path!r} holds a control character"
    if path.endswith("/"):
        return f"{path!r} names a directory, not a file"
    return None


def ssh_path_problem(path: str) -> str | None:
    if re.search(r"\s", path) or "%" in path:
        return f"{path!r}: ssh cannot take a path with spaces or '%' here"
    return path_problem(path)


NODE_OPTIONS = {
    "user": Key(str, check=user_problem),               # ssh and rsyncd
    "key": Key(str, check=ssh_path_problem),            # ssh
    "known_hosts": Key(str, check=ssh_path_problem),    # ssh
    "module": Key(str, check=name_problem),             # rsyncd
    "password_file": Key(str, check=path_problem),      # rsyncd, on the manager
    "rsyncd_secrets": Key(str, check=path_problem),     # rsyncd, on the node
    "rsyncd_conf": Key(str, check=path_problem),        # rsyncd, written by the node's daemon
}


def lab_path(manager, name: str) -> str:
    """``/etc/clusterkit/NAME`` on the manager, under its root."""
    return manager.local_path(os.path.join(LAB_ETC, name))
