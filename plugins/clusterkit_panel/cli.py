"""CLI: ``clusterkit panel ...``, ``clusterkit node token|jobs|action`` and ``clusterkit join``.

Everything here works on files (the manager's state dir, the panel data
dir) and needs no running daemon; ``node action`` pokes the daemon when it
runs so the job starts at once.
"""

from __future__ import annotations

import datetime
import getpass
import sys
from typing import Annotated, Optional

import typer

from clusterkit.cli.common import (ConfigOpt, JsonOpt, UsageError, emit, guard, plugin_manager,
                                   table)
from clusterkit.config import load_cluster
from clusterkit.definition.source import daemon_state_dir
from clusterkit.control import ControlError, request
from clusterkit.definition.values import endpoint
from clusterkit_panel.settings import JOIN_TOKEN_TTL, named_actions, panel_settings

# pki, accounts, join and store import `cryptography`: loaded by the commands that use
# them, so that every other `clusterkit` command starts as fast as before.


def _guard(fn):
    """Our own errors are usage errors (exit 2) or runtime failures (exit 1), named."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from clusterkit_panel.accounts import AccountError
        from clusterkit_panel.join import JoinError
        from clusterkit_panel.pki import PKIError

        try:
            return fn(*args, **kwargs)
        except (AccountError, PKIError) as exc:
            raise UsageError(str(exc)) from None
        except JoinError as exc:
            raise ControlError(str(exc)) from None

    return guard(wrapper)


def _manager(ctx, config):
    cluster = load_cluster(config, plugin_manager(ctx))
    return cluster, cluster.host_state_dir(cluster.manager.name)


def _accounts(ctx, config):
    from clusterkit_panel.accounts import Accounts

    cluster, _ = _manager(ctx, config)
    return Accounts(cluster.manager.local_path(panel_settings(cluster).data_dir))


def _when(ts) -> str:
    if not ts:
        return ""
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


panel_app = typer.Typer(help="The panel: cluster CA, operator accounts, API tokens.",
                        no_args_is_help=True)
user_app = typer.Typer(help="Operator accounts of the panel.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens for scripts (Authorization: Bearer).", no_args_is_help=True)
panel_app.add_typer(user_app, name="user")
panel_app.add_typer(token_app, name="token")


@panel_app.command("init-ca")
@_guard
def init_ca(ctx: typer.Context, config: ConfigOpt,
            force: Annotated[bool, typer.Option(
                help="Replace an existing CA (every host must join again).")] = False) -> None:
    """Create (or with --force replace) the cluster CA and the manager's certificate.

    ``clusterkit init`` already does this for a new cluster.
    """
    from clusterkit_panel import pki

    cluster, state = _manager(ctx, config)
    ca = pki.init_cluster_ca(cluster, force=force)
    typer.echo(f"created the cluster CA in {pki.Paths.of(state).dir} "
               f"(fingerprint {pki.fingerprint(ca)})")


def _read_password(confirm: bool = True) -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise UsageError("no password on standard input")
        return line.rstrip("\n")
    first = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Again: ") != first:
        raise UsageError("the passwords differ")
    return first


@user_app.command("add")
@_guard
def user_add(ctx: typer.Context, name: str, config: ConfigOpt,
             replace: Annotated[bool, typer.Option(help="Set a new password for an existing user.")] = False
             ) -> None:
    """Add an operator; the password is read from standard input (or prompted twice)."""
    _accounts(ctx, config).add_user(name, _read_password(), replace=replace)
    typer.echo(f"{'updated' if replace else 'added'} panel user {name}")


@user_app.command("remove")
@_guard
def user_remove(ctx: typer.Context, name: str, config: ConfigOpt) -> None:
    """Remove an operator (their sessions end at their next request)."""
    _accounts(ctx, config).remove_user(name)
    typer.echo(f"removed panel user {name}")


@user_app.command("list")
@_guard
def user_list(ctx: typer.Context, config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """List operators (never their password hashes)."""
    rows = [{"name": n, "created": _when(u.get("created"))}
            for n, u in sorted(_accounts(ctx, config).users().items())]
    emit(rows, as_json, lambda r: table(r, ["name", "created"]))


@token_app.command("create")
@_guard
def token_create(ctx: typer.Context, name: str, config: ConfigOpt) -> None:
    """Create an API token and print it (only its hash is stored: copy it now)."""
    typer.echo(_accounts(ctx, config).create_token(name))


@token_app.command("list")
@_guard
def token_list(ctx: typer.Context, config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """List API tokens by name."""
    rows = [{"name": t["name"], "created": _when(t.get("created"))}
            for t in _accounts(ctx, config).tokens().values()]
    emit(sorted(rows, key=lambda r: r["name"]), as_json, lambda r: table(r, ["name", "created"]))


@token_app.command("revoke")
@_guard
def token_revoke(ctx: typer.Context, name: str, config: ConfigOpt) -> None:
    """Revoke an API token."""
    _accounts(ctx, config).revoke_token(name)
    typer.echo(f"revoked API token {name}")


# ------------------------------------------------------------ node commands


@_guard
def node_token(ctx: typer.Context, name: str, config: ConfigOpt,
               ttl: Annotated[Optional[int], typer.Option(
                   min=JOIN_TOKEN_TTL[0], max=JOIN_TOKEN_TTL[1],
                   help="Seconds the token is valid, 60..2592000 (default: [panel] join_token_ttl, "
                        "3600).")] = None,
               as_json: JsonOpt = False) -> None:
    """On the manager: print a one-time token with which node NAME joins (clusterkit join)."""
    from clusterkit_panel import pki
    from clusterkit_panel.join import make_token
    from clusterkit_panel.store import Store

    cluster, state = _manager(ctx, config)
    host = cluster.hosts.get(name)
    if host is None or host.role != "node":
        raise UsageError(f"no node named {name!r} in {config} (clusterkit node add first)")
    _, ca = pki.load_ca(state)
    secret = pki.random_token()
    store = Store(state)
    try:
        expires = store.add_join_token(secret, name,
                                       panel_settings(cluster).join_token_ttl if ttl is None else ttl)
    finally:
        store.close()
    token = make_token(pki.fingerprint(ca), secret)
    url = f"https://{endpoint(cluster.manager.ip, panel_settings(cluster).https_port)}"
    emit({"node": name, "token": token, "expires": _when(expires), "manager": url}, as_json,
         lambda d: f"{d['token']}\n\n# on {name}, before {d['expires']}:\n"
                   f"clusterkit join {url} --token {d['token']} --as {name}")


@_guard
def node_jobs(ctx: typer.Context, config: ConfigOpt,
              node: Annotated[Optional[str], typer.Option(help="Only this node's jobs.")] = None,
              as_json: JsonOpt = False) -> None:
    """Remote actions queued on the manager and their results."""
    from clusterkit_panel.store import Store

    _, state = _manager(ctx, config)
    store = Store(state)
    try:
        rows = store.jobs(node)
    finally:
        store.close()
    for row in rows:
        for key in ("created", "started", "finished"):
            row[key] = _when(row[key])

    def last_line(row) -> str:
        text = (row["output"] or row["error"] or "").strip()
        return text.splitlines()[-1][:60] if text else ""

    def render(rows):
        return table([{**r, "output": last_line(r)} for r in rows],
                     ["id", "node", "action", "state", "exit_code", "created", "finished", "output"])

    emit(rows, as_json, render)


@_guard
def node_action(ctx: typer.Context, node: str, action: str, config: ConfigOpt) -> None:
    """Queue node NODE's named ACTION (panel.actions); it runs in order when the node is up."""
    from clusterkit_panel.store import Store

    cluster, state = _manager(ctx, config)
    host = cluster.hosts.get(node)
    if host is None or host.role != "node":
        raise UsageError(f"no node named {node!r} in {config}")
    if action not in named_actions(cluster):
        known = ", ".join(sorted(named_actions(cluster))) or "none defined"
        raise UsageError(f"no action named {action!r} (known: {known})")
    store = Store(state)
    try:
        job = store.add_job(node, action, "cli")
    finally:
        store.close()
    try:
        request(state, "panel_jobs_wake", node=node, timeout=5)
        typer.echo(f"queued job {job}: {action} on {node}")
    except ControlError:
        typer.echo(f"queued job {job}: {action} on {node} (runs when the manager's daemon runs)")


@_guard
def join(ctx: typer.Context, manager_url: Annotated[str, typer.Argument(
             help="The manager's panel, https://IP:2443.")],
         config: ConfigOpt,
         token: Annotated[str, typer.Option(help="The one-time token from `clusterkit node token NAME`.")],
         as_: Annotated[str, typer.Option("--as", help="This node's name in the definition.")]) -> None:
    """On a node: join the cluster with a one-time token (gets this node's certificate)."""
    from clusterkit_panel.join import join as do_join

    result = do_join(manager_url, token, as_, daemon_state_dir, config)
    typer.echo(f"joined cluster {result['cluster']} as {result['node']} "
               f"(certificate {result['serial']} in {result['certificate']})")
    if result["definition"]:
        typer.echo(f"wrote the cluster definition to {result['definition']}")


def register(app: typer.Typer, groups) -> None:
    app.add_typer(panel_app, name="panel")
    app.command("join")(join)
    node = groups.group("node", help="The cluster's nodes.")
    for name, fn in (("token", node_token), ("jobs", node_jobs), ("action", node_action)):
        node.command(name)(fn)
