"""``clusterkit init`` and ``clusterkit node add|remove|list``: the hosts of the cluster."""

from __future__ import annotations

import os
from typing import Annotated, Optional

import tomlkit
import typer

from clusterkit.cli.common import (ConfigOpt, JsonOpt, UsageError, emit, guard,
                                   parse_pairs, plugin_manager, table, valid_name)
from clusterkit.config import load_cluster
from clusterkit.definition import edits
from clusterkit.definition.edits import edit_config
from clusterkit.definition.files import private_dir
from clusterkit.definition.tables import UNSET, from_text
from clusterkit.hookcalls import PluginError

node_app = typer.Typer(help="The cluster's nodes: add, remove, list, drain, maintenance.",
                       no_args_is_help=True)


@guard
def init(ctx: typer.Context, config: ConfigOpt,
         name: Annotated[str, typer.Option(help="The cluster's name.")],
         manager: Annotated[str, typer.Option(help="The manager host's name.")],
         manager_ip: Annotated[str, typer.Option(help="The manager's cluster IP.")],
         public_ip: Annotated[Optional[list[str]], typer.Option(
             help="A public IP the manager balances (repeat for several).")] = None,
         state_dir: Annotated[str, typer.Option(help="Where daemons keep state.")] = "/var/lib/clusterkit",
         root: Annotated[str, typer.Option(help="Directory standing for the manager's / (tests, demo).")] = "/",
         option: Annotated[Optional[list[str]], typer.Option(
             help="Manager option KEY=VALUE (proxy_workers=2...; plugins declare them).")] = None,
         force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False) -> None:
    """Create a new cluster definition with its manager."""
    valid_name(manager, "--manager")
    if os.path.exists(config) and not force:
        raise UsageError(f"{config} already exists (use --force to overwrite)")
    options = manager_options(plugin_manager(ctx).registry, parse_pairs(option or [], "--option"))
    if force and os.path.exists(config):
        os.unlink(config)
    with edit_config(config, plugin_manager(ctx), create=True) as doc:
        doc.add(tomlkit.comment("clusterkit cluster definition: see docs/configuration.md"))
        doc["cluster"] = {"name": name, "state_dir": os.path.abspath(state_dir)}
        mgr = {"name": manager, "ip": manager_ip, "public_ips": list(public_ip or [])}
        if root != "/":
            mgr["root"] = os.path.abspath(root)
        if options:
            mgr["options"] = options
        doc["manager"] = mgr
    typer.echo(f"created {config}: cluster {name!r}, manager {manager} ({manager_ip})")
    pm = plugin_manager(ctx)
    cluster = load_cluster(config, pm)
    private_dir(cluster.host_state_dir(manager))  # before plugins put their files there
    try:
        pm.hook.clusterkit_init(cluster=cluster)
    except Exception as exc:
        raise PluginError(f"the definition is written, but preparing the cluster failed: "
                          f"{type(exc).__name__}: {exc}") from exc


def manager_options(registry, given: dict) -> dict:
    """A new manager's options: the plugins' ``initial`` values, then ``--option``s, each
    typed as its plugin declares it (the definition then checks them with the rest)."""
    declared = {name: option for name, option in registry.host_options.items()
                if "manager" in option.roles}
    options = {name: o.initial for name, o in declared.items() if o.initial is not UNSET}
    for name, text in given.items():
        options[name] = from_text(declared[name].key, text) if name in declared else text
    return options


@node_app.command("add")
@guard
def node_add(ctx: typer.Context, name: str, config: ConfigOpt,
             ip: Annotated[str, typer.Option(help="The node's cluster IP.")],
             transport: Annotated[str, typer.Option(help="How files reach it: local, ssh, rsyncd.")] = "local",
             root: Annotated[Optional[str], typer.Option(
                 help="The directory standing for the node's / on this machine: the local "
                      "transport, or a lab of several hosts on one machine (any transport; "
                      "see docs/lab.md).")] = None,
             option: Annotated[Optional[list[str]], typer.Option(
                 help="Transport option KEY=VALUE (user, port, key, module...).")] = None) -> None:
    """Add a node to the cluster.

    In a lab (the manager and this node both have a root), the transport's
    files on the manager (ssh key, known_hosts, rsyncd password) default to
    paths under the manager's root, written into the node's options.
    """
    valid_name(name)
    entry = {"name": name, "ip": ip, "transport": transport}
    if root:
        entry["root"] = os.path.abspath(root)
    options = parse_pairs(option or [], "--option")
    kind = plugin_manager(ctx).registry.transports.get(transport)
    lab = {}
    if root and kind is not None:
        manager = load_cluster(config, plugin_manager(ctx)).manager
        if manager.root != "/":
            lab = {k: v for k, v in kind.lab_options(manager, name).items() if k not in options}
            options.update(lab)
    if options:
        entry["options"] = options
    edits.add_node(config, plugin_manager(ctx), entry)
    typer.echo(f"added node {name} ({ip}, transport {transport})")
    if lab:
        typer.echo("lab paths under the manager's root: "
                   + ", ".join(f"{k}={v}" for k, v in lab.items()))
    cluster = load_cluster(config, plugin_manager(ctx))
    hint = plugin_manager(ctx).registry.transports[transport].setup(cluster.host(name), cluster)
    if hint:
        typer.echo(hint)


@node_app.command("remove")
@guard
def node_remove(ctx: typer.Context, name: str, config: ConfigOpt,
                force: Annotated[bool, typer.Option(help="Also remove it from every policy.")] = False) -> None:
    """Remove a node; refused while a policy names it unless --force."""
    valid_name(name)
    edits.remove_node(config, plugin_manager(ctx), name, force)
    typer.echo(f"removed node {name}")


@node_app.command("list")
@guard
def node_list(ctx: typer.Context, config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """List the manager and the nodes."""
    cluster = load_cluster(config, plugin_manager(ctx))
    rows = [{"name": h.name, "role": h.role, "ip": h.ip, "transport": h.transport, "root": h.root,
             "public_ips": list(h.public_ips), "options": h.options} for h in cluster.hosts.values()]
    emit(rows, as_json, lambda r: table(r, ["name", "role", "ip", "transport", "root"]))


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.add_typer(node_app, name="node")
