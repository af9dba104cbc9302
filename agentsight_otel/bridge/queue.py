"""The export queue: received spans wait here for the worker threads that feed the exporter.

A collector sends several requests at once; a worker merges whatever is waiting for it (up to
``max_batch_spans``) into one ``export`` call, then tells each request how its spans fared:

- delivered to AgentSight, or durably spooled for replay: accepted;
- refused by AgentSight for good (dead-lettered with the reason): accepted with those spans counted as rejected
  (an OTLP partial success; resending would not help);
- neither (no spool, or the spool could not take it): not accepted, so the sender keeps the data and retries.

Lanes: with ``workers`` > 1, every span goes to the lane of its trace (trace id modulo the number of lanes), and
each lane has one worker that exports the lane's spans in the order they arrived. So while one lane waits for
AgentSight to answer, another reads and encodes its next batch; and since a conversation is a trace (the tracker
derives the trace id from the conversation id; the load-balanced tier routes by trace id for the same reason), a
conversation's spans still reach AgentSight one batch after the other, in order. (A conversation that spans
several traces, such as a session id over many requests, may be sent by two lanes at once, as by two bridges of
the load-balanced tier; AgentSight merges it either way.) A request is answered once every lane that got some of
its spans has exported them. Only an exporter that is safe to call from several threads may have more than one
worker: the OpenTelemetry SDK never calls ``export`` concurrently, so exporters need not expect it.

The queue is bounded in spans; when it is full, new requests are turned away at once (backpressure) instead of
growing memory without limit. A request whose spans are still being exported when its wait ends is answered
"retry" as well; its spans are exported anyway, and AgentSight de-duplicates the resent span ids.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ..outcomes import Outcome, OutcomeLedger

logger = logging.getLogger("agentsight_otel.bridge")

ACCEPTED = "accepted"
BUSY = "busy"  # the queue is full
CLOSED = "closed"  # shutting down
PENDING = "pending"  # still being exported when the wait ended
FAILED = "failed"  # the exporter could neither deliver nor spool


@dataclass(frozen=True)
class Verdict:
    """What to tell the sender about one request."""

    outcome: str
    rejected: int = 0
    message: str | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome == ACCEPTED


class BridgeLedger(OutcomeLedger):
    """Keeps only the outcomes the bridge must look at: spans that were not delivered at once."""

    def record(self, trace_id: int, span_id: int, outcome: Outcome, *, index: int = -1) -> None:
        if index != -1:
            return  # attachment uploads: the bridge never carries attachment bytes
        with self._lock:
            if outcome.delivered:
                self._entries.pop((trace_id, span_id, index), None)
            else:
                self._store((trace_id, span_id, index), outcome)


class _Job:
    """One request: its spans, spread over one or more lanes, and the verdict once every lane is done."""

    __slots__ = ("done", "failure", "message", "parts_left", "rejected", "verdict")

    def __init__(self, parts: int) -> None:
        self.parts_left = parts
        self.done = threading.Event()
        self.verdict: Verdict | None = None
        self.rejected = 0
        self.message: str | None = None
        self.failure: Verdict | None = None

    def settle(self, verdict: Verdict) -> None:
        """One lane's verdict on its part (under the queue's lock); with the last one the request is answered, as
        a retry if any part failed."""
        if verdict.accepted:
            self.rejected += verdict.rejected
            self.message = self.message or verdict.message
        else:
            self.failure = self.failure or verdict
        self.parts_left -= 1
        if self.parts_left == 0:
            self.verdict = self.failure or Verdict(ACCEPTED, self.rejected, self.message)
            self.done.set()


class _Part:
    """A job's spans in one lane."""

    __slots__ = ("job", "spans")

    def __init__(self, job: _Job, spans: Sequence[ReadableSpan]) -> None:
        self.job = job
        self.spans = spans


def _lane_shares(spans: Sequence[ReadableSpan], lanes: int) -> list[tuple[int, Sequence[ReadableSpan]]]:
    """(lane, spans) for each lane that gets some of ``spans``, in their original order: a span goes to the lane
    of its trace."""
    if lanes == 1:
        return [(0, spans)]
    shares: list[list[ReadableSpan]] = [[] for _ in range(lanes)]
    for span in spans:
        context = span.context
        shares[context.trace_id % lanes if context is not None else 0].append(span)
    return [(lane, share) for lane, share in enumerate(shares) if share]


