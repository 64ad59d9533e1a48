"""Transports: how replicated files reach a node — a local directory, ssh, or an rsync daemon."""

from __future__ import annotations


from clusterkit import hookimpl
from clusterkit.registry import TransportKind


def _local_destination(node, path: str) -> str:
    return node.local_path(path)


def _ssh_destination(node, path: str) -> str:
    user = node.options.get("user", "root")
    return f"{user}@{node.ip}:{path}"


def _ssh_args(node) -> list[str]:
    port = int(node.options.get("port", 22))
    key = node.options.get("key", "/etc/clusterkit/id_ed25519")
    ssh = (f"ssh -p {port} -i {key} -o BatchMode=yes -o ConnectTimeout=5 "
           "-o ServerAliveInterval=5 -o StrictHostKeyChecking=accept-new")
    return ["-e", ssh]


def _rsyncd_destination(node, path: str) -> str:
    user = node.options.get("user", "clusterkit")
    module = node.options.get("module", "clusterkit")
    port = int(node.options.get("port", 873))
    return f"rsync://{user}@{node.ip}:{port}/{module}/{path.lstrip('/')}"


def _rsyncd_args(node) -> list[str]:
    secret = node.options.get("password_file")
    return [f"--password-file={secret}"] if secret else []


@hookimpl
def clusterkit_register_transports(register):
    register(TransportKind("local", _local_destination,
                           local_root=lambda node: node.root,
                           description="the node's filesystem is a directory on this machine"))
    register(TransportKind("ssh", _ssh_destination, _ssh_args,
                           description="rsync over ssh with the manager's key"))
    register(TransportKind("rsyncd", _rsyncd_destination, _rsyncd_args,
                           description="an rsync daemon module on the node"))



