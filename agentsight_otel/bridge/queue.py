"""The export queue: received spans wait here for the single worker thread that feeds the exporter.

``SpanExporter.export`` must not be called concurrently, while a collector sends several requests at once; the
worker merges whatever is waiting (up to ``max_batch_spans``) into one ``export`` call, then tells each request
how its spans fared:

- delivered to AgentSight, or durably spooled for replay: accepted;
- refused by AgentSight for good (dead-lettered with the reason): accepted with those spans counted as rejected
  (an OTLP partial success; resending would not help);
- neither (no spool, or the spool could not take it): not accepted, so the sender keeps the data and retries.

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
        if outcome.delivered:
            with self._lock:
                self._entries.pop((trace_id, span_id, index), None)
            return
        super().record(trace_id, span_id, outcome, index=index)


class _Job:
    __slots__ = ("done", "spans", "verdict")

    def __init__(self, spans: Sequence[ReadableSpan]) -> None:
        self.spans = spans
        self.done = threading.Event()
        self.verdict: Verdict | None = None


class ExportQueue:
    """A bounded queue of span batches in front of one ``SpanExporter``, with one worker thread."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queued_spans: int = 50_000,
        max_batch_spans: int = 10_000,
        ledger: BridgeLedger | None = None,
    ) -> None:
        self.exporter = exporter
        self.max_queued_spans = max_queued_spans
        self.max_batch_spans = max_batch_spans
        self._ledger = ledger
        self._jobs: deque[_Job] = deque()
        self._queued_spans = 0  # waiting or being exported
        self._cond = threading.Condition()
        self._closing = False
        self._worker: threading.Thread | None = None
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
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="agentsight-bridge-export", daemon=True)
            self._worker.start()

    def close(self, timeout: float) -> bool:
        """Take nothing new; export what was accepted, within ``timeout``. True when everything was exported."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(max(timeout, 0))
            return not self._worker.is_alive()
        return not self._jobs

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
            return dict(self._stats, queued_spans=self._queued_spans)

    # -- the request side ------------------------------------------------------------------------------------

    def offer(self, spans: Sequence[ReadableSpan], wait: float) -> Verdict:
        """Queue ``spans`` for export and wait up to ``wait`` seconds for the verdict."""
        count = len(spans)
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
            job = _Job(spans)
            self._jobs.append(job)
            self._queued_spans += count
            if self._queued_spans > self._stats["max_queued_spans_seen"]:
                self._stats["max_queued_spans_seen"] = self._queued_spans
            self._cond.notify_all()
        if not job.done.wait(wait) or job.verdict is None:
            with self._cond:
                self._stats["pending"] += 1
            return Verdict(PENDING, message="the spans are still being exported; retry later")
        return job.verdict

    # -- the worker ------------------------------------------------------------------------------------------

    def _take(self) -> list[_Job] | None:
        with self._cond:
            while not self._jobs:
                if self._closing:
                    return None
                self._cond.wait()
            batch = [self._jobs.popleft()]
            size = len(batch[0].spans)
            while self._jobs and size + len(self._jobs[0].spans) <= self.max_batch_spans:
                job = self._jobs.popleft()
                batch.append(job)
                size += len(job.spans)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            spans: Sequence[ReadableSpan]
            if len(batch) == 1:
                spans = batch[0].spans
            else:
                merged: list[ReadableSpan] = []
                for job in batch:
                    merged.extend(job.spans)
                spans = merged
            started = time.monotonic()
            try:
                result: SpanExportResult | None = self.exporter.export(spans)
            except Exception:  # noqa: BLE001 - the worker must survive anything
                logger.exception("the bridge's exporter raised")
                result = None
            verdicts = self._judge(batch, result)
            logger.debug(
                "exported %d span(s) from %d request(s) in %.3fs: %s",
                len(spans),
                len(batch),
                time.monotonic() - started,
                result,
            )
            with self._cond:
                self._stats["export_calls"] += 1
                for job, verdict in zip(batch, verdicts):
                    count = len(job.spans)
                    self._queued_spans -= count
                    if verdict.accepted:
                        self._stats["spans_accepted"] += count - verdict.rejected
                        self._stats["spans_rejected"] += verdict.rejected
                    else:
                        self._stats["spans_failed"] += count
                self._cond.notify_all()
            for job, verdict in zip(batch, verdicts):
                job.verdict = verdict
                job.done.set()

    def _judge(self, batch: list[_Job], result: SpanExportResult | None) -> list[Verdict]:
        if result is SpanExportResult.SUCCESS:
            return [Verdict(ACCEPTED) for _ in batch]
        ledger = self._ledger
        if ledger is None:
            return [Verdict(FAILED, message="the exporter failed; retry later") for _ in batch]
        seen = False
        verdicts = []
        for job in batch:
            rejected = 0
            failed = None
            refusal = None
            for span in job.spans:
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
                if error.startswith("HTTP 4"):  # refused for good and kept as a dead letter: resending cannot help
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
