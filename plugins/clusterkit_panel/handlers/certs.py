"""The cluster CA for anyone, and joining: a node trades a one-time token for a certificate."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from clusterkit.sync.definition import for_join
from clusterkit_panel import pki
from clusterkit_panel.access import reserve
from clusterkit_panel.routes import BODY, PanelError, Route, answer
from clusterkit_panel.store import TokenRefused

log = logging.getLogger("clusterkit.panel")


async def ca_cert(panel, request):
    try:
        return web.Response(body=open(panel.paths.ca_cert, "rb").read(),
                            content_type="application/x-pem-file")
    except FileNotFoundError:
        raise PanelError(404, "this host has no cluster CA certificate yet") from None


async def join(panel, request):
    body = request[BODY]
    node, token, csr = body.get("node"), body.get("token"), body.get("csr")
    if not all(isinstance(v, str) and v for v in (node, token, csr)):
        raise PanelError(400, "node, token and csr are required strings")
    attempt = reserve(panel, request, "failed joins")
    cluster = panel.runtime.cluster
    host = cluster.hosts.get(node)
    if host is None or host.role != "node":
        raise PanelError(404, f"no node named {node!r} in the cluster definition (add it first)")
    secret = token.rpartition(".")[2]
    try:
        panel.store.use_join_token(secret, node)
    except TokenRefused as exc:
        raise PanelError(403, str(exc)) from None
    attempt.succeeded()
    try:
        cert = pki.sign_host(panel.runtime.state_dir, csr.encode(), node, host.ip)
    except pki.PKIError as exc:
        raise PanelError(400, str(exc)) from None
    serial = pki.serial_hex(cert)
    panel.store.add_cert(serial, node)
    panel.store.revoke_others(node, serial)
    panel.accounts.write_revoked(panel.store.revoked())
    log.info("node %s joined (certificate %s)", node, serial)
    definition = await asyncio.to_thread(for_join, panel.runtime)  # minus the manager's keys
    return answer({"certificate": pki.cert_pem(cert).decode(),
                   "ca": open(panel.paths.ca_cert).read(), "serial": serial,
                   "cluster": cluster.name, "manager": cluster.manager.name,
                   "definition": definition})


ROUTES = [
    Route("GET", "/api/v1/ca", ca_cert, "public", "The cluster CA certificate (PEM); a join pins it."),
    Route("POST", "/api/v1/join", join, "public",
          "Join with a one-time token: the manager signs the node's CSR.", where="manager",
          body={"node": {"type": "string"}, "token": {"type": "string"}, "csr": {"type": "string"}}),
]
