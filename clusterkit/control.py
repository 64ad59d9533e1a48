"""The local control socket: how CLI commands reach a running daemon.

A Unix socket in the host's state directory, mode 0600 (root-only on a real
host). One JSON request per line, one JSON reply per line:
``{"cmd": "status"}`` → ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``. Plugins add commands with
``runtime.add_control(name, handler)``; a handler gets the request's
arguments as keywords and may be a coroutine function.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import socket
from typing import Any, Callable

log = logging.getLogger("clusterkit.control")

SOCKET_NAME = "control.sock"


class ControlError(Exception):
    """The daemon is not reachable, or it answered with an error."""


def socket_path(state_dir: str) -> str:
    return os.path.join(state_dir, SOCKET_NAME)


class ControlServer:
    def __init__(self, path: str):
        self.path = path
        self.handlers: dict[str, Callable[..., Any]] = {}
        self._server: asyncio.AbstractServer | None = None

    def add(self, name: str, handler: Callable[..., Any]) -> None:
        self.handlers[name] = handler

    async def start(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        if os.path.exists(self.path):
            if _alive(self.path):
                raise ControlError(f"a daemon is already running on {self.path}")
            os.unlink(self.path)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, self.path)
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        if os.path.exists(self.path):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(json.dumps(await self._answer(line), default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict:
        try:
            request = json.loads(line)
            cmd = request.pop("cmd")
            handler = self.handlers[cmd]
        except (ValueError, KeyError, TypeError, AttributeError):
            return {"ok": False, "error": f"bad request {line[:200]!r}: known commands: "
                    + ", ".join(sorted(self.handlers))}
        try:
            result = handler(**request)
            if inspect.isawaitable(result):
                result = await result
            return {"ok": True, "result": result}
        except Exception as exc:
            log.warning("control command %s failed: %s", cmd, exc)
            return {"ok": False, "error": str(exc)}


def _alive(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


def request(state_dir: str, cmd: str, timeout: float = 30.0, **args) -> Any:
    """Send one command to the daemon whose state directory is ``state_dir``."""
    path = socket_path(state_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise ControlError(f"no daemon is running (no socket at {path})") from None
        except PermissionError:
            raise ControlError(f"permission denied on {path} (run as root)") from None
        s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                raise ControlError("the daemon closed the connection without answering")
            data += chunk
    reply = json.loads(data)
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "unknown error"))
    return reply.get("result")
