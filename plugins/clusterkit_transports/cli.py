"""``clusterkit sync rsyncd-conf NODE``: the node's side of the rsyncd transport, for an operator."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import typer

from clusterkit.cli.common import ConfigOpt, UsageError, guard, plugin_manager, valid_name
from clusterkit.config import load_cluster
from clusterkit.definition.files import write_atomic

from .rsyncd import rsyncd_config


@guard
def rsyncd_conf(ctx: typer.Context, node: Annotated[str, typer.Argument(help="The node.")],
                config: ConfigOpt,
                output: Annotated[str, typer.Option(
                    help="Directory to write rsyncd.conf and rsyncd.secrets into.")] = ".",
                secrets_path: Annotated[Optional[str], typer.Option(
                    help="Where the secrets file will live on the node (default: the node's "
                         "rsyncd_secrets option, else /etc/rsyncd.clusterkit.secrets under "
                         "its root).")] = None) -> None:
    """Write a node's rsyncd.conf + secrets (for the operator), and the manager's password file."""
    valid_name(node, "NODE")
    cluster = load_cluster(config, plugin_manager(ctx))
    host = cluster.host(node)
    if host.role not in ("node", "standby"):  # a standby receives the manager's replication too
        raise UsageError(f"{node!r} is the manager, not a node or standby")
    if host.transport != "rsyncd":
        raise UsageError(f"{node!r} uses transport {host.transport!r}, not rsyncd")
    files = rsyncd_config(cluster, host, secrets_path)
    os.makedirs(output, exist_ok=True)
    write_atomic(os.path.join(output, "rsyncd.conf"), files["rsyncd.conf"])
    write_atomic(os.path.join(output, "rsyncd.secrets"), files["rsyncd.secrets"], mode=0o600)
    if not os.path.exists(files["password_file"]):
        os.makedirs(os.path.dirname(files["password_file"]) or ".", exist_ok=True)
        write_atomic(files["password_file"], files["password"] + "\n", mode=0o600)
    typer.echo(f"wrote {output}/rsyncd.conf and {output}/rsyncd.secrets for {node}; "
               f"the manager's password file is {files['password_file']}")


def register(groups) -> None:
    """``clusterkit sync rsyncd-conf``: a command of the core's ``sync`` noun."""
    groups.group("sync").command("rsyncd-conf")(rsyncd_conf)
