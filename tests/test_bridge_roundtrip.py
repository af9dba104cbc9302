"""Round trips: an app's OpenTelemetry SDK with the official OTLP/HTTP exporter -> bridge -> AgentSight (the local
server); what the app tracked is what AgentSight stores, whatever the compression, through backpressure, and
with AgentSight refusing or down."""

from __future__ import annotations

import json

import pytest
import requests
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

from agentsight_otel import ConversationTracker
from agentsight_otel.bridge import Bridge, BridgeSettings
from agentsight_otel.localserver import Faults, LocalServer

from .helpers import wait_until
from .test_bridge_helpers import PROTOBUF, body_of, tracker_spans


def _items(transcript):
    return [(i["type"], i.get("sender"), i.get("content")) for i in (transcript or {"items": []})["items"]]


def _app(endpoint: str, compression=Compression.NoCompression, **exporter_args):
    provider = TracerProvider(resource=Resource.create({"service.name": "app-under-test"}))
    exporter = OTLPSpanExporter(endpoint=endpoint, compression=compression, **exporter_args)
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=10_000, schedule_delay_millis=50))
    tracker = ConversationTracker()
    tracker.configure(tracer_provider=provider)
    return provider, tracker


def _track(tracker, conversation_id: str, turns: int) -> list[tuple[str, str, str]]:
    expected = []
    tracker.get_or_create_conversation(conversation_id, customer_id="cust-1", name=f"chat {conversation_id}")
    for n in range(turns):
        question, answer = f"{conversation_id} question {n} ✓", f"{conversation_id} answer {n}"
        tracker.track_human_message(question)
        tracker.track_agent_message(answer)
        expected += [("message", "end_user", question), ("message", "agent", answer)]
    tracker.send_tracked_data()
    return expected


@pytest.fixture
def server():
    with LocalServer() as srv:
        yield srv


@pytest.fixture
def bridge(server):
    with Bridge(BridgeSettings(port=0), api_key=server.api_key, endpoint=server.url) as running:
        yield running


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip, Compression.Deflate])
def test_tracked_conversations_arrive_through_the_bridge(server, bridge, compression):
    provider, tracker = _app(bridge.traces_url, compression)
    expected = {cid: _track(tracker, cid, 3) for cid in ("rt-a", "rt-b", "rt-c")}
    provider.force_flush()
    for cid, items in expected.items():
        wait_until(lambda cid=cid, items=items: _items(server.transcript(cid)) == items, timeout=15)
    conversation = server.transcript("rt-a")["conversation"]
    assert conversation["customer_id"] == "cust-1" and conversation["name"] == "chat rt-a"
    assert bridge.stats()["queue"]["spans_failed"] == 0
    provider.shutdown()
    tracker.shutdown()


def test_genai_spans_from_an_instrumented_app_arrive_through_the_bridge(server, bridge):
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=bridge.traces_url)))
    tracer = provider.get_tracer("genai-app")
    with tracer.start_as_current_span(
        "invoke_agent", attributes={"gen_ai.conversation.id": "genai-1", "gen_ai.operation.name": "invoke_agent"}
    ):
        with tracer.start_as_current_span(
            "chat gpt-4o-mini",
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": "openai",
                "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.input.messages": json.dumps(
                    [{"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]}]
                ),
                "gen_ai.output.messages": json.dumps(
                    [{"role": "assistant", "parts": [{"type": "text", "content": "Sunny."}]}]
                ),
                "gen_ai.usage.input_tokens": 12,
                "gen_ai.usage.output_tokens": 3,
            },
        ):
            pass
    provider.force_flush()
    wait_until(
        lambda: (
            ("message", "end_user", "Weather in Paris?") in _items(server.transcript("genai-1"))
            and ("message", "agent", "Sunny.") in _items(server.transcript("genai-1"))
        ),
        timeout=20,
    )
    provider.shutdown()


def test_nothing_is_lost_while_the_bridge_answers_503(server, bridge):
    provider, tracker = _app(bridge.traces_url, Compression.Gzip, timeout=30)
    bridge.unavailable(1.5)  # the exporter honours Retry-After (2 s) and retries
    expected = _track(tracker, "rt-503", 4)
    provider.force_flush()
    wait_until(lambda: _items(server.transcript("rt-503")) == expected, timeout=30)
    assert bridge.stats()["queue"]["spans_accepted"] >= 1
    provider.shutdown()
    tracker.shutdown()


def test_agentsight_refusing_a_block_is_a_partial_success(server, bridge):
    server.set_faults(Faults(status_rates={400: 1.0}))
    response = requests.post(
        bridge.traces_url, data=body_of(tracker_spans(2)), headers={"Content-Type": PROTOBUF}, timeout=30
    )
    assert response.status_code == 200
    answer = ExportTraceServiceResponse.FromString(response.content)
    assert answer.partial_success.rejected_spans == 2
    assert "400" in answer.partial_success.error_message
    assert bridge.exporter.stats()["dead"] >= 1


def test_agentsight_down_with_a_spool_is_accepted_and_delivered_later(server, bridge):
    server.outage(1.0, mode="503")
    response = requests.post(
        bridge.traces_url, data=body_of(tracker_spans(4, "down")), headers={"Content-Type": PROTOBUF}, timeout=30
    )
    assert response.status_code == 200  # safe in the bridge's spool
    wait_until(lambda: len(_items(server.transcript("down-0"))) == 8, timeout=30)


def test_a_full_spool_answers_503_and_loses_nothing_it_acknowledged(server, tmp_path):
    # The bridge's spool refuses when full instead of dropping its oldest entries, which were answered 200.
    with Bridge(
        BridgeSettings(port=0), api_key=server.api_key, endpoint=server.url, spool_max_bytes=4000, timeout=1
    ) as bridge:
        server.outage(60, mode="503")
        statuses = {}
        for n in range(40):
            response = requests.post(
                bridge.traces_url,
                data=body_of(tracker_spans(4, f"full{n}")),
                headers={"Content-Type": PROTOBUF},
                timeout=30,
            )
            statuses[f"full{n}-0"] = response.status_code
            if response.status_code == 503:
                break
        acknowledged = [cid for cid, status in statuses.items() if status == 200]
        assert acknowledged and list(statuses.values())[-1] == 503, statuses
        server.outage(0)
        for cid in acknowledged:
            wait_until(lambda cid=cid: len(_items(server.transcript(cid))) == 8, timeout=30)
        assert bridge.exporter.spool.stats().dropped_entries == 0


def test_agentsight_down_without_a_spool_is_503_so_the_collector_keeps_the_data(server):
    with Bridge(
        BridgeSettings(port=0, retry_after=7), api_key=server.api_key, endpoint=server.url, spool_dir="off", timeout=1
    ) as bridge:
        server.outage(30, mode="503")
        response = requests.post(
            bridge.traces_url, data=body_of(tracker_spans(2)), headers={"Content-Type": PROTOBUF}, timeout=30
        )
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "7"
        server.outage(0)