class ExportQueue:
    """A bounded queue of span batches in front of one ``SpanExporter``, with one worker thread per lane."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queued_spans: int = 50_000,
        max_batch_spans: int = 10_000,
        workers: int = 1,
        ledger: BridgeLedger | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("an export queue needs at least one worker")
        self.exporter = exporter
        self.max_queued_spans = max_queued_spans
        self.max_batch_spans = max_batch_spans
        self.workers = workers
        self._ledger = ledger
        self._lanes: list[deque[_Part]] = [deque() for _ in range(workers)]
        self._queued_spans = 0  # waiting or being exported
        self._cond = threading.Condition()
        self._closing = False
        self._threads: list[threading.Thread] = []
        self._stats = {
            "requests": 0,
            "spans_received": 0,
            "spans_accepted": 0,
            "spans_rejected": 0,
            "spans_failed": 0,
            "busy": 0,
            "pending": 0,
            "export_calls": 0,
            "max_queued_spans_seen": 0,
        }

    # -- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        for lane in range(self.workers):
            name = "agentsight-bridge-export" + (f"-{lane}" if self.workers > 1 else "")
            thread = threading.Thread(target=self._run, args=(lane,), name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def close(self, timeout: float) -> bool:
        """Take nothing new; export what was accepted, within ``timeout``. True when everything was exported."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if not self._threads:
            return not any(self._lanes)
        deadline = time.monotonic() + max(timeout, 0)
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0))
        return not any(thread.is_alive() for thread in self._threads)

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def queued_spans(self) -> int:
        return self._queued_spans

    @property
    def full(self) -> bool:
        """No room for even one more span: new requests are refused before any work is done on them."""
        return self._queued_spans >= self.max_queued_spans

    def stats(self) -> dict[str, int]:
        with self._cond:
            return dict(self._stats, queued_spans=self._queued_spans, workers=self.workers)

    # -- the request side ------------------------------------------------------------------------------------

    def offer(self, spans: Sequence[ReadableSpan], wait: float) -> Verdict:
        """Queue ``spans`` for export and wait up to ``wait`` seconds for the verdict."""
        count = len(spans)
        shares = _lane_shares(spans, self.workers) if count else []
        with self._cond:
            self._stats["requests"] += 1
            self._stats["spans_received"] += count
            if self._closing:
                return Verdict(CLOSED, message="the bridge is shutting down; retry later")
            if not count:
                return Verdict(ACCEPTED)
            # One request larger than the whole queue is still taken when nothing else waits.
            if self._queued_spans and self._queued_spans + count > self.max_queued_spans:
                self._stats["busy"] += 1
                return Verdict(
                    BUSY,
                    message=f"the bridge has {self._queued_spans} spans waiting for export; retry later",
                )
            job = _Job(len(shares))
            for lane, share in shares:
                self._lanes[lane].append(_Part(job, share))
            self._queued_spans += count
            if self._queued_spans > self._stats["max_queued_spans_seen"]:
                self._stats["max_queued_spans_seen"] = self._queued_spans
            self._cond.notify_all()
        if not job.done.wait(wait) or job.verdict is None:
            with self._cond:
                self._stats["pending"] += 1
            return Verdict(PENDING, message="the spans are still being exported; retry later")
        return job.verdict

    # -- the workers -----------------------------------------------------------------------------------------

    def _take(self, lane: int) -> list[_Part] | None:
        """The parts waiting in ``lane``, oldest first, merged up to ``max_batch_spans``; None once closed."""
        waiting = self._lanes[lane]
        with self._cond:
            while not waiting:
                if self._closing:
                    return None
                self._cond.wait()
            batch = [waiting.popleft()]
            size = len(batch[0].spans)
            while waiting and size + len(waiting[0].spans) <= self.max_batch_spans:
                part = waiting.popleft()
                batch.append(part)
                size += len(part.spans)
            return batch

    def _run(self, lane: int) -> None:
        while True:
            batch = self._take(lane)
            if batch is None:
                return
            spans: Sequence[ReadableSpan]
            if len(batch) == 1:
                spans = batch[0].spans
            else:
                merged: list[ReadableSpan] = []
                for part in batch:
                    merged.extend(part.spans)
                spans = merged
            started = time.monotonic()
            try:
                result: SpanExportResult | None = self.exporter.export(spans)
            except Exception:  # noqa: BLE001 - the worker must survive anything
                logger.exception("the bridge's exporter raised")
                result = None
            verdicts = self._judge(batch, result)
            logger.debug(
                "lane %d exported %d span(s) from %d request(s) in %.3fs: %s",
                lane,
                len(spans),
                len(batch),
                time.monotonic() - started,
                result,
            )
            self._finish(batch, verdicts)

    def _finish(self, batch: list[_Part], verdicts: list[Verdict]) -> None:
        with self._cond:
            self._stats["export_calls"] += 1
            for part, verdict in zip(batch, verdicts):
                count = len(part.spans)
                self._queued_spans -= count
                if verdict.accepted:
                    self._stats["spans_accepted"] += count - verdict.rejected
                    self._stats["spans_rejected"] += verdict.rejected
                else:
                    self._stats["spans_failed"] += count
                part.job.settle(verdict)
            self._cond.notify_all()

    def _judge(self, batch: list[_Part], result: SpanExportResult | None) -> list[Verdict]:
        if result is SpanExportResult.SUCCESS:
            return [Verdict(ACCEPTED) for _ in batch]
        ledger = self._ledger
        if ledger is None:
            return [Verdict(FAILED, message="the exporter failed; retry later") for _ in batch]
        seen = False
        verdicts = []
        for part in batch:
            rejected = 0
            failed = None
            refusal = None
            for span in part.spans:
                context = span.context
                if context is None:
                    continue
                outcome = ledger.pop(context.trace_id, context.span_id)
                if outcome is None:
                    continue
                seen = True
                if outcome.delivered or outcome.spooled:
                    continue
                error = outcome.error or "not delivered"
                if outcome.refused:  # refused for good (a dead letter) or unencodable: resending cannot help
                    rejected += 1
                    refusal = refusal or error
                else:
                    failed = failed or error
            if failed is not None:
                verdicts.append(Verdict(FAILED, message=f"AgentSight delivery failed: {failed}"))
            else:
                verdicts.append(Verdict(ACCEPTED, rejected, f"refused by AgentSight: {refusal}" if refusal else None))
        if not seen:  # the export failed before any outcome was recorded (an unexpected error)
            return [Verdict(FAILED, message="the exporter failed; retry later") for _ in batch]
        return verdicts
