"""The interface for protocol-aware services (FTP and the like).

Most services are a plain byte relay (``ServiceKind.handler is None``). A
service whose protocol carries addresses — FTP's ``PASV``/``EPSV`` replies,
``PORT``/``EPRT`` commands — registers ``handler``: a callable taking a
:class:`Session` and returning a :class:`Handler` (a subclass is the usual
way). The proxy creates one per balanced connection and calls it on the
event loop; the relay, back-pressure, half-close and counters stay the
proxy's job.

Order of calls: ``connected()`` once the member connection is up (nothing
has been relayed yet), then ``from_client``/``from_server`` for every chunk
in each direction, then ``closed()`` once both sides are gone. Chunks have
arbitrary boundaries: a line-based handler keeps its partial line itself.
Methods must not block; for work that waits, spawn a task and deliver the
result later with ``session.send_to_client``/``send_to_server``.

For FTP passive mode: on a ``227`` reply from the node, the handler calls
``session.open_data_listener(node_port)``, which listens on the policy's
public address and relays the one data connection (only from the control
connection's client address) to *the same node* at ``node_port`` — the data
connection is pinned to the control connection's node by construction —
and rewrites the reply to the returned listener's public ``address``. Active
mode (``PORT``/``EPRT``) is the mirror image: ``session.open_active_listener(client_port)``
listens on the manager's address as the node sees it for the node's data
connection and relays it to the client. Either listener can be closed early
(a newer PASV, the session's end); while its connection moves bytes, the
session's own connection counts as active for the idle timeouts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from clusterkit.config import Policy
    from clusterkit.proxy.data import DataListener
    from clusterkit.proxy.relay import ClientSide


class Handler:
    """Base handler: relays unchanged. Override what the protocol needs."""

    def __init__(self, session: "Session"):
        self.session = session

    def connected(self) -> None:
        """The member connection is up; nothing has been relayed yet."""

    def from_client(self, data: bytes) -> bytes:
        """Bytes from the client; return what the member receives (``b""`` to hold back)."""
        return data

    def from_server(self, data: bytes) -> bytes:
        """Bytes from the member; return what the client receives (``b""`` to hold back)."""
        return data

    def closed(self) -> None:
        """Both sides are closed: release what ``connected`` or the data path opened."""


class Session:
    """What a handler can see and do about its connection."""

    __slots__ = ("_conn",)

    def __init__(self, conn: "ClientSide"):
        self._conn = conn

    @property
    def client(self) -> tuple[str, int]:
        """The client's (ip, port)."""
        return self._conn.client_addr[:2]

    @property
    def local(self) -> tuple[str, int]:
        """The public (ip, port) the client connected to."""
        conn = self._conn
        if conn.local_addr is None:
            conn.local_addr = conn.transport.get_extra_info("sockname")
        return conn.local_addr[:2]

    @property
    def policy_key(self) -> str:
        return self._conn.listener.key

    @property
    def policy(self) -> "Policy":
        """The policy as configured now (a reload replaces it): options, timeouts."""
        return self._conn.listener.policy

    @property
    def node(self) -> str | None:
        """The node of the member serving this connection (``None`` before ``connected``)."""
        member = self._conn.member
        return member.node if member is not None else None

    @property
    def member_address(self) -> tuple[str, int] | None:
        member = self._conn.member
        return member.address if member is not None else None

    @property
    def member_local(self) -> tuple[str, int] | None:
        """The manager's (ip, port) on the connection to the member: the address
        the node sees as its peer and can connect back to (``None`` before ``connected``)."""
        server = self._conn.server
        return server.transport.get_extra_info("sockname")[:2] if server is not None else None

    def touch(self) -> None:
        """Count this connection as active in both directions for the current idle
        sweep: it may say nothing while work it started goes on elsewhere."""
        conn = self._conn
        conn.seen = True
        if conn.server is not None:
            conn.server.seen = True

    def send_to_client(self, data: bytes) -> None:
        self._conn.transport.write(data)

    def send_to_server(self, data: bytes) -> None:
        self._conn.server.transport.write(data)

    def close(self) -> None:
        """Close both sides (after what is buffered is sent)."""
        self._conn.close()

    def open_data_listener(self, node_port: int, ports: range | None = None,
                           timeout: float = 30.0) -> "DataListener":
        """Passive mode: listen on the public address for one data connection to this node.

        The listener takes one connection, only from this session's client
        address, relays it to this connection's node at ``node_port``, and
        stops listening after that connection, ``timeout`` seconds or its
        ``close()``. ``ports`` is the passive port range to pick from (an
        ephemeral port when ``None``). Announce its ``address`` (the public
        ip, port) to the client. Raises ``OSError`` when no port is free.
        """
        from clusterkit.proxy.data import DataListener

        conn = self._conn
        return DataListener(conn.listener, conn.member, self.local[0], ports,
                            allowed_ip=self.client[0], target=(conn.member.address[0], node_port),
                            timeout=timeout, keepalive=self.touch)

    def open_active_listener(self, client_port: int, ports: range | None = None,
                             timeout: float = 30.0) -> "DataListener":
        """Active mode: listen on :attr:`member_local`'s ip for this node's data connection.

        For ``PORT``/``EPRT``: the handler rewrites the command sent to the
        node to the listener's ``address`` (the address the node already
        talks to: FTP servers refuse a PORT naming another host than their
        control peer). The node's connection, accepted only from this
        connection's node address, is relayed to the client at
        ``client_port`` from the public address the client connected to.
        """
        from clusterkit.proxy.data import DataListener

        conn = self._conn
        return DataListener(conn.listener, conn.member, self.member_local[0], ports,
                            allowed_ip=conn.member.address[0],
                            target=(self.client[0], client_port), timeout=timeout, reverse=True,
                            source=(self.local[0], 0), keepalive=self.touch)
