"""DNS zones and records in the panel: the zone store on the manager, as `clusterkit dns zone|record`.

Contributed through the panel's ``clusterkit_panel_routes`` hook, so only
imported when the panel builds its routes. Errors of the zone store are
typed: :class:`~clusterkit_dns.zoneedit.ZoneNotFound` is a 404, any other
:class:`~clusterkit_dns.zoneedit.ZoneEditError` a 400.
"""

from __future__ import annotations

import asyncio
import logging

from clusterkit_dns.settings import settings_of
from clusterkit_dns.zoneedit import ZoneEditError, ZoneNotFound
from clusterkit_dns.zonestore import ZoneStore
from clusterkit_panel.routes import BODY, USER, PanelError, Route, answer

log = logging.getLogger("clusterkit.panel")
MAX_TTL = 2 ** 31 - 1  # RFC 2181 §8


def zone_store(cluster) -> ZoneStore:
    """The manager's zone store (the library `clusterkit dns zone` uses)."""
    return ZoneStore(cluster.manager.local_path(settings_of(cluster).zones_dir))


async def _zone_call(panel, method: str, *args, **kwargs):
    store = zone_store(panel.runtime.cluster)
    try:
        return await asyncio.to_thread(getattr(store, method), *args, **kwargs)
    except ZoneNotFound as exc:
        raise PanelError(404, str(exc)) from None
    except ZoneEditError as exc:
        raise PanelError(400, str(exc)) from None


async def zones_list(panel, request):
    return answer(await _zone_call(panel, "zones"))


async def zones_add(panel, request):
    body = request[BODY]
    zone, ns, email = body.get("zone"), body.get("ns"), body.get("email")
    if not isinstance(zone, str) or not zone:
        raise PanelError(400, "field 'zone' is required")
    if isinstance(ns, str):
        ns = [n.strip() for n in ns.split(",") if n.strip()]
    if ns is not None and (not isinstance(ns, list) or not all(isinstance(n, str) for n in ns)):
        raise PanelError(400, "field 'ns' must be a list of names")
    if email is not None and not isinstance(email, str):
        raise PanelError(400, "field 'email' must be an address (text)")
    result = await _zone_call(panel, "create", zone, ns=ns or None, email=email or None)
    log.info("%s created zone %s", request[USER], zone)
    return answer(result, 201)


async def zones_remove(panel, request):
    zone = request.match_info["zone"]
    await _zone_call(panel, "delete", zone)
    return answer({"removed": zone})


async def records_list(panel, request):
    return answer(await _zone_call(panel, "records", request.match_info["zone"]))


async def records_add(panel, request):
    body = request[BODY]
    values = [body.get(k) for k in ("name", "type", "value")]
    if not all(isinstance(v, str) and v for v in values):
        raise PanelError(400, "fields 'name', 'type' and 'value' are required strings")
    ttl = body.get("ttl")
    if ttl in ("", None):
        ttl = None
    elif isinstance(ttl, str) and ttl.isdigit() and len(ttl) <= 10:
        ttl = int(ttl)
    if ttl is not None and (not isinstance(ttl, int) or isinstance(ttl, bool)
                            or not 0 <= ttl <= MAX_TTL):
        raise PanelError(400, f"field 'ttl' must be whole seconds, 0..{MAX_TTL}")
    result = await _zone_call(panel, "add_record", request.match_info["zone"], *values, ttl)
    return answer(result, 201)


async def records_remove(panel, request):
    query = request.query
    if not query.get("name") or not query.get("type"):
        raise PanelError(400, "query parameters 'name' and 'type' are required ('value' narrows)")
    result = await _zone_call(panel, "remove_record", request.match_info["zone"], query["name"],
                              query["type"], query.get("value") or None)
    return answer(result)


def routes() -> list[Route]:
    return [
        Route("GET", "/api/v1/dns/zones", zones_list, "operator",
              "The manager's zones with serial and record count (the dns plugin's zone store).",
              where="manager"),
        Route("POST", "/api/v1/dns/zones", zones_add, "operator", "Create a zone.", changes=True,
              body={"zone": {"type": "string"}, "ns": {"type": "array", "items": {"type": "string"}},
                    "email": {"type": "string"}}),
        Route("DELETE", "/api/v1/dns/zones/{zone}", zones_remove, "operator", "Remove a zone.",
              changes=True),
        Route("GET", "/api/v1/dns/zones/{zone}/records", records_list, "operator",
              "A zone's records.", where="manager"),
        Route("POST", "/api/v1/dns/zones/{zone}/records", records_add, "operator",
              "Add a record (the serial follows).", changes=True,
              body={"name": {"type": "string"}, "type": {"type": "string"},
                    "value": {"type": "string"}, "ttl": {"type": "integer"}}),
        Route("DELETE", "/api/v1/dns/zones/{zone}/records", records_remove, "operator",
              "Remove records (?name=&type=[&value=]); the serial follows.", changes=True),
    ]
