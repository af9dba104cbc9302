"""Records to the AgentSight ingest payload (``POST /api/ingest/``), applying the block rules client-side.

AgentSight validates a whole batch at once, so one over-long name or malformed IP would refuse every
conversation in it. Every rule of the wire contract (allowed keys, 255-character fields, IP addresses,
environment slugs, metadata as an object, 16,384-character text) is applied here, with one warning per kind
of fix, so that what is sent always passes.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, NamedTuple

from . import semconv as sc
from .config import BUILTIN_ENVIRONMENTS, normalize_environment
from .jsondoc import MAX_TEXT, clamp_text, dumps, dumps_fast, encoded, loads, parse_document, safe_document
from .records import (
    Action,
    Attachments,
    Button,
    Conversation,
    ConversationBatch,
    ConversationOpened,
    Message,
    RawSpan,
    RecordKey,
    TokenUsage,
)
from .version import __version__

logger = logging.getLogger("agentsight_otel")

MAX_FIELD = 255
BLOCK_KEYS = (
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
)
_STRING_FIELDS = ("customer_id", "device", "source", "language", "name")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


_SECOND_PREFIX: dict[int, str] = {}
_LAST_NS = int(datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone.utc).timestamp()) * 1_000_000_000 + 999_999_999


def iso_time(ns: int | None) -> str | None:
    """ISO-8601 UTC with microseconds and a ``+00:00`` offset; ``None`` for 0 or missing.

    Called for every item: the date-and-second prefix is formatted once per second and reused. A time no ISO date
    can carry (a negative one, or one past the year 9999, which an app or a sender may hand in) is clamped to the
    nearest that can, so one bad timestamp cannot fail a whole export.
    """
    if not ns:
        return None
    if not 0 < ns <= _LAST_NS:
        ns = _LAST_NS if ns > 0 else 1
    seconds = ns // 1_000_000_000
    prefix = _SECOND_PREFIX.get(seconds)
    if prefix is None:
        if len(_SECOND_PREFIX) > 4096:
            _SECOND_PREFIX.clear()
        prefix = _SECOND_PREFIX[seconds] = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
    return "%s%06d+00:00" % (prefix, ns // 1000 % 1_000_000)  # noqa: UP031 - a fifth faster than the f-string


_TEXT_ATTRIBUTES = (sc.TOOL_RESPONSE, sc.TOOL_ERROR)
_NO_EVENTS: list[dict[str, Any]] = []  # shared by the spans without events: span dicts are serialised, never changed


def _plain(value: Any) -> Any:
    """An attribute value as JSON: tuples become lists, mappings are copied."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def span_dict(span: Any) -> dict[str, Any]:
    """A finished OpenTelemetry span as an AgentSight wire span, unchanged but for the text limits."""
    ctx = span.context
    attrs = {k: _plain(v) for k, v in (span.attributes or {}).items()}
    for name in _TEXT_ATTRIBUTES:
        if isinstance(attrs.get(name), str):
            attrs[name] = clamp_text(attrs[name])
    events = []
    for event in span.events:
        event_attrs = {k: _plain(v) for k, v in (event.attributes or {}).items()}
        if isinstance(event_attrs.get(sc.MESSAGE_CONTENT), str):
            event_attrs[sc.MESSAGE_CONTENT] = clamp_text(event_attrs[sc.MESSAGE_CONTENT])
        events.append({"name": event.name, "timestamp": iso_time(event.timestamp), "attributes": event_attrs})
    start, end = span.start_time or 0, span.end_time or 0
    parent = span.parent
    scope = span.instrumentation_scope
    resource = span.resource.attributes if span.resource is not None else {}
    return {
        "span_id": f"{ctx.span_id:016x}",
        "trace_id": f"{ctx.trace_id:032x}",
        "parent_span_id": f"{parent.span_id:016x}" if parent is not None else None,
        "kind": str(attrs.get(sc.SPAN_KIND) or "unknown"),
        "name": span.name[:MAX_FIELD],
        "started_at": iso_time(start),
        "ended_at": iso_time(end),
        "duration_ms": round((end - start) / 1e6, 3) if start and end else None,
        "status": span.status.status_code.name.lower(),
        "attributes": attrs,
        "events": events,
        "otel": {
            "span_kind": span.kind.name,
            "trace_flags": int(ctx.trace_flags),
            "trace_state": ctx.trace_state.to_header() if ctx.trace_state else None,
            "is_remote": bool(ctx.is_remote),
            "status_description": span.status.description,
            "links": [
                {
                    "trace_id": f"{link.context.trace_id:032x}",
                    "span_id": f"{link.context.span_id:016x}",
                    "attributes": {k: _plain(v) for k, v in (link.attributes or {}).items()},
                }
                for link in span.links
            ],
            "resource": {k: _plain(v) for k, v in resource.items()},
            "dropped": {
                "attributes": span.dropped_attributes,
                "events": span.dropped_events,
                "links": span.dropped_links,
            },
            "scope": (
                {"name": scope.name, "version": scope.version, "schema_url": scope.schema_url or None}
                if scope is not None
                else None
            ),
        },
    }


