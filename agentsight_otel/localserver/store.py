"""SQLite persistence for the local server: conversations, archived spans and uploaded attachments.

One connection is shared by every request thread (`check_same_thread=False`) and serialised by a lock;
each write runs in an explicit transaction so a batch is stored entirely or not at all.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..jsondoc import dumps, dumps_fast, dumps_str, loads
from .timeutil import all_canonical, format_timestamp, parse_timestamp, utc_now

_SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id TEXT NOT NULL UNIQUE,
    customer_id TEXT,
    customer_ip_address TEXT,
    device TEXT,
    source TEXT,
    language TEXT,
    name TEXT,
    environment TEXT,
    metadata TEXT,
    is_used INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_activity TEXT
);
CREATE TABLE IF NOT EXISTS spans (
    conversation_pk INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    span_id TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    parent_span_id TEXT,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    started_at TEXT,
    ended_at TEXT,
    duration_ms REAL,
    status TEXT NOT NULL,
    attributes TEXT NOT NULL,
    events TEXT NOT NULL,
    otel TEXT,
    received_at TEXT NOT NULL,
    PRIMARY KEY (conversation_pk, span_id)
);
CREATE TABLE IF NOT EXISTS attachments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_pk INTEGER NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    message TEXT,
    filename TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    data BLOB NOT NULL,
    sender TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (conversation_pk, sha256, filename)
);
"""

# Block/body keys that map onto conversation columns (the whitelist used to build SQL).
CONVERSATION_FIELDS = (
    "customer_id",
    "customer_ip_address",
    "device",
    "source",
    "language",
    "name",
    "environment",
    "metadata",
)
FILTERABLE_FIELDS = ("conversation_id", *CONVERSATION_FIELDS[:-1])

