"""Each rule of the delivery policy, pinned against the local server with injected faults."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentsight_otel import AgentSightSpanExporter, ConversationTracker
from agentsight_otel import exporter as exporter_module
from agentsight_otel.delivery import Unit, split_block
from agentsight_otel.jsondoc import dumps, loads
from agentsight_otel.localserver import Faults, LocalServer
from agentsight_otel.outcomes import OutcomeLedger

from .helpers import tracker_into_memory, wait_until


def _spans(*conversations, messages=3, size=20):
    """Finished tracker spans for the given conversations (recorded in memory, not sent)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    t = ConversationTracker()
    t.configure(tracer_provider=provider)
    for cid in conversations:
        t.get_or_create_conversation(cid)
        for i in range(messages):
            t.track_human_message(f"{cid} message {i} " + "x" * size)
        t.send_tracked_data()
    return memory.get_finished_spans()


def _contents(server, cid):
    transcript = server.transcript(cid)
    return [i["content"] for i in transcript["items"]] if transcript else []


@pytest.fixture
def faulty():
    with LocalServer() as srv:
        yield srv


def _exporter(server, **kwargs):
    kwargs.setdefault("timeout", 5)
    return AgentSightSpanExporter(api_key=server.api_key, endpoint=server.url, **kwargs)


def test_a_block_that_cannot_be_encoded_leaves_the_others_alone(faulty, monkeypatch, caplog):
    # A bug in encoding one conversation (none is known: this stands in for one) must not fail a whole export.
    real = exporter_module.encode_block

    def encode_block(batch, rules):
        if batch.conversation.conversation_id == "poison":
            raise ValueError("an encoding bug")
        return real(batch, rules)

    monkeypatch.setattr(exporter_module, "encode_block", encode_block)
    ledger = OutcomeLedger()
    exporter = _exporter(faulty, outcome_ledger=ledger)
    spans = _spans("poison", "healthy")
    for span in spans:
        ledger.expect(span.context.trace_id, span.context.span_id)
    assert exporter.export(spans) is SpanExportResult.FAILURE  # not everything was delivered
    assert _contents(faulty, "healthy") and not _contents(faulty, "poison")
    poison = next(s for s in spans if s.attributes["agentsight.conversation.id"] == "poison")
    outcome = ledger.pop(poison.context.trace_id, poison.context.span_id)
    assert outcome is not None and outcome.refused and "could not be encoded" in outcome.error
    assert "conversation poison could not be encoded" in caplog.text
    exporter.shutdown()


@pytest.mark.parametrize("status", [429, 502, 503, 504])
def test_transient_statuses_are_retried_within_the_export(faulty, status):
    faulty.set_faults(Faults(status_rates={status: 1.0}))  # no Retry-After: our backoff (~0.5 s) applies
    exporter = _exporter(faulty)
    threading.Timer(0.3, faulty.set_faults, args=(None,)).start()
    assert exporter.export(_spans("t-1")) is SpanExportResult.SUCCESS
    assert exporter.stats()["retries"] >= 1 and faulty.fault_stats()[f"status_{status}"] >= 1
    assert len(_contents(faulty, "t-1")) == 3
    exporter.shutdown()


def test_retry_after_seconds_and_dates_are_honoured(faulty):
    for value in ("1", "date:2"):  # an HTTP date has whole seconds: 2 s ahead is at least 1 s of waiting
        faulty.set_faults(Faults(status_rates={503: 1.0}, retry_after=value))
        exporter = _exporter(faulty)
        log_before = len(faulty.request_log())
        threading.Timer(0.2, faulty.set_faults, args=(None,)).start()
        started = time.monotonic()
        assert exporter.export(_spans(f"ra-{value}")) is SpanExportResult.SUCCESS
        assert time.monotonic() - started >= 0.9  # it waited for the server's Retry-After, not its own 0.5 s
        ingests = [r for r in faulty.request_log()[log_before:] if r["path"] == "/api/ingest/"]
        assert len(ingests) == 2
        exporter.shutdown()


