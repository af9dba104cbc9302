"""Each pipeline stage alone, on plain data: read, batch, wire rules, JSON documents, configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentsight_otel import records as records_module
from agentsight_otel import semconv as sc
from agentsight_otel.batch import group_by_conversation
from agentsight_otel.config import check_api_key, resolve_settings
from agentsight_otel.errors import InvalidApiKeyException
from agentsight_otel.jsondoc import MARKER, MAX_TEXT, clamp_text, safe_document
from agentsight_otel.readers import read_spans
from agentsight_otel.records import (
    Action,
    Conversation,
    ConversationBatch,
    Message,
    RecordKey,
    SpanRecords,
    TokenUsage,
)
from agentsight_otel.version import __version__
from agentsight_otel.wire import BlockRules, encode, encode_block, iso_time

KEY = "ags_1a2b3c4d5e6f7890abcdef1234567890_a1b2c3"


def _spans(build):
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    build(provider.get_tracer("test"))
    return memory.get_finished_spans()


def _msg(ts, sender, content, span=1, index=0):
    return Message(RecordKey(7, span, index), ts, sender, content)


# -- read ------------------------------------------------------------------------------------------------------


def test_reader_turns_agentsight_events_into_records_and_skips_other_spans():
    def build(tracer):
        with tracer.start_as_current_span("http GET /health"):
            pass
        span = tracer.start_span("conv", attributes={sc.CONVERSATION_ID: "c-1", sc.CONVERSATION_NAME: "Support"})
        span.add_event(sc.EVENT_MESSAGE, {sc.MESSAGE_SENDER: "end_user", sc.MESSAGE_CONTENT: "hi"}, timestamp=10)
        span.add_event("unrelated", {"x": 1}, timestamp=11)
        span.add_event(sc.EVENT_ACTION, {sc.TOOL_NAME: "lookup", sc.TOOL_RESPONSE: "ok"}, timestamp=12)
        span.end()

    found = read_spans(_spans(build))
    assert len(found) == 1
    assert found[0].conversation.conversation_id == "c-1"
    assert found[0].conversation.name == "Support"
    kinds = [type(r).__name__ for r in found[0].records]
    assert kinds == ["Message", "Action"]
    assert found[0].records[0].key.event == 0 and found[0].records[1].key.event == 2


# -- batch -----------------------------------------------------------------------------------------------------


def test_batches_group_by_conversation_in_first_seen_order_and_sort_by_time():
    a = SpanRecords(Conversation("a", name="first"), (_msg(30, "agent", "a2"), _msg(10, "end_user", "a1")))
    b = SpanRecords(Conversation("b"), (_msg(20, "end_user", "b1", span=2),))
    a_later = SpanRecords(Conversation("a", customer_id="cust"), (_msg(5, "end_user", "a0", span=3),))
    batches = group_by_conversation([a, b, a_later])
    assert [x.conversation.conversation_id for x in batches] == ["a", "b"]
    assert [r.content for r in batches[0].records] == ["a0", "a1", "a2"]
    # Fields merge: newer spans add to what older ones set.
    assert batches[0].conversation.name == "first" and batches[0].conversation.customer_id == "cust"
    assert len(batches[0].sources) == 2


# -- wire ------------------------------------------------------------------------------------------------------


def test_turn_opens_at_user_message_and_tools_are_its_children():
    records = (
        _msg(1_000, "end_user", "q1", index=0),
        Action(RecordKey(7, 1, 1), 2_000, "search", arguments='{"q":"x"}', response="r", duration_ms=5.0),
        _msg(3_000, "agent", "a1", index=2),
        _msg(4_000, "end_user", "q2", index=3),
    )
    block = encode_block(ConversationBatch(Conversation("c"), records), BlockRules())
    spans = block.document()["spans"]
    turns = [s for s in spans if s["kind"] == "turn"]
    tools = [s for s in spans if s["kind"] == "tool"]
    assert len(turns) == 2
    assert [e["attributes"][sc.MESSAGE_CONTENT] for e in turns[0]["events"]] == ["q1", "a1"]
    assert tools[0]["parent_span_id"] == turns[0]["span_id"]
    assert tools[0]["attributes"][sc.TURN_ID] == turns[0]["span_id"]
    assert tools[0]["duration_ms"] == 5.0
    assert all(s["attributes"][sc.CONVERSATION_ID] == "c" for s in spans)
    assert [s["started_at"] for s in spans] == sorted(s["started_at"] for s in spans)


def test_stable_span_ids_are_the_same_in_every_process():
    # A bridge restarted between a collector's retries must give a re-sent span the ids it gave before, so the
    # ids cannot depend on the per-process salt of str hashing.
    code = (
        "from agentsight_otel.records import RecordKey;"
        "k = RecordKey(0xa6fb8610ca007970f54e431207cc597e, 0x968621c49c258325, 3);"
        "print(k.stable_span_id('tool'), k.stable_span_id('turn'), RecordKey(1, 2).stable_span_id('llm'))"
    )
    seen = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "random")
    }
    assert len(seen) == 1
    tool, turn, llm = seen.pop().split()
    assert len({tool, turn, llm}) == 3 and all(len(x) == 16 and int(x, 16) for x in (tool, turn, llm))


def test_stable_span_ids_keep_64_bits_on_a_32_bit_hash(monkeypatch):
    keys = [RecordKey(t, s, e) for t in (1, 2**100 + 5) for s in (3, 2**63 + 1) for e in range(-1, 20)]
    wide = {k.stable_span_id("tool") for k in keys}
    monkeypatch.setattr(records_module, "_HASH_BITS", 32)
    narrow = {k.stable_span_id("tool") for k in keys}
    assert len(wide) == len(narrow) == len(keys)
    assert len({x[:8] for x in narrow}) > 1 and len({x[8:] for x in narrow}) > 1  # both halves vary


def test_encoding_the_same_records_twice_gives_the_same_payload():
    records = (_msg(1_000, "end_user", "q"), _msg(2_000, "agent", "a", index=1))
    batch = ConversationBatch(Conversation("c"), records)
    first = encode([batch], BlockRules())
    second = encode([batch], BlockRules())
    assert [b.json for b in first] == [b.json for b in second]
    assert len({s["span_id"] for s in first[0].document()["spans"]}) == 1  # one turn


def test_every_span_carries_the_otel_envelope_of_its_resource():
    records = (
        _msg(1_000, "end_user", "q"),
        Action(RecordKey(7, 1, 1), 2_000, "search", response="r"),
    )
    for resource, expected in (
        ((("service.name", "svc"), ("tags", ("a", "b"))), {"service.name": "svc", "tags": ["a", "b"]}),
        ((("bridge.kvlist", {"k": 1}),), {"bridge.kvlist": {"k": 1}}),  # unhashable: built without the cache
        ((), {}),
    ):
        batch = ConversationBatch(Conversation("c"), records, resource)
        spans = encode_block(batch, BlockRules()).document()["spans"]
        assert len(spans) == 2
        for span in spans:
            assert span["otel"]["resource"] == expected
            assert span["otel"]["scope"] == {"name": "agentsight_otel", "version": __version__, "schema_url": None}
            assert span["otel"]["span_kind"] == "INTERNAL" and span["otel"]["links"] == []


def test_the_envelope_keeps_its_resource_types_and_survives_the_standard_library_fallback():
    key = RecordKey(7, 1, 0)
    flagged = encode_block(
        ConversationBatch(Conversation("c"), (_msg(1_000, "end_user", "q"),), (("flag", True),)), BlockRules()
    )
    counted = encode_block(
        ConversationBatch(Conversation("c"), (_msg(1_000, "end_user", "q"),), (("flag", 1),)), BlockRules()
    )
    assert flagged.document()["spans"][0]["otel"]["resource"]["flag"] is True  # True == 1: never shared
    assert counted.document()["spans"][0]["otel"]["resource"]["flag"] == 1
    # An integer beyond 64 bits is more than orjson writes: the block falls back to the standard library whole.
    huge = TokenUsage(key, 2_000, "m", input_tokens=2**70)
    batch = ConversationBatch(Conversation("c"), (huge,), (("service.name", "svc"),))
    span = encode_block(batch, BlockRules()).document()["spans"][0]
    assert span["attributes"][sc.GEN_AI_USAGE_INPUT_TOKENS] == 2**70
    assert span["otel"]["resource"] == {"service.name": "svc"} and span["otel"]["span_kind"] == "INTERNAL"


def test_block_rules_fix_every_field_that_would_sink_the_batch(caplog):
    conversation = Conversation(
        "c" * 300,
        customer_id="x" * 256,
        customer_ip="10.0.0.1, 10.0.0.2",
        environment="staging",
        metadata='"not an object"',
        name="ok",
    )
    block = encode_block(ConversationBatch(conversation, (_msg(1, "end_user", "y" * 20_000),)), BlockRules()).document()
    assert set(block) <= {
        "conversation_id",
        "customer_id",
        "customer_ip_address",
        "device",
        "source",
        "language",
        "name",
        "environment",
        "metadata",
        "spans",
    }
    assert len(block["conversation_id"]) == 255 and len(block["customer_id"]) == 255
    assert "customer_ip_address" not in block and "environment" not in block and "metadata" not in block
    content = block["spans"][0]["events"][0]["attributes"][sc.MESSAGE_CONTENT]
    assert len(content) == MAX_TEXT and content.endswith("...[truncated]")
    assert "not known to AgentSight" in caplog.text and "IPv4 or IPv6" in caplog.text


def test_environment_aliases_learned_slugs_and_default():
    rules = BlockRules(default_environment="prod")
    assert rules.environment("DEV") == "development"
    assert rules.environment(None) == "production"
    assert rules.environment("staging") == "production"  # unknown: falls back to the default
    rules.learn_environments(["staging"])
    assert rules.environment("Staging ") == "staging"


def test_ipv6_and_metadata_object_pass_through():
    rules = BlockRules()
    fields = rules.conversation_fields(Conversation("c", customer_ip="::1", metadata='{"plan": "pro"}'))
    assert fields["customer_ip_address"] == "::1"
    assert fields["metadata"] == {"plan": "pro"}


def test_iso_time_has_microseconds_and_utc_offset():
    assert iso_time(1_700_000_000_123_456_789) == "2023-11-14T22:13:20.123456+00:00"
    assert iso_time(0) is None
    # Times no ISO date can carry are clamped, so one bad timestamp cannot fail a whole export.
    assert iso_time(2**70) == "9999-12-31T23:59:59.999999+00:00"
    assert iso_time(-5) == "1970-01-01T00:00:00.000000+00:00"


def test_actions_with_unusable_times_or_durations_still_encode():
    provider = TracerProvider()
    tracer = provider.get_tracer("t")
    spans = []
    odd = [(float("nan"), None), (float("inf"), None), (-5.0, None), (10**400, None), (2e302, None), (1.5, 2**70)]
    for n, (duration, stamp) in enumerate(odd):
        span = tracer.start_span("s", attributes={sc.CONVERSATION_ID: f"odd-{n}"})
        span.add_event(sc.EVENT_ACTION, {sc.TOOL_NAME: "lookup", sc.ACTION_DURATION_MS: duration}, timestamp=stamp)
        span.end()
        spans.append(span)
    blocks = [b.document() for b in encode(group_by_conversation(read_spans(spans)), BlockRules())]
    tools = [s for b in blocks for s in b["spans"] if s["kind"] == "tool"]
    assert len(tools) == 6
    assert [t["duration_ms"] for t in tools[:5]] == [0.0] * 5  # not a number, infinite, negative, absurd: unknown
    assert tools[5]["started_at"].startswith("9999-12-31") and tools[5]["duration_ms"] == 1.5


# -- JSON documents ----------------------------------------------------------------------------------------------


def test_clamp_text_marks_truncation():
    assert clamp_text("abc", 10) == "abc"
    cut = clamp_text("a" * 50, 20)
    assert len(cut) == 20 and cut.endswith("...[truncated]")


def test_safe_document_trims_leaves_then_drops_entries_and_stays_valid_json():
    big = {"a": "x" * 30_000, "b": "short"}
    text = safe_document(big)
    assert len(text) <= MAX_TEXT
    assert json.loads(text)["b"] == "short"
    many = {f"k{i}": "y" * 250 for i in range(200)}
    parsed = json.loads(safe_document(many))
    assert len(safe_document(many)) <= MAX_TEXT
    assert parsed[MARKER]["dropped_count"] > 0
    as_list = json.loads(safe_document(["z" * 250] * 200))
    assert as_list[-1][MARKER].endswith("item(s) dropped")


def test_safe_document_serialises_odd_objects():
    class Thing:
        def to_dict(self):
            return {"kind": "thing"}

    assert json.loads(safe_document({"t": Thing(), "s": {1, 2}})) == {"t": {"kind": "thing"}, "s": [1, 2]}


# -- configuration ---------------------------------------------------------------------------------------------


def test_configuration_precedence_argument_env_dotenv_default(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("AGENTSIGHT_API_ENDPOINT", raising=False)
    monkeypatch.delenv("AGENTSIGHT_ENVIRONMENT", raising=False)
    assert resolve_settings(api_key=KEY).endpoint == "https://api.agentsight.io"
    (tmp_path / ".env").write_text("AGENTSIGHT_API_ENDPOINT=http://127.0.0.1:9/\nAGENTSIGHT_ENVIRONMENT=prod\n")
    assert resolve_settings(api_key=KEY).endpoint == "http://127.0.0.1:9"
    assert resolve_settings(api_key=KEY).environment == "production"
    monkeypatch.setenv("AGENTSIGHT_API_ENDPOINT", "http://127.0.0.1:8")
    assert resolve_settings(api_key=KEY).endpoint == "http://127.0.0.1:8"
    assert resolve_settings(api_key=KEY, endpoint="http://127.0.0.1:7").endpoint == "http://127.0.0.1:7"


def test_api_key_shape_is_checked_without_echoing_the_key():
    assert check_api_key(f"  {KEY}\n") == KEY
    assert check_api_key("   ") is None
    bad = "ags_" + "g" * 32 + "_a1b2c3"
    with pytest.raises(InvalidApiKeyException) as err:
        check_api_key(bad)
    assert bad not in str(err.value)
    assert KEY not in repr(resolve_settings(api_key=KEY))
