"""Helpers shared by the bridge and collector tests (no tests here): OTLP bodies built from real SDK spans, a
recording exporter, and a bridge on a free loopback port."""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import threading
import zlib
from collections.abc import Iterator, Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentsight_otel.bridge import Bridge, BridgeSettings

PROTOBUF = "application/x-protobuf"
JSON = "application/json"


def tracker_spans(count: int, conversation: str = "conv", per_conversation: int = 4) -> list[ReadableSpan]:
    """``count`` spans shaped like the tracker's: a conversation id and two message events each."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bridge-test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("bridge-test", "1.0")
    for n in range(count):
        cid = f"{conversation}-{n // per_conversation}"
        span = tracer.start_span(
            "agentsight.tracker", attributes={"agentsight.conversation.id": cid, "agentsight.span.kind": "tracker"}
        )
        span.add_event(
            "agentsight.message",
            {"agentsight.message.sender": "end_user", "agentsight.message.content": f"question {n}"},
        )
        span.add_event(
            "agentsight.message", {"agentsight.message.sender": "agent", "agentsight.message.content": f"answer {n}"}
        )
        span.end()
    return list(memory.get_finished_spans())


def request_of(spans: Sequence[ReadableSpan]) -> ExportTraceServiceRequest:
    """The request the official OTLP exporters send for these spans."""
    return encode_spans(spans)


def otlp_json(request: ExportTraceServiceRequest) -> dict[str, Any]:
    """OTLP/JSON as the collector writes it: camelCase, int64 as strings, enums as integers, ids as hex."""
    document = MessageToDict(request, use_integers_for_enums=True)

    def hexify(obj: dict[str, Any]) -> None:
        for key in ("traceId", "spanId", "parentSpanId"):
            if key in obj:
                obj[key] = base64.b64decode(obj[key]).hex()

    for resource_spans in document.get("resourceSpans", []):
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                hexify(span)
                for link in span.get("links", []):
                    hexify(link)
    return document


def body_of(spans_or_request: Any, media: str = PROTOBUF, encoding: str | None = None) -> bytes:
    request = (
        spans_or_request if isinstance(spans_or_request, ExportTraceServiceRequest) else request_of(spans_or_request)
    )
    raw = request.SerializeToString() if media == PROTOBUF else json.dumps(otlp_json(request)).encode()
    if encoding == "gzip":
        return gzip.compress(raw)
    if encoding == "deflate":
        return zlib.compress(raw)
    return raw


class RecordingExporter(SpanExporter):
    """Keeps what it is given; can fail, or hold each export until ``gate`` is set."""

    def __init__(self, result: SpanExportResult = SpanExportResult.SUCCESS) -> None:
        self.result = result
        self.batches: list[list[ReadableSpan]] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.shut_down = False
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(30)
        with self.lock:
            self.batches.append(list(spans))
        return self.result

    def shutdown(self) -> None:
        self.shut_down = True

    @property
    def spans(self) -> list[ReadableSpan]:
        with self.lock:
            return [s for batch in self.batches for s in batch]


@contextlib.contextmanager
def running_bridge(exporter: SpanExporter | None = None, **settings: Any) -> Iterator[Bridge]:
    settings.setdefault("port", 0)
    bridge = Bridge(BridgeSettings(**settings), exporter=exporter or RecordingExporter())
    bridge.start()
    try:
        yield bridge
    finally:
        bridge.stop(timeout=10)
