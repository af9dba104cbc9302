"""Golden tests: the same conversation, emitted in every convention we read, gives the same AgentSight transcript.

Each fixture is built here with the OpenTelemetry SDK, spelling the attributes as that convention does: a
system prompt, a user question, a tool call the app runs (get_weather), the answer, and token usage for both
model calls (the first with 10 cached input tokens).
"""

from __future__ import annotations

import json

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from agentsight_otel import AgentSightSpanExporter
from agentsight_otel.localserver import LocalServer

T0 = 1_800_000_000_000_000_000
MS = 1_000_000
SYSTEM = "You are a weather bot."
QUESTION = "What's the weather in Paris?"
RESULT = "Sunny, 21 C in Paris"
ANSWER = "It is sunny and 21 C in Paris."
MODEL = "gpt-4o-mini"

EXPECTED = [
    ("message", "end_user", QUESTION),
    ("token_usage", MODEL, 40, 12, 10),  # input without the 10 cached tokens, output, cache read
    ("action", "get_weather", {"city": "Paris"}, RESULT, None, 5.0),
    ("token_usage", MODEL, 80, 9, 0),
    ("message", "agent", ANSWER),
]


def _parts(role, text=None, **extra):
    parts = [{"type": "text", "content": text}] if text is not None else []
    if "tool_call" in extra:
        parts.append({"type": "tool_call", "id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}})
    if "tool_response" in extra:
        parts.append({"type": "tool_call_response", "id": "call_1", "response": RESULT})
    return {"role": role, "parts": parts}


HISTORY_1 = [_parts("system", SYSTEM), _parts("user", QUESTION)]
OUTPUT_1 = [_parts("assistant", tool_call=True)]
HISTORY_2 = [*HISTORY_1, _parts("assistant", tool_call=True), _parts("tool", tool_response=True)]
OUTPUT_2 = [_parts("assistant", ANSWER)]


class Builder:
    """Spans of one trace at fixed times, with a root span around them."""

    def __init__(self, root_attributes=None):
        self.memory = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.tracer = provider.get_tracer("golden")
        self.root = self.tracer.start_span("agent turn", attributes=root_attributes or {}, start_time=T0)
        self.context = trace.set_span_in_context(self.root)

    def span(self, name, start_ms, end_ms, attributes, events=(), error=None):
        span = self.tracer.start_span(name, context=self.context, attributes=attributes, start_time=T0 + start_ms * MS)
        for event_name, event_attributes, at_ms in events:
            span.add_event(event_name, event_attributes, timestamp=T0 + at_ms * MS)
        if error:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=T0 + end_ms * MS)

    def spans(self):
        self.root.end(end_time=T0 + 40 * MS)
        return self.memory.get_finished_spans()


def genai_attributes(conversation=True, structured=False):
    encode = (lambda v: v) if structured else json.dumps
    b = Builder({"gen_ai.conversation.id": "golden", "gen_ai.operation.name": "invoke_agent"} if conversation else {})
    common = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": MODEL,
        "gen_ai.response.model": MODEL,
    }
    b.span(
        f"chat {MODEL}",
        1,
        10,
        {
            **common,
            "gen_ai.input.messages": encode(HISTORY_1),
            "gen_ai.output.messages": encode(OUTPUT_1),
            "gen_ai.usage.input_tokens": 50,
            "gen_ai.usage.output_tokens": 12,
            "gen_ai.usage.cache_read.input_tokens": 10,
        },
    )
    b.span(
        "execute_tool get_weather",
        12,
        17,
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "get_weather",
            "gen_ai.tool.call.id": "call_1",
            "gen_ai.tool.call.arguments": json.dumps({"city": "Paris"}),
            "gen_ai.tool.call.result": RESULT,
        },
    )
    b.span(
        f"chat {MODEL}",
        20,
        30,
        {
            **common,
            "gen_ai.input.messages": encode(HISTORY_2),
            "gen_ai.output.messages": encode(OUTPUT_2),
            "gen_ai.usage.input_tokens": 80,
            "gen_ai.usage.output_tokens": 9,
        },
    )
    return b.spans()


