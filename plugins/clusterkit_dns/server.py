"""The DNS server of one host: UDP and TCP listeners, the zone store, hot reload.

Three layers (STYLE.md): the I/O-free core (``engine``, ``wire``), the
protocol adapters below, and :class:`DnsServer`, which owns the listeners, the
TCP connections, the zone directory and its watcher. Nothing here is a module
global: several hosts run in one process in the demo and the tests.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from clusterkit import __version__
from clusterkit_dns.engine import ZoneSet
from clusterkit_dns.pacing import Pacer
from clusterkit_dns.settings import TCP_PER_CLIENT  # connections from one address
from clusterkit_dns.watch import ZoneWatcher
from clusterkit_dns.compiler import State, carry_over
from clusterkit_dns.responder import Responder
from clusterkit_dns.xfr import IXFR, xfr_type
from clusterkit_dns.zones import SUFFIX, Zone, ZoneError, file_signature, load_zone, zone_origin

log = logging.getLogger("clusterkit.dns")

TCP_IDLE = 10.0      # seconds a TCP connection may sit idle (RFC 7766 §6.2.3 suggests seconds)
TCP_IDLE_BUSY = 2.0  # the idle timeout while more than half of TCP_MAX are open (NSD does alike)
TCP_MAX = 512        # concurrent TCP connections per server; more are closed at once
TCP_UNSENT = 64 * 1024  # answer bytes queued on a connection before it is no longer read
TCP_CHUNK = 16 * 1024   # answers gathered into one write
UDP_RCVBUF = 1 << 21  # absorb bursts (dnsperf keeps 100 queries in flight)
UDP_MAX_QUERY = 4096  # a bigger UDP query is cut short, found malformed: FORMERR
BATCH = 64           # datagrams handled per wake-up before other work gets its turn
RESCAN = 5.0         # safety-net rescan of the zones directory, in case a watch event is lost
SETTLE = 0.005       # seconds after a watch event before reloading: a burst becomes one reload


class UdpListener:
    """One UDP socket, read in batches straight from the event loop's readiness callback.

    A datagram protocol costs a transport callback and an address conversion
    each way per packet; reading the non-blocking socket ourselves, up to
    :data:`BATCH` datagrams per wake-up, is what brings Python level with NSD
    (measured on an idle machine: 0.85x NSD's qps with a protocol, 1.0x this
    way, where dnsperf itself is the limit).
    """

    def __init__(self, sock: socket.socket, responder: Responder, server: "DnsServer"):
        self.sock = sock
        self.responder = responder
        self.server = server
        self.loop = asyncio.get_running_loop()
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._ready)

    def _ready(self) -> None:
        recv, send = self.sock.recvfrom, self.sock.sendto
        responder = self.responder
        handle, rcodes = responder.handle, responder.rcodes
        packets = responder.state.packets  # the state can only change between two wake-ups
        for _ in range(BATCH):
            try:
                data, addr = recv(UDP_MAX_QUERY)
            except OSError:  # EAGAIN: drained (or a socket error: nothing to answer)
                return
            hit = packets.get(data[2:])
            if hit is not None:  # the packet cache (compiler.State), inlined: the common case
                rcodes[hit[1]] += 1
                out = data[:2] + hit[0]
            else:
                try:
                    transfers = self.server.transfers
                    if transfers is not None and xfr_type(data) == IXFR:
                        out = transfers.answer_udp(data, addr[0]) or handle(data)
                    else:
                        out = handle(data)
                except Exception:  # never let one packet stop the batch or the listener
                    log.exception("dns: internal error on a UDP packet")
                    continue
            if out is not None:
                try:
                    send(out, addr)
                except OSError:  # send buffer full or the client is gone: UDP, it will retry
                    responder.send_errors += 1

    def sockname(self) -> tuple:
        return self.sock.getsockname()[:2]

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()


class TcpProtocol(asyncio.Protocol):
    """RFC 7766: length-prefixed messages, pipelined, split anywhere, answered in order.

    Bounded per connection: queries are answered only while the answers not
    yet taken by the client stay under :data:`TCP_UNSENT` (the transport's
    high-water mark: ``pause_writing`` says when it is passed). Past it the
    connection is not read until ``resume_writing``, so a client that
    pipelines queries and never reads holds one buffer of answers and one
    read of queries, not the answers to everything it sent. Only a
    complete query answered (or a transfer moving) counts as activity for
    the idle timeout: bytes dribbled in, or answers left unread, do not.
    """

    def __init__(self, server: "DnsServer"):
        self.server = server
        self.handle = server.responder.handle
        self.buffer = bytearray()
        self.transport = None
        self.timer = None
        self.deadline = 0.0
        self.peer: str | None = None  # counted in the server's per-address table
        self.blocked = False          # unsent answers above TCP_UNSENT
        self.reading = True
        self.eof = False              # the client is done sending: close once all is answered

    def connection_made(self, transport) -> None:
        self.transport = transport
        if not self.server.admit(self, transport):
            transport.abort()
            return
        transport.set_write_buffer_limits(high=TCP_UNSENT)
        self._arm()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._answer()

    def eof_received(self) -> bool | None:
        self.eof = True
        return True if self._holds_query() else None  # None: the transport closes

    def _answer(self) -> None:
        """Answer the complete queries held, in order, until the unsent answers pass the
        bound; while queries wait for that, the connection is not read."""
        buf = self.buffer
        answered = False
        while not self.blocked and self.transport is not None and not self.transport.is_closing():
            out: list[bytes] = []
            pending = 0
            while pending < TCP_CHUNK and len(buf) >= 2:
                size = (buf[0] << 8) | buf[1]
                if len(buf) < size + 2:
                    break
                message = bytes(buf[2:size + 2])
                del buf[:size + 2]
                answered = True
                transfers = self.server.transfers  # AXFR/IXFR go to xfr.py (dns management)
                try:
                    if transfers is not None and transfers.wants(message):
                        replies = transfers.answer(message, self)
                    else:
                        reply = self.handle(message, True)
                        replies = () if reply is None else \
                            (len(reply).to_bytes(2, "big") + reply,)
                except Exception:  # one bad message must not cost the connection's others
                    log.exception("dns: internal error on a TCP message")
                    continue
                for framed in replies:
                    out.append(framed)
                    pending += len(framed)
            if not out:
                break
            self.transport.write(b"".join(out))  # may call pause_writing: blocked
        if answered:
            self._arm()
        if self.eof and not self._holds_query():
            self.close()  # after the answers queued
        else:
            self._read(not (self.blocked and self._holds_query()))

    def _holds_query(self) -> bool:
        buf = self.buffer
        return len(buf) >= 2 and len(buf) >= ((buf[0] << 8) | buf[1]) + 2

    def _read(self, wanted: bool) -> None:
        transport = self.transport
        if wanted == self.reading or transport is None or transport.is_closing():
            return
        self.reading = wanted
        if wanted:
            transport.resume_reading()
        else:
            transport.pause_reading()

    def pause_writing(self) -> None:  # a client that does not read stops being read
        self.blocked = True
        self._read(False)

    def resume_writing(self) -> None:
        self.blocked = False
        self._answer()

    def connection_lost(self, exc) -> None:
        self.server.release(self)
        if self.timer is not None:
            self.timer.cancel()

    def unsent(self) -> int:
        """Answer bytes queued here and not yet taken by the kernel."""
        transport = self.transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def _arm(self, timeout: float | None = None) -> None:
        """Activity: the idle clock starts again (shorter while the server is busy)."""
        if self.timer is not None:
            self.timer.cancel()
        loop = asyncio.get_running_loop()
        timeout = self.server.idle_timeout() if timeout is None else timeout
        self.deadline = loop.time() + timeout
        self.timer = loop.call_later(timeout, self._idle)

    def shorten(self, timeout: float) -> None:
        """The server got busy: this connection's idle time ends within ``timeout``."""
        if self.timer is not None and \
                self.deadline > asyncio.get_running_loop().time() + timeout:
            self._arm(timeout)

    def _idle(self) -> None:
        """Idle too long: answers the client never took are dropped, not waited for
        (also after a close that is still waiting for them to drain)."""
        transport = self.transport
        if transport is None:
            return
        if transport.get_write_buffer_size():
            transport.abort()
        elif not transport.is_closing():
            transport.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class DnsServer:
    """Serve the zones of ``zones_dir`` on every ``(address, port)`` of ``listen``, UDP and TCP."""

    def __init__(self, zones_dir: str, listen: list[tuple[str, int]], *, tcp_idle: float = TCP_IDLE,
                 tcp_max: int = TCP_MAX, tcp_per_client: int = TCP_PER_CLIENT,
                 watch: bool = True, rescan: float = RESCAN,
                 identity: str | None = None, version: str | None = None, alone: bool = False):
        self.zones_dir = os.path.abspath(zones_dir)
        self.listen = list(listen)
        self.tcp_idle = tcp_idle
        self.tcp_max = tcp_max
        self.tcp_per_client = tcp_per_client
        self.watch = watch
        self.rescan_interval = rescan
        self.alone = alone  # nothing else on the loop until start() returns (dns serve)
        self.responder = Responder(socket.gethostname() if identity is None else identity,
                                   f"clusterkit {__version__}" if version is None else version)
        self.zones: dict = {}          # origin -> Zone currently served
        self.errors: dict[str, str] = {}  # path -> why the file is not (or no longer) current
        self.connections: set[TcpProtocol] = set()
        self.per_client: dict[str, int] = {}  # client address -> its open TCP connections
        self._capped: set[str] = set()        # addresses at the cap, already logged
        self.transfers = None  # a clusterkit_dns.xfr.Transfers when secondaries are configured
        self.history = None    # a clusterkit_dns.journal.History then: IXFR increments
        self.refused_connections = 0
        self.refused_per_client = 0
        self.reloads = 0
        self.last_reload = 0.0
        self._udp: list = []
        self._tcp: list = []
        self._lock = asyncio.Lock()
        self._pending: asyncio.Task | None = None
        self._rescan_task: asyncio.Task | None = None
        self._watcher: ZoneWatcher | None = None
        self._error_sigs: dict = {}    # path -> signature of the broken file (not re-parsed)
        self._origins: dict = {}       # file name -> zone origin (None: not a zone file)
        self._dirty: set | None = set()  # paths reported by the watcher (None: rescan all)
        self._include_sigs: dict = {}  # non-zone files (include targets) -> signature

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        os.makedirs(self.zones_dir, exist_ok=True)
        await self.reload_zones(rest=not self.alone)  # nothing is served yet: alone, no rest
        try:
            await self._bind(self.listen)
        except BaseException:
            await self._unbind()
            raise
        if self.watch:
            loop = asyncio.get_running_loop()
            self._watcher = ZoneWatcher(
                self.zones_dir, lambda paths: loop.call_soon_threadsafe(self.poke, paths))
            self._watcher.start()
        self._rescan_task = asyncio.ensure_future(self._rescan_loop())
        log.info("dns serving %d zones from %s on %s", len(self.zones), self.zones_dir,
                 ", ".join(f"{a}:{p}" for a, p in self.listen))

    async def stop(self) -> None:
        """Stop watching and listening; close TCP connections (queued answers are sent first)."""
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        for task in (self._rescan_task, self._pending):
            if task is not None:
                task.cancel()
        await self._unbind()
        for conn in list(self.connections):
            conn.close()
        await asyncio.sleep(0)

    async def rebind(self, listen: list[tuple[str, int]]) -> None:
        """Listen somewhere else; if the new addresses cannot be bound, the old ones come back."""
        if sorted(listen) == sorted(self.listen):
            return
        await self._unbind()
        try:
            await self._bind(listen)
        except BaseException:
            await self._unbind()
            await self._bind(self.listen)
            raise
        self.listen = list(listen)

    async def _bind(self, addresses) -> None:
        loop = asyncio.get_running_loop()
        for host, port in addresses:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF)
                sock.bind((host, port))
            except OSError as exc:
                sock.close()
                raise OSError(exc.errno, f"dns: cannot listen on {host}:{port}/udp: "
                                         f"{exc.strerror}") from None
            self._udp.append(UdpListener(sock, self.responder, self))
            try:
                server = await loop.create_server(lambda: TcpProtocol(self), host, port,
                                                  reuse_address=True, backlog=1024)
            except OSError as exc:
                raise OSError(exc.errno, f"dns: cannot listen on {host}:{port}/tcp: "
                                         f"{exc.strerror}") from None
            self._tcp.append(server)

    async def _unbind(self) -> None:
        for listener in self._udp:
            listener.close()
        for server in self._tcp:
            server.close()
        if self._udp or self._tcp:
            await asyncio.sleep(0.01)  # transports close on the next loop turns: free the ports
        self._udp, self._tcp = [], []

    # ------------------------------------------------------ TCP connections

    def admit(self, conn: TcpProtocol, transport) -> bool:
        """Room for one more TCP connection, overall and from its address? Counts it if so."""
        peer = transport.get_extra_info("peername")
        ip = peer[0] if peer else ""
        if len(self.connections) >= self.tcp_max:
            self.refused_connections += 1
            return False
        held = self.per_client.get(ip, 0)
        if held >= self.tcp_per_client:
            self.refused_connections += 1
            self.refused_per_client += 1
            if ip not in self._capped:  # once while it stays at the cap, not per connection
                self._capped.add(ip)
                log.warning("dns: %s holds %d TCP connections: more are refused", ip, held)
            return False
        was_busy = self.busy()
        self.connections.add(conn)
        self.per_client[ip] = held + 1
        conn.peer = ip
        if not was_busy and self.busy():  # from now on idle connections go sooner
            timeout = self.idle_timeout()
            for other in self.connections:
                other.shorten(timeout)
        return True

    def release(self, conn: TcpProtocol) -> None:
        self.connections.discard(conn)
        ip, conn.peer = conn.peer, None
        if ip is not None:
            left = self.per_client.get(ip, 1) - 1
            if left > 0:
                self.per_client[ip] = left
            else:
                self.per_client.pop(ip, None)
            if left < self.tcp_per_client:
                self._capped.discard(ip)

    def busy(self) -> bool:
        """More than half of ``tcp_max`` connections are open."""
        return len(self.connections) > self.tcp_max // 2

    def idle_timeout(self) -> float:
        return min(self.tcp_idle, TCP_IDLE_BUSY) if self.busy() else self.tcp_idle

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where the server actually listens (port 0 resolved)."""
        return [listener.sockname() for listener in self._udp]

    # ---------------------------------------------------------------- zones

    def poke(self, paths: tuple | None = None) -> None:
        """``paths`` changed (None: anything in the directory may have): reload soon,
        coalescing a burst of events into one reload of the files they name."""
        if paths is None:
            self._dirty = None
        elif self._dirty is not None:
            self._dirty.update(paths)
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(self._debounced())

    async def _debounced(self) -> None:
        while self._dirty is None or self._dirty:  # events during a reload: one more
            await asyncio.sleep(SETTLE)
            dirty, self._dirty = self._dirty, set()
            await self.reload_zones(dirty)

    async def _rescan_loop(self) -> None:
        while True:
            await asyncio.sleep(self.rescan_interval)
            try:
                await self.reload_zones()
            except Exception:
                log.exception("dns: rescan of %s failed", self.zones_dir)

    async def reload_zones(self, paths: set | None = None, rest: bool = True) -> dict:
        """Bring the served zones in line with the directory; cheap when nothing changed.

        ``paths`` (from the watcher) limits the work to the zones those files
        are or are included by; None reads the directory again (stat only:
        unchanged files are not parsed). Changed files are parsed off the event
        loop, and the new set of zones is swapped in with one assignment; the
        rendered answers of the zones that did not change follow (looked over
        in the thread meanwhile). A file that fails to load
        is logged with file and line, and its previous version keeps serving.
        """
        async with self._lock:
            pace = Pacer(rest)  # the loader thread rests so that queries keep being answered
            zones, errors, changed = await asyncio.to_thread(self._scan, pace, paths)
            if changed and self.history is not None:  # before the new versions are served
                await asyncio.to_thread(self._record, zones, pace)
            if changed:
                old, new = self.responder.state, State(ZoneSet(zones))
                self.responder.install(new)  # served at once; then the answers still true:
                self.zones = zones
                self.reloads += 1
                self.last_reload = time.time()
                new.cache.update(await asyncio.to_thread(carry_over, old, new.zones, pace))
            for path, message in errors.items():
                if self.errors.get(path) != message:
                    log.error("dns: zone not loaded, previous version kept: %s", message)
            self.errors = errors
            return {"zones": len(zones), "changed": changed, "errors": list(errors.values())}

    def _record(self, zones: dict, pace) -> None:
        """Keep the IXFR history: each replaced zone's difference, removed zones forgotten."""
        history = self.history
        for origin, old in self.zones.items():
            new = zones.get(origin)
            if new is None:
                history.forget(origin)
            elif new is not old:
                history.record(old, new, pace)

    def _scan(self, pace, paths: set | None = None) -> tuple[dict, dict, bool]:
        """(zones, errors, changed): the directory read again (or only the zone files
        ``paths`` name or are included by), only changed files parsed."""
        if paths is not None:
            return self._scan_paths(pace, paths)
        try:
            names = sorted(os.listdir(self.zones_dir))
        except OSError as exc:
            return self.zones, {self.zones_dir: f"{self.zones_dir}: {exc.strerror}"}, False
        includes_changed = self._includes_changed()
        zones: dict = {}
        errors: dict = {}
        changed = False
        for filename in names:
            changed |= self._check(filename, includes_changed, pace, zones, errors)
        if set(zones) != set(self.zones):
            changed = True
        return zones, errors, changed

    def _scan_paths(self, pace, paths: set) -> tuple[dict, dict, bool]:
        """The zone files among ``paths``, and the zones including one of the others (or
        failing to load: the file may be the include they missed)."""
        top = {os.path.basename(p) for p in paths if os.path.dirname(p) == self.zones_dir}
        zone_files = {name for name in top if self._origin(name) is not None}
        others = set(paths) - {os.path.join(self.zones_dir, name) for name in zone_files}
        forced = set()
        if others:
            forced = {os.path.basename(z.path) for z in self.zones.values()
                      if others.intersection(z.includes)}
            forced |= {os.path.basename(p) for p in self.errors
                       if os.path.dirname(p) == self.zones_dir}
        zones, errors = dict(self.zones), dict(self.errors)
        origins = []
        for filename in sorted(zone_files | forced):
            origins.append(self._origin(filename))
            zones.pop(origins[-1], None)
            errors.pop(os.path.join(self.zones_dir, filename), None)
            self._check(filename, filename in forced, pace, zones, errors)
        changed = any(zones.get(o) is not self.zones.get(o) for o in origins)
        return zones, errors, changed

    def _origin(self, filename: str):
        if filename not in self._origins:
            self._origins[filename] = zone_origin(filename)
        return self._origins[filename]

    def _check(self, filename: str, includes_changed: bool, pace, zones: dict,
               errors: dict) -> bool:
        """Put the zone of ``filename`` into ``zones`` (parsed again only if its file, or an
        include when ``includes_changed``, changed), or its error into ``errors``. True
        when a new version was parsed."""
        origin = self._origin(filename)
        if origin is None:
            return False
        path = os.path.join(self.zones_dir, filename)
        current: Zone | None = self.zones.get(origin)
        signature = file_signature(path)
        if signature is None:
            return False  # vanished (between listdir and stat)
        if current is not None and current.signature == signature \
                and not (includes_changed and current.includes):
            zones[origin] = current
            return False
        if path in self.errors and self._error_sigs.get(path) == signature \
                and not includes_changed:
            errors[path] = self.errors[path]  # still the same broken file: don't re-parse
            if current is not None:
                zones[origin] = current
            return False
        try:
            zones[origin] = load_zone(path, origin, self.zones_dir, pace)
            for warning in zones[origin].warnings:
                log.warning("dns: %s", warning)
            return True
        except ZoneError as exc:
            errors[path] = str(exc)
            self._error_sigs[path] = signature
            if current is not None:
                zones[origin] = current
            return False

    def _includes_changed(self) -> bool:
        """Did any non-zone file (an $INCLUDE target), in any subdirectory, change?"""
        sigs = {}
        for top, dirs, files in os.walk(self.zones_dir):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for filename in files:
                if (top == self.zones_dir and filename.endswith(SUFFIX)) or filename.startswith("."):
                    continue
                path = os.path.join(top, filename)
                sigs[path] = file_signature(path)
        changed = sigs != self._include_sigs
        self._include_sigs = sigs
        return changed and bool(self.zones)

    # --------------------------------------------------------------- status

    def status(self) -> dict:
        names = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP",
                 5: "REFUSED", 16: "BADVERS"}
        unsent = [conn.unsent() for conn in self.connections]
        sizes = {o: z.wire_bytes for o, z in self.zones.items()}
        return {
            "listen": [f"{a}:{p}" for a, p in self.addresses],
            "zones_dir": self.zones_dir,
            # wire_bytes: the zone as kept (names and their wire RRsets, in bytes)
            "zones": {str(o): {"serial": z.serial, "records": z.records, "wire_bytes": sizes[o]}
                      for o, z in sorted(self.zones.items())},
            "wire_bytes": sum(sizes.values()),
            "errors": list(self.errors.values()),
            "queries": {names.get(i, str(i)): n for i, n in enumerate(self.responder.rcodes) if n},
            "dropped": self.responder.dropped,
            "send_errors": self.responder.send_errors,
            "tcp_connections": len(self.connections),
            "tcp_refused": self.refused_connections,
            "tcp_refused_per_client": self.refused_per_client,
            # answer bytes queued for clients that have not taken them (bounded per connection)
            "tcp_unsent": sum(unsent),
            "tcp_unsent_max": max(unsent, default=0),
            "reloads": self.reloads,
            "last_reload": round(self.last_reload, 3),
        }

