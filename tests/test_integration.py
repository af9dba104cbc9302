"""The tracker and the exporter against the local AgentSight-compatible server, over real HTTP."""

from __future__ import annotations

import asyncio
import base64
import logging
import random
import threading
import time

import pytest
import requests
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

from agentsight_otel import AgentSightSpanExporter, ConversationTracker
from agentsight_otel import processor as processor_module
from agentsight_otel.localserver import Faults, LocalServer
from agentsight_otel.outcomes import Outcome, OutcomeLedger

from .helpers import own_tracker, run_in_threads, tracker_into_memory, wait_until


def _expected_item(kind, rng, n):
    """One random tracked item: the call to make and what the transcript must show for it."""
    if kind == "question":
        text = f"user says {n} " + "".join(rng.choice("abc xyz<>&\"'é漢🙂\n") for _ in range(rng.randint(1, 40)))
        return ("track_human_message", (text,), {}), {"type": "message", "sender": "end_user", "content": text}
    if kind == "answer":
        text = f"agent says {n}"
        return ("track_agent_message", (text,), {"metadata": {"n": n}}), {
            "type": "message",
            "sender": "agent",
            "content": text,
            "metadata": {"n": n},
        }
    if kind == "action":
        failed = rng.random() < 0.3
        kwargs = {"tools_used": {"n": n}, "duration_ms": n % 50}
        kwargs["error_msg" if failed else "response"] = f"result {n}"
        return ("track_action", (f"tool_{n}",), kwargs), {
            "type": "action",
            "name": f"tool_{n}",
            "arguments": {"n": n},
            "response": None if failed else f"result {n}",
            "error": f"result {n}" if failed else None,
        }
    if kind == "button":
        return ("track_button", ("click", f"Label {n}", f"v{n}"), {}), {
            "type": "button",
            "event": "click",
            "label": f"Label {n}",
            "value": f"v{n}",
        }
    if kind == "attachments":
        data = base64.b64encode(f"file {n}".encode()).decode()
        files = [{"filename": f"f{n}.txt", "mime_type": "text/plain", "data": data}]
        return ("track_attachments", (files, "agent"), {}), {
            "type": "attachments",
            "sender": "agent",
            "files": [f"f{n}.txt"],
        }
    return ("track_token_usage", (n + 1, n + 2, 2 * n + 3), {"model": f"model-{n % 3}"}), {
        "type": "token_usage",
        "model": f"model-{n % 3}",
        "input_tokens": n + 1,
        "output_tokens": n + 2,
    }


def _project(item, keys):
    if item["type"] == "attachments":
        return {"type": "attachments", "sender": item["sender"], "files": [f["filename"] for f in item["files"]]}
    return {k: item.get(k) for k in keys}


def test_random_sequence_round_trips_with_content_and_order(tracker, api, server):
    rng = random.Random(20261130)
    kinds = ["question", "answer", "action", "button", "attachments", "token_usage"]
    tracker.get_or_create_conversation("rt-1", customer_id="c-9", name="Round trip", metadata={"seed": 1})
    expected = []
    for n in range(300):
        (method, args, kwargs), want = _expected_item(rng.choice(kinds), rng, n)
        getattr(tracker, method)(*args, **kwargs)
        expected.append(want)

    result = tracker.send_tracked_data()
    assert result["summary"]["errors"] == 0
    assert len(result["items"]) == 301 and all(i["success"] for i in result["items"])

    transcript = api.transcript("rt-1")
    got = [_project(item, want.keys()) for item, want in zip(transcript["items"], expected)]
    assert len(transcript["items"]) == len(expected)
    assert got == expected
    assert transcript["conversation"]["customer_id"] == "c-9"
    assert transcript["conversation"]["metadata"] == {"seed": 1}
    # Attachment bytes went to /api/attachments/ and can be downloaded.
    first_file = next(i for i in transcript["items"] if i["type"] == "attachments")["files"][0]
    download = api.session.get(server.url + first_file["download_url"], timeout=10)
    assert download.status_code == 200 and download.content.startswith(b"file ")


