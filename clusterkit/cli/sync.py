"""``clusterkit sync add|remove|list``: directories replicated from the manager to every node."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Annotated, Optional

import typer

from clusterkit.cli.common import (EXIT_FAILURE, ConfigOpt, JsonOpt, UsageError, emit,
                                   guard, plugin_manager, table, valid_name)
from clusterkit.config import load_cluster, registry_of
from clusterkit.definition import edits
from clusterkit.definition.source import daemon_state_dir
from clusterkit.control import ControlError, request

sync_app = typer.Typer(help="Replicated directories (sync sets).", no_args_is_help=True)


@sync_app.command("add")
@guard
def sync_add(ctx: typer.Context, name: str, config: ConfigOpt,
             path: Annotated[str, typer.Option(help="Absolute directory path, the same on every host.")],
             exclude: Annotated[Optional[list[str]], typer.Option(
                 help="rsync pattern never sent nor deleted on nodes (repeat).")] = None,
             on_change: Annotated[str, typer.Option(
                 help="Command a node runs after a batch of this set lands.")] = "") -> None:
    """Add a sync set."""
    valid_name(name)
    entry = {"name": name, "path": path}
    if exclude:
        entry["exclude"] = list(exclude)
    if on_change:
        entry["on_change"] = on_change
    edits.add_sync_set(config, plugin_manager(ctx), entry)
    typer.echo(f"added sync set {name} ({path})")


@sync_app.command("remove")
@guard
def sync_remove(ctx: typer.Context, name: str, config: ConfigOpt) -> None:
    """Remove a sync set (files already on nodes stay)."""
    valid_name(name)
    edits.remove_sync_set(config, plugin_manager(ctx), name)
    typer.echo(f"removed sync set {name}")


@sync_app.command("list")
@guard
def sync_list(ctx: typer.Context, config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """List sync sets, those of the definition and those plugins add."""
    cluster = load_cluster(config, plugin_manager(ctx))
    rows = [{"name": s.name, "path": s.path, "exclude": list(s.exclude), "on_change": s.on_change,
             "owner": s.owner} for s in cluster.sync_sets]
    emit(rows, as_json, lambda r: table(r, ["name", "path", "owner", "on_change"]))


@sync_app.command("status")
@guard
def sync_status(config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """Per node: state, pending paths, lag, last success, errors and failing sets (asks the daemon)."""
    report = request(daemon_state_dir(config), "sync_status")
    emit(report, as_json, render_status)


def render_status(report: dict) -> str:
    now = time.time()
    rows = []
    for name, n in report["nodes"].items():
        state = n["state"]
        if n.get("progress") is not None:
            state += f" {n['progress']}%"
        if n.get("retry_at"):
            state += f" (retry in {max(0.0, n['retry_at'] - now):.1f}s)"
        if n.get("failing_sets"):
            state += f", {len(n['failing_sets'])} set{'s' * (len(n['failing_sets']) > 1)} failing"
        rows.append({"node": name, "transport": n["transport"], "state": state,
                     "pending": n["pending"] if not n["full_sync_pending"]
                     else f"{n['pending']} (full: {','.join(n['full_sync_pending'])})",
                     "lag": f"{n['lag']:.3f}s",
                     "last_success": _ago(n["last_success"], now),
                     "last_error": _ago(n["last_error_at"], now) if n["last_error"] else "-"})
    lines = [table(rows, ["node", "transport", "state", "pending", "lag", "last_success",
                          "last_error"])]
    for name, n in report["nodes"].items():  # whole, never cut: it says what to do
        failing = n.get("failing_sets") or {}
        if n["last_error"] and n["last_error"] not in {f"set {s}: {f['error']}"
                                                       for s, f in failing.items()}:
            lines.append(f"{name}: error {_ago(n['last_error_at'], now)}: {n['last_error']}")
        for sset, f in failing.items():
            retry = f", retry in {max(0.0, f['retry_at'] - now):.1f}s" if f.get("retry_at") else ""
            lines.append(f"{name}: set {sset} failing ({f['failures']} in a row, {f['pending']} "
                         f"paths wait{retry}): error {_ago(f['error_at'], now)}: {f['error']}")
    lines.append(f"sets: {', '.join(report['sets']) or '(none)'}; events {report['events']}, "
                 f"rsync runs {report['rsync_runs']}, inotify overflows {report['overflows']}")
    for name, w in sorted(report.get("watch", {}).items()):
        if w["state"] in ("deaf", "partial"):
            where = f" (e.g. {', '.join(w['unwatched'][:3])})" if w.get("unwatched") else ""
            lines.append(f"WATCHER FAILING on set {name} since {_ago(w['since'], now)}: "
                         f"{w['reason']}{where}; the set is scanned until it works again")
        elif w["state"] == "unproven":
            lines.append(f"watcher of set {name} not proved yet{': ' + w['reason'] if w['reason'] else ''}")
    missed = report.get("missed_changes") or {}
    if missed:
        lines.append("changes the watcher missed (found by full syncs): "
                     + ", ".join(f"{s} {n}" for s, n in sorted(missed.items())))
    return "\n".join(lines)


def _ago(stamp: float | None, now: float) -> str:
    return "never" if not stamp else f"{now - stamp:.1f}s ago"


@sync_app.command("verify")
@guard
def sync_verify(ctx: typer.Context, config: ConfigOpt,
                node: Annotated[Optional[str], typer.Argument(
                    help="Only this node (default: every node).")] = None,
                as_json: JsonOpt = False) -> None:
    """Compare every node's copy with the manager's by checksum; list differences, exit 1 if any.

    Runs rsync -ain --delete --checksum (nothing is changed) per node and sync
    set; excluded paths are not compared.
    """
    from clusterkit.sync import rsync

    valid_name(node, "NODE")
    pm = plugin_manager(ctx)
    cluster = load_cluster(config, pm)
    nodes = [cluster.host(node)] if node else cluster.nodes
    if node and nodes[0].role != "node":
        raise UsageError(f"{node!r} is the manager, not a node")
    registry = registry_of(pm)
    manager = cluster.manager

    steps = [(host, sset) for host in nodes for sset in cluster.sync_sets]
    show = not as_json and sys.stderr.isatty()

    async def compare() -> list[dict]:
        out = []
        for step, (host, sset) in enumerate(steps):
            kind = registry.transports[host.transport]
            if show:  # one line on the terminal, redrawn: where the comparison is
                sys.stderr.write(f"\r{_steps(step, len(steps))} {host.name} {sset.name}\033[K")
                sys.stderr.flush()
            job = rsync.Job(source=manager.local_path(sset.path),
                            destination=kind.destination(host, sset.path),
                            transport_args=list(kind.rsync_args(host)), exclude=sset.exclude,
                            full=True, dry_run=True, checksum=True)
            if not os.path.isdir(job.source):
                continue
            result = await rsync.run(job)
            out.append({"node": host.name, "set": sset.name, "exit": result.code,
                        "error": result.stderr if result.code else "",
                        "differences": [line for line in job.lines if not _dir_time_only(line)]})
        return out

    results = asyncio.run(compare())
    if show:
        sys.stderr.write(f"\r{_steps(len(steps), len(steps))}\033[K\n")
    emit(results, as_json, _render_verify)
    if any(r["exit"] or r["differences"] for r in results):
        raise typer.Exit(EXIT_FAILURE)


def _dir_time_only(line: str) -> bool:
    """``.d..t...... dir/``: only a directory's mtime differs (not content; not reported)."""
    return line.startswith(".d") and set(line[2:11]) <= {".", "t"}


