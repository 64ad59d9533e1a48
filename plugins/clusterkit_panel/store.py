"""The panel's durable state on one host: one SQLite file, ``state_dir/panel.sqlite``, 0600.

Sessions, one-time join tokens (hashed), the certificates the CA issued and
revoked, the manager's queue of remote actions, and on a node the results
of actions it ran (so a retried job returns its first result, not a second run).
The CLI and the daemon open the same file; WAL and a busy timeout let them.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from contextlib import contextmanager

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY, user TEXT NOT NULL, csrf TEXT NOT NULL,
    created REAL NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS join_tokens (
    hash TEXT PRIMARY KEY, node TEXT NOT NULL, created REAL NOT NULL,
    expires REAL NOT NULL, used_at REAL);
CREATE TABLE IF NOT EXISTS certs (
    serial TEXT PRIMARY KEY, name TEXT NOT NULL, issued REAL NOT NULL, revoked_at REAL);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, node TEXT NOT NULL, action TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued', created REAL NOT NULL, started REAL, finished REAL,
    attempts INTEGER NOT NULL DEFAULT 0, exit_code INTEGER, output TEXT, error TEXT,
    requested_by TEXT);
CREATE INDEX IF NOT EXISTS jobs_node ON jobs (node, state, id);
CREATE TABLE IF NOT EXISTS action_results (
    job TEXT PRIMARY KEY, action TEXT NOT NULL, exit_code INTEGER, output TEXT, finished REAL);
"""

FILE = "panel.sqlite"
JOB_STATES = ("queued", "running", "done", "failed")


def digest(secret: str) -> str:
    """Tokens and session ids are random 256-bit values: SHA-256 is the right hash to store."""
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenRefused(Exception):
    """A join token is unknown, used already, expired, or for another node."""


