"""The manager's own state travels to the standbys: the cluster CA, the panel's and the replication's data.

A promoted standby must go on where the manager stopped: issue and verify node
certificates with the same CA, know the panel's sessions, join tokens, issued
and revoked certificates and queued jobs (``panel.sqlite``), and deliver the
changes the manager had recorded but not yet sent (``sync.sqlite``'s dirty
set). These live in the manager's state directory, which no sync set may
touch, so the acting manager keeps a **snapshot** of them in
``STATE_DIR/_manager/`` (that cluster path under its root), the built-in sync
set :data:`SET`, which the replicator sends to the standbys only
(``SyncSet.roles``), over their usual transport.

A snapshot is consistent: SQLite files are copied with SQLite's online backup
API (never the live file, which may be mid-transaction in its WAL), then
turned into one self-contained file; private keys stay 0600, the folder 0700.
It is taken when a source changed (a ``stat`` every :data:`INTERVAL`) and
replaces the outbox copy only when its content differs (the replication of
the snapshot itself changes ``sync.sqlite``: the set's own rows are left out,
so it does not feed itself). ``MANIFEST`` (JSON: manager, epoch, time, each
file's SHA-256) is written last and again every :data:`REFRESH` seconds, so a
standby knows how old its copy is.

At promotion (:func:`install`, before the manager's plugins start) the
standby checks the received files against the manifest and makes them its
own: ``pki/ca.key`` (0600) and ``pki/ca.crt``, ``panel.sqlite``, and
``sync.sqlite`` minus the rows for itself (what it never received: logged)
and for hosts no longer in the definition.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import sqlite3
import time
import tomllib
import urllib.parse

from clusterkit.config import SyncSet
from clusterkit.definition.files import private_dir, write_atomic
from clusterkit.standby import epoch as epochs

log = logging.getLogger("clusterkit.standby")

SET = "clusterkit-manager-state"  # reserved, like the definition's set
FOLDER = "_manager"               # under cluster.state_dir; "_" cannot start a host's name
MANIFEST = "MANIFEST"
INTERVAL = 1.0    # seconds between looks at the sources
REFRESH = 60.0    # the manifest is written again at least this often (the standby's age)
MAX_FILE = 1 << 30  # a snapshot file larger than this is not taken (nor installed)

# snapshot name -> (path in the state directory, mode once installed)
CA = {"ca.key": ("pki/ca.key", 0o600), "ca.crt": ("pki/ca.crt", 0o644)}
DATABASES = {"panel.sqlite": "panel.sqlite", "sync.sqlite": "sync.sqlite"}
DEFINITION = "definition.toml"  # the manager's own file: what the node view leaves out


FILES = (DEFINITION, *CA, *DATABASES)


def sync_set(cluster) -> SyncSet:
    """The built-in set that carries the snapshot to the standbys only."""
    return SyncSet(name=SET, path=os.path.join(cluster.state_dir, FOLDER), owner="sync",
                   roles=("standby",),
                   key=f"sync set {SET!r} (built in: the manager's state, to the standbys)")


def folder(runtime) -> str:
    """The snapshot on this host: the acting manager's outbox, a standby's inbox."""
    return runtime.local_path(sync_set(runtime.cluster).path)


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _content_digest(db: sqlite3.Connection, name: str) -> str:
    """What the standby would take from the copy, not how its pages happen to lie."""
    h = hashlib.sha256()
    if name == "sync.sqlite":  # the pending rows; node_state counters are history
        rows = db.execute("SELECT node, sset, path FROM dirty ORDER BY node, sset, path")
    else:
        rows = ((line,) for line in db.iterdump())
    for row in rows:
        h.update(repr(row).encode())
    return h.hexdigest()


def _read_only(path: str) -> str:
    return f"file:{urllib.parse.quote(path)}?mode=ro"


def copy_database(source: str, staging: str, name: str) -> str:
    """A consistent copy of the live SQLite file ``source`` at ``staging`` (one file, 0600),
    through the online backup API; returns its content digest."""
    for leftover in (staging, f"{staging}-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(leftover)
    os.close(os.open(staging, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    src = sqlite3.connect(_read_only(source), uri=True, timeout=10)
    try:
        dst = sqlite3.connect(staging, isolation_level=None)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")  # self-contained: no -wal beside it
            if name == "sync.sqlite":  # the snapshot's own replication is not state to keep
                dst.execute("DELETE FROM dirty WHERE sset = ?", (SET,))
            return _content_digest(dst, name)
        finally:
            dst.close()
    finally:
        src.close()


class Snapshots:
    """The acting manager's side: keeps ``_manager/`` equal to its state (a Component)."""

    def __init__(self, runtime):
        self.runtime = runtime
        self.dir = folder(runtime)
        self.signature: tuple = ()
        self.digests: dict[str, str] = {}
        self.taken_at: float | None = None     # the last snapshot that changed something
        self.manifest_at = 0.0
        self.error = ""
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        private_dir(self.dir)
        self.digests = _manifest_files(self.dir, self.runtime.host.name)
        self.task = self.runtime.spawn(self._loop(), "manager-state")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def reload(self, old, new) -> None:
        pass

    async def _loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.take)
                self.error = ""
            except (OSError, sqlite3.Error, ValueError) as exc:
                if str(exc) != self.error:
                    log.error("the manager's state was not copied for the standbys: %s", exc)
                self.error = str(exc)
                self.signature = ()  # try again whole next time
            await asyncio.sleep(INTERVAL)

    def _sources(self) -> dict[str, str]:
        state = self.runtime.state_dir
        return {DEFINITION: os.path.realpath(self.runtime.config_path),
                **{name: os.path.join(state, rel) for name, (rel, _) in CA.items()},
                **{name: os.path.join(state, rel) for name, rel in DATABASES.items()}}

    def _stat(self, sources: dict[str, str]) -> tuple:
        seen = []
        for path in sources.values():
            for one in (path, f"{path}-wal"):
                try:
                    st = os.stat(one)
                    seen.append((one, st.st_mtime_ns, st.st_size, st.st_ino))
                except FileNotFoundError:
                    seen.append((one, None))
        return tuple(seen)

    def take(self) -> bool:
        """Copy what changed into the outbox; write the manifest when anything did (or it
        is due again). Returns whether the manifest was written."""
        sources = self._sources()
        signature = self._stat(sources)
        now = time.time()
        changed = False
        if signature != self.signature:
            for name, path in sources.items():
                if not os.path.exists(path):
                    continue
                if os.path.getsize(path) > MAX_FILE:
                    raise ValueError(f"{path} is larger than {MAX_FILE} bytes: not copied")
                staging = os.path.join(os.path.dirname(self.dir), f".{FOLDER}.{name}")
                outbox = os.path.join(self.dir, name)
                if name in DATABASES:
                    digest = copy_database(path, staging, name)
                else:
                    with open(path, "rb") as f:
                        data = f.read(MAX_FILE + 1)
                    digest = _digest(data)
                if digest == self.digests.get(name) and os.path.exists(outbox):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(staging)
                    continue
                if name not in DATABASES:
                    write_atomic(staging, data, 0o600)
                os.replace(staging, outbox)
                self.digests[name] = digest
                changed = True
            self.signature = signature
        if changed:
            self.taken_at = now
        if not changed and now - self.manifest_at < REFRESH:
            return False
        manifest = {"manager": self.runtime.host.name,
                    "epoch": epochs.read(self.runtime.state_dir), "time": round(now, 3),
                    "taken_at": self.taken_at, "files": self._file_digests()}
        staging = os.path.join(os.path.dirname(self.dir), f".{FOLDER}.{MANIFEST}")
        write_atomic(staging, json.dumps(manifest, sort_keys=True) + "\n", 0o600)
        os.replace(staging, os.path.join(self.dir, MANIFEST))
        self.manifest_at = now
        return True

    def _file_digests(self) -> dict[str, str]:
        """Each file's SHA-256 as it lies in the outbox (the standby checks them)."""
        out = {}
        for name in FILES:
            path = os.path.join(self.dir, name)
            if os.path.exists(path):
                with open(path, "rb") as f:
                    out[name] = _digest(f.read(MAX_FILE + 1))
        return out

    def status(self) -> dict:
        sync = self.runtime.components.get("sync")
        standbys = {}
        for host in self.runtime.cluster.standbys:
            worker = getattr(sync, "workers", {}).get(host.name)
            if worker is None:
                continue
            entries = [e for group in (worker.pending, worker.inflight)
                       for e in group.get(SET, {}).values()]
            oldest = min((since for _, since in entries), default=None)
            standbys[host.name] = {"pending": len(entries),
                                   "lag": round(time.time() - oldest, 3) if oldest else 0.0}
        return {"role": "source", "taken_at": self.taken_at, "files": sorted(self.digests),
                "error": self.error, "standbys": standbys}