def test_long_conversation_keeps_every_event(tracker, api):
    tracker.get_or_create_conversation("long-1")
    for i in range(600):
        tracker.track_human_message(f"m{i}")
    assert tracker.send_tracked_data()["summary"]["questions"] == 600
    contents = [i["content"] for i in api.transcript("long-1")["items"]]
    assert contents == [f"m{i}" for i in range(600)]


def test_app_provider_with_default_limits_rolls_over_instead_of_dropping(server, api):
    provider = TracerProvider()  # the SDK's default: 128 events per span
    provider.add_span_processor(BatchSpanProcessor(AgentSightSpanExporter(api_key=server.api_key, endpoint=server.url)))
    t = ConversationTracker()
    t.configure(tracer_provider=provider)
    t.get_or_create_conversation("rollover-1")
    for i in range(300):
        t.track_agent_message(f"a{i}")
    result = t.send_tracked_data()
    assert result["summary"] == {
        "questions": 0,
        "answers": 300,
        "attachments": 0,
        "actions": 0,
        "buttons": 0,
        "errors": 0,
    }
    assert [i["content"] for i in api.transcript("rollover-1")["items"]] == [f"a{i}" for i in range(300)]
    provider.shutdown()


def test_concurrent_threads_keep_conversations_apart(tracker, api):
    def worker(n):
        with tracker.conversation(f"th-{n}", customer_id=f"cust-{n}"):
            for i in range(30):
                tracker.track_human_message(f"{n}:{i}")
                tracker.track_agent_message(f"{n}:{i}!")
            result = tracker.send_tracked_data()
            assert result["summary"]["errors"] == 0

    run_in_threads(worker, 2)
    for n in range(2):
        transcript = api.transcript(f"th-{n}")
        assert transcript["conversation"]["customer_id"] == f"cust-{n}"
        want = [c for i in range(30) for c in (f"{n}:{i}", f"{n}:{i}!")]
        assert [i["content"] for i in transcript["items"]] == want


def test_concurrent_asyncio_tasks_keep_conversations_apart(tracker, api):
    async def handle(n):
        with tracker.conversation(f"task-{n}"):
            for i in range(25):
                tracker.track_human_message(f"task {n} q{i}")
                await asyncio.sleep(0)
                tracker.track_agent_message(f"task {n} a{i}")
            return await asyncio.to_thread(tracker.send_tracked_data, conversation_id=f"task-{n}")

    async def main():
        return await asyncio.gather(*(handle(n) for n in range(2)))

    results = asyncio.run(main())
    assert all(r["summary"]["errors"] == 0 for r in results)
    for n in range(2):
        contents = [i["content"] for i in api.transcript(f"task-{n}")["items"]]
        assert contents == [c for i in range(25) for c in (f"task {n} q{i}", f"task {n} a{i}")]


def test_a_malformed_key_in_the_environment_is_logged_once_and_reported_on_every_send(monkeypatch, caplog):
    monkeypatch.setenv("AGENTSIGHT_API_KEY", "ags_SECRETPARTxyz")
    t = ConversationTracker()  # configured from the environment alone, as the module-level tracker is
    try:
        with caplog.at_level(logging.DEBUG, logger="agentsight_otel"):
            reports = []
            for text in ("hello", "again"):
                t.track_human_message(text, conversation_id="bad-env-1")
                reports.append(t.send_tracked_data(conversation_id="bad-env-1"))
        said = [r for r in caplog.records if "exporter disabled" in r.getMessage()]
        assert len(said) == 1 and "does not have the AgentSight shape" in said[0].getMessage()
        for report in reports:
            assert all(not i["success"] and "exporter disabled" in i["error"] for i in report["items"]), report
        assert "SECRETPART" not in caplog.text
    finally:
        t.shutdown()


