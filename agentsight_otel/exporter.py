"""``AgentSightSpanExporter``: finished spans in, AgentSight batches out (read -> batch -> encode -> deliver)."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .attachments import AttachmentStore, pending_attachments
from .batch import group_by_conversation
from .config import UNSET, Settings, apply_log_level, resolve_settings
from .jsondoc import parse_document
from .outcomes import Outcome, OutcomeLedger, ledger
from .readers import read_spans
from .records import Attachments, ConversationBatch
from .transport import Reply, Transport, error_detail
from .wire import Block, BlockRules, Payload, encode

logger = logging.getLogger("agentsight_otel")

INGEST_PATH = "/api/ingest/"


class AgentSightSpanExporter(SpanExporter):
    """An OpenTelemetry ``SpanExporter`` that ships the conversations found in spans to AgentSight.

    Every argument falls back to the environment (``AGENTSIGHT_API_KEY``, ``AGENTSIGHT_API_ENDPOINT``,
    ``AGENTSIGHT_ENVIRONMENT``, ``AGENTSIGHT_LOG_LEVEL``, ``AGENTSIGHT_TIMEOUT``, or a ``.env`` file), so
    ``AgentSightSpanExporter()`` works under ``OTEL_TRACES_EXPORTER=agentsight``. ``export`` never raises and
    returns within ``timeout`` seconds (plus one request's timeout).
    """

    def __init__(
        self,
        api_key: str | None = UNSET,
        endpoint: str | None = UNSET,
        *,
        environment: str | None = UNSET,
        timeout: float | None = UNSET,
        log_level: str | None = UNSET,
        session: Any = None,
        attachment_store: AttachmentStore | None = None,
        outcome_ledger: OutcomeLedger | None = None,
    ) -> None:
        explicit = any(v is not UNSET for v in (api_key, endpoint, environment, timeout))
        self._config_error: str | None = None
        try:
            self._settings = resolve_settings(
                api_key=api_key, endpoint=endpoint, environment=environment, timeout=timeout, log_level=log_level
            )
        except ValueError as exc:
            if explicit:
                raise
            # Built with no arguments (zero-code path): a bad environment must not crash the app at start-up.
            self._config_error = f"AgentSight exporter disabled: {exc}"
            logger.error("%s", self._config_error)
            self._settings = Settings()
        apply_log_level(self._settings.log_level)
        self._transport: Transport | None = None
        if self._settings.api_key:
            self._transport = Transport(self._settings, session=session)
        elif self._config_error is None:
            self._config_error = (
                "no AgentSight API key: set AGENTSIGHT_API_KEY or pass api_key= "
                "(run `agentsight-otel serve` for a local server and key)"
            )
        self._rules = BlockRules(self._settings.environment)
        self._attachments = attachment_store or pending_attachments
        self._ledger = outcome_ledger or ledger
        self._shutdown = threading.Event()
        self._reported: set[str] = set()
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AgentSightSpanExporter(endpoint={self._settings.endpoint!r}, key={self._settings.key_hint})"

    @property
    def settings(self) -> Settings:
        return self._settings

    # -- SpanExporter ---------------------------------------------------------------------------------------

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._shutdown.is_set():
            logger.warning("AgentSight exporter already shut down; %d span(s) not exported", len(spans))
            return SpanExportResult.FAILURE
        try:
            with self._lock:  # export is never concurrent per the spec; the tracker may call from any thread
                return self._export(spans)
        except Exception:  # noqa: BLE001 - an exporter must never raise into the SDK
            logger.exception("AgentSight export failed unexpectedly")
            return SpanExportResult.FAILURE

    def shutdown(self, timeout_millis: float = 30_000) -> None:
        if self._shutdown.is_set():
            logger.warning("AgentSight exporter shutdown called more than once")
            return
        self._shutdown.set()
        if self._transport is not None:
            self._transport.close()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return not self._shutdown.is_set()  # nothing is buffered inside the exporter

    # -- stages ---------------------------------------------------------------------------------------------

    def _export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        batches = group_by_conversation(read_spans(spans))
        if not batches:
            return SpanExportResult.SUCCESS
        if self._transport is None:
            message = self._config_error or "AgentSight exporter is not configured"
            self._report_once(message, message)
            self._record(batches, Outcome(False, message))
            return SpanExportResult.FAILURE
        info = self._transport.server_info()
        self._rules.learn_environments(info.environments)
        payload = encode(batches, self._rules)
        delivered = self._deliver(payload)
        self._upload_attachments([b for b in batches if b.conversation.conversation_id in delivered])
        return SpanExportResult.SUCCESS if len(delivered) == len(payload.blocks) else SpanExportResult.FAILURE

    def _deliver(self, payload: Payload) -> set[str]:
        """POST the payload; on a 400 that names blocks, set those aside and resend the rest once."""
        assert self._transport is not None
        deadline = time.monotonic() + self._settings.timeout
        pending = list(payload.blocks)
        delivered: set[str] = set()
        for _round in range(2):
            reply = self._transport.post_json(INGEST_PATH, payload.body(pending), deadline=deadline, allow_gzip=True)
            if reply.ok:
                for block in pending:
                    self._record_block(block, Outcome(True, None, reply.body))
                    delivered.add(block.conversation_id)
                return delivered
            rejected = _rejected_blocks(reply, len(pending))
            if not rejected:
                break
            for index, reason in rejected.items():
                block = pending[index]
                logger.warning("AgentSight refused conversation %s: %s", block.conversation_id, reason)
                self._record_block(block, Outcome(False, f"HTTP 400: {reason}", reply.body))
            pending = [b for i, b in enumerate(pending) if i not in rejected]
            if not pending:
                return delivered
        message = self._describe_failure(reply)
        for block in pending:
            self._record_block(block, Outcome(False, message, reply.body))
        return delivered

    def _describe_failure(self, reply: Reply) -> str:
        if reply.status in (401, 403):
            message = (
                f"AgentSight rejected the API key ({self._settings.key_hint}) with HTTP {reply.status} at "
                f"{INGEST_PATH}: the key is unknown, revoked or read-only; check AGENTSIGHT_API_KEY"
            )
            self._report_once("key", message)
            return message
        message = f"AgentSight ingest failed after {reply.attempts} attempt(s): {reply.describe()}"
        logger.warning("%s", message)
        return message

    def _upload_attachments(self, batches: list[ConversationBatch]) -> None:
        """Upload the bytes behind delivered attachment descriptors (``/api/attachments/``)."""
        assert self._transport is not None
        for batch in batches:
            cid = batch.conversation.conversation_id
            for record in batch.records:
                if isinstance(record, Attachments):
                    self._upload_one(cid, record)

    def _upload_one(self, cid: str, record: Attachments) -> None:
        assert self._transport is not None
        descriptors = parse_document(record.files) or []
        files = [
            f
            for f in (self._attachments.take(cid, d.get("sha256", "")) for d in descriptors if isinstance(d, dict))
            if f is not None
        ]
        if not files:
            return
        lookup = self._transport.request("GET", "/api/conversations/lookup/", params={"conversation_id": cid})
        pk = lookup.body.get("id") if lookup.ok and isinstance(lookup.body, dict) else None
        reply = lookup
        if pk is not None:
            reply = self._transport.post_json(
                "/api/attachments/",
                {
                    "conversation": str(pk),
                    "mode": "base64",
                    "sender": record.sender,
                    "metadata": parse_document(record.metadata) or {},
                    "attachments": [
                        {"filename": f.filename, "mime_type": f.mime_type, "data": base64.b64encode(f.data).decode()}
                        for f in files
                    ],
                },
            )
        if not reply.ok:
            for f in files:
                self._attachments.put_back(cid, f)
            message = f"attachment upload for conversation {cid} failed: {reply.describe()}"
            logger.warning("%s", message)
            self._ledger.record(record.key.trace_id, record.key.span_id, Outcome(False, message, reply.body))

    # -- reporting ------------------------------------------------------------------------------------------

    def _record_block(self, block: Block, outcome: Outcome) -> None:
        for key in block.sources:
            self._ledger.record(key.trace_id, key.span_id, outcome)

    def _record(self, batches: list[ConversationBatch], outcome: Outcome) -> None:
        for batch in batches:
            for key in batch.sources:
                self._ledger.record(key.trace_id, key.span_id, outcome)

    def _report_once(self, what: str, message: str) -> None:
        if what not in self._reported:
            self._reported.add(what)
            logger.error("%s", message)


def _rejected_blocks(reply: Reply, count: int) -> dict[int, str]:
    """Block index -> reason, from a 400 whose body names the offending conversations."""
    if reply.status != 400 or not isinstance(reply.body, dict):
        return {}
    named = reply.body.get("conversations")
    if not isinstance(named, list):
        return {}
    rejected: dict[int, str] = {}
    for entry in named:
        if isinstance(entry, dict) and isinstance(entry.get("index"), int) and 0 <= entry["index"] < count:
            rejected[entry["index"]] = error_detail(entry.get("errors"), str(entry.get("errors")))
    return rejected


__all__ = ["AgentSightSpanExporter"]