def _render_verify(results: list[dict]) -> str:
    lines = []
    for r in results:
        if r["exit"]:
            lines.append(f"{r['node']} {r['set']}: cannot compare (rsync exit {r['exit']}): "
                         f"{r['error'].splitlines()[-1] if r['error'] else ''}")
        elif r["differences"]:
            lines.append(f"{r['node']} {r['set']}: {len(r['differences'])} differences")
            lines += [f"  {d}" for d in r["differences"][:200]]
            if len(r["differences"]) > 200:
                lines.append(f"  ... and {len(r['differences']) - 200} more")
        else:
            lines.append(f"{r['node']} {r['set']}: identical")
    return "\n".join(lines) or "no sync sets"


@sync_app.command("now")
@guard
def sync_now(config: ConfigOpt,
             nodes: Annotated[Optional[list[str]], typer.Argument(
                 metavar="[NODE]...", help="Only these nodes (default: every node).")] = None,
             wait: Annotated[bool, typer.Option(
                 help="Wait until the full sync is done, showing progress; exit 1 if a node "
                      "failed it.")] = False,
             timeout: Annotated[float, typer.Option(
                 help="With --wait: give up after this many seconds.", min=0, max=7 * 86400)] = 3600.0,
             allow_delete: Annotated[bool, typer.Option(
                 help="Let this full sync delete more than the mass-delete guard allows "
                      "(most of a node's copy).")] = False,
             as_json: JsonOpt = False) -> None:
    """Queue a full sync now (to the nodes named, or all), cutting any back-off short.

    Returns once it is queued; with --wait, blocks until every node has it
    (progress on a terminal) and exits 1 if a node failed it or refused it.
    A full sync that would delete more than 1000 files and more than half of a
    node's copy is refused (the node's files stay) unless --allow-delete.
    """
    for node in nodes or ():
        valid_name(node, "NODE")
    state_dir = daemon_state_dir(config)
    try:
        started = request(state_dir, "sync_now", nodes=list(nodes) if nodes else None,
                          allow_delete=allow_delete)
    except ControlError as exc:
        if str(exc).startswith("no node named"):
            raise UsageError(str(exc)) from None
        raise
    if not wait:
        emit(started, as_json, lambda r: f"full sync queued for {', '.join(r['nodes'])} "
                                         "(clusterkit sync status shows how far it is)")
        return
    progress = _wait_for_full_sync(state_dir, started, time.monotonic() + timeout, not as_json)
    if all(p["done"] for p in progress.values()):
        emit(progress, as_json, lambda p: f"full sync done: {', '.join(p)}")
        return
    emit(progress, as_json, lambda p: "\n".join(_outcome(n, s) for n, s in p.items()))
    raise typer.Exit(EXIT_FAILURE)