def test_rejected_key_is_reported_clearly_and_never_printed(server, caplog):
    stranger = "ags_0123456789abcdef0123456789abcdef_abcdef"
    t = ConversationTracker()
    t.configure(api_key=stranger, endpoint=server.url)
    caplog.set_level(logging.DEBUG)
    t.track_human_message("hello", conversation_id="k-1")
    result = t.send_tracked_data(conversation_id="k-1")
    item = result["items"][0]
    assert item["success"] is False
    assert "rejected the API key" in item["error"] and "403" in item["error"]
    assert stranger not in repr(result) and stranger not in caplog.text
    assert "rejected the API key" in caplog.text
    # Later sends go straight to the spool, and say why: the key, not an unreachable server.
    t.track_human_message("again", conversation_id="k-1")
    later = t.send_tracked_data(conversation_id="k-1")["items"][0]
    assert later["success"] is False and later.get("spooled") is True
    assert "rejected the API key" in later["error"] and "unreachable" not in later["error"], later
    assert server.transcript("k-1") is None
    t.shutdown()


def test_unreachable_server_fails_items_without_raising():
    with LocalServer() as srv:
        key, url = srv.api_key, srv.url
    t = ConversationTracker()
    t.configure(api_key=key, endpoint=url, timeout=1)
    t.track_human_message("anyone there?", conversation_id="down-1")
    result = t.send_tracked_data(conversation_id="down-1")
    assert result["items"][0]["success"] is False
    assert "could not be reached" in result["items"][0]["error"]
    assert result["summary"]["errors"] == 1
    t.shutdown()


def test_token_counters_reset_after_send(tracker):
    tracker.get_or_create_conversation("tok-1")
    tracker.track_token_usage(10, 5, 15)
    tracker.track_human_message("hi")
    assert tracker.get_token_usage()["total_tokens"] == 15
    tracker.send_tracked_data()
    assert tracker.get_token_usage() == {}


def test_token_usage_lands_per_model_in_the_transcript(tracker, api):
    tracker.get_or_create_conversation("tok-2")
    tracker.track_token_usage(100, 20, 120, model="gpt-4o")
    tracker.track_token_usage(50, 10, 60, model="gpt-4o")
    tracker.track_token_usage(0, 0, 0, embedding_tokens=30, model="embed-small")
    tracker.send_tracked_data()
    usage = api.transcript("tok-2")["token_usage"]
    assert usage["by_model"]["gpt-4o"]["input_tokens"] == 150
    assert usage["by_model"]["gpt-4o"]["total_tokens"] == 180
    assert usage["by_model"]["embed-small"]["embedding_tokens"] == 30


def test_initialize_conversation_registers_without_marking_used(tracker, api):
    tracker.initialize_conversation("init-1", customer_id="c-1", name="Widget opened", environment="production")
    conv = api.get("/api/conversations/", conversation_id="init-1")["results"][0]
    assert conv["is_used"] is False and conv["name"] == "Widget opened" and conv["environment"] == "production"
    assert tracker.get_conversation_id() is None  # it does not become the current conversation
    tracker.track_human_message("now I talk", conversation_id="init-1")
    tracker.send_tracked_data(conversation_id="init-1")
    assert api.get("/api/conversations/", conversation_id="init-1")["results"][0]["is_used"] is True


def test_exporter_in_an_app_pipeline_is_idempotent_on_resend(server):
    t, memory = tracker_into_memory()
    t.get_or_create_conversation("dup-1")
    t.track_human_message("once")
    t.track_agent_message("only once")
    t.send_tracked_data()  # no AgentSight exporter in this provider: the outcome is unknown
    spans = memory.get_finished_spans()
    exporter = AgentSightSpanExporter(api_key=server.api_key, endpoint=server.url)
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    stored = server.span_count("dup-1")
    assert exporter.export(spans) is SpanExportResult.SUCCESS
    assert server.span_count("dup-1") == stored
    bodies = [r for r in server.request_log() if r["path"] == "/api/ingest/"]
    assert len(bodies) == 2 and bodies[0]["body_bytes"] == bodies[1]["body_bytes"]
    assert [i["content"] for i in server.transcript("dup-1")["items"]] == ["once", "only once"]


