"""Ingest and legacy-conversation validation with the real service's rules (DRF-style messages).

The real service validates the whole ingest payload at once and refuses the entire batch when any block is
invalid, so these functions only collect errors; they never store anything.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..jsondoc import HAS_ORJSON
from .timeutil import parse_timestamp

MAX_FIELD_CHARS = 255
MAX_TEXT_CHARS = 16_384
MAX_LISTED_BLOCKS = 20
# The deepest nesting of arrays and objects a stored document (metadata, a span's attributes, events or otel) may
# have: what orjson writes (it refuses deeper documents), far below what the standard library's recursive encoder
# and decoder survive, so every stored document can be written and read back with either.
MAX_DEPTH = 254
# duration_ms is stored in an SQLite column, which takes integers of 64 bits at most.
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

BLOCK_KEYS = frozenset(
    {
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
)
OPTIONAL_STRING_FIELDS = ("customer_id", "device", "source", "language", "name")
SPAN_STATUSES = frozenset({"unset", "ok", "error"})
SPAN_TEXT_ATTRIBUTES = ("agentsight.tool.response", "agentsight.tool.error")
SPAN_DOCUMENTS = ("attributes", "events", "otel")  # stored as JSON documents, limited to MAX_DEPTH
EVENT_TEXT_ATTRIBUTES = ("agentsight.message.content",)

_SPAN_ID_RE = re.compile(r"[0-9a-f]{16}")
_TRACE_ID_RE = re.compile(r"[0-9a-f]{32}")

REQUIRED = "This field is required."
NOT_NULL = "This field may not be null."
NOT_BLANK = "This field may not be blank."
NOT_STRING = "Not a valid string."
TOO_LONG = f"Ensure this field has no more than {MAX_FIELD_CHARS} characters."
TEXT_TOO_LONG = f"Ensure this field has no more than {MAX_TEXT_CHARS} characters."
BAD_IP = "Enter a valid IPv4 or IPv6 address."
NOT_OBJECT = "Expected a JSON object."
UNKNOWN_FIELD = "Unknown field."
NOT_BOOLEAN = "Must be a valid boolean."
BAD_DATETIME = "Datetime has wrong format. Use ISO-8601."
TOO_DEEP = f"Ensure this value has no more than {MAX_DEPTH} levels of nesting."
NOT_NUMBER = "A valid number is required."
TOO_BIG = f"Ensure this value is less than or equal to {INT64_MAX}."
TOO_SMALL = f"Ensure this value is greater than or equal to {INT64_MIN}."

Errors = dict[str, list[str]]


class EnvelopeError(ValueError):
    """The body is not an ingest envelope at all, so no per-block detail can be given."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


@dataclass
class BlockRejection:
    """Why one conversation block was refused; `conversation_id` is read from the raw block."""

    index: int
    conversation_id: str
    errors: Errors = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        """Return the entry as it appears in the 400 body."""
        return {"index": self.index, "conversation_id": self.conversation_id, "errors": self.errors}


def _add(errors: Errors, key: str, message: str) -> None:
    """Append one message under a field name."""
    errors.setdefault(key, []).append(message)


def _type_name(value: object) -> str:
    """Name a value's type the way DRF messages do."""
    return type(value).__name__


def shown(value: object) -> str:
    """A client's value as text for an error message; one nested too deeply for str() is named by its type."""
    try:
        return str(value)
    except RecursionError:  # str() of a list nested ~1000 levels, which orjson parses
        return _type_name(value)


_CONTAINERS = frozenset((dict, list))  # what a JSON parser builds arrays and objects with


def nests_deeper(value: object, limit: int = MAX_DEPTH) -> bool:
    """Tell whether a parsed JSON value has more than `limit` levels of arrays and objects (a scalar has none).

    Walks one level at a time, without recursion: the value may be nested deeper than Python's recursion limit.
    """
    level: list[Any] = [value] if type(value) in _CONTAINERS else []  # the arrays and objects at this depth
    for _ in range(limit):
        if not level:
            return False
        level = [
            child
            for item in level
            for child in (item.values() if type(item) is dict else item)
            if type(child) in _CONTAINERS
        ]
    return bool(level)