def _manifest_files(directory: str, manager: str) -> dict:
    """The digests of the outbox's last manifest, if this host wrote it (a restart's start)."""
    shown = read_manifest(directory)
    return {} if shown is None or shown.get("manager") != manager else dict(shown["files"])


def read_manifest(directory: str) -> dict | None:
    """The manifest in ``directory``, checked; ``None`` when there is none or it is malformed."""
    try:
        with open(os.path.join(directory, MANIFEST), "rb") as f:
            shown = json.loads(f.read(64 * 1024))
    except (FileNotFoundError, ValueError):
        return None
    ok = (isinstance(shown, dict) and isinstance(shown.get("manager"), str)
          and isinstance(shown.get("epoch"), int) and isinstance(shown.get("time"), (int, float))
          and isinstance(shown.get("files"), dict)
          and all(k in FILES and isinstance(v, str) for k, v in shown["files"].items()))
    return shown if ok else None


def received(runtime) -> dict:
    """A standby's view of its copy: from whom, which epoch, how old."""
    shown = read_manifest(folder(runtime))
    if shown is None or shown["manager"] == runtime.host.name:
        return {"role": "copy", "from": None}
    return {"role": "copy", "from": shown["manager"], "epoch": shown["epoch"],
            "time": shown["time"], "age": round(max(0.0, time.time() - shown["time"]), 3),
            "files": sorted(shown["files"])}