def test_the_exporter_keeps_only_the_outcomes_someone_waits_for(server):
    # An app's pipeline exports spans nobody will ask about; their verdicts must not pile up in the ledger.
    t, memory = tracker_into_memory()
    for c in range(3):
        t.track_human_message(f"q{c}", conversation_id=f"kept-{c}")
        t.send_tracked_data(conversation_id=f"kept-{c}")
    spans = memory.get_finished_spans()
    assert len(spans) == 3
    keys = [(s.context.trace_id, s.context.span_id) for s in spans]
    outcomes = OutcomeLedger()
    outcomes.expect(*keys[0])
    exporter = AgentSightSpanExporter(api_key=server.api_key, endpoint=server.url, outcome_ledger=outcomes)
    try:
        assert exporter.export(spans) is SpanExportResult.SUCCESS
    finally:
        exporter.shutdown()
    first = outcomes.pop(*keys[0])
    assert first is not None and first.delivered
    assert [outcomes.pop(*key) for key in keys[1:]] == [None, None]
    assert all(server.transcript(f"kept-{c}") for c in range(3))  # all delivered, only one verdict kept
    assert outcomes.pop(*keys[0]) is None  # popped once


def test_an_expected_outcome_is_kept_however_many_conversations_opened_since():
    # Expectations live as long as their conversation is open; the outcome bound must not push one out.
    outcomes = OutcomeLedger(max_entries=3)
    outcomes.expect(1, 1)
    for n in range(2, 10):
        outcomes.expect(n, n)
    outcomes.record(1, 1, Outcome(True))
    outcomes.record(1, 1, Outcome(True), index=4)  # an event of an expected span (an attachment upload)
    outcomes.record(99, 99, Outcome(True))  # nobody expects it
    assert outcomes.pop(1, 1) == Outcome(True) and outcomes.pop(1, 1, 4) == Outcome(True)
    assert outcomes.pop(99, 99) is None


def test_a_block_the_server_refuses_does_not_sink_the_others(caplog):
    # This server knows only "production": a "development" conversation is refused by the server itself.
    with LocalServer(environments=("production",)) as srv:
        t, memory = tracker_into_memory()
        exporter = AgentSightSpanExporter(api_key=srv.api_key, endpoint=srv.url)
        t.get_or_create_conversation("good", environment="production")
        t.track_human_message("fine")
        t.get_or_create_conversation("bad", environment="development")
        t.track_human_message("refused")
        t.send_tracked_data(conversation_id="good")
        t.send_tracked_data(conversation_id="bad")
        assert exporter.export(memory.get_finished_spans()) is SpanExportResult.FAILURE
        assert srv.transcript("good")["items"][0]["content"] == "fine"
        assert srv.transcript("bad") is None
        assert "refused conversation bad" in caplog.text and "environment" in caplog.text


def test_gzip_only_after_the_server_advertises_it():
    # /api/me/ is asked once, off the caller's thread: the first batch goes plain, later big ones gzipped.
    for advertised in (True, False):
        with LocalServer(gzip_ingest=advertised) as srv:
            t = ConversationTracker()
            t.configure(api_key=srv.api_key, endpoint=srv.url)
            for conversation in ("gz-1", "gz-2"):
                t.get_or_create_conversation(conversation)
                for i in range(100):
                    t.track_human_message(f"message number {i} " + "x" * 100)
                assert t.send_tracked_data()["summary"]["errors"] == 0
                wait_until(lambda: any(r["path"] == "/api/me/" for r in srv.request_log()))
            log = srv.request_log()
            me = [i for i, r in enumerate(log) if r["path"] == "/api/me/"]
            ingests = [(i, r["content_encoding"]) for i, r in enumerate(log) if r["path"] == "/api/ingest/"]
            assert len(me) == 1 and len(ingests) == 2
            if advertised:  # gzip only once /api/me/ has answered; the second batch is sure to be after that
                assert all(i > me[0] for i, encoding in ingests if encoding == "gzip")
                assert ingests[-1][1] == "gzip"
            else:
                assert [encoding for _, encoding in ingests] == [None, None]
            assert len(srv.transcript("gz-2")["items"]) == 100
            t.shutdown()


