"""A listener at ``max_conn`` stops accepting: connections wait in the kernel's queue.

Nothing is reset: each slot that frees takes the oldest waiting connection,
and a reload that raises or removes the limit lets the rest in. The queue is
read from ``/proc/net/tcp`` (a listening socket's ``rx_queue`` is the number
of connections waiting in its accept queue).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import pytest

from proxy_support import make_cluster, one_member_proxy, recv_all, wait_for

NET = "127.92.2"


@pytest.fixture
def proxy(tmp_path):
    with one_member_proxy(tmp_path, NET) as make:
        yield make


def accept_queue(ip: str, port: int) -> int:
    """How many connections wait in the accept queue of the listener on ip:port."""
    wanted = f"{socket.inet_aton(ip)[::-1].hex().upper()}:{port:04X}"
    with open("/proc/net/tcp") as table:
        for line in table.read().splitlines()[1:]:
            fields = line.split()
            if fields[1] == wanted and fields[3] == "0A":  # LISTEN
                return int(fields[4].split(":")[1], 16)
    raise AssertionError(f"nothing listens on {ip}:{port}")


def echo_lines(sock, server):
    """Echo each line until the client leaves."""
    with sock.makefile("rb") as lines:
        for line in lines:
            sock.sendall(line)


def served(sock: socket.socket, line: bytes) -> bool:
    sock.sendall(line)
    sock.settimeout(10)
    return sock.recv(100) == line


def test_a_full_listener_leaves_connections_in_the_kernels_queue_until_a_slot_frees(proxy):
    address = proxy(echo_lines, max_conn=2)
    backend = proxy.backend
    first, second = (socket.create_connection(address, 5) for _ in range(2))
    waiting = []
    try:
        assert served(first, b"1\n") and served(second, b"2\n")
        for i in (3, 4):  # the kernel completes the handshake; the proxy does not accept
            waiting.append(socket.create_connection(address, 5))
            waiting[-1].sendall(b"%d\n" % i)
            wait_for(lambda: accept_queue(*address) == i - 2)
        assert backend.connections == 2
        assert proxy.engine.stats()[proxy.key]["full"] is True
        waiting[0].setblocking(False)
        with pytest.raises(BlockingIOError):  # not relayed: nothing came back
            waiting[0].recv(100)
        waiting[0].setblocking(True)

        first.close()  # a slot frees: the oldest waiting connection takes it
        waiting[0].settimeout(10)
        assert waiting[0].recv(100) == b"3\n"
        assert accept_queue(*address) == 1 and backend.connections == 3
        second.close()
        waiting[1].settimeout(10)
        assert waiting[1].recv(100) == b"4\n"
        assert accept_queue(*address) == 0

        for i in (5, 6):  # full again: two more wait, until a reload lifts the limit
            waiting.append(socket.create_connection(address, 5))
        wait_for(lambda: accept_queue(*address) == 2)
        proxy.reload(max_conn=0)
        assert served(waiting[2], b"5\n") and served(waiting[3], b"6\n")
        stats = proxy.engine.stats()[proxy.key]
        assert stats["over_limit"] == 4 and stats["refused"] == 0 and stats["active"] == 4
        assert stats["full"] is False  # no limit any more: accepting again
    finally:
        for s in (first, second, *waiting):
            s.close()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_connections_queued_while_the_loop_was_busy_are_served_in_order(tmp_path, loop):
    """uvloop accepts one connection per loop turn, so the rest stay in the kernel's
    queue; asyncio's loop accepts all that is queued at once, and those past the
    limit wait in the proxy, not read. Either way: one at a time, oldest first."""
    with one_member_proxy(tmp_path, NET, asyncio.new_event_loop() if loop == "asyncio"
                          else None) as proxy:
        address = proxy(echo_lines, max_conn=1)
        busy = threading.Event()
        proxy.engine.loop.call_soon_threadsafe(lambda: (busy.set(), time.sleep(0.5)))
        busy.wait(5)
        clients = [socket.create_connection(address, 5) for _ in range(4)]
        try:
            wait_for(lambda: proxy.engine.stats()[proxy.key]["active"]
                     + accept_queue(*address) == 4)
            for i, client in enumerate(clients):
                assert served(client, b"%d\n" % i)
                assert proxy.backend.connections == i + 1  # one at a time, oldest first
                client.close()
            stats = proxy.engine.stats()[proxy.key]
            assert stats["over_limit"] == 3 and stats["refused"] == 0
        finally:
            for client in clients:
                client.close()


def test_a_burst_beyond_max_conn_is_served_whole_and_never_over_the_limit(proxy):
    """50 clients at once, 3 slots: everyone gets an answer, the member never sees 4."""
    lock = threading.Lock()
    now, most = [0], [0]

    def count_answer_close(sock, server):
        with lock:
            now[0] += 1
            most[0] = max(most[0], now[0])
        line = sock.recv(100)
        with lock:
            now[0] -= 1  # before the answer: the client's slot frees only after it
        sock.sendall(line)

    address = proxy(count_answer_close, max_conn=3)
    answers, errors = [], []

    def client(i: int) -> None:
        try:
            with socket.create_connection(address, 30) as s:
                s.sendall(b"%d\n" % i)
                answers.append(recv_all(s))
        except OSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert sorted(answers) == sorted(b"%d\n" % i for i in range(50))
    assert most[0] <= 3
    stats = proxy.engine.stats()[proxy.key]
    assert stats["refused"] == 0 and stats["total"] == 50


def test_removing_a_full_policy_resets_the_queue_and_lets_established_ones_finish(proxy,
                                                                                   tmp_path):
    address = proxy(echo_lines, max_conn=1)
    with socket.create_connection(address, 5) as established:
        assert served(established, b"1\n")
        queued = socket.create_connection(address, 5)
        with queued:
            wait_for(lambda: accept_queue(*address) == 1)
            proxy.engine.apply(make_cluster(tmp_path, NET, 1, ""))  # the policy is gone
            queued.settimeout(5)
            with pytest.raises(ConnectionResetError):
                queued.recv(10)
        assert served(established, b"2\n")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, 5)


def greet_then_echo(sock, server):
    """A server that speaks first (SMTP, POP3, IMAP, FTP), then echoes lines."""
    sock.sendall(b"220 hello\n")
    echo_lines(sock, server)


def closed_by_peer(sock: socket.socket) -> bool:
    sock.settimeout(10)
    try:
        return sock.recv(100) == b""
    except ConnectionResetError:
        return True


def test_a_full_listener_frees_the_slots_of_clients_that_say_nothing(proxy):
    """Two clients take both slots and never send: while the listener is full, each
    is closed first_data_timeout after it was connected, and the waiting client is
    served. The same silence with room to spare is left alone (client_timeout)."""
    address = proxy(echo_lines, max_conn=2)
    proxy.engine.sync(setattr, proxy.engine.engine, "first_data_timeout", 1.0)
    silent = [socket.create_connection(address, 5) for _ in range(2)]
    try:
        wait_for(lambda: proxy.backend.connections == 2)
        with socket.create_connection(address, 5) as waiting:  # in the kernel's queue
            waiting.sendall(b"3\n")
            waiting.settimeout(10)  # client_timeout is 300 s: only the new rule lets it in
            assert waiting.recv(100) == b"3\n"
        assert all(closed_by_peer(s) for s in silent)
        assert proxy.engine.stats()[proxy.key]["silent_closed"] == 2
    finally:
        for s in silent:
            s.close()


def test_silence_with_room_to_spare_is_left_to_the_client_timeout(proxy):
    address = proxy(echo_lines, max_conn=2)
    proxy.engine.sync(setattr, proxy.engine.engine, "first_data_timeout", 0.5)
    with socket.create_connection(address, 5) as silent:
        time.sleep(2.5)
        assert served(silent, b"still here\n")
    assert proxy.engine.stats()[proxy.key]["silent_closed"] == 0


def test_a_client_silent_after_the_servers_greeting_keeps_its_slot(proxy):
    """Where the server speaks first, the client waits legitimately: its greeting
    ends the quiet, and the full listener leaves the connection to client_timeout."""
    address = proxy(greet_then_echo, max_conn=1)
    proxy.engine.sync(setattr, proxy.engine.engine, "first_data_timeout", 0.5)
    with socket.create_connection(address, 5) as greeted:
        greeted.settimeout(10)
        assert greeted.recv(100) == b"220 hello\n"
        with socket.create_connection(address, 5) as waiting:
            wait_for(lambda: accept_queue(*address) == 1)
            time.sleep(2.5)
            assert served(greeted, b"after a while\n")
            assert accept_queue(*address) == 1  # still waiting for the slot
        assert proxy.engine.stats()[proxy.key]["silent_closed"] == 0
