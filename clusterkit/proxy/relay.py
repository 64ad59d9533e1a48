"""The relay: one accepted client connection and its member connection.

Two asyncio protocols share one connection: :class:`ClientSide` (the
accepted socket) owns the connection's state, :class:`ServerSide` (the
socket to the member) forwards to it. Each direction runs on its own:

* bytes are written to the other side as they arrive (the member may speak
  first: SMTP, POP3, IMAP, FTP);
* back-pressure: when one side's write buffer passes its high-water mark the
  transport calls ``pause_writing`` and we stop reading the *other* side
  until ``resume_writing`` — a slow reader holds at most one buffer;
* half-close: an EOF from one side becomes ``write_eof`` on the other and
  the reverse direction keeps flowing; both EOFs close the connection;
* either side closing or failing closes the other once its buffer is sent;
* idle time is kept per side (:mod:`clusterkit.proxy.idle`): each side only
  raises its ``seen`` flag when it sends, a periodic sweep does the rest.

Data the client sends while the member connection is being made is held
(a little, then the client is paused) and sent right after the PROXY
protocol header. The hot path is the plain relay; a service handler
(:mod:`clusterkit.proxy.handler`) takes the slower branch.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct

from clusterkit.proxy import proxyproto
from clusterkit.proxy.handler import Session
from clusterkit.proxy.pool import PENALTY

log = logging.getLogger("clusterkit.proxy")

LINGER_RESET = struct.pack("ii", 1, 0)
MAX_TIMEOUTS = 3  # connect timeouts per client connection before giving up (refusals are free)
HOLD_LIMIT = 256 * 1024  # client bytes held while connecting before we stop reading


class ServerSide(asyncio.Protocol):
    """The member connection: forwards to the client side, which holds the state."""

    __slots__ = ("conn", "member", "transport", "timed_out", "blocked", "seen", "idle", "queued")

    def __init__(self, conn: "ClientSide", member):
        self.conn = conn
        self.member = member
        self.transport = None
        self.timed_out = False
        self.blocked = False  # our writes to the member are above the high-water mark
        self.seen = False     # the member sent bytes since the last idle sweep
        self.idle = 0.0       # seconds the member side has been silent
        self.queued = 0       # bytes of ours it had not taken at the last idle sweep

    def __call__(self) -> "ServerSide":
        """Its own protocol factory for ``create_connection`` (no closure per connect)."""
        return self

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.conn._start(self)

    def data_received(self, data: bytes) -> None:
        self.seen = True
        conn = self.conn
        conn.member.bytes_out += len(data)
        if conn.handler is not None:
            data = conn.handled(conn.handler.from_server, data)
            if not data:
                return
        conn.transport.write(data)

    def eof_received(self) -> bool:
        conn = self.conn
        conn.server_eof = True
        if conn.client_eof:
            conn.close()
        elif conn.transport.can_write_eof():
            conn.transport.write_eof()
        return True

    def connection_lost(self, exc) -> None:
        conn = self.conn
        conn.server_lost = True
        if not conn.client_lost:
            conn.transport.close()
        else:
            conn.finish()

    def pause_writing(self) -> None:
        self.blocked = True
        self.conn.transport.pause_reading()

    def resume_writing(self) -> None:
        self.blocked = False
        conn = self.conn
        if not conn.client_lost and not conn.client_eof:
            conn.transport.resume_reading()


class ClientSide(asyncio.Protocol):
    """An accepted client connection, its member, and the state of both."""

    __slots__ = ("listener", "transport", "server", "member", "held", "held_size",
                 "client_eof", "server_eof", "client_lost", "server_lost", "connecting",
                 "waiting", "attempt", "timer", "client_ip", "tried", "timeouts",
                 "client_addr", "local_addr", "handler", "seen", "idle", "queued", "done",
                 "quiet")

    def __init__(self, listener):
        self.listener = listener
        self.transport = None
        self.server: ServerSide | None = None
        self.member = None
        self.held: list[bytes] | None = None
        self.held_size = 0
        self.client_eof = self.server_eof = False
        self.client_lost = self.server_lost = False
        self.connecting = None  # the connect coroutine, while one runs
        self.waiting: asyncio.Future | None = None  # what it waits on
        self.attempt: ServerSide | None = None
        self.timer = None
        self.client_addr = None
        self.local_addr = None
        self.handler = None
        self.seen = False     # the client sent bytes since the last idle sweep
        self.idle = 0.0       # seconds the client side has been silent
        self.queued = 0       # bytes of ours it had not taken at the last idle sweep
        self.done = False
        self.quiet = True     # neither side has sent a byte yet (set by the idle sweep)

    # -------------------------------------------------------- client events

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.listener.accepted(self)

    def data_received(self, data: bytes) -> None:
        server = self.server
        if server is not None and self.handler is None:
            server.transport.write(data)
            self.member.bytes_in += len(data)
            self.seen = True
            return
        self._client_data(data)

    def _client_data(self, data: bytes) -> None:
        self.seen = True
        if self.server is None:  # still connecting: hold it
            if self.held is None:
                self.held = [data]
            else:
                self.held.append(data)
            self.held_size += len(data)
            if self.held_size > HOLD_LIMIT:
                self.transport.pause_reading()
            return
        self.member.bytes_in += len(data)
        if self.handler is not None:
            data = self.handled(self.handler.from_client, data)
            if not data:
                return
        self.server.transport.write(data)

    def eof_received(self) -> bool:
        self.client_eof = True
        server = self.server
        if server is not None:
            if self.server_eof:
                self.close()
            elif server.transport.can_write_eof():
                server.transport.write_eof()
        return True

    def connection_lost(self, exc) -> None:
        self.client_lost = True
        self._stop_connecting()
        if self.server is not None and not self.server_lost:
            self.server.transport.close()
        else:
            self.finish()

    def pause_writing(self) -> None:
        if self.server is not None:
            self.server.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.server is not None and not self.server_lost and not self.server_eof:
            self.server.transport.resume_reading()

    # ------------------------------------------------------------- connect
    #
    # A client connection tries members in turn until one takes it. Each try
    # is uvloop's ``create_connection`` coroutine, stepped by hand from the
    # future it waits on instead of wrapped in a Task: a Task per connection
    # (its creation, a scheduled step, a context copy) was about 6 us of the
    # 40-50 us of Python a short connection costs.

    def connect(self, client_ip: str | None) -> None:
        """Try members until one takes the connection; else the fallback; else reset.

        ``client_ip`` feeds the scheduler (``None`` when it needs none).
        """
        self.client_ip = client_ip
        self.tried = ()
        self.timeouts = 0
        self._next()

    def _next(self) -> None:
        listener = self.listener
        if self.timeouts < MAX_TIMEOUTS:
            member = listener.pick(self.client_ip, self.tried)
            if member is not None:
                self._try(member)
                return
        fallback = listener.fallback
        if fallback is not None and fallback not in self.tried and fallback.state == "up":
            self.tried = (*self.tried, fallback)  # marks the fallback as taken, once
            self._try(fallback)
            return
        listener.refused += 1
        reset(self.transport)

    def _try(self, member) -> None:
        member.active += 1  # counts against member_max_conn while connecting
        server = ServerSide(self, member)
        loop = self.listener.loop
        if member.source is None:
            self.connecting = loop.create_connection(server, *member.address)
        else:
            self.connecting = loop.create_connection(server, *member.address,
                                                     local_addr=member.source)
        self.attempt = server
        self.timer = loop.call_later(self.listener.connect_timeout, self._connect_timeout, server)
        self._step()

    def _step(self, _done=None) -> None:
        """Run the connect coroutine to its next wait (what a Task's step does)."""
        try:
            waiting = self.connecting.send(None)
        except StopIteration:
            self._tried(None)
        except (Exception, asyncio.CancelledError) as exc:  # OSError, a timeout, the client gone
            self._tried(exc)
        else:
            if waiting is None:  # a bare yield: run again on the next loop turn
                self.listener.loop.call_soon(self._step)
                return
            # A stdlib internal, kept for speed: what Task.__step does with a future a
            # coroutine yields (the flag says "yielded by await"; the stepper clears it).
            # Stepping by hand saves a Task per connect (~6 us of CPU). asyncio and uvloop
            # futures both follow it; test_proxy_relay.py pins that on both loops.
            waiting._asyncio_future_blocking = False
            self.waiting = waiting
            waiting.add_done_callback(self._step)

    def _tried(self, exc: BaseException | None) -> None:
        server = self.attempt
        member = server.member
        self.timer.cancel()
        self.connecting = self.waiting = self.attempt = self.timer = None
        if exc is None or server.transport is not None:  # connected: the relay owns it now
            if member is self.listener.fallback and member in self.tried:
                self.listener.fallbacks += 1
            return
        member.active -= 1
        if self.client_lost or (isinstance(exc, asyncio.CancelledError) and not server.timed_out):
            return  # the client left (or we aborted): nobody to connect for
        if not isinstance(exc, (OSError, asyncio.CancelledError)):
            log.error("%s: connect to %s failed unexpectedly: %r", self.listener.key,
                      member.node, exc)
        member.connect_failures += 1
        member.penalty_until = self.listener.loop.time() + PENALTY
        log.debug("%s: connect to %s (%s:%s) failed: %s", self.listener.key, member.node,
                  *member.address, "timeout" if server.timed_out else exc)
        self.tried = (*self.tried, member)
        self.timeouts += server.timed_out
        self._next()

    def _connect_timeout(self, server: ServerSide) -> None:
        if server.transport is None and self.waiting is not None:
            server.timed_out = True
            self.waiting.cancel()

    def _stop_connecting(self) -> None:
        """Cancel a connect in progress (the client left, or the connection is aborted)."""
        if self.waiting is not None:
            self.waiting.cancel()

    def _start(self, server: ServerSide) -> None:
        """The member is connected (called from its ``connection_made``, before any
        byte from it): PROXY header, held data, held EOF, then relay."""
        member = server.member
        if self.client_lost:  # the client left while we connected
            member.active -= 1
            server.transport.close()
            return
        member.total += 1
        self.member = member
        self.server = server
        transport = server.transport
        version = self.listener.proxy_protocol
        if version:
            if self.local_addr is None:
                self.local_addr = self.transport.get_extra_info("sockname")
            transport.write(proxyproto.header(version, self.client_addr, self.local_addr))
        factory = self.listener.handler_factory
        if factory is not None:
            self.handler = factory(Session(self))
            self.handled(lambda _: self.handler.connected(), None)
        if self.held is not None:
            held, self.held = self.held, None
            paused = self.held_size > HOLD_LIMIT
            self.held_size = 0
            for data in held:
                self._client_data(data)
            if paused and not self.client_eof and not server.blocked:
                self.transport.resume_reading()
        if self.client_eof:
            transport.write_eof()

    def handled(self, method, data):
        """Call the service handler; a handler that fails closes this connection only."""
        try:
            return method(data)
        except Exception:
            log.exception("%s: service handler failed, closing the connection", self.listener.key)
            self.abort()
            return None

    # ------------------------------------------------------------- closing

    def close(self) -> None:
        """Close both sides once their buffers are sent."""
        self.transport.close()
        if self.server is not None:
            self.server.transport.close()

    def abort(self) -> None:
        """Close both sides now (idle timeout, shutdown deadline)."""
        self._stop_connecting()
        self.transport.abort()
        if self.server is not None and self.server.transport is not None:
            self.server.transport.abort()

    def finish(self) -> None:
        """Both sides are gone: release the slot and the member (once)."""
        if self.done:
            return
        self.done = True
        if self.handler is not None:
            try:
                self.handler.closed()
            except Exception:
                log.exception("%s: service handler failed on close", self.listener.key)
        self.listener.finished(self)


def reset(transport) -> None:
    """Close with a TCP RST: the client learns at once that nobody will answer."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        except OSError:
            pass
    transport.abort()