def test_export_after_shutdown_fails_without_io(server):
    exporter = AgentSightSpanExporter(api_key=server.api_key, endpoint=server.url)
    exporter.shutdown()
    before = len(server.request_log())
    t, memory = tracker_into_memory()
    t.track_human_message("late", conversation_id="late-1")
    t.send_tracked_data(conversation_id="late-1")
    assert exporter.export(memory.get_finished_spans()) is SpanExportResult.FAILURE
    assert len(server.request_log()) == before


def test_missing_trailing_slash_is_not_found(server):
    response = requests.post(
        server.url + "/api/ingest", json={}, headers={"Authorization": f"Api-Key {server.api_key}"}, timeout=10
    )
    assert response.status_code == 404


@pytest.mark.parametrize("items", [1, 3])
def test_send_report_has_the_legacy_shape(tracker, items):
    tracker.get_or_create_conversation("shape")
    for i in range(items):
        tracker.track_human_message(f"q{i}")
    result = tracker.send_tracked_data()
    assert set(result) == {"items", "summary"}
    assert [i["index"] for i in result["items"]] == list(range(items + 1))
    assert result["items"][0]["type"] == "conversation"
    assert all({"index", "type", "timestamp", "success", "response"} <= set(i) for i in result["items"])
    assert result["summary"]["questions"] == items


def test_threads_on_many_conversations_and_on_one_shared_lose_and_mix_nothing(tracker, api):
    # Conversations have locks of their own: threads on different conversations run side by side, threads sharing
    # one still append one at a time, and per-conversation state (token counters) stays per conversation.
    def worker(n):
        own = f"locks-{n}"
        for i in range(40):
            tracker.track_human_message(f"{n}:{i}", conversation_id=own)
            tracker.track_agent_message(f"shared {n}:{i}", conversation_id="locks-shared")
            tracker.track_token_usage(prompt_tokens=2, completion_tokens=1, conversation_id=own)
            assert tracker.get_token_usage(conversation_id=own)["prompt_tokens"] == 2 * (i + 1)
        report = tracker.send_tracked_data(conversation_id=own, wait=n % 2 == 0)
        assert report["summary"]["questions"] == 40 and report["summary"]["errors"] == 0

    run_in_threads(worker, 8)
    assert tracker.send_tracked_data(conversation_id="locks-shared")["summary"]["answers"] == 320
    tracker.flush()
    for n in range(8):
        items = api.transcript(f"locks-{n}")["items"]
        assert [i["content"] for i in items if "content" in i] == [f"{n}:{i}" for i in range(40)]
    shared = [i["content"] for i in api.transcript("locks-shared")["items"]]
    for n in range(8):  # every thread's messages, each once and in the order that thread sent them
        assert [c for c in shared if c.startswith(f"shared {n}:")] == [f"shared {n}:{i}" for i in range(40)]
    assert len(shared) == 320


def test_tracking_never_waits_for_another_threads_send(server):
    server.set_faults(Faults(latency=1.0))  # every send takes a second
    slow = ConversationTracker()
    slow.configure(api_key=server.api_key, endpoint=server.url)
    slow.track_human_message("sent slowly", conversation_id="slow-1")
    sender = threading.Thread(target=slow.send_tracked_data, kwargs={"conversation_id": "slow-1"})
    sender.start()
    wait_until(lambda: slow.get_tracked_data_summary(conversation_id="slow-1")["summary"]["total"] == 0)
    started = time.monotonic()
    for i in range(50):
        slow.track_agent_message(f"meanwhile {i}", conversation_id="other-1")
    assert time.monotonic() - started < 0.5
    sender.join(10)
    slow.shutdown()


def test_an_app_provider_with_a_low_event_limit_loses_nothing(server):
    from opentelemetry.sdk.trace import SpanLimits

    provider = TracerProvider(span_limits=SpanLimits(max_events=50))
    provider.add_span_processor(BatchSpanProcessor(AgentSightSpanExporter(api_key=server.api_key, endpoint=server.url)))
    t = ConversationTracker()
    t.configure(tracer_provider=provider)
    for i in range(120):
        t.track_human_message(f"q{i}", conversation_id="limit-50")
    assert t.send_tracked_data(conversation_id="limit-50")["summary"]["questions"] == 120
    assert [i["content"] for i in server.transcript("limit-50")["items"]] == [f"q{i}" for i in range(120)]
    provider.shutdown()