def genai_events():
    b = Builder({"gen_ai.conversation.id": "golden"})
    common = {"gen_ai.system": "openai", "gen_ai.request.model": MODEL, "gen_ai.response.model": MODEL}
    call = json.dumps(
        [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})},
            }
        ]
    )
    b.span(
        f"chat {MODEL}",
        1,
        10,
        {
            **common,
            "gen_ai.usage.input_tokens": 50,
            "gen_ai.usage.output_tokens": 12,
            "gen_ai.usage.cache_read.input_tokens": 10,
        },
        events=[
            ("gen_ai.system.message", {"content": SYSTEM}, 1),
            ("gen_ai.user.message", {"content": QUESTION}, 1),
            (
                "gen_ai.choice",
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "message": json.dumps({"role": "assistant", "tool_calls": json.loads(call)}),
                },
                10,
            ),
        ],
    )
    b.span(
        "execute_tool get_weather",
        12,
        17,
        {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": "get_weather",
            "gen_ai.tool.call.id": "call_1",
            "gen_ai.tool.call.arguments": json.dumps({"city": "Paris"}),
            "gen_ai.tool.call.result": RESULT,
        },
    )
    b.span(
        f"chat {MODEL}",
        20,
        30,
        {**common, "gen_ai.usage.input_tokens": 80, "gen_ai.usage.output_tokens": 9},
        events=[
            ("gen_ai.system.message", {"content": SYSTEM}, 20),
            ("gen_ai.user.message", {"content": QUESTION}, 20),
            ("gen_ai.assistant.message", {"tool_calls": call}, 20),
            ("gen_ai.tool.message", {"content": RESULT, "id": "call_1"}, 20),
            (
                "gen_ai.choice",
                {"index": 0, "finish_reason": "stop", "message": json.dumps({"role": "assistant", "content": ANSWER})},
                30,
            ),
        ],
    )
    return b.spans()


def _oi_messages(prefix, messages):
    attrs = {}
    for i, m in enumerate(messages):
        base = f"{prefix}.{i}.message"
        attrs[f"{base}.role"] = m["role"]
        text = "".join(p.get("content", "") for p in m["parts"] if p["type"] == "text")
        if text:
            attrs[f"{base}.content"] = text
        for p in m["parts"]:
            if p["type"] == "tool_call":
                attrs[f"{base}.tool_calls.0.tool_call.id"] = "call_1"
                attrs[f"{base}.tool_calls.0.tool_call.function.name"] = "get_weather"
                attrs[f"{base}.tool_calls.0.tool_call.function.arguments"] = json.dumps({"city": "Paris"})
            if p["type"] == "tool_call_response":
                attrs[f"{base}.content"] = RESULT
                attrs[f"{base}.tool_call_id"] = "call_1"
    return attrs


def openinference():
    b = Builder(
        {"session.id": "golden", "openinference.span.kind": "AGENT", "input.value": QUESTION, "output.value": ANSWER}
    )
    common = {"openinference.span.kind": "LLM", "llm.model_name": MODEL, "llm.system": "openai", "session.id": "golden"}
    b.span(
        "ChatCompletion",
        1,
        10,
        {
            **common,
            **_oi_messages("llm.input_messages", HISTORY_1),
            **_oi_messages("llm.output_messages", OUTPUT_1),
            "llm.token_count.prompt": 50,
            "llm.token_count.completion": 12,
            "llm.token_count.total": 62,
            "llm.token_count.prompt_details.cache_read": 10,
        },
    )
    b.span(
        "get_weather",
        12,
        17,
        {
            "openinference.span.kind": "TOOL",
            "tool.name": "get_weather",
            "input.value": json.dumps({"city": "Paris"}),
            "output.value": RESULT,
            "session.id": "golden",
        },
    )
    b.span(
        "ChatCompletion",
        20,
        30,
        {
            **common,
            **_oi_messages("llm.input_messages", HISTORY_2),
            **_oi_messages("llm.output_messages", OUTPUT_2),
            "llm.token_count.prompt": 80,
            "llm.token_count.completion": 9,
        },
    )
    return b.spans()


