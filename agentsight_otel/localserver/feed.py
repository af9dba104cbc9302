"""`GET /api/feed/`: transcript items in the order they arrived, after a cursor (what `agentsight-otel tail` reads).

Each stored span gets an arrival sequence number (`seq`). Spans are immutable and writes are serialised, so a
client that remembers the last `cursor` it got and asks for `?since=<cursor>` sees every new item exactly once.
Within one answer, the items of each conversation are in transcript (chronological) order.

Query parameters:

- `since=N` — items of spans that arrived after sequence N (0: from the beginning). Answers at most `limit`
  spans' worth (default 500, at most 1000); `more` is true when there is more to read right away.
- no `since` — the current cursor, plus the last `last=N` items (default 0) to show some context first.
- `conversation_id=ID` — only that conversation (an unknown id answers no items, so a client may wait for it).

Answer: `{"cursor": int, "latest": int, "more": bool, "items": [item + {"seq", "conversation": {"id",
"conversation_id", "name"}}]}`. `latest` is the newest sequence stored: when it is below a client's cursor, the
server was started afresh (an in-memory database) and the client should read again from 0.

The same feed is served keyless to the viewer's users at `/viewer/api/feed/` (so `tail` can follow a loopback
server, e.g. the demo's, without its key).
"""

from __future__ import annotations

import logging
from typing import Any

from .store import Store
from .transcript import project_items
from .views import ApiError, Request, Response, ServerState, json_response

logger = logging.getLogger("agentsight_otel.localserver")

DEFAULT_FEED_LIMIT = 500
MAX_FEED_LIMIT = 1000
MAX_LAST = 1000


def _count_param(request: Request, name: str, default: int, maximum: int, minimum: int = 0) -> int:
    """A non-negative integer query parameter within bounds, or a DRF-style 400 naming it."""
    raw = request.param(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18 or not minimum <= int(raw) <= maximum:
        raise ApiError(400, {name: [f"Ensure this value is an integer between {minimum} and {maximum}."]})
    return int(raw)


def feed_items(store: Store, spans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Project spans into items grouped by conversation (first arrival first), chronological within each group."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for span in spans:
        groups.setdefault(int(span["conversation_pk"]), []).append(span)
    items: list[dict[str, Any]] = []
    for pk, group in groups.items():
        row = store.conversation_by_pk(pk)
        if row is None:
            continue
        conversation = {"id": row["id"], "conversation_id": row["conversation_id"], "name": row["name"]}
        seq_of = {span["span_id"]: int(span["seq"]) for span in group}
        try:
            projected = project_items(group, store.attachments_of(pk))
        except Exception:  # one bad conversation must not stop the feed of the others
            logger.exception("spans of conversation %s could not be projected; left out of the feed", pk)
            continue
        for item in projected:
            items.append({**item, "seq": seq_of.get(item["span_id"], 0), "conversation": conversation})
    return items


def feed(state: ServerState, request: Request) -> Response:
    """The change feed: new transcript items after a cursor, or the current cursor and the last few items."""
    store = state.store
    pk: int | None = None
    conversation_id = request.param("conversation_id")
    if conversation_id:
        row = store.conversation_by_id(conversation_id)
        if row is None:  # not there yet: nothing to show, and whatever arrives later is new
            since = _count_param(request, "since", 0, 2**62)
            return json_response(200, {"cursor": since, "latest": store.span_seq(), "more": False, "items": []})
        pk = int(row["id"])
    if request.param("since") is None:
        last = _count_param(request, "last", 0, MAX_LAST)
        cursor = store.span_seq()
        items = feed_items(store, store.last_spans(last, pk))[-last:] if last else []
        return json_response(200, {"cursor": cursor, "latest": cursor, "more": False, "items": items})
    since = _count_param(request, "since", 0, 2**62)
    limit = _count_param(request, "limit", DEFAULT_FEED_LIMIT, MAX_FEED_LIMIT, minimum=1)
    latest = store.span_seq()
    spans = store.spans_after(since, pk, limit)
    cursor = int(spans[-1]["seq"]) if spans else since
    answer = {"cursor": cursor, "latest": latest, "more": len(spans) == limit, "items": feed_items(store, spans)}
    return json_response(200, answer)
