"""OpenTelemetry GenAI conventions: ≥1.37 attributes (also OpenLLMetry ≥0.55) and ≤1.36 span events.

≥1.37: ``gen_ai.input.messages`` / ``gen_ai.output.messages`` / ``gen_ai.system_instructions`` as JSON strings or
structured values, in the parts format; ``execute_tool`` spans; ``gen_ai.usage.*`` (cache and reasoning included).
≤1.36: ``gen_ai.{system,user,assistant,tool}.message`` and ``gen_ai.choice`` span events.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from .model import ChatMessage, LlmCall, ToolCall, ToolRun, Usage, as_embedding

_TOOL_OPERATIONS = {"execute_tool"}
_AGENT_OPERATIONS = {"invoke_agent", "create_agent", "invoke_workflow"}
_EVENT_ROLES = {
    "gen_ai.system.message": "system",
    "gen_ai.user.message": "user",
    "gen_ai.assistant.message": "assistant",
    "gen_ai.tool.message": "tool",
}


def number(attrs: Mapping[str, Any], *names: str) -> int:
    """The first of these attributes that holds a number, as an int (0 when none does)."""
    for name in names:
        value = attrs.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return int(value)
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
    return 0


def structured(value: Any) -> Any:
    """A JSON document carried as a string (SDK ≤1.44) or as a structured value (≥1.45)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    if isinstance(value, tuple):
        return [structured(v) for v in value]
    return value


def text_of(content: Any) -> str:
    """Plain text from a content value that may be a string, a list of parts, or a JSON document."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        return "".join(text_of(p.get("content", p.get("text")) if isinstance(p, Mapping) else p) for p in content)
    if isinstance(content, Mapping):
        return text_of(content.get("content", content.get("text")))
    return str(content)


def _parts_messages(message: Mapping[str, Any]) -> list[ChatMessage]:
    """One message in the parts format; each ``tool_call_response`` part becomes a tool message of its own.

    A tool result is a tool result whatever the role it travels under: Anthropic sends them inside a ``user``
    message, which would otherwise put the tool's output in the transcript as the user's words.
    """
    role = str(message.get("role") or "user")
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[ChatMessage] = []
    for part in message.get("parts") or ():
        if not isinstance(part, Mapping):
            continue
        kind = part.get("type")
        if kind == "text":
            texts.append(text_of(part.get("content")))
        elif kind == "tool_call":
            calls.append(ToolCall(_opt(part.get("id")), str(part.get("name") or "tool"), part.get("arguments")))
        elif kind == "tool_call_response":
            results.append(
                ChatMessage("tool", text_of(part.get("response", part.get("result"))), (), _opt(part.get("id")))
            )
    if not message.get("parts") and message.get("content") is not None:  # tolerate the plain OpenAI shape
        texts.append(text_of(message.get("content")))
    if results and not texts and not calls:
        return results
    return [*results, ChatMessage(role, "".join(texts), tuple(calls))]


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


def parts_messages(value: Any) -> tuple[ChatMessage, ...]:
    """Messages in the GenAI parts format, from a JSON string or a structured value."""
    doc = structured(value)
    if not isinstance(doc, list):
        return ()
    return tuple(part for m in doc if isinstance(m, Mapping) for part in _parts_messages(m))


def usage_from(attrs: Mapping[str, Any]) -> Usage:
    """Token usage under the GenAI names, current and legacy (OpenLLMetry's underscore and prompt/completion)."""
    return Usage(
        input_tokens=number(attrs, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"),
        output_tokens=number(attrs, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens"),
        cache_read_tokens=number(attrs, "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens"),
        cache_write_tokens=number(
            attrs, "gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens"
        ),
        reasoning_tokens=number(
            attrs, "gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens", "llm.usage.reasoning_tokens"
        ),
    )


def model_of(attrs: Mapping[str, Any]) -> str | None:
    for name in ("gen_ai.response.model", "gen_ai.request.model"):
        if attrs.get(name):
            return str(attrs[name])
    return None


def system_of(attrs: Mapping[str, Any]) -> str | None:
    value = attrs.get("gen_ai.provider.name") or attrs.get("gen_ai.system")
    return str(value) if value else None


def _event_messages(span: ReadableSpan) -> tuple[tuple[ChatMessage, ...], tuple[ChatMessage, ...]]:
    """≤1.36 content carried as span events (some SDKs still emit them there)."""
    inputs: list[ChatMessage] = []
    outputs: list[ChatMessage] = []
    for event in span.events:
        attrs = event.attributes or {}
        if event.name in _EVENT_ROLES:
            role = _EVENT_ROLES[event.name]
            calls = _legacy_tool_calls(structured(attrs.get("tool_calls")))
            inputs.append(ChatMessage(role, text_of(structured(attrs.get("content"))), calls, _opt(attrs.get("id"))))
        elif event.name == "gen_ai.choice":
            message = structured(attrs.get("message")) or {}
            if not isinstance(message, Mapping):
                message = {"content": message}
            calls = _legacy_tool_calls(message.get("tool_calls"))
            outputs.append(ChatMessage(str(message.get("role") or "assistant"), text_of(message.get("content")), calls))
    return tuple(inputs), tuple(outputs)


def _legacy_tool_calls(value: Any) -> tuple[ToolCall, ...]:
    calls = []
    for call in value or ():
        if isinstance(call, Mapping):
            function = call.get("function") or {}
            calls.append(
                ToolCall(
                    _opt(call.get("id")), str(function.get("name") or "tool"), structured(function.get("arguments"))
                )
            )
    return tuple(calls)


def is_genai(attrs: Mapping[str, Any], span: ReadableSpan) -> bool:
    if any(key.startswith("gen_ai.") for key in attrs):
        return True
    return any(event.name in _EVENT_ROLES or event.name == "gen_ai.choice" for event in span.events)


def read(span: ReadableSpan, attrs: Mapping[str, Any]) -> Sequence[LlmCall | ToolRun]:
    """A GenAI span as a model call, an agent turn or a tool run; nothing for spans without content or usage."""
    start, end = span.start_time or 0, span.end_time or span.start_time or 0
    operation = attrs.get("gen_ai.operation.name")
    if operation in _TOOL_OPERATIONS or (attrs.get("gen_ai.tool.name") and "gen_ai.input.messages" not in attrs):
        error = None
        if span.status.status_code is StatusCode.ERROR:
            error = span.status.description or str(attrs.get("error.type") or "error")
        result = attrs.get("gen_ai.tool.call.result")
        return [
            ToolRun(
                start,
                end,
                str(attrs.get("gen_ai.tool.name") or span.name),
                _opt(attrs.get("gen_ai.tool.call.id")),
                structured(attrs.get("gen_ai.tool.call.arguments")),
                None if result is None else (result if isinstance(result, str) else json.dumps(structured(result))),
                error,
            )
        ]
    inputs = parts_messages(attrs.get("gen_ai.input.messages"))
    outputs = parts_messages(attrs.get("gen_ai.output.messages"))
    instructions = structured(attrs.get("gen_ai.system_instructions"))
    if instructions:
        inputs = (ChatMessage("system", text_of(instructions)), *inputs)
    if not inputs and not outputs:
        inputs, outputs = _event_messages(span)
    usage = usage_from(attrs)
    if operation == "embeddings":
        usage = as_embedding(usage)
    if not inputs and not outputs and usage.empty:
        return []
    return [
        LlmCall(
            start,
            end,
            inputs,
            outputs,
            model_of(attrs),
            system_of(attrs),
            usage,
            is_agent=operation in _AGENT_OPERATIONS,
        )
    ]