def test_a_failed_upload_fails_only_the_item_with_files(server):
    server.set_faults(Faults(status_rates={400: 1.0}, paths=("/api/attachments/",)))
    with own_tracker(server) as t:
        t.track_human_message("hello", conversation_id="up-1")
        t.track_attachments([{"filename": "a.txt", "mime_type": "text/plain", "data": "aGk="}], conversation_id="up-1")
        t.track_agent_message(
            "with a file",
            conversation_id="up-1",
            attachments=[{"filename": "b.txt", "mime_type": "text/plain", "data": "aGk="}],
        )
        report = t.send_tracked_data(conversation_id="up-1")
        assert [(i["type"], i["success"]) for i in report["items"]] == [
            ("question", True),
            ("attachments", False),
            ("answer", False),
        ]
        error = report["items"][1]["error"]
        assert "attachment upload refused" in error and error.count("HTTP 400") == 1, error
        assert [i["type"] for i in server.transcript("up-1")["items"]] == [
            "message",
            "attachments",
            "message",
            "attachments",
        ]


def test_files_with_the_same_bytes_under_two_names_are_both_uploaded(tracker, server):
    same = [{"filename": name, "mime_type": "text/plain", "data": "c2FtZQ=="} for name in ("a.txt", "b.txt")]
    tracker.track_attachments(same, conversation_id="twins")
    tracker.send_tracked_data(conversation_id="twins")
    assert sorted(name for name, _ in server.attachment_bytes("twins")) == ["a.txt", "b.txt"]


def test_conversation_fields_survive_later_sends(tracker, server):
    tracker.get_or_create_conversation("fields-1", environment="production", name="Kept", customer_id="c-1")
    tracker.track_human_message("first")
    tracker.send_tracked_data()
    tracker.track_human_message("second")
    tracker.send_tracked_data()
    conv = server.transcript("fields-1")["conversation"]
    assert (conv["environment"], conv["name"], conv["customer_id"]) == ("production", "Kept", "c-1")
    assert [i["content"] for i in server.transcript("fields-1")["items"]] == ["first", "second"]


def test_sending_without_waiting_delivers_many_conversations_in_few_requests(tracker, server):
    for c in range(40):
        for i in range(5):
            tracker.track_human_message(f"q{i}", conversation_id=f"nowait-{c}")
        report = tracker.send_tracked_data(conversation_id=f"nowait-{c}", wait=False)
        assert report["queued"] and report["summary"]["questions"] == 5
        assert all(item["queued"] for item in report["items"])
    tracker.flush()
    wait_until(lambda: all(server.transcript(f"nowait-{c}") for c in range(40)), timeout=30)
    assert all(
        [i["content"] for i in server.transcript(f"nowait-{c}")["items"]] == [f"q{i}" for i in range(5)]
        for c in range(40)
    )
    # The export workers let a short batch fill up (BATCH_LINGER_S), so 40 conversations share a few requests.
    assert len([r for r in server.request_log() if r["path"] == "/api/ingest/"]) <= 10


def test_own_provider_ignores_sdk_length_limits_and_the_wire_marks_the_cut(tracker, api, monkeypatch):
    # Events go onto the tracker's own spans without the SDK's attribute pass: an OTEL_* length limit set for the
    # app's other telemetry must not cut a message silently; only the wire's visible 16,384-character rule applies.
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "10")
    monkeypatch.setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "10")
    tracker.get_or_create_conversation("limits-1")
    tracker.track_human_message("a message longer than ten characters")
    tracker.track_agent_message("x" * 20_000)
    report = tracker.send_tracked_data()
    assert all(item["success"] for item in report["items"]), report
    contents = [i["content"] for i in api.transcript("limits-1")["items"]]
    assert contents[0] == "a message longer than ten characters"
    assert len(contents[1]) == 16_384 and contents[1].endswith("...[truncated]")
    pk = api.get("/api/conversations/lookup/", conversation_id="limits-1")["id"]
    assert api.get(f"/api/conversations/{pk}/")["environment"] == "development"  # a span attribute, not cut either