def extract_blocks(payload: object) -> list[Any]:
    """Return the `conversations` list of an envelope, or raise EnvelopeError for a malformed envelope."""
    if not isinstance(payload, dict):
        raise EnvelopeError(f"Invalid data. Expected a dictionary, but got {_type_name(payload)}.")
    if "conversations" not in payload:
        raise EnvelopeError(f"conversations: {REQUIRED}")
    blocks = payload["conversations"]
    if not isinstance(blocks, list):
        raise EnvelopeError(f'conversations: Expected a list of items but got type "{_type_name(blocks)}".')
    return blocks


def check_optional_string(data: dict[str, Any], key: str, errors: Errors) -> None:
    """A present string field must be a str of at most 255 characters (null allowed)."""
    if key not in data or data[key] is None:
        return
    value = data[key]
    if not isinstance(value, str):
        _add(errors, key, NOT_STRING)
    elif len(value) > MAX_FIELD_CHARS:
        _add(errors, key, TOO_LONG)


def check_ip_address(data: dict[str, Any], errors: Errors) -> None:
    """A present customer_ip_address must parse as IPv4 or IPv6, like DRF's IPAddressField."""
    value = data.get("customer_ip_address")
    if value is None:
        return
    if not isinstance(value, str):
        _add(errors, "customer_ip_address", BAD_IP)
        return
    try:
        ipaddress.ip_address(value)
    except ValueError:
        _add(errors, "customer_ip_address", BAD_IP)


def check_environment(data: dict[str, Any], environments: Iterable[str], errors: Errors) -> None:
    """A present environment must be one of this server's slugs, matched exactly (aliases are not stored)."""
    value = data.get("environment")
    if value is None:
        return
    if not isinstance(value, str):
        _add(errors, "environment", NOT_STRING)
        return
    known = sorted(environments)
    if value not in known:
        _add(errors, "environment", f'Unknown environment "{value}". Known slugs: {", ".join(known)}.')


def check_metadata(data: dict[str, Any], errors: Errors) -> None:
    """Metadata must be an object when present, nested at most MAX_DEPTH levels; null is allowed."""
    value = data.get("metadata")
    if value is not None and not isinstance(value, dict):
        _add(errors, "metadata", NOT_OBJECT)
    elif nests_deeper(value):
        _add(errors, "metadata", TOO_DEEP)


def check_conversation_fields(data: dict[str, Any], environments: Iterable[str], errors: Errors) -> None:
    """Validate every conversation field except conversation_id and spans."""
    for key in OPTIONAL_STRING_FIELDS:
        check_optional_string(data, key, errors)
    check_ip_address(data, errors)
    check_environment(data, environments, errors)
    check_metadata(data, errors)


def _check_block_conversation_id(block: dict[str, Any], errors: Errors) -> None:
    """Ingest needs a non-empty string conversation_id of at most 255 characters."""
    if "conversation_id" not in block:
        _add(errors, "conversation_id", REQUIRED)
        return
    value = block["conversation_id"]
    if value is None:
        _add(errors, "conversation_id", NOT_NULL)
    elif not isinstance(value, str):
        _add(errors, "conversation_id", NOT_STRING)
    elif not value.strip():
        _add(errors, "conversation_id", NOT_BLANK)
    elif len(value) > MAX_FIELD_CHARS:
        _add(errors, "conversation_id", TOO_LONG)


def _check_hex(
    span: dict[str, Any],
    key: str,
    pattern: re.Pattern[str],
    chars: int,
    errors: Errors,
    prefix: str,
    nullable: bool = False,
) -> None:
    """A span identifier must be lowercase hex of a fixed length (or null when allowed)."""
    value = span.get(key)
    if value is None and nullable:
        return
    if value is None and key not in span:
        _add(errors, f"{prefix}.{key}", REQUIRED)
    elif not isinstance(value, str) or pattern.fullmatch(value) is None:
        _add(errors, f"{prefix}.{key}", f"Must be {chars} lowercase hex characters.")


