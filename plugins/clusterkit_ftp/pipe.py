"""A byte pipe between two sockets: the FTPS port-range data connections.

Passive and active data connections of a session go through the proxy's
own data listeners; FTPS port-range connections (client → manager → node,
same port) are joined here. Same rules as the proxy's relay: each direction
on its own, back-pressure by pausing the other side's reads, half-close
carried with ``write_eof``, either side lost closes both. :class:`Pipes`
keeps a policy's pipes and closes those where nothing moves.
"""

from __future__ import annotations

import asyncio
from typing import Callable

from clusterkit.proxy.idle import unsent


class End(asyncio.Protocol):
    """One socket of a pipe; ``peer`` is the other end once both exist."""

    def __init__(self, on_made: Callable[["End"], None] | None = None):
        self.transport: asyncio.Transport | None = None
        self.peer: End | None = None
        self.eof = False
        self.lost = False
        self.waiting: list[bytes] = []  # data that came before the peer was connected
        self.received = 0  # bytes read: progress, for the owner's idle watch
        self.on_made = on_made
        self.on_lost: Callable[[], None] | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.on_made is not None:
            self.on_made(self)

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        peer = self.peer
        if peer is None or peer.transport is None:
            self.waiting.append(data)
            self.transport.pause_reading()
            return
        peer.transport.write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer is None or peer.transport is None:
            return True  # carried over when the peer connects
        if peer.eof:
            self.transport.close()
            peer.transport.close()
        elif not peer.lost:
            peer.transport.write_eof()
        return True

    def connection_lost(self, exc) -> None:
        self.lost = True
        peer = self.peer
        if peer is not None and peer.transport is not None and not peer.lost:
            peer.transport.close()
        if self.on_lost is not None:
            self.on_lost()

    def pause_writing(self) -> None:
        if self.peer is not None and not self.peer.lost:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        if peer is not None and not peer.lost and not peer.eof:
            peer.transport.resume_reading()

    def pending(self) -> int:
        """Bytes written and not yet taken by the peer (ours and the kernel's)."""
        if self.transport is None or self.lost:
            return 0
        return unsent(self.transport)

    def abort(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.abort()


def join(first: End, second: End) -> None:
    """Both ends are connected: deliver what waited, carry a held EOF, start relaying."""
    first.peer, second.peer = second, first
    for end, other in ((first, second), (second, first)):
        if end.lost:
            other.transport.close()
            return
    for end, other in ((first, second), (second, first)):
        waiting, end.waiting = end.waiting, []
        for data in waiting:
            other.transport.write(data)
        if end.eof:
            if other.eof:
                end.transport.close()
                other.transport.close()
                return
            other.transport.write_eof()
        else:
            end.transport.resume_reading()


async def connect_to(address: tuple[str, int], end: End, timeout: float,
                     source: str | None = None) -> End:
    """Open ``end``'s socket to ``address`` (raises OSError/TimeoutError)."""
    loop = asyncio.get_running_loop()
    local = (source, 0) if source else None
    async with asyncio.timeout(timeout):
        await loop.create_connection(lambda: end, address[0], address[1], local_addr=local)
    return end


class Pipes:
    """The data pipes of one owner: tracked until closed, closed when stuck.

    While any end exists, a timer compares the bytes read and the bytes still
    queued (ours and the kernel's) with the previous tick: a change is
    progress; no change for ``idle_timeout`` seconds closes every end, so a
    peer that stops reading cannot hold anything forever.
    """

    def __init__(self, idle_timeout: float):
        self.ends: set[End] = set()
        self.idle_timeout = idle_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._last: tuple[int, int] = (-1, -1)
        self._moved = 0.0

    def new(self, on_made: Callable[[End], None] | None = None) -> End:
        end = End(on_made)
        end.on_lost = lambda: self.ends.discard(end)
        self.ends.add(end)
        if self._timer is None:
            self._tick()
        return end

    def discard(self, end: End) -> None:
        self.ends.discard(end)

    def abort(self) -> None:
        for end in list(self.ends):
            end.abort()

    def __len__(self) -> int:
        return len(self.ends)

    def _tick(self) -> None:
        if not self.ends:
            self._timer = None
            return
        loop = asyncio.get_running_loop()
        now = (sum(e.received for e in self.ends), sum(e.pending() for e in self.ends))
        if now != self._last:
            self._last, self._moved = now, loop.time()
        elif loop.time() - self._moved >= self.idle_timeout:
            self.abort()
        period = max(0.05, min(1.0, self.idle_timeout / 4))
        self._timer = loop.call_later(period, self._tick)