@pytest.mark.parametrize("status", [400, 404, 409, 422])
def test_other_client_errors_are_never_retried_and_are_dead_lettered(tmp_path, status):
    with LocalServer(faults=Faults(status_rates={status: 1.0})) as srv:
        exporter = _exporter(srv)
        assert exporter.export(_spans("final-1")) is SpanExportResult.FAILURE
        assert len([r for r in srv.request_log() if r["path"] == "/api/ingest/"]) == 1
        dead = exporter.spool.dead_letters()
        assert [(d.conversation_id, d.status) for d in dead] == [("final-1", status)]
        assert "injected" in dead[0].reason
        assert exporter.spool.stats().entries == 0
        exporter.shutdown()


def test_a_400_naming_blocks_delivers_the_rest_and_keeps_the_rejected(caplog):
    with LocalServer(environments=("production",)) as srv:
        memory = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(memory))
        t = ConversationTracker()
        t.configure(tracer_provider=provider)
        for cid, env in (("ok-1", "production"), ("bad-1", "development"), ("ok-2", "production")):
            t.get_or_create_conversation(cid, environment=env)
            t.track_human_message(f"hello from {cid}")
            t.send_tracked_data()
        exporter = _exporter(srv)
        assert exporter.export(memory.get_finished_spans()) is SpanExportResult.FAILURE
        assert _contents(srv, "ok-1") == ["hello from ok-1"] and _contents(srv, "ok-2") == ["hello from ok-2"]
        assert srv.transcript("bad-1") is None
        dead = exporter.spool.dead_letters()
        assert [d.conversation_id for d in dead] == ["bad-1"] and "environment" in dead[0].reason
        ingests = [r for r in srv.request_log() if r["path"] == "/api/ingest/"]
        assert len(ingests) == 2  # the refused batch, then the others resent at once
        exporter.shutdown()


def test_413_splits_along_conversations_and_inside_one_conversation():
    # No gzip here: compressed, these bodies would fit and nothing would need splitting.
    with LocalServer(gzip_ingest=False, faults=Faults(max_ingest_bytes=6_000)) as faulty:
        _check_413_splits(faulty)


def _check_413_splits(faulty):
    exporter = _exporter(faulty)
    spans = _spans("big-1", "big-2", "big-3", messages=20, size=400)  # each conversation alone is too big
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    for cid in ("big-1", "big-2", "big-3"):
        assert _contents(faulty, cid) == [f"{cid} message {i} " + "x" * 400 for i in range(20)]
    assert faulty.fault_stats()["413"] >= 2 and exporter.stats()["splits"] >= 2
    assert all(r["body_bytes"] <= 6_000 for r in faulty.request_log() if r["status"] == 200)
    exporter.shutdown()


def test_a_request_bigger_than_the_configured_maximum_is_never_sent(faulty):
    exporter = _exporter(faulty, max_request_bytes=5_000)
    assert exporter.export(_spans("cap-1", "cap-2", messages=30, size=100)) is SpanExportResult.SUCCESS
    ingests = [r for r in faulty.request_log() if r["path"] == "/api/ingest/"]
    assert len(ingests) > 2 and all(r["body_bytes"] <= 5_000 for r in ingests)
    assert len(_contents(faulty, "cap-1")) == 30 and len(_contents(faulty, "cap-2")) == 30
    exporter.shutdown()


def test_a_turn_just_over_the_request_size_is_cut_not_refused(faulty):
    # The request adds the envelope around a block: a turn that fits the limit by itself but not in a request
    # must be cut in two, not dead-lettered as if no cut could help.
    from agentsight_otel.batch import group_by_conversation
    from agentsight_otel.delivery import _PREFIX
    from agentsight_otel.readers import read_spans
    from agentsight_otel.wire import BlockRules, encode

    t, memory = tracker_into_memory()
    t.track_human_message("edge-1 question " + "x" * 500, conversation_id="edge-1")
    for i in range(9):  # one turn, alone in its block: the answers gather under the question's turn span
        t.track_agent_message(f"edge-1 answer {i} " + "x" * 500, conversation_id="edge-1")
    t.send_tracked_data(conversation_id="edge-1")
    spans = memory.get_finished_spans()
    body = encode(group_by_conversation(read_spans(spans)), BlockRules())[0].json
    exporter = _exporter(faulty, max_request_bytes=len(body) + len(_PREFIX) + 2 - 30)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert len(_contents(faulty, "edge-1")) == 10 and exporter.spool.stats().dead == 0
    exporter.shutdown()


