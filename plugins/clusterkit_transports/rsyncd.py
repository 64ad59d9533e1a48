"""The ``rsyncd`` transport: a module of an rsync daemon on the node, and that daemon's configuration.

The manager connects as ``user`` to ``module`` on ``port`` with the password
in its ``password_file``. The node's side (rsyncd.conf + secrets) is written
by ``clusterkit sync rsyncd-conf NODE`` for an operator to install, or, when
the node's options name ``rsyncd_conf``, kept up to date by the node's own
daemon: written at start and on every reload, so a new sync set is offered as
soon as the node's definition has it (rsync --daemon reads its configuration
again for every connection). The secrets file (``rsyncd_secrets``) is never
written by the node: the password stays where the operator put it.
"""

from __future__ import annotations

import logging
import os
import secrets
import shlex
import sys
import time

from clusterkit.definition.files import write_atomic
from clusterkit.definition.values import endpoint
from clusterkit.registry import TransportKind
from clusterkit.standby import epoch, fence

from .options import lab_path

log = logging.getLogger("clusterkit.transports.rsyncd")

SECRETS = "/etc/rsyncd.clusterkit.secrets"  # on the node, under its root in a lab


def _user(node) -> str:
    return node.options.get("user", "clusterkit")


def _module(node) -> str:
    return node.options.get("module", "clusterkit")


def _port(node) -> int:
    return int(node.options.get("port", 873))


def password_file(node) -> str:
    """The manager's copy of the node's rsyncd password."""
    return node.options.get("password_file", f"/etc/clusterkit/rsyncd-{node.name}.password")


def secrets_path(node) -> str:
    """Where the node's rsyncd secrets file is: its ``rsyncd_secrets`` option, else under its root."""
    return node.options.get("rsyncd_secrets") or node.local_path(SECRETS)


def _destination(node, path: str) -> str:
    return f"rsync://{_user(node)}@{endpoint(node.ip, _port(node))}/{_module(node)}/{path.lstrip('/')}"


def _args(node, runtime=None) -> list[str]:
    args = [f"--password-file={password_file(node)}"]
    if runtime is not None and os.path.exists(epoch.path(runtime.state_dir)):
        args.append(f"--early-input={epoch.path(runtime.state_dir)}")  # the node's epoch check
    return args


def _setup(node, cluster) -> str:
    return (f"To let the manager replicate to {node.name} through an rsync daemon, run\n"
            f"  clusterkit sync rsyncd-conf {node.name} --output DIR\n"
            f"and install DIR/rsyncd.conf and DIR/rsyncd.secrets on {node.name} as the files say\n"
            f"(or give the node the option rsyncd_conf=PATH: its own daemon then keeps that "
            f"file up to date).")


def conf_text(cluster, node, secrets_file: str, writer: str) -> str:
    """The node's rsyncd.conf.

    The module is the node's ``/`` (its ``root`` in a lab) restricted by daemon
    filter rules to the sync sets' paths: the manager can write there and
    nowhere else; only the managers' addresses may connect (the manager's and
    the standbys', one of which may act as the manager after a failover), with
    a password.
    """
    include = []
    for sset in cluster.sets_for(node):
        parts = sset.path.strip("/").split("/")
        include += ["/" + "/".join(parts[:i]) + "/" for i in range(1, len(parts))]
        # "/a/b/***" does not let the daemon accept "/a/b/" as a destination
        include += ["/" + "/".join(parts), "/" + "/".join(parts) + "/**"]
    include = list(dict.fromkeys(include))
    check = shlex.join([sys.executable, "-E", "-s", "-S", fence.SCRIPT, cluster.host_state_dir(node.name)])
    return f"""# rsyncd.conf for clusterkit node {node.name} of cluster {cluster.name}
# Written by `{writer}`. Install it on {node.name} as
# /etc/rsyncd.conf, the secrets file as {secrets_file} (mode 0600, owner root),
# then start the daemon: systemctl enable --now rsync  (or: rsync --daemon)
port = {_port(node)}
address = {node.ip}
uid = root
gid = root
use chroot = yes
reverse lookup = no
max connections = 8
timeout = 120

[{_module(node)}]
    comment = clusterkit replication from the manager {cluster.manager.name}
    path = {node.root}
    read only = no
    list = no
    auth users = {_user(node)}
    secrets file = {secrets_file}
    strict modes = yes
    hosts allow = {' '.join(h.ip for h in (cluster.manager, *cluster.standbys) if h.name != node.name)}
    hosts deny = *
    # a push from a manager of a lower epoch than this host has seen is refused
    early exec = {check}
    # only the sync sets' paths may be written (and nothing outside them deleted)
    include = {' '.join(include)}
    exclude = *
"""


def rsyncd_config(cluster, node, secrets_file: str | None = None) -> dict:
    """The node's rsyncd.conf and secrets, and the manager's password file, as texts.

    Returns ``{"rsyncd.conf": ..., "rsyncd.secrets": ..., "password": ...,
    "password_file": ...}``; an existing password file on the manager is reused.
    """
    pw_file = password_file(node)
    try:
        with open(pw_file) as f:
            password = f.read().strip()
    except FileNotFoundError:
        password = secrets.token_urlsafe(24)
    conf = conf_text(cluster, node, secrets_file or secrets_path(node),
                     f"clusterkit sync rsyncd-conf {node.name}")
    return {"rsyncd.conf": conf, "rsyncd.secrets": f"{_user(node)}:{password}\n",
            "password": password, "password_file": pw_file}


class NodeConf:
    """On a node with the ``rsyncd_conf`` option: that file, kept equal to the current definition."""

    def __init__(self):
        self.path = ""
        self.written = 0.0
        self.error = ""

    def update(self, cluster, node) -> None:
        """Write the file when its text changed; a failure is logged and shown, never raised."""
        self.path = node.options.get("rsyncd_conf", "") if node.transport == "rsyncd" else ""
        if not self.path:
            return
        text = conf_text(cluster, node, secrets_path(node), f"clusterkit run --as {node.name}")
        try:
            try:
                with open(self.path) as f:
                    if f.read(len(text) + 1) == text:
                        self.error = ""
                        return
            except FileNotFoundError:
                pass
            write_atomic(self.path, text, mode=0o644)
        except OSError as exc:
            self.error = f"cannot write {self.path}: {exc.strerror or exc}"
            log.error("rsyncd_conf of %s: %s", node.name, self.error)
            return
        self.written, self.error = time.time(), ""
        log.info("wrote %s for the rsync daemon of %s (%d sync sets)", self.path, node.name,
                 len(cluster.sync_sets))

    def status(self) -> dict:
        return {"path": self.path, "written": round(self.written, 3) or None, "error": self.error}


def _lab_options(manager, name: str) -> dict:
    return {"password_file": lab_path(manager, f"rsyncd-{name}.password")}


KIND = TransportKind("rsyncd", _destination, _args, setup=_setup,
                     lab_options=_lab_options,
                     description="an rsync daemon module on the node")

