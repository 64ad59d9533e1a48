"""Idle timeouts per side (``client_timeout`` / ``server_timeout``) through real sockets.

Each test gives one side a short timeout and the other a long one, so the
connection's fate says which side the proxy held responsible. Waits are
bounded by the long timeout, never by how fast anything runs.
"""

from __future__ import annotations

import socket
import time

import pytest

from proxy_support import one_member_proxy, wait_for

NET = "127.92.1"
SHORT = 0.5
LONG = 60.0


@pytest.fixture
def proxy(tmp_path):
    with one_member_proxy(tmp_path, NET) as make:
        yield make


def closed(sock: socket.socket, within: float) -> bool:
    """Read until the proxy closes (EOF or reset); False if it is still open after ``within`` s."""
    sock.settimeout(within)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def test_a_client_downloading_in_silence_is_not_idle_until_the_stream_stops(proxy):
    """The client sends nothing for 2 s (4 client timeouts) while the member streams."""
    def stream_then_wait(sock, server):
        for _ in range(40):
            sock.sendall(b"d" * 1024)
            time.sleep(0.05)
        sock.recv(1)  # silent until the proxy closes

    address = proxy(stream_then_wait, client_timeout=SHORT, server_timeout=LONG)
    with socket.create_connection(address, 5) as s:
        got = 0
        while got < 40 * 1024:
            data = s.recv(65536)
            assert data, f"closed after {got} bytes: a downloading client is not idle"
            got += len(data)
        # now both sides are silent: the client's timeout, not the member's 60 s, ends it
        assert closed(s, within=LONG / 4)
    assert proxy.engine.stats()[proxy.key]["idle_closed"] == 1


def test_a_member_that_stops_reading_is_closed_by_the_server_timeout(proxy):
    """The client keeps trying to upload; the member reads nothing: the member is to blame."""
    def never_read(sock, server):
        sock.settimeout(LONG)
        try:
            sock.recv(1, socket.MSG_PEEK)  # wait, reading nothing, until the proxy closes
            time.sleep(LONG)
        except OSError:
            pass

    address = proxy(never_read, client_timeout=LONG, server_timeout=SHORT)
    with socket.create_connection(address, 5) as s:
        s.settimeout(LONG / 4)
        chunk = b"u" * 65536
        with pytest.raises(OSError):  # reset by the proxy once the member times out
            while True:
                s.sendall(chunk)
    assert proxy.engine.stats()[proxy.key]["idle_closed"] == 1


def test_a_client_that_stops_reading_is_closed_by_the_client_timeout(proxy):
    sent = [0]

    def firehose(sock, server):
        try:
            while True:
                sock.sendall(b"z" * 65536)
                sent[0] += 65536
        except OSError:
            pass

    address = proxy(firehose, client_timeout=SHORT, server_timeout=LONG)
    with socket.create_connection(address, 5) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        wait_for(lambda: proxy.engine.stats()[proxy.key]["idle_closed"] == 1, timeout=LONG / 4)
        assert closed(s, within=5)
    assert sent[0] < 1 << 30  # it was held back, then cut: the member never ran free


def test_a_slow_reader_draining_the_kernels_queue_is_not_idle(proxy):
    """256 KiB read at ~80 KiB/s through a small receive buffer, 0.3 s timeouts on both
    sides: the proxy reads the member once and the bytes then wait in its kernel's
    send queue for seconds. Their draining is the client's activity; the member,
    waiting on the client, is not idle either: the connection is alive afterwards."""
    size = 256 * 1024

    def send_all_then_answer(sock, server):
        sock.sendall(b"s" * size)
        if sock.recv(5) == b"done\n":
            sock.sendall(b"bye\n")
        sock.recv(1)

    address = proxy(send_all_then_answer, client_timeout=0.3, server_timeout=0.3)
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    with s:
        s.connect(address)
        s.settimeout(5)
        got = 0
        while got < size:
            data = s.recv(4096)
            assert data, f"closed after {got} of {size} bytes"
            got += len(data)
            time.sleep(0.05)
        s.sendall(b"done\n")
        assert s.recv(4) == b"bye\n"  # still open end to end
        assert closed(s, within=LONG / 4)  # then idle for real
    assert proxy.engine.stats()[proxy.key]["idle_closed"] == 1
