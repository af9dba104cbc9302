"""Readers turn finished spans into records, one module per convention."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.sdk.trace import ReadableSpan

from ..records import SpanRecords
from .agentsight import read_span as read_agentsight_span


def read_spans(spans: Iterable[ReadableSpan]) -> list[SpanRecords]:
    """Read every span that carries AgentSight data; spans with nothing conversational are skipped."""
    found = []
    for span in spans:
        result = read_agentsight_span(span)
        if result is not None:
            found.append(result)
    return found
