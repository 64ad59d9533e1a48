"""The local control socket: how CLI commands reach a running daemon.

A Unix socket in the host's state directory, mode 0600 (root-only on a real
host). One JSON request per line (at most ``MAX_LINE`` bytes), one JSON
reply per line: ``{"cmd": "status"}`` → ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``. Plugins add commands with
``runtime.add_control(name, handler)``; a handler gets the request's
arguments as keywords and may be a coroutine function.

Every parameter of a handler carries a type annotation, and every request
is checked against them before the handler runs: ``nodes: list[str] | None``
refuses ``"n1"`` (a string would otherwise be read letter by letter), an
unknown or missing argument is named, numbers must be finite. A handler
without annotations is refused when it is added.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import math
import os
import socket
import types
import typing
from typing import Any, Callable

MAX_LINE = 64 * 1024

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
        signature(handler)  # refuses a handler whose arguments cannot be checked
        self.handlers[name] = handler

    async def start(self) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        if os.path.exists(self.path):
            if _alive(self.path):
                raise ControlError(f"a daemon is already running on {self.path}")
            os.unlink(self.path)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, self.path, limit=MAX_LINE)
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
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # over the stream's limit: say so, and hang up
                    writer.write(_reply({"ok": False, "error": f"request line over {MAX_LINE} "
                                                               "bytes: refused"}))
                    await writer.drain()
                    break
                if not line:
                    break
                writer.write(_reply(await self._answer(line)))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def _answer(self, line: bytes) -> dict:
        known = ", ".join(sorted(self.handlers))
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            return {"ok": False, "error": "bad request: not one JSON object (not UTF-8 text)"}
        try:
            request = json.loads(text, parse_constant=_no_constant)
        except ValueError as exc:
            return {"ok": False, "error": f"bad request: not one JSON object ({exc})"}
        except RecursionError:
            return {"ok": False, "error": "bad request: nested too deeply"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": f'bad request: send {{"cmd": NAME, ...}} (commands: {known})'}
        cmd = request.pop("cmd")
        handler = self.handlers.get(cmd)
        if handler is None:
            return {"ok": False, "error": f"unknown command {cmd!r} (commands: {known})"}
        problem = check_arguments(cmd, handler, request)
        if problem:
            return {"ok": False, "error": problem}
        try:
            result = handler(**request)
            if inspect.isawaitable(result):
                result = await result
            return {"ok": True, "result": result}
        except Exception as exc:
            log.warning("control command %s failed: %s", cmd, exc)
            return {"ok": False, "error": str(exc) or type(exc).__name__}


def _reply(data: dict) -> bytes:
    return json.dumps(data, default=str).encode() + b"\n"


def _no_constant(text: str):
    raise ValueError(f"{text} is not a finite number")


def signature(handler: Callable[..., Any]) -> dict[str, tuple[Any, bool]]:
    """``{parameter: (type, required)}`` of a control handler; TypeError if one is untyped."""
    what = getattr(handler, "__qualname__", type(handler).__name__)
    try:
        hints = typing.get_type_hints(handler)
    except (NameError, TypeError) as exc:
        raise TypeError(f"control handler {what}: its annotations do not resolve ({exc})") from None
    params = {}
    for name, param in inspect.signature(handler).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise TypeError(f"control handler {what}: {name} must be a keyword parameter")
        if name not in hints:
            raise TypeError(f"control handler {what}: parameter {name} has no type annotation")
        params[name] = (hints[name], param.default is param.empty)
    return params


def check_arguments(cmd: str, handler: Callable[..., Any], args: dict) -> str | None:
    """Why ``args`` do not fit ``handler``'s annotations (a message), or None."""
    try:
        params = signature(handler)
    except TypeError:
        return f"command {cmd!r} cannot check its arguments (a handler without types)"
    for name in args:
        if name not in params:
            return f"command {cmd!r} takes no argument {name!r} (it takes: {', '.join(params) or 'none'})"
    for name, (hint, required) in params.items():
        if name not in args:
            if required:
                return f"command {cmd!r} needs the argument {name!r}"
        elif not _fits(args[name], hint):
            return f"command {cmd!r}: argument {name!r} must be {_describe(hint)}"
    return None


def _fits(value: Any, hint: Any) -> bool:
    """Does a JSON value fit an annotation? Only JSON's own kinds are understood."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in args)
    if hint is None or hint is type(None):
        return value is None
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if hint is list or origin is list:
        return isinstance(value, list) and all(_fits(v, args[0] if args else Any) for v in value)
    if hint is dict or origin is dict:
        item = args[1] if len(args) == 2 else Any
        return isinstance(value, dict) and all(_fits(v, item) for v in value.values())
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is str:
        return isinstance(value, str)
    return False


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in args)
    if hint is None or hint is type(None):
        return "null"
    if origin is typing.Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if hint is list or origin is list:
        plural = {str: "strings", int: "integers", float: "numbers", bool: "true/false values"}
        return "a list" + (f" of {plural.get(args[0], 'values')}" if args else "")
    if hint is dict or origin is dict:
        return "an object"
    names = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
    return names.get(hint, "a JSON value")


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
        data = b""
        try:
            s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (ConnectionResetError, BrokenPipeError):  # a daemon starting or stopping
            data = b""
        if not data.endswith(b"\n"):
            raise ControlError("the daemon closed the connection without answering")
    reply = json.loads(data)
    if not reply.get("ok"):
        raise ControlError(reply.get("error", "unknown error"))
    return reply.get("result")
