"""Projection of a conversation's archived spans into transcript items, counts and token totals.

The real service derives its read models from the span archive; this module does the same for the local
server so the demo and tests can see what a payload turned into.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from .timeutil import parse_timestamp
from .validate import INT64_MAX, MAX_DEPTH, nests_deeper

TOKEN_KEYS = (
    "input_tokens",
    "output_tokens",
    "total_tokens",
    "embedding_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
)
_EXTRA_TOKEN_ATTRIBUTES = ("embedding_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens")
_COUNT_KEYS = {
    "message": "messages",
    "action": "actions",
    "button": "buttons",
    "attachments": "attachments",
    "token_usage": "token_usage",
}
_EPOCH = datetime.min.replace(tzinfo=timezone.utc)

Item = dict[str, Any]
SortKey = tuple[Any, ...]


def _parse_json(value: Any, default: Any) -> Any:
    """Parse a JSON-string attribute; a missing or unparsable value gives the default.

    These strings are stored as the client sent them, so one may nest too deeply for the decoder (RecursionError)
    or for the encoders that show it later: a value nested deeper than the documents ingest accepts gives the
    default too. A text of at most 2 * MAX_DEPTH characters cannot nest deeper, so only longer ones are walked.
    """
    if not isinstance(value, str):
        return default
    try:
        parsed = json.loads(value)
    except (ValueError, RecursionError):
        return default
    if len(value) > 2 * MAX_DEPTH and nests_deeper(parsed):
        return default
    return parsed


def _as_int(value: Any) -> int:
    """Read a token count leniently: missing, malformed or out-of-range values (beyond 0..2**63-1) count as 0.

    The range keeps the sums small: a count of thousands of digits would overflow the int-to-text limit later.
    """
    try:
        number = int(value or 0)
    except (TypeError, ValueError, OverflowError):  # OverflowError: int(float("inf"))
        return 0
    return number if 0 <= number <= INT64_MAX else 0


def _time_key(value: Any) -> tuple[int, datetime]:
    """Sort key for a timestamp string: missing or unparsable values sort first."""
    parsed = parse_timestamp(value)
    return (0, _EPOCH) if parsed is None else (1, parsed)


def _sort_key(timestamp: Any, span: dict[str, Any], event_index: int) -> SortKey:
    """Chronological key with the documented tie-breaks: span start, event index, span id."""
    return (_time_key(timestamp), _time_key(span.get("started_at")), event_index, span["span_id"])


def _message_items(span: dict[str, Any]) -> list[tuple[SortKey, Item]]:
    """Each `agentsight.message` event of a complete turn becomes a message item."""
    if span["attributes"].get("agentsight.turn.complete") is False:
        return []
    items = []
    for index, event in enumerate(span.get("events") or []):
        if event.get("name") != "agentsight.message":
            continue
        attrs = event.get("attributes") or {}
        item = {
            "type": "message",
            "timestamp": event.get("timestamp"),
            "sender": attrs.get("agentsight.message.sender"),
            "content": attrs.get("agentsight.message.content"),
            "metadata": _parse_json(attrs.get("agentsight.message.metadata"), {}),
            "span_id": span["span_id"],
        }
        items.append((_sort_key(item["timestamp"], span, index), item))
    return items


def _action_item(span: dict[str, Any]) -> Item:
    """A tool or task span becomes an action item."""
    attrs = span["attributes"]
    return {
        "type": "action",
        "timestamp": span.get("started_at"),
        "name": attrs.get("agentsight.tool.name") or span["name"],
        "arguments": _parse_json(attrs.get("agentsight.tool.arguments"), None),
        "response": attrs.get("agentsight.tool.response"),
        "error": attrs.get("agentsight.tool.error"),
        "started_at": span.get("started_at"),
        "ended_at": span.get("ended_at"),
        "duration_ms": span.get("duration_ms"),
        "status": span.get("status"),
        "metadata": _parse_json(attrs.get("agentsight.metadata"), {}),
        "span_id": span["span_id"],
    }


def _button_item(span: dict[str, Any]) -> Item:
    """A button span becomes a button item."""
    attrs = span["attributes"]
    return {
        "type": "button",
        "timestamp": span.get("started_at"),
        "event": attrs.get("agentsight.button.event"),
        "label": attrs.get("agentsight.button.label"),
        "value": attrs.get("agentsight.button.value"),
        "metadata": _parse_json(attrs.get("agentsight.metadata"), {}),
        "span_id": span["span_id"],
    }


def _link_upload(descriptor: Any, uploads: list[dict[str, Any]]) -> Any:
    """Add download details to a file descriptor whose sha256 matches an upload of this conversation."""
    if not isinstance(descriptor, dict) or not descriptor.get("sha256"):
        return descriptor
    matches = [upload for upload in uploads if upload["sha256"] == descriptor["sha256"]]
    if not matches:
        return descriptor
    name = descriptor.get("filename") or descriptor.get("name")
    upload = next((m for m in matches if m["filename"] == name), matches[0])
    return {
        **descriptor,
        "download_url": f"/api/attachments/{upload['id']}/download/",
        "attachment_id": upload["id"],
    }


def _attachment_item(span: dict[str, Any], uploads: list[dict[str, Any]]) -> Item:
    """An attachment span becomes an attachments item whose files link to matching uploads."""
    attrs = span["attributes"]
    files = _parse_json(attrs.get("agentsight.attachment.files"), [])
    if not isinstance(files, list):
        files = []
    return {
        "type": "attachments",
        "timestamp": span.get("started_at"),
        "sender": attrs.get("agentsight.attachment.sender", "end_user"),
        "files": [_link_upload(descriptor, uploads) for descriptor in files],
        "metadata": _parse_json(attrs.get("agentsight.metadata"), {}),
        "span_id": span["span_id"],
    }


def _token_item(span: dict[str, Any]) -> Item:
    """An llm span becomes a token_usage item; reasoning and cache counts are reported, never summed in."""
    attrs = span["attributes"]
    input_tokens = _as_int(attrs.get("gen_ai.usage.input_tokens"))
    output_tokens = _as_int(attrs.get("gen_ai.usage.output_tokens"))
    total = attrs.get("agentsight.llm.total_tokens")
    item: Item = {
        "type": "token_usage",
        "timestamp": span.get("started_at"),
        "model": attrs.get("gen_ai.request.model") or span["name"],
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "total_tokens": _as_int(total) if total is not None else input_tokens + output_tokens,
    }
    for key in _EXTRA_TOKEN_ATTRIBUTES:
        item[key] = _as_int(attrs.get(f"agentsight.llm.{key}"))
    item["span_id"] = span["span_id"]
    return item


_SPAN_PROJECTIONS: dict[str, Callable[[dict[str, Any]], Item]] = {
    "tool": _action_item,
    "task": _action_item,
    "button": _button_item,
    "llm": _token_item,
}


def _span_items(span: dict[str, Any], uploads: list[dict[str, Any]]) -> list[tuple[SortKey, Item]]:
    """Project one span; conversation and unknown kinds produce nothing (they stay archived)."""
    kind = span["kind"]
    if kind == "turn":
        return _message_items(span)
    if kind == "attachment":
        item = _attachment_item(span, uploads)
    elif kind in _SPAN_PROJECTIONS:
        item = _SPAN_PROJECTIONS[kind](span)
    else:
        return []
    return [(_sort_key(item["timestamp"], span, -1), item)]


def project_items(spans: list[dict[str, Any]], uploads: list[dict[str, Any]]) -> list[Item]:
    """Build the chronologically sorted transcript items of one conversation."""
    keyed = [pair for span in spans for pair in _span_items(span, uploads)]
    keyed.sort(key=lambda pair: pair[0])
    return [item for _, item in keyed]


def count_items(items: list[Item]) -> dict[str, int]:
    """Count items per type under the names the conversation JSON uses."""
    counts = dict.fromkeys(_COUNT_KEYS.values(), 0)
    for item in items:
        counts[_COUNT_KEYS[item["type"]]] += 1
    return counts


def token_usage_summary(items: list[Item]) -> dict[str, Any]:
    """Sum token_usage items per model and overall."""
    total = dict.fromkeys(TOKEN_KEYS, 0)
    by_model: dict[str, dict[str, int]] = {}
    for item in items:
        if item["type"] != "token_usage":
            continue
        model = by_model.setdefault(str(item["model"]), dict.fromkeys(TOKEN_KEYS, 0))
        for key in TOKEN_KEYS:
            model[key] += item[key]
            total[key] += item[key]
    return {"by_model": by_model, "total": total}


def conversation_json(row: dict[str, Any], items: list[Item]) -> dict[str, Any]:
    """Render a conversation row as the list/detail JSON object."""
    return {
        "id": row["id"],
        "conversation_id": row["conversation_id"],
        "customer_id": row["customer_id"],
        "customer_ip_address": row["customer_ip_address"],
        "device": row["device"],
        "source": row["source"],
        "language": row["language"],
        "name": row["name"],
        "environment": row["environment"],
        "metadata": row["metadata"] if row["metadata"] is not None else {},
        "is_used": row["is_used"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "counts": count_items(items),
        "last_activity": row["last_activity"] or row["updated_at"],
    }


def build_transcript(row: dict[str, Any], spans: list[dict[str, Any]], uploads: list[dict[str, Any]]) -> dict[str, Any]:
    """Build the full transcript JSON of one conversation."""
    items = project_items(spans, uploads)
    return {
        "conversation": conversation_json(row, items),
        "items": items,
        "counts": count_items(items),
        "token_usage": token_usage_summary(items),
    }
