"""Reader for the tracker's spans: each ``agentsight.*`` event on a span is one record."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable

from opentelemetry.sdk.trace import ReadableSpan

from .. import semconv as sc
from ..records import (
    Action,
    Attachments,
    Button,
    Conversation,
    ConversationOpened,
    Message,
    RawSpan,
    Record,
    RecordKey,
    TokenUsage,
)
from ..wire import span_dict


def _text(value: Any) -> str | None:
    return value if value is None or type(value) is str else str(value)


def _str(attrs: Mapping[str, Any], name: str) -> str | None:
    return _text(attrs.get(name))


def _opt_int(attrs: Mapping[str, Any], name: str) -> int | None:
    value = attrs.get(name)
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def conversation_from(attrs: Mapping[str, Any]) -> Conversation | None:
    """The conversation a span belongs to, or ``None`` when it names none."""
    conversation_id = attrs.get(sc.CONVERSATION_ID)
    if not isinstance(conversation_id, str) or not conversation_id.strip():
        return None
    get = attrs.get
    return Conversation(
        conversation_id,
        _text(get(sc.CONVERSATION_CUSTOMER_ID)),
        _text(get(sc.CONVERSATION_CUSTOMER_IP)),
        _text(get(sc.CONVERSATION_DEVICE)),
        _text(get(sc.CONVERSATION_SOURCE)),
        _text(get(sc.CONVERSATION_LANGUAGE)),
        _text(get(sc.CONVERSATION_NAME)),
        _text(get(sc.CONVERSATION_ENVIRONMENT)),
        _text(get(sc.CONVERSATION_METADATA)),
    )


def _message(key: RecordKey, ts: int, a: Mapping[str, Any]) -> Record | None:
    content = a.get(sc.MESSAGE_CONTENT)
    if content is None:
        return None
    sender = "agent" if a.get(sc.MESSAGE_SENDER) == "agent" else "end_user"
    return Message(key, ts, sender, _text(content), _text(a.get(sc.MESSAGE_METADATA)))  # type: ignore[arg-type]


def _action(key: RecordKey, ts: int, a: Mapping[str, Any]) -> Record | None:
    name = a.get(sc.TOOL_NAME)
    if name is None:
        return None
    duration = a.get(sc.ACTION_DURATION_MS)
    return Action(
        key,
        ts,
        _text(name),  # type: ignore[arg-type]
        _text(a.get(sc.TOOL_ARGUMENTS)),
        _text(a.get(sc.TOOL_RESPONSE)),
        _text(a.get(sc.TOOL_ERROR)),
        _opt_int(a, sc.ACTION_STARTED_AT),
        _opt_int(a, sc.ACTION_ENDED_AT),
        _duration(duration),
        _text(a.get(sc.METADATA)),
    )


_MAX_DURATION_MS = 1e15  # some 31,000 years: beyond it a duration is garbage (and could not become nanoseconds)


def _duration(value: Any) -> float | None:
    """A duration in ms; ``None`` (the span's times decide) for anything but a number from 0 to _MAX_DURATION_MS
    (a 400-digit integer from an OTLP/JSON sender included, which float() cannot even convert)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= _MAX_DURATION_MS:
        return float(value)
    return None


def _button(key: RecordKey, ts: int, a: Mapping[str, Any]) -> Record | None:
    return Button(
        key,
        ts,
        _str(a, sc.BUTTON_EVENT) or "",
        _str(a, sc.BUTTON_LABEL) or "",
        _str(a, sc.BUTTON_VALUE) or "",
        _str(a, sc.METADATA),
    )


def _attachments(key: RecordKey, ts: int, a: Mapping[str, Any]) -> Record | None:
    files = a.get(sc.ATTACHMENT_FILES)
    if files is None:
        return None
    return Attachments(
        key,
        ts,
        _str(a, sc.ATTACHMENT_SENDER) or "end_user",
        str(files),
        _count(a.get(sc.ATTACHMENT_COUNT)),
        _str(a, sc.ATTACHMENT_MODE),
        _str(a, sc.METADATA),
    )


def _count(value: Any) -> int:
    """A count: an int as it is, anything else converted (0 when it cannot be)."""
    if type(value) is int:
        return value
    try:
        return int(value) if value is not None else 0
    except (TypeError, ValueError):
        return 0


def _token_usage(key: RecordKey, ts: int, a: Mapping[str, Any]) -> Record | None:
    get = a.get
    return TokenUsage(
        key,
        ts,
        _str(a, sc.GEN_AI_REQUEST_MODEL),
        input_tokens=_count(get(sc.GEN_AI_USAGE_INPUT_TOKENS)),
        output_tokens=_count(get(sc.GEN_AI_USAGE_OUTPUT_TOKENS)),
        total_tokens=_count(get(sc.LLM_TOTAL_TOKENS)),
        embedding_tokens=_count(get(sc.LLM_EMBEDDING_TOKENS)),
        cache_read_tokens=_count(get(sc.LLM_CACHE_READ_TOKENS)),
        cache_write_tokens=_count(get(sc.LLM_CACHE_WRITE_TOKENS)),
        reasoning_tokens=_count(get(sc.LLM_REASONING_TOKENS)),
        system=_str(a, sc.GEN_AI_SYSTEM),
    )


def _conversation(key: RecordKey, ts: int, a: Mapping[str, Any]) -> Record | None:
    return ConversationOpened(key, ts, bool(a.get(sc.CONVERSATION_IS_USED, True)))


_EVENT_READERS: dict[str, Callable[[RecordKey, int, Mapping[str, Any]], Record | None]] = {
    sc.EVENT_MESSAGE: _message,
    sc.EVENT_ACTION: _action,
    sc.EVENT_BUTTON: _button,
    sc.EVENT_ATTACHMENTS: _attachments,
    sc.EVENT_TOKEN_USAGE: _token_usage,
    sc.EVENT_CONVERSATION: _conversation,
}


PASSTHROUGH_KINDS = frozenset(
    {sc.KIND_TURN, sc.KIND_TOOL, sc.KIND_TASK, sc.KIND_LLM, sc.KIND_BUTTON, sc.KIND_ATTACHMENT, sc.KIND_CONVERSATION}
)


def is_agentsight(attrs: Mapping[str, Any]) -> bool:
    """Spans stamped with an AgentSight conversation: the tracker's, and agentsight 0.1.x's."""
    return sc.CONVERSATION_ID in attrs


def read_records(span: ReadableSpan, attrs: Mapping[str, Any]) -> tuple[Record, ...]:
    """The tracker's events as records, or an agentsight 0.1.x span passed through as it is."""
    if span.context is None:
        return ()
    trace_id, span_id = span.context.trace_id, span.context.span_id
    if attrs.get(sc.SPAN_KIND) in PASSTHROUGH_KINDS:
        return (RawSpan(RecordKey(trace_id, span_id), span.start_time or 0, span_dict(span)),)
    records: list[Record] = []
    for index, event in enumerate(span.events):
        reader = _EVENT_READERS.get(event.name)
        if reader is None:
            continue
        attributes = event.attributes
        if attributes is None:
            attributes = {}
        # The SDK's BoundedAttributes reads go through Mapping.get; its plain dict is the same data, read faster.
        plain = getattr(attributes, "_dict", attributes)
        record = reader(RecordKey(trace_id, span_id, index), event.timestamp or 0, plain)
        if record is not None:
            records.append(record)
    return tuple(records)