def _tl_messages(prefix, messages):
    attrs = {}
    for i, m in enumerate(messages):
        attrs[f"{prefix}.{i}.role"] = m["role"]
        text = "".join(p.get("content", "") for p in m["parts"] if p["type"] == "text")
        for p in m["parts"]:
            if p["type"] == "tool_call":
                attrs[f"{prefix}.{i}.tool_calls.0.id"] = "call_1"
                attrs[f"{prefix}.{i}.tool_calls.0.name"] = "get_weather"
                attrs[f"{prefix}.{i}.tool_calls.0.arguments"] = json.dumps({"city": "Paris"})
            if p["type"] == "tool_call_response":
                text, attrs[f"{prefix}.{i}.tool_call_id"] = RESULT, "call_1"
        if text:
            attrs[f"{prefix}.{i}.content"] = text
    return attrs


def openllmetry_legacy():
    session = {"traceloop.association.properties.session_id": "golden"}
    b = Builder(
        {
            **session,
            "traceloop.span.kind": "agent",
            "traceloop.entity.input": json.dumps({"args": [QUESTION], "kwargs": {}}),
            "traceloop.entity.output": json.dumps(ANSWER),
        }
    )
    common = {
        **session,
        "llm.request.type": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": MODEL,
        "gen_ai.response.model": MODEL,
    }
    b.span(
        "openai.chat",
        1,
        10,
        {
            **common,
            **_tl_messages("gen_ai.prompt", HISTORY_1),
            **_tl_messages("gen_ai.completion", OUTPUT_1),
            "gen_ai.usage.prompt_tokens": 50,
            "gen_ai.usage.completion_tokens": 12,
            "llm.usage.total_tokens": 62,
            "gen_ai.usage.cache_read_input_tokens": 10,
        },
    )
    b.span(
        "get_weather.tool",
        12,
        17,
        {
            **session,
            "traceloop.span.kind": "tool",
            "traceloop.entity.name": "get_weather",
            "traceloop.entity.input": json.dumps({"args": [], "kwargs": {"city": "Paris"}}),
            "traceloop.entity.output": json.dumps(RESULT),
        },
    )
    b.span(
        "openai.chat",
        20,
        30,
        {
            **common,
            **_tl_messages("gen_ai.prompt", HISTORY_2),
            **_tl_messages("gen_ai.completion", OUTPUT_2),
            "gen_ai.usage.prompt_tokens": 80,
            "gen_ai.usage.completion_tokens": 9,
        },
    )
    return b.spans()


def agentsight_01x():
    conv = {"agentsight.conversation.id": "golden"}
    b = Builder()
    turn_id = "00000000000000aa"
    b.span(
        "ask",
        1,
        31,
        {**conv, "agentsight.span.kind": "turn", "agentsight.turn.id": turn_id, "agentsight.turn.complete": True},
        events=[
            (
                "agentsight.message",
                {"agentsight.message.sender": "end_user", "agentsight.message.content": QUESTION},
                1,
            ),
            ("agentsight.message", {"agentsight.message.sender": "agent", "agentsight.message.content": ANSWER}, 30),
        ],
    )
    llm = {
        **conv,
        "agentsight.span.kind": "llm",
        "agentsight.turn.id": turn_id,
        "gen_ai.system": "openai",
        "gen_ai.request.model": MODEL,
    }
    b.span(
        MODEL,
        2,
        10,
        {
            **llm,
            "gen_ai.usage.input_tokens": 40,
            "gen_ai.usage.output_tokens": 12,
            "agentsight.llm.cache_read_tokens": 10,
        },
    )
    b.span(
        "get_weather",
        12,
        17,
        {
            **conv,
            "agentsight.span.kind": "tool",
            "agentsight.turn.id": turn_id,
            "agentsight.tool.name": "get_weather",
            "agentsight.tool.arguments": json.dumps({"city": "Paris"}),
            "agentsight.tool.response": RESULT,
        },
    )
    b.span(MODEL, 21, 29, {**llm, "gen_ai.usage.input_tokens": 80, "gen_ai.usage.output_tokens": 9})
    return b.spans()


