"""Grouping and ordering: records of many spans become one chronological batch per conversation."""

from __future__ import annotations

from collections.abc import Iterable

from .records import Conversation, ConversationBatch, Record, RecordKey, SpanRecords

_CONVERSATION_FIELDS = [name for name in Conversation._fields if name != "conversation_id"]


def merge_conversation(old: Conversation, new: Conversation) -> Conversation:
    """Fields set on the newer span win; fields it leaves unset keep the older value."""
    changes = {name: getattr(new, name) for name in _CONVERSATION_FIELDS if getattr(new, name) is not None}
    return old._replace(**changes) if changes else old


def _order(record: Record) -> tuple[int, int, int]:
    return (record.timestamp_ns, record.key.span_id, record.key.event)


def group_by_conversation(found: Iterable[SpanRecords]) -> list[ConversationBatch]:
    """One batch per conversation id, in first-seen order, each with its records sorted by time."""
    conversations: dict[str, Conversation] = {}
    records: dict[str, list[Record]] = {}
    resources: dict[str, tuple[tuple[str, object], ...]] = {}
    sources: dict[str, list[RecordKey]] = {}
    for item in found:
        cid = item.conversation.conversation_id
        if cid in conversations:
            conversations[cid] = merge_conversation(conversations[cid], item.conversation)
        else:
            conversations[cid] = item.conversation
            records[cid] = []
            sources[cid] = []
        records[cid].extend(item.records)
        resources[cid] = item.resource or resources.get(cid, ())
        if item.records:
            first = item.records[0].key
            sources[cid].append(RecordKey(first.trace_id, first.span_id))
    return [
        ConversationBatch(
            conversation=conversations[cid],
            records=tuple(sorted(records[cid], key=_order)),
            resource=resources[cid],
            sources=tuple(dict.fromkeys(sources[cid])),
        )
        for cid in conversations
    ]
