"""The tracker's own span processor: synchronous where the API sends now, queued everywhere else.

``send_tracked_data()`` must answer with what AgentSight said, so the span it ends is exported on the caller's
thread, together with any earlier segments of the same conversation still queued. Segments the tracker ends on
its own (a long conversation rolling over, ``send_tracked_data(wait=False)``, flushing at exit) go to a bounded
queue drained by two worker threads, so one encodes the next batch while the other waits for AgentSight's answer
(a conversation is never in both at once, so its segments still arrive in order).

A worker that finds only a few spans queued waits ``BATCH_LINGER_S`` for more before it takes them: each request
costs the process, the network and AgentSight a fixed price (a third of a millisecond of this process's CPU in
``requests`` alone), so one request per many conversations is cheaper than one each, and 20 ms is far below any
interactive need (``send_tracked_data()`` with the default ``wait=True`` and ``flush()`` do not wait for it).

When the queue is full while AgentSight answers, the caller waits briefly for room (a worker takes a batch within
milliseconds): spilling to disk would cost more work than it saves. During an outage, or when the wait runs out,
spans are spilled to the on-disk spool instead of being dropped, so memory stays bounded however fast the program
tracks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from .exporter import AgentSightSpanExporter
from .forking import call_in_forked_child

logger = logging.getLogger("agentsight_otel")

DEFAULT_MAX_QUEUE = 512
MAX_QUEUED_EVENTS = 32_768  # memory bound: queued segments hold their events until exported
BATCH_SPANS = 256  # one request carries many conversations' segments
WORKERS = 2
BATCH_LINGER_S = 0.02  # how long a worker lets a short batch fill up before taking it
QUEUE_FULL_WAIT_S = 0.5  # the longest a caller waits for room in a full queue while AgentSight answers


class TrackerSpanProcessor(SpanProcessor):
    """Exports the tracker's spans through an :class:`AgentSightSpanExporter` supplied on demand."""

    def __init__(self, exporter: Callable[[], AgentSightSpanExporter], *, max_queue: int = DEFAULT_MAX_QUEUE) -> None:
        self._exporter = exporter
        self._max_queue = max_queue
        self.join_timeout = 2.0  # how long shutdown waits for the workers (the tracker lowers it at exit)
        self._sync: set[tuple[int, int]] = set()
        self._reset()
        call_in_forked_child(self._reset)

    def _reset(self) -> None:
        # Also the after-fork hook: the child starts with an empty queue and never resends the parent's spans.
        self._cond = threading.Condition()
        self._queue: deque[ReadableSpan] = deque()
        self._queued_events = 0
        self._in_flight: set[int] = set()  # trace ids the worker is exporting right now
        self._workers: list[threading.Thread] = []
        self._warned_no_thread = False
        self._closed = False

    def export_now(self, trace_id: int, span_id: int) -> None:
        """Mark a span to be exported on the thread that ends it (``send_tracked_data``)."""
        with self._cond:
            self._sync.add((trace_id, span_id))

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is None:
            return
        with self._cond:
            sync = (ctx.trace_id, ctx.span_id) in self._sync
            self._sync.discard((ctx.trace_id, ctx.span_id))
            if sync:
                earlier = [s for s in self._queue if s.context is not None and s.context.trace_id == ctx.trace_id]
                for s in earlier:
                    self._queue.remove(s)
                    self._queued_events -= len(s.events)
                # Earlier segments of this conversation being exported by the worker: let them finish first.
                while ctx.trace_id in self._in_flight:
                    self._cond.wait(0.1)
            elif self._enqueue(span, 0.0):
                return
        if sync:
            self._exporter().export([*earlier, span])
            return
        exporter = self._exporter()
        if not exporter.in_outage and threading.current_thread() not in self._workers:
            with self._cond:
                if self._enqueue(span, QUEUE_FULL_WAIT_S):
                    return
        exporter.spool_spans([span], "the tracker's export queue was full")

    def _enqueue(self, span: ReadableSpan, wait: float) -> bool:
        """Queue a span for the worker, waiting up to ``wait`` seconds for room (the caller holds the condition)."""
        deadline = time.monotonic() + wait
        while not self._closed:
            if len(self._queue) < self._max_queue and self._queued_events + len(span.events) <= MAX_QUEUED_EVENTS:
                self._queue.append(span)
                self._queued_events += len(span.events)
                self._ensure_worker()
                self._cond.notify_all()
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._cond.wait(remaining)
        return False

    def _take(self, count: int) -> tuple[list[ReadableSpan], set[int]]:
        """Up to ``count`` queued spans, oldest first, and their traces, now marked in flight.

        Spans of a conversation another thread is exporting stay queued, so its segments arrive in order. The
        caller holds the condition.
        """
        batch: list[ReadableSpan] = []
        kept: list[ReadableSpan] = []
        while self._queue and len(batch) < count:
            span = self._queue.popleft()
            trace_id = span.context.trace_id if span.context is not None else 0
            (kept if trace_id in self._in_flight else batch).append(span)
        self._queue.extendleft(reversed(kept))
        self._queued_events -= sum(len(s.events) for s in batch)
        traces = {s.context.trace_id for s in batch if s.context is not None}
        self._in_flight |= traces
        self._cond.notify_all()  # callers waiting for room
        return batch, traces

    def _ensure_worker(self) -> None:
        # Called for every queued span, so no liveness poll here: a worker that ends takes itself off the list.
        while len(self._workers) < WORKERS:
            worker = threading.Thread(target=self._work, name="agentsight-tracker-export", daemon=True)
            self._workers.append(worker)
            try:
                worker.start()
            except RuntimeError:  # no thread to be had now: the span stays queued for a later span or a flush
                self._workers.remove(worker)
                if not self._warned_no_thread:
                    self._warned_no_thread = True
                    logger.warning("could not start an export thread; queued conversations wait for the next try")
                return

    def _work(self) -> None:
        try:
            self._serve()
        finally:
            with self._cond:
                if threading.current_thread() in self._workers:
                    self._workers.remove(threading.current_thread())

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue and self._closed:
                    return
                # Worth filling: few spans, and no more events than a quarter of the bound (long conversations'
                # rolled-over segments fill the queue by events long before it holds BATCH_SPANS spans).
                short = (
                    len(self._queue) < min(BATCH_SPANS, self._max_queue)
                    and self._queued_events < MAX_QUEUED_EVENTS // 4
                    and not self._closed
                )
            if short:  # outside the condition: the tracking calls that fill the batch must not wake this worker
                time.sleep(BATCH_LINGER_S)
            with self._cond:
                if not self._queue:  # a flush took them meanwhile
                    continue
                batch, traces = self._take(BATCH_SPANS)
                if not batch:  # everything queued belongs to conversations in flight: wait for them
                    self._cond.wait()
                    continue
            self._export_taken(batch, traces)

    def _export_taken(self, batch: list[ReadableSpan], traces: set[int]) -> None:
        """Export a batch from :meth:`_take`, then let its conversations be taken again."""
        try:
            self._exporter().export(batch)
        except Exception:  # noqa: BLE001 - the worker must keep going
            logger.exception("AgentSight export of queued tracker spans failed")
        finally:
            with self._cond:
                self._in_flight -= traces
                self._cond.notify_all()

    def pending(self) -> bool:
        """Whether any span is queued or being exported."""
        with self._cond:
            return bool(self._queue or self._in_flight)

    def wait_idle(self, trace_id: int, timeout: float) -> bool:
        """Wait until no span of this conversation is queued or being exported; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while trace_id in self._in_flight or any(
                s.context is not None and s.context.trace_id == trace_id for s in self._queue
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export everything queued, on this thread too, within the timeout."""
        deadline = time.monotonic() + timeout_millis / 1000
        while time.monotonic() < deadline:
            with self._cond:
                if not self._queue and not self._in_flight:
                    return True
                batch, traces = self._take(BATCH_SPANS) if self._queue else ([], set())
                if not batch:  # the workers hold the rest
                    self._cond.wait(min(0.05, max(deadline - time.monotonic(), 0)))
                    continue
            self._export_taken(batch, traces)
        return False

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            workers = list(self._workers)  # they take themselves off the list as they end
        deadline = time.monotonic() + self.join_timeout  # bounded: what a worker has not finished is spooled
        for worker in workers:
            if worker is not threading.current_thread():
                worker.join(max(deadline - time.monotonic(), 0))
        with self._cond:  # segments still queued (behind one a stuck worker holds): on disk, not lost
            left, self._queue = list(self._queue), deque()
            self._queued_events = 0
        if left:
            try:
                self._exporter().spool_spans(left, "the tracker shut down before they could be sent")
            except Exception:  # noqa: BLE001 - shutdown must not raise
                logger.exception("could not spool %d queued tracker span(s) at shutdown", len(left))
