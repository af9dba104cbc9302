"""The spool: what could not be delivered yet, on disk, until AgentSight accepts it.

One SQLite database in WAL mode per endpoint. Entries are encoded conversation blocks (and attachment uploads),
replayed oldest first; an entry leaves the spool only when the server has accepted it. Entries the server refused
for good (a 400 naming the block, other 4xx) move to a dead-letter table with the server's reason, where
``agentsight-otel spool`` shows them and can requeue or discard them. The spool is bounded: when it is full the
oldest entries are dropped, with a counted error each time, never silently.

Several processes may share one spool file; a claimed entry is leased to one process at a time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

logger = logging.getLogger("agentsight_otel")

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
LEASE_SECONDS = 60.0
KIND_INGEST = "ingest"
KIND_ATTACHMENTS = "attachments"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    body BLOB NOT NULL,
    size INTEGER NOT NULL,
    raw_size INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    lease_owner TEXT,
    lease_until REAL NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS entries_conversation ON entries (conversation_id, id);
CREATE TABLE IF NOT EXISTS dead (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    conversation_id TEXT NOT NULL,
    body BLOB NOT NULL,
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    failed_at REAL NOT NULL,
    status INTEGER,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS info (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


# Columns added after the first release: a spool written by an older version gets them when it is opened.
_ADDED_COLUMNS = (("entries", "raw_size", "INTEGER NOT NULL DEFAULT 0", "UPDATE entries SET raw_size = size"),)


def _upgrade(conn: sqlite3.Connection) -> None:
    """Bring a spool written by an older version up to the current schema (one transaction, so two processes
    opening it at once cannot both add a column)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table, column, declaration, backfill in _ADDED_COLUMNS:
            present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if column not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
                conn.execute(backfill)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


_PACKED = b"\x00z"  # JSON never starts with NUL: marks a zlib-compressed body
_PACK_MIN_BYTES = 512


def _pack(body: bytes) -> bytes:
    """Bodies are stored compressed (conversation JSON shrinks ~10x), so the spool holds far more."""
    if len(body) < _PACK_MIN_BYTES:
        return body
    return _PACKED + zlib.compress(body, 1)


def _unpack(body: bytes) -> bytes:
    data = bytes(body)
    return zlib.decompress(data[len(_PACKED) :]) if data.startswith(_PACKED) else data


def _alive(owner: str | None) -> bool:
    """Whether the process holding a lease still runs; a killed process's leases are void at once."""
    try:
        pid = int(str(owner).split("-", 1)[0])
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (ValueError, PermissionError, OSError):
        return True  # not ours to judge (another user's process, or an unreadable owner): respect the lease
    return True


