"""The relay through real sockets: half-close, back-pressure, idle timeout, PROXY
protocol v1/v2 byte for byte, HTTPS passed through (service handlers:
test_proxy_handler.py)."""

from __future__ import annotations

import http.client
import socket
import ssl
import struct
import subprocess
import time

import pytest

from proxy_support import HTTPBackend, one_member_proxy, recv_all, wait_for

NET = "127.81.2"
VIP = f"{NET}.100"


@pytest.fixture
def proxy(tmp_path):
    with one_member_proxy(tmp_path, NET) as make:
        yield make


def test_half_close_client_still_gets_the_whole_response(proxy):
    def reverse_after_eof(sock, server):
        data = recv_all(sock)                    # reads until the client's EOF arrives
        sock.sendall(str(len(data)).encode() + b"\n" + data[::-1])

    address = proxy(reverse_after_eof)
    payload = bytes(range(256)) * 4096          # 1 MiB
    with socket.create_connection(address, 5) as s:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        answer = recv_all(s)
    head, _, body = answer.partition(b"\n")
    assert head == str(len(payload)).encode() and body == payload[::-1]


def test_server_speaks_first_and_half_closes_first(proxy):
    def banner_then_eof_then_read(sock, server):
        sock.sendall(b"220 hello\r\n")
        sock.shutdown(socket.SHUT_WR)
        server.received.append(recv_all(sock))

    address = proxy(banner_then_eof_then_read)
    with socket.create_connection(address, 5) as s:
        assert recv_all(s) == b"220 hello\r\n"      # the member's EOF reached us
        s.sendall(b"QUIT\r\n")                    # and our direction still flows
        s.shutdown(socket.SHUT_WR)
        wait_for(lambda: proxy.backend.received == [b"QUIT\r\n"])


def test_back_pressure_a_slow_reader_keeps_proxy_memory_bounded(proxy):
    total = 64 << 20
    sent = [0]

    def firehose(sock, server):
        chunk = b"z" * 65536
        try:
            while sent[0] < total:
                sock.sendall(chunk)
                sent[0] += len(chunk)
        except OSError:
            pass

    address = proxy(firehose)
    engine = proxy.engine
    with socket.create_connection(address, 10) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        last = -1
        while sent[0] != last:  # wait until the member cannot send any more
            last = sent[0]
            time.sleep(0.3)
        assert sent[0] < total  # the member is blocked: TCP flow control reached it

        def inspect():
            conn = next(iter(engine.engine.listeners[proxy.key].conns))
            return conn.transport.get_write_buffer_size(), conn.server.transport.is_reading()

        buffered, member_reading = engine.sync(inspect)
        assert not member_reading                  # we stopped reading the member
        assert buffered <= 64 * 1024 + 256 * 1024  # high-water mark plus one read
        got = 0
        while got < total:
            data = s.recv(1 << 20)
            assert data
            got += len(data)
    assert got == total


def test_idle_connections_are_closed_and_busy_ones_are_not(proxy):
    def echo(sock, server):
        while data := sock.recv(100):
            sock.sendall(data)

    address = proxy(echo, idle_timeout=0.8)
    idle = socket.create_connection(address, 5)
    busy = socket.create_connection(address, 5)
    try:
        for _ in range(18):  # 1.8 s of traffic every 0.1 s
            busy.sendall(b"x")
            assert busy.recv(1) == b"x"
            time.sleep(0.1)
        idle.settimeout(5)
        try:
            assert idle.recv(10) == b""
        except ConnectionResetError:
            pass
        busy.sendall(b"y")
        assert busy.recv(1) == b"y"
        assert proxy.engine.stats()[proxy.key]["idle_closed"] == 1
    finally:
        idle.close()
        busy.close()


def proxy_header_backend(sock, server):
    """Reads the PROXY header (v1: a line; v2: 16 bytes + length) and the payload."""
    head = sock.recv(16, socket.MSG_WAITALL)
    if head.startswith(b"PROXY "):
        while not head.endswith(b"\r\n"):
            head += sock.recv(1)
    else:
        head += sock.recv(struct.unpack("!H", head[14:16])[0], socket.MSG_WAITALL)
    payload = sock.recv(5, socket.MSG_WAITALL)
    server.received.append((head, payload))
    sock.sendall(b"done")


