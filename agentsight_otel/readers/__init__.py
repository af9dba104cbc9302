"""Readers turn finished spans into records: one module per convention, and the conversation each belongs to.

- :mod:`.agentsight` — the tracker's events, and agentsight 0.1.x spans passed through.
- :mod:`.genai` — OpenTelemetry GenAI ≥1.37 attributes and ≤1.36 span events (and OpenLLMetry ≥0.55).
- :mod:`.openinference` — OpenInference.
- :mod:`.openllmetry` — OpenLLMetry / Traceloop before 0.55, and Traceloop entity spans.

A span's conversation id comes from the first known attribute it carries (:data:`CONVERSATION_ID_ATTRIBUTES`);
the other spans of its trace inherit it. Spans of a trace whose id is not known yet are held (see
:class:`SpanReader`) until a span of the trace names it, the trace's root ends, or the hold time passes; a trace
with no id anywhere becomes its own conversation. Spans with nothing conversational are dropped.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from ..records import Conversation, Record, SpanRecords
from . import agentsight, genai, openinference, openllmetry
from .assemble import History, assemble
from .model import LlmCall, ToolRun

CONVERSATION_ID_ATTRIBUTES = (
    "agentsight.conversation.id",
    "gen_ai.conversation.id",
    "session.id",
    "traceloop.association.properties.session_id",
    "langfuse.session.id",
    "langsmith.metadata.session_id",
    "langsmith.metadata.thread_id",
    "langsmith.metadata.conversation_id",
    "langsmith.trace.session_id",
)
USER_ID_ATTRIBUTES = ("user.id", "enduser.id", "traceloop.association.properties.user_id", "langfuse.user.id")
DEFAULT_HOLD_SECONDS = 10.0
MAX_HELD_SPANS = 10_000
REMEMBERED_TRACES = 10_000


@dataclass
class ParsedSpan:
    """One span, read: its identity, the conversation it names (if any), and what it says."""

    trace_id: int
    span_id: int
    is_root: bool
    conversation_id: str | None
    customer_id: str | None
    records: tuple[Record, ...]  # already records (tracker events, 0.1.x spans)
    items: tuple[LlmCall | ToolRun, ...]  # model calls and tool runs, to assemble per conversation
    resource: tuple[tuple[str, Any], ...]
    conversation: Conversation | None = None  # full agentsight fields, when the span carries them

    @property
    def conversational(self) -> bool:
        return bool(self.records or self.items)


def _first(attrs: Mapping[str, Any], names: Iterable[str]) -> str | None:
    """The first of these attributes that holds a non-blank string or an integer, as stripped text."""
    for name in names:
        value = attrs.get(name)
        if value is None:
            continue
        if type(value) is not str:
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                continue
            value = str(value)
        value = value.strip()
        if value:
            return value
    return None


def span_attributes(span: ReadableSpan) -> Mapping[str, Any]:
    """A span's attributes, as the plain dict underneath the SDK's read-only view when there is one.

    Readers look up a dozen names per span, most of them absent; through the view each miss costs a raised and
    caught KeyError (``Mapping.get``), on the dict a miss costs nothing.
    """
    inner = getattr(span, "_attributes", None)
    inner = getattr(inner, "_dict", inner)
    if type(inner) is dict:
        return inner
    return span.attributes or {}


def parse_span(span: ReadableSpan) -> ParsedSpan | None:
    """Read one span with the reader of its convention; ``None`` for a span that says nothing and ends no trace."""
    if span.context is None:
        return None
    attrs = span_attributes(span)
    records: tuple[Record, ...] = ()
    items: tuple[LlmCall | ToolRun, ...] = ()
    conversation = None
    if agentsight.is_agentsight(attrs):
        records = agentsight.read_records(span, attrs)
        conversation = agentsight.conversation_from(attrs)
    elif openinference.is_openinference(attrs):
        items = tuple(openinference.read(span, attrs))
    elif openllmetry.is_openllmetry(attrs) and "gen_ai.input.messages" not in attrs:
        items = tuple(openllmetry.read(span, attrs))
    elif genai.is_genai(attrs, span):
        items = tuple(genai.read(span, attrs))
    parent = span.parent
    is_root = parent is None or parent.is_remote
    conversation_id = _first(attrs, CONVERSATION_ID_ATTRIBUTES)
    if not records and not items and not is_root and conversation_id is None:
        return None
    context = span.context
    return ParsedSpan(
        context.trace_id,
        context.span_id,
        is_root,
        conversation_id,
        _first(attrs, USER_ID_ATTRIBUTES),
        records,
        items,
        _resource_attributes(span.resource),
        conversation,
    )


_last_resource: list[Any] = [None, ()]  # (resource, its attributes as pairs): spans of a provider share one


def _resource_attributes(resource: Any) -> tuple[tuple[str, Any], ...]:
    """A resource's attributes as pairs, converted once for a run of spans from the same provider."""
    if resource is None:
        return ()
    last, pairs = _last_resource
    if resource is not last:
        pairs = tuple(resource.attributes.items())
        _last_resource[:] = [resource, pairs]
    return pairs


