"""Is every host serving the manager's zones? Asked over DNS, the way a resolver would see it.

Replication carries the files; this proves the answers. The expected state is
the manager's zone directory (its files, the source of truth). Every host —
the manager included, its server may not have reloaded yet — is asked for each
zone's SOA at its DNS address; a host is converged when it answers every zone
with the same serial. Otherwise it is reported as lagging (older serial, RFC
1982), ahead, missing zones (REFUSED: not served), or not answering. Zones a
host serves beyond the manager's (deleted there, still served) cannot be
listed over DNS; they are found for the daemons of this machine, through
their control socket (``zone_set_checked`` says for which hosts).
"""

from __future__ import annotations

import asyncio
import ipaddress

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype

from clusterkit.control import ControlError, request
from clusterkit.definition.values import endpoint
from clusterkit_dns.serial import serial_gt, serial_lt
from clusterkit_dns.settings import settings_of
from clusterkit_dns.zonestore import ZoneStore

TIMEOUT = 1.0
TRIES = 2
IN_FLIGHT = 64  # queries (sockets) at once: thousands of zones x hosts must not exhaust fds


async def ask_soa(address: str, port: int, zone: str, timeout: float = TIMEOUT,
                  limit: asyncio.Semaphore | None = None) -> dict:
    """``{"serial": n}``, ``{"rcode": "REFUSED"}`` or ``{"error": ...}`` for one zone on one server."""
    if limit is not None:
        async with limit:
            return await ask_soa(address, port, zone, timeout)
    query = dns.message.make_query(zone, dns.rdatatype.SOA)
    query.flags &= ~dns.flags.RD
    error = "no answer"
    for _ in range(TRIES):
        try:
            response = await dns.asyncquery.udp(query, address, timeout=timeout, port=port)
            if response.flags & dns.flags.TC:
                response = await dns.asyncquery.tcp(query, address, timeout=timeout, port=port)
        except dns.exception.Timeout:
            error = f"no answer within {timeout:g}s"
            continue
        except (dns.exception.DNSException, OSError) as exc:
            error = str(exc) or type(exc).__name__
            continue
        soa = next((r for r in response.answer if r.rdtype == dns.rdatatype.SOA), None)
        if response.rcode() == dns.rcode.NOERROR and soa is not None \
                and response.flags & dns.flags.AA:
            return {"serial": soa[0].serial}
        return {"rcode": dns.rcode.to_text(response.rcode())
                if response.rcode() != dns.rcode.NOERROR else "no SOA"}
    return {"error": error}


def served_zones(state_dir: str) -> list[str] | None:
    """The zones a daemon on *this* machine serves, from its control socket; None when there
    is none here (a remote host: DNS cannot list the zones a server serves)."""
    try:
        status = request(state_dir, "status", timeout=2.0)
    except (ControlError, OSError, ValueError):
        return None
    zones = (status or {}).get("dns", {}).get("zones")
    return sorted(zones) if isinstance(zones, dict) else None


async def check_host(name: str, address: str, port: int, expected: dict,
                     state_dir: str | None = None, limit: asyncio.Semaphore | None = None) -> dict:
    zones = sorted(expected)
    answers = [await ask_soa(address, port, zones[0], limit=limit)] if zones else []
    if answers and "error" in answers[0]:  # silent: do not wait out every zone's timeout
        answers += [{"error": "skipped: the host did not answer for " + zones[0]}] * (len(zones) - 1)
    else:
        answers += await asyncio.gather(*(ask_soa(address, port, z, limit=limit)
                                          for z in zones[1:]))
    served = await asyncio.to_thread(served_zones, state_dir) if state_dir else None
    row = {"host": name, "address": endpoint(address, port), "answering": True, "zones": {},
           "lagging": [], "ahead": [], "missing": [], "errors": [],
           "extra": [z for z in served if z not in expected] if served is not None else [],
           "zone_set_checked": served is not None}
    for zone, answer in zip(zones, answers):
        row["zones"][zone] = answer.get("serial")
        if "serial" in answer:
            if serial_lt(answer["serial"], expected[zone]):
                row["lagging"].append(zone)
            elif serial_gt(answer["serial"], expected[zone]):
                row["ahead"].append(zone)
        elif "rcode" in answer:
            row["missing"].append(zone)
        else:
            row["errors"].append(f"{zone}: {answer['error']}")
    row["answering"] = not zones or len(row["errors"]) < len(zones)
    row["converged"] = not (row["lagging"] or row["ahead"] or row["missing"] or row["errors"]
                            or row["extra"])
    return row


def dns_address(settings, host) -> tuple[str, int]:
    """Where to ask ``host``: its first DNS address, its ``ip`` for a wildcard listen."""
    for address, port in settings.addresses(host):
        if not ipaddress.ip_address(address).is_unspecified:
            return address, port
    return host.ip, settings.port


def expected_serials(cluster) -> tuple[dict, list]:
    """The manager's zones and serials, from its files; and the files that do not load."""
    settings = settings_of(cluster)
    store = ZoneStore(cluster.manager.local_path(settings.zones_dir))
    expected, broken = {}, []
    for row in store.zones():
        if row["error"]:
            broken.append(row["error"])
        else:
            expected[row["zone"] + "."] = row["serial"]
    return expected, broken


async def cluster_status(cluster, expected: dict | None = None) -> dict:
    """The convergence report for every host of ``cluster``."""
    settings = settings_of(cluster)
    broken: list = []
    if expected is None:
        expected, broken = expected_serials(cluster)
    hosts = list(cluster.hosts.values())
    limit = asyncio.Semaphore(IN_FLIGHT)
    rows = await asyncio.gather(*(
        check_host(h.name, *dns_address(settings, h), expected, cluster.host_state_dir(h.name),
                   limit) for h in hosts))
    return {
        "zones": {z.rstrip("."): s for z, s in sorted(expected.items())},
        "broken_files": broken,
        "hosts": [{**r, "zones": {z.rstrip("."): s for z, s in r["zones"].items()},
                   "lagging": [z.rstrip(".") for z in r["lagging"]],
                   "ahead": [z.rstrip(".") for z in r["ahead"]],
                   "missing": [z.rstrip(".") for z in r["missing"]],
                   "extra": [z.rstrip(".") for z in r["extra"]]} for r in rows],
        "converged": all(r["converged"] for r in rows) and not broken,
    }


def render(report: dict) -> str:
    lines = [f"{len(report['zones'])} zones on the manager: "
             + ", ".join(f"{z} {s}" for z, s in report["zones"].items())]
    for error in report["broken_files"]:
        lines.append(f"  manager file does not load: {error}")
    for row in report["hosts"]:
        if row["converged"]:
            lines.append(f"{row['host']:<12} {row['address']:<22} converged")
            continue
        if not row["answering"]:
            lines.append(f"{row['host']:<12} {row['address']:<22} NOT ANSWERING: "
                         + "; ".join(row["errors"][:1]))
            continue
        problems = [f"lagging {z} (serial {row['zones'][z]} < {report['zones'][z]})"
                    for z in row["lagging"]]
        problems += [f"ahead {z} (serial {row['zones'][z]} > {report['zones'][z]})"
                     for z in row["ahead"]]
        problems += [f"missing {z}" for z in row["missing"]]
        problems += [f"extra {z} (not on the manager)" for z in row["extra"]]
        problems += row["errors"]
        lines.append(f"{row['host']:<12} {row['address']:<22} " + "; ".join(problems))
    lines.append("converged" if report["converged"] else "NOT converged")
    return "\n".join(lines)
