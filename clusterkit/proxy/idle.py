"""Idle timeouts per side, HAProxy's ``timeout client`` / ``timeout server``.

A connection is closed when its client side has been silent for the
policy's ``client_timeout`` or its member side for ``server_timeout``. A
side is *active* when it sends bytes or takes bytes written to it (as in
HAProxy, writing to a socket refreshes its timeout: a client downloading a
file says nothing and is not idle). Bytes still queued for it, in our buffer
or the kernel's, count as taken as they drain: a slow reader is not an idle
one. A side is *silent* otherwise, when something is expected of it: bytes
to take, or — unless it sent its EOF, or the other side still has bytes of
ours to take (then we wait on that one) — bytes to send.

Nothing here runs per chunk: the relay raises a side's ``seen`` flag when
it sends, and :func:`sweep_idle`, run every ``interval`` seconds by the
engine, turns the flags into idle time. The kernel's queue is asked only
for a side that has been quiet since the last sweep with bytes outstanding.

A full listener (at ``max_conn``) also runs :func:`close_silent`: a
connection on which nothing at all has been said — no byte from the client,
none from the member — ``first_data_timeout`` seconds after its member
connection was made holds a slot that clients waiting in the kernel's queue
could use. Where the client speaks first (HTTP, TLS) that is a client that
never sent its request, as HAProxy's ``timeout http-request`` bounds in http
mode; where the server speaks first (SMTP, POP3, IMAP, FTP) the node's
greeting ends the quiet at once, so a client legitimately waiting after it
is left to ``client_timeout``, as HAProxy's ``timeout client`` does.
"""

from __future__ import annotations

import fcntl
import struct
import termios

UNMEASURED = 1 << 62  # a side's ``queued`` after writes to it: measured when it goes quiet
_INT = b"\0\0\0\0"


def unsent(transport) -> int:
    """Bytes written to ``transport`` its peer has not taken: our buffer plus the kernel's.

    The kernel's send queue (``TIOCOUTQ``) can hold megabytes; a slow reader
    draining it is progress the transport's own buffer would not show.
    """
    size = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    try:
        size += struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, _INT))[0]
    except (OSError, ValueError, AttributeError):
        pass
    return size


def _active(side, other) -> bool:
    """``side`` sent bytes, or took bytes written to it, since the last sweep."""
    if other.seen:  # we wrote to it; what it has not taken is measured once it is quiet
        side.queued = UNMEASURED
        return True
    if side.queued:  # bytes of ours wait for it: taking them is activity
        queued = unsent(side.transport)
        drained = queued < side.queued
        side.queued = queued
        return drained or side.seen
    return side.seen


def _expected(side, other, eof: bool) -> bool:
    """Something is expected of a quiet side: taking bytes of ours, or sending
    (not after its EOF, nor while the other side has bytes of ours to take)."""
    return bool(side.queued) or not (eof or other.queued)


def sweep_idle(conns, interval: float, client_timeout: float,
               server_timeout: float) -> tuple[int, int]:
    """Add ``interval`` to the idle time of each silent side, abort connections past
    a timeout; return (connections closed, connections where something moved)."""
    closed = moved = 0
    for conn in list(conns):
        server = conn.server
        if server is None or conn.connecting is not None:
            continue  # still connecting: connect_timeout applies
        client_active = _active(conn, server)
        server_active = _active(server, conn)
        conn.seen = server.seen = False
        if client_active or server_active:
            moved += 1
            conn.quiet = False
        if client_active or not _expected(conn, server, conn.client_eof):
            conn.idle = 0.0
        else:
            conn.idle += interval
        if server_active or not _expected(server, conn, conn.server_eof):
            server.idle = 0.0
        else:
            server.idle += interval
        if conn.idle >= client_timeout or server.idle >= server_timeout:
            closed += 1
            conn.abort()
    return closed, moved


def close_silent(conns, timeout: float) -> int:
    """Abort the connections still quiet ``timeout`` seconds after their member connection
    was made (run after :func:`sweep_idle`, which ends the quiet); return how many."""
    closed = 0
    for conn in list(conns):
        if conn.quiet and conn.server is not None and conn.connecting is None \
                and conn.idle >= timeout:
            closed += 1
            conn.abort()
    return closed
