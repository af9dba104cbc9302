"""What an instrumentation's span says, in one neutral shape, before it becomes AgentSight records.

Each convention reader (GenAI, OpenInference, OpenLLMetry) turns a span into an :class:`LlmCall` (a model call,
or an agent turn, with its input and output messages and token usage) or a :class:`ToolRun` (a tool the app
executed). :mod:`.assemble` then turns these into records once per conversation, removing the history that every
model call repeats.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class ToolCall:
    """A tool the model asked for (a ``tool_call`` part)."""

    id: str | None
    name: str
    arguments: Any = None


@dataclass(frozen=True)
class ChatMessage:
    role: str  # system | user | assistant | tool
    text: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None  # on role=tool: the call this answers


@dataclass(frozen=True)
class Usage:
    """Token counts as the instrumentation reported them: input includes cached tokens, output includes reasoning."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    embedding_tokens: int = 0  # an embeddings call's input, which AgentSight bills in a category of its own

    @property
    def empty(self) -> bool:
        return not (self.input_tokens or self.output_tokens or self.embedding_tokens)


def as_embedding(usage: Usage) -> Usage:
    """An embeddings call's usage: its input tokens are embedding tokens (it produces no text output)."""
    return replace(usage, input_tokens=0, embedding_tokens=usage.embedding_tokens or usage.input_tokens)


@dataclass(frozen=True)
class LlmCall:
    start_ns: int
    end_ns: int
    inputs: tuple[ChatMessage, ...] = ()
    outputs: tuple[ChatMessage, ...] = ()
    model: str | None = None
    system: str | None = None
    usage: Usage = field(default_factory=Usage)
    is_agent: bool = False  # an agent/workflow turn repeating the user's input and the final answer


@dataclass(frozen=True)
class ToolRun:
    start_ns: int
    end_ns: int
    name: str
    call_id: str | None = None
    arguments: Any = None
    result: str | None = None
    error: str | None = None
