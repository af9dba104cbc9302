"""The spool alone, on real SQLite files: order, leases, dead letters, bounds, survival across processes."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from agentsight_otel.spool import KIND_ATTACHMENTS, KIND_INGEST, Spool, SpoolFull, spool_path


def _spool(tmp_path, **kwargs):
    return Spool(tmp_path / "s.db", **kwargs)


def test_entries_come_back_oldest_first_and_leave_only_when_deleted(tmp_path):
    spool = _spool(tmp_path)
    spool.put_many([(KIND_INGEST, "a", b"1"), (KIND_INGEST, "b", b"2"), (KIND_ATTACHMENTS, "a", b"3")])
    claimed = spool.claim(max_bytes=1_000)
    assert [(e.conversation_id, e.body) for e in claimed] == [("a", b"1"), ("b", b"2"), ("a", b"3")]
    assert spool.claim(max_bytes=1_000) == claimed  # leased to us: the same process may claim again
    spool.delete([claimed[0].id])
    spool.release([e.id for e in claimed[1:]], "HTTP 503")
    stats = spool.stats()
    assert stats.entries == 2 and stats.bytes == 2 and stats.last_error == "HTTP 503" and stats.conversations == 2
    assert [e.attempts for e in spool.claim(max_bytes=1_000)] == [1, 1]


def test_claim_respects_the_byte_budget_but_always_takes_one(tmp_path):
    spool = _spool(tmp_path)
    spool.put_many([(KIND_INGEST, "a", b"x" * 100), (KIND_INGEST, "b", b"y" * 100)])
    assert len(spool.claim(max_bytes=10)) == 1
    assert len(spool.claim(max_bytes=150)) == 1


def test_another_process_lease_holds_back_that_conversation_only(tmp_path):
    first = _spool(tmp_path)
    second = _spool(tmp_path)  # a second owner, like another process sharing the file
    first.put_many([(KIND_INGEST, "a", b"a1"), (KIND_INGEST, "b", b"b1"), (KIND_INGEST, "a", b"a2")])
    taken = first.claim(max_bytes=2)
    assert [e.body for e in taken] == [b"a1"]
    others = second.claim(max_bytes=1_000)
    assert [e.body for e in others] == [b"b1"]  # a2 must wait behind a1, which the first owner holds


def test_pending_conversations(tmp_path):
    spool = _spool(tmp_path)
    spool.put(KIND_INGEST, "waiting", b"x")
    assert spool.pending_conversations(["waiting", "free"]) == {"waiting"}
    assert spool.pending_conversations([]) == set()


def test_dead_letters_keep_the_reason_and_can_be_requeued_or_discarded(tmp_path):
    spool = _spool(tmp_path)
    spool.put(KIND_INGEST, "c", b"body")
    entry = spool.claim(max_bytes=100)[0]
    spool.bury(KIND_INGEST, "c", entry.body, 400, "environment: unknown", entry_id=entry.id)
    assert spool.stats().entries == 0
    dead = spool.dead_letters()
    assert [(d.conversation_id, d.status, d.reason) for d in dead] == [("c", 400, "environment: unknown")]
    assert spool.dead_body(dead[0].id) == b"body"
    assert spool.requeue_dead() == 1
    assert spool.stats().dead == 0 and spool.claim(max_bytes=100)[0].body == b"body"
    spool.bury(KIND_INGEST, "d", b"other", 404, "not found")
    assert spool.discard(dead=True) == 1 and spool.discard(dead=False) == 1
    assert spool.stats().entries == 0 and spool.stats().dead == 0


def test_a_full_spool_drops_the_oldest_loudly_and_counts(tmp_path, caplog):
    spool = _spool(tmp_path, max_bytes=250)
    for i in range(5):
        spool.put(KIND_INGEST, f"c{i}", bytes([65 + i]) * 100)
    stats = spool.stats()
    assert stats.bytes <= 250 and stats.entries == 2
    assert stats.dropped_entries == 3 and stats.dropped_bytes == 300
    assert [e.conversation_id for e in spool.claim(max_bytes=1_000)] == ["c3", "c4"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 3 and "dropped the 1 oldest" in errors[0].getMessage()


def test_a_spool_that_refuses_when_full_keeps_what_it_holds(tmp_path):
    spool = Spool(tmp_path / "refusing.db", max_bytes=250, when_full="refuse")
    for i in range(2):
        spool.put(KIND_INGEST, f"c{i}", bytes([65 + i]) * 100)
    with pytest.raises(SpoolFull):
        spool.put_many([(KIND_INGEST, "c2", b"C" * 100), (KIND_INGEST, "c3", b"D" * 10)])
    stats = spool.stats()
    assert stats.entries == 2 and stats.dropped_entries == 0  # neither the old entries nor part of the new batch
    spool.delete([e.id for e in spool.claim(max_bytes=1_000)])
    spool.put(KIND_INGEST, "c2", b"C" * 100)  # room again once delivered
    assert [e.conversation_id for e in spool.claim(max_bytes=1_000)] == ["c2"]
    with pytest.raises(ValueError):
        Spool(tmp_path / "other.db", when_full="drop_newest")


def test_split_entries_replace_the_original_in_place(tmp_path):
    spool = _spool(tmp_path)
    spool.put(KIND_INGEST, "c", b"whole")
    entry = spool.claim(max_bytes=100)[0]
    ids = spool.replace(entry.id, [(KIND_INGEST, "c", b"part1"), (KIND_INGEST, "c", b"part2")])
    assert len(ids) == 2
    assert [e.body for e in spool.claim(max_bytes=100)] == [b"part1", b"part2"]


def test_committed_entries_survive_a_killed_process(tmp_path):
    path = tmp_path / "s.db"
    code = (
        "import os, sys; from agentsight_otel.spool import Spool; "
        f"s = Spool({str(path)!r}); s.put('ingest', 'c', b'survivor'); os.kill(os.getpid(), 9)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -9
    assert [e.body for e in Spool(path).claim(max_bytes=100)] == [b"survivor"]


def test_one_spool_file_per_endpoint(tmp_path):
    a = spool_path(tmp_path, "https://api.agentsight.io")
    b = spool_path(tmp_path, "http://127.0.0.1:8787")
    assert a != b and a.parent == b.parent == tmp_path and a.name.startswith("spool-")


def test_a_spool_written_before_raw_size_existed_is_upgraded_and_its_entries_replay(tmp_path):
    # The first release's schema: entries without raw_size. Opening it must not break claiming (it did: every
    # replay round failed with "no such column"), and the old entries keep their place in the queue.
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE entries (id INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, "
            "conversation_id TEXT NOT NULL, body BLOB NOT NULL, size INTEGER NOT NULL, created_at REAL NOT NULL, "
            "attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT, lease_owner TEXT, "
            "lease_until REAL NOT NULL DEFAULT 0)"
        )
        conn.execute(
            "INSERT INTO entries (kind, conversation_id, body, size, created_at) VALUES (?, ?, ?, ?, 0)",
            (KIND_INGEST, "old", b'{"old": 1}', 10),
        )
    spool = Spool(path)
    spool.put(KIND_INGEST, "new", b'{"new": 1}')
    claimed = spool.claim(max_bytes=1_000)
    assert [(e.conversation_id, e.body) for e in claimed] == [("old", b'{"old": 1}'), ("new", b'{"new": 1}')]
    assert len(spool.claim(max_bytes=15)) == 1  # the old entry's size counts against the budget too
    Spool(path).stats()  # opening an upgraded spool again changes nothing
