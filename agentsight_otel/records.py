"""Plain record types passed between the stages: readers produce them, batching orders them, the wire encodes them.

A record is one thing that happened in a conversation (a message, an action, ...). Each keeps the identity of
the span event it was read from (:class:`RecordKey`), from which the wire stage derives stable span ids.

Records and conversations are named tuples rather than dataclasses: an export holds thousands of them from
reading to encoding, and tuples of plain values drop out of the garbage collector's tracking at its first pass,
where dataclass instances would be promoted and rescanned by every full collection.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass
from typing import NamedTuple, Union


class RecordKey(NamedTuple):
    """Where a record came from: the source span and the event's index in it (-1 for the span itself)."""

    trace_id: int
    span_id: int
    event: int = -1  # the event's position in the span; -1 for the span itself

    def stable_span_id(self, role: str = "") -> str:
        """A 16-hex span id that is the same every time the same source is read: retries cannot duplicate.

        Called for most exported items, so it is Python's own tuple hash over integers only (the role as a fixed
        code): that hash is not salted per process, unlike the hash of a string, so a restarted bridge gives a
        re-sent span the ids it gave before.
        """
        code = _ROLE_CODES.get(role)
        if code is None:
            code = _role_code(role)
        identity = (self.trace_id, self.span_id, self.event, code)
        if _HASH_BITS >= 64:
            x = hash(identity) & _MASK64
        else:  # a 32-bit build: two hashes, or ids would repeat within large conversations
            x = (hash(identity) & 0xFFFFFFFF) << 32 | (hash((code, identity)) & 0xFFFFFFFF)
        return "%016x" % (x or 1)  # an all-zero span id is invalid


_MASK64 = (1 << 64) - 1
_HASH_BITS = sys.hash_info.width
_ROLE_CODES: dict[str, int] = {}


def _role_code(role: str) -> int:
    """A fixed 64-bit number per role (the same in every process, unlike ``hash`` of a string)."""
    digest = hashlib.blake2b(role.encode(), digest_size=8).digest()
    code = _ROLE_CODES[role] = int.from_bytes(digest, "big")
    return code


class Conversation(NamedTuple):
    """The conversation fields carried by a span (``agentsight.conversation.*``); ``None`` means not set."""

    conversation_id: str
    customer_id: str | None = None
    customer_ip: str | None = None
    device: str | None = None
    source: str | None = None
    language: str | None = None
    name: str | None = None
    environment: str | None = None
    metadata: str | None = None  # a JSON document as text, parsed back on the wire


class Message(NamedTuple):
    key: RecordKey
    timestamp_ns: int
    sender: str  # "end_user" | "agent"
    content: str
    metadata: str | None = None


class Action(NamedTuple):
    key: RecordKey
    timestamp_ns: int
    name: str
    arguments: str | None = None  # JSON text
    response: str | None = None
    error: str | None = None
    started_ns: int | None = None
    ended_ns: int | None = None
    duration_ms: float | None = None
    metadata: str | None = None


class Button(NamedTuple):
    key: RecordKey
    timestamp_ns: int
    event: str
    label: str
    value: str
    metadata: str | None = None


class Attachments(NamedTuple):
    key: RecordKey
    timestamp_ns: int
    sender: str
    files: str  # JSON list of descriptors {filename, mime_type, size, sha256}; never bytes
    file_count: int
    mode: str | None = None
    metadata: str | None = None


class TokenUsage(NamedTuple):
    key: RecordKey
    timestamp_ns: int
    model: str | None
    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    embedding_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    system: str | None = None


class ConversationOpened(NamedTuple):
    """The conversation was registered (``initialize_conversation``) or its fields were set."""

    key: RecordKey
    timestamp_ns: int
    is_used: bool


class RawSpan(NamedTuple):
    """A span that is already in AgentSight's shape (agentsight 0.1.x kinds), passed through as a wire span dict."""

    key: RecordKey
    timestamp_ns: int
    span: dict  # the wire span dict, built from the source span by :func:`agentsight_otel.wire.span_dict`


Record = Union[Message, Action, Button, Attachments, TokenUsage, ConversationOpened, RawSpan]


@dataclass(frozen=True)
class SpanRecords:
    """What a reader found in one span: the conversation it belongs to and its records, in span order."""

    conversation: Conversation
    records: tuple[Record, ...]
    resource: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class ConversationBatch:
    """One conversation's records from one export, in chronological order."""

    conversation: Conversation
    records: tuple[Record, ...]
    resource: tuple[tuple[str, object], ...] = ()
    sources: tuple[RecordKey, ...] = ()  # the source spans, so delivery outcomes can be reported per span