def _check_span_text(span: dict[str, Any], key: str, errors: Errors, prefix: str) -> None:
    """kind and name are required strings."""
    if key not in span:
        _add(errors, f"{prefix}.{key}", REQUIRED)
    elif not isinstance(span[key], str):
        _add(errors, f"{prefix}.{key}", NOT_STRING)


def _check_optional_timestamp(data: dict[str, Any], key: str, errors: Errors, prefix: str) -> None:
    """A timestamp field may be null or absent; otherwise it must be ISO-8601."""
    value = data.get(key)
    if value is not None and parse_timestamp(value) is None:
        _add(errors, f"{prefix}.{key}", BAD_DATETIME)


def _check_long_texts(attributes: dict[str, Any], keys: Iterable[str], errors: Errors, prefix: str) -> None:
    """Message content, tool response and tool error are text limited to 16,384 characters."""
    for key in keys:
        value = attributes.get(key)
        if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
            _add(errors, f"{prefix}.attributes.{key}", TEXT_TOO_LONG)


def _check_events(span: dict[str, Any], errors: Errors, prefix: str) -> None:
    """Events must be a list of {name, timestamp, attributes} objects."""
    events = span.get("events")
    if events is None:
        return
    if not isinstance(events, list):
        _add(errors, f"{prefix}.events", f'Expected a list of items but got type "{_type_name(events)}".')
        return
    for index, event in enumerate(events):
        where = f"{prefix}.events[{index}]"
        if not isinstance(event, dict):
            _add(errors, where, NOT_OBJECT)
            continue
        _check_span_text(event, "name", errors, where)
        if "timestamp" not in event or event["timestamp"] is None:
            _add(errors, f"{where}.timestamp", REQUIRED)
        else:
            _check_optional_timestamp(event, "timestamp", errors, where)
        attributes = event.get("attributes")
        if attributes is None:
            continue
        if not isinstance(attributes, dict):
            _add(errors, f"{where}.attributes", NOT_OBJECT)
        else:
            _check_long_texts(attributes, EVENT_TEXT_ATTRIBUTES, errors, where)


def _check_duration(span: dict[str, Any], errors: Errors, prefix: str) -> None:
    """duration_ms is an optional number; an integer must fit the 64 bits SQLite stores."""
    duration = span.get("duration_ms")
    if duration is None:
        return
    if isinstance(duration, bool) or not isinstance(duration, (int, float)):
        _add(errors, f"{prefix}.duration_ms", NOT_NUMBER)
    elif isinstance(duration, int) and duration > INT64_MAX:
        _add(errors, f"{prefix}.duration_ms", TOO_BIG)
    elif isinstance(duration, int) and duration < INT64_MIN:
        _add(errors, f"{prefix}.duration_ms", TOO_SMALL)


def _span_nests_too_deep(span: dict[str, Any]) -> bool:
    """Tell whether one of the span's stored documents nests deeper than MAX_DEPTH."""
    return any(nests_deeper(span.get(key)) for key in SPAN_DOCUMENTS)


def _check_span(span: object, errors: Errors, prefix: str) -> None:
    """Validate one span dict against the 2.1 span shape."""
    if not isinstance(span, dict):
        _add(errors, prefix, NOT_OBJECT)
        return
    _check_hex(span, "span_id", _SPAN_ID_RE, 16, errors, prefix)
    _check_hex(span, "trace_id", _TRACE_ID_RE, 32, errors, prefix)
    _check_hex(span, "parent_span_id", _SPAN_ID_RE, 16, errors, prefix, nullable=True)
    _check_span_text(span, "kind", errors, prefix)
    _check_span_text(span, "name", errors, prefix)
    _check_optional_timestamp(span, "started_at", errors, prefix)
    _check_optional_timestamp(span, "ended_at", errors, prefix)
    _check_duration(span, errors, prefix)
    status = span.get("status", "unset")
    if not isinstance(status, str) or status not in SPAN_STATUSES:
        _add(errors, f"{prefix}.status", f'"{shown(status)}" is not a valid choice.')
    attributes = span.get("attributes", {})
    if not isinstance(attributes, dict):
        _add(errors, f"{prefix}.attributes", NOT_OBJECT)
    else:
        _check_long_texts(attributes, SPAN_TEXT_ATTRIBUTES, errors, prefix)
    _check_events(span, errors, prefix)
    otel = span.get("otel")
    if otel is not None and not isinstance(otel, dict):
        _add(errors, f"{prefix}.otel", NOT_OBJECT)
    for key in SPAN_DOCUMENTS:
        if nests_deeper(span.get(key)):
            _add(errors, f"{prefix}.{key}", TOO_DEEP)


