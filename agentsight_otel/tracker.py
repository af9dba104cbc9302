"""The drop-in ``conversation_tracker``: AgentSight's documented tracker API, with OpenTelemetry underneath.

A conversation is a trace whose id is derived from the conversation id; each tracked item is an event on the
conversation's open span. ``send_tracked_data()`` ends that span, which exports it, and reports per item what
AgentSight answered. Arguments are checked before anything is recorded: a bad one raises at the call and
records nothing. Network trouble never raises from a tracking call.
"""

from __future__ import annotations

import atexit
import bisect
import contextlib
import contextvars
import logging
import math
import sys
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.environment_variables import OTEL_SDK_DISABLED
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, SpanLimits, TracerProvider
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from . import semconv as sc
from .attachments import normalize_mode, pending_attachments, process_attachments
from .config import UNSET, check_api_key, configured_conversation_id, configured_environment, normalize_endpoint
from .errors import (
    InvalidAnswerDataException,
    InvalidConversationDataException,
    InvalidQuestionDataException,
    MissingConversationIdException,
    NoApiKeyException,
    NoDataToSendException,
)
from .exporter import AgentSightSpanExporter
from .forking import call_in_forked_child
from .ids import conversation_root_span_id, conversation_trace_id, generate_conversation_id
from .jsondoc import dumps_str, loads
from .outcomes import Outcome, ledger
from .processor import TrackerSpanProcessor
from .version import __version__
from .wire import MAX_FIELD, iso_time

logger = logging.getLogger("agentsight_otel")

SPAN_NAME = "agentsight.conversation"
FOREIGN_PROVIDER_MAX_EVENTS = 128  # the SDK's default per-span event limit; roll over before reaching it
REMEMBERED_CONVERSATIONS = 10_000  # conversation fields kept across sends, so later batches carry them too
OWN_PROVIDER_MAX_EVENTS = 512  # a rolled-over segment is exported in the background, so memory stays bounded
MAX_DURATION_MS = 366 * 24 * 3600 * 1000.0  # a year: anything longer is a unit mistake
KEEP_ITEM_DATA = 10_000  # items whose full data the summary keeps; older ones keep only type and time
# Conversations are guarded by a few locks (by hash of their id) rather than one: threads tracking different
# conversations, as a server's request threads do, then rarely wait for each other. With one lock, four tracking
# threads spent a fifth of their CPU time taking turns at it. Tracker-wide state keeps ``_lock``, taken after.
CONVERSATION_LOCKS = 16
SHUTDOWN_HAND_OVER_S = 5.0  # shutdown()'s wait for queued and in-flight segments (at exit: the exit budget)

ITEM_TYPES = ("conversation", "question", "answer", "attachments", "action", "button")
_TYPE_CODE = {name: code for code, name in enumerate(ITEM_TYPES)}
_TOKEN_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens", "embedding_tokens")


# -- argument checks ----------------------------------------------------------------------------------------


def _supports_direct_events() -> bool:
    """Whether the SDK's spans take a ready ``Event`` (``Span._add_event``, the step after ``add_event``'s checks).

    The tracker checks every attribute at the call (types, no None, a handful per event) and its own provider sets
    no count or length limit it could reach, so ``add_event``'s BoundedAttributes pass would only repeat that work:
    about half the cost of a tracking call. Spans of any other provider get the public ``add_event``.
    """
    return callable(getattr(SdkSpan, "_add_event", None))


_SDK_SPAN_TYPES: dict[type, bool] = {}


def _is_sdk_span(span: Any) -> bool:
    """``isinstance(span, SdkSpan)``, remembered per class (the SDK's Span is an ABC: its check is slow)."""
    cls = type(span)
    known = _SDK_SPAN_TYPES.get(cls)
    if known is None:
        known = _SDK_SPAN_TYPES[cls] = issubclass(cls, SdkSpan)
    return known


class _EventAttributes(dict):  # type: ignore[type-arg]
    """An event's attributes, read-only like those ``add_event`` makes (a dict, so readers get dict speed)."""

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError("event attributes are read-only")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only  # type: ignore


# Values that str() turns into text nobody meant: a repr of a container, b'...', True, or a rounded float.
_NOT_TEXT = (dict, list, tuple, set, frozenset, bytes, bytearray, bool)


def _conversation_id(value: Any) -> str:
    """The legacy rule: ``str(v or "").strip()`` must be non-empty (so None, "", whitespace and 0 fail).

    Strings, integers and objects meant to be printed (a UUID) are ids; containers, bytes, booleans and floats are
    refused, since their text would be a different conversation than the caller meant. AgentSight stores at most
    255 characters; a longer id would be cut and could merge two conversations.
    """
    if isinstance(value, (*_NOT_TEXT, float)):
        raise InvalidConversationDataException(f"conversation_id must be a string, got {type(value).__name__}")
    text = str(value or "").strip()
    if not text:
        raise MissingConversationIdException(f"conversation_id is required, got {value!r}")
    if len(text) > MAX_FIELD:
        raise InvalidConversationDataException(f"conversation_id is longer than {MAX_FIELD} characters")
    return text


def _required_text(value: Any, what: str, error: type[Exception] = InvalidConversationDataException) -> str:
    """The legacy rule for required fields: ``str(v or "").strip()`` must be non-empty (0 and False fail)."""
    if type(value) is str and value and not value[0].isspace():
        return value  # the common case, checked cheaply
    if isinstance(value, _NOT_TEXT):
        raise error(f"{what} must be a non-blank string, got {type(value).__name__}")
    text = str(value or "")
    if not text.strip():
        raise error(f"{what} must not be blank, got {value!r}")
    return text


def _optional_text(value: Any, what: str) -> str | None:
    """An optional string field; blank means not set (AgentSight refuses blank strings)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, _NOT_TEXT):
        raise InvalidConversationDataException(f"{what} must be a string, got {type(value).__name__}")
    return str(value)


def _metadata(value: Any, what: str = "metadata") -> str | None:
    """Metadata as a JSON object text; ``None`` when there is none."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InvalidConversationDataException(f"{what} must be a dict, got {type(value).__name__}")
    try:
        return dumps_str(dict(value))
    except (TypeError, ValueError) as exc:
        raise InvalidConversationDataException(f"{what} cannot be encoded as JSON: {exc}") from None


