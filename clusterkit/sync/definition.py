"""The cluster definition travels: the manager publishes a node view, nodes take it like a reload.

Manager: after every start and reload, the definition minus :data:`MANAGER_ONLY`
is written atomically to ``STATE_DIR/_definition/cluster.toml`` (that cluster
path under the manager's ``root``) behind one header line: a serial that only
grows, the SHA-256 of the body, the manager's time and name, a tag of the
manager's own file and the cluster epoch (:mod:`clusterkit.standby.epoch`). The built-in sync set :data:`SET` replicates that
directory like any other, so the view reaches every node over its transport,
with the replicator's retries and catch-up.

Node: when a batch of :data:`SET` lands, the view is checked whole (header,
digest, a serial newer than the running one, the definition through
:func:`clusterkit.config.build_cluster` with the node's plugins, this host in it
as a node or standby, an epoch no lower than the highest the host has seen),
then written over the node's definition file (``-c FILE``) and
reloaded at once. A refused view is logged as an ERROR and shown in
``status``; the running definition stays. A node whose file *is* the
manager's (one machine, one file: the demo, in-process tests) never writes it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass, replace

import tomlkit

from clusterkit.config import ConfigError, SyncSet, build_cluster
from clusterkit.contracts import Component
from clusterkit.definition.files import private_dir, write_atomic
from clusterkit.definition.source import DEFINITION_MODE, read_definition
import clusterkit.standby.epoch as epochs

log = logging.getLogger("clusterkit.definition")

SET = "clusterkit-definition"  # reserved: a [[sync]] of this name is refused
FOLDER = "_definition"         # under cluster.state_dir; "_" cannot start a host's name
FILE = "cluster.toml"

# What the view leaves out, as (array of tables, table, key): the manager's own
# credentials for reaching each node. A node never replicates, so it has no use for
# them. (The definition's only inline secrets, [dns.tsig] keys, do travel: every host
# answers zone transfers and verifies them; `secret_file` keeps them out of the file.)
MANAGER_ONLY = (
    ("node", "options", "key"),            # the manager's ssh private key (ssh transport)
    ("node", "options", "password_file"),  # the manager's rsyncd password (rsyncd transport)
)

HEADER = re.compile(r"# clusterkit-definition serial=(?P<serial>[0-9]{1,18}) "
                    r"sha256=(?P<digest>[0-9a-f]{64}) time=(?P<time>[0-9]{1,12}(\.[0-9]{1,6})?) "
                    r"manager=(?P<manager>[A-Za-z0-9][A-Za-z0-9_.-]{0,62}) "
                    r"origin=(?P<origin>[0-9a-f]{16})( epoch=(?P<epoch>[0-9]{1,18}))?\n")
NOTICE = ("# The manager's definition as its nodes receive it (clusterkit replicates it).\n"
          "# Edit the manager's definition: an edit here is replaced by the next one.\n")


def sync_set(cluster) -> SyncSet:
    """The built-in set that carries the view (the sync plugin's ``clusterkit_sync_sets``)."""
    return SyncSet(name=SET, path=os.path.join(cluster.state_dir, FOLDER), owner="sync",
                   key=f"sync set {SET!r} (built in: the definition's replication)")


RESERVED = "clusterkit-"  # the built-in sets' names begin so (this one, the manager's state)


def reserved_problems(cluster) -> list[tuple[str, str]]:
    """(key, name) of ``[[sync]]`` entries that take a reserved name."""
    return [(f"sync[{i}].name", s.name) for i, s in enumerate(cluster.sync_sets) if s.name.startswith(RESERVED)]


def view_path(runtime) -> str:
    """Where this host's copy of the view is: the manager's outbox, a node's inbox."""
    return os.path.join(runtime.local_path(sync_set(runtime.cluster).path), FILE)


# ------------------------------------------------------------------ the view


@dataclass(frozen=True)
class View:
    serial: int
    digest: str
    time: float
    manager: str
    origin: str
    text: str  # the whole file, header included
    epoch: int = 0  # the publishing manager's cluster epoch (0: a cluster without failover yet)

    @property
    def body(self) -> str:
        return self.text.split("\n", 1)[1]


def node_view(text: str) -> str:
    """``text`` without :data:`MANAGER_ONLY`, comments and layout kept."""
    doc = tomlkit.parse(text)
    for array, table, key in MANAGER_ONLY:
        for entry in doc.get(array, []):
            inner = entry.get(table) if isinstance(entry, dict) else None
            if isinstance(inner, dict) and key in inner:
                del inner[key]
    return tomlkit.dumps(doc)


def render(body: str, serial: int, manager: str, origin: str, now: float, epoch: int = 0) -> str:
    digest = hashlib.sha256(body.encode()).hexdigest()
    return (f"# clusterkit-definition serial={serial} sha256={digest} time={now:.3f} "
            f"manager={manager} origin={origin} epoch={epoch}\n{body}")


def parse_view(text: str) -> View:
    """The header checked and the body's digest verified; ``ValueError`` says what is wrong."""
    match = HEADER.match(text)
    if match is None:
        raise ValueError("not a definition view (no valid clusterkit-definition header line)")
    view = View(int(match["serial"]), match["digest"], float(match["time"]), match["manager"],
                match["origin"], text, int(match["epoch"] or 0))
    if hashlib.sha256(view.body.encode()).hexdigest() != view.digest:
        raise ValueError("damaged: the body does not match the header's sha256")
    return view


def read_view(path: str) -> View | None:
    """The view at ``path``, ``None`` when there is none; ``ValueError`` when it is not one."""
    if not os.path.exists(path):
        return None
    try:
        return parse_view(read_definition(path))
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def origin_of(path: str) -> str:
    """A tag of the file ``path`` names on this machine: boot id, its directory's inode, name.

    The directory's inode survives atomic rewrites; the boot id tells two
    machines apart even when their images give the same inode.
    """
    real = os.path.realpath(path)
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        boot = ""
    st = os.stat(os.path.dirname(real))
    tag = f"{boot}:{st.st_dev}:{st.st_ino}:{os.path.basename(real)}"
    return hashlib.sha256(tag.encode()).hexdigest()[:16]


# --------------------------------------------------------------- the manager


def publish(runtime, epoch: int | None = None) -> int | None:
    """Write the node view of the running definition if it changed; its serial.

    Called off the loop after start and every reload. The text is read again
    and the view validated (a broken edit made since the reload is not published); the
    serial only grows, even when the outbox was lost (it is at least the time).
    """
    path = view_path(runtime)
    try:
        text = read_definition(runtime.config_path)
        body = NOTICE + node_view(text)
        build_cluster(body, runtime.config_path, runtime.pm)  # what the nodes will check
    except Exception as exc:  # noqa: BLE001 - whatever it is, the last view stays
        log.error("the definition was not published to the nodes: %s", exc)
        return None
    origin = origin_of(runtime.config_path)
    if epoch is None:
        epoch = epochs.read(runtime.state_dir)
    try:
        old = read_view(path)
    except ValueError:
        old = None
    if old is not None and old.body == body and old.origin == origin and old.epoch == epoch:
        return old.serial
    now = time.time()
    serial = max((old.serial + 1) if old else 1, int(now))
    folder = os.path.dirname(path)
    private_dir(folder)
    # Written beside the set and renamed in: the watcher sees one path, so the node gets a
    # one-file batch that rsync renames in place (a batch of several goes through rsync's
    # .~tmp~ and watchdog holds a cross-directory rename half a second on the node).
    staging = os.path.join(os.path.dirname(folder), f".{FOLDER}.{FILE}")
    write_atomic(staging, render(body, serial, runtime.host.name, origin, now, epoch), DEFINITION_MODE)
    os.replace(staging, path)
    log.info("definition serial %d published to the nodes", serial)
    return serial


def for_join(runtime) -> str:
    """What ``clusterkit join`` writes on a new node: the published view (its serial too)."""
    try:
        view = read_view(view_path(runtime))
    except ValueError:
        view = None
    return view.text if view is not None else NOTICE + node_view(read_definition(runtime.config_path))


class Published(Component):
    """The manager's side: publishes after start and every reload."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.serial: int | None = None
        self.at: float | None = None
        # the epoch this manager acts under, taken at its start: a higher one it learns
        # of later (a refused push) makes it stand down, never publish under it
        self.epoch = epochs.read(runtime.state_dir)

    async def start(self) -> None:
        await self.publish()

    async def reload(self, old, new) -> None:
        await self.publish()

    async def publish(self) -> None:
        serial = await asyncio.to_thread(publish, self.runtime, self.epoch)
        if serial is not None and serial != self.serial:
            self.serial, self.at = serial, time.time()

    def status(self) -> dict:
        return {"serial": self.serial, "published_at": self.at, "outbox": view_path(self.runtime),
                "epoch": self.epoch}


# ------------------------------------------------------------------ a node


class Received(Component):
    """A node's side: what it runs, what the manager last sent, and why a view was refused."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.running: int | None = None       # serial of the definition this node runs
        self.received: View | None = None     # the manager's last view, as received
        self.received_at: float | None = None
        self.refused = ""                     # why the last view was not taken
        self.shared = False                   # the node's file is the manager's own
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        self.running_changed()
        await self.take(reload=False)  # what arrived while the daemon was down

    async def reload(self, old, new) -> None:
        self.running_changed()

    def running_changed(self) -> None:
        """After start and every reload: the serial of the file the node runs from."""
        try:
            view = parse_view(read_definition(self.runtime.config_path))
        except (ConfigError, ValueError):
            self.running = None  # a definition written by hand or by join: no serial
            return
        self.running = view.serial
        if self.received is not None and view.serial >= self.received.serial:
            self.refused = ""

    async def take(self, reload: bool = True) -> None:
        """Check the view in the inbox and, when it is newer and valid, run it."""
        async with self._lock:
            await self._take(reload)

    async def _take(self, reload: bool) -> None:
        rt = self.runtime
        path = view_path(rt)
        try:
            view = await asyncio.to_thread(read_view, path)
        except ValueError as exc:
            self._refuse(f"{path}: {exc}")
            return
        if view is None:
            return
        if view.manager == rt.host.name:  # a manager waiting as standby: its own last view
            return
        self.received, self.received_at = view, time.time()
        self.shared = view.origin == origin_of(rt.config_path)
        if self.shared:  # the manager's own file: its reload reaches this daemon by itself
            self.refused = ""
            return
        seen = await asyncio.to_thread(epochs.read, rt.state_dir)
        if view.epoch < seen:  # a manager from before a failover: it gives no orders
            self._refuse(f"epoch {view.epoch} of {view.manager} is lower than the highest seen, "
                         f"{seen}: a stale manager's")
            return
        if self.running is not None and view.serial <= self.running:
            if view.serial < self.running:
                self._refuse(f"serial {view.serial} is older than the running {self.running}")
            return
        try:
            new = await asyncio.to_thread(build_cluster, view.text, path, rt.pm)
        except ConfigError as exc:
            self._refuse(f"invalid:\n{exc}")
            return
        except Exception as exc:  # noqa: BLE001 - a plugin's hook failing on it: refused too
            self._refuse(f"invalid: {type(exc).__name__}: {exc}")
            return
        mine = new.hosts.get(rt.host.name)
        if mine is None or mine.role not in ("node", "standby"):
            self._refuse(f"{rt.host.name} is not a node or standby in it")
            return
        await asyncio.to_thread(epochs.raise_to, rt.state_dir, view.epoch)
        await asyncio.to_thread(write_atomic, os.path.realpath(rt.config_path), view.text,
                                DEFINITION_MODE)  # a symlinked definition stays a symlink
        log.info("definition serial %d from %s written to %s", view.serial, view.manager,
                 rt.config_path)
        if replace(new, path=rt.cluster.path) == rt.cluster:  # comments, or keys left out
            self.running = view.serial
        elif reload:  # at start the daemon's file watch reloads it, once every plugin runs
            result = await rt.reload()
            if result.get("reloaded"):
                self.running_changed()  # a plugin failing in its reload hook is logged there
            else:
                self._refuse(f"the reload refused it: {result.get('error')}")

    def _refuse(self, why: str) -> None:
        self.refused = why
        log.error("definition from the manager refused, keeping the running one: %s", why)

    def status(self) -> dict:
        received = self.received.serial if self.received else None
        if self.shared:
            state = "the manager's own file"
        elif self.refused:
            state = f"refused: {self.refused}"
        elif received is None:
            state = "nothing received from the manager yet"
        elif self.running is None or self.running < received:
            state = "older than the manager's"
        else:
            state = "current"
        return {"serial": self.running, "manager_serial": received,
                "epoch": epochs.read(self.runtime.state_dir),  # the highest this host has seen
                "manager_time": self.received.time if self.received else None,
                "received_at": self.received_at, "state": state}