# -- fast path -------------------------------------------------------------------------------------------
# Almost every span a client sends is valid, and the detailed checks above cost a dozen calls and f-strings per
# span. These predicates answer "certainly valid?" with a few type checks inline; whenever they say no, the
# detailed checks run and produce the messages. They must never say yes where a detailed check would complain
# (tests/test_localserver_fastpath.py compares the two), with one exception: _span_is_clean does not measure how
# deeply a span's documents nest (MAX_DEPTH), as walking them would add about a tenth to the fast path's time.
# With orjson, the store's fast encoder refuses deeper documents itself and hands the batch to the detailed checks
# (Store.ingest_checked); without orjson, block_is_clean walks them.

_is_span_id = _SPAN_ID_RE.fullmatch
_is_trace_id = _TRACE_ID_RE.fullmatch
_TOOL_RESPONSE, _TOOL_ERROR = SPAN_TEXT_ATTRIBUTES
(_MESSAGE_CONTENT,) = EVENT_TEXT_ATTRIBUTES


def _events_are_clean(events: list[Any]) -> bool:
    """Every event is one _check_events accepts: {name: str, timestamp: date-time, attributes: object or null}."""
    for event in events:
        if type(event) is not dict or type(event.get("name")) is not str:
            return False
        stamp = event.get("timestamp")
        if stamp is None or parse_timestamp(stamp) is None:
            return False
        attributes = event.get("attributes")
        if attributes is None:
            continue
        if type(attributes) is not dict:
            return False
        if isinstance(text := attributes.get(_MESSAGE_CONTENT), str) and len(text) > MAX_TEXT_CHARS:
            return False
    return True


def _span_is_clean(span: object) -> bool:
    """True only when _check_span would report nothing for this span (False means "look closer")."""
    if type(span) is not dict:
        return False
    get = span.get
    span_id, trace_id, parent = get("span_id"), get("trace_id"), get("parent_span_id")
    if type(span_id) is not str or type(trace_id) is not str or _is_span_id(span_id) is None:
        return False
    if _is_trace_id(trace_id) is None or (parent is not None and (type(parent) is not str or not _is_span_id(parent))):
        return False
    if type(get("kind")) is not str or type(get("name")) is not str:
        return False
    started, ended, duration = get("started_at"), get("ended_at"), get("duration_ms")
    if started is not None and parse_timestamp(started) is None:
        return False
    if ended is not None and parse_timestamp(ended) is None:
        return False
    if duration is not None and type(duration) is not float:  # bool is not a number; an int must fit 64 bits
        if type(duration) is not int or not INT64_MIN <= duration <= INT64_MAX:
            return False
    status, attributes, otel = get("status", "unset"), get("attributes", {}), get("otel")
    if type(status) is not str or status not in SPAN_STATUSES or (otel is not None and type(otel) is not dict):
        return False
    if type(attributes) is not dict:
        return False
    if isinstance(text := attributes.get(_TOOL_RESPONSE), str) and len(text) > MAX_TEXT_CHARS:
        return False
    if isinstance(text := attributes.get(_TOOL_ERROR), str) and len(text) > MAX_TEXT_CHARS:
        return False
    events = get("events")
    return events is None or (type(events) is list and (not events or _events_are_clean(events)))