def test_own_provider_records_every_conversation_whatever_sampler_the_app_configures(server, api, monkeypatch):
    # OTEL_TRACES_SAMPLER is for the app's traces: a ratio sampler taken by the tracker would drop whole transcripts.
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    with own_tracker(server) as t:
        t.get_or_create_conversation("sampled-anyway-1")
        t.track_human_message("hello")
        t.track_action("lookup", tools_used={"id": 1})
        report = t.send_tracked_data()
    assert all(item["success"] for item in report["items"]), report
    assert [i["content"] for i in api.transcript("sampled-anyway-1")["items"] if i.get("content")][0] == "hello"


def test_sdk_switched_off_by_environment_is_named_and_never_raises(server, monkeypatch, caplog):
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    with own_tracker(server) as t:
        with caplog.at_level(logging.WARNING, logger="agentsight_otel"):
            t.get_or_create_conversation("sdk-off-1")
            t.track_human_message("hello")
            report = t.send_tracked_data()
        assert "OTEL_SDK_DISABLED=true" in caplog.text
        assert not any(item["success"] for item in report["items"])
    assert server.api_key not in caplog.text


def test_app_provider_that_samples_nothing_is_reported_and_never_raises(caplog):
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF

    t = ConversationTracker()
    t.configure(tracer_provider=TracerProvider(sampler=ALWAYS_OFF))
    try:
        with caplog.at_level(logging.WARNING, logger="agentsight_otel"):
            t.get_or_create_conversation("unsampled-1")
            t.track_human_message("hello")
            t.track_action("lookup", tools_used={"id": 1})
            report = t.send_tracked_data(timeout=1)
        assert "does not record the tracker's spans" in caplog.text
        assert not any(item["success"] for item in report["items"])
    finally:
        t.shutdown()


def test_own_provider_events_encode_like_sdk_events(tracker):
    # The tracker's events are SDK Events with read-only attribute mappings: standard exporters encode them as
    # they encode add_event's, so an app sending the same spans to another backend sees the same data.
    from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import encode_spans
    from opentelemetry.sdk.trace import Event

    tracker.get_or_create_conversation("otlp-1")
    tracker.track_action("lookup", tools_used={"id": 1}, response="found", duration_ms=3.5)
    span = tracker._buckets["otlp-1"].span  # the open segment, as the SDK holds it
    ours = span.events[-1]
    reference = TracerProvider().get_tracer("t").start_span("ref")
    reference.add_event(ours.name, dict(ours.attributes), ours.timestamp)
    theirs = reference.events[-1]
    assert isinstance(ours, Event) and dict(ours.attributes) == dict(theirs.attributes)
    assert ours.dropped_attributes == theirs.dropped_attributes == 0
    with pytest.raises(TypeError):
        ours.attributes["agentsight.tool.name"] = "changed"  # immutable, as add_event's are
    encoded = encode_spans([span]).resource_spans[0].scope_spans[0].spans[0].events[-1]
    assert {kv.key for kv in encoded.attributes} == set(ours.attributes)


def test_an_export_thread_that_cannot_start_loses_nothing_and_is_tried_again(server, api, monkeypatch, caplog):
    failures = [2]  # the first two starts fail, as when the process is out of threads

    class FlakyThread(threading.Thread):
        def start(self):
            if failures[0] > 0:
                failures[0] -= 1
                raise RuntimeError("can't start new thread")
            super().start()

    class Threading:  # the threading module as the processor sees it, with that Thread
        Thread = FlakyThread

        def __getattr__(self, name):
            return getattr(threading, name)

    monkeypatch.setattr(processor_module, "threading", Threading())
    with caplog.at_level(logging.WARNING, logger="agentsight_otel"):
        with own_tracker(server) as t:
            for i in range(3):
                with t.conversation(f"flaky-{i}"):
                    t.track_human_message(f"hello {i}")
                    t.send_tracked_data(wait=False)
            t.flush(timeout=10)
    assert failures == [0]
    for i in range(3):
        assert [m["content"] for m in api.transcript(f"flaky-{i}")["items"]] == [f"hello {i}"]
    assert "could not start an export thread" in caplog.text
    assert "shutdown failed" not in caplog.text


