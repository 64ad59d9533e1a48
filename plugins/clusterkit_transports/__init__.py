"""Transports: how replicated files reach a node — a local directory, ssh, or an rsync daemon.

Each is rsync with different arguments: :mod:`.local` (the node's filesystem
is a directory here: demo, tests), :mod:`.ssh` (rsync over ssh, one master
connection per node: :mod:`.sshmaster`), :mod:`.rsyncd` (a module of an rsync
daemon on the node, whose configuration ``clusterkit sync rsyncd-conf``
writes, :mod:`.cli`, or the node's own daemon keeps up to date).
"""

from __future__ import annotations

from clusterkit import hookimpl
from clusterkit.definition.tables import Key

from . import cli, local, rsyncd, ssh
from .options import NODE_OPTIONS
from .rsyncd import NodeConf, password_file, rsyncd_config
from .sshmaster import NAME as MASTERS

NODE_CONF = "rsyncd-conf"  # runtime.components key, on a node with the rsyncd_conf option


@hookimpl
def clusterkit_register_transports(register):
    for kind in (local.KIND, ssh.KIND, rsyncd.KIND):
        register(kind)


@hookimpl
def clusterkit_register_commands(app, groups):
    cli.register(groups)


@hookimpl
def clusterkit_host_options(register):
    register("port", Key(int, low=1, high=65535))  # ssh's or the rsync daemon's port
    for name, key in NODE_OPTIONS.items():
        register(name, key, roles=("node",))


@hookimpl
def clusterkit_start(runtime):
    if not runtime.is_manager:
        conf = runtime.components[NODE_CONF] = NodeConf()
        conf.update(runtime.cluster, runtime.host)


@hookimpl
async def clusterkit_reload(runtime, old, new):
    conf = runtime.components.get(NODE_CONF)
    if conf is not None:
        conf.update(new, runtime.host)
    masters = runtime.components.get(MASTERS)
    if masters is not None:
        ssh_nodes = {n.name for n in new.nodes if n.transport == "ssh"}
        await masters.forget(set(masters.masters) - ssh_nodes)


@hookimpl
async def clusterkit_stop(runtime):
    masters = runtime.components.get(MASTERS)
    if masters is not None:  # kept, closed: a batch still running must not start a new master
        await masters.stop()


@hookimpl
def clusterkit_status(runtime):
    report = {}
    masters = runtime.components.get(MASTERS)
    if masters is not None and masters.masters:
        report["ssh"] = masters.status()
    conf = runtime.components.get(NODE_CONF)
    if conf is not None and conf.path:
        report["rsyncd_conf"] = conf.status()
    return report or None


__all__ = ["password_file", "rsyncd_config"]