def default_spool_dir() -> Path:
    """``$XDG_STATE_HOME/agentsight-otel``, else ``~/.local/state/agentsight-otel``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "agentsight-otel"


def spool_path(directory: str | os.PathLike[str], endpoint: str) -> Path:
    """One spool file per endpoint, so data meant for one AgentSight is never replayed to another."""
    digest = hashlib.sha256(endpoint.encode()).hexdigest()[:12]
    return Path(directory) / f"spool-{digest}.db"


@dataclass(frozen=True)
class Entry:
    id: int
    kind: str
    conversation_id: str
    body: bytes
    attempts: int
    created_at: float


@dataclass(frozen=True)
class DeadEntry:
    id: int
    kind: str
    conversation_id: str
    size: int
    failed_at: float
    status: int | None
    reason: str


@dataclass(frozen=True)
class SpoolStats:
    entries: int
    bytes: int
    oldest: float | None
    last_error: str | None
    conversations: int
    dead: int
    dead_bytes: int
    dropped_entries: int
    dropped_bytes: int


class SpoolFull(Exception):
    """The spool has no room for an entry and keeps what it holds (``when_full="refuse"``)."""


class Spool:
    """A durable, size-bounded queue of encoded blocks; safe to share between threads and processes.

    When full, it either drops its oldest entries to take new ones (``when_full="drop_oldest"``, for an app's
    exporter: the app has nowhere else to keep them) or refuses new ones with :class:`SpoolFull` (``"refuse"``, for
    the bridge: what it has spooled was acknowledged to a sender, which can keep and resend what it refuses).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        endpoint: str | None = None,
        when_full: Literal["drop_oldest", "refuse"] = "drop_oldest",
    ) -> None:
        if when_full not in ("drop_oldest", "refuse"):
            raise ValueError(f"when_full must be 'drop_oldest' or 'refuse', got {when_full!r}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.when_full = when_full
        self._lock = threading.Lock()
        self._owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._conn = self._connect()
        self._pid = os.getpid()
        self._used_estimate = self._db().execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()[0]
        if endpoint is not None:
            with self._lock:
                self._db().execute("INSERT OR REPLACE INTO info (name, value) VALUES ('endpoint', ?)", (endpoint,))

    @property
    def endpoint(self) -> str | None:
        """The AgentSight endpoint this spool's data is meant for."""
        with self._lock:
            row = self._db().execute("SELECT value FROM info WHERE name = 'endpoint'").fetchone()
        return row[0] if row else None

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(str(self.path), timeout=30, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # committed data survives a killed process
        conn.execute("PRAGMA busy_timeout=30000")
        conn.executescript(_SCHEMA)
        _upgrade(conn)
        return conn

    def after_fork(self) -> None:
        """A SQLite connection must not cross a fork: the child opens its own (on first use, not in the fork hook,
        where another thread may have held SQLite's mutex) and takes a new lease owner."""
        self._lock = threading.Lock()
        self._owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._pid = -1

    def _db(self) -> sqlite3.Connection:
        if self._pid != os.getpid():
            self._conn = self._connect()
            self._pid = os.getpid()
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._pid == os.getpid():
                self._conn.close()

    # -- writing -------------------------------------------------------------------------------------------

    def put(self, kind: str, conversation_id: str, body: bytes, error: str | None = None) -> None:
        """Add one entry, dropping the oldest ones (loudly) when the spool would exceed its size."""
        self.put_many([(kind, conversation_id, body)], error)

    def put_many(self, items: Sequence[tuple[str, str, bytes]], error: str | None = None) -> None:
        if not items:
            return
        now = time.time()
        packed = [(kind, cid, _pack(body), len(body)) for kind, cid, body in items]
        incoming = sum(len(body) for _, _, body, _ in packed)
        with self._lock:
            self._db().execute("BEGIN IMMEDIATE")
            try:
                self._make_room(incoming)
                self._db().executemany(
                    "INSERT INTO entries (kind, conversation_id, body, size, raw_size, created_at, last_error) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [(kind, cid, body, len(body), raw, now, error) for kind, cid, body, raw in packed],
                )
                self._db().execute("COMMIT")
            except BaseException:
                self._db().execute("ROLLBACK")
                raise

    def _make_room(self, incoming: int) -> None:
        # Summing the table on every put would make a long outage quadratic: keep an upper estimate (other
        # processes only ever remove entries) and count exactly only when the estimate nears the limit.
        if self._used_estimate + incoming <= self.max_bytes * 0.9:
            self._used_estimate += incoming
            return
        used = self._db().execute("SELECT COALESCE(SUM(size), 0) FROM entries").fetchone()[0]
        excess = used + incoming - self.max_bytes
        if excess > 0 and self.when_full == "refuse":
            self._used_estimate = used
            raise SpoolFull(f"the spool is full ({used} of {self.max_bytes} bytes used)")
        self._used_estimate = used + incoming
        if excess <= 0:
            return
        dropped, freed = 0, 0
        for entry_id, size in self._db().execute("SELECT id, size FROM entries ORDER BY id").fetchall():
            if freed >= excess:
                break
            self._db().execute("DELETE FROM entries WHERE id = ?", (entry_id,))
            dropped += 1
            freed += size
        self._used_estimate -= freed
        self._bump("dropped_entries", dropped)
        self._bump("dropped_bytes", freed)
        total = self._db().execute("SELECT value FROM counters WHERE name = 'dropped_entries'").fetchone()[0]
        logger.error(
            "AgentSight spool %s is full (%d bytes): dropped the %d oldest undelivered entries (%d bytes); "
            "%d dropped since the spool was created",
            self.path,
            self.max_bytes,
            dropped,
            freed,
            total,
        )

    def _bump(self, name: str, by: int) -> None:
        self._db().execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = value + ?",
            (name, by, by),
        )

    # -- replay --------------------------------------------------------------------------------------------

    def claim(self, *, max_bytes: int, conversations: Iterable[str] | None = None) -> list[Entry]:
        """Lease the oldest deliverable entries, keeping each conversation's entries in order.

        An entry leased by another process holds back the later entries of its conversation.
        """
        wanted = set(conversations) if conversations is not None else None
        now = time.time()
        claimed: list[Entry] = []
        blocked: set[str] = set()
        total = 0
        with self._lock:
            self._db().execute("BEGIN IMMEDIATE")
            try:
                # The budget counts bodies as they will be in memory (uncompressed), not as stored.
                columns = "id, kind, conversation_id, raw_size, attempts, created_at, lease_owner, lease_until"
                if wanted is not None:
                    marks = ",".join("?" * len(wanted))
                    rows = self._db().execute(
                        f"SELECT {columns} FROM entries WHERE conversation_id IN ({marks}) ORDER BY id",
                        tuple(wanted),
                    )
                else:
                    rows = self._db().execute(f"SELECT {columns} FROM entries ORDER BY id LIMIT 5000")
                chosen: list[tuple[int, str, str, int, float]] = []
                for entry_id, kind, cid, size, attempts, created, owner, until in rows.fetchall():
                    if cid in blocked:
                        continue
                    if until > now and owner != self._owner and _alive(owner):
                        blocked.add(cid)
                        continue
                    if chosen and total + size > max_bytes:
                        break
                    chosen.append((entry_id, kind, cid, attempts, created))
                    total += size
                # Bodies are read only for the entries taken: a long spool never loads into memory at once.
                for entry_id, kind, cid, attempts, created in chosen:
                    body = self._db().execute("SELECT body FROM entries WHERE id = ?", (entry_id,)).fetchone()[0]
                    claimed.append(Entry(entry_id, kind, cid, _unpack(body), attempts, created))
                if claimed:
                    self._db().executemany(
                        "UPDATE entries SET lease_owner = ?, lease_until = ? WHERE id = ?",
                        [(self._owner, now + LEASE_SECONDS, e.id) for e in claimed],
                    )
                self._db().execute("COMMIT")
            except BaseException:
                self._db().execute("ROLLBACK")
                raise
        return claimed

    def delete(self, ids: Iterable[int]) -> None:
        """Entries the server accepted."""
        with self._lock:
            self._db().executemany("DELETE FROM entries WHERE id = ?", [(i,) for i in ids])

    def release(self, ids: Iterable[int], error: str) -> None:
        """Entries that could not be delivered this time: back in line, with the reason."""
        with self._lock:
            self._db().executemany(
                "UPDATE entries SET attempts = attempts + 1, last_error = ?, lease_owner = NULL, lease_until = 0 "
                "WHERE id = ?",
                [(error, i) for i in ids],
            )

    def replace(self, entry_id: int, parts: Sequence[tuple[str, str, bytes]]) -> list[int]:
        """Swap one leased entry for the parts it was split into; the parts stay leased to this process."""
        now = time.time()
        ids = []
        with self._lock:
            self._db().execute("BEGIN IMMEDIATE")
            try:
                self._db().execute("DELETE FROM entries WHERE id = ?", (entry_id,))
                for kind, cid, raw in parts:
                    body = _pack(raw)
                    cursor = self._db().execute(
                        "INSERT INTO entries (kind, conversation_id, body, size, raw_size, created_at, lease_owner, "
                        "lease_until) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                        (kind, cid, body, len(body), len(raw), now, self._owner, now + LEASE_SECONDS),
                    )
                    ids.append(int(cursor.lastrowid or 0))
                self._db().execute("COMMIT")
            except BaseException:
                self._db().execute("ROLLBACK")
                raise
        return ids

    def pending_conversations(self, conversation_ids: Iterable[str]) -> set[str]:
        """Which of these conversations still have entries waiting (so new data must queue behind them)."""
        ids = list(set(conversation_ids))
        if not ids:
            return set()
        found: set[str] = set()
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._db().execute(
                    f"SELECT DISTINCT conversation_id FROM entries WHERE conversation_id IN ({marks})", chunk
                )
                found.update(r[0] for r in rows)
        return found

    def pending_ingest(self, conversation_id: str) -> bool:
        """Whether messages of this conversation still wait to be delivered."""
        with self._lock:
            row = self._db().execute(
                "SELECT 1 FROM entries WHERE conversation_id = ? AND kind = ? LIMIT 1", (conversation_id, KIND_INGEST)
            ).fetchone()
        return row is not None

    def has_entries(self) -> bool:
        with self._lock:
            return self._db().execute("SELECT 1 FROM entries LIMIT 1").fetchone() is not None

    # -- dead letters --------------------------------------------------------------------------------------

    def bury(
        self, kind: str, conversation_id: str, body: bytes, status: int | None, reason: str, entry_id: int | None = None
    ) -> None:
        """Keep a block the server refused for good, with its reason; remove it from the live entries."""
        now = time.time()
        body = _pack(body)
        with self._lock:
            self._db().execute("BEGIN IMMEDIATE")
            if entry_id is not None:
                self._db().execute("DELETE FROM entries WHERE id = ?", (entry_id,))
            self._db().execute(
                "INSERT INTO dead (kind, conversation_id, body, size, created_at, failed_at, status, reason) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (kind, conversation_id, body, len(body), now, now, status, reason),
            )
            self._db().execute("COMMIT")

    def dead_letters(self, limit: int = 100) -> list[DeadEntry]:
        with self._lock:
            rows = self._db().execute(
                "SELECT id, kind, conversation_id, size, failed_at, status, reason FROM dead ORDER BY id LIMIT ?",
                (limit,),
            ).fetchall()
        return [DeadEntry(*row) for row in rows]

    def dead_body(self, dead_id: int) -> bytes | None:
        with self._lock:
            row = self._db().execute("SELECT body FROM dead WHERE id = ?", (dead_id,)).fetchone()
        return _unpack(row[0]) if row else None

    def requeue_dead(self, ids: Iterable[int] | None = None) -> int:
        """Move dead letters back into the live entries (after fixing what the server objected to)."""
        with self._lock:
            self._db().execute("BEGIN IMMEDIATE")
            where, params = self._id_filter(ids)
            moved = self._db().execute(
                "INSERT INTO entries (kind, conversation_id, body, size, raw_size, created_at, last_error) "
                "SELECT kind, conversation_id, body, size, size * 10, created_at, reason "  # ~10x: packed size
                f"FROM dead {where} ORDER BY id",
                params,
            ).rowcount
            self._db().execute(f"DELETE FROM dead {where}", params)
            self._db().execute("COMMIT")
        return moved

    def discard(self, *, dead: bool, ids: Iterable[int] | None = None) -> int:
        """Delete entries (or dead letters) on request; returns how many."""
        table = "dead" if dead else "entries"
        where, params = self._id_filter(ids)
        with self._lock:
            return self._db().execute(f"DELETE FROM {table} {where}", params).rowcount

    @staticmethod
    def _id_filter(ids: Iterable[int] | None) -> tuple[str, tuple[int, ...]]:
        if ids is None:
            return "", ()
        chosen = tuple(int(i) for i in ids)
        return f"WHERE id IN ({','.join('?' * len(chosen)) or 'NULL'})", chosen

    # -- inspection ----------------------------------------------------------------------------------------

    def stats(self) -> SpoolStats:
        with self._lock:
            entries, size, oldest, conversations = self._db().execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0), MIN(created_at), COUNT(DISTINCT conversation_id) FROM entries"
            ).fetchone()
            last_error = self._db().execute(
                "SELECT last_error FROM entries WHERE last_error IS NOT NULL ORDER BY id DESC LIMIT 1"
            ).fetchone()
            dead, dead_bytes = self._db().execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM dead").fetchone()
            counters = dict(self._db().execute("SELECT name, value FROM counters").fetchall())
        return SpoolStats(
            entries=entries,
            bytes=size,
            oldest=oldest,
            last_error=last_error[0] if last_error else None,
            conversations=conversations,
            dead=dead,
            dead_bytes=dead_bytes,
            dropped_entries=counters.get("dropped_entries", 0),
            dropped_bytes=counters.get("dropped_bytes", 0),
        )