def openllmetry_current():
    session = {"traceloop.association.properties.session_id": "golden"}
    b = Builder({**session, "traceloop.span.kind": "agent"})
    common = {
        **session,
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": MODEL,
        "gen_ai.response.model": MODEL,
    }
    b.span(
        "openai.chat",
        1,
        10,
        {
            **common,
            "gen_ai.input.messages": json.dumps(HISTORY_1),
            "gen_ai.output.messages": json.dumps(OUTPUT_1),
            "gen_ai.usage.input_tokens": 50,
            "gen_ai.usage.output_tokens": 12,
            "gen_ai.usage.total_tokens": 62,
            "gen_ai.usage.cache_read.input_tokens": 10,
        },
    )
    b.span(
        "get_weather.tool",
        12,
        17,
        {
            **session,
            "traceloop.span.kind": "tool",
            "traceloop.entity.name": "get_weather",
            "gen_ai.tool.name": "get_weather",
            "traceloop.entity.input": json.dumps({"args": [], "kwargs": {"city": "Paris"}}),
            "traceloop.entity.output": json.dumps(RESULT),
        },
    )
    b.span(
        "openai.chat",
        20,
        30,
        {
            **common,
            "gen_ai.input.messages": json.dumps(HISTORY_2),
            "gen_ai.output.messages": json.dumps(OUTPUT_2),
            "gen_ai.usage.input_tokens": 80,
            "gen_ai.usage.output_tokens": 9,
        },
    )
    return b.spans()


FIXTURES = {
    "genai-1.37-json": lambda: genai_attributes(),
    "genai-1.45-structured": lambda: genai_attributes(structured=True),
    "genai-1.36-events": genai_events,
    "openinference": openinference,
    "openllmetry-legacy": openllmetry_legacy,
    "openllmetry-0.55+": openllmetry_current,
    "agentsight-0.1.x": agentsight_01x,
}


def project(transcript):
    out = []
    for item in transcript["items"]:
        if item["type"] == "message":
            out.append(("message", item["sender"], item["content"]))
        elif item["type"] == "action":
            out.append(
                ("action", item["name"], item["arguments"], item["response"], item["error"], item["duration_ms"])
            )
        elif item["type"] == "token_usage":
            out.append(
                ("token_usage", item["model"], item["input_tokens"], item["output_tokens"], item["cache_read_tokens"])
            )
    return out


@pytest.mark.parametrize("convention", list(FIXTURES))
def test_every_convention_gives_the_same_conversation(convention, tmp_path):
    with LocalServer() as server:
        exporter = AgentSightSpanExporter(api_key=server.api_key, endpoint=server.url, spool_dir=str(tmp_path))
        spans = FIXTURES[convention]()
        # A batch processor hands spans over in end order, children before the root: give them that way.
        assert exporter.export(sorted(spans, key=lambda s: s.end_time)) is SpanExportResult.SUCCESS
        assert project(server.transcript("golden")) == EXPECTED
        assert [c["conversation_id"] for c in server.conversations()] == ["golden"]
        exporter.shutdown()


def _export(server, tmp_path, spans, **kwargs):
    exporter = AgentSightSpanExporter(api_key=server.api_key, endpoint=server.url, spool_dir=str(tmp_path), **kwargs)
    result = exporter.export(spans)
    return exporter, result


def test_spans_wait_for_the_root_that_names_the_conversation(tmp_path):
    with LocalServer() as server:
        spans = sorted(genai_attributes(), key=lambda s: s.end_time)
        children, root = spans[:-1], spans[-1]
        exporter, _ = _export(server, tmp_path, children)
        assert server.conversations() == []  # held: their trace's conversation id is not known yet
        assert exporter.export([root]) is SpanExportResult.SUCCESS
        assert project(server.transcript("golden")) == EXPECTED
        exporter.shutdown()