@dataclass(frozen=True)
class Block:
    """One conversation block, encoded as it is sent, and the source spans whose records it carries."""

    conversation_id: str
    json: bytes  # the block's JSON object, one element of the request's ``conversations`` array
    sources: tuple[RecordKey, ...]

    def document(self) -> dict[str, Any]:
        """The block parsed back into plain data (for inspection and tests)."""
        return loads(self.json)  # type: ignore[no-any-return]


class BlockRules:
    """The client-side copy of AgentSight's block validation; warns once per kind of fix."""

    def __init__(self, default_environment: str | None = None) -> None:
        self._known: frozenset[str] = frozenset(BUILTIN_ENVIRONMENTS)  # replaced, never changed: read unlocked
        self._default_environment = default_environment
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def learn_environments(self, slugs: Iterable[str]) -> None:
        """Add slugs the server reported (``/api/me/``); the set only grows."""
        with self._lock:
            learned = {str(s).strip().lower() for s in slugs if isinstance(s, str) and s.strip()}
            if not learned <= self._known:
                self._known = self._known | learned

    def _warn_once(self, what: str, message: str, *args: Any) -> None:
        with self._lock:
            if what in self._warned:
                return
            self._warned.add(what)
        logger.warning(message, *args)

    def field(self, name: str, value: str | None) -> str | None:
        if value is None:
            return None
        if len(value) > MAX_FIELD:
            self._warn_once(f"clamp:{name}", "conversation %s longer than %d characters was cut", name, MAX_FIELD)
            return value[:MAX_FIELD]
        return value

    def ip_address(self, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return str(ipaddress.ip_address(value.strip()))
        except ValueError:
            self._warn_once("ip", "customer IP address %r is not an IPv4 or IPv6 address; it was left out", value[:64])
            return None

    def environment(self, value: str | None) -> str | None:
        known = self._known
        if value is not None:
            slug = normalize_environment(value, known)
            if slug is not None:
                return slug
            self._warn_once(
                f"env:{value}", "environment %r is not known to AgentSight; the agent's default is used", value[:64]
            )
        if self._default_environment is not None:
            return normalize_environment(self._default_environment, known)
        return None

    def metadata(self, value: str | None) -> dict[str, Any] | None:
        if value is None:
            return None
        parsed = parse_document(value)
        if isinstance(parsed, dict):
            if len(value) > MAX_TEXT:
                parsed = parse_document(safe_document(parsed))
            return parsed if isinstance(parsed, dict) else None
        self._warn_once("metadata", "conversation metadata is not a JSON object; it was left out")
        return None

    def conversation_fields(self, conversation: Conversation) -> dict[str, Any]:
        """The block's conversation fields, each valid on its own."""
        fields: dict[str, Any] = {"conversation_id": self.field("conversation_id", conversation.conversation_id)}
        for name in _STRING_FIELDS:
            value = self.field(name, getattr(conversation, name))
            if value is not None:
                fields[name] = value
        ip = self.ip_address(conversation.customer_ip)
        if ip is not None:
            fields["customer_ip_address"] = ip
        env = self.environment(conversation.environment)
        if env is not None:
            fields["environment"] = env
        metadata = self.metadata(conversation.metadata)
        if metadata is not None:
            fields["metadata"] = metadata
        return fields


def _document(text: str | None) -> str | None:
    """A JSON document attribute that fits the limit (re-serialised only when it does not)."""
    if text is None or len(text) <= MAX_TEXT:
        return text
    parsed = parse_document(text)
    return safe_document(parsed if parsed is not None else text)


def _conversation_attributes(fields: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {sc.CONVERSATION_ID: fields["conversation_id"]}
    for key, attr in sc.CONVERSATION_FIELD_ATTRIBUTES.items():
        if key in fields:
            attrs[attr] = fields[key]
    return attrs


class _Envelope(NamedTuple):
    """The ``otel`` object of the spans this module builds, as data and as embedded pre-serialised JSON."""

    value: dict[str, Any]
    encoded: Any  # jsondoc.encoded(value): written once, embedded as it is in every span of the resource


_last_envelope: tuple[object, _Envelope | None] = (None, None)


def _otel_envelope(resource: tuple[tuple[str, object], ...]) -> _Envelope:
    """The envelope for a resource: the same for every span of it, so it is made once per run of blocks.

    Kept for the last resource *object* (readers hand out one tuple per SDK resource): equal tuples could still
    differ in type (``True`` and ``1`` are equal), so values are never matched by equality.
    """
    global _last_envelope
    last_resource, envelope = _last_envelope
    if resource is last_resource and envelope is not None:
        return envelope
    value = {
        "span_kind": "INTERNAL",
        "trace_flags": 1,
        "trace_state": None,
        "is_remote": False,
        "status_description": None,
        "links": [],
        "resource": {str(k): v for k, v in resource},
        "dropped": {"attributes": 0, "events": 0, "links": 0},
        "scope": {"name": "agentsight_otel", "version": __version__, "schema_url": None},
    }
    envelope = _Envelope(value, encoded(value))
    _last_envelope = (resource, envelope)
    return envelope


class _SpanBuilder:
    """Builds the span dicts of one block; every span carries the conversation attributes.

    This runs for every item an export carries, so it builds each dict once, directly, with no None-filtering
    passes: callers add only the attributes that are set.
    """

    __slots__ = ("trace_id", "conversation_attrs", "otel")

    def __init__(self, trace_id: str, conversation_attrs: dict[str, Any], otel: Any) -> None:
        self.trace_id = trace_id
        self.conversation_attrs = conversation_attrs
        self.otel = otel

    def attributes(self, kind: str, name: str, turn_id: str | None) -> dict[str, Any]:
        """The attributes every span starts with: the conversation's, its kind and name, and its turn."""
        attrs = self.conversation_attrs.copy()
        attrs[sc.SPAN_KIND] = kind
        attrs[sc.ENTITY_NAME] = name
        if turn_id is not None:
            attrs[sc.TURN_ID] = turn_id
        return attrs

    def span(
        self,
        span_id: str,
        parent: str | None,
        kind: str,
        name: str,
        start_ns: int,
        end_ns: int,
        attributes: dict[str, Any],
        status: str = "ok",
        events: list[dict[str, Any]] = _NO_EVENTS,
        duration_ms: float | None = None,
    ) -> dict[str, Any]:
        """A span dict; its duration is ``duration_ms`` when given, else the time between start and end."""
        started = iso_time(start_ns)
        if end_ns > start_ns:
            ended = iso_time(end_ns)
            if duration_ms is None:
                duration_ms = round((end_ns - start_ns) / 1e6, 3)
        else:
            ended = started
            if duration_ms is None:
                duration_ms = 0.0
        return {
            "span_id": span_id,
            "trace_id": self.trace_id,
            "parent_span_id": parent,
            "kind": kind,
            "name": name[:MAX_FIELD],
            "started_at": started,
            "ended_at": ended,
            "duration_ms": duration_ms,
            "status": status,
            "attributes": attributes,
            "events": events,
            "otel": self.otel,
        }


def _message_event(record: Message) -> dict[str, Any]:
    attrs: dict[str, Any] = {
        sc.MESSAGE_SENDER: record.sender,
        sc.MESSAGE_CONTENT: clamp_text(record.content),
    }
    if record.metadata is not None:
        attrs[sc.MESSAGE_METADATA] = _document(record.metadata)
    return {"name": sc.EVENT_MESSAGE, "timestamp": iso_time(record.timestamp_ns), "attributes": attrs}


class _Turn:
    """Messages of one exchange: a turn opens at a user message and gathers what follows."""

    __slots__ = ("span_id", "start_ns", "end_ns", "events")

    def __init__(self, first: Message) -> None:
        self.span_id = first.key.stable_span_id("turn")
        self.start_ns = first.timestamp_ns
        self.end_ns = first.timestamp_ns
        self.events = [_message_event(first)]

    def add(self, record: Message) -> None:
        self.events.append(_message_event(record))
        self.touch(record.timestamp_ns)

    def touch(self, ns: int) -> None:
        if ns > self.end_ns:
            self.end_ns = ns


# One function per record type: the span it becomes, a child of the open turn (``turn_id``) when there is one.


def _tool_span(b: _SpanBuilder, record: Action, turn_id: str | None) -> dict[str, Any]:
    start = record.started_ns or record.timestamp_ns
    if record.ended_ns:
        end = record.ended_ns
    elif record.duration_ms is not None:
        end = start + int(record.duration_ms * 1e6)
    else:
        end = start
    attrs = b.attributes(sc.KIND_TOOL, record.name, turn_id)
    attrs[sc.TOOL_NAME] = record.name[:MAX_FIELD]
    if record.arguments is not None:
        attrs[sc.TOOL_ARGUMENTS] = _document(record.arguments)
    if record.response is not None:
        attrs[sc.TOOL_RESPONSE] = clamp_text(record.response)
    if record.error is not None:
        attrs[sc.TOOL_ERROR] = clamp_text(record.error)
    if record.metadata is not None:
        attrs[sc.METADATA] = _document(record.metadata)
    return b.span(
        record.key.stable_span_id("tool"),
        turn_id,
        sc.KIND_TOOL,
        record.name,
        start,
        max(end, start),
        attrs,
        "error" if record.error else "ok",
        duration_ms=round(float(record.duration_ms), 3) if record.duration_ms is not None else None,
    )


def _button_span(b: _SpanBuilder, record: Button, turn_id: str | None) -> dict[str, Any]:
    name = record.label or record.event
    attrs = b.attributes(sc.KIND_BUTTON, name, turn_id)
    attrs[sc.BUTTON_EVENT] = record.event[:MAX_FIELD]
    attrs[sc.BUTTON_LABEL] = record.label[:MAX_FIELD]
    attrs[sc.BUTTON_VALUE] = record.value[:MAX_FIELD]
    if record.metadata is not None:
        attrs[sc.METADATA] = _document(record.metadata)
    ts = record.timestamp_ns
    return b.span(record.key.stable_span_id("button"), turn_id, sc.KIND_BUTTON, name, ts, ts, attrs)


def _attachment_span(b: _SpanBuilder, record: Attachments, turn_id: str | None) -> dict[str, Any]:
    name = f"{record.file_count} attachment{'s' if record.file_count != 1 else ''}"
    attrs = b.attributes(sc.KIND_ATTACHMENT, name, turn_id)
    attrs[sc.ATTACHMENT_SENDER] = record.sender
    attrs[sc.ATTACHMENT_COUNT] = record.file_count
    attrs[sc.ATTACHMENT_FILES] = _document(record.files)
    if record.mode is not None:
        attrs[sc.ATTACHMENT_MODE] = record.mode
    if record.metadata is not None:
        attrs[sc.METADATA] = _document(record.metadata)
    ts = record.timestamp_ns
    return b.span(record.key.stable_span_id("attachment"), turn_id, sc.KIND_ATTACHMENT, name, ts, ts, attrs)


def _llm_span(b: _SpanBuilder, record: TokenUsage, turn_id: str | None) -> dict[str, Any]:
    name = record.model or record.system or "token_usage"
    attrs = b.attributes(sc.KIND_LLM, name, turn_id)
    if record.model is not None:
        attrs[sc.GEN_AI_REQUEST_MODEL] = record.model
    if record.system is not None:
        attrs[sc.GEN_AI_SYSTEM] = record.system
    attrs[sc.GEN_AI_USAGE_INPUT_TOKENS] = record.input_tokens
    attrs[sc.GEN_AI_USAGE_OUTPUT_TOKENS] = record.output_tokens
    # The other counts only when non-zero: most calls have no cache, reasoning or embedding tokens.
    if record.total_tokens:
        attrs[sc.LLM_TOTAL_TOKENS] = record.total_tokens
    if record.embedding_tokens:
        attrs[sc.LLM_EMBEDDING_TOKENS] = record.embedding_tokens
    if record.cache_read_tokens:
        attrs[sc.LLM_CACHE_READ_TOKENS] = record.cache_read_tokens
    if record.cache_write_tokens:
        attrs[sc.LLM_CACHE_WRITE_TOKENS] = record.cache_write_tokens
    if record.reasoning_tokens:
        attrs[sc.LLM_REASONING_TOKENS] = record.reasoning_tokens
    ts = record.timestamp_ns
    return b.span(record.key.stable_span_id("llm"), turn_id, sc.KIND_LLM, name, ts, ts, attrs)


def _conversation_span(b: _SpanBuilder, record: ConversationOpened) -> dict[str, Any]:
    name = "metadata_updated" if record.is_used else "conversation_opened"
    ts = record.timestamp_ns
    attrs = b.attributes(sc.KIND_CONVERSATION, name, None)
    return b.span(record.key.stable_span_id("conversation"), None, sc.KIND_CONVERSATION, name, ts, ts, attrs)


_RECORD_SPANS: dict[type, Callable[[_SpanBuilder, Any, str | None], dict[str, Any]]] = {
    Action: _tool_span,
    Button: _button_span,
    Attachments: _attachment_span,
    TokenUsage: _llm_span,
}


def _span_start(span: dict[str, Any]) -> tuple[str, str]:
    return (span["started_at"] or "", span["span_id"])


def encode_block(batch: ConversationBatch, rules: BlockRules) -> Block:
    """One conversation's records as an ingest block: turns of messages, and a span per other record."""
    fields = rules.conversation_fields(batch.conversation)
    first_key = batch.records[0].key if batch.records else RecordKey(0, 0)
    envelope = _otel_envelope(batch.resource)
    builder = _SpanBuilder(f"{first_key.trace_id:032x}", _conversation_attributes(fields), envelope.encoded)
    spans: list[dict[str, Any]] = []
    turns: list[_Turn] = []
    turn: _Turn | None = None
    for record in batch.records:
        if type(record) is Message:  # records are never subclassed; this runs for every item
            if turn is None or record.sender == "end_user":
                turn = _Turn(record)
                turns.append(turn)
            else:
                turn.add(record)
            continue
        make = _RECORD_SPANS.get(type(record))
        if make is not None:
            if turn is None:
                spans.append(make(builder, record, None))
            else:
                spans.append(make(builder, record, turn.span_id))
                turn.touch(record.timestamp_ns)
        elif isinstance(record, ConversationOpened):  # never part of a turn: it registers or updates the conversation
            spans.append(_conversation_span(builder, record))
        elif isinstance(record, RawSpan):
            raw = dict(record.span)
            raw["attributes"] = {**raw["attributes"], **builder.conversation_attrs}  # the block's checked values
            spans.append(raw)
    for t in turns:
        attrs = builder.attributes(sc.KIND_TURN, "turn", t.span_id)
        attrs[sc.TURN_COMPLETE] = True
        spans.append(builder.span(t.span_id, None, sc.KIND_TURN, "turn", t.start_ns, t.end_ns, attrs, "ok", t.events))
    spans.sort(key=_span_start)
    fields["spans"] = spans
    try:
        body = dumps_fast(fields)
    except TypeError:  # a value orjson cannot write (an integer beyond 64 bits): the fallback needs plain data
        for span in spans:
            if span.get("otel") is envelope.encoded:
                span["otel"] = envelope.value
        body = dumps(fields)
    return Block(fields["conversation_id"], body, batch.sources)


def encode(batches: Iterable[ConversationBatch], rules: BlockRules) -> list[Block]:
    """One encoded block per conversation batch with records.

    Block by block: each block's dicts are garbage as soon as they are bytes, so an export of thousands of items
    never holds them all at once (which would also make the garbage collector walk them).
    """
    return [encode_block(b, rules) for b in batches if b.records]