def _present(attributes: dict[str, Any]) -> dict[str, Any]:
    """Attributes without the unset ones (OpenTelemetry refuses None values, with a warning each)."""
    return {k: v for k, v in attributes.items() if v is not None}


def _time_ns(value: Any, what: str) -> int | None:
    """A datetime or ISO-8601 string as epoch nanoseconds (naive values are UTC)."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise InvalidConversationDataException(f"{what} must be an ISO-8601 time, got {value!r}") from None
    if not isinstance(value, datetime):
        raise InvalidConversationDataException(f"{what} must be a datetime or ISO-8601 string")
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return int(value.timestamp()) * 1_000_000_000 + value.microsecond * 1000


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidConversationDataException(f"{what} must be a non-negative integer, got {value!r}")
    return value


def _iso(ns: int) -> str:
    return iso_time(ns) or ""


# -- state --------------------------------------------------------------------------------------------------


@dataclass
class _Bucket:
    """What has been tracked for one conversation since its last send.

    Items are kept compactly (a type code and a timestamp each); full data is kept for the most recent
    ``KEEP_ITEM_DATA`` items only, so a conversation tracked for hours does not grow memory without bound.
    """

    conversation_id: str
    span: Any = None
    span_key: tuple[int, int] = (0, 0)
    events_in_span: int = 0
    types: bytearray = field(default_factory=bytearray)
    stamps: array = field(default_factory=lambda: array("q"))
    data: list[Any] = field(default_factory=list)  # per item: its summary data (see _summary_data), or None
    segment_starts: list[int] = field(default_factory=list)  # first item index of each span segment
    segment_keys: list[tuple[int, int]] = field(default_factory=list)
    compacted: int = 0  # items before this index have had their data dropped
    file_events: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # item -> (trace, span, event)
    tokens: dict[str, int] | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    last_ns: int = 0

    def next_timestamp(self) -> int:
        # Strictly increasing at microsecond resolution (the wire's), so order survives the round trip.
        now = time.time_ns()
        self.last_ns = now if now >= self.last_ns + 1000 else self.last_ns + 1000
        return self.last_ns

    def append(self, item_type: str, ts: int, data: dict[str, Any]) -> None:
        self.types.append(_TYPE_CODE[item_type])
        self.stamps.append(ts)
        self.data.append(data)

    def __len__(self) -> int:
        return len(self.types)

    def segment_of(self, index: int) -> tuple[int, int]:
        return self.segment_keys[bisect.bisect_right(self.segment_starts, index) - 1]

    def compact(self) -> None:
        """Drop the data of old items in closed segments, keeping their type and time."""
        limit = min(len(self) - KEEP_ITEM_DATA, self.segment_starts[-1] if self.segment_starts else 0)
        for i in range(self.compacted, max(limit, self.compacted)):
            self.data[i] = None
        self.compacted = max(limit, self.compacted)


_scope: contextvars.ContextVar[str | None] = contextvars.ContextVar("agentsight_conversation", default=None)


class ConversationScope:
    """``with tracker.conversation("id"):`` — the current conversation for this thread or asyncio task."""

    def __init__(self, tracker: ConversationTracker, conversation_id: str, fields: dict[str, Any]) -> None:
        self._tracker = tracker
        self.conversation_id = conversation_id
        self._fields = fields
        self._token: contextvars.Token[str | None] | None = None

    def __enter__(self) -> ConversationScope:
        self._token = _scope.set(self.conversation_id)
        if self._fields:
            self._tracker._record_conversation(self.conversation_id, self._fields, is_used=True)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._token is not None:
            _scope.reset(self._token)
            self._token = None

    async def __aenter__(self) -> ConversationScope:
        return self.__enter__()

    async def __aexit__(self, *exc: Any) -> None:
        self.__exit__(*exc)


class ConversationTracker:
    """AgentSight's ``conversation_tracker`` API over OpenTelemetry. Use the module-level ``tracker``."""

    def __init__(self) -> None:
        # Nothing is read or opened here: configuration is resolved on first use.
        self._lock = threading.RLock()  # tracker-wide state: options, the pipeline, current and known conversations
        self._conversation_locks = _conversation_locks()
        self._buckets: dict[str, _Bucket] = {}
        self._current: str | None = None
        self._options: dict[str, Any] = {}
        self._provider: Any = None
        self._tracer: Any = None
        self._own_provider = False
        self._direct_events = False  # events go straight onto the own provider's spans (see _supports_direct_events)
        self._exporter: AgentSightSpanExporter | None = None
        self._processor: TrackerSpanProcessor | None = None
        self._known_fields: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._env_default: str | None = None
        self._event_limit = FOREIGN_PROVIDER_MAX_EVENTS  # events per span before rolling over
        self._atexit_registered = False
        self._warned_not_recording = False

        call_in_forked_child(self._after_fork)

    def _after_fork(self) -> None:
        """In a forked child: what the parent tracked is the parent's to send; the child starts empty."""
        self._lock = threading.RLock()
        self._conversation_locks = _conversation_locks()
        self._buckets = {}
        # A multiprocessing child (fork start method, Pool workers) ends with os._exit after running
        # multiprocessing's own finalizers, never atexit: the tracker's exit must be one of those finalizers.
        # Its registry is cleared after this hook, so the finalizer is registered from its after-fork callbacks.
        util = sys.modules.get("multiprocessing.util")
        if util is not None:
            util.register_after_fork(self, _finalize_in_multiprocessing_child)

    def __repr__(self) -> str:
        return f"ConversationTracker(conversations={len(self._buckets)}, current={self._current!r})"

    # -- configuration ------------------------------------------------------------------------------------

    def configure(
        self,
        api_key: Any = UNSET,
        conversation_id: Any = UNSET,
        endpoint: Any = UNSET,
        log_level: Any = UNSET,
        *,
        environment: Any = UNSET,
        timeout: Any = UNSET,
        tracer_provider: Any = UNSET,
        app_url: Any = UNSET,
        token_handler: Any = UNSET,
    ) -> None:
        """Change only what is passed. A new key or endpoint takes effect for the next export.

        ``tracer_provider`` routes the tracker's spans through an app's own provider (and its processors);
        by default the tracker builds its own, which sends synchronously at ``send_tracked_data``.
        """
        if token_handler is not UNSET and token_handler is not None:
            # 0.0.x accepted it but never installed a handler; say so instead of silently ignoring it.
            logger.warning("token_handler is not supported: call track_token_usage() with the LLM's usage")
        if app_url is not UNSET:
            self._options["app_url"] = app_url  # accepted for compatibility; only the dashboard link used it
        if api_key is not UNSET:
            if api_key is None or not str(api_key).strip():
                raise NoApiKeyException("API key cannot be None or blank")
            api_key = check_api_key(api_key)
        if conversation_id is not UNSET and conversation_id is not None:
            conversation_id = _conversation_id(conversation_id)
        if endpoint is not UNSET and endpoint is not None:
            endpoint = normalize_endpoint(str(endpoint))
        if timeout is not UNSET and timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
                raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        with self._every_conversation(), self._lock:  # no tracking call sees the pipeline half changed
            changed = False
            for name, value in (
                ("api_key", api_key),
                ("endpoint", endpoint),
                ("log_level", log_level),
                ("environment", environment),
                ("timeout", timeout),
            ):
                if value is not UNSET:
                    self._options[name] = value
                    changed = True
            if changed and self._exporter is not None:
                # Rebuilt from the new options at the next export; the old one's threads and files are released.
                self._exporter.shutdown()
                self._exporter = None
            if conversation_id is not UNSET:
                self._set_current(conversation_id)
            if tracer_provider is not UNSET:
                self._provider = tracer_provider
                self._tracer = None
                self._own_provider = False
                self._direct_events = False
                self._processor = None
                self._event_limit = _event_limit(tracer_provider)

    def _exporter_for_export(self) -> AgentSightSpanExporter:
        with self._lock:
            if self._exporter is None:
                self._exporter = AgentSightSpanExporter(
                    **{k: v for k, v in self._options.items() if k in ("api_key", "endpoint", "timeout")},
                    environment=self._options.get("environment", UNSET),
                    log_level=self._options.get("log_level", UNSET),
                )
            return self._exporter

    def _get_tracer(self) -> Any:
        if self._tracer is not None:
            return self._tracer
        with self._lock:
            if self._tracer is None:
                if self._provider is None:
                    # No event limit: a long conversation must not lose messages to the SDK's 128 default. No
                    # length limit either: the wire cuts long texts with a visible marker, the SDK would cut silently.
                    limits = SpanLimits(
                        max_events=SpanLimits.UNSET,
                        max_event_attributes=64,
                        max_attribute_length=SpanLimits.UNSET,
                        max_span_attribute_length=SpanLimits.UNSET,
                    )
                    # Always on: a conversation is a record, not a sample. OTEL_TRACES_SAMPLER is meant for the
                    # app's own traces; taken here, a ratio sampler would drop whole conversations.
                    provider = TracerProvider(
                        sampler=ALWAYS_ON,
                        resource=Resource.create({"telemetry.sdk.name": "agentsight-otel"}),
                        span_limits=limits,
                        shutdown_on_exit=False,
                    )
                    self._processor = TrackerSpanProcessor(self._exporter_for_export)
                    provider.add_span_processor(self._processor)
                    self._provider = provider
                    self._own_provider = True
                    self._direct_events = _supports_direct_events()
                    self._event_limit = OWN_PROVIDER_MAX_EVENTS
                if not self._atexit_registered:
                    atexit.register(self._at_exit)
                    _finalize_if_multiprocessing_child(self)
                    self._atexit_registered = True
                self._tracer = self._provider.get_tracer("agentsight_otel", __version__)
            return self._tracer

    # -- conversation selection ---------------------------------------------------------------------------

    def _set_current(self, conversation_id: str | None) -> None:
        # Inside a scope, only this context's view changes (tasks and threads copied from it keep theirs).
        if _scope.get() is not None:
            if conversation_id is not None:
                _scope.set(conversation_id)
        else:
            self._current = conversation_id

    def _resolve(self, conversation_id: Any = None) -> str:
        """Explicit id > the ``conversation()`` scope > the current conversation > ``AGENTSIGHT_CONVERSATION_ID``
        > a new generated one."""
        if conversation_id is not None:
            return _conversation_id(conversation_id)
        scope = _scope.get()
        if scope is not None:
            return scope
        current = self._current
        if current is not None:
            return current
        with self._lock:
            if self._current is None:
                configured = configured_conversation_id()
                if configured is not None and len(configured) <= MAX_FIELD:
                    self._current = configured
                else:
                    if configured is not None:
                        logger.warning("AGENTSIGHT_CONVERSATION_ID is longer than %d characters; ignored", MAX_FIELD)
                    self._current = generate_conversation_id()
                    logger.info("no conversation chosen; tracking into generated conversation %s", self._current)
            return self._current

    def get_conversation_id(self) -> str | None:
        """The conversation that tracking calls go to now (the scope's, else the current one)."""
        scope = _scope.get()
        return scope if scope is not None else self._current

    def conversation(self, conversation_id: Any = None, **fields: Any) -> ConversationScope:
        """Scope the current conversation to this thread or asyncio task: ``with tracker.conversation("id"):``.

        Keyword fields (``customer_id``, ``name``, ``metadata``, ...) are recorded as by
        :meth:`get_or_create_conversation`. Without an id, a ``conv_…`` id is generated.
        """
        cid = _conversation_id(conversation_id) if conversation_id is not None else generate_conversation_id()
        checked = self._conversation_fields(**fields) if fields else {}
        return ConversationScope(self, cid, checked)

    # -- recording ----------------------------------------------------------------------------------------

    def _bucket(self, cid: str) -> _Bucket:
        bucket = self._buckets.get(cid)
        if bucket is None:
            # A conversation's fields outlive a send: later batches must not lose (or reset) them.
            bucket = self._buckets[cid] = _Bucket(cid, fields=dict(self._known_fields.get(cid, {})))
        return bucket

    def _start_span(self, cid: str, fields: Mapping[str, Any], start_ns: int | None = None) -> Any:
        """A tracker span in the conversation's trace: a child of its virtual root, linked to the caller's span."""
        parent = NonRecordingSpan(
            SpanContext(
                conversation_trace_id(cid),
                conversation_root_span_id(cid),
                is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED),
            )
        )
        current = trace.get_current_span().get_span_context()
        attributes: dict[str, Any] = {sc.CONVERSATION_ID: cid, sc.SPAN_KIND: sc.KIND_TRACKER}
        attributes.update(self._field_attributes(fields))
        return self._get_tracer().start_span(
            SPAN_NAME,
            context=trace.set_span_in_context(parent, Context()),
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            links=[Link(current)] if current.is_valid else None,
            start_time=start_ns,
        )

    def _open_span(self, bucket: _Bucket, start_ns: int) -> tuple[Any, Any]:
        """The conversation's open span, and the full segment it replaced (to be ended outside the lock)."""
        finished = None
        if bucket.span is not None and bucket.events_in_span >= self._event_limit:
            # Roll over: the full segment is exported in the background (and the SDK's event limit never bites).
            finished, bucket.span = bucket.span, None
            bucket.compact()
        if bucket.span is None:
            span = self._start_span(bucket.conversation_id, bucket.fields, start_ns)
            if not span.is_recording() and not self._warned_not_recording:
                self._warned_not_recording = True
                self._warn_not_recording()
            ctx = span.get_span_context()
            ledger.expect(ctx.trace_id, ctx.span_id)  # a waiting send reports what AgentSight said for it
            bucket.span = span
            bucket.span_key = (ctx.trace_id, ctx.span_id)
            bucket.segment_starts.append(len(bucket))
            bucket.segment_keys.append(bucket.span_key)
            bucket.events_in_span = 0
        return bucket.span, finished

    def _warn_not_recording(self) -> None:
        if self._own_provider:  # always sampled: only the SDK's own switch turns it off
            logger.warning(
                "%s=true turns the OpenTelemetry SDK off, the tracker's own pipeline included; nothing is sent to "
                "AgentSight",
                OTEL_SDK_DISABLED,
            )
        else:
            logger.warning(
                "the configured TracerProvider does not record the tracker's spans (its sampler drops them, or the "
                "SDK is disabled); nothing is sent for them"
            )

    def _add(
        self,
        cid: str,
        item_type: str | None,
        event: str,
        attributes: dict[str, Any],
        data: Any,
        *,
        files: bool = False,
    ) -> None:
        """Record one event; ``item_type`` None adds it to the previous item (files sent with a message).

        This is the hot path of every tracking call: keep it to one lock, one event and three appends.
        """
        finished = None
        with self._conversation_locks[hash(cid) % CONVERSATION_LOCKS]:  # _lock_of(cid), without the call
            bucket = self._buckets.get(cid) or self._bucket(cid)
            now = time.time_ns()
            ts = bucket.last_ns = now if now >= bucket.last_ns + 1000 else bucket.last_ns + 1000
            span = bucket.span
            if span is None or bucket.events_in_span >= self._event_limit:
                span, finished = self._open_span(bucket, ts)
            index = bucket.events_in_span
            self._put_event(span, event, attributes, ts)
            bucket.events_in_span = index + 1
            if item_type is not None and data is not None:
                bucket.types.append(_TYPE_CODE[item_type])
                bucket.stamps.append(ts)
                bucket.data.append(data)
            if files and bucket.types:
                bucket.file_events[len(bucket.types) - 1] = (*bucket.span_key, index)
        if finished is not None:
            finished.end()

    def _put_event(self, span: Any, name: str, attributes: dict[str, Any], ts: int) -> None:
        if self._direct_events and _is_sdk_span(span):  # not under an app's sampler or OTEL_SDK_DISABLED
            span._add_event(Event(name, _EventAttributes(attributes), ts))
        else:
            span.add_event(name, attributes, timestamp=ts)

    @staticmethod
    def _field_attributes(fields: Mapping[str, Any]) -> dict[str, Any]:
        attrs = {
            sc.CONVERSATION_FIELD_ATTRIBUTES[k]: v
            for k, v in fields.items()
            if k in sc.CONVERSATION_FIELD_ATTRIBUTES and v is not None
        }
        if fields.get("metadata") is not None:
            attrs[sc.CONVERSATION_METADATA] = fields["metadata"]
        return attrs

    def _conversation_fields(
        self,
        customer_id: Any = None,
        customer_ip_address: Any = None,
        device: Any = None,
        source: Any = None,
        language: Any = None,
        name: Any = None,
        environment: Any = None,
        metadata: Any = None,
    ) -> dict[str, Any]:
        fields = {
            "customer_id": _optional_text(customer_id, "customer_id"),
            "customer_ip_address": _optional_text(customer_ip_address, "customer_ip_address"),
            "device": _optional_text(device, "device"),
            "source": _optional_text(source, "source"),
            "language": _optional_text(language, "language"),
            "name": _optional_text(name, "name"),
            "environment": _optional_text(environment, "environment"),
        }
        meta = _metadata(metadata)
        fields["metadata"] = meta
        return fields

    def _default_environment(self) -> str:
        configured = self._options.get("environment")
        if configured:
            return str(configured)
        if self._env_default is None:  # read once: finding a .env file walks the directory tree
            self._env_default = configured_environment() or "development"
        return self._env_default

    def _record_conversation(self, cid: str, fields: dict[str, Any], *, is_used: bool) -> None:
        default = self._default_environment()  # outside the locks: the first call may read a .env file
        with self._lock_of(cid):
            # The environment given, else the one given earlier for this conversation here, else the default:
            # calling get_or_create_conversation again without it must not move a production conversation to
            # development. Only a given one is remembered, so a default configured later still applies. (Read
            # without _lock, as _bucket reads it: a single lookup, and this conversation's writes hold its lock.)
            given = fields.get("environment") or self._known_fields.get(cid, {}).get("environment")
            fields = dict(fields, environment=given or default)
            data = {
                "conversation_id": cid,
                **{k: v for k, v in fields.items() if k != "metadata"},
                "metadata": _loads_object(fields["metadata"]) if fields.get("metadata") else None,
                "is_used": is_used,
            }
            bucket = self._bucket(cid)
            bucket.fields.update({k: v for k, v in fields.items() if v is not None})
            known = {k: v for k, v in bucket.fields.items() if k != "environment"}
            if given:
                known["environment"] = given
            with self._lock:
                self._known_fields[cid] = known
                self._known_fields.move_to_end(cid)
                while len(self._known_fields) > REMEMBERED_CONVERSATIONS:
                    self._known_fields.popitem(last=False)
            was_open = bucket.span is not None and bucket.events_in_span < self._event_limit
            span, finished = self._open_span(bucket, bucket.next_timestamp())
            if was_open:  # a new span starts with the fields already
                span.set_attributes(self._field_attributes(bucket.fields))
            ts = bucket.next_timestamp()
            self._put_event(span, sc.EVENT_CONVERSATION, {sc.CONVERSATION_IS_USED: is_used}, ts)
            bucket.events_in_span += 1
            bucket.append("conversation", ts, data)
        if finished is not None:
            finished.end()

    # -- the documented API -------------------------------------------------------------------------------

    def get_or_create_conversation(
        self,
        conversation_id: Any,
        customer_id: str | None = None,
        customer_ip_address: str | None = None,
        device: str | None = None,
        source: str | None = None,
        language: str | None = None,
        name: str | None = None,
        environment: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Make ``conversation_id`` the current conversation and record its fields.

        ``environment`` defaults to the configured one (``AGENTSIGHT_ENVIRONMENT``), else ``development``.
        """
        cid = _conversation_id(conversation_id)
        fields = self._conversation_fields(
            customer_id, customer_ip_address, device, source, language, name, environment, metadata
        )
        self._set_current(cid)
        self._record_conversation(cid, fields, is_used=True)

    def initialize_conversation(
        self,
        conversation_id: Any,
        customer_id: str | None = None,
        customer_ip_address: str | None = None,
        device: str | None = None,
        source: str | None = None,
        language: str | None = None,
        name: str | None = None,
        environment: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Register a conversation now (a widget was opened) without marking it used or making it current."""
        cid = _conversation_id(conversation_id)
        fields = self._conversation_fields(
            customer_id, customer_ip_address, device, source, language, name, environment, metadata
        )
        fields["environment"] = fields.get("environment") or self._default_environment()
        span = self._start_span(cid, fields)
        span.add_event(sc.EVENT_CONVERSATION, {sc.CONVERSATION_IS_USED: False})
        ctx = span.get_span_context()
        ledger.expect(ctx.trace_id, ctx.span_id)
        if self._processor is not None:
            self._processor.export_now(ctx.trace_id, ctx.span_id)
        span.end()
        self._flush_foreign()
        outcome = ledger.pop(ctx.trace_id, ctx.span_id)
        if outcome is not None and not outcome.delivered:
            logger.warning("initialize_conversation(%s) was not delivered: %s", cid, outcome.error)

    def track_human_message(
        self,
        message: Any,
        attachments: list[dict[str, Any]] | None = None,
        attachment_mode: str = "base64",
        metadata: Mapping[str, Any] | None = None,
        *,
        conversation_id: Any = None,
    ) -> None:
        """Record a message from the end user (optionally with files)."""
        self._track_message("end_user", message, attachments, attachment_mode, metadata, conversation_id)

    def track_agent_message(
        self,
        message: Any,
        attachments: list[dict[str, Any]] | None = None,
        attachment_mode: str = "base64",
        metadata: Mapping[str, Any] | None = None,
        *,
        conversation_id: Any = None,
    ) -> None:
        """Record a message from the agent (optionally with files)."""
        self._track_message("agent", message, attachments, attachment_mode, metadata, conversation_id)

    def _track_message(
        self, sender: str, message: Any, attachments: Any, mode: Any, metadata: Any, conversation_id: Any
    ) -> None:
        error = InvalidQuestionDataException if sender == "end_user" else InvalidAnswerDataException
        content = _required_text(message, "message", error)
        meta = _metadata(metadata)
        # As in 0.0.x (`if attachments:`): an empty list means no files, and the mode is not looked at.
        files = process_attachments(attachments, normalize_mode(mode)) if attachments else None
        cid = self._resolve(conversation_id)
        data: Any = (_MESSAGE, content, sender, cid, dict(metadata) if metadata else None)  # see _summary_data
        if files is not None:
            data = _summary_data(data)
            data["attachments"] = [f.descriptor() for f in files]
            data["attachment_mode"] = normalize_mode(mode)
        attrs = {sc.MESSAGE_SENDER: sender, sc.MESSAGE_CONTENT: content}
        if meta is not None:
            attrs[sc.MESSAGE_METADATA] = meta
        self._add(cid, "question" if sender == "end_user" else "answer", sc.EVENT_MESSAGE, attrs, data)
        if files:
            self._add_files(cid, files, sender, None, normalize_mode(mode), linked=True)

    def track_attachments(
        self,
        attachments: list[dict[str, Any]],
        sender: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        mode: str = "base64",
        *,
        conversation_id: Any = None,
    ) -> None:
        """Record files sent in the conversation. Note the legacy order: the second positional is ``sender``."""
        normalized = normalize_mode(mode)
        files = process_attachments(attachments, normalized)
        sender_text = "end_user" if sender is None else _optional_text(sender, "sender") or "end_user"
        if sender_text not in ("end_user", "agent"):
            raise InvalidConversationDataException(
                f"sender must be 'end_user' or 'agent', got {sender_text!r} "
                "(the second positional argument is sender; aim at a conversation with conversation_id=...)"
            )
        meta = _metadata(metadata)
        cid = self._resolve(conversation_id)
        metadata_copy = dict(metadata) if metadata else {}
        self._add_files(cid, files, sender_text, meta, normalized, linked=False, metadata=metadata_copy)

    def _add_files(
        self,
        cid: str,
        files: list[Any],
        sender: str,
        meta: str | None,
        mode: str,
        *,
        linked: bool,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        for f in files:
            pending_attachments.put(cid, f)
        descriptors = [f.descriptor() for f in files]
        attrs: dict[str, Any] = {
            sc.ATTACHMENT_SENDER: sender,
            sc.ATTACHMENT_COUNT: len(files),
            sc.ATTACHMENT_FILES: dumps_str(descriptors),
            sc.ATTACHMENT_MODE: mode,
        }
        if meta is not None:
            attrs[sc.METADATA] = meta
        if linked:  # files sent with a message belong to that message's item
            self._add(cid, None, sc.EVENT_ATTACHMENTS, attrs, None, files=True)
            return
        data = (_ATTACHMENTS, attrs[sc.ATTACHMENT_FILES], mode, sender, cid, metadata or None)
        self._add(cid, "attachments", sc.EVENT_ATTACHMENTS, attrs, data, files=True)

    def track_action(
        self,
        action_name: Any,
        started_at: Any = None,
        ended_at: Any = None,
        duration_ms: Any = None,
        tools_used: Any = None,
        response: Any = None,
        error_msg: Any = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        conversation_id: Any = None,
    ) -> None:
        """Record an action the agent took (a tool call): name, timing, arguments, result or error."""
        name = _required_text(action_name, "action_name")
        start = _time_ns(started_at, "started_at")
        end = _time_ns(ended_at, "ended_at")
        if duration_ms is not None and (
            isinstance(duration_ms, bool)
            or not isinstance(duration_ms, (int, float))
            or not math.isfinite(duration_ms)
            or not 0 <= duration_ms <= MAX_DURATION_MS
        ):
            raise InvalidConversationDataException(
                f"duration_ms must be a finite number between 0 and {MAX_DURATION_MS:.0f}, got {duration_ms!r}"
            )
        if start is not None and end is not None and end < start:
            raise InvalidConversationDataException("ended_at is before started_at")
        try:
            arguments = dumps_str(tools_used) if tools_used is not None else None
        except (TypeError, ValueError) as exc:
            raise InvalidConversationDataException(f"tools_used cannot be encoded as JSON: {exc}") from None
        response_text = None if response is None else (response if isinstance(response, str) else dumps_str(response))
        error_text = _optional_text(error_msg, "error_msg")
        meta = _metadata(metadata)
        cid = self._resolve(conversation_id)
        data: dict[str, Any] = {"action_name": name, "conversation_id": cid, "metadata": dict(metadata or {})}
        for key, value in (
            ("started_at", started_at),
            ("ended_at", ended_at),
            ("duration_ms", duration_ms),
            ("tools_used", tools_used),
            ("response", None if response == "" else response),
            ("error_msg", error_text),  # blank counts as not set, as on the span
        ):
            if value is not None:
                data[key] = value
        attrs = {
            sc.TOOL_NAME: name,
            sc.TOOL_ARGUMENTS: arguments,
            sc.TOOL_RESPONSE: response_text,
            sc.TOOL_ERROR: error_text,
            sc.ACTION_STARTED_AT: start,
            sc.ACTION_ENDED_AT: end,
            sc.ACTION_DURATION_MS: float(duration_ms) if duration_ms is not None else None,
            sc.METADATA: meta,
        }
        self._add(cid, "action", sc.EVENT_ACTION, _present(attrs), data)

    def track_button(
        self,
        button_event: Any,
        label: Any,
        value: Any,
        metadata: Mapping[str, Any] | None = None,
        *,
        conversation_id: Any = None,
    ) -> None:
        """Record a button the user clicked."""
        event = _required_text(button_event, "button_event")
        label_text = _required_text(label, "label")
        value_text = _required_text(value, "value")
        meta = _metadata(metadata)
        cid = self._resolve(conversation_id)
        data = {
            "button_event": event,
            "label": label_text,
            "value": value_text,
            "conversation_id": cid,
            "metadata": dict(metadata or {}),
        }
        attrs = {sc.BUTTON_EVENT: event, sc.BUTTON_LABEL: label_text, sc.BUTTON_VALUE: value_text, sc.METADATA: meta}
        self._add(cid, "button", sc.EVENT_BUTTON, _present(attrs), data)

    def track_token_usage(
        self,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        total_tokens: int = 0,
        embedding_tokens: int = 0,
        *,
        model: str | None = None,
        conversation_id: Any = None,
    ) -> None:
        """Add LLM token counts to the conversation's counters and record them as usage at this point in time.

        ``prompt_tokens`` is input including any cached part, as LLM APIs report it; ``total_tokens`` is kept as
        given, never derived (the legacy behaviour).
        """
        counts = {
            "prompt_tokens": _count(prompt_tokens, "prompt_tokens"),
            "completion_tokens": _count(completion_tokens, "completion_tokens"),
            "total_tokens": _count(total_tokens, "total_tokens"),
            "embedding_tokens": _count(embedding_tokens, "embedding_tokens"),
        }
        model_name = _optional_text(model, "model")
        cid = self._resolve(conversation_id)
        with self._lock_of(cid):
            bucket = self._bucket(cid)
            if bucket.tokens is None:
                bucket.tokens = dict.fromkeys(_TOKEN_KEYS, 0)
            for key, value in counts.items():
                bucket.tokens[key] += value
        if not any(counts.values()):
            return
        attrs = {
            sc.GEN_AI_REQUEST_MODEL: model_name,
            sc.GEN_AI_USAGE_INPUT_TOKENS: counts["prompt_tokens"],
            sc.GEN_AI_USAGE_OUTPUT_TOKENS: counts["completion_tokens"],
            sc.LLM_TOTAL_TOKENS: counts["total_tokens"],
            sc.LLM_EMBEDDING_TOKENS: counts["embedding_tokens"],
        }
        usage = dict(counts, model=model_name) if model_name is not None else dict(counts)  # 0.0.x: the counts only
        data = {"action_name": "token_usage", "conversation_id": cid, "metadata": usage}
        self._add(cid, "action", sc.EVENT_TOKEN_USAGE, _present(attrs), data)

    def get_token_usage(self, *, conversation_id: Any = None) -> dict[str, int]:
        """The current conversation's token counters since its last send; ``{}`` if none were tracked."""
        cid = self._peek(conversation_id)
        if cid is None:
            return {}
        with self._lock_of(cid):
            bucket = self._buckets.get(cid)
            return dict(bucket.tokens) if bucket is not None and bucket.tokens is not None else {}

    def _peek(self, conversation_id: Any) -> str | None:
        return _conversation_id(conversation_id) if conversation_id is not None else self.get_conversation_id()

    def _lock_of(self, cid: str | None) -> threading.RLock:
        """The lock of one conversation's bucket (shared with the others that hash alike)."""
        return self._conversation_locks[hash(cid) % CONVERSATION_LOCKS]

    @contextlib.contextmanager
    def _every_conversation(self) -> Iterator[None]:
        """Every conversation lock, always taken in the same order and before ``_lock``, so none can deadlock."""
        with contextlib.ExitStack() as stack:
            for lock in self._conversation_locks:
                stack.enter_context(lock)
            yield

    def get_tracked_data_summary(self, *, conversation_id: Any = None) -> dict[str, Any]:
        """What is waiting to be sent for the current conversation, with a short preview of each item.

        Items older than the most recent 10,000 of a very long conversation show ``data: None``.
        """
        cid = self._peek(conversation_id)
        with self._lock_of(cid):
            bucket = self._buckets.get(cid) if cid else None
            if bucket is None:
                types, stamps, data = b"", array("q"), []
            else:
                types, stamps, data = bytes(bucket.types), array("q", bucket.stamps), list(bucket.data)
        summary = dict.fromkeys(("conversation", "questions", "answers", "attachments", "actions", "buttons"), 0)
        out = []
        for index, code in enumerate(types):
            item_type = ITEM_TYPES[code]
            summary[_PLURAL[item_type]] += 1
            item_data = _summary_data(data[index])
            out.append(
                {
                    "type": item_type,
                    "timestamp": _iso(stamps[index]),
                    "data": _copy(item_data),
                    "index": index,
                    "preview": _preview(item_type, item_data) if item_data is not None else None,
                }
            )
        summary["total"] = len(types)
        return {"items": out, "summary": summary, "conversation_id": cid}

    def send_tracked_data(
        self, *, conversation_id: Any = None, timeout: float | None = None, wait: bool = True
    ) -> dict[str, Any]:
        """Send what was tracked for the current conversation now, and say per item what AgentSight answered.

        Raises :class:`NoDataToSendException` when nothing was tracked. Never raises for network reasons:
        failed items carry ``success: False`` and an ``error`` (``spooled: True`` when the data waits on disk
        and will be delivered later). Token counters start again from zero.

        ``wait=False`` hands the items to the background sender instead and returns at once: one request then
        carries many conversations, for programs that send faster than one round trip per conversation allows.
        Items are reported ``queued: True``; what cannot be delivered later goes to the spool, as always.
        """
        cid = self._peek(conversation_id)
        with self._lock_of(cid):
            bucket = self._buckets.get(cid) if cid else None
            if bucket is None or not len(bucket):
                raise NoDataToSendException(f"no tracked data to send for conversation {cid!r}")
            del self._buckets[bucket.conversation_id]  # exactly one concurrent sender gets the items
            processor = self._processor
            if bucket.span is not None and processor is not None and wait:
                processor.export_now(*bucket.span_key)
        if bucket.span is not None:
            bucket.span.end()  # outside the lock: other threads keep tracking while this one sends
        if not wait:
            _forget_outcomes(bucket)  # nobody will ask: the ledger must not keep them
            return _queued_report(bucket)
        if processor is not None and bucket.segment_keys:
            processor.wait_idle(bucket.segment_keys[0][0], timeout or 30)
        self._flush_foreign(timeout)
        outcomes = {key: ledger.pop(*key) for key in bucket.segment_keys}
        file_outcomes = {item: ledger.pop(*where) for item, where in bucket.file_events.items()}
        return _send_report(bucket, outcomes, file_outcomes)

    def _flush_foreign(self, timeout: float | None = None) -> None:
        """With an app's provider, its processors may queue; flush so the outcome is known now."""
        if not self._own_provider and self._provider is not None and hasattr(self._provider, "force_flush"):
            self._provider.force_flush(int((timeout or 30) * 1000))

    def flush(self, timeout: float | None = None) -> None:
        """Deliver everything tracked so far, for every conversation, within ``timeout`` seconds (default 30).

        That includes what waits in the spool, such as segments spilled there while the export queue was full;
        what cannot be delivered in time stays spooled.
        """
        deadline = time.monotonic() + (timeout or 30)
        self._hand_over(timeout)
        if self._own_provider or self._provider is None:  # also before any tracking: a previous run's spool
            self._exporter_for_export().force_flush(int(max(deadline - time.monotonic(), 0) * 1000))

    def _hand_over(self, timeout: float | None) -> None:
        """End every open segment and export what the queue holds (at exit: the spool keeps the rest)."""
        with self._every_conversation():
            buckets = list(self._buckets.values())
            self._buckets.clear()
        for bucket in buckets:
            _forget_outcomes(bucket)
            if bucket.span is not None:
                bucket.span.end()
        if self._processor is not None:
            self._processor.force_flush(int((timeout or 30) * 1000))
        self._flush_foreign(timeout)

    def _at_exit(self) -> None:
        """At interpreter exit: exports share the exporter's short exit budget; the rest stays in the spool."""
        try:
            # An exporter is made now only for data still to hand over: after shutdown(), or with nothing tracked,
            # making one would open a spool (and start its threads) just to close it again.
            exporter = self._exporter
            processor = self._processor
            if exporter is None and (self._buckets or (processor is not None and processor.pending())):
                exporter = self._exporter_for_export()
            budget = exporter.begin_exit() if exporter is not None else None
        except Exception:  # noqa: BLE001 - runs at exit; must not raise
            logger.debug("could not prepare the exporter for exit", exc_info=True)
            budget = None
        self._shutdown(SHUTDOWN_HAND_OVER_S if budget is None else max(budget, 0.1))

    def shutdown(self) -> None:
        """Send what is pending (what cannot be delivered stays in the spool) and release the own pipeline.

        Safe to call more than once; registered to run at interpreter exit.
        """
        self._shutdown(SHUTDOWN_HAND_OVER_S)

    def _shutdown(self, timeout: float) -> None:
        """shutdown() within about ``timeout`` seconds in all (at exit: what is left of the exit budget)."""
        deadline = time.monotonic() + timeout
        try:
            self._hand_over(timeout=timeout)
            with self._every_conversation(), self._lock:  # no tracking call sees the pipeline half torn down
                if self._exporter is not None:  # at exit: earlier segments in flight reach the spool first
                    self._exporter.spool_in_flight()
                if self._own_provider and self._provider is not None:
                    if self._processor is not None:  # what is left of the time, not a fixed wait on top
                        self._processor.join_timeout = min(2.0, max(deadline - time.monotonic(), 0.0))
                    self._provider.shutdown()
                    self._provider = None
                    self._tracer = None
                    self._own_provider = False
                    self._direct_events = False
                    self._processor = None
                if self._exporter is not None:
                    self._exporter.shutdown(timeout_millis=max(deadline - time.monotonic(), 0.0) * 1000)
                    self._exporter = None
        except Exception:  # noqa: BLE001 - runs at exit; must not raise
            logger.exception("agentsight tracker shutdown failed")


def _finalize_in_multiprocessing_child(tracker: ConversationTracker) -> None:
    util = sys.modules["multiprocessing.util"]
    util.Finalize(tracker, tracker._at_exit, exitpriority=10)


def _finalize_if_multiprocessing_child(tracker: ConversationTracker) -> None:
    """A tracker first used in a multiprocessing child it was not inherited by (forkserver, spawn) needs the same
    finalizer: a forkserver child ends with os._exit too."""
    multiprocessing = sys.modules.get("multiprocessing")
    if multiprocessing is not None and multiprocessing.parent_process() is not None:
        _finalize_in_multiprocessing_child(tracker)


def _event_limit(provider: Any) -> int:
    """How many events an app's provider keeps per span, so the tracker rolls over before any is dropped."""
    limits = getattr(provider, "_span_limits", None)  # the SDK keeps it private; fall back to its default
    if limits is None:
        return FOREIGN_PROVIDER_MAX_EVENTS
    max_events = getattr(limits, "max_events", FOREIGN_PROVIDER_MAX_EVENTS)
    if max_events is None:  # unlimited
        return OWN_PROVIDER_MAX_EVENTS
    if max_events < 1:
        logger.warning("the configured TracerProvider keeps no span events; the tracker cannot record anything")
        return 1
    return min(int(max_events), OWN_PROVIDER_MAX_EVENTS)


def _loads_object(text: str) -> dict[str, Any]:
    value = loads(text)
    return value if isinstance(value, dict) else {}


_MESSAGE, _ATTACHMENTS = "message", "attachments"


def _summary_data(stored: Any) -> dict[str, Any] | None:
    """An item's data for ``get_tracked_data_summary``, from what the bucket keeps.

    Messages and attachments, the most frequent items, are kept as tuples of strings and rebuilt here on demand:
    held until the send, a dict (of dicts) per item was a good share of the garbage collector's work.
    """
    if type(stored) is not tuple:
        return stored  # type: ignore[no-any-return]
    if stored[0] == _MESSAGE:
        _, content, sender, cid, metadata = stored
        return {"content": content, "sender": sender, "conversation_id": cid, "metadata": metadata or {}}
    _, files, mode, sender, cid, metadata = stored
    return {
        "attachments": loads(files),
        "metadata": metadata or {},
        "mode": mode,
        "sender": sender,
        "conversation_id": cid,
    }


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


_PLURAL = {
    "conversation": "conversation",
    "question": "questions",
    "answer": "answers",
    "attachments": "attachments",
    "action": "actions",
    "button": "buttons",
}


def _preview(item_type: str, d: dict[str, Any]) -> dict[str, Any]:
    if item_type == "conversation":
        return {k: d.get(k) for k in ("conversation_id", "customer_id", "name", "environment")}
    if item_type in ("question", "answer"):
        content = d.get("content", "")
        return {
            "content_preview": content[:100] + ("..." if len(content) > 100 else ""),
            "sender": d.get("sender"),
            "has_metadata": bool(d.get("metadata")),
        }
    if item_type == "attachments":
        names = [f.get("filename") for f in d.get("attachments", [])]
        files = names[:3] + ([f"... and {len(names) - 3} more"] if len(names) > 3 else [])
        return {"count": len(names), "mode": d.get("mode"), "sender": d.get("sender"), "files": files}
    if item_type == "action":
        return {
            "action_name": d.get("action_name"),
            "duration_ms": d.get("duration_ms"),
            "has_error": bool(d.get("error_msg")),  # truthiness, as 0.0.x
            "has_response": bool(d.get("response")),
        }
    if item_type == "button":
        return {"label": d.get("label"), "value": d.get("value"), "event": d.get("button_event")}
    return {}


def _conversation_locks() -> tuple[threading.RLock, ...]:
    return tuple(threading.RLock() for _ in range(CONVERSATION_LOCKS))


def _forget_outcomes(bucket: _Bucket) -> None:
    ledger.forget([(*key, -1) for key in bucket.segment_keys] + list(bucket.file_events.values()))


def _queued_report(bucket: _Bucket) -> dict[str, Any]:
    types = bucket.types
    items = [
        {"index": index, "type": ITEM_TYPES[code], "timestamp": iso_time(ns) or "", "queued": True}
        for index, (code, ns) in enumerate(zip(types, bucket.stamps))
    ]
    summary = {_PLURAL[name]: types.count(code) for code, name in enumerate(ITEM_TYPES) if name != "conversation"}
    summary["errors"] = 0
    return {"items": items, "summary": summary, "queued": True}


def _send_report(
    bucket: _Bucket,
    outcomes: dict[tuple[int, int], Outcome | None],
    file_outcomes: dict[int, Outcome | None],
) -> dict[str, Any]:
    summary = dict.fromkeys(("questions", "answers", "attachments", "actions", "buttons", "errors"), 0)
    report = []
    missing = Outcome(
        False,
        "no delivery outcome: the tracker's TracerProvider has no AgentSightSpanExporter, "
        "or it did not export within the timeout",
    )
    for index, code in enumerate(bucket.types):
        item_type = ITEM_TYPES[code]
        outcome = outcomes.get(bucket.segment_of(index)) or missing
        files = file_outcomes.get(index)
        if outcome.delivered and files is not None and not files.delivered:
            outcome = files  # the item's text arrived but its files did not (yet)
        entry: dict[str, Any] = {"index": index, "type": item_type, "timestamp": _iso(bucket.stamps[index])}
        if outcome.delivered:
            entry.update(success=True, response=outcome.response)
            if item_type != "conversation":
                summary[_PLURAL[item_type]] += 1
        else:
            entry.update(success=False, error=outcome.error)
            if outcome.spooled:
                entry["spooled"] = True
            summary["errors"] += 1
        report.append(entry)
    return {"items": report, "summary": summary}


tracker = ConversationTracker()
conversation_tracker = tracker
