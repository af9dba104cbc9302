"""Deterministic OpenTelemetry ids for conversations: every process tracking a conversation writes one trace."""

from __future__ import annotations

import hashlib
import secrets


def conversation_trace_id(conversation_id: str) -> int:
    """The 128-bit trace id of a conversation, derived from its id (never 0, which OTel treats as invalid)."""
    digest = hashlib.sha256(b"agentsight-conversation:" + conversation_id.encode()).digest()
    return int.from_bytes(digest[:16], "big") or 1


def conversation_root_span_id(conversation_id: str) -> int:
    """The id of the conversation's virtual root span, the parent of every tracker span of the conversation."""
    digest = hashlib.sha256(b"agentsight-root:" + conversation_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def generate_conversation_id() -> str:
    """``conv_`` and 12 hex characters, as AgentSight's SDKs generate them."""
    return "conv_" + secrets.token_hex(6)
