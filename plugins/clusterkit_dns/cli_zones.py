"""``clusterkit dns zone|record|status``: zone management on the manager, convergence check.

Thin wrappers over :class:`clusterkit_dns.zonestore.ZoneStore` (the panel
calls the same functions) and :mod:`clusterkit_dns.convergence`. The zones
directory is the manager's copy of ``[dns] zones_dir``; the manager's DNS
server picks an edit up within a second, replication carries it to the nodes
and NOTIFY to the outside secondaries.
"""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from clusterkit.cli.common import (EXIT_FAILURE, ConfigOpt, JsonOpt, UsageError, emit, guard,
                                   plugin_manager, table)
from clusterkit.config import load_cluster
from clusterkit_dns.settings import settings_of
from clusterkit_dns.zoneedit import ZoneEditError
from clusterkit_dns.zonestore import ZoneStore

zone_app = typer.Typer(help="Create, remove and list the cluster's zones (on the manager).",
                       no_args_is_help=True)
record_app = typer.Typer(help="Add, remove and list records of a zone; the serial follows.",
                         no_args_is_help=True)

TtlOpt = Annotated[Optional[int], typer.Option(
    "--ttl", min=0, max=2147483647,
    help="TTL in seconds (default: the RRset's, else the zone's $TTL).")]


def _store(ctx: typer.Context, config: str) -> ZoneStore:
    cluster = load_cluster(config, plugin_manager(ctx))
    return ZoneStore(cluster.manager.local_path(settings_of(cluster).zones_dir))


def _edit(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except ZoneEditError as exc:
        raise UsageError(str(exc)) from None


@zone_app.command("add")
@guard
def zone_add(ctx: typer.Context, zone: Annotated[str, typer.Argument(metavar="ZONE", help="The zone, e.g. example.com.")],
             config: ConfigOpt,
             ns: Annotated[Optional[list[str]], typer.Option(
                 "--ns", help="A name server of the zone (repeat; default ns1.ZONE).")] = None,
             email: Annotated[Optional[str], typer.Option(
                 help="The zone's contact, written into the SOA (default hostmaster@ZONE).")] = None,
             template: Annotated[Optional[Path], typer.Option(
                 help="A zone file with {zone} {serial} {ns} {ns_records} {email} {date} "
                      "placeholders.", exists=True, dir_okay=False)] = None,
             as_json: JsonOpt = False) -> None:
    """Create a zone file on the manager, validated before it appears."""
    store = _store(ctx, config)
    text = template.read_text() if template else None
    result = _edit(store.create, zone, ns=ns, email=email, template=text)
    emit(result, as_json, lambda r: f"created zone {r['zone']} (serial {r['serial']}) in {r['file']}")


@zone_app.command("remove")
@guard
def zone_remove(ctx: typer.Context, zone: Annotated[str, typer.Argument(metavar="ZONE", help="The zone to remove.")],
                config: ConfigOpt) -> None:
    """Remove a zone file; every host stops serving it once replication deletes it."""
    path = _edit(_store(ctx, config).delete, zone)
    typer.echo(f"removed zone {zone} ({path})")


@zone_app.command("list")
@guard
def zone_list(ctx: typer.Context, config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """List the manager's zones with serial and record count (or why a file does not load)."""
    rows = _store(ctx, config).zones()
    emit(rows, as_json, lambda r: table(
        [{**x, "serial": x["serial"] if x["serial"] is not None else "-",
          "records": x["records"] if x["records"] is not None else x["error"]} for x in r],
        ["zone", "serial", "records"]))


@zone_app.command("bump")
@guard
def zone_bump(ctx: typer.Context, zone: Annotated[str, typer.Argument(metavar="ZONE", help="The zone.")],
              config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """Bump the serial alone, after editing the file by hand (secondaries pull on a new serial)."""
    serial = _edit(_store(ctx, config).bump, zone)
    emit({"zone": zone, "serial": serial}, as_json, lambda r: f"{r['zone']}: serial {r['serial']}")


@record_app.command("add")
@guard
def record_add(ctx: typer.Context,
               zone: Annotated[str, typer.Argument(metavar="ZONE", help="The zone.")],
               name: Annotated[str, typer.Argument(
                   metavar="NAME", help="Owner: @, a name relative to the zone, or absolute.")],
               rtype: Annotated[str, typer.Argument(metavar="TYPE", help="A, AAAA, MX, TXT, CNAME, ...")],
               value: Annotated[str, typer.Argument(
                   metavar="VALUE", help='The data in zone-file form, e.g. "10 mail"; for TXT, '
                                         'plain text is quoted for you.')],
               config: ConfigOpt, ttl: TtlOpt = None, as_json: JsonOpt = False) -> None:
    """Add a record (one line, after the owner's other records) and bump the serial."""
    result = _edit(_store(ctx, config).add_record, zone, name, rtype, value, ttl)
    emit(result, as_json, lambda r: f"added {r['name']} {r['ttl']} {r['type']} {r['value']} "
                                    f"to {r['zone']} (serial {r['serial']})")


@record_app.command("remove")
@guard
def record_remove(ctx: typer.Context,
                  zone: Annotated[str, typer.Argument(metavar="ZONE", help="The zone.")],
                  name: Annotated[str, typer.Argument(metavar="NAME", help="Owner: @, relative or absolute.")],
                  rtype: Annotated[str, typer.Argument(metavar="TYPE", help="The record type.")],
                  config: ConfigOpt,
                  value: Annotated[Optional[str], typer.Argument(
                      metavar="VALUE", help="Only the record with this data (default: all of "
                                              "NAME TYPE).")] = None,
                  as_json: JsonOpt = False) -> None:
    """Remove records (their lines only) and bump the serial."""
    result = _edit(_store(ctx, config).remove_record, zone, name, rtype, value)
    emit(result, as_json, lambda r: f"removed {r['removed']} {r['name']} {r['type']} record(s) "
                                    f"from {r['zone']} (serial {r['serial']})")


@record_app.command("list")
@guard
def record_list(ctx: typer.Context, zone: Annotated[str, typer.Argument(metavar="ZONE", help="The zone.")],
                config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """List a zone's records as the server loads them ($INCLUDE files too)."""
    rows = _edit(_store(ctx, config).records, zone)
    emit(rows, as_json, lambda r: table(r, ["name", "ttl", "type", "value"]))


@guard
def status(ctx: typer.Context, config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """Ask every host's DNS server for every zone's SOA; exit 1 unless all serve the manager's serials."""
    from clusterkit_dns.convergence import cluster_status, render

    cluster = load_cluster(config, plugin_manager(ctx))
    if not settings_of(cluster).enabled:
        raise UsageError(f"{config}: [dns] enabled = false: no host serves DNS")
    report = asyncio.run(cluster_status(cluster))
    report["checked_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    emit(report, as_json, render)
    if not report["converged"]:
        raise typer.Exit(EXIT_FAILURE)


def register(dns: typer.Typer) -> None:
    """Add the zone and record commands to this CLI build's ``dns`` noun."""
    dns.add_typer(zone_app, name="zone")
    dns.add_typer(record_app, name="record")
    dns.command("status")(status)