def test_a_single_span_too_large_to_send_is_refused_for_good_not_retried(faulty):
    # One message bigger than any request may be: dead-lettered, and reported as refused (the bridge answers a
    # partial success instead of 503s the collector would retry forever).
    ledger = OutcomeLedger()
    exporter = _exporter(faulty, max_request_bytes=5_000, outcome_ledger=ledger)
    spans = _spans("huge-1", messages=1, size=8_000)
    ledger.expect(spans[0].context.trace_id, spans[0].context.span_id)
    assert exporter.export(spans) is SpanExportResult.FAILURE
    outcome = ledger.pop(spans[0].context.trace_id, spans[0].context.span_id)
    assert outcome is not None and outcome.refused and not outcome.spooled and "413" in (outcome.error or "")
    assert exporter.spool.stats().dead == 1
    exporter.shutdown()


def test_split_block_keeps_every_span_and_event_once():
    block = {
        "conversation_id": "c",
        "spans": [
            {"span_id": f"{i:016x}", "attributes": {}, "events": [{"name": "m", "n": j} for j in range(4)]}
            for i in range(3)
        ],
    }
    unit = Unit("c", dumps(block))
    parts = split_block(unit, len(unit.body))
    assert parts is not None and len(parts) >= 2
    events = [e["n"] for p in parts for s in loads(p.body)["spans"] for e in s["events"]]
    assert sorted(events) == sorted([j for _ in range(3) for j in range(4)])
    single = {"conversation_id": "c", "spans": [{"span_id": "a" * 16, "events": [{"n": 1}]}]}
    assert split_block(Unit("c", dumps(single)), 10) is None


def test_a_turn_cut_again_and_again_gives_every_part_its_own_stable_id():
    events = [{"name": "m", "n": j, "text": "x" * 50} for j in range(16)]
    turn = {"span_id": "b" * 16, "attributes": {}, "events": events}
    unit = Unit("c", dumps({"conversation_id": "c", "spans": [turn]}))
    pending, done = [unit], []
    for _ in range(1000):  # cut until every part fits, as delivery does when a server keeps answering 413
        if not pending:
            break
        piece = pending.pop()
        parts = split_block(piece, 400) if len(piece.body) > 400 else None
        if parts is None:
            done.append(piece)
        else:
            pending.extend(parts)
    assert not pending and all(len(part.body) <= 400 for part in done)
    spans = [span for part in done for span in loads(part.body)["spans"]]
    assert sorted(e["n"] for span in spans for e in span["events"]) == list(range(16))
    assert len({span["span_id"] for span in spans}) == len(spans)  # the server keeps one span per id
    again = split_block(unit, 400)
    assert again is not None and [p.body for p in again] == [p.body for p in split_block(unit, 400)]


def test_a_rejected_key_is_reported_once_and_the_data_waits_in_the_spool(faulty, caplog):
    stranger = "ags_0123456789abcdef0123456789abcdef_abcdef"
    caplog.set_level(logging.DEBUG)
    exporter = AgentSightSpanExporter(api_key=stranger, endpoint=faulty.url, timeout=5)
    for n in range(3):
        assert exporter.export(_spans(f"key-{n}")) is SpanExportResult.FAILURE
    assert exporter.spool.stats().entries == 3 and exporter.spool.stats().dead == 0
    key_errors = [r for r in caplog.records if "rejected the API key" in r.getMessage()]
    assert len(key_errors) == 1 and "AGENTSIGHT_API_KEY" in key_errors[0].getMessage()
    assert stranger not in caplog.text
    exporter.shutdown()
    # With the right key, the waiting data is delivered: nothing was dropped.
    fixed = _exporter(faulty)
    wait_until(lambda: all(len(_contents(faulty, f"key-{n}")) == 3 for n in range(3)))
    wait_until(lambda: fixed.spool.stats().entries == 0, timeout=10)  # let go once the answers are in
    fixed.shutdown()