def test_proxy_protocol_v1_header_byte_for_byte(proxy):
    address = proxy(proxy_header_backend, proxy_protocol="v1")
    with socket.create_connection(address, 5, source_address=(f"{NET}.201", 0)) as s:
        s.sendall(b"hello")
        assert recv_all(s) == b"done"
        cport = s.getsockname()[1]
    head, payload = proxy.backend.received[0]
    assert head == f"PROXY TCP4 {NET}.201 {VIP} {cport} {address[1]}\r\n".encode()
    assert payload == b"hello"


def test_proxy_protocol_v2_header_byte_for_byte(proxy):
    address = proxy(proxy_header_backend, proxy_protocol="v2")
    with socket.create_connection(address, 5, source_address=(f"{NET}.202", 0)) as s:
        s.sendall(b"hello")
        assert recv_all(s) == b"done"
        cport = s.getsockname()[1]
    head, payload = proxy.backend.received[0]
    expected = (b"\x0d\x0a\x0d\x0a\x00\x0d\x0a\x51\x55\x49\x54\x0a"  # the v2 signature
                + b"\x21"                 # version 2, command PROXY
                + b"\x11"                 # AF_INET, STREAM
                + b"\x00\x0c"             # 12 address bytes follow
                + socket.inet_aton(f"{NET}.202") + socket.inet_aton(VIP)
                + cport.to_bytes(2, "big") + address[1].to_bytes(2, "big"))
    assert head == expected and payload == b"hello"


def test_https_passes_through_to_a_real_tls_server(proxy, tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=clusterkit-test",
                    "-addext", f"subjectAltName=IP:{VIP}"], check=True, capture_output=True)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    address = proxy(service="https",
                    backend=lambda addr: HTTPBackend(addr, "node1", ssl_context=server_ctx))
    client_ctx = ssl.create_default_context(cafile=str(cert))
    conn = http.client.HTTPSConnection(*address, timeout=5, context=client_ctx)
    try:
        for _ in range(3):  # keep-alive over one TLS session
            conn.request("GET", "/?size=100000")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.read() == b"x" * 100000
        assert conn.sock.getpeercert()["subject"] == ((("commonName", "clusterkit-test"),),)
    finally:
        conn.close()
    st = proxy.engine.stats()[proxy.key]
    assert st["persistence"] == 300  # https sticks clients to a node by default
    assert st["members"]["node1"]["bytes_out"] > 300000


@pytest.mark.parametrize("loop_kind", ["asyncio", "uvloop"])
def test_the_loops_connect_follows_the_future_protocol_the_relay_steps_by_hand(loop_kind):
    """relay.py steps ``loop.create_connection`` without a Task: a yielded future carries
    ``_asyncio_future_blocking``, cleared by the stepper, and completes through its done
    callbacks. If a Python or uvloop release changes that, this fails, not the balancer."""
    import asyncio

    loop = asyncio.new_event_loop() if loop_kind == "asyncio" else __import__("uvloop").new_event_loop()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    outcomes = []

    def step(coro, done):
        try:
            waiting = coro.send(None)
        except StopIteration as stop:
            done.set_result(stop.value)
            return
        except OSError as exc:
            done.set_result(exc)
            return
        if waiting is None:
            loop.call_soon(step, coro, done)
            return
        assert waiting._asyncio_future_blocking is True
        waiting._asyncio_future_blocking = False
        waiting.add_done_callback(lambda _f: step(coro, done))

    async def connect(port):
        done = loop.create_future()
        step(loop.create_connection(asyncio.Protocol, "127.0.0.1", port), done)
        outcomes.append(await done)

    try:
        loop.run_until_complete(connect(listener.getsockname()[1]))
        loop.run_until_complete(connect(refused.getsockname()[1]))
    finally:
        transport = outcomes[0][0] if outcomes and isinstance(outcomes[0], tuple) else None
        if transport is not None:
            transport.close()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
        listener.close()
        refused.close()
    assert isinstance(outcomes[0], tuple) and isinstance(outcomes[1], ConnectionRefusedError)
