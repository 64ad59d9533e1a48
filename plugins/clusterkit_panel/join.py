"""``clusterkit join``: a node trades a one-time token for its cluster certificate.

A token is ``ck1.<CA fingerprint>.<secret>``. The node first fetches the CA
certificate without trusting anyone and checks it against the fingerprint
in the token (so a man in the middle cannot hand it another CA), then sends
its certificate request over HTTPS verified against that CA. Its new key
never leaves the node.
"""

from __future__ import annotations

import http.client
import json
import os
import ssl
from urllib.parse import urlsplit

from clusterkit.definition.files import write_atomic
from clusterkit.definition.source import DEFINITION_MODE
from clusterkit_panel import pki

PREFIX = "ck1"


class JoinError(Exception):
    """The join was refused or could not be made; the message says why."""


def make_token(ca_fingerprint: str, secret: str) -> str:
    return f"{PREFIX}.{ca_fingerprint}.{secret}"


def parse_token(token: str) -> tuple[str, str]:
    parts = token.strip().split(".")
    if len(parts) != 3 or parts[0] != PREFIX or len(parts[1]) != 64:
        raise JoinError("not a clusterkit join token (expected ck1.<fingerprint>.<secret>; "
                        "clusterkit node token NAME prints one on the manager)")
    return parts[1], parts[2]


def _request(url: str, method: str, path: str, ctx: ssl.SSLContext, body=None,
             timeout: float = 15.0) -> tuple[int, bytes]:
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if parts.scheme != "https":
        raise JoinError(f"{url}: the manager's panel URL must be https://")
    conn = http.client.HTTPSConnection(parts.hostname, parts.port or 2443, context=ctx, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Content-Type": "application/json"} if data else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    except (OSError, ssl.SSLError) as exc:
        raise JoinError(f"cannot reach the manager at {url}: {exc}") from None
    finally:
        conn.close()


def join(url: str, token: str, name: str, state_dir_of, config_path: str) -> dict:
    """Join as ``name``; ``state_dir_of(config_path, name)`` says where the certificate goes."""
    pin, secret = parse_token(token)
    blind = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    blind.check_hostname = False
    blind.verify_mode = ssl.CERT_NONE  # only to fetch the CA, which the token's fingerprint checks
    status, ca_pem = _request(url, "GET", "/api/v1/ca", blind)
    if status != 200:
        raise JoinError(f"the manager gave no CA certificate (HTTP {status})")
    ca = pki.load_cert(ca_pem)
    if pki.fingerprint(ca) != pin:
        raise JoinError("the manager's CA does not match the token's fingerprint: refusing to join "
                        "(wrong manager, or someone in between)")
    key, csr = pki.make_csr(name)
    trusted = ssl.create_default_context(cadata=ca_pem.decode())
    status, raw = _request(url, "POST", "/api/v1/join", trusted,
                           {"node": name, "token": secret, "csr": csr.decode()})
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = {"error": raw[:200].decode(errors="replace")}
    if status != 200:
        raise JoinError(f"the manager refused the join: {answer.get('error', f'HTTP {status}')}")
    cert = pki.load_cert(answer["certificate"].encode())
    cert.verify_directly_issued_by(ca)
    wrote_definition = False
    if not os.path.exists(config_path):
        os.makedirs(os.path.dirname(os.path.abspath(config_path)), exist_ok=True)
        write_atomic(config_path, answer["definition"], DEFINITION_MODE)  # owner-only, as every copy
        wrote_definition = True
    state_dir = state_dir_of(config_path, name)
    paths = pki.store_host_cert(state_dir, pki.key_pem(key), answer["certificate"].encode(), ca_pem)
    return {"node": name, "cluster": answer["cluster"], "manager": answer["manager"],
            "serial": answer["serial"], "certificate": paths.cert, "key": paths.key,
            "definition": config_path if wrote_definition else None}
