"""The alerts' durable state: what fires, what waits to be grouped, what waits to be delivered.

SQLite in the manager's state directory, so a restart in the middle of a
burst loses nothing and sends nothing twice.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time

SCHEMA = """
CREATE TABLE IF NOT EXISTS firing (key TEXT PRIMARY KEY, kind TEXT, node TEXT, text TEXT, since REAL);
CREATE TABLE IF NOT EXISTS pending (id INTEGER PRIMARY KEY, at REAL, state TEXT, key TEXT, kind TEXT,
                                    node TEXT, text TEXT);
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY, sender TEXT, body TEXT, attempts INTEGER,
                                   next_at REAL, last_error TEXT);
"""


class AlertStore:
    def __init__(self, path: str):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        os.chmod(path, 0o600)

    def close(self) -> None:
        self.db.close()

    def firing(self) -> dict[str, tuple]:
        return {row[0]: row[1:] for row in self.db.execute("SELECT key, kind, node, text, since FROM firing")}

    def change(self, fired: list, resolved: list[str], silenced: list[str]) -> None:
        """Record new and ended conditions; the pending rows become the next message."""
        now = time.time()
        with self.db:
            self.db.execute("BEGIN")
            for c in fired:
                self.db.execute("INSERT OR REPLACE INTO firing VALUES (?, ?, ?, ?, ?)",
                                (c.key, c.kind, c.node, c.text, now))
                self.db.execute("INSERT INTO pending (at, state, key, kind, node, text) "
                                "VALUES (?, 'firing', ?, ?, ?, ?)", (now, c.key, c.kind, c.node, c.text))
            for key in resolved:
                row = self.db.execute("SELECT kind, node, text FROM firing WHERE key = ?", (key,)).fetchone()
                self.db.execute("DELETE FROM firing WHERE key = ?", (key,))
                if row is not None:
                    self.db.execute("INSERT INTO pending (at, state, key, kind, node, text) "
                                    "VALUES (?, 'resolved', ?, ?, ?, ?)", (now, key, *row))
            for key in silenced:
                self.db.execute("DELETE FROM firing WHERE key = ?", (key,))

    def oldest_pending(self) -> float | None:
        return self.db.execute("SELECT min(at) FROM pending").fetchone()[0]

    def group(self, senders: list[str], envelope: dict) -> dict | None:
        """Turn every pending alert into one message queued for each sender."""
        with self.db:
            self.db.execute("BEGIN")
            rows = self.db.execute("SELECT id, at, state, key, kind, node, text FROM pending "
                                   "ORDER BY id").fetchall()
            if not rows:
                return None
            alerts = [{"state": r[2], "key": r[3], "kind": r[4], "node": r[5], "text": r[6],
                       "at": round(r[1], 3)} for r in rows]
            body = {**envelope, "alerts": alerts}
            text = json.dumps(body, sort_keys=True)
            for sender in senders:
                self.db.execute("INSERT INTO outbox (sender, body, attempts, next_at, last_error) "
                                "VALUES (?, ?, 0, 0, '')", (sender, text))
            self.db.execute("DELETE FROM pending WHERE id <= ?", (rows[-1][0],))
        return body

    def due(self, now: float) -> list[tuple[int, str, str, int]]:
        return self.db.execute("SELECT id, sender, body, attempts FROM outbox WHERE next_at <= ? "
                               "ORDER BY id", (now,)).fetchall()

    def delivered(self, row_id: int) -> None:
        self.db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))

    def failed(self, row_id: int, attempts: int, next_at: float, error: str) -> None:
        self.db.execute("UPDATE outbox SET attempts = ?, next_at = ?, last_error = ? WHERE id = ?",
                        (attempts, next_at, error[:500], row_id))

    def drop_sender(self, keep: list[str]) -> None:
        """A sender removed from the definition: its queued messages can go nowhere."""
        marks = ",".join("?" * len(keep))
        self.db.execute(f"DELETE FROM outbox WHERE sender NOT IN ({marks})", keep)

    def counts(self) -> dict:
        pending = self.db.execute("SELECT count(*) FROM pending").fetchone()[0]
        undelivered = {r[0]: {"messages": r[1], "last_error": r[2]} for r in self.db.execute(
            "SELECT sender, count(*), max(last_error) FROM outbox GROUP BY sender")}
        return {"pending": pending, "undelivered": undelivered}