_SPAN_COLUMNS = (
    "span_id, trace_id, parent_span_id, kind, name, started_at, ended_at, duration_ms, status, "
    "attributes, events, otel, received_at"
)
_INSERT_SPAN = (
    f"INSERT OR IGNORE INTO spans (conversation_pk, {_SPAN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


class _Refused(Exception):
    """A block failed the check of Store.ingest_checked, or its fast encoder: roll back."""


def _encode_checked(value: Any) -> bytes:
    """The encoder of Store.ingest_checked: orjson alone, without the standard-library fallback of `dumps`.

    orjson refuses a document nested deeper than validate.MAX_DEPTH (the check before storing leaves nesting to
    it, see validate.py) or holding an integer beyond 64 bits; the batch then takes the detailed path, which
    refuses the first with a 400 and stores the second with `dumps`.
    """
    try:
        return dumps_fast(value)
    except TypeError:
        raise _Refused from None


@dataclass
class IngestResult:
    """Counts reported back by `POST /api/ingest/`."""

    conversations: int = 0
    spans_received: int = 0
    spans_stored: int = 0

    def as_json(self) -> dict[str, int]:
        """The response body (what dataclasses.asdict gives, without its deep copy)."""
        return {
            "conversations": self.conversations,
            "spans_received": self.spans_received,
            "spans_stored": self.spans_stored,
        }


@dataclass
class NewFile:
    """One decoded upload waiting to be stored."""

    filename: str
    mime_type: str
    data: bytes


def _is_memory(db_path: str) -> bool:
    """Tell whether a path names an in-memory database (where WAL does not apply)."""
    return db_path == ":memory:" or db_path.startswith("file::memory:") or "mode=memory" in db_path


def _encode_json(value: Any) -> str | None:
    """Serialise a JSON column value (None stays SQL NULL); orjson when installed, as the client uses."""
    return None if value is None else dumps_str(value)


def _decode_json(text: str | None, default: Any = None) -> Any:
    """Deserialise a JSON column value."""
    return default if text is None else loads(text)


def _span_rows(
    pk: int, spans: list[dict[str, Any]], now: str, encode: Callable[[Any], bytes] = dumps
) -> list[tuple[Any, ...]]:
    """The spans-table rows of validated span dicts; the JSON columns are re-serialised compactly with `encode`.

    Written out inline (no _encode_json/dumps_str helpers): this runs for every span of every batch.
    """
    return [
        (
            pk,
            span["span_id"],
            span["trace_id"],
            span.get("parent_span_id"),
            span["kind"],
            span["name"],
            span.get("started_at"),
            span.get("ended_at"),
            span.get("duration_ms"),
            span.get("status") or "unset",
            encode(span.get("attributes") or {}).decode(),
            encode(span.get("events") or []).decode(),
            None if (otel := span.get("otel")) is None else encode(otel).decode(),
            now,
        )
        for span in spans
    ]


def _conversation_row(row: sqlite3.Row) -> dict[str, Any]:
    """Turn a conversations row into a plain dict with decoded metadata and a boolean is_used."""
    data = dict(row)
    data["metadata"] = _decode_json(data["metadata"])
    data["is_used"] = bool(data["is_used"])
    return data


def _span_row(row: sqlite3.Row) -> dict[str, Any]:
    """Turn a spans row into the span dict shape with decoded JSON columns."""
    data = dict(row)
    data["attributes"] = _decode_json(data["attributes"], {})
    data["events"] = _decode_json(data["events"], [])
    data["otel"] = _decode_json(data["otel"])
    return data


def _block_timestamps(spans: Iterable[dict[str, Any]]) -> list[Any]:
    """Every span start/end and event time of a block, as sent (a null start or end is left out)."""
    stamps = []
    for span in spans:
        started, ended, events = span.get("started_at"), span.get("ended_at"), span.get("events")
        if started is not None:
            stamps.append(started)
        if ended is not None:
            stamps.append(ended)
        if events:
            stamps.extend([event.get("timestamp") for event in events])
    return stamps


def block_activity(spans: Iterable[dict[str, Any]]) -> str | None:
    """Return the latest span/event time of a block in canonical form, used to order conversations.

    Usually every stamp is already canonical (the SDKs' own format): then the latest is simply the greatest
    string. Otherwise each stamp is parsed and the ones that are not date-times are ignored.
    """
    stamps = _block_timestamps(spans)
    if not stamps:
        return None
    if all_canonical(stamps):
        return max(stamps)
    latest = None
    for stamp in stamps:
        parsed = parse_timestamp(stamp)
        if parsed is not None and (latest is None or parsed > latest):
            latest = parsed
    return None if latest is None else format_timestamp(latest)


class Store:
    """Thread-safe SQLite store; every public method takes the lock, writes run in one transaction."""

    def __init__(self, db_path: str = ":memory:") -> None:
        self._lock = threading.RLock()
        uri = db_path.startswith("file:")
        self._conn = sqlite3.connect(db_path, check_same_thread=False, isolation_level=None, uri=uri)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA foreign_keys = ON")
        if not _is_memory(db_path):
            self._conn.execute("PRAGMA journal_mode = WAL")
            # a local test server: an application crash loses nothing, only a power cut may lose the last batches,
            # and in exchange a commit does not wait for the disk (FULL syncs on every ingest request)
            self._conn.execute("PRAGMA synchronous = NORMAL")
        self._conn.executescript(_SCHEMA)
        self._closed = False

    def close(self) -> None:
        """Close the connection; safe to call twice."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the lock and run the body in one IMMEDIATE transaction, rolling back on any error."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        """Run a read query under the lock."""
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    # -- conversations -------------------------------------------------------------------------------

    @staticmethod
    def _insert_conversation(
        conn: sqlite3.Connection,
        conversation_id: str,
        fields: dict[str, Any],
        is_used: bool,
        now: str,
        activity: str | None = None,
    ) -> int:
        """Insert a new conversation row (last_activity = `activity`) and return its pk."""
        columns = [key for key in CONVERSATION_FIELDS if key in fields]
        values = [_encode_json(fields[c]) if c == "metadata" else fields[c] for c in columns]
        names = ", ".join(["conversation_id", *columns, "is_used", "created_at", "updated_at", "last_activity"])
        marks = ", ".join("?" * (len(columns) + 5))
        cursor = conn.execute(
            f"INSERT INTO conversations ({names}) VALUES ({marks})",
            (conversation_id, *values, int(is_used), now, now, activity),
        )
        return int(cursor.lastrowid or 0)

    @staticmethod
    def _find_pk(conn: sqlite3.Connection, conversation_id: str) -> int | None:
        """Return the pk of a conversation id, or None."""
        sql = "SELECT id FROM conversations WHERE conversation_id = ?"
        row = conn.execute(sql, (conversation_id,)).fetchone()
        return None if row is None else int(row["id"])

    def _upsert_conversation(
        self,
        conn: sqlite3.Connection,
        pk: int | None,
        conversation_id: str,
        fields: dict[str, Any],
        mark_used: bool,
        now: str,
        activity: str | None,
    ) -> int:
        """Create the row or overwrite the fields present; only mark_used can flip is_used (never back).

        last_activity moves forward to `activity` in the same statement (canonical timestamps compare as text).
        """
        if pk is None:
            return self._insert_conversation(conn, conversation_id, fields, mark_used, now, activity)
        columns = [key for key in CONVERSATION_FIELDS if key in fields]
        assignments = [f"{column} = ?" for column in columns] + ["updated_at = ?"]
        values: list[Any] = [_encode_json(fields[c]) if c == "metadata" else fields[c] for c in columns]
        values.append(now)
        if mark_used:
            assignments.append("is_used = 1")
        if activity is not None:
            assignments.append(
                "last_activity = CASE WHEN last_activity IS NULL OR last_activity < ? THEN ? ELSE last_activity END"
            )
            values += [activity, activity]
        conn.execute(f"UPDATE conversations SET {', '.join(assignments)} WHERE id = ?", (*values, pk))
        return pk

    @staticmethod
    def _bump_activity(conn: sqlite3.Connection, pk: int, activity: str | None) -> None:
        """Move last_activity forward (canonical timestamps compare correctly as text)."""
        if activity is not None:
            conn.execute(
                "UPDATE conversations SET last_activity = ? "
                "WHERE id = ? AND (last_activity IS NULL OR last_activity < ?)",
                (activity, pk, activity),
            )

    def get_or_create_conversation(
        self, conversation_id: str, fields: dict[str, Any], is_used: bool
    ) -> tuple[dict[str, Any], bool]:
        """Legacy get-or-create: an existing row is returned untouched; return (row, created)."""
        with self._transaction() as conn:
            pk = self._find_pk(conn, conversation_id)
            created = pk is None
            if pk is None:
                pk = self._insert_conversation(conn, conversation_id, fields, is_used, utc_now())
            row = conn.execute("SELECT * FROM conversations WHERE id = ?", (pk,)).fetchone()
        return _conversation_row(row), created

    def conversation_by_pk(self, pk: int) -> dict[str, Any] | None:
        """Return one conversation row by primary key."""
        rows = self._query("SELECT * FROM conversations WHERE id = ?", (pk,))
        return _conversation_row(rows[0]) if rows else None

    def conversation_by_id(self, conversation_id: str) -> dict[str, Any] | None:
        """Return one conversation row by its client-side id."""
        rows = self._query("SELECT * FROM conversations WHERE conversation_id = ?", (conversation_id,))
        return _conversation_row(rows[0]) if rows else None

    def list_conversations(
        self, filters: dict[str, str], limit: int | None = None, offset: int = 0
    ) -> tuple[int, list[dict[str, Any]]]:
        """Return (total matching, one page of rows), newest activity first."""
        usable = {key: value for key, value in filters.items() if key in FILTERABLE_FIELDS}
        where = " AND ".join(f"{key} = ?" for key in usable) or "1 = 1"
        params = list(usable.values())
        with self._lock:
            count_sql = f"SELECT COUNT(*) FROM conversations WHERE {where}"
            total = self._conn.execute(count_sql, params).fetchone()[0]
            rows = self._conn.execute(
                f"SELECT * FROM conversations WHERE {where} "
                "ORDER BY COALESCE(last_activity, updated_at) DESC, id DESC LIMIT ? OFFSET ?",
                (*params, -1 if limit is None else limit, offset),
            ).fetchall()
        return int(total), [_conversation_row(row) for row in rows]

    # -- ingest and spans ----------------------------------------------------------------------------

    @staticmethod
    def _insert_spans(
        conn: sqlite3.Connection, pk: int, spans: list[dict[str, Any]], now: str, encode: Callable[[Any], bytes]
    ) -> int:
        """Insert spans with one prepared statement, ignoring ones already stored for this conversation; return
        how many were new (executemany sums the rows each insert changed)."""
        if not spans:
            return 0
        return conn.executemany(_INSERT_SPAN, _span_rows(pk, spans, now, encode)).rowcount

    def ingest(self, blocks: Iterable[dict[str, Any]], default_environment: str) -> IngestResult:
        """Store validated blocks in one transaction: upsert each conversation, then add its new spans.

        A block with any span whose kind is not `conversation` marks the row used; a null environment is
        treated as absent, and a new row without one gets `default_environment`.
        """
        result = self._ingest(blocks, default_environment, None)
        assert result is not None  # only a check can refuse a block
        return result

    def ingest_checked(
        self, blocks: Iterable[Any], default_environment: str, accept: Callable[[Any], bool]
    ) -> IngestResult | None:
        """Like ingest, but each block must pass `accept` right before it is stored, and its spans' documents must
        be ones orjson writes (see _encode_checked); the first one refused rolls everything back and makes this
        return None (nothing stored). `blocks` may be a lazy iterator."""
        return self._ingest(blocks, default_environment, accept)

    def _ingest(
        self, blocks: Iterable[Any], default_environment: str, accept: Callable[[Any], bool] | None
    ) -> IngestResult | None:
        """Store the blocks in one transaction, block by block; None (and nothing stored) if `accept` refuses one."""
        result = IngestResult()
        now = utc_now()
        encode = dumps if accept is None else _encode_checked
        try:
            with self._transaction() as conn:
                for block in blocks:
                    if accept is not None and not accept(block):
                        raise _Refused
                    result.conversations += 1
                    result.spans_received += len(block.get("spans") or ())
                    result.spans_stored += self._store_block(conn, block, default_environment, now, encode)
                    del block  # let a consumed iterator (views) free the block before the next one is built
        except _Refused:
            return None
        return result

    def _store_block(
        self,
        conn: sqlite3.Connection,
        block: dict[str, Any],
        default_environment: str,
        now: str,
        encode: Callable[[Any], bytes],
    ) -> int:
        """Upsert one block's conversation and insert its new spans; return how many spans were new."""
        spans = block.get("spans") or []
        conversation_id = block["conversation_id"]
        fields = {key: block[key] for key in CONVERSATION_FIELDS if key in block}
        pk = self._find_pk(conn, conversation_id)
        if fields.get("environment") is None:
            fields.pop("environment", None)
            if pk is None:
                fields["environment"] = default_environment
        mark_used = any(span.get("kind") != "conversation" for span in spans)
        pk = self._upsert_conversation(conn, pk, conversation_id, fields, mark_used, now, block_activity(spans))
        return self._insert_spans(conn, pk, spans, now, encode)

    def spans_of(self, pk: int) -> list[dict[str, Any]]:
        """Return every stored span of a conversation in arrival order."""
        rows = self._query(f"SELECT {_SPAN_COLUMNS} FROM spans WHERE conversation_pk = ? ORDER BY rowid", (pk,))
        return [_span_row(row) for row in rows]

    def span_exists(self, pk: int, span_id: str) -> bool:
        """Tell whether a span id belongs to a conversation."""
        sql = "SELECT 1 FROM spans WHERE conversation_pk = ? AND span_id = ?"
        return bool(self._query(sql, (pk, span_id)))

    def span_count(self, pk: int | None = None) -> int:
        """Count stored spans, overall or for one conversation."""
        if pk is None:
            return int(self._query("SELECT COUNT(*) FROM spans")[0][0])
        return int(self._query("SELECT COUNT(*) FROM spans WHERE conversation_pk = ?", (pk,))[0][0])

    # -- attachments ---------------------------------------------------------------------------------

    def add_attachments(
        self, pk: int, files: list[NewFile], *, sender: str, message: str | None
    ) -> list[dict[str, Any]]:
        """Store uploads in one transaction; a file already stored (same sha256 and name) is reused."""
        now = utc_now()
        stored = []
        with self._transaction() as conn:
            for item in files:
                digest = hashlib.sha256(item.data).hexdigest()
                conn.execute(
                    "INSERT OR IGNORE INTO attachments (conversation_pk, message, filename, mime_type, size, "
                    "sha256, data, sender, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (pk, message, item.filename, item.mime_type, len(item.data), digest, item.data, sender, now),
                )
                row = conn.execute(
                    "SELECT id, filename, mime_type, size, sha256 FROM attachments "
                    "WHERE conversation_pk = ? AND sha256 = ? AND filename = ?",
                    (pk, digest, item.filename),
                ).fetchone()
                stored.append(dict(row))
            self._bump_activity(conn, pk, now)
        return stored

    def attachments_of(self, pk: int, *, with_data: bool = False) -> list[dict[str, Any]]:
        """Return a conversation's uploads in upload order (bytes only when asked for)."""
        columns = "id, message, filename, mime_type, size, sha256, sender, created_at"
        if with_data:
            columns += ", data"
        rows = self._query(f"SELECT {columns} FROM attachments WHERE conversation_pk = ? ORDER BY id", (pk,))
        return [dict(row) for row in rows]

    def attachment(self, attachment_id: int) -> dict[str, Any] | None:
        """Return one upload with its bytes, or None."""
        rows = self._query("SELECT * FROM attachments WHERE id = ?", (attachment_id,))
        return dict(rows[0]) if rows else None

    # -- change feed (the viewer and `agentsight-otel tail`) ---------------------------------------------

    def span_seq(self) -> int:
        """The arrival sequence number (rowid) of the newest stored span; 0 when there is none.

        Spans are never updated or deleted (so rowids only grow) and writes are serialised, so a reader that has
        seen sequence N has seen every span up to N: `spans_after(N)` returns exactly what arrived since.
        """
        return int(self._query("SELECT COALESCE(MAX(rowid), 0) FROM spans")[0][0])

    def spans_after(self, seq: int, pk: int | None = None, limit: int = 500) -> list[dict[str, Any]]:
        """Spans that arrived after sequence `seq`, oldest first, each with its `seq` and `conversation_pk`."""
        where = "rowid > ?" + ("" if pk is None else " AND conversation_pk = ?")
        params: tuple[Any, ...] = (seq,) if pk is None else (seq, pk)
        rows = self._query(
            f"SELECT rowid AS seq, conversation_pk, {_SPAN_COLUMNS} FROM spans WHERE {where} ORDER BY rowid LIMIT ?",
            (*params, limit),
        )
        return [_span_row(row) for row in rows]

    def last_spans(self, count: int, pk: int | None = None) -> list[dict[str, Any]]:
        """The `count` newest spans that can hold transcript items (not `conversation` spans), oldest first."""
        where = "kind != 'conversation'" + ("" if pk is None else " AND conversation_pk = ?")
        params: tuple[Any, ...] = () if pk is None else (pk,)
        rows = self._query(
            f"SELECT rowid AS seq, conversation_pk, {_SPAN_COLUMNS} FROM spans WHERE {where} "
            "ORDER BY rowid DESC LIMIT ?",
            (*params, count),
        )
        return [_span_row(row) for row in reversed(rows)]

    def content_counts(self) -> dict[int, tuple[int, int]]:
        """(stored spans, uploads) per conversation pk, in two grouped queries; used to tell what changed."""
        with self._lock:
            spans = self._conn.execute("SELECT conversation_pk, COUNT(*) FROM spans GROUP BY conversation_pk")
            span_counts = {int(pk): int(n) for pk, n in spans.fetchall()}
            uploads = self._conn.execute("SELECT conversation_pk, COUNT(*) FROM attachments GROUP BY conversation_pk")
            upload_counts = {int(pk): int(n) for pk, n in uploads.fetchall()}
        return {pk: (span_counts.get(pk, 0), upload_counts.get(pk, 0)) for pk in span_counts.keys() | upload_counts}
