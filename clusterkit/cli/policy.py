"""``clusterkit policy add|remove|list``: which public IP:port is balanced over which nodes."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from clusterkit.cli.common import (ConfigOpt, JsonOpt, emit, guard, parse_pairs,
                                   plugin_manager, table)
from clusterkit.config import SCHEDULERS, load_cluster
from clusterkit.definition import edits

policy_app = typer.Typer(help="Balance a public IP:port over nodes.", no_args_is_help=True)


@policy_app.command("add")
@guard
def policy_add(
    ctx: typer.Context, config: ConfigOpt,
    vip: Annotated[str, typer.Option(help="The public IP (one of the manager's public_ips).")],
    port: Annotated[int, typer.Option(help="The public port.")],
    service: Annotated[str, typer.Option(help="Service kind: http, https, smtp, ftp... (plugins list)")],
    members: Annotated[str, typer.Option(help="NODE=WEIGHT,... (weight 0 drains).")],
    scheduler: Annotated[str, typer.Option(help=f"One of {', '.join(SCHEDULERS)}.")] = "wrr",
    persistence: Annotated[Optional[int], typer.Option(
        help="Seconds a client IP keeps its member (default: the service's).")] = None,
    backend_port: Annotated[Optional[int], typer.Option(help="Port on the members (default: --port).")] = None,
    proxy_protocol: Annotated[str, typer.Option(help="Send a PROXY header: v1, v2 or empty.")] = "",
    fallback: Annotated[str, typer.Option(help="IP:PORT or host taking connections when all are down.")] = "",
    engine: Annotated[str, typer.Option(
        help="The load-balancing engine (plugins list; default: [manager] engine, else native).")] = "",
    check: Annotated[Optional[str], typer.Option(help="Health check kind (default: the service's).")] = None,
    inter: Annotated[Optional[float], typer.Option(help="Seconds between checks (2).")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="Check timeout in seconds (1).")] = None,
    rise: Annotated[Optional[int], typer.Option(help="Passes to come up (2).")] = None,
    fall: Annotated[Optional[int], typer.Option(help="Failures to go down (3).")] = None,
    slowstart: Annotated[Optional[float], typer.Option(
        help="Seconds over which a recovered member's weight ramps up (0).")] = None,
    check_option: Annotated[Optional[list[str]], typer.Option(
        help="Check option KEY=VALUE (path, status, host, expect, command...).")] = None,
    replace: Annotated[bool, typer.Option(help="Replace an existing policy for VIP:PORT.")] = False,
) -> None:
    """Add (or with --replace, change) a policy."""
    entry = {"vip": vip, "port": port, "service": service, "scheduler": scheduler,
             "members": parse_pairs([members], "--members", int)}
    optional = {"persistence": persistence, "backend_port": backend_port,
                "proxy_protocol": proxy_protocol, "fallback": fallback, "engine": engine}
    entry.update({k: v for k, v in optional.items() if v not in (None, "")})
    checks = {"kind": check, "inter": inter, "timeout": timeout, "rise": rise, "fall": fall,
              "slowstart": slowstart}
    checks = {k: v for k, v in checks.items() if v is not None}
    checks.update(parse_pairs(check_option or [], "--check-option"))
    if checks:
        entry["check"] = checks
    edits.add_policy(config, plugin_manager(ctx), entry, replace)
    typer.echo(f"policy {vip}:{port} ({service}, {scheduler}{', ' + engine if engine else ''}) "
               f"-> {members}")


@policy_app.command("remove")
@guard
def policy_remove(ctx: typer.Context, config: ConfigOpt,
                  vip: Annotated[str, typer.Option(help="The public IP.")],
                  port: Annotated[int, typer.Option(help="The public port.")]) -> None:
    """Remove the policy for VIP:PORT (the manager's own service answers again)."""
    edits.remove_policy(config, plugin_manager(ctx), vip, port)
    typer.echo(f"removed policy {vip}:{port}")


@policy_app.command("list")
@guard
def policy_list(ctx: typer.Context, config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """List the policies."""
    cluster = load_cluster(config, plugin_manager(ctx))
    rows = [{"vip": p.vip, "port": p.port, "service": p.service, "engine": p.engine,
             "scheduler": p.scheduler,
             "persistence": p.persistence, "backend_port": p.backend_port,
             "members": {m.node: m.weight for m in p.members}, "proxy_protocol": p.proxy_protocol,
             "check": {"kind": p.check.kind, "inter": p.check.inter, "timeout": p.check.timeout,
                       "rise": p.check.rise, "fall": p.check.fall, **p.check.options}}
            for p in cluster.policies]

    def render(rows):
        return table([{**r, "members": ",".join(f"{n}={w}" for n, w in r["members"].items()),
                       "check": r["check"]["kind"]} for r in rows],
                     ["vip", "port", "service", "engine", "scheduler", "persistence", "members",
                      "check"])

    emit(rows, as_json, render)


def register(app: typer.Typer) -> None:
    app.add_typer(policy_app, name="policy")
