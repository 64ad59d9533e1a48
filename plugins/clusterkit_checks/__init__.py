"""Generic health checks: ``tcp`` (a connect) and ``command`` (a local command's exit code)."""

from __future__ import annotations

import asyncio
import os
import time

from clusterkit import hookimpl
from clusterkit.registry import CheckFailed, CheckKind, CheckTarget


async def tcp_check(target: CheckTarget) -> str:
    start = time.monotonic()
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(target.address, target.port), target.timeout)
    except asyncio.TimeoutError:
        raise CheckFailed(f"connect to {target.address}:{target.port} timed out") from None
    except OSError as exc:
        raise CheckFailed(f"connect to {target.address}:{target.port}: {exc.strerror or exc}") from None
    writer.close()
    return f"connected in {(time.monotonic() - start) * 1000:.1f} ms"


async def command_check(target: CheckTarget) -> str:
    """Run ``options.command`` with CK_NODE/CK_ADDRESS/CK_PORT set; exit 0 is healthy."""
    command = target.options.get("command")
    if not command:
        raise CheckFailed("check option 'command' is not set")
    env = {**os.environ, "CK_NODE": target.node, "CK_ADDRESS": target.address,
           "CK_PORT": str(target.port)}
    proc = await asyncio.create_subprocess_shell(
        command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), target.timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise CheckFailed(f"command timed out after {target.timeout}s") from None
    text = out.decode(errors="replace").strip()[-200:]
    if proc.returncode != 0:
        raise CheckFailed(f"command exited {proc.returncode}: {text}")
    return text or "exit 0"


@hookimpl
def clusterkit_register_health_checks(register):
    register(CheckKind("tcp", tcp_check, "a TCP connect succeeds within the timeout"))
    register(CheckKind("command", command_check, "a local command exits 0"))
