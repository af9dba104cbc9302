"""OTLP -> ReadableSpan: every field an SDK span has survives the trip through the official encoder and back,
in protobuf and in OTLP/JSON as a collector writes it."""

from __future__ import annotations

import base64
import json
import math

import pytest
from google.protobuf.json_format import MessageToDict
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

from agentsight_otel.bridge.convert import Converter, json_value, value
from agentsight_otel.bridge.decode import JSON, PROTOBUF, RequestError, parse

from .test_bridge_helpers import otlp_json, request_of

T0 = 1_800_000_000_123_456_789
ATTRIBUTES = {
    "text": "héllo 漢字 🙂",
    "flag": True,
    "count": 42,
    "big": 2**62 + 7,
    "negative": -5,
    "ratio": 0.25,
    "words": ("a", "b"),
    "numbers": (1, 2, 3),
    "bools": (True, False),
    "floats": (1.5, -2.0),
    "blob": b"\x00\xffbytes",
    "mapping": {"k": "v", "n": 1, "inner": {"deep": (1, "x")}},
    "nested": ((1, 2), ("a",)),
}


def _rich_spans():
    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource({"service.name": "svc", "service.version": "3", "host.tags": ("a", "b")}, "https://r/1.0")
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("my.lib", "2.0", "https://s/1.1", attributes={"scope.attr": "v"})
    remote_parent = SpanContext(
        0x0123456789ABCDEF0123456789ABCDEF,
        0x1111111111111111,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "v1"), ("other", "x")]),
    )
    linked = SpanContext(0xAAAA0000000000000000000000000001, 0x2222222222222222, is_remote=True)
    root = tracer.start_span(
        "chat gpt-4o",
        context=trace.set_span_in_context(trace.NonRecordingSpan(remote_parent)),
        kind=SpanKind.CLIENT,
        attributes=ATTRIBUTES,
        links=[Link(linked, {"link.attr": "l", "link.n": 3})],
        start_time=T0,
    )
    root.add_event("first", {"e.text": "x", "e.list": (1, 2)}, timestamp=T0 + 10)
    root.add_event("second", {}, timestamp=T0 + 20)
    root.set_status(Status(StatusCode.ERROR, "it broke"))
    child = tracer.start_span(
        "tool", context=trace.set_span_in_context(root), kind=SpanKind.INTERNAL, start_time=T0 + 30
    )
    child.set_status(Status(StatusCode.OK))
    child.end(end_time=T0 + 40)
    root.end(end_time=T0 + 50)
    producer = tracer.start_span("send", kind=SpanKind.PRODUCER, start_time=T0)
    producer.end(end_time=T0 + 1)
    server = tracer.start_span("recv", kind=SpanKind.SERVER, start_time=T0)
    server.end(end_time=T0 + 1)
    consumer = tracer.start_span("consume", kind=SpanKind.CONSUMER, start_time=T0)
    consumer.end(end_time=T0 + 1)
    return list(memory.get_finished_spans())


def _same(original, rebuilt):
    assert rebuilt.name == original.name
    assert rebuilt.context.trace_id == original.context.trace_id
    assert rebuilt.context.span_id == original.context.span_id
    assert rebuilt.context.trace_state == original.context.trace_state
    assert rebuilt.context.trace_flags.sampled
    assert rebuilt.context.is_remote is False
    if original.parent is None:
        assert rebuilt.parent is None
    else:
        assert rebuilt.parent.span_id == original.parent.span_id
        assert rebuilt.parent.trace_id == original.parent.trace_id
        assert rebuilt.parent.is_remote == original.parent.is_remote
    assert rebuilt.kind == original.kind
    assert rebuilt.status.status_code == original.status.status_code
    assert rebuilt.status.description == original.status.description
    assert (rebuilt.start_time, rebuilt.end_time) == (original.start_time, original.end_time)
    assert dict(rebuilt.attributes) == dict(original.attributes)
    assert [(e.name, e.timestamp, dict(e.attributes)) for e in rebuilt.events] == [
        (e.name, e.timestamp, dict(e.attributes)) for e in original.events
    ]
    assert [
        (lk.context.trace_id, lk.context.span_id, lk.context.is_remote, dict(lk.attributes or {}))
        for lk in rebuilt.links
    ] == [(lk.context.trace_id, lk.context.span_id, lk.context.is_remote, dict(lk.attributes)) for lk in original.links]
    assert dict(rebuilt.resource.attributes) == dict(original.resource.attributes)
    assert rebuilt.resource.schema_url == original.resource.schema_url
    scope, original_scope = rebuilt.instrumentation_scope, original.instrumentation_scope
    assert (scope.name, scope.version, scope.schema_url) == (
        original_scope.name,
        original_scope.version,
        original_scope.schema_url,
    )
    assert dict(scope.attributes or {}) == dict(original_scope.attributes or {})