def _wait_for_full_sync(state_dir: str, started: dict, deadline: float, show: bool) -> dict:
    """Poll the daemon until every node is done, failed or refused (or the deadline).

    On a terminal, one line of bars updated in place; otherwise a plain line
    each time a node's state changes (both on stderr: stdout keeps the result).
    """
    tty = show and sys.stderr.isatty()
    shown: dict[str, str] = {}
    while True:
        progress = request(state_dir, "sync_progress", seq=started["seq"], nodes=started["nodes"])
        if tty:
            sys.stderr.write("\r" + "  ".join(_bar(n, p) for n, p in progress.items()) + "\033[K")
            sys.stderr.flush()
        elif show:
            for name, p in progress.items():
                line = _outcome(name, p) if _finished(p) else _bar(name, p)
                if shown.get(name) != line:
                    shown[name] = line
                    print(line, file=sys.stderr, flush=True)
        if all(_finished(p) for p in progress.values()) or time.monotonic() > deadline:
            if tty:
                sys.stderr.write("\n")
            return progress
        time.sleep(0.2)


def _finished(p: dict) -> bool:
    return bool(p["done"] or p.get("failed") or p.get("refused"))


def _outcome(name: str, p: dict) -> str:
    if p["done"]:
        return f"{name}: done"
    word = "REFUSED" if p.get("refused") else "FAILED" if p.get("failed") else "NOT DONE"
    sets = f" (sets {', '.join(p.get('refused') or p.get('failed'))})" \
        if p.get("refused") or p.get("failed") else ""
    return f"{name}: {word}{sets}: {p['last_error'] or 'no error yet'}"


def _steps(done: int, total: int, width: int = 20) -> str:
    fill = width * done // max(1, total)
    return f"verify [{'#' * fill}{'.' * (width - fill)}] {done}/{total}"


def _bar(name: str, p: dict, width: int = 20) -> str:
    pct = 100 if p["done"] else (p["progress"] or 0)
    fill = width * pct // 100
    extra = "" if p["done"] or not p.get("retry_at") else \
        f" (retry in {max(0.0, p['retry_at'] - time.time()):.0f}s)"
    return f"{name} [{'#' * fill}{'.' * (width - fill)}] {pct:3d}%{extra}"


def register(app: typer.Typer) -> None:
    app.add_typer(sync_app, name="sync")
