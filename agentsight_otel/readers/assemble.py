"""Neutral model calls and tool runs of one conversation -> AgentSight records, each message once.

Every model call repeats the whole history in its input, and agent spans repeat the turn's user input and final
answer; the transcript must show each message once. A message is new when its text (per role) occurs more often
in a call's input or output than this conversation has shown so far, which keeps genuine repeats ("yes", "yes").
System and tool messages are not transcript messages.
"""

from __future__ import annotations

import json
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from typing import Any

from ..jsondoc import dumps_str
from ..records import Action, Message, Record, RecordKey, TokenUsage
from .model import ChatMessage, LlmCall, ToolCall, ToolRun

REMEMBERED_CONVERSATIONS = 10_000
_SENDER = {"user": "end_user", "assistant": "agent"}


@dataclass
class ConversationMemory:
    """What a conversation has already shown, so later calls (and later exports) add only what is new."""

    shown: Counter[tuple[str, str]] = field(default_factory=Counter)
    tool_calls: set[str] = field(default_factory=set)
    # Traces in which a model call reported usage: an agent span's totals in the same trace would count it twice.
    model_usage_traces: set[int] = field(default_factory=set)


class History:
    """Per-conversation memory across exports, bounded to the most recent conversations."""

    def __init__(self, max_conversations: int = REMEMBERED_CONVERSATIONS) -> None:
        self._memory: OrderedDict[str, ConversationMemory] = OrderedDict()
        self._max = max_conversations

    def of(self, conversation_id: str) -> ConversationMemory:
        memory = self._memory.get(conversation_id)
        if memory is None:
            memory = self._memory[conversation_id] = ConversationMemory()
            while len(self._memory) > self._max:
                self._memory.popitem(last=False)
        self._memory.move_to_end(conversation_id)
        return memory


def _arguments(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            json.loads(value)
            return value
        except ValueError:
            return dumps_str(value)
    return dumps_str(value)


def _new_messages(
    messages: tuple[ChatMessage, ...], memory: ConversationMemory, seen_here: Counter[tuple[str, str]]
) -> list[ChatMessage]:
    """Messages beyond what the conversation has shown; ``seen_here`` counts the call's input, then its output."""
    fresh = []
    for message in messages:
        if message.role not in _SENDER or not message.text.strip():
            continue
        key = (message.role, message.text)
        seen_here[key] += 1
        if seen_here[key] > memory.shown[key]:
            memory.shown[key] += 1
            fresh.append(message)
    return fresh


def assemble(
    items: list[tuple[int, int, LlmCall | ToolRun]], memory: ConversationMemory
) -> dict[tuple[int, int], list[Record]]:
    """Records per source span (trace id, span id), from that span's model calls and tool runs, in time order."""
    out: dict[tuple[int, int], list[Record]] = {}
    has_tool_runs = any(isinstance(item, ToolRun) for _, _, item in items)
    for trace_id, _, item in items:
        if isinstance(item, LlmCall) and not item.is_agent and (item.usage.input_tokens or item.usage.output_tokens):
            if len(memory.model_usage_traces) >= 256:  # bounded: a long conversation's old turns are long done
                memory.model_usage_traces.clear()
            memory.model_usage_traces.add(trace_id)
    pending_calls: list[tuple[int, int, int, ToolCall]] = []
    responses: dict[str, str] = {}
    for trace_id, span_id, item in sorted(items, key=lambda t: (t[2].start_ns, t[1])):
        records = out.setdefault((trace_id, span_id), [])

        def key(records: list[Record] = records, trace_id: int = trace_id, span_id: int = span_id) -> RecordKey:
            return RecordKey(trace_id, span_id, len(records))

        if isinstance(item, ToolRun):
            if item.call_id:
                memory.tool_calls.add(item.call_id)
            records.append(
                Action(
                    key(),
                    item.start_ns,
                    item.name,
                    arguments=_arguments(item.arguments),
                    response=item.result,
                    error=item.error,
                    started_ns=item.start_ns,
                    ended_ns=item.end_ns,
                    duration_ms=round((item.end_ns - item.start_ns) / 1e6, 3),
                )
            )
            continue
        seen_here: Counter[tuple[str, str]] = Counter()
        fresh_inputs = _new_messages(item.inputs, memory, seen_here)
        for offset, message in enumerate(fresh_inputs):
            records.append(Message(key(), item.start_ns + offset * 1000, _SENDER[message.role], message.text))
        # Usage belongs to the call: after the input it was given, before the answer it produced.
        usage_at = item.start_ns + len(fresh_inputs) * 1000 + 500
        for message in item.inputs:
            if message.role == "tool" and message.tool_call_id:
                responses[message.tool_call_id] = message.text
        at = item.end_ns
        # An answer repeating an earlier one is new when the history in this call's input holds the earlier one.
        for offset, message in enumerate(_new_messages(item.outputs, memory, seen_here)):
            records.append(Message(key(), at + offset * 1000, _SENDER[message.role], message.text))
        for message in item.outputs:
            for call in message.tool_calls:
                pending_calls.append((trace_id, span_id, at, call))
        usage = item.usage
        if not usage.empty and not (item.is_agent and trace_id in memory.model_usage_traces):
            records.append(
                TokenUsage(
                    key(),
                    usage_at,
                    item.model,
                    # AgentSight bills input without cache: the readers' counts include it, so take it out.
                    input_tokens=max(usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens, 0),
                    output_tokens=usage.output_tokens,
                    total_tokens=usage.input_tokens + usage.output_tokens + usage.embedding_tokens,
                    cache_read_tokens=usage.cache_read_tokens,
                    cache_write_tokens=usage.cache_write_tokens,
                    reasoning_tokens=usage.reasoning_tokens,
                    embedding_tokens=usage.embedding_tokens,
                    system=item.system,
                )
            )
    if not has_tool_runs:
        # No tool spans in sight: the model's tool calls, with the results the next call was given, are the actions.
        for trace_id, span_id, at, call in pending_calls:
            if call.id is not None and call.id in memory.tool_calls:
                continue
            if call.id is not None:
                memory.tool_calls.add(call.id)
            records = out.setdefault((trace_id, span_id), [])
            records.append(
                Action(
                    RecordKey(trace_id, span_id, len(records)),
                    at + 500,
                    call.name,
                    arguments=_arguments(call.arguments),
                    response=responses.get(call.id or ""),
                )
            )
    return {k: sorted(v, key=lambda r: (r.timestamp_ns, r.key.event)) for k, v in out.items() if v}
