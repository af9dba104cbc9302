"""What AgentSight answered for each exported span, kept briefly so the tracker can report per item.

``send_tracked_data`` must return what the server really said; the exporter runs behind the OpenTelemetry
processor, so it leaves its verdicts here, keyed by the source span, and the tracker picks them up.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

MAX_ENTRIES = 100_000  # outcomes of rolled-over segments wait here until their send reports them


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    error: str | None = None
    response: Any = None
    spooled: bool = False  # not delivered yet, but safe on disk and replayed until accepted


class OutcomeLedger:
    """A bounded map from (trace id, span id) to :class:`Outcome`; the oldest entries fall out first."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: OrderedDict[tuple[int, int, int], Outcome] = OrderedDict()
        self._max = max_entries
        self._lock = threading.Lock()

    def record(self, trace_id: int, span_id: int, outcome: Outcome, *, index: int = -1) -> None:
        """The outcome of a whole span (``index`` -1) or of one of its events (attachment uploads)."""
        with self._lock:
            self._entries[(trace_id, span_id, index)] = outcome
            self._entries.move_to_end((trace_id, span_id, index))
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def pop(self, trace_id: int, span_id: int, index: int = -1) -> Outcome | None:
        with self._lock:
            return self._entries.pop((trace_id, span_id, index), None)


ledger = OutcomeLedger()
