"""What AgentSight answered for each exported span, kept briefly so the tracker can report per item.

``send_tracked_data`` must return what the server really said; the exporter runs behind the OpenTelemetry
processor, so it leaves its verdicts here, keyed by the source span, and the tracker picks them up. Only the
outcomes someone said they will ask for (:meth:`OutcomeLedger.expect`) are kept: an exporter shipping an app's
spans, or the tracker sending without waiting, would otherwise fill the ledger with verdicts nobody reads (up to
its bound: tens of megabytes, rescanned by every full garbage collection).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .forking import call_in_forked_child

MAX_ENTRIES = 100_000  # outcomes of rolled-over segments wait here until their send reports them
# Expectations last as long as the conversation they belong to is open, so their bound is only a backstop: an open
# conversation whose expectation fell out would report delivered items as failed.
MAX_EXPECTED = 1_000_000


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    error: str | None = None
    response: Any = None
    spooled: bool = False  # not delivered yet, but safe on disk and replayed until accepted
    refused: bool = False  # never deliverable as it is (AgentSight refused it for good, or it cannot be encoded)


class OutcomeLedger:
    """A bounded map from (trace id, span id, event index) to :class:`Outcome`; the oldest entries fall out first."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_expected: int = MAX_EXPECTED) -> None:
        self._max = max_entries
        self._max_expected = max_expected
        self._reset()
        call_in_forked_child(self._reset)  # a child must not inherit a lock held by a parent's exporting thread

    def _reset(self) -> None:
        self._entries: OrderedDict[tuple[int, int, int], Outcome] = OrderedDict()
        self._expected: OrderedDict[tuple[int, int, int], None] = OrderedDict()
        self._lock = threading.Lock()

    def expect(self, trace_id: int, span_id: int, index: int = -1) -> None:
        """Keep the outcome of this span (``index`` -1, which covers its events too) or of one of its events until
        it is popped."""
        key = (trace_id, span_id, index)
        with self._lock:
            self._expected[key] = None
            while len(self._expected) > self._max_expected:
                self._expected.popitem(last=False)

    def forget(self, keys: Iterable[tuple[int, int, int]]) -> None:
        """Nobody will ask for these any more: drop what was recorded and do not keep what comes later."""
        with self._lock:
            for key in keys:
                self._expected.pop(key, None)
                self._entries.pop(key, None)

    def record(self, trace_id: int, span_id: int, outcome: Outcome, *, index: int = -1) -> None:
        """The outcome of a whole span (``index`` -1) or of one of its events (attachment uploads)."""
        key = (trace_id, span_id, index)
        with self._lock:
            if key in self._expected or (index != -1 and (trace_id, span_id, -1) in self._expected):
                self._store(key, outcome)

    def _store(self, key: tuple[int, int, int], outcome: Outcome) -> None:
        """Keep an outcome (the caller holds the lock)."""
        self._entries[key] = outcome
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def pop(self, trace_id: int, span_id: int, index: int = -1) -> Outcome | None:
        key = (trace_id, span_id, index)
        with self._lock:
            self._expected.pop(key, None)
            return self._entries.pop(key, None)


ledger = OutcomeLedger()
