"""Small test helpers: waiting on a condition with a deadline instead of sleeping blindly."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Callable


def wait_until(condition: Callable[[], object], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Return as soon as ``condition()`` is true; fail the test if it is not true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def run_in_threads(function: Callable[[int], object], count: int) -> list[object]:
    """Run ``function(0..count-1)`` on parallel threads; an assertion failing in any thread fails the test."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(function, n) for n in range(count)]
        return [f.result(timeout=120) for f in futures]


@contextmanager
def own_tracker(server: Any, **options: Any) -> Iterator[Any]:
    """A fresh ``ConversationTracker`` on its own pipeline, shipping to ``server``, shut down afterwards."""
    from agentsight_otel import ConversationTracker

    tracker = ConversationTracker()
    tracker.configure(api_key=server.api_key, endpoint=server.url, **options)
    try:
        yield tracker
    finally:
        tracker.shutdown()


def tracker_into_memory() -> tuple[Any, Any]:
    """A ``ConversationTracker`` on an app's SDK provider whose finished spans stay in memory (nothing is shipped),
    and that in-memory exporter: spans to hand to an exporter under test."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agentsight_otel import ConversationTracker

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracker = ConversationTracker()
    tracker.configure(tracer_provider=provider)
    return tracker, memory
