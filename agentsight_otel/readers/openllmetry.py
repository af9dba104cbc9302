"""OpenLLMetry / Traceloop before 0.55: ``gen_ai.prompt.N.*`` / ``gen_ai.completion.N.*`` content, legacy usage
names, and ``traceloop.span.kind`` entity spans (tools and agents). From 0.55 on, content is in the GenAI
attributes, which :mod:`.genai` reads."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from ..jsondoc import dumps_str
from .genai import model_of, structured, system_of, usage_from
from .model import ChatMessage, LlmCall, ToolCall, ToolRun

_KEY = re.compile(r"^gen_ai\.(prompt|completion)\.(\d+)\.(.+)$")
_TOOL_KEY = re.compile(r"^tool_calls\.(\d+)\.(.+)$")


def is_openllmetry(attrs: Mapping[str, Any]) -> bool:
    return "traceloop.span.kind" in attrs or any(_KEY.match(k) for k in attrs)


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def indexed_messages(attrs: Mapping[str, Any], direction: str) -> tuple[ChatMessage, ...]:
    fields: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        match = _KEY.match(key)
        if match and match.group(1) == direction:
            fields.setdefault(int(match.group(2)), {})[match.group(3)] = value
    messages = []
    for index in sorted(fields):  # numerically: 10 after 9
        f = fields[index]
        calls: dict[int, dict[str, Any]] = {}
        for key, value in f.items():
            call = _TOOL_KEY.match(key)
            if call:
                calls.setdefault(int(call.group(1)), {})[call.group(2)] = value
        tool_calls = tuple(
            ToolCall(_opt(c.get("id")), str(c.get("name") or "tool"), structured(c.get("arguments")))
            for _, c in sorted(calls.items())
        )
        default_role = "assistant" if direction == "completion" else "user"
        messages.append(
            ChatMessage(
                str(f.get("role") or default_role), str(f.get("content") or ""), tool_calls, _opt(f.get("tool_call_id"))
            )
        )
    return tuple(messages)


def _entity_value(value: Any) -> Any:
    """``traceloop.entity.input``/``output`` are JSON-encoded; inputs wrap the call as ``{"args", "kwargs"}``."""
    doc = structured(value)
    if isinstance(doc, Mapping) and set(doc) <= {"args", "kwargs"}:
        args, kwargs = doc.get("args") or [], doc.get("kwargs") or {}
        if kwargs and not args:
            return dict(kwargs)
        if len(args) == 1 and not kwargs:
            return args[0]
        return doc
    return doc


def read(span: ReadableSpan, attrs: Mapping[str, Any]) -> Sequence[LlmCall | ToolRun]:
    start, end = span.start_time or 0, span.end_time or span.start_time or 0
    kind = attrs.get("traceloop.span.kind")
    if kind == "tool":
        error = (span.status.description or "error") if span.status.status_code is StatusCode.ERROR else None
        output = _entity_value(attrs.get("traceloop.entity.output"))
        return [
            ToolRun(
                start,
                end,
                str(attrs.get("traceloop.entity.name") or attrs.get("gen_ai.tool.name") or span.name),
                None,
                _entity_value(attrs.get("traceloop.entity.input")),
                None if output is None else (output if isinstance(output, str) else dumps_str(output)),
                error,
            )
        ]
    if kind in ("agent", "workflow"):
        user = _entity_value(attrs.get("traceloop.entity.input"))
        answer = _entity_value(attrs.get("traceloop.entity.output"))
        inputs: tuple[ChatMessage, ...] = (ChatMessage("user", user),) if isinstance(user, str) and user else ()
        outputs: tuple[ChatMessage, ...] = (
            (ChatMessage("assistant", answer),) if isinstance(answer, str) and answer else ()
        )
        return [LlmCall(start, end, inputs, outputs, is_agent=True)] if inputs or outputs else []
    inputs = indexed_messages(attrs, "prompt")
    outputs = indexed_messages(attrs, "completion")
    usage = usage_from(attrs)
    if not inputs and not outputs and usage.empty:
        return []
    return [LlmCall(start, end, inputs, outputs, model_of(attrs), system_of(attrs), usage)]