# ------------------------------------------------------------ at promotion


def install(runtime) -> list[str]:
    """Make the received snapshot this host's own state (called off the loop at promotion,
    while no plugin has these files open); returns what was installed."""
    directory = folder(runtime)
    shown = read_manifest(directory)
    me = runtime.host.name
    if shown is None or shown["manager"] == me:
        log.warning("%s takes over without a copy of the manager's state (%s): no cluster CA, "
                    "panel data or pending changes came with the role", me, directory)
        return []
    data = {name: content for name in shown["files"]
            if (content := _verified(directory, shown, name)) is not None}
    data.pop(DEFINITION, None)  # read at the rewrite of the definition (manager_only_options)
    state = runtime.state_dir
    private_dir(state)
    for name, content in data.items():
        if name in CA:
            rel, mode = CA[name]
            target = os.path.join(state, rel)
            private_dir(os.path.dirname(target))
            write_atomic(target, content, mode)
        else:
            _install_database(runtime, os.path.join(directory, name),
                              os.path.join(state, DATABASES[name]), name)
    log.warning("%s took the manager's state from %s (epoch %d, %.1fs old): %s", me,
                shown["manager"], shown["epoch"], max(0.0, time.time() - shown["time"]),
                ", ".join(sorted(data)) or "nothing")
    return sorted(data)


def _verified(directory: str, shown: dict, name: str) -> bytes | None:
    """The file ``name`` of the copy, if it matches the manifest (else logged, ``None``)."""
    path = os.path.join(directory, name)
    try:
        with open(path, "rb") as f:
            content = f.read(MAX_FILE + 1)
    except FileNotFoundError:
        content = b""
    if _digest(content) != shown["files"].get(name):  # caught between two deliveries
        log.error("the manager's state copy %s does not match its manifest: not installed", path)
        return None
    return content


def manager_only_options(runtime) -> dict[str, dict]:
    """``{node: {option: value}}`` of the options the node view leaves out (the paths of the
    manager's ssh key and rsyncd password files, clusterkit.sync.definition.MANAGER_ONLY), from
    the manager's own definition in the copy: a promoted standby reaches the nodes the same way
    (the files at those paths must exist on it)."""
    directory = folder(runtime)
    shown = read_manifest(directory)
    if shown is None or shown["manager"] == runtime.host.name or DEFINITION not in shown["files"]:
        return {}
    content = _verified(directory, shown, DEFINITION)
    try:
        doc = tomllib.loads(content.decode()) if content is not None else {}
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        log.error("the manager's definition in the state copy is not readable: %s", exc)
        return {}
    from clusterkit.sync.definition import MANAGER_ONLY

    out: dict[str, dict] = {}
    for array, table, key in MANAGER_ONLY:
        for entry in doc.get(array, []) if isinstance(doc.get(array), list) else []:
            inner = entry.get(table) if isinstance(entry, dict) else None
            if isinstance(inner, dict) and isinstance(entry.get("name"), str) and key in inner:
                out.setdefault(entry["name"], {})[key] = inner[key]
    return out


def _install_database(runtime, source: str, target: str, name: str) -> None:
    """``target`` becomes a copy of ``source`` (backup API), WAL files of the old one removed."""
    for old in (target, f"{target}-wal", f"{target}-shm", f"{target}-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(old)
    os.close(os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    src = sqlite3.connect(_read_only(source), uri=True)
    dst = sqlite3.connect(target, isolation_level=None)
    try:
        src.backup(dst)
        if name == "sync.sqlite":
            _keep_deliverable(runtime, dst)
    finally:
        dst.close()
        src.close()


def _keep_deliverable(runtime, db: sqlite3.Connection) -> None:
    """The pending rows this host can deliver: not its own (it never received those paths:
    logged), not those of hosts the definition no longer has."""
    me = runtime.host.name
    missed = db.execute("SELECT sset, path FROM dirty WHERE node = ? AND sset != ? "
                        "ORDER BY sset, path LIMIT 21", (me, SET)).fetchall()
    if missed:  # as of the copy, which may be a little older than the old manager's end
        shown = ", ".join(f"{sset}:{os.fsdecode(path) or '(the whole set)'}"
                          for sset, path in missed[:20])
        log.warning("the old manager's queue, as last copied here, still held changes for %s: "
                    "%s%s; the nodes get this host's copies", me, shown,
                    ", ..." if len(missed) > 20 else "")
    replicas = [h.name for h in runtime.cluster.replicas]
    db.execute("BEGIN")
    db.execute("DELETE FROM dirty WHERE node = ?", (me,))
    db.execute(f"DELETE FROM dirty WHERE node NOT IN ({', '.join('?' * len(replicas))})",
               replicas)
    db.execute("DELETE FROM node_state")  # the old manager's counters, not this one's
    db.execute("COMMIT")