class SpanReader:
    """Spans in, records out, grouped by conversation; holds a trace's spans until its conversation is known."""

    def __init__(self, hold_seconds: float = DEFAULT_HOLD_SECONDS) -> None:
        self.hold_seconds = hold_seconds
        self._held: OrderedDict[int, tuple[float, list[ParsedSpan]]] = OrderedDict()
        self._held_count = 0
        self._known: OrderedDict[int, str] = OrderedDict()  # trace id -> conversation id
        self._history = History()

    @property
    def holding(self) -> int:
        """How many spans wait for their trace's conversation id."""
        return self._held_count

    def next_release(self) -> float | None:
        """When the oldest held trace times out (monotonic seconds), if any is held."""
        if not self._held:
            return None
        first_seen, _ = next(iter(self._held.values()))
        return first_seen + self.hold_seconds

    def read(self, spans: Iterable[ReadableSpan], *, release_all: bool = False) -> list[SpanRecords]:
        """Records of every span whose conversation is known now; the others wait (unless ``release_all``)."""
        now = time.monotonic()
        ready: list[ParsedSpan] = []
        by_trace: OrderedDict[int, list[ParsedSpan]] = OrderedDict()
        for span in spans:
            parsed = parse_span(span)
            if parsed is not None:
                by_trace.setdefault(parsed.trace_id, []).append(parsed)
        for trace_id, parsed_spans in by_trace.items():
            cid = None
            root_ended = False
            for p in parsed_spans:
                cid = cid or p.conversation_id
                root_ended = root_ended or p.is_root
            if cid is not None:
                self._remember(trace_id, cid)
            cid = cid or self._known.get(trace_id)
            if cid is None and not root_ended:
                self._hold(trace_id, parsed_spans, now)
                continue
            held = self._release(trace_id)
            cid = cid or f"trace-{trace_id:032x}"  # no id anywhere: the trace is its own conversation
            ready.extend(self._assign(held + parsed_spans, cid))
        for trace_id in list(self._held):
            first_seen, _ = self._held[trace_id]
            if release_all or now - first_seen >= self.hold_seconds or self._held_count > MAX_HELD_SPANS:
                cid = self._known.get(trace_id) or f"trace-{trace_id:032x}"
                ready.extend(self._assign(self._release(trace_id), cid))
        return self._assemble(ready)

    def _remember(self, trace_id: int, cid: str) -> None:
        self._known[trace_id] = cid
        self._known.move_to_end(trace_id)
        while len(self._known) > REMEMBERED_TRACES:
            self._known.popitem(last=False)

    def _hold(self, trace_id: int, parsed: list[ParsedSpan], now: float) -> None:
        conversational = [p for p in parsed if p.conversational]
        if not conversational:
            return
        first_seen, held = self._held.get(trace_id, (now, []))
        held.extend(conversational)
        self._held[trace_id] = (first_seen, held)
        self._held_count += len(conversational)

    def _release(self, trace_id: int) -> list[ParsedSpan]:
        entry = self._held.pop(trace_id, None)
        if entry is None:
            return []
        self._held_count -= len(entry[1])
        return entry[1]

    @staticmethod
    def _assign(parsed: list[ParsedSpan], cid: str) -> list[ParsedSpan]:
        out = []
        for p in parsed:
            if p.conversational:
                p.conversation_id = p.conversation_id or cid
                out.append(p)
        return out

    def _assemble(self, ready: list[ParsedSpan]) -> list[SpanRecords]:
        by_conversation: OrderedDict[str, list[ParsedSpan]] = OrderedDict()
        for p in ready:
            by_conversation.setdefault(p.conversation_id or "", []).append(p)
        found: list[SpanRecords] = []
        for cid, parsed_spans in by_conversation.items():
            base: Conversation | None = None  # for spans that carry no conversation fields of their own
            items = [(p.trace_id, p.span_id, item) for p in parsed_spans for item in p.items]
            assembled = assemble(items, self._history.of(cid)) if items else {}
            for p in parsed_spans:
                records = p.records
                if assembled:
                    records += tuple(assembled.get((p.trace_id, p.span_id), ()))
                if not records:
                    continue
                conversation = p.conversation
                if conversation is None:
                    if base is None:
                        customer = next((q.customer_id for q in parsed_spans if q.customer_id), None)
                        base = Conversation(cid, customer_id=customer)
                    conversation = base
                found.append(SpanRecords(conversation, records, p.resource))
        return found


def read_spans(spans: Iterable[ReadableSpan]) -> list[SpanRecords]:
    """Read spans that need no holding (every one names its conversation), e.g. the tracker's own."""
    return SpanReader().read(spans, release_all=True)