class Store:
    def __init__(self, state_dir: str):
        os.makedirs(state_dir, mode=0o700, exist_ok=True)
        self.path = os.path.join(state_dir, FILE)
        if not os.path.exists(self.path):
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=10,
                                  check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                os.chmod(self.path + suffix, 0o600)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self):
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # ------------------------------------------------------------- sessions

    def add_session(self, sid: str, user: str, csrf: str, ttl: float) -> None:
        now = time.time()
        self.db.execute("DELETE FROM sessions WHERE expires < ?", (now,))
        self.db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                        (digest(sid), user, csrf, now, now + ttl))

    def session(self, sid: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM sessions WHERE id_hash = ? AND expires > ?",
                               (digest(sid), time.time())).fetchone()

    def drop_session(self, sid: str) -> None:
        self.db.execute("DELETE FROM sessions WHERE id_hash = ?", (digest(sid),))

    def drop_user_sessions(self, user: str) -> None:
        self.db.execute("DELETE FROM sessions WHERE user = ?", (user,))

    # ---------------------------------------------------------- join tokens

    def add_join_token(self, token: str, node: str, ttl: float) -> float:
        now = time.time()
        self.db.execute("INSERT INTO join_tokens VALUES (?, ?, ?, ?, NULL)",
                        (digest(token), node, now, now + ttl))
        return now + ttl

    def use_join_token(self, token: str, node: str) -> None:
        """Spend a token, once: atomically, so two racing joins cannot both succeed."""
        with self.transaction() as db:
            row = db.execute("SELECT * FROM join_tokens WHERE hash = ?", (digest(token),)).fetchone()
            if row is None:
                raise TokenRefused("unknown join token")
            if row["used_at"] is not None:
                raise TokenRefused("this join token was used already (tokens are one-time)")
            if row["expires"] < time.time():
                raise TokenRefused("this join token has expired (create another: "
                                   "clusterkit node token NAME)")
            if row["node"] != node:
                raise TokenRefused(f"this join token is for node {row['node']!r}, not {node!r}")
            db.execute("UPDATE join_tokens SET used_at = ? WHERE hash = ?", (time.time(), row["hash"]))

    def join_tokens(self) -> list[dict]:
        rows = self.db.execute("SELECT node, created, expires, used_at FROM join_tokens ORDER BY created")
        return [dict(r) for r in rows]

    # ----------------------------------------------------------------- certs

    def add_cert(self, serial: str, name: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO certs VALUES (?, ?, ?, NULL)", (serial, name, time.time()))

    def revoke_name(self, name: str) -> list[str]:
        """Revoke every certificate issued to ``name``; returns their serials."""
        with self.transaction() as db:
            serials = [r[0] for r in db.execute(
                "SELECT serial FROM certs WHERE name = ? AND revoked_at IS NULL", (name,))]
            db.execute("UPDATE certs SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                       (time.time(), name))
        return serials

    def revoke_others(self, name: str, keep: str) -> None:
        """A host joined again: its older certificates stop being valid."""
        self.db.execute("UPDATE certs SET revoked_at = ? WHERE name = ? AND serial != ? "
                        "AND revoked_at IS NULL", (time.time(), name, keep))

    def cert(self, serial: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM certs WHERE serial = ?", (serial,)).fetchone()

    def revoked(self) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT serial FROM certs WHERE revoked_at IS NOT NULL ORDER BY serial")]

    def certs(self) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM certs ORDER BY issued")]

    # ------------------------------------------------------------------ jobs

    def add_job(self, node: str, action: str, requested_by: str = "") -> int:
        cur = self.db.execute("INSERT INTO jobs (node, action, created, requested_by) "
                              "VALUES (?, ?, ?, ?)", (node, action, time.time(), requested_by))
        return cur.lastrowid

    def next_job(self, node: str) -> sqlite3.Row | None:
        """The node's oldest unfinished job: jobs of a node run strictly in order."""
        return self.db.execute("SELECT * FROM jobs WHERE node = ? AND state IN ('queued', 'running') "
                               "ORDER BY id LIMIT 1", (node,)).fetchone()

    def job_started(self, job_id: int) -> None:
        self.db.execute("UPDATE jobs SET state = 'running', started = ?, attempts = attempts + 1 "
                        "WHERE id = ?", (time.time(), job_id))

    def job_retry(self, job_id: int, error: str) -> None:
        self.db.execute("UPDATE jobs SET state = 'queued', error = ? WHERE id = ?", (error, job_id))

    def job_finished(self, job_id: int, state: str, exit_code: int | None, output: str,
                     error: str = "") -> None:
        self.db.execute("UPDATE jobs SET state = ?, finished = ?, exit_code = ?, output = ?, "
                        "error = ? WHERE id = ?",
                        (state, time.time(), exit_code, output, error or None, job_id))

    def fail_jobs(self, node: str, error: str) -> None:
        """The node left the cluster: its unfinished jobs will never run."""
        self.db.execute("UPDATE jobs SET state = 'failed', finished = ?, error = ? "
                        "WHERE node = ? AND state IN ('queued', 'running')", (time.time(), error, node))

    def jobs(self, node: str | None = None, limit: int = 200) -> list[dict]:
        sql, args = "SELECT * FROM jobs", ()
        if node:
            sql, args = sql + " WHERE node = ?", (node,)
        rows = self.db.execute(sql + " ORDER BY id DESC LIMIT ?", (*args, limit)).fetchall()
        return [dict(r) for r in reversed(rows)]

    def nodes_with_jobs(self) -> list[str]:
        return [r[0] for r in self.db.execute(
            "SELECT DISTINCT node FROM jobs WHERE state IN ('queued', 'running')")]

    def job_counts(self) -> dict:
        return {r[0]: r[1] for r in self.db.execute("SELECT state, count(*) FROM jobs GROUP BY state")}

    # --------------------------------------------------- node: action results

    def action_result(self, job: str) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM action_results WHERE job = ?", (job,)).fetchone()

    def add_action_result(self, job: str, action: str, exit_code: int, output: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO action_results VALUES (?, ?, ?, ?, ?)",
                        (job, action, exit_code, output, time.time()))