def block_is_clean(block: object, environments: tuple[str, ...]) -> bool:
    """True only when validate_block would find nothing wrong with this block: the check ingest runs first."""
    if type(block) is not dict or not BLOCK_KEYS.issuperset(block):
        return False
    errors: Errors = {}
    _check_block_conversation_id(block, errors)
    check_conversation_fields(block, environments, errors)  # a handful of fields per block: cheap enough as is
    if errors:
        return False
    spans = block.get("spans")
    if spans is None:
        return True
    if type(spans) is not list or not all(map(_span_is_clean, spans)):
        return False
    # See the note above _is_span_id. A span's documents sit two levels down the spans list; one walk over the list
    # costs less than one per document (a clean span's other fields are scalars; a deep unknown key only sends the
    # block to the detailed checks, which look at the documents alone).
    return HAS_ORJSON or not nests_deeper(spans, MAX_DEPTH + 2)


def _check_spans(block: dict[str, Any], errors: Errors) -> None:
    """spans is optional; when present it must be a list of valid span dicts."""
    spans = block.get("spans")
    if spans is None:
        return
    if not isinstance(spans, list):
        _add(errors, "spans", f'Expected a list of items but got type "{_type_name(spans)}".')
        return
    for index, span in enumerate(spans):
        # only a span that may be wrong pays for the detailed check (the fast one does not measure nesting)
        if not _span_is_clean(span) or _span_nests_too_deep(span):
            _check_span(span, errors, f"spans[{index}]")


def validate_block(block: object, environments: Iterable[str]) -> Errors:
    """Return the field errors of one ingest block (empty when it is valid)."""
    if not isinstance(block, dict):
        return {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {_type_name(block)}."]}
    errors: Errors = {}
    for key in block:
        if key not in BLOCK_KEYS:
            _add(errors, key, UNKNOWN_FIELD)
    _check_block_conversation_id(block, errors)
    check_conversation_fields(block, environments, errors)
    _check_spans(block, errors)
    return errors


def raw_conversation_id(block: object) -> str:
    """Read the block's conversation_id for error reports, whatever its type."""
    if not isinstance(block, dict) or block.get("conversation_id") is None:
        return ""
    value = block["conversation_id"]
    return value if isinstance(value, str) else shown(value)


def validate_ingest(payload: object, environments: Iterable[str]) -> list[BlockRejection]:
    """Validate a whole envelope; raise EnvelopeError or return the rejected blocks (empty if all valid)."""
    known = tuple(environments)
    rejections = []
    for index, block in enumerate(extract_blocks(payload)):
        errors = validate_block(block, known)
        if errors:
            rejections.append(BlockRejection(index, raw_conversation_id(block), errors))
    return rejections


def rejection_body(rejections: list[BlockRejection]) -> dict[str, Any]:
    """Build the 400 body: a summary, at most 20 listed blocks and whether the list was cut."""
    return {
        "detail": f"{len(rejections)} conversation(s) rejected",
        "conversations": [item.as_json() for item in rejections[:MAX_LISTED_BLOCKS]],
        "truncated": len(rejections) > MAX_LISTED_BLOCKS,
    }


def validate_legacy_conversation(body: object, environments: Iterable[str]) -> Errors:
    """Validate a legacy `POST /api/conversations/` body (extra keys such as timestamp are ignored)."""
    if not isinstance(body, dict):
        return {"non_field_errors": [f"Invalid data. Expected a dictionary, but got {_type_name(body)}."]}
    errors: Errors = {}
    value = body.get("conversation_id")
    if value is None:
        _add(errors, "conversation_id", REQUIRED if "conversation_id" not in body else NOT_NULL)
    elif isinstance(value, bool) or not isinstance(value, (str, int)):
        _add(errors, "conversation_id", NOT_STRING)
    elif not str(value).strip():
        _add(errors, "conversation_id", NOT_BLANK)
    elif len(str(value)) > MAX_FIELD_CHARS:
        _add(errors, "conversation_id", TOO_LONG)
    check_conversation_fields(body, environments, errors)
    is_used = body.get("is_used")
    if is_used is not None and not isinstance(is_used, bool):
        _add(errors, "is_used", NOT_BOOLEAN)
    return errors