def test_a_trace_without_any_id_becomes_its_own_conversation(tmp_path):
    with LocalServer() as server:
        spans = genai_attributes(conversation=False)
        exporter, result = _export(server, tmp_path, sorted(spans, key=lambda s: s.end_time))
        assert result is SpanExportResult.SUCCESS
        trace_id = f"{spans[0].context.trace_id:032x}"
        assert project(server.transcript(f"trace-{trace_id}")) == EXPECTED
        exporter.shutdown()


def test_held_spans_are_released_when_the_hold_time_passes(tmp_path):
    from .helpers import wait_until

    with LocalServer() as server:
        spans = sorted(genai_attributes(conversation=False), key=lambda s: s.end_time)[:-1]  # the root never ends
        exporter, _ = _export(server, tmp_path, spans, trace_hold=0.2)
        assert server.conversations() == []
        wait_until(lambda: len(server.conversations()) == 1, timeout=10)
        assert server.conversations()[0]["conversation_id"].startswith("trace-")
        exporter.shutdown()


def test_spans_with_nothing_conversational_are_not_shipped(tmp_path):
    with LocalServer() as server:
        b = Builder({"http.method": "GET"})
        b.span("SELECT orders", 1, 2, {"db.system": "postgresql", "session.id": "golden"})
        b.span("GET /health", 3, 4, {"http.route": "/health"})
        exporter, result = _export(server, tmp_path, b.spans())
        assert result is SpanExportResult.SUCCESS
        assert server.conversations() == []
        assert not [r for r in server.request_log() if r["path"] == "/api/ingest/"]
        exporter.shutdown()


def test_history_repeated_across_exports_is_not_shown_twice(tmp_path):
    with LocalServer() as server:
        spans = sorted(genai_attributes(), key=lambda s: s.end_time)
        exporter, _ = _export(server, tmp_path, spans[:1])  # the first model call, alone, in one export
        exporter.export(spans[1:])
        assert project(server.transcript("golden")) == EXPECTED
        exporter.shutdown()


def test_numeric_indices_sort_numerically():
    from agentsight_otel.readers.openinference import flattened_messages

    attrs = {f"llm.input_messages.{i}.message.content": f"m{i}" for i in (10, 2, 1, 0, 9)}
    assert [m.text for m in flattened_messages(attrs, "input")] == ["m0", "m1", "m2", "m9", "m10"]


def test_the_same_answer_in_a_later_turn_is_shown_again(tmp_path):
    # Turn 2 asks the same question and gets the same answer: both turns must show both messages.
    turn2_input = [*HISTORY_1, _parts("assistant", ANSWER), _parts("user", QUESTION)]
    with LocalServer() as server:
        b = Builder({"gen_ai.conversation.id": "twice"})
        common = {"gen_ai.operation.name": "chat", "gen_ai.request.model": MODEL}
        b.span(
            "chat",
            1,
            5,
            {**common, "gen_ai.input.messages": json.dumps(HISTORY_1), "gen_ai.output.messages": json.dumps(OUTPUT_2)},
        )
        b.span(
            "chat",
            10,
            15,
            {
                **common,
                "gen_ai.input.messages": json.dumps(turn2_input),
                "gen_ai.output.messages": json.dumps(OUTPUT_2),
            },
        )
        exporter, _ = _export(server, tmp_path, b.spans())
        assert project(server.transcript("twice")) == [
            ("message", "end_user", QUESTION),
            ("message", "agent", ANSWER),
            ("message", "end_user", QUESTION),
            ("message", "agent", ANSWER),
        ]
        exporter.shutdown()


def test_a_structured_tool_result_stays_json():
    from agentsight_otel.readers import parse_span

    b = Builder({"traceloop.association.properties.session_id": "json"})
    b.span(
        "get_weather.tool",
        1,
        2,
        {
            "traceloop.span.kind": "tool",
            "traceloop.entity.name": "get_weather",
            "traceloop.entity.output": json.dumps({"sky": "sunny", "celsius": 21}),
        },
    )
    tool = next(p for p in map(parse_span, b.spans()) if p is not None and p.items)
    assert json.loads(tool.items[0].result) == {"sky": "sunny", "celsius": 21}


