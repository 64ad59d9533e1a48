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
from clusterkit_dns.watch import ZoneWatcher
from clusterkit_dns.wire import Responder, build_state
from clusterkit_dns.zones import SUFFIX, Zone, ZoneError, file_signature, load_zone, zone_origin

log = logging.getLogger("clusterkit.dns")

TCP_IDLE = 10.0      # seconds a TCP connection may sit idle (RFC 7766 §6.2.3 suggests seconds)
TCP_MAX = 512        # concurrent TCP connections per server; more are closed at once
UDP_RCVBUF = 1 << 21  # absorb bursts (dnsperf keeps 100 queries in flight)
UDP_MAX_QUERY = 4096  # a bigger UDP query is cut short, found malformed: FORMERR
BATCH = 64           # datagrams handled per wake-up before other work gets its turn
RESCAN = 5.0         # safety-net rescan of the zones directory, in case a watch event is lost


class UdpListener:
    """One UDP socket, read in batches straight from the event loop's readiness callback.

    A datagram protocol costs a transport callback and an address conversion
    each way per packet; reading the non-blocking socket ourselves, up to
    :data:`BATCH` datagrams per wake-up, is what brings Python level with NSD
    (measured on an idle machine: 0.85x NSD's qps with a protocol, 1.0x this
    way, where dnsperf itself is the limit).
    """

    def __init__(self, sock: socket.socket, responder: Responder):
        self.sock = sock
        self.responder = responder
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
            if hit is not None:  # the packet cache (wire.State), inlined: the common case
                rcodes[hit[1]] += 1
                out = data[:2] + hit[0]
            else:
                try:
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
    """RFC 7766: length-prefixed messages, pipelined, split anywhere, answered in order."""

    def __init__(self, server: "DnsServer"):
        self.server = server
        self.handle = server.responder.handle
        self.buffer = bytearray()
        self.transport = None
        self.timer = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        if len(self.server.connections) >= self.server.tcp_max:
            self.server.refused_connections += 1
            transport.abort()
            return
        self.server.connections.add(self)
        self._arm()

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        out = []
        while len(buf) >= 2:
            size = (buf[0] << 8) | buf[1]
            if len(buf) < size + 2:
                break
            message = bytes(buf[2:size + 2])
            del buf[:size + 2]
            transfers = self.server.transfers  # AXFR/IXFR go to xfr.py (dns management)
            try:
                if transfers is not None and transfers.wants(message):
                    out += transfers.answer(message, self)
                    continue
                reply = self.handle(message, True)
            except Exception:  # one bad message must not cost the connection's others
                log.exception("dns: internal error on a TCP message")
                continue
            if reply is not None:
                out.append(len(reply).to_bytes(2, "big") + reply)
        if out:
            self.transport.write(b"".join(out))
        self._arm()

    def pause_writing(self) -> None:  # a client that does not read stops being read
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()

    def connection_lost(self, exc) -> None:
        self.server.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = asyncio.get_running_loop().call_later(self.server.tcp_idle, self.close)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()


