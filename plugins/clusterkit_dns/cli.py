"""``clusterkit dns``: run the DNS server alone, validate zone files.

The sub-app object ``app`` is what the plugin adds to the root CLI; later
commands (zones and records) join it here.
"""

from __future__ import annotations

import asyncio
import ipaddress
import signal
from typing import Annotated, Optional

import typer

from clusterkit.cli.common import JsonOpt, UsageError, emit, guard
from clusterkit.logs import setup_logging

app = typer.Typer(help="Authoritative DNS: serve and check zones, edit zones and records, "
                       "cluster convergence.", no_args_is_help=True)


def parse_endpoint(value: str) -> tuple[str, int]:
    """``ADDR:PORT`` or ``[V6ADDR]:PORT`` → ``(addr, port)``; a bad value is a usage error."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
        if not sep or not 0 <= number <= 65535:
            raise ValueError
    except ValueError:
        raise UsageError(f"--listen {value!r}: expected ADDR:PORT, e.g. 127.0.0.1:5353 "
                         f"or [::1]:5353") from None
    return host, number


@app.command("serve")
@guard
def serve(
    zones: Annotated[str, typer.Option("--zones", help="Directory of NAME.zone files.")],
    listen: Annotated[list[str], typer.Option(
        "--listen", help="ADDR:PORT to serve on, UDP and TCP (repeat for several).")],
    tcp_idle: Annotated[float, typer.Option(help="Seconds before an idle TCP connection is closed.")] = 10.0,
    tcp_max: Annotated[int, typer.Option(help="Most concurrent TCP connections.")] = 512,
    tcp_per_client: Annotated[int, typer.Option(
        min=1, help="Most concurrent TCP connections from one address.")] = 16,
    identity: Annotated[Optional[str], typer.Option(
        help="What CH TXT id.server answers (default: the host name; \"\" refuses).")] = None,
    server_version: Annotated[Optional[str], typer.Option(
        help="What CH TXT version.server answers (default: clusterkit's version; \"\" refuses).")]
    = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Serve the zones of a directory until SIGTERM/SIGINT (no cluster needed).

    Files added, changed or removed in the directory are served within a
    second; a file that fails to load is logged with file and line and its
    previous version keeps serving.
    """
    from clusterkit.eventloop import freeze_started_heap, new_event_loop
    from clusterkit_dns.server import DnsServer

    setup_logging("human", verbose)
    endpoints = [parse_endpoint(v) for v in listen]
    loop = new_event_loop()
    asyncio.set_event_loop(loop)

    async def run() -> None:
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        server = DnsServer(zones, endpoints, tcp_idle=tcp_idle, tcp_max=tcp_max,
                           tcp_per_client=tcp_per_client, identity=identity,
                           version=server_version, alone=True)
        await server.start()
        freeze_started_heap()
        try:
            await stop.wait()
        finally:
            await server.stop()

    try:
        loop.run_until_complete(run())
    finally:
        loop.close()


@app.command("check")
@guard
def check(
    file: Annotated[str, typer.Argument(help="A zone file (NAME.zone names the zone).")],
    origin: Annotated[Optional[str], typer.Option(
        help="The zone name, when the file name does not say it.")] = None,
    zones_dir: Annotated[Optional[str], typer.Option(
        help="Where $INCLUDE paths start (default: the file's directory).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate a zone file as the server would load it; exit 2 naming file and line on error."""
    import dns.exception
    import dns.name

    from clusterkit_dns.zones import ZoneError, load_zone

    try:
        name = dns.name.from_text(origin) if origin else None
    except dns.exception.DNSException as exc:
        raise UsageError(f"--origin {origin!r}: {exc}") from None
    try:
        zone = load_zone(file, name, zones_dir)
    except ZoneError as exc:
        raise UsageError(str(exc)) from None
    report = {"zone": str(zone.origin), "file": file, "serial": zone.serial,
              "records": zone.records, "names": sum(1 for node in zone.names.values() if node),
              "delegations": len(zone.cuts),
              "warnings": list(zone.warnings)}
    emit(report, as_json, lambda r: "".join(f"warning: {w}\n" for w in r["warnings"])
         + f"{r['zone']} ok: serial {r['serial']}, {r['records']} records, "
           f"{r['names']} names, {r['delegations']} delegations")
