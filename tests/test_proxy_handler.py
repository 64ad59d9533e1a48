"""The service handler interface through real sockets: a toy FTP handler whose
data connections, passive and active, are pinned to the control connection's
node, the Session's addresses, and data listeners closed early."""

from __future__ import annotations

import socket
import threading

import pytest

from clusterkit import hookimpl
from clusterkit.config import registry_of
from clusterkit.proxy import Handler
from clusterkit.registry import ServiceKind
from proxy_support import one_member_proxy, plugin_manager, recv_all, wait_for

NET = "127.92.3"
VIP = f"{NET}.100"
NODE1 = f"{NET}.11"


@pytest.fixture
def proxy(tmp_path):
    """``proxy(control, service="toyftp", pm=proxy.pm)``: node1 behind the toy handler."""
    with one_member_proxy(tmp_path, NET) as make:
        make.pm = plugin_manager(DataPlugin())
        make.engine.engine.registry = registry_of(make.pm)
        yield make


class DataHandler(Handler):
    """A toy FTP: the node says ``DATA <port>``; clients must see the public address.

    ``port N`` from the client opens an active-mode listener; ``abor`` closes
    the pending passive one (answered here, not relayed).
    """

    pending = None

    def from_client(self, data: bytes) -> bytes:
        if data.startswith(b"port "):  # active mode: the node must connect to us instead
            ip, port = self.session.open_active_listener(int(data[5:]), timeout=5).address
            return f"PORT {ip} {port}".encode()
        if data == b"abor":
            self.pending.close()
            self.session.send_to_client(b"ABORTED")
            return b""
        return data.upper()

    def from_server(self, data: bytes) -> bytes:
        if data.startswith(b"DATA "):
            self.pending = self.session.open_data_listener(int(data[5:]), timeout=5)
            ip, port = self.pending.address
            return f"DATA {ip} {port}\n".encode()
        return data


class DataPlugin:
    @hookimpl
    def clusterkit_register_services(self, register):
        register(ServiceKind("toyftp", (2121,), handler=DataHandler))


def test_handler_rewrites_and_pins_the_data_connection_to_the_node(proxy):
    data_server = socket.socket()
    data_server.bind((NODE1, 0))
    data_server.listen(1)
    data_port = data_server.getsockname()[1]

    def control(sock, server):
        server.received.append(sock.recv(100))
        sock.sendall(f"DATA {data_port}".encode())
        sock.recv(100)

    def serve_data():
        conn, _ = data_server.accept()
        conn.sendall(b"file contents")
        conn.close()

    threading.Thread(target=serve_data, daemon=True).start()
    address = proxy(control, service="toyftp", pm=proxy.pm)
    try:
        with socket.create_connection(address, 5, source_address=(f"{NET}.203", 0)) as s:
            s.sendall(b"pasv")
            reply = s.recv(100).decode().split()
            assert reply[:2] == ["DATA", VIP]
            target = (reply[1], int(reply[2]))
            with pytest.raises(ConnectionResetError):  # not the control connection's client
                with socket.create_connection(target, 5, source_address=(f"{NET}.204", 0)) as x:
                    x.settimeout(5)
                    x.recv(10)
            with socket.create_connection(target, 5, source_address=(f"{NET}.203", 0)) as d:
                assert recv_all(d) == b"file contents"
        assert proxy.backend.received == [b"PASV"]
    finally:
        data_server.close()


def test_handler_active_mode_relays_the_nodes_data_connection_to_the_client(proxy):
    client_data = socket.socket()
    client_data.bind((f"{NET}.205", 0))
    client_data.listen(1)
    client_port = client_data.getsockname()[1]

    def control(sock, server):
        _, ip, port = sock.recv(100).decode().split()
        server.received.append((ip, sock.getpeername()[0]))
        with socket.create_connection((ip, int(port)), 5, source_address=(NODE1, 0)) as d:
            d.sendall(b"uploaded by the node")
        sock.sendall(b"226 done")
        sock.recv(100)

    address = proxy(control, service="toyftp", pm=proxy.pm)
    try:
        with socket.create_connection(address, 5, source_address=(f"{NET}.205", 0)) as s:
            s.sendall(f"port {client_port}".encode())
            conn, peer = client_data.accept()
            with conn:
                assert recv_all(conn) == b"uploaded by the node"
            assert peer[0] == VIP  # from the public address the client knows
            assert s.recv(100) == b"226 done"
        told, peer = proxy.backend.received[0]
        assert told == peer  # the node was told the manager's address as the node sees it
        key = proxy.key
        wait_for(lambda: proxy.engine.stats()[key]["members"]["node1"]["bytes_out"]
                 >= len(b"uploaded by the node") + len(b"226 done"))
    finally:
        client_data.close()


def test_a_data_listener_closed_early_refuses_its_connection(proxy):
    def control(sock, server):
        sock.recv(100)
        sock.sendall(b"DATA 9")  # never connected to: the listener is closed first
        sock.recv(100)

    address = proxy(control, service="toyftp", pm=proxy.pm)
    with socket.create_connection(address, 5, source_address=(f"{NET}.206", 0)) as s:
        s.sendall(b"pasv")
        _, ip, port = s.recv(100).decode().split()
        s.sendall(b"abor")
        assert s.recv(100) == b"ABORTED"
        with pytest.raises(ConnectionRefusedError):  # the port is free again
            socket.create_connection((ip, int(port)), 5, source_address=(f"{NET}.206", 0))
        assert proxy.engine.sync(lambda: len(proxy.engine.engine.retired)) == 0
