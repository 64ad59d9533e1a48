"""The control socket under hostile requests: bounded lines, typed arguments, clean errors."""

from __future__ import annotations

import json
import logging
import socket

import pytest

from clusterkit.control import MAX_LINE, ControlError, ControlServer, request, socket_path
from support import LoopThread


def sync_now(nodes: list[str] | None = None) -> dict:
    return {"nodes": nodes}


def progress(seq: int, nodes: list[str] | None = None) -> dict:
    return {"seq": seq, "nodes": nodes}


@pytest.fixture
def control(tmp_path):
    loop = LoopThread()
    server = ControlServer(socket_path(str(tmp_path / "state")))
    server.add("sync_now", sync_now)
    server.add("sync_progress", progress)
    loop.call(server.start())
    try:
        yield str(tmp_path / "state"), server
    finally:
        loop.call(server.stop())
        loop.close()


def _exchange(state: str, payload: bytes, half_close: bool = True) -> list[dict]:
    """Send raw bytes (then, with ``half_close``, say we are done); every reply until it hangs up."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(socket_path(state))
        try:
            s.sendall(payload)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except BrokenPipeError:
            pass  # it hung up while we were still sending: its reply says why
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_a_line_over_the_limit_gets_a_clean_error_and_the_connection_closes(control, caplog):
    state, _ = control
    caplog.set_level(logging.DEBUG)
    line = json.dumps({"cmd": "sync_now", "pad": "x" * (MAX_LINE + 10)}).encode() + b"\n"
    replies = _exchange(state, line, half_close=False)  # returns only once the daemon hangs up
    assert replies == [{"ok": False, "error": f"request line over {MAX_LINE} bytes: refused"}]
    assert not [r for r in caplog.records if r.exc_info], "no traceback in the log"
    assert request(state, "sync_now", nodes=["n1"]) == {"nodes": ["n1"]}, "the daemon still answers"


def test_a_string_where_a_list_is_expected_is_refused_not_read_letter_by_letter(control):
    state, _ = control
    with pytest.raises(ControlError, match="argument 'nodes' must be a list of strings or null"):
        request(state, "sync_now", nodes="n1")
    assert request(state, "sync_now", nodes=["n1"]) == {"nodes": ["n1"]}
    assert request(state, "sync_now") == {"nodes": None}


@pytest.mark.parametrize("args, message", [
    ({"seq": "7"}, "argument 'seq' must be an integer"),
    ({"seq": True}, "argument 'seq' must be an integer"),
    ({"seq": 1.5}, "argument 'seq' must be an integer"),
    ({"seq": 1, "nodes": [1]}, "argument 'nodes' must be a list of strings"),
    ({}, "needs the argument 'seq'"),
    ({"seq": 1, "force": True}, "takes no argument 'force' (it takes: seq, nodes)"),
])
def test_every_argument_is_type_checked(control, args, message):
    state, _ = control
    with pytest.raises(ControlError) as info:
        request(state, "sync_progress", **args)
    assert message in str(info.value)


@pytest.mark.parametrize("line, message", [
    (b'{"cmd": "sync_progress", "seq": NaN}\n', "NaN is not a finite number"),
    (b'{"cmd": "sync_progress", "seq": 1e400}\n', "argument 'seq' must be an integer"),
    (b'["sync_now"]\n', 'send {"cmd": NAME, ...}'),
    (b'{"cmd": 5}\n', 'send {"cmd": NAME, ...}'),
    (b'{"cmd": "rm -rf"}\n', "unknown command 'rm -rf' (commands: sync_now, sync_progress)"),
    (b'\xff\xfe\n', "not one JSON object"),
    (b"[" * 60000 + b"\n", "nested too deeply"),
])
def test_malformed_requests_get_plain_errors(control, line, message):
    state, _ = control
    (reply,) = _exchange(state, line)
    assert reply["ok"] is False and message in reply["error"], reply
    assert "0x" not in reply["error"] and "<" not in reply["error"]


def test_a_handler_without_types_cannot_be_added(tmp_path):
    server = ControlServer(socket_path(str(tmp_path)))
    with pytest.raises(TypeError, match="parameter nodes has no type annotation"):
        server.add("sync_now", lambda nodes=None: nodes)
    with pytest.raises(TypeError, match="must be a keyword parameter"):
        server.add("anything", lambda **kw: kw)