def test_a_full_queue_waits_for_a_busy_but_healthy_server_instead_of_spilling(server, monkeypatch):
    # A queue of about two conversations, a server that takes 50 ms per request: the senders outpace delivery, and
    # every conversation must still go over the network, not through the spool.
    monkeypatch.setattr(processor_module, "MAX_QUEUED_EVENTS", 12)
    server.set_faults(Faults(latency=0.05))
    with own_tracker(server) as t:

        def sender(worker):
            for c in range(worker, 24, 3):
                for i in range(5):
                    t.track_human_message(f"q{i}", conversation_id=f"busy-{c}")
                assert t.send_tracked_data(conversation_id=f"busy-{c}", wait=False)["queued"]

        run_in_threads(sender, 3)
        t.flush(timeout=60)
        stats = t._exporter_for_export().stats()
        assert stats["spooled"] == 0 and stats["delivered"] >= 24, stats
        for c in range(24):
            assert [i["content"] for i in server.transcript(f"busy-{c}")["items"]] == [f"q{i}" for i in range(5)]


def test_a_full_queue_spills_during_an_outage_and_flush_delivers_the_spill(server, monkeypatch):
    monkeypatch.setattr(processor_module, "MAX_QUEUED_EVENTS", 12)
    server.set_faults(Faults(outage_seconds=3600))
    with own_tracker(server, timeout=1) as t:
        for c in range(12):
            for i in range(5):
                t.track_human_message(f"q{i}", conversation_id=f"down-{c}")
            t.send_tracked_data(conversation_id=f"down-{c}", wait=False)
        exporter = t._exporter_for_export()
        wait_until(lambda: exporter.stats()["spooled"] >= 12, timeout=60)  # spilled or failed over: all on disk
        assert not server.transcript("down-0")
        server.set_faults(Faults())
        t.flush(timeout=60)
        assert exporter.spool.stats().entries == 0  # flush delivered what was spilled, not only the queue
        for c in range(12):
            assert [i["content"] for i in server.transcript(f"down-{c}")["items"]] == [f"q{i}" for i in range(5)]


def test_segments_of_a_long_conversation_stay_in_order_across_the_two_export_workers(server, monkeypatch):
    # 1,600 messages roll the span over three times; with a slow server both workers are busy at once, and a
    # segment must never overtake an earlier one of the same conversation. One segment per request, taken at
    # once, so that segments of one conversation really are in different requests, both workers busy.
    monkeypatch.setattr(processor_module, "BATCH_SPANS", 1)
    monkeypatch.setattr(processor_module, "BATCH_LINGER_S", 0.0)
    server.set_faults(Faults(latency=(0.0, 0.03), seed=7))
    with own_tracker(server) as t:

        def sender(worker):
            cid = f"long-{worker}"
            for i in range(1_600):
                t.track_human_message(f"m{i}", conversation_id=cid)
            t.send_tracked_data(conversation_id=cid, wait=False)

        run_in_threads(sender, 3)
        t.flush(timeout=60)
        session = requests.Session()
        session.headers["Authorization"] = f"Api-Key {server.api_key}"
        for worker in range(3):
            arrived, since = [], 0
            while True:  # the feed lists items in the order their spans arrived (seq)
                page = session.get(
                    f"{server.url}/api/feed/",
                    params={"since": since, "conversation_id": f"long-{worker}", "limit": 1000},
                    timeout=10,
                ).json()
                arrived += sorted(page["items"], key=lambda item: item["seq"])
                since = page["cursor"]
                if not page["more"]:
                    break
            assert [item["content"] for item in arrived] == [f"m{i}" for i in range(1_600)]
            assert len({item["seq"] for item in arrived}) > 1  # several segments, stored one after another
        requests_made = [r for r in server.request_log() if r["path"] == "/api/ingest/"]
        assert len(requests_made) >= 4  # the segments really went in several requests
