"""The durable per-node dirty set: SQLite in the host's state directory.

Every change is written here for every node *before* anything is sent, so a
daemon restart or a node that is down for hours loses nothing. A row is
``(node, set, path, seq)``: ``path`` is relative to the set's root; ``""``
means "the whole set" (a full sync), a trailing ``/`` means "this directory,
recursively". Paths are stored as the file system's bytes (a BLOB): a name
that is not UTF-8 is as good as any other (``os.fsencode``/``os.fsdecode``). ``seq`` grows with every mark: a batch removes only the rows it
saw (``seq <= sent``), so a path changed again while in flight stays dirty.

WAL mode with ``synchronous=NORMAL``: a commit survives the process being
killed (SIGKILL); only a power loss can lose the last commits, and the full
sync every start covers that too.
"""

from __future__ import annotations

import os
import sqlite3
import time

FULL = ""

SCHEMA = """
CREATE TABLE IF NOT EXISTS dirty (
    node TEXT NOT NULL, sset TEXT NOT NULL, path TEXT NOT NULL,
    seq INTEGER NOT NULL, since REAL NOT NULL,
    PRIMARY KEY (node, sset, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS node_state (
    node TEXT PRIMARY KEY, last_success REAL, last_error TEXT, last_error_at REAL,
    runs INTEGER NOT NULL DEFAULT 0, files INTEGER NOT NULL DEFAULT 0);
"""


class DirtyStore:
    """The dirty set of every node of one manager (one SQLite file, one writer: the loop)."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        self.path = path
        # Owner-only before SQLite opens it: its -wal and -shm files take the database's mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for journal in (f"{path}-wal", f"{path}-shm"):  # left by an older version, maybe 0644
            if os.path.exists(journal):
                os.chmod(journal, 0o600)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)
        # Rows of older versions hold paths as TEXT: make them the BLOBs every query binds.
        self.db.execute("UPDATE dirty SET path = CAST(path AS BLOB) WHERE typeof(path) = 'text'")
        row = self.db.execute("SELECT MAX(seq) FROM dirty").fetchone()
        self.seq = row[0] or 0

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------- writing

    def mark(self, rows: dict[str, list[tuple[str, str]]]) -> int:
        """Record ``{node: [(set, path), ...]}`` as dirty in one transaction; returns the seq."""
        self.seq += 1
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "INSERT INTO dirty (node, sset, path, seq, since) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (node, sset, path) DO UPDATE SET seq = excluded.seq",
                [(node, sset, os.fsencode(path), self.seq, now)
                 for node, entries in rows.items() for sset, path in entries])
        return self.seq

    def replace(self, node: str, sset: str, drop: list[str], add: str) -> int:
        """Escalate: replace ``drop`` paths with one broader entry ``add``."""
        self.seq += 1
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            self.db.execute("INSERT INTO dirty VALUES (?, ?, ?, ?, ?) ON CONFLICT (node, sset, path) "
                            "DO UPDATE SET seq = excluded.seq", (node, sset, os.fsencode(add), self.seq, now))
            self.db.executemany("DELETE FROM dirty WHERE node = ? AND sset = ? AND path = ?",
                                [(node, sset, os.fsencode(p)) for p in drop if p != add])
        return self.seq

    def done(self, node: str, sset: str, sent: dict[str, int]) -> None:
        """A batch landed: forget the paths it carried unless marked again since."""
        with self.db:
            self.db.execute("BEGIN")
            self.db.executemany(
                "DELETE FROM dirty WHERE node = ? AND sset = ? AND path = ? AND seq <= ?",
                [(node, sset, os.fsencode(path), seq) for path, seq in sent.items()])

    def forget(self, node: str, sset: str | None = None) -> None:
        """A node or a set left the cluster."""
        with self.db:
            if sset is None:
                self.db.execute("DELETE FROM dirty WHERE node = ?", (node,))
                self.db.execute("DELETE FROM node_state WHERE node = ?", (node,))
            else:
                self.db.execute("DELETE FROM dirty WHERE node = ? AND sset = ?", (node, sset))

    def record(self, node: str, ok: bool, error: str = "", files: int = 0) -> None:
        now = time.time()
        with self.db:
            self.db.execute("INSERT OR IGNORE INTO node_state (node) VALUES (?)", (node,))
            if ok:
                self.db.execute("UPDATE node_state SET last_success = ?, runs = runs + 1, "
                                "files = files + ? WHERE node = ?", (now, files, node))
            else:
                self.db.execute("UPDATE node_state SET last_error = ?, last_error_at = ?, "
                                "runs = runs + 1 WHERE node = ?", (error, now, node))

    def recovered(self, node: str) -> None:
        """The node takes batches again: its last error is history, no longer shown."""
        with self.db:
            self.db.execute("UPDATE node_state SET last_error = NULL, last_error_at = NULL "
                            "WHERE node = ?", (node,))

    # ------------------------------------------------------------- reading

    def pending(self, node: str) -> dict[tuple[str, str], tuple[int, float]]:
        """``{(set, path): (seq, since)}`` for one node."""
        return {(s, os.fsdecode(p)): (q, t) for s, p, q, t in self.db.execute(
            "SELECT sset, path, seq, since FROM dirty WHERE node = ?", (node,))}

    def state(self, node: str) -> dict:
        row = self.db.execute("SELECT last_success, last_error, last_error_at, runs, files "
                              "FROM node_state WHERE node = ?", (node,)).fetchone()
        keys = ("last_success", "last_error", "last_error_at", "runs", "files")
        return dict(zip(keys, row)) if row else dict.fromkeys(keys)
