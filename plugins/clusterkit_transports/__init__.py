"""Transports: how replicated files reach a node — a local directory, ssh, or an rsync daemon.

Each is rsync with different arguments. ``local``: the node's filesystem is a
directory on the manager's machine (demo, tests). ``ssh``: rsync over ssh
with the manager's key (options ``user``, ``port``, ``key``, ``known_hosts``).
``rsyncd``: a module of an rsync daemon on the node with its own user,
secrets file and ``hosts allow`` (options ``user``, ``module``, ``port``,
``password_file``); :func:`rsyncd_config` writes the node's side.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shlex

from clusterkit import hookimpl
from clusterkit.definition.tables import Key
from clusterkit.registry import TransportKind

DEFAULT_KEY = "/etc/clusterkit/id_ed25519"


# ------------------------------------------------------------------- local

def _local_destination(node, path: str) -> str:
    return node.local_path(path)


async def _local_rename(node, src: str, dst: str) -> bool:
    """Rename on the node's directory when the source is there and the target is not."""
    a, b = node.local_path(src), node.local_path(dst)
    if not os.path.lexists(a) or os.path.lexists(b) or not os.path.isdir(os.path.dirname(b)):
        return False
    os.rename(a, b)
    return True


# --------------------------------------------------------------------- ssh

def _ssh_destination(node, path: str) -> str:
    user = node.options.get("user", "root")
    return f"{user}@{node.ip}:{node.local_path(path)}"


def _ssh_args(node) -> list[str]:
    port = int(node.options.get("port", 22))
    key = node.options.get("key", DEFAULT_KEY)
    ssh = ["ssh", "-p", str(port), "-i", key, "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
           "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3",
           "-o", "StrictHostKeyChecking=accept-new"]
    if node.options.get("known_hosts"):
        ssh += ["-o", f"UserKnownHostsFile={node.options['known_hosts']}"]
    return ["-e", shlex.join(ssh)]


async def _ssh_rename(node, src: str, dst: str) -> bool:
    """``mv`` on the node over ssh, only when the source is there and the target is not.

    Raises ConnectionError when the node cannot be reached (the caller stops renaming).
    """
    a, b = shlex.quote(node.local_path(src)), shlex.quote(node.local_path(dst))
    script = f'[ -e {a} ] && [ ! -e {b} ] && [ -d "$(dirname {b})" ] && mv -T -- {a} {b}'
    user = node.options.get("user", "root")
    ssh = shlex.split(_ssh_args(node)[1])
    proc = await asyncio.create_subprocess_exec(
        *ssh, f"{user}@{node.ip}", script, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        code = await asyncio.wait_for(proc.wait(), 15)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise ConnectionError(f"ssh to {node.name} timed out") from None
    if code == 255:
        raise ConnectionError(f"ssh to {node.name} failed")
    return code == 0


def _ssh_setup(node, cluster) -> str:
    user = node.options.get("user", "root")
    key = node.options.get("key", DEFAULT_KEY)
    port = int(node.options.get("port", 22))
    return (f"To let the manager replicate to {node.name} over ssh, authorise its key there:\n"
            f"  on the manager (once):  test -f {key} || ssh-keygen -t ed25519 -N '' -f {key}\n"
            f"  then:                   ssh-copy-id -i {key}.pub -p {port} {user}@{node.ip}\n"
            f"  (or append {key}.pub to ~{user}/.ssh/authorized_keys on {node.name}; "
            f"the node needs rsync installed)")


# ------------------------------------------------------------------ rsyncd

def _rsyncd_destination(node, path: str) -> str:
    user = node.options.get("user", "clusterkit")
    module = node.options.get("module", "clusterkit")
    port = int(node.options.get("port", 873))
    return f"rsync://{user}@{node.ip}:{port}/{module}/{path.lstrip('/')}"


def password_file(node) -> str:
    """The manager's copy of the node's rsyncd password."""
    return node.options.get("password_file", f"/etc/clusterkit/rsyncd-{node.name}.password")


def _rsyncd_args(node) -> list[str]:
    return [f"--password-file={password_file(node)}"]


def _rsyncd_setup(node, cluster) -> str:
    return (f"To let the manager replicate to {node.name} through an rsync daemon, run\n"
            f"  clusterkit sync rsyncd-conf {node.name} --output DIR\n"
            f"and install DIR/rsyncd.conf and DIR/rsyncd.secrets on {node.name} as the files say.")


def rsyncd_config(cluster, node, secrets_path: str = "/etc/rsyncd.clusterkit.secrets") -> dict:
    """The node's rsyncd.conf and secrets, and the manager's password file, as texts.

    The module is the node's ``/`` (its ``root`` in tests) restricted by daemon
    filter rules to the sync sets' paths: the manager can write there and
    nowhere else; only the manager's address may connect, with a password.
    Returns ``{"rsyncd.conf": ..., "rsyncd.secrets": ..., "password": ...,
    "password_file": ...}``; an existing password file on the manager is reused.
    """
    user = node.options.get("user", "clusterkit")
    module = node.options.get("module", "clusterkit")
    port = int(node.options.get("port", 873))
    pw_file = password_file(node)
    try:
        with open(pw_file) as f:
            password = f.read().strip()
    except FileNotFoundError:
        password = secrets.token_urlsafe(24)
    include = []
    for sset in cluster.sync_sets:
        parts = sset.path.strip("/").split("/")
        include += ["/" + "/".join(parts[:i]) + "/" for i in range(1, len(parts))]
        # "/a/b/***" does not let the daemon accept "/a/b/" as a destination
        include += ["/" + "/".join(parts), "/" + "/".join(parts) + "/**"]
    include = list(dict.fromkeys(include))
    conf = f"""# rsyncd.conf for clusterkit node {node.name} of cluster {cluster.name}
# Written by `clusterkit sync rsyncd-conf {node.name}`. Install it on {node.name} as
# /etc/rsyncd.conf, the secrets file as {secrets_path} (mode 0600, owner root),
# then start the daemon: systemctl enable --now rsync  (or: rsync --daemon)
port = {port}
address = {node.ip}
uid = root
gid = root
use chroot = yes
reverse lookup = no
max connections = 8
timeout = 120

[{module}]
    comment = clusterkit replication from the manager {cluster.manager.name}
    path = {node.root}
    read only = no
    list = no
    auth users = {user}
    secrets file = {secrets_path}
    strict modes = yes
    hosts allow = {cluster.manager.ip}
    hosts deny = *
    # only the sync sets' paths may be written (and nothing outside them deleted)
    include = {' '.join(include)}
    exclude = *
"""
    return {"rsyncd.conf": conf, "rsyncd.secrets": f"{user}:{password}\n",
            "password": password, "password_file": pw_file}


@hookimpl
def clusterkit_register_transports(register):
    register(TransportKind("local", _local_destination,
                           local_root=lambda node: node.root, rename=_local_rename,
                           description="the node's filesystem is a directory on this machine"))
    register(TransportKind("ssh", _ssh_destination, _ssh_args, setup=_ssh_setup, rename=_ssh_rename,
                           description="rsync over ssh with the manager's key"))
    register(TransportKind("rsyncd", _rsyncd_destination, _rsyncd_args, setup=_rsyncd_setup,
                           description="an rsync daemon module on the node"))


@hookimpl
def clusterkit_host_options(register):
    register("port", Key(int, low=1, high=65535))  # ssh's or the rsync daemon's port


__all__ = ["rsyncd_config", "password_file"]