class DnsServer:
    """Serve the zones of ``zones_dir`` on every ``(address, port)`` of ``listen``, UDP and TCP."""

    def __init__(self, zones_dir: str, listen: list[tuple[str, int]], *, tcp_idle: float = TCP_IDLE,
                 tcp_max: int = TCP_MAX, watch: bool = True, rescan: float = RESCAN,
                 identity: str | None = None, version: str | None = None):
        self.zones_dir = os.path.abspath(zones_dir)
        self.listen = list(listen)
        self.tcp_idle = tcp_idle
        self.tcp_max = tcp_max
        self.watch = watch
        self.rescan_interval = rescan
        self.responder = Responder(socket.gethostname() if identity is None else identity,
                                   f"clusterkit {__version__}" if version is None else version)
        self.zones: dict = {}          # origin -> Zone currently served
        self.errors: dict[str, str] = {}  # path -> why the file is not (or no longer) current
        self.connections: set[TcpProtocol] = set()
        self.transfers = None  # a clusterkit_dns.xfr.Transfers when secondaries are configured
        self.refused_connections = 0
        self.reloads = 0
        self.last_reload = 0.0
        self._udp: list = []
        self._tcp: list = []
        self._lock = asyncio.Lock()
        self._pending: asyncio.Task | None = None
        self._rescan_task: asyncio.Task | None = None
        self._watcher: ZoneWatcher | None = None
        self._error_sigs: dict = {}    # path -> signature of the broken file (not re-parsed)
        self._include_sigs: dict = {}  # non-zone files (include targets) -> signature

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        os.makedirs(self.zones_dir, exist_ok=True)
        await self.reload_zones()
        try:
            await self._bind(self.listen)
        except BaseException:
            await self._unbind()
            raise
        if self.watch:
            loop = asyncio.get_running_loop()
            self._watcher = ZoneWatcher(self.zones_dir, lambda: loop.call_soon_threadsafe(self.poke))
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
            self._udp.append(UdpListener(sock, self.responder))
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

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where the server actually listens (port 0 resolved)."""
        return [listener.sockname() for listener in self._udp]

    # ---------------------------------------------------------------- zones

    def poke(self) -> None:
        """Something changed in the directory: rescan soon, coalescing a burst of events."""
        if self._pending is None or self._pending.done():
            self._pending = asyncio.ensure_future(self._debounced())

    async def _debounced(self) -> None:
        await asyncio.sleep(0.05)
        await self.reload_zones()

    async def _rescan_loop(self) -> None:
        while True:
            await asyncio.sleep(self.rescan_interval)
            try:
                await self.reload_zones()
            except Exception:
                log.exception("dns: rescan of %s failed", self.zones_dir)

    async def reload_zones(self) -> dict:
        """Bring the served zones in line with the directory; cheap when nothing changed.

        Changed files are parsed off the event loop, then the whole new zone
        set is swapped in with one assignment. A file that fails to load is
        logged with file and line, and its previous version keeps serving.
        """
        async with self._lock:
            pace = Pacer()  # the loader thread rests so that queries keep being answered
            zones, errors, changed = await asyncio.to_thread(self._scan, pace)
            if changed:
                state = await asyncio.to_thread(build_state, ZoneSet(zones), pace)
                self.responder.install(state)
                self.zones = zones
                self.reloads += 1
                self.last_reload = time.time()
            for path, message in errors.items():
                if self.errors.get(path) != message:
                    log.error("dns: zone not loaded, previous version kept: %s", message)
            self.errors = errors
            return {"zones": len(zones), "changed": changed, "errors": list(errors.values())}

    def _scan(self, pace) -> tuple[dict, dict, bool]:
        """(zones, errors, changed): the directory read again, only changed files parsed."""
        try:
            names = sorted(os.listdir(self.zones_dir))
        except OSError as exc:
            return self.zones, {self.zones_dir: f"{self.zones_dir}: {exc.strerror}"}, False
        includes_changed = self._includes_changed()
        zones: dict = {}
        errors: dict = {}
        changed = False
        for filename in names:
            origin = zone_origin(filename)
            if origin is None:
                continue
            path = os.path.join(self.zones_dir, filename)
            current: Zone | None = self.zones.get(origin)
            signature = file_signature(path)
            if signature is None:
                continue  # vanished between listdir and stat
            fresh = current is not None and current.signature == signature \
                and not (includes_changed and _has_include(current))
            if fresh:
                zones[origin] = current
                continue
            if path in self.errors and self._error_sigs.get(path) == signature \
                    and not includes_changed:
                errors[path] = self.errors[path]  # still the same broken file: don't re-parse
                if current is not None:
                    zones[origin] = current
                continue
            try:
                zones[origin] = load_zone(path, origin, self.zones_dir, pace)
                for warning in zones[origin].warnings:
                    log.warning("dns: %s", warning)
                changed = True
            except ZoneError as exc:
                errors[path] = str(exc)
                self._error_sigs[path] = signature
                if current is not None:
                    zones[origin] = current
        if set(zones) != set(self.zones):
            changed = True
        return zones, errors, changed

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
        return {
            "listen": [f"{a}:{p}" for a, p in self.addresses],
            "zones_dir": self.zones_dir,
            "zones": {str(o): {"serial": z.serial, "records": z.records}
                      for o, z in sorted(self.zones.items())},
            "errors": list(self.errors.values()),
            "queries": {names.get(i, str(i)): n for i, n in enumerate(self.responder.rcodes) if n},
            "dropped": self.responder.dropped,
            "send_errors": self.responder.send_errors,
            "tcp_connections": len(self.connections),
            "tcp_refused": self.refused_connections,
            "reloads": self.reloads,
            "last_reload": round(self.last_reload, 3),
        }


def _has_include(zone: Zone) -> bool:
    try:
        with open(zone.path, encoding="utf-8", errors="replace") as f:
            return "$INCLUDE" in f.read().upper()
    except OSError:
        return True