def test_flush_delivers_what_a_previous_run_left_in_the_spool_before_anything_is_tracked(faulty):
    earlier = _exporter(faulty, timeout=1)
    faulty.outage(60)
    assert earlier.export(_spans("left-over")) is SpanExportResult.FAILURE  # spooled
    earlier.shutdown()
    faulty.outage(0)
    t = ConversationTracker()
    t.configure(api_key=faulty.api_key, endpoint=faulty.url)
    try:
        t.flush(timeout=10)  # a fresh process: nothing tracked yet, only the spool
        assert len(_contents(faulty, "left-over")) == 3
    finally:
        t.shutdown()


def test_an_outage_spools_at_once_and_the_replayer_delivers_afterwards(faulty):
    exporter = _exporter(faulty, timeout=1)
    faulty.outage(1.5)
    assert exporter.export(_spans("out-1")) is SpanExportResult.FAILURE  # tried, failed, spooled
    started = time.monotonic()
    assert exporter.export(_spans("out-2")) is SpanExportResult.FAILURE
    assert time.monotonic() - started < 0.3  # while AgentSight is down, new data goes straight to disk
    assert exporter.spool.stats().entries == 2
    wait_until(lambda: _contents(faulty, "out-1") and _contents(faulty, "out-2"), timeout=30)
    # The server stores before it answers: the spool lets go once the answer is in.
    wait_until(lambda: exporter.spool.stats().entries == 0, timeout=10)
    assert exporter.stats()["replayed"] == 2
    exporter.shutdown()


def test_the_deadline_bounds_an_export_and_an_unknown_outcome_never_duplicates(faulty):
    faulty.set_faults(Faults(latency=2.0))
    exporter = _exporter(faulty, timeout=0.5)
    started = time.monotonic()
    assert exporter.export(_spans("slow-1")) is SpanExportResult.FAILURE
    assert time.monotonic() - started < 1.5
    faulty.set_faults(None)
    wait_until(lambda: exporter.spool.stats().entries == 0, timeout=30)
    # The slow request may have been stored as well as replayed: the server still has each item once.
    assert _contents(faulty, "slow-1") == [f"slow-1 message {i} " + "x" * 20 for i in range(3)]
    exporter.shutdown()


def test_shutdown_interrupts_a_backoff_wait(faulty):
    faulty.set_faults(Faults(status_rates={503: 1.0}, retry_after="10"))
    exporter = _exporter(faulty, timeout=30)
    spans = _spans("stop-1")
    finished = []
    worker = threading.Thread(target=lambda: finished.append(exporter.export(spans)))
    worker.start()
    wait_until(lambda: faulty.fault_stats().get("status_503", 0) >= 1)
    stopped = time.monotonic()
    exporter.shutdown()
    worker.join(5)
    assert time.monotonic() - stopped < 0.5 and finished == [SpanExportResult.FAILURE]
    assert exporter.spool.stats().entries == 1  # not delivered, so kept
    exporter.shutdown()  # idempotent: only logs


def test_force_flush_honours_its_timeout(faulty):
    exporter = _exporter(faulty, timeout=5)
    faulty.outage(30, mode="503")
    exporter.export(_spans("ff-1"))
    faulty.set_faults(Faults(status_rates={503: 1.0}, retry_after="20"))
    started = time.monotonic()
    assert exporter.force_flush(300) is False
    assert time.monotonic() - started < 1.0
    exporter.shutdown()
    assert exporter.force_flush(1000) is False


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_after_fork_the_child_has_its_own_session_and_an_empty_queue(faulty):
    t = ConversationTracker()
    t.configure(api_key=faulty.api_key, endpoint=faulty.url)
    t.track_human_message("parent before fork", conversation_id="parent")
    assert t.send_tracked_data(conversation_id="parent")["summary"]["errors"] == 0
    exporter = t._exporter_for_export()
    parent_session = id(exporter._transport._session)
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code only
        code = 1
        try:
            fresh = id(exporter._transport._session) != parent_session
            empty = not t._processor._queue and not t._processor._in_flight
            t.track_human_message("from the child", conversation_id="child")
            ok = t.send_tracked_data(conversation_id="child")["summary"]["errors"] == 0
            code = 0 if (fresh and empty and ok) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert _contents(faulty, "child") == ["from the child"]
    assert _contents(faulty, "parent") == ["parent before fork"]
    t.shutdown()