def _items(b, tmp_path):
    with LocalServer() as server:
        exporter, result = _export(server, tmp_path, sorted(b.spans(), key=lambda s: s.end_time))
        assert result is SpanExportResult.SUCCESS
        items = server.transcript("golden")["items"]
        exporter.shutdown()
    return items


def _chat(b, start_ms, end_ms, inputs, outputs, **usage):
    attributes = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": MODEL,
        "gen_ai.input.messages": json.dumps(inputs),
        "gen_ai.output.messages": json.dumps(outputs),
    }
    b.span("chat", start_ms, end_ms, {**attributes, **{f"gen_ai.usage.{k}": v for k, v in usage.items()}})


def test_a_tool_result_sent_in_a_user_message_is_the_tools_not_the_users(tmp_path):
    # Anthropic carries tool results in a role=user message: they answer the tool call, nobody said them.
    b = Builder({"gen_ai.conversation.id": "golden"})
    _chat(b, 1, 10, HISTORY_1, OUTPUT_1, input_tokens=50, output_tokens=12)
    result_from_user = {"role": "user", "parts": [{"type": "tool_call_response", "id": "call_1", "response": RESULT}]}
    _chat(b, 20, 30, [*HISTORY_1, _parts("assistant", tool_call=True), result_from_user], OUTPUT_2, input_tokens=80)
    items = _items(b, tmp_path)
    assert [(i["sender"], i["content"]) for i in items if i["type"] == "message"] == [
        ("end_user", QUESTION),
        ("agent", ANSWER),
    ]
    assert [(i["name"], i["response"]) for i in items if i["type"] == "action"] == [("get_weather", RESULT)]


def test_an_agent_spans_usage_totals_are_not_counted_again(tmp_path):
    # invoke_agent may carry the turn's total usage (Recommended by the conventions): the model calls already count.
    b = Builder(
        {
            "gen_ai.conversation.id": "golden",
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.usage.input_tokens": 130,
            "gen_ai.usage.output_tokens": 21,
        }
    )
    _chat(b, 1, 10, HISTORY_1, OUTPUT_1, input_tokens=50, output_tokens=12)
    _chat(b, 20, 30, [*HISTORY_1, _parts("user", "and tomorrow?")], OUTPUT_2, input_tokens=80, output_tokens=9)
    usage = [(i["input_tokens"], i["output_tokens"]) for i in _items(b, tmp_path) if i["type"] == "token_usage"]
    assert usage == [(50, 12), (80, 9)]


def test_embedding_calls_count_embedding_tokens(tmp_path):
    b = Builder({"gen_ai.conversation.id": "golden"})
    b.span(
        "embeddings",
        1,
        2,
        {
            "gen_ai.operation.name": "embeddings",
            "gen_ai.request.model": "text-embedding-3-small",
            "gen_ai.usage.input_tokens": 8,
        },
    )
    usage = [i for i in _items(b, tmp_path) if i["type"] == "token_usage"]
    assert len(usage) == 1 and usage[0]["input_tokens"] == 0 and usage[0]["embedding_tokens"] == 8
    assert usage[0]["total_tokens"] == 8


def test_an_agent_spans_usage_counts_when_its_model_calls_reported_none(tmp_path):
    # A streamed chat call without usage and an embeddings call: the agent span's totals are the only chat tokens.
    b = Builder(
        {
            "gen_ai.conversation.id": "golden",
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.usage.input_tokens": 130,
            "gen_ai.usage.output_tokens": 21,
        }
    )
    b.span("embeddings", 1, 2, {"gen_ai.operation.name": "embeddings", "gen_ai.usage.input_tokens": 8})
    _chat(b, 3, 10, HISTORY_1, OUTPUT_2)
    usage = sorted(
        (i["input_tokens"], i["output_tokens"], i["embedding_tokens"])
        for i in _items(b, tmp_path)
        if i["type"] == "token_usage"
    )
    assert usage == [(0, 0, 8), (130, 21, 0)]
