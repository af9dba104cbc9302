"""Export lanes: with several export workers, each trace (a conversation) stays in one lane and in order, a
request is answered once every lane has exported its share, and shutdown drains every lane."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanContext

from agentsight_otel.bridge import Bridge, BridgeSettings, resolve_bridge_settings
from agentsight_otel.bridge.queue import ACCEPTED, CLOSED, FAILED, ExportQueue
from agentsight_otel.localserver import LocalServer

from .helpers import run_in_threads, wait_until
from .test_bridge_helpers import RecordingExporter

TRACES = range(1, 9)  # lanes of 2: odd traces in lane 1, even ones in lane 0


def _spans(turn: int, traces: Sequence[int] = TRACES) -> list[ReadableSpan]:
    """One span per trace; the span id records the turn, so the order per trace can be checked."""
    return [ReadableSpan(f"turn {turn}", context=SpanContext(trace, turn * 100 + trace, False)) for trace in traces]


class LaneExporter(SpanExporter):
    """Records every export call; the calls carrying odd traces can be held at a gate or fail."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[int, int]]] = []
        self.odd_gate: threading.Event | None = None
        self.odd_result = SpanExportResult.SUCCESS
        self.active = 0
        self.most_active = 0
        self.lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        odd = any(span.context.trace_id % 2 for span in spans)
        with self.lock:
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        if odd and self.odd_gate is not None:
            self.odd_gate.wait(30)
        with self.lock:
            self.calls.append([(span.context.trace_id, span.context.span_id // 100) for span in spans])
            self.active -= 1
        return self.odd_result if odd else SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def exported(self) -> list[tuple[int, int]]:
        with self.lock:
            return [pair for call in self.calls for pair in call]


@pytest.fixture
def lanes():
    exporter = LaneExporter()
    queue = ExportQueue(exporter, workers=2)
    queue.start()
    yield exporter, queue
    assert queue.close(10)


def _offer_in_background(queue: ExportQueue, spans: list[ReadableSpan]) -> tuple[threading.Thread, dict]:
    outcome: dict = {}
    thread = threading.Thread(target=lambda: outcome.update(verdict=queue.offer(spans, 20)))
    thread.start()
    return thread, outcome


def test_each_trace_stays_in_one_lane_and_in_the_order_received(lanes):
    exporter, queue = lanes
    exporter.odd_gate = threading.Event()
    senders = []
    for turn in range(4):  # the odd lane is held, so its turns queue up behind each other
        senders.append(_offer_in_background(queue, _spans(turn)))
        wait_until(lambda turn=turn: queue.queued_spans >= 4 * (turn + 1))
    exporter.odd_gate.set()
    for thread, outcome in senders:
        thread.join(20)
        assert outcome["verdict"].outcome == ACCEPTED
    for call in exporter.calls:
        assert len({trace % 2 for trace, _ in call}) == 1  # one lane per export call
    for trace in TRACES:
        turns = [turn for t, turn in exporter.exported() if t == trace]
        assert turns == [0, 1, 2, 3]
    assert queue.stats()["spans_accepted"] == 32


def test_lanes_export_at_the_same_time(lanes):
    exporter, queue = lanes
    exporter.odd_gate = threading.Event()
    thread, outcome = _offer_in_background(queue, _spans(0))
    wait_until(lambda: exporter.active == 1 and len(exporter.calls) == 1)  # odd held, even done
    second, _ = _offer_in_background(queue, _spans(1, traces=[2, 4]))  # even lane only: not stuck behind odd
    second.join(20)
    assert not second.is_alive()
    exporter.odd_gate.set()
    thread.join(20)
    assert outcome["verdict"].outcome == ACCEPTED


def test_a_request_is_answered_once_every_lane_has_exported_its_share(lanes):
    exporter, queue = lanes
    exporter.odd_gate = threading.Event()
    thread, outcome = _offer_in_background(queue, _spans(0))
    wait_until(lambda: len(exporter.calls) == 1 and exporter.active == 1)  # even share exported, odd one held
    assert thread.is_alive() and not outcome
    exporter.odd_gate.set()
    thread.join(20)
    assert outcome["verdict"].outcome == ACCEPTED
    assert sorted(exporter.exported()) == sorted((trace, 0) for trace in TRACES)


def test_a_failure_in_one_lane_makes_the_whole_request_a_retry(lanes):
    exporter, queue = lanes
    exporter.odd_result = SpanExportResult.FAILURE
    verdict = queue.offer(_spans(0), 20)
    assert verdict.outcome == FAILED and not verdict.accepted
    stats = queue.stats()
    assert (stats["spans_accepted"], stats["spans_failed"], stats["queued_spans"]) == (4, 4, 0)


def test_closing_drains_every_lane():
    exporter = LaneExporter()
    exporter.odd_gate = threading.Event()  # every lane of 3 has an odd trace: all three are held
    queue = ExportQueue(exporter, workers=3)
    queue.start()
    senders = [_offer_in_background(queue, _spans(turn)) for turn in range(3)]
    wait_until(lambda: queue.queued_spans == 24 and exporter.active == 3)
    closed: dict = {}
    closer = threading.Thread(target=lambda: closed.update(drained=queue.close(20)))
    closer.start()
    wait_until(lambda: queue.closing)
    assert queue.offer(_spans(9), 1).outcome == CLOSED  # nothing new while draining
    exporter.odd_gate.set()
    closer.join(20)
    assert closed["drained"] is True
    for thread, outcome in senders:
        thread.join(20)
        assert outcome["verdict"].outcome == ACCEPTED
    assert sorted(exporter.exported()) == sorted((trace, turn) for trace in TRACES for turn in range(3))


def test_many_concurrent_requests_are_each_answered_with_every_span_exported_once(lanes):
    exporter, queue = lanes
    verdicts = run_in_threads(lambda n: queue.offer(_spans(n), 20), 16)
    assert all(v.outcome == ACCEPTED for v in verdicts)
    exported = exporter.exported()
    assert len(exported) == len(set(exported)) == 16 * len(TRACES)
    assert queue.stats()["queued_spans"] == 0


# -- the bridge's choice of lanes -----------------------------------------------------------------------------


def test_only_the_agentsight_exporter_gets_several_lanes(monkeypatch, tmp_path):
    other = Bridge(BridgeSettings(port=0, export_workers=3), exporter=RecordingExporter())
    assert other.queue.workers == 1  # the SDK never calls export concurrently, so other exporters need not cope
    monkeypatch.setenv("AGENTSIGHT_BRIDGE_EXPORT_WORKERS", "3")
    settings = resolve_bridge_settings(port=0)
    assert settings.export_workers == 3
    with LocalServer() as server:
        bridge = Bridge(settings, api_key=server.api_key, endpoint=server.url, spool_dir=str(tmp_path))
        try:
            assert bridge.queue.workers == 3
            assert Bridge(BridgeSettings(port=0), exporter=bridge.exporter).queue.workers == 2  # the default
        finally:
            bridge.exporter.shutdown()
    with pytest.raises(ValueError):
        BridgeSettings(export_workers=0)
