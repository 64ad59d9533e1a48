"""Built-in health checks.

``tcp`` (a connect), ``command`` (a local command's exit code), ``http`` and
``https`` (GET a path, expected status, optional body substring),
``smtp`` (220 greeting, EHLO → 250), ``pop3`` (+OK), ``imap`` (* OK),
``ftp`` (220) and ``dns`` (the SOA of a zone with AA set). The TCP-based
ones send the policy's PROXY header first, as the proxy does for clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

from clusterkit import hookimpl
from clusterkit.registry import CheckFailed, CheckKind, CheckTarget
from clusterkit_checks import protocols
from clusterkit_checks.session import bounded


async def _connect_only(session) -> str:
    await session.open()
    return "connected"


tcp_check = bounded("tcp", _connect_only)


async def command_check(target: CheckTarget) -> str:
    """Run ``options.command`` with CK_NODE/CK_ADDRESS/CK_PORT set; exit 0 is healthy."""
    command = target.options.get("command")
    if not command:
        raise CheckFailed("check option 'command' is not set")
    env = {**os.environ, "CK_NODE": target.node, "CK_ADDRESS": target.address,
           "CK_PORT": str(target.port)}
    proc = await asyncio.create_subprocess_shell(
        command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        start_new_session=True)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), target.timeout)
    except asyncio.TimeoutError:
        raise CheckFailed(f"command timed out after {target.timeout}s") from None
    finally:
        if proc.returncode is None:  # timed out or cancelled: the whole process group goes
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
    text = out.decode(errors="replace").strip()[-200:]
    if proc.returncode != 0:
        raise CheckFailed(f"command exited {proc.returncode}: {text}")
    return text or "exit 0"


@hookimpl
def clusterkit_register_health_checks(register):
    register(CheckKind("tcp", tcp_check, "a TCP connect succeeds within the timeout"))
    register(CheckKind("command", command_check, "a local command exits 0 (option: command)"))
    register(CheckKind("http", bounded("http", protocols.http_probe),
                       "GET a path: expected status, optional body substring "
                       "(options: path, status, expect, host)"))
    register(CheckKind("https", bounded("https", protocols.https_probe),
                       "http over TLS, node certificate not verified by default "
                       "(options: as http, plus verify, ca, sni)"))
    register(CheckKind("smtp", bounded("smtp", protocols.smtp_probe),
                       "220 greeting, EHLO answered 250 (options: helo, tls)"))
    register(CheckKind("pop3", bounded("pop3", protocols.pop3_probe), "+OK greeting (option: tls)"))
    register(CheckKind("imap", bounded("imap", protocols.imap_probe), "* OK greeting (option: tls)"))
    register(CheckKind("ftp", bounded("ftp", protocols.ftp_probe), "220 greeting (option: tls)"))
    register(CheckKind("dns", protocols.dns_check,
                       "SOA of a zone over UDP, authoritative (option: zone)"))