def test_protobuf_round_trip_keeps_every_field():
    spans = _rich_spans()
    request = ExportTraceServiceRequest.FromString(request_of(spans).SerializeToString())
    converted = Converter().convert(request)
    assert converted.rejected == 0
    assert len(converted.spans) == len(spans)
    by_id = {s.context.span_id: s for s in converted.spans}
    for original in spans:
        _same(original, by_id[original.context.span_id])
    kinds = {s.name: s.kind for s in converted.spans}
    assert kinds == {
        "chat gpt-4o": SpanKind.CLIENT,
        "tool": SpanKind.INTERNAL,
        "send": SpanKind.PRODUCER,
        "recv": SpanKind.SERVER,
        "consume": SpanKind.CONSUMER,
    }
    root = next(s for s in converted.spans if s.name == "chat gpt-4o")
    assert root.parent.is_remote is True
    assert root.context.trace_state.to_header() == "vendor=v1,other=x"


def test_otlp_json_round_trip_keeps_every_field():
    spans = _rich_spans()
    document = json.loads(json.dumps(otlp_json(request_of(spans))))
    first = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert len(first["traceId"]) == 32 and int(first["traceId"], 16)  # hex, as OTLP/JSON requires
    assert isinstance(first["startTimeUnixNano"], str)  # int64 as a string
    assert isinstance(first["kind"], int)  # enums as integers
    converted = Converter().convert(parse(json.dumps(document).encode(), JSON))
    assert converted.rejected == 0
    by_id = {s.context.span_id: s for s in converted.spans}
    for original in spans:
        _same(original, by_id[original.context.span_id])


def test_json_accepts_names_numbers_and_snake_case_and_ignores_unknown_fields():
    document = {
        "resource_spans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
                "unknownField": {"x": 1},
                "scope_spans": [
                    {
                        "scope": {"name": "lib"},
                        "spans": [
                            {
                                "trace_id": "0af7651916cd43dd8448eb211c80319c",
                                "span_id": "b7ad6b7169203331",
                                "name": "op",
                                "kind": "SPAN_KIND_SERVER",
                                "start_time_unix_nano": 1700000000000000000,
                                "end_time_unix_nano": "1700000000000000100",
                                "status": {"code": "STATUS_CODE_ERROR", "message": "bad"},
                                "attributes": [
                                    {"key": "i", "value": {"intValue": 7}},
                                    {"key": "s", "value": {"intValue": "-8"}},
                                    {"key": "d", "value": {"doubleValue": "NaN"}},
                                    {"key": "empty", "value": {}},
                                    {"key": "novalue"},
                                ],
                                "futureField": True,
                            }
                        ],
                    }
                ],
            }
        ]
    }
    converted = Converter().convert(document)
    (span,) = converted.spans
    assert span.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert span.kind == SpanKind.SERVER
    assert span.status.status_code == StatusCode.ERROR and span.status.description == "bad"
    assert span.start_time == 1700000000000000000 and span.end_time == 1700000000000000100
    assert span.attributes["i"] == 7 and span.attributes["s"] == -8 and math.isnan(span.attributes["d"])
    assert "empty" not in span.attributes and "novalue" not in span.attributes
    assert span.resource.attributes["service.name"] == "svc"


def test_every_anyvalue_type_in_protobuf_and_json():
    cases = [
        (AnyValue(string_value="s"), "s"),
        (AnyValue(bool_value=False), False),
        (AnyValue(int_value=-(2**63)), -(2**63)),
        (AnyValue(double_value=1e300), 1e300),
        (AnyValue(bytes_value=b"\x01\x02"), b"\x01\x02"),
        (AnyValue(), None),
    ]
    nested = AnyValue()
    nested.array_value.values.add(string_value="x")
    nested.array_value.values.add(int_value=2)
    inner = nested.array_value.values.add()
    inner.kvlist_value.values.add(key="k").value.bool_value = True
    cases.append((nested, ("x", 2, {"k": True})))
    for message, expected in cases:
        assert value(message) == expected
        assert json_value(json.loads(json.dumps(MessageToDict(message)))) == expected