def test_without_a_spool_an_outage_does_not_stop_later_exports(faulty):
    exporter = _exporter(faulty, timeout=1, spool_dir="off")
    faulty.outage(2.0)  # longer than the export's deadline: the first export fails
    assert exporter.export(_spans("nospool-1")) is SpanExportResult.FAILURE
    wait_until(lambda: faulty.outage_remaining() == 0)
    assert exporter.export(_spans("nospool-2")) is SpanExportResult.SUCCESS
    assert len(_contents(faulty, "nospool-2")) == 3
    exporter.shutdown()


def test_an_upload_outage_neither_duplicates_nor_blocks_other_data(faulty):
    faulty.set_faults(Faults(status_rates={503: 1.0}, paths=("/api/attachments/",)))
    t = ConversationTracker()
    t.configure(api_key=faulty.api_key, endpoint=faulty.url, timeout=1)
    files = [{"filename": "a.txt", "mime_type": "text/plain", "data": "aGk="}]
    t.track_attachments(files, conversation_id="files-1")
    t.send_tracked_data(conversation_id="files-1")
    exporter = t._exporter_for_export()
    assert exporter.spool.stats().entries == 1  # the upload waits; the messages went through
    t.track_human_message("unrelated", conversation_id="other-1")
    assert t.send_tracked_data(conversation_id="other-1")["summary"]["errors"] == 0
    faulty.set_faults(None)
    wait_until(lambda: exporter.spool.stats().entries == 0, timeout=60, interval=0.1)
    assert [name for name, _ in faulty.attachment_bytes("files-1")] == ["a.txt"]
    t.shutdown()


def test_a_block_too_large_to_send_is_reported_as_not_delivered(faulty):
    t = ConversationTracker()
    t.configure(api_key=faulty.api_key, endpoint=faulty.url)
    t._exporter_for_export()._delivery.max_request_bytes = 8_000
    t.track_action("big", response="x" * 12_000, conversation_id="huge-1")
    report = t.send_tracked_data(conversation_id="huge-1")
    assert report["items"][0]["success"] is False and "413" in report["items"][0]["error"]
    assert [d.status for d in t._exporter_for_export().spool.dead_letters()] == [413]
    t.shutdown()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork is POSIX-only")
def test_a_forked_child_does_not_send_what_the_parent_tracked(faulty):
    t = ConversationTracker()
    t.configure(api_key=faulty.api_key, endpoint=faulty.url)
    t.track_human_message("user asks", conversation_id="forked")
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = 0 if t.get_tracked_data_summary(conversation_id="forked")["summary"]["total"] == 0 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    t.track_agent_message("parent answers", conversation_id="forked")
    assert t.send_tracked_data(conversation_id="forked")["summary"]["errors"] == 0
    assert _contents(faulty, "forked") == ["user asks", "parent answers"]
    t.shutdown()


def test_flush_reports_a_damaged_spool_instead_of_raising(server, caplog):
    import sqlite3

    t = ConversationTracker()
    t.configure(api_key=server.api_key, endpoint=server.url)
    try:
        t.track_human_message("before", conversation_id="damaged-1")
        t.send_tracked_data(conversation_id="damaged-1")
        exporter = t._exporter_for_export()
        with sqlite3.connect(exporter.spool.path) as conn:  # another program breaks the file under us
            conn.execute("DROP TABLE entries")
        with caplog.at_level(logging.ERROR, logger="agentsight_otel"):
            t.flush(timeout=5)  # must not raise
            assert exporter.force_flush(5_000) is False
        assert "spool replay failed" in caplog.text
        t.track_human_message("after", conversation_id="damaged-2")
        report = t.send_tracked_data(conversation_id="damaged-2")
        assert report["items"][0]["success"], report  # live delivery does not need the spool
        assert "cannot be read" in caplog.text and server.transcript("damaged-2")
    finally:
        t.shutdown()
