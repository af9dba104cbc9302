"""OpenInference (Arize/Phoenix): ``llm.input_messages.N.*`` / ``llm.output_messages.N.*``, ``llm.token_count.*``,
TOOL spans, and AGENT spans' ``input.value`` / ``output.value``."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from .genai import number, structured
from .model import ChatMessage, LlmCall, ToolCall, ToolRun, Usage, as_embedding

KIND = "openinference.span.kind"
_MESSAGE_KEY = re.compile(r"^llm\.(input|output)_messages\.(\d+)\.message\.(.+)$")
_TOOL_CALL_KEY = re.compile(r"^tool_calls\.(\d+)\.tool_call\.(.+)$")
_CONTENT_KEY = re.compile(r"^contents\.(\d+)\.message_content\.text$")


def is_openinference(attrs: Mapping[str, Any]) -> bool:
    return KIND in attrs or any(k.startswith(("llm.input_messages.", "llm.output_messages.")) for k in attrs)


def flattened_messages(attrs: Mapping[str, Any], direction: str) -> tuple[ChatMessage, ...]:
    """Messages from flattened keys; indices sort numerically (10 comes after 9)."""
    fields: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        match = _MESSAGE_KEY.match(key)
        if match and match.group(1) == direction:
            fields.setdefault(int(match.group(2)), {})[match.group(3)] = value
    messages = []
    for index in sorted(fields):
        f = fields[index]
        calls: dict[int, dict[str, Any]] = {}
        texts: dict[int, str] = {}
        for key, value in f.items():
            call = _TOOL_CALL_KEY.match(key)
            if call:
                calls.setdefault(int(call.group(1)), {})[call.group(2)] = value
            content = _CONTENT_KEY.match(key)
            if content:
                texts[int(content.group(1))] = str(value)
        text = f.get("content")
        if text is None and texts:
            text = "".join(texts[i] for i in sorted(texts))
        tool_calls = tuple(
            ToolCall(_opt(c.get("id")), str(c.get("function.name") or "tool"), structured(c.get("function.arguments")))
            for _, c in sorted(calls.items())
        )
        messages.append(
            ChatMessage(
                str(f.get("role") or "user"), "" if text is None else str(text), tool_calls, _opt(f.get("tool_call_id"))
            )
        )
    return tuple(messages)


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def read(span: ReadableSpan, attrs: Mapping[str, Any]) -> Sequence[LlmCall | ToolRun]:
    start, end = span.start_time or 0, span.end_time or span.start_time or 0
    kind = str(attrs.get(KIND) or "").upper()
    if kind == "TOOL":
        error = (span.status.description or "error") if span.status.status_code is StatusCode.ERROR else None
        output = attrs.get("output.value")
        return [
            ToolRun(
                start,
                end,
                str(attrs.get("tool.name") or span.name),
                _opt(attrs.get("tool.id") or attrs.get("tool_call.id")),
                structured(attrs.get("input.value")),
                None if output is None else str(output),
                error,
            )
        ]
    if kind == "AGENT":
        inputs: tuple[ChatMessage, ...] = (
            (ChatMessage("user", str(attrs["input.value"])),) if attrs.get("input.value") else ()
        )
        outputs: tuple[ChatMessage, ...] = (
            (ChatMessage("assistant", str(attrs["output.value"])),) if attrs.get("output.value") else ()
        )
        return [LlmCall(start, end, inputs, outputs, is_agent=True)] if inputs or outputs else []
    inputs = flattened_messages(attrs, "input")
    outputs = flattened_messages(attrs, "output")
    usage = Usage(
        input_tokens=number(attrs, "llm.token_count.prompt"),
        output_tokens=number(attrs, "llm.token_count.completion"),
        cache_read_tokens=number(attrs, "llm.token_count.prompt_details.cache_read"),
        cache_write_tokens=number(attrs, "llm.token_count.prompt_details.cache_write"),
        reasoning_tokens=number(attrs, "llm.token_count.completion_details.reasoning"),
    )
    model = attrs.get("llm.model_name")
    if kind == "EMBEDDING":
        usage = as_embedding(usage)
        model = model or attrs.get("embedding.model_name")
    if not inputs and not outputs and usage.empty:
        return []
    system = attrs.get("llm.provider") or attrs.get("llm.system")
    return [LlmCall(start, end, inputs, outputs, _opt(model), _opt(system), usage)]