def test_invalid_ids_refuse_only_those_spans():
    request = request_of(_rich_spans())
    spans = request.resource_spans[0].scope_spans[0].spans
    spans[0].trace_id = b"\x00" * 16
    spans[1].span_id = b"\x01\x02"
    spans[2].parent_span_id = b"\x01"
    converted = Converter().convert(request)
    assert converted.rejected == 3
    assert len(converted.spans) == 2
    assert "trace id" in converted.reason

    document = otlp_json(request_of(_rich_spans()))
    json_spans = document["resourceSpans"][0]["scopeSpans"][0]["spans"]
    json_spans[0]["traceId"] = "zz" * 16
    json_spans[1]["spanId"] = "abc"
    converted = Converter().convert(document)
    assert converted.rejected == 2
    assert len(converted.spans) == 3


def test_base64_ids_from_non_conforming_senders_are_accepted():
    document = otlp_json(request_of(_rich_spans()[:1]))
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    trace_id = int(span["traceId"], 16)
    span["traceId"] = base64.b64encode(trace_id.to_bytes(16, "big")).decode()
    (rebuilt,) = Converter().convert(document).spans
    assert rebuilt.context.trace_id == trace_id


def test_flags_and_dropped_counts():
    request = request_of(_rich_spans()[:2])
    first, second = request.resource_spans[0].scope_spans[0].spans
    first.flags = 0x01 | 0x100  # sampled, parent known to be local
    first.dropped_attributes_count = 3
    first.dropped_events_count = 2
    first.dropped_links_count = 1
    second.flags = 0  # nothing known (older senders): sampled is assumed, parent not remote
    a, b = Converter().convert(request).spans
    assert a.context.trace_flags == TraceFlags.SAMPLED
    assert (a.dropped_attributes, a.dropped_events, a.dropped_links) == (3, 2, 1)
    assert b.context.trace_flags.sampled
    assert b.parent is None or b.parent.is_remote is False
    assert (b.dropped_attributes, b.dropped_events, b.dropped_links) == (0, 0, 0)


def _document(span):
    return {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}


IDS = {"traceId": "0" * 31 + "1", "spanId": "0" * 15 + "1"}


@pytest.mark.parametrize(
    "document",
    [
        {"resourceSpans": {"not": "a list"}},
        _document({**IDS, "startTimeUnixNano": "soon"}),
        _document("not an object"),
        _document({**IDS, "attributes": [{"key": "k", "value": {"boolValue": "yes"}}]}),
        _document({**IDS, "attributes": {"k": "v"}}),
        _document({**IDS, "kind": "SPAN_KIND_BOGUS"}),
        _document({**IDS, "startTimeUnixNano": str(2**64)}),
        _document({**IDS, "events": [{"name": "e", "timeUnixNano": str(2**70)}]}),  # no datetime can show it
        _document({**IDS, "events": [{"name": "e", "timeUnixNano": -1}]}),
    ],
)
def test_malformed_json_documents_are_a_400(document):
    with pytest.raises(RequestError) as caught:
        Converter().convert(document)
    assert caught.value.status == 400


def test_parse_rejects_non_otlp_bodies():
    for body, media in ((b"\xff\xff\xff", PROTOBUF), (b"{nope", JSON), (b"[1, 2]", JSON)):
        with pytest.raises(RequestError) as caught:
            parse(body, media)
        assert caught.value.status == 400
    assert parse(b"", PROTOBUF).resource_spans == []
    assert parse(b"  ", JSON) == {}


def test_shared_resource_and_scope_objects_are_reused():
    converter = Converter()
    spans = _rich_spans()
    a = converter.convert(request_of(spans)).spans
    b = converter.convert(request_of(spans)).spans
    assert a[0].resource is a[1].resource is b[0].resource
    assert a[0].instrumentation_scope is b[0].instrumentation_scope
