"""OTLP requests in, SDK ``ReadableSpan`` objects out, as the SDK would have built them.

Two sources: a protobuf ``ExportTraceServiceRequest`` (HTTP protobuf and gRPC), and an OTLP/JSON document read
straight from its dict (hex ids, int64 as strings or numbers, enums as integers or names, camelCase or the
original snake_case names, unknown fields ignored) without a detour through the protobuf JSON mapping, which is
several times slower.

Everything is carried over: resource (with schema URL), instrumentation scope (name, version, schema URL,
attributes), attributes of every ``AnyValue`` type (strings, bools, ints, doubles, bytes, arrays as tuples, kvlists
as dicts, nested), events, links (with trace state and flags), status, kind, parent (and whether it is remote),
trace state, trace flags and the dropped counts. A span whose trace or span id is invalid is refused alone and
counted, so the request can be answered with a partial success; a document that is not OTLP at all is a 400.

This runs once per received span, so shared parts are built once: a resource and a scope per request block (and
cached across requests), trace states and flags from caches, and spans directly through their constructor.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

from ..jsondoc import dumps
from .decode import RequestError

# OTLP Span.SpanKind: 0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer.
_KINDS = (
    SpanKind.INTERNAL,
    SpanKind.INTERNAL,
    SpanKind.SERVER,
    SpanKind.CLIENT,
    SpanKind.PRODUCER,
    SpanKind.CONSUMER,
)
_KIND_NAMES = {
    "SPAN_KIND_UNSPECIFIED": 0,
    "SPAN_KIND_INTERNAL": 1,
    "SPAN_KIND_SERVER": 2,
    "SPAN_KIND_CLIENT": 3,
    "SPAN_KIND_PRODUCER": 4,
    "SPAN_KIND_CONSUMER": 5,
}
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_UNSET = Status(StatusCode.UNSET)
_OK = Status(StatusCode.OK)
# SpanFlags: the low byte is the W3C trace flags; bit 8 says whether bit 9 (the parent is remote) is known.
_HAS_IS_REMOTE = 0x100
_IS_REMOTE = 0x200
# Only sampled spans are exported, and many senders (the Python SDK among them) leave the low byte at 0.
_FLAGS = tuple(TraceFlags(n or TraceFlags.SAMPLED) for n in range(256))
_CACHE_SIZE = 512
_BAD_IDS = "spans need a 16-byte trace id and an 8-byte span id, not all zero"


@dataclass
class Converted:
    """The spans of one request, and what was refused."""

    spans: list[ReadableSpan] = field(default_factory=list)
    rejected: int = 0
    reason: str | None = None

    def refuse(self, count: int, reason: str) -> None:
        self.rejected += count
        if self.reason is None:
            self.reason = reason


class _DroppedCountsSpan(ReadableSpan):
    """A ``ReadableSpan`` that reports the dropped counts the sender recorded (only used when any is non-zero)."""

    _bridge_dropped: tuple[int, int, int] = (0, 0, 0)

    @property
    def dropped_attributes(self) -> int:
        return self._bridge_dropped[0]

    @property
    def dropped_events(self) -> int:
        return self._bridge_dropped[1]

    @property
    def dropped_links(self) -> int:
        return self._bridge_dropped[2]


# -- protobuf values ------------------------------------------------------------------------------------------


# The AnyValue fields that hold a plain Python value, named as ``WhichOneof`` names them.
_PLAIN_FIELDS = frozenset({"string_value", "bool_value", "int_value", "double_value", "bytes_value"})


def value(any_value: Any) -> Any:
    """An OTLP ``AnyValue`` message as the Python value the SDK uses; ``None`` when it holds nothing."""
    kind = any_value.WhichOneof("value")
    if kind in _PLAIN_FIELDS:
        return getattr(any_value, kind)
    if kind == "array_value":
        return tuple([value(v) for v in any_value.array_value.values])
    if kind == "kvlist_value":
        return {kv.key: value(kv.value) for kv in any_value.kvlist_value.values}
    return None


def attributes(key_values: Iterable[Any]) -> dict[str, Any]:
    """``KeyValue`` messages -> dict; an empty value is left out, as the SDK leaves out ``None`` attributes."""
    result: dict[str, Any] = {}
    for kv in key_values:
        v = kv.value
        # Most values are non-empty strings: reading the field directly skips the WhichOneof call. An empty
        # string reads the same as any other kind, so it takes the general path (which keeps an explicit "").
        text = v.string_value
        if text:
            result[kv.key] = text
            continue
        kind = v.WhichOneof("value")
        if kind in _PLAIN_FIELDS:  # numbers and bools, without a second call
            result[kv.key] = getattr(v, kind)
        elif kind is not None:  # arrays and kvlists
            result[kv.key] = value(v)
    return result


# -- OTLP/JSON values -----------------------------------------------------------------------------------------


def _get(obj: dict[str, Any], camel: str, snake: str) -> Any:
    found = obj.get(camel)
    return obj.get(snake) if found is None else found


def _objects(obj: dict[str, Any], camel: str, snake: str) -> list[dict[str, Any]]:
    found = _get(obj, camel, snake)
    if found is None:
        return []
    if not isinstance(found, list) or not all(isinstance(item, dict) for item in found):
        raise ValueError(f"{camel} must be a list of objects")
    return found


def _time(raw: Any) -> int:
    """An OTLP/JSON time in nanoseconds: a fixed64, as protobuf would have carried it."""
    value = _int(raw)
    if not 0 <= value < 2**64:
        raise ValueError("timestamps must be unsigned 64-bit integers")
    return value


def _int(raw: Any) -> int:
    """An OTLP/JSON integer: a number or a decimal string (int64 is written as a string)."""
    if raw is None:
        return 0
    if isinstance(raw, bool):
        raise ValueError("a boolean is not an integer")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str):
        return int(raw.strip())
    raise ValueError(f"not an integer: {raw!r}")


def _double(raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("a boolean is not a number")
    if isinstance(raw, (int, float)):
        return float(raw)
    if isinstance(raw, str):
        return float(raw)  # also "NaN", "Infinity", "-Infinity"
    raise ValueError(f"not a number: {raw!r}")


def _enum(raw: Any, names: dict[str, int]) -> int:
    if isinstance(raw, str) and raw in names:
        return names[raw]
    return _int(raw)


def json_value(raw: Any) -> Any:
    """An OTLP/JSON ``AnyValue`` object as the Python value the SDK uses; ``None`` when it holds nothing."""
    if not isinstance(raw, dict):
        raise ValueError("an AnyValue must be an object")
    for key, item in raw.items():
        if key in ("stringValue", "string_value"):
            if not isinstance(item, str):
                raise ValueError("stringValue must be a string")
            return item
        if key in ("intValue", "int_value"):
            return _int(item)
        if key in ("boolValue", "bool_value"):
            if not isinstance(item, bool):
                raise ValueError("boolValue must be true or false")
            return item
        if key in ("doubleValue", "double_value"):
            return _double(item)
        if key in ("arrayValue", "array_value"):
            return tuple([json_value(v) for v in _objects(item, "values", "values")])
        if key in ("kvlistValue", "kvlist_value"):
            return {
                str(kv.get("key", "")): json_value(kv.get("value") or {}) for kv in _objects(item, "values", "values")
            }
        if key in ("bytesValue", "bytes_value"):
            if not isinstance(item, str):
                raise ValueError("bytesValue must be a base64 string")
            return base64.b64decode(item)
    return None


def json_attributes(raw: Any) -> dict[str, Any]:
    """OTLP/JSON ``KeyValue`` list -> dict, leaving out empty values."""
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ValueError("attributes must be a list")
    result: dict[str, Any] = {}
    for kv in raw:
        if not isinstance(kv, dict):
            raise ValueError("an attribute must be an object")
        v = kv.get("value")
        if v is None:
            continue
        if isinstance(v, dict) and len(v) == 1 and "stringValue" in v and isinstance(v["stringValue"], str):
            result[str(kv.get("key", ""))] = v["stringValue"]
            continue
        converted = json_value(v)
        if converted is not None:
            result[str(kv.get("key", ""))] = converted
    return result


def json_id(raw: Any, size: int) -> int | None:
    """A hex (per OTLP/JSON) id of ``size`` bytes as an int; 0 when absent; ``None`` when unreadable."""
    if raw is None or raw == "":
        return 0
    if not isinstance(raw, str):
        return None
    if len(raw) == 2 * size:
        try:
            return int(raw, 16) if all(c in "0123456789abcdefABCDEF" for c in raw) else None
        except ValueError:
            return None
    try:  # not hex: accept base64 of the right length, as some non-conforming senders write it
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return None
    return int.from_bytes(data, "big") if len(data) == size else None


# -- the converter --------------------------------------------------------------------------------------------


class Converter:
    """Turns requests into spans; keeps small caches of resources, scopes and trace states between requests."""

    def __init__(self) -> None:
        self._resources: dict[bytes, Resource] = {}
        self._scopes: dict[bytes, InstrumentationScope] = {}
        self._trace_states: dict[str, TraceState] = {}

    def convert(self, request: ExportTraceServiceRequest | dict[str, Any]) -> Converted:
        """Spans from a protobuf request or an OTLP/JSON document (a 400 ``RequestError`` if it is not OTLP)."""
        if isinstance(request, dict):
            try:
                return self._convert_json(request)
            except (ValueError, TypeError, AttributeError, RecursionError, OverflowError) as exc:
                raise RequestError(
                    400, f"the body is not a valid OTLP/JSON ExportTraceServiceRequest ({exc})"
                ) from None
        return self._convert_protobuf(request)

    # -- shared parts ---------------------------------------------------------------------------------------

    def _cached_resource(self, key: bytes, build: Any) -> Resource:
        resource = self._resources.get(key)
        if resource is None:
            if len(self._resources) >= _CACHE_SIZE:
                self._resources.clear()
            resource = self._resources[key] = build()
        return resource

    def _cached_scope(self, key: bytes, build: Any) -> InstrumentationScope:
        scope = self._scopes.get(key)
        if scope is None:
            if len(self._scopes) >= _CACHE_SIZE:
                self._scopes.clear()
            scope = self._scopes[key] = build()
        return scope

    def _trace_state(self, header: str) -> TraceState | None:
        if not header:
            return None
        state = self._trace_states.get(header)
        if state is None:
            if len(self._trace_states) >= _CACHE_SIZE:
                self._trace_states.clear()
            state = self._trace_states[header] = TraceState.from_header([header])
        return state

    def _build(
        self,
        name: str,
        trace_id: int,
        span_id: int,
        parent_id: int,
        flags: int,
        trace_state: TraceState | None,
        attrs: dict[str, Any],
        events: Sequence[Event],
        links: Sequence[Link],
        status: Status,
        kind: int,
        start: int,
        end: int,
        dropped: tuple[int, int, int],
        resource: Resource,
        scope: InstrumentationScope,
    ) -> ReadableSpan:
        trace_flags = _FLAGS[flags & 0xFF]
        context = SpanContext(trace_id, span_id, False, trace_flags, trace_state)
        parent = None
        if parent_id:
            remote = bool(flags & _IS_REMOTE) if flags & _HAS_IS_REMOTE else False
            parent = SpanContext(trace_id, parent_id, remote, trace_flags, trace_state)
        has_dropped = dropped[0] or dropped[1] or dropped[2]
        built = (_DroppedCountsSpan if has_dropped else ReadableSpan)(
            name,
            context=context,
            parent=parent,
            resource=resource,
            attributes=attrs,
            events=events,
            links=links,
            kind=_KINDS[kind] if 0 <= kind < 6 else SpanKind.INTERNAL,
            status=status,
            start_time=start,
            end_time=end,
            instrumentation_scope=scope,
        )
        if has_dropped:
            built._bridge_dropped = dropped  # type: ignore[attr-defined]
        return built

    def _link(self, trace_id: int, span_id: int, flags: int, trace_state: str, attrs: dict[str, Any]) -> Link:
        context = SpanContext(
            trace_id,
            span_id,
            bool(flags & _IS_REMOTE) if flags & _HAS_IS_REMOTE else False,
            _FLAGS[flags & 0xFF],
            self._trace_state(trace_state),
        )
        return Link(context, attrs or None)

    @staticmethod
    def _status(code: int, message: str) -> Status:
        if code == 1:
            return _OK
        if code == 2:
            return Status(StatusCode.ERROR, message or None)
        return _UNSET

    # -- protobuf -------------------------------------------------------------------------------------------

    def _convert_protobuf(self, request: ExportTraceServiceRequest) -> Converted:
        out = Converted()
        append = out.spans.append
        for resource_spans in request.resource_spans:
            res = resource_spans.resource
            schema = resource_spans.schema_url
            resource = self._cached_resource(
                res.SerializeToString() + b"\0" + schema.encode(),
                lambda res=res, schema=schema: Resource(attributes(res.attributes), schema or None),
            )
            for scope_spans in resource_spans.scope_spans:
                sc, sc_schema = scope_spans.scope, scope_spans.schema_url
                scope = self._cached_scope(
                    sc.SerializeToString() + b"\0" + sc_schema.encode(),
                    lambda sc=sc, sc_schema=sc_schema: InstrumentationScope(
                        sc.name, sc.version or None, sc_schema or None, attributes(sc.attributes) or None
                    ),
                )
                for span in scope_spans.spans:
                    built = self._protobuf_span(span, resource, scope)
                    if built is None:
                        out.refuse(1, _BAD_IDS)
                    else:
                        append(built)
        return out

    def _protobuf_span(self, span: Any, resource: Resource, scope: InstrumentationScope) -> ReadableSpan | None:
        raw_trace, raw_span, raw_parent = span.trace_id, span.span_id, span.parent_span_id
        if len(raw_trace) != 16 or len(raw_span) != 8 or (raw_parent and len(raw_parent) != 8):
            return None
        trace_id = int.from_bytes(raw_trace, "big")
        span_id = int.from_bytes(raw_span, "big")
        if not trace_id or not span_id:
            return None
        raw_events = span.events
        events = [Event(e.name, attributes(e.attributes), e.time_unix_nano) for e in raw_events] if raw_events else ()
        links = (
            [
                self._link(
                    int.from_bytes(link.trace_id, "big"),
                    int.from_bytes(link.span_id, "big"),
                    link.flags,
                    link.trace_state,
                    attributes(link.attributes),
                )
                for link in span.links
            ]
            if span.links
            else ()
        )
        status = span.status
        return self._build(
            span.name,
            trace_id,
            span_id,
            int.from_bytes(raw_parent, "big") if raw_parent else 0,
            span.flags,
            self._trace_state(span.trace_state),
            attributes(span.attributes),
            events,
            links,
            self._status(status.code, status.message),
            span.kind,
            span.start_time_unix_nano,
            span.end_time_unix_nano,
            (span.dropped_attributes_count, span.dropped_events_count, span.dropped_links_count),
            resource,
            scope,
        )

    # -- OTLP/JSON ------------------------------------------------------------------------------------------

    def _convert_json(self, document: dict[str, Any]) -> Converted:
        out = Converted()
        append = out.spans.append
        for resource_spans in _objects(document, "resourceSpans", "resource_spans"):
            res = _get(resource_spans, "resource", "resource") or {}
            schema = str(_get(resource_spans, "schemaUrl", "schema_url") or "")
            resource = self._cached_resource(
                dumps([res, schema]),
                lambda res=res, schema=schema: Resource(json_attributes(res.get("attributes")), schema or None),
            )
            for scope_spans in _objects(resource_spans, "scopeSpans", "scope_spans"):
                sc = scope_spans.get("scope") or {}
                sc_schema = str(_get(scope_spans, "schemaUrl", "schema_url") or "")
                scope = self._cached_scope(
                    dumps([sc, sc_schema]),
                    lambda sc=sc, sc_schema=sc_schema: InstrumentationScope(
                        str(sc.get("name") or ""),
                        sc.get("version") or None,
                        sc_schema or None,
                        json_attributes(sc.get("attributes")) or None,
                    ),
                )
                for span in _objects(scope_spans, "spans", "spans"):
                    built = self._json_span(span, resource, scope)
                    if built is None:
                        out.refuse(1, _BAD_IDS)
                    else:
                        append(built)
        return out

    def _json_span(self, span: dict[str, Any], resource: Resource, scope: InstrumentationScope) -> ReadableSpan | None:
        trace_id = json_id(_get(span, "traceId", "trace_id"), 16)
        span_id = json_id(_get(span, "spanId", "span_id"), 8)
        parent_id = json_id(_get(span, "parentSpanId", "parent_span_id"), 8)
        if not trace_id or not span_id or parent_id is None:
            return None
        events = [
            Event(
                str(e.get("name") or ""),
                json_attributes(e.get("attributes")),
                _time(_get(e, "timeUnixNano", "time_unix_nano")),
            )
            for e in _objects(span, "events", "events")
        ]
        links = []
        for link in _objects(span, "links", "links"):
            link_trace = json_id(_get(link, "traceId", "trace_id"), 16) or 0
            link_span = json_id(_get(link, "spanId", "span_id"), 8) or 0
            links.append(
                self._link(
                    link_trace,
                    link_span,
                    _int(link.get("flags")),
                    str(_get(link, "traceState", "trace_state") or ""),
                    json_attributes(link.get("attributes")),
                )
            )
        status = span.get("status") or {}
        start = _time(_get(span, "startTimeUnixNano", "start_time_unix_nano"))
        end = _time(_get(span, "endTimeUnixNano", "end_time_unix_nano"))
        return self._build(
            str(span.get("name") or ""),
            trace_id,
            span_id,
            parent_id,
            _int(span.get("flags")),
            self._trace_state(str(_get(span, "traceState", "trace_state") or "")),
            json_attributes(span.get("attributes")),
            events,
            links,
            self._status(_enum(status.get("code"), _STATUS_NAMES), str(status.get("message") or "")),
            _enum(span.get("kind"), _KIND_NAMES),
            start,
            end,
            (
                _int(_get(span, "droppedAttributesCount", "dropped_attributes_count")),
                _int(_get(span, "droppedEventsCount", "dropped_events_count")),
                _int(_get(span, "droppedLinksCount", "dropped_links_count")),
            ),
            resource,
            scope,
        )


__all__ = ["Converted", "Converter", "attributes", "json_attributes", "json_id", "json_value", "value"]
